//! `logstorfs umount MOUNTPOINT`: unmounts, then waits until the daemon has closed the store
//! (everything written is durable and the store's lock is free), so that the next command on
//! the store (fsck, a mount) does not find it in use. `fusermount3 -u` returns as soon as the
//! kernel has let go, while the daemon may still be flushing.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;

use super::MOUNTED_FILE;
use super::mount::mounts;

/// How long `umount` waits for the daemon to close the store.
const CLOSE_WAIT: Duration = Duration::from_secs(60);

#[derive(Args, Debug)]
pub struct UmountArgs {
    /// The mount point of a logstorfs mount.
    pub mountpoint: PathBuf,
}

/// The daemon serving `mnt` from store `source`: the pid its `mounted` file names, if that file
/// names this mount point.
fn daemon_of(source: &Path, mnt: &Path) -> Option<i32> {
    let m = std::fs::read_to_string(source.join(MOUNTED_FILE)).ok()?;
    let mut lines = m.lines();
    if Path::new(lines.next()?) != mnt {
        return None;
    }
    lines.next()?.trim().parse().ok()
}

/// A logstorfs process other than this one whose arguments name `mnt`: the daemon of a mount
/// that keeps no `mounted` file (a read-only one writes nothing in the store).
fn daemon_by_arguments(mnt: &Path) -> Option<i32> {
    let me = std::process::id() as i32;
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|p| {
        let pid: i32 = p.file_name().to_string_lossy().parse().ok()?;
        let comm = std::fs::read_to_string(p.path().join("comm")).ok()?;
        if pid == me || comm.trim() != "logstorfs" {
            return None;
        }
        let cmdline = std::fs::read(p.path().join("cmdline")).ok()?;
        let names = cmdline.split(|b| *b == 0).any(|arg| {
            let arg = Path::new(std::ffi::OsStr::from_bytes(arg));
            arg == mnt || arg.is_absolute() && arg.canonicalize().is_ok_and(|a| a == mnt)
        });
        names.then_some(pid)
    })
}

fn alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| s.rsplit(") ").next().is_some_and(|r| r.starts_with('Z')))
}

/// Processes other than the daemon with a file, directory or root under `mnt`, as
/// `pid (name)`.
fn holders(mnt: &Path, daemon: Option<i32>) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if Some(pid) == daemon {
            continue;
        }
        let dir = p.path();
        let under = |link: PathBuf| std::fs::read_link(link).is_ok_and(|t| t.starts_with(mnt));
        let mut holds = under(dir.join("cwd")) || under(dir.join("root"));
        if !holds && let Ok(fds) = std::fs::read_dir(dir.join("fd")) {
            holds = fds.flatten().any(|fd| under(fd.path()));
        }
        if holds {
            let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
            out.push(format!("{pid} ({})", comm.trim()));
        }
    }
    out
}

pub fn umount_cmd(args: &UmountArgs) -> Result<(), String> {
    let given = &args.mountpoint;
    // A mount whose daemon died cannot be resolved (ENOTCONN): use the path as it is.
    let mnt = given
        .canonicalize()
        .or_else(|_| std::path::absolute(given))
        .map_err(|e| format!("{}: {e}", given.display()))?;
    let Some((_, fstype, source)) = mounts().into_iter().rev().find(|(m, _, _)| *m == mnt) else {
        return Err(format!("{} is not mounted", mnt.display()));
    };
    // As root, fuser mounts with mount(2) and the type "fuse", without the subtype that
    // fusermount3 adds: the store's own record of the mount tells it is ours.
    let daemon = daemon_of(Path::new(&source), &mnt)
        .filter(|pid| alive(*pid))
        .or_else(|| daemon_by_arguments(&mnt));
    if fstype != "fuse.logstorfs" && !(fstype == "fuse" && daemon.is_some()) {
        return Err(format!(
            "{} is a {fstype} mount, not logstorfs: use umount",
            mnt.display()
        ));
    }
    let fusermount = || {
        std::process::Command::new("fusermount3")
            .arg("-u")
            .arg(&mnt)
            .output()
            .map_err(|e| format!("cannot run fusermount3 (apt-get install fuse3): {e}"))
    };
    let mut out = fusermount()?;
    // Busy with no holder to be found: a process that forked while it had a file of the mount
    // open holds a copy of it until it execs or exits, which takes milliseconds. Tried again
    // for up to a second before the error is reported.
    for _ in 0..10 {
        let busy = String::from_utf8_lossy(&out.stderr).contains("busy");
        if out.status.success() || !busy || !holders(&mnt, daemon).is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        out = fusermount()?;
    }
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        let held = holders(&mnt, daemon);
        return Err(if held.is_empty() {
            format!("cannot unmount {}: {err}", mnt.display())
        } else {
            format!(
                "cannot unmount {}: {err}; in use by {}",
                mnt.display(),
                held.join(", ")
            )
        });
    }
    let Some(pid) = daemon else {
        return Ok(());
    };
    let start = Instant::now();
    while alive(pid) {
        if start.elapsed() > CLOSE_WAIT {
            return Err(format!(
                "unmounted {}, but its daemon (pid {pid}) has not closed the store {source} \
                 after {} s: it is still writing it out (see {source}/logstorfs.log)",
                mnt.display(),
                CLOSE_WAIT.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}
