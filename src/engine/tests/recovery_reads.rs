//! Recovery's two ways of reading a store agree: through a map of the segment files and with
//! `read_at`, recovery rebuilds the same state; and a store of format version 1 is still read
//! and marked current.

use super::*;

/// Storage that reads a store's files with `read_at` only (no map): recovery's other path.
struct NoMap(Arc<dyn Storage>);

impl Storage for NoMap {
    fn read_at(&self, file: u32, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.0.read_at(file, offset, buf)
    }
    fn write_at(&self, file: u32, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.0.write_at(file, offset, data)
    }
    fn allocate(&self, file: u32, len: u64) -> std::io::Result<()> {
        self.0.allocate(file, len)
    }
    fn file_len(&self, file: u32) -> std::io::Result<u64> {
        self.0.file_len(file)
    }
    fn sync(&self) -> std::io::Result<()> {
        self.0.sync()
    }
    fn read_superblock(&self) -> std::io::Result<Option<Vec<u8>>> {
        self.0.read_superblock()
    }
    fn write_superblock(&self, data: &[u8]) -> std::io::Result<()> {
        self.0.write_superblock(data)
    }
}

/// Everything recovery rebuilt, in comparable form: report, segment states, every index entry
/// (live ones with their keys), every location the index holds.
fn recovered_summary(storage: Arc<dyn Storage>) -> String {
    let sb = Superblock::decode(&storage.read_superblock().unwrap().unwrap()).unwrap();
    let notes = tombstones::PutNotes::new(sb.segment_count as usize, vec![2]);
    let r = recovery::recover(&storage, &sb, &notes).unwrap();
    let hashes: Vec<bool> = (0..sb.segment_count)
        .map(|s| notes.may_hold_older(s, notes.point_hash(b"k00001"), u64::MAX))
        .collect();
    format!(
        "{}\n{:?} {:?}\n{hashes:?}",
        recovered_state(&r),
        r.report,
        r.invalidate
    )
}

/// Recovery through a map of the segment files (FileStorage) finds exactly what reading them
/// with `read_at` finds: overwrites, copies of equal versions, deletes, range deletes, several
/// segment files, a torn tail and damage in the middle of the log.
#[test]
fn recovery_through_a_map_equals_recovery_through_reads() {
    let dir = tempfile::tempdir().unwrap();
    {
        let options = EngineOptions {
            segments_per_file: 4,
            ..small_options()
        };
        let engine = Engine::open(dir.path(), &options).unwrap();
        for round in 0..6u32 {
            let mut batch = Vec::new();
            for i in 0..400u32 {
                let key = format!("k{:05}", (i * 7 + round * 13) % 1500);
                batch.push(put(&key, &vec![round as u8; 200 + (i % 5) as usize * 300]));
                if batch.len() == 8 {
                    engine.write(&batch).unwrap();
                    batch.clear();
                }
            }
            if !batch.is_empty() {
                engine.write(&batch).unwrap();
            }
            engine
                .write(&[
                    Mutation::delete(ROOT_GROUP, format!("k{:05}", round * 3).into_bytes()),
                    Mutation::delete_prefix(ROOT_GROUP, format!("k0{round}").into_bytes()),
                ])
                .unwrap();
            engine.sync().unwrap();
            engine.test_compact().unwrap();
        }
        assert!(engine.stats().segments_total > 0);
        drop(engine); // as a crash of the process
    }
    let storage: Arc<dyn Storage> =
        Arc::new(super::storage::FileStorage::open(dir.path(), false).unwrap());
    let mapped = recovered_summary(storage.clone());
    let read = recovered_summary(Arc::new(NoMap(storage.clone())));
    assert!(mapped == read, "mapped and read recoveries differ");
    assert!(mapped.contains("records_accepted: "));

    // Damage: a payload byte of the second buffer of every used segment (in the log, damage
    // the next buffer vouches for, or a torn tail; in copies, a stretch skipped), and a torn
    // first buffer of the last used segment.
    let sb = Superblock::decode(&storage.read_superblock().unwrap().unwrap()).unwrap();
    let used: Vec<u32> = (0..sb.segment_count)
        .filter(|&s| {
            let (f, b) = sb.segment_position(s);
            let mut first = vec![0u8; BLOCK_SIZE];
            storage.file_len(f).unwrap() >= b + sb.segment_size as u64
                && storage.read_at(f, b, &mut first).is_ok()
                && format::BufferHeader::plausible_start(&first, s)
        })
        .collect();
    assert!(
        used.iter().any(|&s| sb.segment_position(s).0 > 0),
        "several files: {used:?}"
    );
    for &s in &used {
        let (f, b) = sb.segment_position(s);
        let mut image = vec![0u8; sb.segment_size as usize];
        storage.read_at(f, b, &mut image).unwrap();
        let valid = scan::valid_buffers(&image, s, sb.generation_high_water);
        if let Some(&(pos, _)) = valid.get(1).filter(|_| valid.len() > 2) {
            let at = b + pos as u64 + 100;
            let mut byte = [0u8];
            storage.read_at(f, at, &mut byte).unwrap();
            storage.write_at(f, at, &[byte[0] ^ 0x5a]).unwrap();
        }
    }
    let last = *used.last().unwrap();
    let (f, b) = sb.segment_position(last);
    let mut first = vec![0u8; BLOCK_SIZE];
    storage.read_at(f, b, &mut first).unwrap();
    first[100] ^= 0x01;
    storage.write_at(f, b, &first).unwrap();
    let mapped = recovered_summary(storage.clone());
    let read = recovered_summary(Arc::new(NoMap(storage)));
    assert!(
        mapped == read,
        "mapped and read recoveries of a damaged store differ"
    );
    let report = mapped.lines().next().unwrap();
    assert!(!report.contains("buffers_damaged: 0,"), "{report}");
}

/// Stores written before format version 2 (buffers without a record directory, superblock of
/// version 1) are still read, and marked as of the current superblock version once opened for
/// writing.
#[test]
fn a_store_of_format_version_1_is_read_and_marked_current() {
    let storage = SimStorage::new();
    let engine = Engine::open_on(storage.clone(), &small_options()).unwrap();
    engine.test_pause_background();
    for i in 0..50 {
        engine
            .write(&[put(&format!("k{i:02}"), &vec![i as u8; 100 + 37 * i])])
            .unwrap();
    }
    engine.sync().unwrap();
    drop(engine);
    // Rewrite every buffer as version 1 wrote it, and the superblock.
    let mut sb_bytes = storage.read_superblock().unwrap().unwrap();
    let sb = Superblock::decode(&sb_bytes).unwrap();
    let mut rewritten = 0;
    for (segment, (file, base), mut image) in segment_images(&storage) {
        for (pos, h) in scan::valid_buffers(&image, segment, sb.generation_high_water) {
            let buffer = &mut image[pos..pos + h.buffer_len as usize];
            buffer[format::BUFFER_HEADER_SIZE + h.payload_len as usize..].fill(0);
            h.seal_version_1(buffer);
            rewritten += 1;
        }
        storage.write_at(file, base, &image).unwrap();
    }
    assert!(rewritten > 0);
    sb_bytes[8..10].copy_from_slice(&1u16.to_le_bytes());
    let crc = crc32fast::hash(&sb_bytes[..60]);
    sb_bytes[60..64].copy_from_slice(&crc.to_le_bytes());
    storage.write_superblock(&sb_bytes).unwrap();
    storage.sync().unwrap();
    let storage = storage.crash(PowerCut::DropAllUnsynced);
    assert!(fsck(&*storage).findings.is_empty());
    let engine = Engine::open_on(storage.clone(), &small_options()).unwrap();
    assert_eq!(engine.recovery_report().buffers_accepted, rewritten);
    for i in 0..50 {
        assert_eq!(
            engine.get(format!("k{i:02}").as_bytes()).unwrap().unwrap(),
            vec![i as u8; 100 + 37 * i]
        );
    }
    let marked = storage.read_superblock().unwrap().unwrap();
    assert_eq!(
        marked[8..10],
        format::SUPERBLOCK_VERSION.to_le_bytes(),
        "the superblock says version {}",
        format::SUPERBLOCK_VERSION
    );
    // Segments of generations handed out before may have been freed without clearing their
    // first buffer's directory: only those from the high-water mark of this open on are known
    // cleared.
    assert_eq!(
        Superblock::decode(&marked)
            .unwrap()
            .frees_clear_directories_from,
        sb.generation_high_water
    );
    // New writes (version 2 buffers) and the old ones are read together after a restart.
    engine.write(&[put("k00", b"new")]).unwrap();
    engine.sync().unwrap();
    drop(engine);
    let engine =
        Engine::open_on(storage.crash(PowerCut::DropAllUnsynced), &small_options()).unwrap();
    assert_eq!(engine.get(b"k00").unwrap().as_deref(), Some(&b"new"[..]));
    assert_eq!(
        engine.get(b"k49").unwrap().unwrap(),
        vec![49u8; 100 + 37 * 49]
    );
}
