//! The segment sync table: a durable proof of how far each group-owned segment's current use
//! was synced, so that recovery and fsck can tell damage inside a segment of copies from a write
//! torn by a power cut. Closed segments of the log (mixed) have entries too: see
//! "Closed log segments" below.
//!
//! A failing stretch of a segment of copies looks the same whether a power cut tore it (its
//! sources are then still in place, and dropping it is right) or the media damaged it after it
//! was synced (its sources may be freed, and dropping it silently serves an older version of its
//! keys, or none). Nothing inside the segment tells them apart; this table does. Its entry for a
//! segment says: every byte of the use of generation `generation` below `synced_end` was synced.
//! Recovery (`scan::scan_segment`) and fsck (`check.rs`) then treat a failing stretch below
//! `synced_end` as damage: its records are indexed where they are (a damaged one fails every
//! read with EIO, an intact one is served), as for proven damage in the log.
//!
//! # Invariant
//!
//! An entry is written only after the copies it covers were synced, and the sources of copies
//! are freed (their first sector zeroed) only after the entries covering the copies are synced.
//! The engine's syncs (`Inner::sync`, the reclaimer's) go through [`SyncTable::sync`], which
//! learns which copies each made durable. `Inner::reclaim_dead_segments`, the only place that
//! frees segments, writes the entries of copies already known synced before its marker sync
//! (which makes them durable), then those of copies that this very sync made durable, if any,
//! followed by one more sync, and only then zeroes anything. Cost: that one more sync, when
//! copies were written since the last storage sync (a reclamation right after a compaction pass
//! or a separator run while no user batch needed syncing); otherwise none.
//!
//! # Closed log segments
//!
//! The last buffers of a closed mixed segment have no later buffer of the segment whose durable
//! floor vouches for them. When the log closes a segment (every buffer's write returned), it is
//! noted ([`SyncTable::note_log_segment`], with its generation and used bytes); a storage sync
//! through [`SyncTable::sync`] that began after the note makes it known synced, and
//! `Inner::sync`, after its log sync returned, writes those entries
//! ([`SyncTable::take_synced_log`]) and a marker (its durable floor covers the segments'
//! batches), and syncs once more. Kept apart from the copies' extents:
//! the reclaimer alone writes those, since it must sync them before freeing sources. Recovery
//! takes a failing last stretch of such a segment below its entry's end only if every record's
//! LSN is within the durable floor (see `recovery::recover`); else it drops and zeroes it.
//!
//! # File `synced.tbl`
//!
//! One 16-byte entry per segment, checked by its own CRC (byte layout in
//! `format/sync_table.rs`).
//!
//! An entry whose CRC fails (never written: zeros; torn; damaged; written for another slot) is
//! no entry, and proves nothing: recovery then does what it did without the table. An entry of
//! another generation than the segment's current use (the segment was freed and reused) is
//! ignored. Generations are never handed out twice (see `segments.rs`), so an entry can only be
//! about the use it names. Writes and syncs go through [`Storage`] like the segments' own, so
//! crash simulation (`SimStorage`) and the I/O log of `storage/io_log.rs` cover them.

use std::collections::BTreeMap;

use super::concurrency::{Arc, Mutex};

use super::api::Result;
use super::storage::{SECTOR_SIZE, Storage};

pub use super::format::sync_table::{
    ENTRY_SIZE, Proof, SYNC_TABLE_FILE, SYNC_TABLE_NAME, decode_entry, encode_entry, table_len,
};

const ENTRIES_PER_SECTOR: usize = SECTOR_SIZE / ENTRY_SIZE;

/// Every segment's entry as the table on `storage` holds it (`None`: no valid entry, or no
/// table at all: a store written before the table existed).
pub fn read(storage: &dyn Storage, segment_count: u32) -> Result<Vec<Option<Proof>>> {
    let len = storage.file_len(SYNC_TABLE_FILE)?;
    let want = segment_count as usize * ENTRY_SIZE;
    let mut bytes = vec![0u8; want];
    let have = (len as usize).min(want);
    if have > 0 {
        storage.read_at(SYNC_TABLE_FILE, 0, &mut bytes[..have])?;
    }
    Ok((0..segment_count)
        .map(|s| decode_entry(s, &bytes[s as usize * ENTRY_SIZE..][..ENTRY_SIZE]))
        .collect())
}

/// The table of an open store: what it holds, and the copies written since it was last
/// brought up to date.
pub struct SyncTable {
    storage: Arc<dyn Storage>,
    /// False if the table could not be allocated: nothing is recorded (recovery then works as
    /// without a table).
    enabled: bool,
    /// Every entry as written to the table (synced, or latched into a failure).
    entries: Mutex<Vec<Option<Proof>>>,
    /// Copies written since their segment's entry was last written.
    pending: Mutex<Pending>,
}

/// Extents of copies not yet in the table, per segment: (generation, end).
#[derive(Default)]
struct Pending {
    /// Written, not known synced.
    written: BTreeMap<u32, Proof>,
    /// Known synced: a storage sync through [`SyncTable::sync`] began after they were written.
    synced: BTreeMap<u32, Proof>,
    /// Closed mixed (log) segments, whole: written, not known synced. Kept apart from the
    /// copies, whose entries only the reclaimer writes (it frees their sources after syncing
    /// them); these are written by `Inner::sync` (see [`SyncTable::take_synced_log`]).
    log_written: BTreeMap<u32, Proof>,
    /// Closed mixed segments known synced.
    log_synced: BTreeMap<u32, Proof>,
}

/// Merges extent `p` of `segment` into `map`: the furthest end of the newest use.
fn merge(map: &mut BTreeMap<u32, Proof>, segment: u32, p: Proof) {
    let e = map.entry(segment).or_insert(p);
    if e.generation < p.generation {
        *e = p;
    } else if e.generation == p.generation {
        e.synced_end = e.synced_end.max(p.synced_end);
    }
}

impl SyncTable {
    /// Opens the table of a store of `segment_count` segments, allocating its file if it is
    /// short (a new store, or one written before the table existed).
    pub fn open(storage: Arc<dyn Storage>, segment_count: u32) -> Result<SyncTable> {
        let len = table_len(segment_count);
        let enabled = match storage.file_len(SYNC_TABLE_FILE) {
            Ok(have) if have >= len => true,
            _ => match storage.allocate(SYNC_TABLE_FILE, len) {
                Ok(()) => true,
                Err(e) => {
                    ::log::warn!(
                        "cannot allocate the segment sync table ({e}): damage to copies will \
                         not be told from torn writes"
                    );
                    false
                }
            },
        };
        let entries = if enabled {
            read(&*storage, segment_count)?
        } else {
            vec![None; segment_count as usize]
        };
        Ok(SyncTable {
            storage,
            enabled,
            entries: Mutex::new(entries),
            pending: Mutex::new(Pending::default()),
        })
    }

    /// The entry of `segment` as written (see [`read`]).
    pub fn proof(&self, segment: u32) -> Option<Proof> {
        self.entries.lock()[segment as usize]
    }

    /// Copies were written into `segment` (use `generation`) up to `end`: its entry must cover
    /// them before their sources are freed. Call once the write has returned.
    pub fn note_copies(&self, segment: u32, generation: u64, end: u32) {
        let p = Proof {
            generation,
            synced_end: end,
        };
        merge(&mut self.pending.lock().written, segment, p);
    }

    /// Mixed (log) segment `segment` (use `generation`) closed with `end` bytes written, every
    /// buffer's write returned: once a later sync is known to have made them durable, its
    /// entry may be written (so that damage in the last buffers of a closed log segment, which
    /// no later buffer of the segment vouches for, is told from a torn tail).
    pub fn note_log_segment(&self, segment: u32, generation: u64, end: u32) {
        if end == 0 {
            return;
        }
        let p = Proof {
            generation,
            synced_end: end,
        };
        merge(&mut self.pending.lock().log_written, segment, p);
    }

    /// Runs `storage_sync` (a sync of the whole storage); once it succeeds, the copies noted
    /// before it began are known synced (see [`SyncTable::take_synced`]). The engine's syncs
    /// (`Inner::sync`, the reclaimer's marker sync) go through here, so that a reclamation
    /// seldom needs a sync of its own to make its copies durable before writing their entries.
    pub fn sync(&self, storage_sync: impl FnOnce() -> std::io::Result<()>) -> std::io::Result<()> {
        let (before, log_before) = {
            let pending = self.pending.lock();
            (pending.written.clone(), pending.log_written.clone())
        };
        storage_sync()?;
        let mut pending = self.pending.lock();
        for (segment, p) in log_before {
            merge(&mut pending.log_synced, segment, p);
            if pending
                .log_written
                .get(&segment)
                .is_some_and(|w| w.generation == p.generation && w.synced_end <= p.synced_end)
            {
                pending.log_written.remove(&segment);
            }
        }
        for (segment, p) in before {
            merge(&mut pending.synced, segment, p);
            if pending
                .written
                .get(&segment)
                .is_some_and(|w| w.generation == p.generation && w.synced_end <= p.synced_end)
            {
                pending.written.remove(&segment);
            }
        }
        Ok(())
    }

    /// The entries for copies known synced, taken out: the caller writes them with
    /// [`SyncTable::record`], and frees the copies' sources only after a later sync.
    pub fn take_synced(&self) -> Vec<(u32, Proof)> {
        std::mem::take(&mut self.pending.lock().synced)
            .into_iter()
            .collect()
    }

    /// The entries for closed mixed segments known synced, taken out: the caller writes them
    /// with [`SyncTable::record`] (they prove those bytes synced as soon as they are on disk,
    /// whether or not that write is synced: nothing waits for them).
    pub fn take_synced_log(&self) -> Vec<(u32, Proof)> {
        std::mem::take(&mut self.pending.lock().log_synced)
            .into_iter()
            .collect()
    }

    /// Writes the entries `items` (whose copies the caller has synced) into the table, in whole
    /// sectors. Not durable until the caller syncs again. An entry never moves back: an
    /// earlier, longer proof of the same use stays (recovery may have closed a segment at a
    /// damaged stretch below it), and so does the proof of a later use.
    pub fn record(&self, items: &[(u32, Proof)]) -> Result<()> {
        if !self.enabled || items.is_empty() {
            return Ok(());
        }
        let mut entries = self.entries.lock();
        let mut sectors: Vec<usize> = Vec::new();
        for &(segment, proof) in items {
            let e = &mut entries[segment as usize];
            // Never back to an earlier use: a closed log segment's entry can be taken after the
            // segment was freed and reused (and its new use recorded).
            let grows = e.is_none_or(|e| {
                e.generation < proof.generation
                    || (e.generation == proof.generation && e.synced_end < proof.synced_end)
            });
            if grows {
                *e = Some(proof);
                sectors.push(segment as usize / ENTRIES_PER_SECTOR);
            }
        }
        sectors.sort_unstable();
        sectors.dedup();
        // Runs of consecutive sectors in one write each.
        let mut i = 0;
        while i < sectors.len() {
            let mut j = i + 1;
            while j < sectors.len() && sectors[j] == sectors[j - 1] + 1 {
                j += 1;
            }
            let first = sectors[i] * ENTRIES_PER_SECTOR;
            let mut buf = vec![0u8; (j - i) * SECTOR_SIZE];
            for (k, chunk) in buf.chunks_mut(ENTRY_SIZE).enumerate() {
                let segment = first + k;
                if let Some(Some(p)) = entries.get(segment) {
                    chunk.copy_from_slice(&encode_entry(segment as u32, *p));
                }
            }
            self.storage
                .write_at(SYNC_TABLE_FILE, (sectors[i] * SECTOR_SIZE) as u64, &buf)?;
            i = j;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::storage::{PowerCut, SimStorage};

    #[test]
    fn recorded_entries_survive_only_once_synced_and_never_shrink() {
        let storage = SimStorage::new();
        let t = SyncTable::open(storage.clone(), 100).unwrap();
        assert!(read(&*storage, 100).unwrap().iter().all(Option::is_none));
        t.note_copies(40, 9, 8192);
        t.note_copies(40, 9, 16384);
        t.note_copies(3, 4, 4096);
        assert!(t.take_synced().is_empty(), "nothing synced yet");
        t.sync(|| storage.sync()).unwrap();
        t.note_copies(7, 5, 4096); // after the sync began: not known synced
        let synced = t.take_synced();
        assert_eq!(synced.len(), 2);
        t.record(&synced).unwrap();
        assert!(t.take_synced().is_empty());
        let lost = storage.crash(PowerCut::DropAllUnsynced);
        assert!(read(&*lost, 100).unwrap().iter().all(Option::is_none));
        storage.sync().unwrap();
        let back = read(&*storage, 100).unwrap();
        assert_eq!(
            back[40],
            Some(Proof {
                generation: 9,
                synced_end: 16384
            })
        );
        assert_eq!(back[3].unwrap().synced_end, 4096);
        assert_eq!(back[7], None);
        t.sync(|| storage.sync()).unwrap();
        assert_eq!(t.take_synced().len(), 1, "segment 7's copies, synced now");
        // A shorter proof of the same use does not replace a longer one; a new use does.
        let t = SyncTable::open(storage.clone(), 100).unwrap();
        t.record(&[(
            40,
            Proof {
                generation: 9,
                synced_end: 4096,
            },
        )])
        .unwrap();
        t.record(&[(
            3,
            Proof {
                generation: 12,
                synced_end: 4096,
            },
        )])
        .unwrap();
        storage.sync().unwrap();
        let back = read(&*storage, 100).unwrap();
        assert_eq!(back[40].unwrap().synced_end, 16384);
        assert_eq!(back[3].unwrap().generation, 12);
        // A closed log segment's entry taken after the segment was reused: the later use's
        // proof stays.
        t.note_log_segment(3, 10, 8192);
        t.sync(|| storage.sync()).unwrap();
        let late = t.take_synced_log();
        assert_eq!(late.len(), 1);
        assert!(
            t.take_synced().is_empty(),
            "log segments are kept apart from copies"
        );
        t.record(&late).unwrap();
        storage.sync().unwrap();
        assert_eq!(read(&*storage, 100).unwrap()[3].unwrap().generation, 12);
    }
}
