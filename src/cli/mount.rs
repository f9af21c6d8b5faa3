//! `logstorfs mount`, and the form `mount.fuse3` runs for `mount -t fuse.logstorfs` and fstab
//! lines: `logstorfs STORE MOUNTPOINT -o OPTIONS`. Every argument is checked before anything
//! is written: the options, the size, the store directory, the mount point.

use std::fs::File;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use clap::Args;
use fuser::{Config, MountOption};
use nix::fcntl::OFlag;
use nix::unistd::ForkResult;

use super::format::{StoreDir, inspect_store_dir, new_store_capacity, resolved};
use super::options::{MountOptions, Policy, parse_capacity, parse_mount_options, parse_size};
use super::remote::{self, Remote};
use super::{FUSE_THREADS_MAX, FUSE_THREADS_MIN, ServeArgs, serve};
use crate::engine::storage::io_log::Instrumentation;
use crate::engine::{EngineOptions, store_dir};
use crate::fs::FsOptions;

#[derive(Args, Debug)]
pub struct MountArgs {
    /// Create the store if STORE holds none (STORE must then be missing or empty).
    #[arg(long)]
    pub create: bool,
    /// Capacity of the store --create makes, from 16M to 16T (e.g. 512M, 1G, 10G; default 1G).
    /// For an existing store it must be its capacity (grow one with `logstorfs resize`).
    #[arg(long, value_name = "SIZE", requires = "create", value_parser = parse_capacity)]
    pub size: Option<u64>,
    /// Run in the background; exit 0 once the mount is live.
    #[arg(long)]
    pub daemon: bool,
    /// Mount options, comma separated: the kernel's and FUSE's (ro, allow_other,
    /// default_permissions, noatime, ...), logstorfs' own (flush_interval=SECONDS,
    /// group_split_size=SIZE, compaction_policy=POLICY, writeback_cache, daemon_permissions);
    /// mount(8)'s own words (defaults, noauto, nofail, _netdev, x-*, ...) are ignored, anything
    /// else refused.
    #[arg(short = 'o', value_name = "OPTIONS")]
    pub options: Vec<String>,
    /// Written data becomes durable at the latest after this many seconds (0: only on fsync,
    /// sync of a directory and unmount). Default 5.
    #[arg(long, value_name = "SECONDS")]
    pub flush_interval: Option<u64>,
    /// (Testing) Record every storage call of this new store into an I/O log, for power-cut
    /// replay (`logstorfs replay-cut`).
    #[arg(long, hide = true, value_name = "PATH")]
    pub test_record_io: Option<PathBuf>,
    /// (Testing) Fail every segment write after this many: an injected disk error.
    #[arg(long, hide = true, value_name = "N")]
    pub test_fail_writes_after: Option<u64>,
    /// (Testing) Pause this long before opening the store, as a long recovery would.
    #[arg(long, hide = true, value_name = "MS")]
    pub test_delay_open_ms: Option<u64>,
    /// A directory becomes a compaction group of its own once the live data under it (outside
    /// deeper group roots) passes this size, and merges back below a quarter of it. Default 16M.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub group_split_size: Option<u64>,
    /// How compaction chooses the segments it empties (default cost-benefit).
    #[arg(long, value_name = "POLICY", value_enum)]
    pub compaction_policy: Option<Policy>,
    /// Mirror the store to this bucket prefix (s3://BUCKET/PREFIX; endpoint, region and keys
    /// from the AWS_* environment or -o credentials=FILE). A STORE that holds no store is
    /// restored from the bucket's newest image first (or, with --create and an empty prefix,
    /// created and mirrored from the start).
    #[arg(long, value_name = "URL")]
    pub remote: Option<String>,
    /// Seconds between uploads to the bucket (how far it may lag behind). Default 5.
    #[arg(long, value_name = "SECONDS", requires = "remote")]
    pub remote_lag: Option<u64>,
    /// Seconds an image in the bucket stays restorable after a newer one (default a day);
    /// objects only older images need are deleted after that.
    #[arg(long, value_name = "SECONDS", requires = "remote")]
    pub retain: Option<u64>,
    /// Mirror to a prefix whose newest image another store made (or that this store lost to
    /// another writer): this store's images replace it from the next upload.
    #[arg(long, requires = "remote")]
    pub take_over: bool,
    /// With --remote and -o ro, over an empty STORE: restore manifest N (an older image, kept
    /// for --retain) instead of the newest, to copy files back from it.
    #[arg(long, value_name = "N", requires = "remote")]
    pub manifest: Option<u64>,
    /// For a store that lost the prefix to another writer (fenced): move it aside (to
    /// STORE.discarded-SECONDS, where what the bucket lacks stays readable) and mount the
    /// bucket's newest image in its place.
    #[arg(long, requires = "remote", conflicts_with = "take_over")]
    pub discard_local: bool,
    /// An fsync returns only once the bucket holds its data too (or fails with EIO after
    /// --remote-sync-timeout seconds, default 60, the data still durable locally).
    #[arg(long, requires = "remote")]
    pub remote_sync: bool,
    /// How long an fsync waits for the bucket with --remote-sync (default 60 seconds).
    #[arg(long, value_name = "SECONDS", requires = "remote_sync")]
    pub remote_sync_timeout: Option<u64>,
    /// Store directory.
    pub store: PathBuf,
    /// Mount point (an existing directory, not already a mount point).
    pub mountpoint: PathBuf,
}

/// `logstorfs STORE MOUNTPOINT [-o OPTIONS] [-f]`: what `mount.fuse3` runs.
#[derive(Args, Debug)]
pub struct HelperArgs {
    /// The store directory (with no command: `mount -t fuse.logstorfs` and fstab).
    pub store: Option<PathBuf>,
    /// The mount point.
    pub mountpoint: Option<PathBuf>,
    /// Mount options, as for `logstorfs mount -o`.
    #[arg(short = 'o', value_name = "OPTIONS")]
    pub options: Vec<String>,
    /// Stay in the foreground (by default the daemon detaches once the mount is live).
    #[arg(short = 'f')]
    pub foreground: bool,
}

const DEFAULT_FLUSH_INTERVAL_SECS: u64 = 5;
const DEFAULT_GROUP_SPLIT_SIZE: u64 = 16 << 20;

impl HelperArgs {
    pub fn into_mount_args(self) -> Result<MountArgs, String> {
        let (Some(store), Some(mountpoint)) = (self.store, self.mountpoint) else {
            return Err(
                "give a command (see logstorfs --help), or STORE MOUNTPOINT [-o OPTIONS]".into(),
            );
        };
        Ok(MountArgs {
            create: false,
            size: None,
            daemon: !self.foreground,
            options: self.options,
            flush_interval: None,
            test_record_io: None,
            test_fail_writes_after: None,
            test_delay_open_ms: None,
            group_split_size: None,
            compaction_policy: None,
            remote: None,
            remote_lag: None,
            retain: None,
            take_over: false,
            manifest: None,
            discard_local: false,
            remote_sync: false,
            remote_sync_timeout: None,
            store,
            mountpoint,
        })
    }
}

/// Checks `store` for a mount; returns whether the mount creates the store (or, with a
/// remote, restores it from the bucket).
fn check_store(args: &MountArgs, remote: bool) -> Result<bool, String> {
    let store = &args.store;
    match inspect_store_dir(store)? {
        StoreDir::Store => {
            if let Some(size) = args.size {
                let have = store_dir::capacity(store)
                    .map_err(|e| format!("store {}: {e}", store.display()))?;
                if new_store_capacity(size) != have {
                    return Err(format!(
                        "store {} exists with a capacity of {} MiB: --size only sizes a new store \
                         (grow this one with `logstorfs resize --size SIZE {}`)",
                        store.display(),
                        have >> 20,
                        store.display()
                    ));
                }
            }
            Ok(false)
        }
        StoreDir::Missing | StoreDir::Empty if args.create || remote => Ok(true),
        StoreDir::Missing | StoreDir::Empty => Err(format!(
            "{} holds no logstorfs store: create one with `logstorfs format {}`, or mount with \
             --create",
            store.display(),
            store.display()
        )),
    }
}

/// The mount points in /proc/self/mountinfo, with their file system type and source.
pub fn mounts() -> Vec<(PathBuf, String, String)> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split(' ').collect();
            let dash = fields.iter().position(|f| *f == "-")?;
            Some((
                PathBuf::from(unescape(fields.get(4)?)),
                fields.get(dash + 1)?.to_string(),
                unescape(fields.get(dash + 2)?),
            ))
        })
        .collect()
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Checks the mount point: an existing directory, not already a mount point (a busy mount point
/// is not stacked on), neither inside the store nor holding it. Returns it resolved.
fn check_mountpoint(mountpoint: &Path, store: &Path) -> Result<PathBuf, String> {
    let shown = mountpoint.display();
    let store = resolved(store)?;
    let mnt = resolved(mountpoint)?;
    if mnt.starts_with(&store) {
        return Err(format!(
            "mount point {} is inside the store {}: mount it elsewhere",
            mnt.display(),
            store.display()
        ));
    }
    if store.starts_with(&mnt) {
        return Err(format!(
            "the store {} is inside the mount point {}: the mount would hide it",
            store.display(),
            mnt.display()
        ));
    }
    clear_dead_mount(mountpoint);
    let mnt = mountpoint
        .canonicalize()
        .map_err(|e| format!("mount point {shown}: {e}"))?;
    if !std::fs::metadata(&mnt).is_ok_and(|m| m.is_dir()) {
        return Err(format!("mount point {shown} is not a directory"));
    }
    if let Some((_, fstype, source)) = mounts().into_iter().find(|(m, _, _)| *m == mnt) {
        return Err(format!(
            "{} is already a mount point ({fstype} from {source}): unmount it first",
            mnt.display()
        ));
    }
    Ok(mnt)
}

/// A daemon killed without unmounting leaves its mount behind, answering ENOTCONN. Detach it
/// so the store can be mounted there again (the store's lock tells whether a daemon is alive).
fn clear_dead_mount(mountpoint: &Path) {
    // statvfs, not stat: the kernel answers stat from its attribute cache for up to a second
    // after the daemon died (then the checks below would find ENOTCONN after this one passed),
    // while a FUSE statfs always asks the daemon. ENOTCONN once the connection is gone;
    // ECONNABORTED for a request that was under way when it went (about one kill -9 in three).
    let dead = matches!(
        nix::sys::statvfs::statvfs(mountpoint),
        Err(nix::errno::Errno::ENOTCONN | nix::errno::Errno::ECONNABORTED)
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
        let _ = nix::mount::umount2(mountpoint, nix::mount::MntFlags::MNT_DETACH);
    }
}

pub fn mount_cmd(args: MountArgs) -> Result<(), String> {
    // Everything is checked before anything is written.
    let opts = parse_mount_options(&args.options)?;
    let mut remote = remote_of(&args, &opts)?;
    let create = check_store(&args, remote.is_some())?;
    if create && opts.read_only && remote.is_none() {
        return Err(format!(
            "{} holds no store, and a read-only mount cannot create one: drop -o ro, or run \
             `logstorfs format` first",
            args.store.display()
        ));
    }
    let mountpoint = check_mountpoint(&args.mountpoint, &args.store)?;
    let record_io = match &args.test_record_io {
        Some(p) => Some(std::path::absolute(p).map_err(|e| format!("{}: {e}", p.display()))?),
        None => None,
    };

    // The bucket is checked before anything is written; a store it holds is restored here,
    // in the foreground (a progress bar, and errors on the terminal), before any fork.
    let create = match &mut remote {
        Some(r) => prepare_remote(r, &args, create, opts.read_only)?,
        None => create,
    };
    super::keep_large_buffers_unresident();
    if create {
        crate::engine::storage::create_dir_durably(&args.store).map_err(|e| {
            format!(
                "cannot create store directory {}: {e}",
                args.store.display()
            )
        })?;
    }
    let store = args
        .store
        .canonicalize()
        .map_err(|e| format!("store {}: {e}", args.store.display()))?;

    let config = fuse_config(&opts, &store);
    let options = engine_options(&args, &opts, create);
    let fs_options = fs_options(&args, &opts);
    let instrument = Instrumentation {
        record_io,
        fail_writes_after: args.test_fail_writes_after,
    };
    let serve_args = ServeArgs {
        store: &store,
        mountpoint: &mountpoint,
        options: &options,
        fs_options: &fs_options,
        instrument: &instrument,
        config: &config,
        remote: remote.as_ref(),
        test_delay_open: args
            .test_delay_open_ms
            .map(std::time::Duration::from_millis),
    };
    if args.daemon {
        daemonize_and_serve(&serve_args)
    } else {
        serve(&serve_args, None)
    }
}

/// The mount's remote, from `-o remote=,credentials=,remote_lag=` or the command line.
fn remote_of(args: &MountArgs, opts: &MountOptions) -> Result<Option<Remote>, String> {
    let Some(url) = opts.remote.clone().or_else(|| args.remote.clone()) else {
        if opts.credentials.is_some() || opts.remote_lag.is_some() {
            return Err(
                "credentials= and remote_lag= need a remote (-o remote=URL or --remote)".into(),
            );
        }
        return Ok(None);
    };
    crate::object::S3Url::parse(&url).map_err(|e| format!("--remote {url}: {e}"))?;
    let lag = opts
        .remote_lag
        .or(args.remote_lag)
        .unwrap_or(remote::DEFAULT_REMOTE_LAG_SECS);
    if lag == 0 {
        return Err("--remote-lag: give at least 1 second".into());
    }
    Ok(Some(Remote {
        url,
        credentials: opts.credentials.clone(),
        lag: std::time::Duration::from_secs(lag),
        retain: std::time::Duration::from_secs(args.retain.unwrap_or(remote::DEFAULT_RETAIN_SECS)),
        sync_timeout: args.remote_sync.then(|| {
            std::time::Duration::from_secs(
                args.remote_sync_timeout
                    .unwrap_or(remote::DEFAULT_REMOTE_SYNC_TIMEOUT_SECS),
            )
        }),
        writer: 0,
        continues: None,
    }))
}

/// Opens and checks the bucket, and decides which writer this store is (see
/// `remote::check_writer`); if the mount would create the store, restores it from the bucket
/// instead when the bucket holds one. Returns whether the mount still creates it.
fn prepare_remote(
    r: &mut Remote,
    args: &MountArgs,
    create: bool,
    read_only: bool,
) -> Result<bool, String> {
    if let Some(n) = args.manifest {
        if !read_only {
            return Err(format!(
                "--manifest {n} mounts an older image read-only: add -o ro (a store restored \
                 from it must not replace the bucket's newer images)"
            ));
        }
        if !create {
            return Err(format!(
                "--manifest {n} restores into an empty directory, and {} holds a store",
                args.store.display()
            ));
        }
    }
    if !create {
        let (capacity, segment_size) = crate::engine::store_dir::geometry(&args.store)
            .map_err(|e| format!("{}: {e}", args.store.display()))?;
        remote::check_mirrorable(capacity, segment_size, &r.url)?;
    }
    let objects = remote::open_bucket(r)?;
    if !create {
        return match remote::check_writer(objects.as_ref(), r, &args.store, args.take_over) {
            Ok(()) if args.discard_local => Err(format!(
                "--discard-local: {} is the writer of {}'s newest image: nothing to discard",
                args.store.display(),
                r.url
            )),
            Ok(()) => Ok(false),
            Err(_) if args.discard_local => {
                let kept = remote::discard_local(objects.as_ref(), r, &args.store)?;
                eprintln!(
                    "logstorfs: {} now holds {}'s newest image; the store it held was moved to \
                     {}: mount that without --remote to copy out what the bucket lacks",
                    args.store.display(),
                    r.url,
                    kept.display()
                );
                report_lost(&kept, &args.store);
                Ok(false)
            }
            Err(e) => Err(e),
        };
    }
    if args.manifest.is_some() || remote::bucket_holds_store(objects.as_ref(), &r.url)? {
        crate::engine::storage::create_dir_durably(&args.store).map_err(|e| {
            format!(
                "cannot create store directory {}: {e}",
                args.store.display()
            )
        })?;
        remote::restore_into(objects.as_ref(), r, &args.store, args.manifest)?;
        return Ok(false);
    }
    if !args.create || read_only {
        return Err(format!(
            "{} holds no logstorfs store, and {} holds none to restore: mount with --create to \
             start one",
            args.store.display(),
            r.url
        ));
    }
    let size = super::format::new_store_capacity(
        args.size
            .unwrap_or_else(|| parse_capacity(super::format::DEFAULT_CAPACITY).unwrap_or(1 << 30)),
    );
    remote::check_mirrorable(size, super::format::new_store_segment_size(size), &r.url)?;
    r.writer = remote::writer_of_new_store();
    Ok(true)
}

/// The FUSE mount: named after the store (or `-o fsname`), the options passed through, the
/// kernel's permission checks, and a thread per CPU within bounds.
fn fuse_config(opts: &MountOptions, store: &Path) -> Config {
    let mut config = Config::default();
    let fsname = opts
        .fsname
        .clone()
        .unwrap_or_else(|| store.display().to_string());
    config.mount_options = vec![
        MountOption::FSName(fsname),
        MountOption::Subtype("logstorfs".into()),
    ];
    config.mount_options.extend(opts.fuse.iter().cloned());
    if let Some(acl) = opts.acl {
        config.acl = acl;
    }
    // Someone must check permissions, or any user allowed on the mount could open any file:
    // the kernel, against the mode bits we report, unless the daemon does it itself.
    if !opts.daemon_checks_permissions()
        && !config
            .mount_options
            .contains(&MountOption::DefaultPermissions)
    {
        config.mount_options.push(MountOption::DefaultPermissions);
    }
    let cpus = std::thread::available_parallelism().map_or(FUSE_THREADS_MIN, |n| n.get());
    config.n_threads = Some(cpus.clamp(FUSE_THREADS_MIN, FUSE_THREADS_MAX));
    config.clone_fd = true;
    config
}

/// Says which files of the store `--discard-local` moved aside the bucket's image lacks or
/// holds otherwise (at most [`LOST_PATHS_SHOWN`] of them by name).
fn report_lost(kept: &Path, store: &Path) {
    match remote::lost_paths(kept, store) {
        Ok(lost) if lost.is_empty() => eprintln!(
            "logstorfs: every file of {} is in the bucket's image as it was",
            kept.display()
        ),
        Ok(lost) => {
            eprintln!(
                "logstorfs: {} paths of {} are missing from the bucket's image or differ \
                 there:",
                lost.len(),
                kept.display()
            );
            for path in lost.iter().take(LOST_PATHS_SHOWN) {
                eprintln!("  {path}");
            }
            if lost.len() > LOST_PATHS_SHOWN {
                eprintln!("  ... and {} more", lost.len() - LOST_PATHS_SHOWN);
            }
        }
        Err(e) => eprintln!("logstorfs: cannot tell what the bucket's image lacks: {e}"),
    }
}

/// Paths [`report_lost`] names one by one.
const LOST_PATHS_SHOWN: usize = 20;

/// The engine's options: `-o` options first, then the command line's, then the defaults.
fn engine_options(args: &MountArgs, opts: &MountOptions, create: bool) -> EngineOptions {
    let flush_interval = opts
        .flush_interval
        .or(args.flush_interval)
        .unwrap_or(DEFAULT_FLUSH_INTERVAL_SECS);
    let policy = opts
        .compaction_policy
        .or(args.compaction_policy)
        .unwrap_or(Policy::CostBenefit);
    EngineOptions {
        capacity_bytes: args
            .size
            .unwrap_or_else(|| parse_capacity(super::format::DEFAULT_CAPACITY).unwrap_or(1 << 30)),
        create_if_missing: create,
        sync_interval: (flush_interval > 0).then(|| std::time::Duration::from_secs(flush_interval)),
        tombstone_prefix_lengths: crate::fs::keys::TOMBSTONE_PREFIX_LENGTHS.to_vec(),
        compaction_policy: policy.into(),
        // Not a byte written, even after a crash: see `EngineOptions::read_only`.
        read_only: opts.read_only,
        ..Default::default()
    }
}

/// The filesystem's options: `-o` options first, then the command line's, then the defaults.
fn fs_options(args: &MountArgs, opts: &MountOptions) -> FsOptions {
    FsOptions {
        group_split_bytes: opts
            .group_split_size
            .or(args.group_split_size)
            .unwrap_or(DEFAULT_GROUP_SPLIT_SIZE),
        // The byte counts steer splits and merges only: rebuilt while the mount is live.
        defer_group_map: true,
        atime: opts.atime_mode(),
        writeback_cache: opts.writeback_cache,
        checks_permissions: opts.daemon_checks_permissions(),
    }
}

/// Forks. The parent waits until the child reports that the mount is live (or why it failed)
/// and returns; the child serves the mount and exits.
fn daemonize_and_serve(args: &ServeArgs) -> Result<(), String> {
    // CLOEXEC: a helper the child spawns (fusermount3) must not inherit the write end and keep
    // the parent waiting.
    let (reader, writer) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: we are single-threaded here (no engine or FUSE threads exist yet), so the child
    // may continue running Rust code after fork.
    match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Parent { .. } => {
            drop(writer);
            // One line: "OK" or "ERR <message>"; EOF without it means the child died.
            let mut msg = String::new();
            let _ = std::io::BufReader::new(File::from(reader)).read_line(&mut msg);
            if msg.starts_with("OK") {
                Ok(())
            } else if let Some(err) = msg.strip_prefix("ERR ") {
                Err(err.trim_end().to_string())
            } else {
                Err("the daemon exited before the mount was live".into())
            }
        }
        ForkResult::Child => {
            drop(reader);
            let _ = nix::unistd::setsid();
            // Holds no directory busy: a daemon started from a directory would otherwise keep
            // that file system from being unmounted.
            let _ = nix::unistd::chdir("/");
            let code = match serve(args, Some(File::from(writer))) {
                Ok(()) => 0,
                Err(msg) => {
                    // Before the mount went live the parent reports the message; after, only
                    // the log (our stderr by then) can.
                    if super::DETACHED.load(std::sync::atomic::Ordering::Relaxed) {
                        log::error!("{msg}");
                    }
                    1
                }
            };
            std::process::exit(code);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape("/tmp/a\\040b"), "/tmp/a b");
        assert_eq!(unescape("/x\\134y"), "/x\\y");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape("/end\\04"), "/end\\04");
    }
}
