//! The compaction pass: the I/O that carries out the policy's choice. It lists the victims
//! [`super::pick_victims_within`] picks, reads each one's live records, copies them into the
//! group-owned segments of their groups (`copies.rs`) and leaves the emptied victims to the
//! reclaimer; a writer that finds no free segment runs one small step of it itself. The rule it
//! keeps: a victim is read and copied under the reclaim lock, still in the use it was listed
//! in, so that it cannot be freed and reused under the pass.

use crate::engine::concurrency::{self, Ordering};
use crate::engine::{Inner, Result, compaction, segments};

/// A compaction pass frees the victims it has emptied so far once free segments drop to this
/// many above what compaction may not take (half the reserve).
const INCREMENTAL_RECLAIM_FREE_SEGMENTS: usize = 3;

impl Inner {
    /// One step of compaction: frees the dead segments, or else runs one small pass and frees
    /// its victims. Returns whether any segment was freed (a pass frees its first victims
    /// itself when free segments run short).
    pub(in crate::engine) fn compaction_step(&self, pass_segments: u64) -> Result<bool> {
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
    pub(in crate::engine) fn needs_compaction(&self) -> bool {
        let total = self.segments.geometry.segment_count as usize;
        let headroom = (total / 32).clamp(8, 64);
        self.segments.free_count() < self.segments.reserved as usize + headroom
    }

    /// One compaction pass: moves the live records of the chosen victims into the group-owned
    /// segments of their groups, copying at most `max_live_segments` segments of live data.
    /// Returns how many victims it emptied (the reclaimer frees them).
    pub(in crate::engine) fn compact_pass(&self, max_live_segments: u64) -> Result<usize> {
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
}
