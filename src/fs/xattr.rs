//! Extended attributes: set, get, list and remove, as ext4 answers them (namespaces in
//! [`super::xattr_names`]; the POSIX ACLs stored as xattrs are parsed by [`super::acl`], and an
//! access ACL sets the mode bits). Each change is one engine batch with the inode's new ctime.
//! The root directory also answers two virtual names that are never stored: the stats report
//! and the power-cut replay's marks.

use super::keys::{InodeRecord, Timestamp};
use super::{
    FileKind, Fs, FsError, FsResult, IN_EVERY_GROUP, InGroup, MAX_XATTR_NAME_LEN,
    MAX_XATTR_VALUE_LEN, REPLAY_MARK_XATTR_PREFIX, ROOT_INO, STATS_XATTR, TOMBSTONE_GROUP, Txn,
    acl, group_root_paths, inode_flags, keys, stats, xattr_names,
};
use crate::engine::Mutation;

/// What a getxattr/listxattr reply should say for a value and the caller's buffer size.
#[derive(Debug, PartialEq, Eq)]
pub enum XattrReply {
    /// The caller asked for the size only.
    Size(u32),
    /// The value fits.
    Data(Vec<u8>),
}

/// Size 0 asks for the length; a buffer too small is ERANGE.
pub fn xattr_reply(value: Vec<u8>, size: u32) -> FsResult<XattrReply> {
    if size == 0 {
        Ok(XattrReply::Size(value.len() as u32))
    } else if value.len() > size as usize {
        Err(FsError::Range)
    } else {
        Ok(XattrReply::Data(value))
    }
}

impl Fs {
    pub fn setxattr(&self, ino: u64, name: &[u8], value: &[u8], flags: i32) -> FsResult<()> {
        self.setxattr_as(ino, name, value, flags, IN_EVERY_GROUP)
    }

    /// [`Fs::setxattr`] by a caller in the groups `in_group` names: an access ACL set by a
    /// caller neither in the file's group nor with `CAP_FSETID` drops its set-group-ID bit
    /// (`posix_acl_update_mode`).
    pub fn setxattr_as(
        &self,
        ino: u64,
        name: &[u8],
        value: &[u8],
        flags: i32,
        in_group: InGroup,
    ) -> FsResult<()> {
        check_set_xattr_args(ino, name, value)?;
        let mut st = self.state.lock();
        let mut txn = Txn::default();
        let mut rec = self.txn_inode(&st, &mut txn, ino)?.clone();
        // The VFS refuses a change to an immutable or append-only inode before it looks for
        // the name's handler.
        inode_flags::check_xattr_change(&rec)?;
        xattr_names::check(name)?;
        let key = keys::xattr_key(ino, name);
        let exists = self.engine.contains(&key);
        if flags & libc::XATTR_CREATE != 0 && exists {
            return Err(FsError::Exists);
        }
        if flags & libc::XATTR_REPLACE != 0 && !exists {
            return Err(FsError::NoXattr);
        }
        rec.ctime = Timestamp::now();
        if (name == acl::ACCESS_ACL_XATTR || name == acl::DEFAULT_ACL_XATTR)
            && !acl_is_kept(name, value, &mut rec, in_group)?
        {
            if exists {
                txn.post.push(Mutation::delete(TOMBSTONE_GROUP, key));
            }
            txn.inodes.insert(ino, rec);
            return self.commit(&mut st, txn);
        }
        txn.post.push(Mutation::put(
            st.record_group(ino, &rec),
            key,
            value.to_vec(),
        ));
        txn.inodes.insert(ino, rec);
        self.commit(&mut st, txn)
    }

    pub fn getxattr(&self, ino: u64, name: &[u8]) -> FsResult<Vec<u8>> {
        if let Some(label) = name.strip_prefix(REPLAY_MARK_XATTR_PREFIX) {
            let label = std::str::from_utf8(label).ok().and_then(|l| l.parse().ok());
            return match label {
                Some(l) if ino == ROOT_INO && self.engine.mark_io_log(l) => Ok(Vec::new()),
                _ => Err(FsError::NoXattr),
            };
        }
        if ino == ROOT_INO && name == STATS_XATTR {
            let roots = group_root_paths(&self.engine)?;
            return Ok(stats::StatsReport::new(&self.engine.stats(), &roots, true)
                .json()
                .into_bytes());
        }
        if name.len() > MAX_XATTR_NAME_LEN {
            return Err(FsError::NameTooLong);
        }
        xattr_names::check(name)?;
        let st = self.state.lock();
        self.load(&st, ino)?;
        self.engine
            .get(&keys::xattr_key(ino, name))?
            .ok_or(FsError::NoXattr)
    }

    /// Names of `ino`'s xattrs, each followed by a NUL byte (the listxattr format).
    pub fn listxattr(&self, ino: u64) -> FsResult<Vec<u8>> {
        let st = self.state.lock();
        self.load(&st, ino)?;
        let prefix = keys::xattr_prefix(ino);
        let mut out = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let found = self.engine.scan(&prefix, after.as_deref(), 256)?;
            if found.is_empty() {
                return Ok(out);
            }
            for (key, _) in &found {
                out.extend_from_slice(&key[prefix.len()..]);
                out.push(0);
            }
            after = found.last().map(|(k, _)| k.clone());
        }
    }

    pub fn removexattr(&self, ino: u64, name: &[u8]) -> FsResult<()> {
        if name.len() > MAX_XATTR_NAME_LEN {
            return Err(FsError::NameTooLong);
        }
        let mut st = self.state.lock();
        let mut txn = Txn::default();
        let key = keys::xattr_key(ino, name);
        let rec = self.txn_inode(&st, &mut txn, ino)?;
        inode_flags::check_xattr_change(rec)?;
        xattr_names::check(name)?;
        if !self.engine.contains(&key) {
            return Err(FsError::NoXattr);
        }
        rec.ctime = Timestamp::now();
        txn.post.push(Mutation::delete(TOMBSTONE_GROUP, key));
        self.commit(&mut st, txn)
    }
}

/// The checks of a set before anything is looked up: the name's and the value's lengths, and
/// the root's statistics xattr, which is read-only.
fn check_set_xattr_args(ino: u64, name: &[u8], value: &[u8]) -> FsResult<()> {
    if name.len() > MAX_XATTR_NAME_LEN {
        return Err(FsError::NameTooLong);
    }
    if name.is_empty() {
        return Err(FsError::Invalid);
    }
    if value.len() > MAX_XATTR_VALUE_LEN {
        return Err(FsError::TooBig);
    }
    if ino == ROOT_INO && name == STATS_XATTR {
        return Err(FsError::NotPermitted);
    }
    Ok(())
}

/// Whether the ACL xattr `name` set to `value` is stored. An ACL without entries removes it,
/// as Linux reads one; a default ACL is a directory's only; the access ACL sets `rec`'s mode
/// bits (dropping set-group-ID outside the owning group), and one that says nothing more than
/// them is not kept (as ext4).
fn acl_is_kept(
    name: &[u8],
    value: &[u8],
    rec: &mut InodeRecord,
    in_group: InGroup,
) -> FsResult<bool> {
    let parsed = acl::Acl::parse(value)?;
    Ok(match &parsed {
        None => false,
        Some(_) if name == acl::DEFAULT_ACL_XATTR => {
            if rec.kind != FileKind::Directory {
                return Err(FsError::Access);
            }
            true
        }
        Some(a) => {
            let mode = a.mode();
            rec.perm = (rec.perm & !0o777) | mode.perm;
            if !in_group(rec.gid) {
                rec.perm &= !(libc::S_ISGID as u16);
            }
            !mode.equivalent
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xattr_reply_sizes() {
        assert_eq!(xattr_reply(vec![1, 2, 3], 0).unwrap(), XattrReply::Size(3));
        assert_eq!(
            xattr_reply(vec![1, 2, 3], 3).unwrap(),
            XattrReply::Data(vec![1, 2, 3])
        );
        assert_eq!(
            xattr_reply(vec![1, 2, 3], 2).unwrap_err().errno(),
            libc::ERANGE
        );
    }
}
