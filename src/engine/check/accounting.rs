//! Per-segment accounting of the accepted buffers: one kind, group and generation per
//! segment, generations unique among segments in use, record count at least the batch count,
//! no record newer than its buffer's last LSN, and live bytes (records the map points at)
//! within the bytes used. A violation is an inconsistency the format forbids: a problem.

use std::collections::BTreeMap;

use super::super::format::{SegmentKind, lsn_of_version};
use super::End;
use super::report::{EngineCheck, Finding, Place, SegmentFigures};
use super::verdicts::{Buf, Rec, Scanned};

/// The figures of every segment with accepted buffers into `out.segments`, and a problem for
/// each inconsistency. `salvaged_end`: where records salvaged from damaged stretches end, per
/// segment; `live_per_segment`: bytes of records the map points at.
pub(super) fn account_segments(
    scanned: &Scanned,
    end: &End,
    salvaged_end: &BTreeMap<u32, u64>,
    live_per_segment: &BTreeMap<u32, u64>,
    seg_size: usize,
    out: &mut EngineCheck,
) {
    let mut generations: BTreeMap<u64, u32> = BTreeMap::new();
    let mut by_segment: BTreeMap<u32, Vec<&Buf>> = BTreeMap::new();
    for b in scanned.bufs.iter().filter(|b| end.keeps(b)) {
        by_segment.entry(b.segment).or_default().push(b);
    }
    for (&segment, list) in &by_segment {
        let first = list[0].header;
        let mut fig = SegmentFigures {
            segment,
            kind: match first.kind {
                SegmentKind::Mixed => "mixed",
                SegmentKind::Group => "group",
            },
            group: first.group,
            generation: first.generation,
            ..Default::default()
        };
        if let Some(other) = generations.insert(first.generation, segment) {
            out.findings.push(Finding::problem(
                format!("segment {segment}"),
                format!(
                    "generation {} is also that of segment {other} (generations are unique)",
                    first.generation
                ),
            ));
        }
        account_buffers(segment, list, &scanned.recs, &mut fig, out);
        fig.used_bytes = fig
            .used_bytes
            .max(salvaged_end.get(&segment).copied().unwrap_or(0));
        fig.live_bytes = live_per_segment.get(&segment).copied().unwrap_or(0);
        if fig.live_bytes > fig.used_bytes || fig.used_bytes > seg_size as u64 {
            out.findings.push(Finding::problem(
                format!("segment {segment}"),
                format!(
                    "accounting: {} live bytes, {} used, segment size {seg_size}",
                    fig.live_bytes, fig.used_bytes
                ),
            ));
        }
        out.segments.push(fig);
    }
}

/// The accepted buffers `list` of `segment` into its figures `fig`, and a problem for each
/// that breaks the segment's kind and group, counts more batches than it holds records, or
/// holds a record newer than its last LSN.
fn account_buffers(
    segment: u32,
    list: &[&Buf],
    recs: &[Rec],
    fig: &mut SegmentFigures,
    out: &mut EngineCheck,
) {
    let first = list[0].header;
    for b in list {
        let place = out.describe(Place {
            segment,
            offset: b.offset,
        });
        fig.buffers += 1;
        fig.records += b.records.len() as u64;
        fig.used_bytes = (b.offset + b.header.buffer_len) as u64;
        if b.header.kind != first.kind || b.header.group != first.group {
            out.findings.push(Finding::problem(
                place.clone(),
                format!(
                    "buffer of kind {:?} group {} in a segment of kind {:?} group {}",
                    b.header.kind, b.header.group, first.kind, first.group
                ),
            ));
        }
        if (b.records.len() as u64) < b.header.record_count as u64 {
            out.findings.push(Finding::problem(
                place.clone(),
                format!(
                    "buffer holds {} record(s) but counts {} batch(es)",
                    b.records.len(),
                    b.header.record_count
                ),
            ));
        }
        if b.header.lsn_last > 0
            && let Some(r) = recs[b.records.clone()]
                .iter()
                .find(|r| lsn_of_version(r.version) > b.header.lsn_last)
        {
            out.findings.push(Finding::problem(
                out.describe(r.place),
                format!(
                    "record of LSN {} in a buffer whose last LSN is {}",
                    lsn_of_version(r.version),
                    b.header.lsn_last
                ),
            ));
        }
    }
}
