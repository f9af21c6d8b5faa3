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
        let h = RecordHeader::decode_checked(&buf)?;
        let key_at = RECORD_HEADER_SIZE;
        let value_at = key_at + h.key_len as usize;
        if h.version != entry.version || &buf[key_at..value_at] != key {
            return None;
        }
        buf.truncate(value_at + h.value_len as usize);
        buf.drain(..value_at);
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
        self.check_open()?;
        let _pin = self.read_pins.pin();
        let entries = self.index.scan(start, end, start_after, limit);
        if entries.len() > 1 {
            self.prefetch(entries.iter().map(|(_, e)| e.location).collect());
        }
        let mut out = Vec::with_capacity(entries.len());
        // Coalesce records that sit next to each other on disk into one read.
        let mut i = 0;
        while i < entries.len() {
            let first = entries[i].1.location;
            let mut j = i + 1;
            let mut span_end = first.offset + first.len;
            while j < entries.len() {
                let loc = entries[j].1.location;
                if loc.segment != first.segment
                    || loc.offset < span_end
                    || loc.offset - span_end > BLOCK_SIZE as u32
                    || loc.offset + loc.len - first.offset > 1 << 20
                {
                    break;
                }
                span_end = loc.offset + loc.len;
                j += 1;
            }
            let mut span = vec![0u8; (span_end - first.offset) as usize];
            self.read_segment(first.segment, first.offset, &mut span)?;
            for (key, entry) in &entries[i..j] {
                let at = (entry.location.offset - first.offset) as usize;
                let bytes = span[at..at + entry.location.len as usize].to_vec();
                match self.check_record(key, entry, bytes) {
                    Some(v) => out.push((key.clone(), v)),
                    None => return Err(damaged(key, entry)),
                }
            }
            i = j;
        }
        Ok(out)
    }
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
