//! Command line: `logstorfs format`, `mount` (and the `mount.fuse3` form `logstorfs STORE
//! MOUNTPOINT -o OPTIONS`), `umount`, `resize` (in `cli/`), `stats` and `fsck`.
//!
//! Exit codes: 0 on success (mount: after a clean unmount, or with `--daemon` once the mount is
//! live), 1 on any error, reported as one line `logstorfs: ...` on stderr. `fsck`: 0 clean, 1
//! problems found, 2 usage or I/O error (or a mounted store).

use std::ffi::CString;
use std::fs::File;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use fuser::{Config, Session, SessionUnmounter};
use parking_lot::Mutex;

use crate::engine::check::Severity;
use crate::engine::instrument::Instrumentation;
use crate::engine::{Engine, EngineError, EngineOptions};
use crate::fs::fuse_adapter::FuseFs;
use crate::fs::{Fs, FsOptions, STATS_XATTR, check, stats};

mod format;
mod mount;
mod options;
mod umount;

pub use options::{atime_mode, parse_size};

/// Name of the file in the store directory that says where the store is mounted (first line:
/// mount point, second line: daemon pid). Written at mount, removed at clean exit.
pub const MOUNTED_FILE: &str = "mounted";
/// Name of the daemon's log file in the store directory (`--daemon` only).
pub const DAEMON_LOG_FILE: &str = "logstorfs.log";
/// FUSE worker threads: between these bounds, following the number of CPUs.
const FUSE_THREADS_MIN: usize = 2;
const FUSE_THREADS_MAX: usize = 4;

#[derive(Parser, Debug)]
#[command(
    name = "logstorfs",
    version,
    about = "A FUSE filesystem on a log-structured store",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// With no command: mount STORE on MOUNTPOINT and detach, as `mount.fuse3` runs it.
    #[command(flatten)]
    helper: mount::HelperArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a store in STORE (a missing or empty directory).
    Format(format::FormatArgs),
    /// Mount the store STORE on MOUNTPOINT (creating it only with --create).
    Mount(mount::MountArgs),
    /// Unmount MOUNTPOINT and wait until its daemon has closed the store.
    Umount(umount::UmountArgs),
    /// Grow an unmounted store (a store never shrinks).
    Resize(format::ResizeArgs),
    /// Print the store's figures (works while mounted and offline).
    Stats(StatsArgs),
    /// Check an unmounted store without changing it (exit 0 clean, 1 problems, 2 errors).
    ///
    /// Checks buffers and records (CRCs), the end of the log, the per-segment accounting, and
    /// the namespace (entries, link counts, reachability, orphans, data pages within sizes);
    /// names the files that damaged records belong to. Prints one problem per line, where
    /// first; lines starting with "note:" are not problems. Exit status: 0 clean, 1 problems
    /// found, 2 usage or I/O error, or the store is mounted (unmount it first).
    Fsck(FsckArgs),
    /// (Testing) Power-cut images of an I/O log recorded by `mount --test-record-io`.
    #[command(hide = true)]
    ReplayCut(ReplayCutArgs),
}

#[derive(Args, Debug)]
struct ReplayCutArgs {
    /// The I/O log.
    log: PathBuf,
    /// Print what the log holds (entries, syncs, marks) as JSON, and nothing else.
    #[arg(long)]
    list: bool,
    /// Replay this many entries, then cut power.
    #[arg(long, value_name = "ENTRIES")]
    at: Option<u64>,
    /// Which unsynced sectors survive: random (per --seed), none, all.
    #[arg(long, default_value = "random")]
    keep: String,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Where to write the image as a store directory (must not hold a store).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct FsckArgs {
    /// Print one JSON object (problems, notes, damaged files, figures).
    #[arg(long)]
    json: bool,
    /// The store directory (unmounted).
    store: PathBuf,
}

#[derive(Args, Debug)]
struct StatsArgs {
    /// Print a JSON object.
    #[arg(long)]
    json: bool,
    /// The store directory or the mount point.
    path: PathBuf,
}

/// Runs the command line; returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let Some(command) = cli.command else {
        return report(cli.helper.into_mount_args().and_then(mount::mount_cmd));
    };
    let result = match command {
        Command::Format(args) => format::format_cmd(&args),
        Command::Mount(args) => mount::mount_cmd(args),
        Command::Umount(args) => umount::umount_cmd(&args),
        Command::Resize(args) => format::resize_cmd(&args),
        Command::Stats(args) => stats_cmd(args),
        Command::ReplayCut(args) => replay_cut_cmd(&args),
        Command::Fsck(args) => {
            return match fsck_cmd(&args) {
                Ok(code) => code,
                Err(msg) => {
                    eprintln!("logstorfs: {msg}");
                    2
                }
            };
        }
    };
    report(result)
}

/// The exit code of a command's result, its error printed.
fn report(result: Result<(), String>) -> i32 {
    match result {
        Ok(()) => 0,
        Err(msg) => {
            eprintln!("logstorfs: {msg}");
            1
        }
    }
}

fn open_error(store: &Path, e: &EngineError) -> String {
    match e {
        EngineError::Locked(_) => format!(
            "store {} is already in use (mounted by another logstorfs daemon?): {e}",
            store.display()
        ),
        _ => format!("cannot open store {}: {e}", store.display()),
    }
}

/// Each fuser session thread allocates a zeroed 16 MiB request buffer (its largest possible
/// request), of which a request only touches its own length. glibc's allocator raises its mmap
/// threshold after a large block is freed, and then serves such a buffer from a heap that it must
/// zero by hand: all 16 MiB resident, in an idle daemon 16 of its 20 MiB. A fixed threshold keeps
/// such blocks in fresh maps, whose pages stay unresident until written (idle daemon: 4.4 MiB).
/// It lies above our own large buffers (a segment, 1 MiB by default), which keep being reused
/// from the heap instead of being mapped and faulted in afresh each time.
fn keep_large_buffers_unresident() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt sets an allocator parameter under the allocator's own lock.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
    }
}

/// Hands the pages of freed heap blocks back to the system, once the store is open and once the
/// group map is rebuilt: both use transient memory in proportion to the records (loading the
/// index from a checkpoint; scanning every inode), and the holes it leaves between live blocks
/// would otherwise stay resident for the daemon's lifetime (1M records after a clean unmount:
/// VmRSS 62.3 -> 45.1 MiB). `Engine::open` trims by itself after a full recovery scan.
fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory, under the allocator's locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Set once the daemon's stdio points at /dev/null and the log file.
static DETACHED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Points stdin/stdout at /dev/null and stderr at the store's log file (at /dev/null too
/// without `log_in_store`).
fn detach_stdio(store: &Path, log_in_store: bool) {
    DETACHED.store(true, std::sync::atomic::Ordering::Relaxed);
    let devnull = CString::new("/dev/null").expect("no NUL");
    let log_path = if log_in_store {
        store.join(DAEMON_LOG_FILE)
    } else {
        PathBuf::from("/dev/null")
    };
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path);
    // SAFETY: plain fd manipulation on descriptors we own or on 0/1/2.
    unsafe {
        let null = libc::open(devnull.as_ptr(), libc::O_RDWR);
        if null >= 0 {
            libc::dup2(null, 0);
            libc::dup2(null, 1);
            libc::close(null);
        }
        if let Ok(f) = &log {
            libc::dup2(std::os::fd::AsRawFd::as_raw_fd(f), 2);
        }
    }
}

/// Blocks SIGINT, SIGTERM and SIGHUP in this thread (and so in every thread spawned after), and
/// starts a thread that waits for them and unmounts, which ends the session loop.
fn start_signal_thread(unmounter: Arc<Mutex<Option<SessionUnmounter>>>) {
    // SAFETY: sigset manipulation on a local, zero-initialised set.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            loop {
                let mut sig = 0;
                // SAFETY: `set` is a valid signal set and `sig` a valid out pointer.
                if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
                    continue;
                }
                log::info!("signal {sig}: unmounting");
                if let Some(u) = unmounter.lock().as_mut() {
                    if let Err(e) = u.unmount() {
                        log::error!("unmount on signal {sig}: {e}");
                    }
                }
            }
        })
        .expect("spawn signal thread");
}

fn serve(
    store: &Path,
    mountpoint: &Path,
    options: &EngineOptions,
    fs_options: &FsOptions,
    instrument: &Instrumentation,
    config: &Config,
    mut notify: Option<File>,
) -> Result<(), String> {
    let result = serve_inner(
        store,
        mountpoint,
        options,
        fs_options,
        instrument,
        config,
        &mut notify,
    );
    if let (Err(msg), Some(n)) = (&result, notify.as_mut()) {
        let _ = n.write_all(format!("ERR {msg}\n").as_bytes());
    }
    result
}

fn serve_inner(
    store: &Path,
    mountpoint: &Path,
    options: &EngineOptions,
    fs_options: &FsOptions,
    instrument: &Instrumentation,
    config: &Config,
    notify: &mut Option<File>,
) -> Result<(), String> {
    let unmounter: Arc<Mutex<Option<SessionUnmounter>>> = Arc::new(Mutex::new(None));
    start_signal_thread(unmounter.clone());
    let engine =
        Engine::open_instrumented(store, options, instrument).map_err(|e| open_error(store, &e))?;
    let fs = Arc::new(
        Fs::with_options(engine, fs_options.clone())
            .map_err(|e| format!("cannot mount store {}: {e}", store.display()))?,
    );
    return_freed_memory();
    let rebuild = {
        let fs = fs.clone();
        std::thread::Builder::new()
            .name("group-map".into())
            .spawn(move || {
                if let Err(e) = fs.rebuild_group_map() {
                    // Splits and merges stay off for this mount; nothing else depends on it.
                    log::error!("group map rebuild failed: {e}");
                }
                return_freed_memory();
            })
            .map_err(|e| format!("cannot start the group map rebuild: {e}"))?
    };
    let session = Session::new(FuseFs::new(fs.clone()), mountpoint, config);
    let mut session = match session {
        Ok(s) => s,
        Err(e) => {
            let msg = format!("cannot mount on {}: {e}", mountpoint.display());
            fs.stop_group_map_rebuild();
            let _ = rebuild.join();
            if let Err(close) = close_fs(fs) {
                log::error!("{close}");
            }
            return Err(msg);
        }
    };
    *unmounter.lock() = Some(session.unmount_callable());
    let mounted_file = store.join(MOUNTED_FILE);
    // A read-only mount writes nothing in the store: no record of the mount, no log there.
    let read_only = options.read_only;
    if !read_only {
        let _ = std::fs::write(
            &mounted_file,
            format!("{}\n{}\n", mountpoint.display(), std::process::id()),
        );
    }
    if let Some(mut n) = notify.take() {
        detach_stdio(store, !read_only);
        let _ = n.write_all(b"OK\n");
    }
    log::info!("mounted {} on {}", store.display(), mountpoint.display());
    let run = session.run();
    unmounter.lock().take();
    if !read_only {
        let _ = std::fs::remove_file(&mounted_file);
    }
    // The rebuild holds a reference to the filesystem: stop it (its counts are in memory only).
    fs.stop_group_map_rebuild();
    let _ = rebuild.join();
    let closed = close_fs(fs);
    run.map_err(|e| format!("session ended with an error: {e}"))?;
    closed
}

fn close_fs(fs: Arc<Fs>) -> Result<(), String> {
    match Arc::try_unwrap(fs) {
        Ok(fs) => fs.close().map_err(|e| format!("closing the store: {e}")),
        Err(fs) => {
            log::info!("the filesystem is still referenced: synced, not closed");
            fs.fsync().map_err(|e| format!("syncing the store: {e}"))
        }
    }
}

/// Reads the stats xattr of a mounted logstorfs at `mountpoint`.
fn stats_from_mount(mountpoint: &Path) -> Option<String> {
    let path = CString::new(mountpoint.as_os_str().as_bytes()).ok()?;
    let name = CString::new(STATS_XATTR).ok()?;
    let mut buf = vec![0u8; 1 << 20];
    // SAFETY: valid C strings and a buffer of the given length.
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return None;
    }
    buf.truncate(n as usize);
    String::from_utf8(buf).ok()
}

/// Prints to stdout, ignoring a closed pipe (`logstorfs stats | head`).
fn print_out(s: &str) {
    let _ = std::io::stdout().write_all(s.as_bytes());
}

fn pid_alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence.
    pid > 0 && unsafe { libc::kill(pid, 0) } == 0
}

fn stats_cmd(args: StatsArgs) -> Result<(), String> {
    let path = &args.path;
    let mut json = stats_from_mount(path);
    if json.is_none() {
        if let Ok(m) = std::fs::read_to_string(path.join(MOUNTED_FILE)) {
            let mut lines = m.lines();
            let mp = lines.next().unwrap_or_default();
            let pid: i32 = lines
                .next()
                .and_then(|p| p.trim().parse().ok())
                .unwrap_or(0);
            if pid_alive(pid) {
                json = stats_from_mount(Path::new(mp));
            }
        }
    }
    if let Some(j) = json {
        if args.json {
            print_out(&format!("{j}\n"));
        } else {
            // The daemon only speaks JSON; print it with one field per line.
            print_out(&format!("{}\n", j.replace(",\"", ",\n\"")));
        }
        return Ok(());
    }
    let options = EngineOptions {
        create_if_missing: false,
        sync_interval: None,
        ..Default::default()
    };
    let engine = Engine::open(path, &options).map_err(|e| match e {
        EngineError::Locked(_) => format!(
            "store {} is mounted, but its mount point does not answer (is the daemon alive?): {e}",
            path.display()
        ),
        e => open_error(path, &e),
    })?;
    let s = engine.stats();
    let roots = crate::fs::group_root_paths(&engine)
        .map_err(|e| format!("reading the group roots of {}: {e}", path.display()))?;
    if args.json {
        print_out(&format!("{}\n", stats::stats_json(&s, &roots)));
    } else {
        print_out(&stats::stats_text(&s, &roots));
    }
    engine
        .close()
        .map_err(|e| format!("closing the store: {e}"))
}

/// `logstorfs replay-cut`: lists an I/O log, or writes the image a power cut after its first
/// `--at` entries would leave.
fn replay_cut_cmd(args: &ReplayCutArgs) -> Result<(), String> {
    use crate::engine::instrument;
    use crate::engine::storage::PowerCut;
    let log = &args.log;
    if args.list {
        let s = instrument::summarize(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let syncs: Vec<String> = s.syncs.iter().map(|v| v.to_string()).collect();
        let marks: Vec<String> = s.marks.iter().map(|(e, l)| format!("[{e},{l}]")).collect();
        print_out(&format!(
            "{{\"entries\":{},\"writes\":{},\"bytes_written\":{},\"syncs\":[{}],\"marks\":[{}]}}\n",
            s.entries,
            s.writes,
            s.bytes_written,
            syncs.join(","),
            marks.join(",")
        ));
        return Ok(());
    }
    let (Some(at), Some(out)) = (args.at, &args.out) else {
        return Err("give --list, or --at ENTRIES and --out DIR".into());
    };
    let cut = match args.keep.as_str() {
        "random" => PowerCut::Random(args.seed),
        "none" => PowerCut::DropAllUnsynced,
        "all" => PowerCut::KeepAllWritten,
        other => return Err(format!("--keep {other}: expected random, none or all")),
    };
    let (image, last_mark) =
        instrument::replay(log, at).map_err(|e| format!("{}: {e}", log.display()))?;
    image
        .crash(cut)
        .export(out)
        .map_err(|e| format!("writing the image to {}: {e}", out.display()))?;
    print_out(&format!(
        "{}\n",
        last_mark.map_or_else(|| "none".to_string(), |m| m.to_string())
    ));
    Ok(())
}

/// `logstorfs fsck`: returns the exit code (0 clean, 1 problems); `Err` for exit code 2.
fn fsck_cmd(args: &FsckArgs) -> Result<i32, String> {
    let store = &args.store;
    if stats_from_mount(store).is_some() {
        return Err(format!(
            "{} is the mount point of a mounted logstorfs: unmount it, then give fsck the store \
             directory",
            store.display()
        ));
    }
    if let Ok(m) = std::fs::read_to_string(store.join(MOUNTED_FILE)) {
        let mut lines = m.lines();
        let mp = lines.next().unwrap_or_default().to_string();
        let pid: i32 = lines
            .next()
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or(0);
        // The lock (below) is what decides; this names the mount point when it can.
        let daemon = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if pid_alive(pid) && daemon.contains("logstorfs") {
            return Err(format!(
                "store {} is mounted on {mp} (logstorfs pid {pid}): unmount it first \
                 (fusermount3 -u {mp}); fsck checks only an unmounted store",
                store.display()
            ));
        }
    }
    let report = check::check_store(store).map_err(|e| match e {
        EngineError::Locked(_) => format!(
            "store {} is in use by another process (mounted?): {e}; fsck checks only an \
             unmounted store",
            store.display()
        ),
        e => format!("cannot check store {}: {e}", store.display()),
    })?;
    if args.json {
        print_out(&format!("{}\n", report.json(store)));
    } else {
        let mut text = String::new();
        for f in report.all_findings() {
            match f.severity {
                Severity::Problem => text.push_str(&format!("{f}\n")),
                Severity::Note => text.push_str(&format!("note: {f}\n")),
            }
        }
        let fig = &report.figures;
        let e = &report.engine;
        let problems = report.problems();
        text.push_str(&format!(
            "{}: {} ({} inodes: {} directories, {} files, {} symlinks; {} data pages; {} \
             segments in use, {} records, last LSN {})\n",
            store.display(),
            if problems == 0 {
                "clean".to_string()
            } else {
                format!("{problems} problem(s) found")
            },
            fig.inodes,
            fig.directories,
            fig.regular_files,
            fig.symlinks,
            fig.data_pages,
            e.segments.len(),
            e.records_accepted,
            e.last_lsn
        ));
        print_out(&text);
    }
    Ok(if report.is_clean() { 0 } else { 1 })
}
