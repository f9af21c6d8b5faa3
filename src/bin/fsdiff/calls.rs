//! The system calls of each family of ops on one side, each result rendered as text (an
//! errno by its name, a count, what a data op left in the file): `Side::run` picks the family.
//! One step per family keeps each call's arguments and rendering side by side.

use crate::exec::{
    FS_IOC_GETFLAGS, FS_IOC_SETFLAGS, Side, USER_FLAGS, cstr, errname, is_dir, pattern,
    read_dir_names, res, res_ok,
};
use crate::ops::{Kind, NSLOT, Op, SYMLINK_TARGETS, XATTR_NAMES, XATTR_VALUES};

impl Side {
    /// Opens a file into a slot (open, creat, O_TMPFILE) or closes a slot.
    pub(crate) fn run_open_close(&mut self, op: &Op, paths: &[String]) -> String {
        let p1 = cstr(&paths[op.p1 as usize % paths.len()]);
        let fd1 = self.fd(op.s1);
        let root = self.root;
        use Kind::*;
        unsafe {
            match op.kind {
                Open | Creat | Tmpfile => {
                    let (flags, path) = match op.kind {
                        Open => (op.fl as i32, &p1),
                        Creat => (libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC, &p1),
                        _ => (op.fl as i32 | libc::O_TMPFILE, &p1),
                    };
                    let fd = libc::openat(
                        root,
                        path.as_ptr(),
                        flags | libc::O_CLOEXEC,
                        op.len as libc::c_uint,
                    );
                    let r = res_ok(fd as i64);
                    if fd >= 0 {
                        self.set_slot(op.s1, fd);
                        return format!("{r} {}", self.describe_fd(fd));
                    }
                    r
                }
                Close => {
                    let r = res(libc::close(fd1) as i64);
                    if op.s1 < NSLOT {
                        self.slots[op.s1 as usize] = -1;
                    }
                    r
                }
                other => unreachable!("{other:?} is not a open or close op"),
            }
        }
    }

    /// Reads, writes, truncates or syncs; a write or truncate adds what the file holds after it.
    pub(crate) fn run_data(&mut self, op: &Op, paths: &[String]) -> String {
        let np = paths.len();
        let p1 = cstr(&paths[op.p1 as usize % np]);
        let fd1 = self.fd(op.s1);
        let root = self.root;
        use Kind::*;
        unsafe {
            match op.kind {
                Read | Pread => {
                    let mut buf = vec![0u8; op.len as usize];
                    let n = if op.kind == Read {
                        libc::read(fd1, buf.as_mut_ptr().cast(), buf.len())
                    } else {
                        libc::pread(
                            fd1,
                            buf.as_mut_ptr().cast(),
                            buf.len(),
                            at(fd1, op.off, op.eof),
                        )
                    };
                    let r = res(n as i64);
                    if n > 0 {
                        format!(
                            "{r} crc {:08x} pos {}",
                            crc32fast::hash(&buf[..n as usize]),
                            libc::lseek(fd1, 0, libc::SEEK_CUR)
                        )
                    } else {
                        r
                    }
                }
                Write | Pwrite => {
                    let data = pattern(op.fl, op.len as usize);
                    let n = if op.kind == Write {
                        libc::write(fd1, data.as_ptr().cast(), data.len())
                    } else {
                        libc::pwrite(
                            fd1,
                            data.as_ptr().cast(),
                            data.len(),
                            at(fd1, op.off, op.eof),
                        )
                    };
                    format!(
                        "{} pos {} {}",
                        res(n as i64),
                        libc::lseek(fd1, 0, libc::SEEK_CUR),
                        self.data(fd1)
                    )
                }
                Ftruncate => {
                    let r = res(libc::ftruncate(fd1, at(fd1, op.off, op.eof)) as i64);
                    format!("{r} {}", self.data(fd1))
                }
                Truncate => {
                    let fd = libc::openat(
                        root,
                        p1.as_ptr(),
                        libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NONBLOCK,
                    );
                    let off = at(fd, op.off, op.eof);
                    let r = res(
                        libc::truncate(self.full(&paths[op.p1 as usize % np]).as_ptr(), off) as i64,
                    );
                    let d = self.data(fd);
                    if fd >= 0 {
                        libc::close(fd);
                    }
                    format!("{r} {d}")
                }
                Fsync => res(libc::fsync(fd1) as i64),
                Fdatasync => res(libc::fdatasync(fd1) as i64),
                other => unreachable!("{other:?} is not a data op"),
            }
        }
    }

    /// lseek, SEEK_DATA and SEEK_HOLE (on a directory only where `lseek_dir` is compared).
    pub(crate) fn run_seek(&mut self, op: &Op) -> String {
        let fd1 = self.fd(op.s1);
        use Kind::*;
        unsafe {
            match op.kind {
                Lseek | SeekData | SeekHole if !self.checks.lseek_dir && is_dir(fd1) => {
                    "not run: a directory".to_string()
                }
                Lseek => res(libc::lseek(fd1, op.off, op.fl as i32)),
                SeekData => res(libc::lseek(fd1, at(fd1, op.off, op.eof), libc::SEEK_DATA)),
                SeekHole => res(libc::lseek(fd1, at(fd1, op.off, op.eof), libc::SEEK_HOLE)),
                other => unreachable!("{other:?} is not a seek op"),
            }
        }
    }

    /// fallocate in each mode and copy_file_range; each adds what the file holds after it.
    pub(crate) fn run_range(&mut self, op: &Op) -> String {
        let fd1 = self.fd(op.s1);
        let fd2 = self.fd(op.s2);
        use Kind::*;
        unsafe {
            match op.kind {
                Falloc | FallocKeep | PunchHole | ZeroRange | CollapseRange | InsertRange => {
                    let mode = match op.kind {
                        Falloc => 0,
                        FallocKeep => libc::FALLOC_FL_KEEP_SIZE,
                        PunchHole => libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                        ZeroRange => libc::FALLOC_FL_ZERO_RANGE | op.fl as i32,
                        CollapseRange => libc::FALLOC_FL_COLLAPSE_RANGE,
                        _ => libc::FALLOC_FL_INSERT_RANGE,
                    };
                    let r = res(libc::fallocate(fd1, mode, at(fd1, op.off, op.eof), op.len) as i64);
                    format!("{r} {}", self.data(fd1))
                }
                CopyRange => {
                    let (mut a, mut b) = (op.off, op.off2);
                    let (pa, pb): (*mut i64, *mut i64) = if op.eof == 1 {
                        (std::ptr::null_mut(), std::ptr::null_mut())
                    } else {
                        (&mut a, &mut b)
                    };
                    let n = libc::copy_file_range(fd1, pa, fd2, pb, op.len as usize, op.fl as u32);
                    format!(
                        "{} in {} out {} pos {} {}",
                        res(n as i64),
                        a,
                        b,
                        libc::lseek(fd2, 0, libc::SEEK_CUR),
                        self.data(fd2)
                    )
                }
                other => unreachable!("{other:?} is not a range op"),
            }
        }
    }

    /// Creates, removes, renames and links names, and reads symlinks.
    pub(crate) fn run_namespace(&mut self, op: &Op, paths: &[String]) -> String {
        let np = paths.len();
        let p1 = cstr(&paths[op.p1 as usize % np]);
        let p2 = cstr(&paths[op.p2 as usize % np]);
        let fd1 = self.fd(op.s1);
        let root = self.root;
        use Kind::*;
        unsafe {
            match op.kind {
                Mkdir => res(libc::mkdirat(root, p1.as_ptr(), op.len as libc::mode_t) as i64),
                Rmdir => res(libc::unlinkat(root, p1.as_ptr(), libc::AT_REMOVEDIR) as i64),
                Unlink => res(libc::unlinkat(root, p1.as_ptr(), 0) as i64),
                Rename | RenameNoreplace | RenameExchange | RenameWhiteout => {
                    let flags = match op.kind {
                        Rename => op.fl as u32,
                        RenameNoreplace => libc::RENAME_NOREPLACE,
                        RenameExchange => libc::RENAME_EXCHANGE,
                        _ => libc::RENAME_WHITEOUT,
                    };
                    let r =
                        res(libc::renameat2(root, p1.as_ptr(), root, p2.as_ptr(), flags) as i64);
                    if op.kind == RenameWhiteout && r == "err ENOTEMPTY" {
                        // ext4 sets the source directory's times on a whiteout rename that
                        // fails with ENOTEMPTY (it has put the entry back by then), which a
                        // failed call should not: both sides set them to now, so that what
                        // is compared later is what both did since.
                        let path = &paths[op.p1 as usize % np];
                        let parent = cstr(match path.rsplit_once('/') {
                            Some((dir, _)) => dir,
                            None => ".",
                        });
                        libc::utimensat(root, parent.as_ptr(), std::ptr::null(), 0);
                    }
                    r
                }
                Link => {
                    res(libc::linkat(root, p1.as_ptr(), root, p2.as_ptr(), op.fl as i32) as i64)
                }
                LinkFd => {
                    res(
                        libc::linkat(fd1, c"".as_ptr(), root, p2.as_ptr(), libc::AT_EMPTY_PATH)
                            as i64,
                    )
                }
                Symlink => {
                    let t = cstr(SYMLINK_TARGETS[op.fl as usize % SYMLINK_TARGETS.len()]);
                    res(libc::symlinkat(t.as_ptr(), root, p1.as_ptr()) as i64)
                }
                Readlink => {
                    let mut buf = [0u8; 512];
                    let n = libc::readlinkat(root, p1.as_ptr(), buf.as_mut_ptr().cast(), buf.len());
                    if n < 0 {
                        res(-1)
                    } else {
                        format!("ok {:?}", String::from_utf8_lossy(&buf[..n as usize]))
                    }
                }
                other => unreachable!("{other:?} is not a namespace op"),
            }
        }
    }

    /// chmod, chown and utimensat by path.
    pub(crate) fn run_attr_change(&mut self, op: &Op, paths: &[String]) -> String {
        let p1 = cstr(&paths[op.p1 as usize % paths.len()]);
        let root = self.root;
        use Kind::*;
        unsafe {
            match op.kind {
                Chmod => res(libc::fchmodat(root, p1.as_ptr(), op.len as libc::mode_t, 0) as i64),
                Chown => res(libc::fchownat(
                    root,
                    p1.as_ptr(),
                    op.off as u32,
                    op.off2 as u32,
                    op.fl as i32,
                ) as i64),
                Utimens => {
                    let ts = |v: i64| match v {
                        -1 => libc::timespec {
                            tv_sec: 0,
                            tv_nsec: libc::UTIME_NOW,
                        },
                        -2 => libc::timespec {
                            tv_sec: 0,
                            tv_nsec: libc::UTIME_OMIT,
                        },
                        s => libc::timespec {
                            tv_sec: s,
                            tv_nsec: op.len,
                        },
                    };
                    let t = [ts(op.off), ts(op.off2)];
                    res(libc::utimensat(root, p1.as_ptr(), t.as_ptr(), op.fl as i32) as i64)
                }
                other => unreachable!("{other:?} is not a attribute-changing op"),
            }
        }
    }

    /// The xattr calls by path, following symlinks or not (the `l` variants).
    pub(crate) fn run_xattr(&mut self, op: &Op, paths: &[String]) -> String {
        let np = paths.len();
        use Kind::*;
        unsafe {
            match op.kind {
                Setxattr => {
                    let name = cstr(XATTR_NAMES[op.off as usize % XATTR_NAMES.len()]);
                    let v = XATTR_VALUES[op.len as usize % XATTR_VALUES.len()];
                    let path = self.full(&paths[op.p1 as usize % np]);
                    let f = if op.eof == 1 {
                        libc::lsetxattr
                    } else {
                        libc::setxattr
                    };
                    res(f(
                        path.as_ptr(),
                        name.as_ptr(),
                        v.as_ptr().cast(),
                        v.len(),
                        op.fl as i32,
                    ) as i64)
                }
                Getxattr => {
                    let name = cstr(XATTR_NAMES[op.off as usize % XATTR_NAMES.len()]);
                    let path = self.full(&paths[op.p1 as usize % np]);
                    let mut buf = vec![0u8; op.len as usize];
                    let f = if op.eof == 1 {
                        libc::lgetxattr
                    } else {
                        libc::getxattr
                    };
                    let n = f(
                        path.as_ptr(),
                        name.as_ptr(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                    );
                    if n > 0 && op.len > 0 {
                        format!("ok {:?}", String::from_utf8_lossy(&buf[..n as usize]))
                    } else {
                        res(n as i64)
                    }
                }
                Listxattr => {
                    let path = self.full(&paths[op.p1 as usize % np]);
                    let mut buf = vec![0u8; op.len as usize];
                    let f = if op.eof == 1 {
                        libc::llistxattr
                    } else {
                        libc::listxattr
                    };
                    let n = f(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len());
                    if n > 0 && op.len > 0 {
                        let mut names: Vec<String> = buf[..n as usize]
                            .split(|b| *b == 0)
                            .filter(|s| !s.is_empty())
                            .map(|s| String::from_utf8_lossy(s).into_owned())
                            .collect();
                        names.sort();
                        format!("ok {n} {names:?}")
                    } else {
                        res(n as i64)
                    }
                }
                Removexattr => {
                    let name = cstr(XATTR_NAMES[op.off as usize % XATTR_NAMES.len()]);
                    let path = self.full(&paths[op.p1 as usize % np]);
                    let f = if op.eof == 1 {
                        libc::lremovexattr
                    } else {
                        libc::removexattr
                    };
                    res(f(path.as_ptr(), name.as_ptr()) as i64)
                }
                other => unreachable!("{other:?} is not a xattr op"),
            }
        }
    }

    /// stat, lstat, fstat, readdir and the inode flags (FS_IOC_GETFLAGS, FS_IOC_SETFLAGS).
    pub(crate) fn run_inspect(&mut self, op: &Op, paths: &[String]) -> String {
        let p1 = cstr(&paths[op.p1 as usize % paths.len()]);
        let fd1 = self.fd(op.s1);
        let root = self.root;
        use Kind::*;
        unsafe {
            match op.kind {
                Stat | Lstat => {
                    let mut st: libc::stat = std::mem::zeroed();
                    let flags = if op.kind == Lstat {
                        libc::AT_SYMLINK_NOFOLLOW
                    } else {
                        0
                    };
                    let r = libc::fstatat(root, p1.as_ptr(), &mut st, flags);
                    if r < 0 {
                        res(-1)
                    } else {
                        format!("ok {}", self.stat_text(&st))
                    }
                }
                Fstat => {
                    let mut st: libc::stat = std::mem::zeroed();
                    if libc::fstat(fd1, &mut st) < 0 {
                        res(-1)
                    } else {
                        format!("ok {}", self.stat_text(&st))
                    }
                }
                Readdir => {
                    let fd = libc::openat(
                        root,
                        p1.as_ptr(),
                        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
                    );
                    if fd < 0 {
                        return res(-1);
                    }
                    let r = match read_dir_names(fd) {
                        Ok(names) => format!("ok {names:?}"),
                        Err(e) => format!("err {}", errname(e)),
                    };
                    libc::close(fd);
                    r
                }
                GetFlags => {
                    let mut v: libc::c_long = 0;
                    let r = libc::ioctl(fd1, FS_IOC_GETFLAGS, &mut v);
                    if r < 0 {
                        res(-1)
                    } else {
                        format!("ok {:#x}", v as i64 & USER_FLAGS)
                    }
                }
                SetFlags => {
                    // As chattr does: keep the flags that are not the user's (ext4 refuses to
                    // clear its extents flag), set the user's to the op's value.
                    let mut v: libc::c_long = 0;
                    if libc::ioctl(fd1, FS_IOC_GETFLAGS, &mut v) < 0 {
                        return format!("getflags {}", res(-1));
                    }
                    v = (v & !(USER_FLAGS as libc::c_long)) | op.fl as libc::c_long;
                    res(libc::ioctl(fd1, FS_IOC_SETFLAGS, &v) as i64)
                }
                other => unreachable!("{other:?} is not a inspecting op"),
            }
        }
    }
}

/// An offset relative to EOF is resolved on this side (both sides have the same size as long as
/// they agree, and the data check compares sizes after every data op).
fn at(fd: libc::c_int, off: i64, eof: u8) -> i64 {
    if eof == 1 {
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        let size = if unsafe { libc::fstat(fd, &mut st) } == 0 {
            st.st_size
        } else {
            0
        };
        (size + off).max(0)
    } else {
        off
    }
}
