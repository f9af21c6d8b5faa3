//! When a tombstone may be dropped.
//!
//! A tombstone (a delete of a key, or a range or prefix delete) must stay on disk as long as an
//! older put of a key it deletes is on disk too: without it, recovery would bring that put back.
//! "On disk" includes the copies compaction made of a record just before it was overwritten
//! (its compare-and-set failed): they are old versions in new segments.
//!
//! So every segment keeps a note of the puts written into it, live or not, and compaction drops
//! a tombstone it meets in a victim only when no other segment in use may hold an older put of
//! its key (or prefix); the victim itself goes whole, tombstone and older puts alike, when its
//! first block is zeroed. A range delete that no tracked prefix covers is never dropped.
//!
//! What a segment notes of a put of `key` with `version` (every note errs only towards "may
//! hold an older put", which keeps a tombstone longer, never drops one early):
//!
//! - a *point note*: 32 bits of the hash of the key, and no version. A point tombstone that
//!   compaction meets is live, so it is the newest version of its key the index knows: every put
//!   of its key on disk is older, except puts not yet indexed or not live (in flight, torn at a
//!   power cut, shadowed by a range delete), whose segments are freed once compacted (dead
//!   records are not copied). So a version would change nothing but a transient answer, and
//!   "holds a put of the key" is read as "may hold an older one".
//! - a *prefix note* per tracked prefix length `n` (see
//!   [`crate::engine::EngineOptions::tombstone_prefix_lengths`]) shorter than the key: 32 bits of
//!   the hash of `key[..n]` and the exact version. Here the version matters: a file's pages are
//!   rewritten after its truncation (newer puts under a live prefix delete) and must not keep
//!   the prefix delete forever. Per segment and prefix only the oldest version is kept (the only
//!   one that matters for "is there a put older than v"), so the many pages of one file in a
//!   segment cost one note.
//!
//! A key exactly as long as a tracked prefix is noted once, by a point note of its prefix hash:
//! a prefix delete checks point notes too (a put of exactly its prefix, any version, keeps it),
//! and a point delete of such a key also matches longer keys under it (both only keep
//! tombstones longer). A hash collision (32 bits) only keeps a tombstone longer.
//!
//! Notes arrive unsorted into a small staging vector of the segment; once it reaches an eighth
//! of the settled notes (at least 64), and before every check, it is sorted, deduplicated and
//! merged into exact-size sorted arrays.
//!
//! Cost: 4 bytes per put record on disk (point note) plus 12 bytes per distinct (segment,
//! prefix) (prefix note), plus the staging of recent notes (16 bytes or less each) and ~80 bytes
//! per segment: 8 to 9 bytes per put for the filesystem's records (`benches/put_notes_memory.rs`:
//! 1M puts over 1,395 segments of 1 MiB; 47 bytes per put with (u64, u64) notes in a `Vec`).

use std::hash::{DefaultHasher, Hasher};

use super::concurrency::Mutex;

#[derive(Default)]
struct Notes {
    /// Point notes (see the module doc) not yet settled.
    staged_points: Vec<u32>,
    /// Prefix notes (hash, version) not yet settled.
    staged_prefixes: Vec<(u32, u64)>,
    /// Settled point notes: sorted, distinct.
    points: Box<[u32]>,
    /// Settled prefix notes: sorted, distinct hashes, and the oldest version noted with each.
    prefix_hashes: Box<[u32]>,
    prefix_oldest: Box<[u64]>,
}

/// In a checkpoint's note pairs (`PutNotes::items`): the tag bit of a prefix note, and the
/// second half of a point note (which has no version).
const PREFIX_NOTE_TAG: u64 = 1 << 32;
const POINT_NOTE: u64 = 0;

/// Staged notes are settled once there are this many, or an eighth of the settled ones.
const MIN_STAGED: usize = 64;

impl Notes {
    fn staged_len(&self) -> usize {
        self.staged_points.len() + self.staged_prefixes.len()
    }

    /// Merges the staged notes into the settled arrays (exact size, sorted, one note per hash,
    /// the oldest version of a prefix kept).
    fn settle(&mut self) {
        if !self.staged_points.is_empty() {
            let mut staged = std::mem::take(&mut self.staged_points);
            staged.sort_unstable();
            staged.dedup();
            let old = std::mem::take(&mut self.points);
            let mut merged = Vec::with_capacity(old.len() + staged.len());
            let (mut i, mut j) = (0, 0);
            while i < old.len() || j < staged.len() {
                let next = match (old.get(i), staged.get(j)) {
                    (Some(&a), Some(&b)) if a == b => {
                        i += 1;
                        j += 1;
                        a
                    }
                    (Some(&a), Some(&b)) if a < b => {
                        i += 1;
                        a
                    }
                    (Some(&a), None) => {
                        i += 1;
                        a
                    }
                    (_, Some(&b)) => {
                        j += 1;
                        b
                    }
                    (None, None) => unreachable!(),
                };
                merged.push(next);
            }
            self.points = merged.into_boxed_slice(); // exact: shrinks if duplicates merged
        }
        if !self.staged_prefixes.is_empty() {
            let mut staged = std::mem::take(&mut self.staged_prefixes);
            // Sorted by (hash, version): the first of each hash is its oldest.
            staged.sort_unstable();
            staged.dedup_by_key(|&mut (h, _)| h);
            let old_h = std::mem::take(&mut self.prefix_hashes);
            let old_v = std::mem::take(&mut self.prefix_oldest);
            let cap = old_h.len() + staged.len();
            let mut hashes = Vec::with_capacity(cap);
            let mut oldest = Vec::with_capacity(cap);
            let (mut i, mut j) = (0, 0);
            while i < old_h.len() || j < staged.len() {
                let (h, v) = match (old_h.get(i), staged.get(j)) {
                    (Some(&a), Some(&(b, vb))) if a == b => {
                        let v = old_v[i].min(vb);
                        i += 1;
                        j += 1;
                        (a, v)
                    }
                    (Some(&a), Some(&(b, _))) if a < b => {
                        i += 1;
                        (a, old_v[i - 1])
                    }
                    (Some(&a), None) => {
                        i += 1;
                        (a, old_v[i - 1])
                    }
                    (_, Some(&(b, vb))) => {
                        j += 1;
                        (b, vb)
                    }
                    (None, None) => unreachable!(),
                };
                hashes.push(h);
                oldest.push(v);
            }
            self.prefix_hashes = hashes.into_boxed_slice();
            self.prefix_oldest = oldest.into_boxed_slice();
        }
    }

    fn heap_bytes(&self) -> usize {
        self.staged_points.capacity() * 4
            + self.staged_prefixes.capacity() * size_of::<(u32, u64)>()
            + self.points.len() * 4
            + self.prefix_hashes.len() * 4
            + self.prefix_oldest.len() * 8
    }
}

pub struct PutNotes {
    per_segment: Vec<Mutex<Notes>>,
    prefix_lengths: Vec<usize>,
}

/// The hash of a whole key (`prefix_len` None) or of its first `prefix_len` bytes; the two
/// kinds never collide by construction (the length is hashed in).
fn hash_of(key: &[u8], prefix_len: Option<usize>) -> u64 {
    let mut h = DefaultHasher::new();
    match prefix_len {
        None => {
            h.write_u8(0);
            h.write(key);
        }
        Some(n) => {
            h.write_u8(1);
            h.write_usize(n);
            h.write(&key[..n]);
        }
    }
    h.finish()
}

/// The 32 bits of a hash that notes keep.
fn short(hash: u64) -> u32 {
    (hash >> 32) as u32
}

impl PutNotes {
    pub fn new(segments: usize, mut prefix_lengths: Vec<usize>) -> PutNotes {
        prefix_lengths.sort_unstable();
        prefix_lengths.dedup();
        prefix_lengths.retain(|&n| n > 0);
        PutNotes {
            per_segment: (0..segments)
                .map(|_| Mutex::new(Notes::default()))
                .collect(),
            prefix_lengths,
        }
    }

    /// Notes a put of `key` with `version` written into `segment`.
    pub fn note_put(&self, segment: u32, key: &[u8], version: u64) {
        let point = short(self.point_hash(key));
        let mut notes = self.per_segment[segment as usize].lock();
        notes.staged_points.push(point);
        for &n in &self.prefix_lengths {
            if key.len() > n {
                notes
                    .staged_prefixes
                    .push((short(hash_of(key, Some(n))), version));
            }
        }
        let settled = notes.points.len() + notes.prefix_hashes.len();
        if notes.staged_len() >= MIN_STAGED.max(settled / 8) {
            notes.settle();
        }
    }

    /// The tracked prefix lengths (sorted, deduplicated): notes are comparable only between
    /// stores tracking the same ones.
    pub fn prefix_lengths(&self) -> &[usize] {
        &self.prefix_lengths
    }

    /// Number of segments noted for.
    #[cfg(test)]
    pub fn segment_count(&self) -> usize {
        self.per_segment.len()
    }

    /// The notes of `segment`, for an index checkpoint: each a pair of `u64`s. A point note is
    /// `(hash, POINT_NOTE)`; a prefix note is `(hash | PREFIX_NOTE_TAG, oldest version)`.
    pub fn items(&self, segment: u32) -> Vec<(u64, u64)> {
        let mut notes = self.per_segment[segment as usize].lock();
        notes.settle();
        let mut out = Vec::with_capacity(notes.points.len() + notes.prefix_hashes.len());
        out.extend(notes.points.iter().map(|&h| (h as u64, POINT_NOTE)));
        out.extend(
            notes
                .prefix_hashes
                .iter()
                .zip(notes.prefix_oldest.iter())
                .map(|(&h, &v)| (h as u64 | PREFIX_NOTE_TAG, v)),
        );
        out
    }

    /// Replaces the notes of `segment` with `items` from an index checkpoint (see `items`).
    pub fn set_items(&self, segment: u32, items: Vec<(u64, u64)>) {
        let mut notes = Notes::default();
        for (tagged, version) in items {
            let hash = tagged as u32;
            if tagged & PREFIX_NOTE_TAG != 0 {
                notes.staged_prefixes.push((hash, version));
            } else {
                notes.staged_points.push(hash);
            }
        }
        notes.settle();
        *self.per_segment[segment as usize].lock() = notes;
    }

    /// The segment was freed: nothing of it is on disk any more.
    pub fn forget_segment(&self, segment: u32) {
        *self.per_segment[segment as usize].lock() = Notes::default();
    }

    /// What a point delete of `key` deletes, as a note hash. A key as long as a tracked prefix
    /// is named by its prefix hash (see the module doc).
    pub fn point_hash(&self, key: &[u8]) -> u64 {
        if self.prefix_lengths.contains(&key.len()) {
            hash_of(key, Some(key.len()))
        } else {
            hash_of(key, None)
        }
    }

    /// What the range delete `[start, end)` deletes, as a note hash: the hash of a tracked
    /// prefix that covers the whole range, if there is one.
    pub fn range_hash(&self, start: &[u8], end: &[u8]) -> Option<u64> {
        self.prefix_lengths.iter().rev().find_map(|&n| {
            if start.len() < n || end.is_empty() {
                return None;
            }
            let successor = super::prefix_successor(&start[..n]);
            // Every key in [start, end) starts with start[..n] iff end <= successor(prefix).
            (!successor.is_empty() && end <= successor.as_slice()).then(|| hash_of(start, Some(n)))
        })
    }

    /// Whether `segment` may hold a put older than `version` of what `hash` names: a point
    /// note of it (of any version: see the module doc), or a prefix note older than `version`.
    pub fn may_hold_older(&self, segment: u32, hash: u64, version: u64) -> bool {
        let mut notes = self.per_segment[segment as usize].lock();
        notes.settle();
        let h = short(hash);
        if notes.points.binary_search(&h).is_ok() {
            return true;
        }
        let at = notes.prefix_hashes.partition_point(|&p| p < h);
        notes.prefix_hashes.get(at) == Some(&h) && notes.prefix_oldest[at] < version
    }

    /// Bytes of memory the notes take (every vector's capacity, and the per-segment slots).
    pub fn heap_bytes(&self) -> usize {
        self.per_segment.capacity() * size_of::<Mutex<Notes>>()
            + self
                .per_segment
                .iter()
                .map(|n| n.lock().heap_bytes())
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn older_puts_are_found_by_key_and_by_covering_prefix() {
        let notes = PutNotes::new(4, vec![3]);
        notes.note_put(1, b"abcdef", 10);
        notes.note_put(2, b"abcxyz", 30);
        let k = notes.point_hash(b"abcdef");
        assert!(notes.may_hold_older(1, k, 11));
        // Point notes keep no version: a put of the key reads as "may be older".
        assert!(notes.may_hold_older(1, k, 10));
        assert!(!notes.may_hold_older(2, k, 100), "another key");
        assert!(!notes.may_hold_older(3, k, 100), "an empty segment");
        let p = notes
            .range_hash(b"abc", b"abd")
            .expect("prefix abc covers [abc, abd)");
        assert!(notes.may_hold_older(1, p, 20));
        assert!(!notes.may_hold_older(2, p, 20), "segment 2's put is newer");
        assert!(notes.may_hold_older(2, p, 31));
        notes.forget_segment(1);
        assert!(
            !notes.may_hold_older(1, k, 11),
            "freed segments hold nothing"
        );
    }

    #[test]
    fn ranges_no_tracked_prefix_covers_are_not_checkable() {
        let notes = PutNotes::new(1, vec![3]);
        assert!(
            notes.range_hash(b"abc", b"abz").is_none(),
            "[abc, abz) spans prefixes"
        );
        assert!(
            notes.range_hash(b"ab", b"ac").is_none(),
            "shorter than any tracked prefix"
        );
        assert!(notes.range_hash(b"abc", b"").is_none(), "unbounded");
        assert!(
            notes.range_hash(b"abcq", b"abd").is_some(),
            "within prefix abc"
        );
    }

    /// Two keys `key_of(i)`, `key_of(j)` whose 64-bit hashes differ but whose noted 32 bits
    /// are equal (a birthday search; deterministic: SipHash with fixed keys).
    fn colliding_keys(
        key_of: impl Fn(u32) -> Vec<u8>,
        hash: impl Fn(&[u8]) -> u64,
    ) -> (Vec<u8>, Vec<u8>) {
        #[allow(clippy::disallowed_types)] // a test helper: looked up only
        let mut seen = std::collections::HashMap::new();
        for i in 0u32.. {
            let key = key_of(i);
            let h = hash(&key);
            if let Some(other) = seen.insert(short(h), key.clone()) {
                assert_ne!(hash(&other), h);
                return (other, key);
            }
        }
        unreachable!()
    }

    #[test]
    fn hash_collisions_keep_tombstones() {
        let notes = PutNotes::new(2, vec![3]);
        // Point notes: a put of another key with the same noted bits keeps a delete of this one.
        let (a, b) = colliding_keys(|i| format!("key/{i}").into_bytes(), |k| notes.point_hash(k));
        notes.note_put(0, &a, 10);
        assert!(notes.may_hold_older(0, notes.point_hash(&b), 5));
        // Prefix notes in one segment: a new prefix A and an old colliding prefix B are one note,
        // with B's (older) version: a prefix delete of A between the two is kept.
        let (pa, pb) = colliding_keys(|i| i.to_be_bytes()[1..].to_vec(), |k| hash_of(k, Some(3)));
        let range_of = |p: &[u8]| {
            notes
                .range_hash(p, &super::super::prefix_successor(p))
                .unwrap()
        };
        let under = |p: &[u8]| [p, b"/page"].concat();
        notes.note_put(1, &under(&pa), 100);
        assert!(!notes.may_hold_older(1, range_of(&pa), 50));
        notes.note_put(1, &under(&pb), 10);
        assert!(
            notes.may_hold_older(1, range_of(&pa), 50),
            "a colliding older prefix must keep the tombstone"
        );
    }

    #[test]
    fn the_oldest_version_of_a_prefix_is_kept_across_settles() {
        let notes = PutNotes::new(1, vec![3]);
        let p = notes.range_hash(b"abc", b"abd").unwrap();
        // Pages of one file noted out of version order, settled in between by checks and by
        // enough staged notes.
        notes.note_put(0, b"abc/1", 500);
        assert!(!notes.may_hold_older(0, p, 500));
        notes.note_put(0, b"abc/2", 300);
        notes.note_put(0, b"abc/3", 900);
        for i in 0..1000u64 {
            notes.note_put(0, format!("abc/x{i}").as_bytes(), 400 + i);
        }
        assert!(!notes.may_hold_older(0, p, 300), "nothing older than 300");
        assert!(notes.may_hold_older(0, p, 301), "the put of version 300");
        notes.note_put(0, b"abc/4", 7);
        assert!(notes.may_hold_older(0, p, 8), "a later older put");
        assert!(!notes.may_hold_older(0, p, 7));
        // One prefix note for the whole file, whatever the number of pages.
        let n = notes.per_segment[0].lock();
        assert_eq!(n.prefix_hashes.len(), 1);
        assert_eq!(n.prefix_oldest[..], [7]);
        assert_eq!(n.points.len(), 1004, "one point note per distinct key");
    }

    #[test]
    fn versions_of_a_wide_copy_segment_are_exact() {
        // A copy segment holds records from anywhere in the store's history, in any order.
        let notes = PutNotes::new(1, vec![3]);
        let versions = [
            5u64 << 16,
            (1u64 << 47) | 3,
            (1u64 << 40) << 16,
            ((1u64 << 47) << 16) | 0xFFFE,
            1,
        ];
        for (i, &v) in versions.iter().enumerate() {
            let prefix = format!("p{i:02}");
            for page in 0..100 {
                notes.note_put(0, format!("{prefix}/{page}").as_bytes(), v + page);
            }
        }
        for (i, &v) in versions.iter().enumerate() {
            let prefix = format!("p{i:02}");
            let h = notes
                .range_hash(
                    prefix.as_bytes(),
                    &super::super::prefix_successor(prefix.as_bytes()),
                )
                .unwrap();
            assert!(!notes.may_hold_older(0, h, v), "{prefix} at {v:#x}");
            assert!(notes.may_hold_older(0, h, v + 1), "{prefix} at {v:#x}");
        }
    }

    #[test]
    fn keys_as_long_as_a_tracked_prefix_are_found_by_prefix_deletes() {
        let notes = PutNotes::new(1, vec![3]);
        notes.note_put(0, b"abc", 50);
        let p = notes.range_hash(b"abc", b"abd").unwrap();
        assert!(
            notes.may_hold_older(0, p, 60),
            "the put of exactly the prefix"
        );
        assert!(notes.may_hold_older(0, notes.point_hash(b"abc"), 60));
        assert_eq!(notes.per_segment[0].lock().staged_prefixes.len(), 0);
    }

    #[test]
    fn forgetting_a_segment_frees_its_notes() {
        let notes = PutNotes::new(3, vec![3]);
        let empty = notes.heap_bytes();
        for i in 0..10_000u64 {
            notes.note_put(1, format!("f{:02}/{i}", i % 50).as_bytes(), i);
        }
        let p = notes.point_hash(b"f07/7");
        assert!(notes.may_hold_older(1, p, 1));
        let full = notes.heap_bytes();
        // Exact-size settled notes: 4 B per point, 12 B per prefix, little staging left.
        assert!(
            full - empty <= 10_000 * 4 + 50 * 12 + 64 * 16,
            "{}",
            full - empty
        );
        notes.forget_segment(1);
        assert_eq!(notes.heap_bytes(), empty);
        assert!(!notes.may_hold_older(1, p, u64::MAX));
    }
}
