//! Copies: what the separator and compaction passes share to move live records into the
//! group-owned segments of their groups. A segment's live records are the ones the index points
//! at exactly (sound for closed segments only: the write gate), tombstones with no older put
//! left on disk die instead of moving, puts go to the group their key belongs to now, and the
//! index moves to each copy by compare-and-set. The rules it keeps: a record overwritten
//! meanwhile stays where its newest version is (its copy is dead on arrival), and a pass writes
//! no copy of a segment unless the free segments can hold them all.

use std::cell::RefCell;
use std::collections::BTreeMap;

use super::compaction::{self, LiveRecord};
use super::concurrency::{AtomicU64, Ordering};
use super::format::{self, RECORD_HEADER_SIZE, RecordHeader, RecordKind};
use super::index::Location;
use super::{EngineError, Inner, Result, groups, scan, segments};

/// A key and its value, if it has one.
type KeyAndValue = (Vec<u8>, Option<Vec<u8>>);

impl Inner {
    /// Takes out of `live` (records of `victim` about to be moved) the tombstones that no
    /// segment other than `victim` holds an older put for, and removes them from the index:
    /// they die with `victim` (see `tombstones.rs`).
    pub(super) fn drop_dead_tombstones(&self, victim: u32, live: &mut Vec<(u32, LiveRecord)>) {
        if !live.iter().any(|(_, r)| r.kind != RecordKind::Put) {
            return;
        }
        let in_use: Vec<u32> = self
            .segments
            .snapshot()
            .iter()
            .enumerate()
            .filter(|(s, (info, _))| {
                *s as u32 != victim && info.state != segments::SegmentState::Free
            })
            .map(|(s, _)| s as u32)
            .collect();
        live.retain(|(_, r)| {
            let hash = match r.kind {
                RecordKind::Put => return true,
                RecordKind::Delete => self.put_notes.point_hash(&r.key),
                RecordKind::DeleteRange => {
                    let Some(h) = RecordHeader::decode(&r.bytes) else {
                        return true;
                    };
                    let end =
                        &r.bytes[RECORD_HEADER_SIZE + h.key_len as usize..][..h.value_len as usize];
                    match self.put_notes.range_hash(&r.key, end) {
                        Some(hash) => hash,
                        None => return true,
                    }
                }
            };
            if in_use
                .iter()
                .any(|&s| self.put_notes.may_hold_older(s, hash, r.version))
            {
                return true; // an older put is still on disk: the tombstone stays
            }
            let removed = match r.kind {
                RecordKind::DeleteRange => self.index.remove_range_if_at(&r.key, r.version, r.old),
                _ => self.index.remove_if_at(&r.key, r.old),
            };
            if removed {
                // The record stays on disk until its segment is freed, unindexed: a scan until
                // then takes it (see `SegmentManager::note_unindexed_records`).
                self.segments.note_unindexed_records([r.old.segment]);
                self.segments.sub_live(r.old.segment, r.old.len);
                self.tombstones_dropped.fetch_add(1, Ordering::Relaxed);
                return false;
            }
            // Superseded meanwhile: not live any more; copying it would be harmless but useless.
            false
        });
    }

    /// The live records of closed segment `segment` with their groups: the records the index
    /// points at exactly (sound because every record of a closed segment is in the index: the
    /// write gate). `image` is scratch space for the segment's bytes.
    pub(super) fn live_records_of(
        &self,
        segment: u32,
        image: &mut Vec<u8>,
    ) -> Result<Vec<(u32, LiveRecord)>> {
        let info = self.segments.info(segment);
        debug_assert_eq!(info.state, segments::SegmentState::Closed);
        let used = info.used as usize;
        image.resize(used, 0);
        self.segments.read(segment, 0, &mut image[..used])?;
        let hw = self.segments.generation_high_water();
        let mut live = Vec::new();
        // Past a damaged stretch too (recovery indexed what follows it); the records of the
        // stretch itself stay where they are, so such a segment is never emptied.
        let proof = self.segments.sync_table.proof(segment);
        let scan = scan::scan_segment(
            &image[..used],
            segment,
            hw,
            proof,
            self.segments.geometry.frees_clear_directories_from,
        );
        for (pos, header) in scan.valid {
            for (at, h) in scan::records_of(segment, pos, &header, image)? {
                let location = Location {
                    segment,
                    offset: at as u32,
                    len: h.total_len() as u32,
                };
                let key = LiveRecord::key_of(&image[at..], h.key_len as usize);
                let is_live = match h.kind {
                    RecordKind::DeleteRange => self.index.range_at(&key, h.version, location),
                    _ => self.index.points_at(&key, location),
                };
                if is_live {
                    live.push((
                        h.group,
                        LiveRecord {
                            bytes: image[at..at + h.total_len()].to_vec(),
                            kind: h.kind,
                            key,
                            version: h.version,
                            old: location,
                        },
                    ));
                }
            }
        }
        Ok(live)
    }

    /// Whether `segment` is still closed in the use `listed` describes (not freed, not reused
    /// since a pass listed it). Call with `reclaim_lock` held, so that it stays so.
    pub(super) fn still_as_listed(&self, segment: u32, listed: &segments::SegmentInfo) -> bool {
        let now = self.segments.info(segment);
        now.state == segments::SegmentState::Closed
            && now.kind == listed.kind
            && now.generation == listed.generation
    }

    /// Moves each put of `live` to the group its key belongs to now, as the owner of the keys
    /// says (`Engine::set_current_group`): the group and the record's header (its copy will
    /// say so). Tombstones keep their group. Returns whether any record moved.
    pub(super) fn regroup_copies(&self, live: &mut [(u32, LiveRecord)]) -> bool {
        let Some(current) = self.current_group.read().clone() else {
            return false;
        };
        // The owner reads a record to place a key (the filesystem reads a file's inode for each
        // of its pages), and consecutive records are mostly one file's: the last read is kept
        // for the next key that asks for the same record. A value read a moment earlier in the
        // same pass places a copy as a read at the pass's start would have: placement is only
        // where a copy goes, and a later pass moves it again if its owner changed meanwhile.
        let last_read: RefCell<Option<KeyAndValue>> = RefCell::new(None);
        let read = |key: &[u8]| {
            if let Some((k, v)) = &*last_read.borrow()
                && k == key
            {
                return v.clone();
            }
            let v = self.get(key).ok().flatten();
            *last_read.borrow_mut() = Some((key.to_vec(), v.clone()));
            v
        };
        let mut moved = false;
        for (group, record) in live.iter_mut() {
            if record.kind != RecordKind::Put {
                continue;
            }
            if let Some(now) = current(&record.key, &read).filter(|now| now != group) {
                format::set_record_group(&mut record.bytes, now);
                *group = now;
                moved = true;
            }
        }
        moved
    }

    /// Copies `live` records into the group-owned segments of their groups (oldest first, so
    /// that cold data ends up together), then moves the index to the copies by compare-and-set:
    /// a record overwritten meanwhile stays where its newest version is, and its copy is dead
    /// on arrival. `counter` gets the bytes written; see `GroupWriter::write` for the reserve.
    ///
    /// Returns `false`, having written nothing, if the free segments `claim` may take cannot
    /// hold the copies (one open segment counted for every group they go to), so that a pass
    /// leaves such a segment whole for a later one rather than run out in its middle. If a write still fails (a
    /// racing writer took the segments, an I/O error), the copies already written are noted
    /// and indexed all the same before the error is returned: they are on disk.
    pub(super) fn copy_to_groups(
        &self,
        live: Vec<(u32, LiveRecord)>,
        counter: &AtomicU64,
        claim: segments::Claim,
    ) -> Result<bool> {
        let mut live = live;
        self.regroup_copies(&mut live);
        let mut by_group: BTreeMap<u32, Vec<LiveRecord>> = Default::default();
        for (group, record) in live {
            by_group.entry(group).or_default().push(record);
        }
        for records in by_group.values_mut() {
            compaction::order_survivors(records);
        }
        let mut writer = self.group_writer.lock();
        let size = self.segments.segment_size();
        borrow_roomiest_open_segment(&writer, size, &mut by_group);
        let Some(by_group) = self.fit_copies(&mut writer, by_group, claim) else {
            return Ok(false);
        };
        for (group, records) in by_group {
            self.write_copies(&mut writer, group, &records, counter, claim)?;
        }
        Ok(true)
    }

    /// The copies `by_group` as they will be written, or `None` if the free segments `claim`
    /// may take cannot hold them (see [`Inner::copy_to_groups`]). Compaction, short of a
    /// segment for each group, sends them all to one group instead.
    fn fit_copies(
        &self,
        writer: &mut groups::GroupWriter,
        mut by_group: BTreeMap<u32, Vec<LiveRecord>>,
        claim: segments::Claim,
    ) -> Option<BTreeMap<u32, Vec<LiveRecord>>> {
        let size = self.segments.segment_size();
        let needed: usize = by_group
            .iter()
            .map(|(&group, records)| {
                let refs: Vec<&LiveRecord> = records.iter().collect();
                writer.segments_needed(size, group, &refs)
            })
            .sum();
        if needed > self.segments.free_for(claim) {
            if claim == segments::Claim::User {
                // The separator only sorts: under pressure it waits, and compaction empties
                // the mixed segments (below, one group at a time if need be).
                return None;
            }
            // Sorted by group, the copies do not fit: every group they go to may want a segment
            // of its own, and a store of many groups near its capacity has fewer free segments
            // than groups. One group then takes them all (each copy says so in its header, as a
            // regrouped copy does; `regroup_copies` sends puts home when they are next copied),
            // and the other groups' open segments close, so that their unused tails count
            // among the closed segments that compaction can empty. That keeps the store to the
            // open segments `user_capacity` counts on, whatever the number of groups.
            let target = writer.roomiest_of(size, by_group.keys().copied())?;
            let mut all: Vec<LiveRecord> = by_group.into_values().flatten().collect();
            for record in &mut all {
                format::set_record_group(&mut record.bytes, target);
            }
            compaction::order_survivors(&mut all);
            let refs: Vec<&LiveRecord> = all.iter().collect();
            if writer.segments_needed(size, target, &refs) > self.segments.free_for(claim) {
                return None;
            }
            writer.close_all_but(target, &self.segments);
            by_group = BTreeMap::from([(target, all)]);
        }
        Some(by_group)
    }

    /// Writes `records`' copies into `group`'s segments, notes and counts them, and moves the
    /// index to each copy by compare-and-set. Copies written before a failed write are noted
    /// and indexed all the same: they are on disk.
    fn write_copies(
        &self,
        writer: &mut groups::GroupWriter,
        group: u32,
        records: &[LiveRecord],
        counter: &AtomicU64,
        claim: segments::Claim,
    ) -> Result<()> {
        let refs: Vec<&LiveRecord> = records.iter().collect();
        let floor = self.log.durable_lsn();
        let (written, outcome) = writer.write(&self.segments, group, &refs, floor, claim);
        let wrote = !written.locations.is_empty();
        if wrote {
            self.test_step("copies written, index not yet moved");
        }
        // Every copy written is on disk now, including the ones about to lose their
        // compare-and-set (old versions in a new segment): note them all.
        self.segments.note_unindexed_records(
            (records.iter().zip(&written.locations)).map(|(r, _)| r.old.segment),
        );
        for (r, new) in records.iter().zip(&written.locations) {
            if r.kind == RecordKind::Put {
                self.put_notes.note_put(new.segment, &r.key, r.version);
            }
        }
        counter.fetch_add(written.device_bytes, Ordering::Relaxed);
        self.log
            .device_bytes_written
            .fetch_add(written.device_bytes, Ordering::Relaxed);
        let mut unindexed = Vec::new();
        for (r, new) in records.iter().zip(written.locations) {
            let moved = match r.kind {
                RecordKind::DeleteRange => self
                    .index
                    .compare_and_set_range(&r.key, r.version, r.old, new, group),
                _ => self.index.compare_and_set(&r.key, r.old, new, group),
            };
            if moved {
                self.segments.add_live(new.segment, new.len);
                self.segments.sub_live(r.old.segment, r.old.len);
            } else {
                // A copy the index never names, on disk until its segment is freed: a scan
                // weighs it (a tombstone of it outlives newer ones compaction drops).
                unindexed.push(new.segment);
            }
        }
        self.segments.note_unindexed_records(unindexed);
        if wrote {
            self.test_step("index moved to the copies");
        }
        match outcome {
            Ok(()) => Ok(()),
            Err(EngineError::NoSpace) => Err(EngineError::NoSpace),
            Err(e) => {
                self.log.fail(format!("writing copies: {e}"));
                Err(e)
            }
        }
    }
}

/// Sends the copies of groups without an open segment behind the roomiest open group-owned
/// segment when there are more such groups than open segments the store may still hold
/// (`groups::max_open_segments`). Opening one for each would close others: a pass over a
/// victim would free it only to take a segment for its copies, gaining nothing (a store with
/// more groups than open segments ran such passes forever at its reserve), and the separator
/// would leave a trail of nearly empty closed segments. Each copy names its new group in its
/// header, as a regrouped copy does (`regroup_copies` sends puts home when next copied).
fn borrow_roomiest_open_segment(
    writer: &groups::GroupWriter,
    segment_size: u32,
    by_group: &mut BTreeMap<u32, Vec<LiveRecord>>,
) {
    let homeless: Vec<u32> = by_group
        .keys()
        .copied()
        .filter(|&group| !writer.has_open(group))
        .collect();
    if homeless.len() <= writer.open_slots_left() {
        return;
    }
    // Behind the roomiest open segment, continuing in new segments of its group once it is
    // full, which packs them densely; with none open, in segments of their largest group.
    let bytes = |group: &u32| -> usize { by_group[group].iter().map(|r| r.bytes.len()).sum() };
    let Some(target) = writer
        .roomiest_open(segment_size)
        .or_else(|| homeless.iter().copied().max_by_key(|g| bytes(g)))
    else {
        return;
    };
    let mut members = homeless;
    if !members.contains(&target) {
        members.push(target);
    }
    let mut moved: Vec<LiveRecord> = members
        .iter()
        .flat_map(|group| by_group.remove(group).unwrap_or_default())
        .collect();
    compaction::order_survivors(&mut moved);
    for record in &mut moved {
        format::set_record_group(&mut record.bytes, target);
    }
    by_group.insert(target, moved);
}
