//! Compaction: copies the live records out of closed segments whose live bytes have dropped, so
//! that the segments can be freed. The policy stands apart from the pass: `policy` decides which
//! segments to empty from their figures alone (pure, no I/O); `pass` reads the victims and
//! copies their live records out (through `copies.rs`, which the separator shares).
//!
//! Liveness is decided by looking records up in the index: a record is live when the index
//! points at exactly its location. That is only sound for closed segments, whose every record is
//! in the index (the write gate's guarantee, see `log/gate.rs`). Copies keep their bytes
//! verbatim, so a copy keeps its record's version and CRC; the index moves to a copy by
//! compare-and-set, so a record overwritten meanwhile stays where its newest version is, and the
//! stale copy loses to that newer version at recovery too. The victims are freed by the
//! dead-segment reclaimer once the copies are durable (it syncs before zeroing anything).

mod pass;
mod policy;

pub use policy::*;
