//! POSIX ACLs and access times through `Fs`, as ext4 keeps them:
//! - a directory's default ACL is inherited on create (a new directory takes it as its default
//!   and access ACL, other inodes as their access ACL, symlinks nothing), the create's mode cut
//!   to its entries and the umask NOT applied; without one the umask is;
//! - set-group-ID directories give new inodes their group, and new directories the bit;
//! - chmod rewrites the access ACL's owner, mask and other entries;
//! - a named entry grants access that the mode bits alone deny (`Fs::access`; on a mount the
//!   kernel enforces it, `scripts/acl_vs_ext4.sh`);
//! - atime under `relatime` changes on a read only if it is not after the mtime or ctime or is
//!   a day old, and then only is a record written; `strictatime` and `noatime`.

mod fs_common;

use std::time::{Duration, SystemTime};

use fs_common::*;
use logstorfs::engine::Engine;
use logstorfs::fs::atime::AtimeMode;
use logstorfs::fs::{Caller, Fs, FsError, FsOptions, ROOT_INO, SetAttr, TimeSet};

const ACCESS: &[u8] = b"system.posix_acl_access";
const DEFAULT: &[u8] = b"system.posix_acl_default";

const USER_OBJ: u16 = 0x01;
const USER: u16 = 0x02;
const GROUP_OBJ: u16 = 0x04;
const GROUP: u16 = 0x08;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;
const UNDEFINED: u32 = u32::MAX;

/// The test user of the real-mount script, named in ACL entries.
const OTHER_USER: Caller = Caller {
    uid: 1001,
    gid: 1001,
};

/// The xattr form of an ACL: version 2, then (tag, perm, id) entries, little-endian.
fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for &(tag, perm, id) in entries {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

/// u::rwx, u:1001:rwx, g::r-x, m::rwx, o::--- (what `setfacl -d -m u:logstorfs-test:rwx,o::-`
/// leaves on a 0755 directory).
fn extended_default() -> Vec<u8> {
    acl(&[
        (USER_OBJ, 7, UNDEFINED),
        (USER, 7, OTHER_USER.uid),
        (GROUP_OBJ, 5, UNDEFINED),
        (MASK, 7, UNDEFINED),
        (OTHER, 0, UNDEFINED),
    ])
}

fn dir_with_default(fs: &Fs, name: &str, default: &[u8]) -> u64 {
    let d = fs
        .mkdir(ROOT_INO, name.as_bytes(), 0o755, 0o022, CALLER)
        .expect("mkdir")
        .ino;
    fs.setxattr(d, DEFAULT, default, 0)
        .expect("set default ACL");
    d
}

fn xattr(fs: &Fs, ino: u64, name: &[u8]) -> Option<Vec<u8>> {
    match fs.getxattr(ino, name) {
        Ok(v) => Some(v),
        Err(FsError::NoXattr) => None,
        Err(e) => panic!("getxattr: {e}"),
    }
}

#[test]
fn a_default_acl_is_inherited_on_create_and_replaces_the_umask() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    let d = dir_with_default(&fs, "d", &extended_default());
    // umask 077 would leave 0600 and 0700: the default ACL replaces it.
    let (file, fh) = fs.create(d, b"f", 0o666, 0o077, CALLER).unwrap();
    fs.release(file.ino, fh).unwrap();
    assert_eq!(
        file.perm, 0o660,
        "file mode: the mode cut to the ACL, no umask"
    );
    assert_eq!(
        xattr(&fs, file.ino, ACCESS),
        Some(acl(&[
            (USER_OBJ, 6, UNDEFINED),
            (USER, 7, OTHER_USER.uid),
            (GROUP_OBJ, 5, UNDEFINED),
            (MASK, 6, UNDEFINED),
            (OTHER, 0, UNDEFINED),
        ])),
        "a file's access ACL is the default ACL with the mask cut to the create's group bits"
    );
    assert_eq!(
        xattr(&fs, file.ino, DEFAULT),
        None,
        "files get no default ACL"
    );

    let sub = fs.mkdir(d, b"sub", 0o777, 0o077, CALLER).unwrap();
    assert_eq!(sub.perm, 0o770);
    assert_eq!(
        xattr(&fs, sub.ino, DEFAULT),
        Some(extended_default()),
        "a directory inherits the default ACL as its own default"
    );
    assert_eq!(
        xattr(&fs, sub.ino, ACCESS),
        Some(extended_default()),
        "and as its access ACL"
    );
    // Inherited again one level down.
    let (deeper, fh) = fs.create(sub.ino, b"g", 0o640, 0o077, CALLER).unwrap();
    fs.release(deeper.ino, fh).unwrap();
    assert_eq!(deeper.perm, 0o640);

    let fifo = fs
        .mknod(d, b"p", libc::S_IFIFO | 0o644, 0o077, 0, CALLER)
        .unwrap();
    assert_eq!(fifo.perm, 0o640);
    assert!(xattr(&fs, fifo.ino, ACCESS).is_some(), "mknod inherits too");

    let link = fs.symlink(d, b"l", b"f", CALLER).unwrap();
    assert_eq!(link.perm, 0o777);
    assert_eq!(
        xattr(&fs, link.ino, ACCESS),
        None,
        "symlinks inherit nothing"
    );
    assert_eq!(xattr(&fs, link.ino, DEFAULT), None);
}

#[test]
fn a_minimal_default_acl_sets_the_mode_and_stores_no_access_acl() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    let d = dir_with_default(
        &fs,
        "d",
        &acl(&[
            (USER_OBJ, 7, UNDEFINED),
            (GROUP_OBJ, 5, UNDEFINED),
            (OTHER, 1, UNDEFINED),
        ]),
    );
    let (f, fh) = fs.create(d, b"f", 0o666, 0o077, CALLER).unwrap();
    fs.release(f.ino, fh).unwrap();
    assert_eq!(
        f.perm, 0o640,
        "0666 cut to rwx/r-x/--x; umask 077 not applied"
    );
    assert_eq!(xattr(&fs, f.ino, ACCESS), None);
    let sub = fs.mkdir(d, b"s", 0o777, 0o077, CALLER).unwrap();
    assert_eq!(sub.perm, 0o751);
    assert_eq!(xattr(&fs, sub.ino, ACCESS), None);
    assert!(xattr(&fs, sub.ino, DEFAULT).is_some());
}

#[test]
fn without_a_default_acl_the_umask_applies() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    let (f, fh) = fs.create(ROOT_INO, b"f", 0o666, 0o027, CALLER).unwrap();
    fs.release(f.ino, fh).unwrap();
    assert_eq!(f.perm, 0o640);
    assert_eq!(
        fs.mkdir(ROOT_INO, b"d", 0o777, 0o027, CALLER).unwrap().perm,
        0o750
    );
    // A default ACL removed (an ACL without entries, as Linux reads it) stops inheritance.
    let d = dir_with_default(&fs, "e", &extended_default());
    fs.setxattr(d, DEFAULT, &acl(&[]), 0).unwrap();
    assert_eq!(xattr(&fs, d, DEFAULT), None);
    let (g, fh) = fs.create(d, b"g", 0o666, 0o077, CALLER).unwrap();
    fs.release(g.ino, fh).unwrap();
    assert_eq!(g.perm, 0o600);
    assert_eq!(xattr(&fs, g.ino, ACCESS), None);
}

#[test]
fn a_setgid_directory_with_a_default_acl_gives_its_group_and_the_bit_to_new_directories() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    let d = dir_with_default(&fs, "d", &extended_default());
    let set = SetAttr {
        mode: Some(0o2775),
        gid: Some(500),
        ..Default::default()
    };
    fs.setattr(d, &set).unwrap();
    let (f, fh) = fs.create(d, b"f", 0o666, 0o022, CALLER).unwrap();
    fs.release(f.ino, fh).unwrap();
    assert_eq!((f.gid, f.perm), (500, 0o660), "file: the directory's group");
    let sub = fs.mkdir(d, b"sub", 0o755, 0o022, CALLER).unwrap();
    assert_eq!(
        (sub.gid, sub.perm),
        (500, 0o2750),
        "directory: the group and the set-group-ID bit, mode cut by the ACL, no umask"
    );
    assert_eq!(xattr(&fs, sub.ino, DEFAULT), Some(extended_default()));
}

#[test]
fn chmod_rewrites_the_access_acl_owner_mask_and_other_entries() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    let f = make_file(&fs, ROOT_INO, "f", b"x");
    fs.setxattr(
        f,
        ACCESS,
        &acl(&[
            (USER_OBJ, 6, UNDEFINED),
            (USER, 4, OTHER_USER.uid),
            (GROUP_OBJ, 4, UNDEFINED),
            (GROUP, 2, 77),
            (MASK, 6, UNDEFINED),
            (OTHER, 4, UNDEFINED),
        ]),
        0,
    )
    .unwrap();
    assert_eq!(fs.getattr(f).unwrap().perm, 0o664, "the ACL sets the mode");
    let set = SetAttr {
        mode: Some(0o751),
        ..Default::default()
    };
    assert_eq!(fs.setattr(f, &set).unwrap().perm, 0o751);
    assert_eq!(
        xattr(&fs, f, ACCESS),
        Some(acl(&[
            (USER_OBJ, 7, UNDEFINED),
            (USER, 4, OTHER_USER.uid),
            (GROUP_OBJ, 4, UNDEFINED),
            (GROUP, 2, 77),
            (MASK, 5, UNDEFINED),
            (OTHER, 1, UNDEFINED),
        ]))
    );
}

#[test]
fn a_named_acl_entry_grants_what_the_mode_bits_deny() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    let f = make_file(&fs, ROOT_INO, "secret", b"s");
    fs.setattr(
        f,
        &SetAttr {
            mode: Some(0o600),
            ..Default::default()
        },
    )
    .unwrap();
    let read = libc::R_OK;
    assert!(matches!(
        fs.access(f, read, &OTHER_USER),
        Err(FsError::Access)
    ));
    // setfacl -m u:logstorfs-test:r
    fs.setxattr(
        f,
        ACCESS,
        &acl(&[
            (USER_OBJ, 6, UNDEFINED),
            (USER, 4, OTHER_USER.uid),
            (GROUP_OBJ, 0, UNDEFINED),
            (MASK, 4, UNDEFINED),
            (OTHER, 0, UNDEFINED),
        ]),
        0,
    )
    .unwrap();
    assert_eq!(fs.getattr(f).unwrap().perm, 0o640);
    fs.access(f, read, &OTHER_USER)
        .expect("the named entry grants read");
    assert!(matches!(
        fs.access(f, libc::W_OK, &OTHER_USER),
        Err(FsError::Access)
    ));
    let stranger = Caller {
        uid: 1002,
        gid: 1002,
    };
    assert!(
        matches!(fs.access(f, read, &stranger), Err(FsError::Access)),
        "the group class bits are the mask, which others do not get"
    );
    // The mask limits the named entry: rw- under a mask of r-- grants read only.
    fs.setxattr(
        f,
        ACCESS,
        &acl(&[
            (USER_OBJ, 6, UNDEFINED),
            (USER, 6, OTHER_USER.uid),
            (GROUP_OBJ, 0, UNDEFINED),
            (MASK, 4, UNDEFINED),
            (OTHER, 0, UNDEFINED),
        ]),
        0,
    )
    .unwrap();
    fs.access(f, read, &OTHER_USER)
        .expect("read within the mask");
    assert!(
        matches!(fs.access(f, libc::W_OK, &OTHER_USER), Err(FsError::Access)),
        "write is outside the mask"
    );
    // chmod 600 cuts the mask to nothing: the entry stays but grants nothing.
    fs.setattr(
        f,
        &SetAttr {
            mode: Some(0o600),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(matches!(
        fs.access(f, read, &OTHER_USER),
        Err(FsError::Access)
    ));
    fs.access(f, read | libc::W_OK, &CALLER)
        .expect("the owner keeps rw");
}

#[test]
fn acls_are_checked_as_linux_checks_them() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    let f = make_file(&fs, ROOT_INO, "f", b"");
    assert!(
        matches!(
            fs.setxattr(f, DEFAULT, &extended_default(), 0),
            Err(FsError::Access)
        ),
        "a default ACL on a file is EACCES"
    );
    let no_mask = acl(&[
        (USER_OBJ, 6, UNDEFINED),
        (USER, 4, 5),
        (GROUP_OBJ, 4, UNDEFINED),
        (OTHER, 4, UNDEFINED),
    ]);
    let out_of_order = acl(&[
        (GROUP_OBJ, 4, UNDEFINED),
        (USER_OBJ, 6, UNDEFINED),
        (OTHER, 4, UNDEFINED),
    ]);
    let bad_perm = acl(&[
        (USER_OBJ, 8, UNDEFINED),
        (GROUP_OBJ, 4, UNDEFINED),
        (OTHER, 4, UNDEFINED),
    ]);
    for (what, bad) in [
        ("named entry without a mask", no_mask),
        ("entries out of order", out_of_order),
        ("a permission bit beyond rwx", bad_perm),
    ] {
        assert!(
            matches!(fs.setxattr(f, ACCESS, &bad, 0), Err(FsError::Invalid)),
            "{what}: EINVAL"
        );
    }
}

// ----- access times -----

fn open_atime(dir: &std::path::Path, atime: AtimeMode) -> Fs {
    let engine = Engine::open(dir, &options(128 << 20)).expect("open engine");
    Fs::with_options(
        engine,
        FsOptions {
            atime,
            ..Default::default()
        },
    )
    .expect("mount fs")
}

fn ago(secs: u64) -> SystemTime {
    SystemTime::now() - Duration::from_secs(secs)
}

/// Sets atime, mtime and ctime (ctime can only be set by the daemon itself).
fn set_times(fs: &Fs, ino: u64, atime: SystemTime, mtime: SystemTime, ctime: SystemTime) {
    let set = SetAttr {
        atime: Some(TimeSet::At(atime)),
        mtime: Some(TimeSet::At(mtime)),
        ctime: Some(ctime),
        ..Default::default()
    };
    fs.setattr(ino, &set).expect("setattr times");
}

fn atime(fs: &Fs, ino: u64) -> SystemTime {
    fs.getattr(ino).unwrap().atime
}

fn batches(fs: &Fs) -> u64 {
    fs.engine().stats().last_lsn
}

#[test]
fn relatime_sets_atime_only_when_it_is_not_after_mtime_or_ctime_or_a_day_old() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    let f = make_file(&fs, ROOT_INO, "f", &[7u8; 10000]);
    // Written after its creation: atime <= mtime, so a read sets it.
    assert!(fs.read_would_touch_atime(f));
    let before = atime(&fs, f);
    fs.read(f, 0, 4096).unwrap();
    let after = atime(&fs, f);
    assert!(after > before, "first read after a write sets atime");
    assert!(!fs.read_would_touch_atime(f));
    // Further reads write nothing at all.
    let lsn = batches(&fs);
    for _ in 0..50 {
        fs.read(f, 0, 4096).unwrap();
    }
    assert_eq!(atime(&fs, f), after, "atime after mtime and ctime: kept");
    assert_eq!(batches(&fs), lsn, "reads that keep atime write no record");

    // Atime newer than mtime and ctime, 23 hours old: kept.
    set_times(&fs, f, ago(23 * 3600), ago(30 * 3600), ago(30 * 3600));
    let kept = atime(&fs, f);
    fs.read(f, 0, 1).unwrap();
    assert_eq!(atime(&fs, f), kept, "a day has not passed");
    // 25 hours old: refreshed.
    set_times(&fs, f, ago(25 * 3600), ago(30 * 3600), ago(30 * 3600));
    fs.read(f, 0, 1).unwrap();
    assert!(atime(&fs, f) > ago(60), "a day-old atime is refreshed");
    // ctime after atime (a chmod, say): refreshed.
    set_times(&fs, f, ago(3600), ago(7200), ago(60));
    fs.read(f, 0, 1).unwrap();
    assert!(atime(&fs, f) > ago(30), "atime before ctime is refreshed");
    // A read of nothing is no access.
    set_times(&fs, f, ago(3600), ago(60), ago(60));
    let kept = atime(&fs, f);
    fs.read(f, 0, 0).unwrap();
    assert_eq!(atime(&fs, f), kept);
}

#[test]
fn relatime_covers_directory_listings_and_readlink() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    let d = fs.mkdir(ROOT_INO, b"d", 0o755, 0o022, CALLER).unwrap().ino;
    let l = fs.symlink(ROOT_INO, b"l", b"d", CALLER).unwrap().ino;
    set_times(&fs, d, ago(3600), ago(60), ago(60));
    set_times(&fs, l, ago(3600), ago(60), ago(60));
    fs.readdir(d, 0).unwrap();
    assert!(
        atime(&fs, d) > ago(30),
        "a listing sets a directory's atime"
    );
    fs.readlink(l).unwrap();
    assert!(atime(&fs, l) > ago(30), "readlink sets a symlink's atime");
}

#[test]
fn strictatime_sets_atime_on_every_read_and_noatime_never() {
    let dir = tempfile::tempdir().unwrap();
    let f = {
        let fs = open_atime(dir.path(), AtimeMode::StrictAtime);
        let f = make_file(&fs, ROOT_INO, "f", b"data");
        fs.read(f, 0, 4).unwrap();
        // Atime now after mtime and ctime: relatime would keep it, strictatime does not.
        set_times(&fs, f, ago(60), ago(3600), ago(3600));
        fs.read(f, 0, 4).unwrap();
        assert!(atime(&fs, f) > ago(30), "strictatime: every read");
        fs.close().unwrap();
        f
    };
    let fs = open_atime(dir.path(), AtimeMode::NoAtime);
    set_times(&fs, f, ago(25 * 3600), ago(60), ago(60));
    let kept = atime(&fs, f);
    let lsn = batches(&fs);
    fs.read(f, 0, 4).unwrap();
    assert!(!fs.read_would_touch_atime(f));
    assert_eq!(atime(&fs, f), kept, "noatime: never");
    assert_eq!(batches(&fs), lsn);
}

#[test]
fn atime_options_are_read_from_the_mount_options() {
    let mode = |o: &str| logstorfs::cli::atime_mode(&[o.to_string()]);
    assert_eq!(mode("allow_other"), AtimeMode::Relatime);
    assert_eq!(mode("noatime"), AtimeMode::NoAtime);
    assert_eq!(mode("strictatime,allow_other"), AtimeMode::StrictAtime);
    assert_eq!(mode("noatime,relatime"), AtimeMode::Relatime);
    assert_eq!(mode("ro,strictatime"), AtimeMode::NoAtime);
}
