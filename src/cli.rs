//! Command line: `logstorfs mount`, `logstorfs stats` and `logstorfs fsck`.
//!
//! Exit codes: 0 on success (mount: after a clean unmount, or with `--daemon` once the mount is
//! live), 1 on any error, reported as one line `logstorfs: ...` on stderr. `fsck`: 0 clean, 1
//! problems found, 2 usage or I/O error (or a mounted store).

use std::ffi::CString;
use std::fs::File;
use std::io::{BufRead, Write};
use std::os::fd::FromRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use fuser::{Config, MountOption, Session, SessionACL, SessionUnmounter};
use parking_lot::Mutex;

use crate::engine::check::Severity;
use crate::engine::instrument::Instrumentation;
use crate::engine::{CompactionPolicy, Engine, EngineError, EngineOptions};
use crate::fs::atime::AtimeMode;
use crate::fs::fuse_adapter::FuseFs;
use crate::fs::{Fs, FsOptions, STATS_XATTR, check, stats};

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
    about = "A FUSE filesystem on a log-structured store"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Mount STORE (created if missing) on MOUNTPOINT.
    Mount(MountArgs),
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
struct MountArgs {
    /// Capacity of a store created by this mount (e.g. 512M, 1G, 10G); ignored if it exists.
    #[arg(long, default_value = "1G")]
    size: String,
    /// Run in the background; exit 0 once the mount is live.
    #[arg(long)]
    daemon: bool,
    /// Mount options, comma separated (e.g. allow_other,default_permissions).
    #[arg(short = 'o', value_name = "OPTIONS")]
    options: Vec<String>,
    /// Written data becomes durable at the latest after this many seconds (0: only on fsync,
    /// sync of a directory and unmount).
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    flush_interval: u64,
    /// (Testing) Record every storage call of this new store into an I/O log, for power-cut
    /// replay (`logstorfs replay-cut`).
    #[arg(long, hide = true, value_name = "PATH")]
    test_record_io: Option<PathBuf>,
    /// (Testing) Fail every segment write after this many: an injected disk error.
    #[arg(long, hide = true, value_name = "N")]
    test_fail_writes_after: Option<u64>,
    /// A directory becomes a compaction group of its own once the live data under it (outside
    /// deeper group roots) passes this size (e.g. 16M), and merges back below a quarter of it.
    #[arg(long, value_name = "SIZE", default_value = "16M")]
    group_split_size: String,
    /// How compaction chooses the segments it empties: `greedy` (least live data first) or
    /// `cost-benefit` (free space gained times age, over cost, as in LFS).
    #[arg(long, value_name = "POLICY", default_value = "cost-benefit", value_parser = parse_policy)]
    compaction_policy: CompactionPolicy,
    /// Store directory.
    store: PathBuf,
    /// Mount point (an existing directory).
    mountpoint: PathBuf,
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
    let result = match cli.command {
        Command::Mount(args) => mount(args),
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
    match result {
        Ok(()) => 0,
        Err(msg) => {
            eprintln!("logstorfs: {msg}");
            1
        }
    }
}

/// Parses a size such as `1G`, `512M`, `64KiB`, `1073741824`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits_end);
    let n: u64 = num.parse().map_err(|_| format!("invalid size '{s}'"))?;
    let shift = match unit
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => {
            return Err(format!(
                "invalid size '{s}' (use a number with K, M, G or T)"
            ));
        }
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("size '{s}' is too large"))
}

/// The atime rule `-o` options ask for (the last one wins; `relatime` by default, as the
/// kernel's); a read-only mount never changes atime.
pub fn atime_mode(opts: &[String]) -> AtimeMode {
    let mut mode = AtimeMode::default();
    let mut read_only = false;
    for opt in opts.iter().flat_map(|o| o.split(',')) {
        match opt {
            "ro" => read_only = true,
            "rw" => read_only = false,
            o => mode = AtimeMode::from_option(o).unwrap_or(mode),
        }
    }
    if read_only { AtimeMode::NoAtime } else { mode }
}

/// Whether `-o writeback_cache` is among the mount options.
pub fn writeback_cache(opts: &[String]) -> bool {
    opts.iter()
        .flat_map(|o| o.split(','))
        .any(|o| o == "writeback_cache")
}

/// Maps `-o` options to fuser's config. Unknown options pass through as custom options.
pub fn parse_mount_options(opts: &[String], config: &mut Config) {
    for opt in opts
        .iter()
        .flat_map(|o| o.split(','))
        .filter(|o| !o.is_empty())
    {
        let mo = match opt {
            "allow_other" => {
                config.acl = SessionACL::All;
                continue;
            }
            "allow_root" => {
                config.acl = SessionACL::RootAndOwner;
                continue;
            }
            "auto_unmount" => MountOption::AutoUnmount,
            "default_permissions" => MountOption::DefaultPermissions,
            "dev" => MountOption::Dev,
            "nodev" => MountOption::NoDev,
            "suid" => MountOption::Suid,
            "nosuid" => MountOption::NoSuid,
            "ro" => MountOption::RO,
            "rw" => MountOption::RW,
            "exec" => MountOption::Exec,
            "noexec" => MountOption::NoExec,
            "atime" => MountOption::Atime,
            "noatime" => MountOption::NoAtime,
            // Ours alone (see `atime_mode`): the kernel leaves atime on FUSE to the daemon, and
            // fuser's mount(2) has no flag for them.
            "relatime" | "strictatime" => continue,
            // Ours (see `writeback_cache`): asked for in FUSE's INIT reply, not at mount(2).
            "writeback_cache" => continue,
            "dirsync" => MountOption::DirSync,
            "sync" => MountOption::Sync,
            "async" => MountOption::Async,
            o if o.starts_with("fsname=") => MountOption::FSName(o[7..].to_string()),
            o if o.starts_with("subtype=") => MountOption::Subtype(o[8..].to_string()),
            o => MountOption::CUSTOM(o.to_string()),
        };
        config.mount_options.push(mo);
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

fn parse_policy(s: &str) -> Result<CompactionPolicy, String> {
    match s {
        "greedy" => Ok(CompactionPolicy::Greedy),
        "cost-benefit" => Ok(CompactionPolicy::CostBenefit),
        _ => Err(format!("{s:?}: expected greedy or cost-benefit")),
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

fn mount(args: MountArgs) -> Result<(), String> {
    let capacity_bytes = parse_size(&args.size)?;
    keep_large_buffers_unresident();
    crate::engine::storage::create_dir_durably(&args.store).map_err(|e| {
        format!(
            "cannot create store directory {}: {e}",
            args.store.display()
        )
    })?;
    let store = args
        .store
        .canonicalize()
        .map_err(|e| format!("store {}: {e}", args.store.display()))?;
    clear_dead_mount(&args.mountpoint);
    let mountpoint = args
        .mountpoint
        .canonicalize()
        .map_err(|e| format!("mount point {}: {e}", args.mountpoint.display()))?;
    match std::fs::metadata(&mountpoint) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(format!(
                "mount point {} is not a directory",
                mountpoint.display()
            ));
        }
        Err(e) => return Err(format!("mount point {}: {e}", mountpoint.display())),
    }
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("logstorfs".into()),
        MountOption::Subtype("logstorfs".into()),
    ];
    parse_mount_options(&args.options, &mut config);
    // The kernel checks permissions against the mode bits we report (as ext4 would); without
    // it, any user allowed on the mount could open any file.
    if !config
        .mount_options
        .contains(&MountOption::DefaultPermissions)
    {
        config.mount_options.push(MountOption::DefaultPermissions);
    }
    let cpus = std::thread::available_parallelism().map_or(FUSE_THREADS_MIN, |n| n.get());
    config.n_threads = Some(cpus.clamp(FUSE_THREADS_MIN, FUSE_THREADS_MAX));
    config.clone_fd = true;

    let options = EngineOptions {
        capacity_bytes,
        create_if_missing: true,
        sync_interval: (args.flush_interval > 0)
            .then(|| std::time::Duration::from_secs(args.flush_interval)),
        tombstone_prefix_lengths: crate::fs::keys::TOMBSTONE_PREFIX_LENGTHS.to_vec(),
        compaction_policy: args.compaction_policy,
        ..Default::default()
    };
    let fs_options = FsOptions {
        group_split_bytes: parse_size(&args.group_split_size)?,
        // The byte counts steer splits and merges only: rebuilt while the mount is live.
        defer_group_map: true,
        atime: atime_mode(&args.options),
        writeback_cache: writeback_cache(&args.options),
    };
    let instrument = Instrumentation {
        record_io: args.test_record_io.clone(),
        fail_writes_after: args.test_fail_writes_after,
    };
    if args.daemon {
        daemonize_and_serve(
            &store,
            &mountpoint,
            &options,
            &fs_options,
            &instrument,
            &config,
        )
    } else {
        serve(
            &store,
            &mountpoint,
            &options,
            &fs_options,
            &instrument,
            &config,
            None,
        )
    }
}

/// A daemon killed without unmounting leaves its mount behind, answering ENOTCONN. Detach it
/// so the store can be mounted there again (the store's lock tells whether a daemon is alive).
fn clear_dead_mount(mountpoint: &Path) {
    // statvfs, not stat: the kernel answers stat from its attribute cache for up to a second
    // after the daemon died (then the checks below would find ENOTCONN after this one passed),
    // while a FUSE statfs always asks the daemon.
    let Ok(path) = CString::new(mountpoint.as_os_str().as_bytes()) else {
        return;
    };
    let mut buf = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: a valid C string and a buffer of the right type for statvfs to fill.
    // ENOTCONN once the connection is gone; ECONNABORTED for a request that was under way
    // when it went (seen in about one kill -9 in three).
    let dead = unsafe { libc::statvfs(path.as_ptr(), buf.as_mut_ptr()) } != 0
        && matches!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::ENOTCONN | libc::ECONNABORTED)
        );
    if !dead {
        return;
    }
    log::warn!(
        "{}: detaching the mount of a daemon that died",
        mountpoint.display()
    );
    let status = std::process::Command::new("fusermount3")
        .arg("-uz")
        .arg(mountpoint)
        .status();
    if !status.is_ok_and(|s| s.success()) {
        // SAFETY: a valid C string; umount2 has no other preconditions.
        unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
    }
}

/// Forks. The parent waits until the child reports that the mount is live (or why it failed)
/// and returns; the child serves the mount and exits.
fn daemonize_and_serve(
    store: &Path,
    mountpoint: &Path,
    options: &EngineOptions,
    fs_options: &FsOptions,
    instrument: &Instrumentation,
    config: &Config,
) -> Result<(), String> {
    let mut fds = [0i32; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2(2) to fill. CLOEXEC: a helper the
    // child spawns (fusermount3) must not inherit the write end and keep the parent waiting.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("pipe: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: we are single-threaded here (no engine or FUSE threads exist yet), so the child
    // may continue running Rust code after fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    if pid > 0 {
        // Parent: wait for the child's verdict.
        // SAFETY: fds[1] is ours to close; fds[0] is a valid, owned pipe end.
        unsafe { libc::close(fds[1]) };
        let reader = unsafe { File::from_raw_fd(fds[0]) };
        // One line: "OK" or "ERR <message>"; EOF without it means the child died.
        let mut msg = String::new();
        let _ = std::io::BufReader::new(reader).read_line(&mut msg);
        return if msg.starts_with("OK") {
            Ok(())
        } else if let Some(err) = msg.strip_prefix("ERR ") {
            Err(err.trim_end().to_string())
        } else {
            Err("the daemon exited before the mount was live".into())
        };
    }
    // Child.
    // SAFETY: fds[0] is ours to close; fds[1] is a valid, owned pipe end; setsid has no
    // preconditions.
    unsafe {
        libc::close(fds[0]);
        libc::setsid();
    }
    let notify = unsafe { File::from_raw_fd(fds[1]) };
    let code = match serve(
        store,
        mountpoint,
        options,
        fs_options,
        instrument,
        config,
        Some(notify),
    ) {
        Ok(()) => 0,
        Err(msg) => {
            // Before the mount went live the parent reports the message; after, only the log
            // (our stderr by then) can.
            if DETACHED.load(std::sync::atomic::Ordering::Relaxed) {
                log::error!("{msg}");
            }
            1
        }
    };
    std::process::exit(code);
}

/// Set once the daemon's stdio points at /dev/null and the log file.
static DETACHED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Points stdin/stdout at /dev/null and stderr at the store's log file.
fn detach_stdio(store: &Path) {
    DETACHED.store(true, std::sync::atomic::Ordering::Relaxed);
    let devnull = CString::new("/dev/null").expect("no NUL");
    let log_path = store.join(DAEMON_LOG_FILE);
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
    let fuse = FuseFs::new(fs.clone());
    let notifier = fuse.notifier_slot();
    let session = Session::new(fuse, mountpoint, config);
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
    notifier.connect(&session);
    *unmounter.lock() = Some(session.unmount_callable());
    let mounted_file = store.join(MOUNTED_FILE);
    let _ = std::fs::write(
        &mounted_file,
        format!("{}\n{}\n", mountpoint.display(), std::process::id()),
    );
    if let Some(mut n) = notify.take() {
        detach_stdio(store);
        let _ = n.write_all(b"OK\n");
    }
    log::info!("mounted {} on {}", store.display(), mountpoint.display());
    let run = session.run();
    unmounter.lock().take();
    let _ = std::fs::remove_file(&mounted_file);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("64KiB").unwrap(), 64 << 10);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("2gb").unwrap(), 2 << 30);
        assert!(parse_size("1X").is_err());
        assert!(parse_size("G").is_err());
    }

    #[test]
    fn mount_options_map_to_fuser() {
        let mut c = Config::default();
        parse_mount_options(
            &["allow_other,default_permissions".into(), "foo=1".into()],
            &mut c,
        );
        assert_eq!(c.acl, SessionACL::All);
        assert!(c.mount_options.contains(&MountOption::DefaultPermissions));
        assert!(
            c.mount_options
                .contains(&MountOption::CUSTOM("foo=1".into()))
        );
    }

    #[test]
    fn writeback_cache_is_asked_of_fuse_not_passed_to_mount() {
        let opts = ["noatime,writeback_cache".to_string()];
        let mut c = Config::default();
        parse_mount_options(&opts, &mut c);
        assert!(writeback_cache(&opts));
        assert!(!writeback_cache(&["noatime".into()]));
        assert_eq!(c.mount_options, vec![MountOption::NoAtime]);
    }
}
