//! The daemon's own permission checks, for mounts where the kernel makes none
//! ([`FsOptions::checks_permissions`](super::FsOptions::checks_permissions): asked for by
//! `daemon_permissions`, so no `default_permissions`; the kernel then also skips its
//! protections of sticky directories, `fs.protected_regular` and `fs.protected_fifos`, which
//! is why a mount does not check this way unless asked). Each reads, of the inodes a request
//! names, what a rule of [`permission`] needs (owner, group, mode, the access ACL only if the
//! answer depends on it) and answers EACCES or EPERM as ext4 would. The FUSE adapter calls them
//! before the operation.
//!
//! A check and the operation after it are two takes of the state lock, and yet no change can
//! come between them that the kernel would have kept out: it holds the directory's lock over a
//! create, remove or rename (and both directories' over a rename), and the inode's over a
//! setattr or xattr change, as it does on ext4 around the same checks.
//!
//! Where the daemon cannot answer as ext4 does, because the kernel keeps what it would need to
//! itself, it refuses or allows the same, with another errno or in two steps:
//! - open(2) with `O_TRUNC`: the kernel sends the open without the flag and truncates by a
//!   SETATTR of its own, so read (or write) is checked at the open and write at the truncation,
//!   where ext4 checks both at once; the one caller this lets through is one who may read only
//!   by `CAP_DAC_READ_SEARCH` and write only by the mode;
//! - `O_NOATIME` by a caller who does not own the file: the kernel refuses it (EPERM) before
//!   the open reaches us, where ext4 first checks access (EACCES);
//! - chown(2) of neither owner nor group, which drops set-ID bits: it reaches us as a setattr
//!   of nothing, as does the drop a fallocate makes, so it is allowed where ext4 asks the
//!   caller to be allowed a chmod.
//!
//! And one open is never ours to check: a FIFO's, a socket's or a device node's, which the kernel
//! makes without a request. A mount that allows device nodes therefore keeps the kernel's
//! checks; FIFOs and sockets open (or connect) whatever their mode says.
//!
//! A path walk is checked at LOOKUP, which reaches us only for names the kernel does not hold.
//! Where every caller this mount can have may search a directory
//! ([`Fs::searched_alike`]), its entries are cached for as long as usual; in any other, for no
//! time at all, so that each step of a walk through it is a LOOKUP, checked for its caller; and
//! a change that makes a directory such (chmod, chown, an access ACL) drops the entries the
//! kernel holds of it ([`Fs::names_in`]). The callers of a mount without `allow_other` have
//! the mount owner's real, effective and saved user IDs (the kernel lets no other in), but a
//! request carries the filesystem user ID, which a caller with CAP_SETUID may set to anyone's.

use super::acl::{self, Acl};
use super::keys::InodeRecord;
use super::permission::{
    self, AttrChange, Credentials, MAY_EXEC, MAY_READ, MAY_WRITE, Refusal, Target,
};
use super::{FileKind, Fs, FsError, FsResult, State, corrupt, keys};

/// The open flag the kernel adds for an exec (`__FMODE_EXEC`): the file must be executable
/// by the caller, and need not be readable.
const FMODE_EXEC: i32 = 0x20;

/// What a permission rule looks at of an inode.
pub(super) fn target(rec: &InodeRecord) -> Target {
    Target {
        uid: rec.uid,
        gid: rec.gid,
        perm: rec.perm,
        directory: rec.kind == FileKind::Directory,
    }
}

fn refused<T>(answer: Result<T, Refusal>) -> FsResult<T> {
    answer.map_err(|r| match r {
        Refusal::Access => FsError::Access,
        Refusal::NotOwner => FsError::NotPermitted,
    })
}

/// How long the kernel may keep the entries of a directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryLifetime {
    /// As long as any entry: every caller may search the directory.
    Usual,
    /// Not at all: each use is a LOOKUP, checked for its caller.
    None,
}

impl Fs {
    /// Whether the daemon checks permissions itself (the mount runs without
    /// `default_permissions`).
    pub fn checks_permissions(&self) -> bool {
        self.checks_permissions
    }

    /// The access ACL of `ino`, if it has one.
    pub(super) fn access_acl(&self, ino: u64) -> FsResult<Option<Acl>> {
        self.engine
            .get(&keys::xattr_key(ino, acl::ACCESS_ACL_XATTR))?
            .as_deref()
            .map(Acl::parse)
            .transpose()
            .map(Option::flatten)
    }

    fn target_of(&self, st: &State, ino: u64) -> FsResult<Target> {
        Ok(target(&self.load(st, ino)?))
    }

    /// A LOOKUP of a name in `dir`: search permission on it.
    pub fn may_look_up_in(&self, who: &dyn Credentials, dir: u64) -> FsResult<()> {
        let st = self.state.lock();
        let t = self.target_of(&st, dir)?;
        refused(permission::may_lookup(who, t, || self.access_acl(dir))?)
    }

    /// A new name in `dir` (create, mknod, mkdir, symlink, link): write and search on it.
    pub fn may_create_in(&self, who: &dyn Credentials, dir: u64) -> FsResult<()> {
        let st = self.state.lock();
        let t = self.target_of(&st, dir)?;
        refused(permission::may_create(who, t, || self.access_acl(dir))?)
    }

    /// Removing `name` from `dir` (unlink, rmdir): write and search on `dir`, and its sticky
    /// rule. ENOENT if there is no such name.
    pub fn may_delete_from(&self, who: &dyn Credentials, dir: u64, name: &[u8]) -> FsResult<()> {
        let st = self.state.lock();
        let d = self.target_of(&st, dir)?;
        let entry = self.find_entry(dir, name)?.ok_or(FsError::NotFound)?;
        let victim = self.target_of(&st, entry.ino)?;
        refused(permission::may_delete(
            who,
            d,
            || self.access_acl(dir),
            victim,
        )?)
    }

    /// Renaming `name` in `dir` to `new_name` in `new_dir` (over whatever that name holds).
    /// ENOENT if `name` does not exist.
    pub fn may_rename_from(
        &self,
        who: &dyn Credentials,
        dir: u64,
        name: &[u8],
        new_dir: u64,
        new_name: &[u8],
    ) -> FsResult<()> {
        let st = self.state.lock();
        let old = self.target_of(&st, dir)?;
        let new = self.target_of(&st, new_dir)?;
        let source = self.find_entry(dir, name)?.ok_or(FsError::NotFound)?.ino;
        let replaced = match self.find_entry(new_dir, new_name)? {
            Some(e) => Some(self.target_of(&st, e.ino)?),
            None => None,
        };
        refused(permission::may_rename(
            who,
            old,
            || self.access_acl(dir),
            self.target_of(&st, source)?,
            || self.access_acl(source),
            new,
            || self.access_acl(new_dir),
            replaced,
            dir == new_dir,
        )?)
    }

    /// An OPEN or OPENDIR of `ino` with open(2)'s `flags`: read or write access as asked
    /// (truncation asks write), execute for an exec, `O_NOATIME` only for the owner.
    pub fn may_open_with(&self, who: &dyn Credentials, ino: u64, flags: i32) -> FsResult<()> {
        let st = self.state.lock();
        let t = self.target_of(&st, ino)?;
        let acl = || self.access_acl(ino);
        if flags & FMODE_EXEC != 0 {
            return refused(permission::require(who, t, MAY_EXEC, acl)?);
        }
        let acc = flags & libc::O_ACCMODE;
        let read = acc == libc::O_RDONLY || acc == libc::O_RDWR;
        let write = acc == libc::O_WRONLY || acc == libc::O_RDWR || flags & libc::O_TRUNC != 0;
        let noatime = flags & libc::O_NOATIME != 0;
        refused(permission::may_open(who, t, acl, read, write, noatime)?)
    }

    /// A new link to `ino` in `dir`: with `fs.protected_hardlinks` on (the kernel checks the
    /// rest of that rule itself), a caller who neither owns the file nor has `CAP_FOWNER`
    /// needs read and write permission on it (`may_linkat`, EPERM); then [`Fs::may_create_in`].
    pub fn may_link(&self, who: &dyn Credentials, ino: u64, dir: u64) -> FsResult<()> {
        let protected = std::fs::read_to_string("/proc/sys/fs/protected_hardlinks")
            .is_ok_and(|v| v.trim() == "1");
        if protected {
            let st = self.state.lock();
            let t = self.target_of(&st, ino)?;
            if !permission::owner_or_capable(who, t)
                && !permission::permitted(who, t, MAY_READ | MAY_WRITE, || self.access_acl(ino))?
            {
                return Err(FsError::NotPermitted);
            }
        }
        self.may_create_in(who, dir)
    }

    /// A SETATTR of `ino`: `change` as [`permission::may_setattr`] takes it, and a truncation
    /// by truncate(2) or by open(2) with `O_TRUNC` needs write permission. Returns the
    /// permission bits to store if `change` sets them (the set-group-ID bit dropped where the
    /// kernel drops it).
    pub fn may_set_attributes(
        &self,
        who: &dyn Credentials,
        ino: u64,
        change: AttrChange,
        truncation_needs_write: bool,
    ) -> FsResult<Option<u16>> {
        let st = self.state.lock();
        let t = self.target_of(&st, ino)?;
        if truncation_needs_write {
            refused(permission::require(who, t, MAY_WRITE, || {
                self.access_acl(ino)
            })?)?;
        }
        refused(permission::may_setattr(
            who,
            t,
            || self.access_acl(ino),
            change,
        )?)
    }

    /// Reading (`write` false) or changing extended attribute `name` of `ino`, as the VFS's
    /// `xattr_permission` and the ACL rules ask: `user.*` needs read or write permission, and
    /// a change in a sticky directory its owner or `CAP_FOWNER`; an ACL only its owner or
    /// `CAP_FOWNER` may set. Other namespaces the kernel checks itself.
    pub fn may_use_xattr(
        &self,
        who: &dyn Credentials,
        ino: u64,
        name: &[u8],
        write: bool,
    ) -> FsResult<()> {
        let st = self.state.lock();
        let t = self.target_of(&st, ino)?;
        if write && (name == acl::ACCESS_ACL_XATTR || name == acl::DEFAULT_ACL_XATTR) {
            return refused(if permission::owner_or_capable(who, t) {
                Ok(())
            } else {
                Err(Refusal::NotOwner)
            });
        }
        if !name.starts_with(b"user.") {
            return Ok(());
        }
        if write && t.directory && t.perm & 0o1000 != 0 && !permission::owner_or_capable(who, t) {
            return Err(FsError::NotPermitted);
        }
        let want = if write { MAY_WRITE } else { MAY_READ };
        refused(permission::require(who, t, want, || self.access_acl(ino))?)
    }

    /// Whether every caller the mount can have gets search permission on `dir`, whatever its
    /// user ID, groups and capabilities: if the owner, group and other classes all may and no
    /// access ACL can say otherwise (a named entry can narrow a grant). The owner class alone
    /// is not enough: a caller may carry another filesystem user ID (see the module's doc).
    pub fn searched_alike(&self, dir: u64) -> FsResult<bool> {
        let st = self.state.lock();
        let t = self.target_of(&st, dir)?;
        Ok(t.perm & 0o111 == 0o111
            && !self
                .engine
                .contains(&keys::xattr_key(dir, acl::ACCESS_ACL_XATTR)))
    }

    /// How long the kernel may keep entries of `dir` (see the module's doc).
    pub fn entry_lifetime(&self, dir: u64) -> EntryLifetime {
        match self.checks_permissions && !self.searched_alike(dir).unwrap_or(false) {
            true => EntryLifetime::None,
            false => EntryLifetime::Usual,
        }
    }

    /// Every name in directory `dir` (not `.` and `..`): what the kernel may hold entries of.
    pub fn names_in(&self, dir: u64) -> FsResult<Vec<Vec<u8>>> {
        let mut names = Vec::new();
        for (key, value) in self
            .engine
            .scan(&keys::dirent_prefix(dir), None, usize::MAX)?
        {
            let list = keys::decode_dirents(&value).ok_or_else(|| corrupt("dirent", &key))?;
            names.extend(list.into_iter().map(|e| e.name));
        }
        Ok(names)
    }
}
