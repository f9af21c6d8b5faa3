//! The bytes of the index checkpoint: the index and the segments' states as a clean close left
//! them, in one file checked whole by a trailing CRC (any damage: the checkpoint is not used and
//! the open scans every segment). Its fields are in the order below, so it is written and read front to back;
//! this module checks only that the bytes are a well-formed checkpoint (keys sorted and unique,
//! locations within the segments, nothing left over). Whether a checkpoint belongs to the store
//! as it is now, and when one is written, is `checkpoint.rs`'s.
//!
//! # File `checkpoint` (little-endian, fields in this order)
//!
//! | size | field |
//! |---|---|
//! | 8 | magic `LSCKPT03` (02 was trusted by file fingerprints and had no first headers; 01 held 64-bit note hashes) |
//! | 4 + n | superblock: length, bytes |
//! | 4 + 4 n | tracked tombstone prefix lengths: count, one u32 each |
//! | 8 | last LSN |
//! | 8 | highest durable floor any buffer of a segment in use records |
//! | 4 | the segment holding a buffer that records it (`u32::MAX`: none known) |
//! | 4 | segment count, then per segment: |
//! | 1 | . state: 0 free, 1 closed, 2 to be read (its records not all in the checkpoint's terms) |
//! | 64 | . closed only: the header of its first buffer, as on disk |
//! | 1 | . kind: 1 mixed, 2 group-owned |
//! | 4 | . group |
//! | 8 | . generation |
//! | 4 | . used bytes |
//! | 8 | . max LSN |
//! | 4 + 16 n | . put notes: count, two u64 each (see `PutNotes::items`) |
//! | 8 | point count, then per point (keys sorted, unique): |
//! | 4 + n | . key: length, bytes |
//! | 12 | . location: segment, offset, length (u32 each) |
//! | 8 | . version |
//! | 4 | . group |
//! | 1 | . tombstone (0 or 1) |
//! | 4 | range delete count, then per range: |
//! | 4 + n | . start: length, bytes |
//! | 4 + n | . end: length, bytes |
//! | 8 | . version |
//! | 12 | . location: segment, offset, length (u32 each) |
//! | 4 | . group |
//! | 4 | CRC-32 of every byte before it |

use crc32fast::Hasher;

use super::super::index::{Entry, Location, RangeDelete};
use super::{BUFFER_HEADER_SIZE, SegmentKind};

pub const CHECKPOINT_MAGIC: &[u8; 8] = b"LSCKPT03";
const CRC_SIZE: usize = 4;
/// Fewest bytes a point takes (an empty key): bounds what a count can make us allocate.
const MIN_POINT_SIZE: usize = 4 + 12 + 8 + 4 + 1;
/// Fewest bytes a range delete takes (empty start and end).
const MIN_RANGE_SIZE: usize = 4 + 4 + 8 + 12 + 4;
/// Bytes of one put note.
const NOTE_SIZE: usize = 16;

/// What a checkpoint says before its segments: which store and tombstone tracking it was taken
/// of, the last LSN, and where the highest durable floor on disk lies.
#[derive(Debug, PartialEq, Eq)]
pub struct Preamble<'a> {
    pub superblock: &'a [u8],
    pub prefix_lengths: Vec<usize>,
    pub last_lsn: u64,
    pub floor: u64,
    pub floor_segment: Option<u32>,
}

/// A segment's state in a checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentMark {
    Free,
    /// In use, its first buffer's header as on disk: while that header is there, the segment
    /// holds what the checkpoint took of it.
    Closed([u8; BUFFER_HEADER_SIZE]),
    /// In use, but the next recovery reads it: it holds records the checkpoint's index does
    /// not name that a scan would weigh (copies of a record the index names elsewhere).
    Read,
}

/// A segment as a checkpoint records it.
#[derive(Debug, PartialEq, Eq)]
pub struct SegmentImage {
    /// Only `Closed` gives the other fields a meaning.
    pub mark: SegmentMark,
    pub kind: SegmentKind,
    pub group: u32,
    pub generation: u64,
    pub used: u32,
    pub max_lsn: u64,
    /// The segment's put notes (`PutNotes::items`).
    pub notes: Vec<(u64, u64)>,
}

/// A whole, well-formed checkpoint.
pub struct Image<'a> {
    pub preamble: Preamble<'a>,
    pub segments: Vec<SegmentImage>,
    /// Sorted by key, keys unique.
    pub points: Vec<(Box<[u8]>, Entry)>,
    pub ranges: Vec<RangeDelete>,
}

/// The checkpoint of these parts, CRC included: `points` in key order, each key in parts
/// (concatenated, they are the key).
pub fn encode<'a>(
    preamble: &Preamble,
    segments: &[SegmentImage],
    points: impl Iterator<Item = ([&'a [u8]; 2], Entry)> + Clone,
    ranges: &[RangeDelete],
) -> Vec<u8> {
    // Sized first (a pass over the points costs less than growing a buffer of tens of MiB by
    // doubling: each growth copies it and faults in fresh pages).
    let (count, points_len) = (points.clone()).fold((0u64, 0usize), |(n, len), ([a, b], _)| {
        (n + 1, len + POINT_FIXED_LEN + a.len() + b.len())
    });
    let mut out = Vec::with_capacity(4096 + segments.len() * 64 + points_len + ranges.len() * 64);
    put_preamble(&mut out, preamble);
    out.extend_from_slice(&(segments.len() as u32).to_le_bytes());
    for s in segments {
        put_segment(&mut out, s);
    }
    out.extend_from_slice(&count.to_le_bytes());
    let mut previous: Option<[&[u8]; 2]> = None;
    for (key, e) in points {
        debug_assert!(
            previous.is_none_or(|p| p.concat() < key.concat()),
            "checkpoint points out of key order"
        );
        previous = Some(key);
        put_point(&mut out, key[0], key[1], &e);
    }
    out.extend_from_slice(&(ranges.len() as u32).to_le_bytes());
    for r in ranges {
        put_range(&mut out, r);
    }
    let mut crc = Hasher::new();
    crc.update(&out);
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out
}

fn put_preamble(out: &mut Vec<u8>, p: &Preamble) {
    out.extend_from_slice(CHECKPOINT_MAGIC);
    put_bytes(out, p.superblock);
    out.extend_from_slice(&(p.prefix_lengths.len() as u32).to_le_bytes());
    for &n in &p.prefix_lengths {
        out.extend_from_slice(&(n as u32).to_le_bytes());
    }
    out.extend_from_slice(&p.last_lsn.to_le_bytes());
    out.extend_from_slice(&p.floor.to_le_bytes());
    out.extend_from_slice(&p.floor_segment.unwrap_or(u32::MAX).to_le_bytes());
}

fn put_segment(out: &mut Vec<u8>, s: &SegmentImage) {
    match &s.mark {
        SegmentMark::Free => out.push(0),
        SegmentMark::Closed(header) => {
            out.push(1);
            out.extend_from_slice(header);
        }
        SegmentMark::Read => out.push(2),
    }
    out.push(match s.kind {
        SegmentKind::Mixed => 1,
        SegmentKind::Group => 2,
    });
    out.extend_from_slice(&s.group.to_le_bytes());
    out.extend_from_slice(&s.generation.to_le_bytes());
    out.extend_from_slice(&s.used.to_le_bytes());
    out.extend_from_slice(&s.max_lsn.to_le_bytes());
    out.extend_from_slice(&(s.notes.len() as u32).to_le_bytes());
    for (h, v) in &s.notes {
        out.extend_from_slice(&h.to_le_bytes());
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// Bytes a point takes besides its key: the key's length, location, version, group, flag.
const POINT_FIXED_LEN: usize = 4 + 12 + 8 + 4 + 1;

/// A point whose key is `key_start` followed by `key_rest`.
fn put_point(out: &mut Vec<u8>, key_start: &[u8], key_rest: &[u8], e: &Entry) {
    out.extend_from_slice(&((key_start.len() + key_rest.len()) as u32).to_le_bytes());
    out.extend_from_slice(key_start);
    out.extend_from_slice(key_rest);
    put_location(out, e.location);
    out.extend_from_slice(&e.version.to_le_bytes());
    out.extend_from_slice(&e.group.to_le_bytes());
    out.push(e.tombstone as u8);
}

fn put_range(out: &mut Vec<u8>, r: &RangeDelete) {
    put_bytes(out, &r.start);
    put_bytes(out, &r.end);
    out.extend_from_slice(&r.version.to_le_bytes());
    put_location(out, r.location);
    out.extend_from_slice(&r.group.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

fn put_location(out: &mut Vec<u8>, l: Location) {
    out.extend_from_slice(&l.segment.to_le_bytes());
    out.extend_from_slice(&l.offset.to_le_bytes());
    out.extend_from_slice(&l.len.to_le_bytes());
}

/// The checkpoint in `data`, if it is whole (magic, CRC) and well-formed.
pub fn decode(data: &[u8]) -> Option<Image<'_>> {
    if data.len() < CHECKPOINT_MAGIC.len() + CRC_SIZE
        || &data[..CHECKPOINT_MAGIC.len()] != CHECKPOINT_MAGIC
    {
        return None;
    }
    let (body, crc) = data.split_at(data.len() - CRC_SIZE);
    let mut h = Hasher::new();
    h.update(body);
    if h.finalize() != u32::from_le_bytes(crc.try_into().ok()?) {
        return None;
    }
    let mut r = Reader {
        b: body,
        at: CHECKPOINT_MAGIC.len(),
    };
    let preamble = r.preamble()?;
    let segment_count = r.u32()? as usize;
    let mut segments = Vec::with_capacity(segment_count.min(1 << 24));
    for _ in 0..segment_count {
        segments.push(r.segment()?);
    }
    let points = r.points(segment_count)?;
    let ranges = r.ranges(segment_count)?;
    (r.left() == 0).then_some(Image {
        preamble,
        segments,
        points,
        ranges,
    })
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }
    fn left(&self) -> usize {
        self.b.len() - self.at
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn location(&mut self) -> Option<Location> {
        Some(Location {
            segment: self.u32()?,
            offset: self.u32()?,
            len: self.u32()?,
        })
    }

    fn preamble(&mut self) -> Option<Preamble<'a>> {
        let superblock = self.bytes()?;
        let n = self.u32()? as usize;
        let mut prefix_lengths = Vec::with_capacity(n.min(64));
        for _ in 0..n {
            prefix_lengths.push(self.u32()? as usize);
        }
        Some(Preamble {
            superblock,
            prefix_lengths,
            last_lsn: self.u64()?,
            floor: self.u64()?,
            floor_segment: Some(self.u32()?).filter(|&s| s != u32::MAX),
        })
    }

    fn segment(&mut self) -> Option<SegmentImage> {
        let mark = match self.u8()? {
            0 => SegmentMark::Free,
            1 => SegmentMark::Closed(self.take(BUFFER_HEADER_SIZE)?.try_into().ok()?),
            2 => SegmentMark::Read,
            _ => return None,
        };
        let kind = match self.u8()? {
            1 => SegmentKind::Mixed,
            2 => SegmentKind::Group,
            _ => return None,
        };
        let group = self.u32()?;
        let generation = self.u64()?;
        let used = self.u32()?;
        let max_lsn = self.u64()?;
        let count = self.u32()? as usize;
        let mut notes = Vec::with_capacity(count.min(self.left() / NOTE_SIZE));
        for _ in 0..count {
            notes.push((self.u64()?, self.u64()?));
        }
        Some(SegmentImage {
            mark,
            kind,
            group,
            generation,
            used,
            max_lsn,
            notes,
        })
    }

    /// The points, sorted and unique, each in one of `segment_count` segments.
    fn points(&mut self, segment_count: usize) -> Option<Vec<(Box<[u8]>, Entry)>> {
        let count = self.u64()? as usize;
        let mut points: Vec<(Box<[u8]>, Entry)> =
            Vec::with_capacity(count.min(self.left() / MIN_POINT_SIZE));
        for _ in 0..count {
            let key: Box<[u8]> = self.bytes()?.into();
            let location = self.location()?;
            let version = self.u64()?;
            let group = self.u32()?;
            let tombstone = self.u8()? != 0;
            if points.last().is_some_and(|(k, _)| *k >= key)
                || location.segment as usize >= segment_count
            {
                return None; // keys must be sorted and unique
            }
            points.push((
                key,
                Entry {
                    location,
                    version,
                    group,
                    tombstone,
                },
            ));
        }
        Some(points)
    }

    /// The range deletes, each in one of `segment_count` segments.
    fn ranges(&mut self, segment_count: usize) -> Option<Vec<RangeDelete>> {
        let count = self.u32()? as usize;
        let mut ranges = Vec::with_capacity(count.min(self.left() / MIN_RANGE_SIZE));
        for _ in 0..count {
            let start = self.bytes()?.to_vec();
            let end = self.bytes()?.to_vec();
            let version = self.u64()?;
            let location = self.location()?;
            let group = self.u32()?;
            if location.segment as usize >= segment_count {
                return None;
            }
            ranges.push(RangeDelete {
                start,
                end,
                version,
                location,
                group,
            });
        }
        Some(ranges)
    }
}
