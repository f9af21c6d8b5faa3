//! Inode flags (`chattr`/`lsattr`: `FS_IOC_GETFLAGS`/`FS_IOC_SETFLAGS`, and the
//! `FS_IOC_FSGETXATTR`/`FS_IOC_FSSETXATTR` view of the same bits), kept in the inode record's
//! `flags` field, and the refusals that immutable and append-only impose, as ext4 imposes them.
//!
//! Over FUSE the kernel does not enforce these flags itself: it keeps no `S_IMMUTABLE` or
//! `S_APPEND` in the inode (`fuse_attr` carries no such bits), so every check that the VFS and
//! ext4 make (`may_delete`, `may_open`, `notify_change`, `ext4_setattr`, `xattr_permission`,
//! `vfs_link`, `vfs_fallocate`, `ext4_write_checks`) is made here, in the core, for each
//! operation that would change an inode:
//!
//! | flag | refused with EPERM |
//! |---|---|
//! | immutable file | write, truncate, fallocate, any setattr (chmod, chown, utimes), link, unlink, rename of it or over it, xattr set/remove, open for writing |
//! | append-only file | open for writing without `O_APPEND`, a write below the end, truncate, fallocate other than plain allocation, chmod, chown, explicit times, link, unlink, rename of it or over it, xattr set/remove |
//! | immutable directory | everything above, and creating, removing or renaming any entry inside |
//! | append-only directory | removing or renaming any entry inside (creating is allowed) |
//!
//! Flags kept: immutable, append-only, no-dump (advice to dump(8): nothing to enforce) and
//! no-atime (reads, listings and readlink leave the atime alone: `atime::needs_update`). A new
//! inode takes no-dump and no-atime from its directory ([`inherited_flags`]). Every other flag
//! ext4 accepts is refused with EOPNOTSUPP rather than stored and not honoured (synchronous
//! updates, dirsync, data journalling, compression, extents, ...): a flag that is shown must
//! hold.

use super::keys::{FileKind, InodeRecord, Timestamp};
use super::{Fs, FsError, FsResult, Txn};

/// `FS_SYNC_FL` (`S`): refused (see the module doc).
pub const FS_SYNC_FL: u32 = 0x0000_0008;
/// `FS_IMMUTABLE_FL` (`i`).
pub const FS_IMMUTABLE_FL: u32 = 0x0000_0010;
/// `FS_APPEND_FL` (`a`).
pub const FS_APPEND_FL: u32 = 0x0000_0020;
/// `FS_NODUMP_FL` (`d`).
pub const FS_NODUMP_FL: u32 = 0x0000_0040;
/// `FS_NOATIME_FL` (`A`).
pub const FS_NOATIME_FL: u32 = 0x0000_0080;

/// The flags ext4 shows (`EXT4_FL_USER_VISIBLE`): a set naming any other is EOPNOTSUPP.
const USER_VISIBLE_FLAGS: u32 = 0x725B_DBFF;
/// The flags a user may change on ext4 (`EXT4_FL_USER_MODIFIABLE`); ext4 ignores the other
/// visible ones in a set (such as `FS_INDEX_FL`, which it sets itself), so `chattr` may pass
/// back whatever `lsattr` showed.
const USER_MODIFIABLE_FLAGS: u32 = 0x604B_C0FF;

/// The flags a regular file or directory may carry here.
pub const SUPPORTED_FLAGS: u32 = FS_IMMUTABLE_FL | FS_APPEND_FL | FS_NODUMP_FL | FS_NOATIME_FL;
/// The flags other kinds (devices, fifos, sockets, symlinks) may carry: ext4's
/// `EXT4_OTHER_FLMASK`.
pub const OTHER_KIND_FLAGS: u32 = FS_NODUMP_FL | FS_NOATIME_FL;
/// Changing either needs `CAP_LINUX_IMMUTABLE`.
const PROTECTED_FLAGS: u32 = FS_IMMUTABLE_FL | FS_APPEND_FL;
/// The flags a new inode takes from its directory: ext4's `EXT4_FL_INHERITED` among the flags
/// kept here (the others it names, such as synchronous updates, dirsync and data journalling,
/// are refused here, so no directory carries them). Immutable and append-only are not
/// inherited.
const INHERITED_FLAGS: u32 = FS_NODUMP_FL | FS_NOATIME_FL;

/// `struct fsxattr` flags (`FS_XFLAG_*`) that map to the flags above.
pub const FS_XFLAG_IMMUTABLE: u32 = 0x0000_0008;
pub const FS_XFLAG_APPEND: u32 = 0x0000_0010;
pub const FS_XFLAG_SYNC: u32 = 0x0000_0020;
pub const FS_XFLAG_NOATIME: u32 = 0x0000_0040;
pub const FS_XFLAG_NODUMP: u32 = 0x0000_0080;

const XFLAG_MAP: [(u32, u32); 5] = [
    (FS_XFLAG_IMMUTABLE, FS_IMMUTABLE_FL),
    (FS_XFLAG_APPEND, FS_APPEND_FL),
    (FS_XFLAG_SYNC, FS_SYNC_FL),
    (FS_XFLAG_NOATIME, FS_NOATIME_FL),
    (FS_XFLAG_NODUMP, FS_NODUMP_FL),
];

/// `FS_*_FL` flags as `FS_XFLAG_*` flags.
pub fn flags_to_xflags(flags: u32) -> u32 {
    XFLAG_MAP
        .iter()
        .filter(|(_, f)| flags & f != 0)
        .fold(0, |x, (xf, _)| x | xf)
}

/// `FS_XFLAG_*` flags as `FS_*_FL` flags; `None` if one has no equivalent.
pub fn xflags_to_flags(xflags: u32) -> Option<u32> {
    let known = XFLAG_MAP.iter().fold(0, |x, (xf, _)| x | xf);
    if xflags & !known != 0 {
        return None;
    }
    Some(
        XFLAG_MAP
            .iter()
            .filter(|(xf, _)| xflags & xf != 0)
            .fold(0, |f, (_, fl)| f | fl),
    )
}

/// What the caller of a flag change may do (the FUSE adapter reads it from the caller's
/// effective capabilities).
#[derive(Clone, Copy, Debug)]
pub struct FlagsCaller {
    pub uid: u32,
    /// `CAP_FOWNER`: may change the flags of another user's inode.
    pub fowner: bool,
    /// `CAP_LINUX_IMMUTABLE`: may set or clear immutable and append-only.
    pub linux_immutable: bool,
}

/// The flags a kind of inode may carry.
fn kind_flags(kind: FileKind) -> u32 {
    match kind {
        FileKind::Regular | FileKind::Directory => SUPPORTED_FLAGS,
        _ => OTHER_KIND_FLAGS,
    }
}

/// The flags of a new inode of `kind` in directory `dir`, as ext4 gives them
/// (`ext4_new_inode`: the directory's inherited flags, cut to what the kind may carry):
/// `chattr +d` or `+A` on a directory reaches every file and directory later made in it.
pub(super) fn inherited_flags(dir: &InodeRecord, kind: FileKind) -> u32 {
    dir.flags & INHERITED_FLAGS & kind_flags(kind)
}

fn immutable(rec: &InodeRecord) -> bool {
    rec.flags & FS_IMMUTABLE_FL != 0
}

fn append_only(rec: &InodeRecord) -> bool {
    rec.flags & FS_APPEND_FL != 0
}

fn refuse(yes: bool) -> FsResult<()> {
    if yes {
        Err(FsError::NotPermitted)
    } else {
        Ok(())
    }
}

/// A change of an inode's contents, attributes or xattrs (ext4: `ext4_setattr`,
/// `xattr_permission`, `ext4_write_checks`): never on an immutable inode.
pub(super) fn check_modify(rec: &InodeRecord) -> FsResult<()> {
    refuse(immutable(rec))
}

/// A write of `len` bytes at `offset`: never on an immutable file; on an append-only one only
/// at or past the end (ext4 gets this from `O_APPEND`, which it does not let a writer drop:
/// over FUSE `fcntl(F_SETFL)` can, so the offset is checked here).
pub(super) fn check_write(rec: &InodeRecord, offset: u64) -> FsResult<()> {
    check_modify(rec)?;
    refuse(append_only(rec) && offset < rec.size)
}

/// A setattr: nothing on an immutable inode; on an append-only one no size, mode, owner or
/// explicit time (setting times to now stays allowed, as on ext4).
pub(super) fn check_setattr(rec: &InodeRecord, set: &super::SetAttr) -> FsResult<()> {
    check_modify(rec)?;
    let explicit_time = matches!(set.atime, Some(super::TimeSet::At(_)))
        || matches!(set.mtime, Some(super::TimeSet::At(_)))
        || set.crtime.is_some();
    refuse(
        append_only(rec)
            && (set.size.is_some()
                || set.mode.is_some()
                || set.uid.is_some()
                || set.gid.is_some()
                || explicit_time),
    )
}

/// Setting or removing an xattr (ACLs included): refused on immutable and append-only inodes
/// (`xattr_permission`).
pub(super) fn check_xattr_change(rec: &InodeRecord) -> FsResult<()> {
    refuse(immutable(rec) || append_only(rec))
}

/// fallocate: never on an immutable file; on an append-only one only plain allocation
/// (`vfs_fallocate`: any mode bit but `FALLOC_FL_KEEP_SIZE` is refused).
pub(super) fn check_fallocate(rec: &InodeRecord, mode: i32) -> FsResult<()> {
    check_modify(rec)?;
    refuse(append_only(rec) && mode & !libc::FALLOC_FL_KEEP_SIZE != 0)
}

/// An entry added to directory `dir` (create, mknod, mkdir, symlink, link, rename into it):
/// never in an immutable directory.
pub(super) fn check_add_entry(dir: &InodeRecord) -> FsResult<()> {
    refuse(immutable(dir))
}

/// An entry removed from directory `dir` for inode `rec` (unlink, rmdir, rename away or over):
/// neither from an immutable or append-only directory nor of an immutable or append-only
/// inode (`may_delete`).
pub(super) fn check_remove_entry(dir: &InodeRecord, rec: &InodeRecord) -> FsResult<()> {
    refuse(immutable(dir) || append_only(dir) || immutable(rec) || append_only(rec))
}

/// A new link to `rec` (`vfs_link`).
pub(super) fn check_link(rec: &InodeRecord) -> FsResult<()> {
    refuse(immutable(rec) || append_only(rec))
}

/// open(2) with `flags` (the kernel keeps `O_TRUNC` to itself and sends a truncating setattr,
/// which [`check_setattr`] refuses): no writing to an immutable file, and to an append-only
/// one only with `O_APPEND` (`may_open`).
pub(super) fn check_open(rec: &InodeRecord, flags: i32) -> FsResult<()> {
    let writes = flags & libc::O_ACCMODE != libc::O_RDONLY;
    let truncates = flags & libc::O_TRUNC != 0;
    if !(writes || truncates) {
        return Ok(());
    }
    check_modify(rec)?;
    refuse(append_only(rec) && (flags & libc::O_APPEND == 0 || truncates))
}

impl Fs {
    /// The inode's flags (`FS_IOC_GETFLAGS`).
    pub fn inode_flags(&self, ino: u64) -> FsResult<u32> {
        let st = self.state.lock();
        Ok(self.load(&st, ino)?.flags)
    }

    /// Sets the inode's flags (`FS_IOC_SETFLAGS`), as ext4 would: the owner (or a caller with
    /// `CAP_FOWNER`) only; immutable and append-only set or cleared only with
    /// `CAP_LINUX_IMMUTABLE`; EOPNOTSUPP for flags not kept here (see the module doc) and for
    /// any but no-dump and no-atime on inodes that are neither files nor directories; while
    /// the inode stays immutable, no other flag changes.
    pub fn set_inode_flags(&self, ino: u64, flags: u32, caller: FlagsCaller) -> FsResult<()> {
        if flags & !USER_VISIBLE_FLAGS != 0 {
            return Err(FsError::NotSupported);
        }
        let flags = flags & USER_MODIFIABLE_FLAGS;
        let mut st = self.state.lock();
        let mut txn = Txn::default();
        let rec = self.txn_inode(&st, &mut txn, ino)?;
        // Removed, and its record gone from the store, while a descriptor still holds it: ext4
        // takes the change on the inode that dies with the last close. So does the in-memory
        // copy here; nothing is stored (it would bring the record back).
        let ghost = rec.nlink == 0 && st.nodes.get(&ino).is_some_and(|n| n.gone);
        if caller.uid != rec.uid && !caller.fowner {
            return Err(FsError::NotPermitted);
        }
        let old = rec.flags;
        if (old ^ flags) & PROTECTED_FLAGS != 0 && !caller.linux_immutable {
            return Err(FsError::NotPermitted);
        }
        if flags & !kind_flags(rec.kind) != 0 {
            return Err(FsError::NotSupported);
        }
        if old & flags & FS_IMMUTABLE_FL != 0 && old != flags {
            return Err(FsError::NotPermitted);
        }
        if old == flags {
            return Ok(());
        }
        let now = Timestamp::now();
        if ghost {
            if let Some(node) = st.nodes.get_mut(&ino) {
                node.rec.flags = flags;
                node.rec.ctime = now;
            }
            return Ok(());
        }
        rec.flags = flags;
        rec.ctime = now;
        self.commit(&mut st, txn)
    }

    /// `FS_IOC_FSGETXATTR`'s flags (`fsx_xflags`; no extent size hints or project IDs here).
    pub fn inode_xflags(&self, ino: u64) -> FsResult<u32> {
        Ok(flags_to_xflags(self.inode_flags(ino)?))
    }

    /// `FS_IOC_FSSETXATTR`: `xflags` as [`Fs::set_inode_flags`] takes the equivalent flags;
    /// a project ID or extent size hint other than 0 is EOPNOTSUPP (ext4 without the project
    /// feature does the same for project IDs), as are flags without an equivalent.
    pub fn set_inode_xflags(
        &self,
        ino: u64,
        xflags: u32,
        projid: u32,
        extsize: u32,
        caller: FlagsCaller,
    ) -> FsResult<()> {
        let flags = xflags_to_flags(xflags).ok_or(FsError::NotSupported)?;
        if projid != 0 || extsize != 0 {
            return Err(FsError::NotSupported);
        }
        self.set_inode_flags(ino, flags, caller)
    }

    /// Opens `ino` for open(2) `flags`: [`Fs::open`] after the flags' refusals
    /// ([`check_open`]).
    pub fn open_with_flags(&self, ino: u64, flags: i32) -> FsResult<u64> {
        {
            let st = self.state.lock();
            check_open(&self.load(&st, ino)?, flags)?;
        }
        self.open(ino)
    }
}

impl Fs {
    /// The inode record of `ino` (for a check made before an operation takes its own look).
    pub(super) fn getattr_record(&self, ino: u64) -> FsResult<InodeRecord> {
        let st = self.state.lock();
        self.load(&st, ino)
    }
}
