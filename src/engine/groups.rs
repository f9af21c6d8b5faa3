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

/// The open group-owned segment of every group that has one.
#[derive(Default)]
pub struct GroupWriter {
    open: BTreeMap<u32, OpenGroupSegment>,
}

/// What one `write` did.
pub struct Written {
    /// New location of each record, in the order given.
    pub locations: Vec<Location>,
    /// Bytes written to the device (headers and padding included).
    pub device_bytes: u64,
}

impl GroupWriter {
    /// Appends copies of `records` (every one of `group`) to the group's open segment, opening
    /// new segments as they fill, as `claim` allows: compaction, which frees space, may take
    /// part of the reserve; the separator may not, so that sorting records never eats the room
    /// that freeing space needs. `durable_floor` goes into every buffer header (see
    /// `format.rs`).
    pub fn write(
        &mut self,
        segments: &SegmentManager,
        group: u32,
        records: &[&LiveRecord],
        durable_floor: u64,
        claim: Claim,
    ) -> Result<Written> {
        let segment_size = segments.segment_size();
        let mut locations = Vec::with_capacity(records.len());
        let mut device_bytes = 0u64;
        let mut next = 0;
        while next < records.len() {
            let open = match self.open.get_mut(&group) {
                Some(open) => open,
                None => {
                    let (segment, generation) =
                        segments.allocate(SegmentKind::Group, group, claim)?;
                    self.open.entry(group).or_insert(OpenGroupSegment {
                        segment,
                        generation,
                        offset: 0,
                    })
                }
            };
            let capacity = WRITE_BUFFER_SIZE.min((segment_size - open.offset) as usize);
            // Take as many records as fit in one buffer here.
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
            let buffer_len = buffer_len_for(payload, directory);
            let mut buffer = vec![0u8; buffer_len];
            let mut at = BUFFER_HEADER_SIZE;
            let mut max_lsn = 0;
            for r in &records[next..end] {
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
                record_count: (end - next) as u32,
                group,
                buffer_len: buffer_len as u32,
                segment_index: open.segment,
            }
            .seal(&mut buffer);
            segments.write(open.segment, open.offset, &buffer)?;
            open.offset += buffer_len as u32;
            segments.note_written(open.segment, open.offset, max_lsn);
            // Recorded in the sync table before any source of these copies is freed.
            segments
                .sync_table
                .note_copies(open.segment, open.generation, open.offset);
            device_bytes += buffer_len as u64;
            if ((segment_size - open.offset) as usize) < 2 * BLOCK_SIZE {
                let full = self.open.remove(&group).unwrap();
                segments.mark_closed(full.segment);
            }
            next = end;
        }
        Ok(Written {
            locations,
            device_bytes,
        })
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
