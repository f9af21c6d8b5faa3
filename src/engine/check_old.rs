//! fsck's segment walk as it was before `scan.rs`, kept only to run side by side with the one
//! segment scan (`tests_scan_side_by_side.rs`) until it is deleted.
#![allow(dead_code, clippy::all)]

use std::collections::BTreeMap;
use std::ops::Range;

use super::api::{EngineError, Result};
use super::check::{
    CheckOptions, DamagedRecord, EngineCheck, Finding, LiveRecord, Place, SegmentFigures,
};
use super::format::{
    BLOCK_SIZE, BUFFER_HEADER_SIZE, BufferHeader, RECORD_HEADER_SIZE, RecordHeader, RecordKind,
    SegmentKind,
    Superblock, lsn_of_version,
};
use super::storage::{SECTOR_SIZE, Storage, segment_file_name};
use super::synctable::Proof;

/// A buffer recovery accepts (the walk from the segment's start).
struct Buf {
    segment: u32,
    offset: u32,
    header: BufferHeader,
    records: Range<usize>,
}

/// A record as read from disk.
struct Rec {
    key: Vec<u8>,
    /// Range end, for range deletes.
    end: Vec<u8>,
    kind: RecordKind,
    group: u32,
    version: u64,
    place: Place,
    len: u32,
    value_len: u32,
    value: Option<Vec<u8>>,
    intact: bool,
    /// A damaged deletion whose effect recovery keeps wherever it takes the stretch
    /// (`recovery::salvage_records`): a tombstone (indexed as one: its key reads as deleted, its
    /// newest state), or a range delete whose range its buffer's record directory names.
    deletion_kept: bool,
}

impl Rec {
    /// Whether recovery takes this record of a stretch it takes with its effect: intact, or a
    /// deletion it keeps (a damaged put is indexed so that reads of it fail: still a problem,
    /// naming the key).
    fn applied(&self) -> bool {
        self.intact || self.deletion_kept
    }
}

/// Bytes of a segment that recovery does not see but that may hold data: a buffer failing its
/// checks, valid buffers behind it, or whatever follows an unreadable first block.
struct Suspect {
    place: Place,
    /// The segment is group-owned: its records are copies made by the separator or compaction.
    /// Unless the sync table proves a stretch of copies was synced, a damaged record there may
    /// be garbage of a torn write: a note. An intact lost copy is still a problem (see the
    /// loop).
    copies: bool,
    /// Bytes of the segment below this were synced, by the sync table's word (0: nothing
    /// proven): a damaged copy wholly below it is damage, as recovery takes it.
    synced_end: usize,
    /// The last buffers of a segment of the log (mixed) below the synced end the sync table
    /// records for its use, with nothing valid behind them: recovery takes their records if
    /// every one's LSN is within the durable floor (see `recovery::recover`), so does the check.
    log_tail: bool,
    /// A buffer here fails its CRC (or its first block is unreadable), as opposed to only
    /// holding valid buffers stranded behind damage.
    damaged_buffer: bool,
    /// Valid buffers of the segment's current use behind the stop (recovery ignores them).
    stranded_buffers: u64,
    /// Highest last LSN and highest durable floor among the stranded buffers.
    stranded_lsn: u64,
    stranded_floor: u64,
    /// Intact records of the stretch that recovery serves all the same (moved out of
    /// `records`): the damage there is outside them (a header, padding, a record directory).
    served_records: u64,
    /// Recovery takes the stretch as damage, not as a torn write: a valid buffer behind it
    /// vouches for it, or the sync table proves the copies synced.
    proven: bool,
    /// Failing buffers of the stretch whose record directory is damaged too (see
    /// `recovery::stretch_records_and_unnamed`): what they held may not all be named.
    unnamed_buffers: usize,
    records: Vec<Rec>,
}

impl Suspect {
    /// Moves the records `served` picks (recovery serves them) from this suspect into `recs`,
    /// listing them in `salvaged`.
    fn serve(
        &mut self,
        served: impl Fn(&Rec) -> bool,
        recs: &mut Vec<Rec>,
        salvaged: &mut Vec<usize>,
    ) {
        let (taken, rest): (Vec<Rec>, Vec<Rec>) = std::mem::take(&mut self.records)
            .into_iter()
            .partition(|r| served(r));
        self.records = rest;
        self.served_records += taken.len() as u64;
        for r in taken {
            salvaged.push(recs.len());
            recs.push(r);
        }
    }
}

/// Checks the store held by `storage`. I/O errors are errors; everything found on the store,
/// including a damaged superblock, is a [`Finding`].
pub fn check(storage: &dyn Storage, options: &CheckOptions) -> Result<EngineCheck> {
    let mut out = EngineCheck::default();
    let Some(sb_bytes) = storage.read_superblock()? else {
        return Err(EngineError::NotAStore("no superblock".into()));
    };
    let sb = match Superblock::decode(&sb_bytes) {
        Ok(sb) => sb,
        Err(e) => {
            out.findings.push(Finding::problem("superblock", e));
            return Ok(out);
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
    let seg_size = sb.segment_size as usize;

    // 1. Segment files.
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

    // 2. and 3. Walk every segment.
    let mut bufs: Vec<Buf> = Vec::new();
    let mut recs: Vec<Rec> = Vec::new();
    let mut suspects: Vec<Suspect> = Vec::new();
    // Intact records of damaged stretches of copies that the sync table proves synced
    // (indices into `recs`): recovery serves them.
    let mut salvaged: Vec<usize> = Vec::new();
    let mut image = vec![0u8; seg_size];
    // How far each segment of copies is known synced (`synctable.rs`), as recovery reads it.
    let proofs = super::synctable::read(storage, sb.segment_count)?;
    for segment in 0..sb.segment_count {
        let (file, base) = sb.segment_position(segment);
        if file_lens[file as usize] < base + seg_size as u64 {
            continue; // never allocated
        }
        out.segments_scanned += 1;
        storage.read_at(file, base, &mut image[..BLOCK_SIZE])?;
        if image[..SECTOR_SIZE].iter().all(|&b| b == 0) {
            continue; // free: a freed segment's first sector is zeroed (what follows is stale)
        }
        storage.read_at(file, base, &mut image)?;
        scan_segment(
            segment,
            &image,
            sb.generation_high_water,
            proofs[segment as usize],
            sb.frees_clear_directories_from,
            options,
            &mut bufs,
            &mut recs,
            &mut suspects,
            &mut salvaged,
            &mut out.findings,
        );
    }

    // 4. The log's end, as recovery finds it.
    let floor = bufs
        .iter()
        .map(|b| b.header.durable_floor)
        .max()
        .unwrap_or(0);
    let mut batches: Vec<(u64, u64)> = bufs
        .iter()
        .filter(|b| b.header.lsn_first > 0)
        .map(|b| (b.header.lsn_first, b.header.lsn_last))
        .collect();
    batches.sort_unstable();
    let mut expected = floor.saturating_add(1);
    let mut gap_at = None;
    for &(first, last) in &batches {
        if last < expected {
            continue;
        }
        if first > expected {
            gap_at = Some(expected);
            break;
        }
        expected = last.saturating_add(1);
    }
    let last_lsn = (expected - 1).max(floor);
    // The log tails recovery takes (every record's LSN within the durable floor): their intact
    // records are served; their damaged ones stay suspects (reads fail: damage, a problem).
    for s in suspects.iter_mut().filter(|s| s.log_tail) {
        let within = s
            .records
            .iter()
            .filter(|r| r.applied() || r.kind != RecordKind::DeleteRange)
            .all(|r| {
                let lsn = lsn_of_version(r.version);
                lsn > 0 && lsn <= floor
            });
        if within && !s.records.is_empty() {
            s.serve(|r| r.applied(), &mut recs, &mut salvaged);
        }
    }
    out.durable_floor = floor;
    out.last_lsn = last_lsn;
    // Beyond the end: a batch after it, or a copy of one (buffers of copies carry the highest
    // LSN among their records).
    let beyond = |h: &BufferHeader| h.lsn_last > last_lsn;
    let mut cut: BTreeMap<u32, u32> = BTreeMap::new();
    for b in &bufs {
        if beyond(&b.header) {
            let at = cut.entry(b.segment).or_insert(b.offset);
            *at = (*at).min(b.offset);
        }
    }
    let keep = |b: &Buf| cut.get(&b.segment).is_none_or(|&at| b.offset < at);

    // The map, from the accepted buffers. Points keep tombstones (to compare lost records).
    let mut points: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
    let mut ranges: Vec<usize> = Vec::new();
    // Batch ranges of accepted user buffers, to tell LSNs reused after a remount.
    let mut accepted_lsns: Vec<(u64, u64)> = Vec::new();
    let mut discarded = Vec::new();
    for b in &bufs {
        if !keep(b) {
            discarded.push(b);
            continue;
        }
        out.buffers_accepted += 1;
        if b.header.lsn_first > 0 {
            accepted_lsns.push((b.header.lsn_first, b.header.lsn_last));
        }
        for i in b.records.clone() {
            out.records_accepted += 1;
            let r = &recs[i];
            if !r.intact {
                continue; // reported by the scan; never served
            }
            take_into_map(&recs, i, &mut points, &mut ranges);
        }
    }
    // Then the intact records recovery salvages (accepted after every buffer, as there).
    let mut salvaged_end: BTreeMap<u32, u64> = BTreeMap::new();
    for &i in &salvaged {
        let r = &recs[i];
        let beyond_cut = cut
            .get(&r.place.segment)
            .is_some_and(|&at| r.place.offset >= at);
        if beyond_cut || lsn_of_version(r.version) > last_lsn {
            continue;
        }
        out.records_accepted += 1;
        let end = salvaged_end.entry(r.place.segment).or_default();
        *end = (*end).max((r.place.offset + r.len) as u64);
        take_into_map(&recs, i, &mut points, &mut ranges);
    }
    accepted_lsns.sort_unstable();
    let range_version = |key: &[u8]| -> Option<u64> {
        ranges
            .iter()
            .filter(|&&i| {
                let r = &recs[i];
                key >= r.key.as_slice() && (r.end.is_empty() || key < r.end.as_slice())
            })
            .map(|&i| recs[i].version)
            .max()
    };
    // The version the map holds for `key` (put or delete), and whether it is a put.
    let served = |key: &[u8]| -> (Option<u64>, bool) {
        let point = points.get(key).map(|&i| &recs[i]);
        let rv = range_version(key);
        match point {
            Some(p) if rv.is_none_or(|v| v < p.version) => {
                (Some(p.version), p.kind == RecordKind::Put)
            }
            _ => (rv, false),
        }
    };
    let lsn_reused = |lsn: u64| {
        let i = accepted_lsns.partition_point(|&(first, _)| first <= lsn);
        i > 0 && accepted_lsns[i - 1].1 >= lsn
    };

    // Live map: one sweep over the keys in order, keeping the range deletes that have started
    // and not yet ended (as recovery does).
    let mut live_per_segment: BTreeMap<u32, u64> = BTreeMap::new();
    let mut sorted_ranges: Vec<&Rec> = ranges.iter().map(|&i| &recs[i]).collect();
    sorted_ranges.sort_by(|a, b| a.key.cmp(&b.key));
    for r in &sorted_ranges {
        *live_per_segment.entry(r.place.segment).or_default() += r.len as u64;
    }
    let mut next_range = 0;
    let mut active: Vec<&Rec> = Vec::new();
    for (key, &i) in &points {
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

    // 5. What recovery does not see.
    // The newest batch anywhere on disk (versions far above it are garbage), and the highest
    // durable floor any valid buffer records, stranded ones included: a lost record of a batch
    // at or below it was durable, so no crash explains its loss.
    let evidence_floor = suspects
        .iter()
        .map(|s| s.stranded_floor)
        .fold(floor, u64::max);
    let newest_on_disk = bufs
        .iter()
        .map(|b| b.header.lsn_last)
        .chain(suspects.iter().map(|s| s.stranded_lsn))
        .max()
        .unwrap_or(0);
    // Intact deletions among the unseen records themselves: a put they delete is no loss
    // whatever recovery serves (a segment freed while its zeroing was torn holds puts together
    // with the tombstones that deleted them, both dropped from the index).
    let unseen_deletes: Vec<&Rec> = suspects
        .iter()
        .flat_map(|s| &s.records)
        .filter(|r| r.intact && r.kind != RecordKind::Put)
        .collect();
    let deleted_unseen = |r: &Rec| {
        unseen_deletes.iter().any(|d| {
            d.version > r.version
                && match d.kind {
                    RecordKind::DeleteRange => {
                        r.key >= d.key && (d.end.is_empty() || r.key < d.end)
                    }
                    _ => d.key == r.key,
                }
        })
    };
    let mut damage_found = false;
    for s in &suspects {
        let mut durable_lost = 0u64;
        let mut unsynced_lost = 0u64;
        let mut damaged_records = 0u64;
        let mut lost_here = Vec::new();
        for r in &s.records {
            if !r.intact {
                damaged_records += 1;
            }
            let lsn = lsn_of_version(r.version);
            let (served_version, served_put) = served(&r.key);
            let newer = served_version.is_none_or(|v| r.version > v);
            if !newer || lsn_reused(lsn) || lsn > newest_on_disk.max(floor).saturating_add(1 << 32)
            {
                continue; // superseded, stale (the log reused the LSN), or a garbage version
            }
            // A lost tombstone changes what is served only if it would hide a put that is
            // served now: one that hides nothing (its puts are gone too, e.g. compaction dropped
            // the served tombstone once they were) is no loss.
            let hides_a_served_put = match r.kind {
                RecordKind::Put => true,
                RecordKind::Delete => served_put,
                RecordKind::DeleteRange => out
                    .live
                    .range(r.key.clone()..)
                    .take_while(|(k, _)| r.end.is_empty() || k.as_slice() < r.end.as_slice())
                    .any(|(_, l)| l.version < r.version),
            };
            if r.intact && (!hides_a_served_put || deleted_unseen(r)) {
                continue;
            }
            // A damaged record in a stretch of copies may be garbage of a write torn by a power
            // cut (nothing proves copies were synced); an intact one newer than what is served
            // has no source left, and sources are freed only once their copies are synced.
            let synced_copy = s.copies
                && r.place.offset as usize + r.len as usize <= s.synced_end
                && lsn <= last_lsn;
            if (lsn <= evidence_floor && (r.intact || !s.copies)) || synced_copy {
                durable_lost += 1;
            } else {
                unsynced_lost += 1;
            }
            lost_here.push(DamagedRecord {
                key: r.key.clone(),
                version: r.version,
                place: r.place,
                intact: r.intact,
                served_version: served_version.filter(|_| served_put),
                value: r.value.clone().filter(|_| r.intact),
            });
        }
        let place = out.describe(s.place);
        let what = if s.damaged_buffer {
            "buffer fails its checksum"
        } else {
            "valid buffers that recovery does not reach"
        };
        if s.proven && s.unnamed_buffers > 0 {
            // Synced data whose names are gone: nothing tells which keys it held, so nothing
            // makes their reads fail. Say so, with where it is.
            out.findings.push(Finding::problem(
                place.clone(),
                format!(
                    "{what}, and its record directory is damaged too ({} buffer(s)): synced \
                     records there that nothing names any more are lost, and the files they \
                     belonged to may read older contents without an error",
                    s.unnamed_buffers
                ),
            ));
            damage_found = true;
        }
        let detail = format!(
            "{} record(s) damaged, {} stranded buffer(s) behind it; {} record(s) newer than \
             what the next mount serves",
            damaged_records,
            s.stranded_buffers,
            durable_lost + unsynced_lost
        );
        if durable_lost > 0 {
            out.findings.push(Finding::problem(
                place,
                format!(
                    "{what}: {detail}, {durable_lost} of them of batches that were durable \
                     (damaged media; the next mount serves older versions or none)"
                ),
            ));
            out.damaged.extend(lost_here);
            damage_found = true;
        } else if unsynced_lost == 0 && s.damaged_buffer && s.served_records > 0 {
            // Damage that cost nothing: every record of the stretch is intact and served (the
            // damage is in a buffer header, padding or a record directory). Media damage all
            // the same, worth knowing of.
            out.findings.push(Finding::note(
                place,
                format!(
                    "{what}: {} record(s) in it intact and served (or deletions whose effect \
                     is kept); the damage costs nothing (it is in a buffer header, padding, a \
                     record directory, or a deletion that its directory entry names)",
                    s.served_records
                ),
            ));
        } else if unsynced_lost > 0 {
            out.findings.push(Finding::note(
                place,
                if s.copies {
                    format!(
                        "{what}: {detail}, all copies (made by the separator or compaction) \
                         that nothing proves were synced: a write torn by a crash, which the \
                         next mount discards (the originals stay until copies are synced)"
                    )
                } else {
                    format!(
                        "{what}: {detail}, all of batches that were not yet durable (a write \
                         torn by a crash, which the next mount discards; or damage to the \
                         newest data)"
                    )
                },
            ));
        }
    }
    // Buffers beyond the log's end: the next mount discards them. Normal after a crash (writes
    // not yet durable); a problem if damage found above is what ends the log.
    if !discarded.is_empty() {
        let records: usize = discarded.iter().map(|b| b.records.len()).sum();
        let at = discarded[0];
        let why = match gap_at {
            Some(lsn) => format!("batch {lsn} is missing"),
            None => "their batches lie beyond the log's end".into(),
        };
        let place = out.describe(Place {
            segment: at.segment,
            offset: at.offset,
        });
        if damage_found {
            out.findings.push(Finding::problem(
                place,
                format!(
                    "the log ends at LSN {last_lsn} ({why}, damaged): the next mount discards \
                     {} later buffer(s) ({records} records) with it",
                    discarded.len()
                ),
            ));
            for b in &discarded {
                for r in &recs[b.records.clone()] {
                    let (v, put) = served(&r.key);
                    if r.kind != RecordKind::DeleteRange && v.is_none_or(|v| r.version > v) {
                        out.damaged.push(DamagedRecord {
                            key: r.key.clone(),
                            version: r.version,
                            place: r.place,
                            intact: r.intact,
                            served_version: v.filter(|_| put),
                            value: r.value.clone().filter(|_| r.intact),
                        });
                    }
                }
            }
        } else {
            out.findings.push(Finding::note(
                place,
                format!(
                    "the log ends at LSN {last_lsn} ({why}): the next mount discards {} \
                     buffer(s) ({records} records) beyond it, writes not yet durable at a crash",
                    discarded.len()
                ),
            ));
        }
    }
    // Records failing their own CRC inside accepted buffers: the next mount indexes them, and
    // every read of them fails.
    for b in bufs.iter().filter(|b| keep(b)) {
        for r in &recs[b.records.clone()] {
            if !r.intact {
                let (v, put) = served(&r.key);
                out.damaged.push(DamagedRecord {
                    key: r.key.clone(),
                    version: r.version,
                    place: r.place,
                    intact: false,
                    served_version: v.filter(|_| put),
                    value: None,
                });
            }
        }
    }

    // 6. Per-segment accounting.
    let mut generations: BTreeMap<u64, u32> = BTreeMap::new();
    let mut by_segment: BTreeMap<u32, Vec<&Buf>> = BTreeMap::new();
    for b in bufs.iter().filter(|b| keep(b)) {
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
            if b.header.lsn_last > 0 {
                if let Some(r) = recs[b.records.clone()]
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
    Ok(out)
}

/// Walks one segment image: accepted buffers into `bufs`/`recs`, what lies behind the walk's
/// stop into `suspects`.
#[allow(clippy::too_many_arguments)]
fn scan_segment(
    segment: u32,
    image: &[u8],
    high_water: u64,
    proof: Option<Proof>,
    frees_clear_directories_from: u64,
    options: &CheckOptions,
    bufs: &mut Vec<Buf>,
    recs: &mut Vec<Rec>,
    suspects: &mut Vec<Suspect>,
    salvaged: &mut Vec<usize>,
    findings: &mut Vec<Finding>,
) {
    let valid_at = |pos: usize| -> Option<BufferHeader> {
        let h = BufferHeader::decode_checked(&image[pos..])?;
        (h.segment_index == segment && h.generation < high_water).then_some(h)
    };
    // Where the walk goes, a buffer whose naming fields alone are damaged is repaired as
    // recovery repairs it (and noted below: the bytes on disk are still damaged).
    let walked_at = |pos: usize| -> Option<(BufferHeader, bool)> {
        if let Some(h) = valid_at(pos) {
            return Some((h, false));
        }
        let h = super::recovery_old::decode_or_repair(&image[pos..], segment)?;
        (h.segment_index == segment && h.generation < high_water).then_some((h, true))
    };
    let mut pos = 0usize;
    let mut generation = None;
    while pos + BLOCK_SIZE <= image.len() {
        let Some((h, repaired)) = walked_at(pos) else {
            break;
        };
        if generation.is_some_and(|g| g != h.generation) {
            break; // an earlier use of the segment
        }
        generation = Some(h.generation);
        if repaired {
            findings.push(Finding::note(
                format!("segment {segment} offset {pos}"),
                "buffer header damaged in a field naming the buffer; repaired from its record \
                 directory (every other byte passes the buffer's checksum)",
            ));
        }
        let first = recs.len();
        if let Err(what) = parse_buffer(segment, pos, &h, image, options, recs) {
            findings.push(Finding::problem(
                format!("segment {segment} offset {pos}"),
                what,
            ));
        }
        for r in &recs[first..] {
            if !r.intact {
                findings.push(Finding::problem(
                    format!("segment {segment} offset {}", r.place.offset),
                    "record fails its checksum although its buffer's passes",
                ));
            }
        }
        bufs.push(Buf {
            segment,
            offset: pos as u32,
            header: h,
            records: first..recs.len(),
        });
        pos += h.buffer_len as usize;
    }
    if pos + BLOCK_SIZE > image.len() {
        return; // the segment is full
    }
    // The walk stopped at `pos`. Valid buffers further on, of this use if known: anything of
    // this use behind the stop was written after what stopped the walk. A failing first
    // buffer that still names its generation tells the use: buffers of other generations
    // behind it are stale bytes of an earlier use (a reused segment whose new first buffer was
    // torn by a power cut), not stranded data.
    // Its generation field, unless that is damaged past a doubt and its own record directory
    // names the use of the valid buffers behind it (`recovery::first_use_by_own_directory`).
    // Or the use the first buffer's own directory names, when frees of it clear that
    // directory (`Superblock::frees_clear_directories_from`), as recovery takes it.
    let own_directory_use = (pos == 0)
        .then(|| super::recovery_old::own_directory_generation(image, segment))
        .flatten()
        .filter(|&g| g >= frees_clear_directories_from && g > 0 && g < high_water);
    let stop_generation = (pos == 0)
        .then(|| super::recovery_old::first_use_by_own_directory(image, segment, high_water))
        .flatten()
        .or(own_directory_use)
        .unwrap_or_else(|| BufferHeader::generation_field(&image[pos..]));
    if generation.is_none() && BufferHeader::plausible_start(&image[pos..], segment) {
        generation = Some(stop_generation);
    }
    // A failing first buffer whose generation field its own record directory names, with
    // nothing valid behind it: that use's log tail, as recovery takes it (`scan_segment`'s
    // `first_alone`).
    let first_alone = (bufs.iter().all(|b| b.segment != segment) && pos == 0)
        .then(|| BufferHeader::generation_field(image))
        .filter(|&g| {
            g > 0 && g < high_water && super::recovery_old::named_by_own_directory(image, segment, g)
        })
        .or(own_directory_use.filter(|_| bufs.iter().all(|b| b.segment != segment)));
    if generation.is_none() {
        generation = first_alone;
    }
    let mut stranded: Vec<(usize, BufferHeader)> = Vec::new();
    let mut p = pos + BLOCK_SIZE;
    while p + BLOCK_SIZE <= image.len() {
        match valid_at(p) {
            Some(h) if generation.is_none_or(|g| g == h.generation) => {
                generation = Some(h.generation);
                stranded.push((p, h));
                p += h.buffer_len as usize;
            }
            _ => p += BLOCK_SIZE,
        }
    }
    let stop_block = &image[pos..pos + BLOCK_SIZE];
    let plausible = BufferHeader::plausible_start(stop_block, segment);
    let zeros = stop_block.iter().all(|&b| b == 0);
    // A buffer header of an earlier generation: the bytes of an earlier use of the segment,
    // where this use stopped writing (a reused segment keeps its old contents past its new
    // end). Their records are stale whatever their versions: a key whose tombstone compaction
    // has since dropped is not lost data.
    let earlier_use = plausible && generation.is_some_and(|g| stop_generation < g);
    // Whether the segment holds copies (group-owned), by its own buffers' word: the first
    // valid one, else a stranded one, else the failing block's kind byte.
    let first_of_segment = bufs.iter().rev().find(|b| b.segment == segment);
    let copies = first_of_segment
        .map(|b| b.header.kind)
        .or(stranded.first().map(|(_, h)| h.kind))
        .map_or(stop_block[6] == SegmentKind::Group as u8, |k| {
            k == SegmentKind::Group
        });
    // The sync table's proof for this use of a segment of copies: the stretch below its synced
    // end was synced, so it is damage, not a torn write (see `recovery::scan_segment`, which
    // also takes a failing first buffer whose header names that use).
    let proven_end = proof
        .filter(|p| generation == Some(p.generation) && p.generation < high_water)
        .map_or(0, |p| (p.synced_end as usize).min(image.len()));
    // A closed segment of the log whose last buffers fail, below the end its entry proves
    // synced, with nothing valid behind them (`recovery::scan_segment`'s log tail).
    // Or, without the table's word, up to the first intact record directory of this use
    // behind it (`recovery::scan_segment` and `log_tail_directory_end`).
    let tail_candidate = !copies
        && (first_of_segment.is_some() || first_alone.is_some())
        && stranded.is_empty()
        && !zeros
        && !earlier_use;
    let table_tail = tail_candidate && pos < proven_end;
    let directory_end = match generation {
        Some(g) if tail_candidate && !table_tail => {
            super::recovery_old::log_tail_directory_end(image, segment, pos, g)
        }
        _ => None,
    };
    let log_tail = table_tail || directory_end.is_some();
    let synced_end = if copies || table_tail {
        proven_end
    } else {
        directory_end.unwrap_or(0)
    };
    // The end of this use's writes in the segment; what follows is from an earlier use. Unless
    // something proves the failing bytes synced (the table, or a log tail's directory): then
    // they are damage even where the buffer's header is gone, as recovery takes them.
    if stranded.is_empty() && (zeros || earlier_use || (!plausible && pos >= synced_end)) {
        return;
    }
    let proven_first = first_of_segment.is_none()
        && pos == 0
        && plausible
        && synced_end > 0
        && stop_block[6] == SegmentKind::Group as u8;
    // Recovery takes the buffers of copies behind a failing stretch of a segment of copies
    // (see `recovery::scan_segment`): so does the check. Only the stretch is suspect. A
    // failing first buffer counts when the table proves its use, or when its header names the
    // generation of the valid buffers behind it (`stranded` holds only that generation's).
    // Its generation field decides, whatever its other fields say (see `recovery::scan_segment`).
    let first_of_use = first_of_segment.is_none()
        && pos == 0
        && (plausible
            || stranded
                .first()
                .is_some_and(|(_, h)| h.generation > 0 && h.generation == stop_generation));
    // In the log, recovery takes a failing stretch as damage when the valid buffer right behind
    // it vouches for it (its durable floor covers every batch before its own), and goes on
    // from there, serving the stretch's intact records of batches within that floor. So does
    // the check, when the valid buffers behind the stretch follow one another (with a second
    // failing stretch among them, it keeps reporting them all as unreachable: stricter).
    let contiguous = stranded
        .windows(2)
        .all(|w| w[0].0 + w[0].1.buffer_len as usize == w[1].0);
    // The highest floor among them: each was sealed after the stretch was written (see
    // `recovery::floor_behind`).
    let floor_behind = stranded
        .iter()
        .map(|(_, h)| h.durable_floor)
        .max()
        .unwrap_or(0);
    let vouched_floor = stranded
        .first()
        .filter(|(p, h)| {
            // Behind a failing first buffer, only buffers of the use its header names.
            let same_use =
                first_of_segment.is_some() || (first_of_use && h.generation == stop_generation);
            !copies
                && same_use
                && contiguous
                && h.kind == SegmentKind::Mixed
                && ((h.lsn_first > 0 && h.durable_floor + 1 >= h.lsn_first)
                    || super::recovery_old::directory_vouches(
                        image,
                        segment,
                        pos,
                        *p,
                        h.generation,
                        floor_behind,
                    ))
        })
        .map(|_| floor_behind);
    let taken = (copies
        && (first_of_segment.is_some() || proven_first || first_of_use)
        && !stranded.is_empty())
        || vouched_floor.is_some();
    let use_known =
        first_of_segment.is_some() || proven_first || first_of_use || first_alone.is_some();
    let stranded_at = stranded.first().map(|&(p, _)| p);
    if taken {
        for (p, h) in std::mem::take(&mut stranded) {
            let first = recs.len();
            if let Err(what) = parse_buffer(segment, p, &h, image, options, recs) {
                findings.push(Finding::problem(
                    format!("segment {segment} offset {p}"),
                    what,
                ));
            }
            bufs.push(Buf {
                segment,
                offset: p as u32,
                header: h,
                records: first..recs.len(),
            });
        }
    }
    let mut suspect = Suspect {
        place: Place {
            segment,
            offset: pos as u32,
        },
        copies,
        synced_end,
        log_tail,
        damaged_buffer: !zeros,
        stranded_buffers: stranded.len() as u64,
        stranded_lsn: stranded.iter().map(|(_, h)| h.lsn_last).max().unwrap_or(0),
        stranded_floor: stranded
            .iter()
            .map(|(_, h)| h.durable_floor)
            .max()
            .unwrap_or(0),
        served_records: 0,
        proven: false,
        unnamed_buffers: 0,
        records: Vec::new(),
    };
    if !zeros {
        // Records of the failing buffers, one by one. Within a stretch that something of this
        // use proves (a valid buffer behind it, or the synced end of the sync table's entry,
        // where recovery's stretch ends): of every failing buffer of it, as recovery salvages
        // them (`recovery::stretch_records` finds the later ones at block boundaries by their
        // generation). Otherwise: of the first failing buffer only.
        let (region_end, resync) = match stranded_at {
            Some(at) => (at, generation),
            None if pos < synced_end => (synced_end, generation),
            None => (image.len(), None),
        };
        let (found, unnamed) =
            super::recovery_old::stretch_records_and_unnamed(image, segment, pos, region_end, resync);
        suspect.unnamed_buffers = unnamed;
        // Synced, so damaged rather than torn: vouched for by the log, or copies the sync table
        // proves synced up to the stretch's end. Of a use recovery knows (not stale bytes of a
        // freed segment whose zeroed first sector was damaged). Not a log tail: recovery takes
        // one only if its records are within the durable floor, else it was torn.
        suspect.proven =
            use_known && (vouched_floor.is_some() || (copies && region_end <= synced_end));
        for r in found {
            // Without the buffer's CRC, only a record that checks out, or one in a buffer that
            // starts like a buffer of this segment, is worth reading as a record.
            if r.intact || plausible || first_of_use || !r.in_first_buffer || r.from_directory {
                let named = (r.key, r.range_end);
                let (at, h) = (r.at, r.header);
                recs_push(
                    &mut suspect.records,
                    segment,
                    at,
                    &h,
                    Some(named),
                    image,
                    options,
                    r.intact,
                );
                if let Some(pushed) = suspect.records.last_mut() {
                    pushed.deletion_kept = !r.intact
                        && match h.kind {
                            RecordKind::Put => false,
                            RecordKind::Delete => true,
                            RecordKind::DeleteRange => r.from_directory,
                        };
                }
            }
        }
    }
    // Intact records of a stretch of copies the sync table proves synced: recovery serves
    // them (those of a log tail: once the durable floor is known, see `check`).
    if synced_end > 0 && copies {
        suspect.serve(
            |r| r.applied() && r.place.offset as usize + r.len as usize <= synced_end,
            recs,
            salvaged,
        );
    }
    // Intact records of a stretch of the log that the buffer behind it vouches for: recovery
    // serves them. Its damaged ones stay suspects: problems naming their keys.
    if let Some(vouched) = vouched_floor {
        suspect.serve(
            |r| {
                let lsn = lsn_of_version(r.version);
                r.applied() && lsn > 0 && lsn <= vouched
            },
            recs,
            salvaged,
        );
    }
    for (p, h) in stranded {
        let mut scratch = Vec::new();
        let _ = parse_buffer(segment, p, &h, image, options, &mut scratch);
        suspect.records.extend(scratch);
    }
    suspects.push(suspect);
}

/// Parses the records of a valid buffer into `recs`. An error if they do not fill the payload
/// exactly (the buffer's CRC matched, so the format itself is violated).
fn parse_buffer(
    segment: u32,
    pos: usize,
    h: &BufferHeader,
    image: &[u8],
    options: &CheckOptions,
    recs: &mut Vec<Rec>,
) -> std::result::Result<(), String> {
    let start = pos + BUFFER_HEADER_SIZE;
    let end = start + h.payload_len as usize;
    let mut at = start;
    while at < end {
        let Some(rh) = RecordHeader::decode(&image[at..end]) else {
            return Err(format!(
                "malformed record at payload offset {} of a buffer that passes its checksum",
                at - start
            ));
        };
        let intact = RecordHeader::decode_checked(&image[at..end]).is_some();
        recs_push(recs, segment, at, &rh, None, image, options, intact);
        at += rh.total_len();
    }
    Ok(())
}

/// Reads the record at `at` (header `h`) of a segment image into `recs`. Its key and range end
/// are `named` (from its buffer's record directory) if given, else read from the record.
#[allow(clippy::too_many_arguments)]
fn recs_push(
    recs: &mut Vec<Rec>,
    segment: u32,
    at: usize,
    h: &RecordHeader,
    named: Option<(Vec<u8>, Vec<u8>)>,
    image: &[u8],
    options: &CheckOptions,
    intact: bool,
) {
    let key_at = at + RECORD_HEADER_SIZE;
    let value_at = key_at + h.key_len as usize;
    let value_end = value_at + h.value_len as usize;
    let (key, end) = named.unwrap_or_else(|| {
        let end = if h.kind == RecordKind::DeleteRange {
            image[value_at..value_end].to_vec()
        } else {
            Vec::new()
        };
        (image[key_at..value_at].to_vec(), end)
    });
    let value = (h.kind == RecordKind::Put && (options.keep_value)(&key))
        .then(|| image[value_at..value_end].to_vec());
    recs.push(Rec {
        key,
        end,
        kind: h.kind,
        group: h.group,
        version: h.version,
        place: Place {
            segment,
            offset: at as u32,
        },
        len: h.total_len() as u32,
        value_len: h.value_len,
        value,
        intact,
        deletion_kept: false,
    });
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

