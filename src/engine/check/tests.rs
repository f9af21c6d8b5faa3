//! Tests of fsck's report on damaged and clean images: what it calls lost, stale, a note or
//! a problem, and that random damage or power cuts never make it panic or cry wolf.

use super::*;
use crate::engine::format::{BLOCK_SIZE, BufferHeader, RecordKind, SegmentKind};
use crate::engine::storage::SimStorage;
use crate::engine::{Engine, EngineOptions, Mutation};

fn options() -> EngineOptions {
    EngineOptions {
        capacity_bytes: 16 << 20,
        segment_size_bytes: 1 << 20,
        sync_interval: None,
        ..Default::default()
    }
}

fn run(storage: &SimStorage) -> EngineCheck {
    check(
        storage,
        &CheckOptions {
            keep_value: &|_| true,
            store_dir: None,
        },
    )
    .unwrap()
}

#[test]
fn clean_store_rebuilds_the_newest_versions() {
    let storage = SimStorage::new();
    let engine = Engine::open_on(storage.clone(), &options()).unwrap();
    engine
        .write(&[Mutation::put(0, b"a".to_vec(), b"1".to_vec())])
        .unwrap();
    engine
        .write(&[Mutation::put(0, b"a".to_vec(), b"2".to_vec())])
        .unwrap();
    engine
        .write(&[
            Mutation::put(0, b"pa".to_vec(), b"x".to_vec()),
            Mutation::put(0, b"pb".to_vec(), b"y".to_vec()),
        ])
        .unwrap();
    engine
        .write(&[Mutation::delete_prefix(0, b"p".to_vec())])
        .unwrap();
    engine
        .write(&[Mutation::delete(0, b"gone".to_vec())])
        .unwrap();
    engine.close().unwrap();
    let c = run(&storage);
    assert!(c.findings.is_empty(), "{:?}", c.findings);
    assert_eq!(c.live.len(), 1);
    assert_eq!(c.live[&b"a".to_vec()].value.as_deref(), Some(&b"2"[..]));
    assert!(c.damaged.is_empty());
    assert_eq!(c.segments.len(), 1);
    assert!(c.segments[0].live_bytes > 0);
}

#[test]
fn flipped_byte_in_an_early_buffer_is_a_problem_naming_the_key() {
    let storage = SimStorage::new();
    let engine = Engine::open_on(storage.clone(), &options()).unwrap();
    engine
        .write(&[Mutation::put(0, b"victim".to_vec(), vec![7u8; 3000])])
        .unwrap();
    engine.sync().unwrap();
    for i in 0..5u8 {
        engine
            .write(&[Mutation::put(0, vec![b'k', i], vec![i; 100])])
            .unwrap();
        engine.sync().unwrap();
    }
    let (segment, _) = engine.test_segment_of(b"victim").unwrap();
    engine.close().unwrap();
    let sb = Superblock::decode(&storage.read_superblock().unwrap().unwrap()).unwrap();
    let (file, base) = sb.segment_position(segment);
    // Find the value's bytes and flip one.
    let mut img = vec![0u8; sb.segment_size as usize];
    storage.read_at(file, base, &mut img).unwrap();
    let at = img.windows(64).position(|w| w == [7u8; 64]).unwrap();
    storage.corrupt(file, base + at as u64 + 10, 0x10);
    let c = run(&storage);
    assert_eq!(c.problems(), 1, "{:?}", c.findings);
    assert!(c.findings[0].what.contains("fails its checksum"));
    assert!(
        c.damaged.iter().any(|d| d.key == b"victim" && !d.intact),
        "{:?}",
        c.damaged
    );
    // Keys written after it, in buffers behind it whose floor vouches for it, are served by
    // recovery, and not reported.
    assert!(
        c.damaged.iter().all(|d| d.key == b"victim"),
        "{:?}",
        c.damaged
    );
}

/// What to forge past the end of the segment holding "kept" (see `check_with_forged_tail`).
struct Forged<'a> {
    /// Records: (kind, key, LSN). Values are 100 bytes of 7 (none for deletes).
    records: &'a [(RecordKind, &'a [u8], u64)],
    /// The forged buffer is of the generation this many uses before the segment's.
    generation_back: u64,
    /// Its buffer CRC fails (its records stay intact).
    torn: bool,
    /// "kept" lives in a group-owned segment (copied there by the separator), not the log.
    in_group_segment: bool,
    /// The first record's own CRC fails too (a byte of its value flipped).
    damaged_record: bool,
}

/// A store whose segment holding "kept" is followed, past its last valid buffer, by a
/// forged buffer, then checked. Keys that the store never had, at LSNs no longer on disk
/// anywhere (5, 6, ...: early batches whose segments were freed), look exactly like stale
/// or lost data.
fn check_with_forged_tail(f: Forged) -> EngineCheck {
    use crate::engine::format::{
        BUFFER_HEADER_SIZE, BufferHeader, DIRECTORY_TRAILER_SIZE, RECORD_HEADER_SIZE, RecordHeader,
        align_up, record_body_crc, version_of,
    };
    let storage = SimStorage::new();
    let engine = Engine::open_on(storage.clone(), &options()).unwrap();
    engine.test_pause_background();
    for i in 0..300u32 {
        engine
            .write(&[Mutation::put(0, b"x".to_vec(), vec![i as u8; 8000])])
            .unwrap();
    }
    engine.sync().unwrap();
    assert!(engine.test_reclaim().unwrap() >= 1);
    let group = if f.in_group_segment { 5 } else { 0 };
    engine
        .write(&[Mutation::put(group, b"kept".to_vec(), vec![5u8; 100])])
        .unwrap();
    if f.in_group_segment {
        // Another group in the same mixed segments, enough to close them: "kept" is
        // copied into group 5's segment, not handed over.
        for i in 0..160u32 {
            engine
                .write(&[Mutation::put(6, i.to_be_bytes().to_vec(), vec![6u8; 8000])])
                .unwrap();
        }
        engine.sync().unwrap();
        engine.test_separate().unwrap();
    }
    engine.sync().unwrap();
    let (segment, _) = engine.test_segment_of(b"kept").unwrap();
    engine.close().unwrap();
    let sb = Superblock::decode(&storage.read_superblock().unwrap().unwrap()).unwrap();
    let (file, base) = sb.segment_position(segment);
    let mut img = vec![0u8; sb.segment_size as usize];
    storage.read_at(file, base, &mut img).unwrap();
    // The use's end: the first block after its valid buffers.
    let mut end = 0usize;
    let mut template: Option<BufferHeader> = None;
    while let Some(h) = BufferHeader::decode_checked(&img[end..]) {
        if template.is_some_and(|t| t.generation != h.generation) {
            break;
        }
        template.get_or_insert(h);
        end += h.buffer_len as usize;
    }
    let template = template.expect("the segment has buffers");
    assert_eq!(
        template.kind == SegmentKind::Group,
        f.in_group_segment,
        "\"kept\" is not where the test wants it"
    );
    let mut payload = Vec::new();
    for (i, &(kind, key, lsn)) in f.records.iter().enumerate() {
        let value = if kind == RecordKind::Put {
            vec![7u8; 100]
        } else {
            Vec::new()
        };
        let h = RecordHeader {
            kind,
            key_len: key.len() as u16,
            group: template.group,
            value_len: value.len() as u32,
            version: version_of(lsn, i),
        };
        let mut rec = vec![0u8; RECORD_HEADER_SIZE];
        h.encode(&mut rec, &record_body_crc(key, &value));
        rec.extend_from_slice(key);
        rec.extend_from_slice(&value);
        payload.extend_from_slice(&rec);
    }
    let len = align_up(BUFFER_HEADER_SIZE + payload.len(), BLOCK_SIZE);
    let mut forged = vec![0u8; len];
    forged[BUFFER_HEADER_SIZE..BUFFER_HEADER_SIZE + payload.len()].copy_from_slice(&payload);
    let lsns = f.records.iter().map(|r| r.2);
    BufferHeader {
        generation: template.generation - f.generation_back,
        lsn_first: if f.in_group_segment {
            0
        } else {
            lsns.clone().min().unwrap()
        },
        lsn_last: lsns.max().unwrap(),
        payload_len: payload.len() as u32,
        record_count: f.records.len() as u32,
        buffer_len: len as u32,
        ..template
    }
    .seal(&mut forged);
    if f.torn {
        forged[7] ^= 1; // the flags byte: the buffer CRC fails, its records stay intact
        // Torn before its end reached the disk: no record directory (an intact one naming
        // batches within the durable floor would prove the buffer synced: damage).
        forged[len - DIRECTORY_TRAILER_SIZE..].fill(0);
    }
    if f.damaged_record {
        let key_len = f.records[0].1.len();
        forged[BUFFER_HEADER_SIZE + RECORD_HEADER_SIZE + key_len] ^= 0x40;
    }
    storage.write_at(file, base + end as u64, &forged).unwrap();
    run(&storage)
}

/// A reused segment keeps the bytes of its earlier use past the end of its new one. A
/// valid buffer of an earlier generation there is stale, not damage, even when it holds a
/// put of a key the store no longer has at all (its tombstone since dropped): fsck once
/// reported such puts as durable data lost (crash_kill9 failed about 1 round in 10).
#[test]
fn a_buffer_of_an_earlier_use_past_the_end_is_stale_not_damage() {
    let c = check_with_forged_tail(Forged {
        records: &[(RecordKind::Put, b"gone", 5)],
        generation_back: 1,
        torn: false,
        in_group_segment: false,
        damaged_record: false,
    });
    assert!(c.findings.is_empty(), "{:?}", c.findings);
    assert!(c.damaged.is_empty(), "{:?}", c.damaged);
    assert_eq!(c.live.len(), 2);
}

/// A torn buffer of this use past the end: a durable put in it that nothing newer
/// supersedes is lost data (a problem); a tombstone that hides no served put is no loss
/// (its puts are gone too): fsck once reported those as damaged media
/// (`scripts/powercut_replay.sh`, torn buffers of copies after a power cut).
#[test]
fn a_torn_tombstone_that_hides_nothing_is_no_loss_but_a_torn_put_is() {
    let torn = |records| {
        check_with_forged_tail(Forged {
            records,
            generation_back: 0,
            torn: true,
            in_group_segment: false,
            damaged_record: false,
        })
    };
    let c = torn(&[(RecordKind::Delete, b"gone", 5)]);
    assert_eq!(c.problems(), 0, "{:?}", c.findings);
    let c = torn(&[(RecordKind::Put, b"gone", 5)]);
    assert_eq!(c.problems(), 1, "{:?}", c.findings);
    assert!(
        c.damaged.iter().any(|d| d.key == b"gone"),
        "{:?}",
        c.damaged
    );
    // A put deleted by a tombstone beside it (a segment freed while its zeroing was torn
    // keeps both) is no loss either.
    let c = torn(&[
        (RecordKind::Put, b"gone", 5),
        (RecordKind::Delete, b"gone", 6),
    ]);
    assert_eq!(c.problems(), 0, "{:?}", c.findings);
}

/// A reused segment whose new first buffer was torn by a power cut still holds its earlier
/// use's buffers behind it: they are stale bytes, not buffers stranded behind damage, even
/// when they hold a put newer than anything served (found by `powercut_replay.sh`).
#[test]
fn old_buffers_behind_a_torn_first_buffer_of_a_new_use_are_stale() {
    use crate::engine::format::{
        BUFFER_HEADER_SIZE, NO_GROUP, RECORD_HEADER_SIZE, RecordHeader, SegmentKind,
        record_body_crc, version_of,
    };
    let storage = SimStorage::new();
    let engine = Engine::open_on(storage.clone(), &options()).unwrap();
    engine
        .write(&[Mutation::put(0, b"kept".to_vec(), vec![5u8; 100])])
        .unwrap();
    engine.close().unwrap();
    let sb = Superblock::decode(&storage.read_superblock().unwrap().unwrap()).unwrap();
    // The last segment was never used: forge its history there.
    let segment = sb.segment_count - 1;
    let (file, base) = sb.segment_position(segment);
    let buffer = |generation: u64, key: &[u8], lsn: u64| {
        let value = vec![7u8; 100];
        let h = RecordHeader {
            kind: RecordKind::Put,
            key_len: key.len() as u16,
            group: NO_GROUP,
            value_len: value.len() as u32,
            version: version_of(lsn, 0),
        };
        let mut b = vec![0u8; BLOCK_SIZE];
        let at = BUFFER_HEADER_SIZE;
        h.encode(&mut b[at..], &record_body_crc(key, &value));
        b[at + RECORD_HEADER_SIZE..at + RECORD_HEADER_SIZE + key.len()].copy_from_slice(key);
        let v = at + RECORD_HEADER_SIZE + key.len();
        b[v..v + value.len()].copy_from_slice(&value);
        BufferHeader {
            kind: SegmentKind::Mixed,
            generation,
            lsn_first: lsn,
            lsn_last: lsn,
            durable_floor: lsn,
            payload_len: h.total_len() as u32,
            record_count: 1,
            group: NO_GROUP,
            buffer_len: BLOCK_SIZE as u32,
            segment_index: segment,
        }
        .seal(&mut b);
        b
    };
    // The earlier use (generation 1): a put of "gone", a key the store does not have.
    let old = buffer(1, b"gone", 2);
    storage
        .write_at(file, base + BLOCK_SIZE as u64, &old)
        .unwrap();
    // The new use (generation 2): its first buffer, torn.
    let mut new = buffer(2, b"kept", 1);
    new[7] ^= 1;
    // Torn before its end: no record directory either.
    new[BLOCK_SIZE - crate::engine::format::DIRECTORY_TRAILER_SIZE..].fill(0);
    storage.write_at(file, base, &new).unwrap();
    let c = run(&storage);
    assert!(
        !c.damaged.iter().any(|d| d.key == b"gone"),
        "the earlier use's put reads as lost: {:?}",
        c.findings
    );
}

/// Copies (group-owned segments): nothing proves a stretch of them was synced, so a
/// damaged record in a torn buffer of copies may be garbage of a power cut: a note. An
/// intact copy newer than anything served is lost data all the same (sources are freed
/// only once their copies are synced): a problem.
#[test]
fn damaged_copies_are_a_note_intact_lost_copies_a_problem() {
    let copies = |damaged_record| {
        check_with_forged_tail(Forged {
            records: &[(RecordKind::Put, b"gone", 5)],
            generation_back: 0,
            torn: true,
            in_group_segment: true,
            damaged_record,
        })
    };
    let c = copies(true);
    assert_eq!(c.problems(), 0, "{:?}", c.findings);
    assert!(
        c.findings.iter().any(|f| f.what.contains("all copies")),
        "{:?}",
        c.findings
    );
    let c = copies(false);
    assert_eq!(c.problems(), 1, "{:?}", c.findings);
}

#[test]
fn random_damage_never_panics() {
    use crate::engine::storage::SimRng;
    let base = SimStorage::new();
    let engine = Engine::open_on(base.clone(), &options()).unwrap();
    for i in 0..200u32 {
        engine
            .write(&[Mutation::put(
                0,
                i.to_be_bytes().to_vec(),
                vec![i as u8; 700],
            )])
            .unwrap();
    }
    engine.close().unwrap();
    let len = base.file_len(0).unwrap();
    for seed in 0..40 {
        let storage = base.crash(crate::engine::storage::PowerCut::KeepAllWritten);
        let mut rng = SimRng::new(seed);
        for _ in 0..1 + rng.below(50) {
            // Mostly within the written part, where it hurts.
            let at = rng.below(len.min(256 * 1024));
            storage.corrupt(0, at, (1 + rng.below(255)) as u8);
        }
        let c = run(&storage);
        assert!(c.findings.len() < 1000);
    }
}

/// Power cuts (any subset of unsynced sectors kept) are not damage: a store that only went
/// through them has no problem, before recovery (torn tails are notes) and after it.
#[test]
fn power_cuts_alone_are_never_problems() {
    use crate::engine::storage::{PowerCut, SimRng};
    let opts = EngineOptions {
        capacity_bytes: 32 << 20,
        segment_size_bytes: 256 << 10,
        segments_per_file: 16,
        sync_interval: None,
        ..Default::default()
    };
    let work = |engine: &Engine, rng: &mut SimRng, n: usize| {
        for i in 0..n {
            let k = vec![b'k', rng.below(48) as u8];
            let m = match rng.below(20) {
                0 | 1 => Mutation::delete(0, k),
                2 => Mutation::delete_prefix(0, vec![b'k']),
                _ => Mutation::put(0, k, vec![i as u8; 50 + rng.below(9000) as usize]),
            };
            engine.write(&[m]).unwrap();
            if rng.below(8) == 0 {
                engine.sync().unwrap();
            }
            if rng.below(60) == 0 {
                engine.test_compact().unwrap();
            }
        }
    };
    let no_problems = |storage: &SimStorage, when: &str, seed: u64| {
        let c = run(storage);
        let p: Vec<_> = c
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Problem)
            .collect();
        assert!(p.is_empty(), "seed {seed}, {when}: {p:?}");
        c.findings.len()
    };
    let mut notes = 0;
    for seed in 0..16 {
        let mut rng = SimRng::new(seed);
        let storage = SimStorage::new();
        let engine = Engine::open_on(storage.clone(), &opts).unwrap();
        work(&engine, &mut rng, 250);
        // Write-behind: have the last buffers written (not synced), so the cut tears them.
        engine.test_wait_flushes();
        let crashed = storage.crash(PowerCut::Random(seed));
        drop(engine);
        notes += no_problems(&crashed, "after a power cut", seed);
        let engine = Engine::open_on(crashed.clone(), &opts).unwrap();
        work(&engine, &mut rng, 120);
        engine.test_wait_flushes();
        let again = crashed.crash(PowerCut::Random(seed + 1000));
        engine.close().unwrap();
        no_problems(&crashed, "after recovery and a clean close", seed);
        no_problems(&again, "after a second power cut", seed);
        let engine = Engine::open_on(again.clone(), &opts).unwrap();
        engine.close().unwrap();
        no_problems(&again, "after recovery of the second cut", seed);
    }
    // The cuts did tear writes: the check saw them, as notes.
    assert!(notes > 0);
}

#[test]
fn garbage_superblock_is_a_finding() {
    let storage = SimStorage::new();
    storage.write_superblock(&[1u8; 64]).unwrap();
    let c = run(&storage);
    assert_eq!(c.problems(), 1);
    assert_eq!(c.findings[0].place, "superblock");
}
