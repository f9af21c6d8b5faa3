//! The background scheduler: one thread that, every tick or when woken (a segment's worth of
//! user writes, a range delete left pending), removes what pending range deletes hide, syncs
//! when the sync interval is due, frees dead segments, runs the separator, puts a marker behind
//! the newest batches once writes pause, runs compaction passes back to back while free
//! segments are short, and writes an index checkpoint once enough segments were taken. It
//! decides when; the work itself is in the modules of each part. The rule it keeps: it never
//! runs while paused or stopping, and it stops before the flusher, which alone can write the
//! copies and markers a pass under way may still need.

use std::time::Duration;

use super::checkpoint;
use super::concurrency::{Instant, Ordering};
use super::summaries::WriteOut;
use super::{CHECKPOINT_MIN_SEGMENTS, Engine, EngineError, Inner, compaction};

/// Index entries a step of removing what pending range deletes hide looks at (whole leaves):
/// about half a millisecond of the index's write lock.
pub(super) const REMOVAL_STEP_ENTRIES: usize = 1024;

/// How often the background thread looks for work (syncs due, dead segments).
const BACKGROUND_TICK: Duration = Duration::from_millis(100);

/// Ticks without user writes after which the log's newest durable batches get a marker behind
/// them (`Inner::vouch_for_newest_batches`): a second, so that a trickle of writes does not pay
/// a marker and a sync each.
const IDLE_TICKS_BEFORE_MARKER: u32 = 10;

impl Engine {
    /// Stops the background thread, then the flusher. The order matters: a background pass may
    /// still append copies or ask for a marker, which only the flusher can write; stopping the
    /// flusher first once left such a pass waiting forever (a hang seen in CI).
    pub(super) fn stop_background(&mut self) {
        *self.inner.stop.lock() = true;
        self.inner.wake.notify_all();
        let mut threads = std::mem::take(&mut self.threads);
        let flusher = threads.pop();
        for handle in threads {
            let _ = handle.join();
        }
        self.inner.log.stop();
        if let Some(flusher) = flusher {
            let _ = flusher.join();
        }
    }
}

impl Inner {
    /// Removes what pending range deletes hide from the index, one bounded step (one short
    /// hold of the index's write lock) at a time, and takes the removed records' bytes out of
    /// their segments' live bytes. The background runs it (`by_background`: it stops when
    /// paused or stopping); so does whatever needs exact figures: a write about to be refused
    /// for space, stats, compaction and the separator, the checkpoint of a close.
    pub(super) fn settle_pending(&self, by_background: bool) {
        loop {
            let _step = self.removal_lock.lock();
            if by_background
                && (self.test_background_paused.load(Ordering::SeqCst) || *self.stop.lock())
            {
                return;
            }
            let step = self.removal_step.load(Ordering::Relaxed) as usize;
            let Some(dead) = self.index.remove_pending_step(step) else {
                return;
            };
            for old in dead {
                self.segments.sub_live(old.segment, old.len);
            }
        }
    }

    /// Writes and syncs a marker behind the log's newest batches when they are all durable but
    /// no buffer on disk vouches for them yet (`Log::newest_batches_unvouched`), so that damage
    /// found in them later fails reads of their keys instead of looking like a write torn by a
    /// power cut (their keys would serve older versions). At open, and once writes pause
    /// (`IDLE_TICKS_BEFORE_MARKER`): one 4 KiB buffer and one sync per pause, none while writes
    /// go on (each later buffer vouches for the ones before it).
    pub(super) fn vouch_for_newest_batches(&self) {
        if !self.log.newest_batches_unvouched() {
            return;
        }
        match self.log.flush_proof_marker() {
            Ok(()) => {
                if let Err(e) = self.storage.sync() {
                    ::log::warn!("cannot sync the marker behind the newest batches: {e}");
                }
            }
            Err(EngineError::NoSpace) => {}
            Err(e) => ::log::warn!("cannot write a marker behind the newest batches: {e}"),
        }
    }

    /// Writes the complete segment summaries out (see `summaries.rs`): once enough wait, or
    /// all of them at a clean close. Nothing depends on it: a failure only costs a recovery
    /// after a crash the reading of those segments.
    pub(super) fn write_out_summaries(&self, when: WriteOut) {
        match (self.segments.summaries).write_out(&self.segments, when) {
            Ok(0) => {}
            Ok(n) => ::log::debug!("{n} segment summaries written"),
            Err(e) => ::log::warn!("segment summaries not written: {e}"),
        }
    }

    /// Writes an index checkpoint once enough segments were taken since the last one, so that
    /// a recovery after a crash reads only those (see `checkpoint.rs`, `Taken::Running`).
    /// Nothing depends on it: a failure only leaves the last checkpoint in place.
    pub(super) fn write_checkpoint_if_due(&self) {
        let taken = self.segments.taken.load(Ordering::Relaxed);
        let since = taken - self.taken_at_checkpoint.load(Ordering::Relaxed);
        let every = match self.options.checkpoint_every_segments {
            0 => {
                let (_, mixed, group) = self.segments.counts();
                CHECKPOINT_MIN_SEGMENTS.max(((mixed + group) / 4) as u32)
            }
            n => n,
        };
        if since < every as u64 {
            return;
        }
        self.write_checkpoint_now();
    }

    /// Writes an index checkpoint of the running engine (see `checkpoint.rs`, `Taking`).
    pub(super) fn write_checkpoint_now(&self) {
        let taken = self.segments.taken.load(Ordering::Relaxed);
        self.taken_at_checkpoint.store(taken, Ordering::Relaxed);
        let started = Instant::now();
        let Ok(Some(superblock)) = self.storage.read_superblock() else {
            return;
        };
        let taking = {
            let _no_copies = self.compaction_lock.lock();
            let _no_frees = self.reclaim_lock.lock();
            checkpoint::take(&self.segments, &self.index)
        };
        // What the index held when taken, durable before the checkpoint names it.
        let encoded = match self.sync() {
            Ok(()) => {
                let last = self.log.durable_lsn();
                taking.encode(&superblock, &self.segments, &self.put_notes, last, true)
            }
            Err(_) => Err("the log cannot be made durable"),
        };
        let data = match encoded {
            Ok(data) => data,
            Err(why) => {
                ::log::info!("no index checkpoint now: {why}");
                return;
            }
        };
        let mut writes = self.checkpoint_writes.lock();
        checkpoint::store(&self.storage, &data, started);
        *writes += 1;
    }

    pub(super) fn background_loop(&self) {
        let mut last_sync = Instant::now();
        let mut written_at_last_tick = 0;
        let mut idle_ticks = 0u32;
        loop {
            {
                let mut stop = self.stop.lock();
                if *stop {
                    return;
                }
                self.wake.wait_for(&mut stop, BACKGROUND_TICK);
                if *stop {
                    return;
                }
            }
            if self.log.failure().is_some() || self.test_background_paused.load(Ordering::SeqCst) {
                continue;
            }
            self.settle_pending(true);
            if let Some(interval) = self.options.sync_interval
                && last_sync.elapsed() >= interval
                && self.log.has_unsynced()
            {
                if let Err(e) = self.sync() {
                    ::log::error!("background sync failed: {e}");
                }
                last_sync = Instant::now();
            }
            if let Err(e) = self.reclaim_dead_segments() {
                ::log::error!("freeing dead segments failed: {e}");
            }
            self.write_out_summaries(WriteOut::IfDue);
            // Separate once enough mixed segments are closed, and all of them once writes
            // pause, so that the mixed segments drain to the active one.
            let written = self.user_bytes_written.load(Ordering::Relaxed);
            let idle = written == written_at_last_tick;
            written_at_last_tick = written;
            idle_ticks = if idle {
                idle_ticks.saturating_add(1)
            } else {
                0
            };
            if idle_ticks >= IDLE_TICKS_BEFORE_MARKER {
                self.vouch_for_newest_batches();
            }
            match self.separate(idle) {
                Ok(0) => {}
                Ok(_) => {
                    if let Err(e) = self.reclaim_dead_segments() {
                        ::log::error!("freeing separated segments failed: {e}");
                    }
                }
                Err(e) => ::log::error!("separator failed: {e}"),
            }
            // Passes back to back until the target is met, each as large as the reserve allows
            // (on a real disk a pass costs three or four fsyncs whatever its size: 2-segment
            // passes halved a mount's 4 KiB overwrite rate). A writer that runs out of segments
            // meanwhile waits for the pass under way, then runs small ones itself; the active
            // segment is never waited for (passes take closed segments only).
            while self.needs_compaction() && !*self.stop.lock() {
                match self.compaction_step(compaction::MAX_PASS_LIVE_SEGMENTS) {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => {
                        ::log::error!("compaction failed: {e}");
                        break;
                    }
                }
            }
            self.write_checkpoint_if_due();
        }
    }
}
