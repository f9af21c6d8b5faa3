//! The engine's figures (`EngineStats`): capacity, segments by state and kind, live bytes, the
//! index's size and memory, bytes written by users, the separator and compaction, and each
//! group's segments with their fill histogram. Read from the segment manager, the index and the
//! engine's counters without stopping writers; `Engine::stats` settles pending range deletes
//! first, so that live bytes and index entries are exact.

use super::concurrency::Ordering;
use super::format::SegmentKind;
use super::{EngineStats, GroupStats, Inner, ROOT_GROUP, segments};

impl Inner {
    pub(super) fn stats(&self) -> EngineStats {
        let g = &self.segments.geometry;
        let (free, mixed, _group) = self.segments.counts();
        let mut groups: std::collections::BTreeMap<u32, GroupStats> = Default::default();
        for (info, live) in self.segments.snapshot() {
            if info.state == segments::SegmentState::Free || info.kind != SegmentKind::Group {
                continue;
            }
            let gs = groups.entry(info.group).or_insert_with(|| GroupStats {
                id: info.group,
                ..Default::default()
            });
            gs.segments += 1;
            gs.live_bytes += live;
            let bucket = ((live * 10) / g.segment_size as u64).min(9) as usize;
            gs.utilization_histogram[bucket] += 1;
        }
        groups.entry(ROOT_GROUP).or_insert_with(|| GroupStats {
            id: ROOT_GROUP,
            ..Default::default()
        });
        EngineStats {
            capacity_bytes: g.segment_count as u64 * g.segment_size as u64,
            usable_capacity_bytes: self.user_capacity(),
            segment_size_bytes: g.segment_size as u64,
            segments_total: g.segment_count as u64,
            segments_free: free,
            mixed_segments: mixed,
            live_bytes: self.segments.live_total(),
            promised_bytes: self.promised_bytes.load(Ordering::Relaxed),
            index_entries: (self.index.len() + self.index.range_delete_count()) as u64,
            // The notes of which puts each segment holds are index memory too.
            index_bytes: (self.index.heap_bytes() + self.put_notes.heap_bytes()) as u64,
            user_bytes_written: self.user_bytes_written.load(Ordering::Relaxed),
            separator_bytes_written: self.separator_bytes_written.load(Ordering::Relaxed),
            segments_handed_over: self.segments_handed_over.load(Ordering::Relaxed),
            separator_memory_bytes: self.separator_memory_peak.load(Ordering::Relaxed),
            compaction_bytes_written: self.compaction_bytes_written.load(Ordering::Relaxed),
            tombstones_dropped: self.tombstones_dropped.load(Ordering::Relaxed),
            foreground_compaction_steps: self.foreground_passes.load(Ordering::Relaxed),
            compaction_victims: self.compaction_victims.load(Ordering::Relaxed),
            device_bytes_written: self.log.device_bytes_written.load(Ordering::Relaxed),
            segments_reclaimed: self.segments.reclaimed.load(Ordering::Relaxed),
            last_lsn: self.log.last_lsn(),
            durable_lsn: self.log.durable_lsn(),
            groups: groups.into_values().collect(),
        }
    }
}
