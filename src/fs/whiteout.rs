//! `renameat2(RENAME_WHITEOUT)`: the source name is left holding a whiteout, a character
//! device 0/0 with mode 0 (`S_IFCHR`, the kernel's `WHITEOUT_DEV` and `WHITEOUT_MODE`), in the
//! same engine batch as the rename: nobody, not even after a crash, sees the source name empty
//! or the file under both names. Overlayfs uses it on its upper layer to rename a file that
//! also exists in a lower layer (the whiteout hides the lower one), and at mount it checks that
//! the upper filesystem supports it.

use super::keys::{FileKind, InodeRecord, Timestamp};
use super::{Caller, DirEntry, Fs, FsResult, State, Txn};

impl Fs {
    /// Adds to `txn` a new whiteout inode named `name` in directory `parent` (record `prec`),
    /// owned by `caller` (group of a set-group-ID directory, as for any new inode). The caller
    /// removed the entry that held `name` in the same `txn`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn add_whiteout(
        &self,
        st: &State,
        txn: &mut Txn,
        parent: u64,
        prec: &InodeRecord,
        name: &[u8],
        caller: Caller,
        now: Timestamp,
    ) -> FsResult<()> {
        let ino = Self::alloc_ino(st, txn);
        let gid = if prec.perm & (libc::S_ISGID as u16) != 0 {
            prec.gid
        } else {
            caller.gid
        };
        let rec = InodeRecord {
            kind: FileKind::CharDevice,
            perm: 0,
            nlink: 1,
            uid: caller.uid,
            gid,
            rdev: 0,
            flags: super::inode_flags::inherited_flags(prec, FileKind::CharDevice),
            size: 0,
            pages: 0,
            atime: now,
            mtime: now,
            ctime: now,
            crtime: now,
            group: st.dir_group(parent),
            parent,
        };
        self.add_entry(
            txn,
            parent,
            DirEntry {
                name: name.to_vec(),
                ino,
                kind: FileKind::CharDevice,
            },
        )?;
        txn.inodes.insert(ino, rec);
        txn.created.insert(ino);
        Ok(())
    }
}
