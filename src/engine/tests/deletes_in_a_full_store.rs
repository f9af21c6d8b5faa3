//! Proves that deleting always makes room in a full store: delete batches leave reclamation
//! the free segment its marker needs (even across a remount), and a put beside a delete gets
//! no space beyond the capacity (only batches that add no live data may take the reserve).

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

/// A batch that deletes skips the capacity check only if it adds no live data. Any batch
/// holding a delete once did (up to 16 KiB): a write that also drops the file's
/// `security.capability` went past a full store's limit into the reserve that deletes need.
#[test]
fn a_put_beside_a_delete_gets_no_space_in_a_full_store() {
    let opts = EngineOptions {
        capacity_bytes: 16 << 20,
        ..small_options()
    };
    let engine = Engine::open_on(SimStorage::new(), &opts).unwrap();
    engine.test_pause_background();
    for i in 0..200 {
        engine
            .write(&[put(&format!("x{i:03}"), b"capability")])
            .unwrap();
    }
    let page = vec![4u8; 4096];
    let mut pages = 0;
    loop {
        match engine.write(&[put(&format!("p{pages:05}"), &page)]) {
            Ok(_) => pages += 1,
            Err(EngineError::NoSpace) => break,
            Err(e) => panic!("put {pages}: {e}"),
        }
    }
    let before = engine.stats();
    let mut taken = 0;
    for i in 0..200 {
        match engine.write(&[
            put(&format!("new{i:03}"), &page),
            delete(&format!("x{i:03}")),
        ]) {
            Ok(_) => taken += 1,
            Err(EngineError::NoSpace) => {}
            Err(e) => panic!("batch {i}: {e}"),
        }
    }
    let after = engine.stats();
    assert_eq!(
        taken,
        0,
        "{taken} batches of a new page and a delete were taken by a full store: live bytes \
         {} -> {} (capacity {}), free segments {} -> {} ({} reserved)",
        before.live_bytes,
        after.live_bytes,
        before.usable_capacity_bytes,
        before.segments_free,
        after.segments_free,
        engine.inner.segments.reserved
    );
    // What adds nothing still goes through: a pure delete, and a rewrite of a page no larger
    // (a truncation's shortened last page) beside a delete.
    engine.write(&[delete("x000")]).unwrap();
    engine
        .write(&[put("p00000", &page[..100]), delete("x001")])
        .unwrap();
    engine
        .write(&[
            put("p00001", &page),
            Mutation::DeleteRange {
                group: ROOT_GROUP,
                start: b"p00002".to_vec(),
                end: b"p00004".to_vec(),
            },
        ])
        .unwrap();
}
