//! Each damage rule of the one segment scan seen from both sides, on the same damaged image:
//! a `..._recovery` test opens the image and reads it (recovery acts on the scan's verdicts),
//! and a `..._fsck` test checks the image offline (fsck reports them). Recovery and fsck share
//! the rule, so breaking it must fail both: `scripts/mutants.py` names one test of each side.

use super::images::*;
use super::*;

const FIRST_BUFFER_HEADER_BYTES: [Option<u64>; 4] = [None, Some(0), Some(4), Some(57)];

#[test]
fn damage_in_a_log_segments_first_buffer_recovery() {
    for header_byte in FIRST_BUFFER_HEADER_BYTES {
        let storage = damaged_first_log_buffer(header_byte);
        let engine = Engine::open_on(storage, &small_options()).unwrap();
        assert_reads_as_damaged(&engine, b"victim", &format!("header byte {header_byte:?}"));
        assert_eq!(engine.get(b"neighbour").unwrap().unwrap(), vec![b'N'; 300]);
        assert_eq!(engine.get(b"after").unwrap().as_deref(), Some(&b"a"[..]));
    }
}

#[test]
fn damage_in_a_log_segments_first_buffer_fsck() {
    for header_byte in FIRST_BUFFER_HEADER_BYTES {
        eprintln!("case: header byte {header_byte:?}");
        let c = fsck_names_only_the_victim(&*damaged_first_log_buffer(header_byte));
        assert!(c.live.contains_key(&b"neighbour"[..]), "{:?}", c.findings);
        assert!(c.live.contains_key(&b"after"[..]), "{:?}", c.findings);
    }
}

#[test]
fn a_log_segments_only_buffer_damaged_recovery() {
    for older_superblock in [false, true] {
        let (storage, _, value) = damaged_only_log_buffer(older_superblock);
        let engine = Engine::open_on(storage, &small_options()).unwrap();
        assert_eq!(
            engine.get(b"victim").unwrap().unwrap(),
            value,
            "older superblock: {older_superblock}"
        );
    }
}

#[test]
fn a_log_segments_only_buffer_damaged_fsck() {
    for older_superblock in [false, true] {
        let (storage, segment, _) = damaged_only_log_buffer(older_superblock);
        let c = fsck(&*storage);
        assert!(c.damaged.is_empty(), "{:?}", c.damaged);
        assert_eq!(c.problems(), 0, "{:?}", c.findings);
        assert_eq!(
            c.live.get(&b"victim"[..]).map(|r| r.place.segment),
            Some(segment),
            "older superblock {older_superblock}: {:?}",
            c.findings
        );
    }
}

#[test]
fn damage_in_a_log_buffer_sealed_early_recovery() {
    let (storage, options) = damaged_log_buffer_sealed_early();
    let engine = Engine::open_on(storage, &options).unwrap();
    assert_reads_as_damaged(&engine, b"victim", "sealed before");
    assert_eq!(engine.get(b"big").unwrap().unwrap(), vec![b'B'; 127 << 10]);
    assert_eq!(engine.get(b"later").unwrap().unwrap(), b"L");
}

#[test]
fn damage_in_a_log_buffer_sealed_early_fsck() {
    let (storage, _) = damaged_log_buffer_sealed_early();
    let c = fsck_names_only_the_victim(&*storage);
    assert!(c.live.contains_key(&b"later"[..]), "{:?}", c.findings);
}

#[test]
fn a_first_buffer_with_a_garbled_generation_field_recovery() {
    for (case, garbled, older_superblock) in GARBLED_FIRST_HEADERS {
        let storage = garbled_first_generation(garbled, older_superblock);
        let engine = Engine::open_on(storage, &small_options()).unwrap();
        if case == "whole sector" {
            assert_reads_as_damaged(&engine, b"first", case);
        } else {
            let first = engine.get(b"first").unwrap();
            assert_eq!(first, Some(vec![b'F'; 3000]), "{case}");
        }
        let second = engine.get(b"second").unwrap();
        assert_eq!(second, Some(vec![b'S'; 3000]), "{case}");
    }
}

#[test]
fn a_first_buffer_with_a_garbled_generation_field_fsck() {
    for (case, garbled, older_superblock) in GARBLED_FIRST_HEADERS {
        let c = fsck(&*garbled_first_generation(garbled, older_superblock));
        if case == "whole sector" {
            let damaged: Vec<&[u8]> = c.damaged.iter().map(|d| &d.key[..]).collect();
            assert_eq!(damaged, [&b"first"[..]], "{case}: {:?}", c.findings);
            assert_fsck_says_reads_fail(&c, b"first");
        } else {
            assert_eq!(c.problems(), 0, "{case}: {:?}", c.findings);
            assert!(
                c.live.contains_key(&b"first"[..]),
                "{case}: {:?}",
                c.findings
            );
        }
        assert!(
            c.live.contains_key(&b"second"[..]),
            "{case}: {:?}",
            c.findings
        );
    }
}

/// Segment 0 reused, its new use in three buffers ("new", "new2", "new3"): the first fails its
/// checks and its record directory is damaged too (the scan walks it record by record), the
/// second is a buffer of the earlier use ("old1", an older generation), the third is valid and
/// proves the two before it a damaged stretch. The walk of the stretch must step over the
/// earlier use's buffer: its records are not of this use and must not come back.
fn earlier_use_inside_a_damaged_stretch() -> Arc<SimStorage> {
    let (a, b, (file, base)) = two_uses_of_segment_0(&["new", "new2", "new3"]);
    assert_eq!(
        buffer_offsets(&b, 0),
        [0, BLOCK_SIZE, 2 * BLOCK_SIZE],
        "the new use's buffers take a block each"
    );
    let mut old = vec![0u8; BLOCK_SIZE];
    a.read_at(file, base + BLOCK_SIZE as u64, &mut old).unwrap();
    b.write_at(file, base + BLOCK_SIZE as u64, &old).unwrap();
    b.sync().unwrap();
    // The first buffer's CRC field, and the last byte of its record directory (at its end).
    b.corrupt(file, base + 61, 0x01);
    b.corrupt(file, base + BLOCK_SIZE as u64 - 1, 0x10);
    b
}

#[test]
fn buffers_of_an_earlier_use_behind_a_new_one_recovery() {
    let engine = Engine::open_on(earlier_use_behind_a_new_one(), &small_options()).unwrap();
    assert_eq!(
        engine.get(b"new").unwrap().as_deref(),
        Some(&b"from the new use"[..])
    );
    for i in 1..4 {
        let old = engine.get(format!("old{i}").as_bytes()).unwrap();
        assert_eq!(old, None, "old{i} came back");
    }
}

#[test]
fn buffers_of_an_earlier_use_behind_a_new_one_fsck() {
    let c = fsck(&*earlier_use_behind_a_new_one());
    assert_eq!(c.problems(), 0, "{:?}", c.findings);
    assert!(c.live.contains_key(&b"new"[..]), "{:?}", c.findings);
    for i in 1..4 {
        let old = format!("old{i}");
        assert!(
            !c.live.contains_key(old.as_bytes()),
            "{old} live: {:?}",
            c.live
        );
    }
}

#[test]
fn an_earlier_use_inside_a_damaged_stretch_recovery() {
    let engine = Engine::open_on(earlier_use_inside_a_damaged_stretch(), &small_options()).unwrap();
    assert_eq!(
        engine.get(b"new3").unwrap().as_deref(),
        Some(&b"from the new use"[..])
    );
    let old = engine.get(b"old1").unwrap();
    assert_eq!(old, None, "old1 came back");
}

#[test]
fn an_earlier_use_inside_a_damaged_stretch_fsck() {
    let c = fsck(&*earlier_use_inside_a_damaged_stretch());
    assert!(c.live.contains_key(&b"new3"[..]), "{:?}", c.findings);
    assert!(
        !c.live.contains_key(&b"old1"[..]),
        "old1 live: {:?}",
        c.live
    );
    assert!(
        c.damaged.iter().all(|d| d.key != b"old1"),
        "old1 named as damaged: {:?}",
        c.damaged
    );
}

const NEWEST_SYNCED_SCENARIOS: [&str; 2] = ["close", "crash, reopen"];

#[test]
fn damage_in_the_newest_synced_log_buffer_recovery() {
    for scenario in NEWEST_SYNCED_SCENARIOS {
        let storage = damaged_newest_synced_log_buffer(scenario);
        let engine = Engine::open_on(storage, &small_options()).unwrap();
        assert_reads_as_damaged(&engine, b"victim", scenario);
        let neighbour = engine.get(b"neighbour").unwrap();
        assert_eq!(neighbour, Some(vec![b'N'; 500]), "{scenario}");
    }
}

#[test]
fn damage_in_the_newest_synced_log_buffer_fsck() {
    for scenario in NEWEST_SYNCED_SCENARIOS {
        eprintln!("case: {scenario}");
        let c = fsck_names_only_the_victim(&*damaged_newest_synced_log_buffer(scenario));
        assert!(c.live.contains_key(&b"neighbour"[..]), "{:?}", c.findings);
    }
}

#[test]
fn damage_to_a_records_header_or_key_recovery() {
    for (what, delta, mask) in RECORD_DAMAGE {
        let storage = damaged_record_header_or_key(delta, mask);
        let engine = Engine::open_on(storage, &small_options()).unwrap();
        assert_reads_as_damaged(&engine, b"victim", what);
        assert_eq!(
            engine.get(b"before").unwrap(),
            Some(vec![b'B'; 200]),
            "{what}"
        );
        assert_eq!(
            engine.get(b"behind").unwrap(),
            Some(vec![b'N'; 300]),
            "{what}"
        );
        assert_eq!(
            engine.get(b"after").unwrap().as_deref(),
            Some(&b"a"[..]),
            "{what}"
        );
    }
}

#[test]
fn damage_to_a_records_header_or_key_fsck() {
    for (what, delta, mask) in RECORD_DAMAGE {
        eprintln!("case: {what}");
        let c = fsck_names_only_the_victim(&*damaged_record_header_or_key(delta, mask));
        for key in [&b"before"[..], b"behind", b"after"] {
            assert!(c.live.contains_key(key), "{what}: {:?}", c.findings);
        }
    }
}

#[test]
fn a_dropped_log_tail_whose_lsns_were_reused_recovery() {
    let engine = Engine::open_on(
        log_tail_dropped_then_its_lsns_reused(|_| ()),
        &small_options(),
    )
    .unwrap();
    let victim = engine.get(b"victim").unwrap();
    assert_eq!(
        victim.as_deref(),
        Some(&b"old version"[..]),
        "the dropped stretch came back"
    );
    assert_eq!(
        engine.get(b"h").unwrap(),
        None,
        "the dropped stretch came back"
    );
    assert_eq!(engine.get(b"y").unwrap().as_deref(), Some(&b"y"[..]));
}

#[test]
fn a_dropped_log_tail_whose_lsns_were_reused_fsck() {
    let c = fsck(&*log_tail_dropped_then_its_lsns_reused(|_| ()));
    assert!(
        !c.live.contains_key(&b"h"[..]),
        "the dropped stretch came back: {:?}",
        c.findings
    );
    assert!(c.damaged.is_empty(), "{:?}", c.damaged);
    assert!(c.live.contains_key(&b"y"[..]), "{:?}", c.findings);
}

/// Which buffers of copies are damaged: the last (the sync table proves it synced), the
/// middle, the first, and a stretch of the last two.
const DAMAGED_COPIES: [&[usize]; 4] = [&[2], &[1], &[0], &[1, 2]];

#[test]
fn damaged_copies_recovery() {
    for which in DAMAGED_COPIES {
        let (storage, expected) = damaged_copies(which);
        let engine = Engine::open_on(storage, &small_options()).unwrap();
        engine.test_pause_background();
        let damaged: Vec<&str> = which.iter().map(|&w| COPIED[w]).collect();
        for k in &damaged {
            let got = engine.get(k.as_bytes());
            assert!(
                matches!(got, Err(EngineError::Corrupt(_))),
                "{which:?}: the damaged copy of {k} reads as {:?}",
                got.map(|v| v.map(|v| v[0]))
            );
        }
        assert_reads_back(&engine, &expected, &damaged, &format!("{which:?}"));
    }
}

#[test]
fn damaged_copies_fsck() {
    for which in DAMAGED_COPIES {
        let (storage, expected) = damaged_copies(which);
        let c = fsck(&*storage);
        let named: Vec<&[u8]> = c.damaged.iter().map(|d| &d.key[..]).collect();
        let mut damaged: Vec<&[u8]> = which.iter().map(|&w| COPIED[w].as_bytes()).collect();
        damaged.sort();
        let mut named_sorted = named.clone();
        named_sorted.sort();
        named_sorted.dedup();
        assert_eq!(named_sorted, damaged, "{which:?}: {:?}", c.findings);
        for key in &damaged {
            assert_fsck_says_reads_fail(&c, key);
        }
        assert!(
            c.findings
                .iter()
                .any(|f| f.severity == check::Severity::Problem && f.what.contains("checksum")),
            "{which:?}: {:?}",
            c.findings
        );
        for (k, _) in &expected {
            if !damaged.contains(&k.as_bytes()) {
                assert!(c.live.contains_key(k.as_bytes()), "{which:?}: {k} not live");
            }
        }
    }
}

#[test]
fn a_buffer_damaged_with_its_directory_recovery() {
    let engine = Engine::open_on(damaged_buffer_and_its_directory(), &small_options()).unwrap();
    assert_eq!(engine.recovery_report().buffers_unnamed, 1);
    assert_eq!(engine.get(b"after").unwrap().as_deref(), Some(&b"a"[..]));
}

#[test]
fn a_buffer_damaged_with_its_directory_fsck() {
    let c = fsck(&*damaged_buffer_and_its_directory());
    assert!(
        c.findings
            .iter()
            .any(|f| f.severity == check::Severity::Problem
                && f.what.contains("record directory is damaged too")),
        "fsck is silent about unnamed damage: {:?}",
        c.findings
    );
    assert!(c.live.contains_key(&b"after"[..]), "{:?}", c.findings);
}

/// The victim's log buffer written but not synced when the power is cut, damaged (a torn
/// write), with a later buffer of the same use behind it ("after", also unsynced) whose durable
/// floor does not cover it: nothing proves the victim's buffer synced, so the log ends before
/// it and both are discarded; the earlier synced "kept" stays.
fn torn_buffer_with_an_unproven_one_behind() -> Arc<SimStorage> {
    let storage = SimStorage::new();
    let engine = Engine::open_on(storage.clone(), &small_options()).unwrap();
    engine.test_pause_background();
    engine.write(&[put("kept", b"k")]).unwrap();
    engine.sync().unwrap();
    engine.write(&[put("victim", &[b'V'; 3000])]).unwrap();
    engine.test_wait_flushes();
    engine.write(&[put("after", b"a")]).unwrap();
    engine.test_wait_flushes();
    let (segment, victim_at) = engine.test_location_of(b"victim").unwrap();
    let (after_segment, after_at) = engine.test_location_of(b"after").unwrap();
    assert_eq!(after_segment, segment, "one use");
    assert!(
        after_at as usize / BLOCK_SIZE > victim_at as usize / BLOCK_SIZE,
        "after in a later buffer"
    );
    let image = storage.crash(PowerCut::KeepAllWritten);
    damage_value_of(&engine, &image, b"victim");
    drop(engine);
    image
}

#[test]
fn a_torn_buffer_with_an_unproven_one_behind_recovery() {
    let engine =
        Engine::open_on(torn_buffer_with_an_unproven_one_behind(), &small_options()).unwrap();
    assert_eq!(engine.get(b"victim").unwrap(), None, "torn write served");
    assert_eq!(
        engine.get(b"after").unwrap(),
        None,
        "unproven buffer served"
    );
    assert_eq!(engine.get(b"kept").unwrap().as_deref(), Some(&b"k"[..]));
}

#[test]
fn a_torn_buffer_with_an_unproven_one_behind_fsck() {
    let c = fsck(&*torn_buffer_with_an_unproven_one_behind());
    assert_eq!(
        c.problems(),
        0,
        "a torn tail called damage: {:?}",
        c.findings
    );
    // The log ends at the torn buffer; "after" is stranded behind it, not a batch taken in
    // and then discarded for following a missing one.
    assert!(
        !c.findings.iter().any(|f| f.what.contains("is missing")),
        "the scan went past the torn buffer: {:?}",
        c.findings
    );
    assert!(c.damaged.is_empty(), "{:?}", c.damaged);
    assert!(!c.live.contains_key(&b"after"[..]), "{:?}", c.findings);
    assert!(c.live.contains_key(&b"kept"[..]), "{:?}", c.findings);
}

/// The last buffer of a log segment (the victim's newest version) written but not synced when
/// the power is cut, damaged (a torn write), and the next batch ("after"'s newest version) in
/// the next log segment, intact: its batch follows a missing one, so the log ends before the
/// victim's and "after" keeps its earlier version, in the victim's segment. Returns the image,
/// that segment and the value "after" keeps.
fn torn_log_segment_end_with_a_later_batch_elsewhere() -> (Arc<SimStorage>, u32, Vec<u8>) {
    let storage = SimStorage::new();
    let engine = Engine::open_on(storage.clone(), &small_options()).unwrap();
    engine.test_pause_background();
    engine.write(&[put("kept", b"k")]).unwrap();
    engine.sync().unwrap();
    let value = |i: u8| vec![i; 120 << 10];
    let mut i = 0u8;
    let segment = loop {
        i += 1;
        assert!(i < 20, "\"after\" never starts a new segment");
        engine.write(&[put("victim", &[b'V'; 3000])]).unwrap();
        engine.test_wait_flushes();
        engine.write(&[put("after", &value(i))]).unwrap();
        engine.test_wait_flushes();
        let victims = engine.test_location_of(b"victim").unwrap().0;
        if engine.test_location_of(b"after").unwrap().0 != victims {
            break victims;
        }
    };
    assert!(
        i > 1,
        "no earlier version of \"after\" in the victim's segment"
    );
    let image = storage.crash(PowerCut::KeepAllWritten);
    damage_value_of(&engine, &image, b"victim");
    drop(engine);
    (image, segment, value(i - 1))
}

#[test]
fn a_batch_behind_a_torn_log_segment_end_recovery() {
    let (storage, _, kept) = torn_log_segment_end_with_a_later_batch_elsewhere();
    let engine = Engine::open_on(storage, &small_options()).unwrap();
    let after = engine.get(b"after").unwrap();
    assert_eq!(
        after.map(|v| v[0]),
        Some(kept[0]),
        "a batch behind a missing one served"
    );
    assert_eq!(engine.get(b"kept").unwrap().as_deref(), Some(&b"k"[..]));
}

#[test]
fn a_batch_behind_a_torn_log_segment_end_fsck() {
    let (storage, segment, _) = torn_log_segment_end_with_a_later_batch_elsewhere();
    let c = fsck(&*storage);
    assert_eq!(
        c.problems(),
        0,
        "a torn tail called damage: {:?}",
        c.findings
    );
    assert!(c.damaged.is_empty(), "{:?}", c.damaged);
    assert_eq!(
        c.live.get(&b"after"[..]).map(|r| r.place.segment),
        Some(segment),
        "a batch behind a missing one counted live: {:?}",
        c.findings
    );
    assert!(
        c.findings.iter().any(|f| f.what.contains("is missing")),
        "no word of the missing batch: {:?}",
        c.findings
    );
}

#[test]
fn a_copy_of_a_lost_batch_recovery() {
    let (storage, _) = copy_of_a_lost_batch();
    let engine = Engine::open_on(storage, &small_options()).unwrap();
    assert_eq!(engine.get(b"k").unwrap().as_deref(), Some(&b"durable"[..]));
}

#[test]
fn a_copy_of_a_lost_batch_fsck() {
    let (storage, copy_segment) = copy_of_a_lost_batch();
    let c = fsck(&*storage);
    let k = c.live.get(&b"k"[..]).expect("k not live");
    assert_ne!(k.place.segment, copy_segment, "the lost copy came back");
    assert_eq!(k.value_len as usize, b"durable".len(), "{:?}", c.findings);
}

#[test]
fn damage_in_the_last_buffer_of_a_closed_log_segment_recovery() {
    let (storage, expected) = damaged_last_buffer_of_a_closed_log_segment(false);
    let engine = Engine::open_on(storage, &small_options()).unwrap();
    engine.test_pause_background();
    assert_reads_as_damaged(&engine, b"victim", "closed log segment");
    assert_reads_back(&engine, &expected, &["victim"], "closed log segment");
}

#[test]
fn damage_in_the_last_buffer_of_a_closed_log_segment_fsck() {
    let (storage, expected) = damaged_last_buffer_of_a_closed_log_segment(false);
    let c = fsck_names_only_the_victim(&*storage);
    for (k, _) in expected.iter().filter(|(k, _)| k != "victim") {
        assert!(c.live.contains_key(k.as_bytes()), "{k}: {:?}", c.findings);
    }
}

#[test]
fn copies_behind_damage_without_the_table_recovery() {
    let engine = Engine::open_on(damaged_copies_without_the_table(), &separator_options()).unwrap();
    engine.test_pause_background();
    assert_eq!(engine.get(b"z").unwrap().unwrap(), vec![1u8; 20 << 10]);
    assert_eq!(
        engine.get(b"x").unwrap().unwrap(),
        vec![3u8; 20 << 10],
        "the copy behind the damaged buffer is lost"
    );
}

#[test]
fn copies_behind_damage_without_the_table_fsck() {
    let c = fsck(&*damaged_copies_without_the_table());
    assert!(
        !c.damaged.iter().any(|d| d.key == b"x"),
        "fsck calls x lost although recovery serves it: {:?}",
        c.findings
    );
    assert!(c.live.contains_key(b"x".as_slice()), "{:?}", c.findings);
}

#[test]
fn copies_with_a_garbled_first_header_recovery() {
    let (storage, expected) = copies_with_a_garbled_first_header();
    let engine = Engine::open_on(storage, &separator_options()).unwrap();
    assert_reads_back(&engine, &expected, &[], "garbled first header");
}

#[test]
fn copies_with_a_garbled_first_header_fsck() {
    let (storage, expected) = copies_with_a_garbled_first_header();
    let c = fsck(&*storage);
    assert_eq!(c.problems(), 0, "{:?}", c.findings);
    for (key, _) in &expected {
        assert!(
            c.live.contains_key(key.as_bytes()),
            "{key}: {:?}",
            c.findings
        );
    }
}

/// [`damaged_copies`] with its last two buffers of copies damaged, and their record
/// directories too: nothing names their records, so salvage walks every buffer of the
/// stretch block by block.
fn damaged_copies_and_their_directories() -> (Arc<SimStorage>, Vec<(String, Vec<u8>)>) {
    let (storage, expected) = damaged_copies(&[1, 2]);
    let mut copies = segment_images(&storage)
        .into_iter()
        .filter(|(_, _, image)| image[6] == SegmentKind::Group as u8);
    let (_, (file, base), image) = copies.next().expect("a segment of copies");
    assert!(copies.next().is_none(), "one segment of copies");
    let mut starts = vec![0usize];
    for _ in 0..COPIED.len() {
        let at = *starts.last().unwrap();
        starts.push(at + BufferHeader::buffer_len_field(&image[at..]));
    }
    for w in [1, 2] {
        storage.corrupt(file, base + starts[w + 1] as u64 - 1, 0x10);
    }
    (storage, expected)
}

#[test]
fn damaged_copies_and_their_directories_recovery() {
    let (storage, expected) = damaged_copies_and_their_directories();
    let engine = Engine::open_on(storage, &small_options()).unwrap();
    engine.test_pause_background();
    let damaged = [COPIED[1], COPIED[2]];
    for k in damaged {
        assert_reads_as_damaged(&engine, k.as_bytes(), "a stretch of two buffers");
    }
    assert_reads_back(&engine, &expected, &damaged, "a stretch of two buffers");
}

#[test]
fn damaged_copies_and_their_directories_fsck() {
    let (storage, _) = damaged_copies_and_their_directories();
    let c = fsck(&*storage);
    let mut named: Vec<&[u8]> = c.damaged.iter().map(|d| &d.key[..]).collect();
    named.sort();
    named.dedup();
    assert_eq!(
        named,
        [COPIED[1].as_bytes(), COPIED[2].as_bytes()],
        "{:?}",
        c.findings
    );
    for k in &COPIED[1..3] {
        assert_fsck_says_reads_fail(&c, k.as_bytes());
    }
}

const DAMAGED_DELETIONS: [&str; 2] = ["range delete", "tombstone"];

#[test]
fn a_damaged_deletion_its_directory_names_recovery() {
    for deletion in DAMAGED_DELETIONS {
        let engine = Engine::open_on(damaged_deletion(deletion), &small_options()).unwrap();
        assert_eq!(engine.get(b"zz/gone").unwrap(), None, "{deletion}");
        assert_eq!(engine.get(b"after").unwrap().as_deref(), Some(&b"a"[..]));
    }
}

#[test]
fn a_damaged_deletion_its_directory_names_fsck() {
    for deletion in DAMAGED_DELETIONS {
        let c = fsck(&*damaged_deletion(deletion));
        assert_eq!(c.problems(), 0, "{deletion}: {:?}", c.findings);
        assert!(c.damaged.is_empty(), "{deletion}: {:?}", c.damaged);
        assert!(
            !c.live.contains_key(&b"zz/gone"[..]),
            "{deletion}: fsck lists a deleted key as live"
        );
        assert!(
            c.live.contains_key(&b"after"[..]),
            "{deletion}: {:?}",
            c.findings
        );
    }
}

#[test]
fn two_log_buffers_damaged_in_their_headers_recovery() {
    let storage = two_log_buffers_damaged_in_their_headers();
    let engine = Engine::open_on(storage, &small_options()).unwrap();
    engine.test_pause_background();
    assert_reads_as_damaged(&engine, b"b1", "its key damaged, named by its directory");
    let expected: Vec<(String, Vec<u8>)> = [
        ("x", vec![b'X']),
        ("a1", vec![b'A'; 100]),
        ("b2", vec![b'b'; 100]),
        ("c", vec![b'C']),
        ("d", vec![b'D']),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_reads_back(&engine, &expected, &[], "two headers damaged");
}

#[test]
fn two_log_buffers_damaged_in_their_headers_fsck() {
    let c = fsck(&*two_log_buffers_damaged_in_their_headers());
    let named: Vec<&[u8]> = c.damaged.iter().map(|d| &d.key[..]).collect();
    assert_eq!(named, [&b"b1"[..]], "{:?}", c.findings);
    assert_fsck_says_reads_fail(&c, b"b1");
    for key in ["x", "a1", "b2", "c", "d"] {
        assert!(
            c.live.contains_key(key.as_bytes()),
            "{key}: {:?}",
            c.findings
        );
    }
}
