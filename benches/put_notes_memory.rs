//! Put notes benchmark (issue 7): memory per put record of `tombstones::PutNotes` (its own
//! estimate and real RSS), noting rate and the time of `may_hold_older` checks, for
//! filesystem-shaped keys.
//!
//! Not a test: nothing here passes or fails on a number. Run
//!
//! ```text
//! cargo bench --bench put_notes_memory                        # 1,000,000 puts, 1 MiB segments
//! cargo bench --bench put_notes_memory -- --n 200000 --segment-kib 4096
//! ```
//!
//! The puts are a third each of inode keys (`I ino`), directory entry keys (`D parent hash`,
//! 330 directories) and data pages (`C ino page`: half the single page of a small file, half
//! runs of 128 pages), in creation order; the 9-byte prefix is tracked, as the filesystem does.
//! They fill segments in log order by record size (inode 150 B, entry 80 B, page 4,150 B), one
//! batch per file's inode and entry and one per page, as the log would.
//!
//! Checks: what compaction does for a victim's tombstones (`drop_dead_tombstones`): for point
//! deletes of existing keys and prefix deletes of existing files' pages, ask every segment. The
//! first round also settles whatever notes are still staged (and, in the old design, sorts).
//!
//! The module is compiled into this binary from its source file, since the engine keeps it
//! private. RSS is read from `/proc/self/statm` after `malloc_trim(0)`.

#[allow(dead_code, unused_imports)]
#[path = "../src/engine/concurrency.rs"]
mod concurrency;
#[allow(dead_code)]
#[path = "../src/engine/tombstones.rs"]
mod tombstones;

use std::time::Instant;

/// The one function of the engine module that `tombstones.rs` uses (`super::prefix_successor`).
pub fn prefix_successor(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return end;
        }
    }
    Vec::new()
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const DIRS: u64 = 330;
const BIG_FILE_PAGES: u64 = 128;

struct Shape {
    n: u64,
}

impl Shape {
    fn per_kind(&self) -> u64 {
        self.n / 3
    }
    fn small_files(&self) -> u64 {
        self.per_kind() / 2
    }
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
    fn ino(f: u64) -> u64 {
        1000 + f
    }
    fn inode_key(f: u64) -> Vec<u8> {
        let mut k = vec![b'I'];
        k.extend_from_slice(&Self::ino(f).to_be_bytes());
        k
    }
    fn dirent_key(f: u64) -> Vec<u8> {
        let mut k = vec![b'D'];
        k.extend_from_slice(&(2 + f % DIRS).to_be_bytes());
        k.extend_from_slice(&(mix(f) >> 8).max(1).to_be_bytes());
        k
    }
    fn page_key(f: u64, p: u64) -> Vec<u8> {
        let mut k = vec![b'C'];
        k.extend_from_slice(&Self::ino(f).to_be_bytes());
        k.extend_from_slice(&p.to_be_bytes());
        k
    }
    /// Every put in creation order: (key, record bytes, index in its batch); a new batch
    /// starts at index 0.
    fn for_each_put(&self, mut f: impl FnMut(Vec<u8>, u64, u64)) {
        for file in 0..self.per_kind() {
            f(Self::inode_key(file), 150, 0);
            f(Self::dirent_key(file), 80, 1);
            for p in 0..self.pages_of(file) {
                f(Self::page_key(file, p), 4150, 0);
            }
        }
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
    let mut segment_bytes: u64 = 1 << 20;
    let mut i = 1;
    while i < args.len() {
        match args[i].as_str() {
            "--n" => {
                i += 1;
                n = args.get(i).and_then(|v| v.parse().ok()).expect("--n N");
            }
            "--segment-kib" => {
                i += 1;
                segment_bytes = args
                    .get(i)
                    .and_then(|v| v.parse::<u64>().ok())
                    .expect("--segment-kib K")
                    << 10;
            }
            _ => {} // cargo bench passes --bench
        }
        i += 1;
    }
    let shape = Shape { n };
    // Enough segment slots for the store (a real store has some free ones too).
    let mut total_bytes = 0u64;
    shape.for_each_put(|_, len, _| total_bytes += len);
    let slots = (total_bytes / segment_bytes + 16) as usize;

    let rss0 = rss_bytes();
    let notes = tombstones::PutNotes::new(slots, vec![9]);
    let start = Instant::now();
    let (mut segment, mut used, mut lsn, mut puts) = (0u32, 0u64, 0u64, 0u64);
    shape.for_each_put(|key, len, index_in_batch| {
        if used + len > segment_bytes {
            segment += 1;
            used = 0;
        }
        used += len;
        if index_in_batch == 0 {
            lsn += 1;
        }
        notes.note_put(segment, &key, (lsn << 16) | index_in_batch);
        puts += 1;
    });
    let note_secs = start.elapsed().as_secs_f64();
    let segments = segment as usize + 1;
    let heap1 = notes.heap_bytes();
    let rss1 = rss_bytes();

    // Checks as compaction makes them: every segment is asked about each tombstone.
    let queries = 200u64;
    let mut hashes = Vec::new();
    for q in 0..queries {
        let f = mix(q ^ 0xabc) % shape.per_kind();
        let h = match q % 3 {
            0 => notes.point_hash(&Shape::inode_key(f)),
            1 => notes.point_hash(&Shape::dirent_key(f)),
            _ => {
                let start = Shape::page_key(f, 0);
                let end = prefix_successor(&start[..9]);
                notes.range_hash(&start, &end).expect("tracked prefix")
            }
        };
        hashes.push(h);
    }
    let tomb_version = (lsn + 1) << 16;
    let mut round_secs = Vec::new();
    let mut held = 0u64;
    for _round in 0..3 {
        let start = Instant::now();
        held = 0;
        for &h in &hashes {
            for s in 0..segments as u32 {
                held += u64::from(notes.may_hold_older(s, h, tomb_version));
            }
        }
        round_secs.push(start.elapsed().as_secs_f64());
    }
    let checks = (queries * segments as u64) as f64;
    let heap2 = notes.heap_bytes();
    let rss2 = rss_bytes();
    drop(notes);
    let rss3 = rss_bytes();

    let p = puts as f64;
    println!(
        "put_notes_memory: {puts} puts over {segments} segments of {} KiB, {queries} tombstones checked against every segment ({held} segment hits)",
        segment_bytes >> 10
    );
    println!("| figure | value |");
    println!("|---|---|");
    println!(
        "| heap_bytes() per put after noting | {:.1} B |",
        heap1 as f64 / p
    );
    println!(
        "| RSS delta per put after noting | {:.1} B |",
        rss1.saturating_sub(rss0) as f64 / p
    );
    println!(
        "| heap_bytes() per put after the checks | {:.1} B |",
        heap2 as f64 / p
    );
    println!(
        "| RSS per put after the checks (measured as the notes are dropped) | {:.1} B |",
        rss2.saturating_sub(rss3) as f64 / p
    );
    println!("| note_put rate | {:.0} /s |", p / note_secs);
    println!(
        "| may_hold_older, first round (settles/sorts) | {:.0} ns per check |",
        round_secs[0] * 1e9 / checks
    );
    println!(
        "| may_hold_older, later rounds | {:.0} ns per check |",
        round_secs[1..].iter().sum::<f64>() / 2.0 * 1e9 / checks
    );
}
