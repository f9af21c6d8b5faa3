//! Inode flags through the `Fs` core, without FUSE: what chattr sets (immutable, append-only,
//! no-dump, no-atime), who may set it, and every refusal ext4 makes for an immutable or
//! append-only file or directory (EPERM), the flags refused as unsupported (EOPNOTSUPP); and
//! `RENAME_WHITEOUT`. The same calls against a kernel ext4 on a real mount:
//! `scripts/chattr_vs_ext4.sh`.

mod fs_common;

use fs_common::*;
use logstorfs::fs::inode_flags::{
    FS_APPEND_FL, FS_IMMUTABLE_FL, FS_NOATIME_FL, FS_NODUMP_FL, FS_SYNC_FL, FS_XFLAG_APPEND,
    FS_XFLAG_IMMUTABLE, FS_XFLAG_NODUMP, FlagsCaller,
};
use logstorfs::fs::{
    FileKind, Fs, FsError, RENAME_EXCHANGE, RENAME_NOREPLACE, RENAME_WHITEOUT, ROOT_INO, SetAttr,
    TimeSet,
};

/// The owner of the files `make_file` creates, with `CAP_LINUX_IMMUTABLE` (root in practice).
const ADMIN: FlagsCaller = FlagsCaller {
    uid: 1000,
    fowner: false,
    linux_immutable: true,
};
/// The same owner without the capability.
const OWNER: FlagsCaller = FlagsCaller {
    uid: 1000,
    fowner: false,
    linux_immutable: false,
};

fn errno<T: std::fmt::Debug>(r: Result<T, FsError>) -> i32 {
    r.expect_err("must be refused").errno()
}

fn eperm<T: std::fmt::Debug>(what: &str, r: Result<T, FsError>) {
    assert_eq!(errno(r), libc::EPERM, "{what}: want EPERM");
}

fn set_size(size: u64) -> SetAttr {
    SetAttr {
        size: Some(size),
        ..Default::default()
    }
}

#[test]
fn flags_round_trip_and_survive_a_remount() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    let f = make_file(&fs, ROOT_INO, "f", b"data");
    assert_eq!(fs.inode_flags(f).unwrap(), 0);
    let ctime = fs.getattr(f).unwrap().ctime;
    std::thread::sleep(std::time::Duration::from_millis(5));
    fs.set_inode_flags(f, FS_IMMUTABLE_FL | FS_NODUMP_FL, ADMIN)
        .unwrap();
    assert!(
        fs.getattr(f).unwrap().ctime > ctime,
        "a flag change is a change of the inode"
    );
    assert_eq!(
        fs.inode_xflags(f).unwrap(),
        FS_XFLAG_IMMUTABLE | FS_XFLAG_NODUMP
    );
    fs.close().unwrap();
    let fs = open(dir.path());
    assert_eq!(fs.inode_flags(f).unwrap(), FS_IMMUTABLE_FL | FS_NODUMP_FL);
    eperm("write after remount", fs.write(f, 0, b"x"));
    fs.set_inode_flags(f, 0, ADMIN).unwrap();
    fs.set_inode_xflags(f, FS_XFLAG_APPEND, 0, 0, ADMIN)
        .unwrap();
    assert_eq!(fs.inode_flags(f).unwrap(), FS_APPEND_FL);
}

/// ext4 ignores flags a user may not change (`EXT4_FL_USER_MODIFIABLE`), such as
/// `FS_INDEX_FL` (0x1000, set by ext4 itself on hashed directories), rather than refusing them:
/// `chattr` passes back what `lsattr` showed. Found by fsdiff: EOPNOTSUPP here, 0 on ext4.
#[test]
fn flags_a_user_may_not_change_are_ignored_as_ext4_does() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    let f = make_file(&fs, ROOT_INO, "f", b"data");
    const FS_INDEX_FL: u32 = 0x1000;
    fs.set_inode_flags(f, FS_INDEX_FL, ADMIN).unwrap();
    assert_eq!(fs.inode_flags(f).unwrap(), 0);
    fs.set_inode_flags(f, FS_INDEX_FL | FS_NODUMP_FL, ADMIN)
        .unwrap();
    assert_eq!(fs.inode_flags(f).unwrap(), FS_NODUMP_FL);
}

/// A malformed xattr name on an immutable file: EPERM, as the VFS refuses the change before it
/// looks for the name's handler (found by fsdiff: EINVAL here).
#[test]
fn an_immutable_file_refuses_xattr_changes_before_their_names_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    let f = make_file(&fs, ROOT_INO, "f", b"data");
    fs.set_inode_flags(f, FS_IMMUTABLE_FL, ADMIN).unwrap();
    eperm("removexattr user.", fs.removexattr(f, b"user."));
    eperm("setxattr user.", fs.setxattr(f, b"user.", b"v", 0));
}

/// A directory removed while a descriptor still holds it takes a flag change, as on ext4
/// (found by fsdiff: ENOENT here), and stays removed.
#[test]
fn a_removed_directory_still_open_takes_a_flag_change() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    let d = fs.mkdir(ROOT_INO, b"d", 0o755, 0, CALLER).unwrap().ino;
    fs.rmdir(ROOT_INO, b"d").unwrap();
    fs.set_inode_flags(d, FS_NODUMP_FL, ADMIN).unwrap();
    assert_eq!(
        fs.inode_flags(d).unwrap(),
        FS_NODUMP_FL,
        "as the descriptor sees it"
    );
    fs.close().unwrap();
    let fs = open(dir.path());
    assert!(
        fs.lookup(ROOT_INO, b"d").is_err(),
        "the directory came back"
    );
}

/// copy_file_range into an immutable file is refused, and into an append-only one below its
/// end (found by fsdiff: the daemon's copy wrote into an immutable file).
#[test]
fn copy_file_range_respects_immutable_and_append_only_destinations() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    let src = make_file(&fs, ROOT_INO, "src", &[7u8; 9000]);
    let dst = make_file(&fs, ROOT_INO, "dst", &[1u8; 100]);
    fs.set_inode_flags(dst, FS_IMMUTABLE_FL, ADMIN).unwrap();
    eperm(
        "copy into an immutable file",
        fs.copy_file_range(src, 0, dst, 4096, 8192),
    );
    eperm(
        "copy of nothing into an immutable file",
        fs.copy_file_range(src, 9000, dst, 0, 10),
    );
    fs.set_inode_flags(dst, FS_APPEND_FL, ADMIN).unwrap();
    eperm(
        "copy below the end of an append-only file",
        fs.copy_file_range(src, 0, dst, 0, 10),
    );
    assert_eq!(fs.copy_file_range(src, 0, dst, 100, 10).unwrap(), 10);
    assert_eq!(fs.getattr(dst).unwrap().size, 110);
}

#[test]
fn who_may_set_which_flag() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    let f = make_file(&fs, ROOT_INO, "f", b"data");
    // Immutable and append-only need CAP_LINUX_IMMUTABLE, to set and to clear.
    eperm(
        "+i without the capability",
        fs.set_inode_flags(f, FS_IMMUTABLE_FL, OWNER),
    );
    eperm(
        "+a without the capability",
        fs.set_inode_flags(f, FS_APPEND_FL, OWNER),
    );
    // The others only need ownership.
    fs.set_inode_flags(f, FS_NODUMP_FL | FS_NOATIME_FL, OWNER)
        .unwrap();
    let stranger = FlagsCaller {
        uid: 2000,
        fowner: false,
        linux_immutable: true,
    };
    eperm("not the owner", fs.set_inode_flags(f, 0, stranger));
    let root = FlagsCaller {
        uid: 0,
        fowner: true,
        linux_immutable: true,
    };
    fs.set_inode_flags(f, FS_APPEND_FL | FS_NODUMP_FL, root)
        .unwrap();
    eperm(
        "-a without the capability",
        fs.set_inode_flags(f, FS_NODUMP_FL, OWNER),
    );
    // While a file stays immutable, none of its other flags changes (ext4).
    fs.set_inode_flags(f, FS_IMMUTABLE_FL, ADMIN).unwrap();
    eperm(
        "+d on an immutable file",
        fs.set_inode_flags(f, FS_IMMUTABLE_FL | FS_NODUMP_FL, ADMIN),
    );
    fs.set_inode_flags(f, FS_NODUMP_FL, ADMIN).unwrap();
    // Flags kept nowhere: refused rather than shown and not honoured.
    assert_eq!(
        errno(fs.set_inode_flags(f, FS_SYNC_FL, ADMIN)),
        libc::EOPNOTSUPP
    );
    assert_eq!(
        errno(fs.set_inode_flags(f, 0x0008_0000, ADMIN)),
        libc::EOPNOTSUPP,
        "extents"
    );
    assert_eq!(
        errno(fs.set_inode_xflags(f, 0, 7, 0, ADMIN)),
        libc::EOPNOTSUPP,
        "project ID"
    );
    assert_eq!(
        errno(fs.set_inode_xflags(f, 0x1, 0, 0, ADMIN)),
        libc::EOPNOTSUPP,
        "realtime"
    );
    // Devices and fifos: no-dump and no-atime only (ext4's EXT4_OTHER_FLMASK).
    let p = fs
        .mknod(ROOT_INO, b"p", libc::S_IFIFO | 0o644, 0, 0, CALLER)
        .unwrap()
        .ino;
    fs.set_inode_flags(p, FS_NODUMP_FL, ADMIN).unwrap();
    assert_eq!(
        errno(fs.set_inode_flags(p, FS_IMMUTABLE_FL, ADMIN)),
        libc::EOPNOTSUPP
    );
}

#[test]
fn an_immutable_file_refuses_every_change() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    let f = make_file(&fs, ROOT_INO, "f", b"data");
    fs.setxattr(f, b"user.x", b"1", 0).unwrap();
    let d = fs.mkdir(ROOT_INO, b"d", 0o755, 0, CALLER).unwrap().ino;
    let other = make_file(&fs, ROOT_INO, "other", b"o");
    fs.set_inode_flags(f, FS_IMMUTABLE_FL, ADMIN).unwrap();

    eperm("write", fs.write(f, 0, b"x"));
    eperm("append", fs.write(f, 4, b"x"));
    eperm("truncate", fs.setattr(f, &set_size(0)));
    eperm("extend", fs.setattr(f, &set_size(100)));
    let chmod = SetAttr {
        mode: Some(0o600),
        ..Default::default()
    };
    eperm("chmod", fs.setattr(f, &chmod));
    let chown = SetAttr {
        uid: Some(0),
        ..Default::default()
    };
    eperm("chown", fs.setattr(f, &chown));
    let touch = SetAttr {
        atime: Some(TimeSet::Now),
        mtime: Some(TimeSet::Now),
        ..Default::default()
    };
    eperm("utimes(NULL)", fs.setattr(f, &touch));
    eperm("fallocate", fs.fallocate(f, 0, 8192, 0));
    eperm("link", fs.link(f, d, b"l"));
    eperm("unlink", fs.unlink(ROOT_INO, b"f"));
    eperm("rename of it", fs.rename(ROOT_INO, b"f", d, b"g", 0));
    eperm(
        "rename over it",
        fs.rename(ROOT_INO, b"other", ROOT_INO, b"f", 0),
    );
    eperm(
        "exchange",
        fs.rename(ROOT_INO, b"other", ROOT_INO, b"f", RENAME_EXCHANGE),
    );
    // The VFS refuses an existing target before ext4 looks at the flags.
    assert_eq!(
        errno(fs.rename(ROOT_INO, b"other", ROOT_INO, b"f", RENAME_NOREPLACE)),
        libc::EEXIST
    );
    eperm("setxattr", fs.setxattr(f, b"user.y", b"2", 0));
    eperm("removexattr", fs.removexattr(f, b"user.x"));
    eperm("open O_WRONLY", fs.open_with_flags(f, libc::O_WRONLY));
    eperm("open O_RDWR", fs.open_with_flags(f, libc::O_RDWR));
    eperm(
        "open O_TRUNC",
        fs.open_with_flags(f, libc::O_RDONLY | libc::O_TRUNC),
    );

    // Reading is untouched, and nothing changed.
    let fh = fs.open_with_flags(f, libc::O_RDONLY).unwrap();
    fs.release(f, fh).unwrap();
    assert_eq!(read_all(&fs, f), b"data");
    assert_eq!(fs.getxattr(f, b"user.x").unwrap(), b"1");
    assert_eq!(fs.getattr(f).unwrap().perm, 0o644);
    assert_eq!(resolve(&fs, "other").unwrap(), other);

    // Cleared, everything works again.
    fs.set_inode_flags(f, 0, ADMIN).unwrap();
    fs.write(f, 0, b"D").unwrap();
    fs.setattr(f, &chmod).unwrap();
    fs.rename(ROOT_INO, b"f", d, b"g", 0).unwrap();
    fs.unlink(d, b"g").unwrap();
}

#[test]
fn an_append_only_file_grows_only() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    let f = make_file(&fs, ROOT_INO, "f", b"data");
    let other = make_file(&fs, ROOT_INO, "other", b"o");
    fs.set_inode_flags(f, FS_APPEND_FL, ADMIN).unwrap();

    eperm("open O_WRONLY", fs.open_with_flags(f, libc::O_WRONLY));
    eperm("open O_RDWR", fs.open_with_flags(f, libc::O_RDWR));
    eperm(
        "open O_APPEND|O_TRUNC",
        fs.open_with_flags(f, libc::O_WRONLY | libc::O_APPEND | libc::O_TRUNC),
    );
    let fh = fs
        .open_with_flags(f, libc::O_WRONLY | libc::O_APPEND)
        .unwrap();
    eperm("overwrite", fs.write(f, 0, b"X"));
    eperm("overwrite of the last byte", fs.write(f, 3, b"XY"));
    assert_eq!(fs.write(f, 4, b"+more").unwrap(), 5);
    fs.release(f, fh).unwrap();
    assert_eq!(read_all(&fs, f), b"data+more");

    eperm("truncate", fs.setattr(f, &set_size(0)));
    eperm("extend by truncate", fs.setattr(f, &set_size(100)));
    eperm("fallocate punch", fs.fallocate(f, 0, 4096, 0x3));
    let chmod = SetAttr {
        mode: Some(0o600),
        ..Default::default()
    };
    eperm("chmod", fs.setattr(f, &chmod));
    let chgrp = SetAttr {
        gid: Some(0),
        ..Default::default()
    };
    eperm("chgrp", fs.setattr(f, &chgrp));
    let explicit = SetAttr {
        mtime: Some(TimeSet::At(std::time::UNIX_EPOCH)),
        ..Default::default()
    };
    eperm("explicit mtime", fs.setattr(f, &explicit));
    // touch (times set to now) stays allowed, as on ext4.
    let touch = SetAttr {
        atime: Some(TimeSet::Now),
        mtime: Some(TimeSet::Now),
        ..Default::default()
    };
    fs.setattr(f, &touch).unwrap();
    eperm("link", fs.link(f, ROOT_INO, b"l"));
    eperm("unlink", fs.unlink(ROOT_INO, b"f"));
    eperm("rename of it", fs.rename(ROOT_INO, b"f", ROOT_INO, b"g", 0));
    eperm(
        "rename over it",
        fs.rename(ROOT_INO, b"other", ROOT_INO, b"f", 0),
    );
    eperm("setxattr", fs.setxattr(f, b"user.y", b"2", 0));
    assert_eq!(read_all(&fs, f), b"data+more");
    assert_eq!(resolve(&fs, "other").unwrap(), other);
}

#[test]
fn an_immutable_directory_keeps_its_entries_and_an_append_only_one_only_gains() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    let d = fs.mkdir(ROOT_INO, b"d", 0o755, 0, CALLER).unwrap().ino;
    let x = make_file(&fs, d, "x", b"x");
    fs.mkdir(d, b"sub", 0o755, 0, CALLER).unwrap();
    let outside = make_file(&fs, ROOT_INO, "outside", b"o");
    fs.set_inode_flags(d, FS_IMMUTABLE_FL, ADMIN).unwrap();

    eperm("create", fs.create(d, b"n", 0o644, 0, CALLER));
    eperm("mkdir", fs.mkdir(d, b"n", 0o755, 0, CALLER));
    eperm("symlink", fs.symlink(d, b"n", b"t", CALLER));
    eperm(
        "mknod",
        fs.mknod(d, b"n", libc::S_IFIFO | 0o644, 0, 0, CALLER),
    );
    eperm("link into", fs.link(outside, d, b"n"));
    eperm("unlink", fs.unlink(d, b"x"));
    eperm("rmdir", fs.rmdir(d, b"sub"));
    eperm("rename inside", fs.rename(d, b"x", d, b"y", 0));
    eperm("rename out", fs.rename(d, b"x", ROOT_INO, b"y", 0));
    eperm("rename in", fs.rename(ROOT_INO, b"outside", d, b"y", 0));
    eperm("rename of it", fs.rename(ROOT_INO, b"d", ROOT_INO, b"e", 0));
    eperm(
        "chmod of it",
        fs.setattr(
            d,
            &SetAttr {
                mode: Some(0o700),
                ..Default::default()
            },
        ),
    );
    eperm("setxattr on it", fs.setxattr(d, b"user.y", b"2", 0));
    // Its files themselves stay writable (ext4: only the directory is immutable).
    fs.write(x, 1, b"y").unwrap();

    fs.set_inode_flags(d, FS_APPEND_FL, ADMIN).unwrap();
    make_file(&fs, d, "n", b"new");
    fs.mkdir(d, b"m", 0o755, 0, CALLER).unwrap();
    eperm("unlink in append-only", fs.unlink(d, b"n"));
    eperm("rmdir in append-only", fs.rmdir(d, b"m"));
    eperm(
        "rename out of append-only",
        fs.rename(d, b"n", ROOT_INO, b"n", 0),
    );
    fs.rename(ROOT_INO, b"outside", d, b"in", 0).unwrap();
    fs.set_inode_flags(d, 0, ADMIN).unwrap();
    fs.unlink(d, b"n").unwrap();
}

/// What a whiteout is: a character device 0/0 with mode 0.
fn is_whiteout(fs: &Fs, ino: u64) -> bool {
    let a = fs.getattr(ino).unwrap();
    a.kind == FileKind::CharDevice && a.rdev == 0 && a.perm == 0 && a.nlink == 1
}

#[test]
fn rename_whiteout_leaves_a_whiteout_at_the_source_in_the_same_batch() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    let d = fs.mkdir(ROOT_INO, b"d", 0o755, 0, CALLER).unwrap().ino;
    let f = make_file(&fs, ROOT_INO, "f", b"data");
    // Batches are numbered: a probe batch before and after shows how many the rename took.
    let probe = || {
        let m = logstorfs::engine::Mutation::put(
            logstorfs::engine::ROOT_GROUP,
            b"Zprobe".to_vec(),
            b"".to_vec(),
        );
        fs.engine().write(&[m]).unwrap()
    };
    let before = probe();
    let me = logstorfs::fs::Caller { uid: 42, gid: 43 };
    fs.rename_as(ROOT_INO, b"f", d, b"g", RENAME_WHITEOUT, me)
        .unwrap();
    assert_eq!(
        probe(),
        before + 2,
        "the rename and its whiteout are one batch"
    );
    assert_eq!(resolve(&fs, "d/g").unwrap(), f);
    let w = resolve(&fs, "f").unwrap();
    assert_ne!(w, f);
    assert!(is_whiteout(&fs, w));
    assert_eq!(
        (fs.getattr(w).unwrap().uid, fs.getattr(w).unwrap().gid),
        (42, 43)
    );
    // Over an existing target, and within one directory.
    make_file(&fs, d, "h", b"h");
    fs.rename(d, b"g", d, b"h", RENAME_WHITEOUT).unwrap();
    assert_eq!(resolve(&fs, "d/h").unwrap(), f);
    assert!(is_whiteout(&fs, resolve(&fs, "d/g").unwrap()));
    // A directory moved with a whiteout: the old parent loses its link, not the entry.
    fs.mkdir(ROOT_INO, b"sub", 0o755, 0, CALLER).unwrap();
    let root_links = fs.getattr(ROOT_INO).unwrap().nlink;
    fs.rename(ROOT_INO, b"sub", d, b"sub", RENAME_WHITEOUT)
        .unwrap();
    assert_eq!(fs.getattr(ROOT_INO).unwrap().nlink, root_links - 1);
    assert!(is_whiteout(&fs, resolve(&fs, "sub").unwrap()));
    // With EXCHANGE it is meaningless (EINVAL, as the VFS says); NOREPLACE combines.
    assert_eq!(
        errno(fs.rename(d, b"h", ROOT_INO, b"f", RENAME_WHITEOUT | RENAME_EXCHANGE)),
        libc::EINVAL
    );
    assert_eq!(
        errno(fs.rename(d, b"h", ROOT_INO, b"f", RENAME_WHITEOUT | RENAME_NOREPLACE)),
        libc::EEXIST
    );
    fs.rename(d, b"h", d, b"k", RENAME_WHITEOUT | RENAME_NOREPLACE)
        .unwrap();
    fs.close().unwrap();
    let fs = open(dir.path());
    assert!(is_whiteout(&fs, resolve(&fs, "d/h").unwrap()));
    assert!(is_whiteout(&fs, resolve(&fs, "f").unwrap()));
    assert_eq!(read_all(&fs, resolve(&fs, "d/k").unwrap()), b"data");
    // A whiteout is an ordinary inode: it goes with unlink.
    fs.unlink(ROOT_INO, b"f").unwrap();
    assert_eq!(errno(resolve(&fs, "f")), libc::ENOENT);
}

/// The flags of each inode in `names` (paths from the root).
fn flags_of(fs: &Fs, names: &[&str]) -> Vec<(String, u32)> {
    names
        .iter()
        .map(|n| {
            (
                n.to_string(),
                fs.inode_flags(resolve(fs, n).unwrap()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn new_inodes_take_no_dump_and_no_atime_from_their_directory_as_on_ext4() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    let d = fs.mkdir(ROOT_INO, b"d", 0o755, 0, CALLER).unwrap().ino;
    let before = make_file(&fs, d, "before", b"");
    let both = FS_NODUMP_FL | FS_NOATIME_FL;
    fs.set_inode_flags(d, both, OWNER).unwrap();
    // Every kind made in it, by every path that makes an inode; and on down the tree.
    make_file(&fs, d, "f", b"data");
    let sub = fs.mkdir(d, b"sub", 0o755, 0, CALLER).unwrap().ino;
    make_file(&fs, sub, "g", b"");
    fs.symlink(d, b"s", b"f", CALLER).unwrap();
    fs.mknod(d, b"p", libc::S_IFIFO | 0o644, 0, 0, CALLER)
        .unwrap();
    make_file(&fs, ROOT_INO, "moved", b"");
    fs.rename(ROOT_INO, b"moved", d, b"w", 0).unwrap();
    fs.rename(d, b"w", ROOT_INO, b"moved", RENAME_WHITEOUT)
        .unwrap();
    let made = ["d/f", "d/sub", "d/sub/g", "d/s", "d/p", "d/w"];
    let want: Vec<(String, u32)> = made.iter().map(|n| (n.to_string(), both)).collect();
    assert_eq!(flags_of(&fs, &made), want, "inherited from d ({both:#x})");
    // Only at creation: an inode made before, or moved in, keeps its own flags.
    assert_eq!(fs.inode_flags(before).unwrap(), 0);
    assert_eq!(flags_of(&fs, &["moved"]), [("moved".to_string(), 0)]);
    // Immutable and append-only are not inherited (an append-only directory takes new entries).
    let e = fs.mkdir(ROOT_INO, b"e", 0o755, 0, CALLER).unwrap().ino;
    fs.set_inode_flags(e, FS_APPEND_FL | FS_NODUMP_FL, ADMIN)
        .unwrap();
    make_file(&fs, e, "f", b"");
    fs.mkdir(e, b"sub", 0o755, 0, CALLER).unwrap();
    assert_eq!(
        flags_of(&fs, &["e/f", "e/sub"]),
        [
            ("e/f".to_string(), FS_NODUMP_FL),
            ("e/sub".to_string(), FS_NODUMP_FL)
        ]
    );
    // Cleared on the directory: later inodes take nothing; earlier ones keep what they took.
    fs.set_inode_flags(d, 0, OWNER).unwrap();
    make_file(&fs, d, "after", b"");
    assert_eq!(flags_of(&fs, &["d/after"]), [("d/after".to_string(), 0)]);
    fs.close().unwrap();
    let fs = open(dir.path());
    assert_eq!(flags_of(&fs, &made), want, "inherited flags are stored");
}

/// Sets `ino`'s atime to a day and an hour ago, and its mtime and ctime to a minute ago: an
/// access is then due to set the atime under every atime option but noatime.
fn make_atime_due(fs: &Fs, ino: u64) -> std::time::SystemTime {
    let now = std::time::SystemTime::now();
    let ago = |s| now - std::time::Duration::from_secs(s);
    let set = SetAttr {
        atime: Some(TimeSet::At(ago(25 * 3600))),
        mtime: Some(TimeSet::At(ago(60))),
        ctime: Some(ago(60)),
        ..Default::default()
    };
    fs.setattr(ino, &set).unwrap();
    fs.getattr(ino).unwrap().atime
}

#[test]
fn no_atime_keeps_the_atime_of_reads_listings_and_readlink() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    let d = fs.mkdir(ROOT_INO, b"d", 0o755, 0, CALLER).unwrap().ino;
    let f = make_file(&fs, d, "f", b"data");
    let l = fs.symlink(d, b"l", b"f", CALLER).unwrap().ino;
    for ino in [d, f, l] {
        fs.set_inode_flags(ino, FS_NOATIME_FL, OWNER).unwrap();
    }
    let accesses: [(&str, u64, &dyn Fn()); 3] = [
        ("read", f, &|| drop(fs.read(f, 0, 4).unwrap())),
        ("readdir", d, &|| drop(fs.readdir(d, 0).unwrap())),
        ("readlink", l, &|| drop(fs.readlink(l).unwrap())),
    ];
    for (what, ino, access) in accesses {
        let kept = make_atime_due(&fs, ino);
        assert!(!fs.read_would_touch_atime(ino), "{what}: no-atime");
        access();
        assert_eq!(fs.getattr(ino).unwrap().atime, kept, "{what}: no-atime");
    }
    // Without the flag the same accesses set it (the premise above).
    fs.set_inode_flags(d, 0, OWNER).unwrap();
    fs.set_inode_flags(f, 0, OWNER).unwrap();
    fs.set_inode_flags(l, 0, OWNER).unwrap();
    for (what, ino, access) in accesses {
        let old = make_atime_due(&fs, ino);
        assert!(fs.read_would_touch_atime(ino), "{what}");
        access();
        assert!(fs.getattr(ino).unwrap().atime > old, "{what}: atime set");
    }
}
