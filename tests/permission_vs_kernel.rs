//! The permission rule of `src/fs/permission.rs` against the kernel's own answers. Files and
//! directories on the test's own disk (a kernel filesystem with POSIX ACLs) get random owners,
//! modes and access ACLs; a child process takes random credentials (user, group, supplementary
//! groups, and for root all, some or no capabilities) and asks access(2); the rule, given what
//! `stat` and the ACL xattr then say, must answer the same in every case.
//!
//! Runs as root, as the rest of the suite does: it changes owners and credentials.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use logstorfs::fs::acl::{Acl, AclEntry};
use logstorfs::fs::permission::{CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, Credentials, Target};

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

/// access(2) of `path` for `want` in a child with `who`'s credentials: true if granted.
fn kernel_answer(path: &CString, who: &Who, want: u16) -> bool {
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
                libc::_exit(3);
            }
            let r = libc::syscall(
                libc::SYS_faccessat,
                libc::AT_FDCWD,
                path.as_ptr(),
                i32::from(want),
            );
            let code = if r == 0 {
                0
            } else if *libc::__errno_location() == libc::EACCES {
                1
            } else {
                2
            };
            libc::_exit(code);
        }
        let mut status = 0;
        assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
        match libc::WEXITSTATUS(status) {
            0 => true,
            1 => false,
            n => panic!("the child could not take {who:?} or ask access(2) (exit {n})"),
        }
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

#[test]
fn permission_rule_answers_as_the_kernel_does() {
    // SAFETY: no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "run as root: this test changes owners and credentials"
    );
    let seed = std::env::var("PERMISSION_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_1e55_u64);
    let mut rng = Rng(seed | 1);
    let all_caps = own_caps();
    assert!(
        all_caps & (1 << CAP_DAC_OVERRIDE | 1 << CAP_DAC_READ_SEARCH)
            == (1 << CAP_DAC_OVERRIDE | 1 << CAP_DAC_READ_SEARCH),
        "root without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH cannot show their overrides"
    );
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    // Every caller must reach the files: search on the test's directory for all.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mut granted = 0;
    let mut by_acl = 0;
    for case in 0..CASES {
        let directory = rng.below(2) == 0;
        let path = dir.path().join(format!("t{case}"));
        if directory {
            std::fs::create_dir(&path).unwrap();
        } else {
            std::fs::write(&path, b"").unwrap();
        }
        let owner = rng.pick(&[0, 1000, 1001]);
        let group = rng.pick(&[0, 100, 101, 1000]);
        std::os::unix::fs::chown(&path, Some(owner), Some(group)).unwrap();
        let mode = rng.below(0o1000) as u32;
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(mode))
            .unwrap();
        if let Some(acl) = random_acl(&mut rng) {
            set_acl(&path, &acl);
        }
        let meta = std::fs::metadata(&path).unwrap();
        let target = Target {
            uid: std::os::unix::fs::MetadataExt::uid(&meta),
            gid: std::os::unix::fs::MetadataExt::gid(&meta),
            perm: (std::os::unix::fs::MetadataExt::mode(&meta) & 0o7777) as u16,
            directory,
        };
        let acl = stored_acl(&path);
        let uid = rng.pick(&[0, 1000, 1001, 1002]);
        let who = Who {
            uid,
            gid: rng.pick(&[0, 100, 101, 1000, 1002]),
            groups: [100, 101, 102]
                .into_iter()
                .filter(|_| rng.below(2) == 0)
                .collect(),
            caps: if uid != 0 {
                0
            } else {
                rng.pick(&[all_caps, 0, 1 << CAP_DAC_READ_SEARCH, 1 << CAP_DAC_OVERRIDE])
            },
        };
        let want = 1 + rng.below(7) as u16;
        let c = CString::new(path.as_os_str().as_bytes()).unwrap();
        let kernel = kernel_answer(&c, &who, want);
        let ours =
            logstorfs::fs::permission::permitted(&who, target, want, || Ok(acl.clone())).unwrap();
        assert_eq!(
            ours, kernel,
            "case {case} (seed {seed:#x}): {who:?} asking {want:#o} of {target:?} with ACL \
             {acl:?}: the kernel says {kernel}, the rule {ours}"
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
