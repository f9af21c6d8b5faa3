//! Thin wrappers of the `*at` system calls cutfs passes through, each returning fuser's
//! `Errno`, so that the passthrough and the undo records speak one error type and no raw
//! return code escapes unchecked.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{Errno, FileType};

pub fn cstr(name: &OsStr) -> CString {
    CString::new(name.as_bytes()).unwrap_or_else(|_| CString::new("?").expect("no NUL"))
}

pub fn errno() -> Errno {
    Errno::from(io::Error::last_os_error())
}

pub fn check(rc: libc::c_int) -> Result<(), Errno> {
    if rc < 0 { Err(errno()) } else { Ok(()) }
}

pub fn fstatat(dir: &OwnedFd, name: &OsStr) -> Result<libc::stat, Errno> {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let c = cstr(name);
    // SAFETY: `st` is a valid out-pointer, `c` a NUL-terminated string.
    check(unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            c.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(st)
}

pub fn fstat(fd: &OwnedFd) -> Result<libc::stat, Errno> {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: an empty path with AT_EMPTY_PATH stats the descriptor itself (O_PATH ones too).
    check(unsafe {
        libc::fstatat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            &mut st,
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(st)
}

pub fn openat(
    dir: &OwnedFd,
    name: &OsStr,
    flags: libc::c_int,
    mode: u32,
) -> Result<OwnedFd, Errno> {
    let c = cstr(name);
    // SAFETY: `c` is NUL-terminated; the descriptor returned is owned by the OwnedFd.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(errno());
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn kind_of(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFREG => FileType::RegularFile,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        _ => FileType::Socket,
    }
}

pub fn time(sec: i64, nsec: i64) -> SystemTime {
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec as u64, nsec as u32)
    } else {
        UNIX_EPOCH
    }
}

pub fn renameat(a: &OwnedFd, an: &OsStr, b: &OwnedFd, bn: &OsStr, flags: u32) -> Result<(), Errno> {
    let (ca, cb) = (cstr(an), cstr(bn));
    // SAFETY: NUL-terminated names, descriptors we own.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            a.as_raw_fd(),
            ca.as_ptr(),
            b.as_raw_fd(),
            cb.as_ptr(),
            flags,
        )
    };
    check(rc as libc::c_int)
}

pub fn unlinkat(dir: &OwnedFd, name: &OsStr, flags: libc::c_int) -> Result<(), Errno> {
    let c = cstr(name);
    // SAFETY: NUL-terminated name, a descriptor we own.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), flags) })
}
