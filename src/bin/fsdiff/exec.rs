//! Runs an op on one side (a directory on the file system under test or on ext4) and renders
//! its result, and what it left, as text: two sides agree when their texts are equal.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::ops::{BAD_SLOT, Kind, NEG_SLOT, NSLOT, OFFSETS, Op};

pub(crate) const FS_IOC_GETFLAGS: libc::c_ulong = 0x8008_6601;
const FS_IMMUTABLE_FL: libc::c_long = 0x10;
const FS_APPEND_FL: libc::c_long = 0x20;
pub(crate) const FS_IOC_SETFLAGS: libc::c_ulong = 0x4008_6602;
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
    pub(crate) root: libc::c_int,
    pub(crate) slots: [libc::c_int; NSLOT as usize],
    pub checks: Checks,
}

pub(crate) fn cstr(s: &str) -> CString {
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
pub(crate) fn res(r: i64) -> String {
    if r < 0 {
        format!("err {}", errname(errno()))
    } else {
        format!("ok {r}")
    }
}

/// `ok` or `err ENAME` where the value itself may differ between sides (fd numbers).
pub(crate) fn res_ok(r: i64) -> String {
    if r < 0 {
        format!("err {}", errname(errno()))
    } else {
        "ok".to_string()
    }
}

/// Write data: a pattern from the op, so that both sides write the same bytes.
pub(crate) fn pattern(seed: i64, len: usize) -> Vec<u8> {
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

    pub(crate) fn fd(&self, slot: u8) -> libc::c_int {
        match slot {
            BAD_SLOT => 1000,
            NEG_SLOT => -1,
            s => self.slots[s as usize % NSLOT as usize],
        }
    }

    /// Whether an inode `op` names (its paths, their directories, its descriptors) is immutable
    /// or append-only here. A path's directory is looked at through symlinks, as the path's
    /// resolution goes (`d1/f0` with `d1 -> s0` is in `s0`); the path itself is not.
    pub fn touches_protected_inode(&self, op: &Op, paths: &[String]) -> bool {
        let flagged = |fd: libc::c_int| {
            let mut v: libc::c_long = 0;
            fd >= 0
                && unsafe { libc::ioctl(fd, FS_IOC_GETFLAGS, &mut v) } == 0
                && v & (FS_IMMUTABLE_FL | FS_APPEND_FL) != 0
        };
        let np = paths.len();
        // (name, whether a symlink there is followed)
        let mut names = Vec::new();
        for p in [op.p1, op.p2] {
            let path = &paths[p as usize % np];
            names.push((path.clone(), false));
            if let Some((dir, _)) = path.rsplit_once('/') {
                names.push((dir.to_string(), true));
            }
        }
        names.push((String::new(), true));
        let by_path = names.iter().any(|(name, follow)| {
            let full = self.full(name);
            let no_follow = if *follow { 0 } else { libc::O_NOFOLLOW };
            let fd = unsafe {
                libc::open(
                    full.as_ptr(),
                    libc::O_RDONLY | no_follow | libc::O_NONBLOCK | libc::O_NOCTTY,
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

    pub(crate) fn full(&self, p: &str) -> CString {
        cstr(&format!("{}/{}", self.base.display(), p))
    }

    pub(crate) fn set_slot(&mut self, slot: u8, fd: libc::c_int) {
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

    /// The type and access mode of an open fd, as both sides must see them.
    pub(crate) fn describe_fd(&self, fd: libc::c_int) -> String {
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
    pub(crate) fn data(&self, fd: libc::c_int) -> String {
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

pub(crate) fn is_dir(fd: libc::c_int) -> bool {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    unsafe { libc::fstat(fd, &mut st) == 0 && st.st_mode & libc::S_IFMT == libc::S_IFDIR }
}

/// The names in a directory (with . and ..), sorted, via getdents64.
pub(crate) fn read_dir_names(fd: libc::c_int) -> Result<Vec<String>, i32> {
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
