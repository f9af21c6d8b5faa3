//! The permission rules of `src/fs/permission.rs` against the kernel's own answers. Files and
//! directories on the test's own disk (a kernel filesystem with POSIX ACLs) get random owners,
//! modes (set-ID and sticky bits too) and access ACLs; a child process takes random credentials
//! (user, group, supplementary groups, and for root all, some or no capabilities) and asks
//! access(2), removes a name or creates one; the rules, given what `stat` and the ACL xattr
//! then say, must answer the same in every case, errno included.
//!
//! Runs as root, as the rest of the suite does: it changes owners and credentials.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use logstorfs::fs::acl::{Acl, AclEntry};
use logstorfs::fs::permission::{
    AttrChange, CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER, CAP_FSETID,
    Credentials, Refusal, Target, may_create, may_delete, may_lookup, may_open, may_rename,
    may_setattr,
};

const CASES: usize = 2000;
const ACL_XATTR: &str = "system.posix_acl_access";

/// xorshift64*: the cases are the same from run to run (`PERMISSION_SEED` picks others).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.below(from.len() as u64) as usize]
    }
}

#[derive(Debug)]
struct Who {
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
    /// Effective (and permitted) capabilities: all for root unless dropped, none for others.
    caps: u64,
}

impl Credentials for Who {
    fn uid(&self) -> u32 {
        self.uid
    }
    fn in_group(&self, gid: u32) -> bool {
        gid == self.gid || self.groups.contains(&gid)
    }
    fn capable(&self, cap: u32) -> bool {
        self.caps & (1 << cap) != 0
    }
}

/// The test's own effective capabilities: what "all" can be for a child (a set may only shrink).
fn own_caps() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .unwrap();
    u64::from_str_radix(hex.trim(), 16).unwrap()
}

/// An access ACL of random named entries (or none, then `None`); the owner, group and other
/// entries and the mask are random too, and the kernel sets the mode from them.
fn random_acl(rng: &mut Rng) -> Option<Acl> {
    if rng.below(2) == 0 {
        return None;
    }
    let perm = |rng: &mut Rng| rng.below(8) as u16;
    let undefined = u32::MAX;
    let mut entries = vec![AclEntry {
        tag: 0x01,
        perm: perm(rng),
        id: undefined,
    }];
    for uid in [1000, 1001, 1002] {
        if rng.below(3) == 0 {
            entries.push(AclEntry {
                tag: 0x02,
                perm: perm(rng),
                id: uid,
            });
        }
    }
    entries.push(AclEntry {
        tag: 0x04,
        perm: perm(rng),
        id: undefined,
    });
    for gid in [100, 101, 102] {
        if rng.below(3) == 0 {
            entries.push(AclEntry {
                tag: 0x08,
                perm: perm(rng),
                id: gid,
            });
        }
    }
    if entries.len() > 2 {
        entries.push(AclEntry {
            tag: 0x10,
            perm: perm(rng),
            id: undefined,
        });
    }
    entries.push(AclEntry {
        tag: 0x20,
        perm: perm(rng),
        id: undefined,
    });
    Some(Acl { entries })
}

/// Runs `op` (raw system calls only: it runs in a forked child) with `who`'s credentials and
/// returns its errno, or 0 if it succeeded.
fn as_who(who: &Who, op: impl Fn() -> i64) -> i32 {
    let groups: Vec<libc::gid_t> = who.groups.clone();
    // Version 3 capability sets: two 32-bit words of (effective, permitted, inheritable).
    let header = [0x2008_0522u32, 0];
    let lo = (who.caps & 0xffff_ffff) as u32;
    let hi = (who.caps >> 32) as u32;
    let data = [lo, lo, 0, hi, hi, 0];
    // SAFETY: the child makes raw system calls only (no allocation, no locks) before `_exit`;
    // every buffer it reads was made before the fork.
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            let ok = libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) == 0
                && libc::syscall(libc::SYS_setresgid, who.gid, who.gid, who.gid) == 0
                && libc::syscall(libc::SYS_setresuid, who.uid, who.uid, who.uid) == 0
                && (who.uid != 0
                    || libc::syscall(libc::SYS_capset, header.as_ptr(), data.as_ptr()) == 0);
            if !ok {
                libc::_exit(255);
            }
            libc::_exit(if op() >= 0 {
                0
            } else {
                *libc::__errno_location()
            });
        }
        let mut status = 0;
        assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
        let code = libc::WEXITSTATUS(status);
        assert_ne!(code, 255, "the child could not take {who:?}");
        code
    }
}

/// access(2) of `path` for `want` as `who`: true if granted.
fn kernel_answer(path: &CString, who: &Who, want: u16) -> bool {
    // SAFETY: a valid C string.
    match as_who(who, || unsafe {
        libc::syscall(
            libc::SYS_faccessat,
            libc::AT_FDCWD,
            path.as_ptr(),
            i32::from(want),
        )
    }) {
        0 => true,
        libc::EACCES => false,
        e => panic!("access(2) as {who:?}: errno {e}"),
    }
}

fn set_acl(path: &Path, acl: &Acl) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    let name = CString::new(ACL_XATTR).unwrap();
    let value = acl.encode();
    // SAFETY: valid C strings and a buffer of the given length.
    let r = unsafe {
        libc::setxattr(
            c.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        r,
        0,
        "setxattr {ACL_XATTR}: {}",
        std::io::Error::last_os_error()
    );
}

/// The access ACL the kernel keeps for `path`, if any.
fn stored_acl(path: &Path) -> Option<Acl> {
    let value = xattr::get(path, ACL_XATTR).expect("getxattr")?;
    Acl::parse(&value).expect("the kernel's ACL parses")
}

/// What `stat` says of `path`, as the rule takes it.
fn target_of(path: &Path) -> Target {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path).unwrap();
    Target {
        uid: meta.uid(),
        gid: meta.gid(),
        perm: (meta.mode() & 0o7777) as u16,
        directory: meta.is_dir(),
    }
}

/// A random caller: root with all, some or none of the capabilities that matter here, or one
/// of three users, in random groups.
fn random_who(rng: &mut Rng, all_caps: u64) -> Who {
    let uid = rng.pick(&[0, 1000, 1001, 1002]);
    Who {
        uid,
        gid: rng.pick(&[0, 100, 101, 1000, 1002]),
        groups: [100, 101, 102]
            .into_iter()
            .filter(|_| rng.below(2) == 0)
            .collect(),
        caps: if uid != 0 {
            0
        } else {
            rng.pick(&[
                all_caps,
                0,
                1 << CAP_DAC_READ_SEARCH,
                1 << CAP_DAC_OVERRIDE,
                1 << CAP_FOWNER,
                1 << CAP_DAC_OVERRIDE | 1 << CAP_FOWNER,
                1 << CAP_CHOWN,
                1 << CAP_FSETID | 1 << CAP_FOWNER,
            ])
        },
    }
}

/// A new file or directory at `path` with a random owner, group, mode (set-ID and sticky bits
/// included) and, half the time, access ACL.
fn random_inode(rng: &mut Rng, path: &Path, directory: bool) {
    if directory {
        std::fs::create_dir(path).unwrap();
    } else {
        std::fs::write(path, b"").unwrap();
    }
    let owner = rng.pick(&[0, 1000, 1001]);
    let group = rng.pick(&[0, 100, 101, 1000]);
    std::os::unix::fs::chown(path, Some(owner), Some(group)).unwrap();
    let mode = rng.below(0o10000) as u32;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
    if let Some(acl) = random_acl(rng) {
        set_acl(path, &acl);
    }
}

/// The test runs as root: it changes owners and credentials. Returns its own capabilities,
/// which must include those the rule's overrides use.
fn root_caps() -> u64 {
    // SAFETY: no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "run as root: this test changes owners and credentials"
    );
    let all = own_caps();
    let needed = 1 << CAP_DAC_OVERRIDE
        | 1 << CAP_DAC_READ_SEARCH
        | 1 << CAP_FOWNER
        | 1 << CAP_CHOWN
        | 1 << CAP_FSETID;
    assert_eq!(
        all & needed,
        needed,
        "root lacks a capability the rule's overrides use"
    );
    all
}

fn seed() -> u64 {
    std::env::var("PERMISSION_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_1e55_u64)
}

/// A directory of the test's own that every caller may search.
fn test_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    dir
}

#[test]
fn create_and_delete_rules_answer_as_the_kernel_does() {
    let all_caps = root_caps();
    let seed = seed();
    let mut rng = Rng(seed.rotate_left(17) | 1);
    let dir = test_dir();
    let mut outcomes = [0usize; 3]; // allowed, EACCES, EPERM
    for case in 0..CASES {
        let parent = dir.path().join(format!("d{case}"));
        random_inode(&mut rng, &parent, true);
        let victim_is_dir = rng.below(2) == 0;
        let victim = parent.join("victim");
        random_inode(&mut rng, &victim, victim_is_dir);
        let (dir_target, dir_acl) = (target_of(&parent), stored_acl(&parent));
        let victim_target = target_of(&victim);
        let who = random_who(&mut rng, all_caps);
        let c_victim = CString::new(victim.as_os_str().as_bytes()).unwrap();
        let flags = if victim_is_dir { libc::AT_REMOVEDIR } else { 0 };
        // SAFETY: a valid C string.
        let kernel = as_who(&who, || unsafe {
            libc::syscall(libc::SYS_unlinkat, libc::AT_FDCWD, c_victim.as_ptr(), flags)
        });
        let ours = may_delete(&who, dir_target, || Ok(dir_acl.clone()), victim_target).unwrap();
        assert_eq!(
            errno_of(ours),
            kernel,
            "case {case} (seed {seed:#x}): {who:?} removing {victim_target:?} from \
             {dir_target:?} (perm {:#o}) with ACL {dir_acl:?}",
            dir_target.perm
        );
        outcomes[match kernel {
            0 => 0,
            libc::EACCES => 1,
            _ => 2,
        }] += 1;
        let c_new = CString::new(parent.join("new").as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid C string.
        let kernel = as_who(&who, || unsafe {
            libc::syscall(
                libc::SYS_openat,
                libc::AT_FDCWD,
                c_new.as_ptr(),
                libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
                0o600,
            )
        });
        let ours = may_create(&who, dir_target, || Ok(dir_acl.clone())).unwrap();
        assert_eq!(
            errno_of(ours),
            kernel,
            "case {case} (seed {seed:#x}): {who:?} creating in {dir_target:?} (perm {:#o}) \
             with ACL {dir_acl:?}",
            dir_target.perm
        );
    }
    // Each answer must come up often enough for the comparison to show something.
    assert!(
        outcomes.iter().all(|&n| n > CASES / 40),
        "removals allowed, refused for access, refused for ownership: {outcomes:?}"
    );
}

/// errno of a rule's refusal, 0 if it allows.
fn errno_of<T>(r: Result<T, Refusal>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(Refusal::Access) => libc::EACCES,
        Err(Refusal::NotOwner) => libc::EPERM,
    }
}

#[test]
fn setattr_rules_answer_as_the_kernel_does() {
    let all_caps = root_caps();
    let seed = seed();
    let mut rng = Rng(seed.rotate_left(31) | 1);
    let dir = test_dir();
    let mut outcomes = [0usize; 3]; // allowed, EACCES, EPERM
    let mut setgid_dropped = 0;
    for case in 0..CASES {
        let path = dir.path().join(format!("s{case}"));
        let directory = rng.below(2) == 0;
        random_inode(&mut rng, &path, directory);
        let (target, acl) = (target_of(&path), stored_acl(&path));
        let who = random_who(&mut rng, all_caps);
        let c = CString::new(path.as_os_str().as_bytes()).unwrap();
        let mut change = AttrChange::default();
        let times = [
            libc::timespec {
                tv_sec: 1_000_000,
                tv_nsec: 0,
            },
            libc::timespec {
                tv_sec: 2_000_000,
                tv_nsec: 0,
            },
        ];
        let op = rng.below(5);
        let kernel = match op {
            0 | 1 => {
                // chown, chgrp, or both; -1 leaves one as it is.
                let uid = (op == 0).then(|| rng.pick(&[0, 1000, 1001, 1002]));
                let gid =
                    (op == 1 || rng.below(2) == 0).then(|| rng.pick(&[0, 100, 101, 102, 1000]));
                change.uid = uid;
                change.gid = gid;
                let (u, g) = (uid.unwrap_or(u32::MAX), gid.unwrap_or(u32::MAX));
                // SAFETY: a valid C string.
                as_who(&who, || unsafe {
                    libc::syscall(libc::SYS_fchownat, libc::AT_FDCWD, c.as_ptr(), u, g, 0)
                })
            }
            2 => {
                let perm = rng.below(0o10000) as u16;
                change.perm = Some(perm);
                // SAFETY: a valid C string.
                as_who(&who, || unsafe {
                    libc::syscall(
                        libc::SYS_fchmodat,
                        libc::AT_FDCWD,
                        c.as_ptr(),
                        u32::from(perm),
                    )
                })
            }
            3 => {
                change.times_given = true;
                // SAFETY: a valid C string and two timespecs.
                as_who(&who, || unsafe {
                    libc::syscall(
                        libc::SYS_utimensat,
                        libc::AT_FDCWD,
                        c.as_ptr(),
                        times.as_ptr(),
                        0,
                    )
                })
            }
            _ => {
                change.times_now = true;
                // SAFETY: a valid C string; no times means now.
                as_who(&who, || unsafe {
                    libc::syscall(
                        libc::SYS_utimensat,
                        libc::AT_FDCWD,
                        c.as_ptr(),
                        std::ptr::null::<libc::timespec>(),
                        0,
                    )
                })
            }
        };
        let ours = may_setattr(&who, target, || Ok(acl.clone()), change).unwrap();
        let context = format!(
            "case {case} (seed {seed:#x}): {who:?} making {change:?} of {target:?} (perm {:#o}) \
             with ACL {acl:?}",
            target.perm
        );
        assert_eq!(errno_of(ours), kernel, "{context}");
        if let (Ok(Some(perm)), 0) = (ours, kernel) {
            let stored = target_of(&path).perm;
            assert_eq!(stored, perm, "{context}: the kernel stored {stored:#o}");
            setgid_dropped += usize::from(change.perm.unwrap() != perm);
        }
        outcomes[match kernel {
            0 => 0,
            libc::EACCES => 1,
            _ => 2,
        }] += 1;
    }
    assert!(
        outcomes.iter().all(|&n| n > CASES / 50),
        "changes allowed, refused for access, refused for ownership: {outcomes:?}"
    );
    assert!(
        setgid_dropped > 10,
        "the set-group-ID bit went {setgid_dropped} times"
    );
}

#[test]
fn rename_and_open_rules_answer_as_the_kernel_does() {
    let all_caps = root_caps();
    let seed = seed();
    let mut rng = Rng(seed.rotate_left(47) | 1);
    let dir = test_dir();
    let mut renames = [0usize; 3]; // allowed, EACCES, EPERM
    let mut opens = [0usize; 3];
    let count = |tally: &mut [usize; 3], errno| {
        tally[match errno {
            0 => 0,
            libc::EACCES => 1,
            _ => 2,
        }] += 1
    };
    for case in 0..CASES {
        // A rename from old/source to new/dest (new is old half the time), dest there or not.
        let old = dir.path().join(format!("o{case}"));
        random_inode(&mut rng, &old, true);
        let same_dir = rng.below(2) == 0;
        let new = if same_dir {
            old.clone()
        } else {
            let new = dir.path().join(format!("n{case}"));
            random_inode(&mut rng, &new, true);
            new
        };
        let directory = rng.below(2) == 0;
        let (source, dest) = (old.join("source"), new.join("dest"));
        random_inode(&mut rng, &source, directory);
        if rng.below(2) == 0 {
            random_inode(&mut rng, &dest, directory);
        }
        let (old_t, old_acl) = (target_of(&old), stored_acl(&old));
        let (new_t, new_acl) = (target_of(&new), stored_acl(&new));
        let (source_t, source_acl) = (target_of(&source), stored_acl(&source));
        let replaced = dest.exists().then(|| target_of(&dest));
        let who = random_who(&mut rng, all_caps);
        let (c_source, c_dest) = (
            CString::new(source.as_os_str().as_bytes()).unwrap(),
            CString::new(dest.as_os_str().as_bytes()).unwrap(),
        );
        // SAFETY: valid C strings.
        let kernel = as_who(&who, || unsafe {
            libc::syscall(
                libc::SYS_renameat,
                libc::AT_FDCWD,
                c_source.as_ptr(),
                libc::AT_FDCWD,
                c_dest.as_ptr(),
            )
        });
        // The kernel looks both names up first: search on both directories.
        let looked_up = may_lookup(&who, old_t, || Ok(old_acl.clone()))
            .unwrap()
            .and_then(|()| may_lookup(&who, new_t, || Ok(new_acl.clone())).unwrap());
        let ours = looked_up.and_then(|()| {
            may_rename(
                &who,
                old_t,
                || Ok(old_acl.clone()),
                source_t,
                || Ok(source_acl.clone()),
                new_t,
                || Ok(new_acl.clone()),
                replaced,
                same_dir,
            )
            .unwrap()
        });
        assert_eq!(
            errno_of(ours),
            kernel,
            "case {case} (seed {seed:#x}): {who:?} renaming {source_t:?} from {old_t:?} (perm \
             {:#o}, ACL {old_acl:?}) to {new_t:?} (perm {:#o}, ACL {new_acl:?}) over \
             {replaced:?}",
            old_t.perm,
            new_t.perm
        );
        count(&mut renames, kernel);

        // An open of a fresh inode: a directory for reading, anything else as it comes.
        let path = dir.path().join(format!("f{case}"));
        let directory = rng.below(4) == 0;
        random_inode(&mut rng, &path, directory);
        let (target, acl) = (target_of(&path), stored_acl(&path));
        let accmode = if directory {
            libc::O_RDONLY
        } else {
            rng.pick(&[libc::O_RDONLY, libc::O_WRONLY, libc::O_RDWR])
        };
        let truncate = !directory && rng.below(4) == 0;
        let noatime = rng.below(4) == 0;
        let flags = accmode
            | if truncate { libc::O_TRUNC } else { 0 }
            | if noatime { libc::O_NOATIME } else { 0 };
        let c = CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid C string.
        let kernel = as_who(&who, || unsafe {
            libc::syscall(libc::SYS_openat, libc::AT_FDCWD, c.as_ptr(), flags, 0)
        });
        let ours = may_open(
            &who,
            target,
            || Ok(acl.clone()),
            accmode != libc::O_WRONLY,
            accmode != libc::O_RDONLY || truncate,
            noatime,
        )
        .unwrap();
        assert_eq!(
            errno_of(ours),
            kernel,
            "case {case} (seed {seed:#x}): {who:?} opening {target:?} (perm {:#o}) with ACL \
             {acl:?}, flags {flags:#o}",
            target.perm
        );
        count(&mut opens, kernel);
    }
    assert!(
        renames.iter().chain(&opens).all(|&n| n > CASES / 100),
        "renames and opens allowed, refused for access, refused for ownership: {renames:?} \
         {opens:?}"
    );
}

#[test]
fn permission_rule_answers_as_the_kernel_does() {
    let all_caps = root_caps();
    let seed = seed();
    let mut rng = Rng(seed | 1);
    let dir = test_dir();
    let mut granted = 0;
    let mut by_acl = 0;
    for case in 0..CASES {
        let path = dir.path().join(format!("t{case}"));
        let directory = rng.below(2) == 0;
        random_inode(&mut rng, &path, directory);
        let target = target_of(&path);
        let acl = stored_acl(&path);
        let who = random_who(&mut rng, all_caps);
        let want = 1 + rng.below(7) as u16;
        let c = CString::new(path.as_os_str().as_bytes()).unwrap();
        let kernel = kernel_answer(&c, &who, want);
        let ours =
            logstorfs::fs::permission::permitted(&who, target, want, || Ok(acl.clone())).unwrap();
        assert_eq!(
            ours, kernel,
            "case {case} (seed {seed:#x}): {who:?} asking {want:#o} of {target:?} (perm {:#o}) \
             with ACL {acl:?}: the kernel says {kernel}, the rule {ours}",
            target.perm
        );
        granted += usize::from(kernel);
        by_acl += usize::from(acl.is_some() && target.perm & 0o070 != 0);
    }
    // The cases must cover both answers and the ACL path, or the comparison shows little.
    assert!(
        granted > CASES / 10 && granted < CASES * 9 / 10,
        "granted {granted} of {CASES}"
    );
    assert!(by_acl > CASES / 5, "{by_acl} cases went through an ACL");
}
