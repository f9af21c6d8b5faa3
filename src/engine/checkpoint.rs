//! Index checkpoint: the resolved index and the segments' states, written at a clean close, so
//! that the next recovery need not read every segment (a store of a million small records is
//! gigabytes of mostly padded 4 KiB buffers, and turning its 1.6M records into the index costs
//! about a second of CPU whether they are read or taken from summaries).
//!
//! Written by [`write`] at the end of `Engine::close`, once every batch is durable and the
//! background threads and the flusher have stopped: the index (point entries, tombstones
//! included, and range deletes), each segment's state, kind, group, generation, end and
//! highest LSN with the header of its first buffer as on disk, the put notes of every segment
//! (`tombstones.rs`), the last LSN, and the highest durable floor any buffer records with a
//! segment holding it. Atomically (temporary file, fsync, rename).
//!
//! It is not trusted as a whole but proven segment by segment, so it stays in place across
//! sessions and crashes (until the next clean close replaces it), and every recovery uses it
//! (`recovery::recover_from_checkpoint`):
//! 1. A segment it records as closed still holds what it held then exactly while its first
//!    buffer's header on disk is the one recorded: segments are written only while open (a
//!    recovery closes every segment in use, and so does the checkpoint), a freed segment's
//!    first sector is zeroed, and a reused one has a new generation. Such a segment is taken
//!    from the checkpoint unread; every other segment is read (or taken from its summary) as
//!    in a full scan.
//! 2. The index's entries in segments taken unread stand for those segments' records: an
//!    entry is the highest version of its key among every record then on disk, and a record
//!    in such a segment that the index does not name never counts in a scan. Records that
//!    would are a copy's source or an unindexed copy (of two copies a scan keeps the one it
//!    meets first), and a tombstone or range delete dropped or displaced (a scan takes it
//!    back once whatever displaced it is dropped: compaction drops a tombstone no older put
//!    needs, older tombstones or not). Their segments (`SegmentManager::note_unindexed_records`,
//!    `Index::take_resurfacing`, or found so by recovery) are recorded "to be read": their
//!    records are then all weighed again.
//! 3. The log's end: the unread segments hold only batches at or below the floor recorded,
//!    and their highest floor is known while the segment holding it is unread. Otherwise
//!    (it was freed, and no segment read records as high a floor) the open reads everything.
//! 4. It was taken of the same geometry (the superblock but its generation high-water mark)
//!    and with the same tracked tombstone prefixes (the put notes' hashes depend on them).
//!
//! `tests/checkpoints.rs` proves it: at power cuts all through sessions that free and reuse
//! the segments it describes, recovery from it rebuilds what a scan of every segment rebuilds.
//!
//! The bytes (little-endian, checked whole by a CRC) are `format/checkpoint.rs`'s.

use super::concurrency::Arc;
use std::collections::BTreeMap;

use super::format::checkpoint::{self as bytes, Preamble, SegmentImage, SegmentMark};
use super::format::{BUFFER_HEADER_SIZE, BufferHeader, Superblock};
use super::index::{Index, Snapshot};
use super::recovery::{Base, BaseSegment};
use super::segments::{RecoveredTraces, SegmentInfo, SegmentManager, SegmentState};
use super::storage::Storage;
use super::tombstones::PutNotes;

/// What a checkpoint takes of the engine's state (see [`take`]), before it is encoded.
pub struct Taking {
    infos: Vec<(SegmentInfo, u64)>,
    index: Snapshot,
    traces: RecoveredTraces,
}

/// Takes the engine's state for a checkpoint: the segments' states, then the index (so every
/// record of a segment closed then is indexed), then the segments holding records the index
/// does not name (so a copy the index names was noted before it moved there, and a tombstone
/// displaced before the index was taken is noted now). Copies and frees must wait meanwhile:
/// a clean close has stopped them, the background holds `compaction_lock` and `reclaim_lock`.
pub fn take(segments: &SegmentManager, index: &Index) -> Taking {
    let infos = segments.snapshot();
    let index_then = index.snapshot();
    segments.note_unindexed_records(index.take_resurfacing());
    let traces = segments.traces();
    Taking {
        infos,
        index: index_then,
        traces,
    }
}

impl Taking {
    /// The checkpoint's bytes; why not, if a segment is being freed. Of a `running` engine
    /// (the background's): the index may have held batches not yet durable when taken (it is
    /// updated before the log's buffer is written), so the caller has made every batch
    /// durable since; the open segments, and every segment whose state changed since taken (a
    /// buffer of it was in flight, or it was freed), are left to the next recovery to read.
    /// At a clean close nothing moves, everything is durable, and no later session appends
    /// to a segment open now.
    pub fn encode(
        self,
        superblock: &[u8],
        segments: &SegmentManager,
        notes: &PutNotes,
        last_lsn: u64,
        running: bool,
    ) -> Result<Vec<u8>, &'static str> {
        let Taking {
            mut infos,
            index,
            traces,
        } = self;
        if running {
            for (then, now) in infos.iter_mut().zip(segments.snapshot()) {
                if then.0 != now.0 {
                    then.0.state = SegmentState::Open; // to be read
                }
            }
        }
        let holders = &traces.unindexed_holders;
        let images = segment_images(segments, &infos, notes, holders, running)?;
        let (floor, floor_segment) = traces.floor_anchor;
        let preamble = Preamble {
            superblock,
            prefix_lengths: notes.prefix_lengths().to_vec(),
            last_lsn,
            floor,
            // Only where the next recovery may take it unread (rule 3 of the module doc).
            floor_segment: (matches!(images[floor_segment as usize].mark, SegmentMark::Closed(_)))
                .then_some(floor_segment),
        };
        Ok(bytes::encode(
            &preamble,
            &images,
            index.points(),
            &index.ranges,
        ))
    }
}

/// Every segment of `infos` as the checkpoint records it, with its put notes; an error if one
/// is being freed (its state after the open could not be told). `unindexed_holders` (sorted) are
/// to be read, and so are open segments of a `running` engine.
fn segment_images(
    segments: &SegmentManager,
    infos: &[(SegmentInfo, u64)],
    notes: &PutNotes,
    unindexed_holders: &[u32],
    running: bool,
) -> Result<Vec<SegmentImage>, &'static str> {
    let mut images = Vec::with_capacity(infos.len());
    for (segment, (info, _live)) in infos.iter().enumerate() {
        let segment = segment as u32;
        let mark = match info.state {
            SegmentState::Free => SegmentMark::Free,
            SegmentState::Freeing => return Err("a segment is being freed"),
            _ if unindexed_holders.binary_search(&segment).is_ok() => SegmentMark::Read,
            SegmentState::Open if running => SegmentMark::Read,
            // At a close, open segments too: the next recovery closes them (no session appends
            // to a segment it did not open).
            SegmentState::Open | SegmentState::Closed => {
                let mut header = [0u8; BUFFER_HEADER_SIZE];
                segments
                    .read(segment, 0, &mut header)
                    .map_err(|_| "a first header cannot be read")?;
                let room = segments.geometry.segment_size as usize;
                let of_this_use = BufferHeader::decode_copy(&header, room)
                    .is_some_and(|h| h.generation == info.generation);
                if of_this_use {
                    SegmentMark::Closed(header)
                } else {
                    SegmentMark::Read
                }
            }
        };
        images.push(SegmentImage {
            mark,
            kind: info.kind,
            group: info.group,
            generation: info.generation,
            used: info.used,
            max_lsn: info.max_lsn,
            notes: notes.items(segment),
        });
    }
    Ok(images)
}

/// Writes the checkpoint of a closed engine (see [`encode`]); a failure only costs the next
/// open the reading of more segments.
pub fn write(
    storage: &Arc<dyn Storage>,
    superblock: &[u8],
    segments: &SegmentManager,
    index: &Index,
    notes: &PutNotes,
    last_lsn: u64,
) {
    let started = super::concurrency::Instant::now();
    let encoded = take(segments, index).encode(superblock, segments, notes, last_lsn, false);
    let data = match encoded {
        Ok(d) => d,
        Err(why) => {
            ::log::info!("no index checkpoint: {why}");
            return;
        }
    };
    store(storage, &data, started);
}

/// Stores checkpoint `data` (encoded since `started`), logging the outcome.
pub fn store(storage: &Arc<dyn Storage>, data: &[u8], started: super::concurrency::Instant) {
    match storage.write_checkpoint(data) {
        Ok(()) => ::log::info!(
            "index checkpoint written: {} bytes in {:.3} s",
            data.len(),
            started.elapsed().as_secs_f64()
        ),
        Err(e) => ::log::warn!("index checkpoint not written: {e}"),
    }
}

/// What the store's checkpoint says, if there is one that is whole and was taken of this
/// store's geometry with the same tombstone tracking (`notes`); whether each segment still
/// holds what it says is recovery's to prove (see the module doc).
pub fn load(storage: &Arc<dyn Storage>, superblock: &Superblock, notes: &PutNotes) -> Option<Base> {
    let started = super::concurrency::Instant::now();
    let data = match storage.read_checkpoint() {
        Ok(Some(d)) => d,
        Ok(None) => return None,
        Err(e) => {
            ::log::warn!("index checkpoint unreadable, scanning: {e}");
            return None;
        }
    };
    let read_in = started.elapsed();
    let base = decode(&data, superblock, notes);
    match &base {
        Some(b) => ::log::info!(
            "index checkpoint loaded: {} entries, {} bytes read in {:.3} s, decoded in {:.3} s",
            b.points.len(),
            data.len(),
            read_in.as_secs_f64(),
            (started.elapsed() - read_in).as_secs_f64()
        ),
        None => ::log::warn!("index checkpoint of another store or damaged: ignored, scanning"),
    }
    base
}

/// The base the checkpoint `data` gives recovery, if it is whole and was taken of a store of
/// `superblock`'s geometry with the same tombstone tracking as `notes`.
fn decode(data: &[u8], superblock: &Superblock, notes: &PutNotes) -> Option<Base> {
    let image = bytes::decode(data)?;
    let p = &image.preamble;
    let taken_of = Superblock::decode(p.superblock).ok()?;
    // The high-water mark of generations grows with the store (see `segments.rs`).
    let same_geometry = Superblock {
        generation_high_water: superblock.generation_high_water,
        ..taken_of
    } == *superblock;
    if !same_geometry
        || p.prefix_lengths != notes.prefix_lengths()
        || image.segments.len() != superblock.segment_count as usize
    {
        return None;
    }
    let mut closed = BTreeMap::new();
    for (segment, s) in image.segments.into_iter().enumerate() {
        if let SegmentMark::Closed(first_header) = s.mark {
            let c = BaseSegment {
                first_header,
                used: s.used,
                max_lsn: s.max_lsn,
                notes: s.notes,
            };
            closed.insert(segment as u32, c);
        }
    }
    Some(Base {
        floor: image.preamble.floor,
        floor_segment: image.preamble.floor_segment,
        closed,
        points: image.points,
        ranges: image.ranges,
    })
}
