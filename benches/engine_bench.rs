//! Engine benchmark (issue 2 item 12): write and read throughput, open (recovery) time and index
//! memory per record of the storage engine, printed as markdown tables.
//!
//! Not a test: nothing here passes or fails on a number. Run
//!
//! ```text
//! cargo bench --bench engine_bench -- --quick    # seconds
//! cargo bench --bench engine_bench               # full mode, a few minutes
//! ```
//!
//! Options: `--quick`, `--dir <path>` (where the temporary stores go; default
//! `target/engine-bench`, which must be on a real disk, not tmpfs).
//!
//! `--write-rounds N` (issue 20, thread scaling) runs only the write cases, N rounds of them:
//! within a round every (value size, batch) case is written at 1, 4 and 16 threads, one after
//! the other (the order reversed every other round, so that no thread count always comes
//! first), each on a fresh store and in a child process of its own (this binary re-run with
//! `--child-write`), because in one process a case's figure depended on the cases before it: one
//! writer of 4 KiB values ran 1.3 to 2.4 times as fast after that case's 4 and 16 writers as
//! after 16 writers of 100 B values, so the per-round 4t/1t followed the round's order (1.5 to
//! 1.9 in one, 0.8 to 1.0 in the other). It prints one line per case and round,
//! then a table per (value size, batch): the median records/s at each thread count, and the
//! median of the per-round ratios 4t/1t and 16t/4t with their min..max. Use 7 rounds or more:
//!
//! ```text
//! cargo bench --bench engine_bench -- --write-rounds 7
//! ```
//!
//! With it, `--round-offset K` numbers the rounds from K + 1 (the thread order of round K + 1
//! is used first): for comparing two binaries one round at a time, alternately. And
//! `--only SIZE:BATCH:THREADS` (e.g. `100:64:4`) writes just that case, N times, and
//! prints its records/s: for profiling one case under `perf`.
//!
//! The open and memory figures come from a child process (this binary re-run with
//! `--child-open <store>`), so that the RSS delta across `Engine::open` is not blurred by memory
//! the earlier phases freed.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use logstorfs::engine::{Engine, EngineOptions, Mutation, ROOT_GROUP};

const KIB: usize = 1024;
const MIB: f64 = 1024.0 * 1024.0;
const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// Scale of one run.
struct Plan {
    quick: bool,
    /// Bytes of values written per write case (for the larger values).
    write_bytes: usize,
    /// Records written per 100 B write case.
    small_records: usize,
    /// Point gets per read case (all threads together).
    read_ops: usize,
    /// Records of the "1M small records" open and memory case.
    open_records: usize,
    /// Bytes of 64 KiB values of the "1 GiB" open case.
    open_bytes: usize,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                quick,
                write_bytes: 32 << 20,
                small_records: 30_000,
                read_ops: 40_000,
                open_records: 100_000,
                open_bytes: 64 << 20,
            }
        } else {
            Plan {
                quick,
                write_bytes: 256 << 20,
                small_records: 300_000,
                read_ops: 400_000,
                open_records: 1_000_000,
                open_bytes: 1 << 30,
            }
        }
    }

    fn records_for(&self, value_size: usize) -> usize {
        if value_size <= 1024 {
            self.small_records
        } else {
            (self.write_bytes / value_size).max(64)
        }
    }
}

/// A filesystem-like key: tag byte, then two big-endian u64 (like a data chunk: inode, page).
fn key(tag: u8, a: u64, b: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.push(tag);
    k.extend_from_slice(&a.to_be_bytes());
    k.extend_from_slice(&b.to_be_bytes());
    k
}

fn value(size: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn options(capacity: u64) -> EngineOptions {
    EngineOptions {
        capacity_bytes: capacity,
        ..EngineOptions::default()
    }
}

fn fresh_dir(base: &Path, name: &str) -> PathBuf {
    let dir = base.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create store directory");
    dir
}

fn capacity_for(bytes: usize) -> u64 {
    // Room for the data, its headers and the reserve; rounded up to whole GiB.
    let need = (bytes as f64 * 1.3) as u64 + (256 << 20);
    need.div_ceil(1 << 30) * (1 << 30)
}

/// The value sizes and records per batch of the write cases.
fn write_cases() -> Vec<(usize, usize)> {
    vec![(100, 1), (100, 64), (4 * KIB, 1), (64 * KIB, 1)]
}

/// One write case on a fresh store: records written and seconds (final sync included).
fn write_case(
    plan: &Plan,
    base: &Path,
    size: usize,
    per_batch: usize,
    threads: usize,
) -> (usize, f64) {
    let records = plan.records_for(size);
    let dir = fresh_dir(base, "write");
    let engine = Engine::open(&dir, &options(capacity_for(records * (size + 64)))).expect("open");
    let secs = write_phase(&engine, threads, records, size, per_batch);
    engine.close().expect("close");
    (records.div_ceil(threads) * threads, secs)
}

/// [`write_case`] in a child process (this binary with `--child-write`), so that no case
/// inherits an earlier case's heap.
fn write_case_in_child(
    plan: &Plan,
    base: &Path,
    size: usize,
    per_batch: usize,
    threads: usize,
) -> (usize, f64) {
    let mut cmd = Command::new(std::env::current_exe().expect("current exe"));
    cmd.arg("--child-write")
        .arg(format!("{size}:{per_batch}:{threads}"))
        .arg("--dir")
        .arg(base);
    if plan.quick {
        cmd.arg("--quick");
    }
    let f = child_line(&mut cmd, "WRITE ");
    (f[1].parse().unwrap(), f[2].parse().unwrap())
}

/// Runs `cmd` (this binary as a child) and returns the words of its output line that starts
/// with `tag`.
fn child_line(cmd: &mut Command, tag: &str) -> Vec<String> {
    let out = cmd.output().expect("run child");
    assert!(
        out.status.success(),
        "child failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with(tag))
        .expect("child output");
    line.split_whitespace().map(str::to_string).collect()
}

/// `SIZE:BATCH:THREADS` of `--only` and `--child-write`.
fn parse_case(arg: &str) -> (usize, usize, usize) {
    let f: Vec<usize> = arg
        .split(':')
        .map(|n| n.parse().expect("a case is SIZE:BATCH:THREADS"))
        .collect();
    assert_eq!(f.len(), 3, "a case is SIZE:BATCH:THREADS");
    (f[0], f[1], f[2])
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn spread(v: &[f64]) -> String {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{:.2} ({lo:.2}..{hi:.2})", median(v))
}

/// `--write-rounds N`: the write cases only, N alternating rounds, medians and per-round ratios.
fn write_rounds(plan: &Plan, base: &Path, rounds: usize, offset: usize) {
    const THREADS: [usize; 3] = [1, 4, 16];
    let cases = write_cases();
    // rates[case][thread index][round]: records/s.
    let mut rates = vec![vec![Vec::with_capacity(rounds); THREADS.len()]; cases.len()];
    say(&format!(
        "\n### Write thread scaling, {rounds} rounds (final sync included)\n"
    ));
    say("| round | value | batch | threads | records | records/s |");
    say("|---|---|---|---|---|---|");
    for round in offset..offset + rounds {
        for (c, &(size, per_batch)) in cases.iter().enumerate() {
            let order: Vec<usize> = if round % 2 == 0 {
                (0..THREADS.len()).collect()
            } else {
                (0..THREADS.len()).rev().collect()
            };
            for ti in order {
                let threads = THREADS[ti];
                let (written, secs) = write_case_in_child(plan, base, size, per_batch, threads);
                let rps = written as f64 / secs;
                rates[c][ti].push(rps);
                say(&format!(
                    "| {} | {} | {per_batch} | {threads} | {written} | {rps:.0} |",
                    round + 1,
                    size_name(size)
                ));
            }
        }
    }
    say(&format!(
        "\n| value | batch | records/s 1t | 4t | 16t | 4t/1t median (min..max of {rounds}) | 16t/4t median (min..max) |"
    ));
    say("|---|---|---|---|---|---|---|");
    for (c, &(size, per_batch)) in cases.iter().enumerate() {
        let r = &rates[c];
        let ratio = |a: usize, b: usize| -> Vec<f64> {
            r[a].iter().zip(&r[b]).map(|(x, y)| x / y).collect()
        };
        say(&format!(
            "| {} | {per_batch} | {:.0} | {:.0} | {:.0} | {} | {} |",
            size_name(size),
            median(&r[0]),
            median(&r[1]),
            median(&r[2]),
            spread(&ratio(1, 0)),
            spread(&ratio(2, 1)),
        ));
    }
    let _ = std::fs::remove_dir_all(base.join("write"));
}

/// Writes `records` records of `size` bytes from `threads` threads, `per_batch` records per
/// batch, then syncs. Returns seconds, sync included.
fn write_phase(
    engine: &Engine,
    threads: usize,
    records: usize,
    size: usize,
    per_batch: usize,
) -> f64 {
    let per_thread = records.div_ceil(threads);
    let template = value(size, size as u64);
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let template = &template;
            s.spawn(move || {
                let mut i = 0;
                while i < per_thread {
                    let n = per_batch.min(per_thread - i);
                    let batch: Vec<Mutation> = (i..i + n)
                        .map(|j| {
                            Mutation::put(
                                ROOT_GROUP,
                                key(b'C', t as u64, j as u64),
                                template.clone(),
                            )
                        })
                        .collect();
                    engine.write(&batch).expect("write");
                    i += n;
                }
            });
        }
    });
    engine.sync().expect("sync");
    start.elapsed().as_secs_f64()
}

/// Random point gets of keys written by `write_phase(.., writers, records, ..)`. Seconds.
fn read_phase(
    engine: &Engine,
    threads: usize,
    ops: usize,
    writers: usize,
    records: usize,
    size: usize,
) -> f64 {
    let per_writer = records.div_ceil(writers) as u64;
    let per_thread = ops.div_ceil(threads);
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || {
                let mut rng = Rng(0x1234_5678 + t as u64 * 7919);
                for _ in 0..per_thread {
                    let w = rng.next() % writers as u64;
                    let j = rng.next() % per_writer;
                    let v = engine
                        .get(&key(b'C', w, j))
                        .expect("get")
                        .expect("key present");
                    assert_eq!(v.len(), size);
                }
            });
        }
    });
    start.elapsed().as_secs_f64()
}

fn fmt_rate(records: usize, bytes: usize, secs: f64) -> (String, String) {
    (
        format!("{:.1}", bytes as f64 / MIB / secs),
        format!("{:.0}", records as f64 / secs),
    )
}

fn size_name(size: usize) -> String {
    if size >= KIB {
        format!("{} KiB", size / KIB)
    } else {
        format!("{size} B")
    }
}

fn vm_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Drops the store's files from the page cache (they are clean after close), so that the next
/// open reads from the disk.
fn evict(dir: &Path) {
    use std::os::fd::AsRawFd;
    for entry in std::fs::read_dir(dir).expect("read store dir").flatten() {
        if let Ok(f) = std::fs::File::open(entry.path()) {
            // SAFETY: advice on a descriptor we own.
            unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        }
    }
}

/// Child: open the store, report time, RSS delta and index figures on one line.
fn child_open(dir: &Path) {
    let rss_before = vm_rss_kib();
    let start = Instant::now();
    let engine = Engine::open(
        dir,
        &EngineOptions {
            create_if_missing: false,
            ..EngineOptions::default()
        },
    )
    .expect("reopen");
    let secs = start.elapsed().as_secs_f64();
    let rss_after = vm_rss_kib();
    // Hand memory that recovery freed back to the kernel, so that the second figure is what the
    // open engine keeps.
    // SAFETY: glibc call without preconditions.
    unsafe { libc::malloc_trim(0) };
    let rss_trimmed = vm_rss_kib();
    let st = engine.stats();
    let rep = engine.recovery_report();
    println!(
        "OPEN {secs} {} {} {} {} {} {} {}",
        rss_after.saturating_sub(rss_before) * 1024,
        st.index_entries,
        st.index_bytes,
        st.live_bytes,
        rep.records_accepted,
        rep.segments_scanned,
        rss_trimmed.saturating_sub(rss_before) * 1024,
    );
    engine.close().expect("close");
}

struct OpenResult {
    secs: f64,
    rss_delta: u64,
    rss_trimmed: u64,
    entries: u64,
    index_bytes: u64,
    live_bytes: u64,
    segments: u64,
}

fn open_in_child(dir: &Path) -> OpenResult {
    let mut cmd = Command::new(std::env::current_exe().expect("current exe"));
    cmd.arg("--child-open").arg(dir);
    let f = child_line(&mut cmd, "OPEN ");
    OpenResult {
        secs: f[1].parse().unwrap(),
        rss_delta: f[2].parse().unwrap(),
        entries: f[3].parse().unwrap(),
        index_bytes: f[4].parse().unwrap(),
        live_bytes: f[5].parse().unwrap(),
        segments: f[7].parse().unwrap(),
        rss_trimmed: f[8].parse().unwrap(),
    }
}

fn loadavg() -> String {
    let l = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    l.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

fn say(s: &str) {
    println!("{s}");
    let _ = std::io::stdout().flush();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child-open") {
        child_open(Path::new(&args[i + 1]));
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let base = match args.iter().position(|a| a == "--dir") {
        Some(i) => PathBuf::from(&args[i + 1]),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/engine-bench"),
    };
    std::fs::create_dir_all(&base).expect("create bench directory");
    let plan = Plan::new(quick);
    if let Some(i) = args.iter().position(|a| a == "--child-write") {
        let (size, per_batch, threads) = parse_case(&args[i + 1]);
        let (written, secs) = write_case(&plan, &base, size, per_batch, threads);
        println!("WRITE {written} {secs}");
        return;
    }
    let total = Instant::now();
    say(&format!("load average at the start: {}", loadavg()));
    say(&format!(
        "engine_bench: {} mode, stores under {} (default EngineOptions: 1 MiB segments, background sync 5 s)",
        if plan.quick { "quick" } else { "full" },
        base.display()
    ));
    if let Some(i) = args.iter().position(|a| a == "--write-rounds") {
        let rounds: usize = args
            .get(i + 1)
            .and_then(|n| n.parse().ok())
            .filter(|&n| n > 0)
            .expect("--write-rounds takes a number of rounds");
        if let Some(j) = args.iter().position(|a| a == "--only") {
            let (size, per_batch, threads) = parse_case(&args[j + 1]);
            for _ in 0..rounds {
                let (written, secs) = write_case(&plan, &base, size, per_batch, threads);
                say(&format!("{} records/s", (written as f64 / secs) as u64));
            }
        } else {
            let offset = match args.iter().position(|a| a == "--round-offset") {
                Some(j) => args[j + 1].parse().expect("--round-offset takes a number"),
                None => 0,
            };
            write_rounds(&plan, &base, rounds, offset);
        }
        say(&format!(
            "\ntotal {:.0} s; load average at the end: {}",
            total.elapsed().as_secs_f64(),
            loadavg()
        ));
        return;
    }

    // --- write throughput ---
    say("\n### Write throughput (final sync included)\n");
    say("| value | batch | threads | records | MB/s | records/s |");
    say("|---|---|---|---|---|---|");
    let sizes = [100usize, 4 * KIB, 64 * KIB];
    for (size, per_batch) in write_cases() {
        let records = plan.records_for(size);
        for threads in [1usize, 4, 16] {
            let dir = fresh_dir(&base, "write");
            let engine =
                Engine::open(&dir, &options(capacity_for(records * (size + 64)))).expect("open");
            let secs = write_phase(&engine, threads, records, size, per_batch);
            let written = records.div_ceil(threads) * threads;
            let (mbs, rps) = fmt_rate(written, written * size, secs);
            say(&format!(
                "| {} | {per_batch} | {threads} | {written} | {mbs} | {rps} |",
                size_name(size)
            ));
            engine.close().expect("close");
        }
    }

    // --- read throughput ---
    say("\n### Read throughput (random point gets, warm page cache)\n");
    say("| value | threads | gets | MB/s | gets/s |");
    say("|---|---|---|---|---|");
    for &size in &sizes {
        let records = plan.records_for(size);
        let dir = fresh_dir(&base, "read");
        let engine =
            Engine::open(&dir, &options(capacity_for(records * (size + 64)))).expect("open");
        write_phase(&engine, 4, records, size, if size <= 1024 { 64 } else { 1 });
        // Warm-up: every record once (page cache, allocator).
        read_phase(&engine, 1, records.min(plan.read_ops), 4, records, size);
        for threads in [1usize, 4] {
            let ops = if size >= 64 * KIB {
                plan.read_ops / 8
            } else {
                plan.read_ops
            };
            let secs = read_phase(&engine, threads, ops, 4, records, size);
            let done = ops.div_ceil(threads) * threads;
            let (mbs, rps) = fmt_rate(done, done * size, secs);
            say(&format!(
                "| {} | {threads} | {done} | {mbs} | {rps} |",
                size_name(size)
            ));
        }
        engine.close().expect("close");
    }

    // --- open (recovery) time and index memory ---
    say("\n### Open (recovery) time and index memory (each open in a fresh process)\n");
    say(
        "| store | records | live MiB | segments | open warm s, median (min..max of 3) | open cold s, median (min..max of 3) | s per GiB (cold) | s per 1M records (cold) | RSS delta B/record | after malloc_trim | index_bytes/entry |",
    );
    say("|---|---|---|---|---|---|---|---|---|---|---|");
    let open_cases = [
        ("100 B values, 17 B keys", 100usize, plan.open_records),
        ("64 KiB values", 64 * KIB, plan.open_bytes / (64 * KIB)),
    ];
    for (name, size, records) in open_cases {
        let dir = fresh_dir(&base, "open");
        let engine =
            Engine::open(&dir, &options(capacity_for(records * (size + 64)))).expect("open");
        let write_secs = write_phase(&engine, 2, records, size, if size <= 1024 { 64 } else { 2 });
        engine.close().expect("close");
        // Three opens of each kind; the table shows the median (min..max beside it).
        let mut warms: Vec<OpenResult> = (0..3).map(|_| open_in_child(&dir)).collect();
        let mut colds: Vec<OpenResult> = (0..3)
            .map(|_| {
                evict(&dir);
                open_in_child(&dir)
            })
            .collect();
        warms.sort_by(|a, b| a.secs.total_cmp(&b.secs));
        colds.sort_by(|a, b| a.secs.total_cmp(&b.secs));
        let spread = |v: &[OpenResult]| format!("{:.2}..{:.2}", v[0].secs, v[2].secs);
        let (warm_spread, cold_spread) = (spread(&warms), spread(&colds));
        let warm = warms.swap_remove(1);
        let cold = colds.swap_remove(1);
        assert_eq!(
            cold.entries as usize,
            records.div_ceil(2) * 2,
            "all records recovered"
        );
        let gib = cold.live_bytes as f64 / GIB;
        say(&format!(
            "| {name} | {} | {:.0} | {} | {:.2} ({warm_spread}) | {:.2} ({cold_spread}) | {:.2} | {:.2} | {:.1} | {:.1} | {:.1} |",
            cold.entries,
            cold.live_bytes as f64 / MIB,
            cold.segments,
            warm.secs,
            cold.secs,
            cold.secs / gib,
            cold.secs / (cold.entries as f64 / 1e6),
            warm.rss_delta as f64 / warm.entries as f64,
            warm.rss_trimmed as f64 / warm.entries as f64,
            warm.index_bytes as f64 / warm.entries as f64,
        ));
        eprintln!(
            "  (store written in {write_secs:.1} s; cold RSS delta {:.1} B/record)",
            cold.rss_delta as f64 / cold.entries as f64
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
    let _ = std::fs::remove_dir_all(base.join("write"));
    let _ = std::fs::remove_dir_all(base.join("read"));
    say(&format!(
        "\ntotal {:.0} s; load average at the end: {}",
        total.elapsed().as_secs_f64(),
        loadavg()
    ));
}
