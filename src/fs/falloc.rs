//! `fallocate(2)` as ext4 gives it: allocation that reserves space, `FALLOC_FL_KEEP_SIZE`,
//! `FALLOC_FL_PUNCH_HOLE`, `FALLOC_FL_ZERO_RANGE`, `FALLOC_FL_COLLAPSE_RANGE` and
//! `FALLOC_FL_INSERT_RANGE`, with ext4's errno for every bad combination (as Linux 6.18's
//! `vfs_fallocate` and `ext4_fallocate` give them, checked on a kernel ext4 with 4 KiB blocks).
//!
//! How space is reserved: a page allocated over a hole is an unwritten page, a page record
//! with an empty value that holds the rest of a full page's space in the engine (see
//! `unwritten.rs`): a later write into the range adds no live bytes beyond what was promised,
//! and is taken even in a store that is otherwise full. An existing shorter page is padded
//! with zeros to full length instead (a page holds data or is unwritten, never both), and
//! `ZERO_RANGE` makes each whole page of its range unwritten (zeros, still allocated, as
//! ext4's unwritten extents). The reservation is then ordinary records: durable like any
//! write, counted again from the index at every mount, released by a write into the page, a
//! punch, truncate or unlink. `st_blocks` counts stored pages, so it shows the allocation.
//!
//! Allocation and zeroing check the whole range against the free space (from the index alone,
//! no I/O) before they write anything, then write in batches of [`PAGES_PER_BATCH`] pages,
//! taking the state lock per batch, so that a large fallocate does not hold up the other
//! operations. A concurrent writer can take the space between batches: then a later batch gets
//! ENOSPC and the pages allocated so far stay (ext4 also keeps what it allocated).
//!
//! Punching removes the whole pages with one range delete (bounded work, as a truncate) and
//! zeroes the partial pages at either end, which stay stored (ext4 keeps those blocks too).
//! Collapse and insert move every stored page after the offset to its new key (the data is
//! stored per page under `keys::chunk_key(ino, page)`): work in proportion to the data behind
//! the offset, under the state lock, in batches that are not atomic together (a crash in the
//! middle of a move larger than one batch leaves the file's pages partly moved, where ext4's
//! journal makes the extent shift atomic). The FUSE kernel module refuses both modes with
//! EOPNOTSUPP before they reach a daemon (`fuse_file_fallocate` accepts only `KEEP_SIZE`,
//! `PUNCH_HOLE` and `ZERO_RANGE`), so on a mount only the `Fs` API reaches them.

use std::collections::BTreeMap;

use super::unwritten::{full_page_record, unwritten_page_record};
use super::{
    BLOCK_SIZE, FileKind, Fs, FsError, FsResult, InGroup, MAX_FILE_SIZE, State, TOMBSTONE_GROUP,
    Timestamp, drop_privileges, keys,
};
use crate::engine::Mutation;
use keys::InodeRecord;

pub const FALLOC_FL_KEEP_SIZE: i32 = 0x01;
pub const FALLOC_FL_PUNCH_HOLE: i32 = 0x02;
pub const FALLOC_FL_COLLAPSE_RANGE: i32 = 0x08;
pub const FALLOC_FL_ZERO_RANGE: i32 = 0x10;
pub const FALLOC_FL_INSERT_RANGE: i32 = 0x20;
pub const FALLOC_FL_UNSHARE_RANGE: i32 = 0x40;
pub const FALLOC_FL_WRITE_ZEROES: i32 = 0x80;
/// The bits that name a mode (at most one of them may be set); `KEEP_SIZE` is a flag beside.
const FALLOC_FL_MODE_MASK: i32 = FALLOC_FL_PUNCH_HOLE
    | FALLOC_FL_COLLAPSE_RANGE
    | FALLOC_FL_ZERO_RANGE
    | FALLOC_FL_INSERT_RANGE
    | FALLOC_FL_UNSHARE_RANGE
    | FALLOC_FL_WRITE_ZEROES;

/// Pages written per batch (and per taking of the state lock) by allocation, zeroing and the
/// moves of collapse and insert: as a data write's batches.
pub const PAGES_PER_BATCH: u64 = super::WRITE_PAGES_PER_BATCH as u64;

/// Index entries read per step of a walk over a range's stored pages.
const WALK_CHUNK: usize = 4096;

const PAGE: u64 = keys::PAGE_SIZE;

/// What a mode asks, once its bits are checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Allocate { keep_size: bool },
    Zero { keep_size: bool },
    Punch,
    Collapse,
    Insert,
}

/// The mode's bits, as `vfs_fallocate` (Linux 6.18) then `ext4_fallocate` check them: modes
/// are exclusive; `PUNCH_HOLE` needs `KEEP_SIZE`; `COLLAPSE_RANGE` and `INSERT_RANGE` take no
/// flag; every refusal of a combination is EOPNOTSUPP (before 6.13 some were EINVAL).
/// `UNSHARE_RANGE` is ext4's EOPNOTSUPP (no shared extents); `WRITE_ZEROES` is too, as on an
/// ext4 whose device cannot write zeroes by unmapping (a loop device).
fn parse_mode(mode: i32) -> FsResult<Op> {
    let keep_size = mode & FALLOC_FL_KEEP_SIZE != 0;
    if mode & !(FALLOC_FL_MODE_MASK | FALLOC_FL_KEEP_SIZE) != 0 {
        return Err(FsError::NotSupported);
    }
    match mode & FALLOC_FL_MODE_MASK {
        0 => Ok(Op::Allocate { keep_size }),
        FALLOC_FL_ZERO_RANGE => Ok(Op::Zero { keep_size }),
        FALLOC_FL_PUNCH_HOLE if keep_size => Ok(Op::Punch),
        FALLOC_FL_COLLAPSE_RANGE if !keep_size => Ok(Op::Collapse),
        FALLOC_FL_INSERT_RANGE if !keep_size => Ok(Op::Insert),
        _ => Err(FsError::NotSupported),
    }
}

impl Fs {
    /// `fallocate` on `ino` (see the module's doc); `kill_suid_sgid` as for
    /// [`Fs::fallocate_as`].
    pub(super) fn fallocate_modes(
        &self,
        ino: u64,
        offset: u64,
        length: u64,
        mode: i32,
        kill_suid_sgid: Option<InGroup>,
    ) -> FsResult<()> {
        // `loff_t` arguments: negative ones arrive here as huge values.
        if length == 0 || offset > i64::MAX as u64 || length > i64::MAX as u64 {
            return Err(FsError::Invalid);
        }
        let op = parse_mode(mode)?;
        let end = offset.checked_add(length).ok_or(FsError::FileTooBig)?;
        if end > MAX_FILE_SIZE {
            return Err(FsError::FileTooBig);
        }
        match op {
            Op::Allocate { keep_size } => {
                self.fill(ino, offset, end, keep_size, false, kill_suid_sgid)
            }
            Op::Zero { keep_size } => self.fill(ino, offset, end, keep_size, true, kill_suid_sgid),
            Op::Punch => self.punch(ino, offset, end, kill_suid_sgid),
            Op::Collapse => self.collapse(ino, offset, length, kill_suid_sgid),
            Op::Insert => self.insert(ino, offset, length, kill_suid_sgid),
        }
    }

    /// The inode a fallocate works on: a regular file that still exists.
    fn falloc_target(&self, st: &State, ino: u64) -> FsResult<InodeRecord> {
        let rec = self.load(st, ino)?;
        match rec.kind {
            FileKind::Regular => {}
            FileKind::Directory => return Err(FsError::IsDir),
            _ => return Err(FsError::NotSupported),
        }
        if st.nodes.get(&ino).is_some_and(|n| n.gone) {
            return Err(FsError::NotFound);
        }
        Ok(rec)
    }

    /// What every fallocate does to the inode as ext4's `file_modified` does: the times, the
    /// set-user-ID and set-group-ID bits (for a caller without `CAP_FSETID`) and the
    /// capabilities go, even when the size stays.
    fn falloc_modified(
        &self,
        ino: u64,
        rec: &mut InodeRecord,
        kill_suid_sgid: Option<InGroup>,
        batch: &mut Vec<Mutation>,
    ) {
        if let Some(in_group) = kill_suid_sgid {
            drop_privileges(rec, in_group);
        }
        self.drop_capabilities(ino, batch);
        let now = Timestamp::now();
        rec.mtime = now;
        rec.ctime = now;
    }

    /// Writes `batch` with `rec` (the inode record as it is after it) as one engine batch, and
    /// updates the node table and the group map's bytes (`pages_before`: `rec.pages` before).
    fn falloc_commit(
        &self,
        st: &mut State,
        ino: u64,
        mut rec: InodeRecord,
        mut batch: Vec<Mutation>,
        pages_before: u64,
    ) -> FsResult<()> {
        rec.group = st.record_group(ino, &rec);
        batch.push(Mutation::put(rec.group, keys::inode_key(ino), rec.encode()));
        self.store(&batch)?;
        let parent = rec.parent;
        let pages_after = rec.pages;
        if let Some(node) = st.nodes.get_mut(&ino) {
            node.rec = rec;
        }
        if pages_after != pages_before {
            let delta = (pages_after as i64 - pages_before as i64) * PAGE as i64;
            {
                let mut groups = st.groups.write();
                if groups.tracks(ino) {
                    groups.add_homed_bytes(parent, delta);
                }
            }
            self.regroup(st, &[parent]);
        }
        Ok(())
    }

    /// Live bytes that allocating every page of `first..last` adds, promises included: a full
    /// page record per hole, the missing bytes of each shorter page (an unwritten page is
    /// charged in full already). From the index alone.
    fn fill_growth(&self, ino: u64, first: u64, last: u64) -> u64 {
        let full = full_page_record();
        let unwritten = unwritten_page_record();
        let end = keys::chunk_key(ino, last);
        let mut start = keys::chunk_key(ino, first);
        let mut stored = 0u64;
        let mut short = 0u64;
        loop {
            let lens = self.engine.record_lens(&start, &end, WALK_CHUNK);
            for (_, len) in &lens {
                stored += 1;
                if *len != unwritten {
                    short += full.saturating_sub(*len);
                }
            }
            match lens.last() {
                Some((key, _)) if lens.len() == WALK_CHUNK => {
                    start = key.clone();
                    start.push(0);
                }
                _ => break,
            }
        }
        (last - first - stored) * full + short
    }

    /// The stored length of each stored page in `page..stop`, from the index (no I/O).
    fn stored_page_lens(&self, ino: u64, page: u64, stop: u64) -> BTreeMap<u64, u64> {
        self.engine
            .record_lens(
                &keys::chunk_key(ino, page),
                &keys::chunk_key(ino, stop),
                (stop - page) as usize,
            )
            .into_iter()
            .filter_map(|(key, len)| Some((keys::chunk_page_index(ino, &key)?, len)))
            .collect()
    }

    /// The last stored page at or past `first`, found by a walk of the index (no I/O).
    fn last_stored_page(&self, ino: u64, first: u64) -> Option<u64> {
        let mut top = None;
        let mut start = keys::chunk_key(ino, first);
        let end = keys::chunk_end(ino);
        loop {
            let lens = self.engine.record_lens(&start, &end, WALK_CHUNK);
            let Some((key, _)) = lens.last() else { break };
            top = keys::chunk_page_index(ino, key);
            if lens.len() < WALK_CHUNK {
                break;
            }
            start = key.clone();
            start.push(0);
        }
        top
    }

    /// Mode 0 and `KEEP_SIZE` (`zero` false): every page the range touches is allocated:
    /// holes become unwritten pages, shorter pages are padded to full length, existing bytes
    /// kept. `ZERO_RANGE` (`zero` true): the same, with the range's bytes zeroed (its whole
    /// pages unwritten). Without `keep_size` the size grows to the range's end.
    fn fill(
        &self,
        ino: u64,
        offset: u64,
        end: u64,
        keep_size: bool,
        zero: bool,
        kill_suid_sgid: Option<InGroup>,
    ) -> FsResult<()> {
        let first = offset / PAGE;
        let last = end.div_ceil(PAGE);
        {
            // The whole range against the free space, before anything is written.
            let st = self.state.lock();
            self.falloc_target(&st, ino)?;
            if self.fill_growth(ino, first, last) > self.engine.available_bytes() {
                return Err(FsError::Engine(crate::engine::EngineError::NoSpace));
            }
        }
        let full = full_page_record();
        let unwritten = unwritten_page_record();
        let mut page = first;
        while page < last {
            let stop = last.min(page + PAGES_PER_BATCH);
            let mut st = self.state.lock();
            let mut rec = self.falloc_target(&st, ino)?;
            let pages_before = rec.pages;
            let size_before = rec.size;
            let group = st.record_group(ino, &rec);
            let mut batch = Vec::new();
            if page == first {
                self.falloc_modified(ino, &mut rec, kill_suid_sgid, &mut batch);
            }
            let stored = self.stored_page_lens(ino, page, stop);
            for p in page..stop {
                let pstart = p * PAGE;
                let from = (offset.max(pstart) - pstart) as usize;
                let to = (end.min(pstart + PAGE) - pstart) as usize;
                let whole = from == 0 && to == PAGE as usize;
                let len = stored.get(&p).copied();
                let value = match len {
                    None => Vec::new(),
                    // Allocated already, and zeros.
                    Some(l) if l == unwritten => continue,
                    Some(_) if zero && whole => Vec::new(),
                    Some(l) if !zero && l >= full => continue, // allocated already
                    Some(_) => {
                        let key = keys::chunk_key(ino, p);
                        let mut v = self.engine.get(&key)?.unwrap_or_default();
                        v.resize(PAGE as usize, 0);
                        if zero {
                            v[from..to].fill(0);
                        }
                        v
                    }
                };
                if len.is_none() {
                    rec.pages += 1;
                }
                batch.push(Mutation::put(group, keys::chunk_key(ino, p), value));
            }
            if !keep_size {
                rec.size = rec.size.max(end.min(stop * PAGE));
            }
            if page == first || !batch.is_empty() || rec.size != size_before {
                self.falloc_commit(&mut st, ino, rec, batch, pages_before)?;
            }
            page = stop;
        }
        Ok(())
    }

    /// `PUNCH_HOLE | KEEP_SIZE`: whole pages of the range are removed (one range delete), the
    /// bytes of the partial pages at its ends zeroed (those pages stay stored). As ext4, nothing
    /// past the page that holds the end of file is punched (pages `KEEP_SIZE` allocated there
    /// stay), and a range that starts at or past the end of file changes no data.
    fn punch(
        &self,
        ino: u64,
        offset: u64,
        end: u64,
        kill_suid_sgid: Option<InGroup>,
    ) -> FsResult<()> {
        let mut st = self.state.lock();
        let mut rec = self.falloc_target(&st, ino)?;
        let pages_before = rec.pages;
        let group = st.record_group(ino, &rec);
        let mut batch = Vec::new();
        self.falloc_modified(ino, &mut rec, kill_suid_sgid, &mut batch);
        if offset < rec.size {
            // A punch reaching past the end of file ends at the end of the file's last page,
            // as ext4's does: the tail of that page goes with it, and pages allocated past it
            // with KEEP_SIZE stay.
            let end = if end > rec.size {
                rec.size.next_multiple_of(PAGE)
            } else {
                end
            };
            let first_whole = offset.div_ceil(PAGE);
            let last_whole = end / PAGE;
            if first_whole < last_whole {
                let start = keys::chunk_key(ino, first_whole);
                let stop = keys::chunk_key(ino, last_whole);
                let removed = self.engine.count_keys(&start, &stop);
                rec.pages = rec.pages.saturating_sub(removed);
                batch.push(Mutation::DeleteRange {
                    group: TOMBSTONE_GROUP,
                    start,
                    end: stop,
                });
            }
            let mut partial = Vec::new();
            if !offset.is_multiple_of(PAGE) {
                partial.push(offset / PAGE);
            }
            if !end.is_multiple_of(PAGE) && partial.last() != Some(&(end / PAGE)) {
                partial.push(end / PAGE);
            }
            for p in partial {
                let pstart = p * PAGE;
                let key = keys::chunk_key(ino, p);
                let Some(mut v) = self.engine.get(&key)? else {
                    continue;
                };
                let from = (offset.max(pstart) - pstart) as usize;
                let to = ((end.min(pstart + PAGE) - pstart) as usize).min(v.len());
                if from < to {
                    v[from..to].fill(0);
                    batch.push(Mutation::put(group, key, v));
                }
            }
        }
        self.falloc_commit(&mut st, ino, rec, batch, pages_before)
    }

    /// ext4's checks of a collapse or insert that the mode's bits allowed: offset and length
    /// whole blocks, else EINVAL.
    fn check_shift_alignment(offset: u64, length: u64) -> FsResult<()> {
        let block = u64::from(BLOCK_SIZE);
        if !offset.is_multiple_of(block) || !length.is_multiple_of(block) {
            return Err(FsError::Invalid);
        }
        Ok(())
    }

    /// `COLLAPSE_RANGE`: the pages of the range go, every stored page after it moves down by
    /// its length, and the size shrinks by it. A range reaching the end of file is EINVAL.
    fn collapse(
        &self,
        ino: u64,
        offset: u64,
        length: u64,
        kill_suid_sgid: Option<InGroup>,
    ) -> FsResult<()> {
        Self::check_shift_alignment(offset, length)?;
        let mut st = self.state.lock();
        let mut rec = self.falloc_target(&st, ino)?;
        if offset + length >= rec.size {
            return Err(FsError::Invalid);
        }
        let (first, n) = (offset / PAGE, length / PAGE);
        let group = st.record_group(ino, &rec);
        let pages_before = rec.pages;
        let mut batch = Vec::new();
        self.falloc_modified(ino, &mut rec, kill_suid_sgid, &mut batch);
        let start = keys::chunk_key(ino, first);
        let stop = keys::chunk_key(ino, first + n);
        rec.pages = rec
            .pages
            .saturating_sub(self.engine.count_keys(&start, &stop));
        batch.push(Mutation::DeleteRange {
            group: TOMBSTONE_GROUP,
            start,
            end: stop,
        });
        // Upwards: a page's new key is in the removed range or was moved away already.
        let mut from = keys::chunk_key(ino, first + n);
        let end = keys::chunk_end(ino);
        loop {
            let pages = self
                .engine
                .scan_range(&from, &end, PAGES_PER_BATCH as usize)?;
            let Some((last_key, _)) = pages.last() else {
                break;
            };
            from = last_key.clone();
            from.push(0);
            let full = pages.len() == PAGES_PER_BATCH as usize;
            for (key, value) in pages {
                let q = keys::chunk_page_index(ino, &key)
                    .ok_or_else(|| super::corrupt("page key", &key))?;
                batch.push(Mutation::put(group, keys::chunk_key(ino, q - n), value));
                batch.push(Mutation::delete(TOMBSTONE_GROUP, key));
            }
            if !full {
                break;
            }
            // The inode record goes with the last batch, which carries the new size.
            self.store(&std::mem::take(&mut batch))?;
        }
        rec.size -= length;
        self.falloc_commit(&mut st, ino, rec, batch, pages_before)
    }

    /// `INSERT_RANGE`: every stored page from the offset on moves up by the length, leaving a
    /// hole, and the size grows by it. An offset at or past the end of file is EINVAL; a size
    /// past the largest file, EFBIG.
    fn insert(
        &self,
        ino: u64,
        offset: u64,
        length: u64,
        kill_suid_sgid: Option<InGroup>,
    ) -> FsResult<()> {
        Self::check_shift_alignment(offset, length)?;
        let mut st = self.state.lock();
        let mut rec = self.falloc_target(&st, ino)?;
        if length > MAX_FILE_SIZE - rec.size.min(MAX_FILE_SIZE) {
            return Err(FsError::FileTooBig);
        }
        if offset >= rec.size {
            return Err(FsError::Invalid);
        }
        let (first, n) = (offset / PAGE, length / PAGE);
        let group = st.record_group(ino, &rec);
        let pages_before = rec.pages;
        let mut batch = Vec::new();
        self.falloc_modified(ino, &mut rec, kill_suid_sgid, &mut batch);
        // Downwards, from the last stored page: a page's new key is free or was moved away
        // already. The last page is found by a walk of the index (no I/O); then windows of
        // page numbers are read from the top, halved while one holds more than a batch,
        // doubled while they come back empty (a sparse file's holes cost few steps).
        if let Some(top) = self.last_stored_page(ino, first) {
            let mut hi = top + 1;
            let mut window = PAGES_PER_BATCH;
            while hi > first {
                let lo = hi.saturating_sub(window).max(first);
                let (lo_key, hi_key) = (keys::chunk_key(ino, lo), keys::chunk_key(ino, hi));
                let count = self
                    .engine
                    .record_lens(&lo_key, &hi_key, PAGES_PER_BATCH as usize + 1)
                    .len();
                if count > PAGES_PER_BATCH as usize && window > 1 {
                    window /= 2;
                    continue;
                }
                let pages = self.engine.scan_range(&lo_key, &hi_key, count)?;
                for (key, value) in pages.into_iter().rev() {
                    let q = keys::chunk_page_index(ino, &key)
                        .ok_or_else(|| super::corrupt("page key", &key))?;
                    batch.push(Mutation::put(group, keys::chunk_key(ino, q + n), value));
                    batch.push(Mutation::delete(TOMBSTONE_GROUP, key));
                }
                if count == 0 {
                    window = window.saturating_mul(2);
                } else if lo > first {
                    // The last window's pages go with the inode record and its new size.
                    self.store(&std::mem::take(&mut batch))?;
                }
                hi = lo;
            }
        }
        rec.size += length;
        self.falloc_commit(&mut st, ino, rec, batch, pages_before)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_as_linux_checks_them() {
        let k = FALLOC_FL_KEEP_SIZE;
        let ok = |mode| parse_mode(mode).ok();
        assert_eq!(ok(0), Some(Op::Allocate { keep_size: false }));
        assert_eq!(ok(k), Some(Op::Allocate { keep_size: true }));
        assert_eq!(ok(FALLOC_FL_PUNCH_HOLE | k), Some(Op::Punch));
        assert_eq!(
            ok(FALLOC_FL_ZERO_RANGE),
            Some(Op::Zero { keep_size: false })
        );
        assert_eq!(
            ok(FALLOC_FL_ZERO_RANGE | k),
            Some(Op::Zero { keep_size: true })
        );
        assert_eq!(ok(FALLOC_FL_COLLAPSE_RANGE), Some(Op::Collapse));
        assert_eq!(ok(FALLOC_FL_INSERT_RANGE), Some(Op::Insert));
        for bad in [
            FALLOC_FL_PUNCH_HOLE,
            FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE | k,
            FALLOC_FL_COLLAPSE_RANGE | k,
            FALLOC_FL_INSERT_RANGE | k,
            FALLOC_FL_COLLAPSE_RANGE | FALLOC_FL_INSERT_RANGE,
            FALLOC_FL_UNSHARE_RANGE,
            FALLOC_FL_WRITE_ZEROES,
            0x04,
            0x100,
        ] {
            assert!(
                matches!(parse_mode(bad), Err(FsError::NotSupported)),
                "mode {bad:#x}"
            );
        }
    }
}
