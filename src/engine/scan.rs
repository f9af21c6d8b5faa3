//! The one segment scan: reads a segment image and gives a verdict for each buffer and each
//! stretch of it, which recovery acts on and fsck reports (neither decides on its own).
//!
//! - A *valid* buffer passes its checks, or is repaired exactly ([`checked_or_repaired`]): its
//!   records are served.
//! - A *damaged stretch* fails its checks but is proven damage, not a torn write: a valid buffer
//!   of the same use behind it vouches for it, or the sync table (`synctable.rs`) proves it
//!   synced, or it is a log tail (see [`scan_segment`]). Which of its records recovery takes is
//!   [`Stretch::takes`], once the log's durable floor and end are known ([`log_end`]).
//! - The *stop*: where the scan ends before the segment does, at a torn write, zeros, or bytes of
//!   an earlier use; what lies there is never served (recovery notes its puts, fsck compares
//!   its records and the valid buffers behind it with what is served).
//!
//! Only this module decodes buffers for recovery and fsck, and only it checks records' CRCs;
//! `summaries.rs` reads each buffer it summarizes with [`valid_buffer`] too.
//!
//! Its parts: [`walk`] finds the valid buffers, the damaged stretches and the stop; [`buffer`]
//! validates and repairs one buffer; [`directory`] reads record directories as witnesses;
//! [`stretch`] lists a stretch's records and which of them recovery takes; [`verdicts`] puts
//! them together for one segment; [`log_end`] finds where the log ends across segments.

mod buffer;
mod directory;
mod log_end;
mod stretch;
mod verdicts;
mod walk;

pub(in crate::engine) use buffer::valid_buffer;
pub use buffer::{ValidBuffer, records_of};
#[cfg(test)]
pub use directory::own_directory_generation;
pub use log_end::{LogEnd, cut_beyond, log_end, log_end_above};
#[cfg(test)]
pub use stretch::stretch_records;
pub use stretch::{Stretch, StretchRecord, Take};
pub use verdicts::{Stop, Verdicts, segment_verdicts};
#[cfg(test)]
pub use walk::DamagedStretch;
pub(in crate::engine) use walk::may_be_in_use;
pub use walk::scan_segment;
#[cfg(any(test, feature = "test-hooks"))]
pub use walk::valid_buffers;
