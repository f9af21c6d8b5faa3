//! The segment walk: which buffers of a segment image are valid, where the stretches that fail
//! their checks lie, and where the walk stops. The first buffer alone tells this use of the
//! segment from an earlier one, so a failing first buffer gets its use from other witnesses
//! (the sync table, a valid buffer of its generation behind it, its own record directory); a
//! failing stretch is damage only if something proves it synced (a valid buffer behind it
//! whose durable floor covers it, the sync table, a log tail's directory), else it may be a
//! write torn by a power cut and the walk stops there.

use super::super::format::{BLOCK_SIZE, BUFFER_HEADER_SIZE, BufferHeader, SegmentKind};
use super::super::storage::SECTOR_SIZE;
use super::super::synctable::Proof;
use super::buffer::checked_or_repaired;
use super::directory::{
    directory_vouches, first_use_by_own_directory, floor_behind, log_tail_directory_end,
    named_by_own_directory, own_directory_generation,
};

/// Whether a segment whose first block is `block` may be in use, so that recovery reads the
/// rest of it: its first buffer's header starts like one, or its first sector is not zeroed
/// (a free or never used segment has it zeroed; a damaged header of a segment in use does not,
/// see `scan_segment`'s first buffer of a use).
pub(in crate::engine) fn may_be_in_use(block: &[u8], segment: u32) -> bool {
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
        let first_of_copies = first_of_copies(image, segment, pos, generation_high_water, proof);
        if generation.is_none() {
            generation = first_buffer_use(
                image,
                segment,
                pos,
                generation_high_water,
                first_of_copies,
                frees_clear_directories_from,
            );
        }
        let Some(g) = generation else { break };
        // A zeroed block is where a discarded tail was invalidated (or where nothing was ever
        // written): the end, never damage.
        if image[pos..pos + BLOCK_SIZE].iter().all(|&b| b == 0) {
            break;
        }
        match failing_stretch(image, segment, pos, g, &scan, first_of_copies, proof) {
            Some(d) => {
                scan.damaged.push(d);
                pos = d.end;
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

/// A failing first buffer (at `pos` 0; `None` elsewhere) whose header names the use the sync
/// table has an entry for, in a segment of copies: that use (a freed segment's first sector is
/// zeroed and synced before reuse, so no other use's header can be there), synced up to the
/// entry's end.
fn first_of_copies(
    image: &[u8],
    segment: u32,
    pos: usize,
    generation_high_water: u64,
    proof: Option<Proof>,
) -> Option<Proof> {
    proof.filter(|p| {
        pos == 0
            && p.generation < generation_high_water
            && BufferHeader::plausible_start(image, segment)
            && BufferHeader::generation_field(image) == p.generation
            && BufferHeader::kind_field_is_group(image)
    })
}

/// The use of a failing first buffer (at `pos` 0; `None` elsewhere), by the first witness
/// that names one: the sync table ([`first_of_copies`]), a valid buffer of its generation
/// behind it, its own record directory, the generation of the buffer behind it when its own
/// field is garbled.
fn first_buffer_use(
    image: &[u8],
    segment: u32,
    pos: usize,
    generation_high_water: u64,
    first_of_copies: Option<Proof>,
    frees_clear_directories_from: u64,
) -> Option<u64> {
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
    first_of_copies
        .map(|p| p.generation)
        .or(first_of_use)
        .or(first_alone)
        .or_else(|| {
            (pos == 0)
                .then(|| first_use_by_own_directory(image, segment, generation_high_water))
                .flatten()
        })
}

/// Where the next valid buffer of the use `g` behind the failing block at `pos` starts, if any.
fn next_of_use(image: &[u8], segment: u32, pos: usize, g: u64) -> Option<usize> {
    (pos + BLOCK_SIZE..image.len())
        .step_by(BLOCK_SIZE)
        .find(|&q| {
            BufferHeader::plausible_start(&image[q..], segment)
                && BufferHeader::decode_checked(&image[q..])
                    .is_some_and(|h| h.segment_index == segment && h.generation == g)
        })
}

/// Whether the valid buffer at `q` proves the failing stretch from `pos` to it damage, not
/// a torn write.
///
/// Only a stretch of the log that the next buffer proves durable is damage: its header
/// records a durable floor covering every batch before its own, so the stretch's batches
/// had been synced (and a synced write cannot be torn). Anything else may be a write
/// torn by a power cut, or bytes the page cache reordered: the segment ends there.
/// Except in a segment of copies: the buffers of copies behind a failing stretch are
/// taken whatever it was. Were they not synced, their sources are still there (sources
/// are freed only once their copies are synced) and a copy changes nothing; were they,
/// they may be the only copy left. The stretch's own records are not taken (a torn
/// write leaves garbage there), and stay noted (see `recover`), unless the sync table
/// proves them synced (below).
/// Or the stretch's last buffer's record directory names only batches within the next
/// buffer's floor (see `directory_vouches`: how a marker vouches).
fn proves_stretch(image: &[u8], segment: u32, pos: usize, q: usize, g: u64) -> bool {
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
}

/// Whether the segment holds copies: by its valid buffers' word, the ones before the failing
/// stretch, else the next one of its use at `next` (every buffer of a use is of one kind), and
/// only then by the failing first buffer's own kind byte, which may be what is damaged.
fn holds_copies(
    image: &[u8],
    scan: &SegmentScan,
    next: Option<usize>,
    first_of_copies: Option<Proof>,
) -> bool {
    let next_kind = next
        .and_then(|q| BufferHeader::decode_checked(&image[q..]))
        .map(|h| h.kind);
    match (scan.valid.first(), next_kind) {
        (Some((_, first)), _) => first.kind == SegmentKind::Group,
        (None, Some(kind)) => first_of_copies.is_some() || kind == SegmentKind::Group,
        (None, None) => first_of_copies.is_some() || BufferHeader::kind_field_is_group(image),
    }
}

/// The damaged stretch that starts at the failing block at `pos` of the use `g`, or `None` if
/// the walk stops there (nothing proves the stretch synced: it may be a write torn by a power
/// cut).
fn failing_stretch(
    image: &[u8],
    segment: u32,
    pos: usize,
    g: u64,
    scan: &SegmentScan,
    first_of_copies: Option<Proof>,
    proof: Option<Proof>,
) -> Option<DamagedStretch> {
    let next = next_of_use(image, segment, pos, g);
    let copies = holds_copies(image, scan, next, first_of_copies);
    // The sync table's proof, for the use it names: of a segment of copies, or of a closed
    // segment of the log (mixed on disk, whatever it was handed over to since).
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
    let proven = |q: usize| proves_stretch(image, segment, pos, q, g);
    match next.filter(|&q| proven(q)) {
        Some(q) => Some(DamagedStretch {
            start: pos,
            end: q,
            synced_end,
            log_tail: false,
            generation: g,
            copies,
        }),
        // Damage in the last synced buffers: the stretch ends where the proof does; what
        // follows is looked at like the end of any segment.
        None if pos < synced_end && (copies || log_tail) => Some(DamagedStretch {
            start: pos,
            end: synced_end,
            synced_end,
            log_tail,
            generation: g,
            copies,
        }),
        None => None,
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
