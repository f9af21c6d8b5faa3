//! Passes that run out of free segments half-way, and a close that races a background pass:
//! the copies a pass wrote are noted and made durable whatever happens after them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};

use parking_lot::Mutex;

use super::super::format::SegmentKind;
use super::super::segments::{Claim, SegmentManager, SegmentState};
use super::super::storage::{FaultPlan, PowerCut, SimStorage};
use super::super::*;
use super::{CheckpointingSim, small_options};

const COPIED: &str = "copies written, index not yet moved";

fn put_in(group: GroupId, key: &str, value: &[u8]) -> Mutation {
    Mutation::put(group, key.as_bytes(), value)
}

/// Writes records of groups `1..=groups` in turn (3,000 bytes each, `victim` of group 1
/// first) until the mixed segment holding them is closed and durable; returns that segment.
fn fill_a_mixed_segment(engine: &Engine, groups: u32) -> u32 {
    let value = vec![0x5A; 3000];
    engine.write(&[put_in(1, "victim", &value)]).unwrap();
    for i in 0..100u32 {
        let group = 1 + i % groups;
        engine
            .write(&[put_in(group, &format!("g{group}/{i:03}"), &value)])
            .unwrap();
    }
    engine.sync().unwrap();
    let (segment, closed) = engine.test_segment_of(b"victim").unwrap();
    assert!(closed, "the first mixed segment is full and closed");
    segment
}

/// Takes free segments as a racing writer would, until the separator (`Claim::User`) could
/// take only `leave` more.
fn take_free_segments(segments: &SegmentManager, leave: usize) -> Vec<u32> {
    let mut taken = Vec::new();
    while segments.free_count() > segments.reserved as usize + leave {
        let (segment, _) = segments
            .allocate(SegmentKind::Group, 99, Claim::User)
            .unwrap();
        taken.push(segment);
    }
    taken
}

/// Gives back segments taken by [`take_free_segments`] (nothing was written into them).
fn give_back(segments: &SegmentManager, taken: Vec<u32>) {
    for segment in taken {
        segments.begin_free(segment).unwrap();
        segments.finish_free(segment);
    }
}

/// A pass that runs out of segments in the middle of one group's copies (the group's open
/// segment took the first buffer, the host disk had no room for the segment file of the next
/// one) leaves those first copies on disk. Their puts must be noted: otherwise, once the key
/// is deleted, the separator drops the tombstone (no segment in use seems to hold an older
/// put), and a full scan after a crash serves the old copy: a deleted file comes back.
#[test]
fn copies_written_before_a_pass_ran_out_of_segments_keep_their_key_deleted() {
    let storage = SimStorage::new();
    let opts = small_options();
    let engine = Engine::open_on(storage.clone(), &opts).unwrap();
    engine.test_pause_background();
    let segments = engine.inner.segments.clone();
    // Group 1 gets an open segment, partly filled by a first separation.
    fill_a_mixed_segment(&engine, 2);
    engine.test_separate().unwrap();
    let (open, closed) = engine.test_segment_of(b"victim").unwrap();
    assert!(!closed, "group 1's segment of copies is open");
    // A second mixed segment, mostly of group 1 (more than the open segment's room), `second`
    // (group 1) its oldest record, so the first of its group's copies.
    let value = vec![0x5B; 3000];
    engine.write(&[put_in(1, "second", &value)]).unwrap();
    for i in 0..100u32 {
        let group = if i % 5 == 4 { 2 } else { 1 };
        engine
            .write(&[put_in(group, &format!("h{group}/{i:03}"), &value)])
            .unwrap();
    }
    engine.sync().unwrap();
    let (source, closed) = engine.test_segment_of(b"second").unwrap();
    assert!(closed);

    // The host disk is full: no new segment file, and the allocated ones hold no free segment
    // the separator may take.
    storage.set_faults(FaultPlan {
        fail_allocate: true,
        ..Default::default()
    });
    let mut taken = Vec::new();
    while let Ok((segment, _)) = segments.allocate(SegmentKind::Group, 99, Claim::FreesSpace) {
        taken.push(segment);
    }
    give_back(
        &segments,
        taken.split_off(taken.len() - segments.reserved as usize),
    );
    let used_before = segments.info(open).used;
    let outcome = engine.test_separate();
    assert!(
        matches!(outcome, Err(EngineError::NoSpace)),
        "the separator runs out of segments half-way: {outcome:?}"
    );
    assert!(
        segments.info(open).used > used_before,
        "copies were written into group 1's open segment before the pass ran out"
    );
    storage.set_faults(FaultPlan::default());
    give_back(&segments, taken);

    // Delete the key, then let the separator consider its tombstone: the source segment and
    // the one holding the tombstone are emptied and freed, while group 1's segment, which
    // holds the copy, stays (its other records are live).
    engine
        .write(&[Mutation::delete(ROOT_GROUP, b"second".to_vec())])
        .unwrap();
    engine.sync().unwrap();
    engine.test_separate().unwrap();
    assert_ne!(
        engine.test_segment_of(b"h2/004").map(|(s, _)| s),
        Some(source),
        "the source segment was separated"
    );
    let filler = vec![0xF1; 3000];
    for i in 0..100u32 {
        let group = 3 + i % 2;
        engine
            .write(&[put_in(group, &format!("f{group}/{i:03}"), &filler)])
            .unwrap();
    }
    engine.sync().unwrap();
    engine.test_separate().unwrap();
    assert_eq!(engine.get(b"second").unwrap(), None);
    assert!(
        segments.info(open).state != SegmentState::Free,
        "the segment holding the copy is still in use"
    );
    engine.sync().unwrap();
    drop(engine);

    for cut in [PowerCut::DropAllUnsynced, PowerCut::KeepAllWritten] {
        let engine = Engine::open_on(storage.crash(cut), &opts).unwrap();
        assert!(engine.recovery_report().segments_scanned > 0, "a full scan");
        assert_eq!(
            engine.get(b"second").unwrap().map(|v| v.len()),
            None,
            "a deleted key came back after a crash ({cut:?}): its tombstone was dropped while \
             a copy of its put, written by a pass that then ran out of segments, was on disk"
        );
        for key in ["victim", "h1/000", "h2/004"] {
            assert!(
                engine.get(key.as_bytes()).unwrap().is_some(),
                "{key} ({cut:?})"
            );
        }
    }
}

/// A separator pass with room for the copies of some groups of a segment but not of all of
/// them copies none of that segment and reports no error: every group it copies into may need a
/// segment of its own. (Before, it wrote the first group's copies into the last free segment
/// and failed on the next group, in the middle of the segment.)
#[test]
fn a_pass_without_room_for_every_groups_copies_copies_none_of_the_segment() {
    let storage = SimStorage::new();
    let engine = Engine::open_on(storage, &small_options()).unwrap();
    engine.test_pause_background();
    let source = fill_a_mixed_segment(&engine, 2);
    // Room for one group's copies; the segment's records are of two groups that own no
    // segment yet.
    let taken = take_free_segments(&engine.inner.segments, 1);
    let outcome = engine.test_separate();
    assert!(
        outcome.is_ok(),
        "the separator stops before a segment it has no room for, not in its middle: \
         {outcome:?}"
    );
    for key in ["victim", "g1/000", "g2/001"] {
        assert_eq!(
            engine.test_segment_of(key.as_bytes()).map(|(s, _)| s),
            Some(source),
            "{key} was not copied"
        );
    }
    give_back(&engine.inner.segments, taken);
    engine.test_separate().unwrap();
    for key in ["victim", "g1/000", "g2/001"] {
        assert_ne!(
            engine.test_segment_of(key.as_bytes()).map(|(s, _)| s),
            Some(source),
            "{key} is separated once there is room"
        );
        assert_eq!(
            engine.get(key.as_bytes()).unwrap().as_deref(),
            Some(&[0x5A; 3000][..])
        );
    }
}

/// A compaction pass with room for fewer segments than the groups a victim's copies go to
/// copies the victim into one group's segment instead of leaving it whole. Sorted by group, a
/// store with more groups than free segments above the compaction floor could never empty a
/// mixed segment again, and writes were refused with a quarter of the store left
/// (`engine_model_threads::a_store_of_many_groups_near_full_keeps_taking_overwrites`).
#[test]
fn a_compaction_pass_short_of_a_segment_per_group_copies_the_victim_into_one_group() {
    // Large enough that the four groups may each open a segment (`groups::max_open_segments`):
    // short of free segments, not of open ones, the pass itself must put the copies in one.
    let options = EngineOptions {
        capacity_bytes: 256 << 20,
        ..small_options()
    };
    let storage = SimStorage::new();
    let engine = Engine::open_on(storage.clone(), &options).unwrap();
    engine.test_pause_background();
    let source = fill_a_mixed_segment(&engine, 4);
    let mut kept = vec!["victim".to_string()];
    for i in 0..100u32 {
        let key = format!("g{}/{i:03}", 1 + i % 4);
        if i % 3 == 0 {
            kept.push(key);
        } else {
            engine
                .write(&[Mutation::delete(1 + i % 4, key.as_bytes())])
                .unwrap();
        }
    }
    engine.sync().unwrap();
    // Two segments above the compaction floor; the victim's live records are of four groups
    // that own no segment yet.
    let segments = engine.inner.segments.clone();
    let mut taken = Vec::new();
    while segments.free_for(Claim::Compaction) > 2 {
        taken.push(
            segments
                .allocate(SegmentKind::Group, 99, Claim::Compaction)
                .unwrap()
                .0,
        );
    }
    let in_source: Vec<&String> = kept
        .iter()
        .filter(|key| engine.test_segment_of(key.as_bytes()).unwrap().0 == source)
        .collect();
    let groups: std::collections::BTreeSet<&str> = in_source.iter().map(|key| &key[..2]).collect();
    assert!(groups.len() >= 3, "the victim's live keys: {in_source:?}");
    let emptied = engine.test_compact().unwrap();
    assert!(emptied >= 1, "no victim emptied");
    let mut homes = std::collections::BTreeSet::new();
    for key in &in_source {
        let (segment, _) = engine.test_segment_of(key.as_bytes()).unwrap();
        assert_ne!(segment, source, "{key} was not copied");
        homes.insert(segment);
        assert_eq!(
            engine.get(key.as_bytes()).unwrap().as_deref(),
            Some(&[0x5A; 3000][..])
        );
    }
    assert_eq!(homes.len(), 1, "the copies went to one segment: {homes:?}");
    give_back(&segments, taken);
    engine.close().unwrap();
    let crashed = storage.crash(PowerCut::DropAllUnsynced);
    let engine = Engine::open_on(crashed.clone(), &options).unwrap();
    for key in &kept {
        assert_eq!(
            engine.get(key.as_bytes()).unwrap().as_deref(),
            Some(&[0x5A; 3000][..]),
            "{key} after a crash"
        );
    }
    for i in (0..100u32).filter(|i| i % 3 != 0) {
        let key = format!("g{}/{i:03}", 1 + i % 4);
        assert_eq!(engine.get(key.as_bytes()).unwrap(), None, "{key} came back");
    }
    engine.close().unwrap();
    let check = super::fsck(&*crashed);
    assert_eq!(check.problems(), 0, "{:?}", check.findings);
}

/// The separator copies only records the log has made durable: it syncs first. A copy of a
/// batch that a power cut then takes from the log would outlive it wherever the cut kept the
/// copy's sectors and not the batch's (recovery also cuts copies above the log's end, which
/// this ordering spares it from relying on). Checked where the copies are on disk and the
/// index not yet moved: no group-owned segment holds a record newer than the durable LSN.
#[test]
fn the_separator_copies_only_records_the_log_made_durable() {
    let storage = SimStorage::new();
    let engine = Engine::open_on(storage, &small_options()).unwrap();
    engine.test_pause_background();
    let value = vec![0x33; 3000];
    for i in 0..200u32 {
        let group = 1 + i % 3;
        engine
            .write(&[put_in(group, &format!("g{group}/{i:03}"), &value)])
            .unwrap();
    }
    let inner = Arc::downgrade(&engine.inner);
    let found = Arc::new(Mutex::new((0usize, Vec::new())));
    let seen = found.clone();
    engine.test_set_step_hook(Some(Box::new(move |step| {
        if step != COPIED {
            return;
        }
        let Some(inner) = inner.upgrade() else { return };
        let durable = inner.log.durable_lsn();
        let mut seen = seen.lock();
        seen.0 += 1;
        for (segment, (info, _)) in inner.segments.snapshot().iter().enumerate() {
            if info.kind == SegmentKind::Group && info.max_lsn > durable {
                seen.1.push(format!(
                    "segment {segment} holds copies up to LSN {} above the durable LSN {durable}",
                    info.max_lsn
                ));
            }
        }
    })));
    assert!(
        engine.inner.log.durable_lsn() < engine.inner.log.last_lsn(),
        "the batches are not yet durable"
    );
    engine.test_separate().unwrap();
    engine.test_set_step_hook(None);
    let (steps, problems) = &*found.lock();
    assert!(*steps > 0, "the separator copied nothing");
    assert!(problems.is_empty(), "{problems:?}");
}

/// `Engine::close` syncs, then stops the background thread, then writes the index checkpoint.
/// A background separator pass that writes copies after close's last sync and then fails (it
/// ran out of segments, so no reclamation and no sync follows it) leaves the index on copies
/// that are not durable: the checkpoint must not describe them. After a power cut that keeps
/// only synced bytes, the open that loads the checkpoint must read every key's value.
#[test]
fn a_checkpoint_never_points_at_copies_a_power_cut_took() {
    let sim = SimStorage::new();
    let slot = Arc::new(Mutex::new(None));
    let cut = Arc::new(Mutex::new(None));
    let storage = Arc::new(CheckpointingSim {
        sim: sim.clone(),
        checkpoint: slot.clone(),
        cut_at_checkpoint: cut.clone(),
    });
    // Large enough that each of the three groups gets an open segment of its own
    // (`groups::max_open_segments`), so that the pass copies them one group at a time.
    let opts = EngineOptions {
        capacity_bytes: 256 << 20,
        ..small_options()
    };
    let engine = Engine::open_on(storage, &opts).unwrap();
    engine.test_pause_background();
    fill_a_mixed_segment(&engine, 3);

    // The background separator copies group 1, waits until close has synced and asked it to
    // stop, copies group 2, and then finds no free segment for group 3 (a racing writer).
    let (entered_tx, entered) = mpsc::channel();
    let calls = Arc::new(AtomicUsize::new(0));
    {
        let inner = Arc::downgrade(&engine.inner);
        let calls = calls.clone();
        engine.test_set_step_hook(Some(Box::new(move |step| {
            if step != COPIED {
                return;
            }
            let Some(inner) = inner.upgrade() else {
                return;
            };
            match calls.fetch_add(1, Ordering::SeqCst) {
                0 => {
                    entered_tx.send(()).unwrap();
                    while !*inner.stop.lock() {
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                }
                1 => drop(take_free_segments(&inner.segments, 0)),
                _ => {}
            }
        })));
    }
    engine
        .inner
        .test_background_paused
        .store(false, Ordering::SeqCst);
    engine.inner.wake.notify_all();
    entered.recv().unwrap();
    engine.close().unwrap();
    assert!(
        calls.load(Ordering::SeqCst) >= 2,
        "group 2 was copied during close"
    );
    assert!(slot.lock().is_some(), "the clean close wrote a checkpoint");

    // Power cut the moment the checkpoint was written (a clean close goes on to write the
    // segment summaries, whose sync must not be what makes the checkpoint's records durable).
    let cut_image = cut.lock().take().expect("a power cut at the checkpoint");
    let after = Arc::new(CheckpointingSim {
        sim: cut_image,
        checkpoint: slot.clone(),
        cut_at_checkpoint: Arc::new(Mutex::new(None)),
    });
    let engine = Engine::open_on(after, &opts).unwrap();
    let report = engine.recovery_report();
    // The separator's sources are read (their records were copied), the rest is not.
    assert!(
        report.segments_checkpointed > 0,
        "the open took segments from the checkpoint: {report:?}"
    );
    let value = vec![0x5A; 3000];
    for i in 0..100u32 {
        let group = 1 + i % 3;
        let key = format!("g{group}/{i:03}");
        let got = engine.get(key.as_bytes());
        assert!(
            matches!(&got, Ok(Some(v)) if *v == value),
            "{key} after a clean close and a power cut: {:?}",
            got.map(|v| v.map(|v| v.len()))
        );
    }
}

/// Index locations carry no generation. Were a victim freed and taken again by the log while a
/// pass reads and copies it, a new record written at the very place of one the pass read would
/// lose its compare-and-set to the pass's stale copy, and its key would go back to an old value.
/// The pass holds the reclaim lock from its check of the victim to its last copy. Here the
/// reclaimer tries its turn at the worst moment (the victim read, its copies not yet written),
/// and the victim's first record is then rewritten, the reclaimer trying again each time,
/// until it lands where it was or free segments run short.
#[test]
fn a_victim_is_never_freed_and_reused_while_its_pass_copies_it() {
    use std::sync::atomic::AtomicBool;
    let options = EngineOptions {
        capacity_bytes: 16 << 20,
        segment_size_bytes: 1 << 20,
        ..small_options()
    };
    let engine = Arc::new(Engine::open_on(SimStorage::new(), &options).unwrap());
    engine.test_pause_background();
    let value = |tag: u64| vec![tag as u8; 20 << 10];
    let write_synced = |key: &str, tag: u64| {
        engine
            .write(&[put_in(ROOT_GROUP, key, &value(tag))])
            .unwrap();
        engine.sync().unwrap();
    };
    // Fillers, one buffer each, until one opens a segment: that one is the victim's first
    // record; more follow until the victim is closed.
    let mut fillers = Vec::new();
    let mut previous = None;
    let anchor = loop {
        let key = format!("fill{:04}", fillers.len());
        write_synced(&key, 1);
        let (segment, _) = engine.test_segment_of(key.as_bytes()).unwrap();
        fillers.push(key.clone());
        if previous.is_some_and(|p| p != segment) {
            break key;
        }
        previous = Some(segment);
    };
    let (victim, victim_offset) = engine.test_location_of(anchor.as_bytes()).unwrap();
    while !engine.test_segment_of(anchor.as_bytes()).unwrap().1 {
        let key = format!("fill{:04}", fillers.len());
        write_synced(&key, 1);
        fillers.push(key);
    }
    // All of the victim but its first record dies.
    for key in &fillers {
        if *key != anchor && engine.test_segment_of(key.as_bytes()).unwrap().0 == victim {
            write_synced(key, 2);
        }
    }

    let read = Arc::new(AtomicBool::new(false));
    let reclaimer_got_in = Arc::new(AtomicBool::new(false));
    let newest = Arc::new(AtomicUsize::new(2));
    let landed = Arc::new(AtomicBool::new(false));
    {
        let hooked = Arc::downgrade(&engine);
        let (read, reclaimer_got_in, newest, landed) = (
            read.clone(),
            reclaimer_got_in.clone(),
            newest.clone(),
            landed.clone(),
        );
        let anchor = anchor.clone();
        engine.test_set_step_hook(Some(Box::new(move |step| {
            if step != "compaction: victim read" || read.swap(true, Ordering::SeqCst) {
                return;
            }
            let engine = hooked.upgrade().unwrap();
            let try_reclaim = || {
                let free_to_run = engine.inner.reclaim_lock.try_lock().is_some();
                if free_to_run {
                    reclaimer_got_in.store(true, Ordering::SeqCst);
                    engine.test_reclaim().unwrap();
                }
            };
            let segments = &engine.inner.segments;
            for tag in 3..5000u64 {
                if segments.free_count() <= segments.reserved as usize + 2 {
                    break;
                }
                engine
                    .write(&[put_in(ROOT_GROUP, &anchor, &value(tag))])
                    .unwrap();
                engine.sync().unwrap();
                newest.store(tag as usize, Ordering::SeqCst);
                try_reclaim();
                if engine.test_location_of(anchor.as_bytes()) == Some((victim, victim_offset)) {
                    landed.store(true, Ordering::SeqCst);
                    break;
                }
            }
        })));
    }
    engine.test_compact().unwrap();
    engine.test_set_step_hook(None);
    assert!(read.load(Ordering::SeqCst), "the pass read the victim");
    let newest = newest.load(Ordering::SeqCst) as u64;
    assert!(
        newest > 2,
        "the victim's first record was rewritten during the pass"
    );
    assert_eq!(
        engine.get(anchor.as_bytes()).unwrap(),
        Some(value(newest)),
        "{anchor} after a pass over segment {victim} (its record rewritten at the place it had: \
         {})",
        landed.load(Ordering::SeqCst)
    );
    assert!(
        !reclaimer_got_in.load(Ordering::SeqCst),
        "the reclaimer could run while a pass read its victim"
    );
}
