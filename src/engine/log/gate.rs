//! The write gate: each write buffer counts the writers whose index updates are still to come,
//! and the flusher waits for that count to reach zero before the buffer's flush is complete.
//! The rule it keeps: a flush completes (and so a segment closes) only once every writer of the
//! buffer let go of its hold, that is once every record of the buffer is in the index.

use crate::engine::concurrency::{Arc, Condvar, Mutex};

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
