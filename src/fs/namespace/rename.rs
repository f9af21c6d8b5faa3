//! rename(2) and renameat2(2): a plain rename replaces a target of the same type (an empty
//! directory for a directory), RENAME_NOREPLACE refuses one, RENAME_EXCHANGE swaps two names'
//! inodes, RENAME_WHITEOUT leaves a whiteout at the source. Each is one batch, checked whole
//! before any change, in the order ext4 checks (the VFS's checks first), so that a refused
//! rename changes nothing and the errno matches.

use super::super::keys::{DirEntry, InodeRecord, Timestamp};
use super::super::{
    Caller, FileKind, Fs, FsError, FsResult, MAX_NAME_LEN, RENAME_EXCHANGE, RENAME_NOREPLACE,
    RENAME_WHITEOUT, ROOT_INO, State, Txn, check_name, inode_flags,
};

/// One rename: the source `name` in `parent`, the target `newname` in `newparent`, its flags,
/// the caller (owner of a whiteout) and the time it sets.
#[derive(Clone, Copy)]
struct Rename<'a> {
    parent: u64,
    name: &'a [u8],
    newparent: u64,
    newname: &'a [u8],
    flags: u32,
    caller: Caller,
    now: Timestamp,
}

/// renameat2's flags: only the known ones, and RENAME_EXCHANGE with neither of the others.
fn check_rename_flags(flags: u32) -> FsResult<()> {
    if flags & !(RENAME_NOREPLACE | RENAME_EXCHANGE | RENAME_WHITEOUT) != 0 {
        return Err(FsError::Invalid);
    }
    if flags & (RENAME_NOREPLACE | RENAME_WHITEOUT) != 0 && flags & RENAME_EXCHANGE != 0 {
        return Err(FsError::Invalid);
    }
    Ok(())
}

impl Fs {
    /// Whether `dir` is `ancestor` or lies below it (walks parent pointers up to the root).
    fn is_within(&self, st: &State, dir: u64, ancestor: u64) -> FsResult<bool> {
        let mut cur = dir;
        // Bounded walk: a corrupt parent cycle must not hang the daemon.
        for _ in 0..100_000 {
            if cur == ancestor {
                return Ok(true);
            }
            if cur == ROOT_INO {
                return Ok(false);
            }
            cur = self.load(st, cur)?.parent;
        }
        Err(FsError::Corrupt(format!(
            "directory parent chain of {dir} does not reach the root"
        )))
    }

    pub fn rename(
        &self,
        parent: u64,
        name: &[u8],
        newparent: u64,
        newname: &[u8],
        flags: u32,
    ) -> FsResult<()> {
        let root = Caller { uid: 0, gid: 0 };
        self.rename_as(parent, name, newparent, newname, flags, root)
    }

    /// rename(2) and renameat2(2) by `caller`, who owns the whiteout that `RENAME_WHITEOUT`
    /// leaves, in the same batch as the rename.
    pub fn rename_as(
        &self,
        parent: u64,
        name: &[u8],
        newparent: u64,
        newname: &[u8],
        flags: u32,
        caller: Caller,
    ) -> FsResult<()> {
        check_rename_flags(flags)?;
        if name.len() > MAX_NAME_LEN {
            return Err(FsError::NameTooLong);
        }
        check_name(newname)?;
        let now = Timestamp::now();
        let mut st = self.state.lock();
        let prec = self.load_dir(&st, parent)?;
        let nprec = self.load_dir(&st, newparent)?;
        let src = self.find_entry(parent, name)?.ok_or(FsError::NotFound)?;
        let dst = self.find_entry(newparent, newname)?;
        if parent == newparent && name == newname {
            return Ok(());
        }
        let exchange = flags & RENAME_EXCHANGE != 0;
        if exchange && dst.is_none() {
            return Err(FsError::NotFound);
        }
        if flags & RENAME_NOREPLACE != 0 && dst.is_some() {
            return Err(FsError::Exists);
        }
        let src_dir = src.kind == FileKind::Directory;
        if src_dir && self.is_within(&st, newparent, src.ino)? {
            return Err(FsError::Invalid);
        }
        // After the checks the VFS makes before it asks the file system (EEXIST, ENOENT,
        // EINVAL), as ext4's `may_delete` comes after them.
        if dst.as_ref().is_none_or(|d| d.ino != src.ino) {
            inode_flags::check_remove_entry(&prec, &self.load(&st, src.ino)?)?;
            match &dst {
                Some(d) => inode_flags::check_remove_entry(&nprec, &self.load(&st, d.ino)?)?,
                None => inode_flags::check_add_entry(&nprec)?,
            }
        }
        let mut txn = Txn::default();
        let r = Rename {
            parent,
            name,
            newparent,
            newname,
            flags,
            caller,
            now,
        };
        if exchange {
            let dst = dst.expect("checked above");
            self.rename_exchange(&st, &mut txn, &r, &src, &dst)?;
        } else {
            if dst.as_ref().is_some_and(|d| d.ino == src.ino) {
                // Two links to one inode: rename does nothing (POSIX).
                return Ok(());
            }
            self.rename_replace(&st, &mut txn, &r, &prec, &src, dst.as_ref())?;
        }
        for p in [parent, newparent] {
            let r = self.txn_inode(&st, &mut txn, p)?;
            r.mtime = now;
            r.ctime = now;
        }
        self.commit(&mut st, txn)
    }

    /// RENAME_EXCHANGE: the two names swap inodes; each inode's parent (a directory's, or a
    /// file's home) follows it, and so do the parents' link counts when only one is a
    /// directory.
    fn rename_exchange(
        &self,
        st: &State,
        txn: &mut Txn,
        r: &Rename,
        src: &DirEntry,
        dst: &DirEntry,
    ) -> FsResult<()> {
        let &Rename {
            parent,
            name,
            newparent,
            newname,
            now,
            ..
        } = r;
        let src_dir = src.kind == FileKind::Directory;
        let dst_dir = dst.kind == FileKind::Directory;
        if dst_dir && self.is_within(st, parent, dst.ino)? {
            return Err(FsError::Invalid);
        }
        self.set_entry(txn, parent, name, dst.ino, dst.kind)?;
        self.set_entry(txn, newparent, newname, src.ino, src.kind)?;
        for (ino, is_dir, old_parent, new_parent) in [
            (src.ino, src_dir, parent, newparent),
            (dst.ino, dst_dir, newparent, parent),
        ] {
            let r = self.txn_inode(st, txn, ino)?;
            r.ctime = now;
            // A directory's parent, and a file's home if it was renamed out of it.
            if is_dir || r.parent == old_parent {
                r.parent = new_parent;
            }
        }
        if parent != newparent && src_dir != dst_dir {
            let delta: i64 = if dst_dir { 1 } else { -1 };
            let p = self.txn_inode(st, txn, parent)?;
            p.nlink = (i64::from(p.nlink) + delta) as u32;
            let np = self.txn_inode(st, txn, newparent)?;
            np.nlink = (i64::from(np.nlink) - delta) as u32;
        }
        Ok(())
    }

    /// A plain rename (or RENAME_NOREPLACE, RENAME_WHITEOUT): a target `dst` of the same type
    /// (an empty directory for a directory) loses its link, the source name goes (leaving a
    /// whiteout if asked) and the new name leads to the source inode.
    fn rename_replace(
        &self,
        st: &State,
        txn: &mut Txn,
        r: &Rename,
        prec: &InodeRecord,
        src: &DirEntry,
        dst: Option<&DirEntry>,
    ) -> FsResult<()> {
        let &Rename {
            parent,
            name,
            newparent,
            newname,
            flags,
            caller,
            now,
        } = r;
        let src_dir = src.kind == FileKind::Directory;
        if let Some(dst) = dst {
            let dst_dir = dst.kind == FileKind::Directory;
            if src_dir && !dst_dir {
                return Err(FsError::NotDir);
            }
            if !src_dir && dst_dir {
                return Err(FsError::IsDir);
            }
            if dst_dir && !self.dir_is_empty(dst.ino)? {
                return Err(FsError::NotEmpty);
            }
            self.remove_entry(txn, newparent, newname)?;
            if dst_dir {
                let np = self.txn_inode(st, txn, newparent)?;
                np.nlink = np.nlink.saturating_sub(1);
            }
            self.drop_link(st, txn, dst.ino, newparent, now)?;
        }
        self.remove_entry(txn, parent, name)?;
        if flags & RENAME_WHITEOUT != 0 {
            self.add_whiteout(st, txn, parent, prec, name, caller, now)?;
        }
        self.add_entry(
            txn,
            newparent,
            DirEntry {
                name: newname.to_vec(),
                ino: src.ino,
                kind: src.kind,
            },
        )?;
        {
            let r = self.txn_inode(st, txn, src.ino)?;
            r.ctime = now;
            // A directory's parent, and a file's home if it was renamed out of it.
            if src_dir || r.parent == parent {
                r.parent = newparent;
            }
        }
        if src_dir && parent != newparent {
            let p = self.txn_inode(st, txn, parent)?;
            p.nlink = p.nlink.saturating_sub(1);
            let np = self.txn_inode(st, txn, newparent)?;
            np.nlink += 1;
        }
        Ok(())
    }
}
