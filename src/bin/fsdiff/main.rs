//! fsdiff: a differential tester. It runs the same random sequence of system calls in two
//! directories, one on the file system under test and one on a kernel ext4, and compares every
//! result and every errno, the file contents after each data op, and the whole tree every few
//! ops, as fsx does for data alone.
//!
//!   fsdiff --test DIR --reference DIR [--seed N] [--count N] [--duration S]
//!          [--ops a,b | --skip a,b | --all] [--replay FILE] [--list]
//!
//! Each seed's run prints the seed. At the first divergence it prints the op log since the
//! start (one op per line, replayable with `--replay FILE`; the log is also written to a file)
//! and both results, and exits 1. The same seed with the same op set gives the same ops.
//! The ops known to differ today are in `known.rs`, left out unless `--all` or `--ops`.
//! Run as root (chown, whiteouts, linkat with AT_EMPTY_PATH).

mod calls;
mod exec;
mod known;
mod ops;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;

use exec::{Checks, Side};
use ops::{Kind, Op, Rng};

#[derive(Parser)]
#[command(about = "Runs the same random system calls on two directories and compares results")]
struct Args {
    /// A directory on the file system under test (emptied; created if missing).
    #[arg(long)]
    test: PathBuf,
    /// A directory on the reference file system, ext4 (emptied; created if missing).
    #[arg(long)]
    reference: PathBuf,
    /// First seed (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Ops per seed.
    #[arg(long, default_value_t = 400)]
    count: usize,
    /// Run seed, seed+1, ... until this many seconds have passed (0: one seed).
    #[arg(long, default_value_t = 0)]
    duration: u64,
    /// Only these ops and checks (comma-separated names, see --list).
    #[arg(long, value_delimiter = ',')]
    ops: Vec<String>,
    /// Leave out these ops or checks, besides the known-different ones.
    #[arg(long, value_delimiter = ',')]
    skip: Vec<String>,
    /// Include the known-different ops and checks too.
    #[arg(long)]
    all: bool,
    /// Run the ops of a log written by an earlier run instead of random ones.
    #[arg(long)]
    replay: Option<PathBuf>,
    /// Compare the whole tree every this many ops (and at the end).
    #[arg(long, default_value_t = 25)]
    tree_every: usize,
    /// Where the op log of a divergence is written.
    #[arg(long, default_value = "/tmp")]
    log_dir: PathBuf,
    /// Print the ops, checks and known differences, and exit.
    #[arg(long)]
    list: bool,
}

/// Compared details and parameter ranges that can be switched off like ops.
const CHECKS: &[&str] = &[
    "blocks",
    "atime",
    "8tib_to_16tib",
    "past_s_maxbytes",
    "lseek_dir",
    "chown_nothing",
    "append_flag",
    "sync_flag",
    "flags_after_vfs",
    "copy_keeps_holes",
    "allocated_is_data",
];

fn main() -> ExitCode {
    let args = Args::parse();
    if args.list {
        print_list();
        return ExitCode::SUCCESS;
    }
    if let Err(code) = check_names(&args) {
        return code;
    }
    let enabled = |n: &str| enabled(&args, n);
    let (kinds, checks) = kinds_and_checks(&enabled);
    if kinds.is_empty() {
        eprintln!("fsdiff: no ops enabled");
        return ExitCode::from(2);
    }
    println!(
        "fsdiff: ops {} ; checks {}",
        kinds.iter().map(|k| k.name()).collect::<Vec<_>>().join(","),
        CHECKS
            .iter()
            .copied()
            .filter(|c| enabled(c))
            .collect::<Vec<_>>()
            .join(",")
    );
    let mut a = match Side::new(&args.test, checks) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("fsdiff: {}: {e}", args.test.display());
            return ExitCode::from(2);
        }
    };
    let mut b = match Side::new(&args.reference, checks) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("fsdiff: {}: {e}", args.reference.display());
            return ExitCode::from(2);
        }
    };
    let paths = ops::paths();
    let generator = ops::Gen {
        kinds: kinds.clone(),
        beyond_8tib: enabled("8tib_to_16tib"),
        past_s_maxbytes: enabled("past_s_maxbytes"),
        chown_nothing: enabled("chown_nothing"),
        append_flag: enabled("append_flag"),
        sync_flag: enabled("sync_flag"),
    };
    match &args.replay {
        Some(file) => replay(&mut a, &mut b, &paths, file, &args),
        None => run_seeds(&mut a, &mut b, &paths, &generator, &args),
    }
}

/// `--list`: the ops, the checks and the known differences with their reasons.
fn print_list() {
    println!(
        "ops: {}",
        ops::ALL
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(",")
    );
    println!("checks: {}", CHECKS.join(","));
    println!("known different (left out unless --all or named in --ops):");
    for (n, why) in known::KNOWN_DIFFERENT {
        println!("  {n:22} {why}");
    }
}

/// Every name in `--ops`, `--skip` and the known-different list must be an op or a check, so
/// that a misspelt name fails rather than selects nothing.
fn check_names(args: &Args) -> Result<(), ExitCode> {
    let names: BTreeSet<&str> = ops::ALL
        .iter()
        .map(|k| k.name())
        .chain(CHECKS.iter().copied())
        .collect();
    for n in args
        .ops
        .iter()
        .chain(&args.skip)
        .map(String::as_str)
        .chain(known::KNOWN_DIFFERENT.iter().map(|k| k.0))
    {
        if !names.contains(n) {
            eprintln!("fsdiff: unknown op or check {n:?} (see --list)");
            return Err(ExitCode::from(2));
        }
    }
    Ok(())
}

/// Whether the op or check `n` runs: not if skipped; with `--ops`, an op only if named and a
/// check unless known to differ; otherwise unless known to differ (or with `--all`).
fn enabled(args: &Args, n: &str) -> bool {
    if args.skip.iter().any(|s| s == n) {
        return false;
    }
    if !args.ops.is_empty() {
        // Checks stay on unless skipped or known-different; ops only if named.
        return args.ops.iter().any(|s| s == n)
            || (CHECKS.contains(&n)
                && (args.all || !known::KNOWN_DIFFERENT.iter().any(|k| k.0 == n)));
    }
    args.all || !known::KNOWN_DIFFERENT.iter().any(|k| k.0 == n)
}

/// The ops generated and the details compared. Seeks are left out where holes or allocation
/// are known to differ (see copy_keeps_holes and allocated_is_data in known.rs), and st_blocks
/// where holes do.
fn kinds_and_checks(enabled: &dyn Fn(&str) -> bool) -> (Vec<Kind>, Checks) {
    let mut kinds: Vec<Kind> = ops::ALL
        .iter()
        .copied()
        .filter(|k| enabled(k.name()))
        .collect();
    let holes_differ = !enabled("copy_keeps_holes") && kinds.contains(&Kind::CopyRange);
    let allocation_differs = !enabled("allocated_is_data")
        && kinds
            .iter()
            .any(|k| matches!(k, Kind::Falloc | Kind::FallocKeep | Kind::ZeroRange));
    if holes_differ || allocation_differs {
        kinds.retain(|k| !matches!(k, Kind::SeekData | Kind::SeekHole));
    }
    let checks = Checks {
        blocks: enabled("blocks") && !holes_differ,
        atime: enabled("atime"),
        lseek_dir: enabled("lseek_dir"),
        flags_after_vfs: enabled("flags_after_vfs"),
    };
    (kinds, checks)
}

/// `--replay FILE`: the ops of an earlier run's log, in order.
fn replay(a: &mut Side, b: &mut Side, paths: &[String], file: &Path, args: &Args) -> ExitCode {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("fsdiff: {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    let ops: Vec<Op> = text.lines().filter_map(Op::decode).collect();
    println!(
        "fsdiff: replaying {} ops from {}",
        ops.len(),
        file.display()
    );
    let mut it = ops.into_iter();
    finish(run_seq(
        a,
        b,
        paths,
        &mut || it.next(),
        usize::MAX,
        args,
        None,
    ))
}

/// Seed after seed from `--seed` (or the clock), until `--duration` has passed or a seed
/// diverges.
fn run_seeds(
    a: &mut Side,
    b: &mut Side,
    paths: &[String],
    generator: &ops::Gen,
    args: &Args,
) -> ExitCode {
    let first = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            % 1_000_000_000
    });
    let start = Instant::now();
    let mut seed = first;
    let mut seeds = 0;
    loop {
        println!("fsdiff: seed {seed} ({} ops)", args.count);
        let _ = std::io::stdout().flush();
        let mut rng = Rng::new(seed);
        let np = paths.len();
        let mut next = || Some(ops::generate(&mut rng, generator, np));
        let code = run_seq(a, b, paths, &mut next, args.count, args, Some(seed));
        seeds += 1;
        if code != 0 {
            return finish(code);
        }
        if start.elapsed() >= Duration::from_secs(args.duration) {
            break;
        }
        seed += 1;
    }
    println!(
        "fsdiff: {seeds} seeds ({first}..={seed}) of {} ops agree",
        args.count
    );
    ExitCode::SUCCESS
}

fn finish(code: u8) -> ExitCode {
    if code == 0 {
        println!("fsdiff: agree");
    }
    ExitCode::from(code)
}

/// Runs up to `count` ops from `next` on both sides; 0 if they agreed, 1 at a divergence (after
/// printing the log), 2 if a side cannot be reset.
fn run_seq(
    a: &mut Side,
    b: &mut Side,
    paths: &[String],
    next: &mut dyn FnMut() -> Option<Op>,
    count: usize,
    args: &Args,
    seed: Option<u64>,
) -> u8 {
    for side in [&mut *a, &mut *b] {
        if let Err(e) = side.reset() {
            eprintln!("fsdiff: cannot empty {}: {e}", side.base.display());
            return 2;
        }
    }
    let mut log: Vec<String> = Vec::new();
    let mut i = 0;
    while i < count {
        let Some(op) = next() else { break };
        let ra = a.run(&op, paths);
        let rb = b.run(&op, paths);
        log.push(format!(
            "{:60} # {} => {}",
            op.encode(),
            op.describe(paths),
            rb
        ));
        i += 1;
        if ra != rb
            && !(!b.checks.flags_after_vfs
                && refused_by_the_vfs_first(&ra, &rb)
                && b.touches_protected_inode(&op, paths))
        {
            report(
                &log,
                seed,
                args,
                &format!("op #{i}: {}", op.describe(paths)),
                &ra,
                &rb,
            );
            return 1;
        }
        if i % args.tree_every == 0 || i == count {
            let (ta, tb) = (a.tree(), b.tree());
            if ta != tb {
                let (da, db) = tree_difference(&ta, &tb);
                report(&log, seed, args, &format!("tree after op #{i}"), &da, &db);
                return 1;
            }
        }
    }
    // Once more at the end of a replay, whose length is not known in advance.
    if a.tree() != b.tree() {
        report(
            &log,
            seed,
            args,
            "tree at the end",
            "(differs)",
            "(differs)",
        );
        return 1;
    }
    0
}

/// The entries in which two trees differ, one line each, as each side has them.
fn tree_difference(
    ta: &BTreeMap<String, String>,
    tb: &BTreeMap<String, String>,
) -> (String, String) {
    let keys: BTreeSet<&String> = ta.keys().chain(tb.keys()).collect();
    let none = String::from("(absent)");
    let (mut da, mut db) = (String::new(), String::new());
    for k in keys {
        let (x, y) = (ta.get(k).unwrap_or(&none), tb.get(k).unwrap_or(&none));
        if x != y {
            da += &format!("\n    {k}: {x}");
            db += &format!("\n    {k}: {y}");
        }
    }
    (da, db)
}

/// The `flags_after_vfs` difference: ext4 refused with EPERM (an immutable or append-only inode,
/// which its VFS checks first), while the FUSE mount's VFS, which does not know those flags,
/// refused for another reason first (a type mismatch, an overflowing range) or answered itself
/// (a write of no bytes), everything after the result's status being the same.
fn refused_by_the_vfs_first(test: &str, reference: &str) -> bool {
    let split = |r: &str| {
        let mut it = r.splitn(3, ' ');
        let status = [it.next().unwrap_or(""), it.next().unwrap_or("")].join(" ");
        (status, it.next().unwrap_or("").to_string())
    };
    let ((ts, trest), (rs, rrest)) = (split(test), split(reference));
    rs == "err EPERM"
        && [
            "err ENOTDIR",
            "err EISDIR",
            "err EFBIG",
            "err EOVERFLOW",
            "err ENOENT",
            "err EINVAL",
            "ok 0",
        ]
        .contains(&ts.as_str())
        && trest == rrest
}

fn report(log: &[String], seed: Option<u64>, args: &Args, what: &str, ra: &str, rb: &str) {
    let name = match seed {
        Some(s) => format!("fsdiff-seed-{s}.ops"),
        None => format!("fsdiff-replay-{}.ops", std::process::id()),
    };
    let file = args.log_dir.join(name);
    let mut text = String::new();
    if let Some(s) = seed {
        text += &format!(
            "# fsdiff seed {s}, {} ops; the comment after each op is the reference's result\n",
            log.len()
        );
    }
    for l in log {
        text += l;
        text += "\n";
    }
    let saved = match std::fs::write(&file, &text) {
        Ok(()) => format!("written to {}", file.display()),
        Err(e) => format!("not written to {}: {e}", file.display()),
    };
    println!(
        "fsdiff: DIVERGENCE at {what}{}",
        seed.map(|s| format!(" (seed {s})")).unwrap_or_default()
    );
    println!("---- op log ({saved}; replay: fsdiff --test A --reference B --replay FILE)");
    print!("{text}");
    println!("----");
    println!("test      ({}): {ra}", args.test.display());
    println!("reference ({}): {rb}", args.reference.display());
}
