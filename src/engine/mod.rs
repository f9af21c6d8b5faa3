//! The storage engine: a log-structured key-value store modelled on ScyllaDB's logstor.
//!
//! It knows keys, records, compaction groups and segments; nothing of inodes, paths or FUSE.
//!
//! Map (each module's doc says more):
//! - `api`: the public types: [`Mutation`], [`EngineOptions`], [`EngineError`], [`EngineStats`],
//!   the limits.
//! - `format`: every on-disk byte (buffer and record headers, superblock).
//! - [`storage`]: files, or crash-simulation memory ([`storage::SimStorage`]), and the I/O log
//!   of a real mount under test (`storage::io_log`).
//! - [`store_dir`]: the store directory as a whole (its files, capacity, growth), before any
//!   engine is open.
//! - `segments`: the segment manager (states, generations, live bytes, allocation).
//! - `synctable`: the sync table, a durable proof of how far each segment was synced.
//! - `open`: opening a store (lock, superblock, recovery or checkpoint, threads) and closing it.
//! - `read_only`: opening a store without changing a byte of it.
//! - `batch`: a user batch checked against the limits and encoded for the log.
//! - `write_path`: a user batch refused for space or appended, indexed and released; `sync`.
//! - `log`: the write buffer and the active segment, with `log::gate` (the write gate),
//!   `log::buffers` (the open buffer, sealing) and `log::flusher` (the flusher thread, markers).
//! - `index`: key -> location, version and group; range deletes.
//! - `read`: the read path (point reads, scans, read-ahead).
//! - `read_pins`: reads in progress, which a segment's free waits out.
//! - `groups`: the open group-owned segments, where the separator and compaction put copies.
//! - `separator`: sorts the records of closed mixed segments into their groups' segments.
//! - `compaction`: empties segments whose live bytes dropped: `compaction::policy` picks the
//!   victims (pure), `compaction::pass` copies their live records out.
//! - `copies`: what the separator and compaction share to move live records (liveness, dead
//!   tombstones, regrouping, the copies written and indexed by compare-and-set).
//! - `tombstones`: which puts each segment holds, to know when a tombstone may be dropped.
//! - `reclaim`: frees segments whose records are all dead.
//! - `background`: the background thread that schedules syncs, removals, reclamation, the
//!   separator and compaction.
//! - `stats`: the engine's figures.
//! - [`progress`]: how far a long pass (recovery's scan, fsck) is, for a front end to show.
//! - `test_hooks`: the `test_*` hooks the tests reach into the engine with (feature
//!   `test-hooks`).
//! - `scan`: the one segment scan, a verdict for each buffer and stretch.
//! - `recovery`: rebuilds all of the above from the segments at open.
//! - `checkpoint`: the index written at a clean close, which spares the next open its scan.
//! - `summaries`: what a scan of each closed segment reads, which spares recovery that scan.
//! - `check`: the offline checker behind `logstorfs fsck`.
//!
//! - `concurrency`: the only door to threads, locks, atomics and the clock (a scheduler's in
//!   tests).
//!
//! See `ARCHITECTURE.md` for the invariants and how they are tested.

// Threads, locks, atomics and the clock come from `concurrency` only (see clippy.toml).
#![warn(clippy::disallowed_types, clippy::disallowed_methods)]

mod api;
mod background;
mod batch;
pub mod check;
mod checkpoint;
mod compaction;
mod concurrency;
mod copies;
pub(crate) mod format;
mod groups;
pub mod image;
mod index;
mod log;
mod open;
pub mod progress;
mod read;
mod read_only;
mod read_pins;
mod reclaim;
mod recovery;
mod scan;
mod segments;
mod separator;
mod stats;
pub mod storage;
pub mod store_dir;
mod summaries;
mod synctable;
#[cfg(any(test, feature = "test-hooks"))]
mod test_hooks;
#[cfg(test)]
mod tests;
mod tombstones;
mod write_path;

pub use api::*;
pub use recovery::RecoveryReport;

use concurrency::{Arc, AtomicBool, AtomicU64, Condvar, JoinHandle, Mutex, Ordering, RwLock};

use index::{Index, Location};
use segments::SegmentManager;
use storage::Storage;

/// An open store. Share it between threads by reference or `Arc`.
pub struct Engine {
    inner: Arc<Inner>,
    /// The flusher and the background (sync, reclaim, compaction) threads.
    threads: Vec<JoinHandle<()>>,
}

struct Inner {
    storage: Arc<dyn Storage>,
    segments: Arc<SegmentManager>,
    index: Index,
    log: log::Log,
    options: EngineOptions,
    recovery: RecoveryReport,
    user_bytes_written: AtomicU64,
    /// Live bytes promised to writes to come: space the layer above holds for records it will
    /// write later (fallocate's unwritten pages), counted against the capacity as live bytes
    /// until a batch releases it (see [`Engine::write_with_promise`]).
    promised_bytes: AtomicU64,
    compaction_bytes_written: AtomicU64,
    separator_bytes_written: AtomicU64,
    /// Mixed segments handed to a group whole, without copying (their live records all
    /// belonged to it).
    segments_handed_over: AtomicU64,
    /// Most memory a separator pass has held: one segment image and its live records.
    separator_memory_peak: AtomicU64,
    /// Serialises compaction and separator passes (they share the group writer).
    compaction_lock: Mutex<()>,
    /// The open group-owned segments (taken under `compaction_lock`).
    group_writer: Mutex<groups::GroupWriter>,
    /// Which puts each segment holds, to know when a tombstone may go.
    put_notes: tombstones::PutNotes,
    tombstones_dropped: AtomicU64,
    /// Compaction steps writers ran themselves, having found no free segment (each one held a
    /// write up: the background compactor fell behind).
    foreground_passes: AtomicU64,
    /// Segments compaction emptied by copying their live records out.
    compaction_victims: AtomicU64,
    closed: AtomicBool,
    stop: Mutex<bool>,
    wake: Condvar,
    /// Serialises reclamation passes.
    reclaim_lock: Mutex<()>,
    /// `SegmentManager::taken` when the background last wrote a checkpoint.
    taken_at_checkpoint: AtomicU64,
    /// How many checkpoints this engine wrote; held while one is written, so that a durable
    /// image (`image.rs`) reads the checkpoint file whole and knows whether it changed.
    checkpoint_writes: Mutex<u64>,
    /// Held for each step of removing what pending range deletes hide (see
    /// [`Inner::settle_pending`]), so that pausing the background waits out a step under way.
    removal_lock: Mutex<()>,
    /// Entries a removal step looks at ([`background::REMOVAL_STEP_ENTRIES`]; tests set fewer).
    removal_step: AtomicU64,
    /// Reads in progress, which the reclaimer waits out before freeing (see `read_pins.rs`).
    read_pins: read_pins::ReadPins,
    /// Turns a read gives the other threads between its lookup and its read, so that a
    /// schedule test can have passes and frees run inside that window.
    #[cfg(feature = "shuttle")]
    test_read_stall_turns: AtomicU64,
    /// Turns each put gives the other threads between taking its place in a write buffer and
    /// its index update, so that a schedule test can have a range delete of the same buffer
    /// appended and applied inside that window.
    #[cfg(feature = "shuttle")]
    test_put_index_stall_turns: AtomicU64,
    /// Test hook: milliseconds to sleep between a batch's buffer write and its index update.
    test_index_delay_ms: AtomicU64,
    /// Test hook: the background thread does nothing while set.
    test_background_paused: AtomicBool,
    /// Test hook: called at each step of a separator or compaction pass and of a reclamation,
    /// with the step's name (a crash test takes its power-cut image there).
    test_step_hook: Mutex<Option<StepHook>>,
    /// Which group a key belongs to now (set by the owner of the keys; see `CurrentGroup`).
    current_group: RwLock<Option<CurrentGroup>>,
    /// Opened by [`Engine::open_read_only`]: writes are refused, nothing runs in the background.
    read_only: bool,
}

/// Shared, so that a step is reported without the hook's mutex held: a hook may itself run
/// engine work that reaches a step (a reclamation that races the pass it was called from).
type StepHook = Arc<dyn Fn(&'static str) + Send + Sync>;

impl Engine {
    /// Writes mark `label` into the I/O log, if the store records one (see
    /// [`Engine::open_instrumented`]); false if not.
    pub fn mark_io_log(&self, label: u64) -> bool {
        self.inner.storage.mark(label)
    }

    /// Whether the store was opened read-only ([`EngineOptions::read_only`]).
    pub fn is_read_only(&self) -> bool {
        self.inner.read_only
    }

    /// Applies `batch` atomically and returns its LSN. Returns once the batch is written to the
    /// segment file and indexed: every reader sees it. Durable after the next [`Engine::sync`].
    pub fn write(&self, batch: &[Mutation]) -> Result<Lsn> {
        self.inner.write(batch, 0)
    }

    /// [`Engine::write`], and changes the promised bytes by `promise_change` with the batch:
    /// a batch that writes records into space promised earlier releases that promise (a
    /// negative change), so that it adds no live bytes beyond it and is taken even in a full
    /// store; one that holds space for later writes promises it (a positive change), and is
    /// refused with `NoSpace` as if it wrote those bytes. The engine keeps the total in memory
    /// only: the layer above knows which of its records hold promises, and sets the total
    /// again at every open ([`Engine::set_promised_bytes`]).
    pub fn write_with_promise(&self, batch: &[Mutation], promise_change: i64) -> Result<Lsn> {
        self.inner.write(batch, promise_change)
    }

    /// Sets the live bytes promised to writes to come (see [`Engine::write_with_promise`]), as
    /// the layer above counts them from its records when it opens the store.
    pub fn set_promised_bytes(&self, bytes: u64) {
        self.inner.promised_bytes.store(bytes, Ordering::Relaxed);
    }

    /// The live bytes promised to writes to come.
    pub fn promised_bytes(&self) -> u64 {
        self.inner.promised_bytes.load(Ordering::Relaxed)
    }

    /// The value of `key`, or `None` if it does not exist or was deleted.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.inner.check_open()?;
        self.inner.get(key)
    }

    /// Tells the separator and compaction which group a key's records belong to now, when the
    /// owner of the keys moves them between groups (the filesystem: a directory split or
    /// merged, a file renamed): a put they copy goes to that group instead of the one it was
    /// written to (see [`CurrentGroup`]). Tombstones keep their group.
    pub fn set_current_group(&self, current: CurrentGroup) {
        *self.inner.current_group.write() = Some(current);
    }

    /// Keys and values under `prefix`, in key order, starting after `start_after` (exclusive) if
    /// given, at most `limit` of them.
    pub fn scan(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let end = prefix_successor(prefix);
        self.inner.scan(prefix, &end, start_after, limit)
    }

    /// Keys and values in `start..end` (`end` exclusive), in key order, at most `limit`.
    /// Records adjacent on disk are read with one I/O.
    pub fn scan_range(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        if end.is_empty() {
            return Ok(Vec::new());
        }
        self.inner.scan(start, end, None, limit)
    }

    /// [`Engine::scan_range`], handing each key and value to `f` in key order instead of
    /// returning copies of them. The records are read into `scratch` (its contents are
    /// replaced), which a caller that scans often keeps to spare an allocation per scan.
    pub fn scan_range_with(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        scratch: &mut Vec<u8>,
        mut f: impl FnMut(&[u8], &[u8]),
    ) -> Result<()> {
        if end.is_empty() {
            return Ok(());
        }
        self.inner
            .scan_with(start, end, None, limit, scratch, &mut f)
    }

    /// Starts reading the records of `keys` in the background (a hint to the storage), so that
    /// the point reads that follow find them in memory. A listing that then reads one record
    /// per entry waits for one disk round trip per batch instead of one per entry.
    pub fn prefetch<K: AsRef<[u8]>>(&self, keys: &[K]) {
        let locations: Vec<Location> = keys
            .iter()
            .filter_map(|k| self.inner.index.get(k.as_ref()))
            .filter(|e| !e.tombstone)
            .map(|e| e.location)
            .collect();
        self.inner.prefetch(locations);
    }

    /// Whether `key` exists (from the index alone: no I/O).
    pub fn contains(&self, key: &[u8]) -> bool {
        self.inner.index.get(key).is_some_and(|e| !e.tombstone)
    }

    /// How many keys in `start..end` (`end` exclusive; empty: unbounded) exist, from the index
    /// alone (no I/O), visiting only the keys there.
    pub fn count_keys(&self, start: &[u8], end: &[u8]) -> u64 {
        self.inner.index.count_live(start, end)
    }

    /// How many live keys in `start..end` (`end` exclusive; empty: unbounded) have a record of
    /// exactly `record_len` bytes (as [`Mutation::encoded_len`] counts them), from the index
    /// alone (no I/O): records of one kind that a length tells apart, such as empty values
    /// under keys of one length.
    pub fn count_records_of_len(&self, start: &[u8], end: &[u8], record_len: u64) -> u64 {
        self.inner.index.count_of_len(start, end, record_len)
    }

    /// The bytes of `key`'s record (header, key and value), if it exists, from the index alone.
    pub fn record_len(&self, key: &[u8]) -> Option<u64> {
        self.inner
            .index
            .get(key)
            .filter(|e| !e.tombstone)
            .map(|e| u64::from(e.location.len))
    }

    /// The live keys in `start..end` (`end` exclusive) with the bytes of each one's record
    /// (header, key and value, as [`Mutation::encoded_len`] counts them), at most `limit`, from
    /// the index alone (no I/O): what a caller needs to know how much live data rewriting
    /// them at another length would add.
    pub fn record_lens(&self, start: &[u8], end: &[u8], limit: usize) -> Vec<(Vec<u8>, u64)> {
        self.inner
            .index
            .scan(start, end, None, limit)
            .into_iter()
            .map(|(key, entry)| (key, u64::from(entry.location.len)))
            .collect()
    }

    /// The keys that exist in `start..end` (`end` exclusive; empty: unbounded), in key order,
    /// at most `limit`, from the index alone (no I/O, no value read), visiting only the keys
    /// there: where the next stored key, or the next gap in a run of keys, is.
    pub fn keys(&self, start: &[u8], end: &[u8], limit: usize) -> Vec<Vec<u8>> {
        self.record_lens(start, end, limit)
            .into_iter()
            .map(|(key, _)| key)
            .collect()
    }

    /// Index entries looked at so far by lookups and range walks: a work counter for tests.
    pub fn index_keys_visited(&self) -> u64 {
        self.inner.index.keys_visited()
    }

    /// Makes every batch that returned before this call durable.
    pub fn sync(&self) -> Result<()> {
        self.inner.check_open()?;
        if self.inner.read_only {
            return Ok(());
        }
        self.inner.sync()
    }

    /// The store's figures, exact: what pending range deletes hide is removed first.
    pub fn stats(&self) -> EngineStats {
        self.inner.settle_pending(false);
        self.inner.stats()
    }

    /// Range deletes whose covered entries are not all removed from the index yet (hidden from
    /// readers meanwhile).
    pub fn pending_range_deletes(&self) -> usize {
        self.inner.index.pending_count()
    }

    /// The LSN up to which every batch is durable.
    pub fn durable_lsn(&self) -> Lsn {
        self.inner.log.durable_lsn()
    }

    /// What recovery found when this engine was opened.
    pub fn recovery_report(&self) -> RecoveryReport {
        self.inner.recovery.clone()
    }

    /// The usable capacity ([`EngineStats::usable_capacity_bytes`]) alone: `statfs` asks for it
    /// on every call, and the full [`Engine::stats`] walks every segment and the index.
    pub fn usable_capacity_bytes(&self) -> u64 {
        self.inner.user_capacity()
    }

    /// Bytes that user writes may still add before the store is full (capacity less the
    /// reserve, less live bytes). Exact, as [`Engine::stats`]: what pending range deletes hide
    /// is removed first, so that space a delete freed is there for the caller to count on
    /// (fallocate checks its whole range against it; `df` shows it).
    pub fn available_bytes(&self) -> u64 {
        self.inner.settle_pending(false);
        self.inner
            .user_capacity()
            .saturating_sub(self.inner.live_and_promised())
    }
}

/// The smallest key greater than every key starting with `prefix` (empty: none).
pub fn prefix_successor(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return end;
        }
    }
    Vec::new()
}

impl Inner {
    /// Reports `step` of a pass, a sync or a reclamation to the test hook, if one is set (see
    /// `test_step_hook`).
    fn test_step(&self, step: &'static str) {
        let hook = self.test_step_hook.lock().clone();
        if let Some(hook) = hook {
            hook(step);
        }
    }
}
