//! The sync table's proofs for log segments: damage in the last buffer of a closed, synced log
//! segment (or one handed over) fails reads after a crash instead of passing for a torn write;
//! a tail beyond every durable floor is dropped for good; power cuts around the writes of the
//! table's entries lose and resurrect nothing.

use super::*;

/// Flips a byte of the directory trailer (its CRC) of the buffer of `segment` holding the
/// record at `offset`.
fn damage_directory_of_buffer_holding(storage: &SimStorage, segment: u32, offset: usize) {
    let sb = Superblock::decode(&storage.read_superblock().unwrap().unwrap()).unwrap();
    let (file, base) = sb.segment_position(segment);
    let mut image = vec![0u8; sb.segment_size as usize];
    storage.read_at(file, base, &mut image).unwrap();
    // The record's buffer fails its CRC already: it starts after the last valid one before it,
    // where that one ends, and its header's length field is intact.
    let start = scan::valid_buffers(&image, segment, sb.generation_high_water)
        .into_iter()
        .filter(|(pos, _)| *pos < offset)
        .map(|(pos, h)| pos + h.buffer_len as usize)
        .max()
        .unwrap_or(0);
    let len = format::BufferHeader::buffer_len_field(&image[start..]);
    assert!(start < offset && offset < start + len);
    storage.corrupt(file, base + (start + len - 1) as u64, 0x10);
}

/// Builds a log whose closed mixed segments end in buffers no later buffer vouches for: "victim" (old version, small) and
/// two fillers fill segment S0 (a sync); a marker, "g" and the new "victim" (`V` bytes) fill
/// segment S1, whose last buffer holds the new victim and closes it; a sync; "later1" goes to
/// S2; a sync; then "later2" and a sync. With `hand_over`, the separator then hands S0 and S1 to group 0 whole
/// (they stay mixed segments on disk). Returns the engine, S1, and every key's final value.
fn log_with_a_closed_synced_segment(
    storage: &Arc<SimStorage>,
    hand_over: bool,
) -> (Engine, u32, Vec<(String, Vec<u8>)>) {
    log_with_a_closed_synced_segment_cut(storage, hand_over, None).0
}

/// Power-cut images of [`log_with_a_closed_synced_segment_cut`]: (step, image, every key's
/// value as of the last completed sync, all of which the image must serve).
type LogCutImages = Vec<(String, Arc<SimStorage>, KeyValues)>;

/// Every key and its value.
type KeyValues = Vec<(String, Vec<u8>)>;

/// [`log_with_a_closed_synced_segment`], and with `cut` the storage a power cut of that kind
/// leaves at every step of every sync, separator run and reclamation (in a sync: once its
/// storage sync returned and its log segments' entries were written, before they are synced),
/// and right after every sync.
fn log_with_a_closed_synced_segment_cut(
    storage: &Arc<SimStorage>,
    hand_over: bool,
    cut: Option<PowerCut>,
) -> ((Engine, u32, KeyValues), LogCutImages) {
    let engine = Engine::open_on(storage.clone(), &small_options()).unwrap();
    engine.test_pause_background();
    let big = 120 << 10;
    let images: Arc<parking_lot::Mutex<LogCutImages>> = Default::default();
    // Every key's value as of the last completed log sync.
    let durable: Arc<parking_lot::Mutex<KeyValues>> = Default::default();
    if let Some(cut) = cut {
        let (storage, images, durable) = (storage.clone(), images.clone(), durable.clone());
        engine.test_set_step_hook(Some(Box::new(move |step| {
            let image = storage.crash(cut);
            images
                .lock()
                .push((step.to_string(), image, durable.lock().clone()));
        })));
    }
    let mut expected = Vec::new();
    let mut write = |key: &str, value: Vec<u8>| {
        engine.write(&[put(key, &value)]).unwrap();
        // Each batch in a buffer of its own.
        engine.test_wait_flushes();
        expected.retain(|(k, _): &(String, Vec<u8>)| k != key);
        expected.push((key.to_string(), value));
        expected.clone()
    };
    let sync = |state: Vec<(String, Vec<u8>)>, n: usize| {
        // The step hook inside the sync runs once its log sync returned: all of `state` is
        // durable by then.
        *durable.lock() = state.clone();
        engine.sync().unwrap();
        if let Some(cut) = cut {
            images
                .lock()
                .push((format!("after sync {n}"), storage.crash(cut), state));
        }
    };
    let state = write("victim", b"old version".to_vec());
    sync(state, 1);
    write("f1", vec![b'1'; big]);
    // S0 closes: this sync writes its entry, and a marker, the first buffer of S1.
    let state = write("f2", vec![b'2'; big]);
    sync(state, 2);
    write("g", vec![b'g'; big]);
    // S1 closes when this buffer is sealed: too little room is left behind it.
    let state = write("victim", vec![b'V'; big]);
    sync(state, 3);
    let state = write("later1", vec![b'L'; big]);
    sync(state, 4);
    let state = write("later2", b"two".to_vec());
    sync(state.clone(), 5);
    let expected = state;
    let (s0, _) = engine.test_segment_of(b"f1").unwrap();
    let (s1, _) = engine.test_segment_of(b"victim").unwrap();
    let (s2, _) = engine.test_segment_of(b"later1").unwrap();
    assert_eq!(engine.test_segment_of(b"g").unwrap().0, s1);
    assert!(s0 != s1 && s1 != s2 && s0 != s2, "{s0} {s1} {s2}");
    assert_eq!(engine.inner.segments.info(s1).state, SegmentState::Closed);
    let offsets = buffer_offsets(storage, s1);
    let victim_at = engine.inner.index.get(b"victim").unwrap().location.offset as usize;
    assert_eq!(offsets.len(), 3, "marker, g, victim: {offsets:?}");
    assert!(victim_at > offsets[2], "the victim is in S1's last buffer");
    if hand_over {
        engine.test_separate().unwrap();
        assert_eq!(engine.inner.segments.info(s1).kind, SegmentKind::Group);
        assert_eq!(
            engine.test_segment_of(b"victim").unwrap().0,
            s1,
            "not copied"
        );
    }
    engine.test_set_step_hook(None);
    // The table proves exactly what was written of S1's use.
    let info = engine.inner.segments.info(s1);
    assert_eq!(
        engine.inner.segments.sync_table.proof(s1),
        Some(synctable::Proof {
            generation: info.generation,
            synced_end: info.used,
        })
    );
    let images = std::mem::take(&mut *images.lock());
    ((engine, s1, expected), images)
}

/// Damages the new "victim" in the last buffer of closed, synced mixed segment S1 (nothing valid
/// after it in S1), cuts power without a clean close, and checks that reading it fails with the
/// damage error, never absent, never the older version, and that every other key (the later
/// batches in S2 too) reads back exactly; fsck names the damaged key.
fn damaged_last_log_buffer_after_a_crash(hand_over: bool) {
    let storage = SimStorage::new();
    let (engine, s1, expected) = log_with_a_closed_synced_segment(&storage, hand_over);
    let (segment, offset) = damage_value_of(&engine, &storage, b"victim");
    assert_eq!(segment, s1);
    // And the buffer's record directory, so that only the sync table's entry proves the
    // buffer synced (a log tail by its directory is `damage_in_the_newest_synced_log_buffer_*`).
    damage_directory_of_buffer_holding(&storage, segment, offset);
    drop(engine);
    let storage = storage.crash(PowerCut::DropAllUnsynced);
    let c = fsck_names_only_the_victim(&*storage);
    assert!(
        c.findings
            .iter()
            .any(|f| f.severity == check::Severity::Problem && f.what.contains("checksum")),
        "{:?}",
        c.findings
    );
    let engine = Engine::open_on(storage.clone(), &small_options()).unwrap();
    engine.test_pause_background();
    let got = engine.get(b"victim");
    assert!(
        matches!(got, Err(EngineError::Corrupt(ref s)) if s.contains("checksum")),
        "the damaged victim reads as {:?}",
        got.map(|v| v.map(|v| v[..v.len().min(16)].to_vec()))
    );
    assert_eq!(engine.recovery_report().records_poisoned, 1);
    for (k, value) in &expected {
        if k != "victim" {
            assert_eq!(
                engine.get(k.as_bytes()).unwrap().as_ref(),
                Some(value),
                "{k}"
            );
        }
    }
    // And again after that recovery's own writes (its sync): nothing changes.
    drop(engine);
    let engine = Engine::open_on(storage.clone(), &small_options()).unwrap();
    engine.test_pause_background();
    assert!(matches!(
        engine.get(b"victim"),
        Err(EngineError::Corrupt(_))
    ));
    assert_eq!(engine.get(b"later2").unwrap().as_deref(), Some(&b"two"[..]));
}

/// Issue 6 point 4 for the log: bit damage in the last buffer of a closed, synced mixed segment
/// (no later buffer of the segment vouches for it) after a crash.
#[test]
fn damage_in_the_last_buffer_of_a_closed_log_segment_fails_reads_after_a_crash() {
    damaged_last_log_buffer_after_a_crash(false);
}

/// The same once the separator handed the damaged segment to a group whole (still a mixed
/// segment on disk).
#[test]
fn damage_in_the_last_buffer_of_a_handed_over_log_segment_fails_reads_after_a_crash() {
    damaged_last_log_buffer_after_a_crash(true);
}

/// A power cut at every step of the syncs that write the log segments' sync table entries (once
/// the storage sync returned and the entries are written, before they are synced), of a
/// separator run handing the segment over and its reclamation, and after every sync; keeping
/// none, all or a random part of what was not synced, or every unsynced write to the segment
/// files and none to the table: nothing synced is lost, nothing damaged is found, fsck finds no
/// problem. And the same images with the new "victim" damaged in S1's last buffer: it reads as
/// damage whenever the image's table proves S1 synced (the later batches then read back too),
/// else as damage or the older version (unproven: as before the table), never anything else.
#[test]
fn power_cuts_around_log_segment_entries_lose_and_resurrect_nothing() {
    let mut steps_seen = std::collections::BTreeSet::new();
    let mut proven_damage = 0;
    for (round, cut) in [PowerCut::DropAllUnsynced, PowerCut::KeepAllWritten]
        .into_iter()
        .chain((1..=4).map(PowerCut::Random))
        .chain((0..2).map(|file| PowerCut::KeepOnlyIn {
            file,
            start: 0,
            end: u64::MAX,
        }))
        .enumerate()
    {
        let hand_over = round % 2 == 1;
        let storage = SimStorage::new();
        let ((engine, s1, _), images) =
            log_with_a_closed_synced_segment_cut(&storage, hand_over, Some(cut));
        let victim = engine.inner.index.get(b"victim").unwrap().location;
        let generation = engine.inner.segments.info(s1).generation;
        let sb = Superblock::decode(&storage.read_superblock().unwrap().unwrap()).unwrap();
        let (file, base) = sb.segment_position(victim.segment);
        drop(engine);
        assert!(images.len() >= 5, "{}", images.len());
        for (step, image, durable) in images {
            steps_seen.insert(step.clone());
            let what = format!("round {round} ({cut:?}, hand over {hand_over}), '{step}'");
            let c = fsck(&*image);
            assert!(
                !c.findings
                    .iter()
                    .any(|f| f.severity == check::Severity::Problem),
                "{what}: fsck: {:?}",
                c.findings
            );
            let proven = synctable::read(&*image, sb.segment_count).unwrap()[s1 as usize]
                .is_some_and(|p| p.generation == generation);
            let new_victim_durable = durable.iter().any(|(k, v)| k == "victim" && v.len() > 100);
            if new_victim_durable {
                // Media damage in the new victim (at the same place in every image).
                let damaged = image.freeze();
                damaged.corrupt(file, base + (victim.offset + victim.len / 2) as u64, 0x20);
                let engine = Engine::open_on(damaged, &small_options()).unwrap();
                engine.test_pause_background();
                match engine.get(b"victim") {
                    Err(EngineError::Corrupt(_)) => {}
                    Ok(Some(v)) if !proven && v == b"old version" => {}
                    other => panic!(
                        "{what}: damaged victim (proven {proven}) reads as {:?}",
                        other.map(|v| v.map(|v| v.len()))
                    ),
                }
                if proven {
                    proven_damage += 1;
                    for (k, value) in durable.iter().filter(|(k, _)| k != "victim") {
                        assert_eq!(
                            engine.get(k.as_bytes()).unwrap().as_ref(),
                            Some(value),
                            "{what} (damaged): {k}"
                        );
                    }
                }
            }
            let engine = Engine::open_on(image.clone(), &small_options()).unwrap();
            engine.test_pause_background();
            for (k, value) in &durable {
                assert_eq!(
                    engine.get(k.as_bytes()).unwrap().as_ref(),
                    Some(value),
                    "{what}: {k}"
                );
            }
            assert_eq!(engine.recovery_report().records_poisoned, 0, "{what}");
            assert_eq!(engine.recovery_report().buffers_damaged, 0, "{what}");
        }
    }
    assert!(
        steps_seen.contains("sync: log segments' entries written"),
        "{steps_seen:?}"
    );
    assert!(proven_damage > 0);
}

/// The last buffer of a closed log segment, proven synced by the sync table but holding a batch
/// above every durable floor on disk (a power cut kept the table's entry, written after the
/// sync that made the segment durable, but not the marker written with it), damaged: recovery cannot tell its batches' LSNs (they may be damaged), so it takes
/// nothing of it, as before the table (the older version is served), and zeroes it: the log
/// reuses those LSNs, and a later recovery, with a higher floor, must not take the stretch then
/// (its damaged or intact records would shadow what was written since).
#[test]
fn a_log_tail_beyond_the_floor_is_dropped_for_good() {
    let storage = SimStorage::new();
    let engine = Engine::open_on(storage.clone(), &small_options()).unwrap();
    engine.test_pause_background();
    let big = 120 << 10;
    engine.write(&[put("victim", b"old version")]).unwrap();
    engine.sync().unwrap();
    for (k, fill) in [("f1", b'1'), ("f2", b'2'), ("g", b'g')] {
        engine.write(&[put(k, &vec![fill; big])]).unwrap();
        engine.test_wait_flushes();
    }
    // Fills S1 to its end: the segment closes when its buffer is sealed.
    engine
        .write(&[
            put("victim", &[b'V'; 120 << 10]),
            put("h", &[b'h'; 10 << 10]),
        ])
        .unwrap();
    // S1 is noted closed once its last flush completes: before the sync begins, so that the
    // sync proves it (a sync that began earlier leaves it to the next one; this test failed
    // about 1 run in 10 so).
    engine.test_wait_flushes();
    // Power cut once the sync wrote the entries and the marker, before syncing them: the
    // table's sector kept, the marker (in a segment file) not.
    let image: Arc<parking_lot::Mutex<Option<Arc<SimStorage>>>> = Default::default();
    {
        let (storage, image) = (storage.clone(), image.clone());
        engine.test_set_step_hook(Some(Box::new(move |step| {
            if step == "sync: log segments' entries written" {
                *image.lock() = Some(storage.crash(PowerCut::KeepOnlyIn {
                    file: synctable::SYNC_TABLE_FILE,
                    start: 0,
                    end: u64::MAX,
                }));
            }
        })));
    }
    engine.sync().unwrap();
    engine.test_set_step_hook(None);
    let (s1, closed) = engine.test_segment_of(b"victim").unwrap();
    assert!(closed);
    assert_eq!(engine.test_segment_of(b"g").unwrap().0, s1);
    let generation = engine.inner.segments.info(s1).generation;
    let storage = image.lock().take().expect("a cut inside the sync");
    let sb = Superblock::decode(&storage.read_superblock().unwrap().unwrap()).unwrap();
    assert_eq!(
        synctable::read(&*storage, sb.segment_count).unwrap()[s1 as usize].map(|p| p.generation),
        Some(generation),
        "the entry is in the image"
    );
    damage_value_of(&engine, &storage, b"victim");
    drop(engine);
    let engine = Engine::open_on(storage.clone(), &small_options()).unwrap();
    engine.test_pause_background();
    assert_eq!(
        engine.get(b"victim").unwrap().as_deref(),
        Some(&b"old version"[..]),
        "unproven LSNs: as before the table"
    );
    // New batches reuse the dropped batch's LSN; a later one raises the floor above it.
    engine.write(&[put("x", b"x")]).unwrap();
    engine.sync().unwrap();
    engine.write(&[put("y", b"y")]).unwrap();
    engine.sync().unwrap();
    drop(engine);
    let engine =
        Engine::open_on(storage.crash(PowerCut::DropAllUnsynced), &small_options()).unwrap();
    engine.test_pause_background();
    assert_eq!(
        engine.get(b"victim").unwrap().as_deref(),
        Some(&b"old version"[..]),
        "the dropped stretch came back"
    );
    assert_eq!(
        engine.get(b"h").unwrap(),
        None,
        "the dropped stretch came back"
    );
    assert_eq!(engine.get(b"x").unwrap().as_deref(), Some(&b"x"[..]));
    assert_eq!(engine.get(b"y").unwrap().as_deref(), Some(&b"y"[..]));
    assert_eq!(engine.get(b"g").unwrap().unwrap(), vec![b'g'; big]);
}

/// The last buffer of closed log segment S1 damaged, where the batches after it (in S2) were
/// written before the one sync that made both durable: no buffer on disk was sealed after that
/// sync but the marker the sync writes with S1's sync table entry. Before, the damaged batch was
/// a gap above every durable floor on disk: recovery cut the log there and the later, synced
/// batches went with it, and the older version of the damaged key was served.
#[test]
fn damage_in_the_last_buffer_of_a_log_segment_synced_with_later_batches_keeps_them() {
    let storage = SimStorage::new();
    let engine = Engine::open_on(storage.clone(), &small_options()).unwrap();
    engine.test_pause_background();
    let big = 120 << 10;
    engine.write(&[put("victim", b"old version")]).unwrap();
    engine.sync().unwrap();
    for (k, fill) in [("f1", b'1'), ("f2", b'2'), ("g", b'g')] {
        engine.write(&[put(k, &vec![fill; big])]).unwrap();
        engine.test_wait_flushes();
    }
    engine.write(&[put("victim", &vec![b'V'; big])]).unwrap();
    engine.test_wait_flushes();
    engine.write(&[put("later1", &vec![b'L'; big])]).unwrap();
    engine.test_wait_flushes();
    engine.sync().unwrap();
    let (s1, closed) = engine.test_segment_of(b"victim").unwrap();
    assert!(closed);
    assert_ne!(engine.test_segment_of(b"later1").unwrap().0, s1);
    damage_value_of(&engine, &storage, b"victim");
    drop(engine);
    let engine =
        Engine::open_on(storage.crash(PowerCut::DropAllUnsynced), &small_options()).unwrap();
    engine.test_pause_background();
    let got = engine.get(b"victim");
    assert!(
        matches!(got, Err(EngineError::Corrupt(_))),
        "the damaged victim reads as {:?}",
        got.map(|v| v.map(|v| v.len()))
    );
    assert_eq!(engine.get(b"later1").unwrap().unwrap(), vec![b'L'; big]);
    assert_eq!(engine.get(b"g").unwrap().unwrap(), vec![b'g'; big]);
}
