//! Model test of the mirror (`src/mirror`) on a bucket in memory: random batches over four
//! groups in a small store (so that the separator, compaction and the reclaimer free and reuse
//! segments under the mirror), a mirror round every few batches, and then every manifest
//! published restored into a directory of its own and opened: each must hold exactly the model
//! as of its round. The same rounds run against a real gateway in `tests/object_s3.rs`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use logstorfs::engine::storage::SimRng;
use logstorfs::engine::{Engine, EngineOptions, Mutation};
use logstorfs::mirror::{self, Mirror, Round};
use logstorfs::object::memory::MemoryObjects;
use logstorfs::object::{ErrorKind, ObjectStorage};

type State = BTreeMap<Vec<u8>, Vec<u8>>;

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

fn key(n: u64) -> Vec<u8> {
    format!("k{n:03}").into_bytes()
}

fn batch(rng: &mut SimRng, step: u64, state: &mut State) -> Vec<Mutation> {
    (0..1 + rng.below(4))
        .map(|_| {
            let n = rng.below(120);
            let group = 1 + (n % 4) as u32;
            if rng.below(6) == 0 {
                state.remove(&key(n));
                Mutation::delete(group, key(n))
            } else {
                let len = if rng.below(8) == 0 { 40_000 } else { 300 };
                let mut v = format!("step {step} key {n};").into_bytes();
                v.resize(len, (step % 251) as u8);
                state.insert(key(n), v.clone());
                Mutation::put(group, key(n), v)
            }
        })
        .collect()
}

/// A new store (`DIR/store`) mirrored by writer 1 into a bucket in memory.
fn mirrored_store() -> (tempfile::TempDir, Arc<MemoryObjects>, Engine, Mirror) {
    let dir = tempfile::tempdir().unwrap();
    let objects = Arc::new(MemoryObjects::new());
    let engine = Engine::open(&dir.path().join("store"), &options()).unwrap();
    let mirror = Mirror::attach(objects.clone(), 1, None).unwrap();
    (dir, objects, engine, mirror)
}

fn contents(engine: &Engine) -> State {
    engine
        .scan(b"", None, usize::MAX)
        .unwrap()
        .into_iter()
        .collect()
}

fn restored(objects: &dyn ObjectStorage, manifest: Option<u64>, dir: &Path) -> State {
    let mut last = (0, 0);
    mirror::restore(objects, manifest, dir, &mut |done, total| {
        last = (done, total)
    })
    .unwrap();
    assert_eq!(last.0, last.1, "progress ends at the total");
    let engine = Engine::open(dir, &options()).unwrap();
    let state = contents(&engine);
    engine.close().unwrap();
    state
}

#[test]
fn every_manifest_restores_to_the_store_as_of_its_round() {
    let (dir, objects, engine, mirror) = mirrored_store();
    let mut rng = SimRng::new(0x5eed_0021);
    let mut state = State::new();
    let mut at_manifest: Vec<(u64, State)> = Vec::new();
    let mut overtaken = 0;
    for step in 0..1500u64 {
        let b = batch(&mut rng, step, &mut state);
        engine.write(&b).unwrap();
        if step % 97 == 0 {
            engine.test_compact().unwrap();
        }
        if step % 37 == 0 {
            match mirror.round(&engine).unwrap() {
                Round::Published(n) => at_manifest.push((n, state.clone())),
                Round::Unchanged => panic!("a round after writes found nothing new"),
                Round::Overtaken => overtaken += 1,
            }
        }
    }
    // The uploader tries again at its next interval; here at once.
    let last = (0..100)
        .find_map(|_| match mirror.round(&engine).unwrap() {
            Round::Published(n) => Some(n),
            Round::Overtaken => None,
            Round::Unchanged => panic!("the last round found nothing new"),
        })
        .expect("a round was overtaken 100 times in a row");
    at_manifest.push((last, state.clone()));
    // Idle: the background may still move records (a new image), but rounds settle.
    engine.test_pause_background();
    let settled = (0..3).any(|_| mirror.round(&engine).unwrap() == Round::Unchanged);
    assert!(settled, "rounds with no write in between keep uploading");
    eprintln!(
        "{} manifests, {overtaken} rounds overtaken",
        at_manifest.len()
    );
    assert_eq!(contents(&engine), state);
    engine.close().unwrap();
    assert!(at_manifest.len() >= 5, "{} manifests", at_manifest.len());
    let stats = mirror.stats();
    assert!(stats.manifests >= at_manifest.len() as u64);
    for (n, expected) in &at_manifest {
        let into = dir.path().join(format!("restore-{n}"));
        assert!(
            restored(objects.as_ref(), Some(*n), &into) == *expected,
            "manifest {n} does not restore the store as of its round"
        );
    }
    // The newest by default.
    assert_eq!(
        restored(objects.as_ref(), None, &dir.path().join("newest")),
        state
    );
}

#[test]
fn a_restore_refuses_a_damaged_object_and_an_empty_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let objects = Arc::new(MemoryObjects::new());
    let err = mirror::restore(
        objects.as_ref(),
        None,
        &dir.path().join("a"),
        &mut |_, _| {},
    )
    .unwrap_err();
    assert!(
        matches!(&err, mirror::MirrorError::Object(e) if e.kind == ErrorKind::NotFound),
        "{err}"
    );
    let engine = Engine::open(&dir.path().join("store"), &options()).unwrap();
    engine
        .write(&[Mutation::put(1, b"a".to_vec(), vec![7u8; 5000])])
        .unwrap();
    let mirror = Mirror::attach(objects.clone(), 1, None).unwrap();
    assert_eq!(mirror.round(&engine).unwrap(), Round::Published(1));
    engine.close().unwrap();
    // Replace the one log object by one with a byte changed.
    let log = objects
        .names()
        .into_iter()
        .find(|n| n.starts_with("log/"))
        .unwrap();
    let mut bytes = objects.get(&log).unwrap().to_vec();
    bytes[100] ^= 1;
    objects.delete(&log).unwrap();
    objects.put_new(&log, bytes.into()).unwrap();
    let into = dir.path().join("b");
    let err = mirror::restore(objects.as_ref(), None, &into, &mut |_, _| {}).unwrap_err();
    assert!(err.to_string().contains("checksum"), "{err}");
    assert!(
        !logstorfs::engine::store_dir::holds_store(&into),
        "a failed restore leaves no store behind"
    );
}

#[test]
fn a_mirror_stops_where_another_writer_took_the_next_manifest() {
    let (_dir, objects, engine, mirror) = mirrored_store();
    engine
        .write(&[Mutation::put(1, b"a".to_vec(), b"1".to_vec())])
        .unwrap();
    assert_eq!(mirror.round(&engine).unwrap(), Round::Published(1));
    objects
        .put_new(
            &mirror::manifest::manifest_object(2),
            b"someone else".to_vec().into(),
        )
        .unwrap();
    engine
        .write(&[Mutation::put(1, b"b".to_vec(), b"2".to_vec())])
        .unwrap();
    let err = mirror.round(&engine).unwrap_err();
    assert!(
        matches!(&err, mirror::MirrorError::Object(e) if e.kind == ErrorKind::AlreadyExists),
        "{err}"
    );
    engine.close().unwrap();
}

#[test]
fn a_lost_reply_is_retried_into_the_same_object() {
    let (dir, objects, engine, mirror) = mirrored_store();
    engine
        .write(&[Mutation::put(1, b"a".to_vec(), b"1".to_vec())])
        .unwrap();
    objects.lose_replies(1);
    let err = mirror.round(&engine).unwrap_err();
    assert!(
        matches!(&err, mirror::MirrorError::Object(e) if e.kind == ErrorKind::Unreachable),
        "{err}"
    );
    // The log object went up; its reply did not. The next round sends the same bytes again.
    assert_eq!(mirror.round(&engine).unwrap(), Round::Published(1));
    engine.close().unwrap();
    let state = restored(objects.as_ref(), None, &dir.path().join("r"));
    assert_eq!(
        state.get(b"a".as_slice()).map(Vec::as_slice),
        Some(b"1".as_slice())
    );
}

#[test]
fn a_segment_use_that_ended_is_never_read_for_an_older_image() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(&dir.path().join("store"), &options()).unwrap();
    engine.test_pause_background();
    let value = |round: u32, n: u32| {
        let mut v = format!("round {round} key {n};").into_bytes();
        v.resize(20_000, round as u8);
        v
    };
    for n in 0..40u32 {
        engine
            .write(&[Mutation::put(1, format!("k{n}"), value(0, n))])
            .unwrap();
    }
    let image = engine.durable_image(None).unwrap();
    let old = *image
        .segments
        .iter()
        .find(|e| e.closed)
        .expect("a closed segment in the image");
    // Every key deleted and the segments freed; new writes until the old segment is reused.
    for n in 0..40u32 {
        engine
            .write(&[Mutation::delete(1, format!("k{n}"))])
            .unwrap();
    }
    engine.test_separate().unwrap();
    engine.test_compact().unwrap();
    let mut round = 1;
    let reused = loop {
        for n in 0..10u32 {
            engine
                .write(&[
                    Mutation::put(2, format!("r{round}-{n}"), value(round, n)),
                    Mutation::delete(2, format!("r{}-{n}", round - 1)),
                ])
                .unwrap();
        }
        engine.test_separate().unwrap();
        engine.test_compact().unwrap();
        let now = engine.durable_image(None).unwrap();
        if let Some(e) = now
            .segments
            .iter()
            .find(|e| e.segment == old.segment && e.generation != old.generation)
        {
            break *e;
        }
        round += 1;
        assert!(round < 200, "segment {} was never reused", old.segment);
    };
    assert_ne!(reused.generation, old.generation);
    let mut buf = vec![0u8; old.len.min(reused.len) as usize];
    assert!(
        !engine
            .read_segment_use(old.segment, old.generation, 0, &mut buf)
            .unwrap(),
        "bytes of a later use were read for the image that noted generation {}",
        old.generation
    );
    assert!(
        engine
            .read_segment_use(reused.segment, reused.generation, 0, &mut buf)
            .unwrap()
    );
    engine.close().unwrap();
}

/// Every object a manifest names, and the manifest itself.
fn named_by(objects: &dyn ObjectStorage, n: u64) -> std::collections::BTreeSet<String> {
    let m = mirror::read_manifest(objects, n).unwrap();
    let mut names: std::collections::BTreeSet<String> = m
        .pieces
        .iter()
        .map(|p| p.object())
        .chain(m.checkpoint.map(|c| c.object()))
        .collect();
    names.insert(mirror::manifest::manifest_object(n));
    names
}

fn publish(mirror: &Mirror, engine: &Engine) -> u64 {
    (0..100)
        .find_map(|_| match mirror.round(engine).unwrap() {
            Round::Published(n) => Some(n),
            _ => None,
        })
        .expect("a round published")
}

#[test]
fn a_collection_deletes_exactly_what_no_kept_manifest_names() {
    let dir = tempfile::tempdir().unwrap();
    let objects = Arc::new(MemoryObjects::new());
    let store = dir.path().join("store");
    let engine = Engine::open(&store, &options()).unwrap();
    let mirror = Mirror::attach(objects.clone(), 1, None).unwrap();
    let mut rng = SimRng::new(77);
    let mut state = State::new();
    for step in 0..600u64 {
        engine.write(&batch(&mut rng, step, &mut state)).unwrap();
        if step % 97 == 0 {
            engine.test_compact().unwrap();
        }
        if step % 30 == 0 {
            mirror.round(&engine).unwrap();
        }
    }
    let newest = publish(&mirror, &engine);
    // A long retention keeps every manifest and every object one names (an object no
    // manifest names, a closed use uploaded by a round that was overtaken and freed since,
    // may go).
    let numbers = mirror::manifests(objects.as_ref()).unwrap();
    let needed: std::collections::BTreeSet<String> = numbers
        .iter()
        .flat_map(|&n| named_by(objects.as_ref(), n))
        .collect();
    assert_eq!(
        mirror.collect(Duration::from_secs(3600)).unwrap().manifests,
        0
    );
    let left: std::collections::BTreeSet<String> = objects.names().into_iter().collect();
    assert_eq!(
        left, needed,
        "a long retention keeps exactly what some manifest names"
    );
    // A crashed writer's object that no manifest names.
    objects
        .put_new("log/ffffffffffff0000", b"left by a crash".to_vec().into())
        .unwrap();
    let c = mirror.collect(Duration::ZERO).unwrap();
    assert!(c.manifests > 0 && c.objects > 0, "{c:?}");
    let left: std::collections::BTreeSet<String> = objects.names().into_iter().collect();
    assert_eq!(
        left,
        named_by(objects.as_ref(), newest),
        "left: exactly the newest manifest and what it names"
    );
    engine.close().unwrap();
    assert_eq!(
        restored(objects.as_ref(), None, &dir.path().join("r1")),
        state
    );

    // The store mounted again, mirrored by a new mirror: the manifests from before it attached
    // stay until they expire, then go with what only they named.
    let engine = Engine::open(&store, &options()).unwrap();
    let mirror = Mirror::attach(objects.clone(), 1, None).unwrap();
    assert_eq!(
        mirror.collect(Duration::ZERO).unwrap(),
        mirror::Collected::default(),
        "nothing goes before this mirror published a manifest of its own"
    );
    for step in 600..700u64 {
        engine.write(&batch(&mut rng, step, &mut state)).unwrap();
    }
    let before = mirror::manifests(objects.as_ref()).unwrap();
    let newest = publish(&mirror, &engine);
    assert_eq!(
        mirror.collect(Duration::from_secs(3600)).unwrap().manifests,
        0,
        "manifests from before the mirror attached are kept while young"
    );
    for n in &before {
        assert!(mirror::read_manifest(objects.as_ref(), *n).is_ok());
    }
    mirror.collect(Duration::ZERO).unwrap();
    let left: std::collections::BTreeSet<String> = objects.names().into_iter().collect();
    assert_eq!(left, named_by(objects.as_ref(), newest));
    engine.close().unwrap();
    assert_eq!(
        restored(objects.as_ref(), None, &dir.path().join("r2")),
        state
    );
}

#[test]
fn a_restored_store_goes_on_from_its_image_without_uploading_it_again() {
    let dir = tempfile::tempdir().unwrap();
    let objects = Arc::new(MemoryObjects::new());
    let engine = Engine::open(&dir.path().join("a"), &options()).unwrap();
    let mirror = Mirror::attach(objects.clone(), 1, None).unwrap();
    let mut rng = SimRng::new(5);
    let mut state = State::new();
    for step in 0..400u64 {
        engine.write(&batch(&mut rng, step, &mut state)).unwrap();
    }
    let first = publish(&mirror, &engine);
    engine.close().unwrap();
    let b = dir.path().join("b");
    mirror::restore(objects.as_ref(), None, &b, &mut |_, _| {}).unwrap();
    let engine = Engine::open(&b, &options()).unwrap();
    let mirror = Mirror::attach(objects.clone(), 2, Some(first)).unwrap();
    engine
        .write(&[Mutation::put(1, b"after".to_vec(), b"restore".to_vec())])
        .unwrap();
    state.insert(b"after".to_vec(), b"restore".to_vec());
    let second = publish(&mirror, &engine);
    engine.close().unwrap();
    let m = mirror::read_manifest(objects.as_ref(), second).unwrap();
    assert_eq!(m.writer, 2);
    // Uses closed in the image it came from are named where they are; only uses that were
    // open there (recovery may close them) go up under the new writer.
    let closed_in_first: Vec<String> = mirror::read_manifest(objects.as_ref(), first)
        .unwrap()
        .pieces
        .iter()
        .filter(|p| matches!(p.source, mirror::manifest::Source::Segment(_)))
        .map(|p| mirror::manifest::segment_object(2, p.segment, p.generation))
        .collect();
    assert!(!closed_in_first.is_empty());
    let names = objects.names();
    for n in &closed_in_first {
        assert!(
            !names.contains(n),
            "{n}: a closed use of the image it was restored from went up again"
        );
    }
    assert!(
        m.pieces
            .iter()
            .any(|p| p.object().starts_with("seg/0000000000000001-"))
    );
    assert_eq!(
        restored(objects.as_ref(), None, &dir.path().join("c")),
        state
    );
}

#[test]
fn a_bucket_check_finds_a_missing_object_and_a_flipped_byte() {
    let dir = tempfile::tempdir().unwrap();
    let objects = Arc::new(MemoryObjects::new());
    let engine = Engine::open(&dir.path().join("a"), &options()).unwrap();
    let mirror = Mirror::attach(objects.clone(), 1, None).unwrap();
    let mut rng = SimRng::new(9);
    let mut state = State::new();
    for step in 0..300u64 {
        engine.write(&batch(&mut rng, step, &mut state)).unwrap();
        if step % 50 == 0 {
            mirror.round(&engine).unwrap();
        }
    }
    let newest = publish(&mirror, &engine);
    engine.close().unwrap();
    let clean = mirror::check_bucket(objects.as_ref()).unwrap();
    assert!(clean.problems.is_empty(), "{:?}", clean.problems);
    assert_eq!(clean.newest_manifest, Some(newest));
    assert!(clean.objects_checked > 2);
    // A byte flipped in one object the newest manifest names; another object some manifest
    // names deleted (all of the newest's pieces may lie in one log object).
    let m = mirror::read_manifest(objects.as_ref(), newest).unwrap();
    let flip = m.pieces[0].object();
    let gone = mirror::manifests(objects.as_ref())
        .unwrap()
        .into_iter()
        .flat_map(|n| mirror::read_manifest(objects.as_ref(), n).unwrap().pieces)
        .map(|p| p.object())
        .find(|o| *o != flip)
        .expect("the manifests name more than one object");
    let mut bytes = objects.get(&flip).unwrap().to_vec();
    let at = m.pieces[0].at as usize;
    bytes[at] ^= 0x40;
    objects.delete(&flip).unwrap();
    objects.put_new(&flip, bytes.into()).unwrap();
    objects.delete(&gone).unwrap();
    let report = mirror::check_bucket(objects.as_ref()).unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.starts_with(&flip) && p.contains("checksum")),
        "{:?}",
        report.problems
    );
    assert!(
        report.problems.iter().any(|p| p.starts_with(&gone)),
        "{:?}",
        report.problems
    );
}

/// Checkpoints written while rounds take images never give an image a checkpoint newer than
/// its segments (one that names bytes the image lacks): with one thread writing batches and
/// another writing checkpoints one after another, every manifest restores to exactly the
/// batches up to its LSN, and the images carry checkpoints.
#[test]
fn images_taken_while_checkpoints_and_writes_go_on_restore_as_of_their_lsn() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let objects = Arc::new(MemoryObjects::new());
    let engine = Arc::new(Engine::open(&dir.path().join("store"), &options()).unwrap());
    let mirror = Mirror::attach(objects.clone(), 1, None).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let rounds_published = Arc::new(std::sync::atomic::AtomicU64::new(0));
    // Each batch's LSN and what it set (None: deleted), in LSN order (one writer).
    type Changes = Vec<(u64, Vec<(Vec<u8>, Option<Vec<u8>>)>)>;
    let writer = {
        let (engine, done, rounds) = (engine.clone(), done.clone(), rounds_published.clone());
        std::thread::spawn(move || -> Changes {
            let mut rng = SimRng::new(0x5eed_c4ec);
            let mut state = State::new();
            let mut changes = Changes::new();
            // Until enough rounds overlapped the writes, whatever the speed of either.
            for step in 0..400_000u64 {
                if step >= 1000 && rounds.load(Ordering::SeqCst) >= 12 {
                    break;
                }
                let b = batch(&mut rng, step, &mut state);
                let lsn = engine.write(&b).unwrap();
                let set = b
                    .iter()
                    .map(|m| match m {
                        Mutation::Put { key, .. } | Mutation::Delete { key, .. } => key.clone(),
                        _ => unreachable!("only puts and deletes are written here"),
                    })
                    .map(|k| (k.clone(), state.get(&k).cloned()))
                    .collect();
                changes.push((lsn, set));
            }
            done.store(true, Ordering::SeqCst);
            changes
        })
    };
    let checkpointer = {
        let (engine, done) = (engine.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                engine.test_checkpoint();
            }
        })
    };
    let mut published = Vec::new();
    while !done.load(Ordering::SeqCst) {
        if let Round::Published(n) = mirror.round(&engine).unwrap() {
            published.push(n);
            rounds_published.store(published.len() as u64, Ordering::SeqCst);
        }
    }
    let changes = writer.join().unwrap();
    checkpointer.join().unwrap();
    // The last writes, unless the last round took them already.
    loop {
        match mirror.round(&engine).unwrap() {
            Round::Published(n) => published.push(n),
            Round::Unchanged => break,
            Round::Overtaken => {}
        }
    }
    Arc::try_unwrap(engine).ok().unwrap().close().unwrap();
    let with_checkpoint = published
        .iter()
        .filter(|&&n| {
            mirror::read_manifest(objects.as_ref(), n)
                .unwrap()
                .checkpoint
                .is_some()
        })
        .count();
    eprintln!(
        "{} manifests, {with_checkpoint} with a checkpoint",
        published.len()
    );
    assert!(published.len() >= 12, "{} manifests", published.len());
    assert!(
        with_checkpoint >= 3,
        "{with_checkpoint} manifests name a checkpoint"
    );

    for n in published {
        let lsn = mirror::read_manifest(objects.as_ref(), n)
            .unwrap()
            .durable_lsn;
        let mut expected = State::new();
        for (_, set) in changes.iter().take_while(|(l, _)| *l <= lsn) {
            for (k, v) in set {
                match v {
                    Some(v) => expected.insert(k.clone(), v.clone()),
                    None => expected.remove(k),
                };
            }
        }
        let into = dir.path().join(format!("restore-{n}"));
        let got = restored(objects.as_ref(), Some(n), &into);
        assert!(
            got == expected,
            "manifest {n} (LSN {lsn}) does not restore the batches up to its LSN"
        );
    }
}

/// Checkpoints go up at most at a quarter of the segment bytes (after a mirror's first): a
/// store of small records has an index as large as a good part of its data, and one written
/// for every round here would put more checkpoint bytes than data.
#[test]
fn checkpoints_go_up_at_most_at_a_quarter_of_the_segment_bytes() {
    let (dir, objects, engine, mirror) = mirrored_store();
    for round in 0..30u64 {
        let batch: Vec<Mutation> = (0..500)
            .map(|i| Mutation::put(1, format!("s{round:03}{i:04}"), vec![round as u8; 8]))
            .collect();
        engine.write(&batch).unwrap();
        engine.test_checkpoint();
        publish(&mirror, &engine);
    }
    let last = mirror::newest_manifest(objects.as_ref()).unwrap().unwrap();
    engine.close().unwrap();
    let sizes = |prefix: &str| -> Vec<u64> {
        objects
            .list(prefix)
            .unwrap()
            .iter()
            .map(|o| o.size)
            .collect()
    };
    let checkpoints = sizes("checkpoint/");
    let segments: u64 = sizes("seg/").iter().chain(&sizes("log/")).sum();
    let after_first: u64 = checkpoints.iter().skip(1).sum();
    assert!(
        !checkpoints.is_empty() && after_first <= segments / 4,
        "{} checkpoints, {after_first} bytes after the first, for {segments} bytes of segments",
        checkpoints.len()
    );
    // A manifest without a checkpoint (the engine's newest was not uploaded) still restores.
    let into = dir.path().join("restored");
    let got = restored(objects.as_ref(), Some(last.number), &into);
    assert_eq!(got.len(), 30 * 500);
}

/// `stats` shows the upload queue: the bytes of the last round's image the bucket lacks.
#[test]
fn the_upload_queue_is_what_the_bucket_lacks_of_the_last_image() {
    let dir = tempfile::tempdir().unwrap();
    let objects = Arc::new(MemoryObjects::new());
    let engine = Engine::open(&dir.path().join("store"), &options()).unwrap();
    // The background's moves between two images would change the image this test compares
    // with the round's.
    engine.test_pause_background();
    let mirror = Mirror::attach(objects.clone(), 1, None).unwrap();
    let write = |from: u64, to: u64| {
        for n in from..to {
            let value = vec![(n % 251) as u8; 30_000];
            engine
                .write(&[Mutation::put(1 + (n % 4) as u32, key(n), value)])
                .unwrap();
        }
    };
    // Enough for closed segment uses (256 KiB each) as well as open ones.
    write(0, 60);
    objects.set_unreachable(true);
    assert!(mirror.round(&engine).is_err());
    let image = engine.durable_image(None).unwrap();
    assert!(image.segments.iter().any(|e| e.closed) && image.segments.iter().any(|e| !e.closed));
    let whole: u64 = image.segments.iter().map(|e| e.len as u64).sum();
    assert_eq!(
        mirror.stats().queued_bytes,
        whole,
        "nothing reached the bucket: the whole image is queued"
    );

    objects.set_unreachable(false);
    publish(&mirror, &engine);
    assert_eq!(mirror.stats().queued_bytes, 0, "the image is in the bucket");

    // Only what the store gained since is queued after the next failed round.
    write(60, 64);
    objects.set_unreachable(true);
    assert!(mirror.round(&engine).is_err());
    let queued = mirror.stats().queued_bytes;
    assert!(
        (4 * 30_000..whole).contains(&queued),
        "{queued} bytes queued after 4 writes of 30,000 bytes"
    );
    objects.set_unreachable(false);
    publish(&mirror, &engine);
    assert_eq!(mirror.stats().queued_bytes, 0);
    engine.close().unwrap();
}

/// A writer killed between a round's uploads and its manifest: the bucket's newest image is
/// still the one before; the store recovered after the crash goes on mirroring under numbers
/// the dead round never used, and what the dead round uploaded is collected.
#[test]
fn a_writer_killed_between_its_uploads_and_its_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let objects = Arc::new(MemoryObjects::new());
    let store = dir.path().join("store");
    // No checkpoints: the objects' numbers are then all log objects', and a writer that took
    // one of them again would be refused (a checkpoint object taking the number first would
    // hide the mistake under another name).
    let no_checkpoints = EngineOptions {
        checkpoint_every_segments: u32::MAX,
        ..options()
    };
    let engine = Engine::open(&store, &no_checkpoints).unwrap();
    let mirror = Mirror::attach(objects.clone(), 1, None).unwrap();
    let mut rng = SimRng::new(5);
    let mut state = State::new();
    for step in 0..200u64 {
        engine.write(&batch(&mut rng, step, &mut state)).unwrap();
    }
    let first = publish(&mirror, &engine);
    let at_first = state.clone();
    for step in 200..400u64 {
        engine.write(&batch(&mut rng, step, &mut state)).unwrap();
    }
    // Nothing moves under the dead round, and its last write lies in an open segment, so the
    // round leaves a `log/` object (whose number a careless writer would take again).
    engine.test_pause_background();
    engine.write(&batch(&mut rng, 400, &mut state)).unwrap();
    objects.refuse_puts_under(Some(mirror::manifest::MANIFEST_PREFIX));
    // A round overtaken (a segment freed under it) is tried again, as the uploader does.
    let cut = (0..100).find_map(|_| match mirror.round(&engine) {
        Ok(Round::Overtaken) => None,
        other => Some(other),
    });
    assert!(matches!(cut, Some(Err(_))), "{cut:?}");
    let left_by_the_dead_round: Vec<String> = objects
        .names()
        .into_iter()
        .filter(|n| !named_by(objects.as_ref(), first).contains(n))
        .collect();
    assert!(
        left_by_the_dead_round
            .iter()
            .any(|n| n.starts_with(mirror::manifest::LOG_PREFIX)),
        "the round left no log object before its manifest: {left_by_the_dead_round:?}"
    );
    // Killed: neither the mirror nor the engine is closed.
    drop(mirror);
    drop(engine);
    objects.refuse_puts_under(None);
    assert_eq!(
        restored(objects.as_ref(), None, &dir.path().join("r1")),
        at_first,
        "the newest image is still the one before the dead round"
    );

    // The round synced every batch before uploading: recovery keeps them all.
    let engine = Engine::open(&store, &no_checkpoints).unwrap();
    assert_eq!(contents(&engine), state);
    let mirror = Mirror::attach(objects.clone(), 1, Some(first)).unwrap();
    for step in 401..450u64 {
        engine.write(&batch(&mut rng, step, &mut state)).unwrap();
    }
    let second = publish(&mirror, &engine);
    assert_eq!(second, first + 1, "the dead round created no manifest");
    mirror.collect(Duration::ZERO).unwrap();
    let left: std::collections::BTreeSet<String> = objects.names().into_iter().collect();
    assert_eq!(
        left,
        named_by(objects.as_ref(), second),
        "what the dead round left is collected"
    );
    engine.close().unwrap();
    assert_eq!(
        restored(objects.as_ref(), None, &dir.path().join("r2")),
        state
    );
}

/// The round before an unmount leaves a checkpoint in the newest image when the ratio had left
/// the recent ones out, so that a store restored after a clean unmount reads only the segments
/// written after it; an unmount whose newest image has one uploads no other.
#[test]
fn the_last_round_before_an_unmount_leaves_a_checkpoint_in_the_newest_image() {
    let (dir, objects, engine, mirror) = mirrored_store();
    for round in 0..10u64 {
        let batch: Vec<Mutation> = (0..500)
            .map(|i| Mutation::put(1, format!("s{round:03}{i:04}"), vec![round as u8; 8]))
            .collect();
        engine.write(&batch).unwrap();
        engine.test_checkpoint();
        publish(&mirror, &engine);
    }
    let newest = || mirror::newest_manifest(objects.as_ref()).unwrap().unwrap();
    assert!(
        newest().checkpoint.is_none(),
        "the ratio left the recent checkpoints out (the case this test is about)"
    );
    let last_round = |mirror: &Mirror| {
        (0..100)
            .find_map(|_| match mirror.last_round(&engine).unwrap() {
                Round::Overtaken => None,
                done => Some(done),
            })
            .expect("a round that was not overtaken")
    };
    assert!(matches!(last_round(&mirror), Round::Published(_)));
    let with = newest();
    assert!(with.checkpoint.is_some(), "no checkpoint in the last image");
    let checkpoints = objects.list("checkpoint/").unwrap().len();
    // A second unmount with nothing written: the newest image has a checkpoint already.
    assert_eq!(last_round(&mirror), Round::Unchanged);
    assert_eq!(objects.list("checkpoint/").unwrap().len(), checkpoints);
    engine.close().unwrap();
    let into = dir.path().join("restored");
    assert_eq!(restored(objects.as_ref(), None, &into).len(), 10 * 500);
    assert!(
        std::fs::metadata(into.join("checkpoint")).is_ok_and(|m| m.len() > 0),
        "the restored store has no checkpoint file"
    );
}
