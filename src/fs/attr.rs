//! Attributes: getattr, setattr (mode, owner, size, times, flags; the privileges and
//! capabilities a change of owner or contents drops, as Linux does), statfs and access(2).
//! A setattr is one engine batch with whatever it changes besides the inode (a truncation, the
//! access ACL a chmod rewrites).

use super::keys::{InodeRecord, Timestamp};
use super::permission::{self, Credentials};
use super::{
    Attr, BLOCK_SIZE, FileKind, Fs, FsError, FsResult, IN_EVERY_GROUP, InGroup, MAX_FILE_SIZE,
    MAX_NAME_LEN, SetAttr, StatFs, State, TimeSet, Txn, acl, drop_privileges, inode_flags, keys,
    to_attr,
};
use crate::engine::Mutation;

fn resolve_time(t: TimeSet, now: Timestamp) -> Timestamp {
    match t {
        TimeSet::Now => now,
        TimeSet::At(s) => Timestamp::from_system(s),
    }
}

/// Whether `rec` may take size `size`: a regular file, within the largest size.
fn check_size(rec: &InodeRecord, size: u64) -> FsResult<()> {
    match rec.kind {
        FileKind::Regular => {}
        FileKind::Directory => return Err(FsError::IsDir),
        _ => return Err(FsError::Invalid),
    }
    if size > MAX_FILE_SIZE {
        return Err(FsError::FileTooBig);
    }
    Ok(())
}

impl Fs {
    pub fn getattr(&self, ino: u64) -> FsResult<Attr> {
        let st = self.state.lock();
        let rec = self.load(&st, ino)?;
        Ok(to_attr(ino, &rec))
    }

    pub fn setattr(&self, ino: u64, set: &SetAttr) -> FsResult<Attr> {
        self.setattr_as(ino, set, IN_EVERY_GROUP)
    }

    /// [`Fs::setattr`] by a caller that is in the groups `in_group` names: with
    /// `set.kill_suid_sgid`, the set-group-ID bit of a file its group may not execute goes only
    /// if the caller is not in the file's (former) group.
    pub fn setattr_as(&self, ino: u64, set: &SetAttr, in_group: InGroup) -> FsResult<Attr> {
        let now = Timestamp::now();
        let mut st = self.state.lock();
        let mut txn = Txn::default();
        let rec = self.txn_inode(&st, &mut txn, ino)?;
        // A ghost's records are purged, but the kernel still holds it and may change it: with
        // the writeback cache it writes back the ctime the unlink set in its copy (a SETATTR of
        // mtime and ctime) until its FORGET. Refused, that becomes a writeback error of the
        // whole mount, which syncfs(2) reports to everyone; ext4 takes changes to an unlinked
        // inode too. So the change goes to the in-memory copy only.
        let ghost = st.nodes.get(&ino).is_some_and(|n| n.gone);
        inode_flags::check_setattr(rec, set)?;
        let mut rec = rec.clone();
        if let Some(size) = set.size {
            if ghost {
                check_size(&rec, size)?;
                rec.size = size;
            } else {
                self.setattr_size(&st, &mut txn, ino, &mut rec, size)?;
            }
            rec.mtime = now;
        }
        if let Some(mode) = set.mode {
            rec.perm = (mode & 0o7777) as u16;
            if !ghost {
                self.chmod_access_acl(&st, &mut txn, ino, &rec)?;
            }
        } else if set.kill_suid_sgid && rec.kind != FileKind::Directory {
            drop_privileges(&mut rec, in_group);
        }
        // A file's capabilities go with any change of its owner or contents (as on ext4).
        if !ghost
            && rec.kind != FileKind::Directory
            && (set.size.is_some() || set.uid.is_some() || set.gid.is_some())
        {
            self.drop_capabilities(ino, &mut txn.post);
        }
        if let Some(uid) = set.uid {
            rec.uid = uid;
        }
        if let Some(gid) = set.gid {
            rec.gid = gid;
        }
        if let Some(flags) = set.flags {
            rec.flags = flags;
        }
        if let Some(t) = set.atime {
            rec.atime = resolve_time(t, now);
        }
        if let Some(t) = set.mtime {
            rec.mtime = resolve_time(t, now);
        }
        if let Some(t) = set.crtime {
            rec.crtime = Timestamp::from_system(t);
        }
        rec.ctime = set.ctime.map_or(now, Timestamp::from_system);
        if ghost {
            if let Some(node) = st.nodes.get_mut(&ino) {
                node.rec = rec.clone();
            }
            return Ok(to_attr(ino, &rec));
        }
        txn.inodes.insert(ino, rec.clone());
        self.commit(&mut st, txn)?;
        Ok(to_attr(ino, &rec))
    }

    /// A size change (truncate or extend) of a regular file within the largest size, into
    /// `txn`.
    fn setattr_size(
        &self,
        st: &State,
        txn: &mut Txn,
        ino: u64,
        rec: &mut InodeRecord,
        size: u64,
    ) -> FsResult<()> {
        check_size(rec, size)?;
        let group = st.record_group(ino, rec);
        self.truncate_mutations(ino, rec, size, group, txn)
    }

    /// A chmod rewrites the access ACL's owner, mask (or group) and other entries to the new
    /// permission bits in `rec`, so that the ACL and the mode never disagree.
    fn chmod_access_acl(
        &self,
        st: &State,
        txn: &mut Txn,
        ino: u64,
        rec: &InodeRecord,
    ) -> FsResult<()> {
        let key = keys::xattr_key(ino, acl::ACCESS_ACL_XATTR);
        let stored = match rec.kind {
            FileKind::Symlink => None,
            _ => self.engine.get(&key)?,
        };
        if let Some(mut a) = stored
            .as_deref()
            .map(acl::Acl::parse)
            .transpose()?
            .flatten()
        {
            a.chmod(rec.perm);
            txn.post
                .push(Mutation::put(st.record_group(ino, rec), key, a.encode()));
        }
        Ok(())
    }

    pub fn statfs(&self) -> StatFs {
        let bs = u64::from(BLOCK_SIZE);
        // The usable capacity, not the store's size: the reserve and compaction's headroom are
        // never the user's, so an empty store shows nothing used and `df`'s use% is the live
        // data level that compaction's cost depends on.
        let blocks = self.engine.usable_capacity_bytes() / bs;
        // What user writes may still add before ENOSPC, so `df` never promises space a write
        // would not get.
        let free = self.engine.available_bytes() / bs;
        let st = self.state.lock();
        let files_total = u64::MAX >> 1;
        StatFs {
            blocks,
            blocks_free: free,
            blocks_available: free,
            files: files_total,
            files_free: files_total - st.next_ino.min(files_total),
            block_size: BLOCK_SIZE,
            name_len_max: MAX_NAME_LEN as u32,
        }
    }

    /// access(2): whether `who` gets every bit of `mask` (R_OK, W_OK, X_OK; F_OK asks only
    /// that the inode exist), as the kernel's `generic_permission` would answer
    /// ([`permission::permitted`]).
    pub fn access(&self, ino: u64, mask: i32, who: &dyn Credentials) -> FsResult<()> {
        let st = self.state.lock();
        let rec = self.load(&st, ino)?;
        if mask == libc::F_OK {
            return Ok(());
        }
        let target = super::permit::target(&rec);
        // R_OK, W_OK and X_OK are MAY_READ, MAY_WRITE and MAY_EXEC.
        if permission::permitted(who, target, (mask & 7) as u16, || self.access_acl(ino))? {
            Ok(())
        } else {
            Err(FsError::Access)
        }
    }
}
