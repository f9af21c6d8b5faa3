//! Conversions between fuser's types and the filesystem's: attributes, file types, times and
//! errors. Kept at the edge so that nothing inside `fs` names a fuser type; a refusal is logged
//! here once, as it leaves for the kernel.

use fuser::{Errno, FileAttr, FileType, Generation, INodeNo, Request, TimeOrNow};

use super::super::{Attr, FileKind, FsError, TimeSet};

/// The generation of an entry reply: see `fs::export` (file handles carry it).
pub(super) fn generation(a: &Attr) -> Generation {
    Generation(super::super::export::attr_generation(a))
}

pub(super) fn file_type(kind: FileKind) -> FileType {
    match kind {
        FileKind::Regular => FileType::RegularFile,
        FileKind::Directory => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::NamedPipe => FileType::NamedPipe,
        FileKind::CharDevice => FileType::CharDevice,
        FileKind::BlockDevice => FileType::BlockDevice,
        FileKind::Socket => FileType::Socket,
    }
}

pub(super) fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.blocks,
        atime: a.atime,
        mtime: a.mtime,
        ctime: a.ctime,
        crtime: a.crtime,
        kind: file_type(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: a.blksize,
        flags: a.flags,
    }
}

pub(super) fn time_set(t: TimeOrNow) -> TimeSet {
    match t {
        TimeOrNow::Now => TimeSet::Now,
        TimeOrNow::SpecificTime(s) => TimeSet::At(super::super::kernel_time::from_fuser(s)),
    }
}

/// Logs a refusal once, at the edge, and turns it into an errno.
pub(super) fn errno(op: &str, req: &Request, e: &FsError) -> Errno {
    let code = e.errno();
    if code == libc::EIO {
        log::error!("{op} (request {}): {e}", req.unique().0);
    } else {
        log::debug!("{op} (request {}): {e}", req.unique().0);
    }
    Errno::from_i32(code)
}
