//! The engine as a user sees it in ordinary use: writes, reads, deletes and a reopen; key
//! listings from the index alone; limits refused with clear errors; an I/O error or a failed
//! sync latching the store; the flush interval making writes durable without a sync; nothing
//! waiting on a flusher that stopped.

use super::*;

#[test]
fn write_read_delete_and_reopen() {
    let storage = SimStorage::new();
    let engine = Engine::open_on(storage.clone(), &small_options()).unwrap();
    engine.write(&[put("a", b"1"), put("b", b"2")]).unwrap();
    engine
        .write(&[Mutation::delete(ROOT_GROUP, b"a".to_vec())])
        .unwrap();
    assert_eq!(engine.get(b"a").unwrap(), None);
    assert_eq!(engine.get(b"b").unwrap().as_deref(), Some(&b"2"[..]));
    engine.sync().unwrap();
    drop(engine);
    let engine =
        Engine::open_on(storage.crash(PowerCut::DropAllUnsynced), &small_options()).unwrap();
    assert_eq!(
        engine.get(b"a").unwrap(),
        None,
        "a synced delete stays deleted"
    );
    assert_eq!(engine.get(b"b").unwrap().as_deref(), Some(&b"2"[..]));
}

/// `Engine::keys` lists the keys that exist in a range, as reads see them (deletes, range
/// deletes and later puts applied), from the index alone, looking only at the keys there.
#[test]
fn keys_lists_existing_keys_in_a_range_from_the_index_alone() {
    let storage = SimStorage::new();
    let engine = Engine::open_on(storage, &small_options()).unwrap();
    let key = |i: u32| format!("p{i:04}").into_bytes();
    let batch: Vec<Mutation> = (0..200)
        .map(|i| Mutation::put(ROOT_GROUP, key(i), vec![i as u8; 64]))
        .collect();
    engine.write(&batch).unwrap();
    engine.write(&[put("q", b"next prefix")]).unwrap();
    engine
        .write(&[
            Mutation::delete(ROOT_GROUP, key(5)),
            Mutation::DeleteRange {
                group: ROOT_GROUP,
                start: key(100),
                end: key(150),
            },
            // After the range delete in its batch: it stays.
            Mutation::put(ROOT_GROUP, key(120), b"again".to_vec()),
        ])
        .unwrap();
    let want = |range: std::ops::Range<u32>| -> Vec<Vec<u8>> {
        range
            .filter(|&i| i == 120 || (i != 5 && !(100..150).contains(&i)))
            .map(key)
            .collect()
    };
    assert_eq!(engine.keys(&key(0), &key(10), 100), want(0..10));
    assert_eq!(engine.keys(&key(0), &key(10), 3), want(0..3));
    assert_eq!(engine.keys(&key(4), &key(7), 1), vec![key(4)]);
    assert_eq!(
        engine.keys(&key(5), &key(7), 1),
        vec![key(6)],
        "a deleted key is not listed"
    );
    assert_eq!(engine.keys(&key(99), &key(160), 100), want(99..160));
    assert!(
        engine.keys(&key(121), &key(150), 10).is_empty(),
        "nothing is left of the range delete's keys but the later put"
    );
    assert_eq!(
        engine.keys(&key(195), b"", 100),
        vec![
            key(195),
            key(196),
            key(197),
            key(198),
            key(199),
            b"q".to_vec()
        ],
        "an empty end is unbounded"
    );
    assert!(engine.keys(&key(10), &key(10), 10).is_empty());
    assert!(engine.keys(&key(0), &key(200), 0).is_empty());
    // Only the keys there are looked at, however far the range reaches.
    let before = engine.index_keys_visited();
    assert_eq!(engine.keys(&key(150), b"", 1), vec![key(150)]);
    assert!(engine.index_keys_visited() - before <= 2);
}

#[test]
fn limits_give_clear_errors() {
    let engine = Engine::open_on(SimStorage::new(), &small_options()).unwrap();
    let long_key = vec![b'k'; MAX_KEY_LEN + 1];
    let err = engine
        .write(&[Mutation::put(0, long_key, b"v".to_vec())])
        .unwrap_err();
    assert!(
        matches!(err, EngineError::Limit(ref s) if s.contains("key")),
        "{err}"
    );
    let err = engine
        .write(&[put("k", &vec![0; MAX_VALUE_LEN + 1])])
        .unwrap_err();
    assert!(
        matches!(err, EngineError::Limit(ref s) if s.contains("value")),
        "{err}"
    );
    let too_big: Vec<Mutation> = (0..3)
        .map(|i| put(&format!("k{i}"), &vec![0; MAX_VALUE_LEN]))
        .collect();
    let err = engine.write(&too_big).unwrap_err();
    assert!(
        matches!(err, EngineError::Limit(ref s) if s.contains("write buffer")),
        "{err}"
    );
    assert!(matches!(
        engine.write(&[]).unwrap_err(),
        EngineError::Limit(_)
    ));
}

#[test]
fn io_error_latches_engine_read_only() {
    let storage = SimStorage::new();
    let engine = Engine::open_on(storage.clone(), &small_options()).unwrap();
    engine.write(&[put("a", b"1")]).unwrap();
    storage.set_faults(storage::FaultPlan {
        fail_writes_after: Some(0),
        ..Default::default()
    });
    // Write-behind: the write may return before its buffer is written; then the sync fails.
    let failed_now = engine.write(&[put("b", b"2")]).is_err();
    assert!(failed_now || engine.sync().is_err());
    storage.set_faults(storage::FaultPlan::default());
    let err = engine.write(&[put("c", b"3")]).unwrap_err();
    assert!(
        matches!(err, EngineError::Failed(_)),
        "writes after an I/O error fail: {err}"
    );
    assert_eq!(
        engine.get(b"a").unwrap().as_deref(),
        Some(&b"1"[..]),
        "reads still work"
    );
}

#[test]
fn failed_sync_latches_too() {
    let storage = SimStorage::new();
    let engine = Engine::open_on(storage.clone(), &small_options()).unwrap();
    engine.write(&[put("a", b"1")]).unwrap();
    storage.set_faults(storage::FaultPlan {
        fail_syncs_after: Some(0),
        ..Default::default()
    });
    assert!(engine.sync().is_err());
    storage.set_faults(storage::FaultPlan::default());
    assert!(matches!(
        engine.write(&[put("b", b"2")]).unwrap_err(),
        EngineError::Failed(_)
    ));
}

/// Durability contract: written data is durable at the latest after the flush interval, without
/// any explicit sync.
#[test]
fn flush_interval_makes_writes_durable_without_sync() {
    let storage = SimStorage::new();
    let opts = EngineOptions {
        sync_interval: Some(Duration::from_millis(200)),
        ..small_options()
    };
    let engine = Engine::open_on(storage.clone(), &opts).unwrap();
    engine
        .write(&[put("k", b"durable by the interval")])
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while engine.stats().durable_lsn < engine.stats().last_lsn {
        assert!(
            std::time::Instant::now() < deadline,
            "the background sync never ran"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let engine =
        Engine::open_on(storage.crash(PowerCut::DropAllUnsynced), &small_options()).unwrap();
    assert_eq!(
        engine.get(b"k").unwrap().as_deref(),
        Some(&b"durable by the interval"[..])
    );
}

/// Once the flusher has exited, nothing waits for it: appends and markers give up with
/// `Closed`. (A background pass that asked for a marker after the flusher stopped once hung
/// the engine's drop forever.)
#[test]
fn nothing_waits_for_a_stopped_flusher() {
    let mut engine = Engine::open_on(SimStorage::new(), &small_options()).unwrap();
    engine.write(&[put("a", b"1")]).unwrap();
    let flusher = engine.threads.pop().unwrap();
    engine.inner.log.stop();
    flusher.join().unwrap();
    let inner = engine.inner.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let marker = inner.log.flush_marker();
        let write = inner.write(&[put("b", b"2")], 0);
        let _ = tx.send((marker, write));
    });
    let (marker, write) = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("a marker or a write waited forever for a stopped flusher");
    assert!(matches!(marker, Err(EngineError::Closed)), "{marker:?}");
    assert!(matches!(write, Err(EngineError::Closed)), "{write:?}");
    assert_eq!(engine.get(b"a").unwrap().as_deref(), Some(&b"1"[..]));
}
