//! Group-owned segments being filled with copies: where the separator and compaction put the
//! live records they move.
//!
//! Each compaction group has at most one *open* group-owned segment here. Copies of one group
//! are packed into buffers (header of kind `Group` naming the group, records verbatim, zero
//! padding, the record directory, to a multiple of 4 KiB) appended to that segment; a segment takes buffers from many passes until
//! it is full, and only then closes. The caller (one pass at a time, under the engine's
//! compaction lock) moves the index to the copies by compare-and-set after `write` returns, and
//! counts their live bytes; the sources are freed later by the dead-segment reclaimer, which
//! syncs first, so the copies are durable before any source is zeroed, and records how far the
//! copies reach in the sync table (`synctable.rs`), synced, before zeroing anything.
//!
//! An open group-owned segment is never a compaction victim (only closed segments are), and a
//! crash leaves it closed at recovery, with its last valid buffer as its end.

use std::collections::BTreeMap;

use super::api::{EngineError, Result, WRITE_BUFFER_SIZE};
use super::compaction::LiveRecord;
use super::format::{
    BLOCK_SIZE, BUFFER_HEADER_SIZE, BufferHeader, RecordHeader, SegmentKind, buffer_len_for,
    directory_entry_len, lsn_of_version,
};
use super::index::Location;
use super::segments::{Claim, SegmentManager};

struct OpenGroupSegment {
    segment: u32,
    generation: u64,
    /// Where the next buffer goes.
    offset: u32,
}

/// The open group-owned segments: at most one per group, and at most
/// [`max_open_segments`] in all.
pub struct GroupWriter {
    open: BTreeMap<u32, OpenGroupSegment>,
    max_open: usize,
}

/// How many group-owned segments may be open at once in a store of `segment_count` segments:
/// a 64th of the store, 2 to 16 (enough for the directories being written at once to keep
/// segments of their own; the rest borrow, see `copy_to_groups`).
///
/// An open segment is never a compaction victim, so its unused room is space that no pass can
/// win back; the store's capacity (`Inner::user_capacity`) counts every one that may be open
/// as lost. Without a bound, a store with as many groups as segments had nearly every segment
/// in use open, nothing to compact at the reserve, and refused overwrites of data it held.
/// Groups without an open segment beyond the bound borrow one (`borrow_roomiest_open_segment`).
pub fn max_open_segments(segment_count: u32) -> usize {
    (segment_count as usize / 64).clamp(2, 16)
}

/// What one `write` did.
pub struct Written {
    /// New location of each record, in the order given.
    pub locations: Vec<Location>,
    /// Bytes written to the device (headers and padding included).
    pub device_bytes: u64,
}

impl GroupWriter {
    pub fn new(segment_count: u32) -> GroupWriter {
        GroupWriter {
            open: BTreeMap::new(),
            max_open: max_open_segments(segment_count),
        }
    }

    /// Appends copies of `records` (every one of `group`) to the group's open segment, opening
    /// new segments as they fill, as `claim` allows: compaction, which frees space, may take
    /// part of the reserve; the separator may not, so that sorting records never eats the room
    /// that freeing space needs. `durable_floor` goes into every buffer header (see
    /// `format.rs`).
    ///
    /// Returns what was written even when it then fails (no free segment for the next buffer,
    /// an I/O error): the copies before the failure are on disk, and the caller must note
    /// their puts whatever happens after, or a tombstone of their keys could be dropped while
    /// they remain.
    pub fn write(
        &mut self,
        segments: &SegmentManager,
        group: u32,
        records: &[&LiveRecord],
        durable_floor: u64,
        claim: Claim,
    ) -> (Written, Result<()>) {
        let mut written = Written {
            locations: Vec::with_capacity(records.len()),
            device_bytes: 0,
        };
        let outcome = self.write_into(segments, group, records, durable_floor, claim, &mut written);
        (written, outcome)
    }

    fn write_into(
        &mut self,
        segments: &SegmentManager,
        group: u32,
        records: &[&LiveRecord],
        durable_floor: u64,
        claim: Claim,
        written: &mut Written,
    ) -> Result<()> {
        let segment_size = segments.segment_size();
        let mut next = 0;
        while next < records.len() {
            let open = self.open_segment_of(segments, group, claim)?;
            let capacity = WRITE_BUFFER_SIZE.min((segment_size - open.offset) as usize);
            let (end, payload, directory) = fitting(records, next, capacity);
            if end == next && open.offset == 0 {
                // Not even in an empty segment's first buffer: a record that no buffer of this
                // format can take (a range delete with an end of over 100 KiB written before
                // the record directory, whose entry copies the end). Moving on to another
                // segment would not help.
                return Err(EngineError::Limit(format!(
                    "a record of {} bytes (group {group}) does not fit a buffer with its \
                     directory entry",
                    records[next].bytes.len()
                )));
            }
            if end == next {
                // Not even one record fits in the segment's tail: it is full.
                let full = self.open.remove(&group).unwrap();
                segments.mark_closed(full.segment);
                continue;
            }
            let (buffer, locations, max_lsn) = copies_buffer(
                open,
                group,
                &records[next..end],
                payload,
                directory,
                durable_floor,
            );
            let buffer_len = buffer.len();
            segments.write(open.segment, open.offset, &buffer)?;
            written.locations.extend(locations);
            segments.note_buffer_written(open.segment, open.offset, &buffer, max_lsn);
            open.offset += buffer_len as u32;
            // Recorded in the sync table before any source of these copies is freed.
            segments
                .sync_table
                .note_copies(open.segment, open.generation, open.offset);
            written.device_bytes += buffer_len as u64;
            if ((segment_size - open.offset) as usize) < 2 * BLOCK_SIZE {
                let full = self.open.remove(&group).unwrap();
                segments.mark_closed(full.segment);
            }
            next = end;
        }
        Ok(())
    }

    /// `group`'s open segment, a segment allocated for it (as `claim` may) if it has none.
    fn open_segment_of(
        &mut self,
        segments: &SegmentManager,
        group: u32,
        claim: Claim,
    ) -> Result<&mut OpenGroupSegment> {
        if !self.open.contains_key(&group) {
            let (segment, generation) = segments.allocate(SegmentKind::Group, group, claim)?;
            debug_assert!(
                self.open.len() < self.max_open,
                "a group opens a segment beyond the bound (see borrow_roomiest_open_segment)"
            );
            self.open.insert(
                group,
                OpenGroupSegment {
                    segment,
                    generation,
                    offset: 0,
                },
            );
        }
        Ok(self.open.get_mut(&group).expect("opened above"))
    }

    /// How many segments `write` would open for these copies of `group` (`records` in the
    /// order they will be written), given where the group's open segment stands: the same
    /// packing, without writing. A pass checks it against the free segments its claim may
    /// take before copying anything of a segment, so that it does not run out half-way (each
    /// group it copies into may need a segment of its own, however few its records).
    pub fn segments_needed(&self, segment_size: u32, group: u32, records: &[&LiveRecord]) -> usize {
        let mut offset = self.open.get(&group).map(|open| open.offset);
        let mut needed = 0;
        let mut next = 0;
        while next < records.len() {
            let at = match offset {
                Some(at) => at,
                None => {
                    needed += 1;
                    0
                }
            };
            let capacity = WRITE_BUFFER_SIZE.min((segment_size - at) as usize);
            let (end, payload, directory) = fitting(records, next, capacity);
            if end == next && at == 0 {
                return needed; // `write` refuses such a record before going further
            }
            if end == next {
                offset = None;
                continue;
            }
            let at = at + buffer_len_for(payload, directory) as u32;
            offset = ((segment_size - at) as usize >= 2 * BLOCK_SIZE).then_some(at);
            next = end;
        }
        needed
    }

    /// Of `groups`, the one whose open segment has the most room left (a group without one
    /// counts as having none): where copies that must all go to one group open the fewest
    /// segments.
    pub fn roomiest_of(&self, segment_size: u32, groups: impl Iterator<Item = u32>) -> Option<u32> {
        let room = |group: &u32| {
            self.open
                .get(group)
                .map_or(0, |open| segment_size - open.offset)
        };
        groups.max_by(|a, b| room(a).cmp(&room(b)).then(b.cmp(a)))
    }

    /// How many more group-owned segments may be opened before one must close.
    pub fn open_slots_left(&self) -> usize {
        self.max_open.saturating_sub(self.open.len())
    }

    pub fn has_open(&self, group: u32) -> bool {
        self.open.contains_key(&group)
    }

    /// The group whose open segment has the most room left (of two alike, the lower group).
    pub fn roomiest_open(&self, segment_size: u32) -> Option<u32> {
        self.roomiest_of(segment_size, self.open.keys().copied())
    }

    /// Closes every open segment but `group`'s: a closed segment is a compaction victim like
    /// any other, its unused tail counted as dead space, so that the space of a store does not
    /// depend on how many groups have an open segment.
    pub fn close_all_but(&mut self, group: u32, segments: &SegmentManager) {
        self.open.retain(|&g, open| {
            if g == group {
                return true;
            }
            segments.mark_closed(open.segment);
            false
        });
    }

    /// Closes every open segment that holds no live record (its group's data was deleted), so
    /// that the reclaimer can free it: a group whose files are all gone owns no segment.
    pub fn close_empty(&mut self, segments: &SegmentManager) {
        self.open.retain(|_, open| {
            if segments.live_bytes(open.segment) == 0 {
                segments.mark_closed(open.segment);
                false
            } else {
                true
            }
        });
    }
}

/// How many of `records` from `next` on fit one buffer of at most `capacity` bytes: (the end
/// of that run, its payload bytes, its record directory bytes).
fn fitting(records: &[&LiveRecord], next: usize, capacity: usize) -> (usize, usize, usize) {
    let mut payload = 0usize;
    let mut directory = 0usize;
    let mut end = next;
    while end < records.len() {
        let bytes = &records[end].bytes;
        let entry = RecordHeader::decode(bytes).map_or(0, |h| {
            directory_entry_len(h.kind, h.key_len as usize, h.value_len as usize)
        });
        if buffer_len_for(payload + bytes.len(), directory + entry) > capacity {
            break;
        }
        payload += bytes.len();
        directory += entry;
        end += 1;
    }
    (end, payload, directory)
}

/// The sealed buffer of `records`' copies for `group`, to be written at `open`'s offset
/// (`payload` and `directory` bytes, as [`fitting`] counted them), with each copy's location
/// and the highest LSN among the records.
fn copies_buffer(
    open: &OpenGroupSegment,
    group: u32,
    records: &[&LiveRecord],
    payload: usize,
    directory: usize,
    durable_floor: u64,
) -> (Vec<u8>, Vec<Location>, u64) {
    let buffer_len = buffer_len_for(payload, directory);
    let mut buffer = vec![0u8; buffer_len];
    let mut at = BUFFER_HEADER_SIZE;
    let mut max_lsn = 0;
    let mut locations = Vec::with_capacity(records.len());
    for r in records {
        buffer[at..at + r.bytes.len()].copy_from_slice(&r.bytes);
        locations.push(Location {
            segment: open.segment,
            offset: open.offset + at as u32,
            len: r.bytes.len() as u32,
        });
        max_lsn = max_lsn.max(lsn_of_version(r.version));
        at += r.bytes.len();
    }
    BufferHeader {
        kind: SegmentKind::Group,
        generation: open.generation,
        lsn_first: 0,
        lsn_last: max_lsn,
        durable_floor,
        payload_len: payload as u32,
        record_count: records.len() as u32,
        group,
        buffer_len: buffer_len as u32,
        segment_index: open.segment,
    }
    .seal(&mut buffer);
    (buffer, locations, max_lsn)
}
