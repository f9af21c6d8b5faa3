//! The write path: a user batch checked against the store's limits and its capacity, appended
//! to the write buffer (the writer running compaction itself when no segment is free), indexed,
//! then released to the flusher; and `sync`, which makes every batch that returned before it
//! durable and records the closed log segments it made durable in the sync table. The rules it
//! keeps: a batch is refused for space only when it adds live data beyond what compaction can
//! sustain (deleting is always possible in a full store), and a batch's index updates complete
//! before its gate hold is released, so that a closed segment's every record is in the index.

use std::time::Duration;

use super::batch::{EncodedBatch, validate};
use super::concurrency::{self, *};
use super::index::Update;
use super::{EngineError, Inner, Lsn, Mutation, Result, compaction, groups, log, prefix_successor};

/// Steps in a row that leave no more segments free after which a writer that finds no room
/// gives up with `NoSpace` (see `append_making_room`): steps that set up the next (copies that
/// opened a segment the next victims fill) are not cut short; 4 was too few for the smallest
/// store of nine groups near full.
const FRUITLESS_STEPS_BEFORE_NO_SPACE: u32 = 16;

/// The fill of the closed segments that compaction can sustain, in eighths (`user_capacity`).
const SUSTAINABLE_FILL_EIGHTHS: u64 = 7;

/// Batches that delete and add no live data (their puts, if any, take no more than what the
/// batch replaces or deletes: an inode record rewritten, a last page shortened) may use space
/// beyond the user limit, up to this size: deleting must always be possible in a full store.
const DELETE_BATCH_ALLOWANCE: usize = 16 * 1024;

/// Live records a range delete is looked up for when a batch's puts are weighed against what
/// its deletes remove ([`Inner::puts_grow_live_data`]): enough for a batch's worth of pages.
const RANGE_DELETE_WEIGH_LIMIT: usize = 64;

impl Inner {
    pub(super) fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(EngineError::Closed);
        }
        Ok(())
    }

    /// Live bytes users may store: what compaction can sustain under any overwrites, so that a
    /// store that took the data never refuses an overwrite that keeps live bytes level.
    ///
    /// When free segments are down to the reserve, every other segment but the open ones is
    /// closed. If live bytes are at most a fraction `f` of those segments, some of them are at
    /// most `f` live (pigeonhole), and a small pass over two of them frees two segments while
    /// its copies fill `2f` (packed densely behind the group's open segment). The difference
    /// must pay for the tails copies leave, and for the marker buffers of the frees, which may
    /// open a mixed segment from the reserve that user writes then fill. At `f` = 90% (the
    /// victim cap) that margin was too thin: a 64 MiB store at the limit ran down to the
    /// compaction floor in about one run of 24 (4 of 6 test runs at 4 seeds passed); 7/8 leaves
    /// an eighth of a segment per victim. The previous rule (93.75% of the usable segments)
    /// let a 64 MiB store take 85% live data and then refuse overwrites a capacity later.
    pub(super) fn user_capacity(&self) -> u64 {
        let g = &self.segments.geometry;
        // Neither free nor closed at worst: the active mixed segment and the open group-owned
        // segments (the one a pass fills while the victims it emptied wait to be freed is one
        // of them).
        let open_at_worst = 1 + groups::max_open_segments(g.segment_count) as u32;
        let closed_at_worst = g
            .segment_count
            .saturating_sub(self.segments.reserved + open_at_worst);
        closed_at_worst as u64 * g.segment_size as u64 * SUSTAINABLE_FILL_EIGHTHS / 8
    }

    /// Live bytes the store counts against its capacity: the records the index points at, and
    /// the bytes promised to writes to come ([`super::Engine::write_with_promise`]).
    pub(super) fn live_and_promised(&self) -> u64 {
        self.segments.live_total() + self.promised_bytes.load(Ordering::Relaxed)
    }

    /// Live bytes `batch` (of `total` record bytes) adds once written, with the promise it
    /// makes or releases (`promise_change`): its records, less the live records its puts
    /// replace, less its puts of a key that a later put in the batch replaces at once, plus
    /// the change. An overwrite of data the store already holds must not be refused at the
    /// capacity (ext4 does not refuse a write over allocated blocks either), nor a write into
    /// space promised to it. Only computed near the capacity: it costs an index lookup per put.
    pub(super) fn growth(&self, batch: &[Mutation], total: usize, promise_change: i64) -> u64 {
        let total = total as u64;
        let promised = promise_change.max(0) as u64;
        if self.live_and_promised() + total + promised <= self.user_capacity() {
            return total + promised;
        }
        let mut growth = 0u64;
        let mut replaced = 0u64;
        let mut later_puts = std::collections::BTreeSet::new();
        for m in batch.iter().rev() {
            let Mutation::Put { key, .. } = m else {
                growth += m.encoded_len() as u64;
                continue;
            };
            if !later_puts.insert(key.as_slice()) {
                continue;
            }
            growth += m.encoded_len() as u64;
            if let Some(entry) = self.index.get(key).filter(|e| !e.tombstone) {
                replaced += entry.location.len as u64;
            }
        }
        let released = promise_change.min(0).unsigned_abs();
        (growth + promised).saturating_sub(replaced + released)
    }

    /// Whether the puts of `batch` add live data: more bytes than the live records they replace
    /// and the live puts the batch's deletes remove. The tombstones themselves are not counted:
    /// they are what deleting costs (bounded by [`DELETE_BATCH_ALLOWANCE`]), and compaction
    /// drops them. Errs towards "grows" (a range delete is weighed by its first records only).
    pub(super) fn puts_grow_live_data(&self, batch: &[Mutation]) -> bool {
        let mut put_keys = std::collections::BTreeSet::new();
        let mut added = 0u64;
        let mut removed = 0u64;
        for m in batch.iter().rev() {
            let Mutation::Put { key, .. } = m else {
                continue;
            };
            if !put_keys.insert(key.as_slice()) {
                continue; // replaced at once by a later put of the batch
            }
            added += m.encoded_len() as u64;
            if let Some(entry) = self.index.get(key).filter(|e| !e.tombstone) {
                removed += entry.location.len as u64;
            }
        }
        if added <= removed {
            return false;
        }
        // Keys the batch also puts were counted above (as replaced), not again here.
        for m in batch {
            let (start, end) = match m {
                Mutation::Put { .. } => continue,
                Mutation::Delete { key, .. } => {
                    if !put_keys.contains(key.as_slice())
                        && let Some(entry) = self.index.get(key).filter(|e| !e.tombstone)
                    {
                        removed += entry.location.len as u64;
                    }
                    continue;
                }
                Mutation::DeletePrefix { prefix, .. } => (prefix.clone(), prefix_successor(prefix)),
                Mutation::DeleteRange { start, end, .. } => (start.clone(), end.clone()),
            };
            for (key, entry) in self
                .index
                .scan(&start, &end, None, RANGE_DELETE_WEIGH_LIMIT)
            {
                if !put_keys.contains(key.as_slice()) {
                    removed += entry.location.len as u64;
                }
            }
            if added <= removed {
                return false;
            }
        }
        added > removed
    }

    /// Applies `batch` atomically: checked, appended, indexed, with the change it makes to the
    /// promised bytes; see [`super::Engine::write_with_promise`].
    pub(super) fn write(&self, batch: &[Mutation], promise_change: i64) -> Result<Lsn> {
        self.check_open()?;
        if self.read_only {
            return Err(EngineError::ReadOnly);
        }
        let total = validate(batch)?;
        let deletes = batch.iter().any(|m| !matches!(m, Mutation::Put { .. }));
        let exempt = self.refuse_without_room(batch, total, deletes, promise_change)?;
        let mut encoded = EncodedBatch::new(batch);
        encoded.frees_space = exempt;
        let ticket = self.append_making_room(&encoded)?;
        let delay = self.test_index_delay_ms.load(Ordering::Relaxed);
        if delay > 0 {
            concurrency::sleep(Duration::from_millis(delay));
        }
        self.index_batch(&encoded, &ticket);
        self.change_promise(promise_change);
        let lsn = ticket.lsn;
        if deletes && self.index.has_pending() {
            // A range delete left entries for the background to remove.
            self.wake.notify_one();
        }
        // Dropping the ticket releases the gate hold: the flush may complete.
        drop(ticket);
        self.count_user_bytes(total);
        Ok(lsn)
    }

    /// Refuses with `NoSpace` a batch (of `total` record bytes, making `promise_change`) that
    /// adds live data beyond [`Inner::user_capacity`]. Returns whether the batch is exempt from
    /// that limit: one that deletes and adds no live data may use the reserve.
    fn refuse_without_room(
        &self,
        batch: &[Mutation],
        total: usize,
        deletes: bool,
        promise_change: i64,
    ) -> Result<bool> {
        // Only a batch that adds no live data: a put beside a delete (a write that also drops
        // an xattr) would otherwise reach the reserve, which the deletes need.
        let exempt = deletes
            && total <= DELETE_BATCH_ALLOWANCE
            && promise_change <= 0
            && !self.puts_grow_live_data(batch);
        if !exempt {
            // A batch that does not add live bytes (an overwrite) is always taken: live bytes
            // may stand a little above the capacity (the check races other writers), and an
            // overwrite must not be refused for that.
            let mut growth = self.growth(batch, total, promise_change);
            if growth > 0
                && self.live_and_promised() + growth > self.user_capacity()
                && self.index.has_pending()
            {
                // Live bytes still count what pending range deletes hide: no write is refused
                // for data already deleted.
                self.settle_pending(false);
                growth = self.growth(batch, total, promise_change);
            }
            if growth > 0 && self.live_and_promised() + growth > self.user_capacity() {
                return Err(EngineError::NoSpace);
            }
        }
        Ok(exempt)
    }

    /// Applies the batch `ticket` appended to the index, and its records to their segments'
    /// live bytes, while the ticket still holds the buffer's gate.
    fn index_batch(&self, encoded: &EncodedBatch, ticket: &log::Ticket) {
        for update in encoded.updates(ticket.lsn, ticket.segment, ticket.offset) {
            // Noted before the ticket is dropped: once a later tombstone's segment is closed,
            // this put's note is there (index updates and flushes complete in buffer order).
            if let Update::Point { key, entry } = &update
                && !entry.tombstone
            {
                self.put_notes.note_put(ticket.segment, key, entry.version);
                #[cfg(feature = "shuttle")]
                for _ in 0..self.test_put_index_stall_turns.load(Ordering::Relaxed) {
                    concurrency::yield_now();
                }
            }
            let applied = self.index.apply_in_buffer(&update, &ticket.buffer_ranges);
            let location = match &update {
                Update::Point { entry, .. } => entry.location,
                Update::Range(r) => r.location,
            };
            if applied.new_is_live {
                self.segments.add_live(location.segment, location.len);
            }
            for old in applied.displaced {
                self.segments.sub_live(old.segment, old.len);
            }
        }
    }

    /// Adds a written batch's change to the promised bytes. A release larger than the total
    /// (a caller's count gone wrong) leaves none rather than wrapping.
    fn change_promise(&self, promise_change: i64) {
        if promise_change == 0 {
            return;
        }
        let change = promise_change.unsigned_abs();
        let _ = self
            .promised_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| {
                Some(if promise_change > 0 {
                    p.saturating_add(change)
                } else {
                    p.saturating_sub(change)
                })
            });
    }

    /// Counts `total` user bytes written, and wakes the background once another segment's
    /// worth has been.
    fn count_user_bytes(&self, total: usize) {
        let before = self
            .user_bytes_written
            .fetch_add(total as u64, Ordering::Relaxed);
        let segment = self.segments.segment_size() as u64;
        if before / segment != (before + total as u64) / segment {
            // Another segment's worth written: the separator may have work (not only the timer
            // triggers it).
            self.wake.notify_one();
        }
    }

    /// Makes every batch that returned before it durable. Then writes the sync table entries of
    /// the closed mixed segments that this sync (or an earlier one) made durable, and syncs
    /// them: a damaged stretch of such a segment below its entry's end is then damage, not a
    /// torn write, even with nothing valid behind it (see `synctable.rs`, `recovery.rs`), with
    /// a marker recording the floor this sync reached. One more storage sync and marker buffer
    /// per closed log segment, at most.
    pub(super) fn sync(&self) -> Result<()> {
        let table = &self.segments.sync_table;
        self.log.sync(|| table.sync(|| self.storage.sync()))?;
        let closed = table.take_synced_log();
        if closed.is_empty() {
            return Ok(());
        }
        let result = (|| {
            table.record(&closed)?;
            // A marker carries the durable floor this sync reached, which covers the closed
            // segments' batches (unless one closed while the sync was under way): without a
            // buffer sealed after the sync, a damaged last buffer's batches could lie above
            // every floor on disk, and recovery could not take them (see `recovery::recover`).
            // Nothing depends on it: without room for a marker, the entries are written alone
            // (it never takes the reserve: see `Log::flush_proof_marker`).
            match self.log.flush_proof_marker() {
                Ok(()) | Err(EngineError::NoSpace | EngineError::Closed) => {}
                Err(e) => return Err(e),
            }
            self.test_step("sync: log segments' entries written");
            table.sync(|| self.storage.sync())?;
            Ok::<(), EngineError>(())
        })();
        if let Err(e) = result {
            self.log.fail(format!("writing the sync table: {e}"));
            return Err(e);
        }
        Ok(())
    }

    /// Appends a user batch. When no segment is free for it (the background compactor fell
    /// behind), the writer frees room itself, one small pass at a time, and tries again: a
    /// momentary shortage is not `NoSpace`, which `write` decided already from live bytes.
    /// `NoSpace` comes back only once neither a pass nor the reclaimer can free anything.
    pub(super) fn append_making_room(&self, encoded: &EncodedBatch) -> Result<log::Ticket> {
        let mut fruitless = 0;
        loop {
            match self.log.append(encoded) {
                Err(EngineError::NoSpace) => {}
                other => return other,
            }
            self.foreground_passes.fetch_add(1, Ordering::Relaxed);
            let free_before = self.segments.free_count();
            if !self.compaction_step(compaction::SMALL_PASS_LIVE_SEGMENTS)? {
                return Err(EngineError::NoSpace);
            }
            // A step may free segments only to take as many for its copies and markers; a
            // writer that kept retrying such steps would never return.
            if self.segments.free_count() <= free_before {
                fruitless += 1;
                if fruitless >= FRUITLESS_STEPS_BEFORE_NO_SPACE {
                    return Err(EngineError::NoSpace);
                }
            } else {
                fruitless = 0;
            }
        }
    }
}
