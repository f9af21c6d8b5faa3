//! The recovery scan as it was before `scan.rs`, kept only to run side by side with the one
//! segment scan (`tests_scan_side_by_side.rs`) until it is deleted.
#![allow(dead_code)]

use super::concurrency::Arc;
use std::collections::BTreeMap;

use super::api::{EngineError, Result};
use super::format::{
    self, BLOCK_SIZE, BUFFER_HEADER_SIZE, BufferHeader, RECORD_HEADER_SIZE, RecordHeader,
    RecordKind, SegmentKind, Superblock, align_up, lsn_of_version,
};
use super::index::{Entry, Index, Location, RangeDelete};
use super::segments::{SegmentInfo, SegmentManager, SegmentState};
use super::storage::{MappedFile, SECTOR_SIZE, Storage};
use super::synctable::Proof;

/// What recovery found, for logs and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub segments_scanned: u64,
    pub buffers_accepted: u64,
    pub records_accepted: u64,
    /// Buffers dropped because a batch before them was missing.
    pub buffers_discarded: u64,
    /// Damaged stretches (one or more buffers in a row that fail their checks, with a valid
    /// buffer of the same use after them or a sync table proof): damage, not a torn tail.
    /// The records of every buffer of them were salvaged (see `stretch_records`).
    pub buffers_damaged: u64,
    /// Records of damaged buffers indexed where they are so that reading them fails (EIO)
    /// instead of an older version being served.
    pub records_poisoned: u64,
    /// Damaged buffers whose record directory is damaged too: records there that nothing names
    /// are lost without their keys failing (fsck reports them).
    pub buffers_unnamed: u64,
    /// The durable floor found, and the last LSN kept.
    pub durable_floor: u64,
    pub last_lsn: u64,
}

pub struct Recovered {
    pub index: Index,
    pub infos: Vec<SegmentInfo>,
    pub next_lsn: u64,
    /// (segment, start, end) of each segment's discarded tail: from the first discarded buffer
    /// to the end of the last buffer found. The caller zeroes it all, so that no buffer of it
    /// can be found again (recovery looks past damaged buffers for valid ones).
    pub invalidate: Vec<(u32, u32, u32)>,
    pub report: RecoveryReport,
}

struct ScannedBuffer {
    segment: u32,
    offset: u32,
    header: BufferHeader,
    /// Index range into the candidate list.
    records: std::ops::Range<usize>,
}

struct Candidate {
    key: Vec<u8>,
    /// Range end for range deletes.
    end: Vec<u8>,
    kind: RecordKind,
    group: u32,
    version: u64,
    location: Location,
}

/// Rebuilds everything from the segments; every put accepted is noted in `put_notes` (see
/// `tombstones.rs`), live or not.
pub fn recover(
    storage: &Arc<dyn Storage>,
    sb: &Superblock,
    put_notes: &super::tombstones::PutNotes,
) -> Result<Recovered> {
    let mut report = RecoveryReport::default();
    let mut buffers: Vec<ScannedBuffer> = Vec::new();
    let mut candidates: Vec<Candidate> = Vec::new();
    let mut damaged: Vec<DamagedBuffer> = Vec::new();
    let mut reader = SegmentReader::new(storage, sb)?;
    // How far each segment of copies is known synced (see `synctable.rs`).
    let proofs = super::synctable::read(&**storage, sb.segment_count)?;

    for segment in 0..sb.segment_count {
        let Some(image) = reader.image(segment, &mut report)? else {
            continue;
        };
        let scan = scan_segment(
            image,
            segment,
            sb.generation_high_water,
            proofs[segment as usize],
            sb.frees_clear_directories_from,
        );
        // What the buffer right after each damaged stretch says: only in the log (mixed
        // segments) does its durable floor vouch for the stretch's batches having been durable
        // (synced before it was sealed), which tells damage from a write torn by a power cut.
        // Its floor, or a later one's of the same use (see `floor_behind`).
        let vouched: Vec<u64> = scan
            .damaged
            .iter()
            .map(|d| {
                let end = d.end;
                let mixed = scan
                    .valid
                    .iter()
                    .find(|(pos, _)| *pos == end)
                    .is_some_and(|(_, h)| h.kind == SegmentKind::Mixed);
                if mixed {
                    floor_behind(image, segment, end, d.generation)
                } else {
                    0
                }
            })
            .collect();
        for &(pos, header) in &scan.valid {
            let first = candidates.len();
            parse_records(segment, pos, &header, image, &mut candidates)?;
            buffers.push(ScannedBuffer {
                segment,
                offset: pos as u32,
                header,
                records: first..candidates.len(),
            });
        }
        // The puts of a torn tail are never served, but they are on disk: note them, so that no
        // tombstone of their keys is dropped while they are there (fsck reads them too). That
        // is the torn buffer and every buffer of this use behind it, torn or intact (a power
        // cut can keep a later buffer whole and tear an earlier one).
        if let Some(at) = scan.stopped_at {
            let generation = scan.valid.first().map(|(_, h)| h.generation);
            let mut q = at;
            while q + BLOCK_SIZE <= image.len() {
                let of_this_use = q == at
                    || (BufferHeader::plausible_start(&image[q..], segment)
                        && Some(BufferHeader::generation_field(&image[q..])) == generation);
                if of_this_use {
                    for (c, _) in salvage_records(segment, q, image.len(), None, image) {
                        if c.kind == RecordKind::Put {
                            put_notes.note_put(segment, &c.key, c.version);
                        }
                    }
                }
                q += BLOCK_SIZE;
            }
        }
        for (d, &vouched_floor) in scan.damaged.iter().zip(&vouched) {
            report.buffers_damaged += 1;
            let (records, unnamed) =
                salvage_records_and_unnamed(segment, d.start, d.end, Some(d.generation), image);
            report.buffers_unnamed += unnamed as u64;
            damaged.push(DamagedBuffer {
                segment,
                offset: d.start as u32,
                vouched_floor,
                synced_end: d.synced_end as u32,
                log_tail: d.log_tail,
                end: d.end as u32,
                generation: d.generation,
                records,
            });
        }
    }

    // The log's end: the first gap above the durable floor.
    let floor = buffers
        .iter()
        .map(|b| b.header.durable_floor)
        .max()
        .unwrap_or(0);
    let mut batches: Vec<(u64, u64)> = buffers
        .iter()
        .filter(|b| b.header.lsn_first > 0)
        .map(|b| (b.header.lsn_first, b.header.lsn_last))
        .collect();
    batches.sort_unstable();
    let mut expected = floor + 1;
    for (first, last) in batches {
        if last < expected {
            continue;
        }
        if first > expected {
            break;
        }
        expected = last + 1;
    }
    let last_lsn = expected - 1;

    // Discard buffers beyond the end, and everything after them in their segment. That
    // includes buffers of copies holding a record of a batch beyond the end (a copy made
    // before a sync that never came): no sync completed after such a buffer was written, so
    // the sources of all its copies, and of every later buffer's, are still in place.
    let mut cut: BTreeMap<u32, u32> = BTreeMap::new();
    for b in &buffers {
        if b.header.lsn_last > last_lsn {
            let at = cut.entry(b.segment).or_insert(b.offset);
            *at = (*at).min(b.offset);
        }
    }
    let keep = |b: &ScannedBuffer| cut.get(&b.segment).is_none_or(|&at| b.offset < at);
    report.buffers_discarded = buffers.iter().filter(|b| !keep(b)).count() as u64;

    // Damaged buffers: their records proven durable are taken as they are: intact ones serve
    // reads, damaged ones make reads fail (their own CRC fails) rather than let an older version
    // of the key stand in. In the log, proven by the next buffer's durable floor; in a segment
    // of copies, by the sync table (records wholly below the synced end it records, of batches
    // within the log: a damaged version far beyond it would shadow every later write of its
    // key). Otherwise a failing buffer is indistinguishable from a write torn by a power cut,
    // and is dropped like one.
    let mut salvaged: Vec<Candidate> = Vec::new();
    // (segment, end of the stretch, group) of each stretch of copies salvaged from.
    let mut salvaged_segments: Vec<(u32, u32, u32)> = Vec::new();
    // Stretches of the log zeroed below (see the log tail rule).
    let mut zero: Vec<(u32, u32, u32)> = Vec::new();
    // Segments of the log whose last buffers were taken: in use up to the stretch's end (and
    // the use's generation).
    let mut log_tails: Vec<(u32, u32, u64)> = Vec::new();
    for d in damaged {
        if cut.get(&d.segment).is_some_and(|&at| d.offset >= at) {
            continue; // beyond the log's end: discarded with the rest of the segment's tail
        }
        if d.log_tail {
            // The last buffers of a closed segment of the log, synced by the table's word.
            // Their batches are taken if every record's LSN is within the durable floor (the
            // gap logic then keeps the batches after them, since missing LSNs below the floor
            // are no gap): intact records are served, damaged ones fail reads. Otherwise (a
            // damaged version beyond the floor, or batches of the stretch above it that the
            // gap logic has just cut the log at) nothing of it is taken, as for a torn tail,
            // and the stretch is zeroed: the log's next LSNs reuse those beyond the end, and
            // a later recovery, with a higher floor, must not take the stretch then.
            let within = !d.records.is_empty()
                && d.records.iter().all(|(c, _)| {
                    let lsn = lsn_of_version(c.version);
                    lsn > 0 && lsn <= floor
                });
            if within {
                for (c, intact) in d.records {
                    if !intact {
                        report.records_poisoned += 1;
                    }
                    salvaged.push(c);
                }
                log_tails.push((d.segment, d.end, d.generation));
            } else {
                for (c, _) in d.records {
                    if c.kind == RecordKind::Put {
                        put_notes.note_put(d.segment, &c.key, c.version);
                    }
                }
                zero.push((d.segment, d.offset, d.end));
            }
            continue;
        }
        for (c, intact) in d.records {
            let lsn = lsn_of_version(c.version);
            let logged = lsn <= d.vouched_floor && lsn <= floor;
            let synced_copy =
                c.location.offset + c.location.len <= d.synced_end && lsn <= last_lsn.max(floor);
            if lsn > 0 && (logged || synced_copy) {
                if !intact {
                    report.records_poisoned += 1;
                }
                if synced_copy {
                    salvaged_segments.push((d.segment, d.synced_end, c.group));
                }
                salvaged.push(c);
            } else if c.kind == RecordKind::Put {
                // Not served, but on disk: no tombstone of its key may be dropped meanwhile.
                put_notes.note_put(d.segment, &c.key, c.version);
            }
        }
    }

    // Segment states.
    let mut infos = vec![SegmentManager::empty_info(); sb.segment_count as usize];
    let mut ranges: Vec<RangeDelete> = Vec::new();
    // Point records in the order they are accepted: buffers in scan order, then the salvaged
    // ones. Candidates were pushed in scan order, so that is ascending candidate index.
    let mut accepted: Vec<u32> = Vec::new();
    for b in buffers.iter().filter(|b| keep(b)) {
        report.buffers_accepted += 1;
        let info = &mut infos[b.segment as usize];
        if info.state == SegmentState::Free {
            *info = SegmentInfo {
                state: SegmentState::Closed,
                kind: b.header.kind,
                group: b.header.group,
                generation: b.header.generation,
                used: 0,
                max_lsn: 0,
            };
        }
        info.used = b.offset + b.header.buffer_len;
        info.max_lsn = info.max_lsn.max(b.header.lsn_last);
        for i in b.records.clone() {
            report.records_accepted += 1;
            accept(&candidates[i], i, &mut accepted, &mut ranges, put_notes);
        }
    }
    // A segment of copies whose first buffer is damaged (its use known from the sync table)
    // and that has no valid buffer at all: in use all the same, its salvaged records are here.
    for &(segment, end, group) in &salvaged_segments {
        let info = &mut infos[segment as usize];
        if info.state == SegmentState::Free {
            *info = SegmentInfo {
                state: SegmentState::Closed,
                kind: SegmentKind::Group,
                group,
                generation: proofs[segment as usize].map_or(0, |p| p.generation),
                used: end,
                max_lsn: 0,
            };
        }
        info.used = info.used.max(end);
    }
    for &(segment, end, generation) in &log_tails {
        let info = &mut infos[segment as usize];
        if info.state == SegmentState::Free {
            // A log segment whose only buffers are this damaged tail: in use all the same.
            *info = SegmentInfo {
                state: SegmentState::Closed,
                kind: SegmentKind::Mixed,
                group: super::format::NO_GROUP,
                generation,
                used: 0,
                max_lsn: 0,
            };
        }
        info.used = info.used.max(end);
    }
    let salvaged_from = candidates.len();
    candidates.extend(salvaged);
    for (i, c) in candidates.iter().enumerate().skip(salvaged_from) {
        report.records_accepted += 1;
        accept(c, i, &mut accepted, &mut ranges, put_notes);
    }
    let mut points = resolve_versions(&mut candidates, accepted);
    drop(candidates);
    // As the index does when they arrive: a range delete a newer one holds is dead.
    super::index::drop_superseded_ranges(&mut ranges);
    apply_range_deletes(&mut points, &mut ranges);
    hand_over_single_group_segments(&mut infos, &points, &ranges);

    let next_lsn = last_lsn.max(floor) + 1;
    report.durable_floor = floor;
    report.last_lsn = last_lsn.max(floor);
    Ok(Recovered {
        index: Index::from_recovered(points, ranges),
        infos,
        next_lsn,
        invalidate: cut
            .into_iter()
            .map(|(segment, at)| {
                let end = buffers
                    .iter()
                    .filter(|b| b.segment == segment)
                    .map(|b| b.offset + b.header.buffer_len)
                    .max()
                    .unwrap_or(at)
                    .max(at + BLOCK_SIZE as u32);
                (segment, at, end)
            })
            .chain(zero)
            .collect(),
        report,
    })
}

/// Hands recovery each allocated segment's image whose first block may start a buffer (a free
/// segment's first block is zeros or foreign bytes), in segment order. Through a map of the
/// segment file where the storage offers one: only the pages looked at are read, with no copy,
/// and the used segments of the next file are read ahead while this one is parsed. Otherwise
/// with `read_at` into a buffer (first block, then the whole segment).
struct SegmentReader<'a> {
    storage: &'a Arc<dyn Storage>,
    sb: &'a Superblock,
    file_lens: Vec<u64>,
    /// Maps by file: the current one and the one read ahead (`None`: the storage cannot map).
    maps: Vec<Option<Option<MappedFile>>>,
    current: Option<u32>,
    buf: Vec<u8>,
}

impl<'a> SegmentReader<'a> {
    fn new(storage: &'a Arc<dyn Storage>, sb: &'a Superblock) -> Result<Self> {
        let mut file_lens = Vec::new();
        for file in 0..sb.file_count() {
            file_lens.push(storage.file_len(file)?);
        }
        Ok(SegmentReader {
            storage,
            sb,
            maps: (0..file_lens.len()).map(|_| None).collect(),
            file_lens,
            current: None,
            buf: vec![0u8; sb.segment_size as usize],
        })
    }

    /// Maps file `file` (if not yet done) and asks for its used segments to be read ahead.
    fn map(&mut self, file: u32) -> Result<()> {
        let f = file as usize;
        if f >= self.maps.len() || self.maps[f].is_some() {
            return Ok(());
        }
        let len = self.file_lens[f];
        let map = if len == 0 {
            None
        } else {
            self.storage.map_file(file, len)?
        };
        if let Some(m) = &map {
            let seg = self.sb.segment_size as u64;
            for segment in 0..self.sb.segment_count {
                let (sf, base) = self.sb.segment_position(segment);
                if sf != file || base + seg > len {
                    continue;
                }
                let b = base as usize;
                if BufferHeader::plausible_start(&m.bytes()[b..b + BLOCK_SIZE], segment) {
                    m.will_need(b, seg as usize);
                }
            }
        }
        self.maps[f] = Some(map);
        Ok(())
    }

    /// The image of `segment`, or `None` if it was never allocated or is free.
    fn image(&mut self, segment: u32, report: &mut RecoveryReport) -> Result<Option<&[u8]>> {
        let seg_size = self.sb.segment_size as usize;
        let (file, base) = self.sb.segment_position(segment);
        if self.file_lens[file as usize] < base + seg_size as u64 {
            return Ok(None); // never allocated
        }
        report.segments_scanned += 1;
        if self.current != Some(file) {
            // Done with the earlier files: unmap them; read the next one ahead.
            for m in &mut self.maps[..file as usize] {
                *m = Some(None);
            }
            self.map(file)?;
            self.map(file + 1)?;
            self.current = Some(file);
        }
        let base = base as usize;
        if let Some(Some(m)) = &self.maps[file as usize] {
            let image = &m.bytes()[base..base + seg_size];
            return Ok(may_be_in_use(&image[..BLOCK_SIZE], segment).then_some(image));
        }
        self.storage
            .read_at(file, base as u64, &mut self.buf[..BLOCK_SIZE])?;
        if !may_be_in_use(&self.buf[..BLOCK_SIZE], segment) {
            return Ok(None);
        }
        self.storage.read_at(file, base as u64, &mut self.buf)?;
        Ok(Some(&self.buf))
    }
}

/// Whether a segment whose first block is `block` may be in use, so that recovery reads the
/// rest of it: its first buffer's header starts like one, or its first sector is not zeroed
/// (a free or never used segment has it zeroed; a damaged header of a segment in use does not,
/// see `scan_segment`'s first buffer of a use).
fn may_be_in_use(block: &[u8], segment: u32) -> bool {
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
}

struct DamagedBuffer {
    segment: u32,
    offset: u32,
    /// The durable floor of the log buffer right after it (0: none, or not in the log).
    vouched_floor: u64,
    /// Records wholly below this were synced (the sync table; 0: nothing proven).
    synced_end: u32,
    /// See [`DamagedStretch::log_tail`].
    log_tail: bool,
    /// Where the stretch ends.
    end: u32,
    /// The generation of the segment's use it belongs to.
    generation: u64,
    /// Records found in it, and whether each passed its own CRC.
    records: Vec<(Candidate, bool)>,
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
    };
    let mut pos = 0usize;
    let mut generation = None;
    while pos + BLOCK_SIZE <= image.len() {
        let valid = decode_or_repair(&image[pos..], segment).filter(|h| {
            h.segment_index == segment
                && h.generation < generation_high_water
                && generation.is_none_or(|g| g == h.generation)
        });
        if let Some(header) = valid {
            generation = Some(header.generation);
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
                && image[6] == SegmentKind::Group as u8
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
            (None, None) => first_of_copies.is_some() || image[6] == SegmentKind::Group as u8,
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
                });
                pos = synced_end;
            }
            None => {
                scan.stopped_at = Some(pos);
                break;
            }
        }
    }
    scan
}

/// The buffer at `buf[0]`, checked, or repaired if only bytes that the rest of it determines
/// are damaged: a field naming it ([`BufferHeader::decode_repaired`]), or its padding or record
/// directory ([`BufferHeader::decode_resealed`]). Either way the repaired buffer passes the
/// buffer's CRC over every byte, so it is the buffer as it was sealed: taking it is what
/// recovery would do had the damage not happened (a buffer a power cut left whole may be taken
/// whether or not it was synced). Shared by recovery, compaction and fsck, so that all three
/// take the same buffers.
pub fn decode_or_repair(buf: &[u8], segment: u32) -> Option<BufferHeader> {
    BufferHeader::decode_checked(buf).or_else(|| {
        let sector = &buf[..SECTOR_SIZE.min(buf.len())];
        if sector.iter().all(|&b| b == 0) {
            return None; // nothing was written here (or a freed segment's first sector)
        }
        BufferHeader::decode_repaired(buf, segment).or_else(|| BufferHeader::decode_resealed(buf))
    })
}

/// The records of a damaged stretch `[start, end)` of a segment image (see
/// [`stretch_records`]), each with whether its own CRC holds. A damaged range delete could hide
/// anything: only intact ones are taken, and those a record directory names (its range is the
/// directory's, under the directory's CRC).
fn salvage_records(
    segment: u32,
    start: usize,
    end: usize,
    generation: Option<u64>,
    image: &[u8],
) -> Vec<(Candidate, bool)> {
    salvage_records_and_unnamed(segment, start, end, generation, image).0
}

/// [`salvage_records`], and the stretch's buffers without an intact record directory (see
/// [`stretch_records_and_unnamed`]).
fn salvage_records_and_unnamed(
    segment: u32,
    start: usize,
    end: usize,
    generation: Option<u64>,
    image: &[u8],
) -> (Vec<(Candidate, bool)>, usize) {
    let (records, unnamed) = stretch_records_and_unnamed(image, segment, start, end, generation);
    let records = records
        .into_iter()
        .filter(|r| r.intact || r.from_directory || r.header.kind != RecordKind::DeleteRange)
        .map(|r| {
            let intact = r.intact;
            (
                Candidate::new(segment, r.at, &r.header, r.key, r.range_end),
                intact,
            )
        })
        .collect();
    (records, unnamed)
}

/// A record found in a stretch that fails its buffer checks (see [`stretch_records`]).
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
    let walked_unnamed = |w: usize| image.get(w + 4..w + 6) != Some(&1u16.to_le_bytes()[..]);
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

/// Takes candidate `c` (number `i`) into the index being rebuilt: point records are listed
/// in `accepted` (resolved by [`resolve_versions`]), range deletes collected (applied
/// afterwards); puts are noted (see `tombstones.rs`).
fn accept(
    c: &Candidate,
    i: usize,
    accepted: &mut Vec<u32>,
    ranges: &mut Vec<RangeDelete>,
    put_notes: &super::tombstones::PutNotes,
) {
    if c.kind == RecordKind::Put {
        put_notes.note_put(c.location.segment, &c.key, c.version);
    }
    if c.kind == RecordKind::DeleteRange {
        ranges.push(RangeDelete {
            start: c.key.clone(),
            end: c.end.clone(),
            version: c.version,
            location: c.location,
            group: c.group,
        });
        return;
    }
    accepted.push(i as u32);
}

/// The point entries: per key, the accepted record of the highest version; of equal versions
/// (a copy and its source both on disk) the one accepted first. Sorted in bulk and built into
/// the map in one go rather than inserted one by one (a million B-tree look-ups with key
/// comparisons were most of the CPU time of recovering a store of small records). Keys are
/// moved out of `candidates`.
fn resolve_versions(
    candidates: &mut [Candidate],
    accepted: Vec<u32>,
) -> BTreeMap<Box<[u8]>, Entry> {
    /// The first 16 bytes of the key, big-endian and zero-padded: compares as the key does,
    /// except between keys equal in those bytes (then the whole keys are compared).
    fn prefix(key: &[u8]) -> u128 {
        let mut b = [0u8; 16];
        let n = key.len().min(16);
        b[..n].copy_from_slice(&key[..n]);
        u128::from_be_bytes(b)
    }
    let mut order: Vec<(u128, u64, u32)> = accepted
        .into_iter()
        .map(|i| {
            let c = &candidates[i as usize];
            (prefix(&c.key), c.version, i)
        })
        .collect();
    // Key ascending, then version descending, then acceptance order (index ascending).
    order.sort_unstable_by(|a, b| {
        a.0.cmp(&b.0)
            .then_with(|| {
                candidates[a.2 as usize]
                    .key
                    .cmp(&candidates[b.2 as usize].key)
            })
            .then(b.1.cmp(&a.1))
            .then(a.2.cmp(&b.2))
    });
    let mut sorted: Vec<(Box<[u8]>, Entry)> = Vec::with_capacity(order.len());
    for (_, _, i) in order {
        let c = &mut candidates[i as usize];
        if sorted.last().is_some_and(|(k, _)| **k == *c.key) {
            continue; // an older version, or a later-accepted copy of the same version
        }
        let entry = Entry {
            location: c.location,
            version: c.version,
            group: c.group,
            tombstone: c.kind == RecordKind::Delete,
        };
        sorted.push((std::mem::take(&mut c.key).into_boxed_slice(), entry));
    }
    // Already sorted and without duplicates: the map is bulk-built.
    sorted.into_iter().collect()
}

/// The record at `at` of a segment image, with header `h`, as a recovery candidate.
fn candidate(segment: u32, at: usize, h: &RecordHeader, image: &[u8]) -> Candidate {
    let key_at = at + RECORD_HEADER_SIZE;
    let value_at = key_at + h.key_len as usize;
    let end = if h.kind == RecordKind::DeleteRange {
        image[value_at..value_at + h.value_len as usize].to_vec()
    } else {
        Vec::new()
    };
    Candidate::new(segment, at, h, image[key_at..value_at].to_vec(), end)
}

impl Candidate {
    /// The record at `at` of `segment`, with header `h`, key `key` and range end `end`.
    fn new(segment: u32, at: usize, h: &RecordHeader, key: Vec<u8>, end: Vec<u8>) -> Candidate {
        Candidate {
            key,
            end,
            kind: h.kind,
            group: h.group,
            version: h.version,
            location: Location {
                segment,
                offset: at as u32,
                len: h.total_len() as u32,
            },
        }
    }
}

fn parse_records(
    segment: u32,
    buffer_offset: usize,
    header: &BufferHeader,
    image: &[u8],
    out: &mut Vec<Candidate>,
) -> Result<()> {
    for (at, h) in records_of(segment, buffer_offset, header, image)? {
        out.push(candidate(segment, at, &h, image));
        debug_assert!(lsn_of_version(h.version) <= header.lsn_last || header.lsn_last == 0);
    }
    Ok(())
}

/// A mixed segment whose live records all belong to one group is that group's: the rule the
/// separator applies when it hands a mixed segment over without copying (the hand-over is not
/// written down; recovery finds it again). Mixed segments with several groups' live records
/// stay mixed, and the separator sorts them again.
fn hand_over_single_group_segments(
    infos: &mut [SegmentInfo],
    points: &BTreeMap<Box<[u8]>, Entry>,
    ranges: &[RangeDelete],
) {
    // segment -> Some(its only group) or None (several groups)
    let mut owner: BTreeMap<u32, Option<u32>> = BTreeMap::new();
    let live = points
        .values()
        .map(|e| (e.location.segment, e.group))
        .chain(ranges.iter().map(|r| (r.location.segment, r.group)));
    for (segment, group) in live {
        if infos[segment as usize].kind != SegmentKind::Mixed {
            continue;
        }
        owner
            .entry(segment)
            .and_modify(|o| {
                if *o != Some(group) {
                    *o = None
                }
            })
            .or_insert(Some(group));
    }
    for (segment, group) in owner {
        if let Some(group) = group {
            let info = &mut infos[segment as usize];
            info.kind = SegmentKind::Group;
            info.group = group;
        }
    }
}

/// Drops every point entry that a range delete of a higher version covers: one sweep over the
/// keys in order, keeping the range deletes that have started and not yet ended.
fn apply_range_deletes(points: &mut BTreeMap<Box<[u8]>, Entry>, ranges: &mut [RangeDelete]) {
    if ranges.is_empty() {
        return;
    }
    ranges.sort_by(|a, b| a.start.cmp(&b.start));
    let mut next_range = 0;
    let mut active: Vec<&RangeDelete> = Vec::new();
    let mut doomed: Vec<Box<[u8]>> = Vec::new();
    for (key, entry) in points.iter() {
        while next_range < ranges.len() && ranges[next_range].start.as_slice() <= &key[..] {
            active.push(&ranges[next_range]);
            next_range += 1;
        }
        active.retain(|r| r.end.is_empty() || &key[..] < r.end.as_slice());
        if active.iter().any(|r| r.version > entry.version) {
            doomed.push(key.clone());
        }
    }
    for key in doomed {
        points.remove(&key);
    }
}
