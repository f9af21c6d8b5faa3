//! Links fuser's `Filesystem` calls to [`Fs`]: decode the request, call `Fs`, reply. This
//! module and its submodules are the only code that names fuser's `Filesystem`, `Request` and
//! `Reply*` types. No filesystem logic lives here, and nothing here panics on a request path.
//! Each handler is a few lines here; the larger ones and the shared conversions have files:
//! - `session.rs`: what the mount asks of the kernel at INIT, and the kernel notifier;
//! - `convert.rs`: attributes, file types, times and errnos between fuser and `fs`;
//! - `caller.rs`: the caller of a request (ids, groups, capabilities);
//! - `dir.rs`: READDIRPLUS and its lookup references;
//! - `ioctl.rs`: the inode flag ioctls.
//!
//! Permissions: on a mount whose permissions the daemon checks ([`Fs::checks_permissions`]),
//! each handler asks `fs::permit` before it calls the operation ([`FuseFs::permit`]).
//!
//! Kernel cache settings: attributes and entries are cached for [`TTL`], but for entries of a
//! directory that some caller may not search on a mount that checks for itself (none: each walk
//! through one is a LOOKUP, checked; `fs::permit`). Every change reaches
//! us through the kernel, which drops its own copy of what the change touches (the entry, the
//! parent's attributes, the inode's, atime after a read); the one change it does not know the
//! effect of is an inode flag ioctl (ctime), after which we invalidate the inode's attributes
//! ourselves ([`NotifierSlot`]). The writeback cache is off
//! unless the mount asks for it (`-o writeback_cache`): then the kernel owns size and mtime
//! while it holds dirty pages, and ENOSPC and EIO reach the user at fsync(2), and at the first
//! close(2) of the file after the failure, whoever closes (the kernel's FLUSH path writes the
//! dirty pages back and returns their error even though we answer FLUSH with ENOSYS; it keeps
//! one error flag per inode for that). Without it every write reaches `Fs::write` before write(2)
//! returns, so write(2) itself reports them. Readdirplus is enabled when the kernel offers it.

mod caller;
mod convert;
mod dir;
mod ioctl;
mod session;

use session::{EntryDropper, negotiate};
pub use session::{NotifierSlot, raise_read_ahead};

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, BsdFileFlags, CopyFileRangeFlags, Errno, FileHandle, Filesystem, FopenFlags,
    INodeNo, IoctlFlags, KernelConfig, LockOwner, OpenAccMode, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyIoctl,
    ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use super::permission::AttrChange;
use super::permit::EntryLifetime;
use super::{Attr, FileKind, Fs, FsResult, SetAttr, XattrReply};
use caller::{RequestCredentials, caller, caller_has_fsetid, caller_in_group};
use convert::{errno, file_attr, file_type, generation, time_set};

/// How long the kernel may cache attributes and directory entries: long, since it is told of
/// every change (see the module comment). At 1 s, an unlink more than a second after the
/// name was last looked up cost a LOOKUP round trip more (3 requests instead of 2), as did a
/// stat of a file not seen for a second (a GETATTR).
pub const TTL: Duration = Duration::from_secs(60);
/// Largest write request we ask the kernel for.
pub const MAX_WRITE_BYTES: u32 = 1 << 20;

thread_local! {
    /// A read's reply, kept from one read to the next of the session thread (see
    /// [`Fs::read_into`]).
    static READ_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The fuser `Filesystem` for an [`Fs`].
pub struct FuseFs {
    fs: Arc<Fs>,
    notifier: NotifierSlot,
    entry_dropper: EntryDropper,
}

impl FuseFs {
    pub fn new(fs: Arc<Fs>) -> FuseFs {
        let notifier = NotifierSlot::default();
        FuseFs {
            fs,
            entry_dropper: EntryDropper::start(&notifier),
            notifier,
        }
    }

    /// The slot the session's notifier goes into once the session exists (the session owns
    /// this `FuseFs`, and the notifier comes from the session).
    pub fn notifier_slot(&self) -> NotifierSlot {
        self.notifier.clone()
    }

    /// On a mount whose permissions the daemon checks ([`Fs::checks_permissions`]), `check`
    /// for the request's caller; on any other the kernel has checked before sending it.
    fn permit<T: Default>(
        &self,
        req: &Request,
        check: impl FnOnce(&RequestCredentials) -> FsResult<T>,
    ) -> FsResult<T> {
        if self.fs.checks_permissions() {
            check(&RequestCredentials::new(req))
        } else {
            Ok(T::default())
        }
    }

    /// How long the kernel may keep an entry of directory `dir` ([`EntryLifetime`]).
    fn entry_ttl(&self, dir: u64) -> Duration {
        match self.fs.entry_lifetime(dir) {
            EntryLifetime::Usual => TTL,
            EntryLifetime::None => Duration::ZERO,
        }
    }

    /// Replies with the entry of a name in `dir`: its attributes for [`TTL`], the name for
    /// [`FuseFs::entry_ttl`].
    fn reply_entry(&self, reply: ReplyEntry, dir: u64, a: &Attr) {
        reply.entry_with_ttls(&TTL, &self.entry_ttl(dir), &file_attr(a), generation(a));
    }

    /// After a change of directory `dir`'s owner, mode or access ACL: if some caller may no
    /// longer search it, the kernel's entries of its names go, since a walk through them would
    /// not ask us ([`EntryDropper`]).
    fn drop_entries_if_unsearchable(&self, dir: u64) {
        if self.fs.entry_lifetime(dir) == EntryLifetime::Usual {
            return;
        }
        match self.fs.names_in(dir) {
            Ok(names) => self.entry_dropper.drop_entries(dir, names),
            Err(e) => log::warn!("cannot list directory {dir} to drop its cached entries: {e}"),
        }
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

impl Filesystem for FuseFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        negotiate(config, &self.fs);
        Ok(())
    }

    fn destroy(&mut self) {
        if let Err(e) = self.fs.fsync() {
            log::error!("sync at unmount: {e}");
        }
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        // `.` and `..` come from file handles (`export`), not from a caller's path walk.
        let walk = !matches!(name.as_bytes(), b"." | b"..");
        match self
            .permit(req, |who| match walk {
                true => self.fs.may_look_up_in(who, parent.0),
                false => Ok(()),
            })
            .and_then(|()| self.fs.lookup(parent.0, name.as_bytes()))
        {
            Ok(a) => self.reply_entry(reply, parent.0, &a),
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
        fh: Option<FileHandle>,
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
        let both_now = matches!((atime, mtime), (Some(TimeOrNow::Now), Some(TimeOrNow::Now)));
        let change = AttrChange {
            uid,
            gid,
            perm: mode.map(|m| (m & 0o7777) as u16),
            times_given: (atime.is_some() || mtime.is_some()) && !both_now,
            times_now: both_now,
        };
        // The writeback cache's times at a flush are the kernel's own, not a caller's to
        // refuse: they come with a file handle (a caller's utimes never does) or, from the
        // kernel's own threads, with no process (pid 0).
        let kernel_times =
            !chown && mode.is_none() && size.is_none() && (fh.is_some() || req.pid() == 0);
        let by_caller = !kernel_times;
        // truncate(2), and open(2) with O_TRUNC, whose flag the kernel keeps to itself and
        // whose truncation comes without a handle; ftruncate(2) comes with one, whose open
        // was checked.
        let truncation_needs_write = size.is_some() && fh.is_none();
        let mode = match self.permit(req, |who| match by_caller {
            true => self
                .fs
                .may_set_attributes(who, ino.0, change, truncation_needs_write),
            false => Ok(None),
        }) {
            Ok(perm) => match (mode, perm) {
                (Some(m), Some(p)) => Some(m & !0o7777 | u32::from(p)),
                (m, _) => m,
            },
            Err(e) => {
                reply.error(errno("setattr", req, &e));
                return;
            }
        };
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
            Ok(a) => {
                reply.attr(&TTL, &file_attr(&a));
                if a.kind == FileKind::Directory && (chown || set.mode.is_some()) {
                    self.drop_entries_if_unsearchable(ino.0);
                }
            }
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
            .permit(req, |who| self.fs.may_create_in(who, parent.0))
            .and_then(|()| {
                self.fs
                    .mknod(parent.0, name.as_bytes(), mode, umask, rdev, caller(req))
            }) {
            Ok(a) => self.reply_entry(reply, parent.0, &a),
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
            .permit(req, |who| self.fs.may_create_in(who, parent.0))
            .and_then(|()| {
                self.fs
                    .mkdir(parent.0, name.as_bytes(), mode, umask, caller(req))
            }) {
            Ok(a) => self.reply_entry(reply, parent.0, &a),
            Err(e) => reply.error(errno("mkdir", req, &e)),
        }
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self
            .permit(req, |who| {
                self.fs.may_delete_from(who, parent.0, name.as_bytes())
            })
            .and_then(|()| self.fs.unlink(parent.0, name.as_bytes()))
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("unlink", req, &e)),
        }
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self
            .permit(req, |who| {
                self.fs.may_delete_from(who, parent.0, name.as_bytes())
            })
            .and_then(|()| self.fs.rmdir(parent.0, name.as_bytes()))
        {
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
            .permit(req, |who| self.fs.may_create_in(who, parent.0))
            .and_then(|()| {
                self.fs
                    .symlink(parent.0, link_name.as_bytes(), target, caller(req))
            }) {
            Ok(a) => self.reply_entry(reply, parent.0, &a),
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
        let (from, to) = (name.as_bytes(), newname.as_bytes());
        match self
            .permit(req, |who| {
                self.fs
                    .may_rename_from(who, parent.0, from, newparent.0, to)
            })
            .and_then(|()| {
                self.fs
                    .rename_as(parent.0, from, newparent.0, to, flags.bits(), caller(req))
            }) {
            Ok(()) => {
                reply.ok();
                // The kernel moves its entry, with the lifetime it had in the old directory.
                if self.fs.entry_lifetime(newparent.0) == EntryLifetime::None {
                    let name = newname.as_bytes().to_vec();
                    self.entry_dropper.drop_entries(newparent.0, vec![name]);
                }
            }
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
        match self
            .permit(req, |who| self.fs.may_link(who, ino.0, newparent.0))
            .and_then(|()| self.fs.link(ino.0, newparent.0, newname.as_bytes()))
        {
            Ok(a) => self.reply_entry(reply, newparent.0, &a),
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
        match self
            .permit(req, |who| self.fs.may_open_with(who, ino.0, flags.0))
            .and_then(|()| self.fs.open_with_flags(ino.0, flags.0))
        {
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
        READ_BUFFER.with_borrow_mut(|data| match self.fs.read_into(ino.0, offset, size, data) {
            Ok(()) => reply.data(data),
            Err(e) => reply.error(errno("read", req, &e)),
        })
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
        // The kernel's write-back of its page cache ignores a short count: the tail would be
        // lost silently, so it gets the error that cut the write short instead.
        let result = if write_flags.contains(WriteFlags::FUSE_WRITE_CACHE) {
            self.fs.write_whole_as(ino.0, offset, data, kill_suid_sgid)
        } else {
            self.fs.write_as(ino.0, offset, data, kill_suid_sgid)
        };
        match result {
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

    fn opendir(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self
            .permit(req, |who| self.fs.may_open_with(who, ino.0, flags.0))
            .and_then(|()| self.fs.opendir(ino.0))
        {
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
        reply: ReplyDirectoryPlus,
    ) {
        self.reply_readdirplus(req, ino, offset, reply);
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
            .permit(req, |who| {
                self.fs.may_use_xattr(who, ino.0, name.as_bytes(), true)
            })
            .and_then(|()| {
                self.fs
                    .setxattr_as(ino.0, name.as_bytes(), value, flags, in_group)
            }) {
            Ok(()) => {
                reply.ok();
                if name.as_bytes() == super::acl::ACCESS_ACL_XATTR {
                    self.drop_entries_if_unsearchable(ino.0);
                }
            }
            Err(e) => reply.error(errno("setxattr", req, &e)),
        }
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match self
            .permit(req, |who| {
                self.fs.may_use_xattr(who, ino.0, name.as_bytes(), false)
            })
            .and_then(|()| self.fs.getxattr(ino.0, name.as_bytes()))
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
        match self
            .permit(req, |who| {
                self.fs.may_use_xattr(who, ino.0, name.as_bytes(), true)
            })
            .and_then(|()| self.fs.removexattr(ino.0, name.as_bytes()))
        {
            Ok(()) => {
                reply.ok();
                if name.as_bytes() == super::acl::ACCESS_ACL_XATTR {
                    self.drop_entries_if_unsearchable(ino.0);
                }
            }
            Err(e) => reply.error(errno("removexattr", req, &e)),
        }
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        match self
            .fs
            .access(ino.0, mask.bits(), &RequestCredentials::new(req))
        {
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
            .permit(req, |who| self.fs.may_create_in(who, parent.0))
            .and_then(|()| {
                self.fs
                    .create(parent.0, name.as_bytes(), mode, umask, caller(req))
            }) {
            Ok((a, fh)) => reply.created(
                &self.entry_ttl(parent.0),
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
        self.inode_flags_ioctl(req, ino, cmd, in_data, out_size, reply);
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;
    use crate::fs::TimeSet;
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
