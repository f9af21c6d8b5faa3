//! Model test: thousands of random batches, range deletes, syncs, injected I/O errors and power
//! cuts against an in-memory model. After every reopen the store must equal the model as of
//! exactly the LSN recovery reports, and that LSN must cover every batch completed before the
//! last completed sync (DESIGN.md section 6, the engine's contract).
//!
//! Keys belong to four groups, so that the separator copies records between segments; power is
//! also cut at every step of separator, compaction and reclamation passes (after the copies are
//! written, after the index moved, after the marker, after each zeroed block), and inside syncs
//! that write the sync table entries of closed log segments.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use logstorfs::engine::storage::{FaultPlan, PowerCut, SimRng, SimStorage};
use logstorfs::engine::{Engine, EngineError, EngineOptions, Mutation, ROOT_GROUP};

type State = BTreeMap<Vec<u8>, Vec<u8>>;

/// A power-cut image taken at a named step.
type TakenImage = (Arc<SimStorage>, &'static str);

fn options() -> EngineOptions {
    EngineOptions {
        capacity_bytes: 48 << 20,
        segment_size_bytes: 256 << 10,
        segments_per_file: 16,
        create_if_missing: true,
        sync_interval: None,
        separator_threshold_segments: 2,
        ..Default::default()
    }
}

/// Every key belongs to one of four groups.
fn group_of(n: u64) -> u32 {
    1 + (n % 4) as u32
}

fn key(n: u64) -> Vec<u8> {
    format!("k{n:02}").into_bytes()
}

fn value(rng: &mut SimRng, step: u64) -> Vec<u8> {
    let len = match rng.below(10) {
        0 => rng.below(60 << 10) as usize,
        1..=3 => rng.below(4096) as usize + 1,
        _ => rng.below(100) as usize,
    };
    let mut v = format!("step {step};").into_bytes();
    v.resize(len.max(v.len()), (step % 251) as u8);
    v
}

fn apply(state: &mut State, batch: &[Mutation]) {
    for m in batch {
        match m {
            Mutation::Put { key, value, .. } => {
                state.insert(key.clone(), value.clone());
            }
            Mutation::Delete { key, .. } => {
                state.remove(key);
            }
            Mutation::DeletePrefix { prefix, .. } => state.retain(|k, _| !k.starts_with(prefix)),
            Mutation::DeleteRange { start, end, .. } => {
                state.retain(|k, _| !(k >= start && (end.is_empty() || k < end)))
            }
        }
    }
}

fn random_batch(rng: &mut SimRng, step: u64) -> Vec<Mutation> {
    let n = 1 + rng.below(4);
    (0..n)
        .map(|_| match rng.below(20) {
            0..=13 => {
                let n = rng.below(48);
                Mutation::put(group_of(n), key(n), value(rng, step))
            }
            14..=16 => {
                let n = rng.below(48);
                Mutation::delete(group_of(n), key(n))
            }
            17..=18 => Mutation::delete_prefix(ROOT_GROUP, format!("k{}", rng.below(5))),
            _ => {
                let a = rng.below(48);
                let b = a + 1 + rng.below(10);
                Mutation::DeleteRange {
                    group: ROOT_GROUP,
                    start: key(a),
                    end: key(b),
                }
            }
        })
        .collect()
}

fn read_all(engine: &Engine) -> State {
    engine
        .scan(b"", None, usize::MAX)
        .unwrap()
        .into_iter()
        .collect()
}

/// After a reopen: the store must equal the model as of exactly the LSN recovery reports, which
/// must cover everything synced. Truncates the history there; returns the new synced LSN.
fn check_recovered(
    engine: &Engine,
    seed: u64,
    what: &str,
    history: &mut Vec<(u64, State)>,
    synced_lsn: u64,
) -> u64 {
    let report = engine.recovery_report();
    let recovered = read_all(engine);
    assert!(
        report.last_lsn >= synced_lsn,
        "seed {seed} {what}: recovered to LSN {} but {synced_lsn} was synced",
        report.last_lsn
    );
    let at = history
        .iter()
        .position(|(lsn, _)| *lsn == report.last_lsn)
        .unwrap_or_else(|| panic!("seed {seed} {what}: no batch has LSN {}", report.last_lsn));
    assert!(
        history[at].1 == recovered,
        "seed {seed} {what}: store differs from the model at LSN {}: model has {} keys, store {}",
        report.last_lsn,
        history[at].1.len(),
        recovered.len()
    );
    history.truncate(at + 1);
    report.last_lsn
}

/// Runs one seed; returns (batches written, power cuts survived, of which inside a pass).
fn run(seed: u64, steps: u64) -> (u64, u64, u64) {
    let mut rng = SimRng::new(seed);
    let mut storage = SimStorage::new();
    let mut engine = Engine::open_on(storage.clone(), &options()).unwrap();
    // State after every LSN still possible to recover to.
    let mut history: Vec<(u64, State)> = vec![(0, State::new())];
    let mut synced_lsn = 0;
    let mut batches = 0;
    let mut cuts = 0;
    let mut pass_cuts = 0;
    for step in 0..steps {
        match rng.below(100) {
            0..=79 => {
                let batch = random_batch(&mut rng, step);
                match engine.write(&batch) {
                    Ok(lsn) => {
                        let (last, prev) = history.last().unwrap();
                        assert!(lsn > *last, "seed {seed}: LSN {lsn} after {last}");
                        let mut next = prev.clone();
                        apply(&mut next, &batch);
                        history.push((lsn, next));
                        batches += 1;
                    }
                    Err(EngineError::NoSpace) => {}
                    Err(e) => panic!("seed {seed} step {step}: {e}"),
                }
                // Write-behind packs consecutive batches into one buffer; write it out now and
                // then, so that several unsynced buffers lie between syncs (the page cache may
                // keep a later one and drop an earlier one: the LSN gap).
                if rng.below(4) != 0 {
                    engine.test_wait_flushes();
                }
            }
            80..=84 => {
                let k = key(rng.below(48));
                let expected = history.last().unwrap().1.get(&k).cloned();
                assert_eq!(engine.get(&k).unwrap(), expected, "seed {seed} step {step}");
            }
            85..=86 => {
                // A separator or compaction pass, with a power cut at one of its steps now and
                // then.
                let cut_at = (rng.below(3) == 0).then(|| rng.below(12));
                let cut = match rng.below(3) {
                    0 => PowerCut::DropAllUnsynced,
                    1 => PowerCut::KeepAllWritten,
                    _ => PowerCut::Random(rng.next_u64()),
                };
                let taken: Arc<Mutex<Option<TakenImage>>> = Default::default();
                if let Some(k) = cut_at {
                    let (storage, taken, count) =
                        (storage.clone(), taken.clone(), AtomicU64::new(0));
                    engine.test_set_step_hook(Some(Box::new(move |name| {
                        if count.fetch_add(1, Ordering::Relaxed) == k {
                            *taken.lock().unwrap() = Some((storage.crash(cut), name));
                        }
                    })));
                }
                if rng.below(2) == 0 {
                    engine.test_separate().unwrap();
                } else {
                    engine.test_compact().unwrap();
                }
                engine.test_set_step_hook(None);
                let image = taken.lock().unwrap().take();
                if let Some((image, name)) = image {
                    drop(engine);
                    storage = image;
                    engine = Engine::open_on(storage.clone(), &options()).unwrap();
                    cuts += 1;
                    pass_cuts += 1;
                    let what = format!("step {step}, cut {cut:?} at '{name}'");
                    synced_lsn = check_recovered(&engine, seed, &what, &mut history, synced_lsn);
                }
            }
            87..=93 => {
                // Now and then a power cut inside the sync, once its log sync returned, when it
                // writes the sync table entries of the log segments it made durable (before
                // they are synced): everything before it is durable.
                let cut = (rng.below(3) == 0).then(|| match rng.below(3) {
                    0 => PowerCut::DropAllUnsynced,
                    1 => PowerCut::KeepAllWritten,
                    _ => PowerCut::Random(rng.next_u64()),
                });
                let taken: Arc<Mutex<Option<Arc<SimStorage>>>> = Default::default();
                if let Some(cut) = cut {
                    let (storage, taken) = (storage.clone(), taken.clone());
                    engine.test_set_step_hook(Some(Box::new(move |name| {
                        if name == "sync: log segments' entries written" {
                            *taken.lock().unwrap() = Some(storage.crash(cut));
                        }
                    })));
                }
                engine.sync().unwrap();
                engine.test_set_step_hook(None);
                synced_lsn = history.last().unwrap().0;
                let image = taken.lock().unwrap().take();
                if let Some(image) = image {
                    drop(engine);
                    storage = image;
                    engine = Engine::open_on(storage.clone(), &options()).unwrap();
                    cuts += 1;
                    pass_cuts += 1;
                    let what = format!("step {step}, cut {cut:?} in a sync");
                    synced_lsn = check_recovered(&engine, seed, &what, &mut history, synced_lsn);
                }
            }
            _ => {
                let cut = match rng.below(4) {
                    0 => PowerCut::DropAllUnsynced,
                    1 => PowerCut::KeepAllWritten,
                    _ => PowerCut::Random(rng.next_u64()),
                };
                if rng.below(4) == 0 {
                    // An I/O error in the middle of what follows: the engine must refuse the
                    // rest, and lose nothing that was synced.
                    storage.set_faults(FaultPlan {
                        fail_writes_after: Some(rng.below(3)),
                        ..FaultPlan::default()
                    });
                    for extra in 0..4 {
                        let batch = random_batch(&mut rng, step * 10 + extra);
                        if let Ok(lsn) = engine.write(&batch) {
                            let mut next = history.last().unwrap().1.clone();
                            apply(&mut next, &batch);
                            history.push((lsn, next));
                        }
                    }
                }
                // Write-behind: the last batches may still be in the log's buffer. Most cuts
                // come after they are written (not synced), so that torn writes are tested;
                // the others cut with them still in memory.
                if rng.below(4) != 0 {
                    engine.test_wait_flushes();
                }
                let image = storage.crash(cut);
                drop(engine);
                storage = image;
                engine = Engine::open_on(storage.clone(), &options()).unwrap();
                cuts += 1;
                let what = format!("step {step}, cut {cut:?}");
                synced_lsn = check_recovered(&engine, seed, &what, &mut history, synced_lsn);
            }
        }
    }
    // A clean close keeps everything.
    let expected = history.last().unwrap().1.clone();
    engine.close().unwrap();
    let engine = Engine::open_on(storage.crash(PowerCut::DropAllUnsynced), &options()).unwrap();
    assert_eq!(
        read_all(&engine),
        expected,
        "seed {seed}: clean close lost data"
    );
    (batches, cuts, pass_cuts)
}

#[test]
fn random_batches_with_power_cuts_match_the_model() {
    let seeds: u64 = std::env::var("MODEL_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    let steps: u64 = std::env::var("MODEL_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let (mut batches, mut cuts, mut pass_cuts) = (0, 0, 0);
    for seed in 1..=seeds {
        let (b, c, p) = run(seed, steps);
        batches += b;
        cuts += c;
        pass_cuts += p;
    }
    eprintln!(
        "model test: {batches} batches, {cuts} power cuts ({pass_cuts} inside separator, \
         compaction or reclamation passes), all consistent"
    );
    assert!(
        batches > seeds * steps / 2 && cuts > seeds && pass_cuts > 0,
        "the test exercised too little"
    );
}

/// Many writers on overlapping keys, putting and range-deleting: the index keeps the highest
/// version whatever order their index updates land in, and a range delete hides exactly the
/// puts of keys in its range with a lower LSN (a put with a higher LSN survives it, even when
/// its index update lands first); LSNs follow completion order; a sync makes it all durable.
/// The store must equal the batches applied one after the other in LSN order. Values are small
/// and writers many, so that puts and range deletes of several threads share write buffers.
#[test]
fn concurrent_writers_keep_newest_versions_and_lsn_order() {
    // Rounds on fresh stores: which updates of a buffer land out of order is up to the
    // scheduler, so give it several chances.
    for round in 0..4 {
        concurrent_writers_round(round);
    }
}

fn concurrent_writers_round(round: u64) {
    use std::sync::atomic::{AtomicU64, Ordering};
    let storage = SimStorage::new();
    let engine = Arc::new(Engine::open_on(storage.clone(), &options()).unwrap());
    // Each writer pauses between appending its batch and updating the index: the writers of
    // one buffer (more of them than cores) update the index in the order they wake up in.
    engine.test_set_index_delay(std::time::Duration::from_millis(1));
    let completed = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..16u64)
        .map(|t| {
            let engine = engine.clone();
            let completed = completed.clone();
            std::thread::spawn(move || {
                let mut rng = SimRng::new(round * 100 + t + 1);
                let mut log = Vec::new();
                for i in 0..200u64 {
                    let batch = if rng.below(3) == 0 {
                        // A range of 1 to 5 keys (some reaching past the last key).
                        let first = rng.below(10);
                        let end = first + 1 + rng.below(5);
                        vec![Mutation::DeleteRange {
                            group: ROOT_GROUP,
                            start: key(first),
                            end: key(end),
                        }]
                    } else {
                        let k = key((t * 7 + i) % 10);
                        vec![Mutation::put(ROOT_GROUP, k, format!("t{t} i{i}"))]
                    };
                    let before = completed.load(Ordering::SeqCst);
                    let lsn = engine.write(&batch).unwrap();
                    assert!(
                        lsn > before,
                        "batch that began after LSN {before} got {lsn}"
                    );
                    completed.fetch_max(lsn, Ordering::SeqCst);
                    log.push((lsn, batch));
                }
                log
            })
        })
        .collect();
    let mut all: Vec<(u64, Vec<Mutation>)> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    all.sort_by_key(|(lsn, _)| *lsn);
    assert!(
        all.windows(2).all(|w| w[0].0 < w[1].0),
        "two batches got one LSN"
    );
    let mut expected = State::new();
    for (_, batch) in &all {
        apply(&mut expected, batch);
    }
    let ranges = all
        .iter()
        .filter(|(_, b)| matches!(b[0], Mutation::DeleteRange { .. }))
        .count();
    assert!(
        ranges > 500,
        "{ranges} range deletes: the mix exercised too little"
    );
    assert_eq!(read_all(&engine), expected, "round {round}");
    engine.test_set_index_delay(std::time::Duration::ZERO);
    engine.sync().unwrap();
    let engine = Engine::open_on(storage.crash(PowerCut::DropAllUnsynced), &options()).unwrap();
    assert_eq!(
        read_all(&engine),
        expected,
        "round {round}: after a power cut following sync"
    );
}

#[test]
fn second_opener_of_a_store_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let opts = EngineOptions {
        capacity_bytes: 16 << 20,
        ..EngineOptions::default()
    };
    let first = Engine::open(dir.path(), &opts).unwrap();
    let err = Engine::open(dir.path(), &opts)
        .err()
        .expect("second open must fail");
    assert!(matches!(err, EngineError::Locked(_)), "{err}");
    assert!(err.to_string().contains("in use"), "{err}");
    first.close().unwrap();
    Engine::open(dir.path(), &opts).unwrap().close().unwrap();
}

#[test]
fn file_store_persists_across_reopen_and_prefix_scans() {
    let dir = tempfile::tempdir().unwrap();
    let opts = EngineOptions {
        capacity_bytes: 16 << 20,
        ..EngineOptions::default()
    };
    let engine = Engine::open(dir.path(), &opts).unwrap();
    let mut batch = Vec::new();
    for i in 0..100u32 {
        batch.push(Mutation::put(
            ROOT_GROUP,
            format!("dir/{i:03}"),
            i.to_le_bytes().to_vec(),
        ));
    }
    engine.write(&batch).unwrap();
    engine
        .write(&[Mutation::delete_prefix(ROOT_GROUP, "dir/05")])
        .unwrap();
    engine.close().unwrap();
    let engine = Engine::open(dir.path(), &opts).unwrap();
    let listed = engine.scan(b"dir/", None, 1000).unwrap();
    assert_eq!(listed.len(), 90);
    let page = engine.scan(b"dir/", Some(b"dir/010"), 5).unwrap();
    let names: Vec<String> = page
        .iter()
        .map(|(k, _)| String::from_utf8_lossy(k).into())
        .collect();
    assert_eq!(
        names,
        ["dir/011", "dir/012", "dir/013", "dir/014", "dir/015"]
    );
    let range = engine.scan_range(b"dir/020", b"dir/023", 100).unwrap();
    assert_eq!(range.len(), 3);
    assert_eq!(range[2].1, 22u32.to_le_bytes());
}
