//! Each damage rule of the one segment scan seen from both sides, on the same damaged image:
//! a `..._recovery` test opens the image and reads it (recovery acts on the scan's verdicts),
//! and a `..._fsck` test checks the image offline (fsck reports them). Recovery and fsck share
//! the rule, so breaking it must fail both: `scripts/mutants.py` names one test of each side.

use super::*;

/// A log segment whose first buffer holds the damaged key "victim" (its value and its record
/// directory damaged, and the header byte `header_byte` if any: its magic, version or segment
/// index), with later buffers of the segment intact ("neighbour" in the same buffer, "after"
/// in the next): the segment's use is known from the header's generation field and the valid
/// buffers of that generation behind it.
fn damaged_first_log_buffer(header_byte: Option<u64>) -> Arc<SimStorage> {
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

const FIRST_BUFFER_HEADER_BYTES: [Option<u64>; 4] = [None, Some(0), Some(4), Some(57)];

#[test]
fn damage_in_a_log_segments_first_buffer_recovery() {
    for header_byte in FIRST_BUFFER_HEADER_BYTES {
        let storage = damaged_first_log_buffer(header_byte);
        let engine = Engine::open_on(storage, &small_options()).unwrap();
        assert_reads_as_damaged(&engine, b"victim", &format!("header byte {header_byte:?}"));
        assert_eq!(engine.get(b"neighbour").unwrap().unwrap(), vec![b'N'; 300]);
        assert_eq!(engine.get(b"after").unwrap().as_deref(), Some(&b"a"[..]));
    }
}

#[test]
fn damage_in_a_log_segments_first_buffer_fsck() {
    for header_byte in FIRST_BUFFER_HEADER_BYTES {
        eprintln!("case: header byte {header_byte:?}");
        let c = fsck_names_only_the_victim(&*damaged_first_log_buffer(header_byte));
        assert!(c.live.contains_key(&b"neighbour"[..]), "{:?}", c.findings);
        assert!(c.live.contains_key(&b"after"[..]), "{:?}", c.findings);
    }
}

/// A log segment whose only buffer (holding "victim", the value `value`) fails its CRC, a
/// batch of a later segment behind it vouching for it; in a store of an older superblock too
/// (`older_superblock`: its frees did not clear first directories).
fn damaged_only_log_buffer(older_superblock: bool) -> (Arc<SimStorage>, u32, Vec<u8>) {
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
    for (pos, _) in scan::valid_buffers(&image, segment, sb.generation_high_water) {
        storage.corrupt(file, base + pos as u64 + 61, 0x01);
    }
    if older_superblock {
        mark_superblock_version_2(&storage);
    }
    (storage.crash(PowerCut::DropAllUnsynced), segment, value(i))
}

#[test]
fn a_log_segments_only_buffer_damaged_recovery() {
    for older_superblock in [false, true] {
        let (storage, _, value) = damaged_only_log_buffer(older_superblock);
        let engine = Engine::open_on(storage, &small_options()).unwrap();
        assert_eq!(
            engine.get(b"victim").unwrap().unwrap(),
            value,
            "older superblock: {older_superblock}"
        );
    }
}

#[test]
fn a_log_segments_only_buffer_damaged_fsck() {
    for older_superblock in [false, true] {
        let (storage, segment, _) = damaged_only_log_buffer(older_superblock);
        let c = fsck(&*storage);
        assert!(c.damaged.is_empty(), "{:?}", c.damaged);
        assert_eq!(c.problems(), 0, "{:?}", c.findings);
        assert_eq!(
            c.live.get(&b"victim"[..]).map(|r| r.place.segment),
            Some(segment),
            "older superblock {older_superblock}: {:?}",
            c.findings
        );
    }
}

/// The victim's log buffer, sealed before the one behind it was synced (that one's floor does
/// not cover it; a later buffer's does), damaged.
fn damaged_log_buffer_sealed_early() -> (Arc<SimStorage>, EngineOptions) {
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
    for (_, (file, base), image) in segment_images(&storage) {
        if let Some(at) = image.windows(64).position(|w| w == [b'V'; 64]) {
            storage.corrupt(file, base + at as u64 + 100, 0xff);
        }
    }
    (storage.crash(PowerCut::DropAllUnsynced), options)
}

#[test]
fn damage_in_a_log_buffer_sealed_early_recovery() {
    let (storage, options) = damaged_log_buffer_sealed_early();
    let engine = Engine::open_on(storage, &options).unwrap();
    assert_reads_as_damaged(&engine, b"victim", "sealed before");
    assert_eq!(engine.get(b"big").unwrap().unwrap(), vec![b'B'; 127 << 10]);
    assert_eq!(engine.get(b"later").unwrap().unwrap(), b"L");
}

#[test]
fn damage_in_a_log_buffer_sealed_early_fsck() {
    let (storage, _) = damaged_log_buffer_sealed_early();
    let c = fsck_names_only_the_victim(&*storage);
    assert!(c.live.contains_key(&b"later"[..]), "{:?}", c.findings);
}

/// The first buffer of a segment ("first", then "second" in the next buffer) whose header's
/// bytes `garbled` are garbage (the generation field among them), in a store of an older
/// superblock too.
fn garbled_first_generation(
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

const GARBLED_FIRST_HEADERS: [(&str, std::ops::Range<u64>, bool); 5] = [
    ("magic kept", 4..24, false),
    ("length kept", 0..24, false),
    ("whole sector", 0..512, false),
    ("magic kept, older superblock", 4..24, true),
    ("length kept, older superblock", 0..24, true),
];

#[test]
fn a_first_buffer_with_a_garbled_generation_field_recovery() {
    for (case, garbled, older_superblock) in GARBLED_FIRST_HEADERS {
        let storage = garbled_first_generation(garbled, older_superblock);
        let engine = Engine::open_on(storage, &small_options()).unwrap();
        if case == "whole sector" {
            assert_reads_as_damaged(&engine, b"first", case);
        } else {
            let first = engine.get(b"first").unwrap();
            assert_eq!(first, Some(vec![b'F'; 3000]), "{case}");
        }
        let second = engine.get(b"second").unwrap();
        assert_eq!(second, Some(vec![b'S'; 3000]), "{case}");
    }
}

#[test]
fn a_first_buffer_with_a_garbled_generation_field_fsck() {
    for (case, garbled, older_superblock) in GARBLED_FIRST_HEADERS {
        let c = fsck(&*garbled_first_generation(garbled, older_superblock));
        if case == "whole sector" {
            let damaged: Vec<&[u8]> = c.damaged.iter().map(|d| &d.key[..]).collect();
            assert_eq!(damaged, [&b"first"[..]], "{case}: {:?}", c.findings);
        } else {
            assert_eq!(c.problems(), 0, "{case}: {:?}", c.findings);
            assert!(
                c.live.contains_key(&b"first"[..]),
                "{case}: {:?}",
                c.findings
            );
        }
        assert!(
            c.live.contains_key(&b"second"[..]),
            "{case}: {:?}",
            c.findings
        );
    }
}

/// Segment 0 reused: the new use's one buffer ("new"), then buffers of an earlier use of the
/// segment ("old1" to "old3", an older generation) behind it.
fn earlier_use_behind_a_new_one() -> Arc<SimStorage> {
    let opts = small_options();
    let a = SimStorage::new();
    let ea = Engine::open_on(a.clone(), &opts).unwrap();
    for i in 0..4 {
        ea.write(&[put(&format!("old{i}"), b"from the earlier use")])
            .unwrap();
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
    eb.write(&[put("new", b"from the new use")]).unwrap();
    eb.sync().unwrap();
    drop(eb);
    let (file, base) = sb.segment_position(0);
    let mut tail = vec![0u8; 3 * BLOCK_SIZE];
    a.read_at(file, base + BLOCK_SIZE as u64, &mut tail)
        .unwrap();
    b.write_at(file, base + BLOCK_SIZE as u64, &tail).unwrap();
    b.sync().unwrap();
    b
}

#[test]
fn buffers_of_an_earlier_use_behind_a_new_one_recovery() {
    let engine = Engine::open_on(earlier_use_behind_a_new_one(), &small_options()).unwrap();
    assert_eq!(
        engine.get(b"new").unwrap().as_deref(),
        Some(&b"from the new use"[..])
    );
    for i in 1..4 {
        let old = engine.get(format!("old{i}").as_bytes()).unwrap();
        assert_eq!(old, None, "old{i} came back");
    }
}

#[test]
fn buffers_of_an_earlier_use_behind_a_new_one_fsck() {
    let c = fsck(&*earlier_use_behind_a_new_one());
    assert_eq!(c.problems(), 0, "{:?}", c.findings);
    assert!(c.live.contains_key(&b"new"[..]), "{:?}", c.findings);
    for i in 1..4 {
        let old = format!("old{i}");
        assert!(
            !c.live.contains_key(old.as_bytes()),
            "{old} live: {:?}",
            c.live
        );
    }
}

/// The newest synced log buffer (the victim's newer version) damaged, with nothing behind it
/// but the marker that `scenario` writes (a clean close; an open after a crash or a close):
/// the marker vouches for it through its record directory, or the directory ends a log tail.
fn damaged_newest_synced_log_buffer(scenario: &str) -> Arc<SimStorage> {
    let storage = SimStorage::new();
    let engine = Engine::open_on(storage.clone(), &small_options()).unwrap();
    engine.test_pause_background();
    engine.write(&[put("victim", b"older version")]).unwrap();
    engine.sync().unwrap();
    engine
        .write(&[put("neighbour", &[b'N'; 500]), put("victim", &[b'V'; 1000])])
        .unwrap();
    engine.sync().unwrap();
    let storage = if scenario == "crash, reopen" {
        drop(engine);
        let storage = storage.crash(PowerCut::DropAllUnsynced);
        drop(Engine::open_on(storage.clone(), &small_options()).unwrap());
        storage
    } else {
        engine.close().unwrap();
        storage
    };
    let mut hits = 0;
    for (_, (file, base), image) in segment_images(&storage) {
        if let Some(at) = image.windows(64).position(|w| w == [b'V'; 64]) {
            storage.corrupt(file, base + at as u64 + 100, 0xff);
            hits += 1;
        }
    }
    assert!(hits > 0, "the value is in no segment");
    storage.crash(PowerCut::DropAllUnsynced)
}

const NEWEST_SYNCED_SCENARIOS: [&str; 2] = ["close", "crash, reopen"];

#[test]
fn damage_in_the_newest_synced_log_buffer_recovery() {
    for scenario in NEWEST_SYNCED_SCENARIOS {
        let storage = damaged_newest_synced_log_buffer(scenario);
        let engine = Engine::open_on(storage, &small_options()).unwrap();
        assert_reads_as_damaged(&engine, b"victim", scenario);
        let neighbour = engine.get(b"neighbour").unwrap();
        assert_eq!(neighbour, Some(vec![b'N'; 500]), "{scenario}");
    }
}

#[test]
fn damage_in_the_newest_synced_log_buffer_fsck() {
    for scenario in NEWEST_SYNCED_SCENARIOS {
        eprintln!("case: {scenario}");
        let c = fsck_names_only_the_victim(&*damaged_newest_synced_log_buffer(scenario));
        assert!(c.live.contains_key(&b"neighbour"[..]), "{:?}", c.findings);
    }
}

/// Damage to the victim's record's own header or key (byte `delta` of the record, bits
/// `mask`), in a log buffer a later synced one vouches for: its buffer's record directory
/// still names it ("before" and "behind" share its buffer, "after" is in the next one).
fn damaged_record_header_or_key(delta: u32, mask: u8) -> Arc<SimStorage> {
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
const RECORD_DAMAGE: [(&str, u32, u8); 6] = [
    ("its CRC", 1, 0x01),
    ("its kind", 4, 0x07),
    ("its key length", 6, 0x01),
    ("its value length", 13, 0x40),
    ("its version", 17, 0x10),
    ("its key", 24 + 3, 0x20),
];

#[test]
fn damage_to_a_records_header_or_key_recovery() {
    for (what, delta, mask) in RECORD_DAMAGE {
        let storage = damaged_record_header_or_key(delta, mask);
        let engine = Engine::open_on(storage, &small_options()).unwrap();
        assert_reads_as_damaged(&engine, b"victim", what);
        assert_eq!(
            engine.get(b"before").unwrap(),
            Some(vec![b'B'; 200]),
            "{what}"
        );
        assert_eq!(
            engine.get(b"behind").unwrap(),
            Some(vec![b'N'; 300]),
            "{what}"
        );
        assert_eq!(
            engine.get(b"after").unwrap().as_deref(),
            Some(&b"a"[..]),
            "{what}"
        );
    }
}

#[test]
fn damage_to_a_records_header_or_key_fsck() {
    for (what, delta, mask) in RECORD_DAMAGE {
        eprintln!("case: {what}");
        let c = fsck_names_only_the_victim(&*damaged_record_header_or_key(delta, mask));
        for key in [&b"before"[..], b"behind", b"after"] {
            assert!(c.live.contains_key(key), "{what}: {:?}", c.findings);
        }
    }
}

/// The last buffer of a closed log segment ("victim"'s newer version and "h"), proven synced by
/// the sync table but above every durable floor on disk, damaged; recovered once (which drops
/// and zeroes it), then batches reuse its LSNs and raise the floor above them, and the power
/// is cut again.
fn log_tail_dropped_then_its_lsns_reused() -> Arc<SimStorage> {
    let storage = SimStorage::new();
    let engine = Engine::open_on(storage.clone(), &small_options()).unwrap();
    engine.test_pause_background();
    let big = 120 << 10;
    engine.write(&[put("victim", b"old version")]).unwrap();
    engine.sync().unwrap();
    for (k, fill) in [("f1", b'1'), ("f2", b'2'), ("g", b'g')] {
        engine.write(&[put(k, &vec![fill; big])]).unwrap();
        engine.test_wait_flushes();
    }
    engine
        .write(&[
            put("victim", &[b'V'; 120 << 10]),
            put("h", &[b'h'; 10 << 10]),
        ])
        .unwrap();
    engine.test_wait_flushes();
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
    let storage = image.lock().take().expect("a cut inside the sync");
    damage_value_of(&engine, &storage, b"victim");
    drop(engine);
    let engine = Engine::open_on(storage.clone(), &small_options()).unwrap();
    engine.test_pause_background();
    engine.write(&[put("x", b"x")]).unwrap();
    engine.sync().unwrap();
    engine.write(&[put("y", b"y")]).unwrap();
    engine.sync().unwrap();
    drop(engine);
    storage.crash(PowerCut::DropAllUnsynced)
}

#[test]
fn a_dropped_log_tail_whose_lsns_were_reused_recovery() {
    let engine =
        Engine::open_on(log_tail_dropped_then_its_lsns_reused(), &small_options()).unwrap();
    let victim = engine.get(b"victim").unwrap();
    assert_eq!(
        victim.as_deref(),
        Some(&b"old version"[..]),
        "the dropped stretch came back"
    );
    assert_eq!(
        engine.get(b"h").unwrap(),
        None,
        "the dropped stretch came back"
    );
    assert_eq!(engine.get(b"y").unwrap().as_deref(), Some(&b"y"[..]));
}

#[test]
fn a_dropped_log_tail_whose_lsns_were_reused_fsck() {
    let c = fsck(&*log_tail_dropped_then_its_lsns_reused());
    assert!(
        !c.live.contains_key(&b"h"[..]),
        "the dropped stretch came back: {:?}",
        c.findings
    );
    assert!(c.damaged.is_empty(), "{:?}", c.damaged);
    assert!(c.live.contains_key(&b"y"[..]), "{:?}", c.findings);
}

const COPIED: [&str; 3] = ["c0", "c1", "c2"];

/// A store where compaction copied `COPIED[i]` in pass `i` into one group-owned segment (one
/// buffer of copies per pass), freeing each source; older versions of the three keys stay on
/// disk, dead. Everything synced; the copies of `COPIED[w]` for each `w` in `which` damaged,
/// then the power cut. Returns the image and every key's expected value.
fn damaged_copies(which: &[usize]) -> (Arc<SimStorage>, Vec<(String, Vec<u8>)>) {
    let storage = SimStorage::new();
    let engine = Engine::open_on(storage.clone(), &small_options()).unwrap();
    engine.test_pause_background();
    let junk = vec![9u8; 60 << 10];
    let mut expected: Vec<(String, Vec<u8>)> = Vec::new();
    let old: Vec<Mutation> = COPIED.iter().map(|k| put(k, &[1u8; 3000])).collect();
    engine.write(&old).unwrap();
    for i in 0.. {
        if engine.test_segment_of(b"c0").unwrap().1 {
            break;
        }
        let keeper = (format!("keeper{i}"), vec![10 + i as u8; (80 << 10) - 200]);
        engine.write(&[put(&keeper.0, &keeper.1)]).unwrap();
        engine.test_wait_flushes();
        expected.push(keeper);
    }
    let mut copies = None;
    for (pass, key) in COPIED.iter().enumerate() {
        let value = vec![2 + pass as u8; 3000];
        engine.write(&[put(key, &value)]).unwrap();
        expected.push((key.to_string(), value));
        for j in 0..4 {
            let junk_key = format!("junk{pass}-{j}");
            engine.write(&[put(&junk_key, &junk)]).unwrap();
        }
        for j in 0..4 {
            let junk_key = format!("junk{pass}-{j}").into_bytes();
            engine
                .write(&[Mutation::delete(ROOT_GROUP, junk_key)])
                .unwrap();
        }
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
        assert!(
            engine.test_compact().unwrap() > 0,
            "pass {pass} copied nothing"
        );
        let (copy, _) = engine.test_segment_of(key.as_bytes()).unwrap();
        assert_eq!(*copies.get_or_insert(copy), copy, "one segment of copies");
    }
    let buffers = buffer_offsets(&storage, copies.unwrap());
    assert_eq!(buffers.len(), COPIED.len(), "one buffer per pass");
    for &w in which {
        let (_, offset) = damage_value_of(&engine, &storage, COPIED[w].as_bytes());
        assert!(offset > buffers[w] && buffers.get(w + 1).is_none_or(|&next| offset < next));
    }
    drop(engine);
    (storage.crash(PowerCut::DropAllUnsynced), expected)
}

/// Which buffers of copies are damaged: the last (the sync table proves it synced), the
/// middle, the first, and a stretch of the last two.
const DAMAGED_COPIES: [&[usize]; 4] = [&[2], &[1], &[0], &[1, 2]];

#[test]
fn damaged_copies_recovery() {
    for which in DAMAGED_COPIES {
        let (storage, expected) = damaged_copies(which);
        let engine = Engine::open_on(storage, &small_options()).unwrap();
        engine.test_pause_background();
        for (k, value) in &expected {
            let damaged = which.iter().any(|&w| COPIED[w] == k);
            let got = engine.get(k.as_bytes());
            if damaged {
                assert!(
                    matches!(got, Err(EngineError::Corrupt(_))),
                    "{which:?}: the damaged copy of {k} reads as {:?}",
                    got.map(|v| v.map(|v| v[0]))
                );
            } else {
                assert_eq!(got.unwrap().as_ref(), Some(value), "{which:?}: {k}");
            }
        }
    }
}

#[test]
fn damaged_copies_fsck() {
    for which in DAMAGED_COPIES {
        let (storage, expected) = damaged_copies(which);
        let c = fsck(&*storage);
        let named: Vec<&[u8]> = c.damaged.iter().map(|d| &d.key[..]).collect();
        let mut damaged: Vec<&[u8]> = which.iter().map(|&w| COPIED[w].as_bytes()).collect();
        damaged.sort();
        let mut named_sorted = named.clone();
        named_sorted.sort();
        named_sorted.dedup();
        assert_eq!(named_sorted, damaged, "{which:?}: {:?}", c.findings);
        assert!(
            c.findings
                .iter()
                .any(|f| f.severity == check::Severity::Problem && f.what.contains("checksum")),
            "{which:?}: {:?}",
            c.findings
        );
        for (k, _) in &expected {
            if !damaged.contains(&k.as_bytes()) {
                assert!(c.live.contains_key(k.as_bytes()), "{which:?}: {k} not live");
            }
        }
    }
}

/// The victim's single-block log buffer all garbage, its record directory with it (a later
/// buffer vouches for it): nothing names its records any more.
fn damaged_buffer_and_its_directory() -> Arc<SimStorage> {
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

#[test]
fn a_buffer_damaged_with_its_directory_recovery() {
    let engine = Engine::open_on(damaged_buffer_and_its_directory(), &small_options()).unwrap();
    assert_eq!(engine.recovery_report().buffers_unnamed, 1);
    assert_eq!(engine.get(b"after").unwrap().as_deref(), Some(&b"a"[..]));
}

#[test]
fn a_buffer_damaged_with_its_directory_fsck() {
    let c = fsck(&*damaged_buffer_and_its_directory());
    assert!(
        c.findings
            .iter()
            .any(|f| f.severity == check::Severity::Problem
                && f.what.contains("record directory is damaged too")),
        "fsck is silent about unnamed damage: {:?}",
        c.findings
    );
    assert!(c.live.contains_key(&b"after"[..]), "{:?}", c.findings);
}

/// The victim's log buffer written but not synced when the power is cut, damaged (a torn
/// write), with a later buffer of the same use behind it ("after", also unsynced) whose durable
/// floor does not cover it: nothing proves the victim's buffer synced, so the log ends before
/// it and both are discarded; the earlier synced "kept" stays.
fn torn_buffer_with_an_unproven_one_behind() -> Arc<SimStorage> {
    let storage = SimStorage::new();
    let engine = Engine::open_on(storage.clone(), &small_options()).unwrap();
    engine.test_pause_background();
    engine.write(&[put("kept", b"k")]).unwrap();
    engine.sync().unwrap();
    engine.write(&[put("victim", &[b'V'; 3000])]).unwrap();
    engine.test_wait_flushes();
    engine.write(&[put("after", b"a")]).unwrap();
    engine.test_wait_flushes();
    let (segment, victim_at) = engine.test_location_of(b"victim").unwrap();
    let (after_segment, after_at) = engine.test_location_of(b"after").unwrap();
    assert_eq!(after_segment, segment, "one use");
    assert!(
        after_at as usize / BLOCK_SIZE > victim_at as usize / BLOCK_SIZE,
        "after in a later buffer"
    );
    let image = storage.crash(PowerCut::KeepAllWritten);
    damage_value_of(&engine, &image, b"victim");
    drop(engine);
    image
}

#[test]
fn a_torn_buffer_with_an_unproven_one_behind_recovery() {
    let engine =
        Engine::open_on(torn_buffer_with_an_unproven_one_behind(), &small_options()).unwrap();
    assert_eq!(engine.get(b"victim").unwrap(), None, "torn write served");
    assert_eq!(
        engine.get(b"after").unwrap(),
        None,
        "unproven buffer served"
    );
    assert_eq!(engine.get(b"kept").unwrap().as_deref(), Some(&b"k"[..]));
}

#[test]
fn a_torn_buffer_with_an_unproven_one_behind_fsck() {
    let c = fsck(&*torn_buffer_with_an_unproven_one_behind());
    assert_eq!(
        c.problems(),
        0,
        "a torn tail called damage: {:?}",
        c.findings
    );
    // The log ends at the torn buffer; "after" is stranded behind it, not a batch taken in
    // and then discarded for following a missing one.
    assert!(
        !c.findings.iter().any(|f| f.what.contains("is missing")),
        "the scan went past the torn buffer: {:?}",
        c.findings
    );
    assert!(c.damaged.is_empty(), "{:?}", c.damaged);
    assert!(!c.live.contains_key(&b"after"[..]), "{:?}", c.findings);
    assert!(c.live.contains_key(&b"kept"[..]), "{:?}", c.findings);
}

/// The last buffer of a log segment (the victim's newest version) written but not synced when
/// the power is cut, damaged (a torn write), and the next batch ("after"'s newest version) in
/// the next log segment, intact: its batch follows a missing one, so the log ends before the
/// victim's and "after" keeps its earlier version, in the victim's segment. Returns the image,
/// that segment and the value "after" keeps.
fn torn_log_segment_end_with_a_later_batch_elsewhere() -> (Arc<SimStorage>, u32, Vec<u8>) {
    let storage = SimStorage::new();
    let engine = Engine::open_on(storage.clone(), &small_options()).unwrap();
    engine.test_pause_background();
    engine.write(&[put("kept", b"k")]).unwrap();
    engine.sync().unwrap();
    let value = |i: u8| vec![i; 120 << 10];
    let mut i = 0u8;
    let segment = loop {
        i += 1;
        assert!(i < 20, "\"after\" never starts a new segment");
        engine.write(&[put("victim", &[b'V'; 3000])]).unwrap();
        engine.test_wait_flushes();
        engine.write(&[put("after", &value(i))]).unwrap();
        engine.test_wait_flushes();
        let victims = engine.test_location_of(b"victim").unwrap().0;
        if engine.test_location_of(b"after").unwrap().0 != victims {
            break victims;
        }
    };
    assert!(
        i > 1,
        "no earlier version of \"after\" in the victim's segment"
    );
    let image = storage.crash(PowerCut::KeepAllWritten);
    damage_value_of(&engine, &image, b"victim");
    drop(engine);
    (image, segment, value(i - 1))
}

#[test]
fn a_batch_behind_a_torn_log_segment_end_recovery() {
    let (storage, _, kept) = torn_log_segment_end_with_a_later_batch_elsewhere();
    let engine = Engine::open_on(storage, &small_options()).unwrap();
    let after = engine.get(b"after").unwrap();
    assert_eq!(
        after.map(|v| v[0]),
        Some(kept[0]),
        "a batch behind a missing one served"
    );
    assert_eq!(engine.get(b"kept").unwrap().as_deref(), Some(&b"k"[..]));
}

#[test]
fn a_batch_behind_a_torn_log_segment_end_fsck() {
    let (storage, segment, _) = torn_log_segment_end_with_a_later_batch_elsewhere();
    let c = fsck(&*storage);
    assert_eq!(
        c.problems(),
        0,
        "a torn tail called damage: {:?}",
        c.findings
    );
    assert!(c.damaged.is_empty(), "{:?}", c.damaged);
    assert_eq!(
        c.live.get(&b"after"[..]).map(|r| r.place.segment),
        Some(segment),
        "a batch behind a missing one counted live: {:?}",
        c.findings
    );
    assert!(
        c.findings.iter().any(|f| f.what.contains("is missing")),
        "no word of the missing batch: {:?}",
        c.findings
    );
}

/// "k" durable, then overwritten by a batch the power cut takes back, whose record compaction
/// had copied into another segment: only the copy's segment made it to disk. The copy's
/// version is beyond the log's end, so the durable version stays. Returns the image and the
/// copy's segment.
fn copy_of_a_lost_batch() -> (Arc<SimStorage>, u32) {
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

#[test]
fn a_copy_of_a_lost_batch_recovery() {
    let (storage, _) = copy_of_a_lost_batch();
    let engine = Engine::open_on(storage, &small_options()).unwrap();
    assert_eq!(engine.get(b"k").unwrap().as_deref(), Some(&b"durable"[..]));
}

#[test]
fn a_copy_of_a_lost_batch_fsck() {
    let (storage, copy_segment) = copy_of_a_lost_batch();
    let c = fsck(&*storage);
    let k = c.live.get(&b"k"[..]).expect("k not live");
    assert_ne!(k.place.segment, copy_segment, "the lost copy came back");
    assert_eq!(k.value_len as usize, b"durable".len(), "{:?}", c.findings);
}

/// A closed, synced log segment S1 whose last buffer (the new "victim", `V` bytes) is damaged
/// together with its record directory, so that only the sync table's entry for S1 proves it
/// synced: "victim" (old version) and fillers fill S0, "g" and the new "victim" fill S1,
/// "later1" and "later2" follow in S2, each batch in a buffer of its own, synced between.
/// Returns the image and every key's value.
fn damaged_last_buffer_of_a_closed_log_segment() -> (Arc<SimStorage>, Vec<(String, Vec<u8>)>) {
    let storage = SimStorage::new();
    let engine = Engine::open_on(storage.clone(), &small_options()).unwrap();
    engine.test_pause_background();
    let big = 120 << 10;
    let mut expected: Vec<(String, Vec<u8>)> = Vec::new();
    let mut write = |key: &str, value: Vec<u8>, sync: bool| {
        engine.write(&[put(key, &value)]).unwrap();
        engine.test_wait_flushes();
        if sync {
            engine.sync().unwrap();
        }
        expected.retain(|(k, _)| k != key);
        expected.push((key.to_string(), value));
    };
    write("victim", b"old version".to_vec(), true);
    write("f1", vec![b'1'; big], false);
    write("f2", vec![b'2'; big], true);
    write("g", vec![b'g'; big], false);
    write("victim", vec![b'V'; big], true);
    write("later1", vec![b'L'; big], true);
    write("later2", b"two".to_vec(), true);
    let (s1, _) = engine.test_segment_of(b"victim").unwrap();
    assert_eq!(engine.test_segment_of(b"g").unwrap().0, s1);
    assert_ne!(engine.test_segment_of(b"later1").unwrap().0, s1);
    assert_eq!(engine.inner.segments.info(s1).state, SegmentState::Closed);
    let (segment, offset) = damage_value_of(&engine, &storage, b"victim");
    drop(engine);
    // The victim's buffer fails its CRC now: it starts where the last valid buffer before it
    // ends; flip its directory trailer's CRC too.
    let sb = Superblock::decode(&storage.read_superblock().unwrap().unwrap()).unwrap();
    let (file, base) = sb.segment_position(segment);
    let mut image = vec![0u8; sb.segment_size as usize];
    storage.read_at(file, base, &mut image).unwrap();
    let start = scan::valid_buffers(&image, segment, sb.generation_high_water)
        .into_iter()
        .filter(|(pos, _)| *pos < offset)
        .map(|(pos, h)| pos + h.buffer_len as usize)
        .max()
        .unwrap_or(0);
    let len = BufferHeader::buffer_len_field(&image[start..]);
    assert!(start < offset && offset < start + len);
    assert!(
        scan::valid_buffers(&image, segment, sb.generation_high_water)
            .iter()
            .all(|(pos, _)| *pos < start),
        "the victim's buffer is the segment's last"
    );
    storage.corrupt(file, base + (start + len - 1) as u64, 0x10);
    (storage.crash(PowerCut::DropAllUnsynced), expected)
}

#[test]
fn damage_in_the_last_buffer_of_a_closed_log_segment_recovery() {
    let (storage, expected) = damaged_last_buffer_of_a_closed_log_segment();
    let engine = Engine::open_on(storage, &small_options()).unwrap();
    engine.test_pause_background();
    assert_reads_as_damaged(&engine, b"victim", "closed log segment");
    for (k, value) in expected.iter().filter(|(k, _)| k != "victim") {
        assert_eq!(
            engine.get(k.as_bytes()).unwrap().as_ref(),
            Some(value),
            "{k}"
        );
    }
}

#[test]
fn damage_in_the_last_buffer_of_a_closed_log_segment_fsck() {
    let (storage, expected) = damaged_last_buffer_of_a_closed_log_segment();
    let c = fsck_names_only_the_victim(&*storage);
    for (k, _) in expected.iter().filter(|(k, _)| k != "victim") {
        assert!(c.live.contains_key(k.as_bytes()), "{k}: {:?}", c.findings);
    }
}

/// A group-owned segment of copies ("z", "y", "x", one separator run each, their sources
/// freed) whose buffer holding "y" is damaged, with the sync table zeroed: nothing but the
/// rule that copies behind a failing stretch are taken whatever it was keeps "x".
fn damaged_copies_without_the_table() -> Arc<SimStorage> {
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
        engine.test_separate().unwrap();
    }
    let (seg, _) = engine.test_segment_of(b"y").unwrap();
    assert_eq!(engine.test_segment_of(b"x").unwrap().0, seg);
    engine.close().unwrap();
    flip_a_byte_of_value(&storage, seg, 2);
    let unproven = storage.crash(PowerCut::DropAllUnsynced);
    let table_len = unproven.file_len(synctable::SYNC_TABLE_FILE).unwrap() as usize;
    unproven
        .write_at(synctable::SYNC_TABLE_FILE, 0, &vec![0u8; table_len])
        .unwrap();
    unproven
}

#[test]
fn copies_behind_damage_without_the_table_recovery() {
    let engine = Engine::open_on(damaged_copies_without_the_table(), &separator_options()).unwrap();
    engine.test_pause_background();
    assert_eq!(engine.get(b"z").unwrap().unwrap(), vec![1u8; 20 << 10]);
    assert_eq!(
        engine.get(b"x").unwrap().unwrap(),
        vec![3u8; 20 << 10],
        "the copy behind the damaged buffer is lost"
    );
}

#[test]
fn copies_behind_damage_without_the_table_fsck() {
    let c = fsck(&*damaged_copies_without_the_table());
    assert!(
        !c.damaged.iter().any(|d| d.key == b"x"),
        "fsck calls x lost although recovery serves it: {:?}",
        c.findings
    );
    assert!(c.live.contains_key(b"x".as_slice()), "{:?}", c.findings);
}

/// A segment of copies (two separator runs of two groups' keys) whose first buffer header's
/// version, kind, flags, generation and first LSN are garbage: the next valid buffer of its use
/// says it holds copies. Returns the image and every key's value.
fn copies_with_a_garbled_first_header() -> (Arc<SimStorage>, Vec<(String, Vec<u8>)>) {
    let storage = SimStorage::new();
    let engine = Engine::open_on(storage.clone(), &separator_options()).unwrap();
    engine.test_pause_background();
    let mut expected = Vec::new();
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
    drop(engine);
    let (file, base) = sb.segment_position(segment);
    for at in 4..24 {
        storage.corrupt(file, base + at, 0xff);
    }
    (storage.crash(PowerCut::DropAllUnsynced), expected)
}

#[test]
fn copies_with_a_garbled_first_header_recovery() {
    let (storage, expected) = copies_with_a_garbled_first_header();
    let engine = Engine::open_on(storage, &separator_options()).unwrap();
    for (key, value) in &expected {
        assert_eq!(
            engine.get(key.as_bytes()).unwrap().as_ref(),
            Some(value),
            "{key}"
        );
    }
}

#[test]
fn copies_with_a_garbled_first_header_fsck() {
    let (storage, expected) = copies_with_a_garbled_first_header();
    let c = fsck(&*storage);
    assert_eq!(c.problems(), 0, "{:?}", c.findings);
    for (key, _) in &expected {
        assert!(
            c.live.contains_key(key.as_bytes()),
            "{key}: {:?}",
            c.findings
        );
    }
}

/// [`damaged_copies`] with its last two buffers of copies damaged, and their record
/// directories too: nothing names their records, so salvage walks every buffer of the
/// stretch block by block.
fn damaged_copies_and_their_directories() -> (Arc<SimStorage>, Vec<(String, Vec<u8>)>) {
    let (storage, expected) = damaged_copies(&[1, 2]);
    let mut copies = segment_images(&storage)
        .into_iter()
        .filter(|(_, _, image)| image[6] == SegmentKind::Group as u8);
    let (_, (file, base), image) = copies.next().expect("a segment of copies");
    assert!(copies.next().is_none(), "one segment of copies");
    let mut starts = vec![0usize];
    for _ in 0..COPIED.len() {
        let at = *starts.last().unwrap();
        starts.push(at + BufferHeader::buffer_len_field(&image[at..]));
    }
    for w in [1, 2] {
        storage.corrupt(file, base + starts[w + 1] as u64 - 1, 0x10);
    }
    (storage, expected)
}

#[test]
fn damaged_copies_and_their_directories_recovery() {
    let (storage, expected) = damaged_copies_and_their_directories();
    let engine = Engine::open_on(storage, &small_options()).unwrap();
    engine.test_pause_background();
    for (k, value) in &expected {
        if k == COPIED[1] || k == COPIED[2] {
            assert_reads_as_damaged(&engine, k.as_bytes(), "a stretch of two buffers");
        } else {
            assert_eq!(
                engine.get(k.as_bytes()).unwrap().as_ref(),
                Some(value),
                "{k}"
            );
        }
    }
}

#[test]
fn damaged_copies_and_their_directories_fsck() {
    let (storage, _) = damaged_copies_and_their_directories();
    let c = fsck(&*storage);
    let mut named: Vec<&[u8]> = c.damaged.iter().map(|d| &d.key[..]).collect();
    named.sort();
    named.dedup();
    assert_eq!(
        named,
        [COPIED[1].as_bytes(), COPIED[2].as_bytes()],
        "{:?}",
        c.findings
    );
}

/// "zz/gone" put, then deleted by `deletion` ("range delete" of prefix "zz/" or "tombstone"),
/// whose record's CRC field is then damaged; a later synced batch ("after") vouches for it, and
/// its record directory still names it.
fn damaged_deletion(deletion: &str) -> Arc<SimStorage> {
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

const DAMAGED_DELETIONS: [&str; 2] = ["range delete", "tombstone"];

#[test]
fn a_damaged_deletion_its_directory_names_recovery() {
    for deletion in DAMAGED_DELETIONS {
        let engine = Engine::open_on(damaged_deletion(deletion), &small_options()).unwrap();
        assert_eq!(engine.get(b"zz/gone").unwrap(), None, "{deletion}");
        assert_eq!(engine.get(b"after").unwrap().as_deref(), Some(&b"a"[..]));
    }
}

#[test]
fn a_damaged_deletion_its_directory_names_fsck() {
    for deletion in DAMAGED_DELETIONS {
        let c = fsck(&*damaged_deletion(deletion));
        assert_eq!(c.problems(), 0, "{deletion}: {:?}", c.findings);
        assert!(c.damaged.is_empty(), "{deletion}: {:?}", c.damaged);
        assert!(
            !c.live.contains_key(&b"zz/gone"[..]),
            "{deletion}: fsck lists a deleted key as live"
        );
        assert!(
            c.live.contains_key(&b"after"[..]),
            "{deletion}: {:?}",
            c.findings
        );
    }
}
