//! In-memory index benchmark (issue 7): memory per entry (the index's own estimate and real RSS),
//! insert, lookup and bulk-build (recovery) rates, for filesystem-shaped keys.
//!
//! Not a test: nothing here passes or fails on a number. Run
//!
//! ```text
//! cargo bench --bench index_memory                 # 1,000,000 entries
//! cargo bench --bench index_memory -- --n 200000   # fewer
//! cargo bench --bench index_memory -- --names      # dirent keys with names, not hashes
//! ```
//!
//! The key mix is a third each of inode keys (`I ino`), directory entry keys (`D parent hash`,
//! the real layout: a 56-bit name hash; with `--names`, `D parent name` with 10 to 20-byte names,
//! which share less and are longer, like xattr keys) and data-page keys (`C ino page`: half of
//! them the single page of a small file, half runs of 128 pages of larger files). Records are
//! inserted in creation order (per file: inode, entry, pages; directory entries land at random
//! places within their directory), as a filesystem writes them.
//!
//! The index module is compiled into this binary from its source file (it depends on nothing
//! but `std` and `parking_lot`), since the engine keeps it private.
//!
//! RSS is read from `/proc/self/statm` after `malloc_trim(0)`, before and after building; keys
//! are regenerated from their number rather than kept, so the delta is the index alone.

#[allow(dead_code, unused_imports)]
#[path = "../src/engine/concurrency.rs"]
mod concurrency;
#[allow(dead_code, unused_imports)]
#[path = "../src/engine/index/mod.rs"]
mod index;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use index::{Entry, Index, Location, Update};

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const DIRS: u64 = 330;
const BIG_FILE_PAGES: u64 = 128;

/// The shape of the store: `files` files, each with an inode and a directory entry; the first
/// half hold one page each, the rest of the page budget goes to files of 128 pages.
struct Shape {
    n: u64,
    names: bool,
}

impl Shape {
    fn per_kind(&self) -> u64 {
        self.n / 3
    }
    fn small_files(&self) -> u64 {
        self.per_kind() / 2
    }
    /// Pages of file `f` (files numbered from 0).
    fn pages_of(&self, f: u64) -> u64 {
        let small = self.small_files();
        if f < small {
            1
        } else {
            let big_pages = self.per_kind() - small;
            let big_files = big_pages.div_ceil(BIG_FILE_PAGES);
            let j = f - small;
            if j < big_files {
                BIG_FILE_PAGES.min(big_pages - j * BIG_FILE_PAGES)
            } else {
                0
            }
        }
    }
    fn ino(&self, f: u64) -> u64 {
        1000 + f
    }
    fn dirent_key(&self, f: u64) -> Vec<u8> {
        let parent = 2 + f % DIRS;
        let mut k = vec![b'D'];
        k.extend_from_slice(&parent.to_be_bytes());
        if self.names {
            let len = 10 + (mix(f ^ 0x55) % 11) as usize;
            k.extend(format!("file-{f:015}").bytes().rev().take(len));
        } else {
            k.extend_from_slice(&(mix(f) >> 8).max(1).to_be_bytes());
        }
        k
    }
    /// Every key in creation order.
    fn for_each_key(&self, mut f: impl FnMut(Vec<u8>)) {
        for file in 0..self.per_kind() {
            let ino = self.ino(file);
            let mut k = vec![b'I'];
            k.extend_from_slice(&ino.to_be_bytes());
            f(k);
            f(self.dirent_key(file));
            for p in 0..self.pages_of(file) {
                let mut k = vec![b'C'];
                k.extend_from_slice(&ino.to_be_bytes());
                k.extend_from_slice(&p.to_be_bytes());
                f(k);
            }
        }
    }
    /// A key of the store picked by `r` (for lookups): any of the three kinds.
    fn some_key(&self, r: u64) -> Vec<u8> {
        let file = (r >> 2) % self.per_kind();
        match r % 3 {
            0 => {
                let mut k = vec![b'I'];
                k.extend_from_slice(&self.ino(file).to_be_bytes());
                k
            }
            1 => self.dirent_key(file),
            _ => {
                // A page of some file that has pages.
                let mut file = file;
                while self.pages_of(file) == 0 {
                    file /= 2;
                }
                let mut k = vec![b'C'];
                k.extend_from_slice(&self.ino(file).to_be_bytes());
                k.extend_from_slice(&((r >> 40) % self.pages_of(file)).to_be_bytes());
                k
            }
        }
    }
}

fn entry(i: u64) -> Entry {
    Entry {
        location: Location {
            segment: (i / 8000) as u32,
            offset: ((i % 8000) * 130) as u32,
            len: 130,
        },
        version: (i + 1) << 16,
        group: 0,
        tombstone: false,
    }
}

fn rss_bytes() -> u64 {
    // SAFETY: glibc call without preconditions.
    unsafe { libc::malloc_trim(0) };
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf without preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mut n: u64 = 1_000_000;
    let mut names = false;
    let mut i = 1;
    while i < args.len() {
        match args[i].as_str() {
            "--n" => {
                i += 1;
                n = args.get(i).and_then(|v| v.parse().ok()).expect("--n N");
            }
            "--names" => names = true,
            _ => {} // cargo bench passes --bench
        }
        i += 1;
    }
    let shape = Shape { n, names };

    // Insert in creation order.
    let rss0 = rss_bytes();
    let index = Index::default();
    let start = Instant::now();
    let mut count = 0u64;
    shape.for_each_key(|k| {
        index.apply(
            &Update::Point {
                key: k,
                entry: entry(count),
            },
            &[],
        );
        count += 1;
    });
    let insert_secs = start.elapsed().as_secs_f64();
    let rss1 = rss_bytes();
    let len = index.len() as f64;
    let heap = index.heap_bytes() as f64;

    // Random lookups (every one hits).
    let lookups = 1_000_000u64;
    let keys: Vec<Vec<u8>> = (0..lookups).map(|r| shape.some_key(mix(r))).collect();
    let start = Instant::now();
    let mut found = 0u64;
    for k in &keys {
        found += u64::from(index.get(k).is_some());
    }
    let get_secs = start.elapsed().as_secs_f64();
    assert_eq!(found, lookups, "every lookup key is in the index");
    drop(keys);

    // Full scan in pages of 1000 (readdir-like).
    let start = Instant::now();
    let mut scanned = 0usize;
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = index.scan(b"", b"", after.as_deref(), 1000);
        if page.is_empty() {
            break;
        }
        scanned += page.len();
        after = page.last().map(|(k, _)| k.clone());
    }
    let scan_secs = start.elapsed().as_secs_f64();

    // A checkpoint's snapshot of the whole index (`entries`, one hold of the read lock) while
    // a writer keeps updating existing keys: the writer's longest update is how long a user
    // write can wait behind a checkpoint. The same writer alone for as long, for comparison.
    let worst_update = |with_snapshot: bool| {
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            let writer = s.spawn(|| {
                let (mut worst, mut r) = (Duration::ZERO, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    let key = shape.some_key(mix(r ^ 0x5eed));
                    let started = Instant::now();
                    index.apply(
                        &Update::Point {
                            key,
                            entry: entry(count + r),
                        },
                        &[],
                    );
                    worst = worst.max(started.elapsed());
                    r += 1;
                }
                worst
            });
            std::thread::sleep(Duration::from_millis(20));
            let started = Instant::now();
            if with_snapshot {
                let snapshot = index.snapshot();
                assert_eq!(
                    snapshot.points().count(),
                    len as usize,
                    "updates of existing keys only"
                );
            } else {
                std::thread::sleep(Duration::from_millis(300));
            }
            let took = started.elapsed();
            std::thread::sleep(Duration::from_millis(20));
            stop.store(true, Ordering::Relaxed);
            (took, writer.join().unwrap())
        })
    };
    let (snapshot_took, worst_with) = worst_update(true);
    let (_, worst_without) = worst_update(false);
    drop(index);

    // Bulk build from sorted entries, as recovery does.
    let mut points: BTreeMap<Box<[u8]>, Entry> = BTreeMap::new();
    let mut c = 0u64;
    shape.for_each_key(|k| {
        points.insert(k.into_boxed_slice(), entry(c));
        c += 1;
    });
    let rss2 = rss_bytes();
    let start = Instant::now();
    let recovered = Index::from_recovered(points, Vec::new());
    let bulk_secs = start.elapsed().as_secs_f64();
    let rss3 = rss_bytes();
    // For comparison: what freeing such a map costs (from_recovered consumes its input).
    let mut other: BTreeMap<Box<[u8]>, Entry> = BTreeMap::new();
    let mut c = 0u64;
    shape.for_each_key(|k| {
        other.insert(k.into_boxed_slice(), entry(c));
        c += 1;
    });
    let start = Instant::now();
    drop(other);
    let drop_secs = start.elapsed().as_secs_f64();
    let bulk_heap = recovered.heap_bytes() as f64 / recovered.len() as f64;
    drop(recovered);
    let rss4 = rss_bytes();

    println!(
        "index_memory: {} entries ({} dirent keys), {} keys scanned",
        len as u64,
        if names { "named" } else { "hashed" },
        scanned
    );
    println!("| figure | value |");
    println!("|---|---|");
    println!("| heap_bytes()/len() after inserts | {:.1} B |", heap / len);
    println!(
        "| RSS delta per entry after inserts | {:.1} B |",
        rss1.saturating_sub(rss0) as f64 / len
    );
    println!("| heap_bytes()/len() after bulk build | {bulk_heap:.1} B |");
    println!(
        "| RSS per entry after bulk build (index alone, measured as it is dropped) | {:.1} B |",
        rss3.saturating_sub(rss4) as f64 / len
    );
    println!(
        "| RSS delta across bulk build (input map consumed) | {:.1} B |",
        rss3 as f64 / len - rss2 as f64 / len
    );
    println!("| inserts/s (creation order) | {:.0} |", len / insert_secs);
    println!(
        "| gets/s (random, one thread) | {:.0} |",
        lookups as f64 / get_secs
    );
    println!(
        "| scan entries/s (pages of 1000) | {:.0} |",
        scanned as f64 / scan_secs
    );
    println!(
        "| checkpoint snapshot (`entries`) of the whole index | {:.1} ms |",
        snapshot_took.as_secs_f64() * 1e3
    );
    println!(
        "| a writer's longest update during it (alone: over 300 ms) | {:.1} ms ({:.1} ms) |",
        worst_with.as_secs_f64() * 1e3,
        worst_without.as_secs_f64() * 1e3
    );
    println!(
        "| bulk build entries/s (from_recovered) | {:.0} |",
        len / bulk_secs.max(1e-9)
    );
    println!(
        "| (for comparison: freeing a BTreeMap of boxed keys of that size, which the bulk build does) | {:.0} ms |",
        drop_secs * 1e3
    );
}
