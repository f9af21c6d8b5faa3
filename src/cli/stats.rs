//! `logstorfs stats STORE|MOUNTPOINT`: a running daemon's figures (through the stats xattr of
//! its mount's root), or, for an unmounted store, the figures read offline without changing a
//! byte of the store. One report either way (`fs::stats::StatsReport`), as text or `--json`.

use std::path::Path;

use crate::engine::EngineError;
use crate::fs::STATS_XATTR;
use crate::fs::stats::{StatsReport, offline_report};

use super::{MOUNTED_FILE, pid_alive, print_out};

/// The report a daemon mounted at `mountpoint` gives, if one is (and answers).
pub fn stats_from_mount(mountpoint: &Path) -> Option<StatsReport> {
    let name = std::str::from_utf8(STATS_XATTR).ok()?;
    let bytes = xattr::get(mountpoint, name).ok()??;
    serde_json::from_slice(&bytes).ok()
}

/// The mount point that the `mounted` file of the store in `dir` names, if its daemon lives.
pub fn live_mount_of(dir: &Path) -> Option<(String, i32)> {
    let m = std::fs::read_to_string(dir.join(MOUNTED_FILE)).ok()?;
    let mut lines = m.lines();
    let mountpoint = lines.next()?.to_string();
    let pid: i32 = lines.next()?.trim().parse().ok()?;
    pid_alive(pid).then_some((mountpoint, pid))
}

pub fn run(path: &Path, json: bool) -> Result<(), String> {
    let from_daemon = stats_from_mount(path).or_else(|| {
        let (mountpoint, _) = live_mount_of(path)?;
        stats_from_mount(Path::new(&mountpoint))
    });
    let report = match from_daemon {
        Some(r) => r,
        None => offline_report(path).map_err(|e| match e {
            EngineError::Locked(_) => format!(
                "store {} is mounted, but its mount point does not answer (is the daemon \
                 alive?): {e}",
                path.display()
            ),
            EngineError::NotAStore(_) => format!(
                "{} is neither a logstorfs mount point nor a store: {e}",
                path.display()
            ),
            e => format!("cannot read store {}: {e}", path.display()),
        })?,
    };
    if json {
        print_out(&format!("{}\n", report.json()));
    } else {
        print_out(&report.text());
    }
    Ok(())
}
