//! What a buffer's record directory recovers: a damaged record header or key fails reads of that
//! key only, a damaged stretch is read from each buffer's directory, what the rest of a buffer
//! determines is repaired exactly, damage that takes a directory too is reported, and damaged
//! deletions that recovery keeps are kept by fsck too.

use super::*;

/// Issue 6, point 4: a flipped byte in a record's own header or key. Without the record
/// directory (format version 2) the damaged record could not be named: its key served the
/// version before it (or read as absent), and a damaged length lost every record behind it in
/// its buffer. Now each such key reads as damaged, never as an older version; the records
/// around it read their newest values; fsck names the key.
#[test]
fn damage_to_a_records_header_or_key_fails_reads_of_that_key_never_an_older_version() {
    for (what, delta, mask) in images::RECORD_DAMAGE {
        let storage = images::damaged_record_header_or_key(delta, mask);
        let engine = after_a_power_cut_the_victim_reads_as_damaged(&storage, what);
        assert_eq!(
            engine.get(b"before").unwrap().unwrap(),
            vec![b'B'; 200],
            "{what}"
        );
        assert_eq!(
            engine.get(b"behind").unwrap().unwrap(),
            vec![b'N'; 300],
            "{what}"
        );
        assert_eq!(
            engine.get(b"after").unwrap().as_deref(),
            Some(&b"a"[..]),
            "{what}"
        );
        // A scan names it damaged too, and lists nothing that is not in the store.
        let scanned = engine.scan(b"", None, 100);
        assert!(
            matches!(scanned, Err(EngineError::Corrupt(_))),
            "{what} damaged: a scan over the victim gives {:?}",
            scanned.map(|v| v.into_iter().map(|(k, _)| k).collect::<Vec<_>>())
        );
        // Writing the key again replaces the damaged version.
        engine.write(&[put("victim", b"rewritten")]).unwrap();
        assert_eq!(
            engine.get(b"victim").unwrap().as_deref(),
            Some(&b"rewritten"[..])
        );
    }
}

/// Record directories in a damaged stretch (`scan::stretch_records`): a buffer whose own
/// header, key or length is damaged is read from its directory, found from the buffer's end;
/// when two adjacent buffers both lost their headers, the directory found at the stretch's end
/// is the second one's (its trailer gives its length): its records are placed from its own
/// start, and the first buffer is walked.
#[test]
fn stretch_records_read_record_directories_from_each_buffers_end() {
    use format::{BUFFER_HEADER_SIZE, BufferHeader, SegmentKind};
    let segment = 7;
    let buffer = |records: &[(&[u8], usize)], first_index: usize| {
        let mut b = vec![0u8; BLOCK_SIZE];
        let p = puts_into(&mut b, records, first_index);
        BufferHeader {
            kind: SegmentKind::Mixed,
            generation: 9,
            lsn_first: 10,
            lsn_last: 10,
            durable_floor: 9,
            payload_len: (p - BUFFER_HEADER_SIZE) as u32,
            record_count: 1,
            group: format::NO_GROUP,
            buffer_len: BLOCK_SIZE as u32,
            segment_index: segment,
        }
        .seal(&mut b);
        b
    };
    let walk = |image: &[u8]| {
        scan::stretch_records(image, segment, 0, image.len(), Some(9))
            .into_iter()
            .map(|r| {
                let key = String::from_utf8_lossy(&r.key).into_owned();
                (key, r.at, r.intact, r.from_directory)
            })
            .collect::<Vec<_>>()
    };
    let mut image = buffer(&[(b"a1", 100)], 0);
    image.extend(buffer(&[(b"b1", 2000), (b"b2", 100)], 1));
    let b1_at = BLOCK_SIZE + BUFFER_HEADER_SIZE;
    let b2_at = b1_at + 24 + 2 + 2000;
    // B's key and value length damaged, A intact but for its header: both from directories.
    let mut one = image.clone();
    one[BLOCK_SIZE] ^= 1; // B's magic
    one[0] ^= 1; // A's magic
    one[b1_at + 24] ^= 0x02; // b1's key: "b1" -> "`1"
    one[b1_at + 13] ^= 0x40; // b1's value length
    assert_eq!(
        walk(&one),
        vec![
            ("a1".into(), BUFFER_HEADER_SIZE, true, false),
            ("b1".into(), b1_at, false, true),
            ("b2".into(), b2_at, true, true),
        ],
        "A walked (its directory is found only past B's), B from its own directory"
    );
    // Only A's header damaged: its header's length field is gone, but B starts like a buffer:
    // A's directory is found where B starts.
    let mut two = image.clone();
    two[0] ^= 1;
    two[BUFFER_HEADER_SIZE + 24] ^= 0x04; // a1's key
    assert_eq!(
        walk(&two),
        vec![
            ("a1".into(), BUFFER_HEADER_SIZE, false, true),
            ("b1".into(), b1_at, true, true),
            ("b2".into(), b2_at, true, true),
        ]
    );
}

/// A flipped byte in what the rest of a buffer determines is repaired, exactly, wherever the
/// buffer is: a field of the header that names the buffer (magic, version, kind, flags,
/// generation, length, segment index: known from the record directory's trailer and the
/// buffer's place), or the zero padding, the directory or its trailer (known from the header
/// and the records). The repaired buffer must pass the buffer's CRC over every byte, so it is
/// the buffer as sealed, and nothing is lost: recovery serves every key, fsck finds no problem
/// and notes the repair.
/// Before, a flipped generation in a segment's first buffer made the segment read as free
/// (its files served older versions or vanished), and a damaged directory in the newest
/// synced buffer, with only a marker behind it, made it read as torn (its keys served their
/// older versions). Found by `one_flipped_byte_anywhere_reads_newest_or_fails_never_older`.
///
/// The store: "first" alone in a segment's first buffer, "newest" written twice, a clean close
/// (a marker behind the newest batch). Returns it with each case: what is flipped, and the
/// store's image with that byte flipped.
fn repairable_buffer_damage() -> Vec<(String, Arc<SimStorage>)> {
    let (storage, engine, segment) = first_in_a_segments_first_buffer();
    engine.write(&[put("newest", b"older version")]).unwrap();
    engine.sync().unwrap();
    engine.write(&[put("newest", &[b'N'; 2000])]).unwrap();
    // A clean close: a marker behind the newest batch (no batch of its own).
    engine.close().unwrap();
    // The damage below is for the scan to repair, not for a summary to stand in for.
    forget_summaries(&storage);
    let sb = Superblock::decode(&storage.read_superblock().unwrap().unwrap()).unwrap();
    let (file, base) = sb.segment_position(segment);
    let mut image = vec![0u8; sb.segment_size as usize];
    storage.read_at(file, base, &mut image).unwrap();
    let buffers = scan::valid_buffers(&image, segment, sb.generation_high_water);
    let batches: Vec<(usize, usize, usize)> = buffers
        .iter()
        .filter(|(_, h)| h.lsn_first > 0)
        .map(|&(at, h)| {
            let end = at + format::BUFFER_HEADER_SIZE + h.payload_len as usize;
            (at, end, at + h.buffer_len as usize)
        })
        .collect();
    assert!(batches.len() >= 3, "{buffers:?}");
    let (newest_at, newest_payload_end, newest_end) = *batches.last().unwrap();
    assert!(
        buffers
            .iter()
            .any(|&(at, h)| at == newest_end && h.lsn_first == 0),
        "no marker behind the newest batch: {buffers:?}"
    );
    let mut cases: Vec<(String, usize)> = [0, 4, 6, 7, 8, 15, 50, 52, 53, 56]
        .iter()
        .map(|&b| (format!("first buffer's header byte {b}"), b))
        .collect();
    for (what, at) in [
        ("padding", newest_payload_end + 10),
        (
            "directory entry",
            newest_end - format::DIRECTORY_TRAILER_SIZE - 5,
        ),
        ("trailer magic", newest_end - format::DIRECTORY_TRAILER_SIZE),
        (
            "trailer count",
            newest_end - format::DIRECTORY_TRAILER_SIZE + 4,
        ),
        (
            "trailer generation",
            newest_end - format::DIRECTORY_TRAILER_SIZE + 16,
        ),
        ("trailer CRC", newest_end - 1),
        ("header generation", newest_at + 9),
    ] {
        cases.push((format!("newest batch's {what}"), at));
    }
    cases
        .into_iter()
        .map(|(case, at)| {
            let copy = storage.crash(PowerCut::DropAllUnsynced);
            copy.corrupt(file, base + at as u64, 0x10);
            (case, copy)
        })
        .collect()
}

#[test]
fn damage_to_what_the_rest_of_a_buffer_determines_is_repaired_exactly_recovery() {
    for (case, copy) in repairable_buffer_damage() {
        let engine = Engine::open_on(copy, &small_options()).unwrap();
        // Repaired, the buffer is accepted whole: no damaged stretch is left for other rules
        // (a record directory, a buffer vouching behind) to salvage.
        let report = engine.recovery_report();
        assert_eq!(report.buffers_damaged, 0, "{case}: {report:?}");
        assert_eq!(
            engine.get(b"first").unwrap().unwrap(),
            vec![b'F'; 3000],
            "{case}"
        );
        assert_eq!(
            engine.get(b"newest").unwrap().unwrap(),
            vec![b'N'; 2000],
            "{case}"
        );
    }
}

#[test]
fn damage_to_what_the_rest_of_a_buffer_determines_is_repaired_exactly_fsck() {
    for (case, copy) in repairable_buffer_damage() {
        let c = fsck(&*copy);
        assert_eq!(c.problems(), 0, "{case}: {:?}", c.findings);
        assert!(c.damaged.is_empty(), "{case}: {:?}", c.damaged);
        assert!(
            c.findings.iter().any(|f| f.what.contains("repaired")),
            "{case}: fsck does not note the repair: {:?}",
            c.findings
        );
        let newest = c.live.get(&b"newest"[..]).map(|l| l.value_len);
        assert_eq!(newest, Some(2000), "{case}: {:?}", c.findings);
        assert!(
            c.live.contains_key(&b"first"[..]),
            "{case}: {:?}",
            c.findings
        );
    }
}

/// What the record directory cannot cover: damage that takes a buffer's records and its
/// directory at once (a whole single-block buffer of garbage). Nothing names the records any
/// more, so nothing makes their keys' reads fail, and a key may read an older version: the
/// limit of what record directories can name. What must hold: the damage is not silent. fsck reports it as a
/// problem, with where it is, and recovery counts it (and logs it).
#[test]
fn a_damaged_buffer_whose_directory_is_damaged_too_is_reported_not_silent() {
    let storage = images::damaged_buffer_and_its_directory();
    let c = fsck(&*storage);
    assert!(
        c.findings
            .iter()
            .any(|f| f.severity == check::Severity::Problem
                && f.what.contains("record directory is damaged too")),
        "fsck is silent about unnamed damage: {:?}",
        c.findings
    );
    let engine = Engine::open_on(storage, &small_options()).unwrap();
    assert_eq!(engine.recovery_report().buffers_unnamed, 1);
    assert_eq!(engine.get(b"after").unwrap().as_deref(), Some(&b"a"[..]));
}

/// Damaged deletions whose effect recovery keeps (`recovery::salvage_records`): a range delete
/// that its buffer's record directory names is applied with the directory's range, and a
/// damaged tombstone is indexed as a tombstone. The keys they deleted stay deleted, and
/// nothing is lost. fsck keeps them too; before, it left them out of what the next mount
/// serves, so it reported each as lost durable data and listed the keys they hide as live
/// (found by `one_flipped_byte_anywhere_reads_newest_or_fails_never_older`).
#[test]
fn damaged_deletions_that_recovery_keeps_are_kept_by_fsck_too() {
    for deletion in ["range delete", "tombstone"] {
        // The deletion's record CRC field damaged, a batch behind it whose durable floor
        // vouches for it.
        let storage = images::damaged_deletion(deletion);
        let c = fsck(&*storage);
        assert_eq!(c.problems(), 0, "{deletion}: {:?}", c.findings);
        assert!(c.damaged.is_empty(), "{deletion}: {:?}", c.damaged);
        assert!(
            !c.live.contains_key(&b"zz/gone"[..]),
            "{deletion}: fsck lists a deleted key as live"
        );
        let engine = Engine::open_on(storage, &small_options()).unwrap();
        assert_eq!(engine.get(b"zz/gone").unwrap(), None, "{deletion}");
        assert_eq!(engine.get(b"after").unwrap().as_deref(), Some(&b"a"[..]));
    }
}
