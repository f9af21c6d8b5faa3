//! The superblock: the store's geometry and the generation high-water mark, one 64-byte file
//! replaced atomically. It is checked whole (magic, CRC, version, possible geometry) before a
//! store is opened, so that a damaged or foreign superblock refuses the store with a message
//! instead of opening it with a wrong geometry.
//!
//! # Superblock (64 bytes, little-endian)
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `LOGSTORS` |
//! | 8 | 2 | format version |
//! | 10 | 2 | reserved |
//! | 12 | 4 | segment size |
//! | 16 | 4 | segments per file |
//! | 20 | 4 | segment count |
//! | 24 | 8 | generation high-water mark: no generation at or above it was ever handed out |
//! | 32 | 8 | (version 3) frees clear directories from this generation on (see the field) |
//! | 40 | 20 | reserved (zero) |
//! | 60 | 4 | CRC-32 of bytes 0..60 |

use super::{
    MAX_SEGMENT_FILES, MAX_SEGMENT_SIZE, MIN_SEGMENT_SIZE, OLDEST_FORMAT_VERSION,
    SUPERBLOCK_VERSION, put_u16, put_u32, put_u64, u16_at, u32_at, u64_at,
};

pub const SUPERBLOCK_MAGIC: u64 = u64::from_le_bytes(*b"LOGSTORS");
pub const SUPERBLOCK_SIZE: usize = 64;

// Offsets of the fields, each following the one before (the table above).
const MAGIC_OFFSET: usize = 0;
const VERSION_OFFSET: usize = MAGIC_OFFSET + 8;
const RESERVED_OFFSET: usize = VERSION_OFFSET + 2;
const SEGMENT_SIZE_OFFSET: usize = RESERVED_OFFSET + 2;
const SEGMENTS_PER_FILE_OFFSET: usize = SEGMENT_SIZE_OFFSET + 4;
const SEGMENT_COUNT_OFFSET: usize = SEGMENTS_PER_FILE_OFFSET + 4;
const HIGH_WATER_OFFSET: usize = SEGMENT_COUNT_OFFSET + 4;
const FREES_CLEAR_OFFSET: usize = HIGH_WATER_OFFSET + 8;
const RESERVED_TAIL_OFFSET: usize = FREES_CLEAR_OFFSET + 8;
/// The CRC; every byte before it is covered.
const CRC_OFFSET: usize = RESERVED_TAIL_OFFSET + 20;
const _: () = assert!(CRC_OFFSET + 4 == SUPERBLOCK_SIZE);

/// The store's geometry and the generation high-water mark.
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
    /// The format version an encoded superblock claims, whether or not the rest of it is
    /// valid; `None` if it is too short to hold one.
    pub fn version_field(bytes: &[u8]) -> Option<u16> {
        (bytes.len() >= VERSION_OFFSET + 2).then(|| u16_at(bytes, VERSION_OFFSET))
    }

    pub fn encode(&self) -> [u8; SUPERBLOCK_SIZE] {
        let mut b = [0u8; SUPERBLOCK_SIZE];
        put_u64(&mut b, MAGIC_OFFSET, SUPERBLOCK_MAGIC);
        put_u16(&mut b, VERSION_OFFSET, SUPERBLOCK_VERSION);
        put_u32(&mut b, SEGMENT_SIZE_OFFSET, self.segment_size);
        put_u32(&mut b, SEGMENTS_PER_FILE_OFFSET, self.segments_per_file);
        put_u32(&mut b, SEGMENT_COUNT_OFFSET, self.segment_count);
        put_u64(&mut b, HIGH_WATER_OFFSET, self.generation_high_water);
        put_u64(
            &mut b,
            FREES_CLEAR_OFFSET,
            self.frees_clear_directories_from,
        );
        let crc = crc32fast::hash(&b[..CRC_OFFSET]);
        put_u32(&mut b, CRC_OFFSET, crc);
        b
    }

    pub fn decode(b: &[u8]) -> Result<Superblock, String> {
        let version = Self::check_whole(b)?;
        let sb = Superblock {
            segment_size: u32_at(b, SEGMENT_SIZE_OFFSET),
            segments_per_file: u32_at(b, SEGMENTS_PER_FILE_OFFSET),
            segment_count: u32_at(b, SEGMENT_COUNT_OFFSET),
            generation_high_water: u64_at(b, HIGH_WATER_OFFSET),
            frees_clear_directories_from: if version >= 3 {
                u64_at(b, FREES_CLEAR_OFFSET)
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

    /// The format version of the superblock `b`, if it is one this build reads, whole: its
    /// size, magic and CRC.
    fn check_whole(b: &[u8]) -> Result<u16, String> {
        if b.len() != SUPERBLOCK_SIZE {
            return Err(format!(
                "superblock is {} bytes, expected {SUPERBLOCK_SIZE}",
                b.len()
            ));
        }
        if u64_at(b, MAGIC_OFFSET) != SUPERBLOCK_MAGIC {
            return Err("superblock has the wrong magic number".into());
        }
        if crc32fast::hash(&b[..CRC_OFFSET]) != u32_at(b, CRC_OFFSET) {
            return Err("superblock checksum mismatch".into());
        }
        let version = u16_at(b, VERSION_OFFSET);
        if !(OLDEST_FORMAT_VERSION..=SUPERBLOCK_VERSION).contains(&version) {
            return Err(format!(
                "format version {version}, this build reads {OLDEST_FORMAT_VERSION} to \
                 {SUPERBLOCK_VERSION}"
            ));
        }
        Ok(version)
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
