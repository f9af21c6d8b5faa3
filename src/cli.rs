//! Command line: `logstorfs format`, `mount` (and the `mount.fuse3` form `logstorfs STORE
//! MOUNTPOINT -o OPTIONS`), `umount`, `resize` (in `cli/`), `stats` and `fsck`.
//!
//! Exit codes: 0 on success (mount: after a clean unmount, or with `--daemon` once the mount is
//! live), 1 on any error, reported as one line `logstorfs: ...` on stderr, 2 on a usage error.
//! `fsck` follows fsck(8): 0 clean, 4 problems left uncorrected, 8 operational error (or a
//! mounted store), 16 usage error.

mod docs;
mod fsck;
mod logging;
mod progress;
mod remote;
mod signals;
mod stats;

use std::ffi::CString;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{ArgAction, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use fuser::{Config, Session};

use crate::engine::storage::io_log::Instrumentation;
use crate::engine::{Engine, EngineError, EngineOptions};
use crate::fs::fuse_adapter::{FuseFs, raise_read_ahead};
use crate::fs::{Fs, FsOptions};

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
    /// More log lines (-v: info, -vv: debug, -vvv: trace).
    #[arg(short, long, action = ArgAction::Count, global = true)]
    verbose: u8,
    /// Fewer log lines (-q: warnings and errors only, -qq: errors only).
    #[arg(short, long, action = ArgAction::Count, global = true, conflicts_with = "verbose")]
    quiet: u8,
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
    /// Check an unmounted store without changing it (exit 0 clean, 4 problems, 8 errors).
    ///
    /// Checks buffers and records (CRCs), the end of the log, the per-segment accounting, and
    /// the namespace (entries, link counts, reachability, orphans, data pages within sizes);
    /// names the files that damaged records belong to. Prints one problem per line, where
    /// first; lines starting with "note:" are not problems; then what to do next. Exit status
    /// as fsck(8)'s: 0 clean, 4 problems found (fsck repairs nothing), 8 operational error (I/O
    /// error, not a store, or the store is mounted: unmount it first), 16 usage error.
    Fsck(FsckArgs),
    /// Print the man page (roff) on stdout.
    #[command(hide = true)]
    Man,
    /// Print the completion script for SHELL on stdout.
    #[command(hide = true)]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
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
    /// Check the bucket a store is mirrored to (s3://BUCKET/PREFIX) instead: every manifest
    /// against its objects, every piece's checksum. Keys from the AWS_* environment.
    #[arg(long, value_name = "URL")]
    remote: Option<String>,
    /// A credentials file for --remote (KEY=value lines or an AWS CLI profile).
    #[arg(long, value_name = "FILE", requires = "remote")]
    credentials: Option<PathBuf>,
    /// The store directory (unmounted).
    #[arg(required_unless_present = "remote", conflicts_with = "remote")]
    store: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct StatsArgs {
    /// Print a JSON object.
    #[arg(long)]
    json: bool,
    /// The store directory or the mount point.
    path: PathBuf,
}

/// The clap definitions with `--version` naming the on-disk formats (also the source of the
/// man page and the completions).
fn command() -> clap::Command {
    Cli::command().version(&*Box::leak(docs::version_text().into_boxed_str()))
}

/// Parses the command line, or exits: 0 after `--help` or `--version`, 2 on a usage error
/// (16 for `fsck`, as fsck(8) says).
fn parse() -> Cli {
    let parsed = command()
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m));
    match parsed {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() && is_fsck_invocation() => {
            let _ = e.print();
            std::process::exit(fsck::USAGE_ERROR);
        }
        Err(e) => e.exit(),
    }
}

/// Whether the first word after the options is `fsck`.
fn is_fsck_invocation() -> bool {
    std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .is_some_and(|a| a == "fsck")
}

/// Runs the command line; returns the process exit code.
pub fn main() -> i32 {
    let cli = parse();
    logging::init(i32::from(cli.verbose) - i32::from(cli.quiet));
    progress::show_on_terminal();
    let Some(subcommand) = cli.command else {
        return report(cli.helper.into_mount_args().and_then(mount::mount_cmd));
    };
    let result = match subcommand {
        Command::Format(args) => format::format_cmd(&args),
        Command::Mount(args) => mount::mount_cmd(args),
        Command::Umount(args) => umount::umount_cmd(&args),
        Command::Resize(args) => format::resize_cmd(&args),
        Command::Stats(args) => stats::run(&args.path, args.json),
        Command::ReplayCut(args) => replay_cut_cmd(&args),
        Command::Fsck(args) => {
            return match (&args.remote, &args.store) {
                (Some(url), _) => fsck::run_remote(url, args.credentials.clone(), args.json),
                (None, Some(store)) => fsck::run(store, args.json),
                (None, None) => fsck::USAGE_ERROR,
            };
        }
        Command::Man => docs::man(command()),
        Command::Completions { shell } => {
            docs::completions(command(), shell);
            Ok(())
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

/// Points stdin/stdout at /dev/null, and the log and stderr at the store's log file (capped
/// and rotated: see `logging.rs`), or at /dev/null too without `log_in_store` (a read-only
/// mount writes nothing into the store).
fn detach_stdio(store: &Path, log_in_store: bool) {
    DETACHED.store(true, std::sync::atomic::Ordering::Relaxed);
    let devnull = CString::new("/dev/null").expect("no NUL");
    // SAFETY: plain fd manipulation on descriptors we own or on 0/1/2.
    unsafe {
        let null = libc::open(devnull.as_ptr(), libc::O_RDWR);
        if null >= 0 {
            libc::dup2(null, 0);
            libc::dup2(null, 1);
            if !log_in_store {
                libc::dup2(null, 2);
            }
            libc::close(null);
        }
    }
    if log_in_store && let Err(e) = logging::log_to_file(&store.join(DAEMON_LOG_FILE)) {
        log::error!("cannot open the log file in {}: {e}", store.display());
    }
}

/// Everything a mount's daemon needs, checked by `mount_cmd` before anything was written.
pub(crate) struct ServeArgs<'a> {
    pub store: &'a Path,
    pub mountpoint: &'a Path,
    pub options: &'a EngineOptions,
    pub fs_options: &'a FsOptions,
    pub instrument: &'a Instrumentation,
    pub config: &'a Config,
    pub remote: Option<&'a remote::Remote>,
    /// (Testing) A pause before the store is opened, as a long recovery takes.
    pub test_delay_open: Option<std::time::Duration>,
}

fn serve(args: &ServeArgs, mut notify: Option<File>) -> Result<(), String> {
    let result = serve_inner(args, &mut notify);
    if let (Err(msg), Some(n)) = (&result, notify.as_mut()) {
        let _ = n.write_all(format!("ERR {msg}\n").as_bytes());
    }
    result
}

/// Requests and buffers up to this size come from the allocator's heap rather than a map of
/// their own: a WRITE of 1 MiB, its encoded batch, a 256 KiB log buffer and a 1 MiB segment read
/// back. Mapped anew each time, every 4 KiB of them cost the host a page fault and a zeroed page
/// (8% of a FUSE thread's time in a long sequential write; `docs/BENCHMARKS.md`, issue 20).
const MALLOC_MMAP_THRESHOLD: libc::c_int = 4 << 20;
/// Free memory the allocator keeps at the top of its heap instead of giving it back at once
/// (without a fixed value, glibc raises it to twice the largest block it has freed, up to 64 MiB).
const MALLOC_TRIM_THRESHOLD: libc::c_int = 16 << 20;

/// Sets the allocator's thresholds for a serving daemon, before its threads start.
fn tune_allocator() {
    // SAFETY: mallopt only sets glibc's allocator parameters, under the allocator's own lock.
    // A refusal (it returns 0) leaves glibc's defaults, which are correct, only slower.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD);
    }
}

fn serve_inner(args: &ServeArgs, notify: &mut Option<File>) -> Result<(), String> {
    tune_allocator();
    let ServeArgs {
        store,
        mountpoint,
        options,
        fs_options,
        instrument,
        config,
        remote,
        test_delay_open,
    } = *args;
    // Opened again here (a restore opened it before any fork): the client's threads do not
    // survive a fork.
    let bucket = remote.map(remote::open_bucket).transpose()?;
    let unmounter = signals::SharedUnmountSlot::default();
    signals::start_unmount_on_signal(unmounter.clone())
        .map_err(|e| format!("cannot watch for signals: {e}"))?;
    if let Some(pause) = test_delay_open {
        std::thread::sleep(pause);
    }
    let engine =
        Engine::open_instrumented(store, options, instrument).map_err(|e| open_error(store, &e))?;
    let fs = Arc::new(
        Fs::with_options(engine, fs_options.clone())
            .map_err(|e| format!("cannot mount store {}: {e}", store.display()))?,
    );
    return_freed_memory();
    let uploader = match (remote, bucket) {
        (Some(r), Some(objects)) if !options.read_only => {
            match remote::Uploader::start(fs.clone(), objects, r, store) {
                Ok(u) => {
                    if let Some(timeout) = r.sync_timeout {
                        fs.set_after_sync(u.fsync_waiter(timeout));
                    }
                    Some(u)
                }
                Err(e) => {
                    if let Err(close) = close_fs(fs) {
                        log::error!("{close}");
                    }
                    return Err(e);
                }
            }
        }
        _ => None,
    };
    let rebuild = start_group_map_rebuild(fs.clone())?;
    let fuse = FuseFs::new(fs.clone());
    let notifier = fuse.notifier_slot();
    let under = std::fs::metadata(mountpoint).map(|m| m.dev()).ok();
    let session = Session::new(fuse, mountpoint, config);
    let mut session = match session {
        Ok(s) => s,
        Err(e) => {
            let msg = format!("cannot mount on {}: {e}", mountpoint.display());
            fs.stop_group_map_rebuild();
            let _ = rebuild.join();
            if let Some(u) = uploader {
                u.finish();
            }
            if let Err(close) = close_fs(fs) {
                log::error!("{close}");
            }
            return Err(msg);
        }
    };
    notifier.connect(&session);
    signals::UnmountSlot::set(&unmounter, session.unmount_callable());
    let mounted_file = store.join(MOUNTED_FILE);
    // A read-only mount writes nothing in the store: no record of the mount, no log there.
    let read_only = options.read_only;
    announce_mounted(store, mountpoint, &mounted_file, read_only, notify);
    raise_read_ahead(mountpoint, under);
    let run = session.run();
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    signals::UnmountSlot::clear(&unmounter);
    if !read_only {
        let _ = std::fs::remove_file(&mounted_file);
    }
    // The rebuild holds a reference to the filesystem: stop it (its counts are in memory only).
    fs.stop_group_map_rebuild();
    let _ = rebuild.join();
    // Before the close: one last round puts everything durable so far in the bucket.
    if let Some(u) = uploader {
        u.finish();
    }
    let closed = close_fs(fs);
    run.map_err(|e| format!("session ended with an error: {e}"))?;
    closed?;
    log::info!(
        "unmounted {} from {}",
        store.display(),
        mountpoint.display()
    );
    Ok(())
}

/// The group map is rebuilt in the background while the mount is live: its byte counts steer
/// splits and merges only.
fn start_group_map_rebuild(fs: Arc<Fs>) -> Result<std::thread::JoinHandle<()>, String> {
    std::thread::Builder::new()
        .name("group-map".into())
        .spawn(move || {
            if let Err(e) = fs.rebuild_group_map() {
                // Splits and merges stay off for this mount; nothing else depends on it.
                log::error!("group map rebuild failed: {e}");
            }
            return_freed_memory();
        })
        .map_err(|e| format!("cannot start the group map rebuild: {e}"))
}

/// The mount is live: recorded in the store (unless read-only), told to the parent waiting
/// on `notify` (a daemonized mount), the log and systemd.
fn announce_mounted(
    store: &Path,
    mountpoint: &Path,
    mounted_file: &Path,
    read_only: bool,
    notify: &mut Option<File>,
) {
    if !read_only {
        let _ = std::fs::write(
            mounted_file,
            format!("{}\n{}\n", mountpoint.display(), std::process::id()),
        );
    }
    if let Some(mut n) = notify.take() {
        detach_stdio(store, !read_only);
        let _ = n.write_all(b"OK\n");
    }
    log::info!("mounted {} on {}", store.display(), mountpoint.display());
    // Under systemd (`Type=notify`): the mount is live. Nothing happens without NOTIFY_SOCKET.
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
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

/// Prints to stdout, ignoring a closed pipe (`logstorfs stats | head`).
fn print_out(s: &str) {
    let _ = std::io::stdout().write_all(s.as_bytes());
}

fn pid_alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence.
    pid > 0 && unsafe { libc::kill(pid, 0) } == 0
}

/// `logstorfs replay-cut`: lists an I/O log, or writes the image a power cut after its first
/// `--at` entries would leave.
fn replay_cut_cmd(args: &ReplayCutArgs) -> Result<(), String> {
    use crate::engine::storage::PowerCut;
    use crate::engine::storage::io_log;
    let log = &args.log;
    if args.list {
        let s = io_log::summarize(log).map_err(|e| format!("{}: {e}", log.display()))?;
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
        io_log::replay(log, at).map_err(|e| format!("{}: {e}", log.display()))?;
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
