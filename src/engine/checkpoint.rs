//! Index checkpoint: what recovery would rebuild, written at a clean close, so that the next
//! open need not read every segment (issue 7: a store of a million small records is gigabytes
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
//! Format (little-endian): magic `LSCKPT02` (01 held 64-bit note hashes); superblock (u32 length, bytes); fingerprint (u32
//! length, bytes); prefix lengths (u32 count, u32 each); last LSN (u64); segment count (u32),
//! then per segment: state (u8: 0 free, 1 closed), kind (u8), group (u32), generation (u64),
//! used (u32), max LSN (u64), note count (u32) and notes (two u64 each, see
//! `PutNotes::items`); point count
//! (u64), then per point: key (u32 length, bytes), segment, offset, length (u32 each), version
//! (u64), group (u32), tombstone (u8); range count (u32), then per range: start and end (u32
//! length, bytes each), version (u64), segment, offset, length, group (u32 each); CRC-32 of all
//! that (u32).

use super::concurrency::Arc;
use std::collections::BTreeMap;

use crc32fast::Hasher;

use super::format::{RECORD_HEADER_SIZE, RecordHeader, RecordKind, SegmentKind};
use super::index::{Entry, Index, Location, RangeDelete};
use super::recovery::{Recovered, RecoveryReport};
use super::segments::{SegmentInfo, SegmentManager, SegmentState};
use super::storage::Storage;
use super::tombstones::PutNotes;

const MAGIC: &[u8; 8] = b"LSCKPT02";

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
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    put_bytes(&mut out, superblock);
    put_bytes(&mut out, &fingerprint);
    out.extend_from_slice(&(notes.prefix_lengths().len() as u32).to_le_bytes());
    for &n in notes.prefix_lengths() {
        out.extend_from_slice(&(n as u32).to_le_bytes());
    }
    out.extend_from_slice(&last_lsn.to_le_bytes());
    let infos = segments.snapshot();
    out.extend_from_slice(&(infos.len() as u32).to_le_bytes());
    for (segment, (info, _live)) in infos.iter().enumerate() {
        let state = match info.state {
            SegmentState::Free => 0u8,
            // Open segments are closed by a recovery too (a new session never appends to them).
            SegmentState::Open | SegmentState::Closed => 1,
            SegmentState::Freeing => return Err("a segment is being freed"),
        };
        out.push(state);
        out.push(match info.kind {
            SegmentKind::Mixed => 1,
            SegmentKind::Group => 2,
        });
        out.extend_from_slice(&info.group.to_le_bytes());
        out.extend_from_slice(&info.generation.to_le_bytes());
        out.extend_from_slice(&info.used.to_le_bytes());
        out.extend_from_slice(&info.max_lsn.to_le_bytes());
        let items = notes.items(segment as u32);
        out.extend_from_slice(&(items.len() as u32).to_le_bytes());
        for (h, v) in items {
            out.extend_from_slice(&h.to_le_bytes());
            out.extend_from_slice(&v.to_le_bytes());
        }
    }

    // Point entries: the live ones with their keys from a scan; tombstones and range deletes
    // (locations the index holds that the scan did not return) read back from their records.
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
    }
    if ranges.len() != index.range_delete_count() {
        return Err("range deletes miscounted");
    }
    points.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    out.extend_from_slice(&(points.len() as u64).to_le_bytes());
    for (key, e) in &points {
        put_bytes(&mut out, key);
        put_location(&mut out, e.location);
        out.extend_from_slice(&e.version.to_le_bytes());
        out.extend_from_slice(&e.group.to_le_bytes());
        out.push(e.tombstone as u8);
    }
    out.extend_from_slice(&(ranges.len() as u32).to_le_bytes());
    for r in &ranges {
        put_bytes(&mut out, &r.start);
        put_bytes(&mut out, &r.end);
        out.extend_from_slice(&r.version.to_le_bytes());
        put_location(&mut out, r.location);
        out.extend_from_slice(&r.group.to_le_bytes());
    }
    let mut crc = Hasher::new();
    crc.update(&out);
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    Ok(out)
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

fn decode(
    data: &[u8],
    superblock: &[u8],
    fingerprint: &[u8],
    notes: &PutNotes,
) -> Option<Recovered> {
    if data.len() < MAGIC.len() + 4 || &data[..MAGIC.len()] != MAGIC {
        return None;
    }
    let (body, crc) = data.split_at(data.len() - 4);
    let mut h = Hasher::new();
    h.update(body);
    if h.finalize() != u32::from_le_bytes(crc.try_into().ok()?) {
        return None;
    }
    let mut r = Reader {
        b: body,
        at: MAGIC.len(),
    };
    if r.bytes()? != superblock || r.bytes()? != fingerprint || fingerprint.is_empty() {
        return None;
    }
    let n = r.u32()? as usize;
    let mut prefixes = Vec::with_capacity(n.min(64));
    for _ in 0..n {
        prefixes.push(r.u32()? as usize);
    }
    if prefixes != notes.prefix_lengths() {
        return None;
    }
    let last_lsn = r.u64()?;
    let segment_count = r.u32()? as usize;
    let mut infos = Vec::with_capacity(segment_count.min(1 << 24));
    let mut segment_notes = Vec::with_capacity(segment_count.min(1 << 24));
    for _ in 0..segment_count {
        let state = r.u8()?;
        let kind = match r.u8()? {
            1 => SegmentKind::Mixed,
            2 => SegmentKind::Group,
            _ => return None,
        };
        let group = r.u32()?;
        let generation = r.u64()?;
        let used = r.u32()?;
        let max_lsn = r.u64()?;
        infos.push(match state {
            0 => SegmentManager::empty_info(),
            1 => SegmentInfo {
                state: SegmentState::Closed,
                kind,
                group,
                generation,
                used,
                max_lsn,
            },
            _ => return None,
        });
        let count = r.u32()? as usize;
        let mut items = Vec::with_capacity(count.min(r.left() / 16));
        for _ in 0..count {
            items.push((r.u64()?, r.u64()?));
        }
        segment_notes.push(items);
    }
    let count = r.u64()? as usize;
    let mut points: Vec<(Box<[u8]>, Entry)> = Vec::with_capacity(count.min(r.left() / 30));
    for _ in 0..count {
        let key: Box<[u8]> = r.bytes()?.into();
        let location = r.location()?;
        let version = r.u64()?;
        let group = r.u32()?;
        let tombstone = r.u8()? != 0;
        if points.last().is_some_and(|(k, _)| *k >= key)
            || location.segment as usize >= segment_count
        {
            return None; // keys must be sorted and unique
        }
        points.push((
            key,
            Entry {
                location,
                version,
                group,
                tombstone,
            },
        ));
    }
    let count = r.u32()? as usize;
    let mut ranges = Vec::with_capacity(count.min(r.left() / 30));
    for _ in 0..count {
        let start = r.bytes()?.to_vec();
        let end = r.bytes()?.to_vec();
        let version = r.u64()?;
        let location = r.location()?;
        let group = r.u32()?;
        if location.segment as usize >= segment_count {
            return None;
        }
        ranges.push(RangeDelete {
            start,
            end,
            version,
            location,
            group,
        });
    }
    if r.left() != 0 || segment_count != notes.segment_count() {
        return None;
    }
    for (segment, items) in segment_notes.into_iter().enumerate() {
        notes.set_items(segment as u32, items);
    }
    let entries = points.len() as u64;
    let points: BTreeMap<Box<[u8]>, Entry> = points.into_iter().collect();
    Some(Recovered {
        index: Index::from_recovered(points, ranges),
        infos,
        next_lsn: last_lsn + 1,
        invalidate: Vec::new(),
        report: RecoveryReport {
            records_accepted: entries,
            durable_floor: last_lsn,
            last_lsn,
            ..RecoveryReport::default()
        },
    })
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

fn put_location(out: &mut Vec<u8>, l: Location) {
    out.extend_from_slice(&l.segment.to_le_bytes());
    out.extend_from_slice(&l.offset.to_le_bytes());
    out.extend_from_slice(&l.len.to_le_bytes());
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }
    fn left(&self) -> usize {
        self.b.len() - self.at
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn location(&mut self) -> Option<Location> {
        Some(Location {
            segment: self.u32()?,
            offset: self.u32()?,
            len: self.u32()?,
        })
    }
}
