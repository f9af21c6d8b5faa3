//! Recovery: rebuilds the index, the segments' states and live bytes, and the log position from
//! the segments on disk, before an engine is handed out.
//!
//! 1. Each allocated segment is read from its first buffer; the scan stops at the first buffer
//!    that fails its checks (magic, lengths, CRC over header and payload), belongs to another
//!    segment, or has another generation than the segment's first buffer. What follows it is
//!    torn, unsynced or left from an earlier use of the segment, unless it is proven damage:
//!    a valid buffer of the same use follows and proves the stretch synced, or, in a segment of
//!    copies, the sync table (`synctable.rs`) records it synced (see [`scan::scan_segment`]);
//!    or, in a closed segment of the log, the table records its last buffers synced (a *log
//!    tail*, taken only if all its records' LSNs are within the durable floor, else zeroed).
//!    The records of a damaged stretch are salvaged one by one, in every buffer of it (see
//!    `scan::stretch_records`): intact ones are served, damaged ones indexed where they are so
//!    that reads fail rather than serve an older version.
//! 2. The *durable floor* is the highest floor any valid buffer header records: every batch up
//!    to it was durable when that buffer was sealed. Above the floor, batches must follow each
//!    other without a gap; the first missing LSN ends the log, and every buffer holding a batch
//!    beyond it is discarded (a later batch must never survive without an earlier one). Below
//!    the floor, missing batches were freed after being made durable and copied or superseded.
//! 3. Per key the highest version wins (copies keep versions, so a relocated copy never beats a
//!    newer write); keys covered by a range delete of a higher version are dropped.
//! 4. The caller zeroes the first block of every discarded buffer (so that it cannot come back
//!    when new batches reuse its LSNs) and syncs, before accepting writes.

use super::concurrency::Arc;
use std::collections::BTreeMap;

use super::api::{EngineError, Result};
use super::format::summaries::{self, SegmentSummary, SummaryBuffer, SummaryRecord};
use super::format::{
    BLOCK_SIZE, BUFFER_HEADER_SIZE, BufferHeader, RECORD_HEADER_SIZE, RecordHeader, RecordKind,
    SegmentKind, Superblock,
};
use super::index::{Entry, Index, Location, RangeDelete};
use super::scan::{self, LogEnd, Stretch, StretchRecord, Take, may_be_in_use};
use super::segments::{RecoveredTraces, SegmentInfo, SegmentManager, SegmentState};
use super::storage::{MappedFile, Storage};
use super::synctable::Proof;

/// What recovery found, for logs and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments read whole (their first block may start a buffer).
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
    /// Segments taken from their summaries (`summaries.rs`) instead of being read.
    pub segments_summarized: u64,
    /// Segments taken as an index checkpoint describes them (`checkpoint.rs`), unread.
    pub segments_checkpointed: u64,
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
    /// Summaries of the segments read whole whose scan found no damage (see `summaries.rs`):
    /// a writable open writes those that still hold once what recovery accepted is durable, so
    /// that the next crash need not read them again.
    pub scanned_summaries: Vec<SegmentSummary>,
    /// What the running engine keeps up to date for its checkpoint.
    pub traces: RecoveredTraces,
}

/// What an index checkpoint (`checkpoint.rs`) gives recovery: the resolved index and the state
/// of the segments in use when it was taken, every record it names durable then.
pub struct Base {
    /// The highest durable floor a buffer of a segment in use recorded, and that segment.
    pub floor: u64,
    pub floor_segment: Option<u32>,
    /// The segments closed then whose records the index accounts for, by segment.
    pub closed: BTreeMap<u32, BaseSegment>,
    /// Sorted by key, unique.
    pub points: Vec<(Box<[u8]>, Entry)>,
    pub ranges: Vec<RangeDelete>,
}

/// A closed segment of a [`Base`]: what it held then, valid while its first buffer's header on
/// disk is `first_header` (a freed segment's first sector is zeroed, a reused one has another
/// generation).
pub struct BaseSegment {
    pub first_header: [u8; BUFFER_HEADER_SIZE],
    pub used: u32,
    pub max_lsn: u64,
    pub notes: Vec<(u64, u64)>,
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

/// Rebuilds everything from the segments, reading every one; every put accepted is noted in
/// `put_notes` (see `tombstones.rs`), live or not.
#[cfg(test)]
pub fn recover(
    storage: &Arc<dyn Storage>,
    sb: &Superblock,
    put_notes: &super::tombstones::PutNotes,
) -> Result<Recovered> {
    recover_summarized(storage, sb, put_notes, BTreeMap::new())
}

/// [`recover`], taking each segment whose summary in `summaries` still holds (its first
/// buffer's header on disk is the one summarized) from the summary instead of reading it.
pub fn recover_summarized(
    storage: &Arc<dyn Storage>,
    sb: &Superblock,
    put_notes: &super::tombstones::PutNotes,
    summaries: BTreeMap<u32, SegmentSummary>,
) -> Result<Recovered> {
    let rebuilt = rebuild(storage, sb, put_notes, summaries, None)?;
    Ok(rebuilt.expect("without a base, recovery always rebuilds"))
}

/// [`recover_summarized`] on top of an index checkpoint's `base`: each segment it describes
/// whose first header on disk is still the one it recorded is taken from it unread, and every
/// other segment is read (or taken from its summary); rebuilds exactly what reading every
/// segment would. `None` (put notes forgotten: the caller reads everything) where the
/// segments read cannot tell the log's end by themselves: the highest durable floor lay in a
/// segment since freed and none read records as high a one, or an unread segment holds
/// batches above the floor (the gaps above it would then have to be sought in its buffers).
pub fn recover_from_checkpoint(
    storage: &Arc<dyn Storage>,
    sb: &Superblock,
    put_notes: &super::tombstones::PutNotes,
    summaries: BTreeMap<u32, SegmentSummary>,
    base: Base,
) -> Result<Option<Recovered>> {
    let rebuilt = rebuild(storage, sb, put_notes, summaries, Some(base))?;
    if rebuilt.is_none() {
        for segment in 0..sb.segment_count {
            put_notes.forget_segment(segment);
        }
    }
    Ok(rebuilt)
}

fn rebuild(
    storage: &Arc<dyn Storage>,
    sb: &Superblock,
    put_notes: &super::tombstones::PutNotes,
    summaries: BTreeMap<u32, SegmentSummary>,
    mut base: Option<Base>,
) -> Result<Option<Recovered>> {
    let mut report = RecoveryReport::default();
    let claims = (base.iter())
        .flat_map(|b| b.closed.iter().map(|(&s, c)| (s, c.first_header)))
        .collect();
    let mut reader = SegmentReader::new(storage, sb, summaries, claims)?;
    // How far each segment of copies is known synced (see `synctable.rs`).
    let proofs = super::synctable::read(&**storage, sb.segment_count)?;
    let Scanned {
        buffers,
        mut candidates,
        stretches,
        summaries: scanned_summaries,
        unread,
    } = scan_segments(&mut reader, sb, &proofs, put_notes, &mut report)?;

    // The log's end: the first gap above the durable floor. The unread segments' buffers
    // weigh in through the highest floor they record (where it is known to be still on disk)
    // and must hold nothing above the floor.
    let mut floor_at_least = 0;
    if let Some(base) = &base {
        let read_floor = (buffers.iter()).map(|b| b.header.durable_floor).max();
        if base.floor_segment.is_some_and(|s| unread.contains_key(&s)) {
            floor_at_least = base.floor;
        } else if read_floor.unwrap_or(0) < base.floor {
            return Ok(None);
        }
    }
    let LogEnd {
        floor, last_lsn, ..
    } = scan::log_end_above(floor_at_least, buffers.iter().map(|b| &b.header));
    if let Some(base) = &base
        && unread.keys().any(|s| base.closed[s].max_lsn > floor)
    {
        return Ok(None);
    }

    // Discard buffers beyond the end, and everything after them in their segment. That
    // includes buffers of copies holding a record of a batch beyond the end (a copy made
    // before a sync that never came): no sync completed after such a buffer was written, so
    // the sources of all its copies, and of every later buffer's, are still in place.
    let cut = scan::cut_beyond(
        buffers.iter().map(|b| (b.segment, b.offset, &b.header)),
        last_lsn,
    );
    let keep = |b: &ScannedBuffer| cut.get(&b.segment).is_none_or(|&at| b.offset < at);
    report.buffers_discarded = buffers.iter().filter(|b| !keep(b)).count() as u64;

    let salvaged = salvage_stretches(stretches, &cut, floor, last_lsn, put_notes, &mut report);

    // Segment states.
    let mut infos = vec![SegmentManager::empty_info(); sb.segment_count as usize];
    let mut ranges: Vec<RangeDelete> = Vec::new();
    // Point records in the order they are accepted: buffers in scan order, then the salvaged
    // ones. Candidates were pushed in scan order, so that is ascending candidate index.
    let mut accepted: Vec<u32> = Vec::new();
    let mut floor_anchor = (0, 0);
    for b in buffers.iter().filter(|b| keep(b)) {
        report.buffers_accepted += 1;
        take_buffer_segment(&mut infos[b.segment as usize], b);
        if b.header.durable_floor >= floor_anchor.0 {
            floor_anchor = (b.header.durable_floor, b.segment);
        }
        for i in b.records.clone() {
            report.records_accepted += 1;
            accept(&candidates[i], i, &mut accepted, &mut ranges, put_notes);
        }
    }
    mark_salvaged_segments_in_use(&mut infos, &salvaged, &proofs);
    let ranges_from_buffers = ranges.len();
    let salvaged_from = candidates.len();
    candidates.extend(salvaged.records);
    for (i, c) in candidates.iter().enumerate().skip(salvaged_from) {
        report.records_accepted += 1;
        accept(c, i, &mut accepted, &mut ranges, put_notes);
    }
    let mut unindexed_holders = Vec::new();
    let resolved = resolve_versions(
        &mut candidates,
        accepted,
        salvaged_from,
        &mut unindexed_holders,
    );
    drop(candidates);
    let mut points = match base.as_mut() {
        None => resolved.into_iter().map(|(k, e, _)| (k, e)).collect(),
        Some(base) => {
            for (&segment, h) in &unread {
                let c = base
                    .closed
                    .remove(&segment)
                    .expect("only claims are unread");
                infos[segment as usize] = SegmentInfo {
                    state: SegmentState::Closed,
                    kind: h.kind,
                    group: h.group,
                    generation: h.generation,
                    used: c.used,
                    max_lsn: c.max_lsn,
                };
                put_notes.set_items(segment, c.notes);
                if base.floor_segment == Some(segment) && base.floor >= floor_anchor.0 {
                    floor_anchor = (base.floor, segment);
                }
            }
            report.segments_checkpointed = unread.len() as u64;
            let mut unread_at = vec![false; sb.segment_count as usize];
            for &segment in unread.keys() {
                unread_at[segment as usize] = true;
            }
            let in_unread = |l: &Location| unread_at[l.segment as usize];
            let taken = std::mem::take(&mut base.points);
            let from_base = taken.into_iter().filter(|(_, e)| in_unread(&e.location));
            ranges = with_base_ranges(&base.ranges, ranges, ranges_from_buffers, in_unread);
            merge_with_base(from_base, resolved, &mut unindexed_holders)
        }
    };
    // As the index does when they arrive: a range delete a newer one holds is dead (and stays
    // on disk unindexed, as does a tombstone one covers).
    let before: Vec<Location> = ranges.iter().map(|r| r.location).collect();
    super::index::drop_superseded_ranges(&mut ranges);
    let kept: std::collections::BTreeSet<(u32, u32)> = (ranges.iter())
        .map(|r| (r.location.segment, r.location.offset))
        .collect();
    unindexed_holders.extend(
        (before.iter())
            .filter(|l| !kept.contains(&(l.segment, l.offset)))
            .map(|l| l.segment),
    );
    apply_range_deletes(&mut points, &mut ranges, &mut unindexed_holders);
    hand_over_single_group_segments(&mut infos, &points, &ranges);
    unindexed_holders.sort_unstable();
    unindexed_holders.dedup();

    let next_lsn = last_lsn.max(floor) + 1;
    report.durable_floor = floor;
    report.last_lsn = last_lsn.max(floor);
    Ok(Some(Recovered {
        index: Index::from_recovered(points, ranges),
        infos,
        next_lsn,
        invalidate: invalidated(cut, &buffers, salvaged.zero),
        report,
        scanned_summaries,
        traces: RecoveredTraces {
            unindexed_holders,
            floor_anchor,
        },
    }))
}

/// The range deletes of the base in unread segments joined to those accepted (`accepted`,
/// the first `from_buffers` of them from valid buffers, then salvaged ones), in the order a
/// scan of every segment accepts them: valid buffers' by segment and offset, then salvaged.
fn with_base_ranges(
    base: &[RangeDelete],
    accepted: Vec<RangeDelete>,
    from_buffers: usize,
    in_unread: impl Fn(&Location) -> bool,
) -> Vec<RangeDelete> {
    let mut all: Vec<(bool, u32, u32, RangeDelete)> = (base.iter())
        .filter(|r| in_unread(&r.location))
        .map(|r| (false, r.location.segment, r.location.offset, r.clone()))
        .collect();
    for (i, r) in accepted.into_iter().enumerate() {
        all.push((i >= from_buffers, r.location.segment, r.location.offset, r));
    }
    all.sort_by_key(|(salvaged, segment, offset, _)| (*salvaged, *segment, *offset));
    all.into_iter().map(|(_, _, _, r)| r).collect()
}

/// The base's point entries in unread segments (sorted) merged with the resolved entries of
/// the segments read (sorted, each with whether it was salvaged): per key the higher version;
/// of equal versions, the one a scan of every segment accepts first (valid buffers' records
/// by segment and offset, salvaged ones after). The loser of equal versions (a copy's source
/// or the copy itself) and a losing tombstone stay on disk unindexed: their segments join
/// `unindexed_holders`.
fn merge_with_base(
    base: impl Iterator<Item = (Box<[u8]>, Entry)>,
    read: Vec<(Box<[u8]>, Entry, bool)>,
    unindexed_holders: &mut Vec<u32>,
) -> BTreeMap<Box<[u8]>, Entry> {
    if read.is_empty() {
        return base.collect(); // a clean mount's
    }
    let mut merged: Vec<(Box<[u8]>, Entry)> = Vec::with_capacity(read.len());
    let mut base = base.peekable();
    let rank = |e: &Entry, salvaged: bool| (salvaged, e.location.segment, e.location.offset);
    for (key, entry, salvaged) in read {
        while let Some((k, _)) = base.peek()
            && *k < key
        {
            merged.push(base.next().expect("peeked"));
        }
        let Some((_, b)) = base.next_if(|(k, _)| *k == key) else {
            merged.push((key, entry));
            continue;
        };
        let read_wins = entry.version > b.version
            || (entry.version == b.version && rank(&entry, salvaged) < rank(&b, false));
        let loser = if read_wins { &b } else { &entry };
        if entry.version == b.version || loser.tombstone {
            unindexed_holders.push(loser.location.segment);
        }
        merged.push((key, if read_wins { entry } else { b }));
    }
    merged.extend(base);
    merged.into_iter().collect()
}

/// What the scan of every segment found, before the log's end is known.
struct Scanned {
    buffers: Vec<ScannedBuffer>,
    candidates: Vec<Candidate>,
    stretches: Vec<(u32, Stretch)>,
    summaries: Vec<SegmentSummary>,
    /// Segments whose claim held (see `SegmentReader::claims`), with their first header: not
    /// read.
    unread: BTreeMap<u32, BufferHeader>,
}

/// Step 1: scans every allocated segment: its valid buffers and their records, its damaged
/// stretches. The puts of torn tails are noted in `put_notes` (on disk, though never served).
fn scan_segments(
    reader: &mut SegmentReader,
    sb: &Superblock,
    proofs: &[Option<Proof>],
    put_notes: &super::tombstones::PutNotes,
    report: &mut RecoveryReport,
) -> Result<Scanned> {
    let mut buffers: Vec<ScannedBuffer> = Vec::new();
    let mut candidates: Vec<Candidate> = Vec::new();
    let mut stretches: Vec<(u32, Stretch)> = Vec::new();
    let mut summaries: Vec<SegmentSummary> = Vec::new();
    let mut unread = BTreeMap::new();
    let progress = super::progress::Pass::begin("scanning the store", sb.segment_count as u64);
    for segment in 0..sb.segment_count {
        progress.advance(segment as u64);
        if let Some(header) = reader.claim_that_holds(segment)? {
            unread.insert(segment, header);
            continue;
        }
        if let Some((summary, tail_puts)) = reader.summary_that_holds(segment)? {
            report.segments_summarized += 1;
            // As for the records of a torn tail below.
            for (key, version) in tail_puts {
                put_notes.note_put(segment, &key, version);
            }
            for (offset, header, records) in summary {
                let first = candidates.len();
                candidates.extend(records.into_iter().map(|r| Candidate::of(segment, r)));
                buffers.push(ScannedBuffer {
                    segment,
                    offset,
                    header,
                    records: first..candidates.len(),
                });
            }
            continue;
        }
        let Some(image) = reader.image(segment, report)? else {
            continue;
        };
        let verdicts = scan::segment_verdicts(
            image,
            segment,
            sb.generation_high_water,
            proofs[segment as usize],
            sb.frees_clear_directories_from,
            false,
        );
        summaries.extend(summary_of_scan(image, segment, &verdicts));
        for b in verdicts.valid {
            if let Some(p) = b.malformed_at {
                // The buffer's CRC matched, so this is not a torn write: the format is violated.
                return Err(EngineError::Corrupt(format!(
                    "segment {segment}, buffer at {}: malformed record at payload offset {p}",
                    b.at
                )));
            }
            let first = candidates.len();
            candidates.extend(b.records.into_iter().map(|r| Candidate::of(segment, r)));
            buffers.push(ScannedBuffer {
                segment,
                offset: b.at as u32,
                header: b.header,
                records: first..candidates.len(),
            });
        }
        // The puts of a torn tail are never served, but they are on disk: note them, so that no
        // tombstone of their keys is dropped while they are there (fsck reads them too).
        for r in verdicts.torn {
            if r.header.kind == RecordKind::Put {
                put_notes.note_put(segment, &r.key, r.header.version);
            }
        }
        for stretch in verdicts.stretches {
            report.buffers_damaged += 1;
            report.buffers_unnamed += stretch.unnamed as u64;
            stretches.push((segment, stretch));
        }
    }
    Ok(Scanned {
        buffers,
        candidates,
        stretches,
        summaries,
        unread,
    })
}

/// The summary of a segment as its scan read it: its valid buffers, and the puts behind its
/// end (as `summaries.rs` writes them), if it is worth reading.
fn summary_of_scan(
    image: &[u8],
    segment: u32,
    verdicts: &scan::Verdicts,
) -> Option<SegmentSummary> {
    // A segment with damage gets one too, which its check against a scan refuses before it
    // is written (`summaries.rs`, rule 1): that check is the one place the rule lives.
    let first = verdicts.valid.first()?;
    // Decided before any key is copied (most segments of small records are not).
    let encoded: usize = (verdicts.valid.iter())
        .flat_map(|b| &b.records)
        .map(|r| summaries::record_encoded_len(r.key.len(), r.range_end.len()))
        .sum::<usize>()
        + verdicts.valid.len() * summaries::BUFFER_ENCODED_LEN;
    let last = verdicts.valid.last()?;
    if !super::summaries::worth_reading(encoded, last.at as u32 + last.header.buffer_len) {
        return None;
    }
    let raw = |at: usize, len: usize| image[at..at + len].to_vec();
    let mut buffers = Vec::with_capacity(verdicts.valid.len());
    for b in &verdicts.valid {
        if b.malformed_at.is_some() {
            return None;
        }
        buffers.push(SummaryBuffer {
            offset: b.at as u32,
            header: raw(b.at, BUFFER_HEADER_SIZE).try_into().ok()?,
            records: (b.records.iter())
                .map(|r| SummaryRecord {
                    at: r.at as u32,
                    header: raw(r.at, RECORD_HEADER_SIZE).try_into().unwrap(),
                    key: r.key.clone(),
                    range_end: r.range_end.clone(),
                })
                .collect(),
        });
    }
    Some(SegmentSummary {
        segment,
        generation: first.header.generation,
        buffers,
        tail_puts: (verdicts.torn.iter())
            .filter(|r| r.header.kind == RecordKind::Put)
            .map(|r| (r.key.clone(), r.header.version))
            .collect(),
    })
}

/// What recovery takes of the damaged stretches (see [`salvage_stretches`]).
struct Salvaged {
    records: Vec<Candidate>,
    /// (segment, end of the stretch, group) of each stretch of copies salvaged from.
    copies: Vec<(u32, u32, u32)>,
    /// Stretches of the log zeroed (see the log tail rule).
    zero: Vec<(u32, u32, u32)>,
    /// Segments of the log whose last buffers were taken: in use up to the stretch's end (and
    /// the use's generation).
    log_tails: Vec<(u32, u32, u64)>,
}

/// Damaged stretches: their records proven durable (see `Stretch::takes`) are taken as they
/// are: intact ones serve reads, damaged ones make reads fail (their own CRC fails) rather
/// than let an older version of the key stand in. Otherwise a failing buffer is
/// indistinguishable from a write torn by a power cut, and is dropped like one.
fn salvage_stretches(
    stretches: Vec<(u32, Stretch)>,
    cut: &BTreeMap<u32, u32>,
    floor: u64,
    last_lsn: u64,
    put_notes: &super::tombstones::PutNotes,
    report: &mut RecoveryReport,
) -> Salvaged {
    let mut salvaged: Vec<Candidate> = Vec::new();
    let mut salvaged_segments: Vec<(u32, u32, u32)> = Vec::new();
    let mut zero: Vec<(u32, u32, u32)> = Vec::new();
    let mut log_tails: Vec<(u32, u32, u64)> = Vec::new();
    for (segment, stretch) in stretches {
        let d = stretch.span;
        if cut.get(&segment).is_some_and(|&at| d.start as u32 >= at) {
            continue; // beyond the log's end: discarded with the rest of the segment's tail
        }
        let takes = stretch.takes(floor, last_lsn);
        if d.log_tail && !takes.first().is_some_and(|t| t.taken()) {
            // A log tail with a damaged version beyond the floor, or batches of the stretch
            // above it that the gap logic has just cut the log at: nothing of it is taken, as
            // for a torn tail, and the stretch is zeroed: the log's next LSNs reuse those beyond
            // the end, and a later recovery, with a higher floor, must not take the stretch
            // then.
            for r in &stretch.records {
                if r.header.kind == RecordKind::Put {
                    put_notes.note_put(segment, &r.key, r.header.version);
                }
            }
            zero.push((segment, d.start as u32, d.end as u32));
            continue;
        }
        if d.log_tail {
            log_tails.push((segment, d.end as u32, d.generation));
        }
        for (r, take) in stretch.records.into_iter().zip(takes) {
            if take.taken() {
                if !r.intact {
                    report.records_poisoned += 1;
                }
                if take == Take::SyncedCopy {
                    salvaged_segments.push((segment, d.synced_end as u32, r.header.group));
                }
                salvaged.push(Candidate::of(segment, r));
            } else if r.header.kind == RecordKind::Put {
                // Not served, but on disk: no tombstone of its key may be dropped meanwhile.
                put_notes.note_put(segment, &r.key, r.header.version);
            }
        }
    }
    Salvaged {
        records: salvaged,
        copies: salvaged_segments,
        zero,
        log_tails,
    }
}

/// The segment's state as far as the accepted buffer `b` shows it: closed, in the use of its
/// first buffer, used up to `b`'s end.
fn take_buffer_segment(info: &mut SegmentInfo, b: &ScannedBuffer) {
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
}

/// Segments that hold salvaged records or a taken log tail are in use up to their end, even
/// with no valid buffer at all.
fn mark_salvaged_segments_in_use(
    infos: &mut [SegmentInfo],
    salvaged: &Salvaged,
    proofs: &[Option<Proof>],
) {
    // A segment of copies whose first buffer is damaged (its use known from the sync table)
    // and that has no valid buffer at all: in use all the same, its salvaged records are here.
    for &(segment, end, group) in &salvaged.copies {
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
    for &(segment, end, generation) in &salvaged.log_tails {
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
}

/// What the caller zeroes: each segment's discarded tail, from the cut to the end of the last
/// buffer found there (a block at least), then the log tails dropped (`zero`).
fn invalidated(
    cut: BTreeMap<u32, u32>,
    buffers: &[ScannedBuffer],
    zero: Vec<(u32, u32, u32)>,
) -> Vec<(u32, u32, u32)> {
    cut.into_iter()
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
        .collect()
}

/// Hands recovery each allocated segment's image whose first block may start a buffer (a free
/// segment's first block is zeros or foreign bytes), in segment order. Through a map of the
/// segment file where the storage offers one: only the pages looked at are read, with no copy,
/// and the used segments of the next file are read ahead while this one is parsed. Otherwise
/// with `read_at` into a buffer (first block, then the whole segment).
struct SegmentReader<'a> {
    storage: &'a Arc<dyn Storage>,
    sb: &'a Superblock,
    /// Summaries that may stand in for their segments (only their first block is read ahead),
    /// each taken out once its segment is reached.
    summaries: BTreeMap<u32, SegmentSummary>,
    /// The first buffer headers an index checkpoint recorded of the segments it describes
    /// (`Base::closed`): such a segment is not read while its header is still on disk.
    claims: BTreeMap<u32, [u8; BUFFER_HEADER_SIZE]>,
    file_lens: Vec<u64>,
    /// Maps by file: the current one and the one read ahead (`None`: the storage cannot map).
    maps: Vec<Option<Option<MappedFile>>>,
    current: Option<u32>,
    buf: Vec<u8>,
}

impl<'a> SegmentReader<'a> {
    fn new(
        storage: &'a Arc<dyn Storage>,
        sb: &'a Superblock,
        summaries: BTreeMap<u32, SegmentSummary>,
        claims: BTreeMap<u32, [u8; BUFFER_HEADER_SIZE]>,
    ) -> Result<Self> {
        let mut file_lens = Vec::new();
        for file in 0..sb.file_count() {
            file_lens.push(storage.file_len(file)?);
        }
        Ok(SegmentReader {
            storage,
            sb,
            summaries,
            claims,
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
            let in_file: Vec<(u32, usize)> = (0..self.sb.segment_count)
                .map(|segment| (segment, self.sb.segment_position(segment)))
                .filter(|&(_, (sf, base))| sf == file && base + seg <= len)
                .map(|(segment, (_, base))| (segment, base as usize))
                .collect();
            // Every first block is looked at: their reads all in flight at once, not one page
            // fault after the other.
            for &(_, b) in &in_file {
                m.will_need(b, BLOCK_SIZE);
            }
            for (segment, b) in in_file {
                // A summarized or checkpointed segment: only its first header is read
                // (`summary_that_holds`, `claim_that_holds`).
                let whole = !self.summaries.contains_key(&segment)
                    && !self.claims.contains_key(&segment)
                    && BufferHeader::plausible_start(&m.bytes()[b..b + BLOCK_SIZE], segment);
                if whole {
                    m.will_need(b, seg as usize);
                }
            }
        }
        self.maps[f] = Some(map);
        Ok(())
    }

    /// Whether `segment`'s bytes lie in an allocated part of its file; if so its file is the
    /// current one from now on.
    fn enter(&mut self, segment: u32) -> Result<bool> {
        let (file, base) = self.sb.segment_position(segment);
        if self.file_lens[file as usize] < base + self.sb.segment_size as u64 {
            return Ok(false); // never allocated
        }
        if self.current != Some(file) {
            // Done with the earlier files: unmap them; read the next one ahead.
            for m in &mut self.maps[..file as usize] {
                *m = Some(None);
            }
            self.map(file)?;
            self.map(file + 1)?;
            self.current = Some(file);
        }
        Ok(true)
    }

    /// The header of `segment`'s first buffer, if a checkpoint claims the segment and the claim
    /// holds: that header is still on disk (a free or reused segment has another first sector).
    fn claim_that_holds(&mut self, segment: u32) -> Result<Option<BufferHeader>> {
        let Some(claimed) = self.claims.remove(&segment) else {
            return Ok(None);
        };
        if !self.enter(segment)? || self.first_header(segment)? != claimed {
            return Ok(None);
        }
        Ok(BufferHeader::decode_copy(
            &claimed,
            self.sb.segment_size as usize,
        ))
    }

    /// The first `BUFFER_HEADER_SIZE` bytes of `segment` (entered).
    fn first_header(&self, segment: u32) -> Result<[u8; BUFFER_HEADER_SIZE]> {
        let (file, base) = self.sb.segment_position(segment);
        let mut head = [0u8; BUFFER_HEADER_SIZE];
        match &self.maps[file as usize] {
            Some(Some(m)) => {
                head.copy_from_slice(&m.bytes()[base as usize..base as usize + BUFFER_HEADER_SIZE])
            }
            _ => self.storage.read_at(file, base, &mut head)?,
        }
        Ok(head)
    }

    /// The buffers and records of `segment`'s summary, if it has one and it still holds: the
    /// header of the segment's first buffer on disk is the one summarized (see `summaries.rs`),
    /// and the summary decodes.
    #[allow(clippy::type_complexity)]
    fn summary_that_holds(
        &mut self,
        segment: u32,
    ) -> Result<
        Option<(
            Vec<(u32, BufferHeader, Vec<StretchRecord>)>,
            Vec<(Vec<u8>, u64)>,
        )>,
    > {
        let Some(summary) = self.summaries.remove(&segment) else {
            return Ok(None);
        };
        if !self.enter(segment)? {
            return Ok(None);
        }
        let Some(first) = summary.buffers.first() else {
            return Ok(None);
        };
        if self.first_header(segment)? != first.header {
            return Ok(None);
        }
        Ok(taken_from_summary(summary, self.sb.segment_size))
    }

    /// The image of `segment`, or `None` if it was never allocated or is free.
    fn image(&mut self, segment: u32, report: &mut RecoveryReport) -> Result<Option<&[u8]>> {
        let seg_size = self.sb.segment_size as usize;
        if !self.enter(segment)? {
            return Ok(None);
        }
        let (file, base) = self.sb.segment_position(segment);
        let base = base as usize;
        if let Some(Some(m)) = &self.maps[file as usize] {
            let image = &m.bytes()[base..base + seg_size];
            let in_use = may_be_in_use(&image[..BLOCK_SIZE], segment);
            report.segments_scanned += u64::from(in_use);
            return Ok(in_use.then_some(image));
        }
        self.storage
            .read_at(file, base as u64, &mut self.buf[..BLOCK_SIZE])?;
        if !may_be_in_use(&self.buf[..BLOCK_SIZE], segment) {
            return Ok(None);
        }
        report.segments_scanned += 1;
        self.storage.read_at(file, base as u64, &mut self.buf)?;
        Ok(Some(&self.buf))
    }
}

/// The buffers and records a summary records, as the scan of its segment reads them; `None`
/// if a header in it does not decode (the segment is then read).
#[allow(clippy::type_complexity)]
fn taken_from_summary(
    summary: SegmentSummary,
    segment_size: u32,
) -> Option<(
    Vec<(u32, BufferHeader, Vec<StretchRecord>)>,
    Vec<(Vec<u8>, u64)>,
)> {
    let mut out = Vec::with_capacity(summary.buffers.len());
    for b in summary.buffers {
        let available = (segment_size as usize).checked_sub(b.offset as usize)?;
        let header = BufferHeader::decode_copy(&b.header, available)?;
        let mut records = Vec::with_capacity(b.records.len());
        for r in b.records {
            records.push(StretchRecord {
                at: r.at as usize,
                header: RecordHeader::decode_prefix(&r.header)?,
                key: r.key,
                range_end: r.range_end,
                intact: true,
                in_first_buffer: false,
                from_directory: false,
            });
        }
        out.push((b.offset, header, records));
    }
    Some((out, summary.tail_puts))
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

/// The point entries, sorted by key: per key, the accepted record of the highest version; of
/// equal versions (a copy and its source both on disk) the one accepted first, and the other's
/// segment joins `unindexed_holders`, as does an older tombstone's. Each with whether it was salvaged (accepted at or
/// after `salvaged_from`). Sorted in bulk rather than inserted one by one (a million B-tree
/// look-ups with key comparisons were most of the CPU time of recovering a store of small
/// records). Keys are moved out of `candidates`.
fn resolve_versions(
    candidates: &mut [Candidate],
    accepted: Vec<u32>,
    salvaged_from: usize,
    unindexed_holders: &mut Vec<u32>,
) -> Vec<(Box<[u8]>, Entry, bool)> {
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
    let mut sorted: Vec<(Box<[u8]>, Entry, bool)> = Vec::with_capacity(order.len());
    for (_, _, i) in order {
        let c = &mut candidates[i as usize];
        if let Some((k, e, _)) = sorted.last()
            && **k == *c.key
        {
            // An older version, or a copy of the same version accepted later: a copy, or an
            // older tombstone (back in a scan once the one that won is dropped), stays on disk
            // unindexed (see `SegmentManager::note_unindexed_records`).
            if e.version == c.version || c.kind == RecordKind::Delete {
                unindexed_holders.push(c.location.segment);
            }
            continue;
        }
        let entry = Entry {
            location: c.location,
            version: c.version,
            group: c.group,
            tombstone: c.kind == RecordKind::Delete,
        };
        let salvaged = i as usize >= salvaged_from;
        sorted.push((
            std::mem::take(&mut c.key).into_boxed_slice(),
            entry,
            salvaged,
        ));
    }
    sorted
}

impl Candidate {
    /// A record the scan found in `segment`.
    fn of(segment: u32, r: StretchRecord) -> Candidate {
        Candidate::new(segment, r.at, &r.header, r.key, r.range_end)
    }

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
fn apply_range_deletes(
    points: &mut BTreeMap<Box<[u8]>, Entry>,
    ranges: &mut [RangeDelete],
    unindexed_holders: &mut Vec<u32>,
) {
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
            if entry.tombstone {
                unindexed_holders.push(entry.location.segment);
            }
            doomed.push(key.clone());
        }
    }
    for key in doomed {
        points.remove(&key);
    }
}
