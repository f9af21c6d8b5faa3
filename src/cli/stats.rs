//! `logstorfs stats STORE|MOUNTPOINT`: a running daemon's figures (through the stats xattr of
//! its mount's root), or, for an unmounted store, the figures read offline without changing a
//! byte of the store. One report either way (`fs::stats::StatsReport`), as text or `--json`.

use std::path::Path;

use crate::engine::EngineError;
use crate::fs::STATS_XATTR;
use crate::fs::stats::{StatsReport, offline_report};

use super::remote::RemoteRecord;
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
    // The mirror's record, in the store directory (the path given, or the mounted store's).
    let store_dir = if path.join(super::remote::REMOTE_FILE).exists() {
        Some(path.to_path_buf())
    } else {
        stats_store_of(path)
    };
    let remote = store_dir.and_then(|d| RemoteRecord::read(&d));
    if json {
        // The report's own fields first, in their order, then the mirror's record.
        let json = report.json();
        let body = json.strip_suffix('}').unwrap_or(&json);
        let remote = serde_json::to_string(&remote).map_err(|e| e.to_string())?;
        print_out(&format!("{body},\"remote\":{remote}}}\n"));
    } else {
        print_out(&report.text());
        if let Some(r) = remote {
            print_out(&remote_text(&r));
        }
    }
    Ok(())
}

/// The store directory of the mount at `path`, from the mount table (its source).
fn stats_store_of(path: &Path) -> Option<std::path::PathBuf> {
    let path = path.canonicalize().ok()?;
    let (_, _, source) = super::mount::mounts()
        .into_iter()
        .find(|(m, fstype, _)| *m == path && fstype.starts_with("fuse"))?;
    let store = std::path::PathBuf::from(source);
    store.join(MOUNTED_FILE).exists().then_some(store)
}

/// The mirror's figures for a person.
fn remote_text(r: &RemoteRecord) -> String {
    let lag_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
        .saturating_sub(r.published_unix_ms);
    let published = if r.published_unix_ms == 0 {
        "none published yet".to_string()
    } else {
        format!("last published {:.1} s ago", lag_ms as f64 / 1000.0)
    };
    let mut o = format!(
        "mirror: {} (every {} s, images kept {} s)\n  bucket: manifest {}, LSN {} of {} \
         ({} LSNs behind), {published}\n  upload queue: {} bytes\n  uploaded \
         since mount: {} manifests, {} objects, {} bytes\n  requests since mount: {} PUT, {} \
         GET ({} bytes), {} LIST, {} DELETE\n",
        r.url,
        r.lag_secs,
        r.retain_secs,
        r.manifest,
        r.bucket_lsn,
        r.local_lsn,
        r.local_lsn.saturating_sub(r.bucket_lsn),
        r.queued_bytes,
        r.manifests_published,
        r.objects_put,
        r.bytes_put,
        r.requests.puts,
        r.requests.gets,
        r.requests.bytes_got,
        r.requests.lists,
        r.requests.deletes
    );
    if let Some(e) = &r.last_error {
        o.push_str(&format!("  last round failed: {e}\n"));
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mirror_says_when_nothing_was_published_rather_than_counting_from_1970() {
        let mut r = RemoteRecord {
            url: "s3://b/p".into(),
            ..RemoteRecord::default()
        };
        assert!(
            remote_text(&r).contains("none published yet"),
            "{}",
            remote_text(&r)
        );
        r.published_unix_ms = crate::mirror::unix_now_ms() - 2_000;
        let text = remote_text(&r);
        assert!(
            text.contains("last published ") && !text.contains("none published"),
            "{text}"
        );
    }
}
