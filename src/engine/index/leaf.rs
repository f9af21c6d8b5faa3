//! The packed leaves the index's ordered map is made of: the layout that keeps an entry in
//! about 35 bytes, inserts that split a full leaf, removals that merge or drop small leaves,
//! and recovery's bulk build. The rule it keeps: within a leaf and across the map's fences,
//! keys stay strictly ascending and every key is found where it is (`Inner::check`).
//!
//! One entry per record on disk makes the index the daemon's largest structure, so it is packed:
//! a boxed key per entry in a `BTreeMap` cost about 120 bytes of RSS per entry; this layout costs
//! about a third of that (figures in `benches/index_memory.rs`).
//!
//! ```text
//! leaves: BTreeMap<fence: Box<[u8]>, Leaf>     fence <= every key of the leaf < next fence;
//!                                               the first leaf's fence is empty
//! Leaf (up to LEAF_MAX = 128 entries, sorted):
//!   prefix   Box<[u8]>    bytes every key of the leaf starts with (never longer than their
//!                         common prefix; may be shorter after removals)
//!   ends     Vec<u16>     ends[i]: end of key i's suffix in `arena` (start: ends[i - 1] or 0)
//!   arena    Vec<u8>      the keys' suffixes after `prefix`, back to back (<= ARENA_MAX bytes)
//!   entries  Vec<Packed>  24 bytes each: segment, offset, len, group, version (as two u32s,
//!                         so that the struct has 4-byte alignment and no padding)
//!   tombs    Bits         bit i: entry i is a tombstone (a bitmap, so that no bit of a
//!                         location or version has to be stolen: every u32 and u64 is stored whole)
//! ```
//!
//! Filesystem keys of one inode or directory share their first 9 bytes (tag and inode) and
//! usually more (the high bytes of a page index or of neighbouring inode numbers), so a data-page
//! entry costs about 24 + 2 + 1 to 3 bytes plus its share of the leaf (a few bytes). The vectors
//! grow by an eighth at a time, not by doubling, to keep their slack small.
//!
//! Lookups find the leaf with the last fence <= key in the map, compare the key with the leaf's
//! prefix, then binary-search the suffixes. Inserts into a full leaf split it: at the insertion
//! point when keys arrive in ascending (or descending) runs, as files and inodes are created, so
//! that such leaves end up full; in the middle otherwise. A leaf that falls below a quarter full
//! merges with a neighbour; an empty one is dropped. Recovery builds the leaves directly from
//! its sorted entries, 7/8 full ([`Index::from_recovered`]).

use std::ops::Bound;

use super::super::concurrency::RwLock;
use super::{Entry, Index, Inner, Location, RangeDelete};

/// Most entries in a leaf; also the width of the tombstone bitmap.
pub(super) const LEAF_MAX: usize = 128;
/// Entries per leaf when recovery builds the index: room for a few inserts before a split.
pub(super) const LEAF_BULK_FILL: usize = LEAF_MAX * 7 / 8;
/// A leaf with fewer entries after a removal merges with a neighbour if the two fit in one
/// leaf with room to spare.
pub(super) const LEAF_MERGE_BELOW: usize = LEAF_MAX / 4;
pub(super) const LEAF_MERGE_MAX: usize = LEAF_MAX * 3 / 4;
/// Most suffix bytes in a leaf: `ends` are u16. Keys are at most `MAX_KEY_LEN` (512) bytes from
/// the engine, but the index holds whatever it is given: a leaf of one key keeps the whole key as
/// its prefix (no suffix bytes), so any key fits in some leaf.
pub(super) const ARENA_MAX: usize = 16 * 1024;
const _: () = assert!(ARENA_MAX <= u16::MAX as usize && LEAF_MAX <= 128);

/// An [`Entry`] without its tombstone flag (kept in the leaf's bitmap), 24 bytes, no padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Packed {
    pub(super) segment: u32,
    pub(super) offset: u32,
    pub(super) len: u32,
    pub(super) group: u32,
    pub(super) version_lo: u32,
    pub(super) version_hi: u32,
}

impl Packed {
    pub(super) fn new(e: &Entry) -> Packed {
        Packed {
            segment: e.location.segment,
            offset: e.location.offset,
            len: e.location.len,
            group: e.group,
            version_lo: e.version as u32,
            version_hi: (e.version >> 32) as u32,
        }
    }
    pub(super) fn version(&self) -> u64 {
        u64::from(self.version_hi) << 32 | u64::from(self.version_lo)
    }
    pub(super) fn location(&self) -> Location {
        Location {
            segment: self.segment,
            offset: self.offset,
            len: self.len,
        }
    }
    pub(super) fn set_location(&mut self, l: Location) {
        self.segment = l.segment;
        self.offset = l.offset;
        self.len = l.len;
    }
    pub(super) fn entry(&self, tombstone: bool) -> Entry {
        Entry {
            location: self.location(),
            version: self.version(),
            group: self.group,
            tombstone,
        }
    }
}

/// 128 flags, stored as two u64 so that a leaf keeps 8-byte alignment (a u128 field would pad it
/// to a multiple of 16).
#[derive(Clone, Copy, Default, Debug)]
pub(super) struct Bits([u64; 2]);

pub(super) fn low_mask(i: usize) -> u128 {
    if i >= 128 {
        u128::MAX
    } else {
        (1u128 << i) - 1
    }
}

impl Bits {
    pub(super) fn get128(self) -> u128 {
        u128::from(self.0[0]) | u128::from(self.0[1]) << 64
    }
    pub(super) fn put128(&mut self, v: u128) {
        self.0 = [v as u64, (v >> 64) as u64];
    }
    pub(super) fn get(self, i: usize) -> bool {
        i < 128 && (self.get128() >> i) & 1 == 1
    }
    pub(super) fn set(&mut self, i: usize, v: bool) {
        if i < 128 {
            let t = self.get128() & !(1u128 << i);
            self.put128(t | u128::from(v) << i);
        }
    }
    /// Makes room at `i` (flags at `i..` move up by one; the top flag falls off) and sets it.
    pub(super) fn insert(&mut self, i: usize, v: bool) {
        if i >= 128 {
            return;
        }
        let t = self.get128();
        let low = t & low_mask(i);
        let high = (t & !low_mask(i)) << 1;
        self.put128(low | high | u128::from(v) << i);
    }
    /// Removes the flag at `i` (flags above it move down by one).
    pub(super) fn remove(&mut self, i: usize) {
        let t = self.get128();
        let low = t & low_mask(i);
        let high = if i + 1 >= 128 { 0 } else { (t >> (i + 1)) << i };
        self.put128(low | high);
    }
}

pub(super) fn common_prefix_len(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Common prefix length of the keys `a1 ‖ a2` and `b1 ‖ b2`, without building them.
pub(super) fn common_prefix_len2(a1: &[u8], a2: &[u8], b1: &[u8], b2: &[u8]) -> usize {
    a1.iter()
        .chain(a2)
        .zip(b1.iter().chain(b2))
        .take_while(|(x, y)| x == y)
        .count()
}

/// Makes room for `additional` more elements, growing by an eighth (at least 4) rather than
/// doubling: the index is most of the daemon's memory, and a leaf's vectors stay small enough
/// that the extra copies cost little.
pub(super) fn reserve_step<T>(v: &mut Vec<T>, additional: usize) {
    if v.capacity() - v.len() < additional {
        v.reserve_exact(additional.max(v.len() / 8).max(4));
    }
}

/// Sorted entries sharing `prefix`; see the module documentation.
#[derive(Clone, Debug, Default)]
pub(super) struct Leaf {
    pub(super) prefix: Box<[u8]>,
    pub(super) ends: Vec<u16>,
    pub(super) arena: Vec<u8>,
    pub(super) entries: Vec<Packed>,
    pub(super) tombs: Bits,
    /// Where the last insert went, to see ascending runs (see [`Inner::insert_new`]).
    pub(super) last_insert: u8,
}

impl Leaf {
    pub(super) fn single(key: &[u8], p: Packed, tombstone: bool) -> Leaf {
        let mut tombs = Bits::default();
        tombs.set(0, tombstone);
        Leaf {
            prefix: key.into(),
            ends: vec![0],
            arena: Vec::new(),
            entries: vec![p],
            tombs,
            last_insert: 0,
        }
    }

    /// An empty leaf for keys starting with `prefix`, with room for `n` entries of `arena`
    /// suffix bytes in all.
    pub(super) fn with_capacity(prefix: &[u8], n: usize, arena: usize) -> Leaf {
        Leaf {
            prefix: prefix.into(),
            ends: Vec::with_capacity(n),
            arena: Vec::with_capacity(arena),
            entries: Vec::with_capacity(n),
            tombs: Bits::default(),
            last_insert: 0,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(super) fn start(&self, i: usize) -> usize {
        if i == 0 {
            0
        } else {
            self.ends.get(i - 1).map_or(0, |&e| usize::from(e))
        }
    }

    pub(super) fn suffix(&self, i: usize) -> &[u8] {
        let end = self.ends.get(i).map_or(0, |&e| usize::from(e));
        self.arena.get(self.start(i)..end).unwrap_or(&[])
    }

    pub(super) fn key_into(&self, i: usize, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(self.suffix(i));
    }

    pub(super) fn key(&self, i: usize) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix.len() + self.suffix(i).len());
        self.key_into(i, &mut k);
        k
    }

    pub(super) fn entry(&self, i: usize) -> Entry {
        self.entries[i].entry(self.tombs.get(i))
    }

    /// Where `key` is, or would go (as `slice::binary_search`).
    pub(super) fn find(&self, key: &[u8]) -> Result<usize, usize> {
        let p = &self.prefix[..];
        let m = key.len().min(p.len());
        match key[..m].cmp(&p[..m]) {
            std::cmp::Ordering::Less => return Err(0),
            std::cmp::Ordering::Greater => return Err(self.len()),
            // A proper prefix of the prefix sorts before every key of the leaf.
            std::cmp::Ordering::Equal if key.len() < p.len() => return Err(0),
            std::cmp::Ordering::Equal => {}
        }
        let rest = &key[p.len()..];
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.suffix(mid).cmp(rest) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Ok(mid),
            }
        }
        Err(lo)
    }

    /// Suffix bytes the leaf would hold with a prefix of `plen` bytes (every key is at least
    /// that long).
    pub(super) fn arena_with_prefix(&self, plen: usize) -> usize {
        (self.arena.len() + self.len() * self.prefix.len()).saturating_sub(self.len() * plen)
    }

    /// Inserts `key` (not in the leaf) at `pos`, if the leaf has room for it.
    pub(super) fn try_insert(
        &mut self,
        pos: usize,
        key: &[u8],
        p: Packed,
        tombstone: bool,
    ) -> bool {
        let n = self.len();
        if n == 0 {
            *self = Leaf::single(key, p, tombstone);
            return true;
        }
        if n >= LEAF_MAX || pos > n {
            return false;
        }
        let plen = common_prefix_len(&self.prefix, key);
        if self.arena_with_prefix(plen) + (key.len() - plen) > ARENA_MAX {
            return false;
        }
        if plen < self.prefix.len() {
            self.shorten_prefix(plen);
        }
        let suffix = &key[plen..];
        let at = self.start(pos);
        reserve_step(&mut self.arena, suffix.len());
        self.arena.extend_from_slice(suffix);
        self.arena[at..].rotate_right(suffix.len());
        let grow = suffix.len() as u16; // <= ARENA_MAX, checked above
        reserve_step(&mut self.ends, 1);
        self.ends.insert(pos, at as u16 + grow);
        for e in &mut self.ends[pos + 1..] {
            *e += grow;
        }
        reserve_step(&mut self.entries, 1);
        self.entries.insert(pos, p);
        self.tombs.insert(pos, tombstone);
        self.last_insert = pos as u8;
        true
    }

    /// Rewrites the suffixes for a shorter prefix (a key outside the old prefix arrived).
    pub(super) fn shorten_prefix(&mut self, plen: usize) {
        let moved = &self.prefix[plen..];
        let mut arena = Vec::with_capacity(self.arena_with_prefix(plen) + 4);
        let mut ends = Vec::with_capacity(self.ends.capacity());
        for i in 0..self.len() {
            arena.extend_from_slice(moved);
            arena.extend_from_slice(self.suffix(i));
            ends.push(arena.len() as u16);
        }
        self.arena = arena;
        self.ends = ends;
        self.prefix = self.prefix[..plen].into();
    }

    pub(super) fn remove(&mut self, pos: usize) {
        if pos >= self.len() {
            return;
        }
        let (start, end) = (self.start(pos), usize::from(self.ends[pos]));
        self.arena.drain(start..end);
        let shrink = (end - start) as u16;
        self.ends.remove(pos);
        for e in &mut self.ends[pos..] {
            *e -= shrink;
        }
        self.entries.remove(pos);
        self.tombs.remove(pos);
        // After many removals, give the slack back (merges rebuild small leaves anyway).
        let n = self.len();
        if self.entries.capacity() > 2 * n + 8 {
            self.entries.shrink_to(n + n / 8);
            self.ends.shrink_to(n + n / 8);
            self.arena
                .shrink_to(self.arena.len() + self.arena.len() / 8);
        }
    }

    /// A new leaf of the entries at `keep` (ascending), with this leaf's prefix and exact
    /// capacities; an empty one if `keep` is.
    pub(super) fn kept(&self, keep: &[usize]) -> Leaf {
        if keep.is_empty() {
            return Leaf::default();
        }
        let arena = keep.iter().map(|&i| self.suffix(i).len()).sum();
        let mut leaf = Leaf::with_capacity(&self.prefix, keep.len(), arena);
        for &i in keep {
            leaf.push(
                &self.prefix,
                self.suffix(i),
                self.entries[i],
                self.tombs.get(i),
            );
        }
        leaf
    }

    /// A new leaf of this leaf's entries `from..to` (not empty), with their longest common
    /// prefix and exact capacities.
    pub(super) fn slice(&self, from: usize, to: usize) -> Leaf {
        let extra = common_prefix_len(self.suffix(from), self.suffix(to - 1));
        let mut prefix = self.prefix.to_vec();
        prefix.extend_from_slice(&self.suffix(from)[..extra]);
        let arena = usize::from(self.ends[to - 1]) - self.start(from) - extra * (to - from);
        let mut leaf = Leaf::with_capacity(&prefix, to - from, arena);
        for i in from..to {
            leaf.push(
                &self.prefix,
                self.suffix(i),
                self.entries[i],
                self.tombs.get(i),
            );
        }
        leaf
    }

    /// Appends the key `head ‖ tail` (which sorts after every key of the leaf and starts with
    /// its prefix). Used to build leaves; the caller keeps the arena within `ARENA_MAX`.
    pub(super) fn push(&mut self, head: &[u8], tail: &[u8], p: Packed, tombstone: bool) {
        let plen = self.prefix.len();
        if plen <= head.len() {
            self.arena.extend_from_slice(&head[plen..]);
            self.arena.extend_from_slice(tail);
        } else {
            self.arena
                .extend_from_slice(tail.get(plen - head.len()..).unwrap_or(&[]));
        }
        let i = self.len();
        self.ends.push(self.arena.len() as u16);
        self.entries.push(p);
        self.tombs.set(i, tombstone);
    }

    /// `self` and `next` (whose keys all sort after this leaf's) as one leaf, if it would fit.
    pub(super) fn merged(&self, next: &Leaf) -> Option<Leaf> {
        let (a, b) = (self.len(), next.len());
        if a == 0 || b == 0 || a + b > LEAF_MERGE_MAX {
            return None;
        }
        let plen = common_prefix_len2(
            &self.prefix,
            self.suffix(0),
            &next.prefix,
            next.suffix(b - 1),
        );
        let arena = self.arena_with_prefix(plen) + next.arena_with_prefix(plen);
        if arena > ARENA_MAX {
            return None;
        }
        let mut prefix = self.prefix.to_vec();
        prefix.extend_from_slice(self.suffix(0));
        prefix.truncate(plen);
        let mut leaf = Leaf::with_capacity(&prefix, a + b, arena);
        for i in 0..a {
            leaf.push(
                &self.prefix,
                self.suffix(i),
                self.entries[i],
                self.tombs.get(i),
            );
        }
        for i in 0..b {
            leaf.push(
                &next.prefix,
                next.suffix(i),
                next.entries[i],
                next.tombs.get(i),
            );
        }
        Some(leaf)
    }
}

/// Sorted entries in flat vectors: the first pass of [`Index::from_recovered`].
pub(super) struct Flat {
    pub(super) keys: Vec<u8>,
    /// `ends[i]`: end of key `i` in `keys`.
    pub(super) ends: Vec<usize>,
    pub(super) entries: Vec<Packed>,
    pub(super) tombs: Vec<bool>,
}

impl Flat {
    pub(super) fn with_capacity(n: usize) -> Flat {
        Flat {
            // Keys of 17 bytes are the most common (data pages, directory entries).
            keys: Vec::with_capacity(n * 17),
            ends: Vec::with_capacity(n),
            entries: Vec::with_capacity(n),
            tombs: Vec::with_capacity(n),
        }
    }
    pub(super) fn len(&self) -> usize {
        self.ends.len()
    }
    pub(super) fn key(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.keys[start..self.ends[i]]
    }
    pub(super) fn last_key(&self) -> Option<&[u8]> {
        self.len().checked_sub(1).map(|i| self.key(i))
    }
    pub(super) fn push(&mut self, key: &[u8], e: &Entry) {
        self.keys.extend_from_slice(key);
        self.ends.push(self.keys.len());
        self.entries.push(Packed::new(e));
        self.tombs.push(e.tombstone);
    }
}

impl Index {
    /// Builds an index from recovered entries in one go (no version conflicts left to resolve),
    /// given in ascending key order (a `BTreeMap` is): leaves are built directly, 7/8 full.
    /// Entries out of order are not lost: they are applied one by one afterwards, the highest
    /// version winning.
    pub fn from_recovered(
        points: impl IntoIterator<Item = (Box<[u8]>, Entry)>,
        ranges: Vec<RangeDelete>,
    ) -> Index {
        // Two passes: the input is first copied into a few large flat vectors, which frees the
        // input map as it goes; the leaves are then built into the freed, now contiguous, memory.
        // Built while the input still lived, their small allocations (prefixes, fences, ends)
        // would land in the holes of its freed keys and nodes all over the heap, and pin those
        // pages: ~75 B of RSS per entry after a 1M-entry build, against ~35 B this way.
        let points = points.into_iter();
        let mut flat = Flat::with_capacity(points.size_hint().0);
        let mut stragglers = Vec::new();
        for (key, entry) in points {
            if flat.last_key().is_some_and(|last| *key <= *last) {
                stragglers.push((key, entry));
            } else {
                flat.push(&key, &entry);
            }
        }
        let mut inner = Inner::default();
        let (mut from, mut bytes) = (0, 0);
        for i in 0..flat.len() {
            let len = flat.key(i).len();
            if i > from && (i - from >= LEAF_BULK_FILL || bytes + len > ARENA_MAX) {
                inner.push_leaf(&flat, from, i);
                (from, bytes) = (i, 0);
            }
            bytes += len;
        }
        if from < flat.len() {
            inner.push_leaf(&flat, from, flat.len());
        }
        drop(flat);
        for (key, entry) in stragglers {
            inner.put_if_newer(&key, entry);
        }
        inner.ranges = ranges
            .into_iter()
            .map(|r| ((r.start.clone().into_boxed_slice(), r.version), r))
            .collect();
        Index {
            inner: RwLock::new(inner),
        }
    }
}

impl Inner {
    /// Inserts `key`, which is not in the index.
    pub(super) fn insert_new(&mut self, key: &[u8], p: Packed, tombstone: bool) {
        self.len += 1;
        loop {
            let Some((_, leaf)) = self
                .leaves
                .range_mut::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
                .next_back()
            else {
                // No leaf yet (the first leaf's fence is empty, so no key sorts before it).
                self.leaves
                    .insert(Box::default(), Leaf::single(key, p, tombstone));
                return;
            };
            let pos = match leaf.find(key) {
                Ok(i) => {
                    // Not reached (the caller looked), but an overwrite keeps the map sound.
                    self.len -= 1;
                    leaf.entries[i] = p;
                    leaf.tombs.set(i, tombstone);
                    return;
                }
                Err(i) => i,
            };
            if leaf.try_insert(pos, key, p, tombstone) {
                return;
            }
            // The leaf is full (entries or suffix bytes).
            let n = leaf.len();
            if pos >= n {
                // After every key of the leaf, before the next fence: a leaf of its own. Keys
                // arriving in ascending order fill this new leaf next, and leave the full one
                // full.
                self.leaves
                    .insert(key.into(), Leaf::single(key, p, tombstone));
                return;
            }
            if pos == 0 {
                // Before every key of the leaf, at or after its fence (descending runs): the key
                // takes the leaf's place, the old leaf moves under its first key.
                let old = std::mem::replace(leaf, Leaf::single(key, p, tombstone));
                self.leaves.insert(old.key(0).into_boxed_slice(), old);
                return;
            }
            // Split, then try again. An insert right after the previous one (an ascending run
            // between two keys of the leaf, e.g. new inodes before the next tag's keys) splits
            // there, so that the left part fills up; others split in the middle.
            let at = if usize::from(leaf.last_insert) + 1 == pos {
                pos
            } else {
                n / 2
            };
            let right = leaf.slice(at, n);
            let left = leaf.slice(0, at);
            *leaf = left;
            self.leaves.insert(right.key(0).into_boxed_slice(), right);
        }
    }

    /// Removes `key`'s entry, merging or dropping its leaf if it became small or empty.
    pub(super) fn remove_key(&mut self, key: &[u8]) -> Option<Entry> {
        let (fence, leaf) = self
            .leaves
            .range_mut::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()?;
        let i = leaf.find(key).ok()?;
        let entry = leaf.entry(i);
        leaf.remove(i);
        self.len -= 1;
        if leaf.len() < LEAF_MERGE_BELOW {
            let fence = fence.clone();
            self.rebalance(&fence);
        }
        Some(entry)
    }

    /// Drops the leaf at `fence` if empty, or merges it with a neighbour if both fit in one.
    pub(super) fn rebalance(&mut self, fence: &[u8]) {
        let Some(leaf) = self.leaves.get(fence) else {
            return;
        };
        if leaf.len() == 0 {
            self.leaves.remove(fence);
            if fence.is_empty() {
                // The first leaf's fence must stay empty: every key sorts at or after it.
                if let Some((_, next)) = self.leaves.pop_first() {
                    self.leaves.insert(Box::default(), next);
                }
            }
            return;
        }
        let next = self
            .leaves
            .range::<[u8], _>((Bound::Excluded(fence), Bound::Unbounded))
            .next();
        if let Some((next_fence, next)) = next
            && let Some(merged) = leaf.merged(next)
        {
            let next_fence = next_fence.clone();
            self.leaves.remove(&next_fence);
            if let Some(slot) = self.leaves.get_mut(fence) {
                *slot = merged;
            }
            return;
        }
        let prev = self
            .leaves
            .range::<[u8], _>((Bound::Unbounded, Bound::Excluded(fence)))
            .next_back();
        if let Some((prev_fence, prev)) = prev
            && let Some(merged) = prev.merged(leaf)
        {
            let prev_fence = prev_fence.clone();
            self.leaves.remove(fence);
            if let Some(slot) = self.leaves.get_mut(&prev_fence) {
                *slot = merged;
            }
        }
    }

    /// Appends a leaf of entries `from..to` of `flat` (not empty, after every key in the index,
    /// suffix bytes within `ARENA_MAX`). Recovery's bulk build.
    pub(super) fn push_leaf(&mut self, flat: &Flat, from: usize, to: usize) {
        if from >= to {
            return;
        }
        let (first, last) = (flat.key(from), flat.key(to - 1));
        let plen = common_prefix_len(first, last);
        let arena = (from..to).map(|i| flat.key(i).len() - plen).sum();
        let mut leaf = Leaf::with_capacity(&first[..plen], to - from, arena);
        for i in from..to {
            leaf.push(flat.key(i), &[], flat.entries[i], flat.tombs[i]);
        }
        let fence = if self.leaves.is_empty() {
            Box::default()
        } else {
            first.into()
        };
        self.len += to - from;
        self.leaves.insert(fence, leaf);
    }

    #[cfg(test)]
    pub(super) fn check(&self) -> usize {
        let mut prev: Option<Vec<u8>> = None;
        let mut count = 0;
        let fences: Vec<&Box<[u8]>> = self.leaves.keys().collect();
        if let Some(first) = fences.first() {
            assert!(first.is_empty(), "the first leaf's fence is empty");
        }
        for (n, (fence, leaf)) in self.leaves.iter().enumerate() {
            assert!(leaf.len() > 0, "no empty leaf stays");
            assert!(leaf.len() <= LEAF_MAX);
            assert!(leaf.arena.len() <= ARENA_MAX);
            assert_eq!(leaf.ends.len(), leaf.len());
            assert_eq!(usize::from(leaf.ends[leaf.len() - 1]), leaf.arena.len());
            for i in 0..leaf.len() {
                assert!(leaf.start(i) <= usize::from(leaf.ends[i]), "ends ascend");
                let key = leaf.key(i);
                assert!(key.as_slice() >= &fence[..], "key at or after its fence");
                if let Some(next) = fences.get(n + 1) {
                    assert!(key.as_slice() < &next[..], "key before the next fence");
                }
                if let Some(p) = &prev {
                    assert!(key > *p, "keys strictly ascending");
                }
                assert_eq!(leaf.find(&key), Ok(i), "every key is found where it is");
                prev = Some(key);
            }
            for i in leaf.len()..128 {
                assert!(!leaf.tombs.get(i), "no tombstone flag past the end");
            }
            count += leaf.len();
        }
        assert_eq!(count, self.len, "len counts the entries");
        self.leaves.len()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::tests::{Rng, all_keys, entry, fs_key, loc, put};
    use super::*;

    #[test]
    fn leaves_split_when_full_and_every_key_stays_found() {
        // Ascending: the full leaf stays full, the next key starts a leaf of its own.
        let index = Index::default();
        for i in 0..LEAF_MAX as u64 {
            index.apply(&put(&fs_key(b'C', 7, Some(i)), 1, loc(0, i as u32)), &[]);
        }
        assert_eq!(index.check(), 1, "{LEAF_MAX} entries fit in one leaf");
        index.apply(&put(&fs_key(b'C', 7, Some(1000)), 1, loc(0, 1000)), &[]);
        assert_eq!(index.check(), 2, "one more splits it");
        {
            let inner = index.inner.read();
            let sizes: Vec<usize> = inner.leaves.values().map(Leaf::len).collect();
            assert_eq!(
                sizes,
                vec![LEAF_MAX, 1],
                "an ascending run leaves full leaves"
            );
        }
        // Descending into a full leaf: the key takes the leaf's place.
        let index = Index::default();
        for i in (0..=LEAF_MAX as u64).rev() {
            index.apply(&put(&fs_key(b'C', 7, Some(i)), 1, loc(0, i as u32)), &[]);
        }
        assert_eq!(index.check(), 2);
        // Random order, many splits: every key is found with its own entry.
        let index = Index::default();
        let mut rng = Rng(3);
        let mut keys: Vec<u64> = (0..5000).collect();
        for i in (1..keys.len()).rev() {
            keys.swap(i, rng.below(i as u64 + 1) as usize);
        }
        for &k in &keys {
            index.apply(
                &put(&fs_key(b'D', k % 13, Some(k)), k, loc(1, k as u32)),
                &[],
            );
        }
        let leaves = index.check();
        assert!(leaves >= 5000 / LEAF_MAX, "{leaves} leaves");
        for &k in &keys {
            let e = index.get(&fs_key(b'D', k % 13, Some(k))).expect("found");
            assert_eq!((e.version, e.location), (k, loc(1, k as u32)));
        }
        assert!(index.get(&fs_key(b'D', 0, Some(1))).is_none());
        assert_eq!(index.len(), 5000);
    }

    #[test]
    fn split_in_the_middle_of_a_run_keeps_the_run_together() {
        // Keys appended between two groups of keys (new inodes before the next tag) split the
        // leaf where they arrive: the leaves they fill end up full.
        let index = Index::default();
        index.apply(&put(b"Z", 1, loc(0, 0)), &[]);
        for i in 0..(4 * LEAF_MAX) as u64 {
            index.apply(&put(&fs_key(b'I', i, None), 1, loc(0, i as u32)), &[]);
        }
        index.check();
        let inner = index.inner.read();
        let sizes: Vec<usize> = inner.leaves.values().map(Leaf::len).collect();
        let full = sizes.iter().filter(|&&n| n == LEAF_MAX).count();
        assert!(full >= 3, "leaves {sizes:?}");
    }

    #[test]
    fn removals_that_empty_the_first_leaf_keep_every_key_reachable() {
        let index = Index::default();
        for i in 0..1000u64 {
            index.apply(&put(&fs_key(b'I', i, None), 1, loc(0, i as u32)), &[]);
        }
        for i in 0..1000u64 {
            assert!(index.remove_if_at(&fs_key(b'I', i, None), loc(0, i as u32)));
            if i % 50 == 0 {
                index.check();
            }
            // The smallest remaining key and a key before everything.
            if i + 1 < 1000 {
                assert!(index.get(&fs_key(b'I', i + 1, None)).is_some());
            }
            assert!(index.get(b"A").is_none());
        }
        assert_eq!(index.check(), 0);
        // Removing from the back merges the shrinking last leaves into their neighbours.
        for i in 0..1000u64 {
            index.apply(&put(&fs_key(b'I', i, None), 1, loc(0, i as u32)), &[]);
        }
        for i in (100..1000u64).rev() {
            assert!(index.remove_if_at(&fs_key(b'I', i, None), loc(0, i as u32)));
        }
        assert_eq!(index.check(), 1, "100 entries end up in one leaf");
        assert!(
            !index.remove_if_at(&fs_key(b'I', 5, None), loc(0, 6)),
            "wrong location"
        );
    }

    #[test]
    fn keys_of_any_length_fit() {
        // Far beyond MAX_KEY_LEN: a leaf's suffix bytes are bounded, so such keys get leaves of
        // their own rather than overflowing the u16 offsets.
        let index = Index::default();
        let mut keys = Vec::new();
        for (i, len) in [0usize, 1, 40_000, 70_000, 9_000, 16_384, 16_385, 65_535, 3]
            .iter()
            .enumerate()
        {
            for j in 0..4u8 {
                let mut k = vec![b'k'; *len];
                k.push(j);
                keys.push(k.clone());
                index.apply(&put(&k, 1, loc(i as u32, j.into())), &[]);
                index.check();
            }
            let mut k = vec![b'j'; *len];
            k.push(b'x');
            keys.push(k.clone());
            index.apply(&put(&k, 1, loc(i as u32, 9)), &[]);
            index.check();
        }
        keys.sort();
        keys.dedup();
        for k in &keys {
            assert!(index.get(k).is_some());
        }
        let got: Vec<Vec<u8>> = index
            .scan(b"", b"", None, usize::MAX)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(got, keys);
        assert_eq!(all_keys(&index), keys);
        let bulk = Index::from_recovered(
            keys.iter()
                .map(|k| (k.clone().into_boxed_slice(), entry(1, loc(0, 0), 0, false))),
            Vec::new(),
        );
        bulk.check();
        assert_eq!(all_keys(&bulk), keys);
    }

    #[test]
    fn bulk_build_gives_the_same_index_as_inserts() {
        let mut rng = Rng(11);
        let mut model: BTreeMap<Box<[u8]>, Entry> = BTreeMap::new();
        for i in 0..20_000u64 {
            let key = match rng.below(3) {
                0 => fs_key(b'I', rng.below(5000), None),
                1 => fs_key(b'D', rng.below(40), Some(rng.next() >> 8)),
                _ => fs_key(b'C', rng.below(200), Some(rng.below(300))),
            };
            let e = entry(i, loc(i as u32 / 100, i as u32), (i % 5) as u32, i % 9 == 0);
            model.insert(key.into_boxed_slice(), e);
        }
        let index = Index::from_recovered(model.clone(), Vec::new());
        let leaves = index.check();
        assert!(leaves <= model.len() / LEAF_BULK_FILL + 1);
        assert_eq!(index.len(), model.len());
        for (k, e) in &model {
            assert_eq!(index.get(k), Some(*e));
        }
        let live: Vec<(Vec<u8>, Entry)> = model
            .iter()
            .filter(|(_, e)| !e.tombstone)
            .map(|(k, e)| (k.to_vec(), *e))
            .collect();
        assert_eq!(index.scan(b"", b"", None, usize::MAX), live);
        // Out of order and repeated keys (not what recovery gives): nothing lost, highest
        // version wins.
        let mut shuffled: Vec<(Box<[u8]>, Entry)> = model.clone().into_iter().collect();
        for i in (1..shuffled.len()).rev() {
            shuffled.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let (k0, e0) = shuffled[0].clone();
        shuffled.push((k0.clone(), entry(e0.version + 1, loc(77, 7), 0, false)));
        shuffled.push((k0.clone(), entry(0, loc(66, 6), 0, false)));
        let index = Index::from_recovered(shuffled, Vec::new());
        index.check();
        assert_eq!(index.len(), model.len());
        assert_eq!(index.get(&k0).unwrap().location, loc(77, 7));
        for (k, e) in model.iter().filter(|(k, _)| **k != k0) {
            assert_eq!(index.get(k), Some(*e));
        }
    }
}
