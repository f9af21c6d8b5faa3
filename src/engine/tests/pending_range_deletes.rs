//! Proves that a range delete of many entries is one small record and bounded work on the
//! writer's path: the entries it covers stay in the index, hidden from every reader, until the
//! background removes them in bounded steps (or whatever needs exact figures does), across a
//! power cut and a clean close, and a full store takes writes once such a delete returned.

use super::*;

/// Keys of one "file": enough entries that a range delete of them leaves most pending.
const PAGES: usize = 3000;

fn page(i: usize) -> Vec<u8> {
    format!("p/{i:06}").into_bytes()
}

fn fill(engine: &Engine, value: &[u8]) {
    for chunk in (0..PAGES).collect::<Vec<_>>().chunks(64) {
        let batch: Vec<Mutation> = chunk
            .iter()
            .map(|&i| Mutation::put(ROOT_GROUP, page(i), value))
            .collect();
        engine.write(&batch).unwrap();
    }
    engine
        .write(&[
            Mutation::put(ROOT_GROUP, b"o/before".to_vec(), b"x".to_vec()),
            Mutation::put(ROOT_GROUP, b"q/after".to_vec(), b"y".to_vec()),
        ])
        .unwrap();
}

/// Fills the pages with `fill_byte` bytes, deletes their prefix (a pending range delete once
/// background work is paused), then puts page 9 back as "kept".
fn fill_delete_and_put_one_back(engine: &Engine, fill_byte: u8) {
    fill(engine, &[fill_byte; 100]);
    engine
        .write(&[Mutation::delete_prefix(ROOT_GROUP, b"p/".to_vec())])
        .unwrap();
    engine
        .write(&[Mutation::put(ROOT_GROUP, page(9), b"kept".to_vec())])
        .unwrap();
}

/// Everything a reader sees: every live key and value.
fn visible(engine: &Engine) -> Vec<(Vec<u8>, Vec<u8>)> {
    engine.scan(b"", None, usize::MAX).unwrap()
}

/// A prefix delete of thousands of keys looks at a bounded number of them on the writer's
/// path, and from its return on no reader sees what it covers: point reads, scans, counts,
/// `contains`. A put after it is seen. Exact figures (stats) settle it first, and equal those
/// of a store that never held the deleted keys' dead entries in its index.
#[test]
fn a_pending_range_delete_hides_what_it_covers_from_every_reader() {
    let engine = Engine::open_on(SimStorage::new(), &small_options()).unwrap();
    engine.test_pause_background();
    fill(&engine, &[5u8; 100]);
    assert_eq!(engine.count_keys(b"p/", b"p0"), PAGES as u64);
    let before = engine.index_keys_visited();
    engine
        .write(&[Mutation::delete_prefix(ROOT_GROUP, b"p/".to_vec())])
        .unwrap();
    let visited = engine.index_keys_visited() - before;
    assert!(
        visited <= (index::INLINE_REMOVAL_ENTRIES + 2 * 128) as u64,
        "a prefix delete of {PAGES} keys looked at {visited} index entries on the writer's path"
    );
    assert_eq!(
        engine.pending_range_deletes(),
        1,
        "the rest is left pending"
    );
    engine
        .write(&[Mutation::put(ROOT_GROUP, page(7), b"new".to_vec())])
        .unwrap();
    for i in [0, 1, 500, 1499, PAGES - 1] {
        assert_eq!(engine.get(&page(i)).unwrap(), None, "page {i}");
        assert!(!engine.contains(&page(i)), "page {i}");
    }
    assert_eq!(engine.get(&page(7)).unwrap(), Some(b"new".to_vec()));
    assert_eq!(engine.count_keys(b"p/", b"p0"), 1);
    assert_eq!(
        engine.scan(b"p/", None, usize::MAX).unwrap(),
        vec![(page(7), b"new".to_vec())]
    );
    assert_eq!(
        visible(&engine),
        vec![
            (b"o/before".to_vec(), b"x".to_vec()),
            (page(7), b"new".to_vec()),
            (b"q/after".to_vec(), b"y".to_vec()),
        ]
    );
    let stats = engine.stats();
    assert_eq!(engine.pending_range_deletes(), 0, "stats settle it");
    // Three puts and the range delete.
    assert_eq!(stats.index_entries, 4);
    assert_eq!(visible(&engine).len(), 3);
}

/// A power cut while a range delete is pending, and a clean close (whose checkpoint the next
/// open loads), give back exactly what readers saw before: recovery and the checkpoint build
/// the same index as the background's removal does.
#[test]
fn a_pending_range_delete_survives_a_power_cut_and_a_clean_close() {
    let storage = SimStorage::new();
    let engine = Engine::open_on(storage.clone(), &small_options()).unwrap();
    engine.test_pause_background();
    fill_delete_and_put_one_back(&engine, 6u8);
    engine.sync().unwrap();
    assert_eq!(engine.pending_range_deletes(), 1);
    let seen = visible(&engine);
    let image = storage.crash(PowerCut::DropAllUnsynced);
    let settled = engine.stats();
    let recovered = Engine::open_on(image, &small_options()).unwrap();
    recovered.test_pause_background();
    assert_eq!(visible(&recovered), seen, "after a power cut");
    let after_cut = recovered.stats();
    assert_eq!(
        (after_cut.live_bytes, after_cut.index_entries),
        (settled.live_bytes, settled.index_entries),
        "(live bytes, index entries): recovery against the settled index"
    );
    drop(recovered);
    drop(engine);

    // A clean close with the range delete pending writes a checkpoint of the settled index.
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), &small_options()).unwrap();
    engine.test_pause_background();
    fill_delete_and_put_one_back(&engine, 7u8);
    assert_eq!(engine.pending_range_deletes(), 1);
    let seen = visible(&engine);
    engine.close().unwrap();
    let path = dir.path().join(super::storage::CHECKPOINT_FILE);
    assert!(path.exists(), "the close wrote a checkpoint");
    let reopened = Engine::open(dir.path(), &small_options()).unwrap();
    assert!(
        reopened.recovery_report().segments_checkpointed > 0,
        "the open loaded it"
    );
    assert_eq!(visible(&reopened), seen, "from the checkpoint");
    let from_checkpoint = reopened.stats();
    reopened.close().unwrap();
    std::fs::remove_file(&path).unwrap();
    let scanned = Engine::open(dir.path(), &small_options()).unwrap();
    assert_eq!(visible(&scanned), seen, "by a full scan");
    let by_scan = scanned.stats();
    assert_eq!(
        (by_scan.live_bytes, by_scan.index_entries),
        (from_checkpoint.live_bytes, from_checkpoint.index_entries)
    );
}

/// A full store takes writes again as soon as a range delete of its data returned, though the
/// background has not removed what it covers: a write about to be refused for space removes
/// what pending range deletes hide first (live bytes counted it until then).
#[test]
fn a_full_store_takes_writes_once_a_pending_range_delete_returned() {
    let opts = EngineOptions {
        capacity_bytes: 16 << 20,
        ..small_options()
    };
    let engine = Engine::open_on(SimStorage::new(), &opts).unwrap();
    engine.test_pause_background();
    let value = vec![3u8; 1000];
    let mut n = 0;
    loop {
        let batch: Vec<Mutation> = (n..n + 8)
            .map(|i| Mutation::put(ROOT_GROUP, page(i), value.clone()))
            .collect();
        match engine.write(&batch) {
            Ok(_) => n += 8,
            Err(EngineError::NoSpace) => break,
            Err(e) => panic!("put {n}: {e}"),
        }
    }
    assert!(n > index::INLINE_REMOVAL_ENTRIES * 4, "{n} pages filled it");
    engine
        .write(&[Mutation::delete_prefix(ROOT_GROUP, b"p/".to_vec())])
        .unwrap();
    assert_eq!(engine.pending_range_deletes(), 1);
    for i in 0..n / 2 {
        engine
            .write(&[Mutation::put(
                ROOT_GROUP,
                format!("r/{i:06}"),
                value.clone(),
            )])
            .unwrap_or_else(|e| panic!("write {i} of {} after the delete: {e}", n / 2));
    }
    assert_eq!(engine.pending_range_deletes(), 0);
    assert_eq!(engine.count_keys(b"p/", b"p0"), 0);
}
