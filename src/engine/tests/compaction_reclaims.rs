//! Compaction (DESIGN.md 4.8): overwrites far beyond the capacity are compacted and read back
//! as last written; a copy of a batch that a power cut took back does not come back; tombstones
//! are dropped once no older put remains, and nothing deleted comes back.

use super::*;

/// Compaction keeps a store usable under overwrites many times its capacity (DESIGN.md 4.8),
/// and every value reads back as last written, also after a power cut following a sync.
#[test]
fn overwrites_far_beyond_capacity_are_compacted() {
    let storage = SimStorage::new();
    let engine = Engine::open_on(storage.clone(), &small_options()).unwrap();
    // About half the capacity live: whole segments rarely die by themselves, so only
    // compaction keeps the store writable.
    let keys = 450u64;
    let mut rng = storage::SimRng::new(5);
    let mut expected = std::collections::BTreeMap::new();
    let capacity = small_options().capacity_bytes;
    let mut written = 0u64;
    let mut step = 0u64;
    while written < 4 * capacity {
        let k = format!("key{:03}", rng.below(keys));
        let v = format!("{step:08}").repeat(8 * 1024 / 8 * (1 + rng.below(8) as usize));
        engine
            .write(&[put(&k, v.as_bytes())])
            .unwrap_or_else(|e| panic!("step {step}: {e}"));
        written += v.len() as u64;
        expected.insert(k, v);
        step += 1;
    }
    let stats = engine.stats();
    assert!(stats.compaction_bytes_written > 0, "compaction never ran");
    assert!(stats.segments_reclaimed > 100);
    for (k, v) in &expected {
        assert_eq!(
            engine.get(k.as_bytes()).unwrap().as_deref(),
            Some(v.as_bytes()),
            "{k}"
        );
    }
    engine.sync().unwrap();
    let engine =
        Engine::open_on(storage.crash(PowerCut::DropAllUnsynced), &small_options()).unwrap();
    for (k, v) in &expected {
        assert_eq!(
            engine.get(k.as_bytes()).unwrap().as_deref(),
            Some(v.as_bytes()),
            "{k}"
        );
    }
}

/// A copy of a batch that a power cut takes back must not survive it: compaction may copy a
/// record that is not durable yet, and the page cache may write the copy back without the
/// original. Recovery must drop the copy (its version is beyond the log's end) instead of
/// bringing back part of a lost batch.
#[test]
fn copy_of_a_batch_lost_in_a_power_cut_does_not_come_back() {
    let (image, _) = images::copy_of_a_lost_batch();
    let engine = Engine::open_on(image, &small_options()).unwrap();
    assert_eq!(engine.get(b"k").unwrap().as_deref(), Some(&b"durable"[..]));
}

/// Deleting frees everything in the end, tombstones included, and nothing deleted comes back
/// after a power cut (DESIGN.md 5: a tombstone may go only once no older version can return).
#[test]
fn tombstones_are_dropped_once_no_older_put_remains_and_nothing_comes_back() {
    let opts = EngineOptions {
        tombstone_prefix_lengths: vec![2],
        ..small_options()
    };
    let storage = SimStorage::new();
    let engine = Engine::open_on(storage.clone(), &opts).unwrap();
    engine.test_pause_background();
    let value = vec![4u8; 3000];
    // A put that stays on disk in a segment too full to be compacted: its tombstone must stay.
    // (One batch, so that they share a segment, which stays over 90% live.)
    let keep = vec![7u8; 34_000];
    let mut first = vec![put("zold", &value), put("zp/old", &value)];
    first.extend((0..7).map(|i| put(&format!("keep{i}"), &keep)));
    engine.write(&first).unwrap();
    let (cold_segment, _) = engine.test_segment_of(b"zold").unwrap();
    engine
        .write(&[Mutation::delete(ROOT_GROUP, b"zold".to_vec())])
        .unwrap();
    engine
        .write(&[Mutation::delete_prefix(ROOT_GROUP, b"zp".to_vec())])
        .unwrap();
    // Create/delete cycles: point deletes of some keys, prefix deletes of others.
    for cycle in 0..40 {
        for i in 0..60 {
            engine
                .write(&[put(&format!("p{}/{i:03}", cycle % 10), &value)])
                .unwrap();
            engine.write(&[put(&format!("k{i:03}"), &value)]).unwrap();
        }
        engine
            .write(&[Mutation::delete_prefix(
                ROOT_GROUP,
                format!("p{}", cycle % 10),
            )])
            .unwrap();
        for i in 0..60 {
            engine
                .write(&[Mutation::delete(
                    ROOT_GROUP,
                    format!("k{i:03}").into_bytes(),
                )])
                .unwrap();
        }
        engine.test_separate().unwrap();
        while engine.test_compact().unwrap() > 0 {}
    }
    engine.write(&[put("survivor", b"here")]).unwrap();
    for _ in 0..3 {
        engine.test_separate().unwrap();
        while engine.test_compact().unwrap() > 0 {}
    }
    let stats = engine.stats();
    assert_eq!(
        engine.test_segment_of(b"keep0").map(|(s, _)| s),
        Some(cold_segment),
        "the cold segment was compacted: the test no longer keeps an old put on disk"
    );
    assert!(
        stats.tombstones_dropped > 0,
        "no tombstone was ever dropped"
    );
    // 40 cycles wrote 14 MiB and 2,440 deletes; what remains must not grow with the cycles.
    assert!(
        stats.index_entries < 200,
        "{} index entries left (tombstones leak)",
        stats.index_entries
    );
    assert!(
        stats.live_bytes < 7 * 34_000 + (64 << 10),
        "{} live bytes left",
        stats.live_bytes
    );
    engine.sync().unwrap();
    drop(engine);
    for cut in [PowerCut::DropAllUnsynced, PowerCut::KeepAllWritten] {
        let engine = Engine::open_on(storage.crash(cut), &opts).unwrap();
        let all = engine.scan(b"", None, usize::MAX).unwrap();
        let keys: Vec<String> = all
            .iter()
            .map(|(k, _)| String::from_utf8_lossy(k).into())
            .collect();
        let mut expected: Vec<String> = (0..7).map(|i| format!("keep{i}")).collect();
        expected.push("survivor".into());
        assert_eq!(keys, expected, "deleted keys came back ({cut:?})");
    }
}
