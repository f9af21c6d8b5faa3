//! When a tombstone may be dropped.
//!
//! A tombstone (a delete of a key, or a range or prefix delete) must stay on disk as long as an
//! older put of a key it deletes is on disk too: without it, recovery would bring that put back.
//! "On disk" includes the copies compaction made of a record just before it was overwritten
//! (its compare-and-set failed): they are old versions in new segments.
//!
//! So every segment keeps a note of the puts written into it, live or not: a 64-bit hash of the
//! key and the version, plus a hash of each of the key's prefixes of the lengths in
//! [`crate::engine::EngineOptions::tombstone_prefix_lengths`] (so that a prefix delete can be
//! checked too). Compaction drops a tombstone it meets in a victim when no other segment in use
//! has a note of an older put of its key (or prefix); the victim itself goes whole, tombstone
//! and older puts alike, when its first block is zeroed. A hash collision only keeps a
//! tombstone longer. A range delete that no tracked prefix covers is never dropped.
//!
//! Cost: 16 bytes of memory per put record on disk, per hash (one, plus one per prefix length).

use std::hash::{DefaultHasher, Hasher};

use parking_lot::Mutex;

#[derive(Default)]
struct Notes {
    /// (hash, version) of every put written into the segment (and its prefixes).
    items: Vec<(u64, u64)>,
    sorted: bool,
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
        let mut notes = self.per_segment[segment as usize].lock();
        notes.items.push((hash_of(key, None), version));
        for &n in &self.prefix_lengths {
            if key.len() >= n {
                notes.items.push((hash_of(key, Some(n)), version));
            }
        }
        notes.sorted = false;
    }

    /// The tracked prefix lengths (sorted, deduplicated): notes are comparable only between
    /// stores tracking the same ones.
    pub fn prefix_lengths(&self) -> &[usize] {
        &self.prefix_lengths
    }

    /// Number of segments noted for.
    pub fn segment_count(&self) -> usize {
        self.per_segment.len()
    }

    /// The notes of `segment` (for an index checkpoint).
    pub fn items(&self, segment: u32) -> Vec<(u64, u64)> {
        self.per_segment[segment as usize].lock().items.clone()
    }

    /// Replaces the notes of `segment` (from an index checkpoint).
    pub fn set_items(&self, segment: u32, items: Vec<(u64, u64)>) {
        *self.per_segment[segment as usize].lock() = Notes {
            items,
            sorted: false,
        };
    }

    /// The segment was freed: nothing of it is on disk any more.
    pub fn forget_segment(&self, segment: u32) {
        *self.per_segment[segment as usize].lock() = Notes::default();
    }

    /// What a point delete of `key` deletes, as a note hash.
    pub fn point_hash(&self, key: &[u8]) -> u64 {
        hash_of(key, None)
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

    /// Whether `segment` may hold a put older than `version` of what `hash` names.
    pub fn may_hold_older(&self, segment: u32, hash: u64, version: u64) -> bool {
        let mut notes = self.per_segment[segment as usize].lock();
        if !notes.sorted {
            notes.items.sort_unstable();
            notes.sorted = true;
        }
        let at = notes.items.partition_point(|&(h, _)| h < hash);
        // Sorted by (hash, version): the first item of this hash has its oldest version.
        notes
            .items
            .get(at)
            .is_some_and(|&(h, v)| h == hash && v < version)
    }

    /// Bytes of memory the notes take.
    pub fn heap_bytes(&self) -> usize {
        self.per_segment
            .iter()
            .map(|n| n.lock().items.capacity() * 16)
            .sum()
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
        assert!(!notes.may_hold_older(1, k, 10), "same version is not older");
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
}
