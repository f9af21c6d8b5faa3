//! `lseek` with `SEEK_DATA` and `SEEK_HOLE` (the kernel sends FUSE_LSEEK for those two only):
//! where the next data or hole of a file is, from the engine's index alone. A file's data is
//! one record per 4 KiB page (`keys::chunk_key`); a stored page is data, a missing one a hole,
//! so the answer is the next stored page key, or the next gap in a run of them, and no record
//! is read. The walk looks at the stored pages from the offset on, never at every 4 KiB of a
//! hole.
//!
//! Semantics are ext4's (`iomap_seek_data`, `iomap_seek_hole`): an offset that is negative or at
//! or past the end of the file gets ENXIO for both; `SEEK_DATA` with no data after the offset
//! gets ENXIO; the end of the file is a hole, so `SEEK_HOLE` finds at most the size. A stored
//! page of zeros is data (as a written block is on ext4). A page is data up to its 4 KiB end
//! even when its record is shorter (as a block is), and the size clips everything.

use super::{FileKind, Fs, FsError, FsResult, corrupt, keys};

/// Page keys taken from the index per step while following a run of stored pages.
const RUN_STEP_KEYS: usize = 1024;

impl Fs {
    /// `lseek(fd, offset, whence)` for `whence` `SEEK_DATA` or `SEEK_HOLE`: the offset of the
    /// first data (resp. hole) at or after `offset`. Other whences are the kernel's own
    /// (EINVAL here).
    pub fn lseek(&self, ino: u64, offset: i64, whence: i32) -> FsResult<u64> {
        let size = {
            let st = self.state.lock();
            let rec = self.load(&st, ino)?;
            match rec.kind {
                FileKind::Regular => rec.size,
                FileKind::Directory => return Err(FsError::IsDir),
                _ => return Err(FsError::Invalid),
            }
        };
        if whence != libc::SEEK_DATA && whence != libc::SEEK_HOLE {
            return Err(FsError::Invalid);
        }
        let offset = u64::try_from(offset).map_err(|_| FsError::NoSuchOffset)?;
        if offset >= size {
            return Err(FsError::NoSuchOffset);
        }
        let page = offset / keys::PAGE_SIZE;
        let end = keys::chunk_key(ino, (size - 1) / keys::PAGE_SIZE + 1);
        let page_of =
            |key: &[u8]| keys::chunk_page_index(ino, key).ok_or_else(|| corrupt("page key", key));
        if whence == libc::SEEK_DATA {
            let first = self.engine.keys(&keys::chunk_key(ino, page), &end, 1);
            let Some(key) = first.first() else {
                return Err(FsError::NoSuchOffset);
            };
            return Ok(offset.max(page_of(key)? * keys::PAGE_SIZE));
        }
        // SEEK_HOLE: follow the run of stored pages that starts at `page`, if any.
        let mut next = page;
        loop {
            let run = self
                .engine
                .keys(&keys::chunk_key(ino, next), &end, RUN_STEP_KEYS);
            let mut gap = false;
            for key in &run {
                if page_of(key)? != next {
                    gap = true;
                    break;
                }
                next += 1;
            }
            if gap || run.len() < RUN_STEP_KEYS {
                break;
            }
        }
        if next == page {
            return Ok(offset); // the page at the offset is a hole
        }
        Ok(size.min(next * keys::PAGE_SIZE))
    }
}
