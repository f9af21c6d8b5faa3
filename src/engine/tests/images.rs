//! Named store images for the engine's damage and recovery tests: each builder makes one image
//! (written by a real engine, then damaged or cut by hand) that a recovery test opens and an
//! fsck test checks. Both sides of a damage rule, and the older tests that found the rule, read
//! the same image from here, so the image they agree on is built once.

use super::*;

/// A log segment whose first buffer holds the damaged key "victim" (its value and its record
/// directory damaged, and the header byte `header_byte` if any: its magic, version or segment
/// index), with later buffers of the segment intact ("neighbour" in the same buffer, "after"
/// in the next): the segment's use is known from the header's generation field and the valid
/// buffers of that generation behind it. Taking such a segment for free would lose every
/// record in it.
pub(super) fn damaged_first_log_buffer(header_byte: Option<u64>) -> Arc<SimStorage> {
    let storage = SimStorage::new();
    let engine = Engine::open_on(storage.clone(), &small_options()).unwrap();
    engine.test_pause_background();
    engine
        .write(&[put("victim", &[b'V'; 3000]), put("neighbour", &[b'N'; 300])])
        .unwrap();
    engine.sync().unwrap();
    engine.write(&[put("after", b"a")]).unwrap();
    engine.sync().unwrap();
    let (segment, offset) = engine.test_segment_of(b"victim").unwrap();
    assert!((offset as usize) < BLOCK_SIZE, "victim in the first buffer");
    assert_eq!(engine.test_segment_of(b"after").unwrap().0, segment);
    drop(engine);
    flip_a_byte_of_value(&storage, segment, b'V');
    let sb = Superblock::decode(&storage.read_superblock().unwrap().unwrap()).unwrap();
    let (file, base) = sb.segment_position(segment);
    let mut header = [0u8; format::BUFFER_HEADER_SIZE];
    storage.read_at(file, base, &mut header).unwrap();
    let buffer_len = u32::from_le_bytes(header[52..56].try_into().unwrap());
    storage.corrupt(file, base + buffer_len as u64 - 1, 0x10);
    if let Some(at) = header_byte {
        storage.corrupt(file, base + at, 0x20);
    }
    storage.crash(PowerCut::DropAllUnsynced)
}

/// A log segment whose only buffer (holding "victim", the value `value`) fails its CRC, a
/// batch of a later segment behind it vouching for it; in a store of an older superblock too
/// (`older_superblock`: its frees did not clear first directories). Read as a free segment,
/// its records would be lost and their keys serve older versions.
pub(super) fn damaged_only_log_buffer(older_superblock: bool) -> (Arc<SimStorage>, u32, Vec<u8>) {
    let storage = SimStorage::new();
    let engine = Engine::open_on(storage.clone(), &small_options()).unwrap();
    engine.test_pause_background();
    let value = |i: u8| vec![i; 100 << 10];
    let mut i = 0u8;
    let segment = loop {
        i += 1;
        engine.write(&[put("victim", &value(i))]).unwrap();
        engine.sync().unwrap();
        let (segment, offset) = engine.test_location_of(b"victim").unwrap();
        if offset == format::BUFFER_HEADER_SIZE as u32 && i > 1 {
            break segment;
        }
        assert!(i < 20, "the victim never starts a segment");
    };
    // A batch too large for the segment's room: the next segment, whose buffer's durable floor
    // covers the victim's batch.
    engine
        .write(&[
            put("other", &vec![7u8; 100 << 10]),
            put("other2", &vec![8u8; 100 << 10]),
        ])
        .unwrap();
    engine.sync().unwrap();
    assert_ne!(engine.test_location_of(b"other").unwrap().0, segment);
    drop(engine);
    let sb = Superblock::decode(&storage.read_superblock().unwrap().unwrap()).unwrap();
    let (file, base) = sb.segment_position(segment);
    let mut image = vec![0u8; sb.segment_size as usize];
    storage.read_at(file, base, &mut image).unwrap();
    // Every buffer's CRC field: the victim's, and a marker's behind it (a sync's proof
    // marker). Not a field that names the buffer, nor its directory: those are repaired from
    // the rest of the buffer (`BufferHeader::decode_repaired`, `decode_resealed`), and the
    // buffer is then valid; a damaged CRC field cannot be told from damage anywhere else.
    for (pos, _) in scan::valid_buffers(&image, segment, sb.generation_high_water) {
        storage.corrupt(file, base + pos as u64 + 61, 0x01);
    }
    if older_superblock {
        mark_superblock_version_2(&storage);
    }
    (storage.crash(PowerCut::DropAllUnsynced), segment, value(i))
}

/// The victim's log buffer, sealed before the one behind it was synced (that one's floor does
/// not cover it; a later buffer's does), damaged. Read as a torn write, it would end the
/// segment there and lose every later batch of it, synced.
pub(super) fn damaged_log_buffer_sealed_early() -> (Arc<SimStorage>, EngineOptions) {
    let options = EngineOptions {
        segment_size_bytes: 1 << 20,
        ..small_options()
    };
    let storage = SimStorage::new();
    let engine = Engine::open_on(storage.clone(), &options).unwrap();
    engine.test_pause_background();
    engine.write(&[put("victim", b"older version")]).unwrap();
    engine.sync().unwrap();
    engine.write(&[put("victim", &[b'V'; 3000])]).unwrap();
    // Too large to share the victim's buffer: that one is written now, unsynced, and the sync
    // below seals this one with a floor below the victim's batch.
    engine
        .write(&[
            put("big", &[b'B'; 127 << 10]),
            put("big2", &[b'B'; 127 << 10]),
        ])
        .unwrap();
    engine.sync().unwrap();
    engine.write(&[put("later", b"L")]).unwrap();
    engine.sync().unwrap();
    let (segment, victim_at) = engine.test_location_of(b"victim").unwrap();
    drop(engine);
    let sb = Superblock::decode(&storage.read_superblock().unwrap().unwrap()).unwrap();
    let (file, base) = sb.segment_position(segment);
    let mut image = vec![0u8; sb.segment_size as usize];
    storage.read_at(file, base, &mut image).unwrap();
    let buffers = scan::valid_buffers(&image, segment, sb.generation_high_water);
    let victims = buffers
        .iter()
        .rposition(|&(at, _)| at <= victim_at as usize);
    let behind = buffers[victims.expect("the victim's buffer") + 1].1;
    assert!(
        behind.durable_floor + 1 < behind.lsn_first,
        "the buffer behind the victim's vouches for it by itself: {behind:?}"
    );
    damage_every_copy_of(&storage, b'V');
    (storage.crash(PowerCut::DropAllUnsynced), options)
}

/// The last buffer of closed log segment S1 ("victim"'s newer version and "h", S1 also holding
/// "g" of `LOG_TAIL_VALUE` bytes), proven synced by the sync table but holding a batch above
/// every durable floor on disk, damaged: a power cut kept the table's entry, written after the
/// sync that made the segment durable, but not the marker written with it. Recovery cannot
/// tell such a stretch's LSNs (they may be damaged), so it must take nothing of it.
pub(super) fn damaged_log_tail_beyond_the_floor() -> Arc<SimStorage> {
    let (storage, engine) = a_log_up_to_g();
    // Fills S1 to its end: the segment closes when its buffer is sealed.
    engine
        .write(&[
            put("victim", &[b'V'; 120 << 10]),
            put("h", &[b'h'; 10 << 10]),
        ])
        .unwrap();
    // S1 is noted closed once its last flush completes: before the sync begins, so that the
    // sync proves it (a sync that began earlier leaves it to the next one).
    engine.test_wait_flushes();
    // Power cut once the sync wrote the entries and the marker, before syncing them: the
    // table's sector kept, the marker (in a segment file) not.
    let image: Arc<parking_lot::Mutex<Option<Arc<SimStorage>>>> = Default::default();
    {
        let (storage, image) = (storage.clone(), image.clone());
        engine.test_set_step_hook(Some(Box::new(move |step| {
            if step == "sync: log segments' entries written" {
                *image.lock() = Some(storage.crash(PowerCut::KeepOnlyIn {
                    file: synctable::SYNC_TABLE_FILE,
                    start: 0,
                    end: u64::MAX,
                }));
            }
        })));
    }
    engine.sync().unwrap();
    engine.test_set_step_hook(None);
    let (s1, closed) = engine.test_segment_of(b"victim").unwrap();
    assert!(closed);
    assert_eq!(engine.test_segment_of(b"g").unwrap().0, s1);
    let generation = engine.inner.segments.info(s1).generation;
    let storage = image.lock().take().expect("a cut inside the sync");
    let sb = Superblock::decode(&storage.read_superblock().unwrap().unwrap()).unwrap();
    assert_eq!(
        synctable::read(&*storage, sb.segment_count).unwrap()[s1 as usize].map(|p| p.generation),
        Some(generation),
        "the entry is in the image"
    );
    damage_value_of(&engine, &storage, b"victim");
    drop(engine);
    storage
}

/// The length of the values of "f1", "f2" and "g" in [`a_log_up_to_g`].
pub(super) const LOG_TAIL_VALUE: usize = 120 << 10;

/// A fresh store (background work paused) whose log holds "victim" (old version, synced), then
/// "f1", "f2" and "g" (`LOG_TAIL_VALUE` bytes each, a buffer each, not synced after "victim"):
/// "g" is in the segment after "f1"'s, with room left for one more large batch, which closes
/// that segment.
pub(super) fn a_log_up_to_g() -> (Arc<SimStorage>, Engine) {
    let storage = SimStorage::new();
    let engine = Engine::open_on(storage.clone(), &small_options()).unwrap();
    engine.test_pause_background();
    engine.write(&[put("victim", b"old version")]).unwrap();
    engine.sync().unwrap();
    for (k, fill) in [("f1", b'1'), ("f2", b'2'), ("g", b'g')] {
        engine
            .write(&[put(k, &vec![fill; LOG_TAIL_VALUE])])
            .unwrap();
        engine.test_wait_flushes();
    }
    (storage, engine)
}

/// [`damaged_log_tail_beyond_the_floor`] opened once (`first_open` sees that engine), which
/// drops and zeroes the damaged tail; then "x" reuses its LSN and "y" raises the floor above it
/// (each synced), and the power is cut. The next recovery must not take the dropped stretch
/// (its damaged or intact records would shadow what was written since).
pub(super) fn log_tail_dropped_then_its_lsns_reused(
    first_open: impl FnOnce(&Engine),
) -> Arc<SimStorage> {
    let storage = damaged_log_tail_beyond_the_floor();
    let engine = Engine::open_on(storage.clone(), &small_options()).unwrap();
    engine.test_pause_background();
    first_open(&engine);
    // New batches reuse the dropped batch's LSN; a later one raises the floor above it.
    engine.write(&[put("x", b"x")]).unwrap();
    engine.sync().unwrap();
    engine.write(&[put("y", b"y")]).unwrap();
    engine.sync().unwrap();
    drop(engine);
    storage.crash(PowerCut::DropAllUnsynced)
}

/// "k" durable, then overwritten by a batch the power cut takes back, whose record compaction
/// had copied into another segment: only the copy's segment made it to disk. The copy's
/// version is beyond the log's end, so the durable version stays. Returns the image and the
/// copy's segment.
pub(super) fn copy_of_a_lost_batch() -> (Arc<SimStorage>, u32) {
    let storage = SimStorage::new();
    let engine = Engine::open_on(storage.clone(), &small_options()).unwrap();
    engine.test_pause_background();
    engine.write(&[put("k", b"durable")]).unwrap();
    engine.sync().unwrap();
    // Unsynced from here: "k" overwritten, then filler that closes the segment and dies, so
    // that the segment holding the new "k" is almost empty, and compaction picks it.
    engine.write(&[put("k", b"lost in the cut")]).unwrap();
    let filler = vec![5u8; 60 << 10];
    for i in 0..12 {
        engine.write(&[put(&format!("f{i}"), &filler)]).unwrap();
    }
    for i in 0..12 {
        engine
            .write(&[Mutation::delete(ROOT_GROUP, format!("f{i}").into_bytes())])
            .unwrap();
    }
    let (old_segment, _) = engine.test_segment_of(b"k").unwrap();
    let frozen: Arc<parking_lot::Mutex<Option<Arc<SimStorage>>>> = Default::default();
    {
        let (storage, frozen) = (storage.clone(), frozen.clone());
        engine.test_set_step_hook(Some(Box::new(move |step| {
            if step == "copies written, index not yet moved" && frozen.lock().is_none() {
                *frozen.lock() = Some(storage.freeze());
            }
        })));
    }
    let moved = engine
        .inner
        .compact_pass(compaction::MAX_PASS_LIVE_SEGMENTS)
        .unwrap();
    engine.test_set_step_hook(None);
    let (copy_segment, _) = engine.test_segment_of(b"k").unwrap();
    assert!(
        moved > 0 && copy_segment != old_segment,
        "compaction did not move k"
    );
    let frozen = frozen.lock().take().expect("no copy was written");
    drop(engine);
    let sb = Superblock::decode(&storage.read_superblock().unwrap().unwrap()).unwrap();
    let (file, base) = sb.segment_position(copy_segment);
    let image = frozen.crash(PowerCut::KeepOnlyIn {
        file,
        start: base,
        end: base + sb.segment_size as u64,
    });
    (image, copy_segment)
}

/// "zz/gone" put, then deleted by `deletion` ("range delete" of prefix "zz/" or "tombstone"),
/// whose record's CRC field is then damaged; a later synced batch ("after") vouches for it, and
/// its record directory still names it. Recovery keeps the deletion's effect, so fsck must
/// too (else it reports lost data and lists the deleted key as live).
pub(super) fn damaged_deletion(deletion: &str) -> Arc<SimStorage> {
    let storage = SimStorage::new();
    let engine = Engine::open_on(storage.clone(), &small_options()).unwrap();
    engine.test_pause_background();
    engine.write(&[put("zz/gone", b"deleted")]).unwrap();
    engine.sync().unwrap();
    let delete = match deletion {
        "range delete" => Mutation::delete_prefix(ROOT_GROUP, b"zz/".to_vec()),
        _ => Mutation::delete(ROOT_GROUP, b"zz/gone".to_vec()),
    };
    engine.write(&[delete]).unwrap();
    engine.sync().unwrap();
    engine.write(&[put("after", b"a")]).unwrap();
    engine.sync().unwrap();
    // A range delete removes the key from the index; a tombstone is indexed.
    let tombstone_at = engine.test_location_of(b"zz/gone");
    drop(engine);
    let sb = Superblock::decode(&storage.read_superblock().unwrap().unwrap()).unwrap();
    let (file, at) = match deletion {
        "range delete" => {
            // Key "zz/", range end "zz0"; the first match is the record (its directory entry
            // comes after the records).
            let found: Vec<_> = segment_images(&storage)
                .into_iter()
                .filter_map(|(_, (file, base), image)| {
                    let at = image.windows(6).position(|w| w == b"zz/zz0")?;
                    Some((file, base + (at - format::RECORD_HEADER_SIZE) as u64))
                })
                .collect();
            assert_eq!(
                found.len(),
                1,
                "the range delete is not where the test looks"
            );
            found[0]
        }
        _ => {
            let (segment, offset) = tombstone_at.expect("the tombstone is indexed");
            let (file, base) = sb.segment_position(segment);
            (file, base + offset as u64)
        }
    };
    storage.corrupt(file, at, 0x04);
    storage.crash(PowerCut::DropAllUnsynced)
}

/// Segment 0 used twice: the earlier use wrote "old0" to "old3" (a buffer each, synced), the
/// new use (a later generation) `new` (each synced). Returns the two stores, of
/// the earlier use and of the new one, and segment 0's position.
pub(super) fn two_uses_of_segment_0(
    new: &[&str],
) -> (Arc<SimStorage>, Arc<SimStorage>, (u32, u64)) {
    let opts = small_options();
    let a = SimStorage::new();
    let ea = Engine::open_on(a.clone(), &opts).unwrap();
    for i in 0..4 {
        ea.write(&[put(&format!("old{i}"), b"from the earlier use")])
            .unwrap();
        // Write-behind: write each batch out now, so that each gets a buffer of its own.
        ea.test_wait_flushes();
    }
    ea.sync().unwrap();
    drop(ea);
    let b = SimStorage::new();
    let sb = Superblock::decode(&a.read_superblock().unwrap().unwrap()).unwrap();
    b.write_superblock(
        &Superblock {
            generation_high_water: 1000,
            ..sb
        }
        .encode(),
    )
    .unwrap();
    let eb = Engine::open_on(b.clone(), &opts).unwrap();
    for key in new {
        eb.write(&[put(key, b"from the new use")]).unwrap();
        eb.sync().unwrap();
    }
    drop(eb);
    (a, b, sb.segment_position(0))
}

/// Segment 0 reused: the new use's one buffer ("new"), then buffers of an earlier use of the
/// segment ("old1" to "old3", an older generation) behind it, as a reused segment looks on
/// disk. A new use must never expose its old one (DESIGN.md 4.4).
pub(super) fn earlier_use_behind_a_new_one() -> Arc<SimStorage> {
    let (a, b, (file, base)) = two_uses_of_segment_0(&["new"]);
    // Splice: the new use's first buffer, then the earlier use's later buffers, as a reused
    // segment looks on disk.
    let mut tail = vec![0u8; 3 * BLOCK_SIZE];
    a.read_at(file, base + BLOCK_SIZE as u64, &mut tail)
        .unwrap();
    b.write_at(file, base + BLOCK_SIZE as u64, &tail).unwrap();
    b.sync().unwrap();
    b
}

/// Keys copied by compaction, one pass each, into the buffers of one group-owned segment.
pub(super) const COPIED: [&str; 3] = ["c0", "c1", "c2"];

/// Builds a store where compaction copied `COPIED[i]` in pass `i` into one group-owned segment
/// (one buffer of copies per pass), freeing each source. Older versions of the three keys stay
/// on disk, dead, in a segment too full to compact. Everything is synced. Returns the engine
/// (background paused), the copies' segment and every key's expected value.
pub(super) fn buffers_of_copies(
    storage: &Arc<SimStorage>,
) -> (Engine, u32, Vec<(String, Vec<u8>)>) {
    buffers_of_copies_cut(storage, None, false).0
}

/// Power-cut images taken at steps of the last pass: (step number, step name, image).
pub(super) type CutImages = Vec<(usize, &'static str, Arc<SimStorage>)>;

/// [`buffers_of_copies`], taking a power-cut image (`cut`) at every step of the last pass.
/// With `log_busy`, an unsynced user batch waits when the last pass starts: the sync after the
/// pass makes its copies durable, and the reclamation writes their entries before its marker
/// sync (no sync of its own for them).
#[allow(clippy::type_complexity)]
pub(super) fn buffers_of_copies_cut(
    storage: &Arc<SimStorage>,
    cut: Option<PowerCut>,
    log_busy: bool,
) -> ((Engine, u32, Vec<(String, Vec<u8>)>), CutImages) {
    let images: Arc<parking_lot::Mutex<CutImages>> = Default::default();
    let engine = Engine::open_on(storage.clone(), &small_options()).unwrap();
    engine.test_pause_background();
    let junk = vec![9u8; 60 << 10];
    let mut expected: Vec<(String, Vec<u8>)> = Vec::new();
    let old: Vec<Mutation> = COPIED.iter().map(|k| put(k, &[1u8; 3000])).collect();
    engine.write(&old).unwrap();
    // Keepers until the segment closes: full of live data, it is never compacted.
    for i in 0.. {
        if engine.test_segment_of(b"c0").unwrap().1 {
            break;
        }
        let keeper = (format!("keeper{i}"), vec![10 + i as u8; (80 << 10) - 200]);
        engine.write(&[put(&keeper.0, &keeper.1)]).unwrap();
        engine.test_wait_flushes();
        expected.push(keeper);
    }
    let (old_segment, _) = engine.test_segment_of(b"c0").unwrap();
    let mut copies = None;
    for (pass, key) in COPIED.iter().enumerate() {
        // The new version and junk that dies: its segment becomes a compaction victim.
        let value = vec![2 + pass as u8; 3000];
        engine.write(&[put(key, &value)]).unwrap();
        expected.push((key.to_string(), value));
        for j in 0..4 {
            engine
                .write(&[put(&format!("junk{pass}-{j}"), &junk)])
                .unwrap();
        }
        for j in 0..4 {
            engine
                .write(&[Mutation::delete(
                    ROOT_GROUP,
                    format!("junk{pass}-{j}").into_bytes(),
                )])
                .unwrap();
        }
        // Filler that stays, until the victim's segment closes.
        for n in 0.. {
            if engine.test_segment_of(key.as_bytes()).unwrap().1 {
                break;
            }
            let filler = (format!("filler{pass}-{n}"), vec![20 + n as u8; 100 << 10]);
            engine.write(&[put(&filler.0, &filler.1)]).unwrap();
            engine.test_wait_flushes();
            expected.push(filler);
        }
        engine.sync().unwrap();
        let (source, closed) = engine.test_segment_of(key.as_bytes()).unwrap();
        assert!(closed && source != old_segment);
        if log_busy && pass + 1 == COPIED.len() {
            engine.write(&[put("unsynced", b"u")]).unwrap();
        }
        if let Some(cut) = cut.filter(|_| pass + 1 == COPIED.len()) {
            let (storage, images) = (storage.clone(), images.clone());
            engine.test_set_step_hook(Some(Box::new(move |step| {
                let mut images = images.lock();
                let n = images.len();
                images.push((n, step, storage.crash(cut)));
            })));
        }
        assert!(
            engine.test_compact().unwrap() > 0,
            "pass {pass} copied nothing"
        );
        engine.test_set_step_hook(None);
        let (copy, _) = engine.test_segment_of(key.as_bytes()).unwrap();
        assert_ne!(copy, source, "pass {pass} did not move {key}");
        assert_eq!(*copies.get_or_insert(copy), copy, "one segment of copies");
        assert_eq!(
            engine.inner.segments.info(source).state,
            SegmentState::Free,
            "the source of {key} is freed"
        );
    }
    assert!(
        engine.inner.segments.info(old_segment).state != SegmentState::Free,
        "the old versions stay on disk"
    );
    // The table proves exactly what was written (and synced) of this use, no more.
    let info = engine.inner.segments.info(copies.unwrap());
    assert_eq!(
        engine.inner.segments.sync_table.proof(copies.unwrap()),
        Some(synctable::Proof {
            generation: info.generation,
            synced_end: info.used,
        })
    );
    let images = std::mem::take(&mut *images.lock());
    ((engine, copies.unwrap(), expected), images)
}

/// A store where compaction copied `COPIED[i]` in pass `i` into one group-owned segment (one
/// buffer of copies per pass), freeing each source; older versions of the three keys stay on
/// disk, dead. Everything synced; the copies of `COPIED[w]` for each `w` in `which` damaged,
/// then the power cut. Returns the image and every key's expected value.
pub(super) fn damaged_copies(which: &[usize]) -> (Arc<SimStorage>, Vec<(String, Vec<u8>)>) {
    let storage = SimStorage::new();
    let (engine, copies, expected) = buffers_of_copies(&storage);
    let buffers = buffer_offsets(&storage, copies);
    assert_eq!(buffers.len(), COPIED.len(), "one buffer per pass");
    for &w in which {
        let key = COPIED[w];
        let (segment, offset) = damage_value_of(&engine, &storage, key.as_bytes());
        assert!(
            segment == copies
                && offset > buffers[w]
                && buffers.get(w + 1).is_none_or(|&next| offset < next),
            "the copy of {key} is in buffer {w}: {buffers:?}, copy at {offset}"
        );
    }
    drop(engine);
    (storage.crash(PowerCut::DropAllUnsynced), expected)
}

/// A group-owned segment of copies ("z", "y", "x" of 20 KiB of bytes 1, 2 and 3, one
/// separator run each, their sources freed: the copies are the only ones left), closed
/// cleanly, whose buffer holding "y" (synced long ago) is then damaged: the copies behind the
/// damaged buffer must still be served.
pub(super) fn damaged_copy_before_others() -> Arc<SimStorage> {
    let storage = SimStorage::new();
    let engine = Engine::open_on(storage.clone(), &separator_options()).unwrap();
    engine.test_pause_background();
    let filler = vec![6u8; 50 << 10];
    for (i, key) in ["z", "y", "x"].iter().enumerate() {
        engine
            .write(&[group_put(5, key.to_string(), &[i as u8 + 1; 20 << 10])])
            .unwrap();
        for j in 0..6 {
            engine
                .write(&[group_put(6, format!("fill{i}-{j}"), &filler)])
                .unwrap();
        }
        // Separate, sync, and free the sources: the copies are the only ones left.
        engine.test_separate().unwrap();
    }
    let (seg, _) = engine.test_segment_of(b"y").unwrap();
    assert_eq!(engine.test_segment_of(b"x").unwrap().0, seg);
    engine.close().unwrap();
    flip_a_byte_of_value(&storage, seg, 2);
    storage
}

/// [`damaged_copy_before_others`] after a power cut, with the sync table zeroed (its sector
/// lost): nothing but the rule that copies behind a failing stretch are taken whatever it was
/// keeps "x".
pub(super) fn damaged_copies_without_the_table() -> Arc<SimStorage> {
    without_the_sync_table(&damaged_copy_before_others())
}

/// `storage` after a power cut, with its sync table zeroed (its sector lost): no proof of any
/// segment's synced end.
pub(super) fn without_the_sync_table(storage: &SimStorage) -> Arc<SimStorage> {
    let unproven = storage.crash(PowerCut::DropAllUnsynced);
    let table_len = unproven.file_len(synctable::SYNC_TABLE_FILE).unwrap() as usize;
    unproven
        .write_at(synctable::SYNC_TABLE_FILE, 0, &vec![0u8; table_len])
        .unwrap();
    unproven
}

/// A segment of copies (two separator runs of two groups' keys) whose first buffer header's
/// version, kind, flags, generation and first LSN are garbage: the next valid buffer of its use
/// says it holds copies. Returns the image and every key's value.
pub(super) fn copies_with_a_garbled_first_header() -> (Arc<SimStorage>, Vec<(String, Vec<u8>)>) {
    let storage = SimStorage::new();
    let engine = Engine::open_on(storage.clone(), &separator_options()).unwrap();
    engine.test_pause_background();
    let mut expected = Vec::new();
    // Two groups in every mixed segment: the separator copies them (a one-group segment would
    // be handed over, mixed on disk). Two runs of it: two buffers in a group's segment.
    for i in 0..240u32 {
        let group = 1 + i % 2;
        let key = format!("g{group}/k{i:03}");
        let value = vec![(i % 251) as u8 | 1; 3000];
        engine
            .write(&[group_put(group, key.clone(), &value)])
            .unwrap();
        if i % 4 == 3 {
            engine.sync().unwrap();
        }
        if i % 120 == 119 {
            engine.test_separate().unwrap();
        }
        expected.push((key, value));
    }
    engine.sync().unwrap();
    let sb = Superblock::decode(&storage.read_superblock().unwrap().unwrap()).unwrap();
    let segment = engine
        .test_segment_images()
        .into_iter()
        .find(|(segment, _, _, _, image)| {
            image[6] == SegmentKind::Group as u8
                && scan::valid_buffers(image, *segment, sb.generation_high_water).len() >= 2
        })
        .map(|(segment, ..)| segment)
        .expect("a segment of copies of two buffers or more");
    let first_len = {
        let (file, base) = sb.segment_position(segment);
        let mut head = vec![0u8; BLOCK_SIZE];
        storage.read_at(file, base, &mut head).unwrap();
        BufferHeader::buffer_len_field(&head) as u32
    };
    let in_first = expected
        .iter()
        .filter(|(k, _)| {
            engine
                .test_location_of(k.as_bytes())
                .is_some_and(|(s, at)| s == segment && at < first_len)
        })
        .count();
    assert!(in_first > 0, "no key in the first buffer");
    eprintln!("{in_first} keys in the first buffer of segment {segment}");
    drop(engine);
    let (file, base) = sb.segment_position(segment);
    // Version, kind, flags, generation and first LSN.
    for at in 4..24 {
        storage.corrupt(file, base + at, 0xff);
    }
    (storage.crash(PowerCut::DropAllUnsynced), expected)
}

/// The victim's single-block log buffer all garbage, its record directory with it (a later
/// buffer vouches for it): nothing names its records any more, the limit of what record
/// directories can name; the damage must at least not be silent.
pub(super) fn damaged_buffer_and_its_directory() -> Arc<SimStorage> {
    let storage = SimStorage::new();
    let engine = Engine::open_on(storage.clone(), &small_options()).unwrap();
    engine.test_pause_background();
    engine.write(&[put("victim", b"older version")]).unwrap();
    engine.sync().unwrap();
    engine.write(&[put("victim", &[b'V'; 1000])]).unwrap();
    engine.sync().unwrap();
    engine.write(&[put("after", b"a")]).unwrap();
    engine.sync().unwrap();
    let (segment, victim_at) = engine.test_location_of(b"victim").unwrap();
    drop(engine);
    let sb = Superblock::decode(&storage.read_superblock().unwrap().unwrap()).unwrap();
    let (file, base) = sb.segment_position(segment);
    let block = victim_at as u64 / BLOCK_SIZE as u64 * BLOCK_SIZE as u64;
    for at in block..block + BLOCK_SIZE as u64 {
        storage.corrupt(file, base + at, 0x5a);
    }
    storage.crash(PowerCut::DropAllUnsynced)
}

/// Builds a log whose closed mixed segments end in buffers no later buffer vouches for:
/// "victim" (old version, small) and two fillers fill segment S0 (a sync); a marker, "g" and
/// the new "victim" (`V` bytes) fill segment S1, whose last buffer holds the new victim and
/// closes it; a sync; "later1" goes to S2; a sync; then "later2" and a sync. With `hand_over`,
/// the separator then hands S0 and S1 to group 0 whole (they stay mixed segments on disk).
/// Returns the engine, S1, and every key's final value.
pub(super) fn log_with_a_closed_synced_segment(
    storage: &Arc<SimStorage>,
    hand_over: bool,
) -> (Engine, u32, Vec<(String, Vec<u8>)>) {
    log_with_a_closed_synced_segment_cut(storage, hand_over, None).0
}

/// Power-cut images of [`log_with_a_closed_synced_segment_cut`]: (step, image, every key's
/// value as of the last completed sync, all of which the image must serve).
pub(super) type LogCutImages = Vec<(String, Arc<SimStorage>, KeyValues)>;

/// Every key and its value.
pub(super) type KeyValues = Vec<(String, Vec<u8>)>;

/// [`log_with_a_closed_synced_segment`], and with `cut` the storage a power cut of that kind
/// leaves at every step of every sync, separator run and reclamation (in a sync: once its
/// storage sync returned and its log segments' entries were written, before they are synced),
/// and right after every sync.
pub(super) fn log_with_a_closed_synced_segment_cut(
    storage: &Arc<SimStorage>,
    hand_over: bool,
    cut: Option<PowerCut>,
) -> ((Engine, u32, KeyValues), LogCutImages) {
    let engine = Engine::open_on(storage.clone(), &small_options()).unwrap();
    engine.test_pause_background();
    let big = 120 << 10;
    let images: Arc<parking_lot::Mutex<LogCutImages>> = Default::default();
    // Every key's value as of the last completed log sync.
    let durable: Arc<parking_lot::Mutex<KeyValues>> = Default::default();
    if let Some(cut) = cut {
        let (storage, images, durable) = (storage.clone(), images.clone(), durable.clone());
        engine.test_set_step_hook(Some(Box::new(move |step| {
            let image = storage.crash(cut);
            images
                .lock()
                .push((step.to_string(), image, durable.lock().clone()));
        })));
    }
    let mut expected = Vec::new();
    let mut write = |key: &str, value: Vec<u8>| {
        engine.write(&[put(key, &value)]).unwrap();
        // Each batch in a buffer of its own.
        engine.test_wait_flushes();
        expected.retain(|(k, _): &(String, Vec<u8>)| k != key);
        expected.push((key.to_string(), value));
        expected.clone()
    };
    let sync = |state: Vec<(String, Vec<u8>)>, n: usize| {
        // The step hook inside the sync runs once its log sync returned: all of `state` is
        // durable by then.
        *durable.lock() = state.clone();
        engine.sync().unwrap();
        if let Some(cut) = cut {
            images
                .lock()
                .push((format!("after sync {n}"), storage.crash(cut), state));
        }
    };
    let state = write("victim", b"old version".to_vec());
    sync(state, 1);
    write("f1", vec![b'1'; big]);
    // S0 closes: this sync writes its entry, and a marker, the first buffer of S1.
    let state = write("f2", vec![b'2'; big]);
    sync(state, 2);
    write("g", vec![b'g'; big]);
    // S1 closes when this buffer is sealed: too little room is left behind it.
    let state = write("victim", vec![b'V'; big]);
    sync(state, 3);
    let state = write("later1", vec![b'L'; big]);
    sync(state, 4);
    let state = write("later2", b"two".to_vec());
    sync(state.clone(), 5);
    let expected = state;
    let (s0, _) = engine.test_segment_of(b"f1").unwrap();
    let (s1, _) = engine.test_segment_of(b"victim").unwrap();
    let (s2, _) = engine.test_segment_of(b"later1").unwrap();
    assert_eq!(engine.test_segment_of(b"g").unwrap().0, s1);
    assert!(s0 != s1 && s1 != s2 && s0 != s2, "{s0} {s1} {s2}");
    assert_eq!(engine.inner.segments.info(s1).state, SegmentState::Closed);
    let offsets = buffer_offsets(storage, s1);
    let victim_at = engine.inner.index.get(b"victim").unwrap().location.offset as usize;
    assert_eq!(offsets.len(), 3, "marker, g, victim: {offsets:?}");
    assert!(victim_at > offsets[2], "the victim is in S1's last buffer");
    if hand_over {
        engine.test_separate().unwrap();
        assert_eq!(engine.inner.segments.info(s1).kind, SegmentKind::Group);
        assert_eq!(
            engine.test_segment_of(b"victim").unwrap().0,
            s1,
            "not copied"
        );
    }
    engine.test_set_step_hook(None);
    // The table proves exactly what was written of S1's use.
    let info = engine.inner.segments.info(s1);
    assert_eq!(
        engine.inner.segments.sync_table.proof(s1),
        Some(synctable::Proof {
            generation: info.generation,
            synced_end: info.used,
        })
    );
    let images = std::mem::take(&mut *images.lock());
    ((engine, s1, expected), images)
}

/// A closed, synced log segment S1 whose last buffer (the new "victim", `V` bytes) is damaged
/// together with its record directory, so that only the sync table's entry for S1 proves it
/// synced: "victim" (old version) and fillers fill S0, "g" and the new "victim" fill S1,
/// "later1" and "later2" follow in S2, each batch in a buffer of its own, synced between (see
/// [`log_with_a_closed_synced_segment`], also for `hand_over`). Returns the image and every
/// key's value.
pub(super) fn damaged_last_buffer_of_a_closed_log_segment(
    hand_over: bool,
) -> (Arc<SimStorage>, KeyValues) {
    let storage = SimStorage::new();
    let (engine, s1, expected) = log_with_a_closed_synced_segment(&storage, hand_over);
    let (segment, offset) = damage_value_of(&engine, &storage, b"victim");
    assert_eq!(segment, s1);
    let start = damage_directory_of_buffer_holding(&storage, segment, offset);
    drop(engine);
    assert!(
        buffer_offsets(&storage, segment)
            .iter()
            .all(|&pos| pos < start),
        "the victim's buffer is the segment's last"
    );
    (storage.crash(PowerCut::DropAllUnsynced), expected)
}

/// Damage to the victim's record's own header or key (byte `delta` of the record, bits
/// `mask`), in a log buffer a later synced one vouches for: its buffer's record directory
/// still names it ("before" and "behind" share its buffer, "after" is in the next one).
pub(super) fn damaged_record_header_or_key(delta: u32, mask: u8) -> Arc<SimStorage> {
    let storage = SimStorage::new();
    let engine = Engine::open_on(storage.clone(), &small_options()).unwrap();
    engine.test_pause_background();
    engine.write(&[put("victim", b"older version")]).unwrap();
    engine.sync().unwrap();
    engine
        .write(&[
            put("before", &[b'B'; 200]),
            put("victim", &[b'V'; 1000]),
            put("behind", &[b'N'; 300]),
        ])
        .unwrap();
    engine.sync().unwrap();
    // A later synced buffer vouches that the damaged one had been synced: damage, not a torn
    // write.
    engine.write(&[put("after", b"a")]).unwrap();
    engine.sync().unwrap();
    let sb = Superblock::decode(&storage.read_superblock().unwrap().unwrap()).unwrap();
    let (segment, offset) = engine.test_location_of(b"victim").unwrap();
    let (file, base) = sb.segment_position(segment);
    storage.corrupt(file, base + (offset + delta) as u64, mask);
    drop(engine);
    storage.crash(PowerCut::DropAllUnsynced)
}

/// (what is damaged, byte of the record, bits flipped); the layout is in format.rs.
pub(super) const RECORD_DAMAGE: [(&str, u32, u8); 6] = [
    ("its CRC", 1, 0x01),
    ("its kind", 4, 0x07),
    ("its key length", 6, 0x01),
    ("its value length", 13, 0x40),
    ("its version", 17, 0x10),
    ("its key", 24 + 3, 0x20),
];

/// The first buffer of a segment ("first", then "second" in the next buffer) whose header's
/// bytes `garbled` are garbage (the generation field among them), in a store of an older
/// superblock too.
pub(super) fn garbled_first_generation(
    garbled: std::ops::Range<u64>,
    older_superblock: bool,
) -> Arc<SimStorage> {
    let (storage, engine, segment) = first_in_a_segments_first_buffer();
    engine.write(&[put("second", &[b'S'; 3000])]).unwrap();
    engine.sync().unwrap();
    drop(engine);
    let sb = Superblock::decode(&storage.read_superblock().unwrap().unwrap()).unwrap();
    if older_superblock {
        mark_superblock_version_2(&storage);
    }
    let (file, base) = sb.segment_position(segment);
    for at in garbled {
        storage.corrupt(file, base + at, 0xff);
    }
    storage.crash(PowerCut::DropAllUnsynced)
}

/// (case, header bytes garbled, older superblock) for [`garbled_first_generation`]: a whole
/// sector of garbage too, as the store's frees clear a first buffer's directory
/// (`Superblock::frees_clear_directories_from`), so the directory alone tells the use. Not in a
/// store whose superblock is older (version 2: its frees did not clear it), where the header
/// must still be recognisable.
pub(super) const GARBLED_FIRST_HEADERS: [(&str, std::ops::Range<u64>, bool); 5] = [
    ("magic kept", 4..24, false),
    ("length kept", 0..24, false),
    ("whole sector", 0..512, false),
    ("magic kept, older superblock", 4..24, true),
    ("length kept, older superblock", 0..24, true),
];

/// The newest synced log buffer (the victim's newer version, "neighbour" beside it) damaged,
/// with nothing behind it but the marker that `scenario` writes: "close" (a clean close),
/// "crash, reopen" or "close, reopen" (an open, then a crash), "idle" (writes pause, and the
/// background thread writes it). Nothing else vouched that the buffer had been synced, so it
/// looked like a torn write; the marker vouches for it through its record directory, or the
/// directory ends a log tail.
pub(super) fn damaged_newest_synced_log_buffer(scenario: &str) -> Arc<SimStorage> {
    let storage = SimStorage::new();
    let engine = Engine::open_on(storage.clone(), &small_options()).unwrap();
    if scenario != "idle" {
        engine.test_pause_background();
    }
    engine.write(&[put("victim", b"older version")]).unwrap();
    engine.sync().unwrap();
    engine
        .write(&[put("neighbour", &[b'N'; 500]), put("victim", &[b'V'; 1000])])
        .unwrap();
    engine.sync().unwrap();
    let storage = match scenario {
        "close" => {
            engine.close().unwrap();
            storage
        }
        "crash, reopen" | "close, reopen" => {
            let storage = if scenario == "close, reopen" {
                engine.close().unwrap();
                storage
            } else {
                drop(engine);
                storage.crash(PowerCut::DropAllUnsynced)
            };
            // Opened (a checkpoint, or a scan), then crashed: nothing written since.
            drop(Engine::open_on(storage.clone(), &small_options()).unwrap());
            storage
        }
        "idle" => {
            // Writes pause: the background thread writes the marker within seconds.
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while engine.inner.log.newest_batches_unvouched() {
                assert!(std::time::Instant::now() < deadline, "no marker while idle");
                std::thread::sleep(Duration::from_millis(50));
            }
            drop(engine);
            storage
        }
        _ => panic!("no scenario {scenario}"),
    };
    damage_every_copy_of(&storage, b'V');
    // A power cut: no checkpoint can stand in for the scan.
    storage.crash(PowerCut::DropAllUnsynced)
}

/// Two log buffers in a row, "a1"'s and then "b1" and "b2"'s, whose headers are both damaged
/// past repair (magic and first LSN), and "b1"'s key, with valid buffers behind ("c", "d")
/// that vouch for them. Neither header gives its buffer's end, so the stretch's record
/// directories are searched from "a1"'s buffer on: the one found is "b1"/"b2"'s, at the
/// stretch's end, which must lay out its records from its own buffer's start (its trailer's
/// length), not from where the search began; "a1"'s buffer before it is walked.
pub(super) fn two_log_buffers_damaged_in_their_headers() -> Arc<SimStorage> {
    let storage = SimStorage::new();
    let engine = Engine::open_on(storage.clone(), &small_options()).unwrap();
    engine.test_pause_background();
    let batches: [&[Mutation]; 5] = [
        &[put("x", b"X")],
        &[put("a1", &[b'A'; 100])],
        &[put("b1", &[b'B'; 2000]), put("b2", &[b'b'; 100])],
        &[put("c", b"C")],
        &[put("d", b"D")],
    ];
    for batch in batches {
        engine.write(batch).unwrap();
        engine.sync().unwrap();
    }
    let at = |key: &[u8]| engine.test_location_of(key).unwrap();
    let (segment, a1_at) = at(b"a1");
    let (b1_at, b2_at) = (at(b"b1").1 as usize, at(b"b2").1 as usize);
    assert!(at(b"x").0 == segment && at(b"b1").0 == segment && at(b"d").0 == segment);
    drop(engine);
    let a_start = a1_at as usize - format::BUFFER_HEADER_SIZE;
    let b_start = b1_at - format::BUFFER_HEADER_SIZE;
    assert!(a_start > 0 && a_start + BLOCK_SIZE == b_start && b2_at > b1_at);
    let sb = Superblock::decode(&storage.read_superblock().unwrap().unwrap()).unwrap();
    let (file, base) = sb.segment_position(segment);
    // Header bytes 0 (magic) and 16 (first LSN, which nothing else records).
    for at in [
        a_start,
        a_start + 16,
        b_start,
        b1_at + format::RECORD_HEADER_SIZE,
    ] {
        storage.corrupt(file, base + at as u64, 0x02);
    }
    storage.crash(PowerCut::DropAllUnsynced)
}
