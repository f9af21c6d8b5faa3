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
//! # In-memory layout (issue 7: memory per entry)
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
use std::collections::BTreeMap;
use std::ops::Bound;

use super::concurrency::{AtomicU64, Mutex, Ordering, RwLock};

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

/// Most entries in a leaf; also the width of the tombstone bitmap.
const LEAF_MAX: usize = 128;
/// Entries per leaf when recovery builds the index: room for a few inserts before a split.
const LEAF_BULK_FILL: usize = LEAF_MAX * 7 / 8;
/// A leaf with fewer entries after a removal merges with a neighbour if the two fit in one
/// leaf with room to spare.
const LEAF_MERGE_BELOW: usize = LEAF_MAX / 4;
const LEAF_MERGE_MAX: usize = LEAF_MAX * 3 / 4;
/// Most suffix bytes in a leaf: `ends` are u16. Keys are at most `MAX_KEY_LEN` (512) bytes from
/// the engine, but the index holds whatever it is given: a leaf of one key keeps the whole key as
/// its prefix (no suffix bytes), so any key fits in some leaf.
const ARENA_MAX: usize = 16 * 1024;
const _: () = assert!(ARENA_MAX <= u16::MAX as usize && LEAF_MAX <= 128);

/// An [`Entry`] without its tombstone flag (kept in the leaf's bitmap), 24 bytes, no padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Packed {
    segment: u32,
    offset: u32,
    len: u32,
    group: u32,
    version_lo: u32,
    version_hi: u32,
}

impl Packed {
    fn new(e: &Entry) -> Packed {
        Packed {
            segment: e.location.segment,
            offset: e.location.offset,
            len: e.location.len,
            group: e.group,
            version_lo: e.version as u32,
            version_hi: (e.version >> 32) as u32,
        }
    }
    fn version(&self) -> u64 {
        u64::from(self.version_hi) << 32 | u64::from(self.version_lo)
    }
    fn location(&self) -> Location {
        Location {
            segment: self.segment,
            offset: self.offset,
            len: self.len,
        }
    }
    fn set_location(&mut self, l: Location) {
        self.segment = l.segment;
        self.offset = l.offset;
        self.len = l.len;
    }
    fn entry(&self, tombstone: bool) -> Entry {
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
struct Bits([u64; 2]);

fn low_mask(i: usize) -> u128 {
    if i >= 128 {
        u128::MAX
    } else {
        (1u128 << i) - 1
    }
}

impl Bits {
    fn get128(self) -> u128 {
        u128::from(self.0[0]) | u128::from(self.0[1]) << 64
    }
    fn put128(&mut self, v: u128) {
        self.0 = [v as u64, (v >> 64) as u64];
    }
    fn get(self, i: usize) -> bool {
        i < 128 && (self.get128() >> i) & 1 == 1
    }
    fn set(&mut self, i: usize, v: bool) {
        if i < 128 {
            let t = self.get128() & !(1u128 << i);
            self.put128(t | u128::from(v) << i);
        }
    }
    /// Makes room at `i` (flags at `i..` move up by one; the top flag falls off) and sets it.
    fn insert(&mut self, i: usize, v: bool) {
        if i >= 128 {
            return;
        }
        let t = self.get128();
        let low = t & low_mask(i);
        let high = (t & !low_mask(i)) << 1;
        self.put128(low | high | u128::from(v) << i);
    }
    /// Removes the flag at `i` (flags above it move down by one).
    fn remove(&mut self, i: usize) {
        let t = self.get128();
        let low = t & low_mask(i);
        let high = if i + 1 >= 128 { 0 } else { (t >> (i + 1)) << i };
        self.put128(low | high);
    }
}

fn common_prefix_len(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Common prefix length of the keys `a1 ‖ a2` and `b1 ‖ b2`, without building them.
fn common_prefix_len2(a1: &[u8], a2: &[u8], b1: &[u8], b2: &[u8]) -> usize {
    a1.iter()
        .chain(a2)
        .zip(b1.iter().chain(b2))
        .take_while(|(x, y)| x == y)
        .count()
}

/// Makes room for `additional` more elements, growing by an eighth (at least 4) rather than
/// doubling: the index is most of the daemon's memory, and a leaf's vectors stay small enough
/// that the extra copies cost little.
fn reserve_step<T>(v: &mut Vec<T>, additional: usize) {
    if v.capacity() - v.len() < additional {
        v.reserve_exact(additional.max(v.len() / 8).max(4));
    }
}

/// What glibc's malloc takes for a request of `n` bytes (16-byte chunks, 8 bytes of header,
/// 32 bytes at least); 0 for no allocation.
fn malloc_bytes(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        ((n + 8 + 15) & !15).max(32)
    }
}

/// Sorted entries sharing `prefix`; see the module documentation.
#[derive(Debug, Default)]
struct Leaf {
    prefix: Box<[u8]>,
    ends: Vec<u16>,
    arena: Vec<u8>,
    entries: Vec<Packed>,
    tombs: Bits,
    /// Where the last insert went, to see ascending runs (see [`Inner::insert_new`]).
    last_insert: u8,
}

impl Leaf {
    fn single(key: &[u8], p: Packed, tombstone: bool) -> Leaf {
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
    fn with_capacity(prefix: &[u8], n: usize, arena: usize) -> Leaf {
        Leaf {
            prefix: prefix.into(),
            ends: Vec::with_capacity(n),
            arena: Vec::with_capacity(arena),
            entries: Vec::with_capacity(n),
            tombs: Bits::default(),
            last_insert: 0,
        }
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn start(&self, i: usize) -> usize {
        if i == 0 {
            0
        } else {
            self.ends.get(i - 1).map_or(0, |&e| usize::from(e))
        }
    }

    fn suffix(&self, i: usize) -> &[u8] {
        let end = self.ends.get(i).map_or(0, |&e| usize::from(e));
        self.arena.get(self.start(i)..end).unwrap_or(&[])
    }

    fn key_into(&self, i: usize, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(self.suffix(i));
    }

    fn key(&self, i: usize) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix.len() + self.suffix(i).len());
        self.key_into(i, &mut k);
        k
    }

    fn entry(&self, i: usize) -> Entry {
        self.entries[i].entry(self.tombs.get(i))
    }

    /// Where `key` is, or would go (as `slice::binary_search`).
    fn find(&self, key: &[u8]) -> Result<usize, usize> {
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
    fn arena_with_prefix(&self, plen: usize) -> usize {
        (self.arena.len() + self.len() * self.prefix.len()).saturating_sub(self.len() * plen)
    }

    /// Inserts `key` (not in the leaf) at `pos`, if the leaf has room for it.
    fn try_insert(&mut self, pos: usize, key: &[u8], p: Packed, tombstone: bool) -> bool {
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
    fn shorten_prefix(&mut self, plen: usize) {
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

    fn remove(&mut self, pos: usize) {
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
    fn kept(&self, keep: &[usize]) -> Leaf {
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
    fn slice(&self, from: usize, to: usize) -> Leaf {
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
    fn push(&mut self, head: &[u8], tail: &[u8], p: Packed, tombstone: bool) {
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
    fn merged(&self, next: &Leaf) -> Option<Leaf> {
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

    /// Heap bytes of the leaf's allocations, as malloc counts them.
    fn heap_bytes(&self) -> usize {
        malloc_bytes(self.prefix.len())
            + malloc_bytes(self.ends.capacity() * std::mem::size_of::<u16>())
            + malloc_bytes(self.arena.capacity())
            + malloc_bytes(self.entries.capacity() * std::mem::size_of::<Packed>())
    }
}

/// Sorted entries in flat vectors: the first pass of [`Index::from_recovered`].
struct Flat {
    keys: Vec<u8>,
    /// `ends[i]`: end of key `i` in `keys`.
    ends: Vec<usize>,
    entries: Vec<Packed>,
    tombs: Vec<bool>,
}

impl Flat {
    fn with_capacity(n: usize) -> Flat {
        Flat {
            // Keys of 17 bytes are the most common (data pages, directory entries).
            keys: Vec::with_capacity(n * 17),
            ends: Vec::with_capacity(n),
            entries: Vec::with_capacity(n),
            tombs: Vec::with_capacity(n),
        }
    }
    fn len(&self) -> usize {
        self.ends.len()
    }
    fn key(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.keys[start..self.ends[i]]
    }
    fn last_key(&self) -> Option<&[u8]> {
        self.len().checked_sub(1).map(|i| self.key(i))
    }
    fn push(&mut self, key: &[u8], e: &Entry) {
        self.keys.extend_from_slice(key);
        self.ends.push(self.keys.len());
        self.entries.push(Packed::new(e));
        self.tombs.push(e.tombstone);
    }
}

/// Heap bytes of one leaf's slot in the map of leaves besides the leaf's own allocations: fence
/// box and leaf in a B-tree node at its typical two-thirds fill, plus node headers.
const LEAF_SLOT_BYTES: usize =
    (std::mem::size_of::<Box<[u8]>>() + std::mem::size_of::<Leaf>()) * 3 / 2 + 8;

/// Heap bytes of one range delete's slot in the map of range deletes besides its key and bound
/// allocations: as [`LEAF_SLOT_BYTES`], key and value in a B-tree node at two-thirds fill.
const RANGE_SLOT_BYTES: usize =
    (std::mem::size_of::<(Box<[u8]>, u64)>() + std::mem::size_of::<RangeDelete>()) * 3 / 2 + 8;

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
}

/// What a pending range delete has left to remove: the older entries in `[resume, end)`.
#[derive(Debug)]
struct Pending {
    /// Exclusive; empty: unbounded.
    end: Vec<u8>,
    resume: Vec<u8>,
}

/// Entries a range delete's first removal step may look at, on the request path that applies it
/// (whole leaves: a step stops at the first leaf boundary past it). A range delete covering no
/// more (a small file's truncate or unlink) is done at once and never pending.
pub const INLINE_REMOVAL_ENTRIES: usize = 256;

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
    /// `log.rs`): a put may come after a range delete of the same buffer with a higher version
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

    /// Whether `location` holds the record the index relies on for `key` (a put or tombstone).
    pub fn points_at(&self, key: &[u8], location: Location) -> bool {
        self.inner
            .read()
            .get(key)
            .is_some_and(|e| e.location == location)
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
        let upper = if end.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Excluded(end)
        };
        let first = inner
            .leaves
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(start)))
            .next_back();
        let rest = inner
            .leaves
            .range::<[u8], _>((Bound::Excluded(start), upper));
        let mut leaves = first.into_iter().chain(rest).peekable();
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

    /// Estimated heap bytes: leaves (as malloc counts their allocations), the map of leaves, and
    /// range deletes. Walks the leaves (about one per hundred entries).
    pub fn heap_bytes(&self) -> usize {
        let inner = self.inner.read();
        inner
            .leaves
            .iter()
            .map(|(fence, leaf)| malloc_bytes(fence.len()) + leaf.heap_bytes() + LEAF_SLOT_BYTES)
            .sum::<usize>()
            + inner
                .ranges
                .iter()
                .map(|((start, _), r)| {
                    malloc_bytes(start.len())
                        + malloc_bytes(r.start.capacity())
                        + malloc_bytes(r.end.capacity())
                        + RANGE_SLOT_BYTES
                })
                .sum::<usize>()
    }

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

    /// The pending range deletes that overlap `[from, end)` (`end` empty: unbounded), as
    /// (start, end, version): what a walk over that span checks each entry against.
    fn pending_over<'a>(&'a self, from: &[u8], end: &[u8]) -> Vec<(&'a [u8], &'a [u8], u64)> {
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
    fn hidden(&self, pending: &[(&[u8], &[u8], u64)], key: &[u8], version: u64) -> bool {
        pending
            .iter()
            .any(|&(start, end, v)| v > version && key >= start && (end.is_empty() || key < end))
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
                leaf.entries[i] = Packed::new(&entry);
                leaf.tombs.set(i, entry.tombstone);
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

    /// Inserts `key`, which is not in the index.
    fn insert_new(&mut self, key: &[u8], p: Packed, tombstone: bool) {
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
    fn remove_key(&mut self, key: &[u8]) -> Option<Entry> {
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

    /// Removes the point entries in `[start, end)` (`end` empty: unbounded) older than
    /// `version`, leaf by leaf, stopping at the first leaf boundary after `budget` entries of
    /// the leaves looked at. Returns their locations, and where to go on if it stopped before
    /// `end` (the fence of the next leaf: every key below it in the range was dealt with).
    /// Each leaf's survivors are rebuilt once, where removing key by key shifted the leaf once
    /// per key (about a microsecond a page).
    fn remove_older_in_range(
        &mut self,
        start: &[u8],
        end: &[u8],
        version: u64,
        budget: usize,
    ) -> (Vec<Location>, Option<Vec<u8>>) {
        if !end.is_empty() && end <= start {
            return (Vec::new(), None); // an empty range (BTreeMap::range would panic on it)
        }
        let upper = if end.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Excluded(end)
        };
        let mut fences: Vec<Box<[u8]>> = Vec::new();
        let mut resume = None;
        let mut taken = 0;
        let first = self
            .leaves
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(start)))
            .next_back();
        let rest = self
            .leaves
            .range::<[u8], _>((Bound::Excluded(start), upper));
        for (fence, leaf) in first.into_iter().chain(rest) {
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

    /// Drops the leaf at `fence` if empty, or merges it with a neighbour if both fit in one.
    fn rebalance(&mut self, fence: &[u8]) {
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
    fn push_leaf(&mut self, flat: &Flat, from: usize, to: usize) {
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
    fn check(&self) -> usize {
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
    use super::*;

    fn loc(segment: u32, offset: u32) -> Location {
        Location {
            segment,
            offset,
            len: 10,
        }
    }
    fn put(key: &[u8], version: u64, at: Location) -> Update {
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

    fn entry(version: u64, at: Location, group: u32, tombstone: bool) -> Entry {
        Entry {
            location: at,
            version,
            group,
            tombstone,
        }
    }

    /// splitmix64: a small deterministic generator for the randomized tests.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }
    }

    fn fs_key(tag: u8, ino: u64, tail: Option<u64>) -> Vec<u8> {
        let mut k = vec![tag];
        k.extend_from_slice(&ino.to_be_bytes());
        if let Some(t) = tail {
            k.extend_from_slice(&t.to_be_bytes());
        }
        k
    }

    fn all_keys(index: &Index) -> Vec<Vec<u8>> {
        let mut keys = Vec::new();
        index.inner.read().walk(Bound::Unbounded, |k, _, _| {
            keys.push(k.to_vec());
            true
        });
        keys
    }

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
