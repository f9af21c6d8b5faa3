//! The key -> newest version map the next mount would build, rebuilt as recovery builds it:
//! from the accepted buffers within the log's end, then the records recovery salvages from
//! damaged stretches; highest version wins, range deletes hide older keys. A put failing its
//! own CRC that recovery takes is in the map as recovery indexes it: poisoned, its reads fail,
//! and it hides every older version. What fsck calls live, lost or superseded is measured
//! against this map, so it must decide as recovery does.

use std::collections::BTreeMap;

use super::super::format::{RecordKind, lsn_of_version};
use super::End;
use super::report::{EngineCheck, LiveRecord};
use super::verdicts::{Buf, Rec, Scanned};

/// The rebuilt map, with what the later steps need of how it was built.
pub(super) struct Map<'a> {
    recs: &'a [Rec],
    /// Points keep tombstones (to compare lost records).
    points: BTreeMap<Vec<u8>, usize>,
    ranges: Vec<usize>,
    /// Batch ranges of accepted user buffers, to tell LSNs reused after a remount.
    accepted_lsns: Vec<(u64, u64)>,
    /// Accepted buffers beyond the log's end: the next mount discards them.
    pub(super) discarded: Vec<&'a Buf>,
    /// Per segment, where the last record recovery salvages from a damaged stretch ends.
    pub(super) salvaged_end: BTreeMap<u32, u64>,
}

impl<'a> Map<'a> {
    /// The map, from the accepted buffers, then the records recovery salvages (accepted after
    /// every buffer, as there). Records failing their own CRC are taken as recovery takes them
    /// (it reads no record's CRC until a read). Counts what it accepts into `out`.
    pub(super) fn rebuild(scanned: &'a Scanned, end: &End, out: &mut EngineCheck) -> Map<'a> {
        let recs = &scanned.recs[..];
        let mut points: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
        let mut ranges: Vec<usize> = Vec::new();
        let mut accepted_lsns: Vec<(u64, u64)> = Vec::new();
        let mut discarded = Vec::new();
        for b in &scanned.bufs {
            if !end.keeps(b) {
                discarded.push(b);
                continue;
            }
            out.buffers_accepted += 1;
            if b.header.lsn_first > 0 {
                accepted_lsns.push((b.header.lsn_first, b.header.lsn_last));
            }
            for i in b.records.clone() {
                out.records_accepted += 1;
                take_into_map(recs, i, &mut points, &mut ranges);
            }
        }
        let mut salvaged_end: BTreeMap<u32, u64> = BTreeMap::new();
        for &i in &scanned.salvaged {
            let r = &recs[i];
            let beyond_cut = end.beyond(r.place.segment, r.place.offset);
            if beyond_cut || lsn_of_version(r.version) > end.last_lsn {
                continue;
            }
            out.records_accepted += 1;
            let salvaged_to = salvaged_end.entry(r.place.segment).or_default();
            *salvaged_to = (*salvaged_to).max((r.place.offset + r.len) as u64);
            take_into_map(recs, i, &mut points, &mut ranges);
        }
        accepted_lsns.sort_unstable();
        Map {
            recs,
            points,
            ranges,
            accepted_lsns,
            discarded,
            salvaged_end,
        }
    }

    fn range_version(&self, key: &[u8]) -> Option<u64> {
        let recs = self.recs;
        self.ranges
            .iter()
            .filter(|&&i| {
                let r = &recs[i];
                key >= r.key.as_slice() && (r.end.is_empty() || key < r.end.as_slice())
            })
            .map(|&i| recs[i].version)
            .max()
    }

    /// The version the map holds for `key` (put or delete), and whether it is a put.
    pub(super) fn served(&self, key: &[u8]) -> (Option<u64>, bool) {
        let point = self.points.get(key).map(|&i| &self.recs[i]);
        let rv = self.range_version(key);
        match point {
            Some(p) if rv.is_none_or(|v| v < p.version) => {
                (Some(p.version), p.kind == RecordKind::Put)
            }
            _ => (rv, false),
        }
    }

    /// Record `i` if the map points at it for its key: the next mount indexes it there (for
    /// a put failing its own CRC: its reads fail).
    pub(super) fn indexed(&self, i: usize) -> Option<&'a Rec> {
        let r = &self.recs[i];
        let hidden = self.range_version(&r.key).is_some_and(|v| v >= r.version);
        (r.kind != RecordKind::DeleteRange && self.points.get(&r.key) == Some(&i) && !hidden)
            .then_some(r)
    }

    /// Whether an accepted buffer holds the batch `lsn`: the log reused it after a remount.
    pub(super) fn lsn_reused(&self, lsn: u64) -> bool {
        let accepted_lsns = &self.accepted_lsns;
        let i = accepted_lsns.partition_point(|&(first, _)| first <= lsn);
        i > 0 && accepted_lsns[i - 1].1 >= lsn
    }

    /// The live map into `out.live`: one sweep over the keys in order, keeping the range
    /// deletes that have started and not yet ended (as recovery does). Returns the bytes of
    /// records the map points at, per segment.
    pub(super) fn live(&self, out: &mut EngineCheck) -> BTreeMap<u32, u64> {
        let recs = self.recs;
        let mut live_per_segment: BTreeMap<u32, u64> = BTreeMap::new();
        let mut sorted_ranges: Vec<&Rec> = self.ranges.iter().map(|&i| &recs[i]).collect();
        sorted_ranges.sort_by(|a, b| a.key.cmp(&b.key));
        for r in &sorted_ranges {
            *live_per_segment.entry(r.place.segment).or_default() += r.len as u64;
        }
        let mut next_range = 0;
        let mut active: Vec<&Rec> = Vec::new();
        for (key, &i) in &self.points {
            let r = &recs[i];
            *live_per_segment.entry(r.place.segment).or_default() += r.len as u64;
            while next_range < sorted_ranges.len() && sorted_ranges[next_range].key <= *key {
                active.push(sorted_ranges[next_range]);
                next_range += 1;
            }
            active.retain(|d| d.end.is_empty() || key.as_slice() < d.end.as_slice());
            if r.kind != RecordKind::Put || active.iter().any(|d| d.version > r.version) {
                continue;
            }
            if !r.intact {
                continue; // poisoned: indexed, but its reads fail (reported as damaged)
            }
            out.live.insert(
                key.clone(),
                LiveRecord {
                    version: r.version,
                    group: r.group,
                    place: r.place,
                    len: r.len,
                    value_len: r.value_len,
                    value: r.value.clone(),
                },
            );
        }
        live_per_segment
    }
}

/// Takes record `i` into the newest-version map being rebuilt: a range delete is listed, a
/// point record replaces the one of its key unless that one is at least as new (as recovery
/// does).
fn take_into_map(
    recs: &[Rec],
    i: usize,
    points: &mut BTreeMap<Vec<u8>, usize>,
    ranges: &mut Vec<usize>,
) {
    let r = &recs[i];
    match r.kind {
        RecordKind::DeleteRange => ranges.push(i),
        _ => match points.get(&r.key) {
            Some(&j) if recs[j].version >= r.version => {}
            _ => {
                points.insert(r.key.clone(), i);
            }
        },
    }
}
