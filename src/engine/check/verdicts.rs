//! Per-segment verdict reporting: each segment in use is read whole and handed to the one
//! segment scan (`scan.rs`), and its verdicts are taken as recovery takes them: valid buffers
//! are accepted (a repaired one is a note, a record failing its own CRC in one a problem),
//! damaged stretches and the scan's stop become suspects, whose records are compared later
//! with what the next mount serves. Nothing here decodes a buffer or decides what is damage.

use std::ops::Range;

use super::super::api::Result;
use super::super::format::{BLOCK_SIZE, BufferHeader, RECORD_HEADER_SIZE, RecordKind, Superblock};
use super::super::scan::{self, Stop, Stretch, StretchRecord, ValidBuffer, Verdicts};
use super::super::storage::{SECTOR_SIZE, Storage};
use super::End;
use super::report::{CheckOptions, EngineCheck, Finding, Place};

/// A buffer recovery accepts (the walk from the segment's start).
pub(super) struct Buf {
    pub(super) segment: u32,
    pub(super) offset: u32,
    pub(super) header: BufferHeader,
    pub(super) records: Range<usize>,
}

/// A record as read from disk.
pub(super) struct Rec {
    pub(super) key: Vec<u8>,
    /// Range end, for range deletes.
    pub(super) end: Vec<u8>,
    pub(super) kind: RecordKind,
    pub(super) group: u32,
    pub(super) version: u64,
    pub(super) place: Place,
    pub(super) len: u32,
    pub(super) value_len: u32,
    pub(super) value: Option<Vec<u8>>,
    pub(super) intact: bool,
    /// A damaged deletion whose effect recovery keeps wherever it takes the stretch
    /// (`scan::Stretch::takes`): a tombstone (indexed as one: its key reads as deleted, its
    /// newest state), or a range delete whose range its buffer's record directory names.
    pub(super) deletion_kept: bool,
}

impl Rec {
    /// Whether recovery takes this record with its effect: intact, or a deletion it keeps. A
    /// damaged put it takes is indexed where it is so that reads of its key fail (poisoned).
    pub(super) fn applied(&self) -> bool {
        self.intact || self.deletion_kept
    }
}

/// Bytes of a segment that recovery does not see but that may hold data: a buffer failing its
/// checks, valid buffers behind it, or whatever follows an unreadable first block.
pub(super) struct Suspect {
    pub(super) place: Place,
    /// The segment is group-owned: its records are copies made by the separator or compaction.
    /// Unless the sync table proves a stretch of copies was synced, a damaged record there may
    /// be garbage of a torn write: a note. An intact lost copy is still a problem (see the
    /// loop).
    pub(super) copies: bool,
    /// Bytes of the segment below this were synced, by the sync table's word (0: nothing
    /// proven): a damaged copy wholly below it is damage, as recovery takes it.
    pub(super) synced_end: usize,
    /// A buffer here fails its CRC (or its first block is unreadable), as opposed to only
    /// holding valid buffers stranded behind damage.
    pub(super) damaged_buffer: bool,
    /// Valid buffers of the segment's current use behind the stop (recovery ignores them).
    pub(super) stranded_buffers: u64,
    /// Highest last LSN and highest durable floor among the stranded buffers.
    pub(super) stranded_lsn: u64,
    pub(super) stranded_floor: u64,
    /// Records of the stretch that recovery serves all the same (moved out of `records`):
    /// intact ones, and deletions whose effect it keeps.
    pub(super) served_records: u64,
    /// Damaged puts of the stretch that recovery takes all the same (moved out of `records`;
    /// indices into the check's records): it indexes them where they are, so that reads of
    /// their keys fail rather than serve an older version.
    pub(super) poisoned: Vec<usize>,
    /// Recovery takes the stretch as damage, not as a torn write: a valid buffer behind it
    /// vouches for it, or the sync table proves the copies synced.
    pub(super) proven: bool,
    /// Failing buffers of the stretch whose record directory is damaged too (see
    /// `scan::stretch_records_and_unnamed`): what they held may not all be named.
    pub(super) unnamed_buffers: usize,
    pub(super) records: Vec<Rec>,
}

impl Suspect {
    /// Moves the records `served` picks (recovery serves them) from this suspect into `recs`,
    /// listing them in `salvaged`.
    fn serve(
        &mut self,
        served: impl Fn(usize, &Rec) -> bool,
        recs: &mut Vec<Rec>,
        salvaged: &mut Vec<usize>,
    ) {
        let (mut taken, mut rest) = (Vec::new(), Vec::new());
        for (k, r) in std::mem::take(&mut self.records).into_iter().enumerate() {
            if served(k, &r) {
                taken.push(r);
            } else {
                rest.push(r);
            }
        }
        self.records = rest;
        for r in taken {
            if r.applied() {
                self.served_records += 1;
            } else {
                self.poisoned.push(recs.len());
            }
            salvaged.push(recs.len());
            recs.push(r);
        }
    }
}

/// What the scan's verdicts on every segment give the check: accepted buffers and their
/// records, suspects, and the damaged stretches to judge once the log's end is known.
pub(super) struct Scanned {
    pub(super) bufs: Vec<Buf>,
    pub(super) recs: Vec<Rec>,
    pub(super) suspects: Vec<Suspect>,
    /// Damaged stretches (with the suspect listing their records), judged once the log's floor
    /// and end are known.
    stretches: Vec<(usize, Stretch)>,
    /// Records of damaged stretches that recovery serves (indices into `recs`).
    pub(super) salvaged: Vec<usize>,
}

/// Reads every segment in use (a freed segment's first sector is zeroed) and takes the scan's
/// verdicts on it, as recovery takes them.
pub(super) fn scan_segments(
    storage: &dyn Storage,
    sb: &Superblock,
    file_lens: &[u64],
    options: &CheckOptions,
    out: &mut EngineCheck,
) -> Result<Scanned> {
    let seg_size = sb.segment_size as usize;
    let mut bufs: Vec<Buf> = Vec::new();
    let mut recs: Vec<Rec> = Vec::new();
    let mut suspects: Vec<Suspect> = Vec::new();
    let mut stretches: Vec<(usize, Stretch)> = Vec::new();
    let mut image = vec![0u8; seg_size];
    // How far each segment of copies is known synced (`synctable.rs`), as recovery reads it.
    let proofs = super::super::synctable::read(storage, sb.segment_count)?;
    let progress =
        super::super::progress::Pass::begin("checking segments", sb.segment_count as u64);
    for segment in 0..sb.segment_count {
        progress.advance(segment as u64);
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
        let verdicts = scan::segment_verdicts(
            &image,
            segment,
            sb.generation_high_water,
            proofs[segment as usize],
            sb.frees_clear_directories_from,
            true,
        );
        take_verdicts(
            segment,
            &image,
            verdicts,
            options,
            &mut bufs,
            &mut recs,
            &mut suspects,
            &mut stretches,
            &mut out.findings,
        );
    }
    Ok(Scanned {
        bufs,
        recs,
        suspects,
        stretches,
        salvaged: Vec::new(),
    })
}

impl Scanned {
    /// The damaged stretches' records that recovery takes (`Stretch::takes`), into the map as
    /// recovery indexes them: intact ones and deletions it keeps are served, damaged puts are
    /// poisoned (reads of their keys fail: a problem naming the key). Nothing of a stretch
    /// beyond the log's end is taken.
    pub(super) fn take_stretches(&mut self, end: &End) {
        for (i, stretch) in &self.stretches {
            let segment = self.suspects[*i].place.segment;
            if end.beyond(segment, stretch.span.start as u32) {
                continue;
            }
            let takes = stretch.takes(end.floor, end.last_lsn);
            self.suspects[*i].serve(|k, _| takes[k].taken(), &mut self.recs, &mut self.salvaged);
        }
    }
}

/// Takes the scan's verdicts on one segment image: accepted buffers into `bufs`/`recs`, each
/// damaged stretch and the stop into `suspects` (the stretches also into `stretches`, to be
/// judged once the log's end is known), what the verdicts say is wrong into `findings`.
#[allow(clippy::too_many_arguments)]
fn take_verdicts(
    segment: u32,
    image: &[u8],
    verdicts: Verdicts,
    options: &CheckOptions,
    bufs: &mut Vec<Buf>,
    recs: &mut Vec<Rec>,
    suspects: &mut Vec<Suspect>,
    stretches: &mut Vec<(usize, Stretch)>,
    findings: &mut Vec<Finding>,
) {
    take_valid_buffers(
        segment,
        image,
        verdicts.valid,
        options,
        bufs,
        recs,
        findings,
    );
    for stretch in verdicts.stretches {
        take_stretch(segment, image, stretch, options, suspects, stretches);
    }
    if let Some(stop) = verdicts.stop {
        take_stop(segment, image, stop, options, suspects);
    }
}

/// The valid buffers of a segment into `bufs`/`recs`: a repaired one is a note, a record
/// failing its own CRC in one a problem.
fn take_valid_buffers(
    segment: u32,
    image: &[u8],
    valid: Vec<ValidBuffer>,
    options: &CheckOptions,
    bufs: &mut Vec<Buf>,
    recs: &mut Vec<Rec>,
    findings: &mut Vec<Finding>,
) {
    for b in valid {
        if b.repaired {
            findings.push(Finding::note(
                format!("segment {segment} offset {}", b.at),
                "buffer header damaged in a field naming the buffer; repaired from its record \
                 directory (every other byte passes the buffer's checksum)",
            ));
        }
        let (offset, header) = (b.at as u32, b.header);
        let first = recs.len();
        take_valid_buffer(segment, image, b, options, recs, findings);
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
            offset,
            header,
            records: first..recs.len(),
        });
    }
}

/// A damaged stretch into `suspects` (its records) and `stretches` (to be judged once the
/// log's end is known).
fn take_stretch(
    segment: u32,
    image: &[u8],
    mut stretch: Stretch,
    options: &CheckOptions,
    suspects: &mut Vec<Suspect>,
    stretches: &mut Vec<(usize, Stretch)>,
) {
    let d = stretch.span;
    let records = stretch
        .records
        .iter()
        .map(|r| rec_of(segment, r.clone(), image, options))
        .collect();
    // The records stay with the stretch only as far as `Stretch::takes` reads them.
    stretch.records.iter_mut().for_each(|r| {
        r.key = Vec::new();
        r.range_end = Vec::new();
    });
    stretches.push((suspects.len(), stretch));
    suspects.push(Suspect {
        place: Place {
            segment,
            offset: d.start as u32,
        },
        copies: d.copies,
        synced_end: d.synced_end,
        damaged_buffer: true,
        stranded_buffers: 0,
        stranded_lsn: 0,
        stranded_floor: 0,
        served_records: 0,
        poisoned: Vec::new(),
        proven: stretches.last().is_some_and(|(_, s)| s.proven()),
        unnamed_buffers: stretches.last().map_or(0, |(_, s)| s.unnamed),
        records,
    });
}

/// Where the scan stopped before the segment's end into `suspects`: the failing buffer's
/// records and the valid buffers stranded behind it.
fn take_stop(
    segment: u32,
    image: &[u8],
    stop: Stop,
    options: &CheckOptions,
    suspects: &mut Vec<Suspect>,
) {
    let mut records: Vec<Rec> = stop
        .records
        .into_iter()
        .map(|r| rec_of(segment, r, image, options))
        .collect();
    let stranded_buffers = stop.stranded.len() as u64;
    let stranded_lsn = stop.stranded.iter().map(|b| b.header.lsn_last).max();
    let stranded_floor = stop.stranded.iter().map(|b| b.header.durable_floor).max();
    for b in stop.stranded {
        take_valid_buffer(segment, image, b, options, &mut records, &mut Vec::new());
    }
    suspects.push(Suspect {
        place: Place {
            segment,
            offset: stop.at as u32,
        },
        copies: stop.copies,
        synced_end: stop.synced_end,
        damaged_buffer: !stop.zeros,
        stranded_buffers,
        stranded_lsn: stranded_lsn.unwrap_or(0),
        stranded_floor: stranded_floor.unwrap_or(0),
        served_records: 0,
        poisoned: Vec::new(),
        proven: false,
        unnamed_buffers: stop.unnamed,
        records,
    });
}

/// The records of a valid buffer into `recs`; a problem if they do not fill the payload
/// exactly (the buffer's CRC matched, so the format itself is violated).
fn take_valid_buffer(
    segment: u32,
    image: &[u8],
    b: ValidBuffer,
    options: &CheckOptions,
    recs: &mut Vec<Rec>,
    findings: &mut Vec<Finding>,
) {
    if let Some(p) = b.malformed_at {
        findings.push(Finding::problem(
            format!("segment {segment} offset {}", b.at),
            format!("malformed record at payload offset {p} of a buffer that passes its checksum"),
        ));
    }
    recs.extend(
        b.records
            .into_iter()
            .map(|r| rec_of(segment, r, image, options)),
    );
}

/// A record the scan found, as the check keeps it: its value if the caller wants it, and
/// whether recovery keeps its effect although it is damaged (a tombstone, indexed as one; a
/// range delete whose range its buffer's record directory names).
fn rec_of(segment: u32, r: StretchRecord, image: &[u8], options: &CheckOptions) -> Rec {
    let h = r.header;
    let value_at = r.at + RECORD_HEADER_SIZE + h.key_len as usize;
    let value = (h.kind == RecordKind::Put && (options.keep_value)(&r.key))
        .then(|| image[value_at..value_at + h.value_len as usize].to_vec());
    Rec {
        deletion_kept: !r.intact
            && match h.kind {
                RecordKind::Put => false,
                RecordKind::Delete => true,
                RecordKind::DeleteRange => r.from_directory,
            },
        key: r.key,
        end: r.range_end,
        kind: h.kind,
        group: h.group,
        version: h.version,
        place: Place {
            segment,
            offset: r.at as u32,
        },
        len: h.total_len() as u32,
        value_len: h.value_len,
        value,
        intact: r.intact,
    }
}
