//! The separator: sorts the records of closed mixed segments (the log, where every group's
//! writes land together) into the group-owned segments of their groups, so that each group's
//! data ends up apart and compaction finds segments that die together. A mixed segment whose
//! live records all belong to one group is handed over whole. The rule it keeps: it copies only
//! records the log made durable (a copy must not outlive a batch a power cut takes back).

use super::concurrency::Ordering;
use super::format::SegmentKind;
use super::{Inner, Result, segments};

impl Inner {
    /// The separator: sorts the records of closed mixed segments into their groups' segments.
    /// A mixed segment whose live records all belong to one group is handed to that group as
    /// it is (no copy: a large sequential write costs one device write); the others have their
    /// live records copied. Runs once `threshold` mixed segments are closed, or with `drain`
    /// whatever their number. Sources must be durable first (a copy must not outlive a batch
    /// that a power cut takes back; recovery also drops such copies, see `recovery.rs`).
    /// Returns how many mixed segments it dealt with.
    pub(super) fn separate(&self, drain: bool) -> Result<usize> {
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
}
