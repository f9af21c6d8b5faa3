//! cutfs: a FUSE passthrough filesystem that can cut the power.
//!
//! It serves a backing directory, but holds back what a disk would not yet have made durable:
//! each regular file's writes and size changes since its last `fsync`/`fdatasync` stay in
//! cutfs's memory (`pending.rs`), and each namespace change (create, mknod, symlink, mkdir,
//! link, unlink, rmdir, rename, over an existing file too) is applied to the backing directory
//! with an undo record until an `fsync` of a directory it touches. On SIGUSR1 or SIGUSR2 it
//! cuts the power: the backing directory is left as a disk would be after the cut, and every
//! later operation fails with EIO until the unmount.
//!
//!   cutfs BACKING MOUNTPOINT [--seed N] [--trash DIR] [--keep P]
//!
//! - SIGUSR1: cut keeping nothing pending: every file as at its last sync, every unsynced
//!   namespace change undone.
//! - SIGUSR2: cut keeping a random part (seeded; the seed is printed): each pending 512-byte
//!   sector and each pending size change is kept with probability P (random per cut unless
//!   `--keep P`), and a random prefix of the pending namespace changes (a journal commits in
//!   order) is kept, the rest undone.
//! - The line "cutfs: power cut done ..." on stderr says the cut is complete.
//! - SIGTERM/SIGINT or `fusermount3 -u MOUNTPOINT`: unmount. An unmount without a cut is a
//!   clean shutdown: everything pending is written to the backing directory first.
//!
//! Unlinked files and rename victims are kept in the trash directory (default: a sibling of
//! BACKING named BACKING.cutfs-trash, on the same filesystem) while their removal may still be
//! undone, and it is removed at exit. Not modelled: xattrs, timestamps and modes (passed
//! through at once), a durable directory fsync committing a change in a second directory (a
//! rename across directories is committed by an fsync of either); `flock` and POSIX locks are
//! the kernel's own (cutfs does not claim them), which suffices for processes on this host.

mod passthrough;
mod pending;
mod power_cut;
mod signals;
mod state;
mod syscalls;
mod undo;

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Parser;
use fuser::{Config, FileType, MountOption, Session};
use parking_lot::Mutex;

use passthrough::CutFs;
use state::{Node, Shared, State};
use syscalls::fstat;

#[derive(Parser)]
#[command(
    about = "FUSE passthrough that holds back unsynced writes and cuts the power on \
                   SIGUSR1 (drop all) or SIGUSR2 (keep a seeded random part)"
)]
struct Args {
    backing: PathBuf,
    mountpoint: PathBuf,
    /// Seed of the random part kept by a SIGUSR2 cut (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Probability that a SIGUSR2 cut keeps each pending sector (default: random per cut).
    #[arg(long)]
    keep: Option<f64>,
    /// Where removed files wait while their removal may be undone.
    #[arg(long)]
    trash: Option<PathBuf>,
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(args) {
        eprintln!("cutfs: {e}");
        std::process::exit(1);
    }
}

/// The backing directory's root and the (emptied) trash, opened; the trash must be on the
/// backing directory's filesystem, since files move into it by rename and hard link.
struct Dirs {
    backing: PathBuf,
    root: OwnedFd,
    root_ino: u64,
    trash_path: PathBuf,
    trash: OwnedFd,
}

fn open_dirs(args: &Args) -> Result<Dirs, String> {
    let backing = args
        .backing
        .canonicalize()
        .map_err(|e| format!("backing directory {}: {e}", args.backing.display()))?;
    let trash_path = args.trash.clone().unwrap_or_else(|| {
        let mut p = backing.clone().into_os_string();
        p.push(".cutfs-trash");
        PathBuf::from(p)
    });
    let _ = std::fs::remove_dir_all(&trash_path);
    std::fs::create_dir_all(&trash_path)
        .map_err(|e| format!("trash directory {}: {e}", trash_path.display()))?;
    let open_dir = |p: &Path| {
        std::fs::File::open(p)
            .map(OwnedFd::from)
            .map_err(|e| format!("{}: {e}", p.display()))
    };
    let root = open_dir(&backing)?;
    let trash = open_dir(&trash_path)?;
    let root_st = fstat(&root).map_err(|e| format!("stat {}: {e:?}", backing.display()))?;
    if root_st.st_dev != fstat(&trash).map_err(|e| format!("{e:?}"))?.st_dev {
        return Err(format!(
            "the trash {} must be on the backing directory's filesystem",
            trash_path.display()
        ));
    }
    Ok(Dirs {
        backing,
        root,
        root_ino: root_st.st_ino,
        trash_path,
        trash,
    })
}

/// The state before any operation: the root alone in the inode table, nothing pending.
fn initial_state(root: OwnedFd, root_ino: u64, trash: OwnedFd, args: &Args) -> Arc<Shared> {
    let seed = args.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            ^ ((std::process::id() as u64) << 32)
    });
    let mut nodes = HashMap::new();
    nodes.insert(
        1,
        Node {
            fd: root,
            kind: FileType::Directory,
            data: None,
        },
    );
    Arc::new(Shared {
        state: Mutex::new(State {
            nodes,
            changes: Vec::new(),
            trash,
            trash_count: 0,
            root_ino,
            cut: false,
        }),
        seed,
        keep: args.keep,
    })
}

fn run(args: Args) -> Result<(), String> {
    let Dirs {
        backing,
        root,
        root_ino,
        trash_path,
        trash,
    } = open_dirs(&args)?;
    raise_fd_limit();
    let shared = initial_state(root, root_ino, trash, &args);
    let set = signals::block();

    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("cutfs".into()),
        MountOption::Subtype("cutfs".into()),
        MountOption::DefaultPermissions,
    ];
    config.n_threads = Some(2);
    let mut session = Session::new(CutFs(shared.clone()), &args.mountpoint, &config)
        .map_err(|e| format!("mounting on {}: {e}", args.mountpoint.display()))?;
    let unmounter = session.unmount_callable();
    eprintln!(
        "cutfs: {} mounted on {} (pid {}, seed {}); SIGUSR1 cuts keeping nothing, SIGUSR2 \
         a random part",
        backing.display(),
        args.mountpoint.display(),
        std::process::id(),
        shared.seed
    );
    let signals = shared.clone();
    std::thread::spawn(move || signals::serve(&set, &signals, unmounter));
    let run = session.run();
    let mut s = shared.state.lock();
    if !s.cut {
        s.flush_all();
        eprintln!("cutfs: unmounted cleanly: everything pending was written");
    }
    drop(s);
    let _ = std::fs::remove_dir_all(&trash_path);
    run.map_err(|e| format!("session: {e}"))
}

fn raise_fd_limit() {
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: `lim` is a valid in/out pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
