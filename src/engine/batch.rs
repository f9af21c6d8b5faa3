//! Batch encoding: a user batch is checked against the engine's limits (`validate`) before
//! anything is written, then encoded outside the log lock (`EncodedBatch::new`): records whose
//! header fields are all known but the version, which is stamped in under the log lock once the
//! batch has its LSN (`log::Placeable::stamp_into`). The rule it keeps: the bytes placed in the
//! buffer and the index updates (`EncodedBatch::updates`) describe the same records at the same
//! offsets with the same versions, so the index never points at a record other than its own.

use crc32fast::Hasher;

use super::format::{
    self, RECORD_HEADER_SIZE, RecordHeader, RecordKind, record_body_crc, version_of,
};
use super::index::{Entry, Location, RangeDelete, Update};
use super::{
    EngineError, MAX_BATCH_BYTES, MAX_BATCH_RECORDS, MAX_KEY_LEN, MAX_VALUE_LEN, Mutation, Result,
    log, prefix_successor,
};

/// A batch encoded outside the log lock; stamped with its LSN under it.
pub(super) struct EncodedBatch {
    bytes: Vec<u8>,
    records: Vec<EncodedRecord>,
    /// A small batch that deletes: it may use the reserve (see `DELETE_BATCH_ALLOWANCE`).
    pub(super) frees_space: bool,
}

struct EncodedRecord {
    offset: usize,
    header: RecordHeader,
    body_crc: Hasher,
    key: Vec<u8>,
    /// Range end, for range deletes.
    end: Vec<u8>,
}

impl EncodedBatch {
    pub(super) fn new(batch: &[Mutation]) -> EncodedBatch {
        let total: usize = batch.iter().map(Mutation::encoded_len).sum();
        let mut bytes = Vec::with_capacity(total);
        let mut records = Vec::with_capacity(batch.len());
        for m in batch {
            let (kind, key, value): (RecordKind, &[u8], Vec<u8>) = match m {
                Mutation::Put { key, value, .. } => (RecordKind::Put, key, value.clone()),
                Mutation::Delete { key, .. } => (RecordKind::Delete, key, Vec::new()),
                Mutation::DeletePrefix { prefix, .. } => {
                    (RecordKind::DeleteRange, prefix, prefix_successor(prefix))
                }
                Mutation::DeleteRange { start, end, .. } => {
                    (RecordKind::DeleteRange, start, end.clone())
                }
            };
            let header = RecordHeader {
                kind,
                key_len: key.len() as u16,
                group: m.group(),
                value_len: value.len() as u32,
                version: 0,
            };
            let offset = bytes.len();
            bytes.resize(offset + RECORD_HEADER_SIZE, 0);
            bytes.extend_from_slice(key);
            bytes.extend_from_slice(&value);
            let end = if kind == RecordKind::DeleteRange {
                value
            } else {
                Vec::new()
            };
            records.push(EncodedRecord {
                offset,
                header,
                body_crc: record_body_crc(key, &bytes[offset + RECORD_HEADER_SIZE + key.len()..]),
                key: key.to_vec(),
                end,
            });
        }
        EncodedBatch {
            bytes,
            records,
            frees_space: false,
        }
    }

    pub(super) fn updates(&self, lsn: u64, segment: u32, batch_offset: u32) -> Vec<Update> {
        self.records
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let location = Location {
                    segment,
                    offset: batch_offset + r.offset as u32,
                    len: r.header.total_len() as u32,
                };
                let version = version_of(lsn, i);
                match r.header.kind {
                    RecordKind::DeleteRange => Update::Range(RangeDelete {
                        start: r.key.clone(),
                        end: r.end.clone(),
                        version,
                        location,
                        group: r.header.group,
                    }),
                    kind => Update::Point {
                        key: r.key.clone(),
                        entry: Entry {
                            location,
                            version,
                            group: r.header.group,
                            tombstone: kind == RecordKind::Delete,
                        },
                    },
                }
            })
            .collect()
    }
}

impl log::Placeable for EncodedBatch {
    fn may_use_reserve(&self) -> bool {
        self.frees_space
    }

    fn len(&self) -> usize {
        self.bytes.len()
    }

    fn directory_len(&self) -> usize {
        self.records
            .iter()
            .map(|r| {
                format::directory_entry_len(
                    r.header.kind,
                    r.header.key_len as usize,
                    r.header.value_len as usize,
                )
            })
            .sum()
    }

    fn stamp_into(&self, lsn: u64, out: &mut [u8]) {
        out.copy_from_slice(&self.bytes);
        for (i, r) in self.records.iter().enumerate() {
            let header = RecordHeader {
                version: version_of(lsn, i),
                ..r.header
            };
            header.encode(&mut out[r.offset..], &r.body_crc);
        }
    }

    fn ranges(&self, lsn: u64, segment: u32, offset: u32) -> Vec<RangeDelete> {
        // Called under the log lock for every batch: most have no range delete, and building
        // their point updates only to drop them (a key copy each) lengthened the lock hold.
        if !self
            .records
            .iter()
            .any(|r| r.header.kind == RecordKind::DeleteRange)
        {
            return Vec::new();
        }
        self.updates(lsn, segment, offset)
            .into_iter()
            .filter_map(|u| match u {
                Update::Range(r) => Some(r),
                Update::Point { .. } => None,
            })
            .collect()
    }
}

/// Checks `batch` against the engine's limits before anything is written; returns the bytes
/// of its records.
pub(super) fn validate(batch: &[Mutation]) -> Result<usize> {
    if batch.is_empty() {
        return Err(EngineError::Limit("empty batch".into()));
    }
    if batch.len() > MAX_BATCH_RECORDS {
        return Err(EngineError::Limit(format!(
            "batch of {} records, at most {MAX_BATCH_RECORDS}",
            batch.len()
        )));
    }
    let mut total = 0;
    let mut directory = 0;
    for m in batch {
        let key = m.key();
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return Err(EngineError::Limit(format!(
                "key of {} bytes, must be 1 to {MAX_KEY_LEN}",
                key.len()
            )));
        }
        let value_len = m.value_len();
        if value_len > MAX_VALUE_LEN {
            return Err(EngineError::Limit(format!(
                "value of {value_len} bytes, at most {MAX_VALUE_LEN}"
            )));
        }
        if let Mutation::DeleteRange { start, end, .. } = m
            && !end.is_empty()
            && end <= start
        {
            return Err(EngineError::Limit("range delete with end <= start".into()));
        }
        total += m.encoded_len();
        let kind = match m {
            Mutation::Put { .. } => RecordKind::Put,
            Mutation::Delete { .. } => RecordKind::Delete,
            Mutation::DeletePrefix { .. } | Mutation::DeleteRange { .. } => RecordKind::DeleteRange,
        };
        directory += format::directory_entry_len(kind, key.len(), value_len);
    }
    if total + directory > MAX_BATCH_BYTES {
        return Err(EngineError::Limit(format!(
            "batch of {total} bytes and {directory} bytes of record directory, at most \
             {MAX_BATCH_BYTES} (one write buffer)"
        )));
    }
    Ok(total)
}
