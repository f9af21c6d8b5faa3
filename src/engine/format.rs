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
//! # Record directory (format version 2)
//!
//! A version 2 buffer ends with a *record directory*: a copy of every record's header and key
//! (and of a range delete's end, which is its value), in record order, then a 32-byte trailer
//! ending at the buffer's last byte. Zero padding lies between the records and the directory.
//!
//! ```text
//! buffer (v2): | header (64 B) | records | zero padding | directory entries | trailer (32 B) |
//! ```
//!
//! Why: a flipped byte in a record's own header or key leaves the record unnamed, and its key
//! would quietly serve an older version (or read as absent) after recovery. The directory names
//! it again (key, version, length), so that reads of that key fail instead; and the records
//! behind a damaged length field are found at the offsets the directory's lengths give. It sits
//! at the far end of the buffer from the header, so that a damaged sector rarely takes both.
//! A damaged buffer's end is known without its header: it is where the next buffer of the
//! segment's use starts (or the damaged stretch's end), and the trailer ends there.
//!
//! The header's naming fields and the trailer say the same things (segment, generation, buffer
//! length), and the directory is a function of the records: a buffer damaged only in its naming
//! fields, its padding, its directory or its trailer is repaired exactly from the rest, checked
//! by the buffer's CRC ([`BufferHeader::decode_repaired`], [`BufferHeader::decode_resealed`]).
//!
//! | offset | size | trailer field |
//! |---|---|---|
//! | 0 | 4 | magic `LSRD` |
//! | 4 | 4 | record count |
//! | 8 | 4 | directory length (bytes of entries, before the trailer) |
//! | 12 | 4 | segment index |
//! | 16 | 8 | segment generation |
//! | 24 | 4 | buffer length (the header's field again: where the buffer starts, from its end) |
//! | 28 | 4 | CRC-32 of the directory entries and trailer bytes 0..28 |
//!
//! A version 2 buffer's CRC (header bytes 60..64) covers header bytes 0..60 and every byte
//! after the header up to the buffer's end: records, padding, directory and trailer. Version 1
//! buffers (no directory; the CRC covers header and payload only) are still read; every buffer
//! written is version 2, and a store whose superblock says version 1 is marked version 2 when
//! it is opened for writing, so that an older build refuses it instead of taking version 2
//! buffers for torn ones.
//!
//! # Buffer header (64 bytes, little-endian)
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `LSBF` |
//! | 4 | 2 | format version (1, or 2: with a record directory) |
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
//! | 60 | 4 | CRC-32 of bytes 0..60 and the payload (version 1), or of bytes 0..60 and 64..buffer end (version 2) |
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
/// The format every buffer and superblock is written in.
pub const FORMAT_VERSION: u16 = 2;
/// The oldest format still read: version 1 buffers have no record directory.
pub const OLDEST_FORMAT_VERSION: u16 = 1;
/// The format the superblock is written in: version 3 adds
/// [`Superblock::frees_clear_directories_from`] (buffers are as in version 2). An older build
/// refuses the store, since it would free segments without clearing their first buffer's
/// directory, which the field promises.
pub const SUPERBLOCK_VERSION: u16 = 3;
pub const DIRECTORY_MAGIC: u32 = u32::from_le_bytes(*b"LSRD");
pub const DIRECTORY_TRAILER_SIZE: usize = 32;
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
    /// Seals the buffer `buf[..buffer_len]`: records in `buf[64..64 + payload_len]`, zeros up to
    /// the buffer's end (size it with [`buffer_len_for`]). Writes the record directory at the
    /// buffer's end, the header, and the CRC over all of it.
    pub fn seal(&self, buf: &mut [u8]) {
        let buf = &mut buf[..self.buffer_len as usize];
        write_directory(
            buf,
            self.payload_len as usize,
            self.segment_index,
            self.generation,
        );
        self.write_header(buf, FORMAT_VERSION);
    }

    /// Seals `buf` as a format version 1 buffer (no record directory), as builds before
    /// version 2 wrote them: for tests that such buffers are still read.
    #[cfg(test)]
    pub fn seal_version_1(&self, buf: &mut [u8]) {
        self.write_header(&mut buf[..self.buffer_len as usize], 1);
    }

    /// Writes the header into `buf[..64]` (`buf`: the whole buffer), its CRC last.
    fn write_header(&self, buf: &mut [u8], version: u16) {
        let h = &mut buf[..BUFFER_HEADER_SIZE];
        h[0..4].copy_from_slice(&BUFFER_MAGIC.to_le_bytes());
        h[4..6].copy_from_slice(&version.to_le_bytes());
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
        let crc = buffer_crc(buf, version, self.payload_len as usize);
        buf[60..64].copy_from_slice(&crc.to_le_bytes());
    }

    /// Whether `block` could start a valid buffer of `segment` (magic, version, segment index):
    /// a cheap test before reading the whole buffer for its CRC.
    pub fn plausible_start(block: &[u8], segment: u32) -> bool {
        block.len() >= BUFFER_HEADER_SIZE
            && u32_at(block, 0) == BUFFER_MAGIC
            && (OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&u16_at(block, 4))
            && u32_at(block, 56) == segment
    }

    /// Whether `block` starts with a buffer header's magic.
    pub fn magic_is_right(block: &[u8]) -> bool {
        block.len() >= 4 && u32_at(block, 0) == BUFFER_MAGIC
    }

    /// The generation field of a block that passes [`BufferHeader::plausible_start`], read
    /// without checking the CRC.
    pub fn generation_field(block: &[u8]) -> u64 {
        u64_at(block, 8)
    }

    /// Whether the kind byte of a block's (unchecked) buffer header says group-owned (copies).
    pub fn kind_field_is_group(block: &[u8]) -> bool {
        block.len() > 6 && block[6] == SegmentKind::Group as u8
    }

    /// Whether a block's (unchecked) buffer header says format version 1 (no record directory).
    pub fn version_field_is_1(block: &[u8]) -> bool {
        block.len() >= 6 && u16_at(block, 4) == 1
    }

    /// The buffer length field of a block that passes [`BufferHeader::plausible_start`], read
    /// without checking the CRC.
    pub fn buffer_len_field(block: &[u8]) -> usize {
        u32_at(block, 52) as usize
    }

    /// Decodes and checks a buffer starting at `buf[0]` (which holds at least the whole
    /// buffer, or whatever remains of the segment). `None` if anything is off: wrong magic or
    /// version, impossible lengths, or a CRC mismatch (torn or damaged).
    pub fn decode_checked(buf: &[u8]) -> Option<BufferHeader> {
        let (header, version) = Self::decode_fields(buf)?;
        let (len, payload_len) = (header.buffer_len as usize, header.payload_len as usize);
        let stored_crc = u32_at(buf, 60);
        (buffer_crc(&buf[..len], version, payload_len) == stored_crc).then_some(header)
    }

    /// The header's fields and format version, if they are consistent with each other and
    /// with `buf`; the CRC unchecked.
    fn decode_fields(buf: &[u8]) -> Option<(BufferHeader, u16)> {
        if buf.len() < BUFFER_HEADER_SIZE || u32_at(buf, 0) != BUFFER_MAGIC {
            return None;
        }
        let version = u16_at(buf, 4);
        if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&version) {
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
        let directory_room = if version >= 2 {
            DIRECTORY_TRAILER_SIZE
        } else {
            0
        };
        if len < BLOCK_SIZE
            || !len.is_multiple_of(BLOCK_SIZE)
            || len > buf.len()
            || header.payload_len as usize > len - BUFFER_HEADER_SIZE - directory_room
            || header.lsn_first > header.lsn_last
        {
            return None;
        }
        Some((header, version))
    }

    /// Decodes a version 2 buffer starting at `buf[0]` whose damage lies only in bytes that
    /// its header and records determine: the zero padding, the record directory and its
    /// trailer. Every record must pass its own CRC; the buffer is then sealed again from its
    /// header and records, and taken only if the header's CRC holds over the result: the
    /// buffer as it was sealed, exactly. Why: with the directory damaged, nothing but a later
    /// buffer's durable floor could prove the buffer synced, and a marker (which carries no
    /// batch) cannot without the directory; the last buffers of a segment were dropped as torn
    /// although every record in them was whole.
    pub fn decode_resealed(buf: &[u8]) -> Option<BufferHeader> {
        let (header, version) = Self::decode_fields(buf)?;
        if version < 2 {
            return None;
        }
        let len = header.buffer_len as usize;
        let payload_end = BUFFER_HEADER_SIZE + header.payload_len as usize;
        let mut p = BUFFER_HEADER_SIZE;
        let mut directory_len = 0;
        while p < payload_end {
            let h = RecordHeader::decode_checked(&buf[p..payload_end])?;
            directory_len += directory_entry_len(h.kind, h.key_len as usize, h.value_len as usize);
            p += h.total_len();
        }
        // The directory must fit behind the records (a damaged length field could say
        // otherwise: then this is not the buffer that was sealed).
        if payload_end + directory_len + DIRECTORY_TRAILER_SIZE > len {
            return None;
        }
        let mut copy = vec![0u8; len];
        copy[..payload_end].copy_from_slice(&buf[..payload_end]);
        write_directory(
            &mut copy,
            header.payload_len as usize,
            header.segment_index,
            header.generation,
        );
        let crc = buffer_crc(&copy, version, header.payload_len as usize);
        (crc == u32_at(buf, 60)).then_some(header)
    }
}

impl BufferHeader {
    /// Decodes a version 2 buffer starting at `buf[0]` that fails [`decode_checked`] only
    /// because a field naming it was damaged: magic, version, segment kind, flags, generation,
    /// buffer length or segment index (or a mixed buffer's group, always [`NO_GROUP`]). Those fields are known without the header: the buffer's
    /// end is where a record directory trailer of `segment` says a buffer starting at `buf[0]`
    /// ends, the generation is the trailer's, the rest are constants. The repair is taken only
    /// if the buffer's CRC then holds over every byte, which no torn write and no buffer of
    /// another use can pass (short of a 32-bit CRC collision): the buffer is then exactly the
    /// one that was sealed. Why: a segment's first buffer alone tells its use from an earlier
    /// one, and a flipped generation there made the whole segment read as free (every file in
    /// it served older versions or vanished: `one_flipped_byte_anywhere_reads_newest_or_fails_never_older`).
    ///
    /// [`decode_checked`]: BufferHeader::decode_checked
    pub fn decode_repaired(buf: &[u8], segment: u32) -> Option<BufferHeader> {
        if buf.len() < BLOCK_SIZE {
            return None;
        }
        for end in (BLOCK_SIZE..=buf.len()).step_by(BLOCK_SIZE) {
            let t = &buf[end - DIRECTORY_TRAILER_SIZE..end];
            if !trailer_of_first_buffer(t, segment, end) {
                continue;
            }
            let mut copy = buf[..end].to_vec();
            copy[0..4].copy_from_slice(&BUFFER_MAGIC.to_le_bytes());
            copy[4..6].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
            copy[7] = 0;
            copy[8..16].copy_from_slice(&t[16..24]);
            copy[52..56].copy_from_slice(&(end as u32).to_le_bytes());
            copy[56..60].copy_from_slice(&segment.to_le_bytes());
            for kind in [SegmentKind::Mixed, SegmentKind::Group] {
                copy[6] = kind as u8;
                if kind == SegmentKind::Mixed {
                    // A mixed buffer's group field is always this (a group-owned one's is the
                    // segment's group: left as it is).
                    copy[48..52].copy_from_slice(&NO_GROUP.to_le_bytes());
                } else {
                    copy[48..52].copy_from_slice(&buf[48..52]);
                }
                if let Some(h) = BufferHeader::decode_checked(&copy) {
                    return Some(h);
                }
            }
        }
        None
    }
}

/// The CRC of the buffer `buf` (exactly the buffer's bytes) in format `version`.
fn buffer_crc(buf: &[u8], version: u16, payload_len: usize) -> u32 {
    let mut h = Hasher::new();
    h.update(&buf[..60]);
    if version >= 2 {
        h.update(&buf[BUFFER_HEADER_SIZE..]);
    } else {
        h.update(&buf[BUFFER_HEADER_SIZE..BUFFER_HEADER_SIZE + payload_len]);
    }
    h.finalize()
}

/// Bytes a record of `kind` with a key of `key_len` bytes and a value of `value_len` bytes
/// takes in its buffer's record directory: its header and key, and a range delete's end.
pub fn directory_entry_len(kind: RecordKind, key_len: usize, value_len: usize) -> usize {
    RECORD_HEADER_SIZE
        + key_len
        + if kind == RecordKind::DeleteRange {
            value_len
        } else {
            0
        }
}

/// Length on disk of a buffer whose records take `payload` bytes and their directory entries
/// `directory` bytes (see [`directory_entry_len`]).
pub const fn buffer_len_for(payload: usize, directory: usize) -> usize {
    align_up(
        BUFFER_HEADER_SIZE + payload + directory + DIRECTORY_TRAILER_SIZE,
        BLOCK_SIZE,
    )
}

/// Writes the record directory of the records in `buf[64..64 + payload_len]` at the end of
/// `buf` (the whole buffer, sized by [`buffer_len_for`]).
fn write_directory(buf: &mut [u8], payload_len: usize, segment: u32, generation: u64) {
    let payload_end = BUFFER_HEADER_SIZE + payload_len;
    // (where the record starts, bytes of it its entry copies): entries are a prefix of each
    // record (header, key, and a range delete's end).
    let mut entries: Vec<(usize, usize)> = Vec::new();
    let mut p = BUFFER_HEADER_SIZE;
    while p < payload_end {
        let Some(h) = RecordHeader::decode(&buf[p..payload_end]) else {
            // Records are encoded by this crate: a malformed one is a bug. Fail safe (the
            // directory names fewer records; recovery walks the rest) rather than panic.
            debug_assert!(false, "malformed record at {p} of a buffer being sealed");
            break;
        };
        entries.push((
            p,
            directory_entry_len(h.kind, h.key_len as usize, h.value_len as usize),
        ));
        p += h.total_len();
    }
    let directory_len: usize = entries.iter().map(|&(_, len)| len).sum();
    let buffer_len = buf.len();
    let trailer_at = buf.len() - DIRECTORY_TRAILER_SIZE;
    let directory_at = trailer_at - directory_len;
    debug_assert!(
        directory_at >= payload_end,
        "buffer too small for its directory"
    );
    let mut q = directory_at;
    for (at, len) in &entries {
        buf.copy_within(*at..*at + len, q);
        q += len;
    }
    let t = &mut buf[trailer_at..];
    t[0..4].copy_from_slice(&DIRECTORY_MAGIC.to_le_bytes());
    t[4..8].copy_from_slice(&(entries.len() as u32).to_le_bytes());
    t[8..12].copy_from_slice(&(directory_len as u32).to_le_bytes());
    t[12..16].copy_from_slice(&segment.to_le_bytes());
    t[16..24].copy_from_slice(&generation.to_le_bytes());
    t[24..28].copy_from_slice(&(buffer_len as u32).to_le_bytes());
    let crc = crc32fast::hash(&buf[directory_at..trailer_at + 28]);
    buf[trailer_at + 28..].copy_from_slice(&crc.to_le_bytes());
}

/// Whether `trailer` (32 bytes) starts like the record directory trailer of a buffer of
/// `segment` that is `end` bytes long, so ending `end` bytes into the segment if it is the
/// segment's first buffer (magic, segment, buffer length; its CRC unchecked).
pub fn trailer_of_first_buffer(trailer: &[u8], segment: u32, end: usize) -> bool {
    trailer.len() == DIRECTORY_TRAILER_SIZE
        && u32_at(trailer, 0) == DIRECTORY_MAGIC
        && u32_at(trailer, 12) == segment
        && u32_at(trailer, 24) as usize == end
}

/// The generation field of a record directory trailer (32 bytes; unchecked).
pub fn trailer_generation(trailer: &[u8]) -> u64 {
    u64_at(trailer, 16)
}

/// A record as a buffer's directory names it (see [`read_directory`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectoryEntry {
    /// Where the record starts, relative to the buffer's start.
    pub at: usize,
    pub header: RecordHeader,
    /// The entry's bytes: the record's header and key (and a range delete's end), as the
    /// record's own first bytes must be.
    pub bytes: Vec<u8>,
}

impl DirectoryEntry {
    pub fn key(&self) -> &[u8] {
        &self.bytes[RECORD_HEADER_SIZE..RECORD_HEADER_SIZE + self.header.key_len as usize]
    }

    /// A range delete's end (empty for other kinds).
    pub fn range_end(&self) -> &[u8] {
        &self.bytes[RECORD_HEADER_SIZE + self.header.key_len as usize..]
    }
}

/// The buffer whose record directory ends at the end of `tail` (bytes up to a buffer's end,
/// from anywhere before its start; headers unchecked), and the records its directory names:
/// `(where the buffer starts in tail, entries)`. `None` unless the trailer is intact (magic,
/// CRC), names `segment` and `generation`, gives a buffer length that fits in `tail`, and its
/// entries lay out records that fit between the buffer's header and the directory. Used for
/// buffers that fail their own checks.
pub fn read_directory(
    tail: &[u8],
    segment: u32,
    generation: u64,
) -> Option<(usize, Vec<DirectoryEntry>)> {
    if tail.len() < BUFFER_HEADER_SIZE + DIRECTORY_TRAILER_SIZE {
        return None;
    }
    let trailer_at = tail.len() - DIRECTORY_TRAILER_SIZE;
    let t = &tail[trailer_at..];
    let count = u32_at(t, 4) as usize;
    let directory_len = u32_at(t, 8) as usize;
    let buffer_len = u32_at(t, 24) as usize;
    if u32_at(t, 0) != DIRECTORY_MAGIC
        || u32_at(t, 12) != segment
        || u64_at(t, 16) != generation
        || buffer_len < BLOCK_SIZE
        || !buffer_len.is_multiple_of(BLOCK_SIZE)
        || buffer_len > tail.len()
        || directory_len > buffer_len - BUFFER_HEADER_SIZE - DIRECTORY_TRAILER_SIZE
        || count > directory_len / RECORD_HEADER_SIZE
    {
        return None;
    }
    let directory_at = trailer_at - directory_len;
    if crc32fast::hash(&tail[directory_at..trailer_at + 28]) != u32_at(t, 28) {
        return None;
    }
    let start = tail.len() - buffer_len;
    let directory = &tail[directory_at..trailer_at];
    let mut entries = Vec::with_capacity(count);
    let mut d = 0usize;
    let mut record_at = BUFFER_HEADER_SIZE;
    while d < directory.len() {
        let header = RecordHeader::decode_prefix(&directory[d..])?;
        let len = directory_entry_len(
            header.kind,
            header.key_len as usize,
            header.value_len as usize,
        );
        if d + len > directory.len() || start + record_at + header.total_len() > directory_at {
            return None;
        }
        entries.push(DirectoryEntry {
            at: record_at,
            header,
            bytes: directory[d..d + len].to_vec(),
        });
        d += len;
        record_at += header.total_len();
    }
    (entries.len() == count).then_some((start, entries))
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
        let h = Self::decode_prefix(b)?;
        (h.total_len() <= b.len()).then_some(h)
    }

    /// Decodes the 24 header bytes alone, whatever follows them (a directory entry's copy).
    pub fn decode_prefix(b: &[u8]) -> Option<RecordHeader> {
        if b.len() < RECORD_HEADER_SIZE {
            return None;
        }
        Some(RecordHeader {
            kind: RecordKind::from_u8(b[4])?,
            key_len: u16_at(b, 6),
            group: u32_at(b, 8),
            value_len: u32_at(b, 12),
            version: u64_at(b, 16),
        })
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
/// | 32 | 8 | (version 3) frees clear directories from this generation on (see the field) |
/// | 40 | 20 | reserved (zero) |
/// | 60 | 4 | CRC-32 of bytes 0..60 |
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Superblock {
    pub segment_size: u32,
    pub segments_per_file: u32,
    pub segment_count: u32,
    pub generation_high_water: u64,
    /// A use of a generation at or above this one was freed (if ever) by a build that clears
    /// the record directory trailer of the segment's first buffer along with its first sector
    /// (`SegmentManager::begin_free`): a first-buffer directory of such a generation found in a
    /// segment belongs to its current use, whatever its first sector holds. Builds before
    /// superblock version 3 did not clear it (`u64::MAX` when read from such a superblock); a
    /// store they wrote gets the high-water mark of its first open by this build.
    pub frees_clear_directories_from: u64,
}

impl Superblock {
    pub fn encode(&self) -> [u8; SUPERBLOCK_SIZE] {
        let mut b = [0u8; SUPERBLOCK_SIZE];
        b[0..8].copy_from_slice(&SUPERBLOCK_MAGIC.to_le_bytes());
        b[8..10].copy_from_slice(&SUPERBLOCK_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&self.segment_size.to_le_bytes());
        b[16..20].copy_from_slice(&self.segments_per_file.to_le_bytes());
        b[20..24].copy_from_slice(&self.segment_count.to_le_bytes());
        b[24..32].copy_from_slice(&self.generation_high_water.to_le_bytes());
        b[32..40].copy_from_slice(&self.frees_clear_directories_from.to_le_bytes());
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
        if !(OLDEST_FORMAT_VERSION..=SUPERBLOCK_VERSION).contains(&version) {
            return Err(format!(
                "format version {version}, this build reads {OLDEST_FORMAT_VERSION} to \
                 {SUPERBLOCK_VERSION}"
            ));
        }
        let sb = Superblock {
            segment_size: u32_at(b, 12),
            segments_per_file: u32_at(b, 16),
            segment_count: u32_at(b, 20),
            generation_high_water: u64_at(b, 24),
            frees_clear_directories_from: if version >= 3 {
                u64_at(b, 32)
            } else {
                u64::MAX
            },
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

    /// A put of `key` and `value` with version `version`, encoded.
    fn record(kind: RecordKind, key: &[u8], value: &[u8], version: u64) -> Vec<u8> {
        let h = RecordHeader {
            kind,
            key_len: key.len() as u16,
            group: 1,
            value_len: value.len() as u32,
            version,
        };
        let mut rec = vec![0u8; h.total_len()];
        rec[24..24 + key.len()].copy_from_slice(key);
        rec[24 + key.len()..].copy_from_slice(value);
        h.encode(&mut rec, &record_body_crc(key, value));
        rec
    }

    #[test]
    fn buffer_header_round_trip_and_torn_detection() {
        let records = [
            record(RecordKind::Put, b"alpha", &[7; 100], version_of(3, 0)),
            record(RecordKind::DeleteRange, b"b", b"c", version_of(3, 1)),
            record(RecordKind::Delete, b"gamma", b"", version_of(5, 0)),
        ];
        let payload: Vec<u8> = records.concat();
        let directory = 24 + 5 + (24 + 1 + 1) + (24 + 5);
        let buffer_len = buffer_len_for(payload.len(), directory);
        assert_eq!(buffer_len, BLOCK_SIZE);
        let mut buf = vec![0u8; 2 * BLOCK_SIZE];
        buf[BUFFER_HEADER_SIZE..BUFFER_HEADER_SIZE + payload.len()].copy_from_slice(&payload);
        let h = BufferHeader {
            kind: SegmentKind::Mixed,
            generation: 9,
            lsn_first: 3,
            lsn_last: 5,
            durable_floor: 2,
            payload_len: payload.len() as u32,
            record_count: 2,
            group: NO_GROUP,
            buffer_len: buffer_len as u32,
            segment_index: 4,
        };
        h.seal(&mut buf);
        assert_eq!(BufferHeader::decode_checked(&buf), Some(h));
        // The directory names every record, where it lies, with its key (and a range's end).
        let (start, entries) = read_directory(&buf[..buffer_len], 4, 9).unwrap();
        assert_eq!(start, 0);
        let mut at = BUFFER_HEADER_SIZE;
        for (e, r) in entries.iter().zip(&records) {
            assert_eq!(e.at, at);
            assert_eq!(Some(e.header), RecordHeader::decode(r));
            assert!(r.starts_with(&e.bytes));
            at += r.len();
        }
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0].key(), b"alpha");
        assert_eq!(
            (entries[1].key(), entries[1].range_end()),
            (&b"b"[..], &b"c"[..])
        );
        assert_eq!(entries[2].range_end(), b"");
        // Of another segment or use: not this buffer's directory.
        assert!(read_directory(&buf[..buffer_len], 5, 9).is_none());
        assert!(read_directory(&buf[..buffer_len], 4, 8).is_none());
        // Any flipped byte anywhere in the buffer (a torn or damaged sector) is caught by the
        // CRC: in the payload, in the padding, in the directory.
        for at in [BUFFER_HEADER_SIZE + 50, 2000, buffer_len - 40] {
            let mut damaged = buf.clone();
            damaged[at] ^= 1;
            assert_eq!(BufferHeader::decode_checked(&damaged), None, "byte {at}");
        }
        // A damaged record leaves the directory intact; a damaged directory is not read.
        let mut damaged = buf.clone();
        damaged[BUFFER_HEADER_SIZE + 30] ^= 1;
        assert_eq!(
            read_directory(&damaged[..buffer_len], 4, 9),
            Some((0, entries))
        );
        // Found from the buffer's end whatever lies before its start.
        let mut behind = vec![7u8; BLOCK_SIZE];
        behind.extend_from_slice(&damaged[..buffer_len]);
        assert_eq!(
            read_directory(&behind, 4, 9).map(|(s, _)| s),
            Some(BLOCK_SIZE)
        );
        damaged[buffer_len - 40] ^= 1;
        assert_eq!(read_directory(&damaged[..buffer_len], 4, 9), None);
        // Version 1 buffers (no directory) are still read.
        let mut v1 = vec![0u8; 2 * BLOCK_SIZE];
        v1[BUFFER_HEADER_SIZE..BUFFER_HEADER_SIZE + payload.len()].copy_from_slice(&payload);
        h.seal_version_1(&mut v1);
        assert_eq!(BufferHeader::decode_checked(&v1), Some(h));
        assert!(BufferHeader::plausible_start(&v1, 4));
        v1[BUFFER_HEADER_SIZE + 50] ^= 1;
        assert_eq!(BufferHeader::decode_checked(&v1), None);
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
            frees_clear_directories_from: 17,
        };
        let mut b = sb.encode();
        assert_eq!(Superblock::decode(&b), Ok(sb));
        b[13] ^= 1;
        assert!(Superblock::decode(&b).unwrap_err().contains("checksum"));
    }
}
