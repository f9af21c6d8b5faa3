//! `copy_file_range` done by the daemon: the pages are copied as records inside the store, so
//! no byte goes through the kernel (without it, the kernel copies by reading and writing, and
//! fills every hole of the source with zeros).
//!
//! - A whole destination page whose source bytes are one whole source page (the offsets are
//!   congruent modulo 4 KiB) takes that page's record value as it is; a source hole makes the
//!   destination page a hole (its record, if any, is deleted). Other pages (the partial first
//!   and last ones, and all of them when the offsets are not congruent) are read, modified and
//!   written, as a write does; where the source is a hole and the destination stores nothing,
//!   nothing is written, so holes stay holes either way.
//! - Only pages where the source or the destination stores something are visited, found in the
//!   engine's index (`Engine::keys`): a copy's work grows with the pages stored, not with the
//!   size of the range (a copy of a mostly sparse file is cheap).
//! - Batches of at most `WRITE_PAGES_PER_BATCH` pages, each one engine batch with the
//!   destination's inode record (size reached, mtime, ctime), under the state lock, which is
//!   let go between batches: a large copy does not stall other operations. A copy is not
//!   atomic across a crash (neither is a large write).
//! - As ext4 (the VFS's `generic_copy_file_checks`): the count is cut at the source's end of
//!   file (a copy from at or past it copies nothing and changes nothing); overlapping ranges of
//!   one file are EINVAL; a destination offset at or past the largest file size is EFBIG, a
//!   count reaching past it is cut. The destination grows to the end of what was copied.
//! - Like a write: the destination's capabilities go, and its set-user-ID and set-group-ID bits
//!   when the caller lacks `CAP_FSETID` (the kernel leaves it to us under
//!   `FUSE_HANDLE_KILLPRIV_V2` and does not say: the FUSE adapter finds out).
//! - ENOSPC: each batch is checked by the engine before it is taken (live bytes against
//!   capacity), so a full store refuses a batch whole. As on ext4 (whose copy writes as it
//!   goes), a copy that runs out of space after some batches returns the bytes copied so far;
//!   the next call gets ENOSPC.

use std::collections::{BTreeMap, BTreeSet};

use super::{
    Fs, FsError, FsResult, GroupId, InGroup, InodeRecord, MAX_FILE_SIZE, Mutation, State,
    TOMBSTONE_GROUP, Timestamp, WRITE_PAGES_PER_BATCH, corrupt, drop_privileges, keys,
};

/// Most bytes one call copies: the kernel's reply carries the count in 32 bits. Whole pages, so
/// that a caller's next call keeps its alignment.
pub const MAX_COPY_BYTES: u64 = (u32::MAX as u64) & !(keys::PAGE_SIZE - 1);

/// Stored page keys taken from the index per side and per batch to find the pages to visit.
const CANDIDATE_KEYS: usize = 2 * WRITE_PAGES_PER_BATCH + 2;

const PAGE: u64 = keys::PAGE_SIZE;

/// The pages of a source inode's chunk key.
fn page_of(ino: u64, key: &[u8]) -> FsResult<u64> {
    keys::chunk_page_index(ino, key).ok_or_else(|| corrupt("page key", key))
}

/// The `count` source bytes from `src`, from up to two source pages; absent ones are holes
/// (zeros), and so are the bytes past a page's stored length. Also whether any source page
/// stores something there.
fn source_bytes(source: &BTreeMap<u64, Vec<u8>>, src: u64, count: usize) -> (Vec<u8>, bool) {
    let mut bytes = vec![0u8; count];
    let mut any = false;
    for q in src / PAGE..=(src + count as u64 - 1) / PAGE {
        let Some(value) = source.get(&q) else {
            continue;
        };
        any = true;
        let lo = (q * PAGE).max(src);
        let hi = (q * PAGE + value.len() as u64).min(src + count as u64);
        if lo < hi {
            bytes[(lo - src) as usize..(hi - src) as usize]
                .copy_from_slice(&value[(lo - q * PAGE) as usize..(hi - q * PAGE) as usize]);
        }
    }
    (bytes, any)
}

/// The rest of a copy as one batch sees it: `n` bytes from `off_in` of `ino_in` to `off_out`
/// of `ino_out`.
struct Span {
    ino_in: u64,
    ino_out: u64,
    off_in: u64,
    off_out: u64,
    n: u64,
}

/// What one batch does: the destination pages it visits, where it ends, and the stored source
/// pages it reads from.
struct BatchPlan {
    visit: Vec<u64>,
    batch_end: u64,
    source: BTreeMap<u64, Vec<u8>>,
}

/// One copy: source and destination, and what the first batch checks and drops.
struct Copy<'a> {
    ino_in: u64,
    ino_out: u64,
    kill_suid_sgid: Option<InGroup<'a>>,
}

impl Fs {
    /// Copies up to `len` bytes of `ino_in` from `off_in` to `ino_out` at `off_out`; returns
    /// the bytes copied (short at the source's end of file). See the module documentation.
    pub fn copy_file_range(
        &self,
        ino_in: u64,
        off_in: u64,
        ino_out: u64,
        off_out: u64,
        len: u64,
    ) -> FsResult<u64> {
        self.copy_file_range_as(ino_in, off_in, ino_out, off_out, len, None)
    }

    /// [`Fs::copy_file_range`], which also drops the destination's set-user-ID and
    /// set-group-ID bits if `kill_suid_sgid` is given (the caller lacks `CAP_FSETID`), naming
    /// the caller's groups, as [`Fs::write_as`] does.
    pub fn copy_file_range_as(
        &self,
        ino_in: u64,
        off_in: u64,
        ino_out: u64,
        off_out: u64,
        len: u64,
        kill_suid_sgid: Option<InGroup>,
    ) -> FsResult<u64> {
        let mut len = len.min(MAX_COPY_BYTES);
        let copy = Copy {
            ino_in,
            ino_out,
            kill_suid_sgid,
        };
        let mut done = 0u64;
        while done < len {
            let step = {
                let mut st = self.state.lock();
                self.copy_batch(&mut st, &copy, off_in, off_out, done, &mut len)
            };
            match step {
                Ok(0) => break,
                Ok(n) => done += n,
                // The batches before stay: the caller learns how far the copy went.
                Err(_) if done > 0 => break,
                Err(e) => return Err(e),
            }
            #[cfg(any(test, feature = "test-hooks"))]
            if done < len {
                let hook = self.test_between_copy_batches.lock().clone();
                if let Some(hook) = hook {
                    hook();
                }
            }
        }
        Ok(done)
    }

    /// Test hook: `hook` runs between the batches of every later copy, with the state lock let
    /// go, so that a test can act in the middle of a copy.
    #[cfg(any(test, feature = "test-hooks"))]
    #[doc(hidden)]
    pub fn test_set_between_copy_batches(&self, hook: Option<Box<dyn Fn() + Send + Sync>>) {
        *self.test_between_copy_batches.lock() = hook.map(Into::into);
    }

    /// Copies the next batch of the copy of `total` bytes from `start_in` to `start_out`, of
    /// which `done` are copied; returns the bytes it covered (0: nothing left to copy). The
    /// first batch checks the copy and cuts `total` at the source's end of file. Called with
    /// the state lock held.
    fn copy_batch(
        &self,
        st: &mut State,
        copy: &Copy,
        start_in: u64,
        start_out: u64,
        done: u64,
        total: &mut u64,
    ) -> FsResult<u64> {
        let (ino_in, ino_out) = (copy.ino_in, copy.ino_out);
        let first = done == 0;
        let (off_in, off_out) = (start_in + done, start_out + done);
        let size_in = self.data_file(st, ino_in)?.size;
        let mut rec = self.data_file(st, ino_out)?;
        if first {
            // Before the count is looked at, as the VFS refuses an immutable destination.
            super::inode_flags::check_write(&rec, off_out)?;
        }
        // A source that shrank since the copy began ends it there.
        let mut n = (*total - done).min(size_in.saturating_sub(off_in));
        if n == 0 {
            return Ok(0);
        }
        if first {
            if off_out >= MAX_FILE_SIZE {
                return Err(FsError::FileTooBig);
            }
            if ino_in == ino_out && off_in < off_out + n && off_out < off_in + n {
                return Err(FsError::Invalid);
            }
            // The count is cut once, at the source's end of file as it is now: a copy within
            // one file that extends it must not chase its own growth.
            n = n.min(MAX_FILE_SIZE - off_out);
            *total = n;
        }
        let span = Span {
            ino_in,
            ino_out,
            off_in,
            off_out,
            n,
        };
        let plan = self.plan_batch(&span)?;
        let group = st.record_group(ino_out, &rec);
        rec.group = group;
        let pages_before = rec.pages;
        let mut batch: Vec<Mutation> = Vec::new();
        if first {
            if let Some(in_group) = copy.kill_suid_sgid {
                drop_privileges(&mut rec, in_group);
            }
            self.drop_capabilities(ino_out, &mut batch);
        }
        self.copy_pages(&span, &plan, group, &mut rec, &mut batch)?;
        self.commit_copy_batch(st, ino_out, rec, pages_before, plan.batch_end, batch)?;
        Ok(plan.batch_end - off_out)
    }

    /// The destination pages this batch visits, in order, and where the batch ends: only
    /// pages where either side stores something, found in the engine's index.
    fn plan_batch(&self, span: &Span) -> FsResult<BatchPlan> {
        let &Span {
            ino_in,
            ino_out,
            off_in,
            off_out,
            n,
        } = span;
        // The bytes left to copy: this batch and the later ones.
        let end_out = off_out + n;
        // Source byte -> destination byte.
        let to_out = |pos_in: u64| pos_in - off_in + off_out;
        let (p_first, p_last) = (off_out / PAGE, (end_out - 1) / PAGE);
        let (q_first, q_last) = (off_in / PAGE, (off_in + n - 1) / PAGE);

        // The destination pages where either side stores something, in order. A side whose
        // walk stopped at its limit is known only up to `horizon` (the pages past it may hold
        // more): this batch ends there.
        let mut visit = BTreeSet::new();
        let mut horizon = p_last;
        let stored_in = self.engine.keys(
            &keys::chunk_key(ino_in, q_first),
            &keys::chunk_key(ino_in, q_last + 1),
            CANDIDATE_KEYS,
        );
        let mut last_from = p_last;
        for key in &stored_in {
            let q = page_of(ino_in, key)?;
            // The destination pages the copied bytes of source page `q` land on.
            let from = to_out((q * PAGE).max(off_in)) / PAGE;
            let to = (to_out(((q + 1) * PAGE).min(off_in + n)) - 1) / PAGE;
            visit.extend(from..=to);
            last_from = from;
        }
        if stored_in.len() == CANDIDATE_KEYS {
            // The next stored source page may land on the last one's second page too.
            horizon = horizon.min(last_from);
        }
        let stored_out = self.engine.keys(
            &keys::chunk_key(ino_out, p_first),
            &keys::chunk_key(ino_out, p_last + 1),
            CANDIDATE_KEYS,
        );
        for key in &stored_out {
            visit.insert(page_of(ino_out, key)?);
        }
        if stored_out.len() == CANDIDATE_KEYS {
            horizon = horizon.min(*visit.last().expect("keys were found"));
        }
        let mut visit: Vec<u64> = visit.into_iter().filter(|&p| p <= horizon).collect();
        if visit.len() > WRITE_PAGES_PER_BATCH {
            visit.truncate(WRITE_PAGES_PER_BATCH);
            horizon = visit[WRITE_PAGES_PER_BATCH - 1];
        }
        let batch_end = end_out.min((horizon + 1) * PAGE);
        let source = self.source_pages(span, &visit, batch_end)?;
        Ok(BatchPlan {
            visit,
            batch_end,
            source,
        })
    }

    /// The source pages the destination pages `visit` (up to `batch_end`) need, read in one
    /// scan; a source hole is absent.
    fn source_pages(
        &self,
        span: &Span,
        visit: &[u64],
        batch_end: u64,
    ) -> FsResult<BTreeMap<u64, Vec<u8>>> {
        let &Span {
            ino_in,
            off_in,
            off_out,
            ..
        } = span;
        // Destination byte -> source byte.
        let to_in = |pos_out: u64| pos_out - off_out + off_in;
        Ok(match (visit.first(), visit.last()) {
            (Some(&a), Some(&b)) => {
                let from = to_in((a * PAGE).max(off_out)) / PAGE;
                let to = (to_in(((b + 1) * PAGE).min(batch_end)) - 1) / PAGE;
                let mut pages = BTreeMap::new();
                let scanned = self.engine.scan_range(
                    &keys::chunk_key(ino_in, from),
                    &keys::chunk_key(ino_in, to + 1),
                    (to - from + 1) as usize,
                )?;
                for (key, value) in scanned {
                    pages.insert(page_of(ino_in, &key)?, value);
                }
                pages
            }
            _ => BTreeMap::new(),
        })
    }

    /// Copies the bytes of each visited destination page into `batch`: a whole page from a
    /// whole source page by its record value (or as a hole), the others read, modified and
    /// written; counts the pages `rec` stores.
    fn copy_pages(
        &self,
        span: &Span,
        plan: &BatchPlan,
        group: GroupId,
        rec: &mut InodeRecord,
        batch: &mut Vec<Mutation>,
    ) -> FsResult<()> {
        let &Span {
            ino_out,
            off_in,
            off_out,
            ..
        } = span;
        let BatchPlan {
            visit,
            batch_end,
            source,
        } = plan;
        let batch_end = *batch_end;
        // Destination byte -> source byte.
        let to_in = |pos_out: u64| pos_out - off_out + off_in;
        for &p in visit {
            let pstart = p * PAGE;
            let from = off_out.max(pstart) - pstart;
            let to = batch_end.min(pstart + PAGE) - pstart;
            if from >= to {
                continue;
            }
            let src = to_in(pstart + from);
            let key = keys::chunk_key(ino_out, p);
            let existed = self.engine.contains(&key);
            if from == 0 && to == PAGE && src % PAGE == 0 {
                // A whole page from a whole page: its record value as it is, or a hole.
                match source.get(&(src / PAGE)) {
                    Some(value) => {
                        batch.push(Mutation::put(group, key, value.clone()));
                        rec.pages += u64::from(!existed);
                    }
                    None if existed => {
                        batch.push(Mutation::delete(TOMBSTONE_GROUP, key));
                        rec.pages = rec.pages.saturating_sub(1);
                    }
                    None => {}
                }
                continue;
            }
            let (bytes, any) = source_bytes(source, src, (to - from) as usize);
            let (from, to) = (from as usize, to as usize);
            if !any {
                if !existed {
                    continue; // a hole onto a hole
                }
                if from == 0 && to == PAGE as usize {
                    batch.push(Mutation::delete(TOMBSTONE_GROUP, key));
                    rec.pages = rec.pages.saturating_sub(1);
                    continue;
                }
                // Zeros over part of a stored page: only its stored bytes need clearing.
                let mut page = self.engine.get(&key)?.unwrap_or_default();
                if page.len() > from {
                    let hi = to.min(page.len());
                    page[from..hi].fill(0);
                    batch.push(Mutation::put(group, key, page));
                }
                continue;
            }
            let mut page = if existed {
                self.engine.get(&key)?.unwrap_or_default()
            } else {
                Vec::new()
            };
            if page.len() < to {
                page.resize(to, 0);
            }
            page[from..to].copy_from_slice(&bytes);
            batch.push(Mutation::put(group, key, page));
            rec.pages += u64::from(!existed);
        }
        Ok(())
    }

    /// Ends a batch: the destination's size, mtime and ctime with its pages in one engine
    /// batch, then the cached record and the group accounting of the pages it gained or lost.
    fn commit_copy_batch(
        &self,
        st: &mut State,
        ino_out: u64,
        mut rec: InodeRecord,
        pages_before: u64,
        batch_end: u64,
        mut batch: Vec<Mutation>,
    ) -> FsResult<()> {
        // The group the batch's pages went to (`copy_batch` set it).
        let group = rec.group;
        let now = Timestamp::now();
        rec.size = rec.size.max(batch_end);
        rec.mtime = now;
        rec.ctime = now;
        batch.push(Mutation::put(group, keys::inode_key(ino_out), rec.encode()));
        self.store(&batch)?;
        if let Some(node) = st.nodes.get_mut(&ino_out) {
            node.rec = rec.clone();
        }
        if rec.pages != pages_before {
            let delta = (rec.pages as i64 - pages_before as i64) * PAGE as i64;
            {
                let mut groups = st.groups.write();
                if groups.tracks(ino_out) {
                    groups.add_homed_bytes(rec.parent, delta);
                }
            }
            self.regroup(st, &[rec.parent]);
        }
        Ok(())
    }
}
