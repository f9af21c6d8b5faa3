//! Compaction: copies the live records out of closed segments whose live bytes have dropped, so
//! that the segments can be freed.
//!
//! Liveness is decided by looking records up in the index: a record is live when the index
//! points at exactly its location. That is only sound for closed segments, whose every record is
//! in the index (the write gate's guarantee, see `log.rs`). Copies keep their bytes verbatim, so
//! a copy keeps its record's version and CRC; the index moves to a copy by compare-and-set, so a
//! record overwritten meanwhile stays where its newest version is, and the stale copy loses to
//! that newer version at recovery too. The victims are freed by the dead-segment reclaimer once
//! the copies are durable (it syncs before zeroing anything).
//!
//! This is the first, global policy: greedy by live bytes over all closed segments. Per-group
//! compaction, cost-benefit selection and tombstone dropping come with the compaction issue.

use super::api::CompactionPolicy;
use super::format::{RECORD_HEADER_SIZE, RecordKind};
use super::segments::{SegmentInfo, SegmentState};

/// Segments fuller than this fraction (in percent) are never rewritten: copying them would cost
/// nearly a segment of writes for almost nothing.
pub const MAX_VICTIM_UTILIZATION_PERCENT: u64 = 90;

/// Most bytes of live data one pass copies, in segments.
pub const MAX_PASS_LIVE_SEGMENTS: u64 = 4;

/// Chooses the victims of a pass: closed segments, emptiest first, while the live bytes copied
/// stay under `MAX_PASS_LIVE_SEGMENTS` segments and the pass frees more segments than it fills.
/// A pure function of the segments' figures: `segments[i]` is segment `i` with its live bytes.
/// `now_lsn` is the newest LSN (segment age = `now_lsn - max_lsn`), for policies that weigh age.
pub fn pick_victims(
    segments: &[(SegmentInfo, u64)],
    segment_size: u64,
    _policy: CompactionPolicy,
    _now_lsn: u64,
) -> Vec<u32> {
    let limit = segment_size * MAX_VICTIM_UTILIZATION_PERCENT / 100;
    let mut candidates: Vec<(u64, u32)> = segments
        .iter()
        .enumerate()
        .filter(|(_, (info, live))| info.state == SegmentState::Closed && *live <= limit)
        .map(|(s, (_, live))| (*live, s as u32))
        .collect();
    candidates.sort_unstable();
    let budget = segment_size * MAX_PASS_LIVE_SEGMENTS;
    let mut live_total = 0;
    let mut victims = Vec::new();
    for (live, segment) in candidates {
        if live_total + live > budget {
            break;
        }
        live_total += live;
        victims.push(segment);
    }
    // Worth it only if the copies take fewer segments than the victims give back.
    let filled = live_total.div_ceil(segment_size.max(1));
    if (victims.len() as u64) <= filled {
        Vec::new()
    } else {
        victims
    }
}

/// A live record found in a victim: its bytes and what identifies it in the index.
pub struct LiveRecord {
    pub bytes: Vec<u8>,
    pub kind: RecordKind,
    pub key: Vec<u8>,
    pub version: u64,
    pub old: super::index::Location,
}

impl LiveRecord {
    pub fn key_of(bytes: &[u8], key_len: usize) -> Vec<u8> {
        bytes[RECORD_HEADER_SIZE..RECORD_HEADER_SIZE + key_len].to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::format::SegmentKind;

    fn seg(state: SegmentState, live: u64) -> (SegmentInfo, u64) {
        let info = SegmentInfo {
            state,
            kind: SegmentKind::Mixed,
            group: 0,
            generation: 1,
            used: 0,
            max_lsn: 0,
        };
        (info, live)
    }

    #[test]
    fn greedy_takes_emptiest_closed_segments_and_never_almost_full_ones() {
        let size = 100;
        let segments = vec![
            seg(SegmentState::Closed, 50),
            seg(SegmentState::Open, 0),
            seg(SegmentState::Closed, 95),
            seg(SegmentState::Closed, 10),
            seg(SegmentState::Free, 0),
            seg(SegmentState::Closed, 30),
        ];
        assert_eq!(
            pick_victims(&segments, size, CompactionPolicy::Greedy, 0),
            vec![3, 5, 0]
        );
    }

    #[test]
    fn no_pass_when_copies_would_fill_as_many_segments_as_they_free() {
        let size = 100;
        let segments = vec![seg(SegmentState::Closed, 85), seg(SegmentState::Closed, 90)];
        assert!(pick_victims(&segments, size, CompactionPolicy::Greedy, 0).is_empty());
    }

    #[test]
    fn a_pass_copies_at_most_its_budget() {
        let size = 100;
        let segments: Vec<_> = (0..20).map(|_| seg(SegmentState::Closed, 50)).collect();
        let victims = pick_victims(&segments, size, CompactionPolicy::Greedy, 0);
        assert_eq!(victims.len() as u64, MAX_PASS_LIVE_SEGMENTS * 2);
    }
}
