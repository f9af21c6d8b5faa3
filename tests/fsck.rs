//! `logstorfs fsck`: the offline checker, through its library entry (`fs::check::check_store`)
//! and through the binary (exit codes as fsck(8)'s, one problem per line, refusing a store in
//! use).
//! Method: build a store with the `Fs` core, close it, then damage it on purpose: flip bytes
//! in a segment file, or write inconsistent records with the engine API directly; check that
//! each damage is reported where it is, and that a clean store passes and is left unchanged.

mod fs_common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use fs_common::*;
use logstorfs::engine::{Engine, EngineOptions, Mutation, ROOT_GROUP};
use logstorfs::fs::check::{Report, check_store};
use logstorfs::fs::keys::{self, FileKind, InodeRecord};
use logstorfs::fs::{ROOT_INO, SetAttr};

fn fsck_bin(store: &Path, json: bool) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_logstorfs"));
    cmd.arg("fsck");
    if json {
        cmd.arg("--json");
    }
    let out = cmd.arg(store).output().expect("run logstorfs fsck");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn problems(r: &Report) -> Vec<String> {
    r.all_findings()
        .filter(|f| f.severity == logstorfs::engine::check::Severity::Problem)
        .map(|f| f.to_string())
        .collect()
}

/// Every file of the store directory and its bytes.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// A store with a bit of everything: nested directories, data over several pages, a hard
/// link, a symlink, an xattr, a rename across directories, a truncate, a deletion.
fn populate(dir: &Path) -> (u64, u64) {
    let fs = open(dir);
    let a = fs.mkdir(ROOT_INO, b"a", 0o755, 0, CALLER).unwrap().ino;
    let b = fs.mkdir(a, b"b", 0o755, 0, CALLER).unwrap().ino;
    let c = fs.mkdir(ROOT_INO, b"c", 0o755, 0, CALLER).unwrap().ino;
    let f = make_file(&fs, a, "f", &vec![5u8; 10_000]);
    let g = make_file(&fs, b, "g", b"small");
    fs.link(f, c, b"f-link").unwrap();
    fs.symlink(b, b"s", b"../f", CALLER).unwrap();
    fs.setxattr(g, b"user.k", b"v", 0).unwrap();
    fs.rename(b, b"g", c, b"g2", 0).unwrap();
    fs.rename(a, b"b", c, b"b", 0).unwrap();
    let set = SetAttr {
        size: Some(5000),
        ..Default::default()
    };
    fs.setattr(f, &set).unwrap();
    let gone = make_file(&fs, ROOT_INO, "gone", &[1u8; 9000]);
    fs.unlink(ROOT_INO, b"gone").unwrap();
    let _ = gone;
    fs.close().unwrap();
    (f, g)
}

fn engine(dir: &Path) -> Engine {
    Engine::open(
        dir,
        &EngineOptions {
            create_if_missing: false,
            sync_interval: None,
            ..Default::default()
        },
    )
    .unwrap()
}

fn inode(e: &Engine, ino: u64) -> InodeRecord {
    InodeRecord::decode(&e.get(&keys::inode_key(ino)).unwrap().unwrap()).unwrap()
}

#[test]
fn clean_store_passes_and_is_left_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path());
    let before = snapshot(dir.path());
    let r = check_store(dir.path()).unwrap();
    assert!(r.is_clean(), "{:?}", problems(&r));
    assert_eq!(r.figures.directories, 4);
    assert_eq!(r.figures.regular_files, 2);
    assert_eq!(r.figures.symlinks, 1);
    assert_eq!(r.figures.xattrs, 1);
    // f truncated to 5000 bytes: 2 pages; g: 1 page.
    assert_eq!(r.figures.data_pages, 3);
    let (code, out, err) = fsck_bin(dir.path(), false);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(out.contains("clean"), "{out}");
    let (code, out, _) = fsck_bin(dir.path(), true);
    assert_eq!(code, 0);
    assert!(
        out.starts_with('{') && out.contains("\"clean\":true"),
        "{out}"
    );
    assert_eq!(snapshot(dir.path()), before, "fsck changed the store");
}

#[test]
fn orphan_of_an_unlinked_open_file_is_recorded_not_a_problem() {
    let dir = tempfile::tempdir().unwrap();
    {
        let fs = open(dir.path());
        let (attr, _fh) = fs
            .create(ROOT_INO, b"open", 0o644, 0, CALLER)
            .expect("create");
        fs.write(attr.ino, 0, b"still open").unwrap();
        fs.unlink(ROOT_INO, b"open").unwrap();
        // The daemon dies with the file open: no release.
        fs.close().unwrap();
    }
    let r = check_store(dir.path()).unwrap();
    assert!(r.is_clean(), "{:?}", problems(&r));
    assert_eq!(r.figures.orphans, 1);
    assert!(
        r.all_findings()
            .any(|f| f.what.contains("orphan, reclaimed at the next mount")),
        "the orphan is noted"
    );
}

#[test]
fn flipped_bytes_in_a_segment_file_are_reported_with_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let content: Vec<u8> = b"fsck-victim-content:"
        .iter()
        .cycle()
        .take(12_000)
        .copied()
        .collect();
    {
        let fs = open(dir.path());
        let d = fs.mkdir(ROOT_INO, b"dir", 0o755, 0, CALLER).unwrap().ino;
        make_file(&fs, d, "victim", &content);
        fs.fsync().unwrap();
        make_file(&fs, d, "bystander", &[3u8; 6000]);
        fs.close().unwrap();
    }
    // Find the victim's bytes in the segment files and flip one bit in the middle of them.
    let mut hit = None;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if !path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("seg-")
        {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        if let Some(at) = bytes.windows(40).position(|w| w == &content[..40]) {
            hit = Some((path, at + 1000));
            break;
        }
    }
    let (path, at) = hit.expect("victim content in a segment file");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[at] ^= 0x04;
    std::fs::write(&path, &bytes).unwrap();

    let r = check_store(dir.path()).unwrap();
    let p = problems(&r);
    assert!(!r.is_clean());
    let seg = path.display().to_string();
    assert!(
        p.iter()
            .any(|l| l.contains("fails its checksum") && l.contains(&seg)),
        "the damaged buffer is reported with the segment file's path: {p:?}"
    );
    assert!(
        r.damaged_files
            .iter()
            .any(|d| d.path == "/dir/victim" && d.parts.iter().any(|x| x.starts_with("data page"))),
        "the damaged file is named: {:?}",
        r.damaged_files
    );
    let (code, out, err) = fsck_bin(dir.path(), false);
    assert_eq!(code, 4, "stdout: {out}\nstderr: {err}");
    assert!(out.contains("/dir/victim"), "{out}");
    assert!(out.contains(&seg), "{out}");
    assert!(out.contains("problem(s) found"), "{out}");
    assert!(
        out.contains("What to do next:") && out.contains("restore them from a backup"),
        "fsck says what to do about the problems: {out}"
    );
}

#[test]
fn dangling_entry_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path());
    let e = engine(dir.path());
    let name = b"ghost";
    let entry = keys::DirEntry {
        name: name.to_vec(),
        ino: 999_999,
        kind: FileKind::Regular,
    };
    e.write(&[Mutation::put(
        ROOT_GROUP,
        keys::dirent_key(ROOT_INO, keys::name_hash(name)),
        keys::encode_dirents(&[entry]),
    )])
    .unwrap();
    e.close().unwrap();
    let r = check_store(dir.path()).unwrap();
    let p = problems(&r);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].contains("/ entry 'ghost'") && p[0].contains("inode 999999, which does not exist"),
        "{p:?}"
    );
    let (code, out, _) = fsck_bin(dir.path(), false);
    assert_eq!(code, 4);
    assert_eq!(
        out.lines().filter(|l| l.contains("ghost")).count(),
        1,
        "{out}"
    );
}

#[test]
fn wrong_link_count_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (f, _) = populate(dir.path());
    let e = engine(dir.path());
    let mut rec = inode(&e, f);
    assert_eq!(rec.nlink, 2, "f has a hard link");
    rec.nlink = 5;
    e.write(&[Mutation::put(rec.group, keys::inode_key(f), rec.encode())])
        .unwrap();
    e.close().unwrap();
    let r = check_store(dir.path()).unwrap();
    let p = problems(&r);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].contains(&format!("inode {f} (/a/f)")) && p[0].contains("nlink is 5 but 2 entries"),
        "{p:?}"
    );
}

#[test]
fn page_beyond_size_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (_, g) = populate(dir.path());
    let e = engine(dir.path());
    let mut rec = inode(&e, g);
    assert_eq!(rec.size, 5);
    rec.pages += 1;
    // Page 3 of a 5-byte file, with the page count kept right: only the size is wrong.
    e.write(&[
        Mutation::put(rec.group, keys::chunk_key(g, 3), vec![9u8; 100]),
        Mutation::put(rec.group, keys::inode_key(g), rec.encode()),
    ])
    .unwrap();
    e.close().unwrap();
    let r = check_store(dir.path()).unwrap();
    let p = problems(&r);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].contains(&format!("inode {g} (/c/g2)"))
            && p[0].contains("data page 3 ends at byte 12388, beyond the file's size 5"),
        "{p:?}"
    );
}

#[test]
fn directory_cycle_and_leaked_inode_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b);
    {
        let fs = open(dir.path());
        a = fs.mkdir(ROOT_INO, b"a", 0o755, 0, CALLER).unwrap().ino;
        b = fs.mkdir(a, b"b", 0o755, 0, CALLER).unwrap().ino;
        make_file(&fs, ROOT_INO, "x", b"x");
        fs.close().unwrap();
    }
    let e = engine(dir.path());
    // Move a's entry from the root into b (a/b/a), keeping counts right, and forget "x".
    let mut ra = inode(&e, a);
    ra.parent = b;
    let mut rb = inode(&e, b);
    rb.nlink += 1;
    let mut root = inode(&e, ROOT_INO);
    root.nlink -= 1;
    let entry = |name: &[u8], ino| keys::DirEntry {
        name: name.to_vec(),
        ino,
        kind: FileKind::Directory,
    };
    e.write(&[
        Mutation::delete(
            ROOT_GROUP,
            keys::dirent_key(ROOT_INO, keys::name_hash(b"a")),
        ),
        Mutation::delete(
            ROOT_GROUP,
            keys::dirent_key(ROOT_INO, keys::name_hash(b"x")),
        ),
        Mutation::put(
            ROOT_GROUP,
            keys::dirent_key(b, keys::name_hash(b"a")),
            keys::encode_dirents(&[entry(b"a", a)]),
        ),
        Mutation::put(ROOT_GROUP, keys::inode_key(a), ra.encode()),
        Mutation::put(ROOT_GROUP, keys::inode_key(b), rb.encode()),
        Mutation::put(ROOT_GROUP, keys::inode_key(ROOT_INO), root.encode()),
    ])
    .unwrap();
    e.close().unwrap();
    let r = check_store(dir.path()).unwrap();
    let p = problems(&r);
    assert!(
        p.iter().any(|l| l.contains("directory cycle")),
        "cycle: {p:?}"
    );
    assert!(
        p.iter()
            .any(|l| l.contains("named by no entry") && l.contains("leaked")),
        "leaked x: {p:?}"
    );
    // x was also counted as a link of nothing: nlink 1, 0 entries.
    assert!(
        p.iter().any(|l| l.contains("nlink is 1 but 0 entries")),
        "{p:?}"
    );
}

#[test]
fn store_in_use_exits_8_and_bad_arguments_16() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path());
    {
        let _held = engine(dir.path());
        let (code, out, err) = fsck_bin(dir.path(), false);
        assert_eq!(code, 8, "stdout: {out}\nstderr: {err}");
        assert!(err.contains("in use") && err.contains("unmounted"), "{err}");
        assert_eq!(err.lines().count(), 1, "one readable line: {err}");
    }
    let empty = tempfile::tempdir().unwrap();
    let (code, _, err) = fsck_bin(empty.path(), false);
    assert_eq!(code, 8);
    assert!(err.contains("no logstorfs store"), "{err}");
    assert_eq!(
        std::fs::read_dir(empty.path()).unwrap().count(),
        0,
        "nothing created in a non-store"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_logstorfs"))
        .args(["fsck"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(16), "usage error, as fsck(8) says");
    let out = Command::new(env!("CARGO_BIN_EXE_logstorfs"))
        .args(["fsck", "--no-such-option", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(16), "usage error, as fsck(8) says");
    let out = Command::new(env!("CARGO_BIN_EXE_logstorfs"))
        .args(["fsck", "--help"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("--json"));
}

#[test]
fn damaged_superblock_is_a_problem() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path());
    let sb = dir.path().join("superblock");
    let mut bytes = std::fs::read(&sb).unwrap();
    bytes[13] ^= 1;
    std::fs::write(&sb, &bytes).unwrap();
    let (code, out, err) = fsck_bin(dir.path(), false);
    assert_eq!(code, 4, "stdout: {out}\nstderr: {err}");
    assert!(
        out.contains("superblock: superblock checksum mismatch"),
        "{out}"
    );
}

#[test]
fn orphan_record_of_a_linked_file_and_leaked_pages_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (f, _) = populate(dir.path());
    let e = engine(dir.path());
    // The next mount would purge f, which two entries still name; and pages of an inode that
    // never existed.
    e.write(&[
        Mutation::put(ROOT_GROUP, keys::orphan_key(f), Vec::new()),
        Mutation::put(ROOT_GROUP, keys::chunk_key(777_777, 0), vec![1u8; 10]),
    ])
    .unwrap();
    e.close().unwrap();
    let r = check_store(dir.path()).unwrap();
    let p = problems(&r);
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(
        p.iter().any(|l| l.contains(&format!("inode {f} (/a/f)"))
            && l.contains("recorded as an orphan but has nlink 2 and 2 entries")),
        "{p:?}"
    );
    assert!(
        p.iter().any(|l| l.contains("inode 777777")
            && l.contains("data page(s) of an inode that does not exist")),
        "{p:?}"
    );
}

#[test]
fn group_roots_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    // A real split: a directory past the (small) split size becomes a group root; fsck is
    // clean and counts it.
    {
        let engine = Engine::open(dir.path(), &options(128 << 20)).unwrap();
        let fs = logstorfs::fs::Fs::with_options(
            engine,
            logstorfs::fs::FsOptions {
                group_split_bytes: 64 << 10,
                ..Default::default()
            },
        )
        .unwrap();
        let big = fs.mkdir(ROOT_INO, b"big", 0o755, 0, CALLER).unwrap().ino;
        make_file(&fs, big, "f", &vec![3u8; 100 << 10]);
        assert_ne!(fs.group_of_dir(big), ROOT_GROUP, "/big did not split off");
        fs.close().unwrap();
    }
    let r = check_store(dir.path()).unwrap();
    assert!(r.is_clean(), "{:?}", problems(&r));
    assert_eq!(r.figures.group_roots, 1);
    // Damage: a root record of a directory that does not exist, one of a regular file, one
    // for the root directory, and a second root claiming the same group.
    let e = engine(dir.path());
    let file_ino = {
        let list = e.scan(&keys::dirent_prefix(ROOT_INO), None, 10).unwrap();
        let big = keys::decode_dirents(&list[0].1).unwrap()[0].ino;
        let inner = e.scan(&keys::dirent_prefix(big), None, 10).unwrap();
        keys::decode_dirents(&inner[0].1).unwrap()[0].ino
    };
    e.write(&[
        Mutation::put(
            ROOT_GROUP,
            keys::group_root_key(999_999),
            keys::encode_group(77),
        ),
        Mutation::put(
            ROOT_GROUP,
            keys::group_root_key(file_ino),
            keys::encode_group(78),
        ),
        Mutation::put(
            ROOT_GROUP,
            keys::group_root_key(ROOT_INO),
            keys::encode_group(79),
        ),
        Mutation::put(
            ROOT_GROUP,
            keys::group_root_key(999_998),
            keys::encode_group(77),
        ),
    ])
    .unwrap();
    e.close().unwrap();
    let r = check_store(dir.path()).unwrap();
    let p = problems(&r);
    assert!(
        p.iter()
            .any(|l| l.contains("group root record of missing directory 999999")),
        "{p:?}"
    );
    assert!(p.iter().any(|l| l.contains("not a directory")), "{p:?}");
    assert!(
        p.iter()
            .any(|l| l.contains("the root group is the root directory's alone")),
        "{p:?}"
    );
    assert!(
        p.iter().any(|l| l.contains("group 77 has two roots")),
        "{p:?}"
    );
}

/// Issue 6: a data page that compaction copied into a group-owned segment (behind an earlier
/// pass's copies), its source freed, then damaged on disk. Nothing in the segment tells the
/// damage from a write torn by a power cut; the segment sync table (`synced.tbl`) proves the
/// copy was synced, so fsck names exactly the damaged page of the file (before: a note about a
/// torn write, and the intact copies beside it called lost).
#[test]
fn damaged_copy_made_by_compaction_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let segment_size = 256u64 << 10;
    let segments_per_file = 16u64;
    let content: Vec<u8> = b"copied-victim-content:"
        .iter()
        .cycle()
        .take(12_000)
        .copied()
        .collect();
    let (victim, copy_segment) = {
        let engine = Engine::open(
            dir.path(),
            &EngineOptions {
                segment_size_bytes: segment_size as u32,
                segments_per_file: segments_per_file as u32,
                ..options(32 << 20)
            },
        )
        .unwrap();
        let fs = logstorfs::fs::Fs::new(engine).unwrap();
        fs.engine().test_pause_background();
        let d = fs.mkdir(ROOT_INO, b"dir", 0o755, 0, CALLER).unwrap().ino;
        let mut copies = None;
        let mut victim = 0;
        for pass in 0..2 {
            let key = if pass == 0 {
                keys::inode_key(d)
            } else {
                victim = make_file(&fs, d, "victim", &content);
                keys::chunk_key(victim, 0)
            };
            // Junk that dies, then filler until the segment is closed: a sparse segment for
            // compaction to empty.
            for i in 0..3 {
                make_file(&fs, ROOT_INO, &format!("junk{i}"), &vec![7u8; 60 << 10]);
            }
            for i in 0..3 {
                fs.unlink(ROOT_INO, format!("junk{i}").as_bytes()).unwrap();
            }
            let mut n = 0;
            while !fs.engine().test_segment_of(&key).unwrap().1 {
                let name = format!("filler{pass}-{n}");
                make_file(&fs, ROOT_INO, &name, &vec![8u8; 100 << 10]);
                fs.fsync().unwrap();
                n += 1;
            }
            fs.fsync().unwrap();
            let (source, _) = fs.engine().test_segment_of(&key).unwrap();
            assert!(fs.engine().test_compact().unwrap() > 0);
            let (copy, _) = fs.engine().test_segment_of(&key).unwrap();
            assert_ne!(copy, source, "pass {pass}: compaction did not copy");
            assert_eq!(*copies.get_or_insert(copy), copy, "one segment of copies");
        }
        fs.close().unwrap();
        (victim, copies.unwrap())
    };
    // Flip a bit inside the victim's copy (the freed source's bytes are still in the file).
    let file = copy_segment as u64 / segments_per_file;
    let base = (copy_segment as u64 % segments_per_file) * segment_size;
    let path = dir.path().join(format!("seg-{file:06}"));
    let mut bytes = std::fs::read(&path).unwrap();
    let seg = &bytes[base as usize..(base + segment_size) as usize];
    let at = seg
        .windows(40)
        .position(|w| w == &content[..40])
        .expect("the copy is in its segment");
    assert!(at > 4096, "the copy is behind the first buffer of copies");
    bytes[base as usize + at + 1000] ^= 0x04;
    std::fs::write(&path, &bytes).unwrap();
    // No checkpoint: as after a crash, the next mount scans (fsck always does).
    let _ = std::fs::remove_file(dir.path().join("checkpoint"));

    let r = check_store(dir.path()).unwrap();
    let p = problems(&r);
    assert!(p.iter().any(|l| l.contains("fails its checksum")), "{p:?}");
    assert_eq!(
        r.damaged_files
            .iter()
            .map(|d| (d.ino, d.path.as_str(), d.parts.clone()))
            .collect::<Vec<_>>(),
        vec![(victim, "/dir/victim", vec!["data page 0".to_string()])],
        "exactly the damaged page is named; problems {p:?}"
    );
    // And the next mount fails reads of that page, and serves the rest of the file.
    let fs = open(dir.path());
    let ino = resolve(&fs, "/dir/victim").unwrap();
    assert!(fs.read(ino, 0, 4096).is_err(), "the damaged page reads");
    assert_eq!(fs.read(ino, 4096, 8192).unwrap(), &content[4096..12_000]);
}

/// Issue 6 for the log: a data page rewritten into the last buffer of a mixed segment that then
/// closed and was synced (later writes went to the next segment), then damaged on disk; older
/// versions of the page are still in earlier buffers. Nothing in the segment vouches for its
/// last buffer; the sync table entry written for the closed log segment does. fsck names exactly
/// the damaged page of the file (before: the intact inode record beside it was called lost
/// too), and the next mount (a full scan, as after a crash) fails reads of that page instead of
/// serving an older version.
#[test]
fn damaged_last_buffer_of_a_closed_log_segment_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let segment_size = 256u64 << 10;
    let segments_per_file = 16u64;
    let page = |n: u8| -> Vec<u8> {
        let mut v: Vec<u8> = b"log-victim-page:"
            .iter()
            .cycle()
            .take(4096)
            .copied()
            .collect();
        v[0] = n;
        v
    };
    let (victim, segment, last) = {
        let engine = Engine::open(
            dir.path(),
            &EngineOptions {
                segment_size_bytes: segment_size as u32,
                segments_per_file: segments_per_file as u32,
                ..options(32 << 20)
            },
        )
        .unwrap();
        let fs = logstorfs::fs::Fs::new(engine).unwrap();
        fs.engine().test_pause_background();
        let victim = make_file(&fs, ROOT_INO, "victim", &page(0));
        fs.fsync().unwrap();
        let key = keys::chunk_key(victim, 0);
        let mut found = None;
        for n in 1..200u8 {
            fs.write(victim, 0, &page(n)).unwrap();
            fs.fsync().unwrap();
            let (segment, closed) = fs.engine().test_segment_of(&key).unwrap();
            if closed {
                // Its buffer closed the segment: nothing follows it there.
                found = Some((segment, n));
                break;
            }
            make_file(&fs, ROOT_INO, &format!("filler{n}"), &[n; 100]);
            fs.fsync().unwrap();
        }
        let (segment, last) = found.expect("the page ends a segment");
        // Later writes, in the next segment, synced.
        make_file(&fs, ROOT_INO, "later", b"later");
        fs.fsync().unwrap();
        fs.close().unwrap();
        (victim, segment, last)
    };
    let file = segment as u64 / segments_per_file;
    let base = (segment as u64 % segments_per_file) * segment_size;
    let path = dir.path().join(format!("seg-{file:06}"));
    let mut bytes = std::fs::read(&path).unwrap();
    let seg = &bytes[base as usize..(base + segment_size) as usize];
    let newest = page(last);
    let at = seg
        .windows(64)
        .rposition(|w| w == &newest[..64])
        .expect("the page is in its segment");
    bytes[base as usize + at + 1000] ^= 0x04;
    std::fs::write(&path, &bytes).unwrap();
    // No checkpoint: as after a crash, the next mount scans (fsck always does).
    let _ = std::fs::remove_file(dir.path().join("checkpoint"));

    let r = check_store(dir.path()).unwrap();
    let p = problems(&r);
    assert!(p.iter().any(|l| l.contains("fails its checksum")), "{p:?}");
    assert_eq!(
        r.damaged_files
            .iter()
            .map(|d| (d.ino, d.path.as_str(), d.parts.clone()))
            .collect::<Vec<_>>(),
        vec![(victim, "/victim", vec!["data page 0".to_string()])],
        "exactly the damaged page is named; problems {p:?}"
    );
    let fs = open(dir.path());
    let ino = resolve(&fs, "/victim").unwrap();
    assert!(
        fs.read(ino, 0, 4096).is_err(),
        "the damaged page reads as {:?}",
        fs.read(ino, 0, 4096).map(|v| v[0])
    );
    assert_eq!(
        fs.read(resolve(&fs, "/later").unwrap(), 0, 100).unwrap(),
        b"later"
    );
    let _ = last;
}

/// Issue 6: media damage in three adjacent buffers of the log (each holding the newest version
/// of one file's page, every one of them with an older version earlier in the log), with a
/// valid buffer behind them. fsck names every damaged file, not only the one of the first
/// buffer (before, the records of the later buffers of the stretch were not read at all), and
/// the next mount fails reads of every damaged page instead of serving an older version.
#[test]
fn damaged_stretch_of_several_log_buffers_names_every_file() {
    let dir = tempfile::tempdir().unwrap();
    let page = |n: u8| -> Vec<u8> {
        let mut v: Vec<u8> = b"stretch-victim-page:"
            .iter()
            .cycle()
            .take(4096)
            .copied()
            .collect();
        v[0] = n;
        v
    };
    let victims: Vec<u64> = {
        let fs = open(dir.path());
        fs.engine().test_pause_background();
        let victims: Vec<u64> = (0..3u8)
            .map(|i| make_file(&fs, ROOT_INO, &format!("v{i}"), &page(10 + i)))
            .collect();
        make_file(&fs, ROOT_INO, "before", b"before");
        fs.fsync().unwrap();
        // One buffer each for the newest pages (a sync seals the buffer).
        for (i, &ino) in victims.iter().enumerate() {
            fs.write(ino, 0, &page(20 + i as u8)).unwrap();
            fs.fsync().unwrap();
        }
        // A valid buffer behind them proves the stretch durable.
        make_file(&fs, ROOT_INO, "later", b"later");
        fs.fsync().unwrap();
        fs.close().unwrap();
        victims
    };
    let path = dir.path().join("seg-000000");
    let mut bytes = std::fs::read(&path).unwrap();
    let mut hits = Vec::new();
    for i in 0..3u8 {
        let newest = page(20 + i);
        let at = bytes
            .windows(64)
            .rposition(|w| w == &newest[..64])
            .expect("the page is in the first segment file");
        bytes[at + 1000] ^= 0x04;
        hits.push(at);
    }
    assert!(
        hits.windows(2)
            .all(|w| w[0] / 4096 + 1 < w[1] / 4096 && w[1] - w[0] < 3 * 4096),
        "one buffer per page, adjacent: {hits:?}"
    );
    std::fs::write(&path, &bytes).unwrap();
    // No checkpoint: as after a crash, the next mount scans (fsck always does).
    let _ = std::fs::remove_file(dir.path().join("checkpoint"));

    let r = check_store(dir.path()).unwrap();
    let p = problems(&r);
    assert!(p.iter().any(|l| l.contains("fails its checksum")), "{p:?}");
    for (i, &ino) in victims.iter().enumerate() {
        let name = format!("/v{i}");
        assert!(
            r.damaged_files.iter().any(|d| d.ino == ino
                && d.path == name
                && d.parts.iter().any(|x| x == "data page 0")),
            "{name} is not named: {:?}; problems {p:?}",
            r.damaged_files
        );
    }
    let fs = open(dir.path());
    for i in 0..3 {
        let ino = resolve(&fs, &format!("/v{i}")).unwrap();
        assert!(
            fs.read(ino, 0, 4096).is_err(),
            "the damaged page of /v{i} reads as {:?}",
            fs.read(ino, 0, 4096).map(|v| v[0])
        );
    }
    for name in ["before", "later"] {
        let ino = resolve(&fs, &format!("/{name}")).unwrap();
        assert_eq!(fs.read(ino, 0, 100).unwrap(), name.as_bytes());
    }
}
