//! The engine's in-process test hooks: tests reach into the running engine through these to
//! pause the background, run a pass or a reclamation at a chosen moment, watch each step of a
//! pass, delay index updates and look at segments and locations. They are not the engine's API:
//! compiled only for the crate's own tests and with the `test-hooks` feature, which the
//! integration tests enable through the crate's dev-dependency on itself (Cargo.toml), so that
//! no release build carries them. The hidden command-line test options (`--test-record-io`,
//! `--test-fail-writes-after`, `replay-cut`) are not hooks of this kind and stay in the binary.

use std::time::Duration;

use super::concurrency::Ordering;
use super::format::{RecordKind, SegmentKind};
use super::index::Location;
use super::{Engine, Result, StepHook, compaction, scan, segments};

impl Engine {
    /// Test hook: a range delete's first removal step (on the writer's path) and each later
    /// one (background) look at about this many index entries (whole leaves, at least one).
    #[doc(hidden)]
    pub fn test_set_removal_steps(&self, inline: usize, step: usize) {
        self.inner.index.test_set_inline_removal(inline);
        self.inner
            .removal_step
            .store(step as u64, Ordering::Relaxed);
    }

    /// Test hook: sleep this long between a batch's buffer write and its index update, so that
    /// a test can watch the write gate hold the flush and the segment open.
    #[doc(hidden)]
    pub fn test_set_index_delay(&self, delay: Duration) {
        self.inner
            .test_index_delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    /// Test hook: (segment of `key`'s record, whether that segment is closed).
    #[doc(hidden)]
    pub fn test_segment_of(&self, key: &[u8]) -> Option<(u32, bool)> {
        let entry = self.inner.index.get(key)?;
        let info = self.inner.segments.info(entry.location.segment);
        Some((
            entry.location.segment,
            info.state == segments::SegmentState::Closed,
        ))
    }

    /// Test hook: (segment, offset in it) of `key`'s record.
    #[doc(hidden)]
    pub fn test_location_of(&self, key: &[u8]) -> Option<(u32, u32)> {
        let entry = self.inner.index.get(key)?;
        Some((entry.location.segment, entry.location.offset))
    }

    /// Test hook: the sequence number of the newest buffer whose flush is complete.
    #[doc(hidden)]
    pub fn test_completed_flushes(&self) -> u64 {
        self.inner.log.completed_seq()
    }

    /// Test hook: waits until the flushes of all sealed buffers are complete.
    #[doc(hidden)]
    pub fn test_wait_flushes(&self) {
        self.inner.log.wait_flushes_complete()
    }

    /// Test hook: run one reclamation pass now (frees closed segments with no live data).
    #[doc(hidden)]
    pub fn test_reclaim(&self) -> Result<usize> {
        self.inner.reclaim_dead_segments()
    }

    /// Test hook: stop background syncs, reclamation and compaction (waits for a pass in
    /// progress), so that a test decides alone what becomes durable.
    #[doc(hidden)]
    pub fn test_pause_background(&self) {
        self.inner
            .test_background_paused
            .store(true, Ordering::SeqCst);
        drop(self.inner.compaction_lock.lock());
        drop(self.inner.reclaim_lock.lock());
        drop(self.inner.removal_lock.lock());
    }

    /// Test hook (schedule tests): every point read gives the other threads `turns` turns
    /// between its index lookup and its read of the record.
    #[cfg(feature = "shuttle")]
    #[doc(hidden)]
    pub fn test_stall_reads_after_lookup(&self, turns: u64) {
        self.inner
            .test_read_stall_turns
            .store(turns, Ordering::Relaxed);
    }

    /// Test hook (schedule tests): every put gives the other threads `turns` turns just before
    /// its index update.
    #[cfg(feature = "shuttle")]
    #[doc(hidden)]
    pub fn test_stall_put_index_updates(&self, turns: u64) {
        self.inner
            .test_put_index_stall_turns
            .store(turns, Ordering::Relaxed);
    }

    /// Test hook: run one compaction pass now; returns the number of victims emptied.
    #[doc(hidden)]
    pub fn test_compact(&self) -> Result<usize> {
        let n = self
            .inner
            .compact_pass(compaction::MAX_PASS_LIVE_SEGMENTS)?;
        self.inner.sync()?;
        self.inner.reclaim_dead_segments()?;
        Ok(n)
    }

    /// Test hook: write out every complete segment summary waiting now, as the background
    /// does when enough of them wait; returns how many it wrote.
    #[doc(hidden)]
    pub fn test_write_out_summaries(&self) -> Result<usize> {
        Ok(self
            .inner
            .segments
            .summaries
            .write_out(&self.inner.segments, super::summaries::WriteOut::Now)?)
    }

    /// Test hook: write an index checkpoint now, as the background does when one is due.
    #[doc(hidden)]
    pub fn test_checkpoint(&self) {
        self.inner.write_checkpoint_now();
    }

    /// Test hook: run the separator now (every closed mixed segment, whatever their number),
    /// then sync and free what it emptied. Returns the number of mixed segments it handled.
    #[doc(hidden)]
    pub fn test_separate(&self) -> Result<usize> {
        let n = self.inner.separate(true)?;
        self.inner.sync()?;
        self.inner.reclaim_dead_segments()?;
        Ok(n)
    }

    /// Test hook: call `hook` with the step's name at every step of separator, compaction and
    /// reclamation passes.
    #[doc(hidden)]
    pub fn test_set_step_hook(&self, hook: Option<Box<dyn Fn(&'static str) + Send + Sync>>) {
        *self.inner.test_step_hook.lock() = hook.map(StepHook::from);
    }

    /// Test hook: (segment, kind is group-owned, group, state is closed) of every segment in
    /// use, and the raw bytes of each (up to its end).
    #[doc(hidden)]
    pub fn test_segment_images(&self) -> Vec<(u32, bool, u32, bool, Vec<u8>)> {
        let mut out = Vec::new();
        for (s, (info, _)) in self.inner.segments.snapshot().into_iter().enumerate() {
            if info.state == segments::SegmentState::Free {
                continue;
            }
            let mut image = vec![0u8; info.used as usize];
            if self.inner.segments.read(s as u32, 0, &mut image).is_ok() {
                out.push((
                    s as u32,
                    info.kind == SegmentKind::Group,
                    info.group,
                    info.state == segments::SegmentState::Closed,
                    image,
                ));
            }
        }
        out
    }

    /// Test hook: the groups of the records in `image` of `segment` that the index points at.
    #[doc(hidden)]
    pub fn test_live_groups_in(&self, segment: u32, image: &[u8]) -> Vec<u32> {
        let hw = self.inner.segments.generation_high_water();
        let mut groups = Vec::new();
        for (pos, header) in scan::valid_buffers(image, segment, hw) {
            for (at, h) in scan::records_of(segment, pos, &header, image).unwrap_or_default() {
                let key = compaction::LiveRecord::key_of(&image[at..], h.key_len as usize);
                let location = Location {
                    segment,
                    offset: at as u32,
                    len: h.total_len() as u32,
                };
                let live = match h.kind {
                    RecordKind::DeleteRange => self.inner.index.range_at(&key, h.version, location),
                    _ => self.inner.index.points_at(&key, location),
                };
                if live {
                    groups.push(h.group);
                }
            }
        }
        groups
    }

    /// Test hook: (segment, generation) of every segment in use.
    #[doc(hidden)]
    pub fn test_segments_in_use(&self) -> Vec<(u32, u64)> {
        self.inner
            .segments
            .snapshot()
            .iter()
            .enumerate()
            .filter(|(_, (info, _))| info.state != segments::SegmentState::Free)
            .map(|(s, (info, _))| (s as u32, info.generation))
            .collect()
    }
}
