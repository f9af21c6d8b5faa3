//! Opening a store without changing a byte of it, for `logstorfs stats` on an unmounted store
//! (and any reader that must leave the store as it found it).
//!
//! A writable open changes the store even if nothing is written afterwards: it takes the lock
//! file and writes its pid there, consumes the checkpoint, zeroes the buffers recovery
//! discarded, marks an older format as of this one, syncs everything, writes a marker behind
//! the newest batches, and at close writes a close marker, a new checkpoint and the
//! superblock. A read-only open does none of it: segment files are opened read-only, the lock
//! is shared (no daemon can mount the store meanwhile, and a mounted one makes the open fail),
//! the checkpoint is read and left in place, and no background thread runs.

use std::path::Path;

use super::check::ReadOnlyStorage;
use super::concurrency::Arc;
use super::{Engine, EngineOptions, Result};

impl Engine {
    /// Opens the existing store in `dir` read-only: reads as [`Engine::open`] would, while
    /// writes answer [`super::EngineError::ReadOnly`] and [`Engine::close`] writes nothing.
    /// `options.tombstone_prefix_lengths` must be the ones its writer uses, or a checkpoint
    /// left by that writer is not used (and the store is scanned instead).
    pub fn open_read_only(dir: &Path, options: &EngineOptions) -> Result<Engine> {
        let storage = ReadOnlyStorage::open(dir)?;
        Self::open_with(Arc::new(storage), options, true)
    }
}
