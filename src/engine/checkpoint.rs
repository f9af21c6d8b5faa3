//! Index checkpoint: what recovery would rebuild, written at a clean close, so that the next
//! open need not read every segment (a store of a million small records is gigabytes
//! of mostly padded 4 KiB buffers, and a cold full scan of it takes seconds).
//!
//! Written by [`write`] at the end of `Engine::close`, once every batch is durable and the
//! background threads and the flusher have stopped: the index (point entries, tombstones
//! included, and range deletes), each segment's state, kind, group, generation, end and
//! highest LSN, the put notes of every segment (`tombstones.rs`), the last LSN, the superblock
//! and the storage's fingerprint of its files. Atomically (temporary file, fsync, rename).
//!
//! Trusted only if all of this holds, otherwise the open does a full scan as before:
//! - it is whole: magic, version and a CRC over everything;
//! - it belongs to this store as it is now: the superblock is byte for byte the one recorded,
//!   and the fingerprint of the segment files (sizes, modification and change times, inode
//!   numbers) is unchanged, so no write happened after it was taken (an older binary, a crash
//!   of a later session that did not remove it, a tool writing the files);
//! - it is consumed: the open removes it durably *before* using it, so that it can never be
//!   found again once the session writes anything (a crash of this session recovers by a full
//!   scan). If the removal fails, it is not used.
//! - it was taken with the same tracked tombstone prefixes (the put notes' hashes depend on
//!   them).
//!
//! The bytes (little-endian, checked whole by a CRC) are `format/checkpoint.rs`'s.

use super::concurrency::Arc;
use std::collections::BTreeMap;

use super::format::checkpoint::{self as bytes, Preamble, SegmentImage};
use super::format::{RECORD_HEADER_SIZE, RecordHeader, RecordKind};
use super::index::{Entry, Index, Location, RangeDelete};
use super::recovery::{Recovered, RecoveryReport};
use super::segments::{SegmentInfo, SegmentManager, SegmentState};
use super::storage::Storage;
use super::tombstones::PutNotes;

/// Builds the checkpoint of a closed engine's state; why not, if the state is not one a
/// checkpoint can describe (a segment being freed, a record that cannot be read back): the
/// next open then scans, as it always did.
pub fn encode(
    storage: &Arc<dyn Storage>,
    superblock: &[u8],
    segments: &SegmentManager,
    index: &Index,
    notes: &PutNotes,
    last_lsn: u64,
) -> Result<Vec<u8>, &'static str> {
    let fingerprint = storage.fingerprint().map_err(|_| "no fingerprint")?;
    if fingerprint.is_empty() {
        return Err("this storage keeps no checkpoints");
    }
    let preamble = Preamble {
        superblock,
        fingerprint: &fingerprint,
        prefix_lengths: notes.prefix_lengths().to_vec(),
        last_lsn,
    };
    let images = segment_images(segments, notes)?;
    let (mut points, ranges) = points_and_ranges(segments, index)?;
    points.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok(bytes::encode(&preamble, &images, &points, &ranges))
}

/// Every segment as the checkpoint records it, with its put notes; an error if one is being
/// freed (its state after the open could not be told).
fn segment_images(
    segments: &SegmentManager,
    notes: &PutNotes,
) -> Result<Vec<SegmentImage>, &'static str> {
    let infos = segments.snapshot();
    let mut images = Vec::with_capacity(infos.len());
    for (segment, (info, _live)) in infos.iter().enumerate() {
        let closed = match info.state {
            SegmentState::Free => false,
            // Open segments are closed by a recovery too (a new session never appends to them).
            SegmentState::Open | SegmentState::Closed => true,
            SegmentState::Freeing => return Err("a segment is being freed"),
        };
        images.push(SegmentImage {
            closed,
            kind: info.kind,
            group: info.group,
            generation: info.generation,
            used: info.used,
            max_lsn: info.max_lsn,
            notes: notes.items(segment as u32),
        });
    }
    Ok(images)
}

/// The index's point entries (unsorted) and range deletes: the live ones with their keys from
/// a scan; tombstones and range deletes (locations the index holds that the scan did not
/// return) read back from their records.
#[allow(clippy::type_complexity)]
fn points_and_ranges(
    segments: &SegmentManager,
    index: &Index,
) -> Result<(Vec<(Vec<u8>, Entry)>, Vec<RangeDelete>), &'static str> {
    let live = index.scan(&[], &[], None, usize::MAX);
    // Looked up only, never iterated: its order decides nothing.
    #[allow(clippy::disallowed_types)]
    let live_at: std::collections::HashSet<(u32, u32)> = live
        .iter()
        .map(|(_, e)| (e.location.segment, e.location.offset))
        .collect();
    let mut others = Vec::new();
    index.for_each_location(|l| {
        if !live_at.contains(&(l.segment, l.offset)) {
            others.push(l);
        }
    });
    let mut points: Vec<(Vec<u8>, Entry)> = live;
    let mut ranges: Vec<RangeDelete> = Vec::new();
    for l in others {
        read_back(segments, index, l, &mut points, &mut ranges)?;
    }
    if ranges.len() != index.range_delete_count() {
        return Err("range deletes miscounted");
    }
    Ok((points, ranges))
}

/// Reads back the record at `l` (which the live scan did not return): a tombstone joins
/// `points`, a range delete `ranges`.
fn read_back(
    segments: &SegmentManager,
    index: &Index,
    l: Location,
    points: &mut Vec<(Vec<u8>, Entry)>,
    ranges: &mut Vec<RangeDelete>,
) -> Result<(), &'static str> {
    let mut buf = vec![0u8; l.len as usize];
    segments
        .read(l.segment, l.offset, &mut buf)
        .map_err(|_| "a tombstone cannot be read")?;
    let h = RecordHeader::decode_checked(&buf).ok_or("a tombstone fails its checksum")?;
    let key = buf[RECORD_HEADER_SIZE..RECORD_HEADER_SIZE + h.key_len as usize].to_vec();
    let value = &buf[RECORD_HEADER_SIZE + h.key_len as usize..h.total_len()];
    match h.kind {
        RecordKind::Delete => {
            let entry = index
                .get(&key)
                .filter(|e| e.location == l && e.tombstone)
                .ok_or("a tombstone is not indexed where it lies")?;
            points.push((key, entry));
        }
        RecordKind::DeleteRange => ranges.push(RangeDelete {
            start: key,
            end: value.to_vec(),
            version: h.version,
            location: l,
            group: h.group,
        }),
        RecordKind::Put => return Err("a put the scan did not return"),
    }
    Ok(())
}

/// Writes the checkpoint (see [`encode`]); a failure only costs the next open a full scan.
pub fn write(
    storage: &Arc<dyn Storage>,
    superblock: &[u8],
    segments: &SegmentManager,
    index: &Index,
    notes: &PutNotes,
    last_lsn: u64,
) {
    let started = super::concurrency::Instant::now();
    let data = match encode(storage, superblock, segments, index, notes, last_lsn) {
        Ok(d) => d,
        Err(why) => {
            ::log::info!("no index checkpoint: {why}");
            return;
        }
    };
    match storage.write_checkpoint(&data) {
        Ok(()) => ::log::info!(
            "index checkpoint written: {} bytes in {:.3} s",
            data.len(),
            started.elapsed().as_secs_f64()
        ),
        Err(e) => ::log::warn!("index checkpoint not written: {e}"),
    }
}

/// The state a checkpoint left by the last clean close describes, if there is one and it can
/// be trusted (see the module doc); it is removed either way. Fills `notes`.
pub fn load(storage: &Arc<dyn Storage>, superblock: &[u8], notes: &PutNotes) -> Option<Recovered> {
    read_and_decode(storage, superblock, notes, true)
}

/// [`load`] for a read-only open: the checkpoint stays. Nothing will be written, so the store
/// stays as the checkpoint describes it, and the next writer can use it in turn.
pub fn load_keeping(
    storage: &Arc<dyn Storage>,
    superblock: &[u8],
    notes: &PutNotes,
) -> Option<Recovered> {
    read_and_decode(storage, superblock, notes, false)
}

fn read_and_decode(
    storage: &Arc<dyn Storage>,
    superblock: &[u8],
    notes: &PutNotes,
    consume: bool,
) -> Option<Recovered> {
    let started = super::concurrency::Instant::now();
    let data = match storage.read_checkpoint() {
        Ok(Some(d)) => d,
        Ok(None) => return None,
        Err(e) => {
            ::log::warn!("index checkpoint unreadable, scanning: {e}");
            if consume {
                let _ = storage.remove_checkpoint();
            }
            return None;
        }
    };
    // Consumed before use: once this session writes, it must never be found again.
    if consume && let Err(e) = storage.remove_checkpoint() {
        ::log::warn!("index checkpoint cannot be removed, scanning: {e}");
        return None;
    }
    let read_in = started.elapsed();
    let fingerprint = storage.fingerprint().ok()?;
    let r = decode(&data, superblock, &fingerprint, notes);
    match &r {
        Some(r) => ::log::info!(
            "index checkpoint loaded: {} entries, {} bytes read in {:.3} s, decoded in {:.3} s",
            r.report.records_accepted,
            data.len(),
            read_in.as_secs_f64(),
            (started.elapsed() - read_in).as_secs_f64()
        ),
        None => ::log::warn!("index checkpoint stale or damaged: ignored, scanning"),
    }
    r
}

/// The state the checkpoint `data` describes, if it is whole and was taken of this store as
/// it is now (`superblock`, `fingerprint`) with the same tombstone tracking (`notes`, which it
/// then fills).
fn decode(
    data: &[u8],
    superblock: &[u8],
    fingerprint: &[u8],
    notes: &PutNotes,
) -> Option<Recovered> {
    let image = bytes::decode(data)?;
    let p = &image.preamble;
    if p.superblock != superblock
        || p.fingerprint != fingerprint
        || fingerprint.is_empty()
        || p.prefix_lengths != notes.prefix_lengths()
        || image.segments.len() != notes.segment_count()
    {
        return None;
    }
    Some(recovered_from(image, notes))
}

/// The recovered state of a checkpoint that belongs to this store; fills `notes`.
fn recovered_from(image: bytes::Image, notes: &PutNotes) -> Recovered {
    let last_lsn = image.preamble.last_lsn;
    let mut infos = Vec::with_capacity(image.segments.len());
    for (segment, s) in image.segments.into_iter().enumerate() {
        infos.push(if s.closed {
            SegmentInfo {
                state: SegmentState::Closed,
                kind: s.kind,
                group: s.group,
                generation: s.generation,
                used: s.used,
                max_lsn: s.max_lsn,
            }
        } else {
            SegmentManager::empty_info()
        });
        notes.set_items(segment as u32, s.notes);
    }
    let entries = image.points.len() as u64;
    let points: BTreeMap<Box<[u8]>, Entry> = image.points.into_iter().collect();
    Recovered {
        index: Index::from_recovered(points, image.ranges),
        infos,
        next_lsn: last_lsn + 1,
        invalidate: Vec::new(),
        report: RecoveryReport {
            records_accepted: entries,
            durable_floor: last_lsn,
            last_lsn,
            ..RecoveryReport::default()
        },
        scanned_summaries: Vec::new(),
    }
}
