//! Offline store checker, the engine's half of `logstorfs fsck` (the filesystem's half is
//! `fs::check`). It changes nothing on disk: it reads the superblock and every segment through
//! the [`Storage`] trait ([`ReadOnlyStorage`] for a store directory), and never runs recovery
//! (which zeroes discarded tails).
//!
//! What it does, in order:
//! 1. Superblock: decoded and checked (magic, CRC, geometry). Segment files: length.
//! 2. Every segment whose first sector is not zeros (a freed segment's first sector is zeroed) is
//!    read whole and handed to the one segment scan (`scan.rs`), which recovery uses too: the
//!    check reports its verdicts and decides nothing of its own. Valid buffers (repaired ones
//!    noted) are accepted, and the scan checks each of their records' own CRC for the check.
//! 3. Damaged stretches (proven damage, not torn writes) are suspects whose records recovery
//!    salvages or not by the scan's rule (`scan::Stretch::takes`); where the scan stopped before
//!    the segment's end, the failing buffer's records and the valid buffers of the use behind
//!    it (which recovery does not reach) are suspects too.
//! 4. The end of the log is the scan's (`scan::log_end`: highest durable floor, first LSN gap
//!    above it), and the key -> newest version map is rebuilt from the accepted buffers and the
//!    records recovery takes from damaged stretches (highest version wins, range deletes hide
//!    older keys).
//! 5. Every record that recovery would not see (in a damaged buffer, stranded behind one, or
//!    beyond the log's end) is compared with that map. It is *lost* if it is newer than what
//!    the map holds for its key. Lost records of batches at or below the durable floor (the
//!    highest any valid buffer records, stranded ones included) were durable: data that the
//!    next mount would not serve, a problem. Lost records above it may be writes torn by a
//!    crash, which the next mount discards: a note. Records whose LSN has since been reused by
//!    the log (the store was mounted again after a crash) are stale.
//! 6. Per segment: one kind, group and generation; generations unique among segments in use;
//!    record count at least the batch count; no record newer than its buffer's last LSN;
//!    live bytes (records the map points at) within the bytes used.
//!
//! A limit of any offline check: damage to batches above the last durable floor written to
//! disk looks exactly like a write torn by a crash (a power cut may keep any subset of unsynced
//! sectors, in any order); it is a note.
//! (Buffer headers carry the floor as it was when they were sealed, so after a clean unmount
//! the floor on disk lags the last batch.)
//!
//! Its parts: [`report`] the types it reports in; [`read_only_storage`] how it reads a store
//! directory; [`verdicts`] steps 2 and 3; [`map`] step 4's map; [`losses`] step 5;
//! [`accounting`] step 6.

mod accounting;
mod losses;
mod map;
mod read_only_storage;
mod report;
#[cfg(test)]
mod tests;
mod verdicts;

use std::collections::BTreeMap;
use std::path::Path;

use super::api::{EngineError, Result};
use super::format::Superblock;
use super::scan::{self, LogEnd};
use super::storage::{Storage, segment_file_name};

pub use read_only_storage::ReadOnlyStorage;
pub use report::{
    CheckOptions, DamagedRecord, EngineCheck, Finding, LiveRecord, Place, SegmentFigures, Severity,
};
use verdicts::Buf;

/// Checks the store held by `storage`. I/O errors are errors; everything found on the store,
/// including a damaged superblock, is a [`Finding`].
pub fn check(storage: &dyn Storage, options: &CheckOptions) -> Result<EngineCheck> {
    let mut out = EngineCheck::default();
    let Some(sb) = superblock(storage, options, &mut out)? else {
        return Ok(out);
    };
    // 1. Segment files.
    let file_lens = segment_file_lens(storage, &sb, &mut out)?;
    // 2. and 3. The scan's verdicts on every segment (`scan.rs`), as recovery takes them.
    let mut scanned = verdicts::scan_segments(storage, &sb, &file_lens, options, &mut out)?;
    // 4. The log's end, as recovery finds it, and the map.
    let end = End::of(&scanned.bufs);
    out.durable_floor = end.floor;
    out.last_lsn = end.last_lsn;
    scanned.take_stretches(&end);
    let map = map::Map::rebuild(&scanned, &end, &mut out);
    let live_per_segment = map.live(&mut out);
    // 5. What recovery does not see.
    let damage_found = losses::report_suspects(&scanned, &map, &end, &mut out);
    losses::report_discarded(&scanned, &map, &end, damage_found, &mut out);
    losses::report_failing_records(&scanned, &map, &end, &mut out);
    // 6. Per-segment accounting.
    accounting::account_segments(
        &scanned,
        &end,
        &map.salvaged_end,
        &live_per_segment,
        sb.segment_size as usize,
        &mut out,
    );
    Ok(out)
}

/// The superblock, decoded (`None`: it is damaged, a problem in `out`), with the store's
/// geometry and segment file names into `out`.
fn superblock(
    storage: &dyn Storage,
    options: &CheckOptions,
    out: &mut EngineCheck,
) -> Result<Option<Superblock>> {
    let Some(sb_bytes) = storage.read_superblock()? else {
        return Err(EngineError::NotAStore("no superblock".into()));
    };
    let sb = match Superblock::decode(&sb_bytes) {
        Ok(sb) => sb,
        Err(e) => {
            out.findings.push(Finding::problem("superblock", e));
            return Ok(None);
        }
    };
    out.segment_size = sb.segment_size;
    out.segment_count = sb.segment_count;
    out.segments_per_file = sb.segments_per_file;
    for file in 0..sb.file_count() {
        out.segment_files.push(match options.store_dir {
            Some(d) => d.join(segment_file_name(file)).display().to_string(),
            None => segment_file_name(file),
        });
    }
    Ok(Some(sb))
}

/// Each segment file's length; a problem for one that is neither empty nor as long as the
/// superblock says.
fn segment_file_lens(
    storage: &dyn Storage,
    sb: &Superblock,
    out: &mut EngineCheck,
) -> Result<Vec<u64>> {
    let mut file_lens = Vec::new();
    for file in 0..sb.file_count() {
        let len = storage.file_len(file)?;
        if len != 0 && len != sb.file_len() {
            out.findings.push(Finding::problem(
                out.segment_files[file as usize].clone(),
                format!(
                    "segment file is {len} bytes, the superblock says {} (truncated or \
                     extended by something else)",
                    sb.file_len()
                ),
            ));
        }
        file_lens.push(len);
    }
    Ok(file_lens)
}

/// The log's end as recovery finds it (`scan::log_end`: highest durable floor, first LSN gap
/// above it), and per segment where the accepted buffers beyond it start.
struct End {
    floor: u64,
    last_lsn: u64,
    gap_at: Option<u64>,
    /// Beyond the end: a batch after it, or a copy of one (buffers of copies carry the highest
    /// LSN among their records).
    cut: BTreeMap<u32, u32>,
}

impl End {
    fn of(bufs: &[Buf]) -> End {
        let LogEnd {
            floor,
            last_lsn,
            gap_at,
        } = scan::log_end(bufs.iter().map(|b| &b.header));
        let cut = scan::cut_beyond(
            bufs.iter().map(|b| (b.segment, b.offset, &b.header)),
            last_lsn,
        );
        End {
            floor,
            last_lsn,
            gap_at,
            cut,
        }
    }

    /// Whether byte `offset` of `segment` lies beyond the log's end (recovery discards it).
    fn beyond(&self, segment: u32, offset: u32) -> bool {
        self.cut.get(&segment).is_some_and(|&at| offset >= at)
    }

    /// Whether recovery keeps the accepted buffer `b` (it is not beyond the log's end).
    fn keeps(&self, b: &Buf) -> bool {
        self.cut.get(&b.segment).is_none_or(|&at| b.offset < at)
    }
}

/// Checks the store in directory `dir` (read-only; refuses a store in use).
pub fn check_dir(dir: &Path, keep_value: &dyn Fn(&[u8]) -> bool) -> Result<EngineCheck> {
    let storage = ReadOnlyStorage::open(dir)?;
    check(
        &storage,
        &CheckOptions {
            keep_value,
            store_dir: Some(dir),
        },
    )
}
