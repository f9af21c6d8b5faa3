//! The bytes of the segment summaries: for each closed segment whose bytes were durable when it
//! was summarized, every buffer header and every record's header, key and range end, exactly as
//! the scan of that segment would read them. Recovery takes a segment's summary instead of
//! reading the segment (see `summaries.rs` for when a summary is written and when it is
//! trusted); this module only encodes and checks the bytes.
//!
//! # Files `summaries.a` and `summaries.b` (storage file numbers [`SUMMARY_FILES`])
//!
//! Two slots, written in turn: a new set of summaries goes to the slot that does not hold the
//! newest whole set, so that a power cut mid-write leaves the other one. A slot is taken only
//! if it is whole (its CRC); of two whole slots, the one with the higher sequence. The file may
//! be longer than its contents (allocated in whole blocks); the rest is ignored. Little-endian:
//!
//! | size | field |
//! |---|---|
//! | 8 | magic `LSSUMM01` |
//! | 8 | sequence (the slot written last has the highest) |
//! | 8 | length of the body that follows |
//! | 4 | summary count, then per summary (body): |
//! | 4 | . segment |
//! | 8 | . generation of the segment's use summarized |
//! | 4 | . buffer count, then per buffer, in the segment's order: |
//! | 4 | . . offset in the segment |
//! | 64 | . . buffer header, as on disk |
//! | 4 | . . record count, then per record, in the buffer's order: |
//! | 4 | . . . offset in the segment |
//! | 24 | . . . record header, as on disk |
//! | 2 + n | . . . key: length, bytes |
//! | 4 + n | . . . range end (range deletes; empty otherwise): length, bytes |
//! | 4 | . tail put count, then per put behind the use's end (never served; recovery notes them): |
//! | 2 + n | . . key: length, bytes |
//! | 8 | . . version |
//! | 4 | CRC-32 of every byte before it |

use crc32fast::Hasher;

use super::{BUFFER_HEADER_SIZE, MAX_SEGMENT_FILES, RECORD_HEADER_SIZE};

/// The two slots' file numbers in `Storage`: numbers no segment file (below
/// [`MAX_SEGMENT_FILES`]) nor the sync table has. `FileStorage` names them [`SUMMARY_NAMES`].
pub const SUMMARY_FILES: [u32; 2] = [MAX_SEGMENT_FILES + 1, MAX_SEGMENT_FILES + 2];
/// The slots' file names in a store directory.
pub const SUMMARY_NAMES: [&str; 2] = ["summaries.a", "summaries.b"];
pub const SUMMARY_MAGIC: &[u8; 8] = b"LSSUMM01";
/// Magic, sequence and body length.
pub const SLOT_HEADER_SIZE: usize = 24;
const CRC_SIZE: usize = 4;

/// A record as the scan of its buffer reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SummaryRecord {
    pub at: u32,
    pub header: [u8; RECORD_HEADER_SIZE],
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
}

/// A buffer of a summarized segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SummaryBuffer {
    pub offset: u32,
    pub header: [u8; BUFFER_HEADER_SIZE],
    pub records: Vec<SummaryRecord>,
}

/// One use of a segment, every buffer of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentSummary {
    pub segment: u32,
    pub generation: u64,
    pub buffers: Vec<SummaryBuffer>,
    /// (key, version) of the puts the scan reads behind the use's end (torn, or of an earlier
    /// use): never served, but on disk, so recovery notes them (see `tombstones.rs`).
    pub tail_puts: Vec<(Vec<u8>, u64)>,
}

impl SegmentSummary {
    /// Where the summarized use ends: the end of its last buffer.
    pub fn end(&self) -> u32 {
        self.buffers.last().map_or(0, |b| {
            b.offset + super::BufferHeader::buffer_len_field(&b.header) as u32
        })
    }
}

/// Bytes a buffer takes in a slot, its records apart.
pub const BUFFER_ENCODED_LEN: usize = 4 + BUFFER_HEADER_SIZE + 4;

/// Bytes a record with a key of `key_len` bytes and a range end of `end_len` takes in a slot.
pub const fn record_encoded_len(key_len: usize, end_len: usize) -> usize {
    4 + RECORD_HEADER_SIZE + 2 + key_len + 4 + end_len
}

impl SummaryBuffer {
    /// Bytes it takes in a slot.
    pub fn encoded_len(&self) -> usize {
        let records: usize = (self.records.iter())
            .map(|r| record_encoded_len(r.key.len(), r.range_end.len()))
            .sum();
        BUFFER_ENCODED_LEN + records
    }
}

/// The bytes of a slot holding `summaries`, written with sequence `sequence`.
pub fn encode(sequence: u64, summaries: &[&SegmentSummary]) -> Vec<u8> {
    // Written in place and sized first: the set is rewritten whole at each write-out, and
    // growing a fresh buffer (then copying it behind the header) cost the background thread
    // page faults for every byte of it.
    let buffers: usize = (summaries.iter())
        .flat_map(|s| &s.buffers)
        .map(SummaryBuffer::encoded_len)
        .sum();
    let mut out =
        Vec::with_capacity(SLOT_HEADER_SIZE + 4 + 16 * summaries.len() + buffers + CRC_SIZE);
    out.extend_from_slice(SUMMARY_MAGIC);
    out.extend_from_slice(&sequence.to_le_bytes());
    out.extend_from_slice(&[0; 8]); // the body's length, once known
    out.extend_from_slice(&(summaries.len() as u32).to_le_bytes());
    for s in summaries {
        out.extend_from_slice(&s.segment.to_le_bytes());
        out.extend_from_slice(&s.generation.to_le_bytes());
        out.extend_from_slice(&(s.buffers.len() as u32).to_le_bytes());
        for b in &s.buffers {
            out.extend_from_slice(&b.offset.to_le_bytes());
            out.extend_from_slice(&b.header);
            out.extend_from_slice(&(b.records.len() as u32).to_le_bytes());
            for r in &b.records {
                out.extend_from_slice(&r.at.to_le_bytes());
                out.extend_from_slice(&r.header);
                out.extend_from_slice(&(r.key.len() as u16).to_le_bytes());
                out.extend_from_slice(&r.key);
                out.extend_from_slice(&(r.range_end.len() as u32).to_le_bytes());
                out.extend_from_slice(&r.range_end);
            }
        }
        out.extend_from_slice(&(s.tail_puts.len() as u32).to_le_bytes());
        for (key, version) in &s.tail_puts {
            out.extend_from_slice(&(key.len() as u16).to_le_bytes());
            out.extend_from_slice(key);
            out.extend_from_slice(&version.to_le_bytes());
        }
    }
    let body_len = (out.len() - SLOT_HEADER_SIZE) as u64;
    out[16..SLOT_HEADER_SIZE].copy_from_slice(&body_len.to_le_bytes());
    let mut crc = Hasher::new();
    crc.update(&out);
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out
}

/// The sequence and body length a slot's first bytes announce, if they start a slot.
pub fn decode_slot_header(head: &[u8]) -> Option<(u64, u64)> {
    if head.len() < SLOT_HEADER_SIZE || &head[..8] != SUMMARY_MAGIC {
        return None;
    }
    let sequence = u64::from_le_bytes(head[8..16].try_into().ok()?);
    let body_len = u64::from_le_bytes(head[16..24].try_into().ok()?);
    Some((sequence, body_len))
}

/// Bytes a slot with a body of `body_len` bytes takes, CRC included.
pub fn slot_len(body_len: u64) -> u64 {
    SLOT_HEADER_SIZE as u64 + body_len + CRC_SIZE as u64
}

/// The sequence and summaries of a whole slot (`data`: exactly [`slot_len`] bytes); `None` if
/// anything is off.
pub fn decode(data: &[u8]) -> Option<(u64, Vec<SegmentSummary>)> {
    let (sequence, body_len) = decode_slot_header(data)?;
    if data.len() as u64 != slot_len(body_len) {
        return None;
    }
    let crc_at = data.len() - CRC_SIZE;
    let mut crc = Hasher::new();
    crc.update(&data[..crc_at]);
    if crc.finalize().to_le_bytes() != data[crc_at..] {
        return None;
    }
    let mut r = Reader {
        data: &data[SLOT_HEADER_SIZE..crc_at],
    };
    let count = r.u32()?;
    let mut summaries = Vec::new();
    for _ in 0..count {
        let segment = r.u32()?;
        let generation = r.u64()?;
        let buffer_count = r.u32()?;
        let mut buffers = Vec::new();
        for _ in 0..buffer_count {
            let offset = r.u32()?;
            let header = r.array::<BUFFER_HEADER_SIZE>()?;
            let record_count = r.u32()?;
            let mut records = Vec::new();
            for _ in 0..record_count {
                let at = r.u32()?;
                let header = r.array::<RECORD_HEADER_SIZE>()?;
                let key_len = r.u16()? as usize;
                let key = r.bytes(key_len)?.to_vec();
                let end_len = r.u32()? as usize;
                let range_end = r.bytes(end_len)?.to_vec();
                records.push(SummaryRecord {
                    at,
                    header,
                    key,
                    range_end,
                });
            }
            buffers.push(SummaryBuffer {
                offset,
                header,
                records,
            });
        }
        let tail_count = r.u32()?;
        let mut tail_puts = Vec::new();
        for _ in 0..tail_count {
            let key_len = r.u16()? as usize;
            let key = r.bytes(key_len)?.to_vec();
            tail_puts.push((key, r.u64()?));
        }
        summaries.push(SegmentSummary {
            segment,
            generation,
            buffers,
            tail_puts,
        });
    }
    r.data.is_empty().then_some((sequence, summaries))
}

/// Reads fields front to back; `None` once the bytes run out.
struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.data.len() < n {
            return None;
        }
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        Some(head)
    }
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.bytes(N)?.try_into().ok()
    }
    fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_le_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The buffer header's length field (see `buffer.rs`).
    const BUFFER_LEN_FIELD: usize = 52;

    fn sample() -> SegmentSummary {
        let mut header = [7u8; BUFFER_HEADER_SIZE];
        header[BUFFER_LEN_FIELD..BUFFER_LEN_FIELD + 4].copy_from_slice(&8192u32.to_le_bytes());
        SegmentSummary {
            segment: 3,
            generation: 9,
            buffers: vec![SummaryBuffer {
                offset: 4096,
                header,
                records: vec![SummaryRecord {
                    at: 4160,
                    header: [1u8; RECORD_HEADER_SIZE],
                    key: b"key".to_vec(),
                    range_end: b"end".to_vec(),
                }],
            }],
            tail_puts: vec![(b"old".to_vec(), 77)],
        }
    }

    #[test]
    fn a_slot_reads_back_as_written_and_any_damage_is_refused() {
        let s = sample();
        assert_eq!(s.end(), 4096 + 8192);
        let bytes = encode(5, &[&s]);
        assert_eq!(decode(&bytes), Some((5, vec![s.clone()])));
        for at in [0, 9, 17, SLOT_HEADER_SIZE + 2, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x10;
            assert_eq!(decode(&bad), None, "damage at {at} taken");
        }
        assert_eq!(decode(&bytes[..bytes.len() - 1]), None);
    }
}
