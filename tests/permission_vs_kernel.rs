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

#[derive(Clone, Debug)]
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

/// An inode's owner, group, mode (set-ID and sticky bits included) and, half the time, access
/// ACL, drawn at random.
#[derive(Debug)]
struct Look {
    owner: u32,
    group: u32,
    mode: u32,
    acl: Option<Acl>,
}

fn random_look(rng: &mut Rng) -> Look {
    Look {
        owner: rng.pick(&[0, 1000, 1001]),
        group: rng.pick(&[0, 100, 101, 1000]),
        mode: rng.below(0o10000) as u32,
        acl: random_acl(rng),
    }
}

/// Gives the inode at `path` its `look`, as root.
fn apply(path: &Path, look: &Look) {
    std::os::unix::fs::chown(path, Some(look.owner), Some(look.group)).unwrap();
    let mode = std::os::unix::fs::PermissionsExt::from_mode(look.mode);
    std::fs::set_permissions(path, mode).unwrap();
    if let Some(acl) = &look.acl {
        set_acl(path, acl);
    }
}

/// A new file or directory at `path` with a random [`Look`].
fn random_inode(rng: &mut Rng, path: &Path, directory: bool) {
    if directory {
        std::fs::create_dir(path).unwrap();
    } else {
        std::fs::write(path, b"").unwrap();
    }
    apply(path, &random_look(rng));
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

/// A store mounted for the test, unmounted when dropped.
struct TestMount {
    mnt: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl TestMount {
    /// With the daemon's own checks (`daemon_permissions`, and no `allow_other`), so no
    /// `default_permissions`.
    fn checking() -> TestMount {
        let mount = TestMount::with_options(&["-o", "daemon_permissions"]);
        assert!(
            !mount.kernel_options().contains("default_permissions"),
            "the mount leaves its checks to the kernel: {}",
            mount.kernel_options()
        );
        mount
    }

    fn with_options(options: &[&str]) -> TestMount {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let (store, mnt) = (dir.path().join("store"), dir.path().join("mnt"));
        std::fs::create_dir(&mnt).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_logstorfs"))
            .args(["mount", "--daemon", "--create", "--size", "64M"])
            .args(options)
            .args([&store, &mnt])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mount: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        TestMount { mnt, _dir: dir }
    }

    /// The options of the live mount in /proc/mounts.
    fn kernel_options(&self) -> String {
        std::fs::read_to_string("/proc/mounts")
            .unwrap()
            .lines()
            .find(|l| l.split(' ').nth(1) == Some(self.mnt.to_str().unwrap()))
            .map(str::to_string)
            .expect("the mount is live")
    }
}

impl Drop for TestMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new(env!("CARGO_BIN_EXE_logstorfs"))
            .arg("umount")
            .arg(&self.mnt)
            .status();
    }
}

/// One system call of a caller in a case's directory `d` (file `d/f`, directory `d/s`).
#[derive(Clone, Copy, Debug)]
enum Call {
    Stat,
    Open(i32),
    Unlink,
    Rmdir,
    Mkdir,
    Create,
    RenameInside,
    RenameDirOut,
    RenameIn,
    Chmod(u32),
    Chown(u32, u32),
    Utimens(Option<[i64; 2]>),
    Truncate,
    Access(i32),
    SetUserXattr,
    GetUserXattr,
    RemoveUserXattr,
    SetAcl,
    OpenDir,
    Chdir,
    Link,
    Symlink,
    Mkfifo,
}

const UTIME_NOW: i64 = (1 << 30) - 1;
const UTIME_OMIT: i64 = (1 << 30) - 2;

fn random_call(rng: &mut Rng) -> Call {
    match rng.below(24) {
        0 => Call::Stat,
        1 => Call::Open(rng.pick(&[
            libc::O_RDONLY,
            libc::O_WRONLY,
            libc::O_RDWR,
            libc::O_WRONLY | libc::O_TRUNC,
            libc::O_RDONLY | libc::O_NOATIME,
        ])),
        2 => Call::Unlink,
        3 => Call::Rmdir,
        4 => Call::Mkdir,
        5 => Call::Create,
        6 => Call::RenameInside,
        7 => Call::RenameDirOut,
        8 => Call::RenameIn,
        9 => Call::Chmod(rng.below(0o10000) as u32),
        // Not chown(-1, -1), which the kernel sends on as a setattr of nothing, as it does
        // the set-ID bits a fallocate drops: the daemon cannot tell the two apart, and takes
        // it as the second (allowed), where ext4 refuses a caller who may not chmod the file.
        10 => match rng.below(3) {
            0 => Call::Chown(rng.pick(&[0, 1000]), u32::MAX),
            1 => Call::Chown(u32::MAX, rng.pick(&[0, 100, 1000])),
            _ => Call::Chown(rng.pick(&[0, 1000]), rng.pick(&[0, 100, 1000])),
        },
        11 => Call::Utimens(rng.pick(&[
            None,
            Some([UTIME_NOW, UTIME_NOW]),
            Some([UTIME_NOW, UTIME_OMIT]),
            Some([1_000_000, 2_000_000]),
        ])),
        12 => Call::Truncate,
        13 => Call::Access(rng.pick(&[libc::R_OK, libc::W_OK, libc::X_OK, libc::F_OK])),
        14 => Call::SetUserXattr,
        15 => Call::GetUserXattr,
        16 => Call::RemoveUserXattr,
        17 => Call::SetAcl,
        18 => Call::OpenDir,
        19 => Call::Chdir,
        20 => Call::Link,
        21 => Call::Symlink,
        22 => Call::Mkfifo,
        // On its own: the kernel truncates through the new read-only handle.
        _ => Call::Open(libc::O_RDONLY | libc::O_TRUNC),
    }
}

/// Makes `call` in case directory `base` as `who` (with `acl` for [`Call::SetAcl`]) and
/// returns its errno, 0 if it succeeded.
fn make_call(base: &Path, call: Call, who: &Who, acl: &Acl) -> i32 {
    let c = |rel: &str| CString::new(base.join(rel).as_os_str().as_bytes()).unwrap();
    let (f, d, s, g, new) = (c("d/f"), c("d"), c("d/s"), c("d/g"), c("d/new"));
    let (out, link, x, xin) = (c("s2"), c("d/s/l"), c("x"), c("d/x"));
    let (ux, uy) = (
        CString::new("user.x").unwrap(),
        CString::new(ACL_XATTR).unwrap(),
    );
    let uy_user = CString::new("user.y").unwrap();
    let acl_value = acl.encode();
    let target = CString::new("t").unwrap();
    let at = libc::AT_FDCWD;
    // SAFETY: each arm makes one system call with C strings and buffers made above.
    as_who(who, || unsafe {
        match call {
            Call::Stat => {
                let mut st: libc::stat = std::mem::zeroed();
                libc::fstatat(at, f.as_ptr(), &mut st, 0) as i64
            }
            Call::Open(flags) => libc::syscall(libc::SYS_openat, at, f.as_ptr(), flags, 0),
            Call::Unlink => libc::syscall(libc::SYS_unlinkat, at, f.as_ptr(), 0),
            Call::Rmdir => libc::syscall(libc::SYS_unlinkat, at, s.as_ptr(), libc::AT_REMOVEDIR),
            Call::Mkdir => libc::syscall(libc::SYS_mkdirat, at, new.as_ptr(), 0o755),
            Call::Create => libc::syscall(
                libc::SYS_openat,
                at,
                new.as_ptr(),
                libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
                0o640,
            ),
            Call::RenameInside => libc::syscall(libc::SYS_renameat, at, f.as_ptr(), at, g.as_ptr()),
            Call::RenameDirOut => {
                libc::syscall(libc::SYS_renameat, at, s.as_ptr(), at, out.as_ptr())
            }
            Call::RenameIn => libc::syscall(libc::SYS_renameat, at, x.as_ptr(), at, xin.as_ptr()),
            Call::Chmod(mode) => libc::syscall(libc::SYS_fchmodat, at, f.as_ptr(), mode),
            Call::Chown(u, g) => libc::syscall(libc::SYS_fchownat, at, f.as_ptr(), u, g, 0),
            Call::Utimens(times) => {
                let ts = times.map(|t| {
                    [0, 1].map(|i| libc::timespec {
                        tv_sec: if t[i] > UTIME_OMIT { 0 } else { t[i] },
                        tv_nsec: if t[i] >= UTIME_OMIT { t[i] } else { 0 },
                    })
                });
                let p = ts.as_ref().map_or(std::ptr::null(), |t| t.as_ptr());
                libc::syscall(libc::SYS_utimensat, at, f.as_ptr(), p, 0)
            }
            Call::Truncate => libc::syscall(libc::SYS_truncate, f.as_ptr(), 0),
            Call::Access(mask) => libc::syscall(libc::SYS_faccessat, at, f.as_ptr(), mask),
            Call::SetUserXattr => libc::syscall(
                libc::SYS_setxattr,
                f.as_ptr(),
                uy_user.as_ptr(),
                b"v".as_ptr(),
                1,
                0,
            ),
            Call::GetUserXattr => {
                let mut buf = [0u8; 16];
                libc::syscall(
                    libc::SYS_getxattr,
                    f.as_ptr(),
                    ux.as_ptr(),
                    buf.as_mut_ptr(),
                    buf.len(),
                )
            }
            Call::RemoveUserXattr => libc::syscall(libc::SYS_removexattr, f.as_ptr(), ux.as_ptr()),
            Call::SetAcl => libc::syscall(
                libc::SYS_setxattr,
                f.as_ptr(),
                uy.as_ptr(),
                acl_value.as_ptr(),
                acl_value.len(),
                0,
            ),
            Call::OpenDir => libc::syscall(
                libc::SYS_openat,
                at,
                d.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY,
                0,
            ),
            Call::Chdir => libc::syscall(libc::SYS_chdir, d.as_ptr()),
            Call::Link => libc::syscall(libc::SYS_linkat, at, f.as_ptr(), at, link.as_ptr(), 0),
            Call::Symlink => libc::syscall(libc::SYS_symlinkat, target.as_ptr(), at, g.as_ptr()),
            Call::Mkfifo => libc::syscall(
                libc::SYS_mknodat,
                at,
                new.as_ptr(),
                libc::S_IFIFO | 0o644,
                0,
            ),
        }
    })
}

/// What a case's directory holds after the call, as root sees it: each name's type, mode,
/// owner and group, the file's access ACL and user xattrs.
fn case_state(base: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let mut out = String::new();
    for rel in ["d", "d/f", "d/s", "d/g", "d/new", "s2", "x", "d/x", "d/s/l"] {
        match std::fs::symlink_metadata(base.join(rel)) {
            Ok(m) => out += &format!("{rel} {:o} {}:{}; ", m.mode(), m.uid(), m.gid()),
            Err(_) => out += &format!("{rel} -; "),
        }
    }
    for f in ["d/f", "d/g", "d/x"] {
        let path = base.join(f);
        if path.exists() {
            out += &format!("{f} acl {:?}; ", stored_acl(&path));
            for name in ["user.x", "user.y"] {
                out += &format!("{name} {:?}; ", xattr::get(&path, name).ok().flatten());
            }
        }
    }
    out
}

/// Sets up a case in `base`: `d` given its look, then holding file `f` (with `user.x`) and
/// directory `s` given theirs, all looked at by root (the kernel keeps what the daemon lets it
/// keep); `x` a file beside `d`. (A look that closes `d` after its names were cached takes
/// effect shortly after, not at once: the test of that is
/// `entries_the_kernel_holds_go_when_a_directory_is_closed_to_some`.)
fn set_up_case(base: &Path, looks: &[Look; 3]) {
    std::fs::create_dir(base).unwrap();
    let d = base.join("d");
    std::fs::create_dir(&d).unwrap();
    apply(&d, &looks[2]);
    std::fs::write(d.join("f"), b"data").unwrap();
    xattr::set(d.join("f"), "user.x", b"1").unwrap();
    std::fs::create_dir(d.join("s")).unwrap();
    std::fs::write(base.join("x"), b"x").unwrap();
    apply(&d.join("f"), &looks[0]);
    apply(&d.join("s"), &looks[1]);
    for rel in ["d/f", "d/s", "x"] {
        std::fs::symlink_metadata(base.join(rel)).unwrap();
    }
}

#[test]
fn a_mount_without_default_permissions_answers_as_ext4_does() {
    const MOUNT_CASES: usize = 1500;
    let all_caps = root_caps();
    let seed = seed();
    let mut rng = Rng(seed.rotate_left(5) | 1);
    let kernel_dir = test_dir();
    let mount = TestMount::checking();
    let mut outcomes = [0usize; 3]; // allowed, EACCES, EPERM
    let (mut noatime_refused_first, mut truncated_in_two_steps) = (0, 0);
    for case in 0..MOUNT_CASES {
        let looks = [
            random_look(&mut rng),
            random_look(&mut rng),
            random_look(&mut rng),
        ];
        let call = random_call(&mut rng);
        let acl = random_acl(&mut rng).unwrap_or_else(|| {
            random_acl(&mut rng).unwrap_or(Acl {
                entries: vec![
                    AclEntry {
                        tag: 0x01,
                        perm: 6,
                        id: u32::MAX,
                    },
                    AclEntry {
                        tag: 0x04,
                        perm: 4,
                        id: u32::MAX,
                    },
                    AclEntry {
                        tag: 0x20,
                        perm: 0,
                        id: u32::MAX,
                    },
                ],
            })
        });
        // The mount lets only its owner's user and group in (root's): callers differ in
        // supplementary groups and capabilities.
        let mut who = random_who(&mut rng, all_caps);
        who.uid = 0;
        who.gid = 0;
        if who.caps == 0 && rng.below(2) == 0 {
            who.caps = all_caps;
        }
        let answers: Vec<(i32, String)> = [kernel_dir.path(), mount.mnt.as_path()]
            .iter()
            .map(|root| {
                let base = root.join(format!("c{case}"));
                set_up_case(&base, &looks);
                let errno = make_call(&base, call, &who, &acl);
                (errno, case_state(&base))
            })
            .collect();
        let mut ours = answers[1].clone();
        // The answers that differ by design (`src/fs/permit.rs`): on FUSE the kernel refuses
        // O_NOATIME to a caller who does not own the file before the open reaches us, where
        // ext4 first refuses it for access: both refuse.
        if matches!(call, Call::Open(flags) if flags & libc::O_NOATIME != 0)
            && (answers[0].0, ours.0) == (libc::EACCES, libc::EPERM)
        {
            ours.0 = libc::EACCES;
            noatime_refused_first += 1;
        }
        // And O_RDONLY | O_TRUNC is checked as a read at the open and a write at the
        // truncation, where ext4 asks both at once: a caller who may read only by
        // CAP_DAC_READ_SEARCH and write only by the mode gets through.
        let read_search_only = who.capable(CAP_DAC_READ_SEARCH) && !who.capable(CAP_DAC_OVERRIDE);
        if matches!(call, Call::Open(flags) if flags == libc::O_RDONLY | libc::O_TRUNC)
            && read_search_only
            && (answers[0].0, ours.0) == (libc::EACCES, 0)
        {
            truncated_in_two_steps += 1;
            continue;
        }
        assert_eq!(
            answers[0], ours,
            "case {case} (seed {seed:#x}): {who:?} making {call:?} with d/f {:?}, d/s {:?}, \
             d {:?}: ext4 (left) and logstorfs (right) differ",
            looks[0], looks[1], looks[2]
        );
        outcomes[match answers[0].0 {
            0 => 0,
            libc::EACCES => 1,
            _ => 2,
        }] += 1;
    }
    assert!(
        outcomes.iter().all(|&n| n > MOUNT_CASES / 50),
        "calls allowed, refused for access, refused for ownership: {outcomes:?}"
    );
    eprintln!(
        "{noatime_refused_first} opens with O_NOATIME refused for ownership first, \
         {truncated_in_two_steps} with O_TRUNC checked in two steps"
    );
}

/// A change that closes a directory to some callers, and what it is.
type Closing = (&'static str, fn(&Path));

/// A directory that some callers may no longer search after a chmod, chown or access ACL:
/// the entries the kernel held of its names go (shortly after the change returns, from the
/// daemon's own thread), so that a walk through them asks the daemon again.
#[test]
fn entries_the_kernel_holds_go_when_a_directory_is_closed_to_some() {
    let all_caps = root_caps();
    let mount = TestMount::checking();
    let no_caps = Who {
        uid: 0,
        gid: 0,
        groups: vec![],
        caps: 0,
    };
    let closings: [Closing; 3] = [
        ("chmod 700 of a directory another user owns", |d| {
            std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o700))
                .unwrap()
        }),
        // Never cached (only two classes may search it), so checked at every walk.
        ("chown to another user of a directory of mode 750", |d| {
            std::os::unix::fs::chown(d, Some(1000), Some(1000)).unwrap()
        }),
        ("an access ACL refusing the owning group", |d| {
            set_acl(
                d,
                &Acl::parse(&acl_value(&[(0x01, 7), (0x04, 0), (0x10, 7), (0x20, 5)]))
                    .unwrap()
                    .unwrap(),
            )
        }),
    ];
    for (i, (what, close)) in closings.iter().enumerate() {
        let d = mount.mnt.join(format!("d{i}"));
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("f"), b"data").unwrap();
        std::os::unix::fs::chown(&d, Some(if i == 1 { 0 } else { 1000 }), Some(0)).unwrap();
        let mode = if i == 1 { 0o750 } else { 0o755 };
        std::fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
        let f = CString::new(d.join("f").as_os_str().as_bytes()).unwrap();
        let stat = || {
            // SAFETY: a valid C string and a stat buffer.
            as_who(&no_caps, || unsafe {
                let mut st: libc::stat = std::mem::zeroed();
                libc::fstatat(libc::AT_FDCWD, f.as_ptr(), &mut st, 0) as i64
            })
        };
        // Open to every caller: the kernel keeps the entry, and a caller without
        // capabilities walks through.
        assert_eq!(stat(), 0, "{what}: before");
        close(&d);
        let since = std::time::Instant::now();
        while stat() != libc::EACCES {
            assert!(
                since.elapsed() < std::time::Duration::from_secs(10),
                "{what}: a caller without capabilities still walks through after 10 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        // And root with its capabilities still does.
        let root = Who {
            caps: all_caps,
            ..no_caps.clone()
        };
        // SAFETY: a valid C string and a stat buffer.
        let with_caps = as_who(&root, || unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            libc::fstatat(libc::AT_FDCWD, f.as_ptr(), &mut st, 0) as i64
        });
        assert_eq!(with_caps, 0, "{what}: root with its capabilities");
    }
}

/// An ACL's xattr value from (tag, perm) entries without IDs.
fn acl_value(entries: &[(u16, u16)]) -> Vec<u8> {
    Acl {
        entries: entries
            .iter()
            .map(|&(tag, perm)| AclEntry {
                tag,
                perm,
                id: u32::MAX,
            })
            .collect(),
    }
    .encode()
}

/// A device node is opened by its driver, with no request to the daemon, so on a mount that
/// allows device nodes (`-o dev`) only the kernel can check that open: such a mount keeps
/// `default_permissions`, and a node its mode closes stays closed to a caller of the owner's uid
/// without CAP_DAC_OVERRIDE, as on ext4.
#[test]
fn device_nodes_are_opened_only_as_their_mode_allows() {
    let all_caps = root_caps();
    let mount = TestMount::with_options(&["-o", "daemon_permissions,dev"]);
    let node = mount.mnt.join("null");
    let c_node = CString::new(node.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid C string.
    let made = unsafe { libc::mknod(c_node.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, 3)) };
    assert_eq!(made, 0, "mknod: {}", std::io::Error::last_os_error());
    std::os::unix::fs::chown(&node, Some(65534), Some(65534)).unwrap();
    let open_as = |caps: u64| {
        let who = Who {
            uid: 0,
            gid: 0,
            groups: vec![],
            caps,
        };
        // SAFETY: a valid C string; the descriptor closes with the child.
        as_who(&who, || unsafe {
            libc::open(c_node.as_ptr(), libc::O_RDONLY) as i64
        })
    };
    assert_eq!(
        open_as(all_caps),
        0,
        "root opens another user's device node of mode 600"
    );
    let without_override = all_caps & !(1 << CAP_DAC_OVERRIDE) & !(1 << CAP_DAC_READ_SEARCH);
    assert_eq!(
        open_as(without_override),
        libc::EACCES,
        "a caller without CAP_DAC_OVERRIDE opened another user's device node of mode 600 (mount \
         options: {})",
        mount.kernel_options()
    );
}

/// A caller of a mount without `allow_other` must have the owner's real, effective and saved
/// user IDs, but one with CAP_SETUID (root) may set its filesystem user ID, the one its requests
/// carry, to any other, and the capabilities that bypass permissions go with the change. So a
/// directory only its owner may search is walked through by LOOKUPs the daemon checks, not by
/// entries the kernel keeps, or such a caller walks into it where ext4 refuses. (The LOOKUP
/// that then reaches the daemon is refused, by fuser's owner-only session or by the check.)
#[test]
fn a_caller_with_another_filesystem_uid_does_not_walk_through_kept_entries() {
    let mount = TestMount::checking();
    let d = mount.mnt.join("private");
    std::fs::create_dir(&d).unwrap();
    std::fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    std::fs::write(d.join("f"), b"data").unwrap();
    // The owner walks through: the kernel may now hold the entry of `f`.
    std::fs::metadata(d.join("f")).unwrap();
    let f = CString::new(d.join("f").as_os_str().as_bytes()).unwrap();
    let root = Who {
        uid: 0,
        gid: 0,
        groups: vec![],
        caps: root_caps(),
    };
    // SAFETY: raw system calls on a valid C string and a stat buffer.
    let errno = as_who(&root, || unsafe {
        libc::syscall(libc::SYS_setfsgid, 65534);
        libc::syscall(libc::SYS_setfsuid, 65534);
        let mut st: libc::stat = std::mem::zeroed();
        libc::fstatat(libc::AT_FDCWD, f.as_ptr(), &mut st, 0) as i64
    });
    assert_eq!(
        errno,
        libc::EACCES,
        "a caller with filesystem uid 65534 walked into a directory of mode 700 that root owns"
    );
}

/// The kernel's protection of sticky directories (`fs.protected_regular`): an `O_CREAT` open of
/// a file that neither the caller nor the directory's owner owns is refused, even to root. The
/// kernel skips it on a mount without `default_permissions`, and the daemon cannot make up for
/// it (the open reaches it without `O_CREAT`), so a mount keeps the kernel's checks unless
/// `daemon_permissions` asks otherwise.
#[test]
fn a_default_mount_keeps_the_protection_of_sticky_directories() {
    /// Puts the setting back however the test ends.
    struct Restore(String);
    impl Drop for Restore {
        fn drop(&mut self) {
            let _ = std::fs::write(SYSCTL, &self.0);
        }
    }
    const SYSCTL: &str = "/proc/sys/fs/protected_regular";
    let _restore = Restore(std::fs::read_to_string(SYSCTL).unwrap());
    std::fs::write(SYSCTL, "1").unwrap();
    let mount = TestMount::with_options(&[]);
    let tmp = mount.mnt.join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o1777)).unwrap();
    let theirs = tmp.join("theirs");
    std::fs::write(&theirs, b"").unwrap();
    std::os::unix::fs::chown(&theirs, Some(1000), Some(1000)).unwrap();
    std::fs::set_permissions(&theirs, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    let opened = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&theirs);
    assert_eq!(
        opened.map(|_| ()).map_err(|e| e.raw_os_error()),
        Err(Some(libc::EACCES)),
        "root's O_CREAT open of another user's file in a sticky directory (mount options: {})",
        mount.kernel_options()
    );
}
