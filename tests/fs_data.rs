//! File data through the `Fs` core, without FUSE: writes, overwrites, sparse files, large
//! writes split over several engine batches, truncate, st_blocks, the file size limit.
//! Method: an `Fs` on a fresh engine in a temporary directory; every result is read back.

mod fs_common;

use fs_common::*;
use logstorfs::fs::{IN_EVERY_GROUP, InGroup, MAX_FILE_SIZE, ROOT_INO, SetAttr, keys};

#[test]
fn write_read_overwrite_across_page_boundaries() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    let ino = make_file(&fs, ROOT_INO, "f", b"hello world");
    assert_eq!(read_all(&fs, ino), b"hello world");
    fs.write(ino, 6, b"WORLD").unwrap();
    assert_eq!(read_all(&fs, ino), b"hello WORLD");
    // A write straddling the first page boundary, past the end: the gap reads as zeros.
    fs.write(ino, 4090, b"0123456789abcdef").unwrap();
    let data = read_all(&fs, ino);
    assert_eq!(data.len(), 4106);
    assert_eq!(&data[..11], b"hello WORLD");
    assert!(data[11..4090].iter().all(|&b| b == 0));
    assert_eq!(&data[4090..], b"0123456789abcdef");
    // Reads past the end are short, reads at the end are empty.
    assert_eq!(fs.read(ino, 4100, 100).unwrap(), b"abcdef");
    assert!(fs.read(ino, 4106, 100).unwrap().is_empty());
    assert_eq!(fs.getattr(ino).unwrap().blocks, 16);
}

#[test]
fn large_unaligned_write_is_split_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    let ino = make_file(&fs, ROOT_INO, "big", b"");
    let data = pattern(3 << 20, 7); // several engine batches per 1 MiB request
    for (i, chunk) in data.chunks(1 << 20).enumerate() {
        let off = 1000 + (i as u64) * (1 << 20);
        assert_eq!(fs.write(ino, off, chunk).unwrap() as usize, chunk.len());
    }
    let back = read_all(&fs, ino);
    assert_eq!(back.len(), 1000 + data.len());
    assert!(back[..1000].iter().all(|&b| b == 0));
    assert!(back[1000..] == data[..], "data differs");
    let attr = fs.getattr(ino).unwrap();
    assert_eq!(attr.blocks, (1000 + data.len() as u64).div_ceil(4096) * 8);
}

#[test]
fn sparse_file_stores_only_written_pages() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    let ino = make_file(&fs, ROOT_INO, "sparse", b"");
    let off = 5u64 << 30; // beyond 4 GiB
    fs.write(ino, off, b"tail").unwrap();
    let attr = fs.getattr(ino).unwrap();
    assert_eq!(attr.size, off + 4);
    assert_eq!(attr.blocks, 8, "only one page is stored");
    assert_eq!(fs.read(ino, 0, 8192).unwrap(), vec![0u8; 8192]);
    assert_eq!(fs.read(ino, off - 2, 10).unwrap(), b"\0\0tail");
    let pages = fs
        .engine()
        .scan(&keys::chunk_prefix(ino), None, 100)
        .unwrap();
    assert_eq!(pages.len(), 1);
}

#[test]
fn truncate_zeroes_the_partial_page_and_deletes_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    let ino = make_file(&fs, ROOT_INO, "t", &vec![0xAA; 3 * 4096]);
    assert_eq!(fs.getattr(ino).unwrap().blocks, 24);
    let a = fs
        .setattr(
            ino,
            &SetAttr {
                size: Some(5000),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(a.size, 5000);
    assert_eq!(a.blocks, 16);
    // Grow again: the bytes between 5000 and the new size must read as zeros.
    fs.setattr(
        ino,
        &SetAttr {
            size: Some(3 * 4096),
            ..Default::default()
        },
    )
    .unwrap();
    let data = read_all(&fs, ino);
    assert!(data[..5000].iter().all(|&b| b == 0xAA));
    assert!(
        data[5000..].iter().all(|&b| b == 0),
        "stale bytes after truncate + extend"
    );
    // The third page is gone from the store, not just hidden.
    assert!(!fs.engine().contains(&keys::chunk_key(ino, 2)));
    let a = fs
        .setattr(
            ino,
            &SetAttr {
                size: Some(0),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!((a.size, a.blocks), (0, 0));
    assert!(
        fs.engine()
            .scan(&keys::chunk_prefix(ino), None, 10)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn file_size_limit_is_efbig() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    let ino = make_file(&fs, ROOT_INO, "f", b"");
    assert_eq!(
        fs.write(ino, MAX_FILE_SIZE - 1, b"ab").unwrap_err().errno(),
        libc::EFBIG
    );
    assert_eq!(fs.write(ino, MAX_FILE_SIZE - 1, b"a").unwrap(), 1);
    let too_big = SetAttr {
        size: Some(MAX_FILE_SIZE + 1),
        ..Default::default()
    };
    assert_eq!(fs.setattr(ino, &too_big).unwrap_err().errno(), libc::EFBIG);
    assert_eq!(
        fs.fallocate(ino, 0, 10, 0x100).unwrap_err().errno(),
        libc::EOPNOTSUPP
    );
}

#[test]
fn full_store_is_enospc_and_deleting_makes_room() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open_with(dir.path(), 32 << 20);
    let ino = make_file(&fs, ROOT_INO, "fill", b"");
    let chunk = pattern(1 << 20, 1);
    let mut off = 0u64;
    let err = loop {
        match fs.write(ino, off, &chunk) {
            Ok(n) if n as usize == chunk.len() => off += u64::from(n),
            Ok(n) => off += u64::from(n),
            Err(e) => break e,
        }
        assert!(off < 64 << 20, "a 32 MiB store accepted 64 MiB");
    };
    assert_eq!(err.errno(), libc::ENOSPC);
    fs.unlink(ROOT_INO, b"fill").unwrap();
    let again = make_file(&fs, ROOT_INO, "again", &chunk);
    assert_eq!(read_all(&fs, again), chunk);
}

#[test]
fn statfs_follows_live_data() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    let before = fs.statfs();
    assert_eq!(before.block_size, 4096);
    assert_eq!(before.name_len_max, 255);
    make_file(&fs, ROOT_INO, "f", &pattern(4 << 20, 3));
    let after = fs.statfs();
    assert!(
        after.blocks_available + 1024 <= before.blocks_available,
        "{before:?} {after:?}"
    );
    assert!(after.blocks_available <= after.blocks);
}

/// Under FUSE_HANDLE_KILLPRIV_V2 the kernel leaves it to us to clear what a write, truncation or
/// chown clears on Linux: the set-user-ID bit, the set-group-ID bit when the group may execute,
/// and the file's capabilities.
#[test]
fn writes_truncations_and_chown_drop_privileges_as_linux_does() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    let perm = |ino| fs.getattr(ino).unwrap().perm;
    let set_mode = |ino, mode| {
        fs.setattr(
            ino,
            &SetAttr {
                mode: Some(mode),
                ..Default::default()
            },
        )
        .unwrap();
    };
    let cap = b"security.capability";
    let ino = make_file(&fs, ROOT_INO, "f", b"data");

    // A privileged writer (no kill asked): bits stay; the capabilities still go.
    set_mode(ino, 0o6755);
    fs.setxattr(ino, cap, b"caps", 0).unwrap();
    fs.write_as(ino, 0, b"DATA", None).unwrap();
    assert_eq!(perm(ino), 0o6755);
    assert!(
        fs.getxattr(ino, cap).is_err(),
        "a write keeps security.capability"
    );

    // An unprivileged writer: set-user-ID and (group-executable) set-group-ID go.
    fs.write_as(ino, 0, b"data", Some(IN_EVERY_GROUP)).unwrap();
    assert_eq!(perm(ino), 0o0755);
    // Without group execute, set-group-ID means mandatory locking and stays.
    set_mode(ino, 0o6745);
    fs.write_as(ino, 0, b"x", Some(IN_EVERY_GROUP)).unwrap();
    assert_eq!(perm(ino), 0o2745);
    assert_eq!(read_all(&fs, ino), b"xata");

    // Truncation and chown as the FUSE adapter asks for them.
    set_mode(ino, 0o6755);
    fs.setxattr(ino, cap, b"caps", 0).unwrap();
    let truncate = SetAttr {
        size: Some(2),
        kill_suid_sgid: true,
        ..Default::default()
    };
    fs.setattr(ino, &truncate).unwrap();
    assert_eq!(perm(ino), 0o0755);
    assert!(
        fs.getxattr(ino, cap).is_err(),
        "truncation keeps security.capability"
    );
    set_mode(ino, 0o4755);
    let chown = SetAttr {
        uid: Some(1000),
        kill_suid_sgid: true,
        ..Default::default()
    };
    assert_eq!(fs.setattr(ino, &chown).unwrap().perm, 0o0755);
    // An explicit mode in the same request wins (the kernel never sends both).
    let chmod = SetAttr {
        mode: Some(0o4755),
        kill_suid_sgid: true,
        ..Default::default()
    };
    assert_eq!(fs.setattr(ino, &chmod).unwrap().perm, 0o4755);
    // A directory's set-group-ID bit (inherit the group) is never dropped.
    let d = fs
        .mkdir(ROOT_INO, b"d", 0o2775, 0, CALLER)
        .map(|a| a.ino)
        .unwrap();
    fs.setattr(d, &chown).unwrap();
    assert_eq!(perm(d), 0o2775);
}

/// A set-group-ID file its group may not execute keeps the bit through a write, truncation,
/// fallocate or chown by a member of its group, and loses it to anyone else without
/// CAP_FSETID (Linux's `setattr_should_drop_sgid`, as ext4 shows it): an unprivileged user
/// outside the group must not be left holding a file that runs with the group's rights.
#[test]
fn set_group_id_without_group_execute_goes_for_callers_outside_the_group() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    let perm = |ino| fs.getattr(ino).unwrap().perm;
    let ino = make_file(&fs, ROOT_INO, "f", b"data");
    let file_gid = fs.getattr(ino).unwrap().gid;
    let set_mode = |mode| {
        let set = SetAttr {
            mode: Some(mode),
            ..Default::default()
        };
        fs.setattr(ino, &set).unwrap();
    };
    let member: InGroup = &|g| g == file_gid;
    let outsider: InGroup = &|g| g != file_gid;

    set_mode(0o2745);
    fs.write_as(ino, 0, b"x", Some(member)).unwrap();
    assert_eq!(perm(ino), 0o2745, "a member's write");
    fs.write_as(ino, 0, b"x", Some(outsider)).unwrap();
    assert_eq!(perm(ino), 0o0745, "an outsider's write");

    let truncate = SetAttr {
        size: Some(2),
        kill_suid_sgid: true,
        ..Default::default()
    };
    set_mode(0o2745);
    fs.setattr_as(ino, &truncate, member).unwrap();
    assert_eq!(perm(ino), 0o2745, "a member's truncation");
    fs.setattr_as(ino, &truncate, outsider).unwrap();
    assert_eq!(perm(ino), 0o0745, "an outsider's truncation");

    set_mode(0o2745);
    fs.fallocate_as(ino, 0, 4096, 0, Some(member)).unwrap();
    assert_eq!(perm(ino), 0o2745, "a member's fallocate");
    fs.fallocate_as(ino, 0, 4096, 0, Some(outsider)).unwrap();
    assert_eq!(perm(ino), 0o0745, "an outsider's fallocate");

    // chown: the group the file had decides.
    let chgrp = SetAttr {
        gid: Some(4242),
        kill_suid_sgid: true,
        ..Default::default()
    };
    set_mode(0o2745);
    fs.setattr_as(ino, &chgrp, outsider).unwrap();
    assert_eq!(perm(ino), 0o0745, "a chgrp by an outsider");
}

/// fallocate changes a file as a write does: a caller without CAP_FSETID drops set-user-ID and
/// set-group-ID, even when the range is inside the file and the size stays, and anyone drops
/// the capabilities (ext4: `file_modified`). The kernel leaves both to us under
/// FUSE_HANDLE_KILLPRIV_V2.
#[test]
fn fallocate_drops_privileges_as_a_write_does() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    let perm = |ino| fs.getattr(ino).unwrap().perm;
    let cap = b"security.capability";
    let ino = make_file(&fs, ROOT_INO, "f", &[7u8; 8192]);
    fs.setattr(
        ino,
        &SetAttr {
            mode: Some(0o6755),
            ..Default::default()
        },
    )
    .unwrap();
    fs.setxattr(ino, cap, b"caps", 0).unwrap();

    // With CAP_FSETID: the bits stay, the capabilities go, even inside the size.
    fs.fallocate_as(ino, 0, 4096, 0, None).unwrap();
    assert_eq!(perm(ino), 0o6755);
    assert!(
        fs.getxattr(ino, cap).is_err(),
        "fallocate keeps security.capability"
    );
    // Without: inside the size, then extending it.
    fs.fallocate_as(ino, 0, 4096, 0, Some(IN_EVERY_GROUP))
        .unwrap();
    assert_eq!(perm(ino), 0o0755, "fallocate inside the size");
    fs.setattr(
        ino,
        &SetAttr {
            mode: Some(0o6755),
            ..Default::default()
        },
    )
    .unwrap();
    fs.fallocate_as(ino, 0, 16384, 0, Some(IN_EVERY_GROUP))
        .unwrap();
    let a = fs.getattr(ino).unwrap();
    assert_eq!((a.perm, a.size), (0o0755, 16384), "fallocate extending");
    assert_eq!(read_all(&fs, ino)[..8192], [7u8; 8192]);
}

/// Shrinking truncates of a file whose first pages are never rewritten leave a bounded index
/// and bounded live data: each truncate's range delete makes the previous one dead (it hides
/// all the previous one hid). Kept while any older page of the file is on disk, they once
/// piled up, one per truncate, in the index and on disk, copied by every compaction, and a
/// full scan after a crash found them all again.
#[test]
fn repeated_truncates_of_a_file_keep_the_index_bounded() {
    use logstorfs::engine::storage::{PowerCut, SimStorage};
    use logstorfs::engine::{Engine, EngineStats};
    const PAGE: u64 = 4096;
    const KEPT: u64 = 8;
    const CYCLES: u64 = 300;
    let storage = SimStorage::new();
    let fs = logstorfs::fs::Fs::new(Engine::open_on(storage.clone(), &options(64 << 20)).unwrap())
        .unwrap();
    let ino = make_file(&fs, ROOT_INO, "log", &vec![7u8; (KEPT * PAGE) as usize]);
    let truncate = |size| {
        fs.setattr(
            ino,
            &SetAttr {
                size: Some(size),
                ..Default::default()
            },
        )
        .unwrap();
    };
    let cycle = |i: u64| {
        fs.write(ino, KEPT * PAGE, &vec![i as u8; PAGE as usize])
            .unwrap();
        truncate(KEPT * PAGE);
    };
    let figures = |s: &EngineStats| (s.index_entries, s.live_bytes);
    cycle(0);
    let first = figures(&fs.engine().stats());
    for i in 1..CYCLES {
        cycle(i);
    }
    let last = figures(&fs.engine().stats());
    // Same figures: a truncate record replaces the one before it, an inode record the one
    // before it.
    assert_eq!(
        last, first,
        "(index entries, live bytes) after 1 and after {CYCLES} truncates"
    );
    assert_eq!(read_all(&fs, ino), vec![7u8; (KEPT * PAGE) as usize]);
    // A full scan after a crash finds the dead ones beside the newest, and keeps only it.
    fs.engine().sync().unwrap();
    drop(fs);
    let fs = logstorfs::fs::Fs::new(
        Engine::open_on(storage.crash(PowerCut::DropAllUnsynced), &options(64 << 20)).unwrap(),
    )
    .unwrap();
    assert_eq!(
        figures(&fs.engine().stats()),
        first,
        "(index entries, live bytes) recovered by a full scan"
    );
    for _ in 0..3 {
        fs.engine().test_compact().unwrap();
    }
    assert_eq!(
        figures(&fs.engine().stats()),
        first,
        "(index entries, live bytes) after compaction"
    );
    assert_eq!(read_all(&fs, ino), vec![7u8; (KEPT * PAGE) as usize]);
}

/// A truncate or unlink looks at what the file stores, never at its holes: its cost on the
/// request path must not grow with the file's size. Measured in index entries looked at (a work
/// counter of the engine), not in time.
#[test]
fn truncate_and_unlink_work_grows_with_stored_pages_not_file_size() {
    const PIECE: usize = 100 * 1024; // 25 pages
    const PIECE_PAGES: u64 = (PIECE as u64).div_ceil(4096);
    // Room for the inode, xattr and neighbour lookups of one operation besides its pages.
    const SLACK: u64 = 64;
    let dir = tempfile::tempdir().unwrap();
    let fs = open_with(dir.path(), 256 << 20);
    let ino = make_file(&fs, ROOT_INO, "f", b"");
    let visits = || fs.engine().index_keys_visited();
    let truncate = |size| {
        fs.setattr(
            ino,
            &SetAttr {
                size: Some(size),
                ..Default::default()
            },
        )
        .unwrap()
    };
    // "Write 100 KiB at a growing offset, truncate to 0": each round's truncate costs the same.
    let piece = pattern(PIECE, 1);
    let mut costs = Vec::new();
    for i in 0..400u64 {
        fs.write(ino, i * PIECE as u64, &piece).unwrap();
        let before = visits();
        let attr = truncate(0);
        costs.push(visits() - before);
        assert_eq!((attr.size, attr.blocks), (0, 0));
    }
    let worst = costs.iter().max().unwrap();
    assert!(
        *worst <= PIECE_PAGES + SLACK,
        "a truncate to 0 of a file storing {PIECE_PAGES} pages looked at {worst} index entries \
         (first round {}, last {})",
        costs[0],
        costs[costs.len() - 1]
    );
    // A truncate to a non-zero size of a sparse 1 GiB file counts the pages it drops exactly.
    fs.write(ino, 0, &pattern(4096, 2)).unwrap();
    fs.write(ino, 1 << 30, &piece).unwrap();
    assert_eq!(fs.getattr(ino).unwrap().blocks, 8 * (1 + PIECE_PAGES));
    let before = visits();
    let attr = truncate(4096 + 100);
    let cost = visits() - before;
    assert_eq!(
        (attr.size, attr.blocks),
        (4196, 8),
        "size and st_blocks after the truncate"
    );
    assert!(
        cost <= PIECE_PAGES + SLACK,
        "a truncate of a sparse 1 GiB file storing {} pages looked at {cost} index entries",
        PIECE_PAGES + 1
    );
    let mut expect = pattern(4096, 2);
    expect.resize(4196, 0);
    assert_eq!(read_all(&fs, ino), expect);
    // So does an unlink.
    fs.write(ino, 1 << 30, &piece).unwrap();
    let before = visits();
    fs.unlink(ROOT_INO, b"f").unwrap();
    let cost = visits() - before;
    assert!(
        cost <= PIECE_PAGES + 1 + SLACK,
        "an unlink of a sparse 1 GiB file looked at {cost} index entries"
    );
    // A dense file: its truncate to 0 and its unlink look at a bounded number of entries, not
    // one per stored page (the engine removes the rest of what the range delete covers later,
    // hidden from readers meanwhile). The background is paused, so that what it removes does
    // not count here.
    const DENSE_PAGES: u64 = 8192; // 32 MiB
    const BOUNDED: u64 = 1024;
    fs.engine().test_pause_background();
    let dense = |name: &str| {
        let ino = make_file(&fs, ROOT_INO, name, b"");
        let mib = pattern(1 << 20, 3);
        for i in 0..DENSE_PAGES * 4096 / (1 << 20) {
            fs.write(ino, i << 20, &mib).unwrap();
        }
        assert_eq!(fs.getattr(ino).unwrap().blocks, 8 * DENSE_PAGES);
        ino
    };
    let ino = dense("dense");
    let before = visits();
    let attr = fs
        .setattr(
            ino,
            &SetAttr {
                size: Some(0),
                ..Default::default()
            },
        )
        .unwrap();
    let cost = visits() - before;
    assert!(
        cost <= BOUNDED,
        "a truncate to 0 of a dense file storing {DENSE_PAGES} pages looked at {cost} index \
         entries"
    );
    assert_eq!((attr.size, attr.blocks), (0, 0));
    fs.write(ino, 8192, b"again").unwrap();
    let mut expect = vec![0u8; 8192];
    expect.extend_from_slice(b"again");
    assert_eq!(read_all(&fs, ino), expect, "nothing of the old data shows");
    fs.unlink(ROOT_INO, b"dense").unwrap();
    dense("dense2");
    let before = visits();
    fs.unlink(ROOT_INO, b"dense2").unwrap();
    let cost = visits() - before;
    assert!(
        cost <= BOUNDED,
        "an unlink of a dense file storing {DENSE_PAGES} pages looked at {cost} index entries"
    );
    // A truncate to a non-zero size counts the pages it drops for st_blocks: leaf by leaf (a
    // leaf of the index holds about a hundred pages), not page by page.
    let ino = dense("dense3");
    let keep = DENSE_PAGES / 2;
    let before = visits();
    let attr = fs
        .setattr(
            ino,
            &SetAttr {
                size: Some(keep * 4096 + 100),
                ..Default::default()
            },
        )
        .unwrap();
    let cost = visits() - before;
    assert_eq!(attr.blocks, 8 * (keep + 1), "st_blocks after the truncate");
    assert!(
        cost <= BOUNDED,
        "a truncate dropping {keep} of the {DENSE_PAGES} pages of a dense file looked at {cost} \
         index entries"
    );
    fs.unlink(ROOT_INO, b"dense3").unwrap();
    // Exact figures remove what the range deletes hid: no page of any of the files stays.
    let stats = fs.engine().stats();
    assert!(
        stats.live_bytes < 1 << 20,
        "live bytes after the deletes: {}",
        stats.live_bytes
    );
}
