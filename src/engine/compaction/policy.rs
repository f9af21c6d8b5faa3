//! The compaction policy: which closed segments a pass empties, a pure function of the
//! segments' figures ([`pick_victims`]) with no I/O, so that it is tested on figures alone. Two
//! policies (`CompactionPolicy`):
//! - greedy: least live bytes first;
//! - cost-benefit (LFS, RAMCloud): most `(1 - u) * age / (1 + u)` first, where `u` is the
//!   segment's live fraction and `age` how long ago its newest batch was written, in LSNs. Old
//!   (cold) segments are then cleaned at a higher utilisation than young (hot) ones, whose data
//!   is still dying on its own.
//!
//! Both only consider closed segments, never one more than `MAX_VICTIM_UTILIZATION_PERCENT`
//! live, bound the bytes a pass copies, and give up a pass that would not free more segments
//! than its copies fill; when free segments are down to the reserve, both are greedy.
//! [`order_survivors`] sorts the records a pass copies oldest first, so that cold data is
//! written together. Figures measured with each policy: `docs/BENCHMARKS.md`, "Write
//! amplification"; the default is cost-benefit (see `CompactionPolicy`).

use crate::engine::api::{CompactionPolicy, MAX_KEY_LEN, MAX_VALUE_LEN, WRITE_BUFFER_SIZE};
use crate::engine::format::{RECORD_HEADER_SIZE, RecordKind, SegmentKind, buffer_len_for};
use crate::engine::segments::{SegmentInfo, SegmentState};

/// Segments fuller than this fraction (in percent) are never rewritten: copying them would cost
/// nearly a segment of writes for almost nothing.
pub const MAX_VICTIM_UTILIZATION_PERCENT: u64 = 90;

/// Most bytes of live data one pass copies, in segments. At the utilisation cap (90%) a pass
/// must take 10 victims (9 segments of copies) to free one segment, so the budget is 9.
pub const MAX_PASS_LIVE_SEGMENTS: u64 = 9;

/// Live data the engine's passes copy, in segments: two segments of copies free at least three
/// victims at 60% live, and still more than they fill at the 90% cap (two victims, 1.8 segments
/// of copies packed behind the group's open segment). A pass this small takes a few
/// milliseconds, which bounds how long a writer waiting for room can be held up by one.
pub const SMALL_PASS_LIVE_SEGMENTS: u64 = 2;

/// [`pick_victims_within`] with the largest pass (`MAX_PASS_LIVE_SEGMENTS`).
#[cfg(test)]
pub fn pick_victims(
    segments: &[(SegmentInfo, u64)],
    segment_size: u64,
    policy: CompactionPolicy,
    now_lsn: u64,
) -> Vec<u32> {
    pick_victims_within(
        segments,
        segment_size,
        policy,
        now_lsn,
        MAX_PASS_LIVE_SEGMENTS,
    )
}

/// Chooses the victims of a pass that copies at most `max_live_segments` segments of live
/// data (and never more than [`MAX_PASS_LIVE_SEGMENTS`]). A writer that waits for room runs
/// small passes ([`SMALL_PASS_LIVE_SEGMENTS`]); the background runs the largest.
///
/// A pure function of the segments' figures: `segments[i]` is segment `i` with its live bytes;
/// `now_lsn` is the newest LSN (for the age of a segment).
///
/// Rules, for every policy:
/// - only `Closed` segments are candidates, and only those at most
///   `MAX_VICTIM_UTILIZATION_PERCENT` live;
/// - candidates are taken in the policy's order while the live bytes copied stay within
///   `max_live_segments` segments, and within what the free reserve segments can take
///   (see `pass_budget`), so that a pass never runs out of segments half-way;
/// - the pass frees more segments than its copies fill ([`frees_more_than_it_fills`]).
///
/// When free segments are down to the reserve (user writes wait for space), the order is
/// greedy whatever the policy: a pass must then free the most it can. If the policy's choice
/// fails the last rule, the greedy order is tried too: it takes the most victims for a given
/// budget, so if it fails as well, no pass can free anything and there is none.
pub fn pick_victims_within(
    segments: &[(SegmentInfo, u64)],
    segment_size: u64,
    policy: CompactionPolicy,
    now_lsn: u64,
    max_live_segments: u64,
) -> Vec<u32> {
    let size = segment_size.max(1);
    let budget = pass_budget(segments, size).min(max_live_segments.max(1) * size);
    let free = segments
        .iter()
        .filter(|(info, _)| info.state == SegmentState::Free)
        .count() as u64;
    // Under space pressure (user writes are waiting for a segment) free the most space now:
    // greedy, as F2FS does for its foreground cleaning.
    let policy = if free <= assumed_reserve(segments.len() as u64) {
        CompactionPolicy::Greedy
    } else {
        policy
    };
    let ordered = candidates_in_order(segments, size, policy, now_lsn);
    if let Some(victims) = take_within_budget(&ordered, budget, size) {
        return victims;
    }
    if policy != CompactionPolicy::Greedy {
        let ordered = candidates_in_order(segments, size, CompactionPolicy::Greedy, now_lsn);
        if let Some(victims) = take_within_budget(&ordered, budget, size) {
            return victims;
        }
    }
    Vec::new()
}

/// The most of a segment's tail that copies may leave unused: the group writer fills a segment
/// up to the last record that fits, so at most one largest record, in its own buffer (with
/// its record directory entry and trailer).
pub const WORST_TAIL_BYTES: u64 = buffer_len_for(
    RECORD_HEADER_SIZE + MAX_KEY_LEN + MAX_VALUE_LEN,
    RECORD_HEADER_SIZE + MAX_KEY_LEN,
) as u64;

/// Segments kept for relocation that user writes may not take: the segment manager's rule
/// (`segments::reserve_for`), computed from the figures alone so this function stays pure.
pub fn assumed_reserve(segment_count: u64) -> u64 {
    crate::engine::segments::reserve_for(segment_count)
}

/// Free segments compaction copies may not take (`segments::compaction_floor`, the floor of
/// `Claim::Compaction`), left to the deletes and markers that free the victims.
pub fn assumed_compaction_floor(segment_count: u64) -> u64 {
    crate::engine::segments::compaction_floor(assumed_reserve(segment_count))
}

/// Most live bytes a pass may copy. Only the reserve is certain to stay free while a pass
/// runs: user writes racing a background pass may take every other free segment. Of the
/// reserve, copies may take what lies above the compaction floor (if they took it all, not even
/// the marker that frees the victims could be written, and the store would stay stuck). Each
/// segment counts for what copies may leave unused in it (`WORST_TAIL_BYTES`).
///
/// Copies go first into the room left in a group's open segment (under pressure all of a
/// victim's copies go to the roomiest one, see `Inner::copy_to_groups`), so that room counts
/// too: without it, a store whose free segments are down to the compaction floor could never
/// copy again, even where the open segment could take a whole victim.
fn pass_budget(segments: &[(SegmentInfo, u64)], size: u64) -> u64 {
    let free = segments
        .iter()
        .filter(|(info, _)| info.state == SegmentState::Free)
        .count() as u64;
    let n = segments.len() as u64;
    let usable = free
        .min(assumed_reserve(n))
        .saturating_sub(assumed_compaction_floor(n));
    let copy_room = size - WORST_TAIL_BYTES.min(size / 2);
    let open_room = segments
        .iter()
        .filter(|(info, _)| info.state == SegmentState::Open && info.kind == SegmentKind::Group)
        .map(|(info, _)| size.saturating_sub(info.used as u64))
        .max()
        .unwrap_or(0);
    (MAX_PASS_LIVE_SEGMENTS * size).min(open_room + usable * copy_room)
}

/// The candidate segments (closed, not too full) as `(segment, live bytes)`, best victim first
/// by `policy`.
fn candidates_in_order(
    segments: &[(SegmentInfo, u64)],
    size: u64,
    policy: CompactionPolicy,
    now_lsn: u64,
) -> Vec<(u32, u64)> {
    let limit = size * MAX_VICTIM_UTILIZATION_PERCENT / 100;
    let mut candidates: Vec<Candidate> = segments
        .iter()
        .enumerate()
        .filter(|(_, (info, live))| info.state == SegmentState::Closed && *live <= limit)
        .map(|(s, (_, live))| Candidate {
            segment: s as u32,
            live: *live,
            age: 0,
        })
        .collect();
    match policy {
        CompactionPolicy::Greedy => {
            candidates.sort_unstable_by_key(|c| (c.live, c.segment));
        }
        CompactionPolicy::CostBenefit => {
            let written = written_lsns(segments);
            for c in &mut candidates {
                c.age = now_lsn.saturating_sub(written[c.segment as usize]);
            }
            candidates.sort_unstable_by(|a, b| {
                cost_benefit_cmp(b, a, size)
                    .then(a.live.cmp(&b.live))
                    .then(a.segment.cmp(&b.segment))
            });
        }
    }
    candidates.iter().map(|c| (c.segment, c.live)).collect()
}

/// Takes candidates in order while their live bytes fit `budget`; `None` unless the victims
/// outnumber the segments their copies fill.
fn take_within_budget(ordered: &[(u32, u64)], budget: u64, size: u64) -> Option<Vec<u32>> {
    let mut live_total = 0;
    let mut victims = Vec::new();
    for &(segment, live) in ordered {
        if live_total + live <= budget {
            live_total += live;
            victims.push(segment);
        }
    }
    frees_more_than_it_fills(victims.len() as u64, live_total, size).then_some(victims)
}

/// Whether `victims` segments holding `live` bytes free more segments than their copies fill.
/// Copies are packed densely behind what their group's open segment already holds (the next
/// pass continues the same segment), so they fill `live / room` segments, `room` being a
/// segment less the tail a segment typically leaves unused (a quarter of a write buffer, as in
/// the user capacity). Counting whole segments per pass instead (`victims > ceil(live /
/// segment)`) refused every pass of a store filled by small batches (segments 75-85% live, at
/// most 3 victims within a small store's reserve): writes got NoSpace at 76% live (measured on
/// 2f61f1d).
pub fn frees_more_than_it_fills(victims: u64, live: u64, segment_size: u64) -> bool {
    let tail = (WRITE_BUFFER_SIZE as u64 / 4).min(segment_size / 4);
    victims as u128 * (segment_size - tail) as u128 > live as u128
}

struct Candidate {
    segment: u32,
    live: u64,
    /// LSNs since the segment's newest batch (cost-benefit only).
    age: u64,
}

/// Compares the cost-benefit scores `(size - live) * age / (size + live)` of `a` and `b`
/// exactly (cross-multiplied in 128 bits: no rounding, a total order).
fn cost_benefit_cmp(a: &Candidate, b: &Candidate, size: u64) -> std::cmp::Ordering {
    let num = |c: &Candidate| (size.saturating_sub(c.live)) as u128 * c.age as u128;
    let den = |c: &Candidate| (size + c.live) as u128;
    (num(a) * den(b)).cmp(&(num(b) * den(a)))
}

/// The LSN at which each segment was last written, for its age. A segment's `max_lsn` is the
/// newest user batch in it; a segment holding only copies (compaction output, which takes no
/// LSN) has `max_lsn` 0, so it is dated by when it was written instead: the newest `max_lsn` of
/// the segments allocated before it (generations are handed out in allocation order).
fn written_lsns(segments: &[(SegmentInfo, u64)]) -> Vec<u64> {
    let mut order: Vec<usize> = (0..segments.len()).collect();
    order.sort_unstable_by_key(|&i| segments[i].0.generation);
    let mut written = vec![0; segments.len()];
    let mut clock = 0;
    for i in order {
        let info = &segments[i].0;
        if info.state == SegmentState::Free {
            continue;
        }
        if info.max_lsn > 0 {
            clock = clock.max(info.max_lsn);
            written[i] = info.max_lsn;
        } else {
            written[i] = clock;
        }
    }
    written
}

/// Orders the records a pass copies oldest first (by version, `lsn << 16 | index in batch`,
/// which copies keep), so that data
/// that has not changed for long, and is likely to stay unchanged, is written together and its
/// segments stay full. Stable: records of the same version keep their order.
pub fn order_by_age<T>(records: &mut [T], version: impl Fn(&T) -> u64) {
    records.sort_by_key(|r| version(r));
}

/// [`order_by_age`] for the live records a pass copies into one group (`Inner::copy_to_groups`
/// calls it before writing them).
pub fn order_survivors(records: &mut [LiveRecord]) {
    order_by_age(records, |r| r.version);
}

/// A live record found in a victim: its bytes and what identifies it in the index.
pub struct LiveRecord {
    pub bytes: Vec<u8>,
    pub kind: RecordKind,
    pub key: Vec<u8>,
    pub version: u64,
    pub old: crate::engine::index::Location,
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
    use crate::engine::index::Location;

    const SIZE: u64 = 1 << 20;

    /// A segment `percent` live, last written at `max_lsn`, allocated `generation`-th.
    fn seg(state: SegmentState, percent: u64, max_lsn: u64, generation: u64) -> (SegmentInfo, u64) {
        let info = SegmentInfo {
            state,
            kind: SegmentKind::Mixed,
            group: 0,
            generation,
            used: SIZE as u32,
            max_lsn,
        };
        (info, SIZE * percent / 100)
    }

    fn closed(percent: u64, max_lsn: u64) -> (SegmentInfo, u64) {
        seg(SegmentState::Closed, percent, max_lsn, max_lsn)
    }

    const SMALL: u64 = 64 * 1024;

    /// A closed 64 KiB segment `percent` live, last written at `max_lsn`.
    fn small(percent: u64, max_lsn: u64) -> (SegmentInfo, u64) {
        let (mut info, _) = closed(0, max_lsn);
        info.used = SMALL as u32;
        (info, SMALL * percent / 100)
    }

    fn free() -> (SegmentInfo, u64) {
        seg(SegmentState::Free, 0, 0, 0)
    }

    /// Segments in the stores of these tests: the reserve is 20, of which copies may take 10
    /// (the compaction floor is 10), so the free segments given (10 to 20) decide the budget.
    const STORE_SEGMENTS: usize = 1000;

    /// `segments` followed by `n` free segments, then full closed segments (never candidates)
    /// up to `STORE_SEGMENTS`.
    fn with_free(mut segments: Vec<(SegmentInfo, u64)>, n: usize) -> Vec<(SegmentInfo, u64)> {
        segments.extend((0..n).map(|_| free()));
        while segments.len() < STORE_SEGMENTS {
            segments.push(closed(100, 1));
        }
        segments
    }

    const BOTH: [CompactionPolicy; 2] = [CompactionPolicy::Greedy, CompactionPolicy::CostBenefit];

    #[test]
    fn greedy_takes_the_emptiest_closed_segments() {
        let segments = with_free(
            vec![
                closed(50, 10),
                seg(SegmentState::Open, 0, 0, 90),
                closed(95, 20),
                closed(10, 30),
                seg(SegmentState::Freeing, 0, 5, 5),
                closed(30, 40),
                closed(70, 50),
            ],
            20,
        );
        let ordered = candidates_in_order(&segments, SIZE, CompactionPolicy::Greedy, 100);
        assert_eq!(
            ordered.iter().map(|c| c.0).collect::<Vec<_>>(),
            vec![3, 5, 0, 6]
        );
        assert_eq!(
            pick_victims(&segments, SIZE, CompactionPolicy::Greedy, 100),
            vec![3, 5, 0, 6]
        );
    }

    #[test]
    fn cost_benefit_prefers_an_old_fuller_segment_to_a_young_emptier_one() {
        // Old: 60% live, written at LSN 100; young: 50% live, written at LSN 900; now 1000.
        // Scores: 0.4 * 900 / 1.6 = 225 against 0.5 * 100 / 1.5 = 33.
        let segments = with_free(vec![closed(50, 900), closed(60, 100)], 20);
        let cb = candidates_in_order(&segments, SIZE, CompactionPolicy::CostBenefit, 1000);
        assert_eq!(cb[0].0, 1, "the old segment first: {cb:?}");
        let greedy = candidates_in_order(&segments, SIZE, CompactionPolicy::Greedy, 1000);
        assert_eq!(greedy[0].0, 0);
        // Ages too close: 0.4 * 120 / 1.6 = 30 against 0.5 * 100 / 1.5 = 33.
        let close = with_free(vec![closed(50, 900), closed(60, 880)], 20);
        let cb = candidates_in_order(&close, SIZE, CompactionPolicy::CostBenefit, 1000);
        assert_eq!(cb[0].0, 0, "the emptier segment first: {cb:?}");
    }

    #[test]
    fn cost_benefit_with_equal_ages_takes_the_emptier_segment() {
        let segments = with_free(vec![closed(60, 500), closed(50, 500), closed(55, 500)], 20);
        let cb = candidates_in_order(&segments, SIZE, CompactionPolicy::CostBenefit, 1000);
        assert_eq!(cb.iter().map(|c| c.0).collect::<Vec<_>>(), vec![1, 2, 0]);
        // Age 0 everywhere (all written by the newest batch): greedy order too.
        let cb = candidates_in_order(&segments, SIZE, CompactionPolicy::CostBenefit, 500);
        assert_eq!(cb.iter().map(|c| c.0).collect::<Vec<_>>(), vec![1, 2, 0]);
    }

    #[test]
    fn the_policy_decides_which_victims_a_tight_budget_gets() {
        // Ten old 60% segments and ten young 50% ones in a store of 500 segments (reserve 10,
        // compaction floor 5) with 12 free: the copies may take 5 segments, 4.36 MiB with room
        // for unused tails.
        let mut segments: Vec<_> = (0..10).map(|i| closed(60, 10 + i)).collect();
        segments.extend((0..10).map(|i| closed(50, 900 + i)));
        segments.extend((0..12).map(|_| free()));
        segments.extend((0..468).map(|_| closed(100, 1)));
        let cb = pick_victims(&segments, SIZE, CompactionPolicy::CostBenefit, 1000);
        assert_eq!(cb.len(), 7, "{cb:?}");
        assert!(cb.iter().all(|&s| s < 10), "old segments only: {cb:?}");
        let greedy = pick_victims(&segments, SIZE, CompactionPolicy::Greedy, 1000);
        assert_eq!(greedy.len(), 8, "{greedy:?}");
        assert!(greedy.iter().all(|&s| (10..20).contains(&s)), "{greedy:?}");
        // Down to the reserve (10 free): user writes are waiting, cost-benefit acts greedy.
        for segment in &mut segments[20..22] {
            *segment = closed(100, 1);
        }
        let pressed = pick_victims(&segments, SIZE, CompactionPolicy::CostBenefit, 1000);
        assert_eq!(pressed.len(), 8, "{pressed:?}");
        assert!(
            pressed.iter().all(|&s| (10..20).contains(&s)),
            "{pressed:?}"
        );
    }

    #[test]
    fn copies_only_segments_are_dated_by_when_they_were_written() {
        // Segment 1 holds only copies (max_lsn 0), allocated after segment 0 (LSN 400) and
        // before segment 2 (LSN 990): it was written around LSN 400, so it is old, not new
        // and not infinitely old.
        let segments = with_free(
            vec![
                seg(SegmentState::Closed, 60, 400, 1),
                seg(SegmentState::Closed, 60, 0, 2),
                seg(SegmentState::Closed, 60, 990, 3),
            ],
            20,
        );
        let written = written_lsns(&segments);
        assert_eq!(&written[..3], &[400, 400, 990]);
        let cb = candidates_in_order(&segments, SIZE, CompactionPolicy::CostBenefit, 1000);
        assert_eq!(cb.iter().map(|c| c.0).collect::<Vec<_>>(), vec![0, 1, 2]);
    }

    #[test]
    fn never_almost_full_segments_whatever_their_age() {
        for policy in BOTH {
            let segments = with_free((0..30).map(|i| closed(91 + i % 9, 1 + i)).collect(), 30);
            assert!(pick_victims(&segments, SIZE, policy, 1 << 40).is_empty());
            let ordered = candidates_in_order(&segments, SIZE, policy, 1 << 40);
            assert!(ordered.is_empty(), "{policy:?}: {ordered:?}");
        }
        // At the cap exactly they are candidates (9 fit the budget of 8.7 MiB).
        let at_cap = with_free((0..10).map(|i| closed(90, 1 + i)).collect(), 30);
        for policy in BOTH {
            assert_eq!(pick_victims(&at_cap, SIZE, policy, 100).len(), 9);
        }
    }

    #[test]
    fn no_pass_when_copies_would_fill_as_many_segments_as_they_free() {
        // 1 MiB segments: copies fill 960 KiB of each; 64 KiB segments: 48 KiB.
        assert!(frees_more_than_it_fills(1, 0, SIZE));
        assert!(frees_more_than_it_fills(1, SIZE * 90 / 100, SIZE));
        assert!(frees_more_than_it_fills(3, 3 * 983_039, SIZE));
        assert!(!frees_more_than_it_fills(3, 3 * 983_040, SIZE));
        assert!(!frees_more_than_it_fills(0, 0, SIZE));
        assert!(frees_more_than_it_fills(2, SMALL * 140 / 100, SMALL));
        assert!(!frees_more_than_it_fills(2, SMALL * 150 / 100, SMALL));
        for policy in BOTH {
            // 64 KiB segments at 80% and 90%: copies fill 48 KiB of a segment, so neither
            // alone nor both together free more than they fill.
            let mut segments = with_free(vec![small(80, 1), small(90, 2)], 20);
            assert!(pick_victims(&segments, SMALL, policy, 100).is_empty());
            // An empty closed segment is always worth freeing.
            segments[0] = small(0, 1);
            assert_eq!(pick_victims(&segments, SMALL, policy, 100), vec![0, 1]);
            // 1 MiB segments: a lone 30% segment is worth it.
            let one = with_free(vec![closed(30, 1)], 20);
            assert_eq!(pick_victims(&one, SIZE, policy, 100), vec![0]);
        }
    }

    #[test]
    fn a_small_pass_copies_at_most_its_own_budget() {
        for policy in BOTH {
            let mut store: Vec<_> = (0..40).map(|i| closed(50, 1 + i)).collect();
            store.extend((0..40).map(|_| free()));
            store.extend((0..1920).map(|_| closed(100, 1)));
            let victims = pick_victims_within(&store, SIZE, policy, 100, SMALL_PASS_LIVE_SEGMENTS);
            assert_eq!(victims.len(), 4, "{policy:?}: two segments of 50% victims");
            // At the cap a small pass still frees more than it fills: two 90% victims.
            let mut full: Vec<_> = (0..40).map(|i| closed(90, 1 + i)).collect();
            full.extend((0..40).map(|_| free()));
            full.extend((0..1920).map(|_| closed(100, 1)));
            let victims = pick_victims_within(&full, SIZE, policy, 100, SMALL_PASS_LIVE_SEGMENTS);
            assert_eq!(victims.len(), 2, "{policy:?}");
            // A budget larger than the pass maximum is the pass maximum.
            assert_eq!(
                pick_victims_within(&store, SIZE, policy, 100, 1000),
                pick_victims(&store, SIZE, policy, 100),
                "{policy:?}"
            );
        }
    }

    #[test]
    fn a_pass_copies_at_most_its_budget() {
        for policy in BOTH {
            // A store of 2000 segments (reserve 40, floor 20), all free ones usable: at most
            // MAX_PASS_LIVE_SEGMENTS segments of copies.
            let mut big: Vec<_> = (0..40).map(|i| closed(50, 1 + i)).collect();
            big.extend((0..40).map(|_| free()));
            big.extend((0..1920).map(|_| closed(100, 1)));
            let victims = pick_victims(&big, SIZE, policy, 100);
            assert_eq!(
                victims.len() as u64,
                MAX_PASS_LIVE_SEGMENTS * 2,
                "{policy:?}"
            );
            // Few free segments: the copies must fit those above the compaction floor (13 free,
            // floor 10: 3 segments with worst-case tails, 2.6 MiB: five 50% victims).
            let tight = with_free((0..40).map(|i| closed(50, 1 + i)).collect(), 13);
            assert_eq!(
                pick_victims(&tight, SIZE, policy, 100).len(),
                5,
                "{policy:?}"
            );
            // Down to the floor: no copies at all, but empty segments still go.
            let mut none = with_free((0..40).map(|i| closed(50, 1 + i)).collect(), 10);
            assert!(pick_victims(&none, SIZE, policy, 100).is_empty());
            none.push(closed(0, 50));
            assert_eq!(
                pick_victims(&none, SIZE, policy, 100),
                vec![STORE_SEGMENTS as u32]
            );
            // Whatever the figures, the live bytes chosen stay within the budget.
            for free_count in [0, 5, 10, 11, 12, 15, 20, 25] {
                let mixed = with_free(
                    (0..40)
                        .map(|i| closed((i * 37) % 95, 1 + i * 13 % 40))
                        .collect(),
                    free_count,
                );
                let victims = pick_victims(&mixed, SIZE, policy, 1000);
                let live: u64 = victims.iter().map(|&s| mixed[s as usize].1).sum();
                let copy_room = SIZE - WORST_TAIL_BYTES.min(SIZE / 2);
                let usable = (free_count as u64).min(20).saturating_sub(10);
                let budget = (MAX_PASS_LIVE_SEGMENTS * SIZE).min(usable * copy_room);
                assert!(
                    live <= budget,
                    "{policy:?} free {free_count}: {live} > {budget}"
                );
                assert!(
                    victims.is_empty()
                        || frees_more_than_it_fills(victims.len() as u64, live, SIZE),
                    "{policy:?} free {free_count}: {victims:?}"
                );
                for &s in &victims {
                    assert_eq!(mixed[s as usize].0.state, SegmentState::Closed);
                    assert!(mixed[s as usize].1 * 100 <= SIZE * MAX_VICTIM_UTILIZATION_PERCENT);
                }
            }
        }
    }

    #[test]
    fn a_pass_counts_only_on_the_reserve_which_user_writes_cannot_take() {
        assert_eq!(assumed_reserve(100), 4);
        assert_eq!(assumed_reserve(1000), 20);
        assert_eq!(assumed_reserve(8), 2);
        assert_eq!(assumed_compaction_floor(1000), 10);
        // 100 segments: reserve 4, compaction floor 2. 60 free, but user writes may take 56 of
        // them while the pass runs: the copies must fit 2 segments with worst-case tails
        // (1.74 MiB: three 50% victims).
        let mut segments: Vec<_> = (0..40).map(|i| closed(50, 1 + i)).collect();
        segments.extend((0..60).map(|_| free()));
        for policy in BOTH {
            assert_eq!(
                pick_victims(&segments, SIZE, policy, 100).len(),
                3,
                "{policy:?}"
            );
        }
    }

    #[test]
    fn a_store_down_to_its_compaction_floor_compacts_into_an_open_segments_room() {
        // 1000 segments: the compaction floor is 10, so with 10 free the copies may take no
        // free segment. A group's open segment three quarters empty still takes two 30%
        // victims whole.
        let mut open = seg(SegmentState::Open, 25, 0, 1);
        open.0.kind = SegmentKind::Group;
        open.0.used = (SIZE / 4) as u32;
        let segments = with_free(vec![closed(30, 1), closed(30, 2), open], 10);
        for policy in BOTH {
            assert_eq!(
                pick_victims(&segments, SIZE, policy, 100),
                vec![0, 1],
                "{policy:?}"
            );
        }
        // A mixed segment being written is not where copies go.
        let mut mixed = segments.clone();
        mixed[2].0.kind = SegmentKind::Mixed;
        assert_eq!(
            pick_victims(&mixed, SIZE, CompactionPolicy::Greedy, 100),
            Vec::<u32>::new()
        );
    }

    #[test]
    fn cost_benefit_takes_the_greedy_choice_when_its_own_frees_nothing() {
        // 64 KiB segments, 12 free (two above the floor: 64 KiB of copies with worst-case
        // tails). The oldest segment (80%) alone fills more than it frees (48 KiB per
        // segment); greedy's two 30% segments free more.
        let segments = with_free(vec![small(80, 1), small(30, 990), small(30, 991)], 12);
        let cb = candidates_in_order(&segments, SMALL, CompactionPolicy::CostBenefit, 1000);
        assert_eq!(cb[0].0, 0);
        let budget = pass_budget(&segments, SMALL);
        assert_eq!(budget, SMALL);
        assert_eq!(take_within_budget(&cb, budget, SMALL), None);
        assert_eq!(
            pick_victims(&segments, SMALL, CompactionPolicy::CostBenefit, 1000),
            vec![1, 2]
        );
    }

    #[test]
    fn empty_input_and_no_candidates_give_no_pass() {
        for policy in BOTH {
            assert!(pick_victims(&[], SIZE, policy, 0).is_empty());
            assert!(pick_victims(&[], SIZE, policy, 1000).is_empty());
            let none_closed = vec![
                seg(SegmentState::Open, 10, 5, 1),
                seg(SegmentState::Freeing, 0, 3, 2),
                free(),
                free(),
                free(),
            ];
            assert!(pick_victims(&none_closed, SIZE, policy, 1000).is_empty());
        }
    }

    fn record(version: u64, tag: u8) -> LiveRecord {
        LiveRecord {
            bytes: vec![tag; 3],
            kind: RecordKind::Put,
            key: vec![tag],
            version,
            old: Location {
                segment: 0,
                offset: 0,
                len: 3,
            },
        }
    }

    #[test]
    fn survivors_are_ordered_oldest_first() {
        // Versions are lsn << 16 | index in batch.
        let v = |lsn: u64, i: u64| (lsn << 16) | i;
        let mut records = vec![
            record(v(9, 0), b'a'),
            record(v(2, 1), b'b'),
            record(v(5, 0), b'c'),
            record(v(2, 0), b'd'),
            record(v(9, 0), b'e'),
        ];
        order_survivors(&mut records);
        let keys: Vec<u8> = records.iter().map(|r| r.key[0]).collect();
        assert_eq!(
            keys, b"dbcae",
            "oldest first; equal versions keep their order"
        );
        let mut empty: Vec<LiveRecord> = Vec::new();
        order_survivors(&mut empty);
        let mut plain = vec![(3u64, 'x'), (1, 'y'), (2, 'z')];
        order_by_age(&mut plain, |r| r.0);
        assert_eq!(plain, vec![(1, 'y'), (2, 'z'), (3, 'x')]);
    }
}
