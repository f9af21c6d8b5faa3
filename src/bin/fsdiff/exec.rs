//! Runs an op on one side (a directory on the file system under test or on ext4) and renders
//! its result, and what it left, as text: two sides agree when their texts are equal.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::ops::{
    BAD_SLOT, Kind, NEG_SLOT, NSLOT, OFFSETS, Op, SYMLINK_TARGETS, XATTR_NAMES, XATTR_VALUES,
};

const FS_IOC_GETFLAGS: libc::c_ulong = 0x8008_6601;
const FS_IMMUTABLE_FL: libc::c_long = 0x10;
const FS_APPEND_FL: libc::c_long = 0x20;
const FS_IOC_SETFLAGS: libc::c_ulong = 0x4008_6602;
/// The inode flags a user sets with chattr and that both sides must keep alike
/// (sync, immutable, append, nodump, noatime, dirsync). ext4's own (extents, ...) are masked.
pub const USER_FLAGS: i64 = 0x8 | 0x10 | 0x20 | 0x40 | 0x80 | 0x10000;

/// Which result details are compared (the names are features in KNOWN_DIFFERENT too).
#[derive(Clone, Copy)]
pub struct Checks {
    /// st_blocks of regular files.
    pub blocks: bool,
    /// atime (only whether it is recent or the exact value that utimensat set).
    pub atime: bool,
    /// lseek on a directory.
    pub lseek_dir: bool,
    /// EPERM for an immutable or append-only inode against another refusal of the FUSE
    /// mount's VFS (see `refused_by_the_vfs_first`).
    pub flags_after_vfs: bool,
}

pub struct Side {
    pub base: PathBuf,
    root: libc::c_int,
    slots: [libc::c_int; NSLOT as usize],
    pub checks: Checks,
}

fn cstr(s: &str) -> CString {
    CString::new(s).expect("no NUL in paths")
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

pub fn errname(e: i32) -> String {
    let name = match e {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::E2BIG => "E2BIG",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENODEV => "ENODEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::ETXTBSY => "ETXTBSY",
        libc::EFBIG => "EFBIG",
        libc::ENOSPC => "ENOSPC",
        libc::ESPIPE => "ESPIPE",
        libc::EROFS => "EROFS",
        libc::EMLINK => "EMLINK",
        libc::ERANGE => "ERANGE",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOSYS => "ENOSYS",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ELOOP => "ELOOP",
        libc::ENODATA => "ENODATA",
        libc::EOVERFLOW => "EOVERFLOW",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ENOTTY => "ENOTTY",
        libc::ESTALE => "ESTALE",
        _ => "",
    };
    if name.is_empty() {
        format!("errno{e}")
    } else {
        name.to_string()
    }
}

/// `ok N` or `err ENAME` for a syscall's return value.
fn res(r: i64) -> String {
    if r < 0 {
        format!("err {}", errname(errno()))
    } else {
        format!("ok {r}")
    }
}

/// `ok` or `err ENAME` where the value itself may differ between sides (fd numbers).
fn res_ok(r: i64) -> String {
    if r < 0 {
        format!("err {}", errname(errno()))
    } else {
        "ok".to_string()
    }
}

/// Write data: a pattern from the op, so that both sides write the same bytes.
fn pattern(seed: i64, len: usize) -> Vec<u8> {
    let mut x = seed as u64 | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A timestamp as compared: "recent" if within a day of now (the two sides take it at
/// different instants), else its exact value (set by utimensat).
fn time_class(sec: i64, nsec: i64) -> String {
    if (sec - now_secs()).abs() < 86_400 {
        "recent".into()
    } else {
        format!("{sec}.{nsec:09}")
    }
}

impl Side {
    /// Opens (creating it empty) the work directory `base`.
    pub fn new(base: &Path, checks: Checks) -> std::io::Result<Side> {
        std::fs::create_dir_all(base)?;
        let root = unsafe {
            libc::open(
                cstr(&base.to_string_lossy()).as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY,
            )
        };
        if root < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Side {
            base: base.to_path_buf(),
            root,
            slots: [-1; NSLOT as usize],
            checks,
        })
    }

    /// Closes every slot, empties the work directory and clears its flags (see
    /// `clear_flags_of`).
    pub fn reset(&mut self) -> std::io::Result<()> {
        for s in self.slots.iter_mut() {
            if *s >= 0 {
                unsafe { libc::close(*s) };
            }
            *s = -1;
        }
        clear_flags(&self.base);
        for e in std::fs::read_dir(&self.base)? {
            let p = e?.path();
            let meta = std::fs::symlink_metadata(&p)?;
            if meta.is_dir() {
                std::fs::remove_dir_all(&p)?;
            } else {
                std::fs::remove_file(&p)?;
            }
        }
        Ok(())
    }

    fn fd(&self, slot: u8) -> libc::c_int {
        match slot {
            BAD_SLOT => 1000,
            NEG_SLOT => -1,
            s => self.slots[s as usize % NSLOT as usize],
        }
    }

    /// Whether an inode `op` names (its paths, their directories, its descriptors) is immutable
    /// or append-only here.
    pub fn touches_protected_inode(&self, op: &Op, paths: &[String]) -> bool {
        let flagged = |fd: libc::c_int| {
            let mut v: libc::c_long = 0;
            fd >= 0
                && unsafe { libc::ioctl(fd, FS_IOC_GETFLAGS, &mut v) } == 0
                && v & (FS_IMMUTABLE_FL | FS_APPEND_FL) != 0
        };
        let np = paths.len();
        let mut names = Vec::new();
        for p in [op.p1, op.p2] {
            let path = &paths[p as usize % np];
            names.push(path.clone());
            if let Some((dir, _)) = path.rsplit_once('/') {
                names.push(dir.to_string());
            }
        }
        names.push(String::new());
        let by_path = names.iter().any(|name| {
            let full = self.full(name);
            let fd = unsafe {
                libc::open(
                    full.as_ptr(),
                    libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY,
                )
            };
            let yes = flagged(fd);
            if fd >= 0 {
                unsafe { libc::close(fd) };
            }
            yes
        });
        by_path || flagged(self.fd(op.s1)) || flagged(self.fd(op.s2))
    }

    fn full(&self, p: &str) -> CString {
        cstr(&format!("{}/{}", self.base.display(), p))
    }

    fn set_slot(&mut self, slot: u8, fd: libc::c_int) {
        let s = &mut self.slots[slot as usize % NSLOT as usize];
        if *s >= 0 {
            unsafe { libc::close(*s) };
        }
        *s = fd;
    }

    /// Runs `op`, returning its result as text; data ops add the size, st_blocks and a checksum
    /// of the file's contents as read back. Each family of ops has its own step.
    pub fn run(&mut self, op: &Op, paths: &[String]) -> String {
        use Kind::*;
        match op.kind {
            Open | Creat | Tmpfile | Close => self.run_open_close(op, paths),
            Read | Pread | Write | Pwrite | Ftruncate | Truncate | Fsync | Fdatasync => {
                self.run_data(op, paths)
            }
            Lseek | SeekData | SeekHole => self.run_seek(op),
            Falloc | FallocKeep | PunchHole | ZeroRange | CollapseRange | InsertRange
            | CopyRange => self.run_range(op),
            Mkdir | Rmdir | Unlink | Rename | RenameNoreplace | RenameExchange | RenameWhiteout
            | Link | LinkFd | Symlink | Readlink => self.run_namespace(op, paths),
            Chmod | Chown | Utimens => self.run_attr_change(op, paths),
            Setxattr | Getxattr | Listxattr | Removexattr => self.run_xattr(op, paths),
            Stat | Lstat | Fstat | Readdir | GetFlags | SetFlags => self.run_inspect(op, paths),
        }
    }

    /// Opens a file into a slot (open, creat, O_TMPFILE) or closes a slot.
    fn run_open_close(&mut self, op: &Op, paths: &[String]) -> String {
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
    fn run_data(&mut self, op: &Op, paths: &[String]) -> String {
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
    fn run_seek(&mut self, op: &Op) -> String {
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
    fn run_range(&mut self, op: &Op) -> String {
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
    fn run_namespace(&mut self, op: &Op, paths: &[String]) -> String {
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
    fn run_attr_change(&mut self, op: &Op, paths: &[String]) -> String {
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
    fn run_xattr(&mut self, op: &Op, paths: &[String]) -> String {
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
    fn run_inspect(&mut self, op: &Op, paths: &[String]) -> String {
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

    /// The type and access mode of an open fd, as both sides must see them.
    fn describe_fd(&self, fd: libc::c_int) -> String {
        let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        unsafe { libc::fstat(fd, &mut st) };
        format!(
            "flags {:#o} {} {}",
            fl & (libc::O_ACCMODE | libc::O_APPEND),
            self.stat_text(&st),
            if st.st_mode & libc::S_IFMT == libc::S_IFREG {
                self.data(fd)
            } else {
                String::new()
            }
        )
    }

    /// The fields of a stat that must match: type and mode, nlink, uid, gid; size except of
    /// directories (ext4 counts directory blocks, which POSIX leaves open); st_blocks of
    /// regular files only, as none or some (`blocks_text`; ext4 keeps xattrs in the 1 KiB inode,
    /// see scripts/fsdiff.sh, so they take no block; directories and symlinks are the layout's
    /// business);
    /// times only as "recent" or the exact value utimensat set, and whether mtime is after
    /// ctime (two sides never run an op at the same instant).
    pub fn stat_text(&self, st: &libc::stat) -> String {
        let kind = match st.st_mode & libc::S_IFMT {
            libc::S_IFREG => "reg",
            libc::S_IFDIR => "dir",
            libc::S_IFLNK => "lnk",
            libc::S_IFCHR => "chr",
            _ => "other",
        };
        let mut s = format!(
            "{kind} {:o} nlink {} uid {} gid {}",
            st.st_mode & 0o7777,
            st.st_nlink,
            st.st_uid,
            st.st_gid
        );
        if kind != "dir" {
            s += &format!(" size {}", st.st_size);
        }
        if kind == "chr" {
            s += &format!(" rdev {:#x}", st.st_rdev);
        }
        if kind == "reg" && self.checks.blocks {
            s += blocks_text(st.st_blocks);
        }
        if self.checks.atime {
            s += &format!(" atime {}", time_class(st.st_atime, st.st_atime_nsec));
        }
        s += &format!(" mtime {}", time_class(st.st_mtime, st.st_mtime_nsec));
        if (st.st_mtime, st.st_mtime_nsec) > (st.st_ctime, st.st_ctime_nsec) {
            s += " mtime>ctime";
        }
        s
    }

    /// Size, st_blocks and a checksum of the file open as `fd`, read back through a new open
    /// file description (the fd may be write-only or its file unlinked). Sparse files of
    /// terabytes are read in windows: the start, around each offset an op may use, the end.
    fn data(&self, fd: libc::c_int) -> String {
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if fd < 0
            || unsafe { libc::fstat(fd, &mut st) } < 0
            || st.st_mode & libc::S_IFMT != libc::S_IFREG
        {
            return String::new();
        }
        let rfd = unsafe {
            libc::open(
                cstr(&format!("/proc/self/fd/{fd}")).as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC,
            )
        };
        if rfd < 0 {
            return format!("| reopen {}", errname(errno()));
        }
        let size = st.st_size;
        let mut windows: Vec<(i64, i64)> = vec![(0, 1 << 20), (size - (512 << 10), size)];
        for &o in OFFSETS {
            if o >= (1 << 20) && o < size {
                windows.push((o - (128 << 10), o + (512 << 10)));
            }
        }
        let mut hasher = crc32fast::Hasher::new();
        let mut buf = vec![0u8; 1 << 16];
        let mut err = String::new();
        for (from, to) in windows {
            let (mut pos, to) = (from.max(0), to.min(size));
            while pos < to {
                let want = ((to - pos) as usize).min(buf.len());
                let n = unsafe { libc::pread(rfd, buf.as_mut_ptr().cast(), want, pos) };
                if n <= 0 {
                    err = if n < 0 {
                        format!(" read-back {}", errname(errno()))
                    } else {
                        format!(" short read at {pos}")
                    };
                    break;
                }
                hasher.update(&buf[..n as usize]);
                pos += n as i64;
            }
        }
        unsafe { libc::close(rfd) };
        let blocks = if self.checks.blocks {
            blocks_text(st.st_blocks)
        } else {
            ""
        };
        format!("| size {size}{blocks} crc {:08x}{err}", hasher.finalize())
    }

    /// The whole tree, one line per entry: stat text, link target, xattrs, data checksum.
    pub fn tree(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        self.walk(&self.base.clone(), "", &mut out, 0);
        out
    }

    fn walk(&self, dir: &Path, rel: &str, out: &mut BTreeMap<String, String>, depth: usize) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let path = e.path();
            let relp = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let c = cstr(&path.to_string_lossy());
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            if unsafe { libc::lstat(c.as_ptr(), &mut st) } < 0 {
                out.insert(relp, format!("lstat {}", errname(errno())));
                continue;
            }
            let mut line = self.stat_text(&st);
            // Of the entry itself, not of a symlink's target (the xattr crate's `list`/`get`).
            if let Ok(names) = xattr::list(&path) {
                let mut xs: Vec<String> = names
                    .map(|n| {
                        let v = xattr::get(&path, &n).ok().flatten().unwrap_or_default();
                        format!("{}={:?}", n.to_string_lossy(), String::from_utf8_lossy(&v))
                    })
                    .collect();
                if !xs.is_empty() {
                    xs.sort();
                    line += &format!(" xattrs {xs:?}");
                }
            }
            match st.st_mode & libc::S_IFMT {
                libc::S_IFLNK => {
                    if let Ok(t) = std::fs::read_link(&path) {
                        line += &format!(
                            " -> {:?}",
                            t.as_os_str().as_bytes().escape_ascii().to_string()
                        );
                    }
                }
                libc::S_IFREG => {
                    let fd = unsafe {
                        libc::open(
                            c.as_ptr(),
                            libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NONBLOCK,
                        )
                    };
                    if fd >= 0 {
                        line += &format!(" {}", self.data(fd));
                        unsafe { libc::close(fd) };
                    } else {
                        line += &format!(" open {}", errname(errno()));
                    }
                }
                libc::S_IFDIR if depth < 8 => self.walk(&path, &relp, out, depth + 1),
                _ => {}
            }
            out.insert(relp, line);
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

/// st_blocks only as none or some: ext4 counts its extent tree's blocks too, and how many it
/// needs depends on where earlier writes were placed (two ext4 directories given the same ops
/// differ by a block), so an exact count is no test.
fn blocks_text(blocks: i64) -> &'static str {
    if blocks == 0 {
        " blocks 0"
    } else {
        " blocks >0"
    }
}

fn is_dir(fd: libc::c_int) -> bool {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    unsafe { libc::fstat(fd, &mut st) == 0 && st.st_mode & libc::S_IFMT == libc::S_IFDIR }
}

/// The names in a directory (with . and ..), sorted, via getdents64.
fn read_dir_names(fd: libc::c_int) -> Result<Vec<String>, i32> {
    let mut names = Vec::new();
    let mut buf = vec![0u8; 8192];
    loop {
        let n = unsafe { libc::syscall(libc::SYS_getdents64, fd, buf.as_mut_ptr(), buf.len()) };
        if n < 0 {
            return Err(errno());
        }
        if n == 0 {
            break;
        }
        let mut off = 0usize;
        while off < n as usize {
            let reclen = u16::from_ne_bytes([buf[off + 16], buf[off + 17]]) as usize;
            let name = &buf[off + 19..off + reclen];
            let end = name.iter().position(|b| *b == 0).unwrap_or(name.len());
            names.push(String::from_utf8_lossy(&name[..end]).into_owned());
            off += reclen;
        }
    }
    names.sort();
    Ok(names)
}

/// Clears the user flags of `dir` and everything under it (see [`clear_flags_of`]).
fn clear_flags(dir: &Path) {
    clear_flags_of(dir);
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            clear_flags(&p);
        } else if meta.is_file() {
            clear_flags_of(&p);
        }
    }
}

/// Clears the user flags of `path` (a file or directory: the work directory itself too, which
/// an op on `.` or `d0/..` may have flagged): immutable and append-only so that it can be
/// removed, and the others so that each seed starts alike and its op log replays it (ext4 gives
/// new inodes the no-dump and no-atime flags of their directory).
fn clear_flags_of(path: &Path) {
    let c = cstr(&path.to_string_lossy());
    unsafe {
        let fd = libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC,
        );
        if fd >= 0 {
            let mut v: libc::c_long = 0;
            if libc::ioctl(fd, FS_IOC_GETFLAGS, &mut v) == 0 && v as i64 & USER_FLAGS != 0 {
                v &= !(USER_FLAGS as libc::c_long);
                libc::ioctl(fd, FS_IOC_SETFLAGS, &v);
            }
            libc::close(fd);
        }
    }
}
