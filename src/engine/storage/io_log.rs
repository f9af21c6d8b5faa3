//! Test instrumentation of a real store (hidden `logstorfs mount --test-*` options): an I/O log
//! that lets power cuts of a real mounted workload be replayed, and injected write errors.
//!
//! `kill -9` of the daemon cannot show what a power cut does: the host page cache survives a
//! killed process. So a mount can record every storage call it makes ([`InstrumentedStorage`]
//! with an I/O log); [`replay`] then rebuilds, in [`SimStorage`], the state after any prefix of
//! those calls, and [`SimStorage::crash`] cuts power there (any subset of the unsynced 512-byte
//! sectors kept, which includes the last write torn). The image is written out as a store
//! directory ([`SimStorage::export`]) that `logstorfs mount` and `fsck` open like any other.
//!
//! # I/O log format (little-endian)
//!
//! The file starts with the 8 bytes `LSIOLOG1`; then one entry per call, in the order the calls
//! took effect (one mutex orders the call and its entry):
//!
//! | tag | fields | call |
//! |---|---|---|
//! | 1 | file u32, offset u64, len u32, `len` bytes | `write_at` |
//! | 2 | file u32, len u64 | `allocate` |
//! | 3 | (none) | `sync` or `sync_everything` (logged before the sync runs: see below) |
//! | 4 | len u32, `len` bytes | `write_superblock` (atomic and durable) |
//! | 5 | label u64 | a mark: the workload confirmed step `label` (`Engine::mark_io_log`) |
//!
//! A sync entry is written *before* the sync call: every write logged before it had returned
//! when the sync began, so the sync made it durable; writes logged after it may or may not be
//! durable in a replay, which is what they are in reality too.

use super::super::concurrency::{Arc, AtomicU64, Mutex, Ordering};
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;

use super::super::format::summaries::SUMMARY_FILES;
use super::super::format::sync_table::SYNC_TABLE_FILE;
use super::{
    LOCK_FILE, MappedFile, SUPERBLOCK_FILE, SimStorage, Storage, segment_file_name, store_file_name,
};

const MAGIC: &[u8; 8] = b"LSIOLOG1";
const TAG_WRITE: u8 = 1;
const TAG_ALLOCATE: u8 = 2;
const TAG_SYNC: u8 = 3;
const TAG_SUPERBLOCK: u8 = 4;
const TAG_MARK: u8 = 5;

/// What to instrument.
#[derive(Clone, Debug, Default)]
pub struct Instrumentation {
    /// Record every storage call into this file (created; the store must be new).
    pub record_io: Option<std::path::PathBuf>,
    /// Fail every `write_at` after this many have succeeded (an I/O error from the disk).
    pub fail_writes_after: Option<u64>,
}

/// A [`Storage`] that passes calls through to `inner`, recording them and injecting write
/// errors as configured.
pub struct InstrumentedStorage {
    inner: Arc<dyn Storage>,
    log: Option<Mutex<BufWriter<File>>>,
    /// Writes still allowed to succeed (`u64::MAX`: no limit).
    writes_left: AtomicU64,
    /// Neither recording nor failing writes (a plain `logstorfs mount`).
    plain: bool,
}

impl InstrumentedStorage {
    pub fn new(inner: Arc<dyn Storage>, what: &Instrumentation) -> io::Result<InstrumentedStorage> {
        let log = match &what.record_io {
            Some(path) => {
                let mut w = BufWriter::with_capacity(1 << 20, File::create(path)?);
                w.write_all(MAGIC)?;
                Some(Mutex::new(w))
            }
            None => None,
        };
        Ok(InstrumentedStorage {
            inner,
            log,
            writes_left: AtomicU64::new(what.fail_writes_after.unwrap_or(u64::MAX)),
            plain: what.record_io.is_none() && what.fail_writes_after.is_none(),
        })
    }

    fn plain(&self) -> bool {
        self.plain
    }

    /// Runs `call` and appends `entry` under the log's lock, so that entries are in the order
    /// the calls took effect. `before`: append first (syncs).
    fn logged<T>(
        &self,
        entry: &[&[u8]],
        before: bool,
        call: impl FnOnce() -> io::Result<T>,
    ) -> io::Result<T> {
        let Some(log) = &self.log else {
            return call();
        };
        let mut w = log.lock();
        let append = |w: &mut BufWriter<File>| -> io::Result<()> {
            for part in entry {
                w.write_all(part)?;
            }
            Ok(())
        };
        if before {
            append(&mut w)?;
            w.flush()?;
            return call();
        }
        let out = call()?;
        append(&mut w)?;
        Ok(out)
    }
}

impl Storage for InstrumentedStorage {
    fn read_at(&self, file: u32, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.inner.read_at(file, offset, buf)
    }

    fn write_at(&self, file: u32, offset: u64, data: &[u8]) -> io::Result<()> {
        let allowed = self
            .writes_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| match n {
                0 => None,
                u64::MAX => Some(u64::MAX),
                n => Some(n - 1),
            })
            .is_ok();
        if !allowed {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        self.logged(
            &[
                &[TAG_WRITE],
                &file.to_le_bytes(),
                &offset.to_le_bytes(),
                &(data.len() as u32).to_le_bytes(),
                data,
            ],
            false,
            || self.inner.write_at(file, offset, data),
        )
    }

    fn allocate(&self, file: u32, len: u64) -> io::Result<()> {
        self.logged(
            &[&[TAG_ALLOCATE], &file.to_le_bytes(), &len.to_le_bytes()],
            false,
            || self.inner.allocate(file, len),
        )
    }

    fn file_len(&self, file: u32) -> io::Result<u64> {
        self.inner.file_len(file)
    }

    fn sync(&self) -> io::Result<()> {
        self.logged(&[&[TAG_SYNC]], true, || self.inner.sync())
    }

    fn sync_everything(&self) -> io::Result<()> {
        self.logged(&[&[TAG_SYNC]], true, || self.inner.sync_everything())
    }

    fn read_superblock(&self) -> io::Result<Option<Vec<u8>>> {
        self.inner.read_superblock()
    }

    fn write_superblock(&self, data: &[u8]) -> io::Result<()> {
        self.logged(
            &[&[TAG_SUPERBLOCK], &(data.len() as u32).to_le_bytes(), data],
            false,
            || self.inner.write_superblock(data),
        )
    }

    /// Reads are not logged: recovery may read through a map.
    fn map_file(&self, file: u32, len: u64) -> io::Result<Option<MappedFile>> {
        self.inner.map_file(file, len)
    }

    fn will_need(&self, file: u32, offset: u64, len: u64) {
        self.inner.will_need(file, offset, len)
    }

    // Index checkpoints only without instrumentation (a plain `logstorfs mount`): a recorded
    // I/O log must hold every write of the store, and a store whose writes are made to fail
    // is tested for what its segments hold.
    fn read_checkpoint(&self) -> io::Result<Option<Vec<u8>>> {
        if self.plain() {
            self.inner.read_checkpoint()
        } else {
            // Not used, and not left behind for a later session either.
            self.inner.remove_checkpoint()?;
            Ok(None)
        }
    }

    fn write_checkpoint(&self, data: &[u8]) -> io::Result<()> {
        if self.plain() {
            self.inner.write_checkpoint(data)
        } else {
            Ok(())
        }
    }

    fn remove_checkpoint(&self) -> io::Result<()> {
        // Always: an instrumented session must not leave an earlier checkpoint behind.
        self.inner.remove_checkpoint()
    }

    fn mark(&self, label: u64) -> bool {
        let Some(log) = &self.log else {
            return false;
        };
        let mut w = log.lock();
        w.write_all(&[TAG_MARK])
            .and_then(|()| w.write_all(&label.to_le_bytes()))
            .and_then(|()| w.flush())
            .is_ok()
    }
}

/// One entry of an I/O log.
enum Entry {
    Write {
        file: u32,
        offset: u64,
        data: Vec<u8>,
    },
    Allocate {
        file: u32,
        len: u64,
    },
    Sync,
    Superblock(Vec<u8>),
    Mark(u64),
}

fn read_entry(r: &mut impl Read) -> io::Result<Option<Entry>> {
    let mut tag = [0u8; 1];
    match r.read_exact(&mut tag) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut u32b = [0u8; 4];
    let mut u64b = [0u8; 8];
    let entry = match tag[0] {
        TAG_WRITE => {
            r.read_exact(&mut u32b)?;
            let file = u32::from_le_bytes(u32b);
            r.read_exact(&mut u64b)?;
            let offset = u64::from_le_bytes(u64b);
            r.read_exact(&mut u32b)?;
            let mut data = vec![0u8; u32::from_le_bytes(u32b) as usize];
            r.read_exact(&mut data)?;
            Entry::Write { file, offset, data }
        }
        TAG_ALLOCATE => {
            r.read_exact(&mut u32b)?;
            let file = u32::from_le_bytes(u32b);
            r.read_exact(&mut u64b)?;
            Entry::Allocate {
                file,
                len: u64::from_le_bytes(u64b),
            }
        }
        TAG_SYNC => Entry::Sync,
        TAG_SUPERBLOCK => {
            r.read_exact(&mut u32b)?;
            let mut data = vec![0u8; u32::from_le_bytes(u32b) as usize];
            r.read_exact(&mut data)?;
            Entry::Superblock(data)
        }
        TAG_MARK => {
            r.read_exact(&mut u64b)?;
            Entry::Mark(u64::from_le_bytes(u64b))
        }
        t => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("I/O log entry with unknown tag {t}"),
            ));
        }
    };
    Ok(Some(entry))
}

fn open_log(path: &Path) -> io::Result<io::BufReader<File>> {
    let mut r = io::BufReader::with_capacity(1 << 20, File::open(path)?);
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic)?;
    if &magic != MAGIC {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is not a logstorfs I/O log", path.display()),
        ));
    }
    Ok(r)
}

/// What an I/O log holds: the number of entries, where the syncs are, and the marks.
#[derive(Debug, Default)]
pub struct LogSummary {
    pub entries: u64,
    pub writes: u64,
    pub bytes_written: u64,
    /// Entry index of every sync.
    pub syncs: Vec<u64>,
    /// (entry index, label) of every mark.
    pub marks: Vec<(u64, u64)>,
}

/// Reads an I/O log through (a log cut short by a crash of the recorder ends at its last whole
/// entry).
pub fn summarize(path: &Path) -> io::Result<LogSummary> {
    let mut r = open_log(path)?;
    let mut s = LogSummary::default();
    while let Some(e) = read_entry(&mut r).or_else(truncated_is_end)? {
        match e {
            Entry::Write { data, .. } => {
                s.writes += 1;
                s.bytes_written += data.len() as u64;
            }
            Entry::Sync => s.syncs.push(s.entries),
            Entry::Mark(label) => s.marks.push((s.entries, label)),
            _ => {}
        }
        s.entries += 1;
    }
    Ok(s)
}

fn truncated_is_end(e: io::Error) -> io::Result<Option<Entry>> {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        Ok(None)
    } else {
        Err(e)
    }
}

/// The storage as the first `entries` calls of the log left it (not yet power-cut: call
/// [`SimStorage::crash`] on it), and the label of the last mark among them.
pub fn replay(path: &Path, entries: u64) -> io::Result<(Arc<SimStorage>, Option<u64>)> {
    let mut replay = Replay::open(path)?;
    replay.advance_to(entries)?;
    Ok((replay.sim, replay.last_mark))
}

/// A replay that moves forward through the log, for many cuts of one log in one pass.
pub struct Replay {
    log: io::BufReader<File>,
    /// The storage as the calls replayed so far left it.
    pub sim: Arc<SimStorage>,
    /// Calls replayed so far.
    pub entries: u64,
    pub last_mark: Option<u64>,
}

impl Replay {
    pub fn open(path: &Path) -> io::Result<Replay> {
        Ok(Replay {
            log: open_log(path)?,
            sim: SimStorage::new(),
            entries: 0,
            last_mark: None,
        })
    }

    /// Replays calls until `entries` of them are (or the log ends: then false).
    pub fn advance_to(&mut self, entries: u64) -> io::Result<bool> {
        while self.entries < entries {
            let Some(e) = read_entry(&mut self.log).or_else(truncated_is_end)? else {
                return Ok(false);
            };
            match e {
                Entry::Write { file, offset, data } => self.sim.write_at(file, offset, &data)?,
                Entry::Allocate { file, len } => self.sim.allocate(file, len)?,
                Entry::Sync => self.sim.sync()?,
                Entry::Superblock(data) => self.sim.write_superblock(&data)?,
                Entry::Mark(label) => self.last_mark = Some(label),
            }
            self.entries += 1;
        }
        Ok(true)
    }
}

impl SimStorage {
    /// Writes this storage's current image out as a store directory `dir` (created; must not
    /// hold a store already), which `FileStorage` opens like any other.
    pub fn export(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)?;
        if dir.join(SUPERBLOCK_FILE).exists() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} already holds a store", dir.display()),
            ));
        }
        let mut file = 0u32;
        loop {
            let len = self.file_len(file)?;
            if len == 0 {
                break;
            }
            let mut buf = vec![0u8; len as usize];
            self.read_at(file, 0, &mut buf)?;
            std::fs::write(dir.join(segment_file_name(file)), &buf)?;
            file += 1;
        }
        for file in [SYNC_TABLE_FILE, SUMMARY_FILES[0], SUMMARY_FILES[1]] {
            let len = self.file_len(file)?;
            if len > 0 {
                let mut buf = vec![0u8; len as usize];
                self.read_at(file, 0, &mut buf)?;
                std::fs::write(dir.join(store_file_name(file)), &buf)?;
            }
        }
        if let Some(sb) = self.read_superblock()? {
            std::fs::write(dir.join(SUPERBLOCK_FILE), sb)?;
        }
        // An empty lock file, as a store that was never locked since.
        std::fs::write(dir.join(LOCK_FILE), b"")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::storage::PowerCut;
    use crate::engine::{Engine, EngineOptions, Mutation};

    fn options() -> EngineOptions {
        EngineOptions {
            capacity_bytes: 16 << 20,
            segment_size_bytes: 1 << 20,
            sync_interval: None,
            ..Default::default()
        }
    }

    /// A recorded run replays to the same contents: synced writes survive a cut right after
    /// the sync that covered them, the marks are where they were logged, and an exported image
    /// opens as a store.
    #[test]
    fn a_recorded_run_replays_and_power_cuts_keep_what_was_synced() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("io.log");
        let sim = SimStorage::new();
        let storage = Arc::new(
            InstrumentedStorage::new(
                sim.clone(),
                &Instrumentation {
                    record_io: Some(log.clone()),
                    fail_writes_after: None,
                },
            )
            .unwrap(),
        );
        let engine = Engine::open_on(storage, &options()).unwrap();
        engine
            .write(&[Mutation::put(0, b"a".to_vec(), b"1".to_vec())])
            .unwrap();
        engine.sync().unwrap();
        assert!(engine.mark_io_log(1));
        engine
            .write(&[Mutation::put(0, b"b".to_vec(), b"2".to_vec())])
            .unwrap();
        engine.close().unwrap();

        let s = summarize(&log).unwrap();
        assert!(s.writes > 0 && !s.syncs.is_empty());
        assert_eq!(s.marks.len(), 1);
        let (at_mark, label) = s.marks[0];
        assert_eq!(label, 1);
        // Cut right at the mark, dropping everything unsynced: "a" is there.
        let (image, last) = replay(&log, at_mark + 1).unwrap();
        assert_eq!(last, Some(1));
        let cut = image.crash(PowerCut::DropAllUnsynced);
        let e = Engine::open_on(cut, &options()).unwrap();
        assert_eq!(e.get(b"a").unwrap().as_deref(), Some(&b"1"[..]));
        e.close().unwrap();
        // The whole log: both keys, also through an exported store directory.
        let (image, _) = replay(&log, s.entries).unwrap();
        let out = dir.path().join("store");
        image.export(&out).unwrap();
        let e = Engine::open(&out, &options()).unwrap();
        assert_eq!(e.get(b"b").unwrap().as_deref(), Some(&b"2"[..]));
        e.close().unwrap();
        assert!(
            image.export(&out).is_err(),
            "export over a store must refuse"
        );
    }

    #[test]
    fn injected_write_errors_latch_the_store_read_only() {
        let sim = SimStorage::new();
        let storage = Arc::new(
            InstrumentedStorage::new(
                sim.clone(),
                &Instrumentation {
                    record_io: None,
                    fail_writes_after: Some(40),
                },
            )
            .unwrap(),
        );
        let engine = Engine::open_on(storage, &options()).unwrap();
        let mut failed = false;
        let mut synced = 0u32; // keys 0..synced were written and synced
        for i in 0..200u32 {
            let r = engine.write(&[Mutation::put(0, i.to_be_bytes().to_vec(), vec![1u8; 9000])]);
            if r.is_err() || engine.sync().is_err() {
                failed = true;
                break;
            }
            synced = i + 1;
        }
        assert!(failed, "writes kept succeeding past the injected error");
        assert!(synced > 0);
        // Every later write is refused too.
        for _ in 0..3 {
            assert!(
                engine
                    .write(&[Mutation::put(0, b"late".to_vec(), b"x".to_vec())])
                    .is_err()
            );
        }
        drop(engine);
        // What was acknowledged and synced before the failure is intact after reopening.
        let e = Engine::open_on(sim.crash(PowerCut::DropAllUnsynced), &options()).unwrap();
        for i in 0..synced {
            assert_eq!(
                e.get(&i.to_be_bytes()).unwrap().as_deref(),
                Some(&[1u8; 9000][..]),
                "key {i}"
            );
        }
        assert!(e.get(b"late").unwrap().is_none());
    }
}
