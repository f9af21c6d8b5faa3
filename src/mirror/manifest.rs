//! The bucket's formats: object names and the manifest's bytes. Objects in a bucket outlive
//! every build that reads them, so each layout here carries a magic with its version and
//! changes only by a new version that older ones keep reading.
//!
//! # Object names (relative to the mount's `s3://BUCKET/PREFIX`)
//!
//! | name | holds |
//! |---|---|
//! | `seg/WWWWWWWWWWWWWWWW-SSSSSSSS-GGGGGGGGGGGGGGGG` | bytes `0..len` of segment `S`'s closed use of generation `G`, uploaded by writer `W` (hex) |
//! | `log/NNNNNNNNNNNNNNNN` | the `N`th upload of bytes of open segments, pieces end to end |
//! | `checkpoint/NNNNNNNNNNNNNNNN` | an index checkpoint file (`engine/checkpoint.rs`), numbered from the `log/` sequence |
//! | `manifest/NNNNNNNNNNNNNNNN` | the `N`th manifest: one durable image, made of pieces of the above |
//!
//! A name is never used for other bytes: generations are never handed out twice within a
//! store, and the writer in a segment object's name keeps apart two stores restored from one
//! image (each goes on from the same generations); log and manifest numbers only grow, and a
//! writer that finds one taken has been fenced. Numbers are fixed-width hex so that names sort
//! in order.
//!
//! # Manifest (little-endian)
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `LSMANI02` |
//! | 8 | 8 | manifest number |
//! | 16 | 8 | the writer: a random number the store that made it keeps (see `cli/remote.rs`) |
//! | 24 | 8 | durable LSN of the image |
//! | 32 | 8 | when it was made, milliseconds since the Unix epoch (what `--retain` counts from) |
//! | 40 | 4 | superblock length `S` |
//! | 44 | `S` | the store's superblock file |
//! | 44+S | 8 | the image's checkpoint: its `checkpoint/` object's number, 0 for none |
//! | 52+S | 8 | the checkpoint's length |
//! | 60+S | 4 | the checkpoint's CRC-32 |
//! | 64+S | 4 | piece count `P` |
//! | 68+S | 44 x `P` | pieces (below), by segment then offset |
//! | end-4 | 4 | CRC-32 of every byte before it |
//!
//! `LSMANI01` is the same without the checkpoint's 20 bytes (an image without a checkpoint).
//!
//! A piece: `segment` u32, `generation` u64, `offset` u32 (in the segment), `len` u32, `crc`
//! u32 (CRC-32 of the piece's bytes), `kind` u32 (0: a `seg/` object, 1: a `log/` object),
//! `number` u64 (for `seg/` the writer that uploaded it, for `log/` its number), `at` u64
//! (where the bytes start in the object). The pieces of one segment's use cover `0..len` without gaps, in order.

use crate::engine::image::SegmentExtent;

pub const MANIFEST_MAGIC: &[u8; 8] = b"LSMANI02";
/// The first version, still read: no checkpoint.
const MANIFEST_MAGIC_V1: &[u8; 8] = b"LSMANI01";
const PIECE_SIZE: usize = 44;

/// Pieces kept free in a manifest for the open segment uses, whose bytes may be in a piece per
/// round each (far more than the open uses of any store need).
const PIECES_FOR_OPEN_USES: u64 = 1 << 20;
/// Room a manifest keeps for its header and the store's superblock.
const MANIFEST_ROOM_BESIDE_PIECES: u64 = 1 << 20;

/// The largest store whose manifest fits in one object (`MAX_OBJECT_BYTES`): a closed segment
/// is one piece, and [`PIECES_FOR_OPEN_USES`] are kept for the open ones. With 1 MiB segments,
/// about 4.8 TiB. A larger store could not publish a single image.
pub fn largest_mirrored_capacity(segment_size: u64) -> u64 {
    let room = crate::object::MAX_OBJECT_BYTES as u64 - MANIFEST_ROOM_BESIDE_PIECES;
    (room / PIECE_SIZE as u64 - PIECES_FOR_OPEN_USES) * segment_size
}
const HEADER_SIZE: usize = 44;

pub const SEGMENT_PREFIX: &str = "seg/";

pub fn segment_object(writer: u64, segment: u32, generation: u64) -> String {
    format!("{SEGMENT_PREFIX}{writer:016x}-{segment:08x}-{generation:016x}")
}

pub fn log_object(number: u64) -> String {
    format!("log/{number:016x}")
}

pub const MANIFEST_PREFIX: &str = "manifest/";
pub const LOG_PREFIX: &str = "log/";
pub const CHECKPOINT_PREFIX: &str = "checkpoint/";

pub fn checkpoint_object(number: u64) -> String {
    format!("{CHECKPOINT_PREFIX}{number:016x}")
}

/// The checkpoint file of an image: the `checkpoint/` object `number`, `len` bytes whose
/// CRC-32 is `crc`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointRef {
    pub number: u64,
    pub len: u64,
    pub crc: u32,
}

impl CheckpointRef {
    pub fn object(&self) -> String {
        checkpoint_object(self.number)
    }
}

pub fn manifest_object(number: u64) -> String {
    format!("{MANIFEST_PREFIX}{number:016x}")
}

/// The number in a `manifest/` or `log/` name, if it is one of ours.
pub fn number_of(name: &str, prefix: &str) -> Option<u64> {
    let hex = name.strip_prefix(prefix)?;
    (hex.len() == 16)
        .then(|| u64::from_str_radix(hex, 16).ok())
        .flatten()
}

/// Where a piece's bytes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The `seg/` object of the piece's own segment use, uploaded by this writer.
    Segment(u64),
    /// The `log/` object of this number.
    Log(u64),
}

/// Bytes `offset..offset + len` of a segment's use, and where they are in the bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Piece {
    pub segment: u32,
    pub generation: u64,
    pub offset: u32,
    pub len: u32,
    pub crc: u32,
    pub source: Source,
    /// Where the bytes start in their object.
    pub at: u64,
}

impl Piece {
    pub fn object(&self) -> String {
        match self.source {
            Source::Segment(writer) => segment_object(writer, self.segment, self.generation),
            Source::Log(n) => log_object(n),
        }
    }

    /// The piece's bytes in `object` (the bytes of the object it names), if they are all there
    /// and pass their checksum.
    pub fn bytes_in<'a>(&self, object: &'a [u8]) -> Option<&'a [u8]> {
        let start = usize::try_from(self.at).ok()?;
        object
            .get(start..start.checked_add(self.len as usize)?)
            .filter(|b| crc32fast::hash(b) == self.crc)
    }
}

/// One durable image in the bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub number: u64,
    pub writer: u64,
    pub durable_lsn: u64,
    pub created_unix_ms: u64,
    pub superblock: Vec<u8>,
    /// The index checkpoint file as it was at the image's moment, if the store had one.
    pub checkpoint: Option<CheckpointRef>,
    pub pieces: Vec<Piece>,
}

impl Manifest {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(
            HEADER_SIZE + self.superblock.len() + 8 + PIECE_SIZE * self.pieces.len(),
        );
        b.extend_from_slice(MANIFEST_MAGIC);
        b.extend_from_slice(&self.number.to_le_bytes());
        b.extend_from_slice(&self.writer.to_le_bytes());
        b.extend_from_slice(&self.durable_lsn.to_le_bytes());
        b.extend_from_slice(&self.created_unix_ms.to_le_bytes());
        b.extend_from_slice(&(self.superblock.len() as u32).to_le_bytes());
        b.extend_from_slice(&self.superblock);
        let c = self.checkpoint.unwrap_or(CheckpointRef {
            number: 0,
            len: 0,
            crc: 0,
        });
        b.extend_from_slice(&c.number.to_le_bytes());
        b.extend_from_slice(&c.len.to_le_bytes());
        b.extend_from_slice(&c.crc.to_le_bytes());
        b.extend_from_slice(&(self.pieces.len() as u32).to_le_bytes());
        for p in &self.pieces {
            let (kind, number) = match p.source {
                Source::Segment(w) => (0u32, w),
                Source::Log(n) => (1, n),
            };
            b.extend_from_slice(&p.segment.to_le_bytes());
            b.extend_from_slice(&p.generation.to_le_bytes());
            b.extend_from_slice(&p.offset.to_le_bytes());
            b.extend_from_slice(&p.len.to_le_bytes());
            b.extend_from_slice(&p.crc.to_le_bytes());
            b.extend_from_slice(&kind.to_le_bytes());
            b.extend_from_slice(&number.to_le_bytes());
            b.extend_from_slice(&p.at.to_le_bytes());
        }
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<Manifest, String> {
        let version = match b.get(..8) {
            Some(m) if m == MANIFEST_MAGIC => 2,
            Some(m) if m == MANIFEST_MAGIC_V1 => 1,
            _ => return Err("not a manifest (bad magic or too short)".into()),
        };
        if b.len() < HEADER_SIZE + 8 {
            return Err("not a manifest (too short)".into());
        }
        let (body, crc) = b.split_at(b.len() - 4);
        if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().unwrap()) {
            return Err("the manifest's checksum fails".into());
        }
        let mut r = Reader { b: body, at: 8 };
        let number = r.u64()?;
        let writer = r.u64()?;
        let durable_lsn = r.u64()?;
        let created_unix_ms = r.u64()?;
        let sb_len = r.u32()? as usize;
        let superblock = r.bytes(sb_len)?.to_vec();
        let checkpoint = if version >= 2 {
            let c = CheckpointRef {
                number: r.u64()?,
                len: r.u64()?,
                crc: r.u32()?,
            };
            (c.number != 0).then_some(c)
        } else {
            None
        };
        let count = r.u32()? as usize;
        if body.len() - r.at != count * PIECE_SIZE {
            return Err(format!("the manifest's length does not fit {count} pieces"));
        }
        let mut pieces = Vec::with_capacity(count);
        for _ in 0..count {
            let segment = r.u32()?;
            let generation = r.u64()?;
            let offset = r.u32()?;
            let len = r.u32()?;
            let crc = r.u32()?;
            let kind = r.u32()?;
            let number = r.u64()?;
            let at = r.u64()?;
            let source = match kind {
                0 => Source::Segment(number),
                1 => Source::Log(number),
                k => return Err(format!("a piece of unknown kind {k}")),
            };
            pieces.push(Piece {
                segment,
                generation,
                offset,
                len,
                crc,
                source,
                at,
            });
        }
        let m = Manifest {
            number,
            writer,
            durable_lsn,
            created_unix_ms,
            superblock,
            checkpoint,
            pieces,
        };
        m.extents()?;
        Ok(m)
    }

    /// The image's segment uses, from its pieces; an error if a use's pieces leave a gap or
    /// overlap.
    pub fn extents(&self) -> Result<Vec<SegmentExtent>, String> {
        let mut out: Vec<SegmentExtent> = Vec::new();
        for p in &self.pieces {
            match out.last_mut() {
                Some(e) if e.segment == p.segment && e.generation == p.generation => {
                    if p.offset != e.len {
                        return Err(format!(
                            "segment {} generation {}: a piece at {} after bytes up to {}",
                            p.segment, p.generation, p.offset, e.len
                        ));
                    }
                    e.len += p.len;
                }
                last => {
                    if last.is_some_and(|e| e.segment >= p.segment) || p.offset != 0 {
                        return Err(format!(
                            "segment {} generation {}: pieces out of order",
                            p.segment, p.generation
                        ));
                    }
                    out.push(SegmentExtent {
                        segment: p.segment,
                        generation: p.generation,
                        len: p.len,
                        closed: matches!(p.source, Source::Segment(_)),
                    });
                }
            }
        }
        Ok(out)
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], String> {
        let s = self
            .b
            .get(self.at..self.at + n)
            .ok_or("the manifest is cut short")?;
        self.at += n;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.bytes(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.bytes(8)?.try_into().unwrap()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            number: 7,
            writer: 0x1234_5678_9abc,
            durable_lsn: 99,
            created_unix_ms: 1_800_000_000_000,
            superblock: vec![1, 2, 3],
            checkpoint: Some(CheckpointRef {
                number: 6,
                len: 70_000,
                crc: 14,
            }),
            pieces: vec![
                Piece {
                    segment: 2,
                    generation: 5,
                    offset: 0,
                    len: 4096,
                    crc: 11,
                    source: Source::Segment(0x1234_5678_9abc),
                    at: 0,
                },
                Piece {
                    segment: 3,
                    generation: 9,
                    offset: 0,
                    len: 8192,
                    crc: 12,
                    source: Source::Log(4),
                    at: 0,
                },
                Piece {
                    segment: 3,
                    generation: 9,
                    offset: 8192,
                    len: 4096,
                    crc: 13,
                    source: Source::Log(5),
                    at: 4096,
                },
            ],
        }
    }

    #[test]
    fn a_manifest_reads_back_as_written_and_any_flipped_bit_is_refused() {
        let m = sample();
        let b = m.encode();
        assert_eq!(Manifest::decode(&b).unwrap(), m);
        for i in 0..b.len() * 8 {
            let mut bad = b.clone();
            bad[i / 8] ^= 1 << (i % 8);
            assert!(Manifest::decode(&bad).is_err(), "bit {i} flipped was taken");
        }
        assert!(Manifest::decode(&b[..b.len() - 1]).is_err());
        let ext = m.extents().unwrap();
        assert_eq!(ext.len(), 2);
        assert_eq!(
            (ext[1].segment, ext[1].len, ext[1].closed),
            (3, 12288, false)
        );
    }

    /// A first-version manifest (no checkpoint) as that version wrote it: the version-2
    /// encoding less the checkpoint's 20 bytes, under the old magic and a CRC of its own.
    fn encode_v1(m: &Manifest) -> Vec<u8> {
        let v2 = Manifest {
            checkpoint: None,
            ..m.clone()
        }
        .encode();
        let at = HEADER_SIZE + m.superblock.len();
        let mut b = MANIFEST_MAGIC_V1.to_vec();
        b.extend_from_slice(&v2[8..at]);
        b.extend_from_slice(&v2[at + 20..v2.len() - 4]);
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    #[test]
    fn a_first_version_manifest_still_reads_as_an_image_without_a_checkpoint() {
        let m = sample();
        let read = Manifest::decode(&encode_v1(&m)).unwrap();
        assert_eq!(
            read,
            Manifest {
                checkpoint: None,
                ..m
            }
        );
    }

    #[test]
    fn pieces_with_a_gap_are_refused() {
        let mut m = sample();
        m.pieces[2].offset = 12288;
        assert!(Manifest::decode(&m.encode()).is_err());
    }

    #[test]
    fn names_sort_by_number_and_read_back() {
        assert!(log_object(9) < log_object(10));
        assert_eq!(number_of(&manifest_object(300), MANIFEST_PREFIX), Some(300));
        assert_eq!(number_of("manifest/12", MANIFEST_PREFIX), None);
        assert_eq!(
            segment_object(10, 1, 2),
            "seg/000000000000000a-00000001-0000000000000002"
        );
    }

    #[test]
    fn the_largest_mirrored_store_fills_one_object_with_room_to_spare() {
        let segment = 1u64 << 20;
        let largest = largest_mirrored_capacity(segment);
        let pieces = largest / segment + PIECES_FOR_OPEN_USES;
        let manifest = HEADER_SIZE as u64 + 64 + pieces * PIECE_SIZE as u64;
        assert!(
            manifest <= crate::object::MAX_OBJECT_BYTES as u64,
            "{manifest}"
        );
        // About 4.8 TiB with 1 MiB segments.
        assert!((4u64 << 40..5 << 40).contains(&largest), "{largest}");
    }
}
