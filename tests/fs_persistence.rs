//! What survives a remount and a crash, through the `Fs` core without FUSE: the namespace and
//! data after a clean close; inode numbers stable and never reused; orphans (unlinked while
//! open) reclaimed at the next mount after a crash. Method: build a tree, close (or drop the
//! engine without closing, which the engine defines as a process crash), reopen, compare.

mod fs_common;

use std::collections::BTreeMap;

use fs_common::*;
use logstorfs::fs::{Fs, ROOT_INO, keys};

/// path -> (ino, kind, size, nlink, content or symlink target)
type Tree = BTreeMap<String, (u64, String, u64, u32, Vec<u8>)>;

fn snapshot(fs: &Fs, dir: u64, prefix: &str, out: &mut Tree) {
    for name in list(fs, dir) {
        let path = format!("{prefix}/{name}");
        let attr = fs.lookup(dir, name.as_bytes()).unwrap();
        let content = match attr.kind {
            logstorfs::fs::FileKind::Regular => read_all(fs, attr.ino),
            logstorfs::fs::FileKind::Symlink => fs.readlink(attr.ino).unwrap(),
            _ => Vec::new(),
        };
        out.insert(
            path.clone(),
            (
                attr.ino,
                format!("{:?}", attr.kind),
                attr.size,
                attr.nlink,
                content,
            ),
        );
        if attr.kind == logstorfs::fs::FileKind::Directory {
            snapshot(fs, attr.ino, &path, out);
        }
    }
}

fn build(fs: &Fs) -> u64 {
    let a = fs.mkdir(ROOT_INO, b"a", 0o755, 0, CALLER).unwrap().ino;
    let b = fs.mkdir(a, b"b", 0o700, 0, CALLER).unwrap().ino;
    let f = make_file(fs, b, "data", &pattern(300_000, 9));
    fs.link(f, ROOT_INO, b"hardlink").unwrap();
    fs.symlink(a, b"link", b"b/data", CALLER).unwrap();
    make_file(fs, ROOT_INO, "sparse", b"");
    let sparse = resolve(fs, "sparse").unwrap();
    fs.write(sparse, 64 << 20, b"end").unwrap();
    fs.setxattr(f, b"user.k", b"v", 0).unwrap();
    fs.rename(ROOT_INO, b"a", ROOT_INO, b"renamed", 0).unwrap();
    let mut max = 0;
    for i in 0..50 {
        max = max.max(make_file(
            fs,
            b,
            &format!("small{i}"),
            format!("{i}").as_bytes(),
        ));
    }
    max
}

#[test]
fn namespace_and_inode_numbers_survive_remount() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    let max_ino = build(&fs);
    let mut before = Tree::new();
    snapshot(&fs, ROOT_INO, "", &mut before);
    assert!(before.len() > 50);
    fs.close().unwrap();

    let fs = open(dir.path());
    let mut after = Tree::new();
    snapshot(&fs, ROOT_INO, "", &mut after);
    assert_eq!(before, after);
    let data = resolve(&fs, "renamed/b/data").unwrap();
    assert_eq!(fs.getxattr(data, b"user.k").unwrap(), b"v");
    // New inodes never reuse a number handed out before the remount.
    let used: std::collections::BTreeSet<u64> = before.values().map(|v| v.0).collect();
    let new = make_file(&fs, ROOT_INO, "new", b"");
    assert!(
        new > max_ino && !used.contains(&new),
        "inode {new} reused (max before {max_ino})"
    );
    fs.close().unwrap();
}

#[test]
fn inode_numbers_never_reused_after_crash() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    let mut seen = Vec::new();
    for i in 0..10 {
        seen.push(make_file(&fs, ROOT_INO, &format!("f{i}"), b""));
    }
    fs.fsync().unwrap();
    drop(fs); // crash: no close
    for round in 0..3 {
        let fs = open(dir.path());
        let ino = make_file(&fs, ROOT_INO, &format!("r{round}"), b"");
        assert!(
            seen.iter().all(|&s| ino > s),
            "inode {ino} not above {seen:?}"
        );
        seen.push(ino);
        fs.fsync().unwrap();
        drop(fs);
    }
}

#[test]
fn orphans_are_reclaimed_at_mount_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    let (attr, _fh) = fs.create(ROOT_INO, b"tmp", 0o600, 0, CALLER).unwrap();
    let ino = attr.ino;
    fs.write(ino, 0, &pattern(100_000, 1)).unwrap();
    fs.setxattr(ino, b"user.x", b"1", 0).unwrap();
    fs.unlink(ROOT_INO, b"tmp").unwrap();
    assert!(fs.engine().contains(&keys::orphan_key(ino)));
    fs.fsync().unwrap();
    drop(fs); // crash with the file still open

    let fs = open(dir.path());
    let e = fs.engine();
    assert!(!e.contains(&keys::orphan_key(ino)), "orphan record left");
    assert_eq!(
        e.get(&keys::inode_key(ino)).unwrap(),
        None,
        "orphan inode left"
    );
    assert!(
        e.scan(&keys::chunk_prefix(ino), None, 1)
            .unwrap()
            .is_empty(),
        "orphan data left"
    );
    assert!(
        e.scan(&keys::xattr_prefix(ino), None, 1)
            .unwrap()
            .is_empty(),
        "orphan xattrs left"
    );
    assert!(list(&fs, ROOT_INO).is_empty());
    fs.close().unwrap();
}

#[test]
fn metadata_batches_are_atomic_at_a_crash() {
    // After a crash, a rename is either fully there or not at all: never both names, never none.
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    let ino = make_file(&fs, ROOT_INO, "old", b"payload");
    fs.fsync().unwrap();
    fs.rename(ROOT_INO, b"old", ROOT_INO, b"new", 0).unwrap();
    drop(fs);
    let fs = open(dir.path());
    let names = list(&fs, ROOT_INO);
    assert!(names == vec!["new"] || names == vec!["old"], "{names:?}");
    let found = resolve(&fs, &names[0]).unwrap();
    assert_eq!(found, ino);
    assert_eq!(read_all(&fs, found), b"payload");
}

/// Repeated create/delete cycles do not leak: the tombstones of unlinked files (their inode,
/// their pages' prefix delete, their directory entries) are dropped by compaction, so what is
/// left does not grow with the number of cycles; and nothing deleted comes back at remount.
/// The remount that matters is a full scan after a crash: a checkpoint restores the index as
/// it was in memory, so a tombstone dropped while an older put of its key was still on disk
/// shows only when recovery reads the segments. The last cycle's files are compacted before
/// they are deleted, so that copies of their puts sit in an open segment of copies when
/// compaction takes the segments of their tombstones (those tombstones must then stay).
#[test]
fn create_delete_cycles_do_not_leak_tombstones() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    let d = fs.mkdir(ROOT_INO, b"d", 0o755, 0, CALLER).unwrap().ino;
    let mut deleted = Vec::new();
    for cycle in 0..30 {
        for i in 0..40 {
            deleted.push(make_file(
                &fs,
                d,
                &format!("f{cycle}-{i}"),
                &pattern(8192 + i, cycle),
            ));
        }
        let last = cycle == 29;
        if last {
            // A dead file of two segments' worth closes the active mixed segment, so that the
            // files, live among dead records, are copied by the passes.
            make_file(&fs, d, "closer", &pattern(2 << 20, 98));
            fs.unlink(d, b"closer").unwrap();
            fs.engine().test_separate().unwrap();
            while fs.engine().test_compact().unwrap() > 0 {}
        }
        for i in 0..40 {
            fs.unlink(d, format!("f{cycle}-{i}").as_bytes()).unwrap();
        }
        if !last {
            fs.engine().test_separate().unwrap();
            while fs.engine().test_compact().unwrap() > 0 {}
        }
    }
    // The last cycles' tombstones sit in the active mixed segment, which no pass takes while
    // it is open; with write-behind, small batches share buffers and it holds several cycles.
    // A file of two segments' worth closes it (its own few tombstones stay).
    make_file(&fs, d, "filler", &pattern(2 << 20, 99));
    fs.unlink(d, b"filler").unwrap();
    for _ in 0..3 {
        fs.engine().test_separate().unwrap();
        while fs.engine().test_compact().unwrap() > 0 {}
    }
    let stats = fs.engine().stats();
    assert!(
        stats.tombstones_dropped > 1000,
        "{} tombstones dropped",
        stats.tombstones_dropped
    );
    assert!(
        stats.index_entries < 200,
        "{} index entries after 1,200 files created and deleted",
        stats.index_entries
    );
    // A crash, and no checkpoint to stand in for any segment: the reopen reads every one.
    fs.fsync().unwrap();
    drop(fs);
    let _ = std::fs::remove_file(dir.path().join("checkpoint"));
    let fs = open(dir.path());
    let report = fs.engine().recovery_report();
    assert!(
        report.segments_scanned > 0,
        "the reopen after a crash did not scan: {report:?}"
    );
    let names = list(&fs, d);
    assert!(
        names.is_empty(),
        "deleted files came back after a full scan: {names:?}"
    );
    let back: Vec<u64> = deleted
        .iter()
        .copied()
        .filter(|&ino| fs.getattr(ino).is_ok())
        .collect();
    assert!(
        back.is_empty(),
        "inodes of deleted files came back after a full scan: {back:?}"
    );
    let entries = fs.engine().stats().index_entries;
    assert!(
        entries < 200,
        "{entries} index entries after a full scan of a store where 1,200 files were created \
         and deleted"
    );
    // And a clean close, whose checkpoint the next open loads.
    fs.close().unwrap();
    let fs = open(dir.path());
    assert_eq!(fs.engine().recovery_report().segments_scanned, 0);
    assert!(list(&fs, d).is_empty(), "deleted files came back");
}
