//! The log: the write buffer, its write gate, group commit, write-behind, and the active (mixed)
//! segment.
//!
//! A writer appends its encoded batch to the open buffer under the log lock, which assigns the
//! batch its LSN and the records their locations, and takes a hold on the buffer's *gate*. It
//! then waits only for the *previous* buffer's flush to complete, updates the index and releases
//! its hold: it does not wait for its own buffer's write (*write-behind*). Until that write,
//! readers get the buffer's bytes from memory ([`Log::overlay_unwritten`]), and
//! [`Log::sync`] seals and writes every appended batch before it syncs, so `sync` still makes
//! durable every write that returned before it.
//!
//! The *flusher* thread seals the open buffer (a new one opens behind it, so appends go on during
//! the write: group commit) when it is full, when a sync or a marker asks for it, when the store
//! closes, or `SEAL_DELAY` after its first batch; so consecutive small batches share a buffer
//! instead of each padding a 4 KiB block of its own (5,000 files of 300 B through a mount wrote
//! 10.3 device bytes per user byte with a buffer per batch, 1.5 with write-behind). It writes
//! the buffer to the active segment, then waits for the gate to close, that is for every index
//! update of the buffer, and only then is the flush complete and the next buffer sealed. A
//! segment is closed only when the flushes of all its buffers are complete. Hence the invariant
//! compaction and the separator rely on: **every record of a closed segment is in the index**,
//! and every closed segment is written.
//!
//! Index updates are also applied in buffer order (a writer waits for the previous buffer's
//! flush to complete before it updates), so a put can only race a range delete from its own
//! buffer; see [`super::index::Index::apply`].
//!
//! An I/O error writing a buffer latches the log: the writers of that buffer have returned
//! already, so the error reaches users at their next write or sync (as with the kernel's own
//! writeback), never silently.

use std::time::Duration;

use super::concurrency::{self, Arc, AtomicU64, Condvar, Instant, Mutex, Ordering};

use super::api::{EngineError, Result, WRITE_BUFFER_SIZE};
use super::format::{
    BLOCK_SIZE, BUFFER_HEADER_SIZE, BufferHeader, NO_GROUP, SegmentKind, buffer_len_for,
};
use super::index::RangeDelete;
use super::segments::{Claim, SegmentManager};

/// The buffer's write gate: counts the writers whose index updates are still to come.
#[derive(Default)]
pub struct Gate {
    holds: Mutex<usize>,
    closed: Condvar,
}

impl Gate {
    pub fn enter(self: &Arc<Gate>) -> GateHold {
        *self.holds.lock() += 1;
        GateHold(self.clone())
    }

    pub fn wait_closed(&self) {
        let mut holds = self.holds.lock();
        while *holds > 0 {
            self.closed.wait(&mut holds);
        }
    }
}

/// A writer's hold on a buffer's gate. Keep it until the index update is done.
pub struct GateHold(Arc<Gate>);

impl Drop for GateHold {
    fn drop(&mut self) {
        let mut holds = self.0.holds.lock();
        *holds -= 1;
        if *holds == 0 {
            self.0.closed.notify_all();
        }
    }
}

struct OpenBuffer {
    seq: u64,
    segment: u32,
    generation: u64,
    /// Where the buffer starts in the segment.
    offset: u32,
    /// Largest buffer (header, payload, padding) that fits here.
    capacity: usize,
    /// Header space followed by the payload appended so far.
    data: Vec<u8>,
    /// Bytes the record directory of the payload so far will take (`format.rs`).
    directory_len: usize,
    records: u32,
    lsn_first: u64,
    lsn_last: u64,
    gate: Arc<Gate>,
    ranges: Arc<Mutex<Vec<RangeDelete>>>,
}

impl OpenBuffer {
    fn is_empty(&self) -> bool {
        self.records == 0
    }
    /// Whether a batch of `payload` bytes whose directory entries take `directory` bytes fits.
    fn fits(&self, payload: usize, directory: usize) -> bool {
        buffer_len_for(
            self.data.len() - BUFFER_HEADER_SIZE + payload,
            self.directory_len + directory,
        ) <= self.capacity
    }
}

/// A sealed buffer on its way to the segment.
struct Sealed {
    seq: u64,
    segment: u32,
    offset: u32,
    data: Arc<Vec<u8>>,
    lsn_last: u64,
    /// The durable floor in its header.
    floor: u64,
    gate: Arc<Gate>,
}

/// How long a buffer holding batches may stay open waiting for more before the flusher seals
/// it (write-behind): a writer does not wait for its buffer's write, so consecutive small
/// batches share a buffer instead of each padding a block of its own.
const SEAL_DELAY: Duration = Duration::from_millis(2);

struct State {
    open: Option<OpenBuffer>,
    next_lsn: u64,
    next_seq: u64,
    /// Every buffer up to this sequence number is written.
    written_seq: u64,
    /// Highest LSN in a written buffer (buffers are written in LSN order).
    written_lsn: u64,
    /// Every buffer up to this sequence number has a closed gate: its flush is complete.
    completed_seq: u64,
    /// Segments waiting for their last buffer's flush to complete before they close.
    closing: Vec<(u32, u64)>,
    durable_lsn: u64,
    /// Highest durable floor in a written buffer's header: the batches up to it are vouched
    /// for on disk (see [`Log::newest_batches_unvouched`]).
    floor_written: u64,
    failed: Option<String>,
    /// Sequence number of the newest sealed buffer.
    sealed_seq: u64,
    /// Seal buffers (even empty ones: markers) until one with this sequence number is sealed.
    marker_until: u64,
    /// Of those, up to this sequence number a marker may open a segment from the reserve
    /// (a marker that frees space: see [`Log::flush_marker`]); beyond it only a segment users
    /// could take themselves.
    reserve_marker_until: u64,
    /// Beyond `reserve_marker_until`, up to this sequence number a marker may open a segment
    /// from the reserve down to the reclamation floor (the marker of a clean close).
    close_marker_until: u64,
    stop: bool,
    /// The flusher thread has returned: nothing more will be written, so whoever waits for a
    /// write must give up (with `Closed`) instead of waiting forever.
    flusher_gone: bool,
    /// The active mixed segment was taken from the reserve (by a marker or a delete batch).
    active_from_reserve: bool,
    /// The sealed buffer being written: (segment, offset, bytes). Readers are served from it
    /// (and from the open buffer) until it is written.
    writing: Option<(u32, u32, Arc<Vec<u8>>)>,
    /// Seal the open buffer as soon as it holds a batch at or below this LSN (a sync, or a
    /// writer that found it full, waits for it).
    seal_upto: u64,
    /// When the open buffer got its first batch.
    open_since: Option<Instant>,
}

/// Where a writer's batch landed.
pub struct Ticket {
    pub lsn: u64,
    pub seq: u64,
    pub segment: u32,
    /// Offset of the batch's first byte in the segment.
    pub offset: u32,
    /// The writer's hold on the buffer's gate: released when the ticket is dropped, after the
    /// index update.
    _hold: GateHold,
    pub buffer_ranges: Arc<Mutex<Vec<RangeDelete>>>,
}

pub struct Log {
    segments: Arc<SegmentManager>,
    state: Mutex<State>,
    changed: Condvar,
    /// Wakes the flusher thread.
    work: Condvar,
    /// Serialises `sync` so that concurrent callers share one storage sync.
    sync_lock: Mutex<()>,
    pub device_bytes_written: AtomicU64,
    /// Test hook: sleep this long (ms) after a buffer is written, before waking its writers.
    pub test_delay_after_write_ms: AtomicU64,
}

/// How one batch is to be placed: its encoded bytes, and a callback that fills in the LSN.
pub trait Placeable {
    fn len(&self) -> usize;
    /// Bytes the batch's records take in a buffer's record directory (`format.rs`).
    fn directory_len(&self) -> usize;
    /// Copies the batch, stamped with `lsn`, to `out` (exactly `len()` bytes).
    fn stamp_into(&self, lsn: u64, out: &mut [u8]);
    fn ranges(&self, lsn: u64, segment: u32, offset: u32) -> Vec<RangeDelete>;
    /// Whether the batch may take the segments kept in reserve (relocation and deletes, which
    /// free space, must make progress in a full store).
    fn may_use_reserve(&self) -> bool;
}

impl Log {
    /// A log whose next batch gets `next_lsn`, every batch up to `durable_lsn` durable, and
    /// the highest durable floor in a buffer on disk `floor_on_disk`.
    pub fn new(
        segments: Arc<SegmentManager>,
        next_lsn: u64,
        durable_lsn: u64,
        floor_on_disk: u64,
    ) -> Log {
        Log {
            segments,
            state: Mutex::new(State {
                open: None,
                next_lsn,
                next_seq: 1,
                written_seq: 0,
                written_lsn: durable_lsn,
                completed_seq: 0,
                closing: Vec::new(),
                durable_lsn,
                floor_written: floor_on_disk,
                failed: None,
                sealed_seq: 0,
                marker_until: 0,
                reserve_marker_until: 0,
                close_marker_until: 0,
                stop: false,
                flusher_gone: false,
                active_from_reserve: false,
                writing: None,
                seal_upto: 0,
                open_since: None,
            }),
            changed: Condvar::new(),
            work: Condvar::new(),
            sync_lock: Mutex::new(()),
            device_bytes_written: AtomicU64::new(0),
            test_delay_after_write_ms: AtomicU64::new(0),
        }
    }

    pub fn durable_lsn(&self) -> u64 {
        self.state.lock().durable_lsn
    }

    pub fn last_lsn(&self) -> u64 {
        self.state.lock().next_lsn - 1
    }

    pub fn failure(&self) -> Option<String> {
        self.state.lock().failed.clone()
    }

    /// Latches the log read-only after an I/O error on the write path.
    pub fn fail(&self, why: String) {
        let mut st = self.state.lock();
        if st.failed.is_none() {
            log::error!("store stops accepting writes: {why}");
            st.failed = Some(why);
        }
        self.changed.notify_all();
        self.work.notify_all();
    }

    /// Appends a batch and waits until its buffer is written and the flushes before it are
    /// complete. The caller then updates the index and drops the ticket (releasing its hold).
    pub fn append(&self, batch: &dyn Placeable) -> Result<Ticket> {
        let len = batch.len();
        let directory_len = batch.directory_len();
        if buffer_len_for(len, directory_len) > WRITE_BUFFER_SIZE {
            // No buffer could ever take it (callers validate batches; this is the backstop
            // against retiring segment after segment for it).
            return Err(EngineError::Limit(format!(
                "batch of {len} bytes and {directory_len} of record directory exceeds a write \
                 buffer"
            )));
        }
        let mut st = self.state.lock();
        // Find room in an open buffer.
        loop {
            if let Some(why) = &st.failed {
                return Err(EngineError::Failed(why.clone()));
            }
            if st.flusher_gone {
                return Err(EngineError::Closed);
            }
            if st.open.is_none() {
                let claim = if batch.may_use_reserve() {
                    Claim::Deletes
                } else {
                    Claim::User
                };
                self.open_new_segment(&mut st, claim)?;
            }
            // A mixed segment that a marker or a delete opened from the reserve is not for user
            // batches while users could not take a segment themselves: filling it would hand
            // the reserve to users one segment per free, and compaction would run down to its
            // floor, where it can copy nothing (seen with a 64 MiB store at its capacity).
            if !batch.may_use_reserve()
                && st.active_from_reserve
                && !self.segments.user_may_allocate()
            {
                return Err(EngineError::NoSpace);
            }
            let open = st.open.as_ref().unwrap();
            if open.fits(len, directory_len) {
                break;
            }
            if open.is_empty() {
                // The segment's tail is too small for this batch: close it, move on.
                self.retire_active_segment(&mut st);
                continue;
            }
            // Full: the flusher seals it as soon as it is free.
            st.seal_upto = st.seal_upto.max(st.next_lsn - 1);
            self.work.notify_one();
            self.changed.wait(&mut st);
        }
        let lsn = st.next_lsn;
        st.next_lsn += 1;
        let next_seq = st.next_seq;
        let open = st.open.as_mut().unwrap();
        if open.seq == 0 {
            open.seq = next_seq;
            st.next_seq += 1;
        }
        let open = st.open.as_mut().unwrap();
        let at = open.data.len();
        open.data.resize(at + len, 0);
        batch.stamp_into(lsn, &mut open.data[at..]);
        open.directory_len += directory_len;
        open.records += 1;
        if open.lsn_first == 0 {
            open.lsn_first = lsn;
        }
        let first_batch = open.records == 1;
        open.lsn_last = lsn;
        let offset = open.offset + at as u32;
        open.ranges
            .lock()
            .extend(batch.ranges(lsn, open.segment, offset));
        let ticket = Ticket {
            lsn,
            seq: open.seq,
            segment: open.segment,
            offset,
            _hold: open.gate.enter(),
            buffer_ranges: open.ranges.clone(),
        };
        if first_batch {
            st.open_since = Some(Instant::now());
            self.work.notify_one();
        }
        // Index updates go in buffer order: wait for the previous buffer's flush to complete.
        // Not for this buffer's write (write-behind): readers are served from the buffer
        // until it is written (`overlay_unwritten`), and `sync` writes it first.
        while st.completed_seq + 1 < ticket.seq {
            if let Some(why) = &st.failed {
                return Err(EngineError::Failed(why.clone()));
            }
            if st.flusher_gone {
                return Err(EngineError::Closed);
            }
            self.changed.wait(&mut st);
        }
        Ok(ticket)
    }

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
                    self.changed.notify_all();
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
                    self.changed.notify_all();
                    continue;
                }
            }
            let sealed = self.seal(&mut st);
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
            }
        }
    }

    /// Asks the flusher thread to stop once nothing is left to write.
    pub fn stop(&self) {
        self.state.lock().stop = true;
        self.work.notify_all();
    }

    fn open_new_segment(&self, st: &mut State, claim: Claim) -> Result<()> {
        let (segment, generation) = self
            .segments
            .allocate(SegmentKind::Mixed, NO_GROUP, claim)?;
        st.open = Some(self.new_buffer(st, segment, generation, 0));
        st.active_from_reserve = claim != Claim::User;
        Ok(())
    }

    fn new_buffer(
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
    fn retire_active_segment(&self, st: &mut State) {
        let open = st.open.take().unwrap();
        debug_assert!(open.is_empty() && open.seq == 0 && open.offset > 0);
        // The open buffer never got a sequence number, so the newest one was sealed into this
        // segment.
        st.closing.push((open.segment, st.next_seq - 1));
        self.close_finished_segments(st);
    }

    fn close_finished_segments(&self, st: &mut State) {
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
    fn seal(&self, st: &mut State) -> Sealed {
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

    /// Writes a sealed buffer (only the flusher does).
    fn write_sealed(&self, sealed: &Sealed) -> Result<()> {
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
                let end = sealed.offset + sealed.data.len() as u32;
                self.segments
                    .note_written(sealed.segment, end, sealed.lsn_last);
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

    fn flush_marker_claiming(&self, claim: Claim) -> Result<()> {
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

    /// Makes every batch that returned before this call durable. Concurrent callers share one
    /// storage sync (group commit).
    pub fn sync(&self, storage_sync: impl FnOnce() -> std::io::Result<()>) -> Result<()> {
        let target = {
            let mut st = self.state.lock();
            // Every batch appended so far: have the open buffer sealed, wait for its write.
            let target = st.next_lsn - 1;
            if target > st.written_lsn {
                st.seal_upto = st.seal_upto.max(target);
                self.work.notify_one();
            }
            while st.written_lsn < target {
                if let Some(why) = &st.failed {
                    return Err(EngineError::Failed(why.clone()));
                }
                if st.flusher_gone {
                    return Err(EngineError::Closed);
                }
                self.changed.wait(&mut st);
            }
            if let Some(why) = &st.failed {
                return Err(EngineError::Failed(why.clone()));
            }
            target
        };
        let _serial = self.sync_lock.lock();
        if self.state.lock().durable_lsn >= target {
            return Ok(());
        }
        // Everything written up to now, which includes `target`.
        let upto = self.state.lock().written_lsn;
        if let Err(e) = storage_sync() {
            // After a failed fsync the kernel may have dropped the dirty pages: nothing written
            // since the last good sync can be trusted to reach the disk. Stop here.
            let why = format!("sync: {e}");
            self.fail(why.clone());
            return Err(EngineError::Failed(why));
        }
        let mut st = self.state.lock();
        st.durable_lsn = st.durable_lsn.max(upto);
        Ok(())
    }

    /// For tests: whether the flush of buffer `seq` is complete.
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn completed_seq(&self) -> u64 {
        self.state.lock().completed_seq
    }

    /// Waits until every sealed buffer's flush is complete (or the log failed).
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn wait_flushes_complete(&self) {
        let mut st = self.state.lock();
        st.seal_upto = st.seal_upto.max(st.next_lsn - 1);
        self.work.notify_one();
        while (st.completed_seq < st.sealed_seq || st.open.as_ref().is_some_and(|o| !o.is_empty()))
            && st.failed.is_none()
            && !st.flusher_gone
        {
            self.changed.wait(&mut st);
        }
    }

    /// Whether the newest batches, all durable, have no buffer written behind them whose
    /// durable floor covers them, and none is being added. Recovery tells damage in a log
    /// buffer from a write torn by a power cut only by such a buffer (`scan::scan_segment`,
    /// `directory_vouches`): until one is written, damage to the newest synced batches would
    /// look torn and their keys serve older versions. A marker then vouches for them.
    pub fn newest_batches_unvouched(&self) -> bool {
        let st = self.state.lock();
        let last = st.next_lsn - 1;
        last > 0
            && st.durable_lsn >= last
            && st.floor_written < last
            && st.open.as_ref().is_none_or(|o| o.is_empty())
            && st.failed.is_none()
    }

    pub fn has_unsynced(&self) -> bool {
        let st = self.state.lock();
        st.next_lsn - 1 > st.durable_lsn
    }

    /// The bytes of `[offset, offset + len)` of `segment` that are still in memory: in the open
    /// buffer or the one being written. As `(position in the range, bytes)`. Read these first,
    /// then the segment: a buffer not listed here was written before this call.
    pub fn overlay_unwritten(
        &self,
        segment: u32,
        offset: u32,
        len: usize,
    ) -> Vec<(usize, Vec<u8>)> {
        let st = self.state.lock();
        let mut out = Vec::new();
        let end = offset as usize + len;
        let mut take = |start: u32, bytes: &[u8]| {
            let (b0, b1) = (start as usize, start as usize + bytes.len());
            let (lo, hi) = (b0.max(offset as usize), b1.min(end));
            if lo < hi {
                out.push((lo - offset as usize, bytes[lo - b0..hi - b0].to_vec()));
            }
        };
        if let Some((s, o, data)) = &st.writing
            && *s == segment
        {
            take(*o, data);
        }
        if let Some(open) = &st.open
            && open.segment == segment
        {
            take(open.offset, &open.data);
        }
        out
    }
}

/// The write gate under schedules of two writers and the flusher chosen by shuttle's PCT
/// scheduler, which finds bugs of a few ordering constraints with a known probability
/// (`cargo test --release --features shuttle --lib gate_schedules`). Shuttle's exhaustive search
/// does not finish here in minutes.
#[cfg(all(test, feature = "shuttle"))]
mod gate_schedules {
    use super::*;

    /// Writers take a hold while the buffer is open (the log's lock stands for it here), do
    /// their index update, and let go; the flusher seals the buffer and waits for the gate.
    /// Once the wait returns, every writer that entered has done its index update.
    #[test]
    fn the_flush_waits_for_every_index_update_of_its_buffer() {
        shuttle::check_pct(
            || {
                let gate = Arc::new(Gate::default());
                // (sealed, writers that entered, index updates done)
                let buffer = Arc::new(Mutex::new((false, 0u32, 0u32)));
                let writers: Vec<_> = (0..2)
                    .map(|_| {
                        let (gate, buffer) = (gate.clone(), buffer.clone());
                        shuttle::thread::spawn(move || {
                            let hold = {
                                let mut b = buffer.lock();
                                if b.0 {
                                    return;
                                }
                                b.1 += 1;
                                gate.enter()
                            };
                            buffer.lock().2 += 1;
                            drop(hold);
                        })
                    })
                    .collect();
                buffer.lock().0 = true;
                gate.wait_closed();
                let b = buffer.lock();
                assert_eq!(
                    b.2, b.1,
                    "the flush completed before an index update of its buffer"
                );
                drop(b);
                for w in writers {
                    w.join().unwrap();
                }
            },
            5000,
            3,
        );
    }
}
