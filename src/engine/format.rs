//! On-disk format. Every byte that reaches disk is encoded and decoded under this module; nothing
//! else in the crate knows an offset inside a header. Each part of the format has its own file,
//! opening with its byte table beside the offset constants that encode it:
//! - [`buffer`]: the buffer header, sealing a buffer and checking or repairing one;
//! - [`record`]: the record header and a record's CRC;
//! - [`directory`]: the record directory at a buffer's end, and its trailer;
//! - [`superblock`]: the store's geometry and generation high-water mark;
//! - [`sync_table`]: an entry of the segment sync table (`synced.tbl`);
//! - [`checkpoint`]: the index checkpoint written at a clean close.
//!
//! # Files
//!
//! A store is a directory holding:
//! - `superblock`: geometry and the generation high-water mark ([`Superblock`]). Replaced
//!   atomically (write a temporary file, fsync, rename, fsync the directory).
//! - `lock`: held with `flock` by the process that has the store open.
//! - `seg-NNNNNN`: segment files, each `segments_per_file` segments of `segment_size` bytes,
//!   allocated (`fallocate`) whole before any segment in them is handed out.
//! - `synced.tbl`: the segment sync table, how far each group-owned segment is known synced
//!   (entry format in [`sync_table`], invariant in `synctable.rs`).
//! - `checkpoint`: the index as a clean close left it (format in [`checkpoint`], when it is
//!   trusted in `checkpoint.rs`).
//!
//! # Segments and buffers
//!
//! A segment is written sequentially, one *buffer* at a time. A buffer is a [`BufferHeader`]
//! followed by records, zero-padded to a multiple of [`BLOCK_SIZE`]. The header's CRC covers the
//! header and the whole payload, so a torn buffer is detected, wherever it was torn.
//!
//! ```text
//! segment: | buffer 0 | buffer 1 | ... | buffer k | (bytes of an earlier use, or zeros) |
//! buffer:  | header (64 B) | record | record | ... | zero padding to 4 KiB |
//! buffer (v2): | header (64 B) | records | zero padding | directory entries | trailer (32 B) |
//! ```
//!
//! A segment's *generation* is taken from a global counter every time the segment is handed out,
//! so it grows with every reuse of the segment. Every buffer carries it; recovery reads a segment
//! from its first buffer and stops at the first buffer that is invalid or of another generation,
//! so bytes of an earlier use never come back. A freed segment's first sector is zeroed (and
//! synced) before the segment is reused, so a torn first buffer of the new use cannot expose the
//! old first buffer either.
//!
//! # Mixed and group-owned segments
//!
//! The log writes user batches into *mixed* segments (kind 1, group `u32::MAX`), whatever their
//! records' groups. The separator and compaction write *buffers of copies* into *group-owned*
//! segments (kind 2, the group in the header): records copied verbatim (so with their versions
//! and CRCs), every record of the buffer of that group. A buffer of copies has no batch of its
//! own (first LSN 0); its last LSN is the highest LSN among its records' versions, so that
//! recovery can tell a copy of a batch that did not survive a power cut (see `recovery.rs`).

pub mod buffer;
pub mod checkpoint;
pub mod directory;
pub mod record;
pub mod summaries;
pub mod superblock;
pub mod sync_table;

pub use buffer::*;
pub use directory::*;
pub use record::*;
pub use superblock::*;

pub const BLOCK_SIZE: usize = 4096;
/// Bytes of a buffer's header (table in [`buffer`]); its records start right after it.
pub const BUFFER_HEADER_SIZE: usize = 64;
pub const DEFAULT_SEGMENT_SIZE: u32 = 1 << 20;
pub const DEFAULT_SEGMENTS_PER_FILE: u32 = 64;
pub const MIN_SEGMENT_SIZE: u32 = 64 * 1024;
pub const MAX_SEGMENT_SIZE: u32 = 64 << 20;
/// Segment files are made larger rather than exceed this many (file descriptors are cached).
pub const MAX_SEGMENT_FILES: u32 = 4096;

/// The format every buffer and superblock is written in.
pub const FORMAT_VERSION: u16 = 2;
/// The oldest format still read: version 1 buffers have no record directory.
pub const OLDEST_FORMAT_VERSION: u16 = 1;
/// The format the superblock is written in: version 3 adds
/// [`Superblock::frees_clear_directories_from`] (buffers are as in version 2). An older build
/// refuses the store, since it would free segments without clearing their first buffer's
/// directory, which the field promises.
pub const SUPERBLOCK_VERSION: u16 = 3;
pub const NO_GROUP: u32 = u32::MAX;

/// Bits of a version that number records within a batch.
pub const VERSION_BATCH_BITS: u32 = 16;

pub fn version_of(lsn: u64, index_in_batch: usize) -> u64 {
    (lsn << VERSION_BATCH_BITS) | index_in_batch as u64
}

pub fn lsn_of_version(version: u64) -> u64 {
    version >> VERSION_BATCH_BITS
}

pub const fn align_up(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentKind {
    Mixed = 1,
    Group = 2,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    Put = 1,
    Delete = 2,
    DeleteRange = 3,
}

impl RecordKind {
    fn from_u8(b: u8) -> Option<RecordKind> {
        match b {
            1 => Some(RecordKind::Put),
            2 => Some(RecordKind::Delete),
            3 => Some(RecordKind::DeleteRange),
            _ => None,
        }
    }
}

// Little-endian fields at a byte offset: every part of the format reads and writes through these.
fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}
fn put_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
