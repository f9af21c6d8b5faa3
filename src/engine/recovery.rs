//! Recovery: rebuilds the index, the segments' states and live bytes, and the log position from
//! the segments on disk, before an engine is handed out.
//!
//! 1. Each allocated segment is read from its first buffer; the scan stops at the first buffer
//!    that fails its checks (magic, lengths, CRC over header and payload), belongs to another
//!    segment, or has another generation than the segment's first buffer. What follows it is
//!    torn, unsynced or left from an earlier use of the segment.
//! 2. The *durable floor* is the highest floor any valid buffer header records: every batch up
//!    to it was durable when that buffer was sealed. Above the floor, batches must follow each
//!    other without a gap; the first missing LSN ends the log, and every buffer holding a batch
//!    beyond it is discarded (a later batch must never survive without an earlier one). Below
//!    the floor, missing batches were freed after being made durable and copied or superseded.
//! 3. Per key the highest version wins (copies keep versions, so a relocated copy never beats a
//!    newer write); keys covered by a range delete of a higher version are dropped.
//! 4. The caller zeroes the first block of every discarded buffer (so that it cannot come back
//!    when new batches reuse its LSNs) and syncs, before accepting writes.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::api::{EngineError, Result};
use super::format::{
    BLOCK_SIZE, BUFFER_HEADER_SIZE, BufferHeader, RecordHeader, RecordKind, SegmentKind,
    Superblock, lsn_of_version,
};
use super::index::{Entry, Index, Location, RangeDelete};
use super::segments::{SegmentInfo, SegmentManager, SegmentState};
use super::storage::Storage;

/// What recovery found, for logs and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub segments_scanned: u64,
    pub buffers_accepted: u64,
    pub records_accepted: u64,
    /// Buffers dropped because a batch before them was missing.
    pub buffers_discarded: u64,
    /// The durable floor found, and the last LSN kept.
    pub durable_floor: u64,
    pub last_lsn: u64,
}

pub struct Recovered {
    pub index: Index,
    pub infos: Vec<SegmentInfo>,
    pub next_lsn: u64,
    /// (segment, offset) of each discarded buffer that starts a segment's discarded tail.
    pub invalidate: Vec<(u32, u32)>,
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
    let seg_size = sb.segment_size as usize;
    let mut report = RecoveryReport::default();
    let mut buffers: Vec<ScannedBuffer> = Vec::new();
    let mut candidates: Vec<Candidate> = Vec::new();
    let mut image = vec![0u8; seg_size];
    let mut file_lens = Vec::new();
    for file in 0..sb.file_count() {
        file_lens.push(storage.file_len(file)?);
    }

    for segment in 0..sb.segment_count {
        let (file, base) = sb.segment_position(segment);
        if file_lens[file as usize] < base + seg_size as u64 {
            continue; // never allocated
        }
        report.segments_scanned += 1;
        // A free segment's first block is zeros (or foreign bytes): look at it before reading
        // the whole segment.
        storage.read_at(file, base, &mut image[..BLOCK_SIZE])?;
        if !BufferHeader::plausible_start(&image[..BLOCK_SIZE], segment) {
            continue;
        }
        storage.read_at(file, base, &mut image)?;
        for (pos, header) in valid_buffers(&image, segment, sb.generation_high_water) {
            let first = candidates.len();
            parse_records(segment, pos, &header, &image, &mut candidates)?;
            buffers.push(ScannedBuffer {
                segment,
                offset: pos as u32,
                header,
                records: first..candidates.len(),
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

    // Segment states.
    let mut infos = vec![SegmentManager::empty_info(); sb.segment_count as usize];
    let mut points: BTreeMap<Box<[u8]>, Entry> = BTreeMap::new();
    let mut ranges: Vec<RangeDelete> = Vec::new();
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
        for c in &candidates[b.records.clone()] {
            report.records_accepted += 1;
            if c.kind == RecordKind::Put {
                put_notes.note_put(c.location.segment, &c.key, c.version);
            }
            match c.kind {
                RecordKind::DeleteRange => ranges.push(RangeDelete {
                    start: c.key.clone(),
                    end: c.end.clone(),
                    version: c.version,
                    location: c.location,
                    group: c.group,
                }),
                kind => {
                    let entry = Entry {
                        location: c.location,
                        version: c.version,
                        group: c.group,
                        tombstone: kind == RecordKind::Delete,
                    };
                    match points.get_mut(c.key.as_slice()) {
                        Some(e) if e.version >= entry.version => {}
                        Some(e) => *e = entry,
                        None => {
                            points.insert(c.key.clone().into_boxed_slice(), entry);
                        }
                    }
                }
            }
        }
    }
    drop(candidates);
    apply_range_deletes(&mut points, &mut ranges);
    hand_over_single_group_segments(&mut infos, &points, &ranges);

    let next_lsn = last_lsn.max(floor) + 1;
    report.durable_floor = floor;
    report.last_lsn = last_lsn.max(floor);
    Ok(Recovered {
        index: Index::from_recovered(points, ranges),
        infos,
        next_lsn,
        invalidate: cut.into_iter().collect(),
        report,
    })
}

/// The buffers of a segment image that recovery accepts, in order: from the first, up to the
/// first that fails its checks, belongs to another segment, or has another generation than the
/// first (bytes of an earlier use).
pub fn valid_buffers(
    image: &[u8],
    segment: u32,
    generation_high_water: u64,
) -> Vec<(usize, BufferHeader)> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    let mut generation = None;
    while pos + BLOCK_SIZE <= image.len() {
        let Some(header) = BufferHeader::decode_checked(&image[pos..]) else {
            break;
        };
        if header.segment_index != segment
            || header.generation >= generation_high_water
            || generation.is_some_and(|g| g != header.generation)
        {
            break;
        }
        generation = Some(header.generation);
        out.push((pos, header));
        pos += header.buffer_len as usize;
    }
    out
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

fn parse_records(
    segment: u32,
    buffer_offset: usize,
    header: &BufferHeader,
    image: &[u8],
    out: &mut Vec<Candidate>,
) -> Result<()> {
    for (at, h) in records_of(segment, buffer_offset, header, image)? {
        let key_at = at + super::format::RECORD_HEADER_SIZE;
        let value_at = key_at + h.key_len as usize;
        let end = if h.kind == RecordKind::DeleteRange {
            image[value_at..value_at + h.value_len as usize].to_vec()
        } else {
            Vec::new()
        };
        out.push(Candidate {
            key: image[key_at..value_at].to_vec(),
            end,
            kind: h.kind,
            group: h.group,
            version: h.version,
            location: Location {
                segment,
                offset: at as u32,
                len: h.total_len() as u32,
            },
        });
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
