//! Segment summaries: what a scan of a closed segment reads (every buffer header, every
//! record's header, key and range end), kept beside the segments so that a recovery after a
//! crash reads a few bytes per summarized segment instead of the whole segment. Recovery is the
//! full scan's algorithm still; only where a segment's buffers come from changes.
//!
//! Why a summary can stand in for its segment: a closed segment is never written again in the
//! same use (recovery closes open segments, and a new session never appends to them), until it
//! is freed. Freeing zeroes its first sector (and, before that, its first buffer's directory,
//! which the scan repairs back to the same records); a new use writes a first buffer with a new
//! generation (generations are never handed out twice). So a summary is trusted only if the
//! segment's first 64 bytes (its first buffer's header, whose CRC covers the whole first
//! buffer) are exactly those the summary recorded; anything else, and the segment is scanned.
//!
//! The rules that make a summary equal to the scan of its segment:
//! 1. It is built from the bytes of each buffer as they were written (`note_buffer`), decoded
//!    by the scan's own decoder, from the use's first buffer on with no buffer missing; and
//!    before it is written, the segment is scanned as it is in storage and must read exactly
//!    so (which also gives the puts behind the use's end that the scan notes).
//! 2. It is complete once the segment is closed with nothing written after its last buffer.
//! 3. It is written only after a storage sync that began after its last buffer was written:
//!    a summary never describes bytes a power cut could still take.
//! 4. Recovery drops the summaries of segments it cuts or zeroes anything in, before it
//!    zeroes (see `open.rs`).
//!
//! The set of summaries is rewritten whole, into the slot (`format/summaries.rs`) that does not
//! hold the newest one, once the complete summaries waiting are as many as those written (at
//! least [`MIN_WAITING`]), and at a clean close. A recovery hands over the summaries of the
//! segments it read whole and found undamaged, to be written out likewise. What a crash leaves
//! unsummarized (the waiting ones, open segments) is read. Only summaries worth reading are
//! kept ([`worth_reading`]): for segments of small records, reading the segment costs no more.

use std::collections::BTreeMap;

use super::concurrency::{Arc, Mutex};
use std::io;

use super::format::summaries::{
    self as bytes, SUMMARY_FILES, SegmentSummary, SummaryBuffer, SummaryRecord,
};
use super::format::{
    BLOCK_SIZE, BUFFER_HEADER_SIZE, BufferHeader, RECORD_HEADER_SIZE, RecordKind, align_up,
};
use super::segments::{SegmentInfo, SegmentManager, SegmentState};
use super::storage::Storage;

/// Complete summaries that wait for a write-out at least this many (or as many as those
/// written, if more), so that rewriting the set costs little against the segments it covers.
///
/// Why as many, not fewer: every write-out decodes the set on disk and encodes it whole, so
/// the set grows by doubling and all the write-outs together rewrite it about twice (with a
/// quarter, five times). Going from a quarter to this took a quarter off the background
/// thread's CPU and 9 to 15% off the wall time of a 2 GiB `dd conv=fsync` (two measurements in
/// docs/BENCHMARKS.md). What it costs: a crash leaves up to half of the summarizable segments
/// unsummarized instead of a fifth, and they are read whole, but only by a recovery that
/// cannot take the index checkpoint (`open.rs`): one that can reads no summary at all.
pub const MIN_WAITING: usize = 4;

/// When [`Summaries::write_out`] writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteOut {
    /// Once the complete summaries waiting are as many as those written, at least
    /// [`MIN_WAITING`] (the background loop).
    IfDue,
    /// Every complete summary waiting (tests).
    #[cfg_attr(not(test), allow(dead_code))]
    Now,
    /// At a clean close: nothing is written any more, so the open segments are complete too
    /// (the next session closes them without writing to them).
    Closing,
}

/// The summaries the store's newest whole slot holds, by segment, and which slot that is.
#[derive(Default)]
pub struct Loaded {
    pub by_segment: BTreeMap<u32, SegmentSummary>,
    /// (slot, sequence) of the slot they were read from.
    pub newest: Option<(usize, u64)>,
}

/// Reads the newest whole slot; none (no summaries) if neither slot is whole.
pub fn load(storage: &dyn Storage) -> io::Result<Loaded> {
    let mut best: Option<(usize, u64, Vec<SegmentSummary>)> = None;
    for (slot, &file) in SUMMARY_FILES.iter().enumerate() {
        let Some((sequence, summaries)) = read_slot(storage, file)? else {
            continue;
        };
        if best.as_ref().is_none_or(|b| sequence > b.1) {
            best = Some((slot, sequence, summaries));
        }
    }
    Ok(match best {
        None => Loaded::default(),
        Some((slot, sequence, summaries)) => Loaded {
            by_segment: summaries.into_iter().map(|s| (s.segment, s)).collect(),
            newest: Some((slot, sequence)),
        },
    })
}

/// What the slots' headers say of the newest slot (slot, sequence) and its summary count,
/// without reading the slots whole: for an open that takes most segments from the index
/// checkpoint. A torn slot's header may claim a higher sequence than the whole one's: the
/// next write-out then goes to the other slot, and a later [`load`] still finds the whole one
/// by its CRC, or the one written after.
pub fn newest_by_headers(storage: &dyn Storage) -> io::Result<(Option<(usize, u64)>, usize)> {
    let mut best: (Option<(usize, u64)>, usize) = (None, 0);
    for (slot, &file) in SUMMARY_FILES.iter().enumerate() {
        if storage.file_len(file)? < bytes::SLOT_HEADER_SIZE as u64 + 4 {
            continue;
        }
        let mut head = [0u8; bytes::SLOT_HEADER_SIZE + 4];
        storage.read_at(file, 0, &mut head)?;
        let Some((sequence, _)) = bytes::decode_slot_header(&head) else {
            continue;
        };
        if best.0.is_none_or(|(_, q)| sequence > q) {
            let count = u32::from_le_bytes(head[bytes::SLOT_HEADER_SIZE..].try_into().unwrap());
            best = (Some((slot, sequence)), count as usize);
        }
    }
    Ok(best)
}

/// The sequence and summaries of slot file `file`, if it holds a whole slot.
fn read_slot(storage: &dyn Storage, file: u32) -> io::Result<Option<(u64, Vec<SegmentSummary>)>> {
    let len = storage.file_len(file)?;
    if len < bytes::SLOT_HEADER_SIZE as u64 {
        return Ok(None);
    }
    let mut head = [0u8; bytes::SLOT_HEADER_SIZE];
    storage.read_at(file, 0, &mut head)?;
    let Some((_, body_len)) = bytes::decode_slot_header(&head) else {
        return Ok(None);
    };
    let total = bytes::slot_len(body_len);
    if total > len {
        return Ok(None);
    }
    let mut data = vec![0u8; total as usize];
    storage.read_at(file, 0, &mut data)?;
    Ok(bytes::decode(&data))
}

/// A summary being built as its segment's buffers are written.
struct Building {
    summary: SegmentSummary,
    /// Bytes its buffers take in a slot.
    encoded: usize,
    /// A buffer was missed or did not decode, or the summary costs too much to read against
    /// its segment ([`worth_reading`]): never written out, its buffers dropped.
    broken: bool,
}

/// Whether a summary of `encoded` bytes for a use of `end` bytes spares recovery enough to be
/// kept: it must be at most an eighth of what it stands in for. Recovery of small records is
/// bound by the work per record, which a summary does not spare (and its decoding adds to):
/// 100-byte files (about 150 bytes a record, a summary a third of that) recovered 30% slower
/// from summaries than by reading their segments; 64 KiB files (16 records of 4 KiB pages a
/// file) 3.7 times faster.
pub(super) fn worth_reading(encoded: usize, end: u32) -> bool {
    encoded * 8 <= end as usize
}

/// The summaries of the segments written in this session, and the set on disk.
pub struct Summaries {
    storage: Arc<dyn Storage>,
    segment_size: u32,
    /// Taken after the segment table's lock, never before: freeing a segment forgets its
    /// summary with the table locked (`SegmentManager::finish_free`).
    building: Mutex<BTreeMap<u32, Building>>,
    /// The newest slot on disk (slot, sequence) and how many summaries it holds; held across
    /// a write-out, so that write-outs run one at a time.
    written: Mutex<(Option<(usize, u64)>, usize)>,
}

impl Summaries {
    /// Over `storage`, whose newest whole slot is `newest` (slot, sequence), holding `count`
    /// summaries.
    pub fn new(
        storage: Arc<dyn Storage>,
        segment_size: u32,
        newest: Option<(usize, u64)>,
        count: usize,
    ) -> Self {
        Summaries {
            storage,
            segment_size,
            building: Mutex::new(BTreeMap::new()),
            written: Mutex::new((newest, count)),
        }
    }

    /// Notes buffer `data` written at `offset` of `segment` (rule 1).
    pub fn note_buffer(&self, segment: u32, offset: u32, data: &[u8]) {
        if offset != 0 && (self.building.lock().get(&segment)).is_some_and(|b| b.broken) {
            return; // not decoded again
        }
        let read = read_buffer(offset, data);
        let mut building = self.building.lock();
        let generation = read.as_ref().map(|(g, _)| *g);
        if offset == 0 {
            // A new use of the segment starts here.
            building.remove(&segment);
        }
        let entry = building.entry(segment).or_insert_with(|| Building {
            summary: SegmentSummary {
                segment,
                generation: generation.unwrap_or(0),
                buffers: Vec::new(),
                tail_puts: Vec::new(),
            },
            encoded: 0,
            broken: offset != 0,
        });
        match read {
            Some((generation, buffer))
                if !entry.broken
                    && generation == entry.summary.generation
                    && entry.summary.end() == offset
                    && worth_reading(entry.encoded + buffer.encoded_len(), self.segment_size) =>
            {
                entry.encoded += buffer.encoded_len();
                entry.summary.buffers.push(buffer)
            }
            _ => {
                entry.broken = true;
                entry.summary.buffers = Vec::new();
            }
        }
    }

    /// Forgets what was noted of `segment`'s use (it is being freed).
    pub fn forget_segment(&self, segment: u32) {
        self.building.lock().remove(&segment);
    }

    /// Writes the complete summaries out with those on disk that still hold, when `when` says.
    /// Returns how many it wrote.
    pub fn write_out(&self, segments: &SegmentManager, when: WriteOut) -> io::Result<usize> {
        let infos = || segments.infos();
        let closing = when == WriteOut::Closing;
        let mut written = self.written.lock();
        let due = match when {
            WriteOut::IfDue => MIN_WAITING.max(written.1),
            WriteOut::Now | WriteOut::Closing => 1,
        };
        if self.building.lock().len() < due {
            return Ok(0); // fewer being built than are due: spares copying every segment's state
        }
        let complete = |infos: &[SegmentInfo], building: &BTreeMap<u32, Building>| -> Vec<u32> {
            building
                .iter()
                .filter(|&(_, b)| {
                    !b.broken
                        && !b.summary.buffers.is_empty()
                        && holds(infos, &b.summary, closing)
                        && worth_reading(b.encoded, b.summary.end())
                })
                .map(|(&s, _)| s)
                .collect()
        };
        let waiting = {
            let infos = infos();
            let mut building = self.building.lock();
            // Those never to be written, to which nothing more is added, go.
            building.retain(|&s, b| {
                let done = infos[s as usize].state != SegmentState::Open || closing;
                !(done && (b.broken || !worth_reading(b.encoded, b.summary.end())))
            });
            complete(&infos, &building).len()
        };
        if waiting < due {
            return Ok(0);
        }
        // Rule 3: every buffer noted so far was written before this sync began.
        let mut ready: Vec<SegmentSummary> = {
            let infos = infos();
            let building = self.building.lock();
            let ready = complete(&infos, &building);
            ready.iter().map(|s| building[s].summary.clone()).collect()
        };
        self.storage.sync()?;
        let mut read_back = Vec::new();
        // One buffer for every segment checked here: a fresh one per segment cost the host a
        // page fault and a zeroed page per 4 KiB (the zeroing alone was 9% of the daemon's CPU
        // in a long sequential write). Not kept between write-outs, where it would hold a
        // segment's size of memory for the engine's whole life.
        ready.retain_mut(|s| match scan_agrees(segments, s, &mut read_back) {
            Some(tail_puts) => {
                s.tail_puts = tail_puts;
                true
            }
            None => {
                ::log::warn!("segment {}: its summary disagrees with its scan", s.segment);
                false
            }
        });
        drop(read_back);
        self.merge_and_write(&mut written, &infos(), &ready, closing)?;
        let mut building = self.building.lock();
        for s in &ready {
            if building
                .get(&s.segment)
                .is_some_and(|b| b.summary.generation == s.generation)
            {
                building.remove(&s.segment);
            }
        }
        Ok(ready.len())
    }

    /// Takes the summaries recovery made of the segments it read whole, to be written out with
    /// those of this session's segments (and checked against a scan likewise), not at the open:
    /// a rewrite of the whole set there would cost the mount what the summaries spare it.
    pub fn adopt_scanned(&self, scanned: Vec<SegmentSummary>) {
        let mut building = self.building.lock();
        for summary in scanned {
            let encoded = summary.buffers.iter().map(|b| b.encoded_len()).sum();
            if worth_reading(encoded, summary.end()) {
                building.entry(summary.segment).or_insert(Building {
                    summary,
                    encoded,
                    broken: false,
                });
            }
        }
    }

    /// Writes `new` (those that hold) and the summaries on disk that still hold into the slot
    /// that does not hold the newest set; `written`: the newest slot, updated.
    fn merge_and_write(
        &self,
        written: &mut (Option<(usize, u64)>, usize),
        infos: &[SegmentInfo],
        new: &[SegmentSummary],
        closing: bool,
    ) -> io::Result<()> {
        let on_disk = load(&*self.storage)?;
        let mut keep: BTreeMap<u32, &SegmentSummary> = on_disk
            .by_segment
            .values()
            .filter(|s| holds(infos, s, closing))
            .map(|s| (s.segment, s))
            .collect();
        for s in new.iter().filter(|s| holds(infos, s, closing)) {
            keep.insert(s.segment, s);
        }
        self.write_set(written, &keep.into_values().collect::<Vec<_>>())
    }

    /// Writes `set` into the slot that does not hold the newest set, and makes it the newest.
    fn write_set(
        &self,
        written: &mut (Option<(usize, u64)>, usize),
        set: &[&SegmentSummary],
    ) -> io::Result<()> {
        let (slot, sequence) = match written.0 {
            Some((newest, q)) => (1 - newest, q + 1),
            None => (0, 1),
        };
        write_slot(
            &*self.storage,
            SUMMARY_FILES[slot],
            &bytes::encode(sequence, set),
        )?;
        *written = (Some((slot, sequence)), set.len());
        Ok(())
    }

    /// Rewrites the set on disk without the summaries of `segments` (rule 4), durably. For an
    /// open, before anything is written.
    pub fn drop_segments(&self, segments: &[u32]) -> io::Result<()> {
        if segments.is_empty() {
            return Ok(());
        }
        let mut written = self.written.lock();
        let on_disk = load(&*self.storage)?;
        if !segments.iter().any(|s| on_disk.by_segment.contains_key(s)) {
            return Ok(());
        }
        let set: Vec<&SegmentSummary> = on_disk
            .by_segment
            .values()
            .filter(|s| !segments.contains(&s.segment))
            .collect();
        self.write_set(&mut written, &set)
    }
}

/// Whether summary `s` describes its segment's current use whole: the segment is closed (or
/// open, when `closing`), of the summarized generation, and used up to the summary's end.
fn holds(infos: &[SegmentInfo], s: &SegmentSummary, closing: bool) -> bool {
    infos.get(s.segment as usize).is_some_and(|info| {
        (info.state == SegmentState::Closed || (closing && info.state == SegmentState::Open))
            && info.generation == s.generation
            && info.used == s.end()
    })
}

/// The puts behind the end of `s`'s segment use (see `SegmentSummary::tail_puts`), if the
/// scan of the segment as it is in storage reads exactly the buffers and records `s` holds
/// (rule 1, checked: the summary is never trusted for more than the scan reads).
/// `image` is the buffer to read the segment into (any contents; resized as needed).
fn scan_agrees(
    segments: &SegmentManager,
    s: &SegmentSummary,
    image: &mut Vec<u8>,
) -> Option<Vec<(Vec<u8>, u64)>> {
    let geometry = &segments.geometry;
    let (file, base) = geometry.segment_position(s.segment);
    image.resize(geometry.segment_size as usize, 0);
    segments.storage().read_at(file, base, image).ok()?;
    let image = &image[..];
    let verdicts = super::scan::segment_verdicts(
        image,
        s.segment,
        segments.generation_high_water(),
        segments.sync_table.proof(s.segment),
        geometry.frees_clear_directories_from,
        false,
    );
    let same_record = |r: &super::scan::StretchRecord, summarized: &SummaryRecord| {
        r.at as u32 == summarized.at
            && r.key == summarized.key
            && r.range_end == summarized.range_end
            && image[r.at..r.at + RECORD_HEADER_SIZE] == summarized.header
    };
    let same_buffer = |b: &super::scan::ValidBuffer, summarized: &SummaryBuffer| {
        b.at as u32 == summarized.offset
            && b.malformed_at.is_none()
            && image[b.at..b.at + BUFFER_HEADER_SIZE] == summarized.header
            && b.records.len() == summarized.records.len()
            && (b.records.iter().zip(&summarized.records)).all(|(r, q)| same_record(r, q))
    };
    let agrees = verdicts.stretches.is_empty()
        && verdicts.valid.len() == s.buffers.len()
        && (verdicts.valid.iter().zip(&s.buffers)).all(|(b, q)| same_buffer(b, q));
    agrees.then(|| {
        (verdicts.torn.into_iter())
            .filter(|r| r.header.kind == RecordKind::Put)
            .map(|r| (r.key, r.header.version))
            .collect()
    })
}

/// Writes `data` into slot file `file` (allocated in whole blocks as it grows) and syncs.
fn write_slot(storage: &dyn Storage, file: u32, data: &[u8]) -> io::Result<()> {
    let need = align_up(data.len(), BLOCK_SIZE) as u64;
    if storage.file_len(file)? < need {
        storage.allocate(file, need)?;
    }
    storage.write_at(file, 0, data)?;
    storage.sync()
}

/// The generation and summary of the sealed buffer `data` written at `offset`, read as the
/// scan reads a valid buffer; `None` if it does not pass its checks.
fn read_buffer(offset: u32, data: &[u8]) -> Option<(u64, SummaryBuffer)> {
    let header = BufferHeader::decode_checked(data)?;
    let valid = super::scan::valid_buffer(data, 0, header, false, false);
    if valid.malformed_at.is_some() {
        return None;
    }
    let mut records = Vec::with_capacity(valid.records.len());
    for r in valid.records {
        let mut raw = [0u8; RECORD_HEADER_SIZE];
        raw.copy_from_slice(&data[r.at..r.at + RECORD_HEADER_SIZE]);
        records.push(SummaryRecord {
            at: offset + r.at as u32,
            header: raw,
            key: r.key,
            range_end: r.range_end,
        });
    }
    let mut raw = [0u8; BUFFER_HEADER_SIZE];
    raw.copy_from_slice(&data[..BUFFER_HEADER_SIZE]);
    Some((
        header.generation,
        SummaryBuffer {
            offset,
            header: raw,
            records,
        },
    ))
}
