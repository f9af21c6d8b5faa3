//! The storage engine: a log-structured key-value store modelled on ScyllaDB's logstor.
//!
//! It knows keys, records, compaction groups and segments; nothing of inodes, paths or FUSE.
//!
//! Map (each module's doc says more):
//! - `api`: the public types: [`Mutation`], [`EngineOptions`], [`EngineError`], [`EngineStats`],
//!   the limits.
//! - `format`: every on-disk byte (buffer and record headers, superblock).
//! - [`storage`]: files, or crash-simulation memory ([`storage::SimStorage`]).
//! - `segments`: the segment manager (states, generations, live bytes, allocation).
//! - `batch`: a user batch checked against the limits and encoded for the log.
//! - `log`: the write buffer, its write gate, group commit and the active segment.
//! - `index`: key -> location, version and group; range deletes.
//! - `read`: the read path (point reads, scans, read-ahead).
//! - `groups`: the open group-owned segments, where the separator and compaction put copies.
//! - `compaction`: which segments to empty (pure); the passes themselves are `Inner::separate`
//!   and `Inner::compact_pass` here.
//! - `tombstones`: which puts each segment holds, to know when a tombstone may be dropped.
//! - `reclaim`: frees segments whose records are all dead.
//! - `background`: the background thread that schedules syncs, removals, reclamation, the
//!   separator and compaction.
//! - `stats`: the engine's figures.
//! - `test_hooks`: the `test_*` hooks the tests reach into the engine with (feature
//!   `test-hooks`).
//! - `recovery`: rebuilds all of the above from the segments at open.
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
pub(crate) mod format;
mod groups;
mod index;
pub mod instrument;
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
mod stats;
pub mod storage;
pub mod store_dir;
mod synctable;
#[cfg(any(test, feature = "test-hooks"))]
mod test_hooks;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_pending;
#[cfg(test)]
mod tests_space;
mod tombstones;
mod write_path;

pub use api::*;
pub use recovery::RecoveryReport;

use concurrency::{Arc, AtomicBool, AtomicU64, Condvar, JoinHandle, Mutex, Ordering, RwLock};

use format::{RECORD_HEADER_SIZE, RecordHeader, RecordKind, SegmentKind};
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

/// A compaction pass frees the victims it has emptied so far once free segments drop to this
/// many above what compaction may not take (half the reserve).
const INCREMENTAL_RECLAIM_FREE_SEGMENTS: usize = 3;

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
        self.inner.write(batch)
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

    /// What recovery found when this engine was opened.
    pub fn recovery_report(&self) -> RecoveryReport {
        self.inner.recovery.clone()
    }

    /// Bytes that user writes may still add before the store is full (capacity less the
    /// reserve, less live bytes). Exact, as [`Engine::stats`]: what pending range deletes hide
    /// is removed first, so that space a delete freed is there for the caller to count on
    /// (fallocate checks its whole range against it; `df` shows it).
    pub fn available_bytes(&self) -> u64 {
        self.inner.settle_pending(false);
        self.inner
            .user_capacity()
            .saturating_sub(self.inner.segments.live_total())
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
    /// One step of compaction: frees the dead segments, or else runs one small pass and frees
    /// its victims. Returns whether any segment was freed (a pass frees its first victims
    /// itself when free segments run short).
    fn compaction_step(&self, pass_segments: u64) -> Result<bool> {
        // Segments that pending range deletes empty are freed without copying anything.
        self.settle_pending(false);
        let freed_before = self.segments.reclaimed.load(Ordering::Relaxed);
        self.sync()?;
        if self.reclaim_dead_segments()? == 0 && self.compact_pass(pass_segments)? > 0 {
            self.sync()?;
            self.reclaim_dead_segments()?;
        }
        Ok(self.segments.reclaimed.load(Ordering::Relaxed) > freed_before)
    }

    /// Whether free segments are below the background compactor's target: the reserve plus
    /// headroom for bursts of writes (a 32nd of the store, 8 to 64 segments). Every segment
    /// held free is space that cannot hold dead records waiting to die further, and cleaning
    /// costs grow steeply with the space in use (an eighth of the store held free cost about
    /// 0.4 compaction bytes per user byte at 75% live data in `wa_bench`); too little, and a
    /// real mount's writers outrun the background and run passes themselves (a 128th: 56
    /// writer-run steps in 30 s of 4 KiB overwrites; `scripts/compaction_latency.sh`).
    fn needs_compaction(&self) -> bool {
        let total = self.segments.geometry.segment_count as usize;
        let headroom = (total / 32).clamp(8, 64);
        self.segments.free_count() < self.segments.reserved as usize + headroom
    }

    /// One compaction pass: moves the live records of the chosen victims into the group-owned
    /// segments of their groups, copying at most `max_live_segments` segments of live data.
    /// Returns how many victims it emptied (the reclaimer frees them).
    fn compact_pass(&self, max_live_segments: u64) -> Result<usize> {
        // Not needed for soundness (an entry a pending range delete hides is live for
        // relocation until removed: copied, it is removed where it moved), but it spares copying
        // dead data.
        self.settle_pending(false);
        let _serial = self.compaction_lock.lock();
        let snapshot = self.segments.snapshot();
        let victims = compaction::pick_victims_within(
            &snapshot,
            self.segments.segment_size() as u64,
            self.options.compaction_policy,
            self.log.last_lsn(),
            max_live_segments,
        );
        if victims.is_empty() {
            return Ok(0);
        }
        let mut image = Vec::new();
        let mut emptied = 0;
        for &victim in &victims {
            {
                // The reclaimer must not free (and the log reuse) the victim while it is read
                // and copied; it may have done so since the snapshot.
                let _no_free = self.reclaim_lock.lock();
                if !self.still_as_listed(victim, &snapshot[victim as usize].0) {
                    continue;
                }
                concurrency::between_steps();
                let mut live = self.live_records_of(victim, &mut image)?;
                self.drop_dead_tombstones(victim, &mut live);
                self.test_step("compaction: victim read");
                if !self.copy_to_groups(
                    live,
                    &self.compaction_bytes_written,
                    segments::Claim::Compaction,
                )? {
                    // No room for all of this victim's copies: copying part of them would
                    // take segments and free none. A later victim may fit.
                    continue;
                }
            }
            emptied += 1;
            self.compaction_victims.fetch_add(1, Ordering::Relaxed);
            // Free the emptied victims as we go when free segments run short, so that a pass
            // over many victims needs only a couple of free segments, not room for all its
            // copies at once (the difference between working and not at high utilisation).
            if self.segments.free_count()
                <= self.segments.reserved as usize / 2 + INCREMENTAL_RECLAIM_FREE_SEGMENTS
            {
                self.sync()?;
                self.reclaim_dead_segments()?;
            }
        }
        self.group_writer.lock().close_empty(&self.segments);
        Ok(emptied)
    }

    /// The separator: sorts the records of closed mixed segments into their groups' segments.
    /// A mixed segment whose live records all belong to one group is handed to that group as
    /// it is (no copy: a large sequential write costs one device write); the others have their
    /// live records copied. Runs once `threshold` mixed segments are closed, or with `drain`
    /// whatever their number. Sources must be durable first (a copy must not outlive a batch
    /// that a power cut takes back; recovery also drops such copies, see `recovery.rs`).
    /// Returns how many mixed segments it dealt with.
    fn separate(&self, drain: bool) -> Result<usize> {
        self.settle_pending(false);
        let _serial = self.compaction_lock.lock();
        let mixed: Vec<(u32, segments::SegmentInfo)> = self
            .segments
            .snapshot()
            .into_iter()
            .enumerate()
            .filter(|(_, (info, live))| {
                info.state == segments::SegmentState::Closed
                    && info.kind == SegmentKind::Mixed
                    && *live > 0
            })
            .map(|(s, (info, _))| (s as u32, info))
            .collect();
        let threshold = self.options.separator_threshold_segments.max(1) as usize;
        if mixed.is_empty() || (!drain && mixed.len() < threshold) {
            if drain {
                // Writes paused: a group whose data was all deleted since the last pass (its
                // tombstones are in the active mixed segment, so there is nothing to separate)
                // must still give up its open segment, or it owns it until the next write.
                self.group_writer.lock().close_empty(&self.segments);
            }
            return Ok(0);
        }
        if mixed
            .iter()
            .any(|(_, info)| info.max_lsn > self.log.durable_lsn())
        {
            self.sync()?;
        }
        let mut image = Vec::new();
        let mut skipped = 0;
        for &(segment, listed) in &mixed {
            // The reclaimer must not free (and the log reuse) the segment while it is read and
            // sorted: it may have emptied and freed it since the list was made.
            let _no_free = self.reclaim_lock.lock();
            if !self.still_as_listed(segment, &listed) {
                continue;
            }
            let mut live = self.live_records_of(segment, &mut image)?;
            self.drop_dead_tombstones(segment, &mut live);
            let held = image.len() + live.iter().map(|(_, r)| r.bytes.len()).sum::<usize>();
            self.separator_memory_peak
                .fetch_max(held as u64, Ordering::Relaxed);
            // A segment whose records move to another group is copied, never handed over:
            // its bytes on disk still name the group they were written to.
            let regrouped = self.regroup_copies(&mut live);
            let first_group = live.first().map(|(g, _)| *g);
            if let Some(group) = first_group.filter(|_| !regrouped)
                && live.iter().all(|(g, _)| *g == group)
            {
                self.segments.hand_over(segment, group);
                self.segments_handed_over.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if !self.copy_to_groups(live, &self.separator_bytes_written, segments::Claim::User)? {
                // No room for all of this segment's copies: it waits for a later run.
                skipped += 1;
            }
        }
        self.group_writer.lock().close_empty(&self.segments);
        Ok(mixed.len() - skipped)
    }

    /// Takes out of `live` (records of `victim` about to be moved) the tombstones that no
    /// segment other than `victim` holds an older put for, and removes them from the index:
    /// they die with `victim` (see `tombstones.rs`).
    fn drop_dead_tombstones(&self, victim: u32, live: &mut Vec<(u32, compaction::LiveRecord)>) {
        if !live.iter().any(|(_, r)| r.kind != RecordKind::Put) {
            return;
        }
        let in_use: Vec<u32> = self
            .segments
            .snapshot()
            .iter()
            .enumerate()
            .filter(|(s, (info, _))| {
                *s as u32 != victim && info.state != segments::SegmentState::Free
            })
            .map(|(s, _)| s as u32)
            .collect();
        live.retain(|(_, r)| {
            let hash = match r.kind {
                RecordKind::Put => return true,
                RecordKind::Delete => self.put_notes.point_hash(&r.key),
                RecordKind::DeleteRange => {
                    let Some(h) = RecordHeader::decode(&r.bytes) else {
                        return true;
                    };
                    let end =
                        &r.bytes[RECORD_HEADER_SIZE + h.key_len as usize..][..h.value_len as usize];
                    match self.put_notes.range_hash(&r.key, end) {
                        Some(hash) => hash,
                        None => return true,
                    }
                }
            };
            if in_use
                .iter()
                .any(|&s| self.put_notes.may_hold_older(s, hash, r.version))
            {
                return true; // an older put is still on disk: the tombstone stays
            }
            let removed = match r.kind {
                RecordKind::DeleteRange => self.index.remove_range_if_at(&r.key, r.version, r.old),
                _ => self.index.remove_if_at(&r.key, r.old),
            };
            if removed {
                self.segments.sub_live(r.old.segment, r.old.len);
                self.tombstones_dropped.fetch_add(1, Ordering::Relaxed);
                return false;
            }
            // Superseded meanwhile: not live any more; copying it would be harmless but useless.
            false
        });
    }

    /// The live records of closed segment `segment` with their groups: the records the index
    /// points at exactly (sound because every record of a closed segment is in the index: the
    /// write gate). `image` is scratch space for the segment's bytes.
    fn live_records_of(
        &self,
        segment: u32,
        image: &mut Vec<u8>,
    ) -> Result<Vec<(u32, compaction::LiveRecord)>> {
        let info = self.segments.info(segment);
        debug_assert_eq!(info.state, segments::SegmentState::Closed);
        let used = info.used as usize;
        image.resize(used, 0);
        self.segments.read(segment, 0, &mut image[..used])?;
        let hw = self.segments.generation_high_water();
        let mut live = Vec::new();
        // Past a damaged stretch too (recovery indexed what follows it); the records of the
        // stretch itself stay where they are, so such a segment is never emptied.
        let proof = self.segments.sync_table.proof(segment);
        let scan = recovery::scan_segment(
            &image[..used],
            segment,
            hw,
            proof,
            self.segments.geometry.frees_clear_directories_from,
        );
        for (pos, header) in scan.valid {
            for (at, h) in recovery::records_of(segment, pos, &header, image)? {
                let location = Location {
                    segment,
                    offset: at as u32,
                    len: h.total_len() as u32,
                };
                let key = compaction::LiveRecord::key_of(&image[at..], h.key_len as usize);
                let is_live = match h.kind {
                    RecordKind::DeleteRange => self.index.range_at(&key, h.version, location),
                    _ => self.index.points_at(&key, location),
                };
                if is_live {
                    live.push((
                        h.group,
                        compaction::LiveRecord {
                            bytes: image[at..at + h.total_len()].to_vec(),
                            kind: h.kind,
                            key,
                            version: h.version,
                            old: location,
                        },
                    ));
                }
            }
        }
        Ok(live)
    }

    /// Whether `segment` is still closed in the use `listed` describes (not freed, not reused
    /// since a pass listed it). Call with `reclaim_lock` held, so that it stays so.
    fn still_as_listed(&self, segment: u32, listed: &segments::SegmentInfo) -> bool {
        let now = self.segments.info(segment);
        now.state == segments::SegmentState::Closed
            && now.kind == listed.kind
            && now.generation == listed.generation
    }

    /// Moves each put of `live` to the group its key belongs to now, as the owner of the keys
    /// says (`Engine::set_current_group`): the group and the record's header (its copy will
    /// say so). Tombstones keep their group. Returns whether any record moved.
    fn regroup_copies(&self, live: &mut [(u32, compaction::LiveRecord)]) -> bool {
        let Some(current) = self.current_group.read().clone() else {
            return false;
        };
        let read = |key: &[u8]| self.get(key).ok().flatten();
        let mut moved = false;
        for (group, record) in live.iter_mut() {
            if record.kind != RecordKind::Put {
                continue;
            }
            if let Some(now) = current(&record.key, &read).filter(|now| now != group) {
                format::set_record_group(&mut record.bytes, now);
                *group = now;
                moved = true;
            }
        }
        moved
    }

    /// Copies `live` records into the group-owned segments of their groups (oldest first, so
    /// that cold data ends up together), then moves the index to the copies by compare-and-set:
    /// a record overwritten meanwhile stays where its newest version is, and its copy is dead
    /// on arrival. `counter` gets the bytes written; see `GroupWriter::write` for the reserve.
    ///
    /// Returns `false`, having written nothing, if the free segments `claim` may take cannot
    /// hold the copies (one open segment counted for every group they go to), so that a pass
    /// leaves such a segment whole for a later one rather than run out in its middle. If a write still fails (a
    /// racing writer took the segments, an I/O error), the copies already written are noted
    /// and indexed all the same before the error is returned: they are on disk.
    fn copy_to_groups(
        &self,
        live: Vec<(u32, compaction::LiveRecord)>,
        counter: &AtomicU64,
        claim: segments::Claim,
    ) -> Result<bool> {
        let mut live = live;
        self.regroup_copies(&mut live);
        let mut by_group: std::collections::BTreeMap<u32, Vec<compaction::LiveRecord>> =
            Default::default();
        for (group, record) in live {
            by_group.entry(group).or_default().push(record);
        }
        for records in by_group.values_mut() {
            compaction::order_survivors(records);
        }
        let mut writer = self.group_writer.lock();
        let size = self.segments.segment_size();
        borrow_roomiest_open_segment(&writer, size, &mut by_group);
        let needed: usize = by_group
            .iter()
            .map(|(&group, records)| {
                let refs: Vec<&compaction::LiveRecord> = records.iter().collect();
                writer.segments_needed(size, group, &refs)
            })
            .sum();
        if needed > self.segments.free_for(claim) {
            if claim == segments::Claim::User {
                // The separator only sorts: under pressure it waits, and compaction empties
                // the mixed segments (below, one group at a time if need be).
                return Ok(false);
            }
            // Sorted by group, the copies do not fit: every group they go to may want a segment
            // of its own, and a store of many groups near its capacity has fewer free segments
            // than groups. One group then takes them all (each copy says so in its header, as a
            // regrouped copy does; `regroup_copies` sends puts home when they are next copied),
            // and the other groups' open segments close, so that their unused tails count
            // among the closed segments that compaction can empty. That keeps the store to the
            // open segments `user_capacity` counts on, whatever the number of groups.
            let Some(target) = writer.roomiest_of(size, by_group.keys().copied()) else {
                return Ok(false);
            };
            let mut all: Vec<compaction::LiveRecord> = by_group.into_values().flatten().collect();
            for record in &mut all {
                format::set_record_group(&mut record.bytes, target);
            }
            compaction::order_survivors(&mut all);
            let refs: Vec<&compaction::LiveRecord> = all.iter().collect();
            if writer.segments_needed(size, target, &refs) > self.segments.free_for(claim) {
                return Ok(false);
            }
            writer.close_all_but(target, &self.segments);
            by_group = std::collections::BTreeMap::from([(target, all)]);
        }
        for (group, records) in by_group {
            let refs: Vec<&compaction::LiveRecord> = records.iter().collect();
            let floor = self.log.durable_lsn();
            let (written, outcome) = writer.write(&self.segments, group, &refs, floor, claim);
            let wrote = !written.locations.is_empty();
            if wrote {
                self.test_step("copies written, index not yet moved");
            }
            // Every copy written is on disk now, including the ones about to lose their
            // compare-and-set (old versions in a new segment): note them all.
            for (r, new) in records.iter().zip(&written.locations) {
                if r.kind == RecordKind::Put {
                    self.put_notes.note_put(new.segment, &r.key, r.version);
                }
            }
            counter.fetch_add(written.device_bytes, Ordering::Relaxed);
            self.log
                .device_bytes_written
                .fetch_add(written.device_bytes, Ordering::Relaxed);
            for (r, new) in records.iter().zip(written.locations) {
                let moved = match r.kind {
                    RecordKind::DeleteRange => self
                        .index
                        .compare_and_set_range(&r.key, r.version, r.old, new, group),
                    _ => self.index.compare_and_set(&r.key, r.old, new, group),
                };
                if moved {
                    self.segments.add_live(new.segment, new.len);
                    self.segments.sub_live(r.old.segment, r.old.len);
                }
            }
            if wrote {
                self.test_step("index moved to the copies");
            }
            match outcome {
                Ok(()) => {}
                Err(EngineError::NoSpace) => return Err(EngineError::NoSpace),
                Err(e) => {
                    self.log.fail(format!("writing copies: {e}"));
                    return Err(e);
                }
            }
        }
        Ok(true)
    }

    fn test_step(&self, step: &'static str) {
        let hook = self.test_step_hook.lock().clone();
        if let Some(hook) = hook {
            hook(step);
        }
    }
}

/// Sends the copies of groups without an open segment behind the roomiest open group-owned
/// segment when there are more such groups than open segments the store may still hold
/// (`groups::max_open_segments`). Opening one for each would close others: a pass over a
/// victim would free it only to take a segment for its copies, gaining nothing (a store with
/// more groups than open segments ran such passes forever at its reserve), and the separator
/// would leave a trail of nearly empty closed segments. Each copy names its new group in its
/// header, as a regrouped copy does (`regroup_copies` sends puts home when next copied).
fn borrow_roomiest_open_segment(
    writer: &groups::GroupWriter,
    segment_size: u32,
    by_group: &mut std::collections::BTreeMap<u32, Vec<compaction::LiveRecord>>,
) {
    let homeless: Vec<u32> = by_group
        .keys()
        .copied()
        .filter(|&group| !writer.has_open(group))
        .collect();
    if homeless.len() <= writer.open_slots_left() {
        return;
    }
    // Behind the roomiest open segment, continuing in new segments of its group once it is
    // full, which packs them densely; with none open, in segments of their largest group.
    let bytes = |group: &u32| -> usize { by_group[group].iter().map(|r| r.bytes.len()).sum() };
    let Some(target) = writer
        .roomiest_open(segment_size)
        .or_else(|| homeless.iter().copied().max_by_key(|g| bytes(g)))
    else {
        return;
    };
    let mut members = homeless;
    if !members.contains(&target) {
        members.push(target);
    }
    let mut moved: Vec<compaction::LiveRecord> = members
        .iter()
        .flat_map(|group| by_group.remove(group).unwrap_or_default())
        .collect();
    compaction::order_survivors(&mut moved);
    for record in &mut moved {
        format::set_record_group(&mut record.bytes, target);
    }
    by_group.insert(target, moved);
}
