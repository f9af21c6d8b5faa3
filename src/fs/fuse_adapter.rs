//! Links fuser's `Filesystem` calls to [`Fs`]: decode the request, call `Fs`, reply. The only
//! file that names fuser's `Filesystem`, `Request` and `Reply*` types. No filesystem logic
//! lives here, and nothing here panics on a request path.
//!
//! Kernel cache settings: attributes and entries are cached for [`TTL`]. Every change reaches
//! us through the kernel, which drops its own copy of what the change touches (the entry, the
//! parent's attributes, the inode's, atime after a read); the one change it does not know the
//! effect of is an inode flag ioctl (ctime), after which we invalidate the inode's attributes
//! ourselves ([`NotifierSlot`]). The writeback cache is off
//! unless the mount asks for it (`-o writeback_cache`): then the kernel owns size and mtime
//! while it holds dirty pages, and ENOSPC and EIO reach the user at fsync(2) or close(2)
//! (the kernel's FLUSH path writes the dirty pages back and returns their error even though we
//! answer FLUSH with ENOSYS). Without it every write reaches `Fs::write` before write(2)
//! returns, so write(2) itself reports them. Readdirplus is enabled when the kernel offers it.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, BsdFileFlags, CopyFileRangeFlags, Errno, FileAttr, FileHandle, FileType,
    Filesystem, FopenFlags, Generation, INodeNo, InitFlags, IoctlFlags, KernelConfig, LockOwner,
    Notifier, OpenAccMode, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyLseek, ReplyOpen,
    ReplyStatfs, ReplyWrite, ReplyXattr, Request, Session, TimeOrNow, WriteFlags,
};

use super::{Attr, Caller, FileKind, Fs, FsError, SetAttr, TimeSet, XattrReply};

/// How long the kernel may cache attributes and directory entries: long, since it is told of
/// every change (see the module comment). At 1 s, an unlink more than a second after the
/// name was last looked up cost a LOOKUP round trip more (3 requests instead of 2), as did a
/// stat of a file not seen for a second (a GETATTR).
pub const TTL: Duration = Duration::from_secs(60);
/// Largest write request we ask the kernel for.
pub const MAX_WRITE_BYTES: u32 = 1 << 20;

/// The generation of an entry reply: see `fs::export` (file handles carry it).
fn generation(a: &Attr) -> Generation {
    Generation(super::export::attr_generation(a))
}

/// The fuser `Filesystem` for an [`Fs`].
pub struct FuseFs {
    fs: Arc<Fs>,
    notifier: NotifierSlot,
}

impl FuseFs {
    pub fn new(fs: Arc<Fs>) -> FuseFs {
        FuseFs {
            fs,
            notifier: NotifierSlot::default(),
        }
    }

    /// The slot the session's notifier goes into once the session exists (the session owns
    /// this `FuseFs`, and the notifier comes from the session).
    pub fn notifier_slot(&self) -> NotifierSlot {
        self.notifier.clone()
    }

    /// Drops the kernel's cached attributes of `ino` (not its pages) after a change the kernel
    /// does not know the effect of.
    fn invalidate_attrs(&self, ino: u64) {
        if let Some(n) = self.notifier.0.get() {
            // ENOENT: the kernel holds no such inode, so nothing is stale.
            if let Err(e) = n.inval_inode(INodeNo(ino), -1, 0) {
                log::debug!("invalidating the attributes of inode {ino}: {e}");
            }
        }
    }
}

/// Where a mount's notifier is kept for its [`FuseFs`] (empty in a session without one).
#[derive(Clone, Default)]
pub struct NotifierSlot(Arc<OnceLock<Notifier>>);

impl NotifierSlot {
    pub fn connect<FS: Filesystem>(&self, session: &Session<FS>) {
        let _ = self.0.set(session.notifier());
    }
}

fn file_type(kind: FileKind) -> FileType {
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

fn file_attr(a: &Attr) -> FileAttr {
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

fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
    }
}

/// `/proc/PID/status` of the caller's thread, if it is still there.
fn caller_status(req: &Request) -> Option<String> {
    let pid = req.pid();
    if pid == 0 {
        return None; // from another pid namespace, or from the kernel itself
    }
    std::fs::read_to_string(format!("/proc/{pid}/status")).ok()
}

/// Whether the caller has `CAP_FSETID`, which lets its writes, truncations and fallocates keep
/// set-user-ID and set-group-ID bits. The kernel says so for writes (`FUSE_WRITE_KILL_SUIDGID`)
/// and truncations (`FATTR_KILL_SUIDGID`, which fuser does not pass on), not for fallocate: we
/// read the caller's effective capabilities. A capability counts only in our own user namespace
/// (the kernel's `capable()` is against the initial one): in doubt, the caller lacks it, so the
/// bits go, which is the safe side.
fn caller_has_fsetid(req: &Request) -> bool {
    const CAP_FSETID: u32 = 4;
    caller_has_capability(req, CAP_FSETID)
}

/// Whether the caller has capability number `cap` in its effective set, counted only in our
/// own user namespace (see [`caller_has_fsetid`]).
fn caller_has_capability(req: &Request, cap: u32) -> bool {
    let Some(status) = caller_status(req) else {
        return false;
    };
    let ns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/user")).ok();
    let theirs = ns(&req.pid().to_string());
    if theirs.is_none() || theirs != ns("self") {
        return false;
    }
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << cap) != 0)
}

/// The caller of a flag change, with the capabilities it needs (`CAP_FOWNER` 3,
/// `CAP_LINUX_IMMUTABLE` 9).
fn flags_caller(req: &Request) -> super::inode_flags::FlagsCaller {
    super::inode_flags::FlagsCaller {
        uid: req.uid(),
        fowner: caller_has_capability(req, 3),
        linux_immutable: caller_has_capability(req, 9),
    }
}

/// The ioctls the kernel sends for a FUSE inode's file attributes (`fuse_fileattr_get/set`,
/// kernel 5.13 and later): the 64-bit command numbers, with an `unsigned int` argument for the
/// flags, and `struct fsxattr` (28 bytes) for the xattr view.
const FS_IOC_GETFLAGS: u32 = 0x8008_6601;
const FS_IOC_SETFLAGS: u32 = 0x4008_6602;
const FS_IOC32_GETFLAGS: u32 = 0x8004_6601;
const FS_IOC32_SETFLAGS: u32 = 0x4004_6602;
const FS_IOC_FSGETXATTR: u32 = 0x801c_581f;
const FS_IOC_FSSETXATTR: u32 = 0x401c_5820;
const FSXATTR_SIZE: usize = 28;

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(data.get(at..at + 4)?.try_into().ok()?))
}

/// Whether the caller is in group `gid`: its filesystem group ID or one of its supplementary
/// groups (which the request does not carry: read from `/proc` only when a set-group-ID file
/// without group execute asks).
fn caller_in_group(req: &Request, gid: u32) -> bool {
    gid == req.gid()
        || caller_status(req).is_some_and(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Groups:"))
                .is_some_and(|groups| groups.split_whitespace().any(|g| g.parse() == Ok(gid)))
        })
}

fn time_set(t: TimeOrNow) -> TimeSet {
    match t {
        TimeOrNow::Now => TimeSet::Now,
        TimeOrNow::SpecificTime(s) => TimeSet::At(super::kernel_time::from_fuser(s)),
    }
}

/// Logs a refusal once, at the edge, and turns it into an errno.
fn errno(op: &str, req: &Request, e: &FsError) -> Errno {
    let code = e.errno();
    if code == libc::EIO {
        log::error!("{op} (request {}): {e}", req.unique().0);
    } else {
        log::debug!("{op} (request {}): {e}", req.unique().0);
    }
    Errno::from_i32(code)
}

impl Filesystem for FuseFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        if let Err(max) = config.set_max_write(MAX_WRITE_BYTES) {
            let _ = config.set_max_write(max);
        }
        let _ = config.add_capabilities(InitFlags::FUSE_DO_READDIRPLUS);
        // We clear set-user-ID and set-group-ID bits and capabilities on write, truncation,
        // fallocate and chown ourselves (`Fs::write_as`, `Fs::fallocate_as`,
        // `SetAttr::kill_suid_sgid`). Without this the kernel
        // asks for `security.capability` before every write: a second round trip per write.
        let _ = config.add_capabilities(InitFlags::FUSE_HANDLE_KILLPRIV_V2);
        let _ = config.add_capabilities(InitFlags::FUSE_READDIRPLUS_AUTO);
        // File handles of inodes the kernel evicted resolve by LOOKUP of `.` and `..`
        // (`fs::export`): open_by_handle_at and NFS re-export work instead of ESTALE.
        let _ = config.add_capabilities(InitFlags::FUSE_EXPORT_SUPPORT);
        // The kernel enforces the access ACLs we store (named entries included), reading them
        // with getxattr; inheritance of default ACLs and the ACL side of chmod are ours (`acl`).
        // With FUSE_DONT_MASK it sends the mode unmasked beside the umask, which we apply only
        // where no default ACL replaces it (it would mask it before asking us otherwise).
        let _ = config.add_capabilities(InitFlags::FUSE_POSIX_ACL);
        let _ = config.add_capabilities(InitFlags::FUSE_DONT_MASK);
        if self.fs.writeback_cache()
            && config
                .add_capabilities(InitFlags::FUSE_WRITEBACK_CACHE)
                .is_err()
        {
            log::warn!("the kernel offers no writeback cache: writes go through");
        }
        Ok(())
    }

    fn destroy(&mut self) {
        if let Err(e) = self.fs.fsync() {
            log::error!("sync at unmount: {e}");
        }
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.fs.lookup(parent.0, name.as_bytes()) {
            Ok(a) => reply.entry(&TTL, &file_attr(&a), generation(&a)),
            Err(e) => reply.error(errno("lookup", req, &e)),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(ino.0, nlookup);
    }

    fn getattr(&self, req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.fs.getattr(ino.0) {
            Ok(a) => reply.attr(&TTL, &file_attr(&a)),
            Err(e) => reply.error(errno("getattr", req, &e)),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        crtime: Option<SystemTime>,
        chgtime: Option<SystemTime>,
        bkuptime: Option<SystemTime>,
        flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        // chown(2) with neither owner nor group (-1, -1) still drops the bits of a
        // non-directory on Linux; the kernel strips that from the request and sends a SETATTR
        // that sets nothing. It sends the same when a write or fallocate removes
        // capabilities, which keeps the bits if the caller has CAP_FSETID: so such a chown by
        // a caller with CAP_FSETID keeps them here (ext4 drops them), and by one without drops
        // them as ext4 does. A ctime alone still counts as nothing: with the writeback cache
        // the kernel keeps the times itself and adds its ctime to every SETATTR.
        let nothing = mode.is_none()
            && size.is_none()
            && atime.is_none()
            && mtime.is_none()
            && crtime.is_none()
            && chgtime.is_none()
            && bkuptime.is_none()
            && flags.is_none();
        let chown = uid.is_some() || gid.is_some();
        let fsetid = (chown || nothing || size.is_some()) && caller_has_fsetid(req);
        let in_group = |g| fsetid || caller_in_group(req, g);
        let set = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(time_set),
            mtime: mtime.map(time_set),
            ctime: ctime.map(super::kernel_time::from_fuser),
            crtime: crtime.map(super::kernel_time::from_fuser),
            flags: None,
            // FUSE_HANDLE_KILLPRIV_V2: the kernel no longer clears these bits itself. A chown
            // of a non-directory drops them whoever asks (set-group-ID without group execute
            // only if the caller is neither in the group nor has CAP_FSETID); a truncation only
            // when the caller lacks CAP_FSETID.
            kill_suid_sgid: chown || ((size.is_some() || nothing) && !fsetid),
        };
        match self.fs.setattr_as(ino.0, &set, &in_group) {
            Ok(a) => reply.attr(&TTL, &file_attr(&a)),
            Err(e) => reply.error(errno("setattr", req, &e)),
        }
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.fs.readlink(ino.0) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(errno("readlink", req, &e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        match self
            .fs
            .mknod(parent.0, name.as_bytes(), mode, umask, rdev, caller(req))
        {
            Ok(a) => reply.entry(&TTL, &file_attr(&a), generation(&a)),
            Err(e) => reply.error(errno("mknod", req, &e)),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        match self
            .fs
            .mkdir(parent.0, name.as_bytes(), mode, umask, caller(req))
        {
            Ok(a) => reply.entry(&TTL, &file_attr(&a), generation(&a)),
            Err(e) => reply.error(errno("mkdir", req, &e)),
        }
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.fs.unlink(parent.0, name.as_bytes()) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("unlink", req, &e)),
        }
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.fs.rmdir(parent.0, name.as_bytes()) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("rmdir", req, &e)),
        }
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let target = target.as_os_str().as_bytes();
        match self
            .fs
            .symlink(parent.0, link_name.as_bytes(), target, caller(req))
        {
            Ok(a) => reply.entry(&TTL, &file_attr(&a), generation(&a)),
            Err(e) => reply.error(errno("symlink", req, &e)),
        }
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        match self.fs.rename_as(
            parent.0,
            name.as_bytes(),
            newparent.0,
            newname.as_bytes(),
            flags.bits(),
            caller(req),
        ) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("rename", req, &e)),
        }
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        match self.fs.link(ino.0, newparent.0, newname.as_bytes()) {
            Ok(a) => reply.entry(&TTL, &file_attr(&a), generation(&a)),
            Err(e) => reply.error(errno("link", req, &e)),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        // We are the only writer, so cached pages stay valid across opens; but a read the
        // cache answers never reaches us to set the atime, so an open for reading when a read
        // would set it drops the cache (see `fs::atime`).
        let keep =
            flags.acc_mode() == OpenAccMode::O_WRONLY || !self.fs.read_would_touch_atime(ino.0);
        let open_flags = if keep {
            FopenFlags::FOPEN_KEEP_CACHE
        } else {
            FopenFlags::empty()
        };
        match self.fs.open_with_flags(ino.0, flags.0) {
            Ok(fh) => reply.opened(FileHandle(fh), open_flags),
            Err(e) => reply.error(errno("open", req, &e)),
        }
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.fs.read(ino.0, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(errno("read", req, &e)),
        }
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        // Set by the kernel, on every kind of write, when the writer lacks CAP_FSETID.
        let in_group = |g| caller_in_group(req, g);
        let kill_suid_sgid = write_flags
            .contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID)
            .then_some(&in_group as &dyn Fn(u32) -> bool);
        match self.fs.write_as(ino.0, offset, data, kill_suid_sgid) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(errno("write", req, &e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Nothing is buffered above the engine: every write is already applied (and has
        // returned its own error). ENOSYS tells the kernel never to send FLUSH again (it then
        // treats it as success), which saves a round trip on every close(2). We hold no POSIX
        // locks for FLUSH to release: the kernel keeps them.
        reply.error(Errno::ENOSYS);
    }

    fn release(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        match self.fs.release(ino.0, fh.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("release", req, &e)),
        }
    }

    fn fsync(&self, req: &Request, _ino: INodeNo, _fh: FileHandle, _ds: bool, reply: ReplyEmpty) {
        match self.fs.fsync() {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("fsync", req, &e)),
        }
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.opendir(ino.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(errno("opendir", req, &e)),
        }
    }

    fn readdir(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        match self.fs.readdir(ino.0, offset) {
            Ok(entries) => {
                for e in entries {
                    let name = OsStr::from_bytes(&e.name);
                    if reply.add(INodeNo(e.ino), e.cookie, file_type(e.kind), name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(errno("readdir", req, &e)),
        }
    }

    fn readdirplus(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        match self.fs.readdir(ino.0, offset) {
            Ok(entries) => {
                let names = |e: &&super::DirListEntry| e.name != b"." && e.name != b"..";
                self.fs
                    .prefetch_inodes(entries.iter().filter(names).map(|e| e.ino));
                // Entries added so far that hold a lookup reference.
                let mut referenced: Vec<u64> = Vec::new();
                for e in entries {
                    let dots = e.name == b"." || e.name == b"..";
                    // The kernel takes a lookup reference on every entry but "." and "..".
                    let attr = if dots {
                        self.fs.getattr(e.ino)
                    } else {
                        self.fs.readdir_entry(e.ino)
                    };
                    let attr = match attr {
                        Ok(a) => a,
                        Err(super::FsError::NotFound) => continue, // removed since the listing
                        // An inode that cannot be read (damaged: EIO): the listing fails rather
                        // than leave its name out as if the file did not exist (found by the
                        // random flips of `scripts/crash_damage.sh`). The entries added so far
                        // never reach the kernel: their references go back.
                        Err(err) => {
                            for ino in referenced {
                                self.fs.forget(ino, 1);
                            }
                            reply.error(errno("readdirplus", req, &err));
                            return;
                        }
                    };
                    let name = OsStr::from_bytes(&e.name);
                    if reply.add(
                        INodeNo(e.ino),
                        e.cookie,
                        name,
                        &TTL,
                        &file_attr(&attr),
                        generation(&attr),
                    ) {
                        if !dots {
                            self.fs.forget(e.ino, 1);
                        }
                        break;
                    }
                    if !dots {
                        referenced.push(e.ino);
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(errno("readdirplus", req, &e)),
        }
    }

    fn fsyncdir(
        &self,
        req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _ds: bool,
        reply: ReplyEmpty,
    ) {
        match self.fs.fsync() {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("fsyncdir", req, &e)),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let s = self.fs.statfs();
        reply.statfs(
            s.blocks,
            s.blocks_free,
            s.blocks_available,
            s.files,
            s.files_free,
            s.block_size,
            s.name_len_max,
            s.block_size,
        );
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        position: u32,
        reply: ReplyEmpty,
    ) {
        if position != 0 {
            reply.error(Errno::from_i32(libc::EINVAL));
            return;
        }
        // Setting an access ACL drops the set-group-ID bit for a caller neither in the file's
        // group nor with CAP_FSETID; the kernel would say so only with FUSE_SETXATTR_EXT, whose
        // request layout fuser 0.18 does not read.
        let in_group = |g| caller_in_group(req, g) || caller_has_fsetid(req);
        let in_group: super::InGroup = if name.as_bytes() == super::acl::ACCESS_ACL_XATTR {
            &in_group
        } else {
            super::IN_EVERY_GROUP
        };
        match self
            .fs
            .setxattr_as(ino.0, name.as_bytes(), value, flags, in_group)
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("setxattr", req, &e)),
        }
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match self
            .fs
            .getxattr(ino.0, name.as_bytes())
            .and_then(|v| super::xattr_reply(v, size))
        {
            Ok(XattrReply::Size(n)) => reply.size(n),
            Ok(XattrReply::Data(d)) => reply.data(&d),
            Err(e) => reply.error(errno("getxattr", req, &e)),
        }
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self
            .fs
            .listxattr(ino.0)
            .and_then(|v| super::xattr_reply(v, size))
        {
            Ok(XattrReply::Size(n)) => reply.size(n),
            Ok(XattrReply::Data(d)) => reply.data(&d),
            Err(e) => reply.error(errno("listxattr", req, &e)),
        }
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.fs.removexattr(ino.0, name.as_bytes()) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("removexattr", req, &e)),
        }
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        match self.fs.access(ino.0, mask.bits(), caller(req)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("access", req, &e)),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        match self
            .fs
            .create(parent.0, name.as_bytes(), mode, umask, caller(req))
        {
            Ok((a, fh)) => reply.created(
                &TTL,
                &file_attr(&a),
                generation(&a),
                FileHandle(fh),
                FopenFlags::FOPEN_KEEP_CACHE,
            ),
            Err(e) => reply.error(errno("create", req, &e)),
        }
    }

    fn fallocate(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let in_group = |g| caller_in_group(req, g);
        let kill_suid_sgid = (!caller_has_fsetid(req)).then_some(&in_group as &dyn Fn(u32) -> bool);
        match self
            .fs
            .fallocate_as(ino.0, offset, length, mode, kill_suid_sgid)
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("fallocate", req, &e)),
        }
    }

    /// Sent for `SEEK_DATA` and `SEEK_HOLE` only (the kernel does the other whences itself).
    fn lseek(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        match self.fs.lseek(ino.0, offset, whence) {
            Ok(at) => reply.offset(at as i64),
            Err(e) => reply.error(errno("lseek", req, &e)),
        }
    }

    /// The copy is done here, record to record (without it the kernel reads and writes every
    /// byte, holes included). Like fallocate, the request does not say whether the caller has
    /// `CAP_FSETID`, which decides whether the destination's set-user-ID and set-group-ID bits go.
    fn copy_file_range(
        &self,
        req: &Request,
        ino_in: INodeNo,
        _fh_in: FileHandle,
        offset_in: u64,
        ino_out: INodeNo,
        _fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        if !flags.is_empty() {
            reply.error(Errno::from_i32(libc::EINVAL));
            return;
        }
        let in_group = |g| caller_in_group(req, g);
        let kill_suid_sgid = (!caller_has_fsetid(req)).then_some(&in_group as &dyn Fn(u32) -> bool);
        match self.fs.copy_file_range_as(
            ino_in.0,
            offset_in,
            ino_out.0,
            offset_out,
            len,
            kill_suid_sgid,
        ) {
            // At most `MAX_COPY_BYTES`, which fits.
            Ok(n) => reply.written(u32::try_from(n).unwrap_or(u32::MAX)),
            Err(e) => reply.error(errno("copy_file_range", req, &e)),
        }
    }

    /// The inode flag ioctls (`chattr`, `lsattr`, `xfs_io -c chattr`). Any other ioctl is
    /// ENOTTY, as a filesystem without it answers, and quietly: fuser's default logs a
    /// multi-line warning for each one, thousands a second under a program that probes.
    fn ioctl(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        cmd: u32,
        in_data: &[u8],
        out_size: u32,
        reply: ReplyIoctl,
    ) {
        let out_size = out_size as usize;
        let result = match cmd {
            FS_IOC_GETFLAGS | FS_IOC32_GETFLAGS if out_size >= 4 => {
                self.fs.inode_flags(ino.0).map(|f| f.to_ne_bytes().to_vec())
            }
            FS_IOC_SETFLAGS | FS_IOC32_SETFLAGS => match u32_at(in_data, 0) {
                Some(f) => self
                    .fs
                    .set_inode_flags(ino.0, f, flags_caller(req))
                    .map(|()| Vec::new()),
                None => Err(FsError::Invalid),
            },
            FS_IOC_FSGETXATTR if out_size >= FSXATTR_SIZE => self.fs.inode_xflags(ino.0).map(|x| {
                let mut out = vec![0u8; FSXATTR_SIZE];
                out[..4].copy_from_slice(&x.to_ne_bytes());
                out
            }),
            FS_IOC_FSSETXATTR => {
                match (u32_at(in_data, 0), u32_at(in_data, 4), u32_at(in_data, 12)) {
                    (Some(x), Some(extsize), Some(projid)) => self
                        .fs
                        .set_inode_xflags(ino.0, x, projid, extsize, flags_caller(req))
                        .map(|()| Vec::new()),
                    _ => Err(FsError::Invalid),
                }
            }
            _ => {
                reply.error(Errno::from_i32(libc::ENOTTY));
                return;
            }
        };
        let sets = matches!(cmd, FS_IOC_SETFLAGS | FS_IOC32_SETFLAGS | FS_IOC_FSSETXATTR);
        match result {
            Ok(data) => {
                // A flag change sets ctime, which the kernel keeps from before: before the
                // reply, so that a stat after the ioctl returns sees the new one.
                if sets {
                    self.invalidate_attrs(ino.0);
                }
                reply.ioctl(0, &data)
            }
            Err(e) => reply.error(errno("ioctl", req, &e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;
    use crate::fs::keys::Timestamp;

    /// What fuser 0.18 hands over for the kernel's timespec (secs, nsecs): its
    /// `system_time_from_time`, which takes a time before the epoch as -(|secs| + nsecs).
    fn as_fuser_delivers(secs: i64, nsecs: u32) -> SystemTime {
        if secs >= 0 {
            UNIX_EPOCH + Duration::new(secs as u64, nsecs)
        } else {
            UNIX_EPOCH - Duration::new(secs.unsigned_abs(), nsecs)
        }
    }

    #[test]
    fn times_before_the_epoch_keep_their_nanoseconds() {
        for (secs, nsecs) in [
            (-100_000, 959_901_671),
            (-1, 1),
            (-2, 500_000_000),
            (-1, 0),
            (5, 7),
            (0, 0),
        ] {
            let TimeSet::At(t) = time_set(TimeOrNow::SpecificTime(as_fuser_delivers(secs, nsecs)))
            else {
                panic!("a specific time became Now");
            };
            let got = Timestamp::from_system(t);
            assert_eq!(
                (got.secs, got.nanos),
                (secs, nsecs),
                "utimensat to {secs} s + {nsecs} ns"
            );
        }
    }
}
