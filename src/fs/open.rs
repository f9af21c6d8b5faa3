//! What opening a filesystem reads from the store before the first operation: the root
//! directory (created, with the inode high-water mark, in one batch on a fresh store, so that
//! a crash never leaves a root without the mark) and the group roots. Everything else is
//! read on demand, so that a mount's time does not grow with the files stored.

use super::group_tracking::for_each_record;
use super::keys::{self, InodeRecord, Timestamp};
use super::{FileKind, FsResult, ROOT_INO, corrupt};
use crate::engine::{Engine, GroupId, Mutation, ROOT_GROUP};

/// The root directory's record; on a store that has none, a new root owned by the daemon's
/// user, written with the first inode high-water mark.
pub(super) fn root_record(engine: &Engine, now: Timestamp) -> FsResult<InodeRecord> {
    Ok(match engine.get(&keys::inode_key(ROOT_INO))? {
        Some(v) => InodeRecord::decode(&v)
            .ok_or_else(|| corrupt("root inode record", &keys::inode_key(ROOT_INO)))?,
        None => {
            // SAFETY: getuid/getgid cannot fail and have no preconditions.
            let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
            let root = InodeRecord {
                kind: FileKind::Directory,
                perm: 0o755,
                nlink: 2,
                uid,
                gid,
                rdev: 0,
                flags: 0,
                size: 0,
                pages: 0,
                atime: now,
                mtime: now,
                ctime: now,
                crtime: now,
                group: ROOT_GROUP,
                parent: ROOT_INO,
            };
            engine.write(&[
                Mutation::put(ROOT_GROUP, keys::inode_key(ROOT_INO), root.encode()),
                Mutation::put(
                    ROOT_GROUP,
                    keys::meta_key(keys::META_INODE_HIGH_WATER),
                    keys::encode_u64(ROOT_INO + 1),
                ),
            ])?;
            root
        }
    })
}

/// The inode high-water mark: every inode number handed out is below it.
pub(super) fn high_water(engine: &Engine) -> FsResult<u64> {
    let hw_key = keys::meta_key(keys::META_INODE_HIGH_WATER);
    match engine.get(&hw_key)? {
        Some(v) => keys::decode_u64(&v).ok_or_else(|| corrupt("inode high-water mark", &hw_key)),
        None => Err(corrupt("missing inode high-water mark", &hw_key)),
    }
}

/// The stored group roots (a few records): directory and group of each.
pub(super) fn stored_group_roots(engine: &Engine) -> FsResult<Vec<(u64, GroupId)>> {
    let mut roots = Vec::new();
    for_each_record(engine, &keys::group_root_prefix(), |key, value| {
        let dir = keys::group_root_ino(key).ok_or_else(|| corrupt("group root key", key))?;
        let group = keys::decode_group(value).ok_or_else(|| corrupt("group root record", key))?;
        roots.push((dir, group));
        Ok(())
    })?;
    Ok(roots)
}
