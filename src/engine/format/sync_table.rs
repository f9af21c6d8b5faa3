//! The bytes of the segment sync table (`synced.tbl`): one checked entry per segment, each saying
//! how far the segment's current use is known synced. An entry is all or nothing (its CRC also
//! covers its slot), so a torn, damaged, never written or misplaced entry proves nothing. What an
//! entry means, and when one is written, is `synctable.rs`'s.
//!
//! # File `synced.tbl` (storage file number [`SYNC_TABLE_FILE`])
//!
//! `segment_count` entries of 16 bytes, entry `s` for segment `s` at byte `16 * s`, the file
//! allocated in whole 4 KiB blocks (zeros past the last entry). 32 entries per 512-byte sector:
//! an entry never straddles a sector, and the table is written in whole sectors. Little-endian:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | generation of the segment's use the entry is about |
//! | 8 | 4 | synced end: every byte of that use below it was synced (a multiple of 4 KiB, > 0) |
//! | 12 | 4 | CRC-32 of `LSST`, the segment index (u32), and bytes 0..12 |

use super::{BLOCK_SIZE, MAX_SEGMENT_FILES, align_up, put_u32, put_u64, u32_at, u64_at};

/// The table's file number in `Storage`: one no segment file can have (segment files are
/// numbered below [`MAX_SEGMENT_FILES`]). `FileStorage` names it [`SYNC_TABLE_NAME`].
pub const SYNC_TABLE_FILE: u32 = MAX_SEGMENT_FILES;
/// The table's file name in a store directory.
pub const SYNC_TABLE_NAME: &str = "synced.tbl";
pub const ENTRY_SIZE: usize = 16;
const ENTRY_MAGIC: &[u8; 4] = b"LSST";

// Offsets of an entry's fields, each following the one before (the table above).
const GENERATION_OFFSET: usize = 0;
const SYNCED_END_OFFSET: usize = GENERATION_OFFSET + 8;
/// The entry's CRC; the entry bytes before it are covered (after the magic and the slot).
const CRC_OFFSET: usize = SYNCED_END_OFFSET + 4;
const _: () = assert!(CRC_OFFSET + 4 == ENTRY_SIZE);

/// What an entry proves: every byte of the segment's use of `generation` below `synced_end`
/// was synced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Proof {
    pub generation: u64,
    pub synced_end: u32,
}

/// Bytes of the table file for `segment_count` segments.
pub fn table_len(segment_count: u32) -> u64 {
    align_up(segment_count as usize * ENTRY_SIZE, BLOCK_SIZE).max(BLOCK_SIZE) as u64
}

fn entry_crc(segment: u32, b: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(ENTRY_MAGIC);
    h.update(&segment.to_le_bytes());
    h.update(&b[..CRC_OFFSET]);
    h.finalize()
}

pub fn encode_entry(segment: u32, proof: Proof) -> [u8; ENTRY_SIZE] {
    let mut b = [0u8; ENTRY_SIZE];
    put_u64(&mut b, GENERATION_OFFSET, proof.generation);
    put_u32(&mut b, SYNCED_END_OFFSET, proof.synced_end);
    let crc = entry_crc(segment, &b);
    put_u32(&mut b, CRC_OFFSET, crc);
    b
}

/// The entry of `segment` in `b` (its 16 bytes), if it checks out.
pub fn decode_entry(segment: u32, b: &[u8]) -> Option<Proof> {
    if b.len() < ENTRY_SIZE {
        return None;
    }
    if u32_at(b, CRC_OFFSET) != entry_crc(segment, b) {
        return None;
    }
    let proof = Proof {
        generation: u64_at(b, GENERATION_OFFSET),
        synced_end: u32_at(b, SYNCED_END_OFFSET),
    };
    (proof.synced_end > 0 && (proof.synced_end as usize).is_multiple_of(BLOCK_SIZE))
        .then_some(proof)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_garbage_is_no_entry() {
        let p = Proof {
            generation: 77,
            synced_end: 3 * BLOCK_SIZE as u32,
        };
        let e = encode_entry(5, p);
        assert_eq!(decode_entry(5, &e), Some(p));
        assert_eq!(
            decode_entry(6, &e),
            None,
            "an entry written for another slot"
        );
        assert_eq!(decode_entry(5, &[0u8; ENTRY_SIZE]), None, "never written");
        for byte in 0..ENTRY_SIZE {
            let mut d = e;
            d[byte] ^= 0x10;
            assert_eq!(decode_entry(5, &d), None, "damaged byte {byte}");
        }
    }
}
