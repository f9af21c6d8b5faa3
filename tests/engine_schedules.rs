//! The engine's own threads (writers, the flusher, the background loop) under a scheduler.
//!
//! Built only with the `shuttle` feature (`cargo test --release --features shuttle --test
//! engine_schedules`), which makes every lock, atomic, wait and clock reading of the engine a
//! point where the `shuttle` scheduler chooses which thread runs next
//! (`src/engine/concurrency.rs`). Each test runs its scenario under many random schedules; a
//! failing one prints a schedule that `shuttle::replay` runs again exactly.
//!
//! `LOGSTOR_SCHEDULES` sets how many schedules each test explores (CI's default below).

use std::collections::BTreeMap;
use std::sync::Arc;

use logstorfs::engine::storage::{PowerCut, SimStorage};
use logstorfs::engine::{Engine, EngineOptions, Mutation, ROOT_GROUP};
use shuttle::sync::Mutex;
use shuttle::sync::atomic::Ordering;

fn schedules(default: usize) -> usize {
    std::env::var("LOGSTOR_SCHEDULES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// A small store: few segments, so that passes and allocation come into play quickly.
fn small_store() -> EngineOptions {
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

fn key(writer: u64, i: u64) -> Vec<u8> {
    format!("w{writer}-{i:03}").into_bytes()
}

fn value(writer: u64, i: u64) -> Vec<u8> {
    let mut v = format!("writer {writer} step {i};").into_bytes();
    v.resize(700 + (i as usize % 5) * 300, b'a' + (i % 26) as u8);
    v
}

/// Key `k{i}`, for the tests of large records.
fn name(i: u64) -> Vec<u8> {
    format!("k{i}").into_bytes()
}

/// A 40 KiB value written by `tag` at step `i` (six fill a segment of the small store).
fn big(tag: u64, i: u64) -> Vec<u8> {
    let mut v = value(tag, i);
    v.resize(40 << 10, b'0' + tag as u8);
    v
}

/// Puts `big(tag, i)` under `name(i)` for every `i` of `keys`, one batch each.
fn put_big(engine: &Engine, tag: u64, keys: std::ops::Range<u64>) {
    for i in keys {
        engine
            .write(&[Mutation::put(ROOT_GROUP, name(i), big(tag, i))])
            .unwrap();
    }
}

/// Writers each put a few keys and sync after each; whatever the schedule, every put whose
/// sync returned is there after a power cut that keeps only what was synced. Several syncs run
/// at once here (each writer's, and the flusher's writes between them): a sync that returns
/// while a write it should cover has not been made durable loses a confirmed put.
#[test]
fn a_returned_sync_covers_every_earlier_write_whatever_the_schedule() {
    shuttle::check_random(
        || {
            let storage = SimStorage::new();
            let engine = Arc::new(Engine::open_on(storage.clone(), &small_store()).unwrap());
            let confirmed = Arc::new(Mutex::new(BTreeMap::new()));
            let writers: Vec<_> = (0..3u64)
                .map(|w| {
                    let engine = engine.clone();
                    let confirmed = confirmed.clone();
                    shuttle::thread::spawn(move || {
                        for i in 0..3 {
                            let (k, v) = (key(w, i), value(w, i));
                            engine
                                .write(&[Mutation::put(ROOT_GROUP, k.clone(), v.clone())])
                                .unwrap();
                            engine.sync().unwrap();
                            confirmed.lock().unwrap().insert(k, v);
                        }
                    })
                })
                .collect();
            for w in writers {
                w.join().unwrap();
            }
            let image = storage.crash(PowerCut::DropAllUnsynced);
            Arc::try_unwrap(engine).ok().unwrap().close().unwrap();
            let engine = Engine::open_on(image, &small_store()).unwrap();
            for (k, v) in confirmed.lock().unwrap().iter() {
                assert_eq!(
                    engine.get(k).unwrap().as_ref(),
                    Some(v),
                    "{} was confirmed by a sync and lost in the power cut",
                    String::from_utf8_lossy(k)
                );
            }
            engine.close().unwrap();
        },
        schedules(1000),
    );
}

/// A put and a prefix delete covering its key, from two writers at once, often land in the
/// same write buffer, where their index updates may come in either order. Whatever the
/// schedule, the index must agree with LSN order (a prefix delete with the higher LSN hides
/// the put; one with the lower does not), and with what recovery rebuilds from the same
/// records after a clean close.
///
/// The hard order (the put first in the buffer, the delete applied to the index before the
/// put) needs the delete's whole write to run between two steps of the put's: left to chance,
/// about one schedule in 200 had it. So every other round stalls each put just before its
/// index update, and the other rounds leave the schedule free.
#[test]
fn a_put_and_a_prefix_delete_of_one_buffer_resolve_by_lsn_whatever_the_schedule() {
    shuttle::check_random(
        || {
            let storage = SimStorage::new();
            let engine = Arc::new(Engine::open_on(storage.clone(), &small_store()).unwrap());
            // Several rounds per schedule, each on a prefix of its own: more chances for the
            // two writers to share a buffer in the racing order.
            let mut expected = BTreeMap::new();
            for round in 0..6u32 {
                engine.test_stall_put_index_updates(if round % 2 == 1 { 50 } else { 0 });
                let prefix = format!("p{round}/").into_bytes();
                let key = |name: &str| [prefix.as_slice(), name.as_bytes()].concat();
                let old = Mutation::put(ROOT_GROUP, key("old"), b"written first".to_vec());
                engine.write(&[old]).unwrap();
                let put = {
                    let (engine, k) = (engine.clone(), key("new"));
                    shuttle::thread::spawn(move || {
                        engine
                            .write(&[Mutation::put(ROOT_GROUP, k, b"racing".to_vec())])
                            .unwrap()
                    })
                };
                let delete = {
                    let (engine, prefix) = (engine.clone(), prefix.clone());
                    shuttle::thread::spawn(move || {
                        engine
                            .write(&[Mutation::delete_prefix(ROOT_GROUP, prefix)])
                            .unwrap()
                    })
                };
                let (put_lsn, delete_lsn) = (put.join().unwrap(), delete.join().unwrap());
                let survives = (put_lsn > delete_lsn).then(|| b"racing".to_vec());
                assert_eq!(
                    engine.get(&key("new")).unwrap(),
                    survives,
                    "round {round}: put at LSN {put_lsn}, prefix delete at LSN {delete_lsn}"
                );
                assert_eq!(engine.get(&key("old")).unwrap(), None);
                expected.insert(key("new"), survives);
            }
            let live = engine.stats().live_bytes;
            Arc::try_unwrap(engine).ok().unwrap().close().unwrap();
            let engine =
                Engine::open_on(storage.crash(PowerCut::DropAllUnsynced), &small_store()).unwrap();
            for (k, v) in &expected {
                assert_eq!(&engine.get(k).unwrap(), v, "after a reopen");
            }
            assert_eq!(
                engine.stats().live_bytes,
                live,
                "live bytes counted before the close and rebuilt at the reopen differ"
            );
            engine.close().unwrap();
        },
        schedules(1000),
    );
}

/// A prefix delete of a few hundred keys leaves most of them pending (tiny removal steps
/// here), for the background to remove a leaf at a time. A put to a covered key with a newer
/// LSN (after the delete returned, or racing it from another writer) must stay visible
/// whatever the removal steps and the readers do meanwhile, and after the removal, a clean close
/// and a reopen; every older key stays hidden throughout.
#[test]
fn a_newer_put_under_a_pending_range_delete_survives_its_background_removal_whatever_the_schedule()
{
    shuttle::check_random(
        || {
            let storage = SimStorage::new();
            let engine = Arc::new(Engine::open_on(storage.clone(), &small_store()).unwrap());
            engine.test_set_removal_steps(0, 1);
            let page = |i: u32| format!("p/{i:03}").into_bytes();
            for first in (0..300u32).step_by(50) {
                let batch: Vec<Mutation> = (first..first + 50)
                    .map(|i| Mutation::put(ROOT_GROUP, page(i), b"old".to_vec()))
                    .collect();
                engine.write(&batch).unwrap();
            }
            let put_done = Arc::new(shuttle::sync::atomic::AtomicBool::new(false));
            let deleter = {
                let (engine, put_done) = (engine.clone(), put_done.clone());
                shuttle::thread::spawn(move || {
                    let lsn = engine
                        .write(&[Mutation::delete_prefix(ROOT_GROUP, b"p/".to_vec())])
                        .unwrap();
                    engine
                        .write(&[Mutation::put(ROOT_GROUP, page(250), b"after".to_vec())])
                        .unwrap();
                    put_done.store(true, Ordering::SeqCst);
                    lsn
                })
            };
            let racer = {
                let engine = engine.clone();
                shuttle::thread::spawn(move || {
                    engine
                        .write(&[Mutation::put(ROOT_GROUP, page(200), b"racing".to_vec())])
                        .unwrap()
                })
            };
            let reader = {
                let (engine, put_done) = (engine.clone(), put_done.clone());
                shuttle::thread::spawn(move || {
                    for _ in 0..50 {
                        if put_done.load(Ordering::SeqCst) {
                            assert_eq!(
                                engine.get(&page(250)).unwrap(),
                                Some(b"after".to_vec()),
                                "a put after the prefix delete, while it is removed"
                            );
                            assert_eq!(engine.get(&page(260)).unwrap(), None);
                        }
                        shuttle::thread::yield_now();
                    }
                })
            };
            let delete_lsn = deleter.join().unwrap();
            let racer_lsn = racer.join().unwrap();
            reader.join().unwrap();
            let racing = (racer_lsn > delete_lsn).then(|| b"racing".to_vec());
            let check = |engine: &Engine, when: &str| {
                assert_eq!(
                    engine.get(&page(250)).unwrap(),
                    Some(b"after".to_vec()),
                    "{when}"
                );
                assert_eq!(
                    engine.get(&page(200)).unwrap(),
                    racing,
                    "{when}: put at LSN {racer_lsn}, prefix delete at LSN {delete_lsn}"
                );
                let left = engine.scan(b"p/", None, usize::MAX).unwrap();
                assert_eq!(left.len(), 1 + usize::from(racing.is_some()), "{when}");
            };
            check(&engine, "before the removal ends");
            let live = engine.stats().live_bytes;
            assert_eq!(engine.pending_range_deletes(), 0);
            check(&engine, "after the removal");
            Arc::try_unwrap(engine).ok().unwrap().close().unwrap();
            let engine =
                Engine::open_on(storage.crash(PowerCut::DropAllUnsynced), &small_store()).unwrap();
            check(&engine, "after a reopen");
            assert_eq!(
                engine.stats().live_bytes,
                live,
                "live bytes rebuilt at the reopen"
            );
            engine.close().unwrap();
        },
        schedules(300),
    );
}

/// A reader reads a key again and again while another thread makes its segment nearly empty,
/// has the separator and compaction move it, frees the segments it left and writes new data
/// that takes them again. Whatever the schedule, every read returns the key's value: a read
/// pins what it looked up, and the reclaimer waits out such reads before freeing (a record
/// that moved is never reported damaged).
#[test]
fn reads_of_a_key_that_compaction_keeps_moving_never_fail_whatever_the_schedule() {
    shuttle::check_random(
        || {
            let storage = SimStorage::new();
            let engine = Arc::new(Engine::open_on(storage.clone(), &small_store()).unwrap());
            let filler = |round: u64, i: u64| {
                let mut v = value(round, i);
                v.resize(40 << 10, b'0' + round as u8);
                Mutation::put(ROOT_GROUP, format!("f{i}").into_bytes(), v)
            };
            let moved = value(9, 0);
            engine
                .write(&[Mutation::put(ROOT_GROUP, b"moved".to_vec(), moved.clone())])
                .unwrap();
            let first_place = engine.test_location_of(b"moved");
            engine.test_stall_reads_after_lookup(1000);
            let done = Arc::new(shuttle::sync::atomic::AtomicBool::new(false));
            let reader = {
                let engine = engine.clone();
                let done = done.clone();
                shuttle::thread::spawn(move || {
                    let mut read = 0;
                    while !done.load(Ordering::SeqCst) {
                        match engine.get(b"moved") {
                            Ok(Some(v)) if v == moved => {}
                            other => panic!("read {read} of a key being moved gave {other:?}"),
                        }
                        read += 1;
                    }
                })
            };
            for round in 0..3u64 {
                // Enough to fill the active segment and close the one holding the key, whose
                // other records then die: the separator and compaction move the key on.
                for i in 0..8 {
                    engine.write(&[filler(round, i)]).unwrap();
                }
                engine.test_separate().unwrap();
                engine.test_compact().unwrap();
            }
            done.store(true, Ordering::SeqCst);
            reader.join().unwrap();
            assert_ne!(
                engine.test_location_of(b"moved"),
                first_place,
                "the key never moved"
            );
            assert!(
                engine.stats().segments_reclaimed > 0,
                "no segment was freed"
            );
            Arc::try_unwrap(engine).ok().unwrap().close().unwrap();
        },
        schedules(300),
    );
}

/// A compaction pass lists a victim, checks that it is still the segment it listed, and reads
/// and copies its live records, while another thread overwrites the victim's last live
/// records, has the reclaimer free it, and writes more. Whatever the schedule, every key keeps
/// its newest value, before and after a power cut.
///
/// The pass holds the reclaim lock from its check to its last copy. Without the lock this test
/// still passes: a victim freed under the pass reads as zeros (nothing to copy), and one the
/// log took again holds only valid, indexed records. The harm the lock prevents needs a record
/// rewritten at the very place of one the pass read (locations carry no generation), which
/// random schedules do not reach; `copies_and_close::a_victim_is_never_freed_and_reused_while_
/// its_pass_copies_it` builds that case step by step.
#[test]
fn a_victim_freed_and_reused_during_its_pass_is_never_copied_whatever_the_schedule() {
    shuttle::check_random(
        || {
            let storage = SimStorage::new();
            let engine = Arc::new(Engine::open_on(storage.clone(), &small_store()).unwrap());
            engine.test_pause_background();
            // Eight 40 KiB records fill the first segment and close it; half of them are then
            // overwritten, which leaves it a victim at about half live.
            put_big(&engine, 1, 0..8);
            put_big(&engine, 2, 0..4);
            engine.sync().unwrap();
            let compactor = {
                let engine = engine.clone();
                shuttle::thread::spawn(move || {
                    engine.test_compact().unwrap();
                })
            };
            // The victim's other half dies, it is freed, and new writes take free segments.
            put_big(&engine, 3, 4..8);
            engine.sync().unwrap();
            engine.test_reclaim().unwrap();
            put_big(&engine, 4, 8..20);
            engine.sync().unwrap();
            compactor.join().unwrap();
            let newest = |i: u64| match i {
                0..4 => big(2, i),
                4..8 => big(3, i),
                _ => big(4, i),
            };
            for i in 0..20 {
                assert_eq!(engine.get(&name(i)).unwrap(), Some(newest(i)), "k{i}");
            }
            Arc::try_unwrap(engine).ok().unwrap().close().unwrap();
            let crashed = storage.crash(PowerCut::DropAllUnsynced);
            let engine = Engine::open_on(crashed, &small_store()).unwrap();
            for i in 0..20 {
                assert_eq!(
                    engine.get(&name(i)).unwrap(),
                    Some(newest(i)),
                    "k{i} after a power cut"
                );
            }
            engine.close().unwrap();
        },
        schedules(300),
    );
}

/// A summaries write-out (the background loop's) and a free of a dead segment (the reclaimer's,
/// which a writer short of free segments runs on its own thread) both take the segment table's
/// lock and the lock of the summaries being built. Taken in opposite orders, some schedule
/// holds one in each thread and waits forever for the other (the scheduler stops it at its
/// step bound).
#[test]
fn a_summaries_write_out_and_a_segment_free_never_wait_for_each_other() {
    shuttle::check_random(
        || {
            let storage = SimStorage::new();
            let engine = Arc::new(Engine::open_on(storage.clone(), &small_store()).unwrap());
            engine.test_pause_background();
            // Large records (their segments' summaries are worth keeping) close a few segments;
            // the first six are then overwritten, which leaves the first segment dead.
            put_big(&engine, 1, 0..20);
            put_big(&engine, 2, 0..6);
            engine.sync().unwrap();
            // The write-out starts once the reclaimer is about to free, so that the two meet.
            let freeing = Arc::new(shuttle::sync::atomic::AtomicBool::new(false));
            engine.test_set_step_hook(Some(Box::new({
                let freeing = freeing.clone();
                move |step| {
                    if step == "reclaim: a first block zeroed" {
                        freeing.store(true, Ordering::SeqCst);
                    }
                }
            })));
            let writer_out = {
                let engine = engine.clone();
                shuttle::thread::spawn(move || {
                    while !freeing.load(Ordering::SeqCst) {
                        shuttle::thread::yield_now();
                    }
                    engine.test_write_out_summaries().unwrap()
                })
            };
            let freed = engine.test_reclaim().unwrap();
            engine.test_set_step_hook(None);
            let written = writer_out.join().unwrap();
            assert!(freed > 0, "no dead segment was freed");
            assert!(written > 0, "no summary was written out");
            for i in 0..20 {
                let want = if i < 6 { big(2, i) } else { big(1, i) };
                assert_eq!(engine.get(&name(i)).unwrap(), Some(want), "k{i}");
            }
            Arc::try_unwrap(engine).ok().unwrap().close().unwrap();
        },
        schedules(300),
    );
}

/// A segment allocation (on a real disk: `fallocate`, `fsync`, a superblock write) runs with the
/// log's lock held. Here one does not finish until a read of a key written earlier has
/// returned: a read that needed the log's lock for a record already in storage would wait for
/// the allocation, which waits for it (a deadlock, which the scheduler reports).
#[test]
fn a_read_of_a_written_record_does_not_wait_for_a_segment_allocation() {
    shuttle::check_random(
        || {
            let options = EngineOptions {
                segments_per_file: 2,
                ..small_store()
            };
            let storage = SimStorage::new();
            let engine = Arc::new(Engine::open_on(storage.clone(), &options).unwrap());
            let written = value(1, 1);
            engine
                .write(&[Mutation::put(
                    ROOT_GROUP,
                    b"written".to_vec(),
                    written.clone(),
                )])
                .unwrap();
            engine.sync().unwrap();
            // (allocating, read done)
            let progress = Arc::new((Mutex::new((false, false)), shuttle::sync::Condvar::new()));
            let hook_progress = progress.clone();
            storage.set_allocate_hook(Some(Arc::new(move || {
                let (lock, changed) = &*hook_progress;
                let mut p = lock.lock().unwrap();
                if p.1 {
                    return;
                }
                p.0 = true;
                changed.notify_all();
                while !p.1 {
                    p = changed.wait(p).unwrap();
                }
            })));
            let reader = {
                let engine = engine.clone();
                let progress = progress.clone();
                shuttle::thread::spawn(move || {
                    let (lock, changed) = &*progress;
                    let mut p = lock.lock().unwrap();
                    while !p.0 {
                        p = changed.wait(p).unwrap();
                    }
                    drop(p);
                    let read = engine.get(b"written").unwrap();
                    let mut p = lock.lock().unwrap();
                    p.1 = true;
                    changed.notify_all();
                    read
                })
            };
            // Enough to need the next segment file.
            for i in 0..12u64 {
                let mut v = value(2, i);
                v.resize(60 << 10, b'f');
                engine
                    .write(&[Mutation::put(ROOT_GROUP, format!("f{i}").into_bytes(), v)])
                    .unwrap();
            }
            assert_eq!(reader.join().unwrap(), Some(written));
            storage.set_allocate_hook(None);
            Arc::try_unwrap(engine).ok().unwrap().close().unwrap();
        },
        schedules(20),
    );
}

/// Writers of large values queue for room in full write buffers: a 256 KiB segment takes two
/// of these values, so nearly every batch waits for a seal, and every other seal closes the
/// segment (the first writer woken opens the next). Writers waiting for room sleep on a
/// condition variable of their own, which only a seal (or a failure) wakes, one writer at a
/// time, each waking the next as it leaves (`Log::room`): whatever the schedule, no writer is
/// left asleep for good (shuttle fails a schedule in which every thread waits; a seal that
/// woke nobody was caught), and every put reads back. (Without the relay a writer would wait
/// for the next seal, up to the seal delay: slower, not stuck, here.)
#[test]
fn writers_queued_for_room_in_full_buffers_all_get_in_whatever_the_schedule() {
    shuttle::check_random(
        || {
            let storage = SimStorage::new();
            let engine = Arc::new(Engine::open_on(storage, &small_store()).unwrap());
            let large = |w: u64, i: u64| {
                let mut v = value(w, i);
                v.resize(100 << 10, b'0' + (w * 3 + i) as u8);
                v
            };
            let writers: Vec<_> = (0..4u64)
                .map(|w| {
                    let engine = engine.clone();
                    shuttle::thread::spawn(move || {
                        for i in 0..2 {
                            engine
                                .write(&[Mutation::put(ROOT_GROUP, key(w, i), large(w, i))])
                                .unwrap();
                        }
                    })
                })
                .collect();
            for w in writers {
                w.join().unwrap();
            }
            for w in 0..4 {
                for i in 0..2 {
                    assert_eq!(engine.get(&key(w, i)).unwrap(), Some(large(w, i)));
                }
            }
            Arc::try_unwrap(engine).ok().unwrap().close().unwrap();
        },
        schedules(300),
    );
}
