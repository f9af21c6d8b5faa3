//! Damaged stretches and their records: what a stretch that fails its buffer checks still
//! holds (read by its buffers' intact record directories, else walked record by record, never
//! byte by byte and never outside the stretch), and which of those records recovery takes once
//! the log's floor and end are known. A record is taken only where something proves it durable
//! (the log's floor, or the sync table for copies): anything else may be garbage of a torn write.

use super::super::format::{
    BLOCK_SIZE, BUFFER_HEADER_SIZE, BufferHeader, RECORD_HEADER_SIZE, RecordHeader, RecordKind,
    align_up, lsn_of_version,
};
use super::directory::directory_records;
use super::walk::DamagedStretch;

/// A record found by the scan: in a valid buffer, or in a stretch that fails its buffer checks
/// (see [`stretch_records`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StretchRecord {
    /// Where it starts in the segment image.
    pub at: usize,
    pub header: RecordHeader,
    /// Its key: from its buffer's record directory when that is intact, else as found in the
    /// record (then damaged with it if it is not intact).
    pub key: Vec<u8>,
    /// A range delete's end (empty for other kinds), from the same place as the key.
    pub range_end: Vec<u8>,
    /// It passes its own CRC (and matches its directory entry, if it has one).
    pub intact: bool,
    /// It is in the stretch's first buffer (whose header, at the stretch's start, was not
    /// checked at all), not in a later one found at a block boundary.
    pub in_first_buffer: bool,
    /// Its buffer's record directory (intact, of the stretch's use) names it: it is a record
    /// of this use, whatever its own bytes say.
    pub from_directory: bool,
}

/// The records of a stretch `[start, end)` of a segment image that fails its buffer checks
/// (recovery salvages them; fsck reads them the same way), buffer by buffer.
///
/// A buffer whose record directory (`format.rs`) is intact gives exactly the records it names,
/// found where the directory's lengths lay them out: a record whose own header, key or length
/// is damaged is still named, with its key. The directory ends where the buffer does: at the
/// end its (unchecked) header gives, else where the next buffer of the stretch's use starts
/// (a block boundary that starts like a buffer of this segment and of `generation`), else at
/// the stretch's end.
///
/// A buffer without an intact directory (damaged, or of format version 1) is walked: from the
/// (unchecked) buffer header, records follow each other. Where they stop making sense (zero
/// padding, a header that does not decode, a length running past `end`), the walk goes on at
/// the next buffer of the stretch's use, past its header. A damaged record whose length runs
/// over such a boundary ends there too. The walk never looks for records byte by byte (a value
/// may hold bytes that look like one) and never reads outside `[start, end)`. With no
/// `generation`: the records of the first buffer only.
#[cfg(test)]
pub fn stretch_records(
    image: &[u8],
    segment: u32,
    start: usize,
    end: usize,
    generation: Option<u64>,
) -> Vec<StretchRecord> {
    stretch_records_and_unnamed(image, segment, start, end, generation).0
}

/// [`stretch_records`], and how many of the stretch's buffers were walked without an intact
/// record directory although their header does not say format version 1: their directory is
/// damaged too, so records whose own header or key is damaged there are named by nothing (the
/// damage of two places, or of a whole single-block buffer, that the directory cannot cover).
pub fn stretch_records_and_unnamed(
    image: &[u8],
    segment: u32,
    start: usize,
    end: usize,
    generation: Option<u64>,
) -> (Vec<StretchRecord>, usize) {
    let end = end.min(image.len());
    let mut out: Vec<StretchRecord> = Vec::new();
    let mut unnamed = 0;
    let walked_unnamed = |w: usize| !BufferHeader::version_field_is_1(&image[w..]);
    // Whether a buffer of the stretch's use starts at `q` (header unchecked).
    let buffer_at = |q: usize| {
        q.is_multiple_of(BLOCK_SIZE)
            && q + BUFFER_HEADER_SIZE <= end
            && generation.is_some_and(|g| {
                BufferHeader::plausible_start(&image[q..end], segment)
                    && BufferHeader::generation_field(&image[q..end]) == g
            })
    };
    let mut b = start;
    let mut first = true;
    while b + BUFFER_HEADER_SIZE <= end {
        if let Some((buffer_start, records, buffer_end)) =
            directory_records(image, segment, b, end, generation, first, &buffer_at)
        {
            // The directory found is of a buffer starting after `b` (the headers of both were
            // damaged): the buffers before it have lost theirs, and are walked.
            let (mut w, mut walk_first) = (b, first);
            while w + BUFFER_HEADER_SIZE <= buffer_start {
                if walked_unnamed(w) {
                    unnamed += 1;
                }
                match walk_buffer(
                    image,
                    segment,
                    w,
                    buffer_start,
                    walk_first,
                    &buffer_at,
                    &mut out,
                ) {
                    Some(next) => (w, walk_first) = (next, false),
                    None => break,
                }
            }
            out.extend(records);
            // Without the use's generation, the first buffer only: what follows may be of
            // any use.
            if buffer_end >= end || generation.is_none() {
                break;
            }
            b = buffer_end;
            first = false;
            continue;
        }
        if walked_unnamed(b) {
            unnamed += 1;
        }
        match walk_buffer(image, segment, b, end, first, &buffer_at, &mut out) {
            Some(next) => {
                b = next;
                first = false;
            }
            None => break,
        }
    }
    (out, unnamed)
}

/// Walks the records of the buffer at `b` that has no intact directory (see
/// [`stretch_records`]) into `out`; returns where the next buffer of the stretch's use starts.
pub(super) fn walk_buffer(
    image: &[u8],
    segment: u32,
    b: usize,
    end: usize,
    first: bool,
    buffer_at: &dyn Fn(usize) -> bool,
    out: &mut Vec<StretchRecord>,
) -> Option<usize> {
    let mut p = b + BUFFER_HEADER_SIZE;
    loop {
        let record = RecordHeader::decode(&image[p..end])
            .filter(|h| h.total_len() > RECORD_HEADER_SIZE && h.key_len != 0);
        let intact = record.is_some() && RecordHeader::decode_checked(&image[p..end]).is_some();
        // A buffer header where a record could start (records may fill a buffer exactly): the
        // next buffer (of this use: its records are walked; else the walk looks further).
        let header_here = !intact
            && p.is_multiple_of(BLOCK_SIZE)
            && BufferHeader::plausible_start(&image[p..end], segment);
        let resync_from = match record.filter(|_| !header_here) {
            Some(h) => {
                let key_at = p + RECORD_HEADER_SIZE;
                let value_at = key_at + h.key_len as usize;
                let key = image[key_at..value_at].to_vec();
                // A copy of a record found before it, with the same key and version: an entry
                // of a damaged directory read as a record (versions are never given twice; a
                // tombstone's entry is the whole record, so it even passes its CRC).
                let echo = out
                    .iter()
                    .any(|r| r.header.version == h.version && r.key == key);
                if !echo {
                    out.push(StretchRecord {
                        at: p,
                        header: h,
                        key,
                        range_end: if h.kind == RecordKind::DeleteRange {
                            image[value_at..value_at + h.value_len as usize].to_vec()
                        } else {
                            Vec::new()
                        },
                        intact,
                        in_first_buffer: first,
                        from_directory: false,
                    });
                }
                let next = p + h.total_len();
                // A damaged length may run over the buffers behind: a record does not.
                let over = if intact {
                    None
                } else {
                    (align_up(p + 1, BLOCK_SIZE)..next)
                        .step_by(BLOCK_SIZE)
                        .find(|&q| buffer_at(q))
                };
                match over {
                    Some(q) => q,
                    None => {
                        p = next;
                        continue;
                    }
                }
            }
            None => align_up(p, BLOCK_SIZE),
        };
        return (resync_from..end)
            .step_by(BLOCK_SIZE)
            .find(|&q| buffer_at(q));
    }
}

/// The records of a stretch `[start, end)` that recovery may take, and its buffers without an
/// intact record directory: a damaged range delete that no directory names is left out.
pub(super) fn salvageable(
    image: &[u8],
    segment: u32,
    start: usize,
    end: usize,
    generation: Option<u64>,
) -> (Vec<StretchRecord>, usize) {
    let (records, unnamed) = stretch_records_and_unnamed(image, segment, start, end, generation);
    let records = records
        .into_iter()
        .filter(|r| r.intact || r.from_directory || r.header.kind != RecordKind::DeleteRange)
        .collect();
    (records, unnamed)
}

/// Whether recovery takes a record of a damaged stretch (see [`Stretch::takes`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Take {
    /// Not proven durable: never served (a torn write may have left garbage there).
    Dropped,
    /// Proven durable by the log (its durable floor, or a log tail's LSNs).
    Logged,
    /// A copy below the synced end the sync table records.
    SyncedCopy,
}

impl Take {
    pub fn taken(self) -> bool {
        self != Take::Dropped
    }
}

/// A damaged stretch (see [`DamagedStretch`]) with what recovery needs to salvage it.
pub struct Stretch {
    pub span: DamagedStretch,
    /// The highest durable floor of the valid log buffers behind it (0: not in the log): every
    /// batch up to it was synced before they were sealed (see [`floor_behind`]).
    pub vouched_floor: u64,
    /// Its records as recovery salvages them, buffer by buffer (see [`stretch_records`]); a
    /// damaged range delete that no record directory names could hide anything, and is left
    /// out.
    pub records: Vec<StretchRecord>,
    /// Its buffers whose record directory is damaged too (see [`stretch_records_and_unnamed`]).
    pub unnamed: usize,
}

impl Stretch {
    /// Which of its records recovery takes, once the log's durable floor and last LSN are
    /// known. A log tail: all of them if every record's LSN is within the floor, else none (a
    /// torn write). Otherwise each record proven durable: in the log, of a batch within the
    /// floor the buffers behind vouch for (and the log's); in copies, wholly below the synced
    /// end the sync table records, of a batch within the log. The others may be garbage of a
    /// torn write.
    pub fn takes(&self, floor: u64, last_lsn: u64) -> Vec<Take> {
        let d = &self.span;
        if d.log_tail {
            let within = !self.records.is_empty()
                && self.records.iter().all(|r| {
                    let lsn = lsn_of_version(r.header.version);
                    lsn > 0 && lsn <= floor
                });
            let take = if within { Take::Logged } else { Take::Dropped };
            return vec![take; self.records.len()];
        }
        self.records
            .iter()
            .map(|r| {
                let lsn = lsn_of_version(r.header.version);
                let logged = lsn <= self.vouched_floor && lsn <= floor;
                let synced_copy =
                    r.at + r.header.total_len() <= d.synced_end && lsn <= last_lsn.max(floor);
                match (lsn > 0, synced_copy, logged) {
                    (false, _, _) | (true, false, false) => Take::Dropped,
                    (true, true, _) => Take::SyncedCopy,
                    (true, false, true) => Take::Logged,
                }
            })
            .collect()
    }

    /// Whether the stretch is damage to synced data by the scan's word alone (not a log tail,
    /// which is synced only if its LSNs say so): vouched for by the log, or copies below the
    /// synced end the sync table records.
    pub fn proven(&self) -> bool {
        let d = &self.span;
        !d.log_tail && (!d.copies || d.end <= d.synced_end)
    }
}
