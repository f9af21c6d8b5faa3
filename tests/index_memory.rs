//! The index's memory estimate (`Index::heap_bytes`, the `index_bytes` of the engine's stats,
//! which `benches/index_memory.rs` reports per entry) against the bytes really allocated.
//!
//! A global allocator wraps the system one and, on the thread that builds an index, counts what
//! every allocation holds as malloc sees it (`malloc_usable_size` plus glibc's 8-byte chunk
//! header) and what was asked for. The estimate must lie within `FACTOR` of the counted bytes,
//! for indexes built as a filesystem writes (creation order), in random order (leaves split in
//! the middle), by recovery's bulk build, with tombstones and range deletes, and after most
//! entries were removed again. Counting on one thread only keeps the other tests of this binary
//! (the index module's own unit tests, compiled in with it) out of the figures.
//!
//! The index module is compiled into this binary from its source file, as the benchmark does,
//! since the engine keeps it private.

#[allow(dead_code, unused_imports)]
#[path = "../src/engine/concurrency.rs"]
mod concurrency;
#[allow(dead_code, unused_imports)]
#[path = "../src/engine/index/mod.rs"]
mod index;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};

use index::{Entry, Index, Location, RangeDelete, Update};

/// The estimate may be off by this factor either way. It models glibc's chunk rounding
/// exactly; what it guesses is the nodes of the B-tree maps (of leaves, of range deletes), at
/// two-thirds full where they may be anywhere from half full to full: about 1.5 bytes of the
/// ~37 an entry takes, but most of what a range delete takes (its estimate is 11% low when
/// they are inserted in ascending order, which leaves nodes about half full).
const FACTOR: f64 = 1.2;

/// Bytes per entry the packed layout takes, counted, for filesystem-shaped keys in creation
/// order (the module documentation of the index says about 35; the design's budget for a data
/// record, index and put notes together, is 64).
const MAX_BYTES_PER_ENTRY: f64 = 40.0;

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

/// Bytes held (malloc's view) and bytes asked for, by allocations of the counting thread.
static HELD: AtomicI64 = AtomicI64::new(0);
static ASKED: AtomicI64 = AtomicI64::new(0);

fn counting() -> bool {
    COUNTING.try_with(|c| c.get()).unwrap_or(false)
}

/// What malloc holds for a block: its usable size and the chunk header in front of it.
fn held(ptr: *mut u8) -> i64 {
    // SAFETY: `ptr` is a live block from the system allocator, which is glibc's malloc.
    unsafe { libc::malloc_usable_size(ptr.cast()) as i64 + 8 }
}

// SAFETY: every call is forwarded to the system allocator unchanged; only counters move.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() && counting() {
            HELD.fetch_add(held(ptr), Ordering::Relaxed);
            ASKED.fetch_add(layout.size() as i64, Ordering::Relaxed);
        }
        ptr
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if counting() {
            HELD.fetch_sub(held(ptr), Ordering::Relaxed);
            ASKED.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        }
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let before = if counting() { held(ptr) } else { 0 };
        // SAFETY: forwarded as is.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() && counting() {
            HELD.fetch_add(held(new) - before, Ordering::Relaxed);
            ASKED.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `build` with this thread's allocations counted; returns what it left allocated
/// (held, asked) with its result.
fn counted<T>(build: impl FnOnce() -> T) -> (T, i64, i64) {
    let (held0, asked0) = (HELD.load(Ordering::Relaxed), ASKED.load(Ordering::Relaxed));
    COUNTING.with(|c| c.set(true));
    let out = build();
    COUNTING.with(|c| c.set(false));
    (
        out,
        HELD.load(Ordering::Relaxed) - held0,
        ASKED.load(Ordering::Relaxed) - asked0,
    )
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Filesystem-shaped keys in creation order: per file an inode key, a directory entry key
/// (parent and a 56-bit name hash) and 1 or 32 data-page keys.
fn fs_keys(files: u64) -> Vec<Vec<u8>> {
    let mut keys = Vec::new();
    for f in 0..files {
        let ino = 1000 + f;
        let mut k = vec![b'I'];
        k.extend_from_slice(&ino.to_be_bytes());
        keys.push(k);
        let mut k = vec![b'D'];
        k.extend_from_slice(&(2 + f % 50).to_be_bytes());
        k.extend_from_slice(&(mix(f) >> 8).max(1).to_be_bytes()[1..]);
        keys.push(k);
        for p in 0..if f % 2 == 0 { 1 } else { 32 } {
            let mut k = vec![b'C'];
            k.extend_from_slice(&ino.to_be_bytes());
            k.extend_from_slice(&(p as u64).to_be_bytes());
            keys.push(k);
        }
    }
    keys
}

fn entry(i: u64, tombstone: bool) -> Entry {
    Entry {
        location: Location {
            segment: (i / 8000) as u32,
            offset: ((i % 8000) * 130) as u32,
            len: 130,
        },
        version: (i + 1) << 16,
        group: 0,
        tombstone,
    }
}

fn insert_all(index: &Index, keys: &[Vec<u8>]) {
    for (i, k) in keys.iter().enumerate() {
        index.apply(
            &Update::Point {
                key: k.clone(),
                entry: entry(i as u64, i % 7 == 3),
            },
            &[],
        );
    }
}

/// Checks `estimate`, of `count` entries of `index`, against `held` and `asked`, the bytes
/// counted for them.
fn check_part(what: &str, count: usize, estimate: usize, held: i64, asked: i64) {
    let (estimate, held, asked) = (estimate as f64, held as f64, asked as f64);
    let each = |b: f64| b / count.max(1) as f64;
    eprintln!(
        "{what}: {count} entries: estimate {:.1} B each, counted {:.1} B (asked for {:.1} B)",
        each(estimate),
        each(held),
        each(asked)
    );
    assert!(
        estimate <= held * FACTOR && estimate * FACTOR >= held,
        "{what}: estimated {estimate} heap bytes, counted {held} held by malloc ({asked} asked \
         for): not within a factor of {FACTOR}"
    );
}

/// Checks the estimate of `index` against `held` and `asked`, the bytes counted for it.
fn check(what: &str, index: &Index, held: i64, asked: i64) {
    check_part(what, index.len(), index.heap_bytes(), held, asked);
}

#[test]
fn heap_estimate_is_within_a_factor_of_the_bytes_allocated() {
    let keys = fs_keys(12_000);

    let (index, held, asked) = counted(|| {
        let index = Index::default();
        insert_all(&index, &keys);
        index
    });
    assert_eq!(index.len(), keys.len());
    check("creation order", &index, held, asked);
    let per_entry = held as f64 / index.len() as f64;
    assert!(
        per_entry < MAX_BYTES_PER_ENTRY,
        "{per_entry:.1} bytes per entry counted"
    );
    // Most entries removed again (compaction dropping tombstones, deletes of whole files):
    // leaves shrink and merge.
    let ((), held_after, asked_after) = counted(|| {
        for (i, k) in keys.iter().enumerate() {
            if i % 10 != 0 {
                let e = entry(i as u64, i % 7 == 3);
                assert!(index.remove_if_at(k, e.location));
            }
        }
    });
    check(
        "after removing nine entries in ten",
        &index,
        held + held_after,
        asked + asked_after,
    );
    drop(index);

    let mut shuffled = keys.clone();
    for i in (1..shuffled.len()).rev() {
        shuffled.swap(i, (mix(i as u64) % (i as u64 + 1)) as usize);
    }
    let (index, held, asked) = counted(|| {
        let index = Index::default();
        insert_all(&index, &shuffled);
        index
    });
    check("random order", &index, held, asked);
    drop(index);

    // Recovery's bulk build consumes its input map: count from before the map is built, so
    // that its freed keys and nodes cancel out.
    let (index, held, asked) = counted(|| {
        let points: BTreeMap<Box<[u8]>, Entry> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.clone().into_boxed_slice(), entry(i as u64, i % 7 == 3)))
            .collect();
        Index::from_recovered(points, Vec::new())
    });
    check("bulk build", &index, held, asked);

    // Range deletes (truncates and unlinks of files whose pages are gone), over inodes that
    // have no entries so that they displace nothing; checked on their own too, since they are
    // few beside the points.
    let points_estimate = index.heap_bytes();
    let ((), held_ranges, asked_ranges) = counted(|| {
        for r in 0..2_000u64 {
            let ino = 1_000_000 + r;
            let mut start = vec![b'C'];
            start.extend_from_slice(&ino.to_be_bytes());
            let mut end = start.clone();
            end.extend_from_slice(&u64::MAX.to_be_bytes());
            index.apply(
                &Update::Range(RangeDelete {
                    start,
                    end,
                    version: (10_000_000 + r) << 16,
                    location: entry(r, false).location,
                    group: 0,
                }),
                &[],
            );
        }
    });
    assert_eq!(index.range_delete_count(), 2_000);
    check_part(
        "range deletes alone",
        index.range_delete_count(),
        index.heap_bytes() - points_estimate,
        held_ranges,
        asked_ranges,
    );
    check(
        "bulk build and range deletes",
        &index,
        held + held_ranges,
        asked + asked_ranges,
    );
}
