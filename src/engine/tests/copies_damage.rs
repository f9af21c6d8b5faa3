//! Damage in segments of copies (whose sources compaction freed): in the last, middle or first
//! buffer, or a stretch of them, it fails reads of those records after a crash, never serving
//! an older version; copies behind damage are still served; past a segment's proven end nothing
//! is salvaged; power cuts during a pass lose and resurrect nothing.

use super::images::{COPIED, buffers_of_copies_cut};
use super::*;

/// Damage in a segment of copies costs only the damaged buffer: the copies behind it are still
/// served, also when they are the only copies left (their sources freed), and fsck agrees.
/// Before, recovery ended the segment at the damage and lost every record behind it.
#[test]
fn copies_behind_damage_in_a_group_segment_are_still_served() {
    let storage = images::damaged_copy_before_others();
    // Without the sync table's proof (its sector lost: zeroed), the buffer behind the damage
    // must be taken on its own rule (copies are taken whatever the stretch was).
    let without_table = Engine::open_on(
        images::without_the_sync_table(&storage),
        &separator_options(),
    )
    .unwrap();
    without_table.test_pause_background();
    assert_eq!(
        without_table.get(b"x").unwrap().unwrap(),
        vec![3u8; 20 << 10],
        "without the table's proof, the copy behind the damaged buffer is lost"
    );
    drop(without_table);
    let engine = Engine::open_on(storage.clone(), &separator_options()).unwrap();
    engine.test_pause_background();
    assert_eq!(engine.get(b"z").unwrap().unwrap(), vec![1u8; 20 << 10]);
    assert_eq!(
        engine.get(b"x").unwrap().unwrap(),
        vec![3u8; 20 << 10],
        "the copy behind the damaged buffer is lost"
    );
    assert!(
        engine
            .get(b"y")
            .map_or(true, |v| v.as_deref() != Some(&[2u8; 20 << 10][..])),
        "the damaged copy must not read back as if intact"
    );
    engine.close().unwrap();
    let c = fsck(&*storage);
    assert!(
        !c.damaged.iter().any(|d| d.key == b"x"),
        "fsck calls x lost although recovery serves it: {:?}",
        c.findings
    );
    assert!(c.live.contains_key(b"x".as_slice()));
}

/// Damages the copy of `COPIED[which]` (in buffer `which` of the segment of copies), cuts power
/// (no clean close: a full scan), reopens, and checks that reading it fails with the damage
/// error (EIO at the FUSE edge), never absent, never the older version still on disk, and that
/// every other key reads back exactly.
fn damaged_copy_after_a_crash(which: usize) {
    damaged_copies_after_a_crash(&[which]);
}

/// [`damaged_copy_after_a_crash`] for the copies of several buffers at once (adjacent ones
/// make one damaged stretch of several buffers).
fn damaged_copies_after_a_crash(which: &[usize]) {
    let (storage, expected) = images::damaged_copies(which);
    let keys: Vec<&str> = which.iter().map(|&w| COPIED[w]).collect();
    // fsck, by the same rule: a problem that names every damaged key, and no other.
    let c = fsck(&*storage);
    for key in &keys {
        assert!(
            c.damaged
                .iter()
                .any(|d| d.key == key.as_bytes() && !d.intact),
            "fsck does not name {key}: {:?}",
            c.findings
        );
    }
    assert!(
        c.findings
            .iter()
            .any(|f| f.severity == check::Severity::Problem && f.what.contains("checksum")),
        "{:?}",
        c.findings
    );
    assert!(
        c.damaged
            .iter()
            .all(|d| keys.iter().any(|k| d.key == k.as_bytes())),
        "fsck names others: {:?}",
        c.damaged
    );
    // Recovery indexes them where they are (the sync table proves them synced): fsck says
    // their reads fail.
    for key in &keys {
        assert_fsck_says_reads_fail(&c, key.as_bytes());
    }
    let engine = Engine::open_on(storage.clone(), &small_options()).unwrap();
    engine.test_pause_background();
    for key in &keys {
        let got = engine.get(key.as_bytes());
        assert!(
            matches!(got, Err(EngineError::Corrupt(ref s)) if s.contains("checksum")),
            "the damaged copy of {key} reads as {:?}",
            got.map(|v| v.map(|v| v[0]))
        );
    }
    assert_eq!(engine.recovery_report().records_poisoned, keys.len() as u64);
    assert_reads_back(&engine, &expected, &keys, "damaged copies");
}

/// Issue 6: media damage in the last buffer of a segment of copies, whose sources compaction
/// freed, found by a full scan after a crash. Nothing in the segment tells it from a write torn
/// by a power cut; the sync table proves the buffer was synced.
#[test]
fn damage_in_the_last_buffer_of_copies_fails_reads_after_a_crash() {
    damaged_copy_after_a_crash(2);
}

/// The same with damage in a buffer of copies between two others: before, the stretch's
/// records were dropped and the older version served.
#[test]
fn damage_in_the_middle_of_copies_fails_reads_after_a_crash() {
    damaged_copy_after_a_crash(1);
}

/// The same in the first buffer of the segment of copies (its header intact): the sync table
/// names the use, so the segment is not taken for a free one.
#[test]
fn damage_in_the_first_buffer_of_copies_fails_reads_after_a_crash() {
    damaged_copy_after_a_crash(0);
}

/// Issue 6: a damaged stretch of two buffers of copies in the middle of the segment (a valid
/// buffer of copies behind it): the records of both buffers are salvaged, not only the first
/// one's (before, the second buffer's copy was neither served nor poisoned, and the older
/// version still on disk was served).
#[test]
fn damage_in_two_adjacent_buffers_of_copies_fails_reads_of_both() {
    damaged_copies_after_a_crash(&[0, 1]);
}

/// The same with the last two buffers of copies (the stretch ends where the sync table's proof
/// does) and with all three.
#[test]
fn damage_in_the_last_buffers_of_copies_fails_reads_of_all_of_them() {
    damaged_copies_after_a_crash(&[1, 2]);
    damaged_copies_after_a_crash(&[0, 1, 2]);
}

/// A power cut at every step of a compaction pass that copies into a segment of copies and
/// frees the sources (after the copies are written, before their sync; after the index moved;
/// after the marker; between the sync table's write and its sync, whether the entries went
/// with the marker's sync or after it; after each zeroed first block), keeping none, all or a
/// random part of what was not synced: nothing synced is lost, nothing deleted comes back, and
/// fsck finds no problem.
#[test]
fn power_cuts_during_a_pass_with_the_sync_table_lose_and_resurrect_nothing() {
    let mut steps_seen = std::collections::BTreeSet::new();
    // The last kinds: every unsynced write to a segment file kept, none to the sync table: a
    // freed source whose copies' entry is not durable yet.
    for (round, cut) in power_cuts(6, 3).enumerate() {
        let storage = SimStorage::new();
        let log_busy = round % 2 == 1;
        let ((engine, _, expected), images) = buffers_of_copies_cut(&storage, Some(cut), log_busy);
        // Where the last pass put its copy (the same place in every image that has it).
        let last = COPIED[COPIED.len() - 1];
        let copy = engine.inner.index.get(last.as_bytes()).unwrap().location;
        let sb = Superblock::decode(&storage.read_superblock().unwrap().unwrap()).unwrap();
        let (file, base) = sb.segment_position(copy.segment);
        drop(engine);
        assert!(images.len() >= 6, "{images:?}", images = images.len());
        for (n, step, image) in images {
            steps_seen.insert(step);
            let what = format!("round {round} ({cut:?}, log busy {log_busy}), step {n} '{step}'");
            let c = fsck(&*image);
            assert!(
                !c.findings
                    .iter()
                    .any(|f| f.severity == check::Severity::Problem),
                "{what}: fsck: {:?}",
                c.findings
            );
            // The same image with media damage in the last copy: whatever the cut kept, its
            // key reads as its newest value (its source is still there) or fails, never as the
            // older version (its source freed while nothing proves the copy was synced).
            let damaged = image.freeze();
            damaged.corrupt(file, base + (copy.offset + copy.len / 2) as u64, 0x20);
            let engine = Engine::open_on(damaged, &small_options()).unwrap();
            engine.test_pause_background();
            let newest = &expected.iter().find(|(k, _)| k == last).unwrap().1;
            match engine.get(last.as_bytes()) {
                Ok(Some(v)) if v == *newest => {}
                Err(EngineError::Corrupt(_)) => {}
                other => panic!(
                    "{what}: with its copy damaged, {last} reads as {:?}",
                    other.map(|v| v.map(|v| v[0]))
                ),
            }
            drop(engine);
            let engine = Engine::open_on(image, &small_options()).unwrap();
            engine.test_pause_background();
            assert_reads_back(&engine, &expected, &[], &what);
            for pass in 0..COPIED.len() {
                for j in 0..4 {
                    let junk = format!("junk{pass}-{j}");
                    assert_eq!(engine.get(junk.as_bytes()).unwrap(), None, "{what}: {junk}");
                }
            }
            assert_eq!(engine.recovery_report().records_poisoned, 0, "{what}");
        }
    }
    for step in [
        "copies written, index not yet moved",
        "reclaim: marker synced",
        "reclaim: sync table written before the marker sync",
        "reclaim: sync table written",
        "reclaim: sync table synced",
        "reclaim: a first block zeroed",
    ] {
        assert!(
            steps_seen.contains(step),
            "no cut at '{step}': {steps_seen:?}"
        );
    }
}

/// What the sync table does not prove keeps the old rule: past the proven end of a reused
/// segment of copies lie the bytes of its earlier use (intact buffers of an older generation,
/// The walk over a damaged stretch (`scan::stretch_records`, recovery's salvage and fsck's
/// read of it): the records of every buffer of the stretch's use in it, found at block
/// boundaries, past buffers of another use, never past the stretch's end. Buffers without a
/// record directory (format version 1, or a version 2 buffer whose directory is damaged).
#[test]
fn stretch_records_walk_every_buffer_of_the_stretch_and_nothing_else() {
    use format::{BUFFER_HEADER_SIZE, BufferHeader, SegmentKind};
    let segment = 7;
    // A buffer of `blocks` blocks of generation `generation` holding puts of `records`.
    let buffer = |generation: u64, records: &[(&[u8], usize)], blocks: usize| {
        let mut b = vec![0u8; blocks * BLOCK_SIZE];
        let p = puts_into(&mut b, records, 0);
        BufferHeader {
            kind: SegmentKind::Group,
            generation,
            lsn_first: 0,
            lsn_last: 10,
            durable_floor: 10,
            payload_len: (p - BUFFER_HEADER_SIZE) as u32,
            record_count: records.len() as u32,
            group: 3,
            buffer_len: (blocks * BLOCK_SIZE) as u32,
            segment_index: segment,
        }
        .seal_version_1(&mut b);
        b
    };
    let walk = |image: &[u8], end: usize, generation: Option<u64>| {
        scan::stretch_records(image, segment, 0, end, generation)
            .into_iter()
            .map(|r| {
                (
                    String::from_utf8(r.key).unwrap(),
                    r.intact,
                    r.in_first_buffer,
                )
            })
            .collect::<Vec<_>>()
    };
    let own = |key: &str, intact: bool, first: bool| (key.to_string(), intact, first);
    // A: two blocks, its second record across the block boundary (value damaged). B: records
    // filling it exactly, up to the next buffer's header. C: a buffer of an earlier use. D: of
    // this use again. E: past the stretch's end.
    let mut image = buffer(9, &[(b"a1", 3000), (b"a2", 3000)], 2);
    image[3100 + 24 + 2 + 1500] ^= 0x10;
    image.extend(buffer(
        9,
        &[
            (b"b1", 2000),
            (b"b2", BLOCK_SIZE - BUFFER_HEADER_SIZE - 2026 - 26),
        ],
        1,
    ));
    image.extend(buffer(4, &[(b"old", 100)], 1));
    image.extend(buffer(9, &[(b"d1", 100)], 1));
    image.extend(buffer(9, &[(b"e1", 100)], 1));
    // Every buffer of the stretch fails its checks.
    for at in [0, 2 * BLOCK_SIZE, 4 * BLOCK_SIZE] {
        image[at + 60] ^= 1;
        assert!(BufferHeader::decode_checked(&image[at..]).is_none());
    }
    let stretch = 5 * BLOCK_SIZE;
    assert_eq!(
        walk(&image, stretch, Some(9)),
        vec![
            own("a1", true, true),
            own("a2", false, true),
            own("b1", true, false),
            own("b2", true, false),
            own("d1", true, false),
        ]
    );
    // Without the use's generation: the first buffer only (the walk past a torn buffer).
    assert_eq!(
        walk(&image, stretch, None),
        vec![own("a1", true, true), own("a2", false, true)]
    );
    // A damaged length that runs over the buffers behind ends at the next one of this use.
    let mut long = image.clone();
    let value_len_at = BUFFER_HEADER_SIZE + 12;
    long[value_len_at + 1] ^= 0x40; // a1's value length, 16 KiB longer
    assert_eq!(
        walk(&long, stretch, Some(9)),
        vec![
            own("a1", false, true),
            own("b1", true, false),
            own("b2", true, false),
            own("d1", true, false),
        ]
    );
    // The stretch ends before B's header: nothing of B (nor of what follows) is read.
    assert_eq!(
        walk(&image, 2 * BLOCK_SIZE + BUFFER_HEADER_SIZE - 1, Some(9)),
        vec![own("a1", true, true), own("a2", false, true)]
    );
}

/// or a torn buffer of this use): never salvaged, never served, whatever follows.
#[test]
fn bytes_past_the_proven_end_are_not_salvaged() {
    use format::{BUFFER_HEADER_SIZE, BufferHeader, RecordHeader, RecordKind, SegmentKind};
    let segment = 7;
    let buffer = |generation: u64, key: &[u8], value: &[u8]| {
        let h = RecordHeader {
            kind: RecordKind::Put,
            key_len: key.len() as u16,
            group: 3,
            value_len: value.len() as u32,
            version: format::version_of(10, 0),
        };
        let mut rec = vec![0u8; h.total_len()];
        rec[24..24 + key.len()].copy_from_slice(key);
        rec[24 + key.len()..].copy_from_slice(value);
        h.encode(&mut rec, &format::record_body_crc(key, value));
        let mut b = vec![0u8; BLOCK_SIZE];
        b[BUFFER_HEADER_SIZE..BUFFER_HEADER_SIZE + rec.len()].copy_from_slice(&rec);
        BufferHeader {
            kind: SegmentKind::Group,
            generation,
            lsn_first: 0,
            lsn_last: 10,
            durable_floor: 10,
            payload_len: rec.len() as u32,
            record_count: 1,
            group: 3,
            buffer_len: BLOCK_SIZE as u32,
            segment_index: segment,
        }
        .seal(&mut b);
        b
    };
    // This use (generation 9): one buffer, proven. Then an intact buffer of the earlier use
    // (generation 4), then a torn buffer of this use, then another earlier one.
    let mut image = buffer(9, b"now", b"current");
    image.extend(buffer(4, b"gone", b"deleted long ago"));
    let mut torn = buffer(9, b"torn", b"never synced");
    torn[100] ^= 1;
    image.extend(torn);
    image.extend(buffer(4, b"gone2", b"deleted too"));
    let proof = synctable::Proof {
        generation: 9,
        synced_end: BLOCK_SIZE as u32,
    };
    for proof in [None, Some(proof)] {
        let scan = scan::scan_segment(&image, segment, 100, proof, u64::MAX);
        assert_eq!(scan.valid.len(), 1, "{proof:?}");
        assert!(scan.damaged.is_empty(), "{proof:?}: {:?}", scan.damaged);
        assert_eq!(scan.stopped_at, Some(BLOCK_SIZE), "{proof:?}");
    }
    // A proof of another use (the segment was reused since) proves nothing either.
    let mut torn_first = image.clone();
    torn_first[70] ^= 1;
    let stale = synctable::Proof {
        generation: 4,
        synced_end: 4 * BLOCK_SIZE as u32,
    };
    let scan = scan::scan_segment(&torn_first, segment, 100, Some(stale), u64::MAX);
    assert!(scan.valid.is_empty() && scan.damaged.is_empty());
    // The same torn stretch inside the proven end is damage (its records get salvaged).
    let proven = synctable::Proof {
        generation: 9,
        synced_end: 3 * BLOCK_SIZE as u32,
    };
    let mut image2 = buffer(9, b"now", b"current");
    image2.extend(buffer(9, b"next", b"synced"));
    let mut damaged = buffer(9, b"hit", b"damaged after its sync");
    damaged[100] ^= 1;
    image2.extend(damaged);
    image2.extend(buffer(4, b"gone", b"deleted long ago"));
    let scan = scan::scan_segment(&image2, segment, 100, Some(proven), u64::MAX);
    assert_eq!(scan.valid.len(), 2);
    assert_eq!(
        scan.damaged,
        vec![scan::DamagedStretch {
            start: 2 * BLOCK_SIZE,
            end: 3 * BLOCK_SIZE,
            synced_end: 3 * BLOCK_SIZE,
            log_tail: false,
            generation: 9,
            copies: true,
        }]
    );
    assert_eq!(
        scan.stopped_at,
        Some(3 * BLOCK_SIZE),
        "the earlier use behind it"
    );
}

/// A segment of copies whose first buffer's header is garbled, kind byte included: recovery
/// judged such a segment by that byte alone when no buffer before the damage was valid, took it
/// for a segment of the log, found nothing vouching for the stretch, and dropped its copies
/// (their keys read older versions or vanished; found by the flip campaign with runs of 16
/// bytes). The next valid buffer of the use tells the kind (every buffer of a use is of one).
#[test]
fn a_segment_of_copies_whose_first_header_is_garbled_is_still_one_of_copies() {
    let (storage, expected) = images::copies_with_a_garbled_first_header();
    let c = fsck(&*storage);
    assert_eq!(c.problems(), 0, "{:?}", c.findings);
    let engine = Engine::open_on(storage, &separator_options()).unwrap();
    assert_reads_back(&engine, &expected, &[], "garbled first header");
}
