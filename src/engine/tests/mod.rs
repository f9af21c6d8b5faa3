//! Engine tests that need the crate's internals: on-disk images built by hand, the write gate
//! observed from inside, recovery of reused segments. Behaviour-level tests live in `tests/`.
//! One file per behaviour, each saying what it proves; this one holds the helpers they share.

// Tests drive the engine from real threads and clocks of their own.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::io;
use std::sync::Arc;
use std::time::Duration;

use super::format::{BLOCK_SIZE, BufferHeader, SegmentKind, Superblock};
use super::segments::SegmentState;
use super::storage::{PowerCut, SimStorage, Storage};
use super::*;

mod byte_flips;
mod checkpoints;
mod compaction_reclaims;
mod copies_and_close;
mod copies_damage;
mod damage_rule_sides;
mod deletes_in_a_full_store;
mod failing_record_in_a_valid_buffer;
mod full_store;
mod images;
mod log_damage;
mod log_sync_table_proofs;
mod ordinary_use;
mod pending_range_deletes;
mod record_directories;
mod recovery_reads;
mod segment_reuse;
mod separator_groups;
mod summaries;
mod write_path_invariants;

pub(crate) fn small_options() -> EngineOptions {
    EngineOptions {
        capacity_bytes: 32 << 20,
        segment_size_bytes: 256 << 10,
        segments_per_file: 16,
        create_if_missing: true,
        sync_interval: None,
        ..Default::default()
    }
}

fn put(key: &str, value: &[u8]) -> Mutation {
    Mutation::put(ROOT_GROUP, key.as_bytes(), value)
}

/// A store large enough that every group its tests write at once keeps an open segment of its
/// own (`groups::max_open_segments`: 16 in 1,024 segments), so that none borrows another's.
fn separator_options() -> EngineOptions {
    EngineOptions {
        separator_threshold_segments: 2,
        capacity_bytes: 256 << 20,
        ..small_options()
    }
}

fn group_put(group: u32, key: String, value: &[u8]) -> Mutation {
    Mutation::put(group, key.into_bytes(), value)
}

/// Flips a byte inside the first value of segment `segment` made of `fill` bytes (at least 64 of
/// them in a row): damage, or a torn write, inside that record's buffer. Like every damage
/// helper here, removes the segment summaries (see [`forget_summaries`]).
fn flip_a_byte_of_value(storage: &SimStorage, segment: u32, fill: u8) {
    forget_summaries(storage);
    let sb = Superblock::decode(&storage.read_superblock().unwrap().unwrap()).unwrap();
    let (file, base) = sb.segment_position(segment);
    let mut image = vec![0u8; sb.segment_size as usize];
    storage.read_at(file, base, &mut image).unwrap();
    let at = image
        .windows(64)
        .position(|w| w == [fill; 64])
        .expect("the value is in the segment");
    storage.corrupt(file, base + at as u64 + 100, 0xff);
}

/// Flips a byte of the value of 64 or more `fill` bytes in every segment that holds it.
fn damage_every_copy_of(storage: &SimStorage, fill: u8) {
    forget_summaries(storage);
    let mut hits = 0;
    for (_, (file, base), image) in segment_images(storage) {
        if let Some(at) = image.windows(64).position(|w| w == [fill; 64]) {
            storage.corrupt(file, base + at as u64 + 100, 0xff);
            hits += 1;
        }
    }
    assert!(hits > 0, "the value is in no segment");
}

/// Flips a byte of the directory trailer (its CRC) of the buffer of `segment` holding the
/// record at `offset`; returns where that buffer starts.
fn damage_directory_of_buffer_holding(storage: &SimStorage, segment: u32, offset: usize) -> usize {
    forget_summaries(storage);
    let sb = Superblock::decode(&storage.read_superblock().unwrap().unwrap()).unwrap();
    let (file, base) = sb.segment_position(segment);
    let mut image = vec![0u8; sb.segment_size as usize];
    storage.read_at(file, base, &mut image).unwrap();
    // The record's buffer fails its CRC already: it starts after the last valid one before it,
    // where that one ends, and its header's length field is intact.
    let start = scan::valid_buffers(&image, segment, sb.generation_high_water)
        .into_iter()
        .filter(|(pos, _)| *pos < offset)
        .map(|(pos, h)| pos + h.buffer_len as usize)
        .max()
        .unwrap_or(0);
    let len = BufferHeader::buffer_len_field(&image[start..]);
    assert!(start < offset && offset < start + len);
    storage.corrupt(file, base + (start + len - 1) as u64, 0x10);
    start
}

/// The state a recovery (full scan or checkpoint) rebuilt, in comparable form: segment states,
/// every index entry (tombstones and range deletes included, through their locations), the next
/// LSN. Put notes are compared apart (`sorted_notes`).
fn recovered_state(r: &recovery::Recovered) -> String {
    let infos: Vec<String> = r
        .infos
        .iter()
        .map(|i| {
            format!(
                "{:?} {:?} {} {} {} {}",
                i.state, i.kind, i.group, i.generation, i.used, i.max_lsn
            )
        })
        .collect();
    let live = r.index.scan(&[], &[], None, usize::MAX);
    let mut locations = Vec::new();
    r.index
        .for_each_location(|l| locations.push((l.segment, l.offset, l.len)));
    locations.sort_unstable();
    format!(
        "{infos:?}\n{live:?}\n{locations:?} {}\n{}",
        r.index.range_delete_count(),
        r.next_lsn
    )
}

/// Removes the segment summaries from `storage` (durably), so that its next recovery reads
/// every segment (see `summaries.rs`). The damage helpers call it: a summary written before the
/// damage (a clean close writes them) would stand in for the damaged segment, and their images
/// are for the scan's damage rules. Damage after a summary: `tests/summaries.rs`.
fn forget_summaries(storage: &SimStorage) {
    for file in format::summaries::SUMMARY_FILES {
        if storage.file_len(file).unwrap() > 0 {
            storage.write_at(file, 0, &[0u8; 512]).unwrap();
        }
    }
    storage.sync().unwrap();
}

/// Flips a byte in the middle of `key`'s value where the index has it; returns its location.
fn damage_value_of(engine: &Engine, storage: &SimStorage, key: &[u8]) -> (u32, usize) {
    forget_summaries(storage);
    let sb = Superblock::decode(&storage.read_superblock().unwrap().unwrap()).unwrap();
    let loc = engine.inner.index.get(key).unwrap().location;
    let (file, base) = sb.segment_position(loc.segment);
    storage.corrupt(file, base + (loc.offset + loc.len / 2) as u64, 0x20);
    (loc.segment, loc.offset as usize)
}

/// The buffer offsets of segment `segment`'s current use.
fn buffer_offsets(storage: &SimStorage, segment: u32) -> Vec<usize> {
    let sb = Superblock::decode(&storage.read_superblock().unwrap().unwrap()).unwrap();
    let (file, base) = sb.segment_position(segment);
    let mut image = vec![0u8; sb.segment_size as usize];
    storage.read_at(file, base, &mut image).unwrap();
    scan::valid_buffers(&image, segment, sb.generation_high_water)
        .into_iter()
        .map(|(pos, _)| pos)
        .collect()
}

/// Runs fsck on `storage`; asserts that it names the key "victim" as damaged, and no other key,
/// and that it says what recovery does with it: indexes it so that its reads fail.
fn fsck_names_only_the_victim(storage: &dyn Storage) -> check::EngineCheck {
    let c = fsck(storage);
    assert_fsck_says_reads_fail(&c, b"victim");
    assert!(
        c.damaged.iter().any(|d| d.key == b"victim" && !d.intact),
        "fsck does not name the victim: {:?}",
        c.findings
    );
    assert!(
        c.damaged.iter().all(|d| d.key == b"victim"),
        "fsck names others: {:?}",
        c.damaged
    );
    c
}

/// fsck says what recovery does with the damaged put of `key` it takes: indexed where it is,
/// so that reads of the key fail; not served from an older version.
fn assert_fsck_says_reads_fail(c: &check::EngineCheck, key: &[u8]) {
    let named: Vec<_> = c.damaged.iter().filter(|d| d.key == key).collect();
    assert!(
        named
            .iter()
            .any(|d| d.reads_fail && d.served_version.is_none()),
        "fsck does not say reads of {:?} fail: {named:?}",
        String::from_utf8_lossy(key)
    );
    assert!(
        !c.live.contains_key(key),
        "fsck's map serves a version of {:?} although its newest is damaged and indexed: {:?}",
        String::from_utf8_lossy(key),
        c.live.get(key)
    );
}

/// fsck of `storage`, values not kept.
pub(super) fn fsck(storage: &dyn Storage) -> check::EngineCheck {
    check::check(
        storage,
        &check::CheckOptions {
            keep_value: &|_| false,
            store_dir: None,
        },
    )
    .unwrap()
}

/// Rewrites the superblock of `storage` as version 2 wrote it: no
/// `frees_clear_directories_from` (read as `u64::MAX`: no first directory can be trusted alone).
fn mark_superblock_version_2(storage: &SimStorage) {
    let mut b = storage.read_superblock().unwrap().unwrap();
    b[8..10].copy_from_slice(&2u16.to_le_bytes());
    b[32..40].fill(0);
    let crc = crc32fast::hash(&b[..60]);
    b[60..64].copy_from_slice(&crc.to_le_bytes());
    storage.write_superblock(&b).unwrap();
    let older = Superblock::decode(&b).unwrap();
    assert_eq!(older.frees_clear_directories_from, u64::MAX);
}

/// Cuts the power of `storage`, then asserts that fsck names the key "victim" (and only it) as
/// damaged and that the store, opened again, reads it as damaged. Returns the opened engine.
fn after_a_power_cut_the_victim_reads_as_damaged(storage: &SimStorage, case: &str) -> Engine {
    let storage = storage.crash(PowerCut::DropAllUnsynced);
    eprintln!("case: {case}");
    fsck_names_only_the_victim(&*storage);
    let engine = Engine::open_on(storage, &small_options()).unwrap();
    assert_reads_as_damaged(&engine, b"victim", case);
    engine
}

/// Asserts that every key of `expected` but those in `except` reads back exactly its value
/// (`case` names the image in the failure message).
fn assert_reads_back(engine: &Engine, expected: &[(String, Vec<u8>)], except: &[&str], case: &str) {
    for (k, value) in expected
        .iter()
        .filter(|(k, _)| !except.contains(&k.as_str()))
    {
        let got = engine.get(k.as_bytes()).unwrap();
        assert_eq!(got.as_ref(), Some(value), "{case}: {k}");
    }
}

/// The power cuts a campaign tries: every unsynced write dropped, every one kept, `random`
/// random parts of them (seeds 1 to `random`), and the unsynced writes to each of the files
/// `0..files` kept alone (the page cache wrote back that file only).
fn power_cuts(random: u64, files: u32) -> impl Iterator<Item = PowerCut> {
    [PowerCut::DropAllUnsynced, PowerCut::KeepAllWritten]
        .into_iter()
        .chain((1..=random).map(PowerCut::Random))
        .chain((0..files).map(|file| PowerCut::KeepOnlyIn {
            file,
            start: 0,
            end: u64::MAX,
        }))
}

/// Asserts that reading `key` fails as damaged: never an older version, never absent.
fn assert_reads_as_damaged(engine: &Engine, key: &[u8], case: &str) {
    let got = engine.get(key);
    assert!(
        matches!(got, Err(EngineError::Corrupt(_))),
        "{case}: {} reads as {:?}",
        String::from_utf8_lossy(key),
        got.map(|v| v.map(|v| String::from_utf8_lossy(&v[..v.len().min(20)]).into_owned()))
    );
}

/// Every allocated segment of `storage`: (segment, its (file, offset), its bytes).
fn segment_images(storage: &SimStorage) -> Vec<(u32, (u32, u64), Vec<u8>)> {
    let sb = Superblock::decode(&storage.read_superblock().unwrap().unwrap()).unwrap();
    (0..sb.segment_count)
        .filter_map(|segment| {
            let (file, base) = sb.segment_position(segment);
            if storage.file_len(file).unwrap() < base + sb.segment_size as u64 {
                return None;
            }
            let mut image = vec![0u8; sb.segment_size as usize];
            storage.read_at(file, base, &mut image).unwrap();
            Some((segment, (file, base), image))
        })
        .collect()
}

/// Encodes puts of `records` (key, value length; the value is the key's first byte repeated)
/// into the buffer `b` from its payload's start, versions `version_of(10, first_index + i)` in
/// group 3; returns where they end.
fn puts_into(b: &mut [u8], records: &[(&[u8], usize)], first_index: usize) -> usize {
    use format::{BUFFER_HEADER_SIZE, RecordHeader, RecordKind};
    let mut p = BUFFER_HEADER_SIZE;
    for (i, &(key, value_len)) in records.iter().enumerate() {
        let value = vec![key[0]; value_len];
        let h = RecordHeader {
            kind: RecordKind::Put,
            key_len: key.len() as u16,
            group: 3,
            value_len: value_len as u32,
            version: format::version_of(10, first_index + i),
        };
        let rec = &mut b[p..p + h.total_len()];
        rec[24..24 + key.len()].copy_from_slice(key);
        rec[24 + key.len()..].copy_from_slice(&value);
        h.encode(rec, &format::record_body_crc(key, &value));
        p += h.total_len();
    }
    p
}

/// A fresh store (background work paused) whose key "first" (3,000 bytes of `F`) is the first
/// record of a segment's first buffer, synced: the store, the engine, the segment.
fn first_in_a_segments_first_buffer() -> (Arc<SimStorage>, Engine, u32) {
    let storage = SimStorage::new();
    let engine = Engine::open_on(storage.clone(), &small_options()).unwrap();
    engine.test_pause_background();
    engine.write(&[put("first", &[b'F'; 3000])]).unwrap();
    engine.sync().unwrap();
    let (segment, offset) = engine.test_location_of(b"first").unwrap();
    assert_eq!(
        offset as usize,
        format::BUFFER_HEADER_SIZE,
        "not a first buffer"
    );
    (storage, engine, segment)
}
/// `SimStorage` that keeps an index checkpoint, as `FileStorage` does (written atomically
/// and durably). Power cut the moment the checkpoint is written, `cut_at_checkpoint` holds
/// what is left of the segments.
pub(super) struct CheckpointingSim {
    pub(super) sim: Arc<SimStorage>,
    pub(super) checkpoint: Arc<parking_lot::Mutex<Option<Vec<u8>>>>,
    pub(super) cut_at_checkpoint: Arc<parking_lot::Mutex<Option<Arc<SimStorage>>>>,
}

impl Storage for CheckpointingSim {
    fn read_at(&self, file: u32, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.sim.read_at(file, offset, buf)
    }
    fn write_at(&self, file: u32, offset: u64, data: &[u8]) -> io::Result<()> {
        self.sim.write_at(file, offset, data)
    }
    fn allocate(&self, file: u32, len: u64) -> io::Result<()> {
        self.sim.allocate(file, len)
    }
    fn file_len(&self, file: u32) -> io::Result<u64> {
        self.sim.file_len(file)
    }
    fn sync(&self) -> io::Result<()> {
        self.sim.sync()
    }
    fn read_superblock(&self) -> io::Result<Option<Vec<u8>>> {
        self.sim.read_superblock()
    }
    fn write_superblock(&self, data: &[u8]) -> io::Result<()> {
        self.sim.write_superblock(data)
    }
    fn read_checkpoint(&self) -> io::Result<Option<Vec<u8>>> {
        Ok(self.checkpoint.lock().clone())
    }
    fn write_checkpoint(&self, data: &[u8]) -> io::Result<()> {
        *self.checkpoint.lock() = Some(data.to_vec());
        *self.cut_at_checkpoint.lock() = Some(self.sim.crash(PowerCut::DropAllUnsynced));
        Ok(())
    }
    fn remove_checkpoint(&self) -> io::Result<()> {
        *self.checkpoint.lock() = None;
        Ok(())
    }
}

/// One step of the power-cut campaigns' workload: overwrites, deletes and prefix deletes in
/// three groups, with syncs now and then.
fn overwrite_delete_step(engine: &Engine, rng: &mut storage::SimRng, step: u64) {
    let group = rng.below(3) as u32;
    let key = format!("g{group}/k{:03}", rng.below(120));
    let batch = match rng.below(20) {
        0 => vec![Mutation::delete(group, key.as_bytes())],
        1 => vec![Mutation::delete_prefix(
            group,
            format!("g{group}/k0").as_bytes(),
        )],
        _ => {
            let len = 100 + rng.below(12000) as usize;
            vec![Mutation::put(group, key.as_bytes(), vec![step as u8; len])]
        }
    };
    match engine.write(&batch) {
        Ok(_) | Err(EngineError::NoSpace) => {}
        Err(e) => panic!("step {step}: {e}"),
    }
    if rng.below(8) == 0 {
        engine.sync().unwrap();
    }
}
