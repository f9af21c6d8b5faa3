//! Segment summaries (`summaries.rs`): recovery that takes summarized segments from their
//! summaries rebuilds exactly what a scan of every segment rebuilds, wherever power is cut.

use super::storage::io_log::{self, Instrumentation, InstrumentedStorage, Replay};
use super::*;

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
/// with syncs, summary write-outs and a clean close, then a reopen and more of it with a
/// crash at the end; returns the I/O log.
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
            let group = rng.below(3) as u32;
            let key = format!("g{group}/k{:03}", rng.below(120));
            let batch = match rng.below(20) {
                0 => vec![Mutation::delete(group, key.as_bytes())],
                1 => vec![Mutation::delete_prefix(group, format!("g{group}/k0").as_bytes())],
                _ => {
                    let len = 100 + rng.below(12000) as usize;
                    vec![Mutation::put(group, key.as_bytes(), vec![step as u8; len])]
                }
            };
            match engine.write(&batch) {
                Ok(_) | Err(EngineError::NoSpace) => {}
                Err(e) => panic!("step {step}: {e}"),
            }
            if rng.below(8) == 0 {
                engine.sync().unwrap();
            }
            if rng.below(40) == 0 {
                engine.inner.write_out_summaries(false);
            }
        }
    };
    let engine = Engine::open_on(storage.clone(), &options()).unwrap();
    session(&engine, 3000);
    engine.close().unwrap();
    let engine = Engine::open_on(storage, &options()).unwrap();
    session(&engine, 1500);
    drop(engine);
    log
}

/// What recovery rebuilds from `image`, reading every segment or taking the summaries, with
/// the put notes it filled; and how many segments came from summaries.
fn recover_both(image: &Arc<SimStorage>) -> Option<(String, String, u64)> {
    let sb = Superblock::decode(&image.read_superblock().unwrap()?).ok()?;
    let storage: Arc<dyn Storage> = image.clone();
    let state = |summaries: &std::collections::BTreeMap<u32, format::summaries::SegmentSummary>| {
        let notes = tombstones::PutNotes::new(sb.segment_count as usize, Vec::new());
        let r = recovery::recover_summarized(&storage, &sb, &notes, summaries).unwrap();
        let notes: Vec<_> = (0..sb.segment_count).map(|s| notes.items(s)).collect();
        (
            format!("{}\n{notes:?}", super::recovered_state(&r)),
            r.report.segments_summarized,
        )
    };
    let (full, _) = state(&Default::default());
    let loaded = crate::engine::summaries::load(&*storage).unwrap();
    let (summarized, taken) = state(&loaded.by_segment);
    Some((full, summarized, taken))
}

/// The incremental checkpoint's proof: at power cuts all through a recorded workload (each
/// cut keeping a pseudo-random subset of the unsynced sectors, or exactly the unsynced sectors
/// of one summary slot), recovery taking summaries rebuilds the index, segment states, next
/// LSN and put notes a full scan of the same image rebuilds, byte for byte. Segments are freed
/// and reused after their summaries were written, and cuts fall inside summary write-outs.
#[test]
fn recovery_from_summaries_equals_a_full_scan_at_any_power_cut() {
    let dir = tempfile::tempdir().unwrap();
    let log = record_workload(dir.path(), 7);
    let summary = io_log::summarize(&log).unwrap();
    // Cuts spread through the log keep a random subset of the unsynced sectors; cuts just
    // before each sync keep exactly the unsynced sectors of a summary slot (a write-out whose
    // slot reached the disk before the segments it describes would show there).
    let step = (summary.entries / 150).max(1);
    let spread = (1..summary.entries).filter(|at| at % step == 0);
    let mut points: Vec<(u64, bool)> = spread.map(|at| (at, false)).collect();
    points.extend(summary.syncs.iter().map(|&at| (at, true)));
    points.sort_unstable();
    let mut replay = Replay::open(&log).unwrap();
    let (mut cuts, mut summarized_cuts, mut segments_taken) = (0u64, 0u64, 0u64);
    for (at, before_sync) in points {
        replay.advance_to(at).unwrap();
        let slot_cuts = format::summaries::SUMMARY_FILES.map(|file| PowerCut::KeepOnlyIn {
            file,
            start: 0,
            end: u64::MAX,
        });
        let cuts_here = if before_sync {
            slot_cuts.to_vec()
        } else {
            vec![PowerCut::Random(at)]
        };
        for cut in cuts_here {
            let image = replay.sim.crash(cut);
            let Some((full, summarized, taken)) = recover_both(&image) else {
                continue;
            };
            assert_eq!(
                full, summarized,
                "entry {at} of {}, {cut:?}: recovery from summaries differs from a full scan",
                summary.entries
            );
            cuts += 1;
            summarized_cuts += u64::from(taken > 0);
            segments_taken += taken;
        }
    }
    assert!(cuts >= 300, "{cuts} cuts");
    assert!(
        summarized_cuts * 2 > cuts,
        "only {summarized_cuts} of {cuts} cuts found a summary to take"
    );
    eprintln!("{cuts} cuts, {summarized_cuts} with summaries, {segments_taken} segments taken");
}

/// A crash after a clean close and a reopen: the next open takes most segments from their
/// summaries (the close wrote the summaries of every segment in use), and serves every key.
#[test]
fn a_crash_after_a_clean_close_reads_only_unsummarized_segments() {
    let storage = SimStorage::new();
    let engine = Engine::open_on(storage.clone(), &options()).unwrap();
    for i in 0..400u32 {
        let key = format!("k{i:04}");
        engine
            .write(&[Mutation::put(ROOT_GROUP, key.as_bytes(), vec![i as u8; 3000])])
            .unwrap();
    }
    engine.close().unwrap();
    let engine = Engine::open_on(storage.clone(), &options()).unwrap();
    engine
        .write(&[Mutation::put(ROOT_GROUP, &b"after"[..], &b"reopen"[..])])
        .unwrap();
    engine.sync().unwrap();
    drop(engine);
    let engine = Engine::open_on(storage.crash(PowerCut::DropAllUnsynced), &options()).unwrap();
    let report = engine.recovery_report();
    let in_use = (engine.inner.segments.infos().iter())
        .filter(|i| i.state != segments::SegmentState::Free)
        .count() as u64;
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
