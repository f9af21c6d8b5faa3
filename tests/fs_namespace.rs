//! The namespace through the `Fs` core, without FUSE: create/mkdir/link/unlink/rmdir/rename
//! (plain, NOREPLACE, EXCHANGE), nlink counts, readdir under concurrent deletes, xattrs, and the
//! errno of each refusal. Method: an `Fs` on a fresh engine in a temporary directory.

mod fs_common;

use fs_common::*;
use logstorfs::fs::{
    FileKind, RENAME_EXCHANGE, RENAME_NOREPLACE, ROOT_INO, STATS_XATTR, SetAttr, TimeSet, keys,
};

fn e<T: std::fmt::Debug>(r: Result<T, logstorfs::fs::FsError>) -> i32 {
    r.unwrap_err().errno()
}

#[test]
fn errnos_match_ext4() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    let long = "x".repeat(256);
    assert_eq!(
        e(fs.create(ROOT_INO, long.as_bytes(), 0o644, 0, CALLER)),
        libc::ENAMETOOLONG
    );
    assert_eq!(
        e(fs.mkdir(ROOT_INO, long.as_bytes(), 0o755, 0, CALLER)),
        libc::ENAMETOOLONG
    );
    assert_eq!(e(fs.lookup(ROOT_INO, long.as_bytes())), libc::ENAMETOOLONG);
    assert!(
        fs.create(ROOT_INO, "y".repeat(255).as_bytes(), 0o644, 0, CALLER)
            .is_ok()
    );
    assert_eq!(e(fs.lookup(ROOT_INO, b"missing")), libc::ENOENT);
    let d = fs.mkdir(ROOT_INO, b"d", 0o755, 0, CALLER).unwrap().ino;
    assert_eq!(e(fs.mkdir(ROOT_INO, b"d", 0o755, 0, CALLER)), libc::EEXIST);
    let f = make_file(&fs, d, "f", b"x");
    assert_eq!(e(fs.rmdir(ROOT_INO, b"d")), libc::ENOTEMPTY);
    assert_eq!(e(fs.unlink(ROOT_INO, b"d")), libc::EISDIR);
    assert_eq!(e(fs.rmdir(d, b"f")), libc::ENOTDIR);
    assert_eq!(e(fs.create(f, b"sub", 0o644, 0, CALLER)), libc::ENOTDIR);
    assert_eq!(e(fs.link(d, ROOT_INO, b"dirlink")), libc::EPERM);
    assert_eq!(e(fs.read(d, 0, 10)), libc::EISDIR);
    assert_eq!(e(fs.readlink(f)), libc::EINVAL);
    assert_eq!(
        e(fs.rename(ROOT_INO, b"nope", ROOT_INO, b"x", 0)),
        libc::ENOENT
    );
    assert_eq!(
        e(fs.symlink(ROOT_INO, b"s", &vec![b'a'; 4096], CALLER)),
        libc::ENAMETOOLONG
    );
    fs.unlink(d, b"f").unwrap();
    fs.rmdir(ROOT_INO, b"d").unwrap();
    assert_eq!(e(fs.lookup(ROOT_INO, b"d")), libc::ENOENT);
}

#[test]
fn directory_nlink_is_two_plus_subdirectories() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    assert_eq!(fs.getattr(ROOT_INO).unwrap().nlink, 2);
    let a = fs.mkdir(ROOT_INO, b"a", 0o755, 0, CALLER).unwrap().ino;
    fs.mkdir(a, b"b", 0o755, 0, CALLER).unwrap();
    fs.mkdir(a, b"c", 0o755, 0, CALLER).unwrap();
    make_file(&fs, a, "file", b"");
    assert_eq!(fs.getattr(a).unwrap().nlink, 4);
    assert_eq!(fs.getattr(ROOT_INO).unwrap().nlink, 3);
    // Moving a directory moves one link between the parents.
    fs.rename(a, b"b", ROOT_INO, b"b2", 0).unwrap();
    assert_eq!(fs.getattr(a).unwrap().nlink, 3);
    assert_eq!(fs.getattr(ROOT_INO).unwrap().nlink, 4);
    fs.rmdir(a, b"c").unwrap();
    assert_eq!(fs.getattr(a).unwrap().nlink, 2);
    let b2 = resolve(&fs, "b2").unwrap();
    let dotdot = fs
        .readdir(b2, 0)
        .unwrap()
        .into_iter()
        .find(|e| e.name == b"..")
        .unwrap();
    assert_eq!(dotdot.ino, ROOT_INO, "'..' follows the rename");
}

#[test]
fn hard_links_share_data_and_count_links() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    let ino = make_file(&fs, ROOT_INO, "a", b"shared");
    let d = fs.mkdir(ROOT_INO, b"d", 0o755, 0, CALLER).unwrap().ino;
    let attr = fs.link(ino, d, b"b").unwrap();
    assert_eq!((attr.ino, attr.nlink), (ino, 2));
    fs.write(ino, 0, b"SHARED").unwrap();
    assert_eq!(read_all(&fs, resolve(&fs, "d/b").unwrap()), b"SHARED");
    fs.unlink(ROOT_INO, b"a").unwrap();
    assert_eq!(fs.getattr(ino).unwrap().nlink, 1);
    assert_eq!(read_all(&fs, ino), b"SHARED");
    // Renaming one link onto another link of the same inode does nothing.
    fs.link(ino, ROOT_INO, b"c").unwrap();
    fs.rename(ROOT_INO, b"c", d, b"b", 0).unwrap();
    assert_eq!(fs.getattr(ino).unwrap().nlink, 2);
    assert_eq!(list(&fs, ROOT_INO), vec!["c", "d"]);
}

#[test]
fn rename_replace_noreplace_exchange() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    let a = make_file(&fs, ROOT_INO, "a", b"AAA");
    let b = make_file(&fs, ROOT_INO, "b", b"BBB");
    let e = fs
        .rename(ROOT_INO, b"a", ROOT_INO, b"b", RENAME_NOREPLACE)
        .unwrap_err();
    assert_eq!(e.errno(), libc::EEXIST);
    fs.rename(ROOT_INO, b"a", ROOT_INO, b"b", RENAME_EXCHANGE)
        .unwrap();
    assert_eq!(resolve(&fs, "a").unwrap(), b);
    assert_eq!(resolve(&fs, "b").unwrap(), a);
    assert_eq!(read_all(&fs, resolve(&fs, "b").unwrap()), b"AAA");
    let e = fs
        .rename(ROOT_INO, b"a", ROOT_INO, b"zz", RENAME_EXCHANGE)
        .unwrap_err();
    assert_eq!(e.errno(), libc::ENOENT);
    // Plain rename replaces, and the replaced file's records are gone.
    fs.rename(ROOT_INO, b"a", ROOT_INO, b"b", 0).unwrap();
    assert_eq!(list(&fs, ROOT_INO), vec!["b"]);
    assert_eq!(read_all(&fs, resolve(&fs, "b").unwrap()), b"BBB");
    assert_eq!(fs.engine().get(&keys::inode_key(a)).unwrap(), None);
    assert!(
        fs.engine()
            .scan(&keys::chunk_prefix(a), None, 10)
            .unwrap()
            .is_empty()
    );
    fs.rename(ROOT_INO, b"b", ROOT_INO, b"new", RENAME_NOREPLACE)
        .unwrap();
    assert_eq!(list(&fs, ROOT_INO), vec!["new"]);
}

#[test]
fn rename_directory_rules() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    let a = fs.mkdir(ROOT_INO, b"a", 0o755, 0, CALLER).unwrap().ino;
    let sub = fs.mkdir(a, b"sub", 0o755, 0, CALLER).unwrap().ino;
    let full = fs.mkdir(ROOT_INO, b"full", 0o755, 0, CALLER).unwrap().ino;
    make_file(&fs, full, "x", b"");
    make_file(&fs, ROOT_INO, "file", b"");
    let errno = |r: Result<(), logstorfs::fs::FsError>| r.unwrap_err().errno();
    assert_eq!(
        errno(fs.rename(ROOT_INO, b"a", sub, b"loop", 0)),
        libc::EINVAL
    );
    assert_eq!(
        errno(fs.rename(ROOT_INO, b"a", a, b"self", 0)),
        libc::EINVAL
    );
    assert_eq!(
        errno(fs.rename(ROOT_INO, b"a", ROOT_INO, b"full", 0)),
        libc::ENOTEMPTY
    );
    assert_eq!(
        errno(fs.rename(ROOT_INO, b"a", ROOT_INO, b"file", 0)),
        libc::ENOTDIR
    );
    assert_eq!(
        errno(fs.rename(ROOT_INO, b"file", ROOT_INO, b"a", 0)),
        libc::EISDIR
    );
    // Over an empty directory: allowed, and the parent's link count drops by one.
    let empty = fs.mkdir(ROOT_INO, b"empty", 0o755, 0, CALLER).unwrap().ino;
    let before = fs.getattr(ROOT_INO).unwrap().nlink;
    fs.rename(ROOT_INO, b"a", ROOT_INO, b"empty", 0).unwrap();
    assert_eq!(fs.getattr(ROOT_INO).unwrap().nlink, before - 1);
    assert_eq!(resolve(&fs, "empty/sub").unwrap(), sub);
    assert_eq!(fs.engine().get(&keys::inode_key(empty)).unwrap(), None);
}

#[test]
fn unlinked_open_file_lives_until_last_release() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    let (attr, fh) = fs.create(ROOT_INO, b"tmp", 0o600, 0, CALLER).unwrap();
    let ino = attr.ino;
    fs.write(ino, 0, b"still here").unwrap();
    fs.unlink(ROOT_INO, b"tmp").unwrap();
    assert_eq!(
        fs.lookup(ROOT_INO, b"tmp").unwrap_err().errno(),
        libc::ENOENT
    );
    assert!(
        fs.engine().contains(&keys::orphan_key(ino)),
        "unlink records an orphan"
    );
    assert_eq!(fs.read(ino, 0, 100).unwrap(), b"still here");
    fs.write(ino, 10, b"!").unwrap();
    assert_eq!(fs.read(ino, 0, 100).unwrap(), b"still here!");
    assert_eq!(fs.getattr(ino).unwrap().nlink, 0);
    fs.release(ino, fh).unwrap();
    assert!(!fs.engine().contains(&keys::orphan_key(ino)));
    assert_eq!(fs.engine().get(&keys::inode_key(ino)).unwrap(), None);
    assert!(
        fs.engine()
            .scan(&keys::chunk_prefix(ino), None, 10)
            .unwrap()
            .is_empty()
    );
    fs.forget(ino, 1);
    assert_eq!(fs.getattr(ino).unwrap_err().errno(), libc::ENOENT);
}

/// A ghost (unlinked with no open handle, or an orphan after its last release, while the kernel
/// still holds the inode) takes a change of its attributes in memory. The kernel's writeback
/// cache sends one after every unlink: the unlink sets the ctime in the kernel's copy, which
/// writes it back (a SETATTR of mtime and ctime) until FORGET. Refused, it becomes a writeback
/// error of the whole file system, which syncfs(2) then reports (as ENOENT) to every caller.
#[test]
fn a_ghost_takes_attribute_changes_in_memory_until_forget() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    let closed = make_file(&fs, ROOT_INO, "closed", b"purged by the unlink");
    let (attr, fh) = fs.create(ROOT_INO, b"open", 0o600, 0, CALLER).unwrap();
    let open_file = attr.ino;
    fs.write(open_file, 0, b"purged at the last release")
        .unwrap();
    fs.unlink(ROOT_INO, b"closed").unwrap();
    fs.unlink(ROOT_INO, b"open").unwrap();
    fs.release(open_file, fh).unwrap();
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
    let times = SetAttr {
        mtime: Some(TimeSet::At(t)),
        ctime: Some(t),
        ..Default::default()
    };
    let mode = SetAttr {
        mode: Some(0o640),
        ..Default::default()
    };
    for ino in [closed, open_file] {
        let a = fs
            .setattr(ino, &times)
            .expect("the kernel writes back a ghost's times");
        assert_eq!((a.mtime, a.ctime, a.nlink), (t, t, 0));
        assert_eq!(fs.setattr(ino, &mode).unwrap().perm, 0o640);
        let a = fs.getattr(ino).unwrap();
        assert_eq!((a.mtime, a.perm), (t, 0o640));
        // In memory only: the purge stands.
        assert_eq!(fs.engine().get(&keys::inode_key(ino)).unwrap(), None);
        assert!(
            fs.engine()
                .scan(&keys::chunk_prefix(ino), None, 10)
                .unwrap()
                .is_empty()
        );
        fs.forget(ino, 1);
        assert_eq!(e(fs.getattr(ino)), libc::ENOENT);
        assert_eq!(e(fs.setattr(ino, &times)), libc::ENOENT);
    }
    fs.close().unwrap();
    let fs = open(dir.path());
    for ino in [closed, open_file] {
        assert_eq!(e(fs.getattr(ino)), libc::ENOENT);
    }
}

#[test]
fn readdir_survives_deletes_during_listing() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    let d = fs.mkdir(ROOT_INO, b"d", 0o755, 0, CALLER).unwrap().ino;
    let n = 600;
    for i in 0..n {
        make_file(&fs, d, &format!("file-{i}"), b"");
    }
    // Like `rm -r`: read a few entries, delete them, continue from the last cookie; also
    // insert new names meanwhile (they may or may not be listed, but nothing may be skipped).
    let mut seen = std::collections::BTreeSet::new();
    let mut offset = 0;
    let mut round = 0;
    loop {
        let batch = fs.readdir(d, offset).unwrap();
        if batch.is_empty() {
            break;
        }
        for e in batch.iter().take(7) {
            offset = e.cookie;
            if e.name == b"." || e.name == b".." {
                continue;
            }
            let name = String::from_utf8(e.name.clone()).unwrap();
            assert!(seen.insert(name.clone()), "{name} listed twice");
            fs.unlink(d, &e.name).unwrap();
        }
        round += 1;
        make_file(&fs, ROOT_INO, &format!("elsewhere-{round}"), b"");
    }
    for i in 0..n {
        assert!(seen.contains(&format!("file-{i}")), "file-{i} skipped");
    }
    assert!(list(&fs, d).is_empty());
    fs.rmdir(ROOT_INO, b"d").unwrap();
}

#[test]
fn readdir_lists_kinds_and_dots() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    make_file(&fs, ROOT_INO, "f", b"");
    fs.mkdir(ROOT_INO, b"d", 0o755, 0, CALLER).unwrap();
    fs.symlink(ROOT_INO, b"s", b"f", CALLER).unwrap();
    fs.mknod(ROOT_INO, b"p", libc::S_IFIFO | 0o644, 0, 0, CALLER)
        .unwrap();
    let all = fs.readdir(ROOT_INO, 0).unwrap();
    let kinds: Vec<(String, FileKind)> = all
        .iter()
        .map(|e| (String::from_utf8(e.name.clone()).unwrap(), e.kind))
        .collect();
    assert_eq!(kinds[0], (".".into(), FileKind::Directory));
    assert_eq!(kinds[1], ("..".into(), FileKind::Directory));
    assert!(kinds.contains(&("s".into(), FileKind::Symlink)));
    assert!(kinds.contains(&("p".into(), FileKind::NamedPipe)));
    assert_eq!(all.len(), 6);
    let s = resolve(&fs, "s").unwrap();
    assert_eq!(fs.readlink(s).unwrap(), b"f");
    assert_eq!(fs.getattr(s).unwrap().size, 1);
    // Listing from the last cookie gives nothing more.
    assert!(
        fs.readdir(ROOT_INO, all.last().unwrap().cookie)
            .unwrap()
            .is_empty()
    );
    for e in all.iter().skip(2) {
        let a = fs.readdir_entry(e.ino).unwrap();
        assert_eq!((a.ino, a.kind), (e.ino, e.kind));
    }
}

#[test]
fn xattrs_set_get_list_remove() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    let ino = make_file(&fs, ROOT_INO, "f", b"");
    fs.setxattr(ino, b"user.a", b"1", 0).unwrap();
    fs.setxattr(ino, b"user.b", &vec![7u8; 65536], 0).unwrap();
    assert_eq!(fs.getxattr(ino, b"user.a").unwrap(), b"1");
    assert_eq!(fs.listxattr(ino).unwrap(), b"user.a\0user.b\0");
    assert_eq!(
        fs.setxattr(ino, b"user.a", b"2", libc::XATTR_CREATE)
            .unwrap_err()
            .errno(),
        libc::EEXIST
    );
    assert_eq!(
        fs.setxattr(ino, b"user.c", b"2", libc::XATTR_REPLACE)
            .unwrap_err()
            .errno(),
        libc::ENODATA
    );
    assert_eq!(
        fs.setxattr(ino, b"user.c", &vec![0; 65537], 0)
            .unwrap_err()
            .errno(),
        libc::E2BIG
    );
    fs.removexattr(ino, b"user.a").unwrap();
    assert_eq!(
        fs.getxattr(ino, b"user.a").unwrap_err().errno(),
        libc::ENODATA
    );
    assert_eq!(
        fs.removexattr(ino, b"user.a").unwrap_err().errno(),
        libc::ENODATA
    );
    assert_eq!(fs.listxattr(ino).unwrap(), b"user.b\0");
    // The stats xattr answers on the root only, and is not listed.
    let stats = String::from_utf8(fs.getxattr(ROOT_INO, STATS_XATTR).unwrap()).unwrap();
    assert!(
        stats.contains("\"capacity_bytes\":") && stats.contains("\"root\":\"/\""),
        "{stats}"
    );
    assert!(fs.listxattr(ROOT_INO).unwrap().is_empty());
    // Unlink removes the xattrs with the file.
    fs.unlink(ROOT_INO, b"f").unwrap();
    assert!(
        fs.engine()
            .scan(&keys::xattr_prefix(ino), None, 10)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn setattr_mode_owner_times() {
    use logstorfs::fs::{SetAttr, TimeSet};
    use std::time::{Duration, UNIX_EPOCH};
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    let ino = make_file(&fs, ROOT_INO, "f", b"");
    let t = UNIX_EPOCH + Duration::new(1_000_000, 5);
    let a = fs
        .setattr(
            ino,
            &SetAttr {
                mode: Some(0o100600),
                uid: Some(42),
                gid: Some(43),
                mtime: Some(TimeSet::At(t)),
                atime: Some(TimeSet::At(t)),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        (a.perm, a.uid, a.gid, a.mtime, a.atime),
        (0o600, 42, 43, t, t)
    );
    assert_eq!(fs.getattr(ino).unwrap(), a);
    assert_eq!(
        fs.access(ino, libc::R_OK, &CALLER).unwrap_err().errno(),
        libc::EACCES
    );
    assert!(
        fs.access(
            ino,
            libc::R_OK | libc::W_OK,
            &logstorfs::fs::Caller { uid: 42, gid: 0 }
        )
        .is_ok()
    );
}

#[test]
fn xattr_names_outside_ext4_namespaces_are_refused_as_ext4_does() {
    // The FUSE kernel passes every name through (its one handler has an empty prefix), so the
    // namespace rules the VFS applies to ext4 are the daemon's: a bare prefix is EINVAL, a
    // namespace ext4 does not know EOPNOTSUPP, for set, get and remove alike.
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    let ino = make_file(&fs, ROOT_INO, "f", b"");
    for (name, errno) in [
        (&b"user."[..], libc::EINVAL),
        (b"trusted.", libc::EINVAL),
        (b"security.", libc::EINVAL),
        (b"system.", libc::EOPNOTSUPP),
        (b"system.x", libc::EOPNOTSUPP),
        (b"foo.bar", libc::EOPNOTSUPP),
        (b"xyz", libc::EOPNOTSUPP),
    ] {
        let shown = String::from_utf8_lossy(name);
        assert_eq!(
            fs.setxattr(ino, name, b"v", 0).unwrap_err().errno(),
            errno,
            "set {shown}"
        );
        assert_eq!(
            fs.getxattr(ino, name).unwrap_err().errno(),
            errno,
            "get {shown}"
        );
        assert_eq!(
            fs.removexattr(ino, name).unwrap_err().errno(),
            errno,
            "remove {shown}"
        );
    }
    assert!(fs.listxattr(ino).unwrap().is_empty());
    for name in [&b"user.u"[..], b"trusted.t", b"security.s"] {
        fs.setxattr(ino, name, b"v", 0).unwrap();
        assert_eq!(fs.getxattr(ino, name).unwrap(), b"v");
    }
}

#[test]
fn access_acl_xattr_sets_the_mode_like_ext4() {
    // What `cp -a` writes after creating a file with mode 0600: an ACL equal to mode 0644.
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    let ino = make_file(&fs, ROOT_INO, "f", b"");
    fs.setattr(
        ino,
        &logstorfs::fs::SetAttr {
            mode: Some(0o600),
            ..Default::default()
        },
    )
    .unwrap();
    let acl: Vec<u8> = [
        2u32.to_le_bytes().to_vec(),
        vec![1, 0, 6, 0, 255, 255, 255, 255],
        vec![4, 0, 4, 0, 255, 255, 255, 255],
        vec![0x20, 0, 4, 0, 255, 255, 255, 255],
    ]
    .concat();
    fs.setxattr(ino, b"system.posix_acl_access", &acl, 0)
        .unwrap();
    assert_eq!(fs.getattr(ino).unwrap().perm, 0o644);
    assert_eq!(
        fs.getxattr(ino, b"system.posix_acl_access")
            .unwrap_err()
            .errno(),
        libc::ENODATA
    );
    assert_eq!(
        fs.setxattr(ino, b"system.posix_acl_access", &[1, 2], 0)
            .unwrap_err()
            .errno(),
        libc::EINVAL
    );
}

#[test]
fn names_sharing_a_hash_share_one_record_and_resume_correctly() {
    // A real 56-bit collision is too costly to find in a test, so plant a second entry in the
    // record of "a" through the engine, as a collision would store it.
    use logstorfs::engine::{Mutation, ROOT_GROUP};
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    make_file(&fs, ROOT_INO, "a", b"");
    let b = make_file(&fs, ROOT_INO, "b", b"");
    let hash = keys::name_hash(b"a");
    let key = keys::dirent_key(ROOT_INO, hash);
    let mut shared = keys::decode_dirents(&fs.engine().get(&key).unwrap().unwrap()).unwrap();
    shared.push(keys::DirEntry {
        name: b"twin".to_vec(),
        ino: b,
        kind: FileKind::Regular,
    });
    let value = keys::encode_dirents(&shared);
    fs.engine()
        .write(&[Mutation::put(ROOT_GROUP, key.clone(), value)])
        .unwrap();

    let all = fs.readdir(ROOT_INO, 0).unwrap();
    let a = all.iter().find(|e| e.name == b"a").unwrap();
    let twin = all.iter().find(|e| e.name == b"twin").unwrap();
    assert_eq!(
        (a.cookie, twin.cookie),
        (keys::dirent_cookie(hash, 0), keys::dirent_cookie(hash, 1))
    );
    // Resuming after "a" gives "twin" first; resuming after "twin" gives neither.
    assert_eq!(fs.readdir(ROOT_INO, a.cookie).unwrap()[0].name, b"twin");
    let rest = fs.readdir(ROOT_INO, twin.cookie).unwrap();
    assert!(rest.iter().all(|e| e.name != b"a" && e.name != b"twin"));
    // Removing one name keeps the other in the shared record.
    fs.unlink(ROOT_INO, b"a").unwrap();
    let left = keys::decode_dirents(&fs.engine().get(&key).unwrap().unwrap()).unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].name, b"twin");
    assert!(list(&fs, ROOT_INO).contains(&"twin".to_string()));
}

/// Every entry of a listing from `offset` on, following cookies as `getdents` does.
fn listing_from(fs: &logstorfs::fs::Fs, dir: u64, mut offset: u64) -> Vec<(Vec<u8>, u64)> {
    let mut out = Vec::new();
    loop {
        let batch = fs.readdir(dir, offset).unwrap();
        if batch.is_empty() {
            return out;
        }
        for e in batch {
            offset = e.cookie;
            out.push((e.name, e.cookie));
        }
    }
}

#[test]
fn readdir_cookies_are_positive_63_bit_offsets_that_resume_after_their_entry() {
    // The kernel keeps a directory's position as a signed `loff_t`: a cookie with bit 63 set
    // makes `lseek`/`seekdir` to it fail with EINVAL. 1 and 2 are "." and "..", 0 the start.
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    let d = fs.mkdir(ROOT_INO, b"d", 0o755, 0, CALLER).unwrap().ino;
    let n = 1000;
    for i in 0..n {
        make_file(&fs, d, &format!("entry-{i}"), b"");
    }
    let all = listing_from(&fs, d, 0);
    assert_eq!(all.len(), n + 2);
    let negative = all
        .iter()
        .skip(2)
        .filter(|(_, c)| !(3..=i64::MAX as u64).contains(c))
        .count();
    assert_eq!(
        negative, 0,
        "{negative} of {n} cookies outside 3..=i64::MAX"
    );
    let cookies: std::collections::BTreeSet<u64> = all.iter().map(|(_, c)| *c).collect();
    assert_eq!(cookies.len(), all.len(), "cookies are not unique");
    // Resuming from each cookie lists exactly the entries after it.
    for (i, (_, cookie)) in all.iter().enumerate().step_by(7) {
        let rest = listing_from(&fs, d, *cookie);
        assert_eq!(rest, all[i + 1..], "resume after entry {i}");
    }
    // Entries added and removed between the calls do not disturb the others: an entry kept
    // before the cookie stays unlisted, one kept after it is listed once, with its cookie.
    for i in (0..n).step_by(3) {
        fs.unlink(d, format!("entry-{i}").as_bytes()).unwrap();
    }
    for i in 0..300 {
        make_file(&fs, d, &format!("new-{i}"), b"");
    }
    for (i, (_, cookie)) in all.iter().enumerate().skip(2).step_by(11) {
        let rest = listing_from(&fs, d, *cookie);
        let kept_after: Vec<&(Vec<u8>, u64)> = all[i + 1..]
            .iter()
            .filter(|(name, _)| {
                let s = String::from_utf8_lossy(name);
                let k: usize = s.trim_start_matches("entry-").parse().unwrap();
                !k.is_multiple_of(3)
            })
            .collect();
        let old_in_rest: Vec<&(Vec<u8>, u64)> = rest
            .iter()
            .filter(|(name, _)| name.starts_with(b"entry-"))
            .collect();
        assert_eq!(
            old_in_rest, kept_after,
            "resume after entry {i} with changes between"
        );
        assert!(
            rest.iter()
                .all(|(_, c)| c > cookie && *c <= i64::MAX as u64)
        );
    }
}
