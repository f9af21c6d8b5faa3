//! Range deletes in the index, and the removal of what they cover. A range delete is one
//! record and bounded work on the writer's path: its first removal step looks at a bounded
//! number of entries (`INLINE_REMOVAL_ENTRIES`, whole leaves); the rest stays pending, hidden
//! from every reader, and is removed later in bounded steps (`Index::remove_pending_step`).
//! The rules it keeps: removal takes only entries older than the range delete (a newer put
//! stays); a range delete another one supersedes dies, as an overwritten record does; a
//! pending range delete is never dropped as a tombstone while it still hides entries.

use super::super::concurrency::Ordering;
use super::leaf::LEAF_MERGE_BELOW;
use super::{Index, Inner, Location};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeDelete {
    pub start: Vec<u8>,
    /// Exclusive; empty: unbounded.
    pub end: Vec<u8>,
    pub version: u64,
    pub location: Location,
    pub group: u32,
}

impl RangeDelete {
    pub fn covers(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && (self.end.is_empty() || key < self.end.as_slice())
    }

    /// Whether this range delete hides everything `other` hides: it is newer and its range
    /// holds `other`'s. `other` is then dead, as a record an overwrite replaced: without it,
    /// a file truncated again and again to the same size (its first pages never rewritten, so
    /// that no range delete of it can be dropped) kept one range delete per truncation, in
    /// the index and on disk, copied by every compaction.
    pub fn supersedes(&self, other: &RangeDelete) -> bool {
        self.version > other.version
            && self.start <= other.start
            && (self.end.is_empty()
                || (!other.end.is_empty() && other.end <= self.end && other.start < self.end))
    }
}

/// Removes from `ranges` every range delete that another one of them supersedes
/// ([`RangeDelete::supersedes`]): the rule the index applies as range deletes arrive, for
/// recovery, which finds them all at once. One sweep by start, with the highest version seen
/// per end rank in a Fenwick tree (suffix maxima): O(n log n).
pub fn drop_superseded_ranges(ranges: &mut Vec<RangeDelete>) {
    if ranges.len() < 2 {
        return;
    }
    let mut ends: Vec<&[u8]> = ranges
        .iter()
        .filter(|r| !r.end.is_empty())
        .map(|r| r.end.as_slice())
        .collect();
    ends.sort_unstable();
    ends.dedup();
    let n = ends.len() + 1;
    // Position in the tree: 1 for the unbounded end, n for the lowest one, so that the ranges
    // ending at or after an end are a prefix of the tree.
    let slot: Vec<usize> = ranges
        .iter()
        .map(|r| {
            if r.end.is_empty() {
                1
            } else {
                n - ends.binary_search(&r.end.as_slice()).unwrap()
            }
        })
        .collect();
    let mut tree = vec![0u64; n + 1]; // versions are never 0
    let mut order: Vec<usize> = (0..ranges.len()).collect();
    order.sort_by(|&a, &b| ranges[a].start.cmp(&ranges[b].start));
    let mut dead = vec![false; ranges.len()];
    let mut i = 0;
    while i < order.len() {
        // Ranges of one start: each may supersede the others.
        let mut j = i;
        while j < order.len() && ranges[order[j]].start == ranges[order[i]].start {
            let mut at = slot[order[j]];
            while at <= n {
                tree[at] = tree[at].max(ranges[order[j]].version);
                at += at & at.wrapping_neg();
            }
            j += 1;
        }
        for &r in &order[i..j] {
            let (mut at, mut newest) = (slot[r], 0);
            while at > 0 {
                newest = newest.max(tree[at]);
                at -= at & at.wrapping_neg();
            }
            dead[r] = newest > ranges[r].version;
        }
        i = j;
    }
    let mut k = 0;
    ranges.retain(|_| {
        k += 1;
        !dead[k - 1]
    });
}

/// What a pending range delete has left to remove: the older entries in `[resume, end)`.
#[derive(Debug)]
pub(super) struct Pending {
    /// Exclusive; empty: unbounded.
    pub(super) end: Vec<u8>,
    pub(super) resume: Vec<u8>,
}

/// Entries a range delete's first removal step may look at, on the request path that applies it
/// (whole leaves: a step stops at the first leaf boundary past it). A range delete covering no
/// more (a small file's truncate or unlink) is done at once and never pending.
pub const INLINE_REMOVAL_ENTRIES: usize = 256;

impl Index {
    /// Removes the range delete starting at `start` with `version` if it is still the record
    /// at `location`. Returns whether it did.
    pub fn remove_range_if_at(&self, start: &[u8], version: u64, location: Location) -> bool {
        let key = (Box::<[u8]>::from(start), version);
        let mut inner = self.inner.write();
        // A pending range delete still hides entries in the index: it stays until they are
        // removed (a later pass may drop it).
        if !inner.pending.contains_key(&key)
            && inner
                .ranges
                .get(&key)
                .is_some_and(|r| r.location == location)
        {
            inner.ranges.remove(&key);
            true
        } else {
            false
        }
    }

    /// Whether `location` holds the range delete starting at `start` with `version`.
    pub fn range_at(&self, start: &[u8], version: u64, location: Location) -> bool {
        let key = (Box::<[u8]>::from(start), version);
        self.inner
            .read()
            .ranges
            .get(&key)
            .is_some_and(|r| r.location == location)
    }

    /// [`Index::compare_and_set`] for a range delete.
    pub fn compare_and_set_range(
        &self,
        start: &[u8],
        version: u64,
        old: Location,
        new: Location,
        group: u32,
    ) -> bool {
        let key = (Box::<[u8]>::from(start), version);
        match self.inner.write().ranges.get_mut(&key) {
            Some(r) if r.location == old => {
                r.location = new;
                r.group = group;
                true
            }
            _ => false,
        }
    }

    /// Whether some range delete still has older entries to remove.
    pub fn has_pending(&self) -> bool {
        !self.inner.read().pending.is_empty()
    }

    /// Test hook: the budget of a range delete's first removal step.
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn test_set_inline_removal(&self, entries: usize) {
        self.inner.write().inline_removal = Some(entries);
    }

    /// Range deletes with older entries still to remove.
    pub fn pending_count(&self) -> usize {
        self.inner.read().pending.len()
    }

    /// One bounded step of removing what pending range deletes hide: at most about `budget`
    /// entries looked at (whole leaves), under the write lock once. Returns the locations of
    /// the entries removed (their bytes are dead now), or `None` when nothing is pending.
    /// Only entries older than the range delete go: a put that reached the index after it with
    /// a newer version stays.
    pub fn remove_pending_step(&self, budget: usize) -> Option<Vec<Location>> {
        let mut inner = self.inner.write();
        let (key, (end, resume)) = inner
            .pending
            .first_key_value()
            .map(|(k, p)| (k.clone(), (p.end.clone(), p.resume.clone())))?;
        let (displaced, rest) = inner.remove_older_in_range(&resume, &end, key.1, budget);
        match rest {
            Some(resume) => {
                if let Some(p) = inner.pending.get_mut(&key) {
                    p.resume = resume;
                }
            }
            None => {
                inner.pending.remove(&key);
            }
        }
        Some(displaced)
    }

    /// Removes everything pending at once; the locations of the entries removed. Tests.
    #[cfg(test)]
    pub fn settle(&self) -> Vec<Location> {
        let mut all = Vec::new();
        while let Some(d) = self.remove_pending_step(usize::MAX) {
            all.extend(d);
        }
        all
    }
}

impl Inner {
    /// The pending range deletes that overlap `[from, end)` (`end` empty: unbounded), as
    /// (start, end, version): what a walk over that span checks each entry against.
    pub(super) fn pending_over<'a>(
        &'a self,
        from: &[u8],
        end: &[u8],
    ) -> Vec<(&'a [u8], &'a [u8], u64)> {
        if self.pending.is_empty() {
            return Vec::new();
        }
        self.pending
            .iter()
            .filter(|((start, _), p)| {
                (end.is_empty() || start.as_ref() < end)
                    && (p.end.is_empty() || p.end.as_slice() > from)
            })
            .map(|((start, version), p)| (start.as_ref(), p.end.as_slice(), *version))
            .collect()
    }

    /// Whether one of `pending` (see [`Inner::pending_over`]) hides an entry of `key` with
    /// `version`: it covers the key and is newer.
    pub(super) fn hidden(&self, pending: &[(&[u8], &[u8], u64)], key: &[u8], version: u64) -> bool {
        pending
            .iter()
            .any(|&(start, end, v)| v > version && key >= start && (end.is_empty() || key < end))
    }

    /// Removes the point entries in `[start, end)` (`end` empty: unbounded) older than
    /// `version`, leaf by leaf, stopping at the first leaf boundary after `budget` entries of
    /// the leaves looked at. Returns their locations, and where to go on if it stopped before
    /// `end` (the fence of the next leaf: every key below it in the range was dealt with).
    /// Each leaf's survivors are rebuilt once, where removing key by key shifted the leaf once
    /// per key (about a microsecond a page).
    pub(super) fn remove_older_in_range(
        &mut self,
        start: &[u8],
        end: &[u8],
        version: u64,
        budget: usize,
    ) -> (Vec<Location>, Option<Vec<u8>>) {
        if !end.is_empty() && end <= start {
            return (Vec::new(), None); // an empty range (BTreeMap::range would panic on it)
        }
        let mut fences: Vec<Box<[u8]>> = Vec::new();
        let mut resume = None;
        let mut taken = 0;
        for (fence, leaf) in self.leaves_over(start, end) {
            if taken >= budget && !fences.is_empty() {
                resume = Some(fence.to_vec());
                break;
            }
            taken += leaf.len();
            fences.push(fence.clone());
        }
        let range_end = end;
        let mut displaced = Vec::new();
        let mut underfull = Vec::new();
        let mut visited = 0;
        for fence in fences {
            let Some(leaf) = self.leaves.get_mut(&fence) else {
                continue;
            };
            let (Ok(lo) | Err(lo)) = leaf.find(start);
            let hi = if range_end.is_empty() {
                leaf.len()
            } else {
                let (Ok(hi) | Err(hi)) = leaf.find(range_end);
                hi
            };
            visited += hi.saturating_sub(lo) as u64;
            let mut keep: Vec<usize> = (0..lo).collect();
            for i in lo..hi {
                if leaf.entries[i].version() < version {
                    if leaf.tombs.get(i) {
                        self.resurfacing.insert(leaf.entries[i].location().segment);
                    }
                    displaced.push(leaf.entries[i].location());
                } else {
                    keep.push(i);
                }
            }
            keep.extend(hi.max(lo)..leaf.len());
            if keep.len() == leaf.len() {
                continue;
            }
            self.len -= leaf.len() - keep.len();
            let survivors = leaf.kept(&keep);
            *leaf = survivors;
            if leaf.len() < LEAF_MERGE_BELOW {
                underfull.push(fence);
            }
        }
        self.visits.fetch_add(visited, Ordering::Relaxed);
        // Last first: an emptied first leaf hands its (empty) fence to the next leaf, which
        // must then already be settled.
        for fence in underfull.iter().rev() {
            self.rebalance(fence);
        }
        (displaced, resume)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{Rng, fs_key, loc, put};
    use super::super::{Location, Update};
    use super::*;

    #[test]
    fn range_delete_removes_only_older_keys_in_range() {
        let index = Index::default();
        index.apply(&put(b"a1", 1, loc(0, 0)), &[]);
        index.apply(&put(b"a2", 10, loc(0, 10)), &[]);
        index.apply(&put(b"b1", 1, loc(0, 20)), &[]);
        let r = RangeDelete {
            start: b"a".to_vec(),
            end: b"b".to_vec(),
            version: 5,
            location: loc(0, 30),
            group: 0,
        };
        let applied = index.apply(&Update::Range(r.clone()), &[]);
        assert_eq!(applied.displaced, vec![loc(0, 0)]);
        assert!(index.get(b"a1").is_none());
        assert!(index.get(b"a2").is_some(), "newer than the delete");
        assert!(index.get(b"b1").is_some(), "outside the range");
        // A put from the same buffer with a lower version arriving after the range delete dies.
        let late = index.apply(&put(b"a3", 4, loc(0, 40)), &[r]);
        assert!(!late.new_is_live);
        assert!(index.get(b"a3").is_none());
    }

    #[test]
    fn range_deletes_across_leaves_empty_them_and_report_what_died() {
        let index = Index::default();
        for i in 0..3000u64 {
            // Every seventh key is newer than the range delete below and survives it.
            let version = if i % 7 == 0 { 100 } else { 1 };
            index.apply(
                &put(&fs_key(b'C', i / 1000, Some(i)), version, loc(0, i as u32)),
                &[],
            );
        }
        let before = index.check();
        let r = RangeDelete {
            start: fs_key(b'C', 1, None),
            end: fs_key(b'C', 2, None),
            version: 50,
            location: loc(9, 0),
            group: 0,
        };
        let mut applied = index.apply(&Update::Range(r), &[]);
        // A range of a thousand entries is left pending after one bounded step.
        assert_eq!(index.pending_count(), 1);
        assert!(applied.displaced.len() < 1000 - 1000 / 7);
        applied.displaced.extend(index.settle());
        assert_eq!(index.pending_count(), 0);
        let want: Vec<Location> = (1000..2000u64)
            .filter(|i| i % 7 != 0)
            .map(|i| loc(0, i as u32))
            .collect();
        assert_eq!(
            applied.displaced, want,
            "the older keys in range, in key order"
        );
        let after = index.check();
        assert!(after < before, "leaves merged: {before} -> {after}");
        assert_eq!(index.len(), 3000 - want.len());
        assert_eq!(index.range_delete_count(), 1);
        // Everything, unbounded above and newer than all: the index empties, leaves go.
        let r = RangeDelete {
            start: Vec::new(),
            end: Vec::new(),
            version: 1000,
            location: loc(9, 100),
            group: 0,
        };
        let mut applied = index.apply(&Update::Range(r), &[]);
        // The first step's keys, the range delete it supersedes, then the rest.
        assert!(applied.displaced.contains(&loc(9, 0)));
        applied.displaced.extend(index.settle());
        assert_eq!(applied.displaced.len(), 3000 - want.len() + 1);
        assert_eq!(index.range_delete_count(), 1);
        assert_eq!(index.check(), 0);
        assert_eq!(index.len(), 0);
        assert!(index.scan(b"", b"", None, 10).is_empty());
        // And it fills again.
        index.apply(&put(b"again", 2000, loc(1, 0)), &[]);
        assert_eq!(index.check(), 1);
        assert!(index.get(b"again").is_some());
    }

    /// Recovery's sweep drops exactly the range deletes another one supersedes.
    #[test]
    fn superseded_ranges_are_dropped_as_one_by_one_comparison_finds() {
        for seed in 0..200u64 {
            let mut rng = Rng(seed);
            let n = 1 + rng.below(40) as usize;
            let ranges: Vec<RangeDelete> = (0..n)
                .map(|i| {
                    // Few distinct bounds, so that starts, ends and containments repeat.
                    let (a, b) = (rng.below(6) as u8, rng.below(6) as u8);
                    let (low, high) = (a.min(b), a.max(b) + 1);
                    let end = if rng.below(5) == 0 {
                        Vec::new()
                    } else {
                        vec![b'a' + high]
                    };
                    RangeDelete {
                        start: vec![b'a' + low],
                        end,
                        version: 1 + rng.below(30) * 100 + i as u64,
                        location: loc(i as u32, 0),
                        group: 0,
                    }
                })
                .collect();
            let want: Vec<RangeDelete> = ranges
                .iter()
                .filter(|r| !ranges.iter().any(|o| o.supersedes(r)))
                .cloned()
                .collect();
            let mut got = ranges.clone();
            drop_superseded_ranges(&mut got);
            assert_eq!(got, want, "seed {seed}");
        }
    }
}
