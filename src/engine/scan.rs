//! The one segment scan: reads a segment image and gives a verdict for each buffer and each
//! stretch of it, which recovery acts on and fsck reports (neither decides on its own).
//!
//! - A *valid* buffer passes its checks, or is repaired exactly ([`checked_or_repaired`]): its
//!   records are served.
//! - A *damaged stretch* fails its checks but is proven damage, not a torn write: a valid buffer
//!   of the same use behind it vouches for it, or the sync table (`synctable.rs`) proves it
//!   synced, or it is a log tail (see [`scan_segment`]). Which of its records recovery takes is
//!   [`Stretch::takes`], once the log's durable floor and end are known ([`log_end`]).
//! - The *stop*: where the scan ends before the segment does, at a torn write, zeros, or bytes of
//!   an earlier use; what lies there is never served (recovery notes its puts, fsck compares
//!   its records and the valid buffers behind it with what is served).
//!
//! Only this module decodes buffers for recovery and fsck, and only it checks records' CRCs.

use super::api::{EngineError, Result};
use super::format::{
    self, BLOCK_SIZE, BUFFER_HEADER_SIZE, BufferHeader, RECORD_HEADER_SIZE, RecordHeader,
    RecordKind, SegmentKind, align_up, lsn_of_version,
};
use super::storage::SECTOR_SIZE;
use super::synctable::Proof;

/// Whether a segment whose first block is `block` may be in use, so that recovery reads the
/// rest of it: its first buffer's header starts like one, or its first sector is not zeroed
/// (a free or never used segment has it zeroed; a damaged header of a segment in use does not,
/// see `scan_segment`'s first buffer of a use).
pub(super) fn may_be_in_use(block: &[u8], segment: u32) -> bool {
    BufferHeader::plausible_start(block, segment)
        || block[..SECTOR_SIZE.min(block.len())]
            .iter()
            .any(|&b| b != 0)
}

/// A segment image read by recovery: its valid buffers, and the damaged stretches between them.
pub struct SegmentScan {
    pub valid: Vec<(usize, BufferHeader)>,
    /// Each stretch that fails its checks but is followed by a valid buffer of the same use of
    /// the segment, or lies below the synced end the sync table records for it.
    pub damaged: Vec<DamagedStretch>,
    /// Where the scan stopped at bytes that are neither zeros nor a valid buffer (a torn tail,
    /// or unproven damage): what lies there is not served, but is still on disk.
    pub stopped_at: Option<usize>,
    /// Where the scan ended (the segment's size if it reached the end), and the use it read.
    pub ended_at: usize,
    pub generation: Option<u64>,
    /// Where the valid buffers are whose header was repaired (see [`checked_or_repaired`]).
    pub repaired: Vec<usize>,
}

/// A failing stretch `[start, end)` of a segment image that is not its end (see
/// [`scan_segment`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DamagedStretch {
    pub start: usize,
    pub end: usize,
    /// Bytes below this were synced, by the sync table's word (`start` or less: nothing of the
    /// stretch is proven so).
    pub synced_end: usize,
    /// The last buffers of a segment of the log (mixed), damage only by the sync table's word:
    /// its batches are taken only if all of them are within the durable floor (see `recover`).
    pub log_tail: bool,
    /// The generation of the segment's use the stretch belongs to: later buffers of the
    /// stretch are found by it (see [`stretch_records`]).
    pub generation: u64,
    /// The segment holds copies (group-owned), by its buffers' word.
    pub copies: bool,
}

/// The buffers of a segment image that recovery accepts, in order: from the first, up to the
/// first that fails its checks, belongs to another segment, or has another generation than the
/// first (bytes of an earlier use). A buffer that fails its checks does not end the segment when
/// a valid buffer of the same generation follows it (found at a later block boundary): that is
/// damage in the middle, and what follows it is still the segment's. The first buffer must be
/// valid (it alone tells this use of the segment from an earlier one), but for the exception
/// below.
///
/// `proof` is the segment's entry in the sync table (`synctable.rs`): in a segment of copies
/// whose use it names, a failing stretch below its synced end is damage too, even with no valid
/// buffer behind it (the last buffers of the segment): it was synced, so no power cut tore it.
/// That includes a failing first buffer whose (unchecked) header names the entry's generation.
/// In a closed segment of the log (mixed on disk) whose use the entry names, a failing stretch
/// below its synced end with no valid buffer of the use behind it is damage too (a *log tail*,
/// [`DamagedStretch::log_tail`]); `recover` decides from the records' LSNs whether to take it.
pub fn scan_segment(
    image: &[u8],
    segment: u32,
    generation_high_water: u64,
    proof: Option<Proof>,
    frees_clear_directories_from: u64,
) -> SegmentScan {
    let mut scan = SegmentScan {
        valid: Vec::new(),
        damaged: Vec::new(),
        stopped_at: None,
        ended_at: 0,
        generation: None,
        repaired: Vec::new(),
    };
    let mut pos = 0usize;
    let mut generation = None;
    while pos + BLOCK_SIZE <= image.len() {
        let valid = checked_or_repaired(&image[pos..], segment).filter(|(h, _)| {
            h.segment_index == segment
                && h.generation < generation_high_water
                && generation.is_none_or(|g| g == h.generation)
        });
        if let Some((header, repaired)) = valid {
            generation = Some(header.generation);
            if repaired {
                scan.repaired.push(pos);
            }
            scan.valid.push((pos, header));
            pos += header.buffer_len as usize;
            continue;
        }
        // A failing first buffer whose header names the use the sync table has an entry for,
        // in a segment of copies: that use (a freed segment's first sector is zeroed and synced
        // before reuse, so no other use's header can be there), synced up to the entry's end.
        let first_of_copies = proof.filter(|p| {
            pos == 0
                && p.generation < generation_high_water
                && BufferHeader::plausible_start(image, segment)
                && BufferHeader::generation_field(image) == p.generation
                && BufferHeader::kind_field_is_group(image)
        });
        // A failing first buffer whose header names the generation of a valid buffer behind
        // it: that use, as in the middle of a segment (generations are never handed out twice,
        // and a freed segment's first sector is zeroed before reuse, so a later valid buffer of
        // the generation the header names was written by the same use, after it). Whether the
        // stretch is damage or a torn write is then judged as anywhere else, by what the next
        // buffer proves. Without this, one flipped byte in a segment's first buffer lost every
        // buffer of the segment. The generation field alone decides, whatever the header's other
        // fields (magic, version, segment index) say: they may be what is damaged, and a freed
        // segment's zeroed first sector cannot hold a generation (none is 0), nor a torn first
        // buffer of a later use this one's.
        let first_of_use = (pos == 0 && image.len() >= BUFFER_HEADER_SIZE)
            .then(|| BufferHeader::generation_field(image))
            .filter(|&g| {
                g > 0
                    && g < generation_high_water
                    && (BLOCK_SIZE..image.len()).step_by(BLOCK_SIZE).any(|q| {
                        BufferHeader::decode_checked(&image[q..])
                            .is_some_and(|h| h.segment_index == segment && h.generation == g)
                    })
            });
        // A failing first buffer with nothing valid of its use behind it (a log segment of one
        // buffer, or whose later ones were torn), whose generation field its own record
        // directory names: that use, by two fields in two places that a freed segment's zeroed
        // first sector and a torn first buffer of a later use cannot both show. It is then a
        // log tail (below): taken only if every record's LSN is within the durable floor.
        // Or, whatever the header holds (a whole sector of garbage over it), whose own directory
        // names a use whose frees clear that directory: no freed segment keeps one then (see
        // `Superblock::frees_clear_directories_from`). With valid buffers of the use behind it
        // as well as without.
        let first_alone = (pos == 0 && image.len() >= BUFFER_HEADER_SIZE)
            .then(|| BufferHeader::generation_field(image))
            .filter(|&g| {
                g > 0 && g < generation_high_water && named_by_own_directory(image, segment, g)
            })
            .or_else(|| {
                (pos == 0)
                    .then(|| own_directory_generation(image, segment))
                    .flatten()
                    .filter(|&g| {
                        g >= frees_clear_directories_from && g > 0 && g < generation_high_water
                    })
            });
        if generation.is_none() {
            generation = first_of_copies
                .map(|p| p.generation)
                .or(first_of_use)
                .or(first_alone)
                .or_else(|| {
                    (pos == 0)
                        .then(|| first_use_by_own_directory(image, segment, generation_high_water))
                        .flatten()
                });
        }
        let Some(g) = generation else { break };
        // A zeroed block is where a discarded tail was invalidated (or where nothing was ever
        // written): the end, never damage.
        if image[pos..pos + BLOCK_SIZE].iter().all(|&b| b == 0) {
            break;
        }
        // Look for the next valid buffer of this use.
        let next = (pos + BLOCK_SIZE..image.len())
            .step_by(BLOCK_SIZE)
            .find(|&q| {
                BufferHeader::plausible_start(&image[q..], segment)
                    && BufferHeader::decode_checked(&image[q..])
                        .is_some_and(|h| h.segment_index == segment && h.generation == g)
            });
        // Only a stretch of the log that the next buffer proves durable is damage: its header
        // records a durable floor covering every batch before its own, so the stretch's batches
        // had been synced (and a synced write cannot be torn). Anything else may be a write
        // torn by a power cut, or bytes the page cache reordered: the segment ends there.
        // Except in a segment of copies: the buffers of copies behind a failing stretch are
        // taken whatever it was. Were they not synced, their sources are still there (sources
        // are freed only once their copies are synced) and a copy changes nothing; were they,
        // they may be the only copy left. The stretch's own records are not taken (a torn
        // write leaves garbage there), and stay noted (see `recover`), unless the sync table
        // proves them synced (below).
        // Or the stretch's last buffer's record directory names only batches within the next
        // buffer's floor (see `directory_vouches`: how a marker vouches).
        let proven = |q: usize| {
            BufferHeader::decode_checked(&image[q..]).is_some_and(|h| {
                h.kind == SegmentKind::Group
                    || (h.kind == SegmentKind::Mixed
                        && ((h.lsn_first > 0 && h.durable_floor + 1 >= h.lsn_first)
                            || directory_vouches(
                                image,
                                segment,
                                pos,
                                q,
                                g,
                                floor_behind(image, segment, q, g),
                            )))
            })
        };
        // The sync table's proof, for the use it names: of a segment of copies, or of a closed
        // segment of the log (mixed on disk, whatever it was handed over to since).
        // Whether the segment holds copies: by its valid buffers' word, the ones before the
        // stretch, else the next one of its use (every buffer of a use is of one kind), and only
        // then by the failing first buffer's own kind byte, which may be what is damaged.
        let next_kind = next
            .and_then(|q| BufferHeader::decode_checked(&image[q..]))
            .map(|h| h.kind);
        let copies = match (scan.valid.first(), next_kind) {
            (Some((_, first)), _) => first.kind == SegmentKind::Group,
            (None, Some(kind)) => first_of_copies.is_some() || kind == SegmentKind::Group,
            (None, None) => first_of_copies.is_some() || BufferHeader::kind_field_is_group(image),
        };
        let proven_end = proof
            .filter(|p| p.generation == g)
            .map_or(0, |p| (p.synced_end as usize).min(image.len()));
        // In the log, the table is taken only for the segment's last buffers (nothing valid of
        // this use behind the stretch): a stretch followed by a valid buffer is judged by that
        // buffer's durable floor, as before. Without the table's word, the last buffers of a
        // log segment (of the one that was active at a crash, too) are a log tail up to the
        // first intact record directory of this use behind the failing block: `recover` takes
        // it only if every record's LSN is within the durable floor, which proves it synced
        // (see `directory_vouches`), else it is a torn write.
        let table_tail = !copies && next.is_none() && pos < proven_end;
        let directory_end = if !copies && next.is_none() && !table_tail {
            log_tail_directory_end(image, segment, pos, g)
        } else {
            None
        };
        let log_tail = table_tail || directory_end.is_some();
        let synced_end = if copies || table_tail {
            proven_end
        } else {
            directory_end.unwrap_or(0)
        };
        match next.filter(|&q| proven(q)) {
            Some(q) => {
                scan.damaged.push(DamagedStretch {
                    start: pos,
                    end: q,
                    synced_end,
                    log_tail: false,
                    generation: g,
                    copies,
                });
                pos = q;
            }
            None if pos < synced_end && (copies || log_tail) => {
                // Damage in the last synced buffers: the stretch ends where the proof does;
                // what follows is looked at like the end of any segment.
                scan.damaged.push(DamagedStretch {
                    start: pos,
                    end: synced_end,
                    synced_end,
                    log_tail,
                    generation: g,
                    copies,
                });
                pos = synced_end;
            }
            None => {
                scan.stopped_at = Some(pos);
                break;
            }
        }
    }
    scan.ended_at = pos;
    scan.generation = generation;
    scan
}

/// The buffer at `buf[0]`, checked, or repaired if only bytes that the rest of it determines
/// are damaged: a field naming it ([`BufferHeader::decode_repaired`]), or its padding or record
/// directory ([`BufferHeader::decode_resealed`]). Either way the repaired buffer passes the
/// buffer's CRC over every byte, so it is the buffer as it was sealed: taking it is what
/// recovery would do had the damage not happened (a buffer a power cut left whole may be taken
/// whether or not it was synced). With whether it was repaired (it fails its checks as it is).
fn checked_or_repaired(buf: &[u8], segment: u32) -> Option<(BufferHeader, bool)> {
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

/// The records named by the intact record directory of the stretch's use that ends where the
/// buffer at `b` may end (see [`stretch_records`]): `(where that directory's buffer starts, at
/// `b` or after it, its records, where it ends)`; `None` if there is none.
fn directory_records(
    image: &[u8],
    segment: u32,
    b: usize,
    end: usize,
    generation: Option<u64>,
    first: bool,
    buffer_at: &dyn Fn(usize) -> bool,
) -> Option<(usize, Vec<StretchRecord>, usize)> {
    let header_plausible = BufferHeader::plausible_start(&image[b..end], segment);
    let generation = generation
        .or_else(|| header_plausible.then(|| BufferHeader::generation_field(&image[b..end])))?;
    // The buffer ends at the next buffer of this use, or at the stretch's end: its directory
    // cannot lie beyond. Its header's length field, if it points before that, is tried first.
    let bound = (b + BLOCK_SIZE..end)
        .step_by(BLOCK_SIZE)
        .find(|&q| buffer_at(q))
        .unwrap_or(end);
    let from_header = header_plausible
        .then(|| b + BufferHeader::buffer_len_field(&image[b..end]))
        .filter(|&e| e > b && e < bound && (e - b).is_multiple_of(BLOCK_SIZE));
    from_header
        .into_iter()
        .chain([bound])
        .find_map(|buffer_end| {
            let (start, entries) =
                format::read_directory(&image[b..buffer_end], segment, generation)?;
            let buffer_start = b + start;
            let records = entries
                .into_iter()
                .map(|e| {
                    let at = buffer_start + e.at;
                    let intact = image[at..].starts_with(&e.bytes)
                        && RecordHeader::decode_checked(&image[at..buffer_end]).is_some();
                    StretchRecord {
                        at,
                        header: e.header,
                        key: e.key().to_vec(),
                        range_end: e.range_end().to_vec(),
                        intact,
                        in_first_buffer: first && start == 0,
                        from_directory: true,
                    }
                })
                .collect();
            Some((buffer_start, records, buffer_end))
        })
}

/// Whether the record directory of the last buffer of a failing stretch `[start, end)` of a log
/// segment proves the stretch synced before a buffer with durable floor `floor` was sealed
/// behind it: the directory ending at `end` is intact, of the use `generation`, and names
/// records, every one of a batch within `floor`. A batch lives in exactly one buffer, so that
/// buffer had been synced whole, and so had every buffer before it (written before it, and
/// holding lower LSNs or none): what fails in the stretch is damage, not a torn write.
///
/// This is how a marker (no batch of its own, so its floor says nothing of the buffers before
/// it by the usual rule, see [`scan_segment`]) vouches for the newest batches before it: the
/// marker a clean close, an open, or an idle log writes.
pub fn directory_vouches(
    image: &[u8],
    segment: u32,
    start: usize,
    end: usize,
    generation: u64,
    floor: u64,
) -> bool {
    let end = end.min(image.len());
    start + BUFFER_HEADER_SIZE < end
        && format::read_directory(&image[start..end], segment, generation).is_some_and(
            |(_, named)| {
                !named.is_empty()
                    && named.iter().all(|e| {
                        let lsn = lsn_of_version(e.header.version);
                        lsn > 0 && lsn <= floor
                    })
            },
        )
}

/// The highest durable floor among the valid buffers of the use `generation` that follow one
/// another from `at` (up to the next that fails or ends the use). Each was sealed after every
/// buffer before `at` was written, so every batch up to its floor, wherever it lies before
/// `at`, had been synced. Why not only the first one's: the buffer right behind a damaged one
/// may have been sealed before the damaged one's batches were synced (the first buffers of a
/// store: its first batch, synced later, and the next buffer's floor 0), and a later one proves
/// them synced all the same (found on a real mount by `scripts/crash_damage.sh`'s random flips:
/// a flipped byte in a store's first buffer lost every file).
pub fn floor_behind(image: &[u8], segment: u32, at: usize, generation: u64) -> u64 {
    let mut floor = 0;
    let mut p = at;
    while p + BLOCK_SIZE <= image.len() {
        match BufferHeader::decode_checked(&image[p..])
            .filter(|h| h.segment_index == segment && h.generation == generation)
        {
            Some(h) => {
                floor = floor.max(h.durable_floor);
                p += h.buffer_len as usize;
            }
            None => break,
        }
    }
    floor
}

/// Whether the segment's first buffer (its header unchecked) has an intact record directory
/// of its own naming the use `generation`: one whose trailer's buffer length reaches back to
/// the segment's start.
pub fn named_by_own_directory(image: &[u8], segment: u32, generation: u64) -> bool {
    own_directory_end(image, segment, generation).is_some()
}

/// The generation that the segment's first buffer's own record directory names (intact, its
/// trailer's buffer length reaching back to the segment's start), if any.
pub fn own_directory_generation(image: &[u8], segment: u32) -> Option<u64> {
    (BLOCK_SIZE..=image.len())
        .step_by(BLOCK_SIZE)
        .find_map(|end| {
            let t = &image[end - format::DIRECTORY_TRAILER_SIZE..end];
            if !format::trailer_of_first_buffer(t, segment, end) {
                return None;
            }
            let g = format::trailer_generation(t);
            format::read_directory(&image[..end], segment, g)
                .filter(|(start, _)| *start == 0)
                .map(|_| g)
        })
}

/// Where the segment's first buffer ends by its own record directory naming the use
/// `generation` (see [`named_by_own_directory`]).
fn own_directory_end(image: &[u8], segment: u32, generation: u64) -> Option<usize> {
    (BLOCK_SIZE..=image.len())
        .step_by(BLOCK_SIZE)
        .find_map(|q| Some((q, format::read_directory(&image[..q], segment, generation)?)))
        .filter(|(_, (start, _))| *start == 0)
        .map(|(q, _)| q)
}

/// The use of a segment whose failing first buffer's generation field holds no generation ever
/// handed out (at or above the high-water mark) in a header that is still one (its magic, or
/// its length field, is what it should be): that field is damaged, since neither a torn write
/// (it leaves whole sectors, of one write or the other) nor a freed segment's zeroed first
/// sector shows that (damage to a zeroed sector does not make a magic or a length). The use is
/// the generation of the first valid buffer behind it, if the first buffer's own record
/// directory names that generation too. Why: damage in one place that takes the generation
/// field and more of the header (so that [`BufferHeader::decode_repaired`] cannot repair it)
/// made the segment read as free: every file in it served older versions or vanished.
pub fn first_use_by_own_directory(
    image: &[u8],
    segment: u32,
    generation_high_water: u64,
) -> Option<u64> {
    if image.len() < BLOCK_SIZE {
        return None;
    }
    let behind = (BLOCK_SIZE..image.len())
        .step_by(BLOCK_SIZE)
        .find_map(|q| {
            BufferHeader::decode_checked(&image[q..])
                .filter(|h| h.segment_index == segment && h.generation < generation_high_water)
        })?
        .generation;
    let end = own_directory_end(image, segment, behind)?;
    (BufferHeader::generation_field(image) >= generation_high_water
        && (BufferHeader::magic_is_right(image) || BufferHeader::buffer_len_field(image) == end))
        .then_some(behind)
}

/// Where the failing last buffers of a log segment from `pos` on end, by the first intact
/// record directory of the use `generation` found at a block boundary behind `pos` (a damaged
/// buffer's own, or a later one's: either way the buffers from `pos` to it were written in one
/// run of this use). `None` if there is none.
pub fn log_tail_directory_end(
    image: &[u8],
    segment: u32,
    pos: usize,
    generation: u64,
) -> Option<usize> {
    (pos + BLOCK_SIZE..=image.len())
        .step_by(BLOCK_SIZE)
        .find(|&q| format::read_directory(&image[pos..q], segment, generation).is_some())
}

/// Walks the records of the buffer at `b` that has no intact directory (see
/// [`stretch_records`]) into `out`; returns where the next buffer of the stretch's use starts.
fn walk_buffer(
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

/// The buffers of a segment image that recovery accepts, in order (see [`scan_segment`]).
#[cfg(any(test, feature = "test-hooks"))]
pub fn valid_buffers(
    image: &[u8],
    segment: u32,
    generation_high_water: u64,
) -> Vec<(usize, BufferHeader)> {
    scan_segment(image, segment, generation_high_water, None, u64::MAX).valid
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

/// Where the scan ended before the segment's end, as fsck reports it: what lies there and
/// behind it is never served.
pub struct Stop {
    pub at: usize,
    /// The segment holds copies, by its buffers' word (else the failing block's kind byte).
    pub copies: bool,
    /// Bytes below this were synced, by the sync table's word (0: nothing proven).
    pub synced_end: usize,
    /// The block there is zeros (the end of the writes, or a discarded tail's invalidation).
    pub zeros: bool,
    /// The records of the failing buffer there (its first buffer only, unless valid buffers of
    /// the use follow, up to the first of them).
    pub records: Vec<StretchRecord>,
    /// Failing buffers of it whose record directory is damaged too.
    pub unnamed: usize,
    /// Valid buffers of the use behind it, which recovery does not reach.
    pub stranded: Vec<ValidBuffer>,
}

/// Everything the scan says of a segment image.
pub struct Verdicts {
    /// The buffers recovery accepts (before the log's end is known: see [`log_end`]).
    pub valid: Vec<ValidBuffer>,
    /// The damaged stretches between and after them.
    pub stretches: Vec<Stretch>,
    /// Records of the torn buffer where the scan stopped and of every buffer of the use behind
    /// it, torn or intact (a power cut can keep a later buffer whole and tear an earlier one):
    /// never served but on disk, so recovery notes their puts (no tombstone of their keys may
    /// be dropped while they are there).
    pub torn: Vec<StretchRecord>,
    /// Where the scan ended before the segment's end, with what lies there (only when asked
    /// for a report, see [`segment_verdicts`]).
    pub stop: Option<Stop>,
}

/// The verdicts on a segment image (see the module's comment). `report` (fsck) asks for each
/// record's own CRC inside valid buffers, and for the [`Stop`]; recovery needs neither.
pub fn segment_verdicts(
    image: &[u8],
    segment: u32,
    generation_high_water: u64,
    proof: Option<Proof>,
    frees_clear_directories_from: u64,
    report: bool,
) -> Verdicts {
    let scan = scan_segment(
        image,
        segment,
        generation_high_water,
        proof,
        frees_clear_directories_from,
    );
    let valid = scan
        .valid
        .iter()
        .map(|&(at, header)| valid_buffer(image, at, header, scan.repaired.contains(&at), report))
        .collect();
    let stretches = scan
        .damaged
        .iter()
        .map(|&d| {
            // Only in the log (mixed segments) does the floor of the buffers behind the stretch
            // vouch for its batches having been durable.
            let mixed = scan
                .valid
                .iter()
                .find(|(pos, _)| *pos == d.end)
                .is_some_and(|(_, h)| h.kind == SegmentKind::Mixed);
            let vouched_floor = if mixed {
                floor_behind(image, segment, d.end, d.generation)
            } else {
                0
            };
            let (records, unnamed) =
                salvageable(image, segment, d.start, d.end, Some(d.generation));
            Stretch {
                span: d,
                vouched_floor,
                records,
                unnamed,
            }
        })
        .collect();
    let mut torn = Vec::new();
    if let Some(at) = scan.stopped_at {
        let generation = scan.valid.first().map(|(_, h)| h.generation);
        for q in (at..image.len().saturating_sub(BLOCK_SIZE - 1)).step_by(BLOCK_SIZE) {
            let of_this_use = q == at
                || (BufferHeader::plausible_start(&image[q..], segment)
                    && Some(BufferHeader::generation_field(&image[q..])) == generation);
            if of_this_use {
                torn.extend(salvageable(image, segment, q, image.len(), None).0);
            }
        }
    }
    let stop = if report {
        stop_verdict(
            image,
            segment,
            generation_high_water,
            proof,
            frees_clear_directories_from,
            &scan,
        )
    } else {
        None
    };
    Verdicts {
        valid,
        stretches,
        torn,
        stop,
    }
}

/// The records of a stretch `[start, end)` that recovery may take, and its buffers without an
/// intact record directory: a damaged range delete that no directory names is left out.
fn salvageable(
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

/// The valid buffer at `at` with header `header`, its records read (and their own CRCs
/// checked if `check_records`).
fn valid_buffer(
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

/// What fsck reports where the scan ended before the segment's end (`None`: nothing worth a
/// report: the end of the use's writes, zeros, or bytes of an earlier use, with no valid buffer
/// of the use behind).
fn stop_verdict(
    image: &[u8],
    segment: u32,
    high_water: u64,
    proof: Option<Proof>,
    frees_clear_directories_from: u64,
    scan: &SegmentScan,
) -> Option<Stop> {
    let pos = scan.ended_at;
    if pos + BLOCK_SIZE > image.len() {
        return None; // the segment is full
    }
    let valid_at = |p: usize| {
        BufferHeader::decode_checked(&image[p..])
            .filter(|h| h.segment_index == segment && h.generation < high_water)
    };
    let stop_block = &image[pos..pos + BLOCK_SIZE];
    let plausible = BufferHeader::plausible_start(stop_block, segment);
    let zeros = stop_block.iter().all(|&b| b == 0);
    // The generation the failing block names: at the segment's start, by its own record
    // directory where its generation field is damaged past a doubt or its frees clear that
    // directory (as the scan takes a first buffer), else by its generation field.
    let own_directory_use = (pos == 0)
        .then(|| own_directory_generation(image, segment))
        .flatten()
        .filter(|&g| g >= frees_clear_directories_from && g > 0 && g < high_water);
    let stop_generation = (pos == 0)
        .then(|| first_use_by_own_directory(image, segment, high_water))
        .flatten()
        .or(own_directory_use)
        .unwrap_or_else(|| BufferHeader::generation_field(stop_block));
    // The use: the scan's, else the one a plausible failing first block names (a use the scan
    // could not prove: the segment reads as free, and what it holds is reported).
    let mut generation = scan
        .generation
        .or_else(|| plausible.then_some(stop_generation));
    let mut stranded: Vec<(usize, BufferHeader)> = Vec::new();
    let mut p = pos + BLOCK_SIZE;
    while p + BLOCK_SIZE <= image.len() {
        match valid_at(p) {
            Some(h) if generation.is_none_or(|g| g == h.generation) => {
                generation = Some(h.generation);
                stranded.push((p, h));
                p += h.buffer_len as usize;
            }
            _ => p += BLOCK_SIZE,
        }
    }
    // A buffer header of an earlier generation: where this use stopped writing, the bytes of
    // an earlier use of the segment (stale whatever their versions).
    let earlier_use = plausible && generation.is_some_and(|g| stop_generation < g);
    let copies = scan
        .valid
        .first()
        .map(|(_, h)| h.kind)
        .or(stranded.first().map(|(_, h)| h.kind))
        .map_or(BufferHeader::kind_field_is_group(stop_block), |k| {
            k == SegmentKind::Group
        });
    let synced_end = if copies {
        proof
            .filter(|p| generation == Some(p.generation) && p.generation < high_water)
            .map_or(0, |p| (p.synced_end as usize).min(image.len()))
    } else {
        0
    };
    if stranded.is_empty() && (zeros || earlier_use || (!plausible && pos >= synced_end)) {
        return None;
    }
    let first_of_use = scan.valid.is_empty()
        && pos == 0
        && (plausible
            || stranded
                .first()
                .is_some_and(|(_, h)| h.generation > 0 && h.generation == stop_generation));
    let (mut records, mut unnamed) = (Vec::new(), 0);
    if !zeros {
        // Of the first failing buffer only, unless valid buffers of the use follow (then of
        // every failing buffer up to the first of them, found by the use's generation).
        let (region_end, resync) = match stranded.first() {
            Some(&(at, _)) => (at, generation),
            None => (image.len(), None),
        };
        let found;
        (found, unnamed) = stretch_records_and_unnamed(image, segment, pos, region_end, resync);
        // Without the buffer's CRC, only a record that checks out, or one in a buffer that
        // starts like a buffer of this segment, is worth reading as a record.
        records = found
            .into_iter()
            .filter(|r| {
                r.intact || plausible || first_of_use || !r.in_first_buffer || r.from_directory
            })
            .collect();
    }
    Some(Stop {
        at: pos,
        copies,
        synced_end,
        zeros,
        records,
        unnamed,
        stranded: stranded
            .into_iter()
            .map(|(at, h)| valid_buffer(image, at, h, false, true))
            .collect(),
    })
}

/// Where the log ends, from the headers of the valid buffers of every segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogEnd {
    /// The highest durable floor any valid buffer records: every batch up to it was durable.
    pub floor: u64,
    /// The last LSN kept: the one before the first gap above the floor (at least the floor).
    pub last_lsn: u64,
    /// The first LSN missing above the floor, if batches beyond it exist.
    pub gap_at: Option<u64>,
}

/// The log's end (see [`LogEnd`]): above the durable floor, batches must follow each other
/// without a gap; below it, missing batches were freed after being made durable.
pub fn log_end<'a>(headers: impl Iterator<Item = &'a BufferHeader> + Clone) -> LogEnd {
    let floor = headers.clone().map(|h| h.durable_floor).max().unwrap_or(0);
    let mut batches: Vec<(u64, u64)> = headers
        .filter(|h| h.lsn_first > 0)
        .map(|h| (h.lsn_first, h.lsn_last))
        .collect();
    batches.sort_unstable();
    let mut expected = floor.saturating_add(1);
    let mut gap_at = None;
    for (first, last) in batches {
        if last < expected {
            continue;
        }
        if first > expected {
            gap_at = Some(expected);
            break;
        }
        expected = last.saturating_add(1);
    }
    LogEnd {
        floor,
        last_lsn: (expected - 1).max(floor),
        gap_at,
    }
}

/// Per segment, where its first buffer beyond the log's last LSN starts (a batch after the
/// end, or copies of one): it and everything after it in its segment is discarded.
pub fn cut_beyond<'a>(
    buffers: impl Iterator<Item = (u32, u32, &'a BufferHeader)>,
    last_lsn: u64,
) -> std::collections::BTreeMap<u32, u32> {
    let mut cut = std::collections::BTreeMap::new();
    for (segment, offset, h) in buffers {
        if h.lsn_last > last_lsn {
            let at = cut.entry(segment).or_insert(offset);
            *at = (*at).min(offset);
        }
    }
    cut
}
