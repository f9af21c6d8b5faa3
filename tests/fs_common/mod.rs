//! Helpers shared by the `fs_*` tests: an `Fs` on a fresh engine in a temporary directory.
#![allow(dead_code)]

use std::path::Path;

use logstorfs::engine::{Engine, EngineOptions};
use logstorfs::fs::{Caller, Fs, FsError, ROOT_INO};

pub const CALLER: Caller = Caller {
    uid: 1000,
    gid: 1000,
};

pub fn options(capacity_bytes: u64) -> EngineOptions {
    EngineOptions {
        capacity_bytes,
        sync_interval: None,
        tombstone_prefix_lengths: logstorfs::fs::keys::TOMBSTONE_PREFIX_LENGTHS.to_vec(),
        ..Default::default()
    }
}

pub fn open(dir: &Path) -> Fs {
    open_with(dir, 128 << 20)
}

pub fn open_with(dir: &Path, capacity_bytes: u64) -> Fs {
    let engine = Engine::open(dir, &options(capacity_bytes)).expect("open engine");
    Fs::new(engine).expect("mount fs")
}

/// Creates a regular file with `data`, closes it; returns its inode number.
pub fn make_file(fs: &Fs, parent: u64, name: &str, data: &[u8]) -> u64 {
    let (attr, fh) = fs
        .create(parent, name.as_bytes(), 0o644, 0o022, CALLER)
        .expect("create");
    if !data.is_empty() {
        assert_eq!(
            fs.write(attr.ino, 0, data).expect("write") as usize,
            data.len()
        );
    }
    fs.release(attr.ino, fh).expect("release");
    attr.ino
}

pub fn read_all(fs: &Fs, ino: u64) -> Vec<u8> {
    let size = fs.getattr(ino).expect("getattr").size;
    let mut out = Vec::new();
    while (out.len() as u64) < size {
        let chunk = fs.read(ino, out.len() as u64, 1 << 20).expect("read");
        assert!(!chunk.is_empty(), "short read at {}", out.len());
        out.extend_from_slice(&chunk);
    }
    out
}

/// Resolves a path of names from the root (each lookup takes a reference; fine in tests).
pub fn resolve(fs: &Fs, path: &str) -> Result<u64, FsError> {
    let mut ino = ROOT_INO;
    for name in path.split('/').filter(|s| !s.is_empty()) {
        ino = fs.lookup(ino, name.as_bytes())?.ino;
    }
    Ok(ino)
}

/// All names in a directory (without `.` and `..`), reading in full batches.
pub fn list(fs: &Fs, dir: u64) -> Vec<String> {
    let mut names = Vec::new();
    let mut offset = 0;
    loop {
        let batch = fs.readdir(dir, offset).expect("readdir");
        if batch.is_empty() {
            break;
        }
        for e in &batch {
            if e.name != b"." && e.name != b".." {
                names.push(String::from_utf8(e.name.clone()).expect("utf8"));
            }
        }
        offset = batch.last().expect("non-empty").cookie;
    }
    names.sort();
    names
}

/// Deterministic pseudo-random bytes.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
        | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Runs the offline checker on the (closed) store in `dir` and fails on any problem it finds.
pub fn assert_fsck_clean(dir: &Path) {
    let report = logstorfs::fs::check::check_store(dir).expect("fsck");
    let problems: Vec<String> = report
        .all_findings()
        .filter(|f| f.severity == logstorfs::engine::check::Severity::Problem)
        .map(|f| f.to_string())
        .collect();
    assert!(problems.is_empty(), "fsck problems: {problems:?}");
}
