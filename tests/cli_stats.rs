//! `logstorfs stats` on an unmounted store, and what the binary says about itself: the offline
//! report changes no byte of the store, uses the checkpoint a clean unmount left (no "stale"
//! warning, no scan), names the counters only a daemon knows as null rather than 0, and
//! `--version`, the man page and the completions come from the same clap definitions.
//! Stats of a mounted store: `scripts/cli_stats_verify.sh` and `tests/fuse_mount.rs`.

mod fs_common;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output};

use fs_common::*;
use logstorfs::engine::{Engine, EngineError, Mutation, ROOT_GROUP};
use logstorfs::fs::ROOT_INO;

fn bin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_logstorfs"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run logstorfs")
}

/// Every file of the store directory: its bytes, size, modification time and inode (a file
/// replaced by a rename has a new inode).
fn snapshot(dir: &Path) -> BTreeMap<String, (Vec<u8>, i64, i64, u64)> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                (
                    std::fs::read(e.path()).unwrap(),
                    m.mtime(),
                    m.mtime_nsec(),
                    m.ino(),
                ),
            )
        })
        .collect()
}

/// A store closed cleanly (with its checkpoint), holding a directory and a file.
fn closed_store(dir: &Path) {
    let fs = open(dir);
    let d = fs.mkdir(ROOT_INO, b"d", 0o755, 0, CALLER).unwrap().ino;
    let f = fs.create(d, b"f", 0o644, 0, CALLER).unwrap().0.ino;
    fs.write(f, 0, &vec![7u8; 100_000]).unwrap();
    fs.close().unwrap();
}

#[test]
fn offline_stats_changes_no_byte_of_the_store() {
    let dir = tempfile::tempdir().unwrap();
    closed_store(dir.path());
    let before = snapshot(dir.path());
    for args in [&["stats"][..], &["stats", "--json"][..]] {
        let mut args = args.to_vec();
        args.push(dir.path().to_str().unwrap());
        let out = bin(&args);
        assert!(out.status.success(), "{out:?}");
        let after = snapshot(dir.path());
        for (name, was) in &before {
            assert!(
                after.get(name) == Some(was),
                "{args:?} changed {name} (of {:?})",
                after.keys().collect::<Vec<_>>()
            );
        }
        assert_eq!(
            after.keys().collect::<Vec<_>>(),
            before.keys().collect::<Vec<_>>(),
            "{args:?} added or removed files"
        );
    }
}

#[test]
fn offline_stats_after_a_crash_changes_no_byte_either() {
    let dir = tempfile::tempdir().unwrap();
    {
        let fs = open(dir.path());
        let f = fs.create(ROOT_INO, b"f", 0o644, 0, CALLER).unwrap().0.ino;
        fs.write(f, 0, &vec![7u8; 300_000]).unwrap();
        fs.fsync().unwrap();
        fs.write(f, 0, &vec![8u8; 5000]).unwrap();
        // Dropped without a close, as by a crash of the process: no checkpoint, no close
        // marker. A writable open would scan, then write a marker behind the newest batches.
    }
    assert!(!dir.path().join("checkpoint").exists());
    let before = snapshot(dir.path());
    let out = bin(&["stats", "--json", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        snapshot(dir.path()) == before,
        "offline stats after a crash changed the store"
    );
}

#[test]
fn a_read_only_engine_refuses_writes() {
    let dir = tempfile::tempdir().unwrap();
    closed_store(dir.path());
    let before = snapshot(dir.path());
    let engine = Engine::open_read_only(dir.path(), &options(128 << 20)).unwrap();
    let err = engine
        .write(&[Mutation::put(ROOT_GROUP, b"k".to_vec(), b"v".to_vec())])
        .unwrap_err();
    assert!(matches!(err, EngineError::ReadOnly), "{err}");
    engine.sync().unwrap();
    engine.close().unwrap();
    assert!(
        snapshot(dir.path()) == before,
        "the read-only engine changed the store"
    );
}

#[test]
fn offline_stats_uses_the_checkpoint_of_a_clean_unmount_without_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    closed_store(dir.path());
    for _ in 0..2 {
        let out = bin(&["stats", dir.path().to_str().unwrap()]);
        assert!(out.status.success(), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.is_empty(), "stats logged: {err}");
    }
    // And the next writer still finds it (the open a mount does).
    let fs = open(dir.path());
    assert!(
        fs.engine().recovery_report().segments_scanned == 0,
        "the mount after offline stats scanned: {:?}",
        fs.engine().recovery_report()
    );
}

#[test]
fn offline_stats_has_the_daemons_fields_with_its_counters_null() {
    let dir = tempfile::tempdir().unwrap();
    closed_store(dir.path());
    let out = bin(&["stats", "--json", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["mounted"], false);
    assert!(j["live_bytes"].as_u64().unwrap() > 100_000, "{j}");
    for counter in [
        "user_bytes_written",
        "device_bytes_written",
        "compaction_bytes_written",
        "write_amplification",
    ] {
        assert!(j[counter].is_null(), "{counter} offline: {j}");
    }
    let text = bin(&["stats", dir.path().to_str().unwrap()]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.starts_with("usable "), "{text}");
    assert!(!text.contains("write amplification"), "{text}");
}

#[test]
fn stats_of_a_directory_without_a_store_fails_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin(&["stats", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("neither a logstorfs mount point nor a store"),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn version_names_the_on_disk_formats() {
    let out = bin(&["--version"]);
    assert!(out.status.success());
    let v = String::from_utf8_lossy(&out.stdout);
    assert!(
        v.contains("writes superblock version") && v.contains("reads superblock versions"),
        "{v}"
    );
}

#[test]
fn man_page_and_completions_come_from_the_clap_definitions() {
    let man = bin(&["man"]);
    assert!(man.status.success(), "{man:?}");
    let man = String::from_utf8_lossy(&man.stdout);
    assert!(
        man.contains(".TH logstorfs") && man.contains("fsck"),
        "{man}"
    );
    for shell in ["bash", "zsh", "fish"] {
        let out = bin(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {out:?}");
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(
            script.contains("fsck") && script.contains("json"),
            "{shell}: {script}"
        );
    }
    let out = bin(&["completions", "no-such-shell"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}
