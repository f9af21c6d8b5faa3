//! `FsError` and the one errno table.

use std::fmt;

use crate::engine::EngineError;

/// Why a filesystem operation was refused.
#[derive(Debug)]
pub enum FsError {
    /// No such file, directory or handle target.
    NotFound,
    /// The name exists (create, mkdir, link, rename with NOREPLACE).
    Exists,
    /// A path component, or the rename target of a directory, is not a directory.
    NotDir,
    /// A directory was given where a non-directory is required.
    IsDir,
    /// rmdir, or rename over, a directory that still has entries.
    NotEmpty,
    /// A name longer than `MAX_NAME_LEN`, a symlink target or xattr name over its limit.
    NameTooLong,
    /// An offset or size beyond `MAX_FILE_SIZE`.
    FileTooBig,
    /// Bad argument: rename of a directory into itself, bad flags, negative sizes, ...
    Invalid,
    /// The xattr does not exist.
    NoXattr,
    /// The caller's buffer is too small for the xattr (value or list).
    Range,
    /// An xattr value over `MAX_XATTR_VALUE_LEN`.
    TooBig,
    /// The operation or mode is not supported (fallocate modes other than 0, ...).
    NotSupported,
    /// Not permitted (hard link to a directory, ...).
    NotPermitted,
    /// access() denied.
    Access,
    /// An unknown file handle.
    BadHandle,
    /// `lseek` with `SEEK_DATA` or `SEEK_HOLE` from an offset with no data (resp. at or past
    /// the end of the file) after it.
    NoSuchOffset,
    /// The engine refused or failed.
    Engine(EngineError),
    /// A record read from the store does not decode: the store is damaged.
    Corrupt(String),
}

impl FsError {
    /// The errno ext4 would return for this error. One exhaustive table: a new variant does not
    /// compile until it has an errno.
    pub fn errno(&self) -> i32 {
        match self {
            FsError::NotFound => libc::ENOENT,
            FsError::Exists => libc::EEXIST,
            FsError::NotDir => libc::ENOTDIR,
            FsError::IsDir => libc::EISDIR,
            FsError::NotEmpty => libc::ENOTEMPTY,
            FsError::NameTooLong => libc::ENAMETOOLONG,
            FsError::FileTooBig => libc::EFBIG,
            FsError::Invalid => libc::EINVAL,
            FsError::NoXattr => libc::ENODATA,
            FsError::Range => libc::ERANGE,
            // ext4 refuses an xattr value that does not fit with E2BIG (the VFS limit) or
            // ENOSPC (no room in the inode/block); E2BIG is what setfattr users see.
            FsError::TooBig => libc::E2BIG,
            FsError::NotSupported => libc::EOPNOTSUPP,
            FsError::NotPermitted => libc::EPERM,
            FsError::Access => libc::EACCES,
            FsError::BadHandle => libc::EBADF,
            FsError::NoSuchOffset => libc::ENXIO,
            FsError::Engine(e) => engine_errno(e),
            FsError::Corrupt(_) => libc::EIO,
        }
    }
}

/// Exhaustive too (`#[non_exhaustive]` does not apply inside the crate): a new engine error
/// does not compile until it has an errno.
fn engine_errno(e: &EngineError) -> i32 {
    match e {
        EngineError::NoSpace => libc::ENOSPC,
        // A limit we did not check for first is our bug, but to the application it is an I/O
        // failure of this request, not a bad argument.
        EngineError::Limit(_) => libc::EIO,
        EngineError::Io(_) | EngineError::Corrupt(_) | EngineError::Failed(_) => libc::EIO,
        EngineError::NotAStore(_) | EngineError::Locked(_) | EngineError::Closed => libc::EIO,
        EngineError::ReadOnly => libc::EROFS,
    }
}

impl fmt::Display for FsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FsError::Engine(e) => write!(f, "{e}"),
            FsError::Corrupt(s) => write!(f, "damaged record: {s}"),
            other => write!(f, "{}", std::io::Error::from_raw_os_error(other.errno())),
        }
    }
}

impl std::error::Error for FsError {}

impl From<EngineError> for FsError {
    fn from(e: EngineError) -> Self {
        FsError::Engine(e)
    }
}

pub type FsResult<T> = std::result::Result<T, FsError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_table_matches_ext4() {
        assert_eq!(FsError::NameTooLong.errno(), libc::ENAMETOOLONG);
        assert_eq!(FsError::NotEmpty.errno(), libc::ENOTEMPTY);
        assert_eq!(FsError::Exists.errno(), libc::EEXIST);
        assert_eq!(FsError::NotFound.errno(), libc::ENOENT);
        assert_eq!(FsError::NotDir.errno(), libc::ENOTDIR);
        assert_eq!(FsError::IsDir.errno(), libc::EISDIR);
        assert_eq!(FsError::FileTooBig.errno(), libc::EFBIG);
        assert_eq!(FsError::Engine(EngineError::NoSpace).errno(), libc::ENOSPC);
        assert_eq!(
            FsError::Engine(EngineError::Corrupt("x".into())).errno(),
            libc::EIO
        );
        assert_eq!(
            FsError::Engine(EngineError::Failed("x".into())).errno(),
            libc::EIO
        );
        assert_eq!(
            FsError::Engine(EngineError::Io(std::io::Error::other("x"))).errno(),
            libc::EIO
        );
        assert_eq!(FsError::NoXattr.errno(), libc::ENODATA);
        assert_eq!(FsError::NoSuchOffset.errno(), libc::ENXIO);
        assert_ne!(FsError::Invalid.errno(), libc::EXDEV);
    }
}
