//! cutfs: a FUSE passthrough filesystem that can cut the power.
//!
//! It serves a backing directory, but holds back what a disk would not yet have made durable:
//! each regular file's writes and size changes since its last `fsync`/`fdatasync` stay in
//! cutfs's memory (`pending.rs`), and each namespace change (create, mknod, symlink, mkdir,
//! link, unlink, rmdir, rename, over an existing file too) is applied to the backing directory
//! with an undo record until an `fsync` of a directory it touches. On SIGUSR1 or SIGUSR2 it
//! cuts the power: the backing directory is left as a disk would be after the cut, and every
//! later operation fails with EIO until the unmount.
//!
//!   cutfs BACKING MOUNTPOINT [--seed N] [--trash DIR] [--keep P]
//!
//! - SIGUSR1: cut keeping nothing pending: every file as at its last sync, every unsynced
//!   namespace change undone.
//! - SIGUSR2: cut keeping a random part (seeded; the seed is printed): each pending 512-byte
//!   sector and each pending size change is kept with probability P (random per cut unless
//!   `--keep P`), and a random prefix of the pending namespace changes (a journal commits in
//!   order) is kept, the rest undone.
//! - The line "cutfs: power cut done ..." on stderr says the cut is complete.
//! - SIGTERM/SIGINT or `fusermount3 -u MOUNTPOINT`: unmount. An unmount without a cut is a
//!   clean shutdown: everything pending is written to the backing directory first.
//!
//! Unlinked files and rename victims are kept in the trash directory (default: a sibling of
//! BACKING named BACKING.cutfs-trash, on the same filesystem) while their removal may still be
//! undone, and it is removed at exit. Not modelled: xattrs, timestamps and modes (passed
//! through at once), a durable directory fsync committing a change in a second directory (a
//! rename across directories is committed by an fsync of either); `flock` and POSIX locks are
//! the kernel's own (cutfs does not claim them), which suffices for processes on this host.

mod pending;

use std::collections::HashMap;
use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirEntryExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, Session,
    TimeOrNow, WriteFlags,
};
use parking_lot::Mutex;
use pending::{Pending, Rng};

const TTL: Duration = Duration::from_secs(1);

#[derive(Parser)]
#[command(
    about = "FUSE passthrough that holds back unsynced writes and cuts the power on \
                   SIGUSR1 (drop all) or SIGUSR2 (keep a seeded random part)"
)]
struct Args {
    backing: PathBuf,
    mountpoint: PathBuf,
    /// Seed of the random part kept by a SIGUSR2 cut (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Probability that a SIGUSR2 cut keeps each pending sector (default: random per cut).
    #[arg(long)]
    keep: Option<f64>,
    /// Where removed files wait while their removal may be undone.
    #[arg(long)]
    trash: Option<PathBuf>,
}

struct Node {
    fd: OwnedFd,
    kind: FileType,
    /// Regular files only.
    data: Option<Pending>,
}

enum Undo {
    /// Undo of a create, mknod, symlink, link or mkdir: remove the name.
    Remove { dir: u64, name: OsString },
    /// Undo of an unlink: the file waits in the trash under `trash`.
    Restore {
        dir: u64,
        name: OsString,
        trash: OsString,
    },
    /// Undo of an rmdir: make the (empty) directory again.
    Mkdir { dir: u64, name: OsString, mode: u32 },
    /// Undo of a rename: rename back, then put back what the rename replaced.
    Rename {
        from_dir: u64,
        from: OsString,
        to_dir: u64,
        to: OsString,
        victim: Victim,
        exchange: bool,
    },
}

enum Victim {
    None,
    /// A non-directory, hard-linked into the trash under this name.
    Trash(OsString),
    /// An empty directory.
    EmptyDir(u32),
}

/// A namespace change not yet durable: the directories it touches and how to undo it.
struct Change {
    dirs: Vec<u64>,
    undo: Undo,
}

struct State {
    nodes: HashMap<u64, Node>,
    changes: Vec<Change>,
    trash: OwnedFd,
    trash_count: u64,
    root_ino: u64,
    cut: bool,
}

struct Shared {
    state: Mutex<State>,
    seed: u64,
    keep: Option<f64>,
}

struct CutFs(Arc<Shared>);

fn cstr(name: &OsStr) -> CString {
    CString::new(name.as_bytes()).unwrap_or_else(|_| CString::new("?").expect("no NUL"))
}

fn errno() -> Errno {
    Errno::from(io::Error::last_os_error())
}

fn check(rc: libc::c_int) -> Result<(), Errno> {
    if rc < 0 { Err(errno()) } else { Ok(()) }
}

fn fstatat(dir: &OwnedFd, name: &OsStr) -> Result<libc::stat, Errno> {
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

fn fstat(fd: &OwnedFd) -> Result<libc::stat, Errno> {
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

fn openat(dir: &OwnedFd, name: &OsStr, flags: libc::c_int, mode: u32) -> Result<OwnedFd, Errno> {
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

fn kind_of(mode: u32) -> FileType {
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

fn time(sec: i64, nsec: i64) -> SystemTime {
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec as u64, nsec as u32)
    } else {
        UNIX_EPOCH
    }
}

fn renameat(a: &OwnedFd, an: &OsStr, b: &OwnedFd, bn: &OsStr, flags: u32) -> Result<(), Errno> {
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

fn unlinkat(dir: &OwnedFd, name: &OsStr, flags: libc::c_int) -> Result<(), Errno> {
    let c = cstr(name);
    // SAFETY: NUL-terminated name, a descriptor we own.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), flags) })
}

impl State {
    /// The inode number the kernel sees: the backing one, with the root's swapped for 1.
    fn fuse_ino(&self, st_ino: u64) -> u64 {
        if st_ino == self.root_ino {
            1
        } else if st_ino == 1 {
            self.root_ino
        } else {
            st_ino
        }
    }

    fn node(&self, ino: u64) -> Result<&Node, Errno> {
        self.nodes.get(&ino).ok_or(Errno::ESTALE)
    }

    fn live(&self) -> Result<(), Errno> {
        if self.cut { Err(Errno::EIO) } else { Ok(()) }
    }

    fn attr(&self, ino: u64) -> Result<FileAttr, Errno> {
        let node = self.node(ino)?;
        let st = fstat(&node.fd)?;
        let mut size = st.st_size as u64;
        if let Some(p) = &node.data {
            size = p.size;
        }
        Ok(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512).max(st.st_blocks as u64),
            atime: time(st.st_atime, st.st_atime_nsec),
            mtime: time(st.st_mtime, st.st_mtime_nsec),
            ctime: time(st.st_ctime, st.st_ctime_nsec),
            crtime: UNIX_EPOCH,
            kind: kind_of(st.st_mode),
            perm: (st.st_mode & 0o7777) as u16,
            nlink: st.st_nlink as u32,
            uid: st.st_uid,
            gid: st.st_gid,
            rdev: st.st_rdev as u32,
            blksize: 4096,
            flags: 0,
        })
    }

    /// Looks `name` up in directory `parent`, opening a descriptor for it the first time.
    fn lookup(&mut self, parent: u64, name: &OsStr) -> Result<FileAttr, Errno> {
        let st = fstatat(&self.node(parent)?.fd, name)?;
        let ino = self.fuse_ino(st.st_ino);
        if !self.nodes.contains_key(&ino) {
            let dir = &self.node(parent)?.fd;
            let kind = kind_of(st.st_mode);
            let fd = match kind {
                FileType::RegularFile => openat(dir, name, libc::O_RDWR | libc::O_NOFOLLOW, 0)
                    .or_else(|_| openat(dir, name, libc::O_RDONLY | libc::O_NOFOLLOW, 0))?,
                FileType::Directory => openat(
                    dir,
                    name,
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                    0,
                )?,
                _ => openat(dir, name, libc::O_PATH | libc::O_NOFOLLOW, 0)?,
            };
            let data = (kind == FileType::RegularFile).then(|| Pending::new(st.st_size as u64));
            self.nodes.insert(ino, Node { fd, kind, data });
        }
        self.attr(ino)
    }

    fn trash_name(&mut self) -> OsString {
        self.trash_count += 1;
        OsString::from(format!("t{}", self.trash_count))
    }

    fn fd(&self, ino: u64) -> Result<&OwnedFd, Errno> {
        Ok(&self.node(ino)?.fd)
    }

    fn pending(&mut self, ino: u64) -> Result<(&OwnedFd, &mut Pending), Errno> {
        let node = self.nodes.get_mut(&ino).ok_or(Errno::ESTALE)?;
        match &mut node.data {
            Some(p) => Ok((&node.fd, p)),
            None => Err(Errno::EISDIR),
        }
    }

    /// The changes touching `dir` become durable (and so do the removals they made).
    fn commit_dir(&mut self, dir: u64) {
        let changes = std::mem::take(&mut self.changes);
        for c in changes {
            if c.dirs.contains(&dir) {
                self.forget_trash(&c.undo);
            } else {
                self.changes.push(c);
            }
        }
    }

    fn forget_trash(&self, undo: &Undo) {
        let name = match undo {
            Undo::Restore { trash, .. } => trash,
            Undo::Rename {
                victim: Victim::Trash(t),
                ..
            } => t,
            _ => return,
        };
        if unlinkat(&self.trash, name, 0).is_err() {
            let _ = unlinkat(&self.trash, name, libc::AT_REMOVEDIR);
        }
    }

    fn undo(&self, undo: &Undo) -> Result<(), Errno> {
        match undo {
            Undo::Remove { dir, name } => {
                let d = self.fd(*dir)?;
                match unlinkat(d, name, 0) {
                    Err(e) if e == Errno::EISDIR || e == Errno::EPERM => {
                        // A directory that still holds durable entries: out of the namespace.
                        unlinkat(d, name, libc::AT_REMOVEDIR).or_else(|_| {
                            renameat(d, name, &self.trash, &OsString::from("dir-undone"), 0)
                        })
                    }
                    other => other,
                }
            }
            Undo::Restore { dir, name, trash } => {
                renameat(&self.trash, trash, self.fd(*dir)?, name, 0)
            }
            Undo::Mkdir { dir, name, mode } => {
                let c = cstr(name);
                // SAFETY: NUL-terminated name, a descriptor we own.
                check(unsafe { libc::mkdirat(self.fd(*dir)?.as_raw_fd(), c.as_ptr(), *mode) })
            }
            Undo::Rename {
                from_dir,
                from,
                to_dir,
                to,
                victim,
                exchange,
            } => {
                let (fd, td) = (self.fd(*from_dir)?, self.fd(*to_dir)?);
                if *exchange {
                    return renameat(fd, from, td, to, libc::RENAME_EXCHANGE);
                }
                renameat(td, to, fd, from, libc::RENAME_NOREPLACE)?;
                match victim {
                    Victim::None => Ok(()),
                    Victim::Trash(t) => renameat(&self.trash, t, td, to, 0),
                    Victim::EmptyDir(mode) => {
                        let c = cstr(to);
                        // SAFETY: NUL-terminated name, a descriptor we own.
                        check(unsafe { libc::mkdirat(td.as_raw_fd(), c.as_ptr(), *mode) })
                    }
                }
            }
        }
    }

    /// The power cut. `p` = None: keep nothing pending.
    fn power_cut(&mut self, rng: &mut Rng, p: Option<f64>) -> String {
        self.cut = true;
        let p_keep = p.unwrap_or(0.0);
        let (mut files, mut sectors, mut kept, mut sizes, mut sizes_kept, mut errors) =
            (0, 0, 0, 0, 0, 0);
        let mut inos: Vec<u64> = self.nodes.keys().copied().collect();
        inos.sort_unstable();
        for ino in inos {
            let node = self.nodes.get_mut(&ino).expect("listed");
            let Some(data) = &mut node.data else { continue };
            if data.is_clean() {
                continue;
            }
            files += 1;
            match data.cut(&node.fd.as_fd(), rng, p_keep) {
                Ok(c) => {
                    sectors += c.sectors_pending;
                    kept += c.sectors_kept;
                    sizes += c.size_changed as u64;
                    sizes_kept += c.size_kept as u64;
                }
                Err(e) => {
                    eprintln!("cutfs: cut: writing kept sectors of inode {ino}: {e}");
                    errors += 1;
                }
            }
        }
        let changes = std::mem::take(&mut self.changes);
        let keep_changes = if p.is_some() {
            rng.below(changes.len() as u64 + 1) as usize
        } else {
            0
        };
        for c in &changes[..keep_changes] {
            self.forget_trash(&c.undo);
        }
        for c in changes[keep_changes..].iter().rev() {
            if let Err(e) = self.undo(&c.undo) {
                // Possible only where a later change in another directory was made durable
                // first (see the module comment); never within one directory.
                eprintln!("cutfs: cut: undoing a namespace change failed: {e:?}");
                errors += 1;
            }
        }
        format!(
            "{files} files with unsynced data: {kept} of {sectors} pending sectors kept, \
             {sizes_kept} of {sizes} size changes kept; {keep_changes} of {} namespace changes \
             kept, the rest undone; {errors} errors",
            changes.len()
        )
    }

    /// A clean shutdown: everything pending reaches the backing directory.
    fn flush_all(&mut self) {
        for node in self.nodes.values_mut() {
            let Some(p) = &mut node.data else { continue };
            if let Err(e) = p.sync(&node.fd.as_fd()) {
                eprintln!("cutfs: flushing at unmount: {e}");
            }
        }
        let changes = std::mem::take(&mut self.changes);
        for c in &changes {
            self.forget_trash(&c.undo);
        }
    }
}

macro_rules! try_reply {
    ($reply:expr, $e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => {
                $reply.error(e);
                return;
            }
        }
    };
}

impl CutFs {
    fn entry_after<F>(&self, parent: INodeNo, name: &OsStr, f: F, reply: ReplyEntry)
    where
        F: FnOnce(&mut State) -> Result<Option<Change>, Errno>,
    {
        let mut s = self.0.state.lock();
        try_reply!(reply, s.live());
        let change = try_reply!(reply, f(&mut s));
        if let Some(c) = change {
            s.changes.push(c);
        }
        let attr = try_reply!(reply, s.lookup(parent.0, name));
        reply.entry(&TTL, &attr, Generation(0));
    }
}

impl Filesystem for CutFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mut s = self.0.state.lock();
        try_reply!(reply, s.live());
        let attr = try_reply!(reply, s.lookup(parent.0, name));
        reply.entry(&TTL, &attr, Generation(0));
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let s = self.0.state.lock();
        try_reply!(reply, s.live());
        let attr = try_reply!(reply, s.attr(ino.0));
        reply.attr(&TTL, &attr);
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut s = self.0.state.lock();
        try_reply!(reply, s.live());
        if let Some(n) = size {
            let (fd, p) = try_reply!(reply, s.pending(ino.0));
            try_reply!(reply, p.set_size(&fd.as_fd(), n).map_err(Errno::from));
        }
        let fd = try_reply!(reply, s.fd(ino.0)).as_raw_fd();
        // The attributes below are not modelled by the cut: they go straight to the backing.
        if let Some(m) = mode {
            // SAFETY: plain system calls on a descriptor we own.
            try_reply!(reply, check(unsafe { libc::fchmod(fd, m & 0o7777) }));
        }
        if uid.is_some() || gid.is_some() {
            let (u, g) = (uid.unwrap_or(u32::MAX), gid.unwrap_or(u32::MAX));
            // SAFETY: as above; -1 (u32::MAX) leaves an id unchanged.
            try_reply!(
                reply,
                check(unsafe { libc::fchownat(fd, c"".as_ptr(), u, g, libc::AT_EMPTY_PATH) })
            );
        }
        if atime.is_some() || mtime.is_some() {
            let ts = |t: Option<TimeOrNow>| match t {
                None => libc::timespec {
                    tv_sec: 0,
                    tv_nsec: libc::UTIME_OMIT,
                },
                Some(TimeOrNow::Now) => libc::timespec {
                    tv_sec: 0,
                    tv_nsec: libc::UTIME_NOW,
                },
                Some(TimeOrNow::SpecificTime(t)) => {
                    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
                    libc::timespec {
                        tv_sec: d.as_secs() as libc::time_t,
                        tv_nsec: d.subsec_nanos() as libc::c_long,
                    }
                }
            };
            let times = [ts(atime), ts(mtime)];
            // SAFETY: `times` holds two timespecs as utimensat wants.
            let rc =
                unsafe { libc::utimensat(fd, c"".as_ptr(), times.as_ptr(), libc::AT_EMPTY_PATH) };
            if rc < 0 && s.node(ino.0).map(|n| n.kind) != Ok(FileType::Symlink) {
                reply.error(errno());
                return;
            }
        }
        let attr = try_reply!(reply, s.attr(ino.0));
        reply.attr(&TTL, &attr);
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let s = self.0.state.lock();
        try_reply!(reply, s.live());
        let fd = try_reply!(reply, s.fd(ino.0));
        let mut buf = vec![0u8; libc::PATH_MAX as usize];
        // SAFETY: `buf` is writable for its length; an O_PATH symlink descriptor with an empty
        // path reads that link.
        let n = unsafe {
            libc::readlinkat(
                fd.as_raw_fd(),
                c"".as_ptr(),
                buf.as_mut_ptr() as *mut libc::c_char,
                buf.len(),
            )
        };
        if n < 0 {
            reply.error(errno());
            return;
        }
        reply.data(&buf[..n as usize]);
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let name_owned = name.to_os_string();
        self.entry_after(
            parent,
            name,
            |s| {
                let c = cstr(name);
                // SAFETY: NUL-terminated name, a descriptor we own.
                check(unsafe {
                    libc::mknodat(
                        s.fd(parent.0)?.as_raw_fd(),
                        c.as_ptr(),
                        mode & !umask,
                        rdev as libc::dev_t,
                    )
                })?;
                Ok(Some(Change {
                    dirs: vec![parent.0],
                    undo: Undo::Remove {
                        dir: parent.0,
                        name: name_owned,
                    },
                }))
            },
            reply,
        );
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let name_owned = name.to_os_string();
        self.entry_after(
            parent,
            name,
            |s| {
                let c = cstr(name);
                // SAFETY: NUL-terminated name, a descriptor we own.
                check(unsafe {
                    libc::mkdirat(s.fd(parent.0)?.as_raw_fd(), c.as_ptr(), mode & !umask)
                })?;
                Ok(Some(Change {
                    dirs: vec![parent.0],
                    undo: Undo::Remove {
                        dir: parent.0,
                        name: name_owned,
                    },
                }))
            },
            reply,
        );
    }

    fn symlink(
        &self,
        _req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let name_owned = link_name.to_os_string();
        self.entry_after(
            parent,
            link_name,
            |s| {
                let (c, t) = (cstr(link_name), cstr(target.as_os_str()));
                // SAFETY: NUL-terminated strings, a descriptor we own.
                check(unsafe {
                    libc::symlinkat(t.as_ptr(), s.fd(parent.0)?.as_raw_fd(), c.as_ptr())
                })?;
                Ok(Some(Change {
                    dirs: vec![parent.0],
                    undo: Undo::Remove {
                        dir: parent.0,
                        name: name_owned,
                    },
                }))
            },
            reply,
        );
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let name_owned = newname.to_os_string();
        self.entry_after(
            newparent,
            newname,
            |s| {
                let src = CString::new(format!("/proc/self/fd/{}", s.fd(ino.0)?.as_raw_fd()))
                    .expect("no NUL");
                let c = cstr(newname);
                // SAFETY: NUL-terminated paths, descriptors we own.
                check(unsafe {
                    libc::linkat(
                        libc::AT_FDCWD,
                        src.as_ptr(),
                        s.fd(newparent.0)?.as_raw_fd(),
                        c.as_ptr(),
                        libc::AT_SYMLINK_FOLLOW,
                    )
                })?;
                Ok(Some(Change {
                    dirs: vec![newparent.0],
                    undo: Undo::Remove {
                        dir: newparent.0,
                        name: name_owned,
                    },
                }))
            },
            reply,
        );
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut s = self.0.state.lock();
        try_reply!(reply, s.live());
        let st = try_reply!(reply, fstatat(try_reply!(reply, s.fd(parent.0)), name));
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            reply.error(Errno::EISDIR);
            return;
        }
        let t = s.trash_name();
        try_reply!(
            reply,
            renameat(s.fd(parent.0).expect("checked"), name, &s.trash, &t, 0)
        );
        s.changes.push(Change {
            dirs: vec![parent.0],
            undo: Undo::Restore {
                dir: parent.0,
                name: name.to_os_string(),
                trash: t,
            },
        });
        reply.ok();
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut s = self.0.state.lock();
        try_reply!(reply, s.live());
        let dir = try_reply!(reply, s.fd(parent.0));
        let st = try_reply!(reply, fstatat(dir, name));
        try_reply!(reply, unlinkat(dir, name, libc::AT_REMOVEDIR));
        s.changes.push(Change {
            dirs: vec![parent.0],
            undo: Undo::Mkdir {
                dir: parent.0,
                name: name.to_os_string(),
                mode: st.st_mode & 0o7777,
            },
        });
        reply.ok();
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut s = self.0.state.lock();
        try_reply!(reply, s.live());
        let exchange = flags.contains(RenameFlags::RENAME_EXCHANGE);
        if flags.contains(RenameFlags::RENAME_WHITEOUT) {
            reply.error(Errno::EINVAL);
            return;
        }
        let mut victim = Victim::None;
        if !exchange {
            let to_dir = try_reply!(reply, s.fd(newparent.0));
            if let Ok(st) = fstatat(to_dir, newname) {
                let src = try_reply!(reply, fstatat(try_reply!(reply, s.fd(parent.0)), name));
                if st.st_ino == src.st_ino {
                    // Two names of one file: rename(2) does nothing.
                    reply.ok();
                    return;
                }
                if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                    victim = Victim::EmptyDir(st.st_mode & 0o7777);
                } else if !flags.contains(RenameFlags::RENAME_NOREPLACE) {
                    let t = s.trash_name();
                    let c = cstr(newname);
                    let ct = cstr(&t);
                    let to_dir = s.fd(newparent.0).expect("checked");
                    // SAFETY: NUL-terminated names, descriptors we own.
                    try_reply!(
                        reply,
                        check(unsafe {
                            libc::linkat(
                                to_dir.as_raw_fd(),
                                c.as_ptr(),
                                s.trash.as_raw_fd(),
                                ct.as_ptr(),
                                0,
                            )
                        })
                    );
                    victim = Victim::Trash(t);
                }
            }
        }
        let result = renameat(
            try_reply!(reply, s.fd(parent.0)),
            name,
            try_reply!(reply, s.fd(newparent.0)),
            newname,
            flags.bits(),
        );
        if let Err(e) = result {
            if let Victim::Trash(t) = &victim {
                let _ = unlinkat(&s.trash, t, 0);
            }
            reply.error(e);
            return;
        }
        s.changes.push(Change {
            dirs: vec![parent.0, newparent.0],
            undo: Undo::Rename {
                from_dir: parent.0,
                from: name.to_os_string(),
                to_dir: newparent.0,
                to: newname.to_os_string(),
                victim,
                exchange,
            },
        });
        reply.ok();
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let s = self.0.state.lock();
        try_reply!(reply, s.live());
        try_reply!(reply, s.node(ino.0));
        // No direct_io: the kernel's page cache serves mmap (the store maps its segments).
        reply.opened(FileHandle(0), FopenFlags::empty());
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let mut s = self.0.state.lock();
        try_reply!(reply, s.live());
        let (fd, p) = try_reply!(reply, s.pending(ino.0));
        let data = try_reply!(
            reply,
            p.read(&fd.as_fd(), offset, size as usize)
                .map_err(Errno::from)
        );
        reply.data(&data);
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut s = self.0.state.lock();
        try_reply!(reply, s.live());
        let (fd, p) = try_reply!(reply, s.pending(ino.0));
        try_reply!(
            reply,
            p.write(&fd.as_fd(), offset, data).map_err(Errno::from)
        );
        reply.written(data.len() as u32);
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let mut s = self.0.state.lock();
        try_reply!(reply, s.live());
        if s.node(ino.0).map(|n| n.kind) == Ok(FileType::Directory) {
            s.commit_dir(ino.0);
        } else if let Ok((fd, p)) = s.pending(ino.0) {
            try_reply!(reply, p.sync(&fd.as_fd()).map_err(Errno::from));
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let mut s = self.0.state.lock();
        try_reply!(reply, s.live());
        s.commit_dir(ino.0);
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let s = self.0.state.lock();
        try_reply!(reply, s.live());
        let fd = try_reply!(reply, s.fd(ino.0)).as_raw_fd();
        let list = try_reply!(
            reply,
            std::fs::read_dir(format!("/proc/self/fd/{fd}")).map_err(Errno::from)
        );
        let mut entries = vec![
            (ino.0, FileType::Directory, OsString::from(".")),
            (1, FileType::Directory, OsString::from("..")),
        ];
        for e in list.flatten() {
            let kind = match e.file_type() {
                Ok(t) if t.is_dir() => FileType::Directory,
                Ok(t) if t.is_symlink() => FileType::Symlink,
                Ok(t) if t.is_file() => FileType::RegularFile,
                _ => FileType::Socket,
            };
            entries.push((s.fuse_ino(e.ino()), kind, e.file_name()));
        }
        for (i, (e_ino, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*e_ino), (i + 1) as u64, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let s = self.0.state.lock();
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: `st` is a valid out-pointer.
        let root = try_reply!(reply, s.fd(1)).as_raw_fd();
        try_reply!(reply, check(unsafe { libc::fstatvfs(root, &mut st) }));
        reply.statfs(
            st.f_blocks,
            st.f_bfree,
            st.f_bavail,
            st.f_files,
            st.f_ffree,
            st.f_bsize as u32,
            st.f_namemax as u32,
            st.f_frsize as u32,
        );
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut s = self.0.state.lock();
        try_reply!(reply, s.live());
        let dir = try_reply!(reply, s.fd(parent.0));
        let made = openat(
            dir,
            name,
            libc::O_CREAT | libc::O_EXCL | libc::O_RDWR,
            mode & !umask,
        );
        match made {
            Ok(_) => s.changes.push(Change {
                dirs: vec![parent.0],
                undo: Undo::Remove {
                    dir: parent.0,
                    name: name.to_os_string(),
                },
            }),
            Err(e) if e == Errno::EEXIST && flags & libc::O_EXCL == 0 => {}
            Err(e) => {
                reply.error(e);
                return;
            }
        }
        let attr = try_reply!(reply, s.lookup(parent.0, name));
        if flags & libc::O_TRUNC != 0 {
            let (fd, p) = try_reply!(reply, s.pending(attr.ino.0));
            try_reply!(reply, p.set_size(&fd.as_fd(), 0).map_err(Errno::from));
        }
        let attr = try_reply!(reply, s.attr(attr.ino.0));
        reply.created(
            &TTL,
            &attr,
            Generation(0),
            FileHandle(0),
            FopenFlags::empty(),
        );
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let mut s = self.0.state.lock();
        try_reply!(reply, s.live());
        let (fd, p) = try_reply!(reply, s.pending(ino.0));
        if mode & libc::FALLOC_FL_KEEP_SIZE != 0 && mode & !libc::FALLOC_FL_KEEP_SIZE == 0 {
            reply.ok();
            return;
        }
        if mode != 0 {
            reply.error(Errno::from_i32(libc::EOPNOTSUPP));
            return;
        }
        // Space is not reserved: only the size grows (until a sync, in cutfs's memory).
        let end = offset + length;
        if end > p.size {
            try_reply!(reply, p.set_size(&fd.as_fd(), end).map_err(Errno::from));
        }
        reply.ok();
    }
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(args) {
        eprintln!("cutfs: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<(), String> {
    let backing = args
        .backing
        .canonicalize()
        .map_err(|e| format!("backing directory {}: {e}", args.backing.display()))?;
    let trash_path = args.trash.clone().unwrap_or_else(|| {
        let mut p = backing.clone().into_os_string();
        p.push(".cutfs-trash");
        PathBuf::from(p)
    });
    let _ = std::fs::remove_dir_all(&trash_path);
    std::fs::create_dir_all(&trash_path)
        .map_err(|e| format!("trash directory {}: {e}", trash_path.display()))?;
    let open_dir = |p: &Path| {
        std::fs::File::open(p)
            .map(OwnedFd::from)
            .map_err(|e| format!("{}: {e}", p.display()))
    };
    let root = open_dir(&backing)?;
    let trash = open_dir(&trash_path)?;
    let root_st = fstat(&root).map_err(|e| format!("stat {}: {e:?}", backing.display()))?;
    if root_st.st_dev != fstat(&trash).map_err(|e| format!("{e:?}"))?.st_dev {
        return Err(format!(
            "the trash {} must be on the backing directory's filesystem",
            trash_path.display()
        ));
    }
    raise_fd_limit();
    let seed = args.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            ^ ((std::process::id() as u64) << 32)
    });
    let mut nodes = HashMap::new();
    nodes.insert(
        1,
        Node {
            fd: root,
            kind: FileType::Directory,
            data: None,
        },
    );
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            nodes,
            changes: Vec::new(),
            trash,
            trash_count: 0,
            root_ino: root_st.st_ino,
            cut: false,
        }),
        seed,
        keep: args.keep,
    });

    // The signals are taken by one thread with sigwait; every other thread (the FUSE ones are
    // started below and inherit the mask) has them blocked.
    // SAFETY: sigset manipulation on a local set.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGUSR1, libc::SIGUSR2, libc::SIGTERM, libc::SIGINT] {
            libc::sigaddset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };

    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("cutfs".into()),
        MountOption::Subtype("cutfs".into()),
        MountOption::DefaultPermissions,
    ];
    config.n_threads = Some(2);
    let mut session = Session::new(CutFs(shared.clone()), &args.mountpoint, &config)
        .map_err(|e| format!("mounting on {}: {e}", args.mountpoint.display()))?;
    let mut unmounter = session.unmount_callable();
    eprintln!(
        "cutfs: {} mounted on {} (pid {}, seed {seed}); SIGUSR1 cuts keeping nothing, SIGUSR2 \
         a random part",
        backing.display(),
        args.mountpoint.display(),
        std::process::id()
    );
    let signals = shared.clone();
    std::thread::spawn(move || {
        let mut rng = Rng::new(signals.seed);
        loop {
            let mut sig: libc::c_int = 0;
            // SAFETY: `set` is an initialised signal set, `sig` a valid out-pointer.
            if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
                continue;
            }
            match sig {
                libc::SIGUSR1 | libc::SIGUSR2 => {
                    let mut s = signals.state.lock();
                    if s.cut {
                        eprintln!("cutfs: power cut done already");
                        continue;
                    }
                    let (mode, p) = if sig == libc::SIGUSR1 {
                        ("keep nothing".to_string(), None)
                    } else {
                        let p = signals
                            .keep
                            .unwrap_or_else(|| rng.below(1001) as f64 / 1000.0);
                        (format!("keep each with p={p:.3}"), Some(p))
                    };
                    let what = s.power_cut(&mut rng, p);
                    eprintln!(
                        "cutfs: power cut done ({mode}, seed {}): {what}",
                        signals.seed
                    );
                }
                _ => {
                    if let Err(e) = unmounter.unmount() {
                        // Busy (a process still uses the mount): leave rather than ignore the
                        // request; the kernel then fails every access until a lazy unmount.
                        eprintln!("cutfs: unmount on signal {sig}: {e}; exiting");
                        std::process::exit(1);
                    }
                    return;
                }
            }
        }
    });
    let run = session.run();
    let mut s = shared.state.lock();
    if !s.cut {
        s.flush_all();
        eprintln!("cutfs: unmounted cleanly: everything pending was written");
    }
    drop(s);
    let _ = std::fs::remove_dir_all(&trash_path);
    run.map_err(|e| format!("session: {e}"))
}

fn raise_fd_limit() {
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: `lim` is a valid in/out pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
