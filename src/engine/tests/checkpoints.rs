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

/// Issue 7: a clean close leaves an index checkpoint, and loading it gives what a full scan of
/// the same store finds: index (tombstones and range deletes too), segment states, put notes,
/// next LSN. It is consumed by the open that loads it.
#[test]
fn a_checkpoint_of_a_clean_close_restores_what_a_full_scan_finds() {
    let dir = tempfile::tempdir().unwrap();
    fill_for_checkpoint(dir.path(), 8);
    let path = dir.path().join(super::storage::CHECKPOINT_FILE);
    assert!(path.exists(), "a clean close leaves a checkpoint");
    let (scanned, scanned_notes) = full_scan_state(dir.path());
    let storage: Arc<dyn Storage> =
        Arc::new(super::storage::FileStorage::open(dir.path(), false).unwrap());
    let sb_bytes = storage.read_superblock().unwrap().unwrap();
    let sb = Superblock::decode(&sb_bytes).unwrap();
    let notes = tombstones::PutNotes::new(sb.segment_count as usize, vec![2]);
    let loaded = checkpoint::load(&storage, &sb_bytes, &notes).expect("checkpoint loaded");
    assert!(!path.exists(), "consumed by the open that loads it");
    assert!(loaded.report.records_accepted > 0);
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
    assert!(checkpoint::load(&storage, &sb_bytes, &notes).is_none());
}

/// Every key's value as the engine serves it.
fn contents(engine: &Engine) -> Vec<(Vec<u8>, Vec<u8>)> {
    engine.scan(&[], None, usize::MAX).unwrap()
}

/// A checkpoint is never trusted once the store changed after it, nor when damaged: a crash
/// of the session that consumed it, an old checkpoint put back after later writes (as by a
/// writer that does not know checkpoints), a torn or bit-flipped one. Each open then scans and
/// serves exactly the last state.
#[test]
fn a_stale_or_damaged_checkpoint_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    fill_for_checkpoint(dir.path(), 3);
    let path = dir.path().join(super::storage::CHECKPOINT_FILE);
    let old = std::fs::read(&path).unwrap();

    // A session that consumed it writes and crashes: the next open scans (no checkpoint).
    std::thread::sleep(Duration::from_millis(30)); // past the file times' clock granularity
    let engine = Engine::open(dir.path(), &checkpoint_options()).unwrap();
    assert!(!path.exists());
    engine.write(&[put("crash", b"kept")]).unwrap();
    engine
        .write(&[Mutation::delete(ROOT_GROUP, b"k00100".to_vec())])
        .unwrap();
    engine.sync().unwrap();
    let expected = contents(&engine);
    drop(engine);
    assert!(!path.exists(), "a crash leaves no checkpoint");

    // The old checkpoint put back: stale (the files changed since), ignored.
    std::fs::write(&path, &old).unwrap();
    let engine = Engine::open(dir.path(), &checkpoint_options()).unwrap();
    assert!(engine.recovery_report().segments_scanned > 0, "scanned");
    assert!(!path.exists(), "a stale checkpoint is removed too");
    assert_eq!(contents(&engine), expected);
    assert_eq!(engine.get(b"crash").unwrap().as_deref(), Some(&b"kept"[..]));
    engine.close().unwrap();

    // The fresh checkpoint of that clean close loads (no scan) and serves the same.
    let good = std::fs::read(&path).unwrap();
    let engine = Engine::open(dir.path(), &checkpoint_options()).unwrap();
    assert_eq!(
        engine.recovery_report().segments_scanned,
        0,
        "loaded, not scanned"
    );
    assert_eq!(contents(&engine), expected);
    drop(engine); // a crash: nothing written, but no checkpoint either

    // Any write to a segment file after the checkpoint (here zeros over zeros in the last
    // file, which changes no byte and not the superblock, only the file's times): ignored.
    std::fs::write(&path, &good).unwrap();
    std::thread::sleep(Duration::from_millis(30));
    {
        use std::os::unix::fs::FileExt;
        let files = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("seg-"))
            .map(|e| e.path())
            .max()
            .unwrap();
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&files)
            .unwrap();
        let len = f.metadata().unwrap().len();
        let mut last = vec![0u8; 512];
        std::fs::File::open(&files)
            .unwrap()
            .read_exact_at(&mut last, len - 512)
            .unwrap();
        f.write_all_at(&last, len - 512).unwrap();
    }
    let engine = Engine::open(dir.path(), &checkpoint_options()).unwrap();
    assert!(
        engine.recovery_report().segments_scanned > 0,
        "files written: scanned"
    );
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
        assert!(
            engine.recovery_report().segments_scanned > 0,
            "damage {damage}: scanned"
        );
        assert_eq!(contents(&engine), expected, "damage {damage}");
        drop(engine);
    }
}
