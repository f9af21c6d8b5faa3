//! Write-amplification benchmark (issue 5, compaction): random 4 KiB overwrites of a store held
//! at 50%, 75% and 90% live data (live bytes / usable capacity), uniform and 90/10 hot/cold, with the
//! greedy and the cost-benefit victim policies.
//!
//! Not a test: nothing here passes or fails on a number. It runs the real `Engine` on
//! `SimStorage` (memory), so it measures what the engine writes, not how fast a disk takes it.
//!
//! ```text
//! cargo bench --bench wa_bench -- --quick   # 128 MiB stores, 1x capacity of overwrites
//! cargo bench --bench wa_bench              # 256 MiB stores, 4x capacity (appends to docs)
//! ```
//!
//! Options (an environment variable of the same meaning in brackets):
//! - `--capacity-mib N` [`WA_CAPACITY_MIB`]: store capacity;
//! - `--overwrites N` [`WA_OVERWRITES`]: bytes overwritten after the fill, in capacities (4);
//! - `--batch N` [`WA_BATCH`]: records per batch (16; 1 = one 4 KiB record per write buffer);
//! - `--utils 50,75,90`: live data levels, in percent of the usable capacity;
//! - `--of-store`: live data levels in percent of the store's size instead (all its segments,
//!   reserve and compaction headroom included: a harsher reading of "75% full");
//! - `--record` / `--no-record`: append the table to `docs/BENCHMARKS.md` (default: full mode
//!   appends, quick mode does not).
//!
//! Method: a fresh store per row; fill every key once in key order, then overwrite random keys
//! until the user bytes written reach N capacities. Figures are deltas of `Engine::stats()` over
//! the overwrite phase only: device bytes written / user bytes written (buffers with headers
//! and padding, copies included), and compaction bytes written / user bytes written; the
//! latter also after the first capacity of overwrites (the store's steady state: right after
//! the fill every segment is full, so the first cleanings are the dearest).

use std::io::Write as _;
use std::time::Instant;

use logstorfs::engine::storage::{SimRng, SimStorage};
use logstorfs::engine::{
    CompactionPolicy, Engine, EngineError, EngineOptions, EngineStats, Mutation, ROOT_GROUP,
};

const MIB: u64 = 1 << 20;
const VALUE_SIZE: usize = 4096;
/// Bytes of one record on disk: header (24) + key (17) + value.
const RECORD_BYTES: u64 = 24 + 17 + VALUE_SIZE as u64;
/// NoSpace errors in a row after which a row is stopped (compaction can no longer make room).
const STALL_LIMIT: u64 = 1000;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Workload {
    Uniform,
    /// 90% of writes go to 10% of the keys (every tenth key, spread over the store).
    HotCold,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Uniform => "uniform",
            Workload::HotCold => "hot/cold 90/10",
        }
    }

    fn pick(self, rng: &mut SimRng, keys: u64) -> u64 {
        match self {
            Workload::Uniform => rng.below(keys),
            Workload::HotCold => {
                let hot = keys.div_ceil(10);
                if rng.below(10) < 9 {
                    rng.below(hot) * 10
                } else {
                    loop {
                        let k = rng.below(keys);
                        if !k.is_multiple_of(10) {
                            return k;
                        }
                    }
                }
            }
        }
    }
}

fn policy_name(p: CompactionPolicy) -> &'static str {
    match p {
        CompactionPolicy::Greedy => "greedy",
        CompactionPolicy::CostBenefit => "cost-benefit",
    }
}

/// A data-page-like key: tag `C`, inode 1, page number.
fn key(k: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(17);
    v.push(b'C');
    v.extend_from_slice(&1u64.to_be_bytes());
    v.extend_from_slice(&k.to_be_bytes());
    v
}

struct Plan {
    quick: bool,
    capacity: u64,
    overwrites: u64,
    batch: usize,
    utils: Vec<u64>,
    /// Levels are percent of the store's size, not of the usable capacity.
    of_store: bool,
    record: bool,
}

fn arg_value(args: &[String], name: &str, env: &str) -> Option<String> {
    match args.iter().position(|a| a == name) {
        Some(i) => args.get(i + 1).cloned(),
        None => std::env::var(env).ok(),
    }
}

impl Plan {
    fn from_args() -> Plan {
        let args: Vec<String> = std::env::args().collect();
        let quick = args.iter().any(|a| a == "--quick");
        let num = |name: &str, env: &str, default: u64| -> u64 {
            arg_value(&args, name, env)
                .map(|v| {
                    v.parse()
                        .unwrap_or_else(|_| panic!("{name}: not a number: {v}"))
                })
                .unwrap_or(default)
        };
        let capacity = num(
            "--capacity-mib",
            "WA_CAPACITY_MIB",
            if quick { 128 } else { 256 },
        ) * MIB;
        let overwrites = num("--overwrites", "WA_OVERWRITES", if quick { 1 } else { 4 });
        let batch = num("--batch", "WA_BATCH", 16) as usize;
        let utils = arg_value(&args, "--utils", "WA_UTILS")
            .map(|v| {
                v.split(',')
                    .map(|u| u.trim().parse().expect("--utils"))
                    .collect()
            })
            .unwrap_or_else(|| vec![50, 75, 90]);
        let record = if args.iter().any(|a| a == "--record") {
            true
        } else if args.iter().any(|a| a == "--no-record") {
            false
        } else {
            !quick
        };
        Plan {
            quick,
            capacity,
            overwrites,
            batch: batch.max(1),
            utils,
            of_store: args.iter().any(|a| a == "--of-store"),
            record,
        }
    }
}

struct Row {
    util: u64,
    workload: Workload,
    policy: CompactionPolicy,
    live_percent: f64,
    /// Live data at the fill, in percent of the store's size.
    store_percent: f64,
    user: u64,
    device_wa: f64,
    compaction_wa: f64,
    /// Separator copies / user bytes (mixed segments whose records belong to several groups;
    /// one group here, so its segments are handed over whole and this stays 0).
    separator_wa: f64,
    /// Compaction / user after the first capacity of overwrites (the fill's transient).
    steady_wa: Option<f64>,
    no_space: u64,
    fill_no_space: u64,
    gave_up: bool,
    segments_free: u64,
    seconds: f64,
    /// Latency of one `Engine::write` in the overwrite phase, microseconds: p50, p99, p99.9, max.
    latency_us: [u64; 4],
    /// Compaction steps run by writers that found no free segment (write stalls).
    writer_steps: u64,
    /// Mean live fraction of the compaction victims, percent (bytes copied per victim).
    victim_live_percent: f64,
}

fn delta(a: &EngineStats, b: &EngineStats) -> (u64, u64, u64) {
    (
        b.user_bytes_written - a.user_bytes_written,
        b.device_bytes_written - a.device_bytes_written,
        b.compaction_bytes_written - a.compaction_bytes_written,
    )
}

fn run_row(plan: &Plan, util: u64, workload: Workload, policy: CompactionPolicy) -> Row {
    let options = EngineOptions {
        capacity_bytes: plan.capacity,
        compaction_policy: policy,
        ..EngineOptions::default()
    };
    let engine = Engine::open_on(SimStorage::new(), &options).expect("open");
    let empty = engine.stats();
    let capacity = empty.capacity_bytes;
    // The level is of the usable capacity (what `df` shows, see `usable_capacity_bytes`)
    // unless `--of-store`; overwrites are counted in store sizes either way.
    let basis = if plan.of_store {
        capacity
    } else {
        empty.usable_capacity_bytes
    };
    let keys = basis * util / 100 / RECORD_BYTES;
    let mut value = vec![0u8; VALUE_SIZE];
    for (i, b) in value.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(31);
    }
    let mut stamp = 0u64;
    let mut put = |k: u64| {
        stamp += 1;
        value[..8].copy_from_slice(&k.to_le_bytes());
        value[8..16].copy_from_slice(&stamp.to_le_bytes());
        Mutation::put(ROOT_GROUP, key(k), value.clone())
    };
    let start = Instant::now();
    // The fill stops at the first NoSpace: a store takes what compaction can sustain (7/8 of
    // its segments outside the reserve), so a 90% row runs at that capacity instead, and only
    // the keys written are overwritten.
    let mut fill_no_space = 0;
    let mut k = 0;
    while k < keys {
        let n = (plan.batch as u64).min(keys - k);
        let batch: Vec<Mutation> = (k..k + n).map(&mut put).collect();
        match engine.write(&batch) {
            Ok(_) => {}
            Err(EngineError::NoSpace) => {
                fill_no_space += 1;
                break;
            }
            Err(e) => panic!("fill: {e}"),
        }
        k += n;
    }
    let keys = k;
    let before = engine.stats();
    let live_percent = before.live_bytes as f64 * 100.0 / basis as f64;
    let store_percent = before.live_bytes as f64 * 100.0 / capacity as f64;
    let target = plan.overwrites * capacity;
    let mut rng = SimRng::new(util * 1000 + workload as u64 * 10 + policy as u64);
    let mut no_space = 0;
    let mut stalled = 0;
    let mut gave_up = false;
    let mut warmed: Option<EngineStats> = None;
    let mut latencies: Vec<u32> = Vec::new();
    loop {
        let now = engine.stats();
        let (user, _, _) = delta(&before, &now);
        if warmed.is_none() && user >= capacity && target > capacity {
            warmed = Some(now);
        }
        if user >= target {
            break;
        }
        let batch: Vec<Mutation> = (0..plan.batch)
            .map(|_| put(workload.pick(&mut rng, keys)))
            .collect();
        let t = Instant::now();
        let result = engine.write(&batch);
        latencies.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
        match result {
            Ok(_) => stalled = 0,
            Err(EngineError::NoSpace) => {
                no_space += 1;
                stalled += 1;
                if stalled == STALL_LIMIT {
                    // Compaction cannot make room any more: stop the row, report it.
                    gave_up = true;
                    break;
                }
            }
            Err(e) => panic!("overwrite: {e}"),
        }
    }
    let after = engine.stats();
    let seconds = start.elapsed().as_secs_f64();
    let (user, device, compaction) = delta(&before, &after);
    let steady_wa = warmed.map(|w| {
        let (u, _, c) = delta(&w, &after);
        c as f64 / u as f64
    });
    engine.close().expect("close");
    latencies.sort_unstable();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * q) as usize)
            .map_or(0, |&v| v as u64)
    };
    let victims = after.compaction_victims - before.compaction_victims;
    Row {
        latency_us: [at(0.5), at(0.99), at(0.999), at(1.0)],
        writer_steps: after.foreground_compaction_steps - before.foreground_compaction_steps,
        victim_live_percent: if victims == 0 {
            0.0
        } else {
            compaction as f64 * 100.0 / (victims * after.segment_size_bytes) as f64
        },
        util,
        workload,
        policy,
        live_percent,
        store_percent,
        user,
        device_wa: device as f64 / user as f64,
        compaction_wa: compaction as f64 / user as f64,
        separator_wa: (after.separator_bytes_written - before.separator_bytes_written) as f64
            / user as f64,
        steady_wa,
        no_space,
        fill_no_space,
        gave_up,
        segments_free: after.segments_free,
        seconds,
    }
}

fn sh(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let load = std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    format!(
        "{} cores ({cpu}), kernel {kernel}, load average {load} at the end",
        sh("nproc", &[])
    )
}

fn main() {
    let plan = Plan::from_args();
    let started = sh("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    let total = Instant::now();
    let policies = [CompactionPolicy::Greedy, CompactionPolicy::CostBenefit];
    let workloads = [Workload::Uniform, Workload::HotCold];
    eprintln!(
        "wa_bench: {} mode, capacity {} MiB, overwrites {}x capacity, {} records of 4 KiB per batch",
        if plan.quick { "quick" } else { "full" },
        plan.capacity / MIB,
        plan.overwrites,
        plan.batch
    );
    let mut table = String::new();
    table.push_str(
        "| live data | workload | policy | live at fill (of the store) | device / user | compaction / user | separator / user | compaction / user after 1x | victims' live | NoSpace | free segs at end | write µs p50 / p99 / p99.9 / max | writer-run steps | seconds |\n",
    );
    table.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    print!("\n{table}");
    let mut rows = Vec::new();
    for &util in &plan.utils {
        for workload in workloads {
            for policy in policies {
                let r = run_row(&plan, util, workload, policy);
                // Overwrites must never get NoSpace; the fill may stop at the capacity.
                let mut no_space = if r.no_space == 0 {
                    "none".to_string()
                } else {
                    format!("**{} batches**", r.no_space)
                };
                let full = if r.fill_no_space > 0 { " (full)" } else { "" };
                if r.gave_up {
                    no_space.push_str(&format!(
                        ", **stopped after {} MiB of overwrites**",
                        r.user / MIB
                    ));
                }
                let line = format!(
                    "| {}% | {} | {} | {:.1}%{} ({:.1}%) | {:.2} | {:.2} | {:.2} | {} | {:.0}% | {} | {} | {} / {} / {} / {} | {} | {:.1} |\n",
                    r.util,
                    r.workload.name(),
                    policy_name(r.policy),
                    r.live_percent,
                    full,
                    r.store_percent,
                    r.device_wa,
                    r.compaction_wa,
                    r.separator_wa,
                    r.steady_wa.map_or("-".to_string(), |w| format!("{w:.2}")),
                    r.victim_live_percent,
                    no_space,
                    r.segments_free,
                    r.latency_us[0],
                    r.latency_us[1],
                    r.latency_us[2],
                    r.latency_us[3],
                    r.writer_steps,
                    r.seconds
                );
                print!("{line}");
                std::io::stdout().flush().ok();
                eprint!("{line}");
                table.push_str(&line);
                rows.push(r);
            }
        }
    }
    let commit = sh("git", &["rev-parse", "--short", "HEAD"]);
    let heading = format!(
        "### {started}, {} mode ({commit}): {} MiB store, 1 MiB segments, levels of the {}, {}x the store's size overwritten, {} x 4 KiB per batch",
        if plan.quick { "quick" } else { "full" },
        plan.capacity / MIB,
        if plan.of_store {
            "store's size"
        } else {
            "usable capacity"
        },
        plan.overwrites,
        plan.batch
    );
    let user_total: u64 = rows.iter().map(|r| r.user).sum();
    let footer = format!(
        "\nMachine: {}. SimStorage (memory). {} MiB of user writes in {:.0} s in all.\n",
        machine(),
        user_total / MIB,
        total.elapsed().as_secs_f64()
    );
    println!("{footer}");
    if plan.record {
        record(&format!("{heading}\n\n{table}{footer}"));
    }
}

/// Appends `text` to the end of the "Write amplification" section of docs/BENCHMARKS.md
/// (created at the end of the file if missing), leaving the other sections as they are.
fn record(text: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/BENCHMARKS.md");
    let doc = std::fs::read_to_string(&path).unwrap_or_else(|_| "# Benchmarks\n".into());
    const SECTION: &str = "## Write amplification";
    let out = match doc.find(&format!("\n{SECTION}")) {
        Some(at) => {
            let body = at + 1 + SECTION.len();
            let end = doc[body..]
                .find("\n## ")
                .map_or(doc.len(), |i| body + i + 1);
            let mut before = doc[..end].trim_end().to_string();
            before.push_str("\n\n");
            before.push_str(text);
            before.push('\n');
            if end < doc.len() {
                before.push('\n');
                before.push_str(&doc[end..]);
            }
            before
        }
        None => format!(
            "{}\n\n{SECTION}\n\nMeasured by `benches/wa_bench.rs` (see its header).\n\n{text}",
            doc.trim_end()
        ),
    };
    std::fs::write(&path, out).expect("write docs/BENCHMARKS.md");
    eprintln!("appended to {}", path.display());
}
