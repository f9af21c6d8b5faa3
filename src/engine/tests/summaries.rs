//! Segment summaries (`summaries.rs`): recovery that takes summarized segments from their
//! summaries rebuilds exactly what a scan of every segment rebuilds, wherever power is cut.

use super::storage::io_log::{self, Instrumentation, InstrumentedStorage, Replay};
use super::*;
use crate::engine::summaries::WriteOut;

/// A small store that a workload of a few MiB fills many times over, so that segments are
/// freed and reused (after their summaries were written) all through it.
fn options() -> EngineOptions {
    EngineOptions {
        capacity_bytes: 16 << 20,
        segment_size_bytes: 256 << 10,
        segments_per_file: 16,
        create_if_missing: true,
        sync_interval: None,
        separator_threshold_segments: 2,
        ..Default::default()
    }
}

/// Records the I/O of a workload of overwrites, deletes and prefix deletes in three groups,
/// with syncs and summary write-outs, in sessions that close cleanly but the last, which
/// crashes; returns the I/O log.
fn record_workload(dir: &std::path::Path, seed: u64) -> std::path::PathBuf {
    let log = dir.join("io.log");
    let sim = SimStorage::new();
    let what = Instrumentation {
        record_io: Some(log.clone()),
        ..Default::default()
    };
    let storage: Arc<dyn Storage> = Arc::new(InstrumentedStorage::new(sim, &what).unwrap());
    let mut rng = storage::SimRng::new(seed);
    let mut session = |engine: &Engine, steps: u64| {
        for step in 0..steps {
            overwrite_delete_step(engine, &mut rng, step);
            // Write-outs of their own: the background's rule, which waits until the set
            // could double, would leave the cuts too few write-outs to fall around.
            if rng.below(40) == 0 {
                engine.inner.write_out_summaries(WriteOut::Now);
            }
        }
    };
    // Each clean close summarizes the open segments too: uses that end early, often in
    // reused segments with bytes of an earlier use behind their end.
    for _ in 0..4 {
        let engine = Engine::open_on(storage.clone(), &options()).unwrap();
        session(&engine, 900);
        engine.close().unwrap();
    }
    let engine = Engine::open_on(storage, &options()).unwrap();
    session(&engine, 900);
    drop(engine);
    log
}

/// What recovery rebuilds from `image`, reading every segment or taking the summaries, with
/// the put notes it filled; and how many segments came from summaries.
fn recover_both(image: &Arc<SimStorage>) -> Option<(String, String, u64, u64)> {
    let sb = Superblock::decode(&image.read_superblock().unwrap()?).ok()?;
    let storage: Arc<dyn Storage> = image.clone();
    let state = |summaries: std::collections::BTreeMap<u32, format::summaries::SegmentSummary>| {
        let notes = tombstones::PutNotes::new(sb.segment_count as usize, Vec::new());
        let r = recovery::recover_summarized(&storage, &sb, &notes, summaries).unwrap();
        let notes: Vec<_> = (0..sb.segment_count).map(|s| notes.items(s)).collect();
        (
            format!("{}\n{notes:?}", super::recovered_state(&r)),
            r.report.segments_summarized,
        )
    };
    let (full, _) = state(Default::default());
    let loaded = crate::engine::summaries::load(&*storage).unwrap();
    let with_tail_puts = (loaded.by_segment.values())
        .filter(|s| !s.tail_puts.is_empty())
        .count() as u64;
    let (summarized, taken) = state(loaded.by_segment);
    Some((full, summarized, taken, with_tail_puts))
}

/// The first items (between commas and lines) where two recovered states differ.
fn differences(full: &str, summarized: &str) -> String {
    let differs: Vec<String> = (full.split([',', '\n']))
        .zip(summarized.split([',', '\n']))
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .take(8)
        .map(|(i, (a, b))| format!("item {i}: full {a:?}, summarized {b:?}"))
        .collect();
    differs.join("\n")
}

/// What the cuts of one recorded workload showed.
#[derive(Default)]
struct Cuts {
    cuts: u64,
    /// Cuts whose recovery took at least one segment from its summary.
    summarized: u64,
    segments_taken: u64,
    /// Cuts whose summaries hold puts behind a use's end (see `SegmentSummary::tail_puts`).
    with_tail_puts: u64,
}

/// Cuts the recorded workload `log` all through: cuts spread through the log keep a random
/// subset of the unsynced sectors; cuts just before each sync keep exactly the unsynced sectors
/// of a summary slot (a write-out whose slot reached the disk before the segments it describes
/// would show there). Panics where recovery from summaries differs from a full scan.
fn cut_all_through(log: &std::path::Path) -> Cuts {
    let summary = io_log::summarize(log).unwrap();
    let step = (summary.entries / 150).max(1);
    let spread = (1..summary.entries).filter(|at| at % step == 0);
    let mut points: Vec<(u64, bool)> = spread.map(|at| (at, false)).collect();
    points.extend(summary.syncs.iter().map(|&at| (at, true)));
    points.sort_unstable();
    let mut replay = Replay::open(log).unwrap();
    let mut seen = Cuts::default();
    for (at, before_sync) in points {
        replay.advance_to(at).unwrap();
        let cuts_here = if before_sync {
            (format::summaries::SUMMARY_FILES.iter())
                .map(|&file| PowerCut::KeepOnlyIn {
                    file,
                    start: 0,
                    end: u64::MAX,
                })
                .collect()
        } else {
            vec![PowerCut::Random(at)]
        };
        for cut in cuts_here {
            let image = replay.sim.crash(cut);
            let Some((full, summarized, taken, with_tail_puts)) = recover_both(&image) else {
                continue;
            };
            if full != summarized {
                panic!(
                    "entry {at} of {}, {cut:?}: recovery from summaries differs from a full \
                     scan:\n{}",
                    summary.entries,
                    differences(&full, &summarized)
                );
            }
            seen.cuts += 1;
            seen.summarized += u64::from(taken > 0);
            seen.segments_taken += taken;
            seen.with_tail_puts += u64::from(with_tail_puts > 0);
        }
    }
    seen
}

/// The incremental checkpoint's proof: at power cuts all through a recorded workload (see
/// [`cut_all_through`]), recovery taking summaries rebuilds the index, segment states, next
/// LSN and put notes a full scan of the same image rebuilds, byte for byte. Segments are freed
/// and reused after their summaries were written, and cuts fall inside summary write-outs.
/// Whether a reused segment's new use ends before bytes of its earlier use (puts the scan
/// notes behind the end) depends on the threads' timing: workloads are recorded until one
/// shows it, at most eight.
#[test]
fn recovery_from_summaries_equals_a_full_scan_at_any_power_cut() {
    let dir = tempfile::tempdir().unwrap();
    for attempt in 1..=8 {
        let log = record_workload(dir.path(), 7);
        let seen = cut_all_through(&log);
        assert!(seen.cuts >= 300, "{} cuts", seen.cuts);
        assert!(
            seen.summarized * 2 > seen.cuts,
            "only {} of {} cuts found a summary to take",
            seen.summarized,
            seen.cuts
        );
        eprintln!(
            "workload {attempt}: {} cuts, {} with summaries, {} segments taken, {} with puts \
             behind a summarized use",
            seen.cuts, seen.summarized, seen.segments_taken, seen.with_tail_puts
        );
        if seen.with_tail_puts > 0 {
            return;
        }
    }
    panic!("no workload of eight left puts behind a summarized segment's use");
}

/// Writes keys `k0000` to `k0399`, each 3000 bytes of its number.
fn write_400_keys(engine: &Engine) {
    for i in 0..400u32 {
        let key = format!("k{i:04}");
        let value = vec![i as u8; 3000];
        engine
            .write(&[Mutation::put(ROOT_GROUP, key.as_bytes(), value)])
            .unwrap();
    }
}

/// Segments not free.
fn segments_in_use(engine: &Engine) -> u64 {
    (engine.inner.segments.infos().iter())
        .filter(|i| i.state != segments::SegmentState::Free)
        .count() as u64
}

/// A crash after a clean close and a reopen: the next open takes most segments from their
/// summaries (the close wrote the summaries of every segment in use), and serves every key.
#[test]
fn a_crash_after_a_clean_close_reads_only_unsummarized_segments() {
    let storage = SimStorage::new();
    let engine = Engine::open_on(storage.clone(), &options()).unwrap();
    write_400_keys(&engine);
    engine.close().unwrap();
    let engine = Engine::open_on(storage.clone(), &options()).unwrap();
    engine
        .write(&[Mutation::put(ROOT_GROUP, &b"after"[..], &b"reopen"[..])])
        .unwrap();
    engine.sync().unwrap();
    drop(engine);
    let engine = Engine::open_on(storage.crash(PowerCut::DropAllUnsynced), &options()).unwrap();
    let report = engine.recovery_report();
    let in_use = segments_in_use(&engine);
    // All but the segment the reopened session wrote to, and the one this open wrote its
    // marker to (after recovery).
    assert!(
        in_use >= 6 && report.segments_summarized + 2 >= in_use,
        "{in_use} segments in use: {report:?}"
    );
    for i in 0..400u32 {
        let key = format!("k{i:04}");
        assert_eq!(
            engine.get(key.as_bytes()).unwrap(),
            Some(vec![i as u8; 3000]),
            "{key}"
        );
    }
    assert_eq!(engine.get(b"after").unwrap(), Some(b"reopen".to_vec()));
}

/// A recovery that reads segments whole writes their summaries: the next recovery after
/// another crash takes them from there.
#[test]
fn segments_a_recovery_read_are_summarized_for_the_next_one() {
    let storage = SimStorage::new();
    let engine = Engine::open_on(storage.clone(), &options()).unwrap();
    engine.test_pause_background();
    write_400_keys(&engine);
    engine.sync().unwrap();
    drop(engine);
    let image = storage.crash(PowerCut::DropAllUnsynced);
    let engine = Engine::open_on(image.clone(), &options()).unwrap();
    let first = engine.recovery_report();
    assert_eq!(first.segments_summarized, 0, "{first:?}");
    // What the background loop does once enough summaries wait.
    engine.inner.write_out_summaries(WriteOut::Now);
    drop(engine);
    let engine = Engine::open_on(image.crash(PowerCut::DropAllUnsynced), &options()).unwrap();
    let second = engine.recovery_report();
    let in_use = segments_in_use(&engine);
    // All but the segments the two opens wrote their markers to.
    assert!(
        in_use >= 4 && second.segments_summarized + 2 >= in_use,
        "{in_use} segments in use: {second:?}"
    );
    for i in (0..400u32).step_by(7) {
        let key = format!("k{i:04}");
        assert_eq!(
            engine.get(key.as_bytes()).unwrap(),
            Some(vec![i as u8; 3000])
        );
    }
}

/// Damaged images without summaries, each opened once (recovery reads every segment,
/// salvages the damaged stretches and writes the summaries of the segments it found whole),
/// then cut: recovery from summaries still equals a full scan. A segment with damage is never
/// summarized, so the next recovery salvages it again.
#[test]
fn recovery_after_damage_summarizes_only_whole_segments() {
    let mut images: Vec<(String, Arc<SimStorage>)> = vec![
        (
            "copy before others".into(),
            images::damaged_copy_before_others(),
        ),
        (
            "buffer and directory".into(),
            images::damaged_buffer_and_its_directory(),
        ),
        (
            "two log headers".into(),
            images::two_log_buffers_damaged_in_their_headers(),
        ),
    ];
    for deletion in ["range delete", "tombstone"] {
        images.push((deletion.into(), images::damaged_deletion(deletion)));
    }
    for scenario in ["close", "crash, reopen", "close, reopen", "idle"] {
        images.push((
            scenario.into(),
            images::damaged_newest_synced_log_buffer(scenario),
        ));
    }
    for (what, delta, mask) in images::RECORD_DAMAGE {
        images.push((
            what.to_string(),
            images::damaged_record_header_or_key(delta, mask),
        ));
    }
    let (mut summarized, mut damaged) = (0, 0);
    for (what, image) in images {
        // The builders' clean closes summarized segments before the damage was done: damage
        // to a summarized segment shows at reads and in fsck, not to recovery.
        super::forget_summaries(&image);
        let engine = Engine::open_on(image.clone(), &super::small_options()).unwrap();
        damaged += u64::from(engine.recovery_report().buffers_damaged > 0);
        engine.inner.write_out_summaries(WriteOut::Now);
        drop(engine);
        let image = image.crash(PowerCut::DropAllUnsynced);
        let (full, from_summaries, taken, _) = recover_both(&image).unwrap();
        assert!(
            full == from_summaries,
            "{what}: {}",
            differences(&full, &from_summaries)
        );
        summarized += taken;
    }
    assert!(
        damaged >= 8,
        "only {damaged} images held damage a recovery found"
    );
    assert!(summarized > 0, "no image had a whole segment summarized");
}
