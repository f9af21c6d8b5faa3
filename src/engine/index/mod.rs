//! The in-memory index: key -> where its newest record is, with the record's group and version.
//!
//! Entries are ordered, so prefix and range scans serve directory listings and file reads.
//! Tombstones stay in the index as entries (they occupy space in a segment and must be accounted
//! for until compaction drops them); readers skip them. Range deletes are kept apart, with the
//! location of their record.
//!
//! Every change returns the entries it displaced, so the caller can move live-byte accounting
//! from their segments. The index itself knows no files and no segments beyond [`Location`].
//!
//! Versions decide: an update with a lower version than the entry's never wins. That makes index
//! updates commutative, so writers of one buffer may update in any order.
//!
//! Its parts: the ordered map and its point operations here (lookups, scans, "highest version
//! wins", compare-and-set); `leaf`: the packed leaves the map is made of (layout, splits,
//! merges, recovery's bulk build); `ranges`: range deletes and the removal, in bounded steps,
//! of what pending ones hide; `memory`: the estimate of the index's heap bytes.

mod leaf;
mod memory;
mod ranges;

use std::collections::BTreeMap;
use std::ops::Bound;

use super::concurrency::{AtomicU64, Mutex, Ordering, RwLock};
use leaf::{Leaf, Packed, low_mask};
use ranges::Pending;
pub use ranges::{INLINE_REMOVAL_ENTRIES, RangeDelete, drop_superseded_ranges};

/// Where a record is on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Location {
    pub segment: u32,
    /// Byte offset of the record's header within the segment.
    pub offset: u32,
    /// Bytes of the whole record (header, key, value).
    pub len: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub location: Location,
    pub version: u64,
    pub group: u32,
    pub tombstone: bool,
}

/// The index as one moment held it ([`Index::snapshot`]).
pub struct Snapshot {
    leaves: Vec<Leaf>,
    /// Every range delete.
    pub ranges: Vec<RangeDelete>,
}

impl Snapshot {
    /// Every point entry, tombstones and entries a pending range delete hides included, in key
    /// order. A key comes as two parts (its leaf's shared prefix, then the rest) so that
    /// nothing is allocated per key (for the half a million pages of a 2 GiB file, those
    /// allocations were a quarter of the daemon's page faults while it wrote the file).
    pub fn points(&self) -> impl Iterator<Item = ([&[u8]; 2], Entry)> + Clone + '_ {
        (self.leaves.iter()).flat_map(|leaf| {
            (0..leaf.len()).map(move |i| ([&leaf.prefix[..], leaf.suffix(i)], leaf.entry(i)))
        })
    }
}

/// A change to the index: a put or tombstone at `entry`, or a range delete.
#[derive(Clone, Debug)]
pub enum Update {
    Point { key: Vec<u8>, entry: Entry },
    Range(RangeDelete),
}

/// What an update did to live bytes: the new record is live (or not, when it lost to a newer
/// version), and these older records died.
#[derive(Default, Debug)]
pub struct Applied {
    pub new_is_live: bool,
    pub displaced: Vec<Location>,
}

#[derive(Default)]
struct Inner {
    /// Leaves by fence; see the module documentation.
    leaves: BTreeMap<Box<[u8]>, Leaf>,
    /// Point entries (puts and tombstones).
    len: usize,
    /// Range deletes by (start, version).
    ranges: BTreeMap<(Box<[u8]>, u64), RangeDelete>,
    /// Range deletes (keys into `ranges`) whose older entries are not all removed yet: they
    /// hide those entries from every reader until removal, in bounded steps, reaches their end
    /// ([`Index::remove_pending_step`]). Few at a time: a range delete is applied with one
    /// bounded step, so only those of large files stay pending, until the background removes
    /// the rest.
    pending: BTreeMap<(Box<[u8]>, u64), Pending>,
    /// Tests: another budget for a range delete's first step than [`INLINE_REMOVAL_ENTRIES`].
    inline_removal: Option<usize>,
    /// Point entries looked at by lookups and walks: a work counter, so that tests can tell
    /// work that grows with a file's size from work that grows with what it stores.
    visits: AtomicU64,
    /// Segments of tombstones and range deletes displaced since last taken
    /// ([`Index::take_resurfacing`]): their records stay on disk, unindexed, and come back in
    /// a scan once whatever displaced them is dropped in turn (compaction drops a tombstone
    /// no older put needs, however many older tombstones there are).
    resurfacing: std::collections::BTreeSet<u32>,
}

#[derive(Default)]
pub struct Index {
    inner: RwLock<Inner>,
}

impl Inner {
    fn apply(&mut self, update: &Update, same_buffer_ranges: &[RangeDelete]) -> Applied {
        let inner = self;
        match update {
            Update::Point { key, entry } => {
                if same_buffer_ranges
                    .iter()
                    .any(|r| r.version > entry.version && r.covers(key))
                {
                    return Applied {
                        new_is_live: false,
                        displaced: Vec::new(),
                    };
                }
                inner.put_if_newer(key, *entry)
            }
            Update::Range(range) => {
                // A newer range delete of the same buffer that holds this one's range may have
                // reached the index first: this one is dead on arrival (that one removes all it
                // would). From earlier buffers none can be newer.
                if same_buffer_ranges.iter().any(|r| r.supersedes(range)) {
                    return Applied {
                        new_is_live: false,
                        displaced: Vec::new(),
                    };
                }
                // One bounded step now; the rest, if any, stays pending: hidden from readers,
                // removed later in bounded steps (the request path never walks a whole file).
                let budget = inner.inline_removal.unwrap_or(INLINE_REMOVAL_ENTRIES);
                let (mut displaced, rest) =
                    inner.remove_older_in_range(&range.start, &range.end, range.version, budget);
                // Older range deletes this one supersedes start within its range. What they
                // still had pending, this one hides and removes too (it is newer and holds
                // their ranges).
                let from = (range.start.clone().into_boxed_slice(), 0);
                let superseded: Vec<(Box<[u8]>, u64)> = inner
                    .ranges
                    .range(from..)
                    .take_while(|((start, _), _)| {
                        range.end.is_empty() || start.as_ref() < range.end.as_slice()
                    })
                    .filter(|(_, old)| range.supersedes(old))
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in superseded {
                    inner.pending.remove(&k);
                    if let Some(old) = inner.ranges.remove(&k) {
                        inner.resurfacing.insert(old.location.segment);
                        displaced.push(old.location);
                    }
                }
                inner.ranges.insert(
                    (range.start.clone().into_boxed_slice(), range.version),
                    range.clone(),
                );
                if let Some(resume) = rest {
                    inner.pending.insert(
                        (range.start.clone().into_boxed_slice(), range.version),
                        Pending {
                            end: range.end.clone(),
                            resume,
                        },
                    );
                }
                Applied {
                    new_is_live: true,
                    displaced,
                }
            }
        }
    }
}

impl Index {
    /// `key`'s entry as readers see it: none if a pending range delete hides it.
    pub fn get(&self, key: &[u8]) -> Option<Entry> {
        let inner = self.inner.read();
        inner
            .get(key)
            .filter(|e| !inner.hidden(&inner.pending_over(key, &[]), key, e.version))
    }

    /// Applies one update of a writer's batch. `buffer_ranges` collects the range deletes of
    /// the write buffer the batch went into, each added when its batch took its place in the
    /// buffer, before any of that batch's index updates. The writers of one buffer update the
    /// index in any order (those of different buffers in buffer order, see the write gate in
    /// `log/gate.rs`): a put may come after a range delete of the same buffer with a higher version
    /// was applied, and must then die on arrival. So the list is read under the index's lock,
    /// not before taking it: read earlier, it could miss a range delete that is applied in
    /// between, and the put would stay live.
    pub fn apply_in_buffer(
        &self,
        update: &Update,
        buffer_ranges: &Mutex<Vec<RangeDelete>>,
    ) -> Applied {
        let mut inner = self.inner.write();
        let same_buffer_ranges = buffer_ranges.lock();
        inner.apply(update, &same_buffer_ranges)
    }

    /// Applies one update, given the range deletes of its write buffer (see
    /// [`Index::apply_in_buffer`]), for tests and benchmarks that know them in advance.
    #[allow(dead_code)]
    pub fn apply(&self, update: &Update, same_buffer_ranges: &[RangeDelete]) -> Applied {
        self.inner.write().apply(update, same_buffer_ranges)
    }

    /// The index as one moment held it (one hold of its read lock), for a checkpoint. The
    /// leaves are copied whole under the lock (a few allocations per leaf, none per key):
    /// writers' index updates wait only for the copy.
    pub fn snapshot(&self) -> Snapshot {
        let inner = self.inner.read();
        Snapshot {
            leaves: inner.leaves.values().cloned().collect(),
            ranges: inner.ranges.values().cloned().collect(),
        }
    }

    /// The segments of tombstones and range deletes displaced since the last call (see
    /// `Inner::resurfacing`).
    pub fn take_resurfacing(&self) -> Vec<u32> {
        let mut inner = self.inner.write();
        std::mem::take(&mut inner.resurfacing).into_iter().collect()
    }

    /// Moves `key` from `old` to `new` (same version, a copy) if the index still points at `old`.
    /// Used by relocation (separator, compaction). Returns whether it moved.
    pub fn compare_and_set(&self, key: &[u8], old: Location, new: Location, group: u32) -> bool {
        let mut inner = self.inner.write();
        match inner.locate_mut(key) {
            Some((leaf, i)) if leaf.entries[i].location() == old => {
                leaf.entries[i].set_location(new);
                leaf.entries[i].group = group;
                true
            }
            _ => false,
        }
    }

    /// Removes `key`'s entry if it is still the record at `location` (a tombstone compaction
    /// drops). Returns whether it did.
    pub fn remove_if_at(&self, key: &[u8], location: Location) -> bool {
        let mut inner = self.inner.write();
        if inner.get(key).is_some_and(|e| e.location == location) {
            inner.remove_key(key).is_some()
        } else {
            false
        }
    }

    /// Whether `location` holds the record the index relies on for `key` (a put or tombstone).
    pub fn points_at(&self, key: &[u8], location: Location) -> bool {
        self.inner
            .read()
            .get(key)
            .is_some_and(|e| e.location == location)
    }

    /// Live entries (not tombstones) with keys in `[start, end)` (`end` empty: unbounded),
    /// after `start_after` if given, at most `limit`.
    pub fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Vec<(Vec<u8>, Entry)> {
        let inner = self.inner.read();
        let lower = match start_after {
            Some(after) if after >= start => Bound::Excluded(after),
            _ => Bound::Included(start),
        };
        let mut out = Vec::new();
        if limit == 0 {
            return out;
        }
        let from = match lower {
            Bound::Included(k) | Bound::Excluded(k) => k,
            Bound::Unbounded => start,
        };
        let pending = inner.pending_over(from, end);
        inner.walk(lower, |key, leaf, i| {
            if !end.is_empty() && key >= end {
                return false;
            }
            if !leaf.tombs.get(i) && !inner.hidden(&pending, key, leaf.entries[i].version()) {
                out.push((key.to_vec(), leaf.entry(i)));
            }
            out.len() < limit
        });
        out
    }

    /// How many live entries (not tombstones, not hidden by a pending range delete) have keys
    /// in `[start, end)` (`end` empty: unbounded). A leaf whose whole key span lies inside, and
    /// that no pending range delete meets, is counted from its length and tombstone bitmap
    /// (one visit); only the leaves at the ends, or under a pending range, are walked entry by
    /// entry. So a truncate counts the pages it drops at about a hundredth of a visit each.
    pub fn count_live(&self, start: &[u8], end: &[u8]) -> u64 {
        let inner = self.inner.read();
        if !end.is_empty() && end <= start {
            return 0;
        }
        let pending = inner.pending_over(start, end);
        let mut leaves = inner.leaves_over(start, end).peekable();
        let (mut n, mut visited) = (0u64, 0u64);
        let mut key = Vec::new();
        while let Some((fence, leaf)) = leaves.next() {
            let fence: &[u8] = fence;
            // The leaf's keys lie in [fence, next fence); the next leaf in the span bounds it
            // (none: the span's end does, if it has one).
            let next_fence: Option<&[u8]> = leaves.peek().map(|(f, _)| f.as_ref());
            let inside = fence >= start
                && match next_fence {
                    Some(_) => true,
                    None => end.is_empty(),
                };
            let met = pending.iter().any(|&(ps, pe, _)| {
                next_fence.is_none_or(|nf| ps < nf) && (pe.is_empty() || pe > fence)
            });
            if inside && !met {
                let tombs = (leaf.tombs.get128() & low_mask(leaf.len())).count_ones();
                n += leaf.len() as u64 - u64::from(tombs);
                visited += 1;
                continue;
            }
            for i in 0..leaf.len() {
                leaf.key_into(i, &mut key);
                if key.as_slice() < start {
                    continue;
                }
                if !end.is_empty() && key.as_slice() >= end {
                    break;
                }
                visited += 1;
                if !leaf.tombs.get(i) && !inner.hidden(&pending, &key, leaf.entries[i].version()) {
                    n += 1;
                }
            }
        }
        inner.visits.fetch_add(visited, Ordering::Relaxed);
        n
    }

    /// How many live entries with keys in `[start, end)` (`end` empty: unbounded) point at a
    /// record of exactly `len` bytes. The lengths are compared first, so that only the keys
    /// of entries of that length are built and checked against the span and the pending
    /// range deletes: a walk of the whole store stays a walk of its entries' lengths.
    pub fn count_of_len(&self, start: &[u8], end: &[u8], len: u64) -> u64 {
        let Ok(len) = u32::try_from(len) else {
            return 0;
        };
        let inner = self.inner.read();
        if !end.is_empty() && end <= start {
            return 0;
        }
        let pending = inner.pending_over(start, end);
        let (mut n, mut visited) = (0u64, 0u64);
        let mut key = Vec::new();
        for (_, leaf) in inner.leaves_over(start, end) {
            visited += leaf.len() as u64;
            for (i, packed) in leaf.entries.iter().enumerate() {
                if packed.len != len || leaf.tombs.get(i) {
                    continue;
                }
                leaf.key_into(i, &mut key);
                let inside = key.as_slice() >= start && (end.is_empty() || key.as_slice() < end);
                if inside && !inner.hidden(&pending, &key, packed.version()) {
                    n += 1;
                }
            }
        }
        inner.visits.fetch_add(visited, Ordering::Relaxed);
        n
    }

    /// Point entries looked at so far by lookups and walks (see `Inner::visits`).
    pub fn keys_visited(&self) -> u64 {
        self.inner.read().visits.load(Ordering::Relaxed)
    }

    /// Every point entry and range delete, for recovery checks and relocation.
    pub fn for_each_location(&self, mut f: impl FnMut(Location)) {
        let inner = self.inner.read();
        for leaf in inner.leaves.values() {
            leaf.entries.iter().for_each(|p| f(p.location()));
        }
        inner.ranges.values().for_each(|r| f(r.location));
    }

    pub fn len(&self) -> usize {
        self.inner.read().len
    }

    pub fn range_delete_count(&self) -> usize {
        self.inner.read().ranges.len()
    }

    /// Test support: checks the structure's invariants, returns the number of leaves.
    #[cfg(test)]
    fn check(&self) -> usize {
        self.inner.read().check()
    }
}

impl Inner {
    /// The leaf that holds `key` if anything does (the last fence at or before it).
    fn leaf_for(&self, key: &[u8]) -> Option<&Leaf> {
        self.leaves
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()
            .map(|(_, leaf)| leaf)
    }

    /// The leaves that may hold keys in `[start, end)` (`end` empty: unbounded; else after
    /// `start`, or the map's range panics), with their fences, in key order: the one holding
    /// `start`, then those whose fence lies in the span.
    fn leaves_over<'a>(
        &'a self,
        start: &'a [u8],
        end: &'a [u8],
    ) -> impl Iterator<Item = (&'a Box<[u8]>, &'a Leaf)> + 'a {
        let upper = if end.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Excluded(end)
        };
        let first = self
            .leaves
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(start)))
            .next_back();
        let rest = self
            .leaves
            .range::<[u8], _>((Bound::Excluded(start), upper));
        first.into_iter().chain(rest)
    }

    fn get(&self, key: &[u8]) -> Option<Entry> {
        self.visits.fetch_add(1, Ordering::Relaxed);
        let leaf = self.leaf_for(key)?;
        leaf.find(key).ok().map(|i| leaf.entry(i))
    }

    fn locate_mut(&mut self, key: &[u8]) -> Option<(&mut Leaf, usize)> {
        let (_, leaf) = self
            .leaves
            .range_mut::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()?;
        let i = leaf.find(key).ok()?;
        Some((leaf, i))
    }

    /// Calls `f(key, leaf, index in leaf)` for every point entry from `lower` on, in key order,
    /// until it returns false.
    fn walk(&self, lower: Bound<&[u8]>, mut f: impl FnMut(&[u8], &Leaf, usize) -> bool) {
        let from: &[u8] = match lower {
            Bound::Included(k) | Bound::Excluded(k) => k,
            Bound::Unbounded => &[],
        };
        let first = self.leaf_for(from);
        let rest = self
            .leaves
            .range::<[u8], _>((Bound::Excluded(from), Bound::Unbounded))
            .map(|(_, leaf)| leaf);
        let mut key = Vec::new();
        let mut visited = 0;
        'leaves: for (n, leaf) in first.into_iter().chain(rest).enumerate() {
            let start = if n > 0 {
                0
            } else {
                match (lower, leaf.find(from)) {
                    (Bound::Unbounded, _) => 0,
                    (Bound::Excluded(_), Ok(i)) => i + 1,
                    (_, Ok(i) | Err(i)) => i,
                }
            };
            for i in start..leaf.len() {
                leaf.key_into(i, &mut key);
                visited += 1;
                if !f(&key, leaf, i) {
                    break 'leaves;
                }
            }
        }
        self.visits.fetch_add(visited, Ordering::Relaxed);
    }

    fn put_if_newer(&mut self, key: &[u8], entry: Entry) -> Applied {
        match self.locate_mut(key) {
            Some((leaf, i)) if leaf.entries[i].version() >= entry.version => Applied {
                new_is_live: false,
                displaced: Vec::new(),
            },
            Some((leaf, i)) => {
                let old = leaf.entries[i].location();
                let was_tombstone = leaf.tombs.get(i);
                leaf.entries[i] = Packed::new(&entry);
                leaf.tombs.set(i, entry.tombstone);
                if was_tombstone {
                    self.resurfacing.insert(old.segment);
                }
                Applied {
                    new_is_live: true,
                    displaced: vec![old],
                }
            }
            None => {
                // A put below a range delete that reached the index first (from an earlier
                // buffer it cannot be: buffers are applied in order; but recovery-era ranges
                // and this buffer's own are checked by the caller) is not possible here.
                self.insert_new(key, Packed::new(&entry), entry.tombstone);
                Applied {
                    new_is_live: true,
                    displaced: Vec::new(),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn loc(segment: u32, offset: u32) -> Location {
        Location {
            segment,
            offset,
            len: 10,
        }
    }

    pub(super) fn put(key: &[u8], version: u64, at: Location) -> Update {
        Update::Point {
            key: key.to_vec(),
            entry: Entry {
                location: at,
                version,
                group: 0,
                tombstone: false,
            },
        }
    }

    pub(super) fn entry(version: u64, at: Location, group: u32, tombstone: bool) -> Entry {
        Entry {
            location: at,
            version,
            group,
            tombstone,
        }
    }

    /// splitmix64: a small deterministic generator for the randomized tests.
    pub(super) struct Rng(pub(super) u64);

    impl Rng {
        pub(super) fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        pub(super) fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }
    }

    pub(super) fn fs_key(tag: u8, ino: u64, tail: Option<u64>) -> Vec<u8> {
        let mut k = vec![tag];
        k.extend_from_slice(&ino.to_be_bytes());
        if let Some(t) = tail {
            k.extend_from_slice(&t.to_be_bytes());
        }
        k
    }

    pub(super) fn all_keys(index: &Index) -> Vec<Vec<u8>> {
        let mut keys = Vec::new();
        index.inner.read().walk(Bound::Unbounded, |k, _, _| {
            keys.push(k.to_vec());
            true
        });
        keys
    }

    #[test]
    fn older_version_never_wins_whatever_the_order() {
        let index = Index::default();
        assert!(index.apply(&put(b"k", 5, loc(1, 0)), &[]).new_is_live);
        let late_old = index.apply(&put(b"k", 3, loc(0, 0)), &[]);
        assert!(
            !late_old.new_is_live,
            "a lower version reaching the index later must lose"
        );
        assert_eq!(index.get(b"k").unwrap().location, loc(1, 0));
        let newer = index.apply(&put(b"k", 9, loc(2, 0)), &[]);
        assert_eq!(newer.displaced, vec![loc(1, 0)]);
    }

    #[test]
    fn compare_and_set_moves_only_from_the_expected_location() {
        let index = Index::default();
        index.apply(&put(b"k", 1, loc(0, 0)), &[]);
        assert!(!index.compare_and_set(b"k", loc(9, 9), loc(1, 0), 0));
        assert!(index.compare_and_set(b"k", loc(0, 0), loc(1, 0), 0));
        assert_eq!(index.get(b"k").unwrap().location, loc(1, 0));
        assert_eq!(
            index.get(b"k").unwrap().version,
            1,
            "a copy keeps its version"
        );
    }

    #[test]
    fn scan_skips_tombstones_and_honours_start_after() {
        let index = Index::default();
        for (i, k) in [b"p1", b"p2", b"p3", b"q1"].iter().enumerate() {
            index.apply(&put(*k, i as u64 + 1, loc(0, i as u32 * 10)), &[]);
        }
        index.apply(
            &Update::Point {
                key: b"p2".to_vec(),
                entry: Entry {
                    location: loc(0, 90),
                    version: 9,
                    group: 0,
                    tombstone: true,
                },
            },
            &[],
        );
        let keys: Vec<Vec<u8>> = index
            .scan(b"p", b"q", None, 10)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, vec![b"p1".to_vec(), b"p3".to_vec()]);
        let after: Vec<Vec<u8>> = index
            .scan(b"p", b"q", Some(b"p1"), 10)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(after, vec![b"p3".to_vec()]);
    }

    #[test]
    fn scans_cross_leaf_boundaries() {
        let index = Index::default();
        let keys: Vec<Vec<u8>> = (0..1000u64)
            .map(|i| fs_key(b'C', i / 300, Some(i)))
            .collect();
        for (i, k) in keys.iter().enumerate() {
            let tomb = i % 10 == 3;
            let update = Update::Point {
                key: k.clone(),
                entry: entry(1, loc(0, i as u32), 0, tomb),
            };
            index.apply(&update, &[]);
        }
        let leaves = index.check();
        assert!(leaves > 5);
        let live: Vec<Vec<u8>> = keys
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 10 != 3)
            .map(|(_, k)| k.clone())
            .collect();
        // Pages of every size, each continuing after the last key of the previous one.
        for limit in [1, 7, 64, 127, 128, 129, 1000] {
            let mut got = Vec::new();
            let mut after: Option<Vec<u8>> = None;
            loop {
                let page = index.scan(b"", b"", after.as_deref(), limit);
                assert!(page.len() <= limit);
                let Some((last, _)) = page.last() else { break };
                after = Some(last.clone());
                got.extend(page.into_iter().map(|(k, _)| k));
                assert!(
                    got.len() <= live.len(),
                    "a page repeats keys (limit {limit})"
                );
            }
            assert_eq!(got, live, "limit {limit}");
        }
        // Starting at and after every fence (first key of a leaf) and the keys around it.
        let fences: Vec<Vec<u8>> = index
            .inner
            .read()
            .leaves
            .keys()
            .map(|f| f.to_vec())
            .collect();
        for fence in fences.iter().skip(1) {
            let at = keys.iter().position(|k| k == fence).unwrap();
            for start in &keys[at.saturating_sub(1)..(at + 2).min(keys.len())] {
                let start = start.as_slice();
                let want: Vec<&Vec<u8>> = live
                    .iter()
                    .filter(|k| k.as_slice() >= start)
                    .take(5)
                    .collect();
                let got = index.scan(start, b"", None, 5);
                assert_eq!(got.iter().map(|(k, _)| k).collect::<Vec<_>>(), want);
                let want: Vec<&Vec<u8>> = live
                    .iter()
                    .filter(|k| k.as_slice() > start)
                    .take(5)
                    .collect();
                let got = index.scan(b"", b"", Some(start), 5);
                assert_eq!(got.iter().map(|(k, _)| k).collect::<Vec<_>>(), want);
                // And ending at it.
                let want: Vec<&Vec<u8>> = live.iter().filter(|k| k.as_slice() < start).collect();
                let got = index.scan(b"", start, None, usize::MAX);
                assert_eq!(got.iter().map(|(k, _)| k).collect::<Vec<_>>(), want);
            }
        }
        // Reversed or empty bounds give nothing (and do not panic).
        assert!(index.scan(&keys[500], &keys[400], None, 10).is_empty());
        assert!(index.scan(&keys[500], &keys[500], None, 10).is_empty());
        assert!(index.scan(b"", &keys[600], Some(&keys[700]), 10).is_empty());
        assert!(index.scan(b"", b"", None, 0).is_empty());
    }

    #[test]
    fn prefix_scans_return_exactly_their_prefix() {
        let index = Index::default();
        let mut n = 0u32;
        for ino in [1u64, 2, 255, 256, 257, 65_535, 65_536] {
            for tag in [b'C', b'D', b'I'] {
                let count = if tag == b'C' { 300 } else { 3 };
                for t in 0..count {
                    let key = if tag == b'I' {
                        fs_key(tag, ino, None)
                    } else {
                        fs_key(tag, ino, Some(t * 4096 + t))
                    };
                    index.apply(&put(&key, 1, loc(0, n)), &[]);
                    n += 1;
                }
            }
        }
        index.check();
        for ino in [1u64, 2, 255, 256, 257, 65_535, 65_536] {
            let start = fs_key(b'C', ino, None);
            let end = fs_key(b'C', ino + 1, None);
            let got = index.scan(&start, &end, None, usize::MAX);
            assert_eq!(got.len(), 300, "ino {ino}");
            assert!(got.iter().all(|(k, _)| k.starts_with(&start)));
            assert!(got.windows(2).all(|w| w[0].0 < w[1].0));
            // A prefix one byte long: every key of the tag.
            let got = index.scan(b"I", b"J", None, usize::MAX);
            assert_eq!(got.len(), 7);
        }
        // A scan of a prefix nobody has.
        assert!(index.scan(b"E", b"F", None, 10).is_empty());
        assert!(
            index
                .scan(&fs_key(b'C', 3, None), &fs_key(b'C', 4, None), None, 10)
                .is_empty()
        );
    }

    /// The index's rules, on a plain map.
    #[derive(Default)]
    struct Model {
        points: BTreeMap<Vec<u8>, Entry>,
        ranges: BTreeMap<(Vec<u8>, u64), RangeDelete>,
    }

    impl Model {
        fn apply(&mut self, update: &Update, same: &[RangeDelete]) -> (bool, Vec<Location>) {
            match update {
                Update::Point { key, entry } => {
                    if same
                        .iter()
                        .any(|r| r.version > entry.version && r.covers(key))
                    {
                        return (false, Vec::new());
                    }
                    match self.points.get(key) {
                        Some(old) if old.version >= entry.version => (false, Vec::new()),
                        old => {
                            let displaced = old.map(|o| o.location).into_iter().collect();
                            self.points.insert(key.clone(), *entry);
                            (true, displaced)
                        }
                    }
                }
                Update::Range(r) => {
                    if same.iter().any(|s| s.supersedes(r)) {
                        return (false, Vec::new());
                    }
                    let doomed: Vec<Vec<u8>> = self
                        .points
                        .iter()
                        .filter(|(k, e)| r.covers(k) && e.version < r.version)
                        .map(|(k, _)| k.clone())
                        .collect();
                    let mut displaced: Vec<Location> = doomed
                        .iter()
                        .map(|k| self.points.remove(k).unwrap().location)
                        .collect();
                    let superseded: Vec<(Vec<u8>, u64)> = self
                        .ranges
                        .iter()
                        .filter(|(_, old)| r.supersedes(old))
                        .map(|(k, _)| k.clone())
                        .collect();
                    for k in superseded {
                        displaced.push(self.ranges.remove(&k).unwrap().location);
                    }
                    self.ranges.insert((r.start.clone(), r.version), r.clone());
                    (true, displaced)
                }
            }
        }
        fn scan(
            &self,
            start: &[u8],
            end: &[u8],
            after: Option<&[u8]>,
            limit: usize,
        ) -> Vec<(Vec<u8>, Entry)> {
            self.points
                .iter()
                .filter(|(k, _)| k.as_slice() >= start && (end.is_empty() || k.as_slice() < end))
                .filter(|(k, _)| after.is_none_or(|a| a < start || k.as_slice() > a))
                .filter(|(_, e)| !e.tombstone)
                .take(limit)
                .map(|(k, e)| (k.clone(), *e))
                .collect()
        }
    }

    fn random_key(rng: &mut Rng) -> Vec<u8> {
        match rng.below(20) {
            // Filesystem keys around a few inodes, so that leaves fill, split and empty.
            0..=5 => fs_key(b'C', rng.below(8), Some(rng.below(400))),
            6..=9 => fs_key(b'D', rng.below(6), Some(rng.below(1 << 20) << 20)),
            10..=13 => fs_key(b'I', rng.below(600), None),
            // Short keys, the empty key, and keys that are prefixes of each other.
            14..=17 => (0..rng.below(4))
                .map(|_| b'a' + rng.below(3) as u8)
                .collect(),
            // Long keys sharing long prefixes.
            _ => {
                let mut k = vec![b'X'; 100 + rng.below(3) as usize * 3000];
                k.push(rng.below(10) as u8);
                k
            }
        }
    }

    fn random_range(rng: &mut Rng) -> (Vec<u8>, Vec<u8>) {
        match rng.below(4) {
            0 => {
                let ino = rng.below(8);
                (fs_key(b'C', ino, None), fs_key(b'C', ino + 1, None))
            }
            1 => (
                fs_key(b'I', rng.below(600), None),
                fs_key(b'I', rng.below(600), None),
            ),
            2 => (random_key(rng), Vec::new()),
            _ => {
                let (a, b) = (random_key(rng), random_key(rng));
                if a <= b { (a, b) } else { (b, a) }
            }
        }
    }

    /// Checks that `got` (what the index reported dead) is `want` (what the eager model did)
    /// plus entries the model found dead earlier, under a range delete the index still had
    /// pending (`owed`); what of `want` is not there yet becomes owed. So every record dies
    /// once, in the index as in the model, whenever the index gets to it.
    fn reconcile(got: Vec<Location>, mut want: Vec<Location>, owed: &mut Vec<Location>) -> bool {
        for l in got {
            if let Some(i) = want.iter().position(|w| *w == l) {
                want.swap_remove(i);
            } else if let Some(i) = owed.iter().position(|w| *w == l) {
                owed.swap_remove(i);
            } else {
                return false;
            }
        }
        owed.extend(want);
        true
    }

    /// The index, whose range deletes leave what they cover pending, against a model that
    /// removes it at once: readers (get, scan, count) see the same at every step; removal in
    /// random steps reports each dead record once.
    #[test]
    fn randomized_against_a_btreemap_model() {
        let mut reads_while_pending = 0;
        for seed in 0..60u64 {
            let mut rng = Rng(seed);
            let index = Index::default();
            // Small first steps, so that range deletes of a few keys stay pending too.
            index.inner.write().inline_removal = Some(rng.below(4) as usize * 20);
            let mut model = Model::default();
            let mut owed: Vec<Location> = Vec::new();
            let ops = if seed < 4 { 20_000 } else { 3_000 };
            for op in 0..ops {
                let ctx = || format!("seed {seed} op {op}");
                match rng.below(100) {
                    0..=54 => {
                        let key = random_key(&mut rng);
                        let e = entry(
                            rng.below(1000),
                            loc(rng.below(50) as u32, rng.next() as u32),
                            rng.below(4) as u32,
                            rng.below(5) == 0,
                        );
                        // Never older than a range delete of an earlier buffer that covers it:
                        // buffers reach the index in order (`Index::apply_in_buffer`).
                        if model
                            .ranges
                            .values()
                            .any(|r| r.version > e.version && r.covers(&key))
                        {
                            continue;
                        }
                        let update = Update::Point { key, entry: e };
                        let same = if rng.below(10) == 0 {
                            let (start, end) = random_range(&mut rng);
                            vec![RangeDelete {
                                start,
                                end,
                                version: rng.below(1000),
                                location: loc(0, 0),
                                group: 0,
                            }]
                        } else {
                            Vec::new()
                        };
                        let a = index.apply(&update, &same);
                        let (live, displaced) = model.apply(&update, &same);
                        assert_eq!(a.new_is_live, live, "{}", ctx());
                        assert!(reconcile(a.displaced, displaced, &mut owed), "{}", ctx());
                    }
                    55..=59 => {
                        let (start, end) = random_range(&mut rng);
                        let r = RangeDelete {
                            start,
                            end,
                            version: rng.below(1000),
                            location: loc(rng.below(50) as u32, rng.next() as u32),
                            group: 0,
                        };
                        let same = if rng.below(4) == 0 {
                            let (start, end) = random_range(&mut rng);
                            vec![RangeDelete {
                                start,
                                end,
                                version: rng.below(1000),
                                location: loc(0, 0),
                                group: 0,
                            }]
                        } else {
                            Vec::new()
                        };
                        let update = Update::Range(r);
                        let a = index.apply(&update, &same);
                        let (live, displaced) = model.apply(&update, &same);
                        assert_eq!(a.new_is_live, live, "{}", ctx());
                        assert!(reconcile(a.displaced, displaced, &mut owed), "{}", ctx());
                    }
                    60..=74 => {
                        // Raw operations see the entries pending range deletes hide: settle.
                        assert!(
                            reconcile(index.settle(), Vec::new(), &mut owed),
                            "{}",
                            ctx()
                        );
                        assert!(owed.is_empty(), "{}", ctx());
                        // Remove an existing entry (or miss with a wrong location).
                        let key = random_key(&mut rng);
                        let at = match model.points.get(&key) {
                            Some(e) if rng.below(4) != 0 => e.location,
                            _ => loc(99, 99),
                        };
                        let removed = index.remove_if_at(&key, at);
                        let want = model.points.get(&key).is_some_and(|e| e.location == at);
                        if want {
                            model.points.remove(&key);
                        }
                        assert_eq!(removed, want, "{}", ctx());
                    }
                    75..=79 => {
                        let step = index.remove_pending_step(1 + rng.below(300) as usize);
                        let got = step.unwrap_or_default();
                        assert!(reconcile(got, Vec::new(), &mut owed), "{}", ctx());
                    }
                    80..=84 => {
                        assert!(
                            reconcile(index.settle(), Vec::new(), &mut owed),
                            "{}",
                            ctx()
                        );
                        let key = random_key(&mut rng);
                        let old = match model.points.get(&key) {
                            Some(e) if rng.below(3) != 0 => e.location,
                            _ => loc(98, 98),
                        };
                        let new = loc(rng.below(50) as u32, rng.next() as u32);
                        let group = rng.below(7) as u32;
                        let moved = index.compare_and_set(&key, old, new, group);
                        let want = match model.points.get_mut(&key) {
                            Some(e) if e.location == old => {
                                e.location = new;
                                e.group = group;
                                true
                            }
                            _ => false,
                        };
                        assert_eq!(moved, want, "{}", ctx());
                    }
                    85..=94 => {
                        reads_while_pending += u64::from(index.has_pending());
                        let (start, end) = random_range(&mut rng);
                        let after = match rng.below(3) {
                            0 => Some(random_key(&mut rng)),
                            _ => None,
                        };
                        let limit = [0, 1, 5, 50, 500, usize::MAX][rng.below(6) as usize];
                        if !end.is_empty() && start > end {
                            continue; // The old map panicked here; the new index returns nothing.
                        }
                        let got = index.scan(&start, &end, after.as_deref(), limit);
                        let want = model.scan(&start, &end, after.as_deref(), limit);
                        assert_eq!(got, want, "{}", ctx());
                        let count = model.scan(&start, &end, None, usize::MAX).len() as u64;
                        assert_eq!(index.count_live(&start, &end), count, "{}", ctx());
                    }
                    _ => {
                        let key = random_key(&mut rng);
                        assert_eq!(
                            index.get(&key),
                            model.points.get(&key).copied(),
                            "{}",
                            ctx()
                        );
                        assert!(
                            reconcile(index.settle(), Vec::new(), &mut owed),
                            "{}",
                            ctx()
                        );
                        let at = model.points.get(&key).map_or(loc(0, 0), |e| e.location);
                        assert_eq!(
                            index.points_at(&key, at),
                            model.points.contains_key(&key),
                            "{}",
                            ctx()
                        );
                    }
                }
                if op % 500 == 0 {
                    index.check();
                }
            }
            assert!(
                reconcile(index.settle(), Vec::new(), &mut owed),
                "seed {seed}"
            );
            assert!(
                owed.is_empty(),
                "seed {seed}: every covered entry removed once"
            );
            index.check();
            assert_eq!(index.len(), model.points.len(), "seed {seed}");
            assert_eq!(
                index.range_delete_count(),
                model.ranges.len(),
                "seed {seed}"
            );
            let all: Vec<(Vec<u8>, Entry)> =
                model.points.iter().map(|(k, e)| (k.clone(), *e)).collect();
            let mut got = Vec::new();
            index.inner.read().walk(Bound::Unbounded, |k, leaf, i| {
                got.push((k.to_vec(), leaf.entry(i)));
                true
            });
            assert_eq!(got, all, "seed {seed}");
            let mut locations = Vec::new();
            index.for_each_location(|l| locations.push(l));
            assert_eq!(locations.len(), model.points.len() + model.ranges.len());
        }
        assert!(
            reads_while_pending > 100,
            "scans met pending range deletes {reads_while_pending} times"
        );
    }
}
