//! The sync table's proofs for log segments: damage in the last buffer of a closed, synced log
//! segment (or one handed over) fails reads after a crash instead of passing for a torn write;
//! a tail beyond every durable floor is dropped for good; power cuts around the writes of the
//! table's entries lose and resurrect nothing.

use super::images::log_with_a_closed_synced_segment_cut;
use super::*;

/// Damages the new "victim" in the last buffer of closed, synced mixed segment S1 (nothing valid
/// after it in S1), cuts power without a clean close, and checks that reading it fails with the
/// damage error, never absent, never the older version, and that every other key (the later
/// batches in S2 too) reads back exactly; fsck names the damaged key.
fn damaged_last_log_buffer_after_a_crash(hand_over: bool) {
    // The buffer's record directory is damaged too, so that only the sync table's entry proves
    // the buffer synced (a log tail by its directory is
    // `damage_in_the_newest_synced_log_buffer_*`).
    let (storage, expected) = images::damaged_last_buffer_of_a_closed_log_segment(hand_over);
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
    assert_reads_back(&engine, &expected, &["victim"], "last log buffer");
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
    for (round, cut) in power_cuts(4, 2).enumerate() {
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
                    assert_reads_back(&engine, &durable, &["victim"], &format!("{what} (damaged)"));
                }
            }
            let engine = Engine::open_on(image.clone(), &small_options()).unwrap();
            engine.test_pause_background();
            assert_reads_back(&engine, &durable, &[], &what);
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
    let storage = images::log_tail_dropped_then_its_lsns_reused(|engine| {
        assert_eq!(
            engine.get(b"victim").unwrap().as_deref(),
            Some(&b"old version"[..]),
            "unproven LSNs: as before the table"
        );
    });
    let engine = Engine::open_on(storage, &small_options()).unwrap();
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
    assert_eq!(
        engine.get(b"g").unwrap().unwrap(),
        vec![b'g'; images::LOG_TAIL_VALUE]
    );
}

/// The last buffer of closed log segment S1 damaged, where the batches after it (in S2) were
/// written before the one sync that made both durable: no buffer on disk was sealed after that
/// sync but the marker the sync writes with S1's sync table entry. Before, the damaged batch was
/// a gap above every durable floor on disk: recovery cut the log there and the later, synced
/// batches went with it, and the older version of the damaged key was served.
#[test]
fn damage_in_the_last_buffer_of_a_log_segment_synced_with_later_batches_keeps_them() {
    let (storage, engine) = images::a_log_up_to_g();
    let big = images::LOG_TAIL_VALUE;
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
