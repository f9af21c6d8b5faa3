//! What fsck reports: findings (a problem makes `fsck` exit 1, a note does not), the live map
//! the next mount would serve, the records it cannot serve, per-segment figures, and how to
//! name a place so that a person can find it with `dd`. The check builds one [`EngineCheck`];
//! the filesystem's half and the renderers read it and decide nothing.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use super::super::storage::segment_file_name;

/// How serious a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// Something is wrong: data lost or damaged, or an inconsistency. `fsck` exits 1.
    Problem,
    /// Worth knowing, not wrong (e.g. writes torn by a crash, which the next mount discards).
    Note,
}

/// One thing the checker found: where, and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    pub place: String,
    pub what: String,
}

impl Finding {
    pub fn problem(place: impl Into<String>, what: impl Into<String>) -> Finding {
        Finding {
            severity: Severity::Problem,
            place: place.into(),
            what: what.into(),
        }
    }
    pub fn note(place: impl Into<String>, what: impl Into<String>) -> Finding {
        Finding {
            severity: Severity::Note,
            place: place.into(),
            what: what.into(),
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.place, self.what)
    }
}

/// A place in the store: a byte of a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Place {
    pub segment: u32,
    pub offset: u32,
}

/// The newest live version of a key, as the next mount would index it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveRecord {
    pub version: u64,
    pub group: u32,
    pub place: Place,
    /// Record length on disk (header, key and value).
    pub len: u32,
    pub value_len: u32,
    /// The value, if [`CheckOptions::keep_value`] asked for it.
    pub value: Option<Vec<u8>>,
}

/// A record whose contents the next mount cannot serve: it fails its own CRC and the next
/// mount indexes it (its reads fail), or it is newer than what the map holds for its key and
/// sits where recovery does not look (a damaged buffer, behind one, or beyond the end of the
/// log).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DamagedRecord {
    /// As read; if `intact` is false, the key itself may be damaged.
    pub key: Vec<u8>,
    pub version: u64,
    pub place: Place,
    /// The record passes its own CRC (it is stranded, not damaged).
    pub intact: bool,
    /// The version the next mount will serve for this key instead (none: the key is absent,
    /// or its reads fail).
    pub served_version: Option<u64>,
    /// The next mount indexes this damaged record where it is: reads of its key fail (its own
    /// CRC fails) rather than serve an older version.
    pub reads_fail: bool,
    /// The value, if the record is intact and [`CheckOptions::keep_value`] asked for it.
    pub value: Option<Vec<u8>>,
}

/// Figures of one segment in use.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SegmentFigures {
    pub segment: u32,
    /// "mixed" or "group".
    pub kind: &'static str,
    pub group: u32,
    pub generation: u64,
    pub buffers: u64,
    pub records: u64,
    /// Bytes of accepted buffers (from the segment's start).
    pub used_bytes: u64,
    /// Bytes of records the rebuilt map points at.
    pub live_bytes: u64,
}

/// Everything the engine check found.
#[derive(Clone, Debug, Default)]
pub struct EngineCheck {
    pub findings: Vec<Finding>,
    /// Key -> newest live version (puts only; deleted keys are absent).
    pub live: BTreeMap<Vec<u8>, LiveRecord>,
    /// Records whose newest contents are damaged or lost (see [`DamagedRecord`]).
    pub damaged: Vec<DamagedRecord>,
    pub segments: Vec<SegmentFigures>,
    pub segment_size: u32,
    pub segment_count: u32,
    pub segments_scanned: u64,
    pub buffers_accepted: u64,
    pub records_accepted: u64,
    pub durable_floor: u64,
    pub last_lsn: u64,
    /// Path (or name) of each segment file, for messages.
    pub segment_files: Vec<String>,
    pub segments_per_file: u32,
}

impl EngineCheck {
    /// Where `place` is, in words a person can find with `dd`: the segment, and the segment
    /// file and byte offset in it.
    pub fn describe(&self, place: Place) -> String {
        let file = place.segment / self.segments_per_file.max(1);
        let base =
            (place.segment % self.segments_per_file.max(1)) as u64 * self.segment_size as u64;
        let name = self
            .segment_files
            .get(file as usize)
            .cloned()
            .unwrap_or_else(|| segment_file_name(file));
        format!(
            "segment {} offset {} ({} byte {})",
            place.segment,
            place.offset,
            name,
            base + place.offset as u64
        )
    }

    pub fn problems(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Problem)
            .count()
    }
}

/// What the caller wants kept.
pub struct CheckOptions<'a> {
    /// Keys whose values [`LiveRecord::value`] should hold (the others: only their length).
    pub keep_value: &'a dyn Fn(&[u8]) -> bool,
    /// The store directory, to name segment files by path in messages.
    pub store_dir: Option<&'a Path>,
}
