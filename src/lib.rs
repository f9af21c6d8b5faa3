//! logstorfs: a FUSE filesystem on a log-structured key-value engine modelled on ScyllaDB's
//! logstor.
//!
//! - [`engine`]: the storage engine. Keys, records, compaction groups and segments; knows nothing
//!   of inodes, paths or FUSE.
//! - [`fs`]: the filesystem. Inodes, directory entries and file data as engine records; the FUSE
//!   adapter is the only code that knows fuser's request and reply types.
//! - [`object`]: the object tier's door: immutable objects in an S3-compatible bucket.
//! - [`cli`]: the command line (`logstorfs mount | stats | fsck`).
//!
//! `ARCHITECTURE.md` at the top of the repository has the map and the invariants.

pub mod cli;
pub mod engine;
pub mod fs;
pub mod mirror;
pub mod object;
