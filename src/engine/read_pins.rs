//! Read pins: a segment is never freed under a read that may hold a location in it.
//!
//! A read looks a key up in the index, then reads the record at the location it found. In
//! between, compaction may copy the record elsewhere and move the index (the old bytes stay
//! where they were), and the reclaimer may then free the old segment: zero its first sector,
//! and let a new use overwrite it. A read pins before its lookup and unpins once its bytes are
//! read; the reclaimer, once it knows which segments are dead (no index entry points into them
//! any more, so no later lookup can find them), waits out every pin taken before that moment.
//! A read thus always finds the very record its entry names, and a record that fails its check
//! is damage, never a move.
//!
//! Two counters, one per epoch: a pin counts in the current epoch; the reclaimer opens a new
//! epoch and waits until the old one's count is zero. Readers never wait (a short mutex only),
//! pins may nest, and pins taken after the switch are not waited for.

use super::concurrency::{Condvar, Mutex};

#[derive(Default)]
pub struct ReadPins {
    state: Mutex<Epochs>,
    unpinned: Condvar,
}

#[derive(Default)]
struct Epochs {
    epoch: u64,
    pins: [u64; 2],
}

/// Held by a read from before its index lookup until its bytes are read.
pub struct Pin<'a> {
    pins: &'a ReadPins,
    slot: usize,
}

impl ReadPins {
    pub fn pin(&self) -> Pin<'_> {
        let mut st = self.state.lock();
        let slot = (st.epoch % 2) as usize;
        st.pins[slot] += 1;
        Pin { pins: self, slot }
    }

    /// Returns once every pin taken before this call was released. Serialised by the caller
    /// (the reclaimer's lock): two waiters at once could each switch the epoch.
    pub fn wait_out_earlier_reads(&self) {
        let mut st = self.state.lock();
        let old = (st.epoch % 2) as usize;
        st.epoch += 1;
        while st.pins[old] > 0 {
            self.unpinned.wait(&mut st);
        }
    }
}

impl Drop for Pin<'_> {
    fn drop(&mut self) {
        let mut st = self.pins.state.lock();
        st.pins[self.slot] -= 1;
        if st.pins[self.slot] == 0 {
            self.pins.unpinned.notify_all();
        }
    }
}
