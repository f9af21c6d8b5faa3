//! Durable images: what a copy of the store elsewhere (the object tier's mirror, `src/mirror`)
//! takes from an open engine, and how such a copy becomes a store directory again.
//!
//! A durable image is the store as a power cut at one moment could leave it: the superblock, and
//! for every segment in use its current use's bytes up to the end written before that moment,
//! all of them synced. Every other byte reads as zeros (a free segment, the unsynced rest of an
//! open one). Recovery takes such a directory as it takes any power-cut image. It also holds
//! the index checkpoint file as it was at that moment (if there was one), which spares the
//! recovery of a restored store the scan of every segment it proves unchanged; the sync table
//! and the summaries stay out (they only spare or sharpen work a full scan does without them:
//! see `synctable.rs`, `summaries.rs`).
//!
//! Rules that make the image exact although its bytes are read after the moment it describes:
//! - a segment's use never rewrites a byte below its written end (buffers are appended at block
//!   boundaries), so bytes read later are the bytes of that moment;
//! - a use ends only when the reclaimer frees the segment, and a new use has a new generation
//!   (generations are never handed out twice); [`Engine::read_segment_use`] reads under the
//!   reclaimer's lock and answers `false` once the use it was asked for is gone, and the image
//!   can then no longer be copied whole (the caller takes a new one).

use std::path::Path;

use super::format::Superblock;
use super::segments::SegmentState;
use super::storage::{FileStorage, Storage};
use super::{Engine, EngineError, Result};

/// The part of one segment's use that an image holds: bytes `0..len` of use `generation`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentExtent {
    pub segment: u32,
    pub generation: u64,
    pub len: u32,
    /// No byte will be added to this use (it is closed): its bytes are final.
    pub closed: bool,
}

/// A durable image (see the module's doc).
#[derive(Clone, Debug)]
pub struct DurableImage {
    /// The superblock file's bytes.
    pub superblock: Vec<u8>,
    /// The image holds exactly the batches up to this LSN (all durable once it was synced).
    pub durable_lsn: u64,
    /// Every segment in use that holds a byte, by segment number.
    pub segments: Vec<SegmentExtent>,
    /// The checkpoint file at the image's moment; `None` if the store had none.
    pub checkpoint: Option<ImageCheckpoint>,
}

/// The index checkpoint file an image holds.
#[derive(Clone, Debug)]
pub struct ImageCheckpoint {
    /// How many checkpoints the engine had written since it opened when the file was read:
    /// the same number means the same file.
    pub writes: u64,
    /// The file's bytes; `None` when the caller said it holds this file already.
    pub bytes: Option<Vec<u8>>,
}

impl Engine {
    /// Writes an index checkpoint now, as the background does when one is due (it syncs
    /// first: a checkpoint names only durable batches). For a mirror's last image before an
    /// unmount, so that a store restored from it reads only the segments written after it.
    pub fn write_checkpoint(&self) -> Result<()> {
        self.inner.check_open()?;
        if !self.inner.read_only {
            self.inner.write_checkpoint_now();
        }
        Ok(())
    }

    /// Takes a durable image that holds every batch written before the call: syncs (which
    /// writes out every such batch), notes every segment's use and written end, then syncs
    /// again, so that what was written meanwhile and noted is durable too. Costs two
    /// [`Engine::sync`]s (the second one cheap when nothing was written in between).
    ///
    /// The checkpoint file is read while no checkpoint can be written, after the uses are
    /// noted: it was taken of batches durable before it was written, so of batches the image
    /// holds, and together they are what a power cut at that moment leaves. `have_checkpoint`:
    /// the [`ImageCheckpoint::writes`] of the checkpoint the caller holds already (its bytes
    /// are not read again).
    pub fn durable_image(&self, have_checkpoint: Option<u64>) -> Result<DurableImage> {
        self.inner.check_open()?;
        if !self.inner.read_only {
            self.inner.sync()?;
        }
        let checkpoint_writes = self.inner.checkpoint_writes.lock();
        // The uses' ends and the last batch they hold, as one moment: batches written later
        // (and synced by the second sync) lie beyond the ends noted, so the image's LSN is
        // exact, not only a lower bound. Copies hold only batches durable before them.
        let (segments, durable_lsn) = self.inner.log.while_no_write_completes(|| {
            self.inner
                .segments
                .infos()
                .into_iter()
                .enumerate()
                .filter(|(_, i)| {
                    matches!(i.state, SegmentState::Open | SegmentState::Closed) && i.used > 0
                })
                .map(|(s, i)| SegmentExtent {
                    segment: s as u32,
                    generation: i.generation,
                    len: i.used,
                    closed: i.state == SegmentState::Closed,
                })
                .collect::<Vec<_>>()
        });
        // Read after the uses: a generation is handed out only once a superblock whose
        // high-water mark covers it is durable, so this one covers every use noted above.
        let superblock = self
            .inner
            .storage
            .read_superblock()?
            .ok_or_else(|| EngineError::NotAStore("the store has no superblock".into()))?;
        let writes = *checkpoint_writes;
        let checkpoint = if have_checkpoint == Some(writes) {
            Some(ImageCheckpoint {
                writes,
                bytes: None,
            })
        } else {
            self.inner
                .storage
                .read_checkpoint()?
                .map(|bytes| ImageCheckpoint {
                    writes,
                    bytes: Some(bytes),
                })
        };
        drop(checkpoint_writes);
        if !self.inner.read_only {
            self.inner.sync()?;
        }
        Ok(DurableImage {
            superblock,
            durable_lsn,
            segments,
            checkpoint,
        })
    }

    /// Reads bytes `offset..offset + buf.len()` of `segment`'s use `generation` into `buf`;
    /// `false` (and `buf` unspecified) if that use has ended. Holds the reclaimer off meanwhile.
    pub fn read_segment_use(
        &self,
        segment: u32,
        generation: u64,
        offset: u32,
        buf: &mut [u8],
    ) -> Result<bool> {
        self.inner.check_open()?;
        let _no_free = self.inner.reclaim_lock.lock();
        let info = self.inner.segments.info(segment);
        let live_use = info.generation == generation
            && matches!(info.state, SegmentState::Open | SegmentState::Closed)
            && offset as u64 + buf.len() as u64 <= info.used as u64;
        if !live_use {
            return Ok(false);
        }
        self.inner.segments.read(segment, offset, buf)?;
        Ok(true)
    }
}

/// Writes a durable image into a new store directory: segment bytes first, synced, and the
/// superblock last, so that a restore cut short leaves a directory that holds no store (and is
/// begun again), never a store missing some of its bytes.
pub struct ImageWriter {
    storage: FileStorage,
    superblock_bytes: Vec<u8>,
    superblock: Superblock,
}

impl ImageWriter {
    /// Starts a restore into `dir`, which must not hold a store.
    pub fn create(dir: &Path, superblock: &[u8]) -> Result<ImageWriter> {
        if super::store_dir::holds_store(dir) {
            return Err(EngineError::Io(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{} already holds a store", dir.display()),
            )));
        }
        let sb = Superblock::decode(superblock).map_err(EngineError::NotAStore)?;
        let storage = FileStorage::open(dir, true).map_err(EngineError::Io)?;
        for file in 0..sb.file_count() {
            storage.allocate(file, sb.file_len())?;
        }
        Ok(ImageWriter {
            storage,
            superblock_bytes: superblock.to_vec(),
            superblock: sb,
        })
    }

    /// Writes `bytes` at `offset` of `segment`.
    pub fn write(&self, segment: u32, offset: u32, bytes: &[u8]) -> Result<()> {
        let sb = &self.superblock;
        if segment >= sb.segment_count
            || offset as u64 + bytes.len() as u64 > sb.segment_size as u64
        {
            return Err(EngineError::Corrupt(format!(
                "an image names bytes {offset}..+{} of segment {segment}, outside the store's \
                 {} segments of {} bytes",
                bytes.len(),
                sb.segment_count,
                sb.segment_size
            )));
        }
        let (file, base) = sb.segment_position(segment);
        self.storage.write_at(file, base + offset as u64, bytes)?;
        Ok(())
    }

    /// Writes the image's checkpoint file (atomically, durably).
    pub fn checkpoint(&self, bytes: &[u8]) -> Result<()> {
        self.storage.write_checkpoint(bytes)?;
        Ok(())
    }

    /// Syncs every byte written, then writes the superblock (atomically, durably).
    pub fn finish(self) -> Result<()> {
        self.storage.sync_everything()?;
        self.storage.write_superblock(&self.superblock_bytes)?;
        Ok(())
    }
}
