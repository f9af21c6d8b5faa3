//! Where the bytes go: the only code that opens files, reads, writes, allocates and syncs.
//! Everything above it reads and writes numbered storage files through the [`Storage`] trait,
//! so that the same engine runs on real files and on a simulated disk that can lose power.
//!
//! Two implementations of [`Storage`], and one wrapper:
//! - [`FileStorage`] (`file.rs`): a store directory of segment files on the host filesystem.
//! - [`SimStorage`] (`sim.rs`): memory that keeps what was written apart from what is durable,
//!   so that a test can cut power at any point (keeping any subset of the unsynced 512-byte
//!   sectors, as a host page cache may write them back in any order) and inject I/O errors.
//! - [`io_log`]: a storage that records every write, allocation and sync of another in a log,
//!   which replays into a [`SimStorage`] cut at any entry.

mod file;
pub mod io_log;
mod sim;

pub(crate) use file::{DirtyFiles, lock_store, read_checkpoint_in};
pub use file::{FileStorage, MappedFile};
pub use sim::{FaultPlan, PowerCut, SimRng, SimStorage};

use std::fs::File;
use std::io;
use std::path::Path;

use super::format::summaries::{SUMMARY_FILES, SUMMARY_NAMES};
use super::format::sync_table::{SYNC_TABLE_FILE, SYNC_TABLE_NAME};

/// The sector size of simulated power cuts: a sector is either all old or all new.
pub const SECTOR_SIZE: usize = 512;

/// Storage under a store: numbered segment files plus an atomically replaced superblock.
pub trait Storage: Send + Sync {
    /// Reads exactly `buf.len()` bytes at `offset` of file `file`. Bytes never written read as
    /// zeros; reading past the allocated length is an error.
    fn read_at(&self, file: u32, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Writes `data` at `offset` of file `file` (already allocated). Not durable until `sync`.
    fn write_at(&self, file: u32, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Makes sure file `file` exists with `len` bytes of space really allocated, so that later
    /// writes inside it cannot fail for lack of space.
    fn allocate(&self, file: u32, len: u64) -> io::Result<()>;
    /// Allocated length of file `file` (0 if it does not exist).
    fn file_len(&self, file: u32) -> io::Result<u64>;
    /// Makes every write that returned before this call durable.
    fn sync(&self) -> io::Result<()>;
    /// Makes everything in the store durable, including what an earlier process wrote and did
    /// not sync (recovery builds on it).
    fn sync_everything(&self) -> io::Result<()> {
        self.sync()
    }
    /// The superblock, or `None` if the store has none yet.
    fn read_superblock(&self) -> io::Result<Option<Vec<u8>>>;
    /// Replaces the superblock atomically and durably.
    fn write_superblock(&self, data: &[u8]) -> io::Result<()>;
    /// Hints that `[offset, offset + len)` of file `file` will be read soon, so that the reads
    /// of many scattered records can be in flight together instead of one after the other
    /// (a cold `ls -l` or `du`). Only a hint: nothing is read, and errors are ignored.
    fn will_need(&self, _file: u32, _offset: u64, _len: u64) {}
    /// Records a mark in an I/O log, if this storage keeps one (`io_log.rs`); false if not.
    fn mark(&self, _label: u64) -> bool {
        false
    }
    /// A read-only map of the first `len` bytes of file `file` (which must hold them), for
    /// recovery's single pass over the store; `None` if this storage does not map (the caller
    /// reads with [`Storage::read_at`]). Nothing may write the file while the map is alive.
    fn map_file(&self, _file: u32, _len: u64) -> io::Result<Option<MappedFile>> {
        Ok(None)
    }
    /// The index checkpoint left by the last clean close (`checkpoint.rs`), if this storage
    /// keeps one. Storages that do not (the default) always recover by a full scan.
    fn read_checkpoint(&self) -> io::Result<Option<Vec<u8>>> {
        Ok(None)
    }
    /// Stores an index checkpoint atomically and durably (or does nothing, by default).
    fn write_checkpoint(&self, _data: &[u8]) -> io::Result<()> {
        Ok(())
    }
    /// Removes the checkpoint durably: once this returns, no later open can find it.
    fn remove_checkpoint(&self) -> io::Result<()> {
        Ok(())
    }
}

pub(crate) fn segment_file_name(file: u32) -> String {
    format!("seg-{file:06}")
}

/// The name in a store directory of storage file `file`: a segment file, the segment sync
/// table (`synctable.rs`) or a slot of the segment summaries (`summaries.rs`), which have file
/// numbers no segment file can have.
pub(crate) fn store_file_name(file: u32) -> String {
    if file == SYNC_TABLE_FILE {
        SYNC_TABLE_NAME.to_string()
    } else if let Some(slot) = SUMMARY_FILES.iter().position(|&f| f == file) {
        SUMMARY_NAMES[slot].to_string()
    } else {
        segment_file_name(file)
    }
}

pub(crate) const SUPERBLOCK_FILE: &str = "superblock";
pub(crate) const LOCK_FILE: &str = "lock";
/// The index checkpoint of the last clean close (see `checkpoint.rs`).
pub(crate) const CHECKPOINT_FILE: &str = "checkpoint";

/// Creates directory `dir` and its missing parents durably: each new directory's entry is
/// synced in its parent, so that a power cut after the store's first syncs cannot take the
/// whole store away (a new directory's name is durable only once its parent is synced).
pub fn create_dir_durably(dir: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut at = dir;
    while !at.exists() {
        missing.push(at);
        match at.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => at = parent,
            _ => break,
        }
    }
    std::fs::create_dir_all(dir)?;
    // Deepest first: a directory's parent is synced before the parent's own entry is, which is
    // harmless; every new entry is synced before this returns.
    for new in missing {
        let parent = match new.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        File::open(parent)?.sync_all()?;
    }
    Ok(())
}
