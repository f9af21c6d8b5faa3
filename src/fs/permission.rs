//! May this caller read, write or search (execute) this inode, look a name up, create, remove
//! or rename one, open a file, change its owner, mode or times? The kernel's answers, made
//! here: Linux's `generic_permission` (`acl_permission_check`, then the `CAP_DAC_READ_SEARCH`
//! and `CAP_DAC_OVERRIDE` overrides), with the access ACL read only when the answer depends on
//! it, and the rules built on it (`may_lookup`, `may_create`, `may_delete` with the sticky
//! rule, `vfs_rename`, `may_open`, `setattr_prepare`).
//!
//! On a mount with `default_permissions` the kernel makes these checks before a request reaches
//! us; on one without, [`super::permit`] makes them with these rules, and
//! [`Fs::access`](super::Fs::access) answers access(2) (`FUSE_ACCESS`).
//! `tests/permission_vs_kernel.rs` holds it against the kernel's own answers.

use super::FsResult;
use super::acl::Acl;

/// Read, write and search/execute, as in an access ACL entry and the kernel's `MAY_*` bits.
pub const MAY_READ: u16 = 4;
pub const MAY_WRITE: u16 = 2;
pub const MAY_EXEC: u16 = 1;

/// Capability numbers (`linux/capability.h`).
pub const CAP_CHOWN: u32 = 0;
pub const CAP_DAC_OVERRIDE: u32 = 1;
pub const CAP_DAC_READ_SEARCH: u32 = 2;
pub const CAP_FOWNER: u32 = 3;
pub const CAP_FSETID: u32 = 4;

/// Why a change is refused: the mode bits or ACL (EACCES), or ownership (EPERM).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    Access,
    NotOwner,
}

/// The caller as a permission check sees it. A FUSE request carries the filesystem user and
/// group IDs only: an implementation learns supplementary groups and capabilities from the
/// caller's process when asked, so a check that does not need them costs nothing.
pub trait Credentials {
    /// The filesystem user ID.
    fn uid(&self) -> u32;
    /// Whether `gid` is the filesystem group ID or one of the supplementary groups.
    fn in_group(&self, gid: u32) -> bool;
    /// Whether capability number `cap` is in the effective set (counted only where the kernel
    /// would count it: in doubt, no).
    fn capable(&self, cap: u32) -> bool;
}

/// What the check looks at of the inode.
#[derive(Clone, Copy, Debug)]
pub struct Target {
    pub uid: u32,
    pub gid: u32,
    /// Permission bits (0o7777; only 0o777 count).
    pub perm: u16,
    pub directory: bool,
}

/// Whether `who` gets every bit of `want` (`MAY_*`) on `target`; `acl` reads the inode's
/// access ACL (None without one) and is called only if the answer depends on it.
pub fn permitted(
    who: &dyn Credentials,
    target: Target,
    want: u16,
    acl: impl FnOnce() -> FsResult<Option<Acl>>,
) -> FsResult<bool> {
    let want = want & 7;
    if mode_or_acl_permits(who, target, want, acl)? {
        return Ok(true);
    }
    // The overrides (`generic_permission`): on a directory, reading and searching need
    // CAP_DAC_READ_SEARCH, and anything CAP_DAC_OVERRIDE; on other inodes, reading alone needs
    // CAP_DAC_READ_SEARCH, and CAP_DAC_OVERRIDE grants reading and writing, and executing
    // only where some execute bit is set.
    Ok(if target.directory {
        (want & MAY_WRITE == 0 && who.capable(CAP_DAC_READ_SEARCH)) || who.capable(CAP_DAC_OVERRIDE)
    } else {
        (want == MAY_READ && who.capable(CAP_DAC_READ_SEARCH))
            || ((want & MAY_EXEC == 0 || target.perm & 0o111 != 0) && who.capable(CAP_DAC_OVERRIDE))
    })
}

/// Linux's `inode_owner_or_capable`: the owner, or a caller with `CAP_FOWNER` (who may change
/// an inode's mode, times and ACLs).
pub fn owner_or_capable(who: &dyn Credentials, target: Target) -> bool {
    who.uid() == target.uid || who.capable(CAP_FOWNER)
}

/// [`permitted`] as a refusal: EACCES unless `who` gets every bit of `want`.
pub fn require(
    who: &dyn Credentials,
    target: Target,
    want: u16,
    acl: impl FnOnce() -> FsResult<Option<Acl>>,
) -> FsResult<Result<(), Refusal>> {
    Ok(if permitted(who, target, want, acl)? {
        Ok(())
    } else {
        Err(Refusal::Access)
    })
}

/// Linux's `may_lookup`: looking a name up in `dir` (each step of a path walk) needs search.
pub fn may_lookup(
    who: &dyn Credentials,
    dir: Target,
    dir_acl: impl FnOnce() -> FsResult<Option<Acl>>,
) -> FsResult<Result<(), Refusal>> {
    require(who, dir, MAY_EXEC, dir_acl)
}

/// Linux's `may_create`: a new name in `dir` needs write and search on it. `dir_acl` reads the
/// directory's access ACL, if the answer depends on it.
pub fn may_create(
    who: &dyn Credentials,
    dir: Target,
    dir_acl: impl FnOnce() -> FsResult<Option<Acl>>,
) -> FsResult<Result<(), Refusal>> {
    require(who, dir, MAY_WRITE | MAY_EXEC, dir_acl)
}

/// The permission part of Linux's `may_delete` (unlink, rmdir, rename away): write and search
/// on `dir`, then the sticky rule (`check_sticky`): in a sticky directory only `victim`'s
/// owner, the directory's owner, or a caller with `CAP_FOWNER` may remove it.
pub fn may_delete(
    who: &dyn Credentials,
    dir: Target,
    dir_acl: impl FnOnce() -> FsResult<Option<Acl>>,
    victim: Target,
) -> FsResult<Result<(), Refusal>> {
    if let Err(r) = may_create(who, dir, dir_acl)? {
        return Ok(Err(r));
    }
    let sticky = dir.perm & 0o1000 != 0;
    if sticky && who.uid() != dir.uid && !owner_or_capable(who, victim) {
        return Ok(Err(Refusal::NotOwner));
    }
    Ok(Ok(()))
}

/// The permission part of Linux's `vfs_rename` of `source` from `old_dir` to `new_dir` (the
/// same directory if `same_dir`), over `replaced` if that name exists, once both names were
/// looked up (search on both directories, [`may_lookup`]): removing `source` from
/// `old_dir` ([`may_delete`]), then removing `replaced` from `new_dir` or creating the name
/// there, and, for a directory that changes parent, write permission on it (its `..` changes).
/// The ACL readers are called only for the checks that need them.
#[allow(clippy::too_many_arguments)]
pub fn may_rename(
    who: &dyn Credentials,
    old_dir: Target,
    old_dir_acl: impl FnOnce() -> FsResult<Option<Acl>>,
    source: Target,
    source_acl: impl FnOnce() -> FsResult<Option<Acl>>,
    new_dir: Target,
    new_dir_acl: impl FnOnce() -> FsResult<Option<Acl>>,
    replaced: Option<Target>,
    same_dir: bool,
) -> FsResult<Result<(), Refusal>> {
    if let Err(r) = may_delete(who, old_dir, old_dir_acl, source)? {
        return Ok(Err(r));
    }
    let second = match replaced {
        Some(victim) => may_delete(who, new_dir, new_dir_acl, victim)?,
        None => may_create(who, new_dir, new_dir_acl)?,
    };
    if second.is_err() || same_dir || !source.directory {
        return Ok(second);
    }
    require(who, source, MAY_WRITE, source_acl)
}

/// The permission part of Linux's `may_open` for an inode that is not a directory opened for
/// writing (that is EISDIR, not a permission): `read` and `write` access as asked (a
/// truncation asks write), and `O_NOATIME` only for the owner or `CAP_FOWNER`.
pub fn may_open(
    who: &dyn Credentials,
    target: Target,
    acl: impl FnOnce() -> FsResult<Option<Acl>>,
    read: bool,
    write: bool,
    noatime: bool,
) -> FsResult<Result<(), Refusal>> {
    let want = if read { MAY_READ } else { 0 } | if write { MAY_WRITE } else { 0 };
    if let Err(r) = require(who, target, want, acl)? {
        return Ok(Err(r));
    }
    if noatime && !owner_or_capable(who, target) {
        return Ok(Err(Refusal::NotOwner));
    }
    Ok(Ok(()))
}

/// The parts of a setattr that need permission.
#[derive(Clone, Copy, Debug, Default)]
pub struct AttrChange {
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New permission bits (0o7777).
    pub perm: Option<u16>,
    /// Access or modification time set to a given time.
    pub times_given: bool,
    /// Both times set to now (utimes with no times, or both `UTIME_NOW`).
    pub times_now: bool,
}

/// Linux's `setattr_prepare` and `may_setattr` for `change` of `target`: a new owner needs
/// `CAP_CHOWN` (or to be the owner already); a new group the owner who is in it, or
/// `CAP_CHOWN`; either, on a non-directory whose set-ID bits it takes, also the owner or
/// `CAP_FOWNER`; new permission bits or given times the owner or `CAP_FOWNER`; times set to now
/// that, or write permission. Returns the permission bits to store if `change` sets them: the
/// set-group-ID bit goes unless the caller is in the (new) group or has `CAP_FSETID`.
pub fn may_setattr(
    who: &dyn Credentials,
    target: Target,
    acl: impl FnOnce() -> FsResult<Option<Acl>>,
    change: AttrChange,
) -> FsResult<Result<Option<u16>, Refusal>> {
    let owner = who.uid() == target.uid;
    if let Some(uid) = change.uid
        && !(owner && uid == target.uid)
        && !who.capable(CAP_CHOWN)
    {
        return Ok(Err(Refusal::NotOwner));
    }
    if let Some(gid) = change.gid
        && !(owner && (gid == target.gid || who.in_group(gid)))
        && !who.capable(CAP_CHOWN)
    {
        return Ok(Err(Refusal::NotOwner));
    }
    // A new owner or group of a non-directory takes its set-ID bits: a change of the mode,
    // which only the owner or CAP_FOWNER may make.
    let in_file_group = who.in_group(target.gid) || who.capable(CAP_FSETID);
    if (change.uid.is_some() || change.gid.is_some())
        && !target.directory
        && set_id_bits_dropped(target.perm, in_file_group) != 0
        && !owner_or_capable(who, target)
    {
        return Ok(Err(Refusal::NotOwner));
    }
    let mut perm = None;
    if let Some(new) = change.perm {
        if !owner_or_capable(who, target) {
            return Ok(Err(Refusal::NotOwner));
        }
        let group = change.gid.unwrap_or(target.gid);
        perm = Some(if who.in_group(group) || who.capable(CAP_FSETID) {
            new
        } else {
            new & !0o2000
        });
    }
    if change.times_given && !owner_or_capable(who, target) {
        return Ok(Err(Refusal::NotOwner));
    }
    if change.times_now
        && !owner_or_capable(who, target)
        && !permitted(who, target, MAY_WRITE, acl)?
    {
        return Ok(Err(Refusal::Access));
    }
    Ok(Ok(perm))
}

/// The set-ID bits of `perm` that a chown, or a write, truncation or fallocate by a caller
/// without `CAP_FSETID`, takes away (Linux's `setattr_should_drop_suidgid`): the set-user-ID
/// bit, and the set-group-ID bit if the group may execute or the caller is not in the file's
/// group (`in_file_group`, which a caller with `CAP_FSETID` counts as being). Without group
/// execute the bit marks mandatory locking, and a member of the group keeps it.
pub fn set_id_bits_dropped(perm: u16, in_file_group: bool) -> u16 {
    let setgid = perm & 0o2000 != 0 && (perm & 0o010 != 0 || !in_file_group);
    (perm & 0o4000) | if setgid { 0o2000 } else { 0 }
}

/// `acl_permission_check`: the owner gets the owner bits; anyone else the access ACL's answer
/// when the group class has a bit (the ACL's mask), else the group bits if in the owning group,
/// else the other bits.
fn mode_or_acl_permits(
    who: &dyn Credentials,
    target: Target,
    want: u16,
    acl: impl FnOnce() -> FsResult<Option<Acl>>,
) -> FsResult<bool> {
    let perm = target.perm & 0o777;
    if who.uid() == target.uid {
        return Ok(want & !(perm >> 6) == 0);
    }
    if perm & 0o070 != 0
        && let Some(acl) = acl()?
    {
        let in_group = |gid| who.in_group(gid);
        return Ok(acl.permits(who.uid(), target.uid, target.gid, &in_group, want));
    }
    // Group membership is looked up only when group and other bits differ where it matters.
    let class = if want & (perm ^ (perm >> 3)) != 0 && who.in_group(target.gid) {
        perm >> 3
    } else {
        perm
    };
    Ok(want & !class & 7 == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Who {
        uid: u32,
        groups: &'static [u32],
        caps: u64,
    }

    impl Credentials for Who {
        fn uid(&self) -> u32 {
            self.uid
        }
        fn in_group(&self, gid: u32) -> bool {
            self.groups.contains(&gid)
        }
        fn capable(&self, cap: u32) -> bool {
            self.caps & (1 << cap) != 0
        }
    }

    fn who(uid: u32, groups: &'static [u32], caps: u64) -> Who {
        Who { uid, groups, caps }
    }

    const FILE: Target = Target {
        uid: 1000,
        gid: 100,
        perm: 0o640,
        directory: false,
    };

    fn check(who: &Who, target: Target, want: u16) -> bool {
        permitted(who, target, want, || Ok(None)).unwrap()
    }

    #[test]
    fn classes_and_overrides() {
        let owner = who(1000, &[1000], 0);
        let member = who(1001, &[1001, 100], 0);
        let other = who(1002, &[1002], 0);
        assert!(check(&owner, FILE, MAY_READ | MAY_WRITE));
        assert!(!check(&owner, FILE, MAY_EXEC));
        assert!(check(&member, FILE, MAY_READ));
        assert!(!check(&member, FILE, MAY_WRITE));
        assert!(!check(&other, FILE, MAY_READ));
        // An owner denied by the owner bits is not rescued by the group or other bits.
        let odd = Target {
            perm: 0o077,
            ..FILE
        };
        assert!(!check(&owner, odd, MAY_READ));
        assert!(check(&other, odd, MAY_READ));
        let reader = who(0, &[0], 1 << CAP_DAC_READ_SEARCH);
        assert!(check(&reader, FILE, MAY_READ));
        assert!(!check(&reader, FILE, MAY_WRITE));
        let root = who(0, &[0], 1 << CAP_DAC_OVERRIDE);
        assert!(check(&root, FILE, MAY_READ | MAY_WRITE));
        // Executing needs some execute bit even for root; a directory does not.
        assert!(!check(&root, FILE, MAY_EXEC));
        assert!(check(
            &root,
            Target {
                perm: 0o001,
                ..FILE
            },
            MAY_EXEC
        ));
        let dir = Target {
            perm: 0o700,
            directory: true,
            ..FILE
        };
        assert!(check(&root, dir, MAY_EXEC | MAY_WRITE));
        assert!(check(&reader, dir, MAY_READ | MAY_EXEC));
        assert!(!check(&reader, dir, MAY_WRITE));
        let powerless_root = who(0, &[0], 0);
        assert!(!check(&powerless_root, FILE, MAY_READ));
    }

    #[test]
    fn owner_or_capable_is_the_owner_or_cap_fowner() {
        let owner = who(1000, &[1000], 0);
        let other = who(1002, &[100], 0);
        let fowner = who(0, &[0], 1 << CAP_FOWNER);
        let dac_only = who(0, &[0], 1 << CAP_DAC_OVERRIDE);
        assert!(owner_or_capable(&owner, FILE));
        assert!(!owner_or_capable(&other, FILE));
        assert!(owner_or_capable(&fowner, FILE));
        assert!(!owner_or_capable(&dac_only, FILE));
    }

    #[test]
    fn acl_is_read_only_when_it_decides() {
        let owner = who(1000, &[1000], 0);
        let other = who(1002, &[1002], 0);
        let refuse = || -> FsResult<Option<Acl>> { panic!("the ACL was read") };
        assert!(permitted(&owner, FILE, MAY_READ, refuse).unwrap());
        let no_group_bits = Target {
            perm: 0o604,
            ..FILE
        };
        assert!(permitted(&other, no_group_bits, MAY_READ, refuse).unwrap());
        // A named entry for 1002 with read, under a mask that keeps it.
        let acl = Acl::parse(&[
            2, 0, 0, 0, // version
            1, 0, 6, 0, 0xff, 0xff, 0xff, 0xff, // user::rw-
            2, 0, 4, 0, 0xea, 3, 0, 0, // user:1002:r--
            4, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, // group::---
            0x10, 0, 4, 0, 0xff, 0xff, 0xff, 0xff, // mask::r--
            0x20, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, // other::---
        ])
        .unwrap();
        let with_acl = Target {
            perm: 0o640,
            ..FILE
        };
        assert!(permitted(&other, with_acl, MAY_READ, || Ok(acl.clone())).unwrap());
        assert!(!permitted(&other, with_acl, MAY_WRITE, || Ok(acl.clone())).unwrap());
    }
}
