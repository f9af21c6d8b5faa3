//! File data: open and release, read, write, truncation and fallocate of a regular file's 4 KiB
//! pages, and the atime that reads change. A write larger than one engine batch is split into
//! batches that each carry the inode record with the size reached so far (not atomic across a
//! crash, as in POSIX); a truncation deletes pages by range, never page by page, so its work
//! follows the pages the file stores, not its size.

use std::sync::atomic::Ordering;

use super::keys::{InodeRecord, Timestamp};
use super::{
    FileKind, Fs, FsError, FsResult, InGroup, MAX_FILE_SIZE, State, TOMBSTONE_GROUP, Txn,
    WRITE_PAGES_PER_BATCH, atime, corrupt, drop_privileges, inode_flags, keys,
};
use crate::engine::{GroupId, Mutation};

/// The xattr that holds a file's capabilities: dropped by writes, truncation and chown.
const CAPABILITY_XATTR: &[u8] = b"security.capability";

thread_local! {
    /// The records a file read scans, kept from one read to the next of the thread: reads of
    /// up to a MiB would otherwise each map and fault in fresh pages.
    static SCAN_SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Fs {
    /// Adds to `txn` what changes the size of regular file `ino` from `rec.size` to `size`, and
    /// updates `rec` (size, page count). A shortened last page is rewritten into `group`.
    pub(super) fn truncate_mutations(
        &self,
        ino: u64,
        rec: &mut InodeRecord,
        size: u64,
        group: GroupId,
        txn: &mut Txn,
    ) -> FsResult<()> {
        let g = TOMBSTONE_GROUP;
        let keep_pages = size.div_ceil(keys::PAGE_SIZE);
        // A truncate to the size the file has still frees what fallocate's KEEP_SIZE stored past
        // it, as ext4's does (its truncate frees every block past the new size).
        let stored_past_the_end = || {
            rec.pages > keep_pages
                || (rec.pages > 0
                    && self
                        .engine
                        .count_keys(&keys::chunk_key(ino, keep_pages), &keys::chunk_end(ino))
                        > 0)
        };
        if size < rec.size || (size == rec.size && stored_past_the_end()) {
            // Count the stored pages that go away by walking the index over the ones there
            // (no I/O), as the range delete itself will: asking page by page cost a lookup per
            // 4 KiB of the file's size, holes included, so that "write at a growing offset,
            // truncate to 0" was quadratic. To 0, nothing needs counting.
            let removed = if keep_pages == 0 {
                rec.pages
            } else {
                self.engine
                    .count_keys(&keys::chunk_key(ino, keep_pages), &keys::chunk_end(ino))
            };
            rec.pages = rec.pages.saturating_sub(removed).min(keep_pages);
            if size == 0 {
                txn.pre
                    .push(Mutation::delete_prefix(g, keys::chunk_prefix(ino)));
            } else {
                txn.pre.push(Mutation::DeleteRange {
                    group: g,
                    start: keys::chunk_key(ino, keep_pages),
                    end: keys::chunk_end(ino),
                });
                // The new last page, if partial, is rewritten shortened so that the bytes past
                // the new size read as zeros if the file grows again.
                let tail = (size % keys::PAGE_SIZE) as usize;
                if tail != 0 {
                    let key = keys::chunk_key(ino, size / keys::PAGE_SIZE);
                    if let Some(mut page) = self.engine.get(&key)?
                        && page.len() > tail
                    {
                        page.truncate(tail);
                        txn.post.push(Mutation::put(group, key, page));
                    }
                }
            }
        }
        rec.size = size;
        Ok(())
    }

    /// Sets the atime of `ino` (whose record is `rec`) to now if the mount's atime option says
    /// this access changes it ([`atime::needs_update`]): only then is a record written, so
    /// repeated reads under `relatime` write nothing. A failure to store it fails no access
    /// (as on Linux).
    pub(super) fn touch_atime(&self, st: &mut State, ino: u64, rec: &InodeRecord) {
        let now = Timestamp::now();
        if !atime::needs_update(self.atime, rec, now) || st.nodes.get(&ino).is_some_and(|n| n.gone)
        {
            return;
        }
        let mut txn = Txn::default();
        txn.loaded.insert(ino, rec.clone());
        let mut new = rec.clone();
        new.atime = now;
        txn.inodes.insert(ino, new);
        if let Err(e) = self.commit(st, txn) {
            log::warn!("atime of inode {ino} not stored: {e}");
        }
    }

    /// Whether a read of `ino` now would change its atime. The kernel's page cache answers
    /// reads without asking us, so the adapter opens such a file without keeping the cache:
    /// the next read then reaches [`Fs::read`], which sets the atime.
    pub fn read_would_touch_atime(&self, ino: u64) -> bool {
        let st = self.state.lock();
        self.load(&st, ino)
            .is_ok_and(|rec| atime::needs_update(self.atime, &rec, Timestamp::now()))
    }

    /// Opens `ino`; returns a file handle.
    pub fn open(&self, ino: u64) -> FsResult<u64> {
        let mut st = self.state.lock();
        let rec = self.load(&st, ino)?;
        if st.nodes.get(&ino).is_some_and(|n| n.gone) {
            return Err(FsError::NotFound);
        }
        Self::remember(&mut st, ino, &rec, 0, 1);
        Ok(self.next_fh.fetch_add(1, Ordering::Relaxed))
    }

    /// Closes a handle of `ino`; the last close of an unlinked file purges it.
    pub fn release(&self, ino: u64, _fh: u64) -> FsResult<()> {
        let mut st = self.state.lock();
        match st.nodes.get_mut(&ino) {
            Some(node) if node.opens > 0 => node.opens -= 1,
            _ => return Err(FsError::BadHandle),
        }
        self.settle(&mut st, ino)
    }

    /// Reads up to `size` bytes at `offset`; holes read as zeros; short at end of file.
    pub fn read(&self, ino: u64, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        let mut out = Vec::new();
        self.read_into(ino, offset, size, &mut out)?;
        Ok(out)
    }

    /// [`Fs::read`] into `out` (its contents replaced), which a caller that reads often keeps:
    /// a sequential read's requests then reuse one buffer instead of each mapping fresh pages.
    pub fn read_into(&self, ino: u64, offset: u64, size: u32, out: &mut Vec<u8>) -> FsResult<()> {
        out.clear();
        let file_size = {
            let mut st = self.state.lock();
            let rec = self.load(&st, ino)?;
            if rec.kind == FileKind::Directory {
                return Err(FsError::IsDir);
            }
            if size > 0 {
                self.touch_atime(&mut st, ino, &rec);
            }
            rec.size
        };
        if offset >= file_size || size == 0 {
            return Ok(());
        }
        let end = file_size.min(offset.saturating_add(u64::from(size)));
        let first = offset / keys::PAGE_SIZE;
        let last = (end - 1) / keys::PAGE_SIZE;
        let mut bad_key = None;
        SCAN_SCRATCH.with_borrow_mut(|scratch| {
            self.engine.scan_range_with(
                &keys::chunk_key(ino, first),
                &keys::chunk_key(ino, last + 1),
                (last - first + 1) as usize,
                scratch,
                |key, value| {
                    let Some(page) = keys::chunk_page_index(ino, key) else {
                        bad_key.get_or_insert_with(|| key.to_vec());
                        return;
                    };
                    let pstart = page * keys::PAGE_SIZE;
                    let from = pstart.max(offset);
                    let to = (pstart + value.len() as u64).min(end);
                    if from < to {
                        let bytes = &value[(from - pstart) as usize..(to - pstart) as usize];
                        fill_at(out, (from - offset) as usize, bytes);
                    }
                },
            )
        })?;
        if let Some(key) = bad_key {
            out.clear();
            return Err(corrupt("page key", &key));
        }
        out.resize((end - offset) as usize, 0); // a hole at the end reads as zeros
        Ok(())
    }

    /// Writes `data` at `offset`. Pages are written in batches of at most one engine batch; if a
    /// later batch fails, the bytes written so far are reported (a short write).
    pub fn write(&self, ino: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
        self.write_as(ino, offset, data, None)
    }

    /// [`Fs::write`], which also drops the file's set-user-ID and set-group-ID bits if
    /// `kill_suid_sgid` is given (the kernel asks for it when the writer lacks `CAP_FSETID`,
    /// under `FUSE_HANDLE_KILLPRIV_V2`), naming the writer's groups (see [`drop_privileges`]).
    /// Any write drops the file's capabilities (`security.capability`), as ext4 does.
    pub fn write_as(
        &self,
        ino: u64,
        offset: u64,
        data: &[u8],
        kill_suid_sgid: Option<InGroup>,
    ) -> FsResult<u32> {
        self.write_stored(ino, offset, data, kill_suid_sgid, false)
    }

    /// [`Fs::write_as`] for a writer that cannot take a short write: the kernel writing back its
    /// page cache ignores the count it is answered with, so the unstored tail would be lost with
    /// no error for fsync(2) to report. An error that stops the write after some batches were
    /// stored is returned instead of their count (those batches stay stored).
    pub fn write_whole_as(
        &self,
        ino: u64,
        offset: u64,
        data: &[u8],
        kill_suid_sgid: Option<InGroup>,
    ) -> FsResult<u32> {
        self.write_stored(ino, offset, data, kill_suid_sgid, true)
    }

    fn write_stored(
        &self,
        ino: u64,
        offset: u64,
        data: &[u8],
        kill_suid_sgid: Option<InGroup>,
        whole: bool,
    ) -> FsResult<u32> {
        if data.is_empty() {
            return Ok(0);
        }
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or(FsError::FileTooBig)?;
        if end > MAX_FILE_SIZE {
            return Err(FsError::FileTooBig);
        }
        let mut st = self.state.lock();
        let mut rec = self.data_file(&st, ino)?;
        inode_flags::check_write(&rec, offset)?;
        let group = st.record_group(ino, &rec);
        rec.group = group;
        let pages_before = rec.pages;
        let mut batch: Vec<Mutation> = Vec::new();
        // In the first batch, with the first inode record written.
        if let Some(in_group) = kill_suid_sgid {
            drop_privileges(&mut rec, in_group);
        }
        self.drop_capabilities(ino, &mut batch);
        let mut written_end = offset; // end of the bytes in committed batches
        let mut stopped = None; // the error that cut the write short
        let mut pos = offset;
        while pos < end {
            let page = pos / keys::PAGE_SIZE;
            let pstart = page * keys::PAGE_SIZE;
            let pend = (pstart + keys::PAGE_SIZE).min(end);
            let from = (pos - pstart) as usize;
            let to = (pend - pstart) as usize;
            let src = &data[(pos - offset) as usize..(pend - offset) as usize];
            let key = keys::chunk_key(ino, page);
            let existed = self.engine.contains(&key);
            let value = self.written_page(&key, existed, from, to, src)?;
            if !existed {
                rec.pages += 1;
            }
            batch.push(Mutation::put(group, key, value));
            pos = pend;
            if batch.len() >= WRITE_PAGES_PER_BATCH || pos == end {
                let now = Timestamp::now();
                rec.size = rec.size.max(pos);
                rec.mtime = now;
                rec.ctime = now;
                batch.push(Mutation::put(group, keys::inode_key(ino), rec.encode()));
                let result = self.store(&batch);
                batch.clear();
                if let Err(e) = result {
                    if written_end > offset {
                        stopped = Some(e);
                        break;
                    }
                    return Err(e);
                }
                written_end = pos;
                if let Some(node) = st.nodes.get_mut(&ino) {
                    node.rec = rec.clone();
                }
            }
        }
        self.account_written_pages(&mut st, ino, &rec, pages_before, written_end < end);
        drop(st);
        match stopped {
            Some(e) if whole => Err(e),
            _ => Ok((written_end - offset) as u32),
        }
    }

    /// A file that data is written to: a regular file, not removed.
    pub(super) fn data_file(&self, st: &State, ino: u64) -> FsResult<InodeRecord> {
        let rec = self.load(st, ino)?;
        match rec.kind {
            FileKind::Regular => {}
            FileKind::Directory => return Err(FsError::IsDir),
            _ => return Err(FsError::Invalid),
        }
        if st.nodes.get(&ino).is_some_and(|n| n.gone) {
            return Err(FsError::NotFound);
        }
        Ok(rec)
    }

    /// The value page `key` holds after `src` is written over its bytes `from..to`: `src`
    /// itself for a whole page, else the stored page (if it `existed`) read, modified and
    /// grown as needed.
    fn written_page(
        &self,
        key: &[u8],
        existed: bool,
        from: usize,
        to: usize,
        src: &[u8],
    ) -> FsResult<Vec<u8>> {
        Ok(if from == 0 && to == keys::PAGE_SIZE as usize {
            src.to_vec()
        } else {
            // Read-modify-write of a partial page only.
            let mut buf = if existed {
                self.engine.get(key)?.unwrap_or_default()
            } else {
                Vec::new()
            };
            if buf.len() < to {
                buf.resize(to, 0);
            }
            buf[from..to].copy_from_slice(src);
            buf
        })
    }

    /// After a write: the pages it added count towards its home directory's group. If a later
    /// batch failed (`rec` then holds uncommitted counts), the committed record is reloaded
    /// first.
    fn account_written_pages(
        &self,
        st: &mut State,
        ino: u64,
        rec: &InodeRecord,
        pages_before: u64,
        short: bool,
    ) {
        let mut pages_after = rec.pages;
        if short && let Ok(r) = self.load(st, ino) {
            pages_after = r.pages;
            if let Some(node) = st.nodes.get_mut(&ino) {
                node.rec = r;
            }
        }
        if pages_after != pages_before {
            let delta = (pages_after as i64 - pages_before as i64) * keys::PAGE_SIZE as i64;
            {
                let mut groups = st.groups.write();
                if groups.tracks(ino) {
                    groups.add_homed_bytes(rec.parent, delta);
                }
            }
            self.regroup(st, &[rec.parent]);
        }
    }

    /// Adds the deletion of `ino`'s `security.capability` xattr to `out`, if it has one (an
    /// index lookup, no I/O).
    pub(super) fn drop_capabilities(&self, ino: u64, out: &mut Vec<Mutation>) {
        if self.has_capabilities(ino) {
            out.push(Mutation::delete(
                TOMBSTONE_GROUP,
                keys::xattr_key(ino, CAPABILITY_XATTR),
            ));
        }
    }

    fn has_capabilities(&self, ino: u64) -> bool {
        self.engine
            .contains(&keys::xattr_key(ino, CAPABILITY_XATTR))
    }

    /// fallocate as ext4 gives it: see [`falloc`](super::falloc) for the modes and how space is
    /// reserved.
    pub fn fallocate(&self, ino: u64, offset: u64, length: u64, mode: i32) -> FsResult<()> {
        self.fallocate_as(ino, offset, length, mode, None)
    }

    /// [`Fs::fallocate`], which, like a write, drops the file's capabilities, and its
    /// set-user-ID and set-group-ID bits if `kill_suid_sgid` is given (the caller lacks
    /// `CAP_FSETID`), even when the size stays: ext4 does (`file_modified`). The kernel leaves
    /// this to us under `FUSE_HANDLE_KILLPRIV_V2` and does not say whether the caller has
    /// `CAP_FSETID`: the FUSE adapter finds out.
    pub fn fallocate_as(
        &self,
        ino: u64,
        offset: u64,
        length: u64,
        mode: i32,
        kill_suid_sgid: Option<InGroup>,
    ) -> FsResult<()> {
        // Before the mode is looked at: the VFS refuses these first.
        inode_flags::check_fallocate(&self.getattr_record(ino)?, mode)?;
        self.fallocate_modes(ino, offset, length, mode, kill_suid_sgid)
    }

    /// Makes everything written so far durable (and, with an after-sync step set, waits for
    /// it: see [`Fs::set_after_sync`]).
    pub fn fsync(&self) -> FsResult<()> {
        self.engine.sync()?;
        if let Some(after) = self.after_sync.get() {
            after(self.engine.durable_lsn()).map_err(|msg| {
                FsError::Engine(crate::engine::EngineError::Io(std::io::Error::other(msg)))
            })?;
        }
        Ok(())
    }

    /// Sets what every later fsync waits for once the store made its data durable (a mirror
    /// holding it: `--remote-sync`); called with the durable LSN, without the state lock. Set
    /// once; a second call is ignored.
    pub fn set_after_sync(&self, after: super::AfterSync) {
        let _ = self.after_sync.set(after);
    }
}

/// Puts `bytes` at `at` in `out`, the bytes before it that no page filled (a hole) reading as
/// zeros. Pages come in key order, so `out` grows by appending and only holes are zeroed:
/// zeroing every 2 MiB reply before filling it was a memset per request on a sequential read.
fn fill_at(out: &mut Vec<u8>, at: usize, bytes: &[u8]) {
    if out.len() <= at {
        out.resize(at, 0);
        out.extend_from_slice(bytes);
    } else {
        // Not in key order (never from a scan): still correct.
        let to = at + bytes.len();
        if out.len() < to {
            out.resize(to, 0);
        }
        out[at..to].copy_from_slice(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::fill_at;

    #[test]
    fn fill_at_zeroes_the_holes_between_pages_in_either_order() {
        let mut out = Vec::new();
        fill_at(&mut out, 2, b"ab");
        fill_at(&mut out, 6, b"cd");
        assert_eq!(out, b"\0\0ab\0\0cd");
        fill_at(&mut out, 0, b"x");
        fill_at(&mut out, 7, b"yz");
        assert_eq!(out, b"x\0ab\0\0cyz");
    }
}
