//! The namespace: names in directories and the inodes they lead to (lookup, create, mknod,
//! mkdir, symlink, link, unlink, rmdir, rename, readdir) and the kernel's lookup references.
//! Each change of the namespace is one engine batch ([`super::txn`]); an inode whose last link
//! goes is purged in that batch, or kept as an orphan while open handles remain.

use std::sync::atomic::Ordering;

use super::keys::{DirEntry, InodeRecord, Timestamp};
use super::{
    Attr, Caller, DirListEntry, FileKind, Fs, FsError, FsResult, MAX_NAME_LEN, MAX_SYMLINK_LEN,
    ROOT_INO, State, Txn, acl, check_name, corrupt, inode_flags, keys, purge_mutations, to_attr,
};
use crate::engine::{Mutation, ROOT_GROUP};

mod rename;

/// Directory records returned per readdir call (the adapter stops early when the reply is full).
const READDIR_BATCH: usize = 128;

impl Fs {
    /// Drops the link of `ino` in directory `from` inside `txn`: at zero links, purge now (no
    /// open handle) or record an orphan (open handles keep the data until the last release).
    fn drop_link(
        &self,
        st: &State,
        txn: &mut Txn,
        ino: u64,
        from: u64,
        now: Timestamp,
    ) -> FsResult<()> {
        let opens = st.nodes.get(&ino).map_or(0, |n| n.opens);
        let rec = self.txn_inode(st, txn, ino)?;
        rec.nlink = rec.nlink.saturating_sub(1);
        if rec.kind == FileKind::Directory {
            // A removed directory loses both its entry and its "." link.
            rec.nlink = 0;
        } else if rec.parent == from {
            // The home entry goes: the other links (if any) are not known by name, so the file's
            // home becomes the root, which always exists.
            rec.parent = ROOT_INO;
        }
        rec.ctime = now;
        if rec.nlink > 0 {
            return Ok(());
        }
        let rec = rec.clone();
        if opens > 0 {
            txn.post
                .push(Mutation::put(ROOT_GROUP, keys::orphan_key(ino), Vec::new()));
        } else {
            txn.pre.extend(purge_mutations(ino, &rec));
            txn.purged.insert(ino);
        }
        Ok(())
    }

    /// Looks `name` up in `parent` and takes one lookup reference on the result.
    pub fn lookup(&self, parent: u64, name: &[u8]) -> FsResult<Attr> {
        if name.len() > MAX_NAME_LEN {
            return Err(FsError::NameTooLong);
        }
        if name == b"." {
            // Only file handles ask this, of any file type (`export`).
            return self.lookup_ino(parent);
        }
        let mut st = self.state.lock();
        let prec = self.load_dir(&st, parent)?;
        let ino = match name {
            b".." => prec.parent,
            _ => self.find_entry(parent, name)?.ok_or(FsError::NotFound)?.ino,
        };
        let rec = self.load(&st, ino)?;
        Self::remember(&mut st, ino, &rec, 1, 0);
        Ok(to_attr(ino, &rec))
    }

    /// The attributes of a readdirplus entry, taking one lookup reference on it (the kernel
    /// counts one for every entry but `.` and `..`; if the entry does not fit in the reply after
    /// all, the caller gives the reference back with [`Fs::forget`]). ENOENT if it was removed
    /// since the listing.
    pub fn readdir_entry(&self, ino: u64) -> FsResult<Attr> {
        let mut st = self.state.lock();
        let rec = self.load(&st, ino)?;
        Self::remember(&mut st, ino, &rec, 1, 0);
        Ok(to_attr(ino, &rec))
    }

    /// Starts reading the inode records of `inos` that are not cached (a hint: see
    /// `Engine::prefetch`), before a listing asks for their attributes one by one.
    pub fn prefetch_inodes(&self, inos: impl Iterator<Item = u64>) {
        let keys: Vec<Vec<u8>> = {
            let st = self.state.lock();
            inos.filter(|ino| !st.nodes.contains_key(ino))
                .map(keys::inode_key)
                .collect()
        };
        if keys.len() > 1 {
            self.engine.prefetch(&keys);
        }
    }

    /// Drops `count` lookup references.
    pub fn forget(&self, ino: u64, count: u64) {
        let mut st = self.state.lock();
        if let Some(node) = st.nodes.get_mut(&ino) {
            node.lookups = node.lookups.saturating_sub(count);
            if let Err(e) = self.settle(&mut st, ino) {
                log::error!("forget of inode {ino}: {e}");
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn make_node(
        &self,
        parent: u64,
        name: &[u8],
        kind: FileKind,
        mode: u32,
        umask: u32,
        rdev: u32,
        caller: Caller,
        symlink_target: Option<&[u8]>,
        open: bool,
    ) -> FsResult<(Attr, Option<u64>)> {
        check_name(name)?;
        let now = Timestamp::now();
        let mut st = self.state.lock();
        let prec = self.load_dir(&st, parent)?;
        inode_flags::check_add_entry(&prec)?;
        let mut txn = Txn::default();
        if self
            .txn_dirents(&mut txn, parent, name)?
            .iter()
            .any(|e| e.name == name)
        {
            return Err(FsError::Exists);
        }
        let ino = Self::alloc_ino(&st, &mut txn);
        let (perm, gid, inherited) =
            self.new_node_mode(parent, &prec, kind, mode, umask, caller)?;
        let rec = InodeRecord {
            kind,
            perm: if kind == FileKind::Symlink {
                0o777
            } else {
                perm
            },
            nlink: if kind == FileKind::Directory { 2 } else { 1 },
            uid: caller.uid,
            gid,
            rdev,
            flags: inode_flags::inherited_flags(&prec, kind),
            size: symlink_target.map_or(0, |t| t.len() as u64),
            pages: 0,
            atime: now,
            mtime: now,
            ctime: now,
            crtime: now,
            // A new directory starts in its parent's group; so do a file's records (its home).
            group: st.dir_group(parent),
            parent,
        };
        let entry = DirEntry {
            name: name.to_vec(),
            ino,
            kind,
        };
        self.link_new_node(&st, &mut txn, parent, entry, now)?;
        let group = st.dir_group(parent);
        if let Some(target) = symlink_target {
            txn.post.push(Mutation::put(
                group,
                keys::symlink_key(ino),
                target.to_vec(),
            ));
        }
        for (name, value) in inherited.into_iter().flatten() {
            txn.post
                .push(Mutation::put(group, keys::xattr_key(ino, name), value));
        }
        txn.inodes.insert(ino, rec.clone());
        txn.created.insert(ino);
        self.commit(&mut st, txn)?;
        Self::remember(&mut st, ino, &rec, 1, u64::from(open));
        let fh = open.then(|| self.next_fh.fetch_add(1, Ordering::Relaxed));
        Ok((to_attr(ino, &rec), fh))
    }

    /// A new inode's permission bits and group: the set-group-ID directory's group (and, for a
    /// directory, its bit); the parent's default ACL, if any, is inherited and replaces the
    /// umask (`acl`); the kernel leaves both to us (`FUSE_DONT_MASK`). Also the ACL xattrs it
    /// inherits.
    fn new_node_mode(
        &self,
        parent: u64,
        prec: &InodeRecord,
        kind: FileKind,
        mode: u32,
        umask: u32,
        caller: Caller,
    ) -> FsResult<(u16, u32, Option<Vec<acl::InheritedXattr>>)> {
        let mut perm = (mode & 0o7777) as u16;
        let mut gid = caller.gid;
        if prec.perm & (libc::S_ISGID as u16) != 0 {
            gid = prec.gid;
            if kind == FileKind::Directory {
                perm |= libc::S_ISGID as u16;
            }
        }
        let inherited = match kind {
            FileKind::Symlink => None,
            _ => self.inherit_acl(parent, kind, &mut perm)?,
        };
        if inherited.is_none() {
            perm &= !(umask & 0o7777) as u16;
        }
        Ok((perm, gid, inherited))
    }

    /// The entry of a new inode in `parent`, whose times change and which gains a link for a
    /// new directory's "..".
    fn link_new_node(
        &self,
        st: &State,
        txn: &mut Txn,
        parent: u64,
        entry: DirEntry,
        now: Timestamp,
    ) -> FsResult<()> {
        let kind = entry.kind;
        self.add_entry(txn, parent, entry)?;
        let p = self.txn_inode(st, txn, parent)?;
        p.mtime = now;
        p.ctime = now;
        if kind == FileKind::Directory {
            p.nlink += 1;
        }
        Ok(())
    }

    /// The ACL xattrs a new inode of `kind` with permission bits `perm` in directory `parent`
    /// inherits from its default ACL (`acl::Acl::inherit`), `perm` cut to them; `None` if the
    /// parent has no default ACL (then the umask applies).
    fn inherit_acl(
        &self,
        parent: u64,
        kind: FileKind,
        perm: &mut u16,
    ) -> FsResult<Option<Vec<acl::InheritedXattr>>> {
        let Some(value) = self
            .engine
            .get(&keys::xattr_key(parent, acl::DEFAULT_ACL_XATTR))?
        else {
            return Ok(None);
        };
        let Some(default) = acl::Acl::parse(&value)? else {
            return Ok(None);
        };
        let (access, mode) = default.inherit(*perm);
        *perm = mode;
        let mut xattrs = Vec::new();
        if kind == FileKind::Directory {
            xattrs.push((acl::DEFAULT_ACL_XATTR, value));
        }
        if let Some(access) = access {
            xattrs.push((acl::ACCESS_ACL_XATTR, access.encode()));
        }
        Ok(Some(xattrs))
    }

    /// Creates and opens a regular file; returns its attributes and a file handle.
    pub fn create(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        umask: u32,
        caller: Caller,
    ) -> FsResult<(Attr, u64)> {
        let (attr, fh) = self.make_node(
            parent,
            name,
            FileKind::Regular,
            mode,
            umask,
            0,
            caller,
            None,
            true,
        )?;
        Ok((attr, fh.expect("opened")))
    }

    pub fn mknod(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        umask: u32,
        rdev: u32,
        caller: Caller,
    ) -> FsResult<Attr> {
        let kind = FileKind::from_mode(mode).ok_or(FsError::Invalid)?;
        if kind == FileKind::Directory || kind == FileKind::Symlink {
            return Err(FsError::Invalid);
        }
        Ok(self
            .make_node(parent, name, kind, mode, umask, rdev, caller, None, false)?
            .0)
    }

    pub fn mkdir(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        umask: u32,
        caller: Caller,
    ) -> FsResult<Attr> {
        Ok(self
            .make_node(
                parent,
                name,
                FileKind::Directory,
                mode,
                umask,
                0,
                caller,
                None,
                false,
            )?
            .0)
    }

    pub fn symlink(
        &self,
        parent: u64,
        name: &[u8],
        target: &[u8],
        caller: Caller,
    ) -> FsResult<Attr> {
        if target.len() > MAX_SYMLINK_LEN {
            return Err(FsError::NameTooLong);
        }
        if target.is_empty() {
            return Err(FsError::NotFound);
        }
        Ok(self
            .make_node(
                parent,
                name,
                FileKind::Symlink,
                0o777,
                0,
                0,
                caller,
                Some(target),
                false,
            )?
            .0)
    }

    pub fn readlink(&self, ino: u64) -> FsResult<Vec<u8>> {
        let mut st = self.state.lock();
        let rec = self.load(&st, ino)?;
        if rec.kind != FileKind::Symlink {
            return Err(FsError::Invalid);
        }
        self.touch_atime(&mut st, ino, &rec);
        self.engine
            .get(&keys::symlink_key(ino))?
            .ok_or(FsError::NotFound)
    }

    pub fn unlink(&self, parent: u64, name: &[u8]) -> FsResult<()> {
        if name.len() > MAX_NAME_LEN {
            return Err(FsError::NameTooLong);
        }
        let now = Timestamp::now();
        let mut st = self.state.lock();
        let prec = self.load_dir(&st, parent)?;
        let entry = self.find_entry(parent, name)?.ok_or(FsError::NotFound)?;
        if entry.kind == FileKind::Directory {
            return Err(FsError::IsDir);
        }
        inode_flags::check_remove_entry(&prec, &self.load(&st, entry.ino)?)?;
        let mut txn = Txn::default();
        self.remove_entry(&mut txn, parent, name)?;
        {
            let p = self.txn_inode(&st, &mut txn, parent)?;
            p.mtime = now;
            p.ctime = now;
        }
        self.drop_link(&st, &mut txn, entry.ino, parent, now)?;
        self.commit(&mut st, txn)
    }

    fn dir_is_empty(&self, ino: u64) -> FsResult<bool> {
        Ok(self
            .engine
            .scan(&keys::dirent_prefix(ino), None, 1)?
            .is_empty())
    }

    pub fn rmdir(&self, parent: u64, name: &[u8]) -> FsResult<()> {
        if name.len() > MAX_NAME_LEN {
            return Err(FsError::NameTooLong);
        }
        match name {
            b"." => return Err(FsError::Invalid),
            b".." => return Err(FsError::NotEmpty),
            _ => {}
        }
        let now = Timestamp::now();
        let mut st = self.state.lock();
        let prec = self.load_dir(&st, parent)?;
        let entry = self.find_entry(parent, name)?.ok_or(FsError::NotFound)?;
        if entry.kind != FileKind::Directory {
            return Err(FsError::NotDir);
        }
        inode_flags::check_remove_entry(&prec, &self.load(&st, entry.ino)?)?;
        if !self.dir_is_empty(entry.ino)? {
            return Err(FsError::NotEmpty);
        }
        let mut txn = Txn::default();
        self.remove_entry(&mut txn, parent, name)?;
        {
            let p = self.txn_inode(&st, &mut txn, parent)?;
            p.mtime = now;
            p.ctime = now;
            p.nlink = p.nlink.saturating_sub(1);
        }
        self.drop_link(&st, &mut txn, entry.ino, parent, now)?;
        self.commit(&mut st, txn)
    }

    pub fn link(&self, ino: u64, newparent: u64, newname: &[u8]) -> FsResult<Attr> {
        check_name(newname)?;
        let now = Timestamp::now();
        let mut st = self.state.lock();
        let prec = self.load_dir(&st, newparent)?;
        let rec = self.load(&st, ino)?;
        if rec.kind == FileKind::Directory {
            return Err(FsError::NotPermitted);
        }
        inode_flags::check_link(&rec)?;
        inode_flags::check_add_entry(&prec)?;
        if rec.nlink == 0 {
            return Err(FsError::NotFound);
        }
        if self.find_entry(newparent, newname)?.is_some() {
            return Err(FsError::Exists);
        }
        let mut txn = Txn::default();
        self.add_entry(
            &mut txn,
            newparent,
            DirEntry {
                name: newname.to_vec(),
                ino,
                kind: rec.kind,
            },
        )?;
        {
            let r = self.txn_inode(&st, &mut txn, ino)?;
            r.nlink += 1;
            r.ctime = now;
        }
        {
            let p = self.txn_inode(&st, &mut txn, newparent)?;
            p.mtime = now;
            p.ctime = now;
        }
        let rec = txn.inodes[&ino].clone();
        self.commit(&mut st, txn)?;
        Self::remember(&mut st, ino, &rec, 1, 0);
        Ok(to_attr(ino, &rec))
    }

    /// Checks that `ino` is a directory that can be listed.
    pub fn opendir(&self, ino: u64) -> FsResult<u64> {
        let st = self.state.lock();
        let rec = self.load(&st, ino)?;
        if rec.kind != FileKind::Directory {
            return Err(FsError::NotDir);
        }
        Ok(self.next_fh.fetch_add(1, Ordering::Relaxed))
    }

    /// Entries of directory `ino` after cookie `offset` (0: from the start), `.` and `..`
    /// included. An empty result means the end. Cookies are name hashes, so entries added or
    /// removed meanwhile never make the listing skip or repeat others.
    pub fn readdir(&self, ino: u64, offset: u64) -> FsResult<Vec<DirListEntry>> {
        let parent = {
            let mut st = self.state.lock();
            let rec = self.load(&st, ino)?;
            if rec.kind != FileKind::Directory {
                return Err(FsError::NotDir);
            }
            self.touch_atime(&mut st, ino, &rec);
            rec.parent
        };
        let mut out = Vec::new();
        if offset < 1 {
            out.push(DirListEntry {
                ino,
                kind: FileKind::Directory,
                name: b".".to_vec(),
                cookie: 1,
            });
        }
        if offset < 2 {
            out.push(DirListEntry {
                ino: parent,
                kind: FileKind::Directory,
                name: b"..".to_vec(),
                cookie: 2,
            });
        }
        let prefix = keys::dirent_prefix(ino);
        let start_after = if offset <= 2 {
            None
        } else {
            let (hash, done) = keys::split_cookie(offset);
            for (i, e) in self
                .read_dirents(ino, hash)?
                .into_iter()
                .enumerate()
                .skip(done)
            {
                out.push(DirListEntry {
                    ino: e.ino,
                    kind: e.kind,
                    name: e.name,
                    cookie: keys::dirent_cookie(hash, i),
                });
            }
            Some(keys::dirent_key(ino, hash))
        };
        let records = self
            .engine
            .scan(&prefix, start_after.as_deref(), READDIR_BATCH)?;
        for (key, value) in records {
            let hash =
                keys::dirent_key_hash(ino, &key).ok_or_else(|| corrupt("dirent key", &key))?;
            let list = keys::decode_dirents(&value).ok_or_else(|| corrupt("dirent", &key))?;
            for (i, e) in list.into_iter().enumerate() {
                out.push(DirListEntry {
                    ino: e.ino,
                    kind: e.kind,
                    name: e.name,
                    cookie: keys::dirent_cookie(hash, i),
                });
            }
        }
        Ok(out)
    }
}
