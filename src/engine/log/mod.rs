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

use super::concurrency::{Arc, AtomicU64, Condvar, Instant, Mutex, MutexGuard};

use super::api::{EngineError, Result, WRITE_BUFFER_SIZE};
use super::format::{BUFFER_HEADER_SIZE, buffer_len_for};
use super::index::RangeDelete;
use super::segments::{Claim, SegmentManager};

mod buffers;
mod flusher;
mod gate;

use gate::{Gate, GateHold};

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
    /// Wakes the writers waiting for room in a full open buffer (`wait_for_room`). Apart from
    /// `changed`, and woken one at a time, so that a buffer's seal, write and completion do not
    /// wake every writer queued for room (13 of 16 writers of 64 KiB values, for a buffer that
    /// takes 3) only for most to sleep again: the seal wakes one, and each writer woken leaves
    /// `wait_for_room` by waking the next (a relay), whether it found room or not. A woken
    /// writer that finds no room sleeps again without waking the next, but has asked for the
    /// (non-empty) buffer to be sealed, whose seal wakes one again. A failure or the flusher's
    /// exit wakes them all.
    room: Condvar,
    /// Wakes the writers waiting for the previous buffer's flush (`wait_for_previous_flush`):
    /// notified when a flush completes, and on failure or the flusher's exit.
    flushed: Condvar,
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
            room: Condvar::new(),
            flushed: Condvar::new(),
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

    /// Runs `f` while no buffer write completes, and returns with its result the LSN of the
    /// last batch written: segments' written ends that `f` reads then hold exactly the batches
    /// up to that LSN (buffers are written in LSN order, and a buffer's end is noted under
    /// this lock: `Log::write_sealed`).
    pub fn while_no_write_completes<R>(&self, f: impl FnOnce() -> R) -> (R, u64) {
        let st = self.state.lock();
        (f(), st.written_lsn)
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
        self.notify_all_waiters();
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
        self.wait_for_room(&mut st, batch, len, directory_len)?;
        let (ticket, first_batch) = place(&mut st, batch, len, directory_len);
        if first_batch {
            st.open_since = Some(Instant::now());
            self.work.notify_one();
        }
        self.wait_for_previous_flush(&mut st, ticket.seq)?;
        Ok(ticket)
    }

    /// Waits until the open buffer has room for a batch of `len` bytes and `directory_len`
    /// bytes of record directory, opening a segment or retiring the active one as needed.
    fn wait_for_room(
        &self,
        st: &mut MutexGuard<'_, State>,
        batch: &dyn Placeable,
        len: usize,
        directory_len: usize,
    ) -> Result<()> {
        let mut woken = false;
        let result = self.wait_for_room_relayed(st, batch, len, directory_len, &mut woken);
        if woken {
            // Pass the wake-up on (see `Log::room`), on every way out: the next writer may
            // fit behind this one, or be the one to open the next segment.
            self.room.notify_one();
        }
        result
    }

    /// [`Log::wait_for_room`]; sets `woken` once it has slept on `room`.
    fn wait_for_room_relayed(
        &self,
        st: &mut MutexGuard<'_, State>,
        batch: &dyn Placeable,
        len: usize,
        directory_len: usize,
        woken: &mut bool,
    ) -> Result<()> {
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
                self.open_new_segment(st, claim)?;
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
                return Ok(());
            }
            if open.is_empty() {
                // The segment's tail is too small for this batch: close it, move on.
                self.retire_active_segment(st);
                continue;
            }
            // Full: the flusher seals it as soon as it is free.
            st.seal_upto = st.seal_upto.max(st.next_lsn - 1);
            self.work.notify_one();
            self.room.wait(st);
            *woken = true;
        }
    }

    /// Index updates go in buffer order: waits for the flush of the buffer before `seq` to
    /// complete. Not for this buffer's write (write-behind): readers are served from the buffer
    /// until it is written (`overlay_unwritten`), and `sync` writes it first.
    fn wait_for_previous_flush(&self, st: &mut MutexGuard<'_, State>, seq: u64) -> Result<()> {
        while st.completed_seq + 1 < seq {
            if let Some(why) = &st.failed {
                return Err(EngineError::Failed(why.clone()));
            }
            if st.flusher_gone {
                return Err(EngineError::Closed);
            }
            self.flushed.wait(st);
        }
        Ok(())
    }

    /// Wakes whoever waits on the log, whatever for: after a failure, or once the flusher is
    /// gone.
    fn notify_all_waiters(&self) {
        self.changed.notify_all();
        self.room.notify_all();
        self.flushed.notify_all();
    }

    /// Asks the flusher thread to stop once nothing is left to write.
    pub fn stop(&self) {
        self.state.lock().stop = true;
        self.work.notify_all();
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

/// Gives `batch` the next LSN and copies it, stamped, into the open buffer (which has room),
/// with a hold on the buffer's gate. Returns the writer's ticket, and whether this is the
/// buffer's first batch.
fn place(
    st: &mut State,
    batch: &dyn Placeable,
    len: usize,
    directory_len: usize,
) -> (Ticket, bool) {
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
    let ranges = batch.ranges(lsn, open.segment, offset);
    if !ranges.is_empty() {
        open.ranges.lock().extend(ranges);
    }
    let ticket = Ticket {
        lsn,
        seq: open.seq,
        segment: open.segment,
        offset,
        _hold: open.gate.enter(),
        buffer_ranges: open.ranges.clone(),
    };
    (ticket, first_batch)
}
