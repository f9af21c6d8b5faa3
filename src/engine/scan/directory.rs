//! Record directories as witnesses: a buffer's record directory (`format.rs`) names its records
//! and its use independently of its header, so where a header or a record is damaged it still
//! tells which records a buffer held, which use a failing first buffer belongs to, where a log
//! tail ends, and (with the durable floor of the buffers behind) whether a stretch was synced.

use super::super::format::{
    self, BLOCK_SIZE, BUFFER_HEADER_SIZE, BufferHeader, RecordHeader, lsn_of_version,
};
use super::stretch::StretchRecord;

/// The records named by the intact record directory of the stretch's use that ends where the
/// buffer at `b` may end (see [`stretch_records`]): `(where that directory's buffer starts, at
/// `b` or after it, its records, where it ends)`; `None` if there is none.
pub(super) fn directory_records(
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
