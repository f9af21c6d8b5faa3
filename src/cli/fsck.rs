//! `logstorfs fsck STORE`: checks an unmounted store without changing it. Exit codes as
//! fsck(8)'s: [`CLEAN`], [`UNCORRECTED`] (fsck repairs nothing, so every problem is left as it
//! is), [`OPERATIONAL_ERROR`] (cannot read the store, or it is mounted), [`USAGE_ERROR`].

use std::path::Path;

use crate::engine::EngineError;
use crate::fs::check;
use crate::fs::fsck_report::FsckReport;

use super::print_out;
use super::stats::{live_mount_of, stats_from_mount};

pub const CLEAN: i32 = 0;
pub const UNCORRECTED: i32 = 4;
pub const OPERATIONAL_ERROR: i32 = 8;
pub const USAGE_ERROR: i32 = 16;

/// Runs the check; the exit code, having printed the report (or the error on stderr).
pub fn run(store: &Path, json: bool) -> i32 {
    match check_and_print(store, json) {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("logstorfs: {msg}");
            OPERATIONAL_ERROR
        }
    }
}

fn check_and_print(store: &Path, json: bool) -> Result<i32, String> {
    if stats_from_mount(store).is_some() {
        return Err(format!(
            "{} is the mount point of a mounted logstorfs: unmount it, then give fsck the store \
             directory",
            store.display()
        ));
    }
    if let Some((mp, pid)) = live_mount_of(store) {
        // The lock (below) is what decides; this names the mount point when it can.
        let daemon = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if daemon.contains("logstorfs") {
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
    let out = FsckReport::new(&report, store);
    if json {
        print_out(&format!("{}\n", out.json()));
    } else {
        print_out(&out.text());
    }
    Ok(if out.clean { CLEAN } else { UNCORRECTED })
}

/// `fsck --remote URL`: checks the bucket (see `mirror::check_bucket`); prints the report.
pub fn run_remote(url: &str, credentials: Option<std::path::PathBuf>, json: bool) -> i32 {
    let remote = super::remote::Remote {
        url: url.to_string(),
        credentials,
        ..super::remote::Remote::default()
    };
    let report = super::remote::open_bucket(&remote).and_then(|objects| {
        crate::mirror::check_bucket(objects.as_ref()).map_err(|e| format!("--remote {url}: {e}"))
    });
    let report = match report {
        Ok(r) => r,
        Err(msg) => {
            eprintln!("logstorfs: {msg}");
            return OPERATIONAL_ERROR;
        }
    };
    if json {
        print_out(&format!(
            "{}\n",
            serde_json::to_string(&report).expect("a report of numbers and strings")
        ));
    } else {
        let mut o = match report.newest_manifest {
            Some(n) => format!(
                "{url}: {} manifests, the newest {n} (LSN {}); {} objects read, {} bytes\n",
                report.manifests, report.newest_lsn, report.objects_checked, report.bytes_read
            ),
            None => format!("{url}: no manifest (nothing mirrored there)\n"),
        };
        for p in &report.problems {
            o.push_str(&format!("problem: {p}\n"));
        }
        if !report.unreferenced.is_empty() {
            o.push_str(&format!(
                "note: {} objects no manifest names (the mirror deletes them at its next \
                 collection)\n",
                report.unreferenced.len()
            ));
        }
        o.push_str(if report.problems.is_empty() {
            "clean\n"
        } else {
            "problems found: a restore of a manifest named above may fail\n"
        });
        print_out(&o);
    }
    if report.problems.is_empty() {
        CLEAN
    } else {
        UNCORRECTED
    }
}
