//! The in-memory index: key -> where its newest record is, with the record's group and version.
//!
//! Entries are ordered (a B-tree), so prefix and range scans serve directory listings and file
//! reads. Tombstones stay in the index as entries (they occupy space in a segment and must be
//! accounted for until compaction drops them); readers skip them. Range deletes are kept apart,
//! with the location of their record.
//!
//! Every change returns the entries it displaced, so the caller can move live-byte accounting
//! from their segments. The index itself knows no files and no segments beyond [`Location`].
//!
//! Versions decide: an update with a lower version than the entry's never wins. That makes index
//! updates commutative, so writers of one buffer may update in any order.

use std::collections::BTreeMap;
use std::ops::Bound;

use parking_lot::RwLock;

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

/// Approximate heap bytes of one B-tree slot besides key and entry (node headers, edges and the
/// B-tree's typical two-thirds fill).
const BTREE_SLOT_OVERHEAD: usize = 24;

#[derive(Default)]
struct Inner {
    points: BTreeMap<Box<[u8]>, Entry>,
    /// Range deletes by (start, version).
    ranges: BTreeMap<(Box<[u8]>, u64), RangeDelete>,
    key_bytes: usize,
}

#[derive(Default)]
pub struct Index {
    inner: RwLock<Inner>,
}

impl Index {
    pub fn get(&self, key: &[u8]) -> Option<Entry> {
        self.inner.read().points.get(key).copied()
    }

    /// Applies one update. `same_buffer_ranges` are the range deletes written in the same write
    /// buffer as this update: a put may reach the index after a range delete with a higher
    /// version from the same buffer was applied, and must then die on arrival. (Updates from
    /// different buffers are applied in buffer order, see the write gate in `log.rs`.)
    pub fn apply(&self, update: &Update, same_buffer_ranges: &[RangeDelete]) -> Applied {
        let mut inner = self.inner.write();
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
                let mut displaced = Vec::new();
                let doomed: Vec<Box<[u8]>> = inner
                    .range_keys(&range.start, &range.end)
                    .filter(|(_, e)| e.version < range.version)
                    .map(|(k, _)| k.clone())
                    .collect();
                for key in doomed {
                    let e = inner.points.remove(&key).unwrap();
                    inner.key_bytes -= key.len();
                    displaced.push(e.location);
                }
                inner.ranges.insert(
                    (range.start.clone().into_boxed_slice(), range.version),
                    range.clone(),
                );
                Applied {
                    new_is_live: true,
                    displaced,
                }
            }
        }
    }

    /// Moves `key` from `old` to `new` (same version, a copy) if the index still points at `old`.
    /// Used by relocation (separator, compaction). Returns whether it moved.
    pub fn compare_and_set(&self, key: &[u8], old: Location, new: Location, group: u32) -> bool {
        let mut inner = self.inner.write();
        match inner.points.get_mut(key) {
            Some(e) if e.location == old => {
                e.location = new;
                e.group = group;
                true
            }
            _ => false,
        }
    }

    /// Removes `key`'s entry if it is still the record at `location` (a tombstone compaction
    /// drops). Returns whether it did.
    pub fn remove_if_at(&self, key: &[u8], location: Location) -> bool {
        let mut inner = self.inner.write();
        if inner
            .points
            .get(key)
            .is_some_and(|e| e.location == location)
        {
            inner.points.remove(key);
            inner.key_bytes -= key.len();
            true
        } else {
            false
        }
    }

    /// Removes the range delete starting at `start` with `version` if it is still the record
    /// at `location`. Returns whether it did.
    pub fn remove_range_if_at(&self, start: &[u8], version: u64, location: Location) -> bool {
        let key = (Box::<[u8]>::from(start), version);
        let mut inner = self.inner.write();
        if inner
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
            .points
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
    ) -> bool {
        let key = (Box::<[u8]>::from(start), version);
        match self.inner.write().ranges.get_mut(&key) {
            Some(r) if r.location == old => {
                r.location = new;
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
        let upper = if end.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Excluded(end)
        };
        if let (Bound::Excluded(a), Bound::Excluded(b)) = (lower, upper) {
            if a >= b {
                return Vec::new();
            }
        }
        inner
            .points
            .range::<[u8], _>((lower, upper))
            .filter(|(_, e)| !e.tombstone)
            .take(limit)
            .map(|(k, e)| (k.to_vec(), *e))
            .collect()
    }

    /// Every point entry and range delete, for recovery checks and relocation.
    pub fn for_each_location(&self, mut f: impl FnMut(Location)) {
        let inner = self.inner.read();
        inner.points.values().for_each(|e| f(e.location));
        inner.ranges.values().for_each(|r| f(r.location));
    }

    pub fn len(&self) -> usize {
        self.inner.read().points.len()
    }

    pub fn range_delete_count(&self) -> usize {
        self.inner.read().ranges.len()
    }

    /// Estimated heap bytes: keys, entries and B-tree overhead.
    pub fn heap_bytes(&self) -> usize {
        let inner = self.inner.read();
        let slot = std::mem::size_of::<Box<[u8]>>() + std::mem::size_of::<Entry>();
        inner.points.len() * (slot + BTREE_SLOT_OVERHEAD)
            + inner.key_bytes
            + inner
                .ranges
                .values()
                .map(|r| r.start.len() * 2 + r.end.len() + 96)
                .sum::<usize>()
    }

    /// Builds an index from recovered entries in one go (no version conflicts left to resolve).
    pub fn from_recovered(points: BTreeMap<Box<[u8]>, Entry>, ranges: Vec<RangeDelete>) -> Index {
        let key_bytes = points.keys().map(|k| k.len()).sum();
        let ranges = ranges
            .into_iter()
            .map(|r| ((r.start.clone().into_boxed_slice(), r.version), r))
            .collect();
        Index {
            inner: RwLock::new(Inner {
                points,
                ranges,
                key_bytes,
            }),
        }
    }
}

impl Inner {
    fn put_if_newer(&mut self, key: &[u8], entry: Entry) -> Applied {
        match self.points.get_mut(key) {
            Some(existing) if existing.version >= entry.version => Applied {
                new_is_live: false,
                displaced: Vec::new(),
            },
            Some(existing) => {
                let old = existing.location;
                *existing = entry;
                Applied {
                    new_is_live: true,
                    displaced: vec![old],
                }
            }
            None => {
                // A put below a range delete that reached the index first (from an earlier
                // buffer it cannot be: buffers are applied in order; but recovery-era ranges
                // and this buffer's own are checked by the caller) is not possible here.
                self.points.insert(key.into(), entry);
                self.key_bytes += key.len();
                Applied {
                    new_is_live: true,
                    displaced: Vec::new(),
                }
            }
        }
    }

    fn range_keys<'a>(
        &'a self,
        start: &'a [u8],
        end: &'a [u8],
    ) -> impl Iterator<Item = (&'a Box<[u8]>, &'a Entry)> + 'a {
        let upper = if end.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Excluded(end)
        };
        self.points
            .range::<[u8], _>((Bound::Included(start), upper))
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
}
