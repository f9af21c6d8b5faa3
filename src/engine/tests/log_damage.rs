//! Damage in log segments costs only the damaged records: a damaged record is reported, never
//! returned; damage in the middle of the log, in a stretch of adjacent buffers, in a segment's
//! first or only buffer, in the newest synced buffer or in a buffer sealed early fails reads of
//! its own records only, never serving an older version and never ending the log early.

use super::*;

#[test]
fn damaged_record_is_reported_not_returned() {
    let storage = SimStorage::new();
    let engine = Engine::open_on(storage.clone(), &small_options()).unwrap();
    engine
        .write(&[put("good", b"fine"), put("bad", b"this will be damaged")])
        .unwrap();
    engine.test_wait_flushes();
    let sb = Superblock::decode(&storage.read_superblock().unwrap().unwrap()).unwrap();
    let (segment, _) = engine.test_segment_of(b"bad").unwrap();
    let entry = engine.inner.index.get(b"bad").unwrap();
    let (file, base) = sb.segment_position(segment);
    storage.corrupt(
        file,
        base + entry.location.offset as u64 + entry.location.len as u64 - 2,
        1,
    );
    let err = engine.get(b"bad").unwrap_err();
    assert!(
        matches!(err, EngineError::Corrupt(ref s) if s.contains("checksum")),
        "{err}"
    );
    assert_eq!(engine.get(b"good").unwrap().as_deref(), Some(&b"fine"[..]));
    let err = engine.scan(b"", None, 10).unwrap_err();
    assert!(
        matches!(err, EngineError::Corrupt(_)),
        "a scan over damage fails too: {err}"
    );
}

/// Damage in the middle of the log (durable data, later buffers intact) is not the end of the
/// log: what follows it is still served, the damaged record reads as damage (never as an older
/// version of its key), and its intact neighbours in the damaged buffer are served too.
#[test]
fn damage_in_the_middle_of_the_log_fails_reads_of_that_record_only() {
    let storage = SimStorage::new();
    let engine = Engine::open_on(storage.clone(), &small_options()).unwrap();
    engine.test_pause_background();
    engine.write(&[put("victim", b"old version")]).unwrap();
    engine.write(&[put("before", b"b")]).unwrap();
    engine.sync().unwrap();
    engine
        .write(&[put("victim", &[b'V'; 3000]), put("neighbour", &[b'N'; 300])])
        .unwrap();
    engine.sync().unwrap();
    engine.write(&[put("after", b"a")]).unwrap();
    engine.sync().unwrap();
    let (segment, _) = engine.test_segment_of(b"victim").unwrap();
    assert_eq!(
        engine.test_segment_of(b"after").unwrap().0,
        segment,
        "one segment"
    );
    engine.close().unwrap();
    let sb = Superblock::decode(&storage.read_superblock().unwrap().unwrap()).unwrap();
    let (file, base) = sb.segment_position(segment);
    let mut img = vec![0u8; sb.segment_size as usize];
    storage.read_at(file, base, &mut img).unwrap();
    let at = img.windows(64).position(|w| w == [b'V'; 64]).unwrap();
    storage.corrupt(file, base + at as u64 + 100, 0x01);
    // Recovery reads the segment (its summary, written at the close, removed) and finds the
    // damage; or takes the segment from its summary, without reading it. Reads are the same.
    for summarized in [false, true] {
        let image = storage.crash(PowerCut::DropAllUnsynced);
        if !summarized {
            forget_summaries(&image);
        }
        let engine = Engine::open_on(image, &small_options()).unwrap();
        let report = engine.recovery_report();
        assert_eq!(report.buffers_damaged, u64::from(!summarized), "{report:?}");
        assert_eq!(report.segments_summarized > 0, summarized, "{report:?}");
        assert!(
            matches!(engine.get(b"victim"), Err(EngineError::Corrupt(_))),
            "{:?}",
            engine.get(b"victim").map(|v| v.map(|v| v.len()))
        );
        assert_eq!(engine.get(b"neighbour").unwrap().unwrap(), vec![b'N'; 300]);
        assert_eq!(engine.get(b"before").unwrap().as_deref(), Some(&b"b"[..]));
        assert_eq!(engine.get(b"after").unwrap().as_deref(), Some(&b"a"[..]));
    }
}

/// Issue 6: a damaged stretch of `n` adjacent log buffers in the middle of the log (a valid
/// buffer of the same segment after them proves it durable). Each buffer holds a newer version
/// of a key `d{i}` (its value damaged) and of a key `n{i}` (intact); all have older versions
/// earlier in the log. After a crash and a full scan, every `n{i}` reads its newest value,
/// every `d{i}` fails with the damage error, none reads its older version; fsck names every
/// damaged key.
fn damaged_log_stretch_of(n: usize) {
    let storage = SimStorage::new();
    let engine = Engine::open_on(storage.clone(), &small_options()).unwrap();
    engine.test_pause_background();
    let old: Vec<Mutation> = (0..n)
        .flat_map(|i| {
            [
                put(&format!("d{i}"), b"old version"),
                put(&format!("n{i}"), b"old neighbour"),
            ]
        })
        .collect();
    engine.write(&old).unwrap();
    engine.write(&[put("before", b"b")]).unwrap();
    engine.sync().unwrap();
    let newest = |i: usize| (vec![b'A' + i as u8; 3000], vec![b'a' + i as u8; 300]);
    for i in 0..n {
        let (d, nb) = newest(i);
        engine
            .write(&[put(&format!("d{i}"), &d), put(&format!("n{i}"), &nb)])
            .unwrap();
        engine.sync().unwrap();
    }
    engine.write(&[put("after", b"a")]).unwrap();
    engine.sync().unwrap();
    let (segment, _) = engine.test_segment_of(b"after").unwrap();
    let buffers = buffer_offsets(&storage, segment);
    let mut damaged_buffers = Vec::new();
    for i in 0..n {
        let key = format!("d{i}");
        assert_eq!(engine.test_segment_of(key.as_bytes()).unwrap().0, segment);
        let (_, offset) = damage_value_of(&engine, &storage, key.as_bytes());
        damaged_buffers.push(buffers.iter().rposition(|&b| b < offset).unwrap());
    }
    assert!(
        damaged_buffers.windows(2).all(|w| w[1] == w[0] + 1)
            && damaged_buffers[n - 1] + 1 < buffers.len(),
        "one buffer per batch, adjacent, a valid one behind: {buffers:?} {damaged_buffers:?}"
    );
    drop(engine);
    let storage = storage.crash(PowerCut::DropAllUnsynced);
    let c = fsck(&*storage);
    for i in 0..n {
        let key = format!("d{i}");
        assert!(
            c.damaged
                .iter()
                .any(|d| d.key == key.as_bytes() && !d.intact),
            "fsck does not name {key}: {:?} {:?}",
            c.damaged,
            c.findings
        );
    }
    let engine = Engine::open_on(storage.clone(), &small_options()).unwrap();
    engine.test_pause_background();
    let report = engine.recovery_report();
    assert_eq!(report.buffers_damaged, 1, "one stretch: {report:?}");
    assert_eq!(report.records_poisoned, n as u64, "{report:?}");
    for i in 0..n {
        let (_, nb) = newest(i);
        let got = engine.get(format!("d{i}").as_bytes());
        assert!(
            matches!(got, Err(EngineError::Corrupt(_))),
            "d{i} of damaged buffer {i} reads as {:?}",
            got.map(|v| v.map(|v| String::from_utf8_lossy(&v[..v.len().min(20)]).into_owned()))
        );
        assert_eq!(
            engine.get(format!("n{i}").as_bytes()).unwrap(),
            Some(nb),
            "n{i} of damaged buffer {i}"
        );
    }
    assert_eq!(engine.get(b"before").unwrap().as_deref(), Some(&b"b"[..]));
    assert_eq!(engine.get(b"after").unwrap().as_deref(), Some(&b"a"[..]));
}

#[test]
fn damage_in_two_adjacent_log_buffers_fails_reads_of_both() {
    damaged_log_stretch_of(2);
}

#[test]
fn damage_in_three_adjacent_log_buffers_fails_reads_of_all() {
    damaged_log_stretch_of(3);
}

/// A power cut can tear one log buffer and keep a later one of the same segment whole.
/// Recovery ends the segment at the torn buffer (nothing proves it was durable), but the puts
/// behind it stay on disk: they must be noted like those of the torn buffer itself, or
/// compaction drops a tombstone of their key and the stale put reads as lost durable data
/// (found by `scripts/powercut_replay.sh`).
#[test]
fn puts_behind_a_torn_buffer_stay_noted() {
    let storage = SimStorage::new();
    let engine = Engine::open_on(storage.clone(), &small_options()).unwrap();
    engine.test_pause_background();
    engine.write(&[put("first", b"1")]).unwrap();
    engine.sync().unwrap();
    // Two batches, each filling a buffer of its own, with no sync between them: the second
    // buffer's durable floor does not cover the first.
    engine.write(&[put("y", &[2u8; 120 << 10])]).unwrap();
    // Write-behind: written out now, so that "x" gets a buffer of its own.
    engine.test_wait_flushes();
    engine.write(&[put("x", &[3u8; 120 << 10])]).unwrap();
    engine.test_wait_flushes();
    let (seg_y, _) = engine.test_segment_of(b"y").unwrap();
    assert_eq!(engine.test_segment_of(b"x").unwrap().0, seg_y);
    drop(engine);
    // Tear the buffer of "y" (its payload); the one of "x" behind it stays whole.
    flip_a_byte_of_value(&storage, seg_y, 2);
    let engine = Engine::open_on(storage.clone(), &small_options()).unwrap();
    engine.test_pause_background();
    assert_eq!(engine.get(b"first").unwrap().as_deref(), Some(&b"1"[..]));
    // Neither is served (the stretch is not proven durable), but both stay noted: a
    // tombstone of either key is not droppable while this segment is in use.
    let notes = &engine.inner.put_notes;
    for key in [&b"y"[..], b"x"] {
        assert!(
            notes.may_hold_older(seg_y, notes.point_hash(key), u64::MAX),
            "the put of {:?} behind the torn buffer is not noted",
            String::from_utf8_lossy(key)
        );
    }
}

/// Damage in the first buffer of a log segment, with later buffers of the segment intact: the
/// segment's use is known from its first header (magic, segment, generation) and from the
/// valid buffers of that generation behind it, whose durable floor vouches for the first
/// buffer's batches. Before, recovery took the whole segment for free: every record in it was
/// lost, the damaged one read as absent, intact ones behind it too.
#[test]
fn damage_in_the_first_buffer_of_a_log_segment_fails_reads_of_that_record_only() {
    // A byte of the victim's value, then of the first buffer header's magic, version and
    // segment index (its generation field still names the use).
    for header_byte in [None, Some(0), Some(4), Some(57)] {
        damage_in_the_first_buffer_of_a_log_segment(header_byte);
    }
}

fn damage_in_the_first_buffer_of_a_log_segment(header_byte: Option<u64>) {
    eprintln!("case: header byte {header_byte:?}");
    // Its record directory is damaged too: the buffer's use is told by its header alone, not
    // by `first_alone`.
    let storage = images::damaged_first_log_buffer(header_byte);
    fsck_names_only_the_victim(&*storage);
    let engine = Engine::open_on(storage.clone(), &small_options()).unwrap();
    assert_eq!(engine.recovery_report().buffers_damaged, 1);
    let got = engine.get(b"victim");
    assert!(
        matches!(got, Err(EngineError::Corrupt(_))),
        "the damaged victim reads as {:?}",
        got.map(|v| v.map(|v| v.len()))
    );
    assert_eq!(engine.get(b"neighbour").unwrap().unwrap(), vec![b'N'; 300]);
    assert_eq!(engine.get(b"after").unwrap().as_deref(), Some(&b"a"[..]));
}

/// Damage in the newest synced log buffer: nothing behind it vouched that it had been synced,
/// so it looked like a write torn by a power cut and was dropped, and its key served the older
/// version, even after a clean close (whose marker, having no batch of its own, vouched for
/// nothing by the old rule) or after a reopen. Now a marker behind the newest batches (written
/// by a clean close, by an open, and once writes pause) vouches for them through their record
/// directory (`recovery::directory_vouches`), and the damaged key reads as damaged.
#[test]
fn damage_in_the_newest_synced_log_buffer_fails_reads_once_a_marker_is_behind_it() {
    for scenario in ["close", "crash, reopen", "close, reopen", "idle"] {
        let storage = images::damaged_newest_synced_log_buffer(scenario);
        let engine = after_a_power_cut_the_victim_reads_as_damaged(&storage, scenario);
        assert_eq!(
            engine.get(b"neighbour").unwrap().unwrap(),
            vec![b'N'; 500],
            "{scenario}"
        );
    }
}

/// A log segment whose only buffer fails (its magic damaged, before such a field was repaired;
/// its CRC field now) read as free: its records were
/// lost, and their keys served older versions. Its generation field, named again by its own
/// record directory, now tells its use; the buffer is a log tail, taken because its batch is
/// within the durable floor (a buffer of a later segment vouches).
#[test]
fn a_log_segment_whose_only_buffer_is_damaged_is_not_taken_for_free() {
    // In a store of an older superblock too, whose frees did not clear first directories: the
    // generation field and the directory together tell the use there.
    for older_superblock in [false, true] {
        a_log_segment_whose_only_buffer_is_damaged(older_superblock);
    }
}

fn a_log_segment_whose_only_buffer_is_damaged(older_superblock: bool) {
    // Every buffer's CRC field is damaged (see the image's builder): a damaged CRC field cannot
    // be told from damage anywhere else.
    let (storage, segment, value) = images::damaged_only_log_buffer(older_superblock);
    // fsck sees the damaged buffer, and serves what recovery serves: nothing is lost.
    let c = fsck(&*storage);
    assert!(c.damaged.is_empty(), "{:?}", c.damaged);
    assert_eq!(c.problems(), 0, "{:?}", c.findings);
    assert!(
        c.findings
            .iter()
            .any(|f| f.what.contains("intact and served")),
        "fsck does not note the damaged buffer: {:?}",
        c.findings
    );
    assert_eq!(
        c.live.get(&b"victim"[..]).map(|r| r.place.segment),
        Some(segment),
        "fsck serves the victim from the damaged buffer, as recovery does"
    );
    let engine = Engine::open_on(storage.clone(), &small_options()).unwrap();
    assert_eq!(engine.get(b"victim").unwrap().unwrap(), value);
}

/// A log buffer can be sealed before the buffer in front of it was synced: its durable floor
/// then does not cover that buffer's batches (a batch too large to share the open buffer
/// writes it out, unsynced, and the next sync seals the large one with the floor of before).
/// Damage in the buffer in front was then read as a torn write, and the segment ended there:
/// every later batch of the segment, synced, was lost (on a real mount, a flipped byte in a
/// store's first buffer lost every file: `scripts/crash_damage.sh`'s random flips). A later
/// buffer of the segment whose floor covers the damaged buffer's batches (its record
/// directory names them) vouches for it as well (`recovery::floor_behind`).
#[test]
fn damage_in_a_log_buffer_sealed_before_the_one_in_front_was_synced_costs_only_its_records() {
    let (storage, options) = images::damaged_log_buffer_sealed_early();
    let engine = Engine::open_on(storage.crash(PowerCut::DropAllUnsynced), &options).unwrap();
    assert_reads_as_damaged(&engine, b"victim", "sealed before");
    assert_eq!(engine.get(b"big").unwrap().unwrap(), vec![b'B'; 127 << 10]);
    assert_eq!(engine.get(b"later").unwrap().unwrap(), b"L");
    fsck_names_only_the_victim(&*storage.crash(PowerCut::DropAllUnsynced));
}
