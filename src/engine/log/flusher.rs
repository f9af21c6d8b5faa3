//! The flusher: the thread that seals the open buffer (when full, asked for by a sync or a
//! marker, at close, or `SEAL_DELAY` after its first batch), writes it to the active segment,
//! waits for its gate and completes its flush; and the markers, buffers with no batch whose
//! header records the durable floor. The rule it keeps: buffers are written and completed in
//! order, one at a time, and an I/O error latches the log instead of being lost.

use std::time::Duration;

use super::{Log, Sealed};
use crate::engine::api::{EngineError, Result};
use crate::engine::concurrency::{self, Ordering};
use crate::engine::segments::Claim;

/// How long a buffer holding batches may stay open waiting for more before the flusher seals
/// it (write-behind): a writer does not wait for its buffer's write, so consecutive small
/// batches share a buffer instead of each padding a block of its own.
const SEAL_DELAY: Duration = Duration::from_millis(2);

impl Log {
    /// The flusher thread's loop: seal, write, wake the writers, wait for the gate, complete.
    /// Returns when asked to stop and nothing is left to write.
    pub fn run_flusher(&self) {
        let mut st = self.state.lock();
        loop {
            let has_batches = st.open.as_ref().is_some_and(|o| !o.is_empty());
            let marker_due = st.sealed_seq < st.marker_until;
            let waited = st.open_since.map_or(Duration::ZERO, |t| t.elapsed());
            let seal_due = has_batches
                && (st.stop
                    || waited >= SEAL_DELAY
                    || st
                        .open
                        .as_ref()
                        .is_some_and(|o| o.lsn_first <= st.seal_upto));
            if has_batches && !seal_due && !marker_due && st.failed.is_none() {
                let left = SEAL_DELAY.saturating_sub(waited);
                self.work
                    .wait_for(&mut st, left.max(Duration::from_micros(100)));
                continue;
            }
            if st.failed.is_some() || !(has_batches || marker_due) {
                if st.stop {
                    st.flusher_gone = true;
                    self.notify_all_waiters();
                    return;
                }
                self.work.wait_for(&mut st, Duration::from_millis(100));
                continue;
            }
            if st.open.is_none() {
                // A marker that frees space may take the reserve; one that only proves what is
                // synced may not: on a full host disk, where users cannot take a segment, such
                // markers would use the reserve up, one segment each time a segment closes,
                // and leave nothing for the deletes that free space.
                let claim = if st.sealed_seq < st.reserve_marker_until {
                    Claim::FreesSpace
                } else if st.sealed_seq < st.close_marker_until {
                    Claim::Deletes
                } else {
                    Claim::User
                };
                if let Err(e) = self.open_new_segment(&mut st, claim) {
                    // No room even for a marker: let the requester see the failure.
                    st.marker_until = 0;
                    st.reserve_marker_until = 0;
                    st.close_marker_until = 0;
                    log::warn!("cannot write a marker buffer: {e}");
                    self.notify_all_waiters();
                    continue;
                }
            }
            let sealed = self.seal(&mut st);
            // Writers waiting for room may fill the buffer opened behind it (or open the next
            // segment) while this one is written: the first of them, who wakes the next.
            self.room.notify_one();
            drop(st);
            let written = self.write_sealed(&sealed);
            if written.is_ok() {
                // The flush completes only once every writer of the buffer has updated the
                // index: the write gate.
                sealed.gate.wait_closed();
            }
            st = self.state.lock();
            if written.is_ok() {
                st.floor_written = st.floor_written.max(sealed.floor);
                st.completed_seq = sealed.seq;
                self.close_finished_segments(&mut st);
                self.changed.notify_all();
                self.flushed.notify_all();
            }
        }
    }

    /// Writes a sealed buffer (only the flusher does).
    pub(super) fn write_sealed(&self, sealed: &Sealed) -> Result<()> {
        let result = self
            .segments
            .write(sealed.segment, sealed.offset, &sealed.data);
        let delay = self.test_delay_after_write_ms.load(Ordering::Relaxed);
        if delay > 0 {
            concurrency::sleep(Duration::from_millis(delay));
        }
        let mut st = self.state.lock();
        match result {
            Ok(()) => {
                self.segments.note_buffer_written(
                    sealed.segment,
                    sealed.offset,
                    &sealed.data,
                    sealed.lsn_last,
                );
                self.device_bytes_written
                    .fetch_add(sealed.data.len() as u64, Ordering::Relaxed);
                st.written_seq = sealed.seq;
                st.written_lsn = st.written_lsn.max(sealed.lsn_last);
                st.writing = None;
                self.close_finished_segments(&mut st);
                self.changed.notify_all();
                Ok(())
            }
            Err(e) => {
                let why = format!("writing segment {}: {e}", sealed.segment);
                drop(st);
                self.fail(why.clone());
                Err(EngineError::Failed(why))
            }
        }
    }

    /// Has the flusher write a buffer even if it holds no batch (a *marker*: its header
    /// records the current durable floor), and waits for that flush to complete. For markers
    /// that free space (before segments are freed): it may open a segment from the reserve,
    /// its last free segment included.
    pub fn flush_marker(&self) -> Result<()> {
        self.flush_marker_claiming(Claim::FreesSpace)
    }

    /// [`Log::flush_marker`] for the marker of a clean close, which frees nothing: it may open
    /// a segment from the reserve, but leaves the reclamation floor free, so that the next
    /// session can still free segments (the marker's own segment among them).
    pub fn flush_close_marker(&self) -> Result<()> {
        self.flush_marker_claiming(Claim::Deletes)
    }

    /// [`Log::flush_marker`] for a marker that frees nothing (the sync table's proof of closed
    /// log segments): it never opens a segment from the reserve, and fails with `NoSpace`
    /// where users could not take a segment either.
    pub fn flush_proof_marker(&self) -> Result<()> {
        self.flush_marker_claiming(Claim::User)
    }

    pub(super) fn flush_marker_claiming(&self, claim: Claim) -> Result<()> {
        let mut st = self.state.lock();
        // Any buffer sealed from now on carries a floor at least as high as the current one.
        let after = st.next_seq;
        st.marker_until = st.marker_until.max(after);
        match claim {
            Claim::FreesSpace => st.reserve_marker_until = st.reserve_marker_until.max(after),
            Claim::Deletes => st.close_marker_until = st.close_marker_until.max(after),
            Claim::User | Claim::Compaction => {}
        }
        self.work.notify_one();
        while st.completed_seq < after {
            if let Some(why) = &st.failed {
                return Err(EngineError::Failed(why.clone()));
            }
            if st.marker_until < after {
                return Err(EngineError::NoSpace);
            }
            if st.flusher_gone {
                return Err(EngineError::Closed);
            }
            self.changed.wait(&mut st);
        }
        Ok(())
    }
}
