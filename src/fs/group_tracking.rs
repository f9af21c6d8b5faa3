//! The group map kept in step with the store: its rebuild from the inode records at mount (in
//! chunks, while requests are served), the accounting of each committed change (directories
//! joining, leaving or moving; a file's stored bytes counted towards its home directory), and
//! the splits and merges that follow, each persisted as a group root record before the map
//! changes. Also the reader the engine's separator and compaction ask for a key's group now.
//! The decisions themselves are [`super::groups`]' (pure, no I/O).

use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::groups::{GroupMap, Regroup};
use super::keys::InodeRecord;
use super::{FileKind, Fs, FsResult, ROOT_INO, State, TOMBSTONE_GROUP, corrupt, groups, keys};
use crate::engine::{Engine, GroupId, Mutation, ROOT_GROUP};

/// Inode records read per step of a group map rebuild (each step holds the state lock).
const GROUP_MAP_CHUNK: usize = 4096;

/// Live bytes a file counts towards its home directory's group (stored pages, so a sparse file
/// counts what it stores).
pub(super) fn file_bytes(rec: &InodeRecord) -> u64 {
    if rec.kind == FileKind::Regular {
        rec.pages.saturating_mul(keys::PAGE_SIZE)
    } else {
        0
    }
}

/// What the engine's separator and compaction ask to place a copy: the group a key belongs to
/// now. Entries go to their directory's group; an inode's records (inode, pages, symlink
/// target, xattrs) to the directory itself for a directory, else to the home directory's
/// group, read from the inode record (the engine passes a reader). Other records (metadata,
/// orphans, group roots) stay where they are. Takes only the group map's read lock.
pub(super) fn current_group(groups: Arc<RwLock<GroupMap>>) -> crate::engine::CurrentGroup {
    Arc::new(move |key: &[u8], read: &dyn Fn(&[u8]) -> Option<Vec<u8>>| {
        if groups.read().is_loading() {
            return None; // the map is partial: copies stay in their groups meanwhile
        }
        let ino = u64::from_be_bytes(key.get(1..9)?.try_into().ok()?);
        match key[0] {
            keys::TAG_DIRENT => Some(groups.read().group_of(ino)),
            keys::TAG_INODE | keys::TAG_CHUNK | keys::TAG_SYMLINK | keys::TAG_XATTR => {
                {
                    let map = groups.read();
                    if map.contains(ino) {
                        return Some(map.group_of(ino));
                    }
                }
                let rec = InodeRecord::decode(&read(&keys::inode_key(ino))?)?;
                Some(groups.read().group_of(rec.parent))
            }
            _ => None,
        }
    })
}

/// The path of every group root, by group ("/" for the root group), read from the store: for
/// `logstorfs stats`, mounted or not. A root whose path cannot be rebuilt is named by inode.
pub fn group_root_paths(engine: &Engine) -> FsResult<HashMap<GroupId, String>> {
    let mut out = HashMap::from([(ROOT_GROUP, "/".to_string())]);
    for_each_record(engine, &keys::group_root_prefix(), |key, value| {
        if let (Some(dir), Some(group)) = (keys::group_root_ino(key), keys::decode_group(value)) {
            let path = dir_path(engine, dir).unwrap_or_else(|| format!("(directory {dir})"));
            out.insert(group, path);
        }
        Ok(())
    })?;
    Ok(out)
}

/// Calls `f` with every record under `prefix`, in key order, a few thousand at a time.
pub(super) fn for_each_record(
    engine: &Engine,
    prefix: &[u8],
    mut f: impl FnMut(&[u8], &[u8]) -> FsResult<()>,
) -> FsResult<()> {
    let mut after: Option<Vec<u8>> = None;
    loop {
        let found = engine.scan(prefix, after.as_deref(), 4096)?;
        let Some((last, _)) = found.last() else {
            return Ok(());
        };
        after = Some(last.clone());
        for (key, value) in &found {
            f(key, value)?;
        }
    }
}

/// The path of directory `dir` from the root, walking parent pointers and finding each name in
/// its parent's entries; `None` if a step is missing.
pub(super) fn dir_path(engine: &Engine, dir: u64) -> Option<String> {
    let mut parts: Vec<Vec<u8>> = Vec::new();
    let mut cur = dir;
    while cur != ROOT_INO {
        if parts.len() > 4096 {
            return None;
        }
        let rec = InodeRecord::decode(&engine.get(&keys::inode_key(cur)).ok()??)?;
        let prefix = keys::dirent_prefix(rec.parent);
        let mut after: Option<Vec<u8>> = None;
        let name = 'search: loop {
            let found = engine.scan(&prefix, after.as_deref(), 256).ok()?;
            let (last, _) = found.last()?;
            after = Some(last.clone());
            for (_, value) in &found {
                if let Some(e) = keys::decode_dirents(value)?
                    .into_iter()
                    .find(|e| e.ino == cur)
                {
                    break 'search e.name;
                }
            }
        };
        parts.push(name);
        cur = rec.parent;
    }
    let mut path = String::new();
    for p in parts.iter().rev() {
        path.push('/');
        path.push_str(&String::from_utf8_lossy(p));
    }
    Some(if path.is_empty() { "/".into() } else { path })
}

impl Fs {
    /// Rebuilds the group map from the store, if a rebuild is pending (see
    /// [`FsOptions::defer_group_map`](super::FsOptions::defer_group_map)): every directory and
    /// its parent, and each file's stored bytes counted towards its home directory, from one pass
    /// over the inode records (adjacent in key order), a chunk at a time, while the filesystem
    /// serves requests.
    pub fn rebuild_group_map(&self) -> FsResult<()> {
        let started = std::time::Instant::now();
        loop {
            let cursor = {
                let st = self.state.lock();
                let g = st.groups.read();
                if !g.is_loading() {
                    break;
                }
                g.loading_cursor()
            };
            // Read the next chunk once without the state lock, for the host's cache only: after
            // a mount from a checkpoint the records are cold, and requests must not wait on the
            // lock for a chunk of random reads (a first stat of the mount point did, seconds).
            let after = cursor.map(keys::inode_key);
            let _ = self
                .engine
                .scan(&keys::inode_prefix(), after.as_deref(), GROUP_MAP_CHUNK);
            if self.rebuild_stop.load(Ordering::Relaxed) {
                log::info!("mount: group map rebuild stopped (unmount)");
                return Ok(());
            }
            if self.rebuild_group_map_step(GROUP_MAP_CHUNK)? {
                break;
            }
        }
        log::info!(
            "mount: group map rebuilt in {:.3} s ({} directories)",
            started.elapsed().as_secs_f64(),
            self.state.lock().groups.read().dir_count()
        );
        Ok(())
    }

    /// One step of [`Fs::rebuild_group_map`]: reads the next `chunk` inode records and takes
    /// them into the map, with the state lock held (so that no inode changes meanwhile: see
    /// `groups::Loading`). True once the rebuild is over.
    pub fn rebuild_group_map_step(&self, chunk: usize) -> FsResult<bool> {
        let st = self.state.lock();
        let Some(cursor) = ({
            let g = st.groups.read();
            g.is_loading().then(|| g.loading_cursor())
        }) else {
            return Ok(true);
        };
        let after = cursor.map(keys::inode_key);
        let found = self
            .engine
            .scan(&keys::inode_prefix(), after.as_deref(), chunk.max(1))?;
        let mut records = Vec::with_capacity(found.len());
        let mut through = cursor.unwrap_or(0);
        for (key, value) in &found {
            let ino = keys::inode_ino(key).ok_or_else(|| corrupt("inode key", key))?;
            let rec = InodeRecord::decode(value).ok_or_else(|| corrupt("inode record", key))?;
            through = through.max(ino);
            if rec.kind == FileKind::Directory {
                records.push((ino, rec.parent, None));
            } else if file_bytes(&rec) > 0 {
                records.push((ino, rec.parent, Some(file_bytes(&rec))));
            }
        }
        let done = found.len() < chunk.max(1);
        // Groups that merged away may still own segments: their ids are not handed out again.
        // (Asked before the map's lock is taken: no engine call is made while holding it.)
        let engine_groups = if done {
            self.engine.stats().groups
        } else {
            Vec::new()
        };
        let mut g = st.groups.write();
        g.load_chunk(&records, through);
        if done {
            for eg in engine_groups {
                g.reserve_group_ids_through(eg.id);
            }
            g.finish_loading();
        }
        Ok(done)
    }

    /// Makes a running [`Fs::rebuild_group_map`] return soon, its work unfinished (at unmount:
    /// the counts are in memory only, nothing is lost).
    pub fn stop_group_map_rebuild(&self) {
        self.rebuild_stop.store(true, Ordering::Relaxed);
    }

    /// Whether a group map rebuild is pending (see
    /// [`FsOptions::defer_group_map`](super::FsOptions::defer_group_map)).
    pub fn group_map_loading(&self) -> bool {
        self.state.lock().groups.read().is_loading()
    }

    /// Every known directory with its parent, group (if a root) and bytes (for tests).
    pub fn group_map_snapshot(&self) -> Vec<(u64, u64, Option<GroupId>, u64)> {
        self.state.lock().groups.read().snapshot()
    }

    /// The compaction group of directory `dir` (its nearest group root's).
    pub fn group_of_dir(&self, dir: u64) -> GroupId {
        self.state.lock().dir_group(dir)
    }

    /// Every group root with the live bytes under it (outside deeper roots), root group first.
    pub fn group_roots(&self) -> Vec<groups::GroupRoot> {
        self.state.lock().groups.read().roots()
    }

    /// Updates the group map for inode `ino` going from `old` to `new` (`None`: absent before,
    /// or purged now): directories join, leave or move; a file's bytes move between homes.
    pub(super) fn account(
        st: &mut State,
        ino: u64,
        old: Option<&InodeRecord>,
        new: Option<&InodeRecord>,
    ) {
        let kind = new.or(old).map(|r| r.kind);
        let mut groups = st.groups.write();
        if !groups.tracks(ino) {
            return; // a rebuild will read the record as it is now
        }
        if kind == Some(FileKind::Directory) {
            match (old, new) {
                (None, Some(n)) => groups.add_dir(ino, n.parent),
                (Some(_), None) => groups.remove_dir(ino),
                (Some(o), Some(n)) if o.parent != n.parent => groups.move_dir(ino, n.parent),
                _ => {}
            }
            return;
        }
        if let Some(o) = old {
            groups.add_homed_bytes(o.parent, -(file_bytes(o) as i64));
        }
        if let Some(n) = new {
            groups.add_homed_bytes(n.parent, file_bytes(n) as i64);
        }
    }

    /// Splits or merges the groups whose byte counts the chains of `dirs` changed: each
    /// decision is persisted (a root record written or deleted, in a batch of its own) before
    /// the map changes. A failed write leaves the map as it was; the next change retries.
    pub(super) fn regroup(&self, st: &mut State, dirs: &[u64]) {
        for &dir in dirs {
            // A merge can push the group above over the threshold: follow up to a few steps.
            for _ in 0..4 {
                let Some(change) = st.groups.read().plan(dir) else {
                    break;
                };
                let m = match change {
                    Regroup::Split { dir, group } => Mutation::put(
                        ROOT_GROUP,
                        keys::group_root_key(dir),
                        keys::encode_group(group),
                    ),
                    Regroup::Merge { dir, .. } => {
                        Mutation::delete(TOMBSTONE_GROUP, keys::group_root_key(dir))
                    }
                };
                if let Err(e) = self.store(&[m]) {
                    log::warn!("group change {change:?} not written: {e}");
                    return;
                }
                log::info!("group change: {change:?}");
                st.groups.write().apply(change);
            }
        }
    }
}
