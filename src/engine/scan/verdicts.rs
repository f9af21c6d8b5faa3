//! The verdicts on one segment image, which recovery acts on and fsck reports: the valid
//! buffers with their records, each damaged stretch with what recovery may salvage of it, the
//! records torn where the walk stopped (recovery notes their puts), and for fsck what lies at
//! and behind the stop. One function decides for both, so that they never disagree.

use super::super::format::{BLOCK_SIZE, BufferHeader, SegmentKind};
use super::super::synctable::Proof;
use super::buffer::{ValidBuffer, valid_buffer};
use super::directory::{first_use_by_own_directory, floor_behind, own_directory_generation};
use super::stretch::{Stretch, StretchRecord, salvageable, stretch_records_and_unnamed};
use super::walk::{DamagedStretch, SegmentScan, scan_segment};

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
        .map(|&d| stretch_verdict(image, segment, &scan, d))
        .collect();
    let torn = torn_records(image, segment, &scan);
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

/// A damaged stretch of the scan, with the floor that vouches for it and its records.
fn stretch_verdict(image: &[u8], segment: u32, scan: &SegmentScan, d: DamagedStretch) -> Stretch {
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
    let (records, unnamed) = salvageable(image, segment, d.start, d.end, Some(d.generation));
    Stretch {
        span: d,
        vouched_floor,
        records,
        unnamed,
    }
}

/// The records of the torn buffer where the scan stopped and of every buffer of the use behind
/// it (see [`Verdicts::torn`]).
fn torn_records(image: &[u8], segment: u32, scan: &SegmentScan) -> Vec<StretchRecord> {
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
    torn
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
    let stop_block = &image[pos..pos + BLOCK_SIZE];
    let plausible = BufferHeader::plausible_start(stop_block, segment);
    let zeros = stop_block.iter().all(|&b| b == 0);
    let stop_generation = stop_generation(
        image,
        segment,
        pos,
        high_water,
        frees_clear_directories_from,
    );
    // The use: the scan's, else the one a plausible failing first block names (a use the scan
    // could not prove: the segment reads as free, and what it holds is reported).
    let mut generation = scan
        .generation
        .or_else(|| plausible.then_some(stop_generation));
    let stranded = stranded_behind(image, segment, pos, high_water, &mut generation);
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
    let (records, unnamed) = if zeros {
        (Vec::new(), 0)
    } else {
        stop_records(
            image,
            segment,
            pos,
            &stranded,
            generation,
            plausible || first_of_use,
        )
    };
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

/// The generation the failing block at `pos` names: at the segment's start, by its own record
/// directory where its generation field is damaged past a doubt or its frees clear that
/// directory (as the scan takes a first buffer), else by its generation field.
fn stop_generation(
    image: &[u8],
    segment: u32,
    pos: usize,
    high_water: u64,
    frees_clear_directories_from: u64,
) -> u64 {
    let own_directory_use = (pos == 0)
        .then(|| own_directory_generation(image, segment))
        .flatten()
        .filter(|&g| g >= frees_clear_directories_from && g > 0 && g < high_water);
    (pos == 0)
        .then(|| first_use_by_own_directory(image, segment, high_water))
        .flatten()
        .or(own_directory_use)
        .unwrap_or_else(|| BufferHeader::generation_field(&image[pos..pos + BLOCK_SIZE]))
}

/// The valid buffers behind the stop at `pos` of the use `generation` (the first one found
/// names it if none does yet), which recovery does not reach.
fn stranded_behind(
    image: &[u8],
    segment: u32,
    pos: usize,
    high_water: u64,
    generation: &mut Option<u64>,
) -> Vec<(usize, BufferHeader)> {
    let valid_at = |p: usize| {
        BufferHeader::decode_checked(&image[p..])
            .filter(|h| h.segment_index == segment && h.generation < high_water)
    };
    let mut stranded: Vec<(usize, BufferHeader)> = Vec::new();
    let mut p = pos + BLOCK_SIZE;
    while p + BLOCK_SIZE <= image.len() {
        match valid_at(p) {
            Some(h) if generation.is_none_or(|g| g == h.generation) => {
                *generation = Some(h.generation);
                stranded.push((p, h));
                p += h.buffer_len as usize;
            }
            _ => p += BLOCK_SIZE,
        }
    }
    stranded
}

/// The records of the failing buffer at the stop `pos`, and how many of its buffers have a
/// damaged record directory too: of the first failing buffer only, unless valid buffers of the
/// use follow (then of every failing buffer up to the first of them, found by the use's
/// generation). `header_plausible`: the failing buffer starts like a buffer of this segment,
/// or is the first of the use.
fn stop_records(
    image: &[u8],
    segment: u32,
    pos: usize,
    stranded: &[(usize, BufferHeader)],
    generation: Option<u64>,
    header_plausible: bool,
) -> (Vec<StretchRecord>, usize) {
    let (region_end, resync) = match stranded.first() {
        Some(&(at, _)) => (at, generation),
        None => (image.len(), None),
    };
    let (found, unnamed) = stretch_records_and_unnamed(image, segment, pos, region_end, resync);
    // Without the buffer's CRC, only a record that checks out, or one in a buffer that
    // starts like a buffer of this segment, is worth reading as a record.
    let records = found
        .into_iter()
        .filter(|r| r.intact || header_plausible || !r.in_first_buffer || r.from_directory)
        .collect();
    (records, unnamed)
}
