//! A file system that stores nothing: names and sizes in one in-memory table, reads of zeros,
//! writes that are counted and dropped. It answers the requests of `scripts/bench.sh`'s
//! workloads (create, write, mkdir, stat, unlink, rmdir, fsync, statfs) with as little work as
//! fuser allows, so its figures are the floor of the FUSE path on this machine: what logstorfs
//! could reach at most with the same kernel settings (see `scripts/spikes/fuse_floor.sh`).
//!
//!   fuse_floor MOUNTPOINT [--ttl-ms N] [--no-default-permissions] [--writeback-cache] [--xattrs]
//!
//! `--xattrs` answers GETXATTR and LISTXATTR as a file system whose files have no extended
//! attributes (ENODATA, an empty list) instead of ENOSYS. Without it the kernel stops asking
//! after the first ENOSYS; with it, the kernel asks for `security.capability` before the first
//! write to every new file, as it asks logstorfs (and ext4, bindfs, fuse2fs: any file system
//! with extended attributes). That round trip is part of the floor for a daemon that stores
//! extended attributes.
//!
//! Runs in the foreground until unmounted. Not part of logstorfs: a measuring tool only.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    InitFlags, KernelConfig, LockOwner, MountOption, OpenFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite, ReplyXattr, Request, Session,
    TimeOrNow, WriteFlags,
};
use parking_lot::Mutex;

struct Node {
    kind: FileType,
    size: u64,
    perm: u16,
    nlink: u32,
}

struct Tables {
    nodes: HashMap<u64, Node>,
    names: HashMap<(u64, OsString), u64>,
    next: u64,
}

struct Floor {
    t: Mutex<Tables>,
    ttl: Duration,
    writeback_cache: bool,
    xattrs: bool,
}

fn attr(ino: u64, n: &Node) -> FileAttr {
    let t = SystemTime::UNIX_EPOCH;
    FileAttr {
        ino: INodeNo(ino),
        size: n.size,
        blocks: n.size.div_ceil(512),
        atime: t,
        mtime: t,
        ctime: t,
        crtime: t,
        kind: n.kind,
        perm: n.perm,
        nlink: n.nlink,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

impl Floor {
    fn add(
        &self,
        parent: INodeNo,
        name: &OsStr,
        kind: FileType,
        mode: u32,
    ) -> Result<FileAttr, Errno> {
        let mut t = self.t.lock();
        let key = (parent.0, name.to_os_string());
        if t.names.contains_key(&key) {
            return Err(Errno::EEXIST);
        }
        let ino = t.next;
        t.next += 1;
        let node = Node {
            kind,
            size: 0,
            perm: (mode & 0o7777) as u16,
            nlink: if kind == FileType::Directory { 2 } else { 1 },
        };
        let a = attr(ino, &node);
        t.nodes.insert(ino, node);
        t.names.insert(key, ino);
        Ok(a)
    }

    fn remove(&self, parent: INodeNo, name: &OsStr) -> Result<(), Errno> {
        let mut t = self.t.lock();
        let ino = t
            .names
            .remove(&(parent.0, name.to_os_string()))
            .ok_or(Errno::ENOENT)?;
        t.nodes.remove(&ino);
        Ok(())
    }
}

impl Filesystem for Floor {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        if let Err(max) = config.set_max_write(1 << 20) {
            let _ = config.set_max_write(max);
        }
        if self.writeback_cache {
            let _ = config.add_capabilities(InitFlags::FUSE_WRITEBACK_CACHE);
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let t = self.t.lock();
        match t.names.get(&(parent.0, name.to_os_string())) {
            Some(ino) => reply.entry(&self.ttl, &attr(*ino, &t.nodes[ino]), Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let t = self.t.lock();
        match t.nodes.get(&ino.0) {
            Some(n) => reply.attr(&self.ttl, &attr(ino.0, n)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut t = self.t.lock();
        match t.nodes.get_mut(&ino.0) {
            Some(n) => {
                if let Some(s) = size {
                    n.size = s;
                }
                if let Some(m) = mode {
                    n.perm = (m & 0o7777) as u16;
                }
                reply.attr(&self.ttl, &attr(ino.0, n));
            }
            None => reply.error(Errno::ENOENT),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        match self.add(parent, name, FileType::Directory, mode) {
            Ok(a) => reply.entry(&self.ttl, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.remove(parent, name) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.remove(parent, name) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE);
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
        let len = self.t.lock().nodes.get(&ino.0).map_or(0, |n| n.size);
        let n = len.saturating_sub(offset).min(u64::from(size));
        reply.data(&vec![0u8; n as usize]);
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
        if let Some(n) = self.t.lock().nodes.get_mut(&ino.0) {
            n.size = n.size.max(offset + data.len() as u64);
        }
        reply.written(data.len() as u32);
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lo: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _ds: bool, reply: ReplyEmpty) {
        reply.ok();
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.opened(FileHandle(0), FopenFlags::empty());
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        reply: ReplyDirectory,
    ) {
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _ds: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        reply.error(if self.xattrs {
            Errno::ENODATA
        } else {
            Errno::ENOSYS
        });
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, size: u32, reply: ReplyXattr) {
        if !self.xattrs {
            reply.error(Errno::ENOSYS);
        } else if size == 0 {
            reply.size(0);
        } else {
            reply.data(&[]);
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        match self.add(parent, name, FileType::RegularFile, mode) {
            Ok(a) => reply.created(
                &self.ttl,
                &a,
                Generation(0),
                FileHandle(0),
                FopenFlags::FOPEN_KEEP_CACHE,
            ),
            Err(e) => reply.error(e),
        }
    }
}

/// The command line: `MOUNTPOINT [--ttl-ms N] [--no-default-permissions] [--writeback-cache] [--xattrs]`.
struct Args {
    mountpoint: PathBuf,
    ttl: Duration,
    default_permissions: bool,
    writeback_cache: bool,
    xattrs: bool,
}

/// Parses the command line; a usage error exits with status 2.
fn parse_args() -> Args {
    let mut args = std::env::args_os().skip(1);
    let mut mountpoint: Option<PathBuf> = None;
    let mut ttl = Duration::from_secs(1);
    let mut default_permissions = true;
    let mut writeback_cache = false;
    let mut xattrs = false;
    while let Some(a) = args.next() {
        match a.to_str() {
            Some("--ttl-ms") => {
                let v = args.next().and_then(|v| v.to_str()?.parse().ok());
                let Some(ms) = v else {
                    eprintln!("fuse_floor: --ttl-ms needs a number of milliseconds");
                    std::process::exit(2);
                };
                ttl = Duration::from_millis(ms);
            }
            Some("--no-default-permissions") => default_permissions = false,
            Some("--writeback-cache") => writeback_cache = true,
            Some("--xattrs") => xattrs = true,
            _ if mountpoint.is_none() => mountpoint = Some(PathBuf::from(a)),
            _ => {
                eprintln!(
                    "usage: fuse_floor MOUNTPOINT [--ttl-ms N] [--no-default-permissions] [--writeback-cache] [--xattrs]"
                );
                std::process::exit(2);
            }
        }
    }
    let Some(mountpoint) = mountpoint else {
        eprintln!(
            "usage: fuse_floor MOUNTPOINT [--ttl-ms N] [--no-default-permissions] [--writeback-cache] [--xattrs]"
        );
        std::process::exit(2);
    };
    Args {
        mountpoint,
        ttl,
        default_permissions,
        writeback_cache,
        xattrs,
    }
}

fn main() {
    let Args {
        mountpoint,
        ttl,
        default_permissions,
        writeback_cache,
        xattrs,
    } = parse_args();
    let root = Node {
        kind: FileType::Directory,
        size: 0,
        perm: 0o755,
        nlink: 2,
    };
    let fs = Floor {
        t: Mutex::new(Tables {
            nodes: HashMap::from([(1, root)]),
            names: HashMap::new(),
            next: 2,
        }),
        ttl,
        writeback_cache,
        xattrs,
    };
    let mut config = Config::default();
    config.mount_options = vec![MountOption::FSName("fuse_floor".into())];
    if default_permissions {
        config.mount_options.push(MountOption::DefaultPermissions);
    }
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    config.n_threads = Some(cpus.clamp(2, 4));
    config.clone_fd = true;
    let session = match Session::new(fs, &mountpoint, &config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("fuse_floor: mounting on {}: {e}", mountpoint.display());
            std::process::exit(1);
        }
    };
    if let Err(e) = session.run() {
        eprintln!("fuse_floor: {e}");
        std::process::exit(1);
    }
}
