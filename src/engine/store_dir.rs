//! The store directory as a whole, for the commands that create, check and grow one before any
//! engine is open: which files belong to a store, the capacity its superblock records, and
//! growing that capacity.
//!
//! Growing only raises the superblock's segment count: segments are numbered into files of
//! `segments_per_file` each, so the new segments land in files that do not exist yet (or in the
//! tail of the last one, which is always allocated whole), exactly as the unused segments of a
//! new store; the segment sync table is allocated to the new length at the next open. The
//! checkpoint records the superblock it was taken with, so it could never be trusted after a
//! growth: it is removed first, and the next open rebuilds the index by a full scan.

use std::path::Path;

use super::format::{self, Superblock};
use super::storage::{
    CHECKPOINT_FILE, FileStorage, LOCK_FILE, SUPERBLOCK_FILE, Storage, segment_file_name,
};
use super::{EngineError, MAX_CAPACITY_BYTES, MIN_CAPACITY_BYTES, Result};

/// Whether `name` is a file the engine keeps in a store directory.
pub fn is_store_file(name: &str) -> bool {
    let temporary = |f: &str| format!("{f}.tmp");
    if [
        SUPERBLOCK_FILE,
        LOCK_FILE,
        CHECKPOINT_FILE,
        super::synctable::SYNC_TABLE_NAME,
        super::format::summaries::SUMMARY_NAMES[0],
        super::format::summaries::SUMMARY_NAMES[1],
    ]
    .contains(&name)
        || name == temporary(SUPERBLOCK_FILE)
        || name == temporary(CHECKPOINT_FILE)
    {
        return true;
    }
    name.strip_prefix("seg-")
        .and_then(|n| n.parse::<u32>().ok())
        .is_some_and(|n| name == segment_file_name(n))
}

/// Whether `dir` holds a store (a superblock, valid or not).
pub fn holds_store(dir: &Path) -> bool {
    dir.join(SUPERBLOCK_FILE).exists()
}

/// The superblock of the store in `dir`, read without the store's lock and without writing.
fn read_superblock(dir: &Path) -> Result<Superblock> {
    let bytes = std::fs::read(dir.join(SUPERBLOCK_FILE)).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            EngineError::NotAStore(format!("{} holds no store (no superblock)", dir.display()))
        }
        _ => EngineError::Io(e),
    })?;
    Superblock::decode(&bytes).map_err(EngineError::NotAStore)
}

fn capacity_of(sb: &Superblock) -> u64 {
    sb.segment_count as u64 * sb.segment_size as u64
}

/// The capacity of the store in `dir` (its segments times their size), read without writing.
pub fn capacity(dir: &Path) -> Result<u64> {
    read_superblock(dir).map(|sb| capacity_of(&sb))
}

/// The capacity of the store in `dir` and its segments' size, read without writing.
pub fn geometry(dir: &Path) -> Result<(u64, u64)> {
    read_superblock(dir).map(|sb| (capacity_of(&sb), sb.segment_size as u64))
}

/// The capacity a store created with `capacity_bytes` gets: whole segments of `segment_size`.
pub fn rounded_capacity(capacity_bytes: u64, segment_size: u32) -> u64 {
    capacity_bytes / segment_size as u64 * segment_size as u64
}

/// What [`grow`] did: the capacity before and after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Growth {
    pub old_capacity: u64,
    pub new_capacity: u64,
}

/// Grows the unmounted store in `dir` to `capacity_bytes` (rounded down to whole segments).
/// Refused, with nothing written, if that is not larger than its capacity now, lies outside the
/// supported range, needs more segment files than the format allows, or the store is open.
pub fn grow(dir: &Path, capacity_bytes: u64) -> Result<Growth> {
    let checked = |sb: &Superblock| -> Result<Superblock> {
        let old_capacity = capacity_of(sb);
        let new_count = capacity_bytes / sb.segment_size as u64;
        let new_capacity = new_count * sb.segment_size as u64;
        if capacity_bytes > MAX_CAPACITY_BYTES {
            return Err(EngineError::Limit(format!(
                "capacity {capacity_bytes} bytes is above the largest store, {MAX_CAPACITY_BYTES}"
            )));
        }
        if new_capacity < old_capacity {
            return Err(EngineError::Limit(format!(
                "the store holds {old_capacity} bytes of segments: it cannot shrink to \
                 {capacity_bytes} (a store only grows; copy the files to a new, smaller store)"
            )));
        }
        if new_capacity == old_capacity {
            return Err(EngineError::Limit(format!(
                "the store's capacity is already {old_capacity} bytes (whole segments of {})",
                sb.segment_size
            )));
        }
        let grown = Superblock {
            segment_count: new_count as u32,
            ..*sb
        };
        if new_count > u32::MAX as u64 || grown.file_count() > format::MAX_SEGMENT_FILES {
            return Err(EngineError::Limit(format!(
                "a store created with {old_capacity} bytes can grow to at most {} bytes (its \
                 segment files hold {} segments each)",
                format::MAX_SEGMENT_FILES as u64 * sb.file_len(),
                sb.segments_per_file
            )));
        }
        debug_assert!(capacity_of(&grown) >= MIN_CAPACITY_BYTES);
        Ok(grown)
    };
    // Everything that can refuse is checked before the lock is taken (taking it writes the
    // lock file), then again under it, against the superblock as it is then.
    checked(&read_superblock(dir)?)?;
    let storage = FileStorage::open(dir, false).map_err(|e| match e.kind() {
        std::io::ErrorKind::WouldBlock => EngineError::Locked(e.to_string()),
        _ => EngineError::Io(e),
    })?;
    let sb = Superblock::decode(&storage.read_superblock()?.unwrap_or_default())
        .map_err(EngineError::NotAStore)?;
    let grown = checked(&sb)?;
    storage.remove_checkpoint()?;
    storage.write_superblock(&grown.encode())?;
    Ok(Growth {
        old_capacity: capacity_of(&sb),
        new_capacity: capacity_of(&grown),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Engine, EngineOptions, Mutation};

    fn options(capacity_bytes: u64) -> EngineOptions {
        EngineOptions {
            capacity_bytes,
            create_if_missing: true,
            sync_interval: None,
            ..Default::default()
        }
    }

    #[test]
    fn store_files_are_told_from_others() {
        for name in [
            "superblock",
            "lock",
            "checkpoint",
            "synced.tbl",
            "seg-000000",
            "seg-004095",
        ] {
            assert!(is_store_file(name), "{name}");
        }
        for name in [
            "seg-1",
            "seg-0000000",
            "seg-00000x",
            "notes.txt",
            "superblock2",
            "mounted",
        ] {
            assert!(!is_store_file(name), "{name}");
        }
    }

    #[test]
    fn a_store_grows_keeps_its_data_and_uses_the_new_segments() {
        let dir = tempfile::tempdir().unwrap();
        let small = 16 << 20;
        let e = Engine::open(dir.path(), &options(small)).unwrap();
        e.write(&[Mutation::put(0, &b"k"[..], &b"v"[..])]).unwrap();
        e.close().unwrap();
        let g = grow(dir.path(), 64 << 20).unwrap();
        assert_eq!((g.old_capacity, g.new_capacity), (small, 64 << 20));
        assert_eq!(capacity(dir.path()).unwrap(), 64 << 20);
        // Reopened without create: the old data, the new capacity, and room for more live data
        // than the old store could hold.
        let opts = EngineOptions {
            create_if_missing: false,
            ..options(0)
        };
        let e = Engine::open(dir.path(), &opts).unwrap();
        assert_eq!(e.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
        assert_eq!(e.stats().capacity_bytes, 64 << 20);
        let value = vec![7u8; 100 << 10];
        for i in 0..300u32 {
            e.write(&[Mutation::put(0, format!("big{i}"), value.clone())])
                .unwrap();
        }
        e.close().unwrap();
        let e = Engine::open(dir.path(), &opts).unwrap();
        assert_eq!(e.get(b"big299").unwrap().as_deref(), Some(&value[..]));
        e.close().unwrap();
    }

    #[test]
    fn shrinking_or_an_open_store_is_refused_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let e = Engine::open(dir.path(), &options(32 << 20)).unwrap();
        e.close().unwrap();
        let before = std::fs::read(dir.path().join("superblock")).unwrap();
        for smaller in [16 << 20, 32 << 20] {
            let err = grow(dir.path(), smaller).unwrap_err().to_string();
            assert!(err.contains("shrink") || err.contains("already"), "{err}");
        }
        assert_eq!(
            std::fs::read(dir.path().join("superblock")).unwrap(),
            before
        );
        let e = Engine::open(dir.path(), &options(0)).unwrap();
        let err = grow(dir.path(), 64 << 20).unwrap_err();
        assert!(matches!(err, EngineError::Locked(_)), "{err}");
        e.close().unwrap();
    }

    /// Every file of the store directory, name and bytes.
    fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
        let mut out: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let name = e.file_name().into_string().unwrap();
                (name, std::fs::read(e.path()).unwrap())
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn a_read_only_open_after_a_crash_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let e = Engine::open(dir.path(), &options(32 << 20)).unwrap();
        e.write(&[Mutation::put(0, &b"synced"[..], &b"1"[..])])
            .unwrap();
        e.sync().unwrap();
        e.write(&[Mutation::put(0, &b"written"[..], &b"2"[..])])
            .unwrap();
        // No close: no checkpoint and no closing marker, as after kill -9; the next writable
        // open would recover and write.
        drop(e);
        let before = files(dir.path());
        let ro = EngineOptions {
            read_only: true,
            create_if_missing: false,
            ..options(0)
        };
        let e = Engine::open(dir.path(), &ro).unwrap();
        assert!(e.is_read_only());
        assert_eq!(e.get(b"synced").unwrap().as_deref(), Some(&b"1"[..]));
        let err = e
            .write(&[Mutation::put(0, &b"k"[..], &b"v"[..])])
            .unwrap_err();
        assert!(err.to_string().contains("read-only"), "{err}");
        e.sync().unwrap();
        // A second reader may share the store; a writer may not.
        let other = Engine::open(dir.path(), &ro).unwrap();
        let writer = Engine::open(dir.path(), &options(0));
        assert!(matches!(writer, Err(EngineError::Locked(_))));
        other.close().unwrap();
        e.close().unwrap();
        assert!(
            files(dir.path()) == before,
            "a read-only open changed the store"
        );
        // The store is as a writable open expects it.
        let e = Engine::open(dir.path(), &options(0)).unwrap();
        assert_eq!(e.get(b"synced").unwrap().as_deref(), Some(&b"1"[..]));
        e.close().unwrap();
    }
}
