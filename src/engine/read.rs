//! The read path: point reads, range scans and read-ahead hints. A read is pinned from its
//! index lookup to the end of its read (`read_pins.rs`), so the record its entry names is still
//! where the entry says: a record that fails its check (header CRC, version, key) is damage and
//! fails the read (`EngineError::Corrupt`), never taken for a move. Bytes still in the log's
//! buffers are served from memory (write-behind); the rest from the segment, without the log's
//! lock.

#[cfg(feature = "shuttle")]
use super::concurrency::{self, Ordering};
use super::format::{BLOCK_SIZE, RECORD_HEADER_SIZE, RecordHeader};
use super::index::{Entry, Location};
use super::{EngineError, Inner, Result};

impl Inner {
    /// The value of `key` (see `Engine::get`). Pinned from the lookup to the end of the read,
    /// the record the entry names is where it says (see `read_pins.rs`): one that fails its
    /// check is damaged.
    pub(super) fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let _pin = self.read_pins.pin();
        let Some(entry) = self.index.get(key) else {
            return Ok(None);
        };
        if entry.tombstone {
            return Ok(None);
        }
        #[cfg(feature = "shuttle")]
        for _ in 0..self.test_read_stall_turns.load(Ordering::Relaxed) {
            concurrency::yield_now();
        }
        let loc = entry.location;
        let mut buf = vec![0u8; loc.len as usize];
        self.read_segment(loc.segment, loc.offset, &mut buf)?;
        match self.check_record(key, &entry, buf) {
            Some(value) => Ok(Some(value)),
            None => Err(damaged(key, &entry)),
        }
    }

    /// Reads bytes of a segment the index may point into: what is still in the log's buffers
    /// comes from memory (write-behind), the rest from the segment.
    pub(super) fn read_segment(&self, segment: u32, offset: u32, buf: &mut [u8]) -> Result<()> {
        if self
            .segments
            .written_through(segment, offset as u64 + buf.len() as u64)
        {
            return self.segments.read(segment, offset, buf);
        }
        let overlay = self.log.overlay_unwritten(segment, offset, buf.len());
        self.segments.read(segment, offset, buf)?;
        for (at, bytes) in overlay {
            buf[at..at + bytes.len()].copy_from_slice(&bytes);
        }
        Ok(())
    }

    pub(super) fn check_record(
        &self,
        key: &[u8],
        entry: &Entry,
        mut buf: Vec<u8>,
    ) -> Option<Vec<u8>> {
        let value = record_value(key, entry, &buf)?;
        buf.truncate(value.end);
        buf.drain(..value.start);
        Some(buf)
    }

    /// Hints the storage to read `locations` soon: one hint per run of records less than a
    /// block apart in a segment.
    pub(super) fn prefetch(&self, mut locations: Vec<Location>) {
        locations.sort_unstable_by_key(|l| (l.segment, l.offset));
        let mut runs: Vec<(u32, u32, u32)> = Vec::new(); // (segment, start, end)
        for l in locations {
            match runs.last_mut() {
                Some((s, _, end)) if *s == l.segment && l.offset <= *end + BLOCK_SIZE as u32 => {
                    *end = (*end).max(l.offset + l.len);
                }
                _ => runs.push((l.segment, l.offset, l.offset + l.len)),
            }
        }
        for (segment, start, end) in runs {
            self.segments.will_need(segment, start, end - start);
        }
    }

    pub(super) fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        self.scan_with(
            start,
            end,
            start_after,
            limit,
            &mut Vec::new(),
            &mut |k, v| {
                out.push((k.to_vec(), v.to_vec()));
            },
        )?;
        Ok(out)
    }

    /// [`Inner::scan`], handing each key and value to `f` in key order instead of collecting
    /// them; the records are read into `scratch`, which a caller that scans often keeps.
    pub(super) fn scan_with(
        &self,
        start: &[u8],
        end: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
        scratch: &mut Vec<u8>,
        f: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<()> {
        self.check_open()?;
        let _pin = self.read_pins.pin();
        let entries = self.index.scan(start, end, start_after, limit);
        let spans = read_spans(&entries);
        // Scattered reads are hinted together, so the disk serves them at once. Reads that
        // follow one another closely in a segment are not: the kernel's read-ahead of the
        // segment already brings them in, and a hint would stop it (the pages a hint brings in
        // carry no read-ahead mark), which a sequential file read depends on.
        let in_order = spans.windows(2).all(|w| {
            w[0].segment == w[1].segment
                && w[0].end <= w[1].start
                && w[1].start - w[0].end <= READ_AHEAD_GAP
        });
        if !in_order {
            for s in &spans {
                self.segments.will_need(s.segment, s.start, s.end - s.start);
            }
        }
        for s in spans {
            // Grown, never cleared and zeroed again for each span: the read fills every byte
            // of the span or fails (zeroing a MiB for each read request was 6% of a cold
            // sequential read's daemon CPU).
            let len = (s.end - s.start) as usize;
            if scratch.len() < len {
                scratch.resize(len, 0);
            }
            let span = &mut scratch[..len];
            self.read_segment(s.segment, s.start, span)?;
            for (key, entry) in &entries[s.entries.clone()] {
                let at = (entry.location.offset - s.start) as usize;
                let record = &span[at..at + entry.location.len as usize];
                match record_value(key, entry, record) {
                    Some(v) => f(key, &record[v]),
                    None => return Err(damaged(key, entry)),
                }
            }
        }
        Ok(())
    }
}

/// Where the value of `key` is in `record` (its bytes as `entry` locates them), if the record
/// passes its check (header CRC, version, key).
fn record_value(key: &[u8], entry: &Entry, record: &[u8]) -> Option<std::ops::Range<usize>> {
    let h = RecordHeader::decode_checked(record)?;
    let key_at = RECORD_HEADER_SIZE;
    let value_at = key_at + h.key_len as usize;
    if h.version != entry.version || record.get(key_at..value_at)? != key {
        return None;
    }
    Some(value_at..value_at + h.value_len as usize)
}

/// Bytes between two records that a scan reads through rather than split its read: a second
/// call costs more than this much more transfer, and a log's batches of one file's pages are
/// apart by little more than a block (buffer headers, the file's inode record).
const SPAN_GAP: u32 = 64 << 10;
/// Spans of a scan at most this far apart, in order in one segment, are left to the kernel's
/// read-ahead of the segment (a log's batches of one file are apart by up to a buffer's
/// padding); farther apart, they are hinted (see [`Inner::scan_with`]).
const READ_AHEAD_GAP: u32 = 256 << 10;
/// The most bytes one read of a scan covers.
const SPAN_MAX: u32 = 1 << 20;

/// One read of a scan: `start..end` of `segment`, holding the records of `entries`.
struct Span {
    segment: u32,
    start: u32,
    end: u32,
    entries: std::ops::Range<usize>,
}

/// The reads of a scan: runs of consecutive entries whose records follow one another in a
/// segment, at most [`SPAN_GAP`] apart, each run at most [`SPAN_MAX`] bytes (or one record).
fn read_spans(entries: &[(Vec<u8>, Entry)]) -> Vec<Span> {
    let mut spans: Vec<Span> = Vec::new();
    for (i, (_, e)) in entries.iter().enumerate() {
        let loc = e.location;
        match spans.last_mut() {
            Some(s)
                if s.segment == loc.segment
                    && loc.offset >= s.end
                    && loc.offset - s.end <= SPAN_GAP
                    && loc.offset + loc.len - s.start <= SPAN_MAX =>
            {
                s.end = loc.offset + loc.len;
                s.entries.end = i + 1;
            }
            _ => spans.push(Span {
                segment: loc.segment,
                start: loc.offset,
                end: loc.offset + loc.len,
                entries: i..i + 1,
            }),
        }
    }
    spans
}

/// The error of a read whose record, pinned where its index entry says, fails its check.
fn damaged(key: &[u8], entry: &Entry) -> EngineError {
    EngineError::Corrupt(format!(
        "record of key {} at segment {} offset {} ({} bytes) fails its checksum",
        hex(key),
        entry.location.segment,
        entry.location.offset,
        entry.location.len
    ))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(segment: u32, offset: u32, len: u32) -> (Vec<u8>, Entry) {
        let location = Location {
            segment,
            offset,
            len,
        };
        let entry = Entry {
            location,
            version: 1,
            group: 0,
            tombstone: false,
        };
        (offset.to_be_bytes().to_vec(), entry)
    }

    fn shape(entries: &[(Vec<u8>, Entry)]) -> Vec<(u32, u32, u32, usize, usize)> {
        read_spans(entries)
            .into_iter()
            .map(|s| (s.segment, s.start, s.end, s.entries.start, s.entries.end))
            .collect()
    }

    #[test]
    fn spans_read_through_small_gaps_only_in_order_and_within_a_segment() {
        let entries = [
            at(1, 0, 100),
            at(1, 100, 100),
            at(1, 200 + SPAN_GAP, 100),     // a gap read through
            at(1, 301 + 2 * SPAN_GAP, 100), // one byte too far: a new read
            at(2, 0, 100),                  // another segment
            at(2, 0, 100),                  // behind the end of the read before
        ];
        assert_eq!(
            shape(&entries),
            vec![
                (1, 0, 300 + SPAN_GAP, 0, 3),
                (1, 301 + 2 * SPAN_GAP, 401 + 2 * SPAN_GAP, 3, 4),
                (2, 0, 100, 4, 5),
                (2, 0, 100, 5, 6),
            ]
        );
    }

    #[test]
    fn a_span_stops_at_its_size_but_holds_a_larger_record_alone() {
        let entries = [
            at(1, 0, SPAN_MAX - 10),
            at(1, SPAN_MAX - 10, 11),
            at(1, SPAN_MAX + 1, 2 * SPAN_MAX),
        ];
        assert_eq!(
            shape(&entries),
            vec![
                (1, 0, SPAN_MAX - 10, 0, 1),
                (1, SPAN_MAX - 10, SPAN_MAX + 1, 1, 2),
                (1, SPAN_MAX + 1, 3 * SPAN_MAX + 1, 2, 3),
            ]
        );
    }
}
