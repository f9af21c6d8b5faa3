//! Buffer validation: a buffer is taken whole only if it passes its CRC, or if the damage is
//! confined to bytes the rest of it determines exactly (then it is repaired to the buffer as it
//! was sealed). Its records are read in order; inside a buffer that passes its CRC a record that
//! does not decode violates the format, and a record's own CRC is checked only when fsck asks.

use super::super::api::{EngineError, Result};
use super::super::format::{
    BUFFER_HEADER_SIZE, BufferHeader, RECORD_HEADER_SIZE, RecordHeader, RecordKind,
};
use super::super::storage::SECTOR_SIZE;
use super::stretch::StretchRecord;

/// The buffer at `buf[0]`, checked, or repaired if only bytes that the rest of it determines
/// are damaged: a field naming it ([`BufferHeader::decode_repaired`]), or its padding or record
/// directory ([`BufferHeader::decode_resealed`]). Either way the repaired buffer passes the
/// buffer's CRC over every byte, so it is the buffer as it was sealed: taking it is what
/// recovery would do had the damage not happened (a buffer a power cut left whole may be taken
/// whether or not it was synced). With whether it was repaired (it fails its checks as it is).
pub(super) fn checked_or_repaired(buf: &[u8], segment: u32) -> Option<(BufferHeader, bool)> {
    if let Some(h) = BufferHeader::decode_checked(buf) {
        return Some((h, false));
    }
    let sector = &buf[..SECTOR_SIZE.min(buf.len())];
    if sector.iter().all(|&b| b == 0) {
        return None; // nothing was written here (or a freed segment's first sector)
    }
    BufferHeader::decode_repaired(buf, segment)
        .or_else(|| BufferHeader::decode_resealed(buf))
        .map(|h| (h, true))
}

/// A buffer the scan accepts, with its records.
pub struct ValidBuffer {
    pub at: usize,
    pub header: BufferHeader,
    /// Its header failed its checks and was repaired exactly (see [`checked_or_repaired`]).
    pub repaired: bool,
    /// Its records in order. `intact` is the record's own CRC when the scan was asked to check
    /// records (fsck), else true (the buffer's CRC covers them).
    pub records: Vec<StretchRecord>,
    /// Payload offset of a record that does not decode in a buffer that passes its CRC: the
    /// format is violated there (the records before it are listed).
    pub malformed_at: Option<usize>,
}

/// The valid buffer at `at` with header `header`, its records read (and their own CRCs
/// checked if `check_records`).
pub(in crate::engine) fn valid_buffer(
    image: &[u8],
    at: usize,
    header: BufferHeader,
    repaired: bool,
    check_records: bool,
) -> ValidBuffer {
    let start = at + BUFFER_HEADER_SIZE;
    let end = start + header.payload_len as usize;
    let mut records = Vec::new();
    let mut p = start;
    let mut malformed_at = None;
    while p < end {
        let Some(h) = RecordHeader::decode(&image[p..end]) else {
            malformed_at = Some(p - start);
            break;
        };
        let intact = !check_records || RecordHeader::decode_checked(&image[p..end]).is_some();
        records.push(record_at(image, p, h, intact));
        p += h.total_len();
    }
    ValidBuffer {
        at,
        header,
        repaired,
        records,
        malformed_at,
    }
}

/// The record at `at` of a segment image, with header `h`, read as it is.
fn record_at(image: &[u8], at: usize, h: RecordHeader, intact: bool) -> StretchRecord {
    let key_at = at + RECORD_HEADER_SIZE;
    let value_at = key_at + h.key_len as usize;
    StretchRecord {
        at,
        header: h,
        key: image[key_at..value_at].to_vec(),
        range_end: if h.kind == RecordKind::DeleteRange {
            image[value_at..value_at + h.value_len as usize].to_vec()
        } else {
            Vec::new()
        },
        intact,
        in_first_buffer: false,
        from_directory: false,
    }
}

/// Every record of a valid buffer: (offset of the record in the segment, its header).
pub fn records_of(
    segment: u32,
    buffer_offset: usize,
    header: &BufferHeader,
    image: &[u8],
) -> Result<Vec<(usize, RecordHeader)>> {
    let payload_start = buffer_offset + BUFFER_HEADER_SIZE;
    let payload = &image[payload_start..payload_start + header.payload_len as usize];
    let mut out = Vec::new();
    let mut p = 0usize;
    while p < payload.len() {
        let Some(h) = RecordHeader::decode(&payload[p..]) else {
            // The buffer's CRC matched, so this is not a torn write: the format is violated.
            return Err(EngineError::Corrupt(format!(
                "segment {segment}, buffer at {buffer_offset}: malformed record at payload \
                 offset {p}"
            )));
        };
        out.push((payload_start + p, h));
        p += h.total_len();
    }
    Ok(out)
}
