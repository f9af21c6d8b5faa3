//! Offline store checker, the engine's half of `logstorfs fsck` (the filesystem's half is
//! `fs::check`). It changes nothing on disk: it reads the superblock and every segment through
//! the [`Storage`] trait ([`ReadOnlyStorage`] for a store directory), and never runs recovery
//! (which zeroes discarded tails).
//!
//! What it does, in order:
//! 1. Superblock: decoded and checked (magic, CRC, geometry). Segment files: length.
//! 2. Every segment whose first sector is not zeros (a freed segment's first sector is zeroed) is
//!    read whole and handed to the one segment scan (`scan.rs`), which recovery uses too: the
//!    check reports its verdicts and decides nothing of its own. Valid buffers (repaired ones
//!    noted) are accepted, and the scan checks each of their records' own CRC for the check.
//! 3. Damaged stretches (proven damage, not torn writes) are suspects whose records recovery
//!    salvages or not by the scan's rule (`scan::Stretch::takes`); where the scan stopped before
//!    the segment's end, the failing buffer's records and the valid buffers of the use behind
//!    it (which recovery does not reach) are suspects too.
//! 4. The end of the log is the scan's (`scan::log_end`: highest durable floor, first LSN gap
//!    above it), and the key -> newest version map is rebuilt from the accepted buffers and the
//!    records recovery takes from damaged stretches (highest version wins, range deletes hide
//!    older keys).
//! 5. Every record that recovery would not see (in a damaged buffer, stranded behind one, or
//!    beyond the log's end) is compared with that map. It is *lost* if it is newer than what
//!    the map holds for its key. Lost records of batches at or below the durable floor (the
//!    highest any valid buffer records, stranded ones included) were durable: data that the
//!    next mount would not serve, a problem. Lost records above it may be writes torn by a
//!    crash, which the next mount discards: a note. Records whose LSN has since been reused by
//!    the log (the store was mounted again after a crash) are stale.
//! 6. Per segment: one kind, group and generation; generations unique among segments in use;
//!    record count at least the batch count; no record newer than its buffer's last LSN;
//!    live bytes (records the map points at) within the bytes used.
//!
//! A limit of any offline check: damage to batches above the last durable floor written to
//! disk looks exactly like a write torn by a crash (a power cut may keep any subset of unsynced
//! sectors, in any order); it is a note.
//! (Buffer headers carry the floor as it was when they were sealed, so after a clean unmount
//! the floor on disk lags the last batch.)

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::concurrency::{Arc, Mutex};

use super::api::{EngineError, Result};
use super::format::{
    BLOCK_SIZE, BufferHeader, RECORD_HEADER_SIZE, RecordKind, SegmentKind, Superblock,
    lsn_of_version,
};
use super::scan::{self, LogEnd, Stretch, StretchRecord, ValidBuffer, Verdicts};
use super::storage::{
    LOCK_FILE, SECTOR_SIZE, SUPERBLOCK_FILE, Storage, segment_file_name, store_file_name,
};

/// How serious a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// Something is wrong: data lost or damaged, or an inconsistency. `fsck` exits 1.
    Problem,
    /// Worth knowing, not wrong (e.g. writes torn by a crash, which the next mount discards).
    Note,
}

/// One thing the checker found: where, and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    pub place: String,
    pub what: String,
}

impl Finding {
    pub fn problem(place: impl Into<String>, what: impl Into<String>) -> Finding {
        Finding {
            severity: Severity::Problem,
            place: place.into(),
            what: what.into(),
        }
    }
    pub fn note(place: impl Into<String>, what: impl Into<String>) -> Finding {
        Finding {
            severity: Severity::Note,
            place: place.into(),
            what: what.into(),
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.place, self.what)
    }
}

/// A place in the store: a byte of a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Place {
    pub segment: u32,
    pub offset: u32,
}

/// The newest live version of a key, as the next mount would index it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveRecord {
    pub version: u64,
    pub group: u32,
    pub place: Place,
    /// Record length on disk (header, key and value).
    pub len: u32,
    pub value_len: u32,
    /// The value, if [`CheckOptions::keep_value`] asked for it.
    pub value: Option<Vec<u8>>,
}

/// A record whose contents the next mount cannot serve: it fails its own CRC, or it is newer
/// than what the map holds for its key and sits where recovery does not look (a damaged
/// buffer, behind one, or beyond the end of the log).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DamagedRecord {
    /// As read; if `intact` is false, the key itself may be damaged.
    pub key: Vec<u8>,
    pub version: u64,
    pub place: Place,
    /// The record passes its own CRC (it is stranded, not damaged).
    pub intact: bool,
    /// The version the next mount will serve for this key instead (none: the key is absent).
    pub served_version: Option<u64>,
    /// The value, if the record is intact and [`CheckOptions::keep_value`] asked for it.
    pub value: Option<Vec<u8>>,
}

/// Figures of one segment in use.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SegmentFigures {
    pub segment: u32,
    /// "mixed" or "group".
    pub kind: &'static str,
    pub group: u32,
    pub generation: u64,
    pub buffers: u64,
    pub records: u64,
    /// Bytes of accepted buffers (from the segment's start).
    pub used_bytes: u64,
    /// Bytes of records the rebuilt map points at.
    pub live_bytes: u64,
}

/// Everything the engine check found.
#[derive(Clone, Debug, Default)]
pub struct EngineCheck {
    pub findings: Vec<Finding>,
    /// Key -> newest live version (puts only; deleted keys are absent).
    pub live: BTreeMap<Vec<u8>, LiveRecord>,
    /// Records whose newest contents are damaged or lost (see [`DamagedRecord`]).
    pub damaged: Vec<DamagedRecord>,
    pub segments: Vec<SegmentFigures>,
    pub segment_size: u32,
    pub segment_count: u32,
    pub segments_scanned: u64,
    pub buffers_accepted: u64,
    pub records_accepted: u64,
    pub durable_floor: u64,
    pub last_lsn: u64,
    /// Path (or name) of each segment file, for messages.
    pub segment_files: Vec<String>,
    pub segments_per_file: u32,
}

impl EngineCheck {
    /// Where `place` is, in words a person can find with `dd`: the segment, and the segment
    /// file and byte offset in it.
    pub fn describe(&self, place: Place) -> String {
        let file = place.segment / self.segments_per_file.max(1);
        let base =
            (place.segment % self.segments_per_file.max(1)) as u64 * self.segment_size as u64;
        let name = self
            .segment_files
            .get(file as usize)
            .cloned()
            .unwrap_or_else(|| segment_file_name(file));
        format!(
            "segment {} offset {} ({} byte {})",
            place.segment,
            place.offset,
            name,
            base + place.offset as u64
        )
    }

    pub fn problems(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Problem)
            .count()
    }
}

/// What the caller wants kept.
pub struct CheckOptions<'a> {
    /// Keys whose values [`LiveRecord::value`] should hold (the others: only their length).
    pub keep_value: &'a dyn Fn(&[u8]) -> bool,
    /// The store directory, to name segment files by path in messages.
    pub store_dir: Option<&'a Path>,
}

/// A store directory opened for reading only: segment files are opened read-only, nothing is
/// created, and a shared lock on the store's lock file keeps a daemon from mounting the store
/// meanwhile (and tells whether one has it mounted now).
pub struct ReadOnlyStorage {
    dir: PathBuf,
    files: Mutex<Vec<Option<Arc<File>>>>,
    _lock: Option<File>,
}

impl ReadOnlyStorage {
    /// Opens `dir`. [`EngineError::NotAStore`] if it holds no superblock,
    /// [`EngineError::Locked`] if a process (a mounted daemon) holds the store.
    pub fn open(dir: &Path) -> Result<ReadOnlyStorage> {
        if !dir.is_dir() {
            return Err(EngineError::NotAStore(format!(
                "{} is not a directory",
                dir.display()
            )));
        }
        if !dir.join(SUPERBLOCK_FILE).exists() {
            return Err(EngineError::NotAStore(format!(
                "{} holds no logstorfs store (no superblock)",
                dir.display()
            )));
        }
        // A store never opened has no lock file; creating one would change the store.
        let lock = match File::open(dir.join(LOCK_FILE)) {
            Ok(f) => Some(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(EngineError::Io(e)),
        };
        if let Some(f) = &lock {
            super::storage::lock_store(dir, f, libc::LOCK_SH).map_err(|e| {
                if e.kind() == io::ErrorKind::WouldBlock {
                    EngineError::Locked(e.to_string())
                } else {
                    EngineError::Io(e)
                }
            })?;
        }
        Ok(ReadOnlyStorage {
            dir: dir.to_path_buf(),
            files: Mutex::new(Vec::new()),
            _lock: lock,
        })
    }

    /// Path of segment file `file`.
    pub fn segment_path(&self, file: u32) -> PathBuf {
        self.dir.join(store_file_name(file))
    }

    fn file(&self, file: u32) -> io::Result<Arc<File>> {
        let mut files = self.files.lock();
        if files.len() <= file as usize {
            files.resize(file as usize + 1, None);
        }
        if let Some(f) = &files[file as usize] {
            return Ok(f.clone());
        }
        let f = Arc::new(
            OpenOptions::new()
                .read(true)
                .open(self.segment_path(file))?,
        );
        files[file as usize] = Some(f.clone());
        Ok(f)
    }
}

fn read_only() -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        "the store is open read-only",
    )
}

impl Storage for ReadOnlyStorage {
    fn read_at(&self, file: u32, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file(file)?.read_exact_at(buf, offset)
    }
    fn write_at(&self, _file: u32, _offset: u64, _data: &[u8]) -> io::Result<()> {
        Err(read_only())
    }
    fn allocate(&self, _file: u32, _len: u64) -> io::Result<()> {
        Err(read_only())
    }
    fn file_len(&self, file: u32) -> io::Result<u64> {
        match std::fs::metadata(self.segment_path(file)) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e),
        }
    }
    fn sync(&self) -> io::Result<()> {
        Ok(())
    }
    fn read_superblock(&self) -> io::Result<Option<Vec<u8>>> {
        match std::fs::read(self.dir.join(SUPERBLOCK_FILE)) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
    fn write_superblock(&self, _data: &[u8]) -> io::Result<()> {
        Err(read_only())
    }
    fn map_file(&self, file: u32, len: u64) -> io::Result<Option<super::storage::MappedFile>> {
        super::storage::MappedFile::map(&*self.file(file)?, len).map(Some)
    }
    fn read_checkpoint(&self) -> io::Result<Option<Vec<u8>>> {
        super::storage::read_checkpoint_in(&self.dir)
    }
    fn fingerprint(&self) -> io::Result<Vec<u8>> {
        super::storage::fingerprint_of(&self.dir)
    }
}

/// A buffer recovery accepts (the walk from the segment's start).
struct Buf {
    segment: u32,
    offset: u32,
    header: BufferHeader,
    records: Range<usize>,
}

/// A record as read from disk.
struct Rec {
    key: Vec<u8>,
    /// Range end, for range deletes.
    end: Vec<u8>,
    kind: RecordKind,
    group: u32,
    version: u64,
    place: Place,
    len: u32,
    value_len: u32,
    value: Option<Vec<u8>>,
    intact: bool,
    /// A damaged deletion whose effect recovery keeps wherever it takes the stretch
    /// (`scan::Stretch::takes`): a tombstone (indexed as one: its key reads as deleted, its
    /// newest state), or a range delete whose range its buffer's record directory names.
    deletion_kept: bool,
}

impl Rec {
    /// Whether recovery takes this record of a stretch it takes with its effect: intact, or a
    /// deletion it keeps (a damaged put is indexed so that reads of it fail: still a problem,
    /// naming the key).
    fn applied(&self) -> bool {
        self.intact || self.deletion_kept
    }
}

/// Bytes of a segment that recovery does not see but that may hold data: a buffer failing its
/// checks, valid buffers behind it, or whatever follows an unreadable first block.
struct Suspect {
    place: Place,
    /// The segment is group-owned: its records are copies made by the separator or compaction.
    /// Unless the sync table proves a stretch of copies was synced, a damaged record there may
    /// be garbage of a torn write: a note. An intact lost copy is still a problem (see the
    /// loop).
    copies: bool,
    /// Bytes of the segment below this were synced, by the sync table's word (0: nothing
    /// proven): a damaged copy wholly below it is damage, as recovery takes it.
    synced_end: usize,
    /// A buffer here fails its CRC (or its first block is unreadable), as opposed to only
    /// holding valid buffers stranded behind damage.
    damaged_buffer: bool,
    /// Valid buffers of the segment's current use behind the stop (recovery ignores them).
    stranded_buffers: u64,
    /// Highest last LSN and highest durable floor among the stranded buffers.
    stranded_lsn: u64,
    stranded_floor: u64,
    /// Intact records of the stretch that recovery serves all the same (moved out of
    /// `records`): the damage there is outside them (a header, padding, a record directory).
    served_records: u64,
    /// Recovery takes the stretch as damage, not as a torn write: a valid buffer behind it
    /// vouches for it, or the sync table proves the copies synced.
    proven: bool,
    /// Failing buffers of the stretch whose record directory is damaged too (see
    /// `scan::stretch_records_and_unnamed`): what they held may not all be named.
    unnamed_buffers: usize,
    records: Vec<Rec>,
}

impl Suspect {
    /// Moves the records `served` picks (recovery serves them) from this suspect into `recs`,
    /// listing them in `salvaged`.
    fn serve(
        &mut self,
        served: impl Fn(usize, &Rec) -> bool,
        recs: &mut Vec<Rec>,
        salvaged: &mut Vec<usize>,
    ) {
        let (mut taken, mut rest) = (Vec::new(), Vec::new());
        for (k, r) in std::mem::take(&mut self.records).into_iter().enumerate() {
            if served(k, &r) {
                taken.push(r);
            } else {
                rest.push(r);
            }
        }
        self.records = rest;
        self.served_records += taken.len() as u64;
        for r in taken {
            salvaged.push(recs.len());
            recs.push(r);
        }
    }
}

/// Checks the store held by `storage`. I/O errors are errors; everything found on the store,
/// including a damaged superblock, is a [`Finding`].
pub fn check(storage: &dyn Storage, options: &CheckOptions) -> Result<EngineCheck> {
    let mut out = EngineCheck::default();
    let Some(sb_bytes) = storage.read_superblock()? else {
        return Err(EngineError::NotAStore("no superblock".into()));
    };
    let sb = match Superblock::decode(&sb_bytes) {
        Ok(sb) => sb,
        Err(e) => {
            out.findings.push(Finding::problem("superblock", e));
            return Ok(out);
        }
    };
    out.segment_size = sb.segment_size;
    out.segment_count = sb.segment_count;
    out.segments_per_file = sb.segments_per_file;
    for file in 0..sb.file_count() {
        out.segment_files.push(match options.store_dir {
            Some(d) => d.join(segment_file_name(file)).display().to_string(),
            None => segment_file_name(file),
        });
    }
    let seg_size = sb.segment_size as usize;

    // 1. Segment files.
    let mut file_lens = Vec::new();
    for file in 0..sb.file_count() {
        let len = storage.file_len(file)?;
        if len != 0 && len != sb.file_len() {
            out.findings.push(Finding::problem(
                out.segment_files[file as usize].clone(),
                format!(
                    "segment file is {len} bytes, the superblock says {} (truncated or \
                     extended by something else)",
                    sb.file_len()
                ),
            ));
        }
        file_lens.push(len);
    }

    // 2. and 3. The scan's verdicts on every segment (`scan.rs`), as recovery takes them.
    let mut bufs: Vec<Buf> = Vec::new();
    let mut recs: Vec<Rec> = Vec::new();
    let mut suspects: Vec<Suspect> = Vec::new();
    // Damaged stretches (with the suspect listing their records), judged once the log's floor
    // and end are known.
    let mut stretches: Vec<(usize, Stretch)> = Vec::new();
    // Records of damaged stretches that recovery serves (indices into `recs`).
    let mut salvaged: Vec<usize> = Vec::new();
    let mut image = vec![0u8; seg_size];
    // How far each segment of copies is known synced (`synctable.rs`), as recovery reads it.
    let proofs = super::synctable::read(storage, sb.segment_count)?;
    let progress = super::progress::Pass::begin("checking segments", sb.segment_count as u64);
    for segment in 0..sb.segment_count {
        progress.advance(segment as u64);
        let (file, base) = sb.segment_position(segment);
        if file_lens[file as usize] < base + seg_size as u64 {
            continue; // never allocated
        }
        out.segments_scanned += 1;
        storage.read_at(file, base, &mut image[..BLOCK_SIZE])?;
        if image[..SECTOR_SIZE].iter().all(|&b| b == 0) {
            continue; // free: a freed segment's first sector is zeroed (what follows is stale)
        }
        storage.read_at(file, base, &mut image)?;
        let verdicts = scan::segment_verdicts(
            &image,
            segment,
            sb.generation_high_water,
            proofs[segment as usize],
            sb.frees_clear_directories_from,
            true,
        );
        take_verdicts(
            segment,
            &image,
            verdicts,
            options,
            &mut bufs,
            &mut recs,
            &mut suspects,
            &mut stretches,
            &mut out.findings,
        );
    }

    // 4. The log's end, as recovery finds it.
    let LogEnd {
        floor,
        last_lsn,
        gap_at,
    } = scan::log_end(bufs.iter().map(|b| &b.header));
    out.durable_floor = floor;
    out.last_lsn = last_lsn;
    // Beyond the end: a batch after it, or a copy of one (buffers of copies carry the highest
    // LSN among their records).
    let cut = scan::cut_beyond(
        bufs.iter().map(|b| (b.segment, b.offset, &b.header)),
        last_lsn,
    );
    // The damaged stretches' records that recovery takes (`Stretch::takes`): intact ones and
    // deletions it keeps are served; damaged puts stay suspects (reads fail: a problem naming
    // the key). Nothing of a stretch beyond the log's end is taken.
    for (i, stretch) in &stretches {
        let segment = suspects[*i].place.segment;
        if cut
            .get(&segment)
            .is_some_and(|&at| stretch.span.start as u32 >= at)
        {
            continue;
        }
        let takes = stretch.takes(floor, last_lsn);
        suspects[*i].serve(
            |k, r| takes[k].taken() && r.applied(),
            &mut recs,
            &mut salvaged,
        );
    }
    let keep = |b: &Buf| cut.get(&b.segment).is_none_or(|&at| b.offset < at);

    // The map, from the accepted buffers. Points keep tombstones (to compare lost records).
    let mut points: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
    let mut ranges: Vec<usize> = Vec::new();
    // Batch ranges of accepted user buffers, to tell LSNs reused after a remount.
    let mut accepted_lsns: Vec<(u64, u64)> = Vec::new();
    let mut discarded = Vec::new();
    for b in &bufs {
        if !keep(b) {
            discarded.push(b);
            continue;
        }
        out.buffers_accepted += 1;
        if b.header.lsn_first > 0 {
            accepted_lsns.push((b.header.lsn_first, b.header.lsn_last));
        }
        for i in b.records.clone() {
            out.records_accepted += 1;
            let r = &recs[i];
            if !r.intact {
                continue; // reported by the scan; never served
            }
            take_into_map(&recs, i, &mut points, &mut ranges);
        }
    }
    // Then the intact records recovery salvages (accepted after every buffer, as there).
    let mut salvaged_end: BTreeMap<u32, u64> = BTreeMap::new();
    for &i in &salvaged {
        let r = &recs[i];
        let beyond_cut = cut
            .get(&r.place.segment)
            .is_some_and(|&at| r.place.offset >= at);
        if beyond_cut || lsn_of_version(r.version) > last_lsn {
            continue;
        }
        out.records_accepted += 1;
        let end = salvaged_end.entry(r.place.segment).or_default();
        *end = (*end).max((r.place.offset + r.len) as u64);
        take_into_map(&recs, i, &mut points, &mut ranges);
    }
    accepted_lsns.sort_unstable();
    let range_version = |key: &[u8]| -> Option<u64> {
        ranges
            .iter()
            .filter(|&&i| {
                let r = &recs[i];
                key >= r.key.as_slice() && (r.end.is_empty() || key < r.end.as_slice())
            })
            .map(|&i| recs[i].version)
            .max()
    };
    // The version the map holds for `key` (put or delete), and whether it is a put.
    let served = |key: &[u8]| -> (Option<u64>, bool) {
        let point = points.get(key).map(|&i| &recs[i]);
        let rv = range_version(key);
        match point {
            Some(p) if rv.is_none_or(|v| v < p.version) => {
                (Some(p.version), p.kind == RecordKind::Put)
            }
            _ => (rv, false),
        }
    };
    let lsn_reused = |lsn: u64| {
        let i = accepted_lsns.partition_point(|&(first, _)| first <= lsn);
        i > 0 && accepted_lsns[i - 1].1 >= lsn
    };

    // Live map: one sweep over the keys in order, keeping the range deletes that have started
    // and not yet ended (as recovery does).
    let mut live_per_segment: BTreeMap<u32, u64> = BTreeMap::new();
    let mut sorted_ranges: Vec<&Rec> = ranges.iter().map(|&i| &recs[i]).collect();
    sorted_ranges.sort_by(|a, b| a.key.cmp(&b.key));
    for r in &sorted_ranges {
        *live_per_segment.entry(r.place.segment).or_default() += r.len as u64;
    }
    let mut next_range = 0;
    let mut active: Vec<&Rec> = Vec::new();
    for (key, &i) in &points {
        let r = &recs[i];
        *live_per_segment.entry(r.place.segment).or_default() += r.len as u64;
        while next_range < sorted_ranges.len() && sorted_ranges[next_range].key <= *key {
            active.push(sorted_ranges[next_range]);
            next_range += 1;
        }
        active.retain(|d| d.end.is_empty() || key.as_slice() < d.end.as_slice());
        if r.kind != RecordKind::Put || active.iter().any(|d| d.version > r.version) {
            continue;
        }
        out.live.insert(
            key.clone(),
            LiveRecord {
                version: r.version,
                group: r.group,
                place: r.place,
                len: r.len,
                value_len: r.value_len,
                value: r.value.clone(),
            },
        );
    }

    // 5. What recovery does not see.
    // The newest batch anywhere on disk (versions far above it are garbage), and the highest
    // durable floor any valid buffer records, stranded ones included: a lost record of a batch
    // at or below it was durable, so no crash explains its loss.
    let evidence_floor = suspects
        .iter()
        .map(|s| s.stranded_floor)
        .fold(floor, u64::max);
    let newest_on_disk = bufs
        .iter()
        .map(|b| b.header.lsn_last)
        .chain(suspects.iter().map(|s| s.stranded_lsn))
        .max()
        .unwrap_or(0);
    // Intact deletions among the unseen records themselves: a put they delete is no loss
    // whatever recovery serves (a segment freed while its zeroing was torn holds puts together
    // with the tombstones that deleted them, both dropped from the index).
    let unseen_deletes: Vec<&Rec> = suspects
        .iter()
        .flat_map(|s| &s.records)
        .filter(|r| r.intact && r.kind != RecordKind::Put)
        .collect();
    let deleted_unseen = |r: &Rec| {
        unseen_deletes.iter().any(|d| {
            d.version > r.version
                && match d.kind {
                    RecordKind::DeleteRange => {
                        r.key >= d.key && (d.end.is_empty() || r.key < d.end)
                    }
                    _ => d.key == r.key,
                }
        })
    };
    let mut damage_found = false;
    for s in &suspects {
        let mut durable_lost = 0u64;
        let mut unsynced_lost = 0u64;
        let mut damaged_records = 0u64;
        let mut lost_here = Vec::new();
        for r in &s.records {
            if !r.intact {
                damaged_records += 1;
            }
            let lsn = lsn_of_version(r.version);
            let (served_version, served_put) = served(&r.key);
            let newer = served_version.is_none_or(|v| r.version > v);
            if !newer || lsn_reused(lsn) || lsn > newest_on_disk.max(floor).saturating_add(1 << 32)
            {
                continue; // superseded, stale (the log reused the LSN), or a garbage version
            }
            // A lost tombstone changes what is served only if it would hide a put that is
            // served now: one that hides nothing (its puts are gone too, e.g. compaction dropped
            // the served tombstone once they were) is no loss.
            let hides_a_served_put = match r.kind {
                RecordKind::Put => true,
                RecordKind::Delete => served_put,
                RecordKind::DeleteRange => out
                    .live
                    .range(r.key.clone()..)
                    .take_while(|(k, _)| r.end.is_empty() || k.as_slice() < r.end.as_slice())
                    .any(|(_, l)| l.version < r.version),
            };
            if r.intact && (!hides_a_served_put || deleted_unseen(r)) {
                continue;
            }
            // A damaged record in a stretch of copies may be garbage of a write torn by a power
            // cut (nothing proves copies were synced); an intact one newer than what is served
            // has no source left, and sources are freed only once their copies are synced.
            let synced_copy = s.copies
                && r.place.offset as usize + r.len as usize <= s.synced_end
                && lsn <= last_lsn;
            if (lsn <= evidence_floor && (r.intact || !s.copies)) || synced_copy {
                durable_lost += 1;
            } else {
                unsynced_lost += 1;
            }
            lost_here.push(DamagedRecord {
                key: r.key.clone(),
                version: r.version,
                place: r.place,
                intact: r.intact,
                served_version: served_version.filter(|_| served_put),
                value: r.value.clone().filter(|_| r.intact),
            });
        }
        let place = out.describe(s.place);
        let what = if s.damaged_buffer {
            "buffer fails its checksum"
        } else {
            "valid buffers that recovery does not reach"
        };
        if s.proven && s.unnamed_buffers > 0 {
            // Synced data whose names are gone: nothing tells which keys it held, so nothing
            // makes their reads fail. Say so, with where it is.
            out.findings.push(Finding::problem(
                place.clone(),
                format!(
                    "{what}, and its record directory is damaged too ({} buffer(s)): synced \
                     records there that nothing names any more are lost, and the files they \
                     belonged to may read older contents without an error",
                    s.unnamed_buffers
                ),
            ));
            damage_found = true;
        }
        let detail = format!(
            "{} record(s) damaged, {} stranded buffer(s) behind it; {} record(s) newer than \
             what the next mount serves",
            damaged_records,
            s.stranded_buffers,
            durable_lost + unsynced_lost
        );
        if durable_lost > 0 {
            out.findings.push(Finding::problem(
                place,
                format!(
                    "{what}: {detail}, {durable_lost} of them of batches that were durable \
                     (damaged media; the next mount serves older versions or none)"
                ),
            ));
            out.damaged.extend(lost_here);
            damage_found = true;
        } else if unsynced_lost == 0 && s.damaged_buffer && s.served_records > 0 {
            // Damage that cost nothing: every record of the stretch is intact and served (the
            // damage is in a buffer header, padding or a record directory). Media damage all
            // the same, worth knowing of.
            out.findings.push(Finding::note(
                place,
                format!(
                    "{what}: {} record(s) in it intact and served (or deletions whose effect \
                     is kept); the damage costs nothing (it is in a buffer header, padding, a \
                     record directory, or a deletion that its directory entry names)",
                    s.served_records
                ),
            ));
        } else if unsynced_lost > 0 {
            out.findings.push(Finding::note(
                place,
                if s.copies {
                    format!(
                        "{what}: {detail}, all copies (made by the separator or compaction) \
                         that nothing proves were synced: a write torn by a crash, which the \
                         next mount discards (the originals stay until copies are synced)"
                    )
                } else {
                    format!(
                        "{what}: {detail}, all of batches that were not yet durable (a write \
                         torn by a crash, which the next mount discards; or damage to the \
                         newest data)"
                    )
                },
            ));
        }
    }
    // Buffers beyond the log's end: the next mount discards them. Normal after a crash (writes
    // not yet durable); a problem if damage found above is what ends the log.
    if !discarded.is_empty() {
        let records: usize = discarded.iter().map(|b| b.records.len()).sum();
        let at = discarded[0];
        let why = match gap_at {
            Some(lsn) => format!("batch {lsn} is missing"),
            None => "their batches lie beyond the log's end".into(),
        };
        let place = out.describe(Place {
            segment: at.segment,
            offset: at.offset,
        });
        if damage_found {
            out.findings.push(Finding::problem(
                place,
                format!(
                    "the log ends at LSN {last_lsn} ({why}, damaged): the next mount discards \
                     {} later buffer(s) ({records} records) with it",
                    discarded.len()
                ),
            ));
            for b in &discarded {
                for r in &recs[b.records.clone()] {
                    let (v, put) = served(&r.key);
                    if r.kind != RecordKind::DeleteRange && v.is_none_or(|v| r.version > v) {
                        out.damaged.push(DamagedRecord {
                            key: r.key.clone(),
                            version: r.version,
                            place: r.place,
                            intact: r.intact,
                            served_version: v.filter(|_| put),
                            value: r.value.clone().filter(|_| r.intact),
                        });
                    }
                }
            }
        } else {
            out.findings.push(Finding::note(
                place,
                format!(
                    "the log ends at LSN {last_lsn} ({why}): the next mount discards {} \
                     buffer(s) ({records} records) beyond it, writes not yet durable at a crash",
                    discarded.len()
                ),
            ));
        }
    }
    // Records failing their own CRC inside accepted buffers: the next mount indexes them, and
    // every read of them fails.
    for b in bufs.iter().filter(|b| keep(b)) {
        for r in &recs[b.records.clone()] {
            if !r.intact {
                let (v, put) = served(&r.key);
                out.damaged.push(DamagedRecord {
                    key: r.key.clone(),
                    version: r.version,
                    place: r.place,
                    intact: false,
                    served_version: v.filter(|_| put),
                    value: None,
                });
            }
        }
    }

    // 6. Per-segment accounting.
    let mut generations: BTreeMap<u64, u32> = BTreeMap::new();
    let mut by_segment: BTreeMap<u32, Vec<&Buf>> = BTreeMap::new();
    for b in bufs.iter().filter(|b| keep(b)) {
        by_segment.entry(b.segment).or_default().push(b);
    }
    for (&segment, list) in &by_segment {
        let first = list[0].header;
        let mut fig = SegmentFigures {
            segment,
            kind: match first.kind {
                SegmentKind::Mixed => "mixed",
                SegmentKind::Group => "group",
            },
            group: first.group,
            generation: first.generation,
            ..Default::default()
        };
        if let Some(other) = generations.insert(first.generation, segment) {
            out.findings.push(Finding::problem(
                format!("segment {segment}"),
                format!(
                    "generation {} is also that of segment {other} (generations are unique)",
                    first.generation
                ),
            ));
        }
        for b in list {
            let place = out.describe(Place {
                segment,
                offset: b.offset,
            });
            fig.buffers += 1;
            fig.records += b.records.len() as u64;
            fig.used_bytes = (b.offset + b.header.buffer_len) as u64;
            if b.header.kind != first.kind || b.header.group != first.group {
                out.findings.push(Finding::problem(
                    place.clone(),
                    format!(
                        "buffer of kind {:?} group {} in a segment of kind {:?} group {}",
                        b.header.kind, b.header.group, first.kind, first.group
                    ),
                ));
            }
            if (b.records.len() as u64) < b.header.record_count as u64 {
                out.findings.push(Finding::problem(
                    place.clone(),
                    format!(
                        "buffer holds {} record(s) but counts {} batch(es)",
                        b.records.len(),
                        b.header.record_count
                    ),
                ));
            }
            if b.header.lsn_last > 0
                && let Some(r) = recs[b.records.clone()]
                    .iter()
                    .find(|r| lsn_of_version(r.version) > b.header.lsn_last)
            {
                out.findings.push(Finding::problem(
                    out.describe(r.place),
                    format!(
                        "record of LSN {} in a buffer whose last LSN is {}",
                        lsn_of_version(r.version),
                        b.header.lsn_last
                    ),
                ));
            }
        }
        fig.used_bytes = fig
            .used_bytes
            .max(salvaged_end.get(&segment).copied().unwrap_or(0));
        fig.live_bytes = live_per_segment.get(&segment).copied().unwrap_or(0);
        if fig.live_bytes > fig.used_bytes || fig.used_bytes > seg_size as u64 {
            out.findings.push(Finding::problem(
                format!("segment {segment}"),
                format!(
                    "accounting: {} live bytes, {} used, segment size {seg_size}",
                    fig.live_bytes, fig.used_bytes
                ),
            ));
        }
        out.segments.push(fig);
    }
    Ok(out)
}

/// Takes the scan's verdicts on one segment image: accepted buffers into `bufs`/`recs`, each
/// damaged stretch and the stop into `suspects` (the stretches also into `stretches`, to be
/// judged once the log's end is known), what the verdicts say is wrong into `findings`.
#[allow(clippy::too_many_arguments)]
fn take_verdicts(
    segment: u32,
    image: &[u8],
    verdicts: Verdicts,
    options: &CheckOptions,
    bufs: &mut Vec<Buf>,
    recs: &mut Vec<Rec>,
    suspects: &mut Vec<Suspect>,
    stretches: &mut Vec<(usize, Stretch)>,
    findings: &mut Vec<Finding>,
) {
    for b in verdicts.valid {
        if b.repaired {
            findings.push(Finding::note(
                format!("segment {segment} offset {}", b.at),
                "buffer header damaged in a field naming the buffer; repaired from its record \
                 directory (every other byte passes the buffer's checksum)",
            ));
        }
        let (offset, header) = (b.at as u32, b.header);
        let first = recs.len();
        take_valid_buffer(segment, image, b, options, recs, findings);
        for r in &recs[first..] {
            if !r.intact {
                findings.push(Finding::problem(
                    format!("segment {segment} offset {}", r.place.offset),
                    "record fails its checksum although its buffer's passes",
                ));
            }
        }
        bufs.push(Buf {
            segment,
            offset,
            header,
            records: first..recs.len(),
        });
    }
    for mut stretch in verdicts.stretches {
        let d = stretch.span;
        let records = stretch
            .records
            .iter()
            .map(|r| rec_of(segment, r.clone(), image, options))
            .collect();
        // The records stay with the stretch only as far as `Stretch::takes` reads them.
        stretch.records.iter_mut().for_each(|r| {
            r.key = Vec::new();
            r.range_end = Vec::new();
        });
        stretches.push((suspects.len(), stretch));
        suspects.push(Suspect {
            place: Place {
                segment,
                offset: d.start as u32,
            },
            copies: d.copies,
            synced_end: d.synced_end,
            damaged_buffer: true,
            stranded_buffers: 0,
            stranded_lsn: 0,
            stranded_floor: 0,
            served_records: 0,
            proven: stretches.last().is_some_and(|(_, s)| s.proven()),
            unnamed_buffers: stretches.last().map_or(0, |(_, s)| s.unnamed),
            records,
        });
    }
    let Some(stop) = verdicts.stop else {
        return;
    };
    let mut records: Vec<Rec> = stop
        .records
        .into_iter()
        .map(|r| rec_of(segment, r, image, options))
        .collect();
    let stranded_buffers = stop.stranded.len() as u64;
    let stranded_lsn = stop.stranded.iter().map(|b| b.header.lsn_last).max();
    let stranded_floor = stop.stranded.iter().map(|b| b.header.durable_floor).max();
    for b in stop.stranded {
        take_valid_buffer(segment, image, b, options, &mut records, &mut Vec::new());
    }
    suspects.push(Suspect {
        place: Place {
            segment,
            offset: stop.at as u32,
        },
        copies: stop.copies,
        synced_end: stop.synced_end,
        damaged_buffer: !stop.zeros,
        stranded_buffers,
        stranded_lsn: stranded_lsn.unwrap_or(0),
        stranded_floor: stranded_floor.unwrap_or(0),
        served_records: 0,
        proven: false,
        unnamed_buffers: stop.unnamed,
        records,
    });
}

/// The records of a valid buffer into `recs`; a problem if they do not fill the payload
/// exactly (the buffer's CRC matched, so the format itself is violated).
fn take_valid_buffer(
    segment: u32,
    image: &[u8],
    b: ValidBuffer,
    options: &CheckOptions,
    recs: &mut Vec<Rec>,
    findings: &mut Vec<Finding>,
) {
    if let Some(p) = b.malformed_at {
        findings.push(Finding::problem(
            format!("segment {segment} offset {}", b.at),
            format!("malformed record at payload offset {p} of a buffer that passes its checksum"),
        ));
    }
    recs.extend(
        b.records
            .into_iter()
            .map(|r| rec_of(segment, r, image, options)),
    );
}

/// A record the scan found, as the check keeps it: its value if the caller wants it, and
/// whether recovery keeps its effect although it is damaged (a tombstone, indexed as one; a
/// range delete whose range its buffer's record directory names).
fn rec_of(segment: u32, r: StretchRecord, image: &[u8], options: &CheckOptions) -> Rec {
    let h = r.header;
    let value_at = r.at + RECORD_HEADER_SIZE + h.key_len as usize;
    let value = (h.kind == RecordKind::Put && (options.keep_value)(&r.key))
        .then(|| image[value_at..value_at + h.value_len as usize].to_vec());
    Rec {
        deletion_kept: !r.intact
            && match h.kind {
                RecordKind::Put => false,
                RecordKind::Delete => true,
                RecordKind::DeleteRange => r.from_directory,
            },
        key: r.key,
        end: r.range_end,
        kind: h.kind,
        group: h.group,
        version: h.version,
        place: Place {
            segment,
            offset: r.at as u32,
        },
        len: h.total_len() as u32,
        value_len: h.value_len,
        value,
        intact: r.intact,
    }
}

/// Checks the store in directory `dir` (read-only; refuses a store in use).
pub fn check_dir(dir: &Path, keep_value: &dyn Fn(&[u8]) -> bool) -> Result<EngineCheck> {
    let storage = ReadOnlyStorage::open(dir)?;
    check(
        &storage,
        &CheckOptions {
            keep_value,
            store_dir: Some(dir),
        },
    )
}

/// Takes record `i` into the newest-version map being rebuilt: a range delete is listed, a
/// point record replaces the one of its key unless that one is at least as new (as recovery
/// does).
fn take_into_map(
    recs: &[Rec],
    i: usize,
    points: &mut BTreeMap<Vec<u8>, usize>,
    ranges: &mut Vec<usize>,
) {
    let r = &recs[i];
    match r.kind {
        RecordKind::DeleteRange => ranges.push(i),
        _ => match points.get(&r.key) {
            Some(&j) if recs[j].version >= r.version => {}
            _ => {
                points.insert(r.key.clone(), i);
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::storage::SimStorage;
    use crate::engine::{Engine, EngineOptions, Mutation};

    fn options() -> EngineOptions {
        EngineOptions {
            capacity_bytes: 16 << 20,
            segment_size_bytes: 1 << 20,
            sync_interval: None,
            ..Default::default()
        }
    }

    fn run(storage: &SimStorage) -> EngineCheck {
        check(
            storage,
            &CheckOptions {
                keep_value: &|_| true,
                store_dir: None,
            },
        )
        .unwrap()
    }

    #[test]
    fn clean_store_rebuilds_the_newest_versions() {
        let storage = SimStorage::new();
        let engine = Engine::open_on(storage.clone(), &options()).unwrap();
        engine
            .write(&[Mutation::put(0, b"a".to_vec(), b"1".to_vec())])
            .unwrap();
        engine
            .write(&[Mutation::put(0, b"a".to_vec(), b"2".to_vec())])
            .unwrap();
        engine
            .write(&[
                Mutation::put(0, b"pa".to_vec(), b"x".to_vec()),
                Mutation::put(0, b"pb".to_vec(), b"y".to_vec()),
            ])
            .unwrap();
        engine
            .write(&[Mutation::delete_prefix(0, b"p".to_vec())])
            .unwrap();
        engine
            .write(&[Mutation::delete(0, b"gone".to_vec())])
            .unwrap();
        engine.close().unwrap();
        let c = run(&storage);
        assert!(c.findings.is_empty(), "{:?}", c.findings);
        assert_eq!(c.live.len(), 1);
        assert_eq!(c.live[&b"a".to_vec()].value.as_deref(), Some(&b"2"[..]));
        assert!(c.damaged.is_empty());
        assert_eq!(c.segments.len(), 1);
        assert!(c.segments[0].live_bytes > 0);
    }

    #[test]
    fn flipped_byte_in_an_early_buffer_is_a_problem_naming_the_key() {
        let storage = SimStorage::new();
        let engine = Engine::open_on(storage.clone(), &options()).unwrap();
        engine
            .write(&[Mutation::put(0, b"victim".to_vec(), vec![7u8; 3000])])
            .unwrap();
        engine.sync().unwrap();
        for i in 0..5u8 {
            engine
                .write(&[Mutation::put(0, vec![b'k', i], vec![i; 100])])
                .unwrap();
            engine.sync().unwrap();
        }
        let (segment, _) = engine.test_segment_of(b"victim").unwrap();
        engine.close().unwrap();
        let sb = Superblock::decode(&storage.read_superblock().unwrap().unwrap()).unwrap();
        let (file, base) = sb.segment_position(segment);
        // Find the value's bytes and flip one.
        let mut img = vec![0u8; sb.segment_size as usize];
        storage.read_at(file, base, &mut img).unwrap();
        let at = img.windows(64).position(|w| w == [7u8; 64]).unwrap();
        storage.corrupt(file, base + at as u64 + 10, 0x10);
        let c = run(&storage);
        assert_eq!(c.problems(), 1, "{:?}", c.findings);
        assert!(c.findings[0].what.contains("fails its checksum"));
        assert!(
            c.damaged.iter().any(|d| d.key == b"victim" && !d.intact),
            "{:?}",
            c.damaged
        );
        // Keys written after it, in buffers behind it whose floor vouches for it, are served by
        // recovery, and not reported.
        assert!(
            c.damaged.iter().all(|d| d.key == b"victim"),
            "{:?}",
            c.damaged
        );
    }

    /// What to forge past the end of the segment holding "kept" (see `check_with_forged_tail`).
    struct Forged<'a> {
        /// Records: (kind, key, LSN). Values are 100 bytes of 7 (none for deletes).
        records: &'a [(RecordKind, &'a [u8], u64)],
        /// The forged buffer is of the generation this many uses before the segment's.
        generation_back: u64,
        /// Its buffer CRC fails (its records stay intact).
        torn: bool,
        /// "kept" lives in a group-owned segment (copied there by the separator), not the log.
        in_group_segment: bool,
        /// The first record's own CRC fails too (a byte of its value flipped).
        damaged_record: bool,
    }

    /// A store whose segment holding "kept" is followed, past its last valid buffer, by a
    /// forged buffer, then checked. Keys that the store never had, at LSNs no longer on disk
    /// anywhere (5, 6, ...: early batches whose segments were freed), look exactly like stale
    /// or lost data.
    fn check_with_forged_tail(f: Forged) -> EngineCheck {
        use crate::engine::format::{
            BUFFER_HEADER_SIZE, BufferHeader, DIRECTORY_TRAILER_SIZE, RECORD_HEADER_SIZE,
            RecordHeader, align_up, record_body_crc, version_of,
        };
        let storage = SimStorage::new();
        let engine = Engine::open_on(storage.clone(), &options()).unwrap();
        engine.test_pause_background();
        for i in 0..300u32 {
            engine
                .write(&[Mutation::put(0, b"x".to_vec(), vec![i as u8; 8000])])
                .unwrap();
        }
        engine.sync().unwrap();
        assert!(engine.test_reclaim().unwrap() >= 1);
        let group = if f.in_group_segment { 5 } else { 0 };
        engine
            .write(&[Mutation::put(group, b"kept".to_vec(), vec![5u8; 100])])
            .unwrap();
        if f.in_group_segment {
            // Another group in the same mixed segments, enough to close them: "kept" is
            // copied into group 5's segment, not handed over.
            for i in 0..160u32 {
                engine
                    .write(&[Mutation::put(6, i.to_be_bytes().to_vec(), vec![6u8; 8000])])
                    .unwrap();
            }
            engine.sync().unwrap();
            engine.test_separate().unwrap();
        }
        engine.sync().unwrap();
        let (segment, _) = engine.test_segment_of(b"kept").unwrap();
        engine.close().unwrap();
        let sb = Superblock::decode(&storage.read_superblock().unwrap().unwrap()).unwrap();
        let (file, base) = sb.segment_position(segment);
        let mut img = vec![0u8; sb.segment_size as usize];
        storage.read_at(file, base, &mut img).unwrap();
        // The use's end: the first block after its valid buffers.
        let mut end = 0usize;
        let mut template: Option<BufferHeader> = None;
        while let Some(h) = BufferHeader::decode_checked(&img[end..]) {
            if template.is_some_and(|t| t.generation != h.generation) {
                break;
            }
            template.get_or_insert(h);
            end += h.buffer_len as usize;
        }
        let template = template.expect("the segment has buffers");
        assert_eq!(
            template.kind == SegmentKind::Group,
            f.in_group_segment,
            "\"kept\" is not where the test wants it"
        );
        let mut payload = Vec::new();
        for (i, &(kind, key, lsn)) in f.records.iter().enumerate() {
            let value = if kind == RecordKind::Put {
                vec![7u8; 100]
            } else {
                Vec::new()
            };
            let h = RecordHeader {
                kind,
                key_len: key.len() as u16,
                group: template.group,
                value_len: value.len() as u32,
                version: version_of(lsn, i),
            };
            let mut rec = vec![0u8; RECORD_HEADER_SIZE];
            h.encode(&mut rec, &record_body_crc(key, &value));
            rec.extend_from_slice(key);
            rec.extend_from_slice(&value);
            payload.extend_from_slice(&rec);
        }
        let len = align_up(BUFFER_HEADER_SIZE + payload.len(), BLOCK_SIZE);
        let mut forged = vec![0u8; len];
        forged[BUFFER_HEADER_SIZE..BUFFER_HEADER_SIZE + payload.len()].copy_from_slice(&payload);
        let lsns = f.records.iter().map(|r| r.2);
        BufferHeader {
            generation: template.generation - f.generation_back,
            lsn_first: if f.in_group_segment {
                0
            } else {
                lsns.clone().min().unwrap()
            },
            lsn_last: lsns.max().unwrap(),
            payload_len: payload.len() as u32,
            record_count: f.records.len() as u32,
            buffer_len: len as u32,
            ..template
        }
        .seal(&mut forged);
        if f.torn {
            forged[7] ^= 1; // the flags byte: the buffer CRC fails, its records stay intact
            // Torn before its end reached the disk: no record directory (an intact one naming
            // batches within the durable floor would prove the buffer synced: damage).
            forged[len - DIRECTORY_TRAILER_SIZE..].fill(0);
        }
        if f.damaged_record {
            let key_len = f.records[0].1.len();
            forged[BUFFER_HEADER_SIZE + RECORD_HEADER_SIZE + key_len] ^= 0x40;
        }
        storage.write_at(file, base + end as u64, &forged).unwrap();
        run(&storage)
    }

    /// A reused segment keeps the bytes of its earlier use past the end of its new one. A
    /// valid buffer of an earlier generation there is stale, not damage, even when it holds a
    /// put of a key the store no longer has at all (its tombstone since dropped): fsck once
    /// reported such puts as durable data lost (crash_kill9 failed about 1 round in 10).
    #[test]
    fn a_buffer_of_an_earlier_use_past_the_end_is_stale_not_damage() {
        let c = check_with_forged_tail(Forged {
            records: &[(RecordKind::Put, b"gone", 5)],
            generation_back: 1,
            torn: false,
            in_group_segment: false,
            damaged_record: false,
        });
        assert!(c.findings.is_empty(), "{:?}", c.findings);
        assert!(c.damaged.is_empty(), "{:?}", c.damaged);
        assert_eq!(c.live.len(), 2);
    }

    /// A torn buffer of this use past the end: a durable put in it that nothing newer
    /// supersedes is lost data (a problem); a tombstone that hides no served put is no loss
    /// (its puts are gone too): fsck once reported those as damaged media
    /// (`scripts/powercut_replay.sh`, torn buffers of copies after a power cut).
    #[test]
    fn a_torn_tombstone_that_hides_nothing_is_no_loss_but_a_torn_put_is() {
        let torn = |records| {
            check_with_forged_tail(Forged {
                records,
                generation_back: 0,
                torn: true,
                in_group_segment: false,
                damaged_record: false,
            })
        };
        let c = torn(&[(RecordKind::Delete, b"gone", 5)]);
        assert_eq!(c.problems(), 0, "{:?}", c.findings);
        let c = torn(&[(RecordKind::Put, b"gone", 5)]);
        assert_eq!(c.problems(), 1, "{:?}", c.findings);
        assert!(
            c.damaged.iter().any(|d| d.key == b"gone"),
            "{:?}",
            c.damaged
        );
        // A put deleted by a tombstone beside it (a segment freed while its zeroing was torn
        // keeps both) is no loss either.
        let c = torn(&[
            (RecordKind::Put, b"gone", 5),
            (RecordKind::Delete, b"gone", 6),
        ]);
        assert_eq!(c.problems(), 0, "{:?}", c.findings);
    }

    /// A reused segment whose new first buffer was torn by a power cut still holds its earlier
    /// use's buffers behind it: they are stale bytes, not buffers stranded behind damage, even
    /// when they hold a put newer than anything served (found by `powercut_replay.sh`).
    #[test]
    fn old_buffers_behind_a_torn_first_buffer_of_a_new_use_are_stale() {
        use crate::engine::format::{
            BUFFER_HEADER_SIZE, NO_GROUP, RECORD_HEADER_SIZE, RecordHeader, SegmentKind,
            record_body_crc, version_of,
        };
        let storage = SimStorage::new();
        let engine = Engine::open_on(storage.clone(), &options()).unwrap();
        engine
            .write(&[Mutation::put(0, b"kept".to_vec(), vec![5u8; 100])])
            .unwrap();
        engine.close().unwrap();
        let sb = Superblock::decode(&storage.read_superblock().unwrap().unwrap()).unwrap();
        // The last segment was never used: forge its history there.
        let segment = sb.segment_count - 1;
        let (file, base) = sb.segment_position(segment);
        let buffer = |generation: u64, key: &[u8], lsn: u64| {
            let value = vec![7u8; 100];
            let h = RecordHeader {
                kind: RecordKind::Put,
                key_len: key.len() as u16,
                group: NO_GROUP,
                value_len: value.len() as u32,
                version: version_of(lsn, 0),
            };
            let mut b = vec![0u8; BLOCK_SIZE];
            let at = BUFFER_HEADER_SIZE;
            h.encode(&mut b[at..], &record_body_crc(key, &value));
            b[at + RECORD_HEADER_SIZE..at + RECORD_HEADER_SIZE + key.len()].copy_from_slice(key);
            let v = at + RECORD_HEADER_SIZE + key.len();
            b[v..v + value.len()].copy_from_slice(&value);
            BufferHeader {
                kind: SegmentKind::Mixed,
                generation,
                lsn_first: lsn,
                lsn_last: lsn,
                durable_floor: lsn,
                payload_len: h.total_len() as u32,
                record_count: 1,
                group: NO_GROUP,
                buffer_len: BLOCK_SIZE as u32,
                segment_index: segment,
            }
            .seal(&mut b);
            b
        };
        // The earlier use (generation 1): a put of "gone", a key the store does not have.
        let old = buffer(1, b"gone", 2);
        storage
            .write_at(file, base + BLOCK_SIZE as u64, &old)
            .unwrap();
        // The new use (generation 2): its first buffer, torn.
        let mut new = buffer(2, b"kept", 1);
        new[7] ^= 1;
        // Torn before its end: no record directory either.
        new[BLOCK_SIZE - crate::engine::format::DIRECTORY_TRAILER_SIZE..].fill(0);
        storage.write_at(file, base, &new).unwrap();
        let c = run(&storage);
        assert!(
            !c.damaged.iter().any(|d| d.key == b"gone"),
            "the earlier use's put reads as lost: {:?}",
            c.findings
        );
    }

    /// Copies (group-owned segments): nothing proves a stretch of them was synced, so a
    /// damaged record in a torn buffer of copies may be garbage of a power cut: a note. An
    /// intact copy newer than anything served is lost data all the same (sources are freed
    /// only once their copies are synced): a problem.
    #[test]
    fn damaged_copies_are_a_note_intact_lost_copies_a_problem() {
        let copies = |damaged_record| {
            check_with_forged_tail(Forged {
                records: &[(RecordKind::Put, b"gone", 5)],
                generation_back: 0,
                torn: true,
                in_group_segment: true,
                damaged_record,
            })
        };
        let c = copies(true);
        assert_eq!(c.problems(), 0, "{:?}", c.findings);
        assert!(
            c.findings.iter().any(|f| f.what.contains("all copies")),
            "{:?}",
            c.findings
        );
        let c = copies(false);
        assert_eq!(c.problems(), 1, "{:?}", c.findings);
    }

    #[test]
    fn random_damage_never_panics() {
        use crate::engine::storage::SimRng;
        let base = SimStorage::new();
        let engine = Engine::open_on(base.clone(), &options()).unwrap();
        for i in 0..200u32 {
            engine
                .write(&[Mutation::put(
                    0,
                    i.to_be_bytes().to_vec(),
                    vec![i as u8; 700],
                )])
                .unwrap();
        }
        engine.close().unwrap();
        let len = base.file_len(0).unwrap();
        for seed in 0..40 {
            let storage = base.crash(crate::engine::storage::PowerCut::KeepAllWritten);
            let mut rng = SimRng::new(seed);
            for _ in 0..1 + rng.below(50) {
                // Mostly within the written part, where it hurts.
                let at = rng.below(len.min(256 * 1024));
                storage.corrupt(0, at, (1 + rng.below(255)) as u8);
            }
            let c = run(&storage);
            assert!(c.findings.len() < 1000);
        }
    }

    /// Power cuts (any subset of unsynced sectors kept) are not damage: a store that only went
    /// through them has no problem, before recovery (torn tails are notes) and after it.
    #[test]
    fn power_cuts_alone_are_never_problems() {
        use crate::engine::storage::{PowerCut, SimRng};
        let opts = EngineOptions {
            capacity_bytes: 32 << 20,
            segment_size_bytes: 256 << 10,
            segments_per_file: 16,
            sync_interval: None,
            ..Default::default()
        };
        let work = |engine: &Engine, rng: &mut SimRng, n: usize| {
            for i in 0..n {
                let k = vec![b'k', rng.below(48) as u8];
                let m = match rng.below(20) {
                    0 | 1 => Mutation::delete(0, k),
                    2 => Mutation::delete_prefix(0, vec![b'k']),
                    _ => Mutation::put(0, k, vec![i as u8; 50 + rng.below(9000) as usize]),
                };
                engine.write(&[m]).unwrap();
                if rng.below(8) == 0 {
                    engine.sync().unwrap();
                }
                if rng.below(60) == 0 {
                    engine.test_compact().unwrap();
                }
            }
        };
        let no_problems = |storage: &SimStorage, when: &str, seed: u64| {
            let c = run(storage);
            let p: Vec<_> = c
                .findings
                .iter()
                .filter(|f| f.severity == Severity::Problem)
                .collect();
            assert!(p.is_empty(), "seed {seed}, {when}: {p:?}");
            c.findings.len()
        };
        let mut notes = 0;
        for seed in 0..16 {
            let mut rng = SimRng::new(seed);
            let storage = SimStorage::new();
            let engine = Engine::open_on(storage.clone(), &opts).unwrap();
            work(&engine, &mut rng, 250);
            // Write-behind: have the last buffers written (not synced), so the cut tears them.
            engine.test_wait_flushes();
            let crashed = storage.crash(PowerCut::Random(seed));
            drop(engine);
            notes += no_problems(&crashed, "after a power cut", seed);
            let engine = Engine::open_on(crashed.clone(), &opts).unwrap();
            work(&engine, &mut rng, 120);
            engine.test_wait_flushes();
            let again = crashed.crash(PowerCut::Random(seed + 1000));
            engine.close().unwrap();
            no_problems(&crashed, "after recovery and a clean close", seed);
            no_problems(&again, "after a second power cut", seed);
            let engine = Engine::open_on(again.clone(), &opts).unwrap();
            engine.close().unwrap();
            no_problems(&again, "after recovery of the second cut", seed);
        }
        // The cuts did tear writes: the check saw them, as notes.
        assert!(notes > 0);
    }

    #[test]
    fn garbage_superblock_is_a_finding() {
        let storage = SimStorage::new();
        storage.write_superblock(&[1u8; 64]).unwrap();
        let c = run(&storage);
        assert_eq!(c.problems(), 1);
        assert_eq!(c.findings[0].place, "superblock");
    }
}
