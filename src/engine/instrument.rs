//! Test instrumentation of a real store, as the hidden `logstorfs mount --test-*` options and
//! `replay-cut` reach it: the I/O log lives with the storage it wraps (`storage/io_log.rs`);
//! this path stays so that the command line names it where it always did.

pub use super::storage::io_log::{
    Instrumentation, InstrumentedStorage, LogSummary, replay, summarize,
};
