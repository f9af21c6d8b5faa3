//! The record directory (format version 2): a copy of every record's naming bytes at the far end
//! of its buffer, so that a record whose own header or key is damaged is still named (and its
//! key fails reads instead of serving an older version), and the records behind a damaged
//! length are still found.
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
//! # Trailer (32 bytes, little-endian)
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
//! [`BufferHeader::decode_repaired`]: super::BufferHeader::decode_repaired
//! [`BufferHeader::decode_resealed`]: super::BufferHeader::decode_resealed

use super::record::{RECORD_HEADER_SIZE, RecordHeader};
use super::{BLOCK_SIZE, BUFFER_HEADER_SIZE, RecordKind, put_u32, put_u64, u32_at, u64_at};

pub const DIRECTORY_MAGIC: u32 = u32::from_le_bytes(*b"LSRD");
pub const DIRECTORY_TRAILER_SIZE: usize = 32;

// Offsets of the trailer's fields, each following the one before (the table above).
const MAGIC_OFFSET: usize = 0;
const COUNT_OFFSET: usize = MAGIC_OFFSET + 4;
const DIRECTORY_LEN_OFFSET: usize = COUNT_OFFSET + 4;
const SEGMENT_OFFSET: usize = DIRECTORY_LEN_OFFSET + 4;
const GENERATION_OFFSET: usize = SEGMENT_OFFSET + 4;
const BUFFER_LEN_OFFSET: usize = GENERATION_OFFSET + 8;
/// The trailer's CRC; the trailer bytes before it are the last it covers.
const CRC_OFFSET: usize = BUFFER_LEN_OFFSET + 4;
const _: () = assert!(CRC_OFFSET + 4 == DIRECTORY_TRAILER_SIZE);

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

/// Writes the record directory of the records in `buf[64..64 + payload_len]` at the end of
/// `buf` (the whole buffer, sized by [`super::buffer_len_for`]).
pub(super) fn write_directory(buf: &mut [u8], payload_len: usize, segment: u32, generation: u64) {
    let payload_end = BUFFER_HEADER_SIZE + payload_len;
    let entries = entries_of(&buf[..payload_end]);
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
    put_u32(t, MAGIC_OFFSET, DIRECTORY_MAGIC);
    put_u32(t, COUNT_OFFSET, entries.len() as u32);
    put_u32(t, DIRECTORY_LEN_OFFSET, directory_len as u32);
    put_u32(t, SEGMENT_OFFSET, segment);
    put_u64(t, GENERATION_OFFSET, generation);
    put_u32(t, BUFFER_LEN_OFFSET, buffer_len as u32);
    let crc = crc32fast::hash(&buf[directory_at..trailer_at + CRC_OFFSET]);
    put_u32(buf, trailer_at + CRC_OFFSET, crc);
}

/// The directory entries of the records in `payload` (a buffer's bytes up to its payload's
/// end, header included): `(where the record starts, bytes of it its entry copies)`. Entries
/// are a prefix of each record (header, key, and a range delete's end).
fn entries_of(payload: &[u8]) -> Vec<(usize, usize)> {
    let mut entries: Vec<(usize, usize)> = Vec::new();
    let mut p = BUFFER_HEADER_SIZE;
    while p < payload.len() {
        let Some(h) = RecordHeader::decode(&payload[p..]) else {
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
    entries
}

/// Whether `trailer` (32 bytes) starts like the record directory trailer of a buffer of
/// `segment` that is `end` bytes long, so ending `end` bytes into the segment if it is the
/// segment's first buffer (magic, segment, buffer length; its CRC unchecked).
pub fn trailer_of_first_buffer(trailer: &[u8], segment: u32, end: usize) -> bool {
    trailer.len() == DIRECTORY_TRAILER_SIZE
        && u32_at(trailer, MAGIC_OFFSET) == DIRECTORY_MAGIC
        && u32_at(trailer, SEGMENT_OFFSET) == segment
        && u32_at(trailer, BUFFER_LEN_OFFSET) as usize == end
}

/// The generation field of a record directory trailer (32 bytes; unchecked).
pub fn trailer_generation(trailer: &[u8]) -> u64 {
    u64_at(trailer, GENERATION_OFFSET)
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
    let count = u32_at(t, COUNT_OFFSET) as usize;
    let directory_len = u32_at(t, DIRECTORY_LEN_OFFSET) as usize;
    let buffer_len = u32_at(t, BUFFER_LEN_OFFSET) as usize;
    if u32_at(t, MAGIC_OFFSET) != DIRECTORY_MAGIC
        || u32_at(t, SEGMENT_OFFSET) != segment
        || u64_at(t, GENERATION_OFFSET) != generation
        || buffer_len < BLOCK_SIZE
        || !buffer_len.is_multiple_of(BLOCK_SIZE)
        || buffer_len > tail.len()
        || directory_len > buffer_len - BUFFER_HEADER_SIZE - DIRECTORY_TRAILER_SIZE
        || count > directory_len / RECORD_HEADER_SIZE
    {
        return None;
    }
    let directory_at = trailer_at - directory_len;
    if crc32fast::hash(&tail[directory_at..trailer_at + CRC_OFFSET]) != u32_at(t, CRC_OFFSET) {
        return None;
    }
    let start = tail.len() - buffer_len;
    let entries = entries_in(&tail[directory_at..trailer_at], start, directory_at)?;
    (entries.len() == count).then_some((start, entries))
}

/// The entries of `directory` (its bytes, before the trailer), for a buffer starting at
/// `start` whose directory starts at `directory_at` (both from the same origin): `None` if an
/// entry runs past the directory or lays out a record that runs into it.
fn entries_in(directory: &[u8], start: usize, directory_at: usize) -> Option<Vec<DirectoryEntry>> {
    let mut entries = Vec::new();
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
    Some(entries)
}
