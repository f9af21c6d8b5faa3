//! The segment manager: which segments are free, active, closing or closed; their generations,
//! kinds and live bytes; allocation of segment-file space before a segment is handed out.
//!
//! It knows no keys. Live bytes are adjusted by the engine as the index changes.
//!
//! Segment life cycle:
//!
//! ```text
//! Free --allocate--> Open --last buffer's flush complete--> Closed --live 0, durable--> Freeing
//!   ^                                                                                   |
//!   +------------------------- first block zeroed and synced ----------------------------+
//! ```

use std::collections::VecDeque;

use super::concurrency::{Arc, AtomicI64, AtomicU64, Mutex, Ordering};

use super::api::{EngineError, Result};
use super::format::{
    self, BLOCK_SIZE, BUFFER_HEADER_SIZE, BufferHeader, DIRECTORY_TRAILER_SIZE, NO_GROUP,
    SegmentKind, Superblock,
};
use super::storage::{SECTOR_SIZE, Storage};
use super::summaries::Summaries;
use super::synctable::SyncTable;

/// Generations are reserved in the superblock this many at a time, so that handing out a
/// segment rarely costs a superblock write, and a generation is never handed out twice even
/// across crashes (recovery starts above the reserved high-water mark).
const GENERATION_RESERVATION: u64 = 1 << 16;

/// Segments of a store of `segment_count` kept in reserve: user writes never take them (2%,
/// at least 4, at most 64, never more than a quarter of the store).
pub fn reserve_for(segment_count: u64) -> u64 {
    (segment_count / 50).clamp(4, 64).min(segment_count / 4)
}

/// Free segments compaction copies may not take: half the reserve, left to the deletes and
/// markers that free the victims.
pub fn compaction_floor(reserved: u64) -> u64 {
    reserved / 2
}

/// Free segments delete batches may not take: what one reclamation needs. It writes one marker
/// buffer, which opens at most one segment (a sealed buffer always leaves room for the next in
/// its segment, else the segment closes), and then frees every dead segment. Were deletes to
/// take the last free segment, the marker would find none, nothing could be freed, and a
/// remount would find the same store.
pub const RECLAIM_FLOOR: usize = 1;

/// Who asks for a segment, which decides how much of the reserve it may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// User batches and the separator: never the reserve.
    User,
    /// Compaction copies: half the reserve, so that it can make room in a full store but
    /// never takes the last segments from the deletes and markers that free its victims.
    Compaction,
    /// Small delete batches and the marker of a clean close: the reserve down to
    /// [`RECLAIM_FLOOR`], which they leave to reclamation's markers.
    Deletes,
    /// The marker buffers that free segments (reclamation): everything.
    FreesSpace,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentState {
    Free,
    /// Being written (the active segment of the log, or a group's open segment).
    Open,
    /// Every buffer written into it is flushed and every record in it is in the index.
    Closed,
    /// Its first block is being zeroed; free after the next sync.
    Freeing,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    pub state: SegmentState,
    pub kind: SegmentKind,
    pub group: u32,
    pub generation: u64,
    /// Bytes written (end of the last buffer).
    pub used: u32,
    /// Highest LSN of a batch written into it (0: none).
    pub max_lsn: u64,
}

struct Inner {
    infos: Vec<SegmentInfo>,
    /// Free segments in segment files already allocated on the host (writable for certain).
    free: VecDeque<u32>,
    /// Free segments in segment files not allocated yet: usable only once their file's
    /// allocation succeeds, which a full host disk refuses.
    free_unallocated: VecDeque<u32>,
    next_generation: u64,
    superblock: Superblock,
    files_allocated: Vec<bool>,
    /// Per segment: its current use holds a record the index does not name that a scan would
    /// take or weigh: the source of a copy (of two copies a scan keeps the one it meets
    /// first), a copy the index never moved to, a tombstone or range delete dropped or
    /// displaced (it comes back in a scan once what displaced it is dropped). A checkpoint
    /// has the next recovery read such a segment (`checkpoint.rs`).
    unindexed_holders: Vec<bool>,
    /// The highest durable floor a buffer in use records, and a segment holding such a
    /// buffer (floors only grow, so the last buffer written holds it).
    floor_anchor: (u64, u32),
}

/// What recovery learned of the segments beyond their states, kept up to date by the running
/// engine for its checkpoint (see `Inner::unindexed_holders`, `Inner::floor_anchor`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveredTraces {
    /// Sorted.
    pub unindexed_holders: Vec<u32>,
    pub floor_anchor: (u64, u32),
}

pub struct SegmentManager {
    storage: Arc<dyn Storage>,
    pub geometry: Superblock,
    inner: Mutex<Inner>,
    /// Signed: a record's death may be counted a moment before its birth by a racing writer.
    live: Vec<AtomicI64>,
    live_total: AtomicI64,
    /// How far each segment's bytes are in storage (`note_written`), readable without a lock:
    /// a read of a record wholly below it needs nothing from the log's buffers, and so never
    /// waits for the log's lock (held while a segment is allocated). Never above the truth: it
    /// only grows after a write returned, and is cleared when the segment is freed.
    written: Vec<AtomicU64>,
    /// Segments user writes may not take (kept for relocation and deletes).
    pub reserved: u32,
    pub reclaimed: AtomicU64,
    /// Segments taken since the open (the background's checkpoint counts from it).
    pub taken: AtomicU64,
    /// How far each group-owned segment is known synced (see `synctable.rs`).
    pub sync_table: SyncTable,
    /// The summaries of closed segments (see `summaries.rs`).
    pub summaries: Summaries,
}

impl SegmentManager {
    /// A manager over `superblock`'s geometry with every segment in `infos` (recovered state).
    pub fn new(
        storage: Arc<dyn Storage>,
        superblock: Superblock,
        infos: Vec<SegmentInfo>,
        sync_table: SyncTable,
        summaries: Summaries,
        traces: RecoveredTraces,
    ) -> Self {
        let n = superblock.segment_count as usize;
        let files = superblock.file_count() as usize;
        let file_len = superblock.file_len();
        let files_allocated: Vec<bool> = (0..files as u32)
            .map(|f| storage.file_len(f).map(|l| l >= file_len).unwrap_or(false))
            .collect();
        let (free, free_unallocated): (VecDeque<u32>, VecDeque<u32>) = (0..n as u32)
            .filter(|&s| infos[s as usize].state == SegmentState::Free)
            .partition(|&s| files_allocated[superblock.segment_position(s).0 as usize]);
        let reserved = reserve_for(n as u64) as u32;
        // What recovery found in a segment in use was read from storage.
        let written = infos
            .iter()
            .map(|i| {
                AtomicU64::new(if i.state == SegmentState::Free {
                    0
                } else {
                    i.used as u64
                })
            })
            .collect();
        SegmentManager {
            storage,
            geometry: superblock,
            inner: Mutex::new(Inner {
                infos,
                free,
                free_unallocated,
                next_generation: superblock.generation_high_water,
                superblock,
                files_allocated,
                unindexed_holders: (0..n as u32)
                    .map(|s| traces.unindexed_holders.binary_search(&s).is_ok())
                    .collect(),
                floor_anchor: traces.floor_anchor,
            }),
            live: (0..n).map(|_| AtomicI64::new(0)).collect(),
            live_total: AtomicI64::new(0),
            written,
            reserved,
            reclaimed: AtomicU64::new(0),
            taken: AtomicU64::new(0),
            sync_table,
            summaries,
        }
    }

    pub fn empty_info() -> SegmentInfo {
        SegmentInfo {
            state: SegmentState::Free,
            kind: SegmentKind::Mixed,
            group: NO_GROUP,
            generation: 0,
            used: 0,
            max_lsn: 0,
        }
    }

    pub fn generation_high_water(&self) -> u64 {
        self.inner.lock().superblock.generation_high_water
    }

    pub fn segment_size(&self) -> u32 {
        self.geometry.segment_size
    }

    /// Hands out a free segment of `kind`/`group` with a new generation, leaving at least the
    /// free segments `claim` may not take (see [`Claim`]). The reserve lies in segment files
    /// already allocated: on a full host disk it must still be writable, so that deletes and
    /// compaction can free space.
    /// Whether a user batch could take a free segment now (`Claim::User`: above the reserve).
    /// Grows into the next segment file if that is what it takes: segments in files the host
    /// disk has no room for are no room for users (counting them let user batches into the
    /// segments that markers and deletes opened from the reserve, until none was left).
    pub fn user_may_allocate(&self) -> bool {
        let mut inner = self.inner.lock();
        self.grow(&mut inner, self.reserved as usize).is_ok()
    }

    pub fn allocate(&self, kind: SegmentKind, group: u32, claim: Claim) -> Result<(u32, u64)> {
        let mut inner = self.inner.lock();
        let floor = self.floor_of(claim);
        self.grow(&mut inner, floor)?;
        let segment = *inner.free.front().unwrap();
        if inner.next_generation >= inner.superblock.generation_high_water {
            let mut sb = inner.superblock;
            sb.generation_high_water = inner.next_generation + GENERATION_RESERVATION;
            self.storage.write_superblock(&sb.encode())?;
            inner.superblock = sb;
        }
        let generation = inner.next_generation;
        inner.next_generation += 1;
        inner.free.pop_front();
        self.taken.fetch_add(1, Ordering::Relaxed);
        inner.infos[segment as usize] = SegmentInfo {
            state: SegmentState::Open,
            kind,
            group,
            generation,
            used: 0,
            max_lsn: 0,
        };
        Ok((segment, generation))
    }

    /// Makes more than `floor` segments free in allocated segment files, allocating the next
    /// files as needed; `NoSpace` if the store has no more free segments or the host disk has
    /// no room for the next file.
    fn grow(&self, inner: &mut Inner, floor: usize) -> Result<()> {
        if inner.free.len() + inner.free_unallocated.len() <= floor {
            return Err(EngineError::NoSpace);
        }
        // Grow into the next segment file when the allocated free segments run short.
        while inner.free.len() <= floor {
            let Some(&next) = inner.free_unallocated.front() else {
                return Err(EngineError::NoSpace);
            };
            let (file, _) = self.geometry.segment_position(next);
            // Allocate the whole segment file before handing out any segment in it, so that a
            // full host disk fails here and never in the middle of a buffer write.
            self.storage
                .allocate(file, self.geometry.file_len())
                .map_err(|e| {
                    if e.raw_os_error() == Some(libc::ENOSPC) {
                        EngineError::NoSpace
                    } else {
                        EngineError::Io(e)
                    }
                })?;
            inner.files_allocated[file as usize] = true;
            let geometry = self.geometry;
            let (now_ready, still): (VecDeque<u32>, VecDeque<u32>) = inner
                .free_unallocated
                .drain(..)
                .partition(|&s| geometry.segment_position(s).0 == file);
            inner.free_unallocated = still;
            inner.free.extend(now_ready);
        }
        Ok(())
    }

    pub fn write(&self, segment: u32, offset: u32, data: &[u8]) -> Result<()> {
        debug_assert!(
            (offset as usize).is_multiple_of(BLOCK_SIZE) && data.len().is_multiple_of(BLOCK_SIZE)
        );
        debug_assert!(offset as usize + data.len() <= self.segment_size() as usize);
        let (file, base) = self.geometry.segment_position(segment);
        self.storage.write_at(file, base + offset as u64, data)?;
        Ok(())
    }

    pub fn read(&self, segment: u32, offset: u32, buf: &mut [u8]) -> Result<()> {
        let (file, base) = self.geometry.segment_position(segment);
        self.storage.read_at(file, base + offset as u64, buf)?;
        Ok(())
    }

    /// Hints that `[offset, offset + len)` of `segment` will be read soon
    /// ([`Storage::will_need`]).
    pub fn will_need(&self, segment: u32, offset: u32, len: u32) {
        let (file, base) = self.geometry.segment_position(segment);
        self.storage
            .will_need(file, base + offset as u64, len as u64);
    }

    /// Notes buffer `data` written at `offset` of `segment`, holding batches up to `max_lsn`.
    pub fn note_buffer_written(&self, segment: u32, offset: u32, data: &[u8], max_lsn: u64) {
        self.summaries.note_buffer(segment, offset, data);
        if let Some(h) = data
            .get(..BUFFER_HEADER_SIZE)
            .and_then(|h| BufferHeader::decode_copy(h, data.len()))
        {
            let mut inner = self.inner.lock();
            if h.durable_floor >= inner.floor_anchor.0 {
                inner.floor_anchor = (h.durable_floor, segment);
            }
        }
        self.note_written(segment, offset + data.len() as u32, max_lsn);
    }

    /// Notes that `segments` hold records the index does not name (see
    /// `Inner::unindexed_holders`).
    pub fn note_unindexed_records(&self, segments: impl IntoIterator<Item = u32>) {
        let mut inner = self.inner.lock();
        for s in segments {
            inner.unindexed_holders[s as usize] = true;
        }
    }

    /// The segments holding records the index does not name, and the highest durable floor on
    /// disk with a segment holding it: what a checkpoint needs beyond the segments' states.
    pub fn traces(&self) -> RecoveredTraces {
        let inner = self.inner.lock();
        RecoveredTraces {
            unindexed_holders: (0..inner.unindexed_holders.len() as u32)
                .filter(|&s| inner.unindexed_holders[s as usize])
                .collect(),
            floor_anchor: inner.floor_anchor,
        }
    }

    /// Notes a buffer written at `end` bytes into `segment`, holding batches up to `max_lsn`.
    fn note_written(&self, segment: u32, end: u32, max_lsn: u64) {
        let mut inner = self.inner.lock();
        let info = &mut inner.infos[segment as usize];
        info.used = info.used.max(end);
        info.max_lsn = info.max_lsn.max(max_lsn);
        self.written[segment as usize].fetch_max(end as u64, Ordering::Release);
    }

    /// Whether bytes `..end` of `segment` are known to be in storage (see `written`).
    pub fn written_through(&self, segment: u32, end: u64) -> bool {
        self.written[segment as usize].load(Ordering::Acquire) >= end
    }

    /// Gives closed mixed segment `segment` to `group` as it is (the separator found all its
    /// live records to be of that group). Only the in-memory kind changes: on disk it stays a
    /// mixed segment, and recovery hands it over again by the same rule.
    pub fn hand_over(&self, segment: u32, group: u32) {
        let mut inner = self.inner.lock();
        let info = &mut inner.infos[segment as usize];
        debug_assert!(info.state == SegmentState::Closed && info.kind == SegmentKind::Mixed);
        info.kind = SegmentKind::Group;
        info.group = group;
    }

    pub fn mark_closed(&self, segment: u32) {
        let info = {
            let mut inner = self.inner.lock();
            let info = &mut inner.infos[segment as usize];
            info.state = SegmentState::Closed;
            *info
        };
        // A closed segment of the log: its entry in the sync table is written once a sync made
        // it durable (see `synctable.rs`). Every buffer of it was written by now (the log closes
        // a segment only once its last buffer's flush is complete).
        if info.kind == SegmentKind::Mixed {
            self.sync_table
                .note_log_segment(segment, info.generation, info.used);
        }
    }

    pub fn info(&self, segment: u32) -> SegmentInfo {
        self.inner.lock().infos[segment as usize]
    }

    pub fn add_live(&self, segment: u32, bytes: u32) {
        self.live[segment as usize].fetch_add(bytes as i64, Ordering::Relaxed);
        self.live_total.fetch_add(bytes as i64, Ordering::Relaxed);
    }

    /// A record of `bytes` in `segment` died (superseded, deleted or relocated).
    pub fn sub_live(&self, segment: u32, bytes: u32) {
        self.live[segment as usize].fetch_sub(bytes as i64, Ordering::Relaxed);
        self.live_total.fetch_sub(bytes as i64, Ordering::Relaxed);
    }

    pub fn live_bytes(&self, segment: u32) -> u64 {
        self.live[segment as usize].load(Ordering::Relaxed).max(0) as u64
    }

    pub fn live_total(&self) -> u64 {
        self.live_total.load(Ordering::Relaxed).max(0) as u64
    }

    /// Free segments `claim` may take now (in allocated segment files or not).
    pub fn free_for(&self, claim: Claim) -> usize {
        self.free_count().saturating_sub(self.floor_of(claim))
    }

    /// Free segments `claim` must leave (see [`Claim`]).
    fn floor_of(&self, claim: Claim) -> usize {
        match claim {
            Claim::User => self.reserved as usize,
            Claim::Compaction => compaction_floor(self.reserved as u64) as usize,
            Claim::Deletes => RECLAIM_FLOOR,
            Claim::FreesSpace => 0,
        }
    }

    /// Free segments, in allocated segment files or not.
    pub fn free_count(&self) -> usize {
        let inner = self.inner.lock();
        inner.free.len() + inner.free_unallocated.len()
    }

    /// Closed segments with no live record and no batch above `durable_lsn`: they can be freed
    /// whole, without copying anything. (The batches that killed their records were written
    /// before this is asked; the caller syncs before it zeroes anything, which makes them
    /// durable too.)
    pub fn dead_segments(&self, durable_lsn: u64) -> Vec<u32> {
        let inner = self.inner.lock();
        inner
            .infos
            .iter()
            .enumerate()
            .filter(|(s, info)| {
                info.state == SegmentState::Closed
                    && self.live[*s].load(Ordering::Relaxed) == 0
                    && info.max_lsn <= durable_lsn
            })
            .map(|(s, _)| s as u32)
            .collect()
    }

    /// Before freeing a dead segment: clear the record directory trailer of its first buffer
    /// (32 zero bytes where it ends), so that once the segment is free no directory of its first
    /// buffer remains behind the zeroed first sector. Recovery then takes a first-buffer
    /// directory of a generation at or above [`Superblock::frees_clear_directories_from`] as the
    /// current use's, whatever the first sector holds (a whole sector of garbage over the
    /// header: `scan::first_use_by_own_directory`). Done before the sync that precedes
    /// zeroing the first sector, so that a power cut never leaves the segment free with its
    /// directory: at worst it is closed, dead, its first buffer failing only in the trailer,
    /// which recovery repairs exactly (`BufferHeader::decode_resealed`) until the segment is
    /// freed again.
    pub fn clear_first_directory(&self, segment: u32) -> Result<()> {
        let (file, base) = self.geometry.segment_position(segment);
        let size = self.geometry.segment_size as usize;
        let mut head = vec![0u8; BLOCK_SIZE];
        self.storage.read_at(file, base, &mut head)?;
        if BufferHeader::plausible_start(&head, segment) && BufferHeader::version_field_is_1(&head)
        {
            return Ok(()); // format version 1: no directory
        }
        // Where the header says the first buffer ends, if a trailer reaching back to the
        // segment's start is there; else (a damaged header) wherever one is.
        let said = BufferHeader::buffer_len_field(&head);
        let mut ends = Vec::new();
        if said >= BLOCK_SIZE && said.is_multiple_of(BLOCK_SIZE) && said <= size {
            let mut trailer = [0u8; DIRECTORY_TRAILER_SIZE];
            self.storage
                .read_at(file, base + (said - trailer.len()) as u64, &mut trailer)?;
            if format::trailer_of_first_buffer(&trailer, segment, said) {
                ends.push(said);
            }
        }
        if ends.is_empty() {
            let mut image = vec![0u8; size];
            self.storage.read_at(file, base, &mut image)?;
            ends = (BLOCK_SIZE..=size)
                .step_by(BLOCK_SIZE)
                .filter(|&end| {
                    format::trailer_of_first_buffer(
                        &image[end - DIRECTORY_TRAILER_SIZE..end],
                        segment,
                        end,
                    )
                })
                .collect();
        }
        for end in ends {
            self.storage.write_at(
                file,
                base + (end - DIRECTORY_TRAILER_SIZE) as u64,
                &[0u8; DIRECTORY_TRAILER_SIZE],
            )?;
        }
        Ok(())
    }

    /// First step of freeing: zero the segment's first sector (its first buffer's header), so
    /// that nothing of this use can be read back once the zeros are durable. The caller syncs,
    /// then calls `finish_free`. One sector, not the whole first block: a power cut keeps or
    /// drops a sector whole, so the segment is then either entirely as it was (closed, its
    /// records dead) or free, never a torn mix that reads as a damaged live segment.
    pub fn begin_free(&self, segment: u32) -> Result<()> {
        self.inner.lock().infos[segment as usize].state = SegmentState::Freeing;
        // With the directory trailer above, the only writes that are not whole blocks (see
        // `write`).
        let (file, base) = self.geometry.segment_position(segment);
        self.storage.write_at(file, base, &[0u8; SECTOR_SIZE])?;
        Ok(())
    }

    pub fn finish_free(&self, segment: u32) {
        let mut inner = self.inner.lock();
        debug_assert_eq!(inner.infos[segment as usize].state, SegmentState::Freeing);
        inner.infos[segment as usize] = Self::empty_info();
        inner.unindexed_holders[segment as usize] = false;
        self.written[segment as usize].store(0, Ordering::Release);
        self.summaries.forget_segment(segment);
        inner.free.push_back(segment);
        self.reclaimed.fetch_add(1, Ordering::Relaxed);
    }

    /// Segments by state and kind: (free, mixed in use, group-owned in use).
    pub fn counts(&self) -> (u64, u64, u64) {
        let inner = self.inner.lock();
        let mut c = (0, 0, 0);
        for info in &inner.infos {
            match (info.state, info.kind) {
                (SegmentState::Free, _) => c.0 += 1,
                (_, SegmentKind::Mixed) => c.1 += 1,
                (_, SegmentKind::Group) => c.2 += 1,
            }
        }
        c
    }

    /// The storage the segments are in.
    pub fn storage(&self) -> &dyn Storage {
        &*self.storage
    }

    /// Every segment's state.
    pub fn infos(&self) -> Vec<SegmentInfo> {
        self.inner.lock().infos.clone()
    }

    pub fn snapshot(&self) -> Vec<(SegmentInfo, u64)> {
        let inner = self.inner.lock();
        inner
            .infos
            .iter()
            .enumerate()
            .map(|(s, i)| (*i, self.live_bytes(s as u32)))
            .collect()
    }
}
