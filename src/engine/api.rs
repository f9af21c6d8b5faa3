//! The engine's public types: mutations, options, errors, statistics and limits.
//!
//! Everything the filesystem layer may name lives here or in `engine/mod.rs`; the components
//! behind them stay `pub(crate)`.

use std::fmt;
use std::io;

/// A compaction group. Group 0 always exists (the filesystem's root group).
pub type GroupId = u32;

/// Log sequence number of a batch. Batches that returned before another began have lower LSNs.
pub type Lsn = u64;

/// Which group the records of a key belong to now, when the owner of the keys has moved them
/// (`Engine::set_current_group`): given the key and a way to read other keys' values, the
/// group, or `None` to leave the record where it was written. Called by the separator and
/// compaction for every put they copy, so it must be cheap; it must not write to the engine
/// nor wait on anything that may wait on the engine (it runs inside their passes).
pub type CurrentGroup = std::sync::Arc<
    dyn Fn(&[u8], &dyn Fn(&[u8]) -> Option<Vec<u8>>) -> Option<GroupId> + Send + Sync,
>;

/// The root group: every store has it.
pub const ROOT_GROUP: GroupId = 0;

/// Longest key, in bytes.
pub const MAX_KEY_LEN: usize = 512;

/// Size of one write buffer, header included. A batch must fit in one buffer, so this bounds the
/// size of an atomic batch.
pub const WRITE_BUFFER_SIZE: usize = 256 * 1024;

/// Largest encoded batch, in bytes: its records (headers, keys, values) and their entries in
/// the buffer's record directory (each record's header and key again, and a range delete's
/// end; see [`put_overhead_bytes`]), what fits in one write buffer beside the buffer header
/// and the directory's trailer.
pub const MAX_BATCH_BYTES: usize = WRITE_BUFFER_SIZE
    - crate::engine::format::BUFFER_HEADER_SIZE
    - crate::engine::format::DIRECTORY_TRAILER_SIZE;

/// Bytes a put of a `key_len`-byte key takes on disk beside its value, for callers that budget
/// batches against [`MAX_BATCH_BYTES`]: its record header and, in the record directory, its
/// header and key again.
pub const fn put_overhead_bytes(key_len: usize) -> usize {
    2 * crate::engine::format::RECORD_HEADER_SIZE + key_len
}

/// Largest value of one record. Several of them fit in one batch.
pub const MAX_VALUE_LEN: usize = 128 * 1024;

/// Most records in one batch (record versions keep the index within the batch in 16 bits).
pub const MAX_BATCH_RECORDS: usize = 65_535;

/// Smallest and largest store capacity accepted at creation.
pub const MIN_CAPACITY_BYTES: u64 = 16 * 1024 * 1024;
pub const MAX_CAPACITY_BYTES: u64 = 1 << 44; // 16 TiB

/// One change in a batch. A batch of them is applied atomically: after a crash either all of it
/// is there or none of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mutation {
    /// Set `key` to `value`; the record is stored with `group`'s data.
    Put {
        group: GroupId,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    /// Delete `key` (a tombstone record).
    Delete { group: GroupId, key: Vec<u8> },
    /// Delete every key that starts with `prefix` and was written before this record, as one
    /// small record (a file's chunks on unlink or truncate). Later records in the same batch and
    /// later batches are not affected.
    DeletePrefix { group: GroupId, prefix: Vec<u8> },
    /// Delete every key in `start..end` (`end` exclusive; an empty `end` means no upper bound)
    /// written before this record, as one small record (truncating a file's tail).
    DeleteRange {
        group: GroupId,
        start: Vec<u8>,
        end: Vec<u8>,
    },
}

impl Mutation {
    pub fn put(group: GroupId, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Mutation::Put {
            group,
            key: key.into(),
            value: value.into(),
        }
    }
    pub fn delete(group: GroupId, key: impl Into<Vec<u8>>) -> Self {
        Mutation::Delete {
            group,
            key: key.into(),
        }
    }
    pub fn delete_prefix(group: GroupId, prefix: impl Into<Vec<u8>>) -> Self {
        Mutation::DeletePrefix {
            group,
            prefix: prefix.into(),
        }
    }
    pub fn key(&self) -> &[u8] {
        match self {
            Mutation::Put { key, .. } | Mutation::Delete { key, .. } => key,
            Mutation::DeletePrefix { prefix, .. } => prefix,
            Mutation::DeleteRange { start, .. } => start,
        }
    }
    pub fn group(&self) -> GroupId {
        match self {
            Mutation::Put { group, .. }
            | Mutation::Delete { group, .. }
            | Mutation::DeletePrefix { group, .. }
            | Mutation::DeleteRange { group, .. } => *group,
        }
    }
    /// Bytes of its record's value: a put's value, a range delete's end (a prefix delete's is
    /// the prefix's successor).
    pub fn value_len(&self) -> usize {
        match self {
            Mutation::Put { value, .. } => value.len(),
            Mutation::DeleteRange { end, .. } => end.len(),
            Mutation::DeletePrefix { prefix, .. } => crate::engine::prefix_successor(prefix).len(),
            Mutation::Delete { .. } => 0,
        }
    }

    /// Bytes this mutation's record takes in a write buffer (not counting its directory entry).
    pub fn encoded_len(&self) -> usize {
        crate::engine::format::RECORD_HEADER_SIZE + self.key().len() + self.value_len()
    }
}

/// How to open or create a store.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// Capacity of a store created by this open. Ignored for an existing store (its superblock
    /// says).
    pub capacity_bytes: u64,
    /// Segment size of a store created by this open (power of two, 64 KiB to 64 MiB).
    pub segment_size_bytes: u32,
    /// Segments per segment file of a store created by this open.
    pub segments_per_file: u32,
    /// Create the store if the directory holds none.
    pub create_if_missing: bool,
    /// Make written batches durable at the latest after this long (a background sync).
    /// `None`: only explicit [`crate::engine::Engine::sync`] calls and close.
    pub sync_interval: Option<std::time::Duration>,
    /// How compaction chooses its victims.
    pub compaction_policy: CompactionPolicy,
    /// The separator sorts closed mixed segments into their groups once this many are closed
    /// (and all of them whenever writes pause). Its memory is one segment and its live records
    /// at a time, whatever the number of groups.
    pub separator_threshold_segments: u32,
    /// Key prefix lengths by which the user deletes ranges (the filesystem deletes a file's
    /// pages by their 9-byte prefix). Compaction can drop a range delete only if one of these
    /// covers it (see `engine/tombstones.rs`); point deletes are always droppable.
    pub tombstone_prefix_lengths: Vec<usize>,
    /// Open without writing a byte, even after a crash: a shared lock (a writer is kept out,
    /// other readers are not), no recovery writes, no background work, every write refused.
    pub read_only: bool,
    /// The background writes an index checkpoint once this many segments were taken since the
    /// last one (see `engine/checkpoint.rs`): what a recovery after a crash must read. 0: a
    /// quarter of the segments in use, and at least [`CHECKPOINT_MIN_SEGMENTS`].
    pub checkpoint_every_segments: u32,
}

/// Fewest segments taken between two checkpoints of the background by default: a checkpoint
/// costs a pass over the index, reading 16 segments a few milliseconds.
pub const CHECKPOINT_MIN_SEGMENTS: u32 = 16;

/// How compaction chooses the segments it empties (see `engine/compaction/policy.rs`).
///
/// The default is cost-benefit, by measurement (levels of live data against the usable
/// capacity, write-behind on; `docs/BENCHMARKS.md`, "Write amplification", 2026-11-24 14:30):
///
/// | compaction bytes / user byte at 75% live | uniform | 90/10 hot/cold |
/// |---|---|---|
/// | `benches/wa_bench.rs` (memory), greedy / cost-benefit | 0.81 / 0.93 | 0.92 / 0.51 |
/// | real mount, fio 4 KiB (`scripts/compaction_latency.sh`), greedy / cost-benefit | 0.77 / 0.86 | 0.75 / 0.45 |
///
/// Cost-benefit loses a tenth on uniform traffic and halves the cost under skew, which is
/// what real traffic has (as in LFS and RAMCloud). At 90% live, uniform 1.83 / 2.09 and 90/10
/// 1.71 / 1.07. Before write-behind, a random 4 KiB write made a user segment half padding,
/// and cost-benefit took those young half-empty segments for hot data: it was pathological
/// on a mount (3.9 against 2.0), and greedy was the default until then.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CompactionPolicy {
    /// Least live bytes first.
    Greedy,
    /// Most (free space gained x age) / cost first, as in LFS and RAMCloud.
    #[default]
    CostBenefit,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            capacity_bytes: 1 << 30,
            segment_size_bytes: crate::engine::format::DEFAULT_SEGMENT_SIZE,
            segments_per_file: crate::engine::format::DEFAULT_SEGMENTS_PER_FILE,
            create_if_missing: true,
            sync_interval: Some(std::time::Duration::from_secs(5)),
            compaction_policy: CompactionPolicy::default(),
            separator_threshold_segments: 4,
            tombstone_prefix_lengths: Vec::new(),
            read_only: false,
            checkpoint_every_segments: 0,
        }
    }
}

/// Everything that can go wrong in the engine. Never an errno: the filesystem maps these.
#[derive(Debug)]
#[non_exhaustive]
pub enum EngineError {
    /// The host returned an I/O error. After one on the write path the engine refuses all
    /// further writes ([`EngineError::Failed`]).
    Io(io::Error),
    /// The store is full: live data would exceed capacity.
    NoSpace,
    /// A request broke a documented limit (key, value, batch size); says which.
    Limit(String),
    /// The directory holds no store (and creation was not asked for), or not a store of ours.
    NotAStore(String),
    /// Another process has this store open.
    Locked(String),
    /// On-disk data failed a check: what and where.
    Corrupt(String),
    /// A previous write-path I/O error latched the engine read-only: nothing more is written.
    Failed(String),
    /// The engine has been closed.
    Closed,
    /// The store was opened read-only ([`crate::engine::Engine::open_read_only`]).
    ReadOnly,
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineError::Io(e) => write!(f, "I/O error: {e}"),
            EngineError::NoSpace => write!(f, "store is full"),
            EngineError::Limit(s) => write!(f, "limit exceeded: {s}"),
            EngineError::NotAStore(s) => write!(f, "not a logstorfs store: {s}"),
            EngineError::Locked(s) => write!(f, "store is in use: {s}"),
            EngineError::Corrupt(s) => write!(f, "store is damaged: {s}"),
            EngineError::Failed(s) => {
                write!(
                    f,
                    "store stopped accepting writes after an earlier I/O error: {s}"
                )
            }
            EngineError::Closed => write!(f, "store is closed"),
            EngineError::ReadOnly => write!(f, "store is open read-only"),
        }
    }
}

impl std::error::Error for EngineError {}

impl From<io::Error> for EngineError {
    fn from(e: io::Error) -> Self {
        EngineError::Io(e)
    }
}

pub type Result<T> = std::result::Result<T, EngineError>;

/// Per-group figures.
#[derive(Clone, Debug, Default)]
pub struct GroupStats {
    pub id: GroupId,
    /// Group-owned segments.
    pub segments: u64,
    pub live_bytes: u64,
    /// Segments by utilisation, in ten buckets of 10% each (bucket 9 holds 90-100%).
    pub utilization_histogram: [u64; 10],
}

/// The store's figures, for `logstorfs stats`.
#[derive(Clone, Debug, Default)]
pub struct EngineStats {
    /// The store's size: all its segments.
    pub capacity_bytes: u64,
    /// What user data may take before writes get `NoSpace`: the segments outside the reserve
    /// and the few that may be open, filled to what compaction can sustain (7/8). This is the
    /// capacity `df` shows, and the one that live-data levels ("75% full") are measured
    /// against, as an SSD's write amplification is quoted against its user capacity, not its
    /// flash.
    pub usable_capacity_bytes: u64,
    pub segment_size_bytes: u64,
    pub segments_total: u64,
    pub segments_free: u64,
    pub mixed_segments: u64,
    /// Bytes of records the index points at (values, keys and record headers).
    pub live_bytes: u64,
    /// Live bytes promised to writes to come ([`super::Engine::write_with_promise`]): counted
    /// as used by the capacity check beside `live_bytes`, though no record holds them yet.
    pub promised_bytes: u64,
    pub index_entries: u64,
    /// Estimated heap bytes of the index.
    pub index_bytes: u64,
    /// Bytes of user batches written to the log (record bytes, before buffer padding).
    pub user_bytes_written: u64,
    /// Bytes the separator wrote copying live records out of mixed segments.
    pub separator_bytes_written: u64,
    /// Mixed segments the separator handed to a group whole, without copying.
    pub segments_handed_over: u64,
    /// Most memory a separator pass has held (one segment image and its live records).
    pub separator_memory_bytes: u64,
    /// Bytes compaction wrote copying live records out of its victims.
    pub compaction_bytes_written: u64,
    /// Tombstones (deletes, range deletes) dropped by compaction: no older version was left.
    pub tombstones_dropped: u64,
    /// Compaction steps run by writers that found no free segment (write stalls: the
    /// background compactor fell behind).
    pub foreground_compaction_steps: u64,
    /// Segments compaction emptied by copying their live records out (their mean live fraction
    /// is `compaction_bytes_written / (compaction_victims * segment_size_bytes)`).
    pub compaction_victims: u64,
    /// All bytes written to segment files (buffers with their headers and padding).
    pub device_bytes_written: u64,
    pub segments_reclaimed: u64,
    pub last_lsn: Lsn,
    pub durable_lsn: Lsn,
    pub groups: Vec<GroupStats>,
}
