//! The index checkpoint of a clean close: loading it gives what a full scan of the same store
//! finds, and it is never trusted once the store changed after it, nor when damaged.

use super::*;

/// The put notes of each segment, sorted.
fn sorted_notes(notes: &tombstones::PutNotes) -> Vec<Vec<(u64, u64)>> {
    (0..notes.segment_count() as u32)
        .map(|s| {
            let mut v = notes.items(s);
            v.sort_unstable();
            v
        })
        .collect()
}

/// The notes of every put in the valid buffers of each segment's current use: what a running
/// engine notes (user writes and every copy, CAS lost or not), without what a scan also notes
/// past a segment's end (bytes of an earlier use, never served, only ever over-noted).
fn notes_of_current_uses(storage: &Arc<dyn Storage>) -> Vec<Vec<(u64, u64)>> {
    let sb = Superblock::decode(&storage.read_superblock().unwrap().unwrap()).unwrap();
    let notes = tombstones::PutNotes::new(sb.segment_count as usize, vec![2]);
    for s in 0..sb.segment_count {
        let (f, b) = sb.segment_position(s);
        if storage.file_len(f).unwrap() < b + sb.segment_size as u64 {
            continue;
        }
        let mut image = vec![0u8; sb.segment_size as usize];
        storage.read_at(f, b, &mut image).unwrap();
        for (pos, h) in scan::valid_buffers(&image, s, sb.generation_high_water) {
            for (at, rh) in scan::records_of(s, pos, &h, &image).unwrap() {
                if rh.kind == format::RecordKind::Put {
                    let key = &image[at + format::RECORD_HEADER_SIZE..][..rh.key_len as usize];
                    notes.note_put(s, key, rh.version);
                }
            }
        }
    }
    sorted_notes(&notes)
}

fn checkpoint_options() -> EngineOptions {
    EngineOptions {
        segments_per_file: 4,
        tombstone_prefix_lengths: vec![2],
        ..small_options()
    }
}

/// Writes overwrites, deletes, range deletes and several groups' records, runs the separator
/// and compaction, and closes cleanly.
fn fill_for_checkpoint(dir: &std::path::Path, rounds: u32) {
    let engine = Engine::open(dir, &checkpoint_options()).unwrap();
    for round in 0..rounds {
        for i in 0..300u32 {
            let key = format!("k{:05}", (i * 7 + round * 13) % 900);
            let group = i % 3;
            engine
                .write(&[Mutation::put(
                    group,
                    key.into_bytes(),
                    vec![round as u8; 300],
                )])
                .unwrap();
        }
        engine
            .write(&[
                Mutation::delete(ROOT_GROUP, format!("k{:05}", round * 5).into_bytes()),
                Mutation::delete_prefix(ROOT_GROUP, format!("k00{round}").into_bytes()),
            ])
            .unwrap();
        engine.sync().unwrap();
        engine.test_separate().unwrap();
        engine.test_compact().unwrap();
    }
    engine.close().unwrap();
}

fn full_scan_state(dir: &std::path::Path) -> (String, Vec<Vec<(u64, u64)>>) {
    let storage: Arc<dyn Storage> =
        Arc::new(super::storage::FileStorage::open(dir, false).unwrap());
    let sb = Superblock::decode(&storage.read_superblock().unwrap().unwrap()).unwrap();
    let notes = tombstones::PutNotes::new(sb.segment_count as usize, vec![2]);
    let r = recovery::recover(&storage, &sb, &notes).unwrap();
    (recovered_state(&r), sorted_notes(&notes))
}

/// What recovery rebuilds of the store `storage` from its index checkpoint (every segment it
/// describes unchanged since taken unread), with the put notes it filled; `None` if the
/// checkpoint is missing, not this store's, or cannot stand in (the open then reads all).
fn checkpoint_state(
    storage: &Arc<dyn Storage>,
    prefix_lengths: Vec<usize>,
) -> Option<(recovery::Recovered, tombstones::PutNotes)> {
    let sb = Superblock::decode(&storage.read_superblock().unwrap()?).ok()?;
    let notes = tombstones::PutNotes::new(sb.segment_count as usize, prefix_lengths);
    let base = checkpoint::load(storage, &sb, &notes)?;
    let r = recovery::recover_from_checkpoint(storage, &sb, &notes, Default::default(), base);
    Some((r.unwrap()?, notes))
}

/// A clean close leaves an index checkpoint, and recovery from it (no segment read) gives what
/// a full scan of the same store finds: index (tombstones and range deletes too), segment
/// states, put notes, next LSN. It stays in place for the opens after.
#[test]
fn a_checkpoint_of_a_clean_close_restores_what_a_full_scan_finds() {
    let dir = tempfile::tempdir().unwrap();
    fill_for_checkpoint(dir.path(), 8);
    let path = dir.path().join(super::storage::CHECKPOINT_FILE);
    assert!(path.exists(), "a clean close leaves a checkpoint");
    let (scanned, scanned_notes) = full_scan_state(dir.path());
    let storage: Arc<dyn Storage> =
        Arc::new(super::storage::FileStorage::open(dir.path(), false).unwrap());
    let (loaded, notes) = checkpoint_state(&storage, vec![2]).expect("checkpoint loaded");
    assert!(path.exists(), "kept");
    assert_eq!(loaded.report.buffers_accepted, 0, "nothing read");
    assert!(loaded.report.segments_checkpointed > 0);
    assert!(
        scanned == recovered_state(&loaded),
        "checkpoint and full scan differ"
    );
    // Put notes: exactly those of the puts on disk in each segment's current use; a scan notes
    // those too, and may add puts of an earlier use's bytes behind a segment's end.
    let loaded_notes = sorted_notes(&notes);
    assert!(
        loaded_notes == notes_of_current_uses(&storage),
        "notes differ"
    );
    // The scan is at least as cautious: every checkpoint note is in it, a prefix note with the
    // same or an older oldest version (the scan may have noted an earlier use's puts too).
    for (s, (scan, ckpt)) in scanned_notes.iter().zip(&loaded_notes).enumerate() {
        for &(hash, version) in ckpt {
            let covered = scan
                .iter()
                .any(|&(h, v)| h == hash && (v == version || (v < version && version != 0)));
            assert!(covered, "segment {s}: a checkpoint note the scan lacks");
        }
    }
}

/// Every key's value as the engine serves it.
fn contents(engine: &Engine) -> Vec<(Vec<u8>, Vec<u8>)> {
    engine.scan(&[], None, usize::MAX).unwrap()
}

/// A checkpoint stands only for the segments still as it took them: after a session that
/// wrote, compacted and crashed, after an old checkpoint is put back over later sessions, the
/// open reads what changed and serves exactly the last state. A torn or bit-flipped one is
/// ignored (every segment read, or taken from its summary).
#[test]
fn a_stale_or_damaged_checkpoint_serves_the_last_state() {
    let dir = tempfile::tempdir().unwrap();
    fill_for_checkpoint(dir.path(), 3);
    let path = dir.path().join(super::storage::CHECKPOINT_FILE);
    let old = std::fs::read(&path).unwrap();

    // A session writes and crashes: the next open takes the segments the checkpoint still
    // describes from it and reads the others. (Segments freed and reused after it:
    // `recovery_from_a_checkpoint_equals_a_full_scan_at_any_power_cut`.)
    let engine = Engine::open(dir.path(), &checkpoint_options()).unwrap();
    assert!(engine.recovery_report().segments_checkpointed > 0);
    engine.write(&[put("crash", b"kept")]).unwrap();
    engine
        .write(&[Mutation::delete(ROOT_GROUP, b"k00100".to_vec())])
        .unwrap();
    for i in 0..20u32 {
        let key = format!("k{:05}", i * 11 % 900).into_bytes();
        engine
            .write(&[Mutation::put(i % 3, key, vec![9; 300])])
            .unwrap();
    }
    engine.sync().unwrap();
    let expected = contents(&engine);
    drop(engine);
    assert_eq!(
        std::fs::read(&path).unwrap(),
        old,
        "a crash leaves the checkpoint as it was"
    );
    let engine = Engine::open(dir.path(), &checkpoint_options()).unwrap();
    let report = engine.recovery_report();
    assert!(
        report.segments_checkpointed > 0 && report.segments_scanned > 0,
        "{report:?}"
    );
    assert_eq!(contents(&engine), expected);
    assert_eq!(engine.get(b"crash").unwrap().as_deref(), Some(&b"kept"[..]));
    engine.close().unwrap();
    let good = std::fs::read(&path).unwrap();
    assert_ne!(good, old, "the clean close wrote a new one");

    // The old checkpoint put back over the later sessions: still only what it proves.
    std::fs::write(&path, &old).unwrap();
    let engine = Engine::open(dir.path(), &checkpoint_options()).unwrap();
    assert_eq!(contents(&engine), expected);
    drop(engine);

    // The new one: only what the open just before wrote is read.
    std::fs::write(&path, &good).unwrap();
    let engine = Engine::open(dir.path(), &checkpoint_options()).unwrap();
    assert!(engine.recovery_report().segments_checkpointed > 0, "loaded");
    assert_eq!(contents(&engine), expected);
    drop(engine);

    // Torn (cut short) and bit-flipped copies of a checkpoint that was valid: ignored.
    for damage in 0..3 {
        let mut bad = good.clone();
        match damage {
            0 => bad.truncate(bad.len() / 2),
            1 => bad.truncate(bad.len() - 1),
            _ => {
                let at = bad.len() / 3;
                bad[at] ^= 0x10;
            }
        }
        std::fs::write(&path, &bad).unwrap();
        let engine = Engine::open(dir.path(), &checkpoint_options()).unwrap();
        let report = engine.recovery_report();
        assert!(
            report.segments_checkpointed == 0
                && report.segments_scanned + report.segments_summarized > 0,
            "damage {damage}: ignored {report:?}"
        );
        assert_eq!(contents(&engine), expected, "damage {damage}");
        drop(engine);
    }
}

/// A small store that a workload of a few MiB fills many times over, so that the segments a
/// checkpoint describes are freed and reused all through the session after it; the background
/// writes a checkpoint every few segments.
fn campaign_options() -> EngineOptions {
    EngineOptions {
        capacity_bytes: 16 << 20,
        segment_size_bytes: 256 << 10,
        segments_per_file: 16,
        create_if_missing: true,
        sync_interval: None,
        separator_threshold_segments: 2,
        tombstone_prefix_lengths: vec![4],
        checkpoint_every_segments: 3,
        ..Default::default()
    }
}

/// A power cut of the store and the checkpoint it held at that moment.
struct Cut {
    what: String,
    image: Arc<SimStorage>,
    checkpoint: Option<Vec<u8>>,
}

/// What the campaign saw.
#[derive(Default, Debug)]
struct Seen {
    cuts: u64,
    /// Cuts whose recovery took segments from the checkpoint.
    taken: u64,
    /// ... and found some it describes freed or reused since.
    claims_refused: u64,
    /// Cuts whose recovery took segments from a checkpoint with segments to be read.
    with_segments_to_read: u64,
    /// Cuts where the checkpoint could not stand in (the open reads everything).
    fell_back: u64,
    /// Cuts before the store had a checkpoint.
    without: u64,
}

/// Recovers `cut` both ways and panics where recovery from its checkpoint differs from a full
/// scan of the same image.
fn check_cut(cut: Cut, seen: &mut Seen) {
    let full = {
        let s: Arc<dyn Storage> = cut.image.clone();
        let sb = Superblock::decode(&s.read_superblock().unwrap().unwrap()).unwrap();
        let notes = tombstones::PutNotes::new(sb.segment_count as usize, vec![4]);
        recovered_state(&recovery::recover(&s, &sb, &notes).unwrap())
    };
    seen.cuts += 1;
    let Some(data) = cut.checkpoint else {
        seen.without += 1;
        return;
    };
    let image = format::checkpoint::decode(&data).expect("whole");
    let claimed = (image.segments.iter())
        .filter(|s| matches!(s.mark, format::checkpoint::SegmentMark::Closed(_)))
        .count() as u64;
    let to_read = (image.segments.iter()).any(|s| s.mark == format::checkpoint::SegmentMark::Read);
    let storage: Arc<dyn Storage> = Arc::new(CheckpointingSim {
        sim: cut.image,
        checkpoint: Arc::new(parking_lot::Mutex::new(Some(data))),
        cut_at_checkpoint: Arc::new(parking_lot::Mutex::new(None)),
    });
    match checkpoint_state(&storage, vec![4]) {
        None => seen.fell_back += 1,
        Some((r, _)) => {
            let from_checkpoint = recovered_state(&r);
            assert!(
                full == from_checkpoint,
                "{}: recovery from the checkpoint differs from a full scan:\n{}",
                cut.what,
                first_differences(&full, &from_checkpoint)
            );
            let took = r.report.segments_checkpointed > 0;
            seen.taken += u64::from(took);
            seen.claims_refused += u64::from(r.report.segments_checkpointed < claimed);
            seen.with_segments_to_read += u64::from(took && to_read);
        }
    }
}

/// The index checkpoint's proof: at power cuts all through sessions that checkpoint in the
/// background and at their clean closes (records overwritten, copied by the separator and
/// compaction, the segments a checkpoint describes freed and reused after it; cuts at random
/// points, and the moment copies are indexed and a freed segment's first block is zeroed),
/// recovery from the checkpoint the store held, reading only the segments it does not describe
/// as they are, rebuilds the index, segment states and next LSN that reading every segment of
/// the same image rebuilds, byte for byte.
#[test]
fn recovery_from_a_checkpoint_equals_a_full_scan_at_any_power_cut() {
    let sim = SimStorage::new();
    let slot: Arc<parking_lot::Mutex<Option<Vec<u8>>>> = Arc::new(parking_lot::Mutex::new(None));
    let storage = || -> Arc<dyn Storage> {
        Arc::new(CheckpointingSim {
            sim: sim.clone(),
            checkpoint: slot.clone(),
            cut_at_checkpoint: Arc::new(parking_lot::Mutex::new(None)),
        })
    };
    // The image and the checkpoint of one moment: a checkpoint write holds the slot's lock.
    let cut_now = {
        let (sim, slot) = (sim.clone(), slot.clone());
        move |what: String, cut: PowerCut| {
            let checkpoint = slot.lock();
            Cut {
                what,
                image: sim.crash(cut),
                checkpoint: checkpoint.clone(),
            }
        }
    };
    let at_steps: Arc<parking_lot::Mutex<Vec<Cut>>> = Arc::default();
    let mut rng = storage::SimRng::new(11);
    let mut seen = Seen::default();
    // Sessions with the background running, then sessions that run its passes at fixed steps
    // with a checkpoint between each pass and the freeing of its sources (the same
    // interleaving each run).
    for session in 0..8u64 {
        let driven = session >= 4;
        let engine = Engine::open_on(storage(), &campaign_options()).unwrap();
        if driven {
            engine.test_pause_background();
        }
        {
            let (cut_now, at_steps) = (cut_now.clone(), at_steps.clone());
            let n = std::sync::atomic::AtomicU64::new(0);
            engine.test_set_step_hook(Some(Box::new(move |step| {
                if step == "index moved to the copies" || step == "reclaim: a first block zeroed" {
                    let i = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let cut = PowerCut::Random(i + 1_000_000);
                    at_steps
                        .lock()
                        .push(cut_now(format!("at {step:?}, {cut:?}"), cut));
                }
            })));
        }
        for step in 0..900 {
            overwrite_delete_step(&engine, &mut rng, step);
            if driven && step % 7 == 0 {
                // A pass, a checkpoint while its sources are not freed yet, then reclamation.
                // Errors are the store's shortage of room, which writes meet too.
                let inner = &engine.inner;
                let _ = match step % 3 {
                    0 => inner.separate(true),
                    _ => inner.compact_pass(compaction::MAX_PASS_LIVE_SEGMENTS),
                };
                // Every other time with the last writes still unsynced: the checkpoint must
                // make durable what it names itself, whatever the background's timing.
                if step % 14 != 0 {
                    let _ = inner.sync();
                }
                engine.test_checkpoint();
                let _ = inner.reclaim_dead_segments();
            }
            let steps: Vec<Cut> = std::mem::take(&mut *at_steps.lock());
            for cut in steps {
                check_cut(cut, &mut seen);
            }
            if step % 2 != 0 {
                continue;
            }
            let cut = if step % 36 == 0 {
                PowerCut::DropAllUnsynced
            } else {
                PowerCut::Random(session * 10_000 + step)
            };
            check_cut(
                cut_now(format!("session {session}, step {step}, {cut:?}"), cut),
                &mut seen,
            );
        }
        engine.test_set_step_hook(None);
        engine.close().unwrap();
    }
    eprintln!("{seen:?}");
    assert!(seen.cuts >= 3400, "{seen:?}");
    assert!(
        seen.taken * 4 >= seen.cuts,
        "the checkpoint was rarely used: {seen:?}"
    );
    assert!(
        seen.claims_refused >= 25,
        "few segments freed or reused: {seen:?}"
    );
    assert!(
        seen.with_segments_to_read * 10 >= seen.taken,
        "few segments to be read: {seen:?}"
    );
}

/// The first items (between commas and lines) where two recovered states differ.
fn first_differences(full: &str, other: &str) -> String {
    let differs: Vec<String> = (full.split([',', '\n']))
        .zip(other.split([',', '\n']))
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .take(8)
        .map(|(i, (a, b))| format!("item {i}: full {a:?}, from the checkpoint {b:?}"))
        .collect();
    differs.join("\n")
}

/// A tombstone that a newer put displaces from the index stays on disk, unindexed, and comes
/// back in a scan once that put and the tombstone deleting it are gone (compaction drops a
/// tombstone no older put needs, older tombstones or not). So the checkpoint marks its segment
/// "to be read": taken unread, the segment would lose the tombstone that a full scan finds.
/// Driven step by step: the tombstone's segment stays full of live records (never a victim);
/// the put's and the newer tombstone's segments are compacted away after the checkpoint.
#[test]
fn a_tombstone_displaced_by_a_newer_put_is_read_again_after_a_checkpoint() {
    let sim = SimStorage::new();
    let slot: Arc<parking_lot::Mutex<Option<Vec<u8>>>> = Arc::new(parking_lot::Mutex::new(None));
    let storage: Arc<dyn Storage> = Arc::new(CheckpointingSim {
        sim: sim.clone(),
        checkpoint: slot.clone(),
        cut_at_checkpoint: Arc::new(parking_lot::Mutex::new(None)),
    });
    let engine = Engine::open_on(storage, &campaign_options()).unwrap();
    engine.test_pause_background();
    let key = b"displaced".to_vec();
    let filler = |name: &str, i: u32| format!("{name}{i:03}").into_bytes();
    // 60 KiB values until one lands in the next segment: the segment written before is full.
    // Returns how many stayed in that segment (the last one, in the next, stays live).
    let fill = |name: &str| -> u32 {
        let mut i = 0;
        loop {
            let k = filler(name, i);
            engine
                .write(&[Mutation::put(
                    ROOT_GROUP,
                    k.clone(),
                    vec![i as u8; 60 << 10],
                )])
                .unwrap();
            i += 1;
            if engine.test_segment_of(&k) != engine.test_segment_of(&filler(name, 0)) {
                return i - 1;
            }
        }
    };
    let write = |m: Mutation| engine.write(&[m]).unwrap();
    // The old tombstone, among records that stay live.
    write(Mutation::delete(ROOT_GROUP, key.clone()));
    fill("live");
    let (old_tombstone, _) = engine.test_segment_of(&key).unwrap();
    // The put that displaces it, then the tombstone of that put, each among records deleted
    // later.
    write(Mutation::put(ROOT_GROUP, key.clone(), b"v2".to_vec()));
    let put_fillers = fill("put-");
    let (put, _) = engine.test_segment_of(&key).unwrap();
    write(Mutation::delete(ROOT_GROUP, key.clone()));
    let del_fillers = fill("del-");
    let (newer_tombstone, _) = engine.test_segment_of(&key).unwrap();
    // Closed segments of live records, which the checkpoint stands for.
    fill("more");
    fill("keep");
    assert!(
        old_tombstone != put && put != newer_tombstone,
        "{old_tombstone} {put} {newer_tombstone}"
    );
    for i in 0..put_fillers {
        write(Mutation::delete(ROOT_GROUP, filler("put-", i)));
    }
    engine.sync().unwrap();
    let uses_then = engine.test_segments_in_use();
    let use_of = |segment: u32| *uses_then.iter().find(|u| u.0 == segment).unwrap();
    let (old_tombstone, put, newer_tombstone) =
        (use_of(old_tombstone), use_of(put), use_of(newer_tombstone));
    engine.test_checkpoint();
    // The put's segment goes first: while it is in use, the newer tombstone is needed.
    engine.test_compact().unwrap();
    for i in 0..del_fillers {
        write(Mutation::delete(ROOT_GROUP, filler("del-", i)));
    }
    fill("last");
    engine.sync().unwrap();
    engine.test_compact().unwrap();
    let in_use = engine.test_segments_in_use();
    assert!(
        in_use.contains(&old_tombstone)
            && !in_use.contains(&put)
            && !in_use.contains(&newer_tombstone),
        "the old tombstone's segment alone is left as it was: {in_use:?}"
    );
    assert_eq!(
        engine.test_segment_of(&key),
        None,
        "the newer tombstone was dropped, not copied"
    );
    let mut seen = Seen::default();
    let checkpoint = slot.lock().clone();
    check_cut(
        Cut {
            what: "after both compactions".into(),
            image: sim.crash(PowerCut::DropAllUnsynced),
            checkpoint,
        },
        &mut seen,
    );
    assert_eq!(seen.taken, 1, "{seen:?}");
    drop(engine);
}
