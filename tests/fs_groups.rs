//! Directories as compaction groups (`fs::groups`, DESIGN.md section 3), through the `Fs` core:
//! a directory splits off as a group root past `FsOptions::group_split_bytes` of live data under
//! it (the deepest such directory on the written file's chain), merges back below a quarter of
//! it (and not at or above: hysteresis), keeps its root and byte count across a remount (the
//! counts are rebuilt from the inode records), keeps its group through a rename, and a renamed
//! file or directory takes its bytes along. Records written after a split go to the new group,
//! and once the separator has run every group-owned segment holds live records of its own group
//! only. `rm -r` of a group root leaves the group owning no segment, freed whole (no copying).
//! Reads stay exact while writers make directories split and merge many times and the separator
//! runs, and after a remount.
//!
//! Method: an `Fs` with a small split threshold (1 MiB, 256 KiB for the concurrency test) on a
//! fresh engine in a temporary directory; the group map is observed through `group_of_dir` and
//! `group_roots`, the engine through `stats()` and its test hooks (`test_separate`,
//! `test_reclaim`, `test_compact`, `test_segment_images` with `test_live_groups_in`). Byte
//! counts are exact: a file counts its stored pages * 4 KiB. The concurrency test has 3 writers,
//! each in its own tree /w{t}/a/b/c, growing a 320 KiB file in a, b or c in turn (a split) then
//! shrinking and unlinking it (a merge), and rewriting small "watched" files whose every page
//! carries (file, generation, index) and a body derived from them; 2 readers check every page of
//! the watched files against the generations published before and begun after each read, while a
//! thread runs the separator (and now and then compaction) in a loop. Splits and merges are
//! counted by each writer from `group_roots` after each of its operations (only it changes the
//! bytes under its tree), and everything is read back exactly before and after a remount, with
//! the offline checker (`fs::check::check_store`) in between.

mod fs_common;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use fs_common::*;
use logstorfs::engine::{Engine, GroupId, ROOT_GROUP};
use logstorfs::fs::groups::GroupRoot;
use logstorfs::fs::{Fs, FsError, FsOptions, ROOT_INO, SetAttr};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const PAGE: u64 = 4096;

/// An `Fs` whose directories split past `split` bytes, on a 256 MiB store in `dir`.
fn open_grouped(dir: &Path, split: u64) -> Fs {
    let engine = Engine::open(dir, &options(256 << 20)).expect("open engine");
    Fs::with_options(
        engine,
        FsOptions {
            group_split_bytes: split,
            ..Default::default()
        },
    )
    .expect("mount fs")
}

fn mkdir(fs: &Fs, parent: u64, name: &str) -> u64 {
    fs.mkdir(parent, name.as_bytes(), 0o755, 0, CALLER)
        .expect("mkdir")
        .ino
}

/// Creates `name` in `parent` with `data`, written in `chunk`-byte writes (one `fs.write`
/// each, so that a split decided after one write sends the following writes to the new group).
fn write_file(fs: &Fs, parent: u64, name: &str, data: &[u8], chunk: usize) -> u64 {
    let (attr, fh) = fs
        .create(parent, name.as_bytes(), 0o644, 0o022, CALLER)
        .expect("create");
    let mut off = 0;
    for c in data.chunks(chunk) {
        assert_eq!(
            fs.write(attr.ino, off as u64, c).expect("write") as usize,
            c.len()
        );
        off += c.len();
    }
    fs.release(attr.ino, fh).expect("release");
    attr.ino
}

fn truncate(fs: &Fs, ino: u64, size: u64) {
    fs.setattr(
        ino,
        &SetAttr {
            size: Some(size),
            ..Default::default()
        },
    )
    .expect("truncate");
}

/// The root entry of `dir`, if it is a group root.
fn root_entry(fs: &Fs, dir: u64) -> Option<GroupRoot> {
    fs.group_roots().into_iter().find(|r| r.dir == dir)
}

/// The bytes the root directory's group holds (outside deeper roots).
fn root_dir_bytes(fs: &Fs) -> u64 {
    root_entry(fs, ROOT_INO)
        .expect("the root directory is always a root")
        .bytes
}

/// Segments and live bytes the engine's stats give group `g` (0, 0 if not listed).
fn group_stats(fs: &Fs, g: GroupId) -> (u64, u64) {
    fs.engine()
        .stats()
        .groups
        .iter()
        .find(|s| s.id == g)
        .map_or((0, 0), |s| (s.segments, s.live_bytes))
}

/// Every group-owned segment holds live records of its own group only. Returns the number of
/// live records seen per group.
fn assert_group_segments_are_pure(fs: &Fs) -> HashMap<GroupId, usize> {
    let mut seen = HashMap::new();
    for (segment, group_owned, group, _closed, image) in fs.engine().test_segment_images() {
        if !group_owned {
            continue;
        }
        let live = fs.engine().test_live_groups_in(segment, &image);
        let foreign: Vec<u32> = live.iter().copied().filter(|&g| g != group).collect();
        assert!(
            foreign.is_empty(),
            "segment {segment} owned by group {group} holds live records of groups {foreign:?}"
        );
        *seen.entry(group).or_insert(0) += live.len();
    }
    seen
}

#[test]
fn a_directory_over_the_threshold_splits_and_its_new_records_go_to_its_own_segments() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open_grouped(dir.path(), MIB);
    let a = mkdir(&fs, ROOT_INO, "a");
    let b = mkdir(&fs, a, "b");
    assert_eq!(fs.group_of_dir(b), ROOT_GROUP);
    let data = pattern((2 * MIB) as usize, 1);
    let f = write_file(&fs, b, "f", &data, (128 * KIB) as usize);

    // The deepest directory over the threshold (b, not a) is the new root.
    let g = fs.group_of_dir(b);
    assert_ne!(
        g, ROOT_GROUP,
        "/a/b holds 2 MiB > 1 MiB: it must be a group root"
    );
    assert_eq!(
        fs.group_of_dir(a),
        ROOT_GROUP,
        "/a must stay in the root group"
    );
    assert_eq!(fs.group_of_dir(ROOT_INO), ROOT_GROUP);
    let roots = fs.group_roots();
    assert_eq!(
        roots,
        vec![
            GroupRoot {
                group: ROOT_GROUP,
                dir: ROOT_INO,
                bytes: 0
            },
            GroupRoot {
                group: g,
                dir: b,
                bytes: 2 * MIB
            }
        ],
        "the bytes of /a/b leave the root group's count"
    );

    // A directory created under the root afterwards is in its group, and so are its bytes.
    let c = mkdir(&fs, b, "c");
    assert_eq!(fs.group_of_dir(c), g);
    write_file(&fs, c, "small", &pattern(10_000, 2), 4096);
    assert_eq!(root_entry(&fs, b).unwrap().bytes, 2 * MIB + 3 * PAGE);
    assert_eq!(root_dir_bytes(&fs), 0);

    // After the separator the new group owns segments holding its records, and no group-owned
    // segment holds anything but its own group's live records.
    fs.engine().test_separate().expect("separate");
    let (segments, live) = group_stats(&fs, g);
    assert!(
        segments > 0 && live > 0,
        "group {g} owns {segments} segments with {live} live bytes after the separator; stats: {:?}",
        fs.engine().stats().groups
    );
    let seen = assert_group_segments_are_pure(&fs);
    assert!(
        seen.get(&g).copied().unwrap_or(0) > 0,
        "no live record of group {g} in its segments: {seen:?}"
    );
    fs.engine().test_compact().expect("compact");
    assert_group_segments_are_pure(&fs);
    assert!(read_all(&fs, f) == data, "/a/b/f reads back wrong");
    fs.close().unwrap();
}

#[test]
fn a_root_merges_back_below_a_quarter_and_not_at_it() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open_grouped(dir.path(), MIB);
    let a = mkdir(&fs, ROOT_INO, "a");
    let b = mkdir(&fs, a, "b");
    write_file(
        &fs,
        b,
        "f",
        &pattern((2 * MIB) as usize, 1),
        (128 * KIB) as usize,
    );
    let g = fs.group_of_dir(b);
    assert_ne!(g, ROOT_GROUP, "2 MiB in /a/b must split it");
    let c = mkdir(&fs, b, "c");
    let keep_data = pattern((300 * KIB) as usize, 3);
    let keep = write_file(&fs, c, "keep", &keep_data, (64 * KIB) as usize);
    assert_eq!(root_entry(&fs, b).unwrap().bytes, 2 * MIB + 300 * KIB);

    // 300 KiB left: at or above a quarter of 1 MiB, still a root.
    fs.unlink(b, b"f").unwrap();
    assert_eq!(
        root_entry(&fs, b),
        Some(GroupRoot {
            group: g,
            dir: b,
            bytes: 300 * KIB
        }),
        "300 KiB >= 256 KiB: /a/b must stay a root"
    );
    assert_eq!(fs.group_of_dir(c), g);
    // Exactly a quarter: still a root.
    truncate(&fs, keep, 256 * KIB);
    assert_eq!(root_entry(&fs, b).map(|r| r.bytes), Some(256 * KIB));
    assert_eq!(fs.group_of_dir(b), g, "256 KiB is not below a quarter");
    // One byte less keeps the same stored pages: still a root.
    truncate(&fs, keep, 256 * KIB - 1);
    assert_eq!(fs.group_of_dir(b), g);
    // One page less: below a quarter, merges back; its bytes count towards the root group.
    truncate(&fs, keep, 252 * KIB);
    assert_eq!(
        fs.group_of_dir(b),
        ROOT_GROUP,
        "252 KiB < 256 KiB must merge"
    );
    assert_eq!(fs.group_of_dir(c), ROOT_GROUP);
    assert_eq!(root_entry(&fs, b), None);
    assert_eq!(fs.group_roots().len(), 1, "{:?}", fs.group_roots());
    assert_eq!(root_dir_bytes(&fs), 252 * KIB);
    assert!(read_all(&fs, keep) == keep_data[..(252 * KIB) as usize]);

    // Growing again: exactly the threshold does not split, one page more does, with a new id.
    let h = write_file(
        &fs,
        b,
        "h",
        &pattern((772 * KIB) as usize, 4),
        (64 * KIB) as usize,
    );
    assert_eq!(root_dir_bytes(&fs), MIB);
    assert_eq!(
        fs.group_of_dir(b),
        ROOT_GROUP,
        "exactly 1 MiB is not over the threshold"
    );
    fs.write(h, 772 * KIB, &[7u8; 1]).unwrap();
    let g2 = fs.group_of_dir(b);
    assert_ne!(g2, ROOT_GROUP, "1 MiB + 4 KiB must split /a/b");
    assert_ne!(g2, g, "a new split takes a new group id");
    assert_eq!(root_entry(&fs, b).unwrap().bytes, MIB + PAGE);
    assert_eq!(root_dir_bytes(&fs), 0);
    fs.close().unwrap();
}

#[test]
fn roots_and_their_bytes_survive_a_remount_and_new_ids_avoid_groups_with_segments() {
    let dir = tempfile::tempdir().unwrap();
    let big = pattern((2 * MIB) as usize, 5);
    let small = pattern((200 * KIB) as usize, 6);
    let (b, g) = {
        let fs = open_grouped(dir.path(), MIB);
        let a = mkdir(&fs, ROOT_INO, "a");
        let b = mkdir(&fs, a, "b");
        write_file(&fs, b, "big", &big, (128 * KIB) as usize);
        let g = fs.group_of_dir(b);
        assert_ne!(g, ROOT_GROUP);
        // Written after the split: in group g.
        write_file(&fs, b, "small", &small, (64 * KIB) as usize);
        fs.engine().test_separate().expect("separate");
        assert!(group_stats(&fs, g).0 > 0, "group {g} owns no segment");
        fs.close().unwrap();
        (b, g)
    };
    assert_fsck_clean(dir.path());

    // Remount: same root, same id, same bytes (rebuilt from the inode records).
    {
        let fs = open_grouped(dir.path(), MIB);
        // No compaction here: it would move "small" to the root's group once /a/b merges, and
        // group g would own nothing for the check below (the background wakes for the pending
        // range delete of the unlink).
        fs.engine().test_pause_background();
        assert_eq!(resolve(&fs, "a/b").unwrap(), b);
        assert_eq!(
            fs.group_roots(),
            vec![
                GroupRoot {
                    group: ROOT_GROUP,
                    dir: ROOT_INO,
                    bytes: 0
                },
                GroupRoot {
                    group: g,
                    dir: b,
                    bytes: 2 * MIB + 200 * KIB
                }
            ]
        );
        // The counts are live: deleting the big file (200 KiB left < 256 KiB) merges.
        fs.unlink(b, b"big").unwrap();
        assert_eq!(
            fs.group_of_dir(b),
            ROOT_GROUP,
            "200 KiB left must merge /a/b"
        );
        assert_eq!(fs.group_roots().len(), 1);
        assert_eq!(root_dir_bytes(&fs), 200 * KIB);
        fs.close().unwrap();
    }

    // Second remount: the merge persisted; group g has no root any more but still owns the
    // segments holding "small", so a new split must not reuse its id.
    let fs = open_grouped(dir.path(), MIB);
    assert_eq!(fs.group_of_dir(b), ROOT_GROUP, "the merge must persist");
    assert_eq!(fs.group_roots().len(), 1, "{:?}", fs.group_roots());
    assert_eq!(root_dir_bytes(&fs), 200 * KIB);
    let held: BTreeSet<GroupId> = fs
        .engine()
        .stats()
        .groups
        .iter()
        .filter(|s| s.segments > 0)
        .map(|s| s.id)
        .collect();
    assert!(
        held.contains(&g),
        "precondition: merged-away group {g} still owns segments (stats: {:?})",
        fs.engine().stats().groups
    );
    let z = mkdir(&fs, ROOT_INO, "z");
    write_file(
        &fs,
        z,
        "f",
        &pattern((1100 * KIB) as usize, 7),
        (128 * KIB) as usize,
    );
    let g3 = fs.group_of_dir(z);
    assert_ne!(g3, ROOT_GROUP, "1100 KiB must split /z");
    assert!(
        !held.contains(&g3),
        "new group id {g3} is one the engine still holds segments for: {held:?}"
    );
    let small_ino = resolve(&fs, "a/b/small").unwrap();
    assert!(read_all(&fs, small_ino) == small);
    fs.close().unwrap();
    assert_fsck_clean(dir.path());
}

#[test]
fn a_renamed_group_root_keeps_its_group() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open_grouped(dir.path(), MIB);
    let x = mkdir(&fs, ROOT_INO, "x");
    let y = mkdir(&fs, ROOT_INO, "y");
    let big = mkdir(&fs, x, "big");
    let data = pattern((2 * MIB) as usize, 8);
    let f = write_file(&fs, big, "f", &data, (128 * KIB) as usize);
    let sub = mkdir(&fs, big, "sub");
    let g = fs.group_of_dir(big);
    assert_ne!(g, ROOT_GROUP);
    let root_bytes = root_dir_bytes(&fs);
    fs.rename(x, b"big", y, b"big", 0).unwrap();
    assert_eq!(resolve(&fs, "y/big").unwrap(), big);
    assert_eq!(fs.group_of_dir(big), g, "a renamed root keeps its group");
    assert_eq!(fs.group_of_dir(sub), g);
    assert_eq!(fs.group_of_dir(x), ROOT_GROUP);
    assert_eq!(fs.group_of_dir(y), ROOT_GROUP);
    assert_eq!(
        root_entry(&fs, big),
        Some(GroupRoot {
            group: g,
            dir: big,
            bytes: 2 * MIB
        })
    );
    assert_eq!(
        root_dir_bytes(&fs),
        root_bytes,
        "a root's bytes never count above it"
    );
    assert!(read_all(&fs, f) == data);
    fs.close().unwrap();
}

#[test]
fn a_directory_renamed_under_another_takes_its_bytes_and_can_split_it() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open_grouped(dir.path(), MIB);
    let p = mkdir(&fs, ROOT_INO, "p");
    let q = mkdir(&fs, p, "q");
    let r = mkdir(&fs, ROOT_INO, "r");
    write_file(
        &fs,
        q,
        "f",
        &pattern((700 * KIB) as usize, 9),
        (64 * KIB) as usize,
    );
    write_file(
        &fs,
        r,
        "f",
        &pattern((500 * KIB) as usize, 10),
        (64 * KIB) as usize,
    );
    assert_eq!(fs.group_roots().len(), 1, "nothing is over 1 MiB yet");
    assert_eq!(root_dir_bytes(&fs), 1200 * KIB);
    fs.rename(p, b"q", r, b"q", 0).unwrap();
    // /r now holds 1200 KiB (its own 500 + q's 700), /r/q 700: /r is the deepest over.
    let g = fs.group_of_dir(r);
    assert_ne!(
        g, ROOT_GROUP,
        "/r holds 1200 KiB after the rename: it must split"
    );
    assert_eq!(fs.group_of_dir(q), g, "/r/q is under the new root");
    assert_eq!(fs.group_of_dir(p), ROOT_GROUP);
    assert_eq!(
        root_entry(&fs, q),
        None,
        "/r/q (700 KiB) must not be a root"
    );
    assert_eq!(
        root_entry(&fs, r),
        Some(GroupRoot {
            group: g,
            dir: r,
            bytes: 1200 * KIB
        })
    );
    assert_eq!(
        root_dir_bytes(&fs),
        0,
        "/p lost q's bytes, /r's left with it"
    );
    fs.close().unwrap();
}

#[test]
fn a_file_renamed_out_of_its_home_takes_its_bytes_along() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open_grouped(dir.path(), MIB);
    let s = mkdir(&fs, ROOT_INO, "s");
    let t = mkdir(&fs, ROOT_INO, "t");
    let big_data = pattern((2 * MIB) as usize, 11);
    let small_data = pattern((400 * KIB) as usize, 12);
    let big = write_file(&fs, s, "big", &big_data, (128 * KIB) as usize);
    let small = write_file(&fs, s, "small", &small_data, (64 * KIB) as usize);
    let gs = fs.group_of_dir(s);
    assert_ne!(gs, ROOT_GROUP);
    assert_eq!(root_entry(&fs, s).unwrap().bytes, 2 * MIB + 400 * KIB);
    assert_eq!(root_dir_bytes(&fs), 0);

    fs.rename(s, b"small", t, b"small", 0).unwrap();
    assert_eq!(
        root_entry(&fs, s).map(|r| r.bytes),
        Some(2 * MIB),
        "the renamed file's 400 KiB must leave /s"
    );
    assert_eq!(root_dir_bytes(&fs), 400 * KIB, "and count under /t");

    // Moving the big file too: /s drops to 0 and merges, /t goes to 2.4 MiB and splits.
    fs.rename(s, b"big", t, b"big", 0).unwrap();
    assert_eq!(fs.group_of_dir(s), ROOT_GROUP, "/s is empty: it must merge");
    let gt = fs.group_of_dir(t);
    assert_ne!(gt, ROOT_GROUP, "/t holds 2.4 MiB: it must split");
    assert_ne!(gt, gs);
    assert_eq!(
        fs.group_roots(),
        vec![
            GroupRoot {
                group: ROOT_GROUP,
                dir: ROOT_INO,
                bytes: 0
            },
            GroupRoot {
                group: gt,
                dir: t,
                bytes: 2 * MIB + 400 * KIB
            }
        ]
    );
    // Rewrites of the moved files follow their new home.
    fs.write(small, 0, &small_data[..4096]).unwrap();
    assert!(read_all(&fs, small) == small_data);
    assert!(read_all(&fs, big) == big_data);
    fs.close().unwrap();
    // The home directories persisted with the renames: the same counts after a remount.
    let fs = open_grouped(dir.path(), MIB);
    assert_eq!(
        root_entry(&fs, t).map(|r| r.bytes),
        Some(2 * MIB + 400 * KIB)
    );
    assert_eq!(root_dir_bytes(&fs), 0);
    fs.close().unwrap();
}

#[test]
fn rm_r_of_a_group_root_leaves_the_group_owning_no_segments_freed_whole() {
    rm_r_of_a_group_root(false);
}

#[test]
fn rm_r_of_a_group_root_then_more_writes_leaves_the_group_owning_no_segments() {
    rm_r_of_a_group_root(true);
}

/// `rm -r /g` of a root holding ~5.5 MiB (and a nested root /g/sub), then one separator pass
/// and a reclaim: both groups own no segment, and nothing was copied. With `more_writes`, data
/// written after the removal first closes the mixed segment holding the deletes.
fn rm_r_of_a_group_root(more_writes: bool) {
    let dir = tempfile::tempdir().unwrap();
    let fs = open_grouped(dir.path(), MIB);
    let g_dir = mkdir(&fs, ROOT_INO, "g");
    let sub = mkdir(&fs, g_dir, "sub");
    // Enough that the split comes early and most records are written into the new group.
    write_file(
        &fs,
        g_dir,
        "f0",
        &pattern((1100 * KIB) as usize, 20),
        (64 * KIB) as usize,
    );
    let g = fs.group_of_dir(g_dir);
    assert_ne!(g, ROOT_GROUP, "1100 KiB must split /g");
    for i in 1..4 {
        write_file(
            &fs,
            g_dir,
            &format!("f{i}"),
            &pattern(MIB as usize, 20 + i),
            (64 * KIB) as usize,
        );
    }
    for i in 0..3 {
        write_file(
            &fs,
            sub,
            &format!("s{i}"),
            &pattern((512 * KIB) as usize, 30 + i),
            (64 * KIB) as usize,
        );
    }
    // Something else in the root group, kept.
    let other = mkdir(&fs, ROOT_INO, "other");
    let keep_data = pattern((300 * KIB) as usize, 40);
    let keep = write_file(&fs, other, "keep", &keep_data, (64 * KIB) as usize);
    // This test decides alone when the separator and the reclaimer run.
    fs.engine().test_pause_background();
    // /g/sub holds 1.5 MiB: it splits too, as a root nested in /g's group.
    let g_sub = fs.group_of_dir(sub);
    assert!(
        g_sub != ROOT_GROUP && g_sub != g,
        "/g/sub (1.5 MiB) must be a root of its own: group {g_sub}, /g's {g}"
    );
    fs.engine().test_separate().expect("separate");
    let owned: Vec<(GroupId, u64, u64)> = [g, g_sub]
        .iter()
        .map(|&x| {
            let (segments, live) = group_stats(&fs, x);
            (x, segments, live)
        })
        .collect();
    for &(x, segments, live) in &owned {
        assert!(
            segments >= 1 && live > 0,
            "precondition: group {x} owns segments ({segments}, {live} live bytes)"
        );
    }
    assert_group_segments_are_pure(&fs);
    let before = fs.engine().stats();

    // rm -r /g, depth first.
    for i in 0..3 {
        fs.unlink(sub, format!("s{i}").as_bytes()).unwrap();
    }
    fs.rmdir(g_dir, b"sub").unwrap();
    for i in 0..4 {
        fs.unlink(g_dir, format!("f{i}").as_bytes()).unwrap();
    }
    fs.rmdir(ROOT_INO, b"g").unwrap();
    assert_eq!(fs.group_roots().len(), 1, "{:?}", fs.group_roots());
    // More data in the root group (in the root directory, which never splits) closes the mixed
    // segment holding the deletes, so that the separator sorts them while the removed groups'
    // segments are still there: the deletes must go to the root group, not keep the removed
    // groups alive.
    // Without them, the deletes stay in the active mixed segment: the separator has nothing to
    // sort and must still give up the groups' open segments.
    let roll_data = pattern((1536 * KIB) as usize, 41);
    let roll =
        more_writes.then(|| write_file(&fs, ROOT_INO, "roll", &roll_data, (128 * KIB) as usize));
    assert_eq!(fs.group_roots().len(), 1, "the root directory never splits");

    // One separator pass (which closes the groups' open segments, now empty) and a reclaim:
    // no compaction is needed to free them.
    let separated_segments = fs.engine().test_separate().expect("separate");
    let reclaimed = fs.engine().test_reclaim().expect("reclaim");
    let after = fs.engine().stats();
    for &(x, _, _) in &owned {
        let left = after.groups.iter().find(|s| s.id == x);
        assert!(
            left.is_none_or(|s| s.segments == 0),
            "after rm -r /g, a separator pass ({separated_segments} mixed segments) and a \
             reclaim ({reclaimed} freed), group {x} still owns segments: {left:?} (all groups: \
             {:?})",
            after.groups
        );
    }
    // Freed whole: the dead records were not copied anywhere.
    let held: u64 = owned.iter().map(|o| o.1).sum();
    let compacted = after.compaction_bytes_written - before.compaction_bytes_written;
    let separated = after.separator_bytes_written - before.separator_bytes_written;
    assert!(
        compacted <= 256 * KIB && separated <= 256 * KIB,
        "compaction copied {compacted} bytes, the separator {separated}: the groups' \
         segments ({owned:?}: group, segments, live bytes) were not freed whole"
    );
    assert!(
        after.segments_reclaimed >= before.segments_reclaimed + held,
        "{held} segments of the removed groups, {} reclaimed since",
        after.segments_reclaimed - before.segments_reclaimed
    );
    assert!(read_all(&fs, keep) == keep_data);
    if let Some(roll) = roll {
        assert!(read_all(&fs, roll) == roll_data);
    }
    fs.close().unwrap();
    assert_fsck_clean(dir.path());
}

// ----- concurrency -----

const WRITERS: u64 = 3;
const READERS: usize = 2;
const ROUNDS: u64 = 12;
const WATCHED_PAGES: u64 = 4;

/// A page of file `file` at generation `gen`: a header (file, generation, page index) and a
/// body derived from it, so that every page read can be checked on its own.
fn page_of(file: u64, generation: u64, index: u64) -> Vec<u8> {
    let mut p = pattern(PAGE as usize, file * 1_000_003 + generation * 7919 + index);
    p[..8].copy_from_slice(&file.to_le_bytes());
    p[8..16].copy_from_slice(&generation.to_le_bytes());
    p[16..24].copy_from_slice(&index.to_le_bytes());
    p
}

fn content_of(file: u64, generation: u64, pages: u64) -> Vec<u8> {
    (0..pages)
        .flat_map(|i| page_of(file, generation, i))
        .collect()
}

/// The generation of a page that must be `index` of `file`, or a description of what is wrong.
fn check_page(page: &[u8], file: u64, index: u64) -> Result<u64, String> {
    let word = |i: usize| u64::from_le_bytes(page[i * 8..i * 8 + 8].try_into().unwrap());
    let (f, generation, i) = (word(0), word(1), word(2));
    if f != file || i != index {
        return Err(format!(
            "page {index} of file {file} holds page {i} of file {f} (generation {generation})"
        ));
    }
    if page != page_of(file, generation, index) {
        return Err(format!(
            "page {index} of file {file} (generation {generation}): body differs"
        ));
    }
    Ok(generation)
}

/// A file whose generations the writer publishes: `published` is the newest generation whose
/// write returned; `started` the newest one begun.
struct Watched {
    id: u64,
    ino: u64,
    published: AtomicU64,
    started: AtomicU64,
}

/// Reads a watched file whole, checking each page: right file and index, intact, and of a
/// generation between the one published before the read and the one started after it.
fn read_watched(fs: &Fs, w: &Watched) {
    let low = w.published.load(Ordering::SeqCst);
    let fh = fs.open(w.ino).expect("open watched file");
    let mut data = Vec::new();
    loop {
        let chunk = fs
            .read(w.ino, data.len() as u64, 64 * 1024)
            .expect("read watched file");
        if chunk.is_empty() {
            break;
        }
        data.extend_from_slice(&chunk);
    }
    fs.release(w.ino, fh).expect("release");
    let high = w.started.load(Ordering::SeqCst);
    assert_eq!(
        data.len() as u64,
        WATCHED_PAGES * PAGE,
        "watched file {} has the wrong length",
        w.id
    );
    for (i, page) in data.chunks(PAGE as usize).enumerate() {
        let generation = check_page(page, w.id, i as u64).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            (low..=high).contains(&generation),
            "file {} page {i}: generation {generation}, expected {low}..={high}",
            w.id
        );
    }
}

#[test]
fn reads_stay_exact_while_directories_split_and_merge_under_writers_and_the_separator() {
    let dir = tempfile::tempdir().unwrap();
    let split = 256 * KIB;
    let fs = Arc::new(open_grouped(dir.path(), split));
    let stop = Arc::new(AtomicBool::new(false));
    let splits = Arc::new(AtomicU64::new(0));
    let merges = Arc::new(AtomicU64::new(0));

    // Each writer: /w{t}/a/b/c, a 4 KiB keeper file in a, b and c, a watched file (16 KiB) in
    // b and in c. Everything small stays under 64 KiB per chain, so the ballast decides.
    struct Tree {
        levels: [u64; 4], // w, a, b, c
        keepers: Vec<(u64, Vec<u8>)>,
        watched: Vec<Arc<Watched>>,
    }
    let mut trees = Vec::new();
    let mut all_watched: Vec<Arc<Watched>> = Vec::new();
    for t in 0..WRITERS {
        let w = mkdir(&fs, ROOT_INO, &format!("w{t}"));
        let a = mkdir(&fs, w, "a");
        let b = mkdir(&fs, a, "b");
        let c = mkdir(&fs, b, "c");
        let mut keepers = Vec::new();
        for (i, &d) in [a, b, c].iter().enumerate() {
            let data = pattern(PAGE as usize, 100 * t + i as u64);
            keepers.push((make_file(&fs, d, "keep", &data), data));
        }
        let mut watched = Vec::new();
        for (i, &d) in [b, c].iter().enumerate() {
            let id = 10 * t + i as u64;
            let ino = make_file(&fs, d, "watched", &content_of(id, 0, WATCHED_PAGES));
            let w = Arc::new(Watched {
                id,
                ino,
                published: AtomicU64::new(0),
                started: AtomicU64::new(0),
            });
            watched.push(w.clone());
            all_watched.push(w);
        }
        trees.push(Tree {
            levels: [w, a, b, c],
            keepers,
            watched,
        });
    }
    assert_eq!(fs.group_roots().len(), 1);

    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let (fs, stop, all) = (fs.clone(), stop.clone(), all_watched.clone());
            std::thread::spawn(move || {
                // At least one full pass, however the threads are scheduled.
                let mut reads = 0u64;
                loop {
                    for w in &all {
                        read_watched(&fs, w);
                        reads += 1;
                    }
                    if stop.load(Ordering::SeqCst) {
                        return reads;
                    }
                }
            })
        })
        .collect();
    let separator = {
        let (fs, stop) = (fs.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut passes = 0u64;
            loop {
                fs.engine().test_separate().expect("separate");
                if passes % 8 == 7 {
                    fs.engine().test_compact().expect("compact");
                }
                passes += 1;
                if stop.load(Ordering::SeqCst) {
                    return passes;
                }
                std::thread::yield_now();
            }
        })
    };

    let writers: Vec<_> = trees
        .iter()
        .enumerate()
        .map(|(t, tree)| {
            let fs = fs.clone();
            let levels = tree.levels;
            let watched = tree.watched.clone();
            let (splits, merges) = (splits.clone(), merges.clone());
            std::thread::spawn(move || {
                let t = t as u64;
                // Which of this writer's directories are roots, as last observed. Only this
                // writer changes the bytes under them, so every change is its own doing.
                let mut roots: BTreeSet<u64> = BTreeSet::new();
                let observe = |roots: &mut BTreeSet<u64>| {
                    let now: BTreeSet<u64> = fs
                        .group_roots()
                        .iter()
                        .map(|r| r.dir)
                        .filter(|d| levels.contains(d))
                        .collect();
                    splits.fetch_add(now.difference(roots).count() as u64, Ordering::SeqCst);
                    merges.fetch_add(roots.difference(&now).count() as u64, Ordering::SeqCst);
                    *roots = now;
                };
                let mut generation = 0u64;
                let mut touch_watched = |round: u64| {
                    generation += 1;
                    let w = &watched[(round % 2) as usize];
                    w.started.store(generation, Ordering::SeqCst);
                    let data = content_of(w.id, generation, WATCHED_PAGES);
                    assert_eq!(fs.write(w.ino, 0, &data).unwrap() as usize, data.len());
                    w.published.store(generation, Ordering::SeqCst);
                };
                for round in 0..ROUNDS {
                    // Ballast in a, b or c in turn: 320 KiB, in 64 KiB writes.
                    let home = levels[1 + (round % 3) as usize];
                    let name = format!("ballast{round}");
                    let seed = 1000 * t + round;
                    let full = pattern((320 * KIB) as usize, seed);
                    let (attr, fh) = fs
                        .create(home, name.as_bytes(), 0o644, 0o022, CALLER)
                        .unwrap();
                    let ino = attr.ino;
                    for (i, chunk) in full.chunks((64 * KIB) as usize).enumerate() {
                        fs.write(ino, i as u64 * 64 * KIB, chunk).unwrap();
                        touch_watched(round);
                        observe(&mut roots);
                    }
                    fs.release(ino, fh).unwrap();
                    assert!(
                        roots.contains(&home),
                        "writer {t} round {round}: 320 KiB in dir {home} did not split it \
                         (roots {:?})",
                        fs.group_roots()
                    );
                    assert!(
                        read_all(&fs, ino) == full,
                        "ballast {t}/{round} reads back wrong"
                    );
                    // Overwrite in place, then shrink.
                    let over = pattern((160 * KIB) as usize, seed + 500);
                    fs.write(ino, 32 * KIB, &over).unwrap();
                    let mut expect = full.clone();
                    expect[(32 * KIB) as usize..(192 * KIB) as usize].copy_from_slice(&over);
                    touch_watched(round);
                    observe(&mut roots);
                    assert!(
                        read_all(&fs, ino) == expect,
                        "ballast {t}/{round} overwrite"
                    );
                    truncate(&fs, ino, 128 * KIB + 100);
                    touch_watched(round);
                    observe(&mut roots);
                    expect.truncate((128 * KIB + 100) as usize);
                    assert!(read_all(&fs, ino) == expect, "ballast {t}/{round} truncate");
                    if round == ROUNDS - 1 {
                        // The last one stays (and so does a root, for the remount check).
                        fs.write(ino, 128 * KIB + 100, &full[..(200 * KIB) as usize])
                            .unwrap();
                        observe(&mut roots);
                        break;
                    }
                    truncate(&fs, ino, 20 * KIB);
                    touch_watched(round);
                    observe(&mut roots);
                    expect.truncate((20 * KIB) as usize);
                    assert!(read_all(&fs, ino) == expect, "ballast {t}/{round} truncate");
                    fs.unlink(home, name.as_bytes()).unwrap();
                    touch_watched(round);
                    observe(&mut roots);
                    assert!(
                        roots.is_empty(),
                        "writer {t} round {round}: ballast gone, yet roots {roots:?} remain \
                         ({:?})",
                        fs.group_roots()
                    );
                }
            })
        })
        .collect();
    for w in writers {
        w.join().expect("writer panicked");
    }
    stop.store(true, Ordering::SeqCst);
    let reads: Vec<u64> = readers
        .into_iter()
        .map(|r| r.join().expect("reader panicked"))
        .collect();
    let passes = separator.join().expect("separator panicked");
    let (splits, merges) = (splits.load(Ordering::SeqCst), merges.load(Ordering::SeqCst));
    assert!(
        splits >= WRITERS * ROUNDS && merges >= WRITERS * (ROUNDS - 1),
        "splits {splits}, merges {merges}"
    );
    assert!(reads.iter().all(|&n| n > 0), "reads per reader: {reads:?}");
    assert!(passes > 0);

    // Everything reads back exactly, now and after a remount, and the roots are rebuilt.
    let verify = |fs: &Fs| {
        for w in &all_watched {
            let generation = w.published.load(Ordering::SeqCst);
            assert!(
                read_all(fs, w.ino) == content_of(w.id, generation, WATCHED_PAGES),
                "watched file {} is not at generation {generation}",
                w.id
            );
        }
        for (t, tree) in trees.iter().enumerate() {
            for (ino, data) in &tree.keepers {
                assert!(read_all(fs, *ino) == *data, "keeper of writer {t}");
            }
            let round = ROUNDS - 1;
            let home = tree.levels[1 + (round % 3) as usize];
            let full = pattern((320 * KIB) as usize, 1000 * t as u64 + round);
            let over = pattern((160 * KIB) as usize, 1000 * t as u64 + round + 500);
            let mut expect = full.clone();
            expect[(32 * KIB) as usize..(192 * KIB) as usize].copy_from_slice(&over);
            expect.truncate((128 * KIB + 100) as usize);
            expect.extend_from_slice(&full[..(200 * KIB) as usize]);
            let ino = fs
                .lookup(home, format!("ballast{round}").as_bytes())
                .expect("last ballast")
                .ino;
            assert!(read_all(fs, ino) == expect, "last ballast of writer {t}");
            for r in 0..round {
                let home = tree.levels[1 + (r % 3) as usize];
                assert!(matches!(
                    fs.lookup(home, format!("ballast{r}").as_bytes()),
                    Err(FsError::NotFound)
                ));
            }
        }
    };
    verify(&fs);
    fs.engine().test_separate().expect("separate");
    assert_group_segments_are_pure(&fs);
    let roots = fs.group_roots();
    assert_eq!(
        roots.len() as u64,
        1 + WRITERS,
        "one root per writer left: {roots:?}"
    );
    let fs = Arc::into_inner(fs).expect("all threads joined");
    fs.close().unwrap();
    assert_fsck_clean(dir.path());
    let fs = open_grouped(dir.path(), split);
    assert_eq!(fs.group_roots(), roots, "roots and bytes rebuilt at mount");
    verify(&fs);
    fs.close().unwrap();
}

/// An `Fs` on the store in `dir` whose group map is rebuilt only by the test's own
/// `rebuild_group_map_step` calls (as `logstorfs mount` leaves it to a thread).
fn open_deferred(dir: &Path, split: u64) -> Fs {
    let engine = Engine::open(dir, &options(256 << 20)).expect("open engine");
    Fs::with_options(
        engine,
        FsOptions {
            group_split_bytes: split,
            defer_group_map: true,
            ..Default::default()
        },
    )
    .expect("mount fs")
}

fn append_pages(fs: &Fs, path: &str, pages: u64) {
    let ino = resolve(fs, path).expect("resolve");
    let size = fs.getattr(ino).expect("getattr").size;
    let fh = fs.open(ino).expect("open");
    fs.write(ino, size, &vec![7u8; (pages * PAGE) as usize])
        .expect("write");
    fs.release(ino, fh).expect("release");
}

/// Issue 7: the group map is rebuilt after the mount returns, a few inode records at a time,
/// while the filesystem changes. Once done it equals what a full load finds on the same store
/// (every directory, parent, root and byte count): changes of inodes the rebuild had read are
/// applied on top, those of inodes it had not are read by it (writes growing and truncating
/// files on both sides of the rebuild's position, creates, unlinks, renames of files and
/// directories, mkdir and rmdir, a write under a stored root not scanned yet). Splits wait for
/// the end of the rebuild; a rebuild cut short by an unmount leaves nothing behind.
#[test]
fn a_group_map_rebuilt_while_the_filesystem_changes_equals_a_full_load() {
    let dir = tempfile::tempdir().unwrap();
    let split = 64 * KIB;
    {
        let fs = open_grouped(dir.path(), split);
        let a = mkdir(&fs, ROOT_INO, "a");
        let b = mkdir(&fs, a, "b");
        let c = mkdir(&fs, ROOT_INO, "c");
        mkdir(&fs, ROOT_INO, "e");
        for i in 0..21u64 {
            let home = [a, b, c][i as usize % 3];
            let data = vec![1u8; PAGE as usize];
            write_file(&fs, home, &format!("f{i}"), &data, PAGE as usize);
        }
        let big = mkdir(&fs, ROOT_INO, "big");
        write_file(
            &fs,
            big,
            "huge",
            &vec![2u8; (80 * KIB) as usize],
            PAGE as usize,
        );
        assert!(root_entry(&fs, big).is_some(), "big split off");
        assert_eq!(fs.group_roots().len(), 2, "only big split off");
        mkdir(&fs, big, "deep");
        fs.close().unwrap();
    }

    let fs = open_deferred(dir.path(), split);
    assert!(fs.group_map_loading());
    assert_eq!(resolve(&fs, "/a/f0").unwrap(), 6);
    type Op = Box<dyn Fn(&Fs)>;
    let ops: Vec<Op> = vec![
        Box::new(|fs| append_pages(fs, "/a/f0", 2)),
        Box::new(|fs| append_pages(fs, "/c/f20", 3)),
        Box::new(|fs| {
            truncate(
                fs,
                resolve(fs, "/b/f1")
                    .or_else(|_| resolve(fs, "/a/b/f1"))
                    .unwrap(),
                0,
            )
        }),
        Box::new(|fs| {
            write_file(
                fs,
                resolve(fs, "/a").unwrap(),
                "new1",
                &[3u8; 3 * 4096],
                4096,
            );
        }),
        Box::new(|fs| fs.unlink(resolve(fs, "/c").unwrap(), b"f2").unwrap()),
        Box::new(|fs| {
            let (a, c) = (resolve(fs, "/a").unwrap(), resolve(fs, "/c").unwrap());
            fs.rename(a, b"f3", c, b"f3moved", 0).unwrap()
        }),
        Box::new(|fs| {
            let x = mkdir(fs, resolve(fs, "/a").unwrap(), "x");
            write_file(fs, x, "y", &[4u8; 2 * 4096], 4096);
        }),
        Box::new(|fs| {
            let (a, c) = (resolve(fs, "/a").unwrap(), resolve(fs, "/c").unwrap());
            fs.rename(a, b"b", c, b"b2", 0).unwrap()
        }),
        Box::new(|fs| fs.rmdir(ROOT_INO, b"e").unwrap()),
        Box::new(|fs| append_pages(fs, "/big/huge", 4)),
        Box::new(|fs| append_pages(fs, "/c/b2/f4", 1)),
        // /c grows past the split threshold: no split while the counts are incomplete.
        Box::new(|fs| {
            write_file(
                fs,
                resolve(fs, "/c").unwrap(),
                "grow",
                &[5u8; 72 * 1024],
                4096,
            );
        }),
        Box::new(|fs| append_pages(fs, "/a/x/y", 1)),
    ];
    let mut steps = 0;
    for (i, op) in ops.iter().enumerate() {
        // The first step reads inodes 1 (/) to 6 (/a/f0): the first op changes the very inode
        // the rebuild read last.
        fs.rebuild_group_map_step(if i == 0 { 6 } else { 2 })
            .unwrap();
        steps += 1;
        op(&fs);
    }
    assert!(
        fs.group_map_loading(),
        "ops interleaved with the rebuild, not after it"
    );
    while !fs.rebuild_group_map_step(2).unwrap() {
        steps += 1;
    }
    assert!(steps > ops.len());
    assert!(!fs.group_map_loading());
    let c = resolve(&fs, "/c").unwrap();
    let rebuilt = fs.group_map_snapshot();
    assert!(root_entry(&fs, c).is_none(), "no split during the rebuild");
    assert!(root_entry(&fs, resolve(&fs, "/big").unwrap()).is_some());
    fs.close().unwrap();

    let full = open_grouped(dir.path(), split);
    assert_eq!(rebuilt, full.group_map_snapshot());
    full.close().unwrap();

    // Unmounted before the rebuild ended: the next mount's full load is the same.
    let fs = open_deferred(dir.path(), split);
    fs.rebuild_group_map_step(3).unwrap();
    fs.close().unwrap();
    let full = open_grouped(dir.path(), split);
    assert_eq!(rebuilt, full.group_map_snapshot());
    full.close().unwrap();

    // Once rebuilt, splits resume: the next write under /c splits it.
    let fs = open_deferred(dir.path(), split);
    fs.rebuild_group_map().unwrap();
    append_pages(&fs, "/c/grow", 1);
    assert!(
        root_entry(&fs, c).is_some(),
        "c splits once the map is complete"
    );
    fs.close().unwrap();
    assert_fsck_clean(dir.path());
}
