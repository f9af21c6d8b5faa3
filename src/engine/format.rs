//! On-disk format. Every byte that reaches disk is encoded and decoded here; nothing else in the
//! crate knows an offset inside a header.
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
//!   (format and invariant in `synctable.rs`).
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
//! ```
//!
//! A segment's *generation* is taken from a global counter every time the segment is handed out,
//! so it grows with every reuse of the segment. Every buffer carries it; recovery reads a segment
//! from its first buffer and stops at the first buffer that is invalid or of another generation,
//! so bytes of an earlier use never come back. A freed segment's first sector is zeroed (and
//! synced) before the segment is reused, so a torn first buffer of the new use cannot expose the
//! old first buffer either.
//!
//! # Buffer header (64 bytes, little-endian)
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `LSBF` |
//! | 4 | 2 | format version |
//! | 6 | 1 | segment kind: 1 mixed (the log), 2 group-owned |
//! | 7 | 1 | flags (0) |
//! | 8 | 8 | segment generation |
//! | 16 | 8 | first LSN of the batches in this buffer (0: none, e.g. copies or a marker) |
//! | 24 | 8 | last LSN of the batches in this buffer (0: none); in a buffer of copies, the highest LSN among the copied records' versions |
//! | 32 | 8 | durable floor: every batch up to this LSN was durable when the buffer was sealed |
//! | 40 | 4 | payload length (bytes of records) |
//! | 44 | 4 | batch count (user batches and copy batches) |
//! | 48 | 4 | owning group (group-owned segments; `u32::MAX` in mixed ones) |
//! | 52 | 4 | buffer length on disk (header + payload + padding, a multiple of 4 KiB) |
//! | 56 | 4 | segment index (where the buffer belongs: catches misdirected writes) |
//! | 60 | 4 | CRC-32 of bytes 0..60 and the payload |
//!
//! # Record (24-byte header, then key, then value)
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | CRC-32 of bytes 4..24, the key and the value (checked on every read) |
//! | 4 | 1 | kind: 1 put, 2 delete (tombstone), 3 range delete |
//! | 5 | 1 | flags (0) |
//! | 6 | 2 | key length |
//! | 8 | 4 | group |
//! | 12 | 4 | value length |
//! | 16 | 8 | version: `lsn << 16 | index in batch`; copies keep it |
//!
//! A range delete's key is the range's start and its value the range's end (exclusive; empty:
//! unbounded). It hides every key in the range whose version is lower than its own.
//!
//! # Mixed and group-owned segments
//!
//! The log writes user batches into *mixed* segments (kind 1, group `u32::MAX`), whatever their
//! records' groups. The separator and compaction write *buffers of copies* into *group-owned*
//! segments (kind 2, the group in the header): records copied verbatim (so with their versions
//! and CRCs), every record of the buffer of that group. A buffer of copies has no batch of its
//! own (first LSN 0); its last LSN is the highest LSN among its records' versions, so that
//! recovery can tell a copy of a batch that did not survive a power cut (see `recovery.rs`).

use crc32fast::Hasher;

pub const BLOCK_SIZE: usize = 4096;
pub const BUFFER_HEADER_SIZE: usize = 64;
pub const RECORD_HEADER_SIZE: usize = 24;
pub const DEFAULT_SEGMENT_SIZE: u32 = 1 << 20;
pub const DEFAULT_SEGMENTS_PER_FILE: u32 = 64;
pub const MIN_SEGMENT_SIZE: u32 = 64 * 1024;
pub const MAX_SEGMENT_SIZE: u32 = 64 << 20;
/// Segment files are made larger rather than exceed this many (file descriptors are cached).
pub const MAX_SEGMENT_FILES: u32 = 4096;

pub const BUFFER_MAGIC: u32 = u32::from_le_bytes(*b"LSBF");
pub const FORMAT_VERSION: u16 = 1;
pub const SUPERBLOCK_MAGIC: u64 = u64::from_le_bytes(*b"LOGSTORS");
pub const SUPERBLOCK_SIZE: usize = 64;
pub const NO_GROUP: u32 = u32::MAX;

/// Bits of a version that number records within a batch.
pub const VERSION_BATCH_BITS: u32 = 16;

pub fn version_of(lsn: u64, index_in_batch: usize) -> u64 {
    (lsn << VERSION_BATCH_BITS) | index_in_batch as u64
}

pub fn lsn_of_version(version: u64) -> u64 {
    version >> VERSION_BATCH_BITS
}

pub fn align_up(n: usize, to: usize) -> usize {
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

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferHeader {
    pub kind: SegmentKind,
    pub generation: u64,
    pub lsn_first: u64,
    pub lsn_last: u64,
    pub durable_floor: u64,
    pub payload_len: u32,
    pub record_count: u32,
    pub group: u32,
    pub buffer_len: u32,
    pub segment_index: u32,
}

impl BufferHeader {
    /// Writes the header into `buf[..64]` and the CRC over it and `buf[64..64 + payload_len]`.
    pub fn seal(&self, buf: &mut [u8]) {
        let h = &mut buf[..BUFFER_HEADER_SIZE];
        h[0..4].copy_from_slice(&BUFFER_MAGIC.to_le_bytes());
        h[4..6].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        h[6] = self.kind as u8;
        h[7] = 0;
        h[8..16].copy_from_slice(&self.generation.to_le_bytes());
        h[16..24].copy_from_slice(&self.lsn_first.to_le_bytes());
        h[24..32].copy_from_slice(&self.lsn_last.to_le_bytes());
        h[32..40].copy_from_slice(&self.durable_floor.to_le_bytes());
        h[40..44].copy_from_slice(&self.payload_len.to_le_bytes());
        h[44..48].copy_from_slice(&self.record_count.to_le_bytes());
        h[48..52].copy_from_slice(&self.group.to_le_bytes());
        h[52..56].copy_from_slice(&self.buffer_len.to_le_bytes());
        h[56..60].copy_from_slice(&self.segment_index.to_le_bytes());
        let crc = buffer_crc(buf, self.payload_len as usize);
        buf[60..64].copy_from_slice(&crc.to_le_bytes());
    }

    /// Whether `block` could start a valid buffer of `segment` (magic, version, segment index):
    /// a cheap test before reading the whole buffer for its CRC.
    pub fn plausible_start(block: &[u8], segment: u32) -> bool {
        block.len() >= BUFFER_HEADER_SIZE
            && u32_at(block, 0) == BUFFER_MAGIC
            && u16_at(block, 4) == FORMAT_VERSION
            && u32_at(block, 56) == segment
    }

    /// The generation field of a block that passes [`BufferHeader::plausible_start`], read
    /// without checking the CRC.
    pub fn generation_field(block: &[u8]) -> u64 {
        u64_at(block, 8)
    }

    /// Decodes and checks a buffer starting at `buf[0]` (which holds at least the whole
    /// buffer, or whatever remains of the segment). `None` if anything is off: wrong magic or
    /// version, impossible lengths, or a CRC mismatch (torn or damaged).
    pub fn decode_checked(buf: &[u8]) -> Option<BufferHeader> {
        if buf.len() < BUFFER_HEADER_SIZE || u32_at(buf, 0) != BUFFER_MAGIC {
            return None;
        }
        if u16_at(buf, 4) != FORMAT_VERSION {
            return None;
        }
        let kind = match buf[6] {
            1 => SegmentKind::Mixed,
            2 => SegmentKind::Group,
            _ => return None,
        };
        let header = BufferHeader {
            kind,
            generation: u64_at(buf, 8),
            lsn_first: u64_at(buf, 16),
            lsn_last: u64_at(buf, 24),
            durable_floor: u64_at(buf, 32),
            payload_len: u32_at(buf, 40),
            record_count: u32_at(buf, 44),
            group: u32_at(buf, 48),
            buffer_len: u32_at(buf, 52),
            segment_index: u32_at(buf, 56),
        };
        let len = header.buffer_len as usize;
        if len < BLOCK_SIZE
            || len % BLOCK_SIZE != 0
            || len > buf.len()
            || header.payload_len as usize > len - BUFFER_HEADER_SIZE
            || header.lsn_first > header.lsn_last
        {
            return None;
        }
        if buffer_crc(buf, header.payload_len as usize) != u32_at(buf, 60) {
            return None;
        }
        Some(header)
    }
}

fn buffer_crc(buf: &[u8], payload_len: usize) -> u32 {
    let mut h = Hasher::new();
    h.update(&buf[..60]);
    h.update(&buf[BUFFER_HEADER_SIZE..BUFFER_HEADER_SIZE + payload_len]);
    h.finalize()
}

/// A record's header, as encoded at the front of every record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    pub kind: RecordKind,
    pub key_len: u16,
    pub group: u32,
    pub value_len: u32,
    pub version: u64,
}

impl RecordHeader {
    pub fn total_len(&self) -> usize {
        RECORD_HEADER_SIZE + self.key_len as usize + self.value_len as usize
    }

    /// Encodes the header into `out[..24]`. `body_crc` is the CRC state of key and value,
    /// computed earlier (outside any lock); the record CRC is combined from it.
    pub fn encode(&self, out: &mut [u8], body_crc: &Hasher) {
        out[4] = self.kind as u8;
        out[5] = 0;
        out[6..8].copy_from_slice(&self.key_len.to_le_bytes());
        out[8..12].copy_from_slice(&self.group.to_le_bytes());
        out[12..16].copy_from_slice(&self.value_len.to_le_bytes());
        out[16..24].copy_from_slice(&self.version.to_le_bytes());
        let mut h = Hasher::new();
        h.update(&out[4..24]);
        h.combine(body_crc);
        out[0..4].copy_from_slice(&h.finalize().to_le_bytes());
    }

    /// Decodes a header without checking the CRC (recovery trusts the buffer CRC).
    pub fn decode(b: &[u8]) -> Option<RecordHeader> {
        if b.len() < RECORD_HEADER_SIZE {
            return None;
        }
        let h = RecordHeader {
            kind: RecordKind::from_u8(b[4])?,
            key_len: u16_at(b, 6),
            group: u32_at(b, 8),
            value_len: u32_at(b, 12),
            version: u64_at(b, 16),
        };
        (h.total_len() <= b.len()).then_some(h)
    }

    /// Decodes a whole record and checks its own CRC (used on every read).
    pub fn decode_checked(b: &[u8]) -> Option<RecordHeader> {
        let h = Self::decode(b)?;
        let mut crc = Hasher::new();
        crc.update(&b[4..h.total_len()]);
        (crc.finalize() == u32_at(b, 0)).then_some(h)
    }
}

/// Rewrites the group of the encoded record `bytes` (header, key and value) and its CRC: a copy
/// that moves to another group says so, the rest of it unchanged (version included).
pub fn set_record_group(bytes: &mut [u8], group: u32) {
    bytes[8..12].copy_from_slice(&group.to_le_bytes());
    let mut h = Hasher::new();
    h.update(&bytes[4..]);
    bytes[0..4].copy_from_slice(&h.finalize().to_le_bytes());
}

/// The CRC state of a record's key and value, to be combined into its header later.
pub fn record_body_crc(key: &[u8], value: &[u8]) -> Hasher {
    let mut h = Hasher::new();
    h.update(key);
    h.update(value);
    h
}

/// The store's geometry and the generation high-water mark.
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 8 | magic `LOGSTORS` |
/// | 8 | 2 | format version |
/// | 10 | 2 | reserved |
/// | 12 | 4 | segment size |
/// | 16 | 4 | segments per file |
/// | 20 | 4 | segment count |
/// | 24 | 8 | generation high-water mark: no generation at or above it was ever handed out |
/// | 32 | 28 | reserved (zero) |
/// | 60 | 4 | CRC-32 of bytes 0..60 |
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Superblock {
    pub segment_size: u32,
    pub segments_per_file: u32,
    pub segment_count: u32,
    pub generation_high_water: u64,
}

impl Superblock {
    pub fn encode(&self) -> [u8; SUPERBLOCK_SIZE] {
        let mut b = [0u8; SUPERBLOCK_SIZE];
        b[0..8].copy_from_slice(&SUPERBLOCK_MAGIC.to_le_bytes());
        b[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&self.segment_size.to_le_bytes());
        b[16..20].copy_from_slice(&self.segments_per_file.to_le_bytes());
        b[20..24].copy_from_slice(&self.segment_count.to_le_bytes());
        b[24..32].copy_from_slice(&self.generation_high_water.to_le_bytes());
        let crc = crc32fast::hash(&b[..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<Superblock, String> {
        if b.len() != SUPERBLOCK_SIZE {
            return Err(format!(
                "superblock is {} bytes, expected {SUPERBLOCK_SIZE}",
                b.len()
            ));
        }
        if u64_at(b, 0) != SUPERBLOCK_MAGIC {
            return Err("superblock has the wrong magic number".into());
        }
        if crc32fast::hash(&b[..60]) != u32_at(b, 60) {
            return Err("superblock checksum mismatch".into());
        }
        let version = u16_at(b, 8);
        if version != FORMAT_VERSION {
            return Err(format!(
                "format version {version}, this build reads {FORMAT_VERSION}"
            ));
        }
        let sb = Superblock {
            segment_size: u32_at(b, 12),
            segments_per_file: u32_at(b, 16),
            segment_count: u32_at(b, 20),
            generation_high_water: u64_at(b, 24),
        };
        if !sb.segment_size.is_power_of_two()
            || sb.segment_size < MIN_SEGMENT_SIZE
            || sb.segment_size > MAX_SEGMENT_SIZE
            || sb.segments_per_file == 0
            || sb.segment_count == 0
            || sb.file_count() > MAX_SEGMENT_FILES
        {
            return Err(format!("superblock geometry is impossible: {sb:?}"));
        }
        Ok(sb)
    }

    pub fn file_count(&self) -> u32 {
        self.segment_count.div_ceil(self.segments_per_file)
    }

    pub fn file_len(&self) -> u64 {
        self.segments_per_file as u64 * self.segment_size as u64
    }

    /// Which file holds `segment`, and where in it the segment starts.
    pub fn segment_position(&self, segment: u32) -> (u32, u64) {
        let file = segment / self.segments_per_file;
        let offset = (segment % self.segments_per_file) as u64 * self.segment_size as u64;
        (file, offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffer_header_round_trip_and_torn_detection() {
        let mut buf = vec![0u8; 2 * BLOCK_SIZE];
        buf[BUFFER_HEADER_SIZE..BUFFER_HEADER_SIZE + 100].fill(7);
        let h = BufferHeader {
            kind: SegmentKind::Mixed,
            generation: 9,
            lsn_first: 3,
            lsn_last: 5,
            durable_floor: 2,
            payload_len: 100,
            record_count: 1,
            group: NO_GROUP,
            buffer_len: BLOCK_SIZE as u32,
            segment_index: 4,
        };
        h.seal(&mut buf);
        assert_eq!(BufferHeader::decode_checked(&buf), Some(h));
        // Any flipped payload byte (a torn or damaged sector) is caught by the CRC.
        buf[BUFFER_HEADER_SIZE + 50] ^= 1;
        assert_eq!(BufferHeader::decode_checked(&buf), None);
    }

    #[test]
    fn record_crc_combines_header_and_body() {
        let key = b"key";
        let value = b"value";
        let h = RecordHeader {
            kind: RecordKind::Put,
            key_len: 3,
            group: 1,
            value_len: 5,
            version: version_of(7, 2),
        };
        let mut rec = vec![0u8; h.total_len()];
        rec[24..27].copy_from_slice(key);
        rec[27..].copy_from_slice(value);
        h.encode(&mut rec, &record_body_crc(key, value));
        assert_eq!(RecordHeader::decode_checked(&rec), Some(h));
        assert_eq!(lsn_of_version(h.version), 7);
        rec[30] ^= 0x40;
        assert_eq!(RecordHeader::decode_checked(&rec), None);
    }

    #[test]
    fn superblock_round_trip_and_damage() {
        let sb = Superblock {
            segment_size: 1 << 20,
            segments_per_file: 64,
            segment_count: 1024,
            generation_high_water: 4096,
        };
        let mut b = sb.encode();
        assert_eq!(Superblock::decode(&b), Ok(sb));
        b[13] ^= 1;
        assert!(Superblock::decode(&b).unwrap_err().contains("checksum"));
    }
}
