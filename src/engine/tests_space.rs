//! Space at the edge: what delete batches may take in a full store, so that deleting always
//! makes room again.

use super::storage::SimStorage;
use super::tests::small_options;
use super::*;

fn put(key: &str, value: &[u8]) -> Mutation {
    Mutation::put(ROOT_GROUP, key.as_bytes(), value)
}

fn delete(key: &str) -> Mutation {
    Mutation::delete(ROOT_GROUP, key.as_bytes())
}

/// Delete batches leave reclamation the free segment its marker needs. Filling a full store's
/// free segments with tombstones once took the last one: the marker that frees dead segments
/// found none, so nothing could be freed and no delete written, and a remount found the same
/// store.
#[test]
fn deletes_leave_reclamation_its_segment_even_across_a_remount() {
    let storage = SimStorage::new();
    let opts = EngineOptions {
        capacity_bytes: 16 << 20,
        ..small_options()
    };
    let engine = Engine::open_on(storage.clone(), &opts).unwrap();
    // Only the writes free anything: no background reclamation between the deletes.
    engine.test_pause_background();
    // Long keys: their tombstones take about half what the puts took, more than the free
    // segments the puts left.
    let key = |i: usize| format!("{i:0>500}");
    let value = vec![9u8; 500];
    let mut written = 0;
    loop {
        match engine.write(&[put(&key(written), &value)]) {
            Ok(_) => written += 1,
            Err(EngineError::NoSpace) => break,
            Err(e) => panic!("put {written}: {e}"),
        }
    }
    let free_after_puts = engine.stats().segments_free;
    // The last keys are deleted after the remount.
    let later = 50;
    let mut refused = None;
    for i in 0..written - later {
        match engine.write(&[delete(&key(i))]) {
            Ok(_) => {}
            Err(EngineError::NoSpace) => {
                refused = Some(i);
                break;
            }
            Err(e) => panic!("delete {i}: {e}"),
        }
    }
    let free_after_deletes = engine.stats().segments_free;
    engine.sync().unwrap();
    let reclaimed = engine.test_reclaim();
    engine.close().unwrap();
    let engine = Engine::open_on(storage.clone(), &opts).unwrap();
    engine.test_pause_background();
    let reclaimed_after_remount = engine.test_reclaim();
    assert!(
        refused.is_none() && reclaimed.is_ok() && reclaimed_after_remount.is_ok(),
        "{written} puts left {free_after_puts} free segments; delete {refused:?} was refused, \
         {free_after_deletes} free segments then; reclamation: {reclaimed:?}; after a remount: \
         {reclaimed_after_remount:?}"
    );
    for i in written - later..written {
        engine
            .write(&[delete(&key(i))])
            .unwrap_or_else(|e| panic!("delete {i} after the remount: {e}"));
    }
    engine.sync().unwrap();
    engine.test_reclaim().unwrap();
    for i in (0..written).step_by(97) {
        assert_eq!(engine.get(key(i).as_bytes()).unwrap(), None, "{i}");
    }
    engine
        .write(&[put("fits again", &vec![1u8; 100 << 10])])
        .unwrap();
}
