//! The buffer header: the 64 bytes that open every buffer of a segment, and the CRC that makes a
//! buffer all or nothing. A buffer is taken only if its CRC holds over every byte it covers, so
//! a torn or damaged buffer is never read as whole; the repairs here are taken only when the
//! repaired buffer passes that same CRC, i.e. is exactly the buffer that was sealed.
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
//! A version 2 buffer's CRC covers header bytes 0..60 and every byte after the header up to the
//! buffer's end: records, padding, record directory and trailer (see [`super::directory`]).
//! Version 1 buffers (no directory; the CRC covers header and payload only) are still read;
//! every buffer written is version 2, and a store whose superblock says version 1 is marked
//! version 2 when it is opened for writing, so that an older build refuses it instead of taking
//! version 2 buffers for torn ones.

use crc32fast::Hasher;

use super::directory::{
    DIRECTORY_TRAILER_SIZE, directory_entry_len, trailer_generation, trailer_of_first_buffer,
    write_directory,
};
use super::record::RecordHeader;
use super::{
    BLOCK_SIZE, BUFFER_HEADER_SIZE, FORMAT_VERSION, NO_GROUP, OLDEST_FORMAT_VERSION, SegmentKind,
    align_up, put_u16, put_u32, put_u64, u16_at, u32_at, u64_at,
};

pub const BUFFER_MAGIC: u32 = u32::from_le_bytes(*b"LSBF");

// Offsets of the header's fields, each following the one before (the table above).
const MAGIC_OFFSET: usize = 0;
const VERSION_OFFSET: usize = MAGIC_OFFSET + 4;
const KIND_OFFSET: usize = VERSION_OFFSET + 2;
const FLAGS_OFFSET: usize = KIND_OFFSET + 1;
const GENERATION_OFFSET: usize = FLAGS_OFFSET + 1;
const LSN_FIRST_OFFSET: usize = GENERATION_OFFSET + 8;
const LSN_LAST_OFFSET: usize = LSN_FIRST_OFFSET + 8;
const DURABLE_FLOOR_OFFSET: usize = LSN_LAST_OFFSET + 8;
const PAYLOAD_LEN_OFFSET: usize = DURABLE_FLOOR_OFFSET + 8;
const RECORD_COUNT_OFFSET: usize = PAYLOAD_LEN_OFFSET + 4;
const GROUP_OFFSET: usize = RECORD_COUNT_OFFSET + 4;
const BUFFER_LEN_OFFSET: usize = GROUP_OFFSET + 4;
const SEGMENT_INDEX_OFFSET: usize = BUFFER_LEN_OFFSET + 4;
/// The header's CRC; the header bytes before it are the ones it covers.
const CRC_OFFSET: usize = SEGMENT_INDEX_OFFSET + 4;
const _: () = assert!(CRC_OFFSET + 4 == BUFFER_HEADER_SIZE);

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
        put_u32(h, MAGIC_OFFSET, BUFFER_MAGIC);
        put_u16(h, VERSION_OFFSET, version);
        h[KIND_OFFSET] = self.kind as u8;
        h[FLAGS_OFFSET] = 0;
        put_u64(h, GENERATION_OFFSET, self.generation);
        put_u64(h, LSN_FIRST_OFFSET, self.lsn_first);
        put_u64(h, LSN_LAST_OFFSET, self.lsn_last);
        put_u64(h, DURABLE_FLOOR_OFFSET, self.durable_floor);
        put_u32(h, PAYLOAD_LEN_OFFSET, self.payload_len);
        put_u32(h, RECORD_COUNT_OFFSET, self.record_count);
        put_u32(h, GROUP_OFFSET, self.group);
        put_u32(h, BUFFER_LEN_OFFSET, self.buffer_len);
        put_u32(h, SEGMENT_INDEX_OFFSET, self.segment_index);
        let crc = buffer_crc(buf, version, self.payload_len as usize);
        put_u32(buf, CRC_OFFSET, crc);
    }

    /// Whether `block` could start a valid buffer of `segment` (magic, version, segment index):
    /// a cheap test before reading the whole buffer for its CRC.
    pub fn plausible_start(block: &[u8], segment: u32) -> bool {
        block.len() >= BUFFER_HEADER_SIZE
            && u32_at(block, MAGIC_OFFSET) == BUFFER_MAGIC
            && (OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&u16_at(block, VERSION_OFFSET))
            && u32_at(block, SEGMENT_INDEX_OFFSET) == segment
    }

    /// Whether `block` starts with a buffer header's magic.
    pub fn magic_is_right(block: &[u8]) -> bool {
        block.len() >= MAGIC_OFFSET + 4 && u32_at(block, MAGIC_OFFSET) == BUFFER_MAGIC
    }

    /// The generation field of a block that passes [`BufferHeader::plausible_start`], read
    /// without checking the CRC.
    pub fn generation_field(block: &[u8]) -> u64 {
        u64_at(block, GENERATION_OFFSET)
    }

    /// Whether the kind byte of a block's (unchecked) buffer header says group-owned (copies).
    pub fn kind_field_is_group(block: &[u8]) -> bool {
        block.len() > KIND_OFFSET && block[KIND_OFFSET] == SegmentKind::Group as u8
    }

    /// Whether a block's (unchecked) buffer header says format version 1 (no record directory).
    pub fn version_field_is_1(block: &[u8]) -> bool {
        block.len() >= VERSION_OFFSET + 2 && u16_at(block, VERSION_OFFSET) == 1
    }

    /// The buffer length field of a block that passes [`BufferHeader::plausible_start`], read
    /// without checking the CRC.
    pub fn buffer_len_field(block: &[u8]) -> usize {
        u32_at(block, BUFFER_LEN_OFFSET) as usize
    }

    /// Decodes and checks a buffer starting at `buf[0]` (which holds at least the whole
    /// buffer, or whatever remains of the segment). `None` if anything is off: wrong magic or
    /// version, impossible lengths, or a CRC mismatch (torn or damaged).
    pub fn decode_checked(buf: &[u8]) -> Option<BufferHeader> {
        let (header, version) = Self::decode_fields(buf)?;
        let (len, payload_len) = (header.buffer_len as usize, header.payload_len as usize);
        let stored_crc = u32_at(buf, CRC_OFFSET);
        (buffer_crc(&buf[..len], version, payload_len) == stored_crc).then_some(header)
    }

    /// The fields of a header kept apart from its buffer (a segment summary's copy), if they
    /// are consistent with each other and with a buffer of at most `available` bytes; the CRC
    /// unchecked (it covers the buffer, which is not here).
    pub fn decode_copy(header: &[u8], available: usize) -> Option<BufferHeader> {
        Self::decode_fields_within(header, available).map(|(h, _)| h)
    }

    /// The header's fields and format version, if they are consistent with each other and
    /// with `buf`; the CRC unchecked.
    fn decode_fields(buf: &[u8]) -> Option<(BufferHeader, u16)> {
        Self::decode_fields_within(buf, buf.len())
    }

    /// [`BufferHeader::decode_fields`] of a header whose buffer has `available` bytes.
    fn decode_fields_within(buf: &[u8], available: usize) -> Option<(BufferHeader, u16)> {
        if buf.len() < BUFFER_HEADER_SIZE || u32_at(buf, MAGIC_OFFSET) != BUFFER_MAGIC {
            return None;
        }
        let version = u16_at(buf, VERSION_OFFSET);
        if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&version) {
            return None;
        }
        let kind = match buf[KIND_OFFSET] {
            1 => SegmentKind::Mixed,
            2 => SegmentKind::Group,
            _ => return None,
        };
        let header = BufferHeader {
            kind,
            generation: u64_at(buf, GENERATION_OFFSET),
            lsn_first: u64_at(buf, LSN_FIRST_OFFSET),
            lsn_last: u64_at(buf, LSN_LAST_OFFSET),
            durable_floor: u64_at(buf, DURABLE_FLOOR_OFFSET),
            payload_len: u32_at(buf, PAYLOAD_LEN_OFFSET),
            record_count: u32_at(buf, RECORD_COUNT_OFFSET),
            group: u32_at(buf, GROUP_OFFSET),
            buffer_len: u32_at(buf, BUFFER_LEN_OFFSET),
            segment_index: u32_at(buf, SEGMENT_INDEX_OFFSET),
        };
        header
            .lengths_fit(version, available)
            .then_some((header, version))
    }

    /// Whether the header's lengths (and LSN range) are possible for a buffer of `version`
    /// with `available` bytes from its start.
    fn lengths_fit(&self, version: u16, available: usize) -> bool {
        let len = self.buffer_len as usize;
        let directory_room = if version >= 2 {
            DIRECTORY_TRAILER_SIZE
        } else {
            0
        };
        !(len < BLOCK_SIZE
            || !len.is_multiple_of(BLOCK_SIZE)
            || len > available
            || self.payload_len as usize > len - BUFFER_HEADER_SIZE - directory_room
            || self.lsn_first > self.lsn_last)
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
        let directory_len = checked_directory_len(&buf[..payload_end])?;
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
        (crc == u32_at(buf, CRC_OFFSET)).then_some(header)
    }

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
            if let Some(h) = Self::with_naming_fields_from_trailer(&buf[..end], t, segment) {
                return Some(h);
            }
        }
        None
    }

    /// The buffer `buf` (exactly its bytes) with the naming fields of its header rewritten
    /// from its directory `trailer` and the constants, for either segment kind, if that makes
    /// it pass its CRC.
    fn with_naming_fields_from_trailer(
        buf: &[u8],
        trailer: &[u8],
        segment: u32,
    ) -> Option<BufferHeader> {
        let end = buf.len();
        let mut copy = buf.to_vec();
        put_u32(&mut copy, MAGIC_OFFSET, BUFFER_MAGIC);
        put_u16(&mut copy, VERSION_OFFSET, FORMAT_VERSION);
        copy[FLAGS_OFFSET] = 0;
        put_u64(&mut copy, GENERATION_OFFSET, trailer_generation(trailer));
        put_u32(&mut copy, BUFFER_LEN_OFFSET, end as u32);
        put_u32(&mut copy, SEGMENT_INDEX_OFFSET, segment);
        for kind in [SegmentKind::Mixed, SegmentKind::Group] {
            copy[KIND_OFFSET] = kind as u8;
            if kind == SegmentKind::Mixed {
                // A mixed buffer's group field is always this (a group-owned one's is the
                // segment's group: left as it is).
                put_u32(&mut copy, GROUP_OFFSET, NO_GROUP);
            } else {
                put_u32(&mut copy, GROUP_OFFSET, u32_at(buf, GROUP_OFFSET));
            }
            if let Some(h) = BufferHeader::decode_checked(&copy) {
                return Some(h);
            }
        }
        None
    }
}

/// Bytes of directory entries the records in `payload` (a buffer's bytes up to its payload's
/// end, header included) need, if every record passes its own CRC.
fn checked_directory_len(payload: &[u8]) -> Option<usize> {
    let mut p = BUFFER_HEADER_SIZE;
    let mut directory_len = 0;
    while p < payload.len() {
        let h = RecordHeader::decode_checked(&payload[p..])?;
        directory_len += directory_entry_len(h.kind, h.key_len as usize, h.value_len as usize);
        p += h.total_len();
    }
    Some(directory_len)
}

/// The CRC of the buffer `buf` (exactly the buffer's bytes) in format `version`.
fn buffer_crc(buf: &[u8], version: u16, payload_len: usize) -> u32 {
    let mut h = Hasher::new();
    h.update(&buf[..CRC_OFFSET]);
    if version >= 2 {
        h.update(&buf[BUFFER_HEADER_SIZE..]);
    } else {
        h.update(&buf[BUFFER_HEADER_SIZE..BUFFER_HEADER_SIZE + payload_len]);
    }
    h.finalize()
}

/// Length on disk of a buffer whose records take `payload` bytes and their directory entries
/// `directory` bytes (see [`directory_entry_len`]).
pub const fn buffer_len_for(payload: usize, directory: usize) -> usize {
    align_up(
        BUFFER_HEADER_SIZE + payload + directory + DIRECTORY_TRAILER_SIZE,
        BLOCK_SIZE,
    )
}

#[cfg(test)]
mod tests {
    use super::super::*;

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
}
