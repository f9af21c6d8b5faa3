//! The FUSE passthrough: each operation is done on the backing directory through the inode
//! table's descriptors, except that a regular file's writes and size changes wait in its
//! pending set until an fsync, and each namespace change is recorded for undo until an fsync
//! of a directory it touches. After a cut every operation fails with EIO.

use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::DirEntryExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner, OpenFlags,
    RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry,
    ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use crate::state::{Shared, State};
use crate::syscalls::{check, cstr, errno, fstatat, openat, renameat, unlinkat};
use crate::undo::{Change, Undo, Victim};

const TTL: Duration = Duration::from_secs(1);

pub struct CutFs(pub Arc<Shared>);

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
                    let t = try_reply!(reply, s.link_into_trash(newparent.0, newname));
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
