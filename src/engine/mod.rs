//! The storage engine: a log-structured key-value store modelled on ScyllaDB's logstor.
//!
//! It knows keys, records, compaction groups and segments; nothing of inodes, paths or FUSE.
//! See `ARCHITECTURE.md` for the map and the invariants.

mod api;
pub(crate) mod format;

pub use api::*;

use std::path::Path;

/// An open store. Cheap to share between threads (`&Engine` is `Sync`).
pub struct Engine {
    _private: (),
}

impl Engine {
    /// Opens the store in `dir`, creating it (with `options`' geometry) if it holds none and
    /// `options.create_if_missing` is set. Takes the store's lock: a second opener is refused.
    pub fn open(dir: &Path, options: &EngineOptions) -> Result<Engine> {
        let _ = (dir, options);
        todo!()
    }

    /// Applies `batch` atomically and returns its LSN. Returns once the batch is written to the
    /// segment file and indexed: every reader sees it. Durable after the next [`Engine::sync`].
    pub fn write(&self, batch: &[Mutation]) -> Result<Lsn> {
        let _ = batch;
        todo!()
    }

    /// The value of `key`, or `None` if it does not exist or was deleted.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let _ = key;
        todo!()
    }

    /// Keys and values under `prefix`, in key order, starting after `start_after` (exclusive) if
    /// given, at most `limit` of them.
    pub fn scan(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let _ = (prefix, start_after, limit);
        todo!()
    }

    /// Keys and values in `start..end` (`end` exclusive), in key order, at most `limit`.
    /// Records adjacent on disk are read with one I/O.
    pub fn scan_range(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let _ = (start, end, limit);
        todo!()
    }

    /// Whether `key` exists (from the index alone: no I/O).
    pub fn contains(&self, key: &[u8]) -> bool {
        let _ = key;
        todo!()
    }

    /// Makes every batch that returned before this call durable.
    pub fn sync(&self) -> Result<()> {
        todo!()
    }

    /// The store's figures.
    pub fn stats(&self) -> EngineStats {
        todo!()
    }

    /// Syncs and closes the store, releasing its lock.
    pub fn close(self) -> Result<()> {
        todo!()
    }
}
