//! Space at the edge: a full store refuses writes with `NoSpace` at the same point every time
//! and deletes make room; a full host disk gives a clean `NoSpace`; the reserve is kept for
//! what frees space (markers and deletes take no user segment); batches are sized with every
//! byte they write.

use super::*;

/// Writes are refused at the capacity, and at the same point every time: the store is filled
/// until `NoSpace`, half of it deleted (every other key, so that compaction must empty
/// half-live segments to make room), refilled, and so on. Each refusal must come from the
/// capacity rule (live bytes plus the refused put would pass `usable_capacity_bytes`), not
/// from a shortage of segments: live bytes at the refusal lie within one record of the
/// capacity, so every round refuses within one record of every other. Values of 60 KiB pack
/// four to a 256 KiB segment (96% full, above the 7/8 the capacity assumes), so packing never
/// decides before the capacity does. The tolerance holds the previous rounds' tombstones
/// too: they count as live bytes until dropped, and the refusal is decided on live bytes.
#[test]
fn full_store_gives_no_space_and_deletes_make_room() {
    let opts = EngineOptions {
        capacity_bytes: 16 << 20,
        ..small_options()
    };
    let engine = Engine::open_on(SimStorage::new(), &opts).unwrap();
    let value = vec![3u8; 60 << 10];
    let mut live_keys: Vec<String> = Vec::new();
    let mut next = 0u64;
    for round in 0..6 {
        let refused_record = loop {
            let key = format!("f{next:05}");
            let batch = [put(&key, &value)];
            match engine.write(&batch) {
                Ok(_) => {
                    live_keys.push(key);
                    next += 1;
                }
                Err(EngineError::NoSpace) => break batch[0].encoded_len() as u64,
                Err(e) => panic!("unexpected {e}"),
            }
            assert!(next < 100_000, "never filled");
        };
        let stats = engine.stats();
        let capacity = stats.usable_capacity_bytes;
        assert!(
            stats.live_bytes <= capacity,
            "round {round}: {} live bytes above the capacity of {capacity}",
            stats.live_bytes
        );
        assert!(
            capacity - stats.live_bytes < refused_record,
            "round {round}: refused at {} live bytes, {} below the capacity of {capacity}: more \
             than the {refused_record} bytes of the refused record ({} keys live, {} segments \
             free of {})",
            stats.live_bytes,
            capacity - stats.live_bytes,
            live_keys.len(),
            stats.segments_free,
            stats.segments_total
        );
        let mut kept = Vec::new();
        for (i, key) in live_keys.drain(..).enumerate() {
            if i % 2 == 0 {
                kept.push(key);
            } else {
                engine
                    .write(&[Mutation::delete(ROOT_GROUP, key.into_bytes())])
                    .unwrap();
            }
        }
        live_keys = kept;
        engine.sync().unwrap();
        engine.test_reclaim().unwrap();
    }
    for key in &live_keys {
        assert_eq!(engine.get(key.as_bytes()).unwrap().unwrap(), value, "{key}");
    }
}

#[test]
fn host_disk_full_at_allocation_is_a_clean_no_space() {
    let storage = SimStorage::new();
    let engine = Engine::open_on(storage.clone(), &small_options()).unwrap();
    engine.write(&[put("a", b"1")]).unwrap();
    storage.set_faults(storage::FaultPlan {
        fail_allocate: true,
        ..Default::default()
    });
    let value = vec![0u8; 100 << 10];
    let mut result = Ok(0);
    for i in 0..200 {
        result = engine.write(&[put(&format!("k{i}"), &value)]);
        if result.is_err() {
            break;
        }
    }
    assert!(matches!(result, Err(EngineError::NoSpace)), "{result:?}");
    assert_eq!(engine.get(b"a").unwrap().as_deref(), Some(&b"1"[..]));
    // The host is still full: deleting must work all the same (the reserve lies in segment
    // files already allocated), and free the space it promises.
    for i in 0..20 {
        engine
            .write(&[Mutation::delete(ROOT_GROUP, format!("k{i}").into_bytes())])
            .unwrap_or_else(|e| panic!("delete {i} on a full host disk: {e}"));
    }
    engine.sync().unwrap();
    engine.test_reclaim().unwrap();
    engine.write(&[put("fits again", &value)]).unwrap();
    storage.set_faults(storage::FaultPlan::default());
    engine.write(&[put("after", b"ok")]).unwrap();
}

/// A store whose first segment file is allocated while the host has no room for a second,
/// filled with 60 KiB puts "k0", "k1", ... until the store refuses one with `NoSpace` (any
/// other error fails the test): the engine, the value, and how many puts were taken.
fn fill_a_full_host() -> (Engine, Vec<u8>, usize) {
    let storage = SimStorage::new();
    let engine = Engine::open_on(storage.clone(), &small_options()).unwrap();
    engine.write(&[put("first", b"1")]).unwrap();
    storage.set_faults(storage::FaultPlan {
        fail_allocate: true,
        ..Default::default()
    });
    let value = vec![7u8; 60 << 10];
    let mut written = 0;
    loop {
        match engine.write(&[put(&format!("k{written}"), &value)]) {
            Ok(_) => written += 1,
            Err(EngineError::NoSpace) => break,
            Err(e) => panic!("write {written}: {e}"),
        }
    }
    (engine, value, written)
}

/// On a full host disk, the marker a sync writes to prove closed log segments synced
/// (`synctable.rs`) never opens a segment from the reserve: each one did, every time a log
/// segment closed while users could not take a segment, until no delete could be written
/// (`scripts/limits.sh`, "hostfull: after deleting, writes succeed again", failed so).
#[test]
fn proof_markers_never_take_the_reserve_on_a_full_host() {
    let (engine, value, written) = fill_a_full_host();
    assert!(written > 10, "the store filled after {written} writes");
    // The write that found no room closed the log's segment: the next sync proves it synced.
    let free_before = engine.inner.segments.free_count();
    for round in 0..5 {
        let refused = engine.write(&[put("more", &value)]);
        assert!(
            matches!(refused, Err(EngineError::NoSpace)),
            "round {round}: {refused:?}"
        );
        engine.sync().unwrap();
    }
    assert_eq!(
        engine.inner.segments.free_count(),
        free_before,
        "a proof marker took a free segment while users could not"
    );
    // The reserve is whole: deletes go through, and free what they promise.
    for i in 0..written {
        engine
            .write(&[Mutation::delete(ROOT_GROUP, format!("k{i}").into_bytes())])
            .unwrap_or_else(|e| panic!("delete {i} on a full host disk: {e}"));
    }
    engine.sync().unwrap();
    engine.test_reclaim().unwrap();
    engine.write(&[put("fits again", &value)]).unwrap();
}

/// On a full host disk, a segment that a delete opened from the reserve takes no user batch:
/// users could not take a segment themselves, though the store counts free segments in files
/// the host has no room for (`SegmentManager::user_may_allocate` tries the allocation).
#[test]
fn a_reserve_segment_opened_by_a_delete_takes_no_user_batch_on_a_full_host() {
    let (engine, value, _) = fill_a_full_host();
    // The log's segment is full and closed: the delete opens one from the reserve.
    engine
        .write(&[Mutation::delete(ROOT_GROUP, b"k0".to_vec())])
        .unwrap();
    let refused = engine.write(&[put("more", &value)]);
    assert!(
        matches!(refused, Err(EngineError::NoSpace)),
        "a user batch went into the reserve: {refused:?}"
    );
}

/// Deleting must always be possible, even when user writes have taken every segment they may.
#[test]
fn deletes_succeed_in_a_full_store() {
    let engine = Engine::open_on(SimStorage::new(), &small_options()).unwrap();
    let page = vec![5u8; 4096];
    let mut n = 0;
    'fill: loop {
        for size in [60, 4] {
            let batch: Vec<Mutation> = (0..size)
                .map(|i| put(&format!("C{n:06}{i:03}"), &page))
                .collect();
            match engine.write(&batch) {
                Ok(_) => n += 1,
                Err(EngineError::NoSpace) => break 'fill,
                Err(e) => panic!("{e}"),
            }
        }
    }
    engine
        .write(&[Mutation::delete_prefix(ROOT_GROUP, b"C".to_vec())])
        .unwrap();
    engine.sync().unwrap();
    engine.test_reclaim().unwrap();
    engine.write(&[put("after", &page)]).unwrap();
}

/// A prefix delete's record carries the prefix's successor as its range end: batch sizing
/// counts it (and its record directory entry). A batch of long prefix deletes that passed
/// validation without it could fit no buffer, and the log retired segment after segment for
/// it (a livelock in release builds, a panic in debug ones).
#[test]
fn batches_of_long_prefix_deletes_are_sized_with_their_range_ends() {
    let storage = SimStorage::new();
    let engine = Engine::open_on(storage.clone(), &small_options()).unwrap();
    let deletes = |n: usize| -> Vec<Mutation> {
        (0..n)
            .map(|i| {
                let mut prefix = vec![b'p'; MAX_KEY_LEN];
                prefix[..8].copy_from_slice(&(i as u64).to_be_bytes());
                Mutation::delete_prefix(ROOT_GROUP, prefix)
            })
            .collect()
    };
    // 2 x 1,048 bytes each with the directory: 100 fit a write buffer, 200 do not.
    engine.write(&deletes(100)).unwrap();
    assert!(matches!(
        engine.write(&deletes(200)),
        Err(EngineError::Limit(_))
    ));
    engine.write(&[put("after", b"a")]).unwrap();
    engine.sync().unwrap();
    drop(engine);
    let engine =
        Engine::open_on(storage.crash(PowerCut::DropAllUnsynced), &small_options()).unwrap();
    assert_eq!(engine.get(b"after").unwrap().as_deref(), Some(&b"a"[..]));
}
