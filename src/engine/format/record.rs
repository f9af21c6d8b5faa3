//! The record header: the 24 bytes before every record's key and value. A record carries its
//! own CRC, checked on every read, so that a damaged record fails its read instead of serving
//! wrong bytes; copies keep the bytes (and so the version and CRC) of the record they copy.
//!
//! # Record (24-byte header, then key, then value; little-endian)
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

use crc32fast::Hasher;

use super::{RecordKind, put_u16, put_u32, put_u64, u16_at, u32_at, u64_at};

pub const RECORD_HEADER_SIZE: usize = 24;

// Offsets of the header's fields, each following the one before (the table above).
/// The record's CRC; it covers every byte of the record after it.
const CRC_OFFSET: usize = 0;
const KIND_OFFSET: usize = CRC_OFFSET + 4;
const FLAGS_OFFSET: usize = KIND_OFFSET + 1;
const KEY_LEN_OFFSET: usize = FLAGS_OFFSET + 1;
const GROUP_OFFSET: usize = KEY_LEN_OFFSET + 2;
const VALUE_LEN_OFFSET: usize = GROUP_OFFSET + 4;
const VERSION_OFFSET: usize = VALUE_LEN_OFFSET + 4;
const _: () = assert!(VERSION_OFFSET + 8 == RECORD_HEADER_SIZE);
/// Where the bytes the record's CRC covers start.
const CRC_COVERS_FROM: usize = CRC_OFFSET + 4;

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
        out[KIND_OFFSET] = self.kind as u8;
        out[FLAGS_OFFSET] = 0;
        put_u16(out, KEY_LEN_OFFSET, self.key_len);
        put_u32(out, GROUP_OFFSET, self.group);
        put_u32(out, VALUE_LEN_OFFSET, self.value_len);
        put_u64(out, VERSION_OFFSET, self.version);
        let mut h = Hasher::new();
        h.update(&out[CRC_COVERS_FROM..RECORD_HEADER_SIZE]);
        h.combine(body_crc);
        put_u32(out, CRC_OFFSET, h.finalize());
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
            kind: RecordKind::from_u8(b[KIND_OFFSET])?,
            key_len: u16_at(b, KEY_LEN_OFFSET),
            group: u32_at(b, GROUP_OFFSET),
            value_len: u32_at(b, VALUE_LEN_OFFSET),
            version: u64_at(b, VERSION_OFFSET),
        })
    }

    /// Decodes a whole record and checks its own CRC (used on every read).
    pub fn decode_checked(b: &[u8]) -> Option<RecordHeader> {
        let h = Self::decode(b)?;
        let mut crc = Hasher::new();
        crc.update(&b[CRC_COVERS_FROM..h.total_len()]);
        (crc.finalize() == u32_at(b, CRC_OFFSET)).then_some(h)
    }
}

/// Rewrites the group of the encoded record `bytes` (header, key and value) and its CRC: a copy
/// that moves to another group says so, the rest of it unchanged (version included).
pub fn set_record_group(bytes: &mut [u8], group: u32) {
    put_u32(bytes, GROUP_OFFSET, group);
    let mut h = Hasher::new();
    h.update(&bytes[CRC_COVERS_FROM..]);
    put_u32(bytes, CRC_OFFSET, h.finalize());
}

/// The CRC state of a record's key and value, to be combined into its header later.
pub fn record_body_crc(key: &[u8], value: &[u8]) -> Hasher {
    let mut h = Hasher::new();
    h.update(key);
    h.update(value);
    h
}

#[cfg(test)]
mod tests {
    use super::super::*;

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
}
