//! The open buffer and the active segment: a new buffer opened behind the one sealed, a
//! buffer sealed (header, zero padding, record directory), the active mixed segment opened from
//! the free segments and retired when its tail is too small. The rule it keeps: a segment is
//! closed only once the flushes of all its buffers are complete (see `gate.rs`).

use super::{Gate, Log, OpenBuffer, Sealed, State};
use crate::engine::api::{Result, WRITE_BUFFER_SIZE};
use crate::engine::concurrency::{Arc, Mutex};
use crate::engine::format::{
    BLOCK_SIZE, BUFFER_HEADER_SIZE, BufferHeader, NO_GROUP, SegmentKind, buffer_len_for,
};
use crate::engine::segments::Claim;

impl Log {
    pub(super) fn open_new_segment(&self, st: &mut State, claim: Claim) -> Result<()> {
        let (segment, generation) = self
            .segments
            .allocate(SegmentKind::Mixed, NO_GROUP, claim)?;
        st.open = Some(self.new_buffer(st, segment, generation, 0));
        st.active_from_reserve = claim != Claim::User;
        Ok(())
    }

    pub(super) fn new_buffer(
        &self,
        _st: &mut State,
        segment: u32,
        generation: u64,
        offset: u32,
    ) -> OpenBuffer {
        let room = self.segments.segment_size() as usize - offset as usize;
        let mut data = Vec::with_capacity(WRITE_BUFFER_SIZE.min(room));
        data.resize(BUFFER_HEADER_SIZE, 0);
        OpenBuffer {
            seq: 0,
            segment,
            generation,
            offset,
            capacity: WRITE_BUFFER_SIZE.min(room),
            data,
            directory_len: 0,
            records: 0,
            lsn_first: 0,
            lsn_last: 0,
            gate: Arc::new(Gate::default()),
            ranges: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// The active segment's remaining space is too small for the next batch: it closes once the
    /// flushes of the buffers already sealed into it are complete.
    pub(super) fn retire_active_segment(&self, st: &mut State) {
        let open = st.open.take().unwrap();
        debug_assert!(open.is_empty() && open.seq == 0 && open.offset > 0);
        // The open buffer never got a sequence number, so the newest one was sealed into this
        // segment.
        st.closing.push((open.segment, st.next_seq - 1));
        self.close_finished_segments(st);
    }

    pub(super) fn close_finished_segments(&self, st: &mut State) {
        let completed = st.completed_seq;
        let segments = &self.segments;
        st.closing.retain(|&(segment, last)| {
            if last <= completed {
                segments.mark_closed(segment);
                false
            } else {
                true
            }
        });
    }

    /// Seals the open buffer and opens the next one behind it. Only the flusher calls it.
    pub(super) fn seal(&self, st: &mut State) -> Sealed {
        let mut open = st.open.take().unwrap();
        if open.seq == 0 {
            // A marker: a buffer with no batch.
            open.seq = st.next_seq;
            st.next_seq += 1;
        }
        let payload_len = open.data.len() - BUFFER_HEADER_SIZE;
        let buffer_len = buffer_len_for(payload_len, open.directory_len);
        open.data.resize(buffer_len, 0);
        let header = BufferHeader {
            kind: SegmentKind::Mixed,
            generation: open.generation,
            lsn_first: open.lsn_first,
            lsn_last: open.lsn_last,
            durable_floor: st.durable_lsn,
            payload_len: payload_len as u32,
            record_count: open.records,
            group: NO_GROUP,
            buffer_len: buffer_len as u32,
            segment_index: open.segment,
        };
        header.seal(&mut open.data);
        let end = open.offset as usize + buffer_len;
        let room = self.segments.segment_size() as usize - end;
        st.sealed_seq = open.seq;
        st.open_since = None;
        let closes_segment = room < 2 * BLOCK_SIZE;
        if closes_segment {
            st.closing.push((open.segment, open.seq));
        } else {
            st.open = Some(self.new_buffer(st, open.segment, open.generation, end as u32));
        }
        let data = Arc::new(open.data);
        st.writing = Some((open.segment, open.offset, data.clone()));
        Sealed {
            seq: open.seq,
            segment: open.segment,
            offset: open.offset,
            data,
            lsn_last: open.lsn_last,
            floor: header.durable_floor,
            gate: open.gate,
        }
    }
}
