//! Unwritten pages: the space `fallocate` allocates, held without writing it.
//!
//! An unwritten page is a data page record with an empty value: it reads as zeros (a page
//! reads as zeros past its stored length), counts as a stored page (`st_blocks`, SEEK_DATA,
//! the inode's page count), and costs one small record instead of 4 KiB of zeros written
//! through the log. Nothing else stores an empty page: a write stores the bytes it writes, and
//! a truncation keeps at least one byte of the page that holds the new end (it deletes whole
//! pages by range), so an empty page value always means "allocated, unwritten", as ext4's
//! unwritten extents do.
//!
//! The space: each unwritten page holds a promise of [`page_promise`] bytes in the engine (the
//! difference between a full page record and the empty one), counted against the capacity as
//! live bytes. A write into the page replaces a record that, with its promise, was charged as a
//! full page: [`Fs::store`] releases the promise in the same batch, so the write adds no live
//! bytes and is taken even in a full store, as a write into blocks ext4 allocated is.
//!
//! One rule keeps the engine's total right: every batch the filesystem writes goes through
//! [`Fs::store`], which works out from the batch itself, in order, how many unwritten pages it
//! creates and how many it removes (overwritten, deleted, or under a range delete), looking
//! the old records' lengths up in the index (no I/O). The total is in memory only: it is
//! counted again from the index at every mount ([`Fs::count_promises`]), so a crash, a
//! remount, or a store recovered elsewhere gets it from the records themselves.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use super::{Fs, FsResult, keys};
use crate::engine::{Engine, Lsn, Mutation, ROOT_GROUP, prefix_successor};

/// Bytes of the record of an unwritten page (header and key, no value) and of a full page
/// (header, key, 4096 bytes of value), worked out once: every batch asks.
static PAGE_RECORDS: LazyLock<(u64, u64)> = LazyLock::new(|| {
    let record = |len: u64| {
        Mutation::put(ROOT_GROUP, keys::chunk_key(0, 0), vec![0u8; len as usize]).encoded_len()
            as u64
    };
    (record(0), record(keys::PAGE_SIZE))
});

/// Bytes of the record of an unwritten page (header and key, no value).
pub(super) fn unwritten_page_record() -> u64 {
    PAGE_RECORDS.0
}

/// Bytes of the record of a full page (header, key, 4096 bytes of value).
pub(super) fn full_page_record() -> u64 {
    PAGE_RECORDS.1
}

/// The live bytes an unwritten page holds besides its own record: what writing it in full adds.
pub(super) fn page_promise() -> u64 {
    full_page_record() - unwritten_page_record()
}

/// Sets `engine`'s promised bytes from the unwritten pages its store holds, counted from the
/// index (no I/O); returns how many pages that is. At mount, and for a report of a store read
/// offline.
pub(super) fn set_promises_from_index(engine: &Engine) -> u64 {
    let pages = engine.count_records_of_len(
        &[keys::TAG_CHUNK],
        &[keys::TAG_CHUNK + 1],
        unwritten_page_record(),
    );
    engine.set_promised_bytes(pages * page_promise());
    pages
}

fn is_page_key(key: &[u8]) -> bool {
    key.len() == 17 && key[0] == keys::TAG_CHUNK
}

/// Whether `key` lies in `[start, end)` (`end` empty: unbounded).
fn in_range(key: &[u8], start: &[u8], end: &[u8]) -> bool {
    key >= start && (end.is_empty() || key < end)
}

/// The part of `[a_start, a_end)` inside `[b_start, b_end)` (empty ends: unbounded), if any.
fn intersect(a: (&[u8], &[u8]), b: (&[u8], &[u8])) -> Option<(Vec<u8>, Vec<u8>)> {
    let start = a.0.max(b.0);
    let end = match (a.1.is_empty(), b.1.is_empty()) {
        (true, true) => &[][..],
        (true, false) => b.1,
        (false, true) => a.1,
        (false, false) => a.1.min(b.1),
    };
    (end.is_empty() || start < end).then(|| (start.to_vec(), end.to_vec()))
}

impl Fs {
    /// Writes `batch` as one engine batch, with the change it makes to the engine's promised
    /// bytes (see the module documentation). Every batch of the filesystem goes through here.
    pub(super) fn store(&self, batch: &[Mutation]) -> FsResult<Lsn> {
        let change = self.unwritten_change(batch) * page_promise() as i64;
        Ok(self.engine.write_with_promise(batch, change)?)
    }

    /// Unwritten pages the store holds in `[start, end)`, from the index (no I/O).
    pub(super) fn count_unwritten(&self, start: &[u8], end: &[u8]) -> u64 {
        self.engine
            .count_records_of_len(start, end, unwritten_page_record())
    }

    /// Sets the engine's promised bytes from the unwritten pages the store holds: at mount,
    /// before anything is written.
    pub(super) fn count_promises(&self) {
        let pages = set_promises_from_index(&self.engine);
        if pages > 0 {
            log::info!("mount: {pages} unwritten page(s) hold their space");
        }
    }

    /// Whether the store holds `key` as an unwritten page now.
    fn stored_unwritten(&self, key: &[u8]) -> bool {
        self.engine.record_len(key) == Some(unwritten_page_record())
    }

    /// Unwritten pages `batch` adds, less those it removes, applied in order as the engine
    /// applies them: a later put of a key replaces an earlier one, a range delete removes what
    /// the batch put before it in its range, and what the store held there.
    fn unwritten_change(&self, batch: &[Mutation]) -> i64 {
        let creates = batch.iter().any(|m| {
            matches!(m, Mutation::Put { key, value, .. } if value.is_empty() && is_page_key(key))
        });
        // None stored (the total is kept from the records): only a batch that creates some
        // changes anything, and no lookup is needed.
        let stored_any = self.engine.promised_bytes() > 0;
        if !creates && !stored_any {
            return 0;
        }
        // Keys the batch has written so far -> whether each is an unwritten page now.
        let mut now: BTreeMap<&[u8], bool> = BTreeMap::new();
        // Ranges the batch has deleted so far, disjoint.
        let mut deleted: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut change = 0i64;
        for m in batch {
            match m {
                Mutation::Put { key, value, .. } if is_page_key(key) => {
                    let before = self.unwritten_now(key, &now, &deleted, stored_any);
                    let after = value.is_empty();
                    change += i64::from(after) - i64::from(before);
                    now.insert(key, after);
                }
                Mutation::Put { .. } => {}
                Mutation::Delete { key, .. } if is_page_key(key) => {
                    let before = self.unwritten_now(key, &now, &deleted, stored_any);
                    change -= i64::from(before);
                    now.insert(key, false);
                }
                Mutation::Delete { .. } => {}
                Mutation::DeletePrefix { prefix, .. } => {
                    let end = prefix_successor(prefix);
                    change -=
                        self.unwritten_under(prefix, &end, &mut now, &mut deleted, stored_any);
                }
                Mutation::DeleteRange { start, end, .. } => {
                    change -= self.unwritten_under(start, end, &mut now, &mut deleted, stored_any);
                }
            }
        }
        change
    }

    /// Whether page `key` is unwritten at this point of a batch: as the batch left it (`now`),
    /// else as the store holds it, unless a range delete of the batch (`deleted`) removed it.
    fn unwritten_now(
        &self,
        key: &[u8],
        now: &BTreeMap<&[u8], bool>,
        deleted: &[(Vec<u8>, Vec<u8>)],
        stored_any: bool,
    ) -> bool {
        match now.get(key) {
            Some(&is_unwritten) => is_unwritten,
            None => {
                stored_any
                    && !deleted.iter().any(|(s, e)| in_range(key, s, e))
                    && self.stored_unwritten(key)
            }
        }
    }

    /// The unwritten pages a range delete of `[start, end)` removes, given what the batch did
    /// before it (`now`, `deleted`), which it then updates.
    fn unwritten_under(
        &self,
        start: &[u8],
        end: &[u8],
        now: &mut BTreeMap<&[u8], bool>,
        deleted: &mut Vec<(Vec<u8>, Vec<u8>)>,
        stored_any: bool,
    ) -> i64 {
        // Only page keys: a record of another kind may be as long as an unwritten page.
        let pages = (&[keys::TAG_CHUNK][..], &[keys::TAG_CHUNK + 1][..]);
        let Some((start, end)) = intersect((start, end), pages) else {
            return 0;
        };
        let (start, end) = (start.as_slice(), end.as_slice());
        let mut n = 0i64;
        if stored_any {
            // The store's unwritten pages in the range, less those an earlier range delete of
            // the batch removed already (the deleted ranges are disjoint).
            n += self.count_unwritten(start, end) as i64;
            for (s, e) in deleted.iter() {
                if let Some((a, b)) = intersect((start, end), (s, e)) {
                    n -= self.count_unwritten(&a, &b) as i64;
                }
            }
        }
        for (key, is_unwritten) in now.iter_mut() {
            if !in_range(key, start, end) {
                continue;
            }
            // The batch's own state of the key counts, not the store's.
            if stored_any && !deleted.iter().any(|(s, e)| in_range(key, s, e)) {
                n -= i64::from(self.stored_unwritten(key));
            }
            n += i64::from(*is_unwritten);
            *is_unwritten = false;
        }
        add_deleted_range(deleted, start, end);
        n
    }
}

/// Adds `[start, end)` to the disjoint ranges `deleted`, merging those it meets.
fn add_deleted_range(deleted: &mut Vec<(Vec<u8>, Vec<u8>)>, start: &[u8], end: &[u8]) {
    // `key <= end` with an empty end unbounded.
    let at_or_before = |key: &[u8], end: &[u8]| end.is_empty() || key <= end;
    let (mut s, mut e) = (start.to_vec(), end.to_vec());
    deleted.retain(|(ds, de)| {
        let meets = at_or_before(ds, &e) && at_or_before(&s, de);
        if meets {
            if *ds < s {
                s = ds.clone();
            }
            if !e.is_empty() && (de.is_empty() || *de > e) {
                e = de.clone();
            }
        }
        !meets
    });
    deleted.push((s, e));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deleted_ranges_merge_into_disjoint_ones() {
        let mut d = Vec::new();
        add_deleted_range(&mut d, b"b", b"d");
        add_deleted_range(&mut d, b"f", b"h");
        assert_eq!(d.len(), 2);
        add_deleted_range(&mut d, b"c", b"g");
        assert_eq!(d, vec![(b"b".to_vec(), b"h".to_vec())]);
        add_deleted_range(&mut d, b"x", b"");
        add_deleted_range(&mut d, b"a", b"b");
        let mut d2 = d.clone();
        d2.sort();
        assert_eq!(
            d2,
            vec![(b"a".to_vec(), b"h".to_vec()), (b"x".to_vec(), Vec::new())]
        );
    }

    #[test]
    fn intersections_of_bounded_and_unbounded_ranges() {
        assert_eq!(
            intersect((b"a", b"m"), (b"f", b"")),
            Some((b"f".to_vec(), b"m".to_vec()))
        );
        assert_eq!(intersect((b"a", b"f"), (b"f", b"z")), None);
        assert_eq!(
            intersect((b"a", b""), (b"c", b"")),
            Some((b"c".to_vec(), Vec::new()))
        );
    }
}
