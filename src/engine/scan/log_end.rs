//! The log's end, from the headers of every valid buffer: the highest durable floor any of them
//! records, and above it batches must follow each other without a gap (a gap is a batch that
//! never became durable, so nothing after it may be served). Buffers beyond the end, batches or
//! copies of them, are discarded.

use super::super::format::BufferHeader;

/// Where the log ends, from the headers of the valid buffers of every segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogEnd {
    /// The highest durable floor any valid buffer records: every batch up to it was durable.
    pub floor: u64,
    /// The last LSN kept: the one before the first gap above the floor (at least the floor).
    pub last_lsn: u64,
    /// The first LSN missing above the floor, if batches beyond it exist.
    pub gap_at: Option<u64>,
}

/// The log's end (see [`LogEnd`]): above the durable floor, batches must follow each other
/// without a gap; below it, missing batches were freed after being made durable.
pub fn log_end<'a>(headers: impl Iterator<Item = &'a BufferHeader> + Clone) -> LogEnd {
    log_end_above(0, headers)
}

/// [`log_end`] where other buffers, not among `headers`, record durable floor `floor_at_least`
/// and hold no batch above it (an index checkpoint's unread segments).
pub fn log_end_above<'a>(
    floor_at_least: u64,
    headers: impl Iterator<Item = &'a BufferHeader> + Clone,
) -> LogEnd {
    let floor = (headers.clone().map(|h| h.durable_floor)).fold(floor_at_least, u64::max);
    let mut batches: Vec<(u64, u64)> = headers
        .filter(|h| h.lsn_first > 0)
        .map(|h| (h.lsn_first, h.lsn_last))
        .collect();
    batches.sort_unstable();
    let mut expected = floor.saturating_add(1);
    let mut gap_at = None;
    for (first, last) in batches {
        if last < expected {
            continue;
        }
        if first > expected {
            gap_at = Some(expected);
            break;
        }
        expected = last.saturating_add(1);
    }
    LogEnd {
        floor,
        last_lsn: (expected - 1).max(floor),
        gap_at,
    }
}

/// Per segment, where its first buffer beyond the log's last LSN starts (a batch after the
/// end, or copies of one): it and everything after it in its segment is discarded.
pub fn cut_beyond<'a>(
    buffers: impl Iterator<Item = (u32, u32, &'a BufferHeader)>,
    last_lsn: u64,
) -> std::collections::BTreeMap<u32, u32> {
    let mut cut = std::collections::BTreeMap::new();
    for (segment, offset, h) in buffers {
        if h.lsn_last > last_lsn {
            let at = cut.entry(segment).or_insert(offset);
            *at = (*at).min(offset);
        }
    }
    cut
}
