//! Directories -> compaction groups (DESIGN.md section 3), the way tablets cover token ranges.
//!
//! Every directory belongs to the group of its nearest *group root*, itself included. The root
//! directory is always a group root ([`ROOT_GROUP`]). A directory becomes a group root (a
//! *split*) when the live data under it, outside deeper roots, grows past `split_bytes`; a root
//! merges back into the group above when its data falls below a quarter of that. The gap
//! between the two (hysteresis) keeps a directory near the threshold from flapping.
//!
//! What is stored and what is derived:
//! - Only the roots are stored: a `G ino -> group id` record per root (`keys::group_root_key`),
//!   written in a batch of its own when a split or merge is decided. A directory's group is
//!   derived by walking parent pointers up to the first root, so a split, a merge or a rename
//!   never rewrites the directories or files below: their records move to the new group when
//!   they are next rewritten (by the filesystem, the separator or compaction: reads go through
//!   the global index and do not care).
//! - The live bytes under each directory are kept here in memory only, rebuilt at mount from
//!   the inode records (a file counts `pages * 4 KiB` towards its home directory). A crash can
//!   therefore never leave them wrong; they only steer where new records go.
//!
//! Invariant kept by every method: `DirNode::bytes` of a directory = the bytes of the files homed
//! in it + the `bytes` of its child directories that are not roots. So a change to a file's
//! bytes walks up from its home directory to the first root, inclusive, and stops there.
//!
//! This module knows directories, bytes and group ids only; `fs::Fs` calls it with the state
//! lock held and writes the root records it asks for.

use std::collections::HashMap;

use crate::engine::{GroupId, ROOT_GROUP};

use super::ROOT_INO;

/// Default split threshold: 16 MiB of live data under a directory (DESIGN.md section 3).
pub const DEFAULT_SPLIT_BYTES: u64 = 16 << 20;

/// Longest parent chain walked. A deeper chain (or a cycle in a damaged store) is treated as
/// reaching the root: grouping is a placement hint, never a reason to fail an operation.
const MAX_DEPTH: usize = 4096;

#[derive(Debug, Clone)]
struct DirNode {
    parent: u64,
    /// `Some(group)` if this directory is a group root.
    root_of: Option<GroupId>,
    /// Live bytes under this directory, outside deeper roots (see the module invariant).
    bytes: u64,
}

/// A decision to persist: write (split) or delete (merge) the root record of `dir`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Regroup {
    /// `dir` becomes the root of the new group `group`.
    Split { dir: u64, group: GroupId },
    /// Root `dir` (of `group`) merges back into the group above it.
    Merge { dir: u64, group: GroupId },
}

/// One group root, for stats and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRoot {
    pub group: GroupId,
    pub dir: u64,
    /// Live bytes under the root, outside deeper roots.
    pub bytes: u64,
}

/// The directory tree's grouping and per-directory live bytes.
#[derive(Debug)]
pub struct GroupMap {
    dirs: HashMap<u64, DirNode>,
    split_bytes: u64,
    next_group: GroupId,
    /// `Some` while the map is rebuilt from the inode records after a mount (see [`Loading`]).
    loading: Option<Loading>,
}

/// A rebuild in progress. The inode records are scanned in inode order, a chunk at a time,
/// with the filesystem's state lock held (which every change of an inode record also holds).
/// So for each inode, either the scan has read it (number <= `scanned_through`) and every
/// later change of it must be applied on top, or it has not, and the scan will read the record
/// as every change before it left it: the change is not applied. Files' bytes are collected
/// per home directory and added once every directory and root is known (as a full load does);
/// splits and merges wait for the end, since the counts are incomplete until then.
#[derive(Debug, Default)]
struct Loading {
    /// Highest inode number scanned (`None`: none yet).
    scanned_through: Option<u64>,
    /// Bytes of files homed in each directory, from the scan and the changes on top.
    homed: HashMap<u64, i64>,
    /// The stored group roots (loaded first): a directory is marked as one when it is found.
    roots: HashMap<u64, GroupId>,
}

impl GroupMap {
    /// A map holding only the root directory (a fresh filesystem, or the start of a rebuild).
    pub fn new(split_bytes: u64) -> GroupMap {
        let mut dirs = HashMap::new();
        dirs.insert(
            ROOT_INO,
            DirNode {
                parent: ROOT_INO,
                root_of: Some(ROOT_GROUP),
                bytes: 0,
            },
        );
        GroupMap {
            dirs,
            split_bytes: split_bytes.max(1),
            next_group: ROOT_GROUP + 1,
            loading: None,
        }
    }

    /// A map to be rebuilt by [`GroupMap::load_chunk`] calls and [`GroupMap::finish_loading`],
    /// knowing the stored group roots (directory, group) from the start.
    pub fn loading(
        split_bytes: u64,
        stored_roots: impl IntoIterator<Item = (u64, GroupId)>,
    ) -> GroupMap {
        let mut map = GroupMap::new(split_bytes);
        let roots: HashMap<u64, GroupId> = stored_roots.into_iter().collect();
        for &g in roots.values() {
            map.reserve_group_ids_through(g);
        }
        map.loading = Some(Loading {
            roots,
            ..Loading::default()
        });
        map
    }

    /// Whether a rebuild is in progress.
    pub fn is_loading(&self) -> bool {
        self.loading.is_some()
    }

    /// The inode number after which the rebuild scans next (`None`: from the start).
    pub fn loading_cursor(&self) -> Option<u64> {
        self.loading.as_ref().and_then(|l| l.scanned_through)
    }

    /// Whether the changes of inode `ino` are to be applied to the map: always, except during
    /// a rebuild that has not scanned `ino` yet (it will read the changed record).
    pub fn tracks(&self, ino: u64) -> bool {
        self.loading
            .as_ref()
            .is_none_or(|l| l.scanned_through.is_some_and(|s| ino <= s))
    }

    /// Takes scanned inode records into a rebuild: `(ino, parent, Some(bytes))` for a file with
    /// `bytes` homed at `parent`, `(ino, parent, None)` for a directory; `through` is the highest
    /// inode number the scan has now read.
    pub fn load_chunk(&mut self, records: &[(u64, u64, Option<u64>)], through: u64) {
        for &(ino, parent, bytes) in records {
            match bytes {
                None => self.add_dir(ino, parent),
                Some(b) => self.add_homed_bytes(parent, b as i64),
            }
        }
        if let Some(l) = &mut self.loading {
            l.scanned_through = Some(l.scanned_through.map_or(through, |s| s.max(through)));
        }
    }

    /// Ends a rebuild: every directory is known, its roots are marked, and the files' bytes
    /// go to their homes' chains. Splits and merges may be planned again.
    pub fn finish_loading(&mut self) {
        let Some(l) = self.loading.take() else {
            return;
        };
        for (dir, group) in l.roots {
            self.set_root(dir, group);
        }
        for (dir, bytes) in l.homed {
            if bytes > 0 {
                self.add_bytes(dir, bytes);
            }
        }
    }

    /// `delta` bytes of a file homed in `dir` (see [`GroupMap::tracks`] for when to call it).
    pub fn add_homed_bytes(&mut self, dir: u64, delta: i64) {
        match &mut self.loading {
            Some(l) => *l.homed.entry(dir).or_default() += delta,
            None => self.add_bytes(dir, delta),
        }
    }

    /// Every known directory: (dir, parent, group if a root, bytes), sorted (for tests).
    pub fn snapshot(&self) -> Vec<(u64, u64, Option<GroupId>, u64)> {
        let mut v: Vec<_> = self
            .dirs
            .iter()
            .map(|(&dir, d)| (dir, d.parent, d.root_of, d.bytes))
            .collect();
        v.sort_unstable();
        v
    }

    /// Group ids at or below `g` are taken (by a stored root, or by segments the engine still
    /// holds for a group that merged away): new groups get higher ids.
    pub fn reserve_group_ids_through(&mut self, g: GroupId) {
        self.next_group = self.next_group.max(g.saturating_add(1));
    }

    /// Number of directories known.
    pub fn dir_count(&self) -> usize {
        self.dirs.len()
    }

    /// Whether `dir` is a known directory.
    pub fn contains(&self, dir: u64) -> bool {
        self.dirs.contains_key(&dir)
    }

    /// A directory created (or found at mount) under `parent`; not a root, no bytes yet.
    pub fn add_dir(&mut self, dir: u64, parent: u64) {
        if dir == ROOT_INO {
            return;
        }
        let root_of = self
            .loading
            .as_ref()
            .and_then(|l| l.roots.get(&dir).copied());
        self.dirs.insert(
            dir,
            DirNode {
                parent,
                root_of,
                bytes: 0,
            },
        );
    }

    /// Marks `dir` as the root of `group` (at mount, from its stored root record). Must be
    /// called before any bytes are added.
    pub fn set_root(&mut self, dir: u64, group: GroupId) {
        if let Some(d) = self.dirs.get_mut(&dir).filter(|_| dir != ROOT_INO) {
            d.root_of = Some(group);
        }
        self.reserve_group_ids_through(group);
    }

    /// Forgets a removed directory. Its bytes (zero for an empty directory, unless a hard-linked
    /// file still names it as home) leave its ancestors' counts.
    pub fn remove_dir(&mut self, dir: u64) {
        if dir == ROOT_INO {
            return;
        }
        if let Some(d) = self.dirs.get(&dir).cloned() {
            if d.root_of.is_none() {
                self.add_above(dir, -(d.bytes as i64));
            }
            self.dirs.remove(&dir);
        }
    }

    /// `dir` moved under `new_parent` (a rename). A non-root directory takes its bytes from its
    /// old group's chain to its new one; a root keeps its group.
    pub fn move_dir(&mut self, dir: u64, new_parent: u64) {
        let Some(d) = self.dirs.get(&dir).cloned() else {
            return;
        };
        if d.parent == new_parent || dir == ROOT_INO {
            return;
        }
        if d.root_of.is_none() {
            self.add_above(dir, -(d.bytes as i64));
        }
        self.dirs.get_mut(&dir).expect("present").parent = new_parent;
        if d.root_of.is_none() {
            self.add_above(dir, d.bytes as i64);
        }
    }

    /// Adds `delta` bytes homed in `dir` (an unknown directory counts as the root).
    pub fn add_bytes(&mut self, dir: u64, delta: i64) {
        if delta == 0 {
            return;
        }
        let dir = if self.dirs.contains_key(&dir) {
            dir
        } else {
            ROOT_INO
        };
        let mut cur = dir;
        for _ in 0..MAX_DEPTH {
            let Some(d) = self.dirs.get_mut(&cur) else {
                return;
            };
            d.bytes = d.bytes.saturating_add_signed(delta);
            if d.root_of.is_some() {
                return;
            }
            cur = d.parent;
        }
    }

    /// Adds `delta` to the directories strictly above `dir`, up to its first root inclusive.
    fn add_above(&mut self, dir: u64, delta: i64) {
        if let Some(parent) = self
            .dirs
            .get(&dir)
            .map(|d| d.parent)
            .filter(|_| dir != ROOT_INO)
        {
            self.add_bytes(parent, delta);
        }
    }

    /// The group of directory `dir`: its nearest root's (an unknown directory: the root group).
    pub fn group_of(&self, dir: u64) -> GroupId {
        self.root_above(dir)
            .and_then(|r| self.dirs[&r].root_of)
            .unwrap_or(ROOT_GROUP)
    }

    /// The nearest root at or above `dir`.
    fn root_above(&self, dir: u64) -> Option<u64> {
        let mut cur = dir;
        for _ in 0..MAX_DEPTH {
            let d = self.dirs.get(&cur)?;
            if d.root_of.is_some() {
                return Some(cur);
            }
            cur = d.parent;
        }
        None
    }

    /// Live bytes under `dir` outside deeper roots (0 if unknown).
    pub fn bytes_under(&self, dir: u64) -> u64 {
        self.dirs.get(&dir).map_or(0, |d| d.bytes)
    }

    /// Whether `dir` is a group root, and of which group.
    pub fn root_group(&self, dir: u64) -> Option<GroupId> {
        self.dirs.get(&dir).and_then(|d| d.root_of).or_else(|| {
            // A stored root not scanned yet is a root all the same (its record must go with it).
            self.loading
                .as_ref()
                .and_then(|l| l.roots.get(&dir).copied())
        })
    }

    /// Every root, root directory first.
    pub fn roots(&self) -> Vec<GroupRoot> {
        let mut v: Vec<GroupRoot> = self
            .dirs
            .iter()
            .filter_map(|(&dir, d)| {
                d.root_of.map(|group| GroupRoot {
                    group,
                    dir,
                    bytes: d.bytes,
                })
            })
            .collect();
        v.sort_by_key(|r| (r.group, r.dir));
        v
    }

    /// What the bytes under `dir`'s chain call for, if anything: the deepest non-root directory
    /// on the chain from `dir` up to its root that holds more than the threshold splits off;
    /// otherwise the chain's root merges back if it holds less than a quarter of it. Nothing
    /// changes until [`GroupMap::apply`] is called (after the root record is written).
    pub fn plan(&self, dir: u64) -> Option<Regroup> {
        if self.loading.is_some() {
            return None; // the counts are incomplete until the rebuild ends
        }
        let mut cur = dir;
        for _ in 0..MAX_DEPTH {
            let d = self.dirs.get(&cur)?;
            match d.root_of {
                Some(group) => {
                    let merge = cur != ROOT_INO && d.bytes < self.split_bytes / 4;
                    return merge.then_some(Regroup::Merge { dir: cur, group });
                }
                None if d.bytes > self.split_bytes => {
                    return Some(Regroup::Split {
                        dir: cur,
                        group: self.next_group,
                    });
                }
                None => cur = d.parent,
            }
        }
        None
    }

    /// Applies a decision of [`GroupMap::plan`] whose root record is now written.
    pub fn apply(&mut self, change: Regroup) {
        match change {
            Regroup::Split { dir, group } => {
                let Some(d) = self.dirs.get(&dir).cloned() else {
                    return;
                };
                if d.root_of.is_some() {
                    return;
                }
                // Its bytes no longer count towards the group above.
                self.add_above(dir, -(d.bytes as i64));
                self.dirs.get_mut(&dir).expect("present").root_of = Some(group);
                self.reserve_group_ids_through(group);
            }
            Regroup::Merge { dir, .. } => {
                let Some(d) = self.dirs.get(&dir).cloned() else {
                    return;
                };
                if d.root_of.is_none() || dir == ROOT_INO {
                    return;
                }
                self.dirs.get_mut(&dir).expect("present").root_of = None;
                self.add_above(dir, d.bytes as i64);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: i64 = 1 << 20;

    /// / -> a -> b, / -> c.
    fn tree() -> GroupMap {
        let mut m = GroupMap::new(16 << 20);
        m.add_dir(2, ROOT_INO);
        m.add_dir(3, 2);
        m.add_dir(4, ROOT_INO);
        m
    }

    #[test]
    fn bytes_count_up_to_the_first_root() {
        let mut m = tree();
        m.add_bytes(3, 10);
        m.add_bytes(4, 5);
        assert_eq!(m.bytes_under(3), 10);
        assert_eq!(m.bytes_under(2), 10);
        assert_eq!(m.bytes_under(ROOT_INO), 15);
        m.add_bytes(3, -4);
        assert_eq!(m.bytes_under(ROOT_INO), 11);
        assert_eq!(m.group_of(3), ROOT_GROUP);
    }

    #[test]
    fn the_deepest_directory_over_the_threshold_splits_and_its_bytes_leave_the_group_above() {
        let mut m = tree();
        m.add_bytes(3, 17 * MIB);
        let change = m.plan(3).expect("over the threshold");
        assert_eq!(change, Regroup::Split { dir: 3, group: 1 });
        // Nothing changes before apply.
        assert_eq!(m.group_of(3), ROOT_GROUP);
        m.apply(change);
        assert_eq!(m.group_of(3), 1);
        assert_eq!(m.group_of(2), ROOT_GROUP);
        assert_eq!(m.bytes_under(2), 0);
        assert_eq!(m.bytes_under(ROOT_INO), 0);
        assert_eq!(m.bytes_under(3), (17 * MIB) as u64);
        // Bytes under the new root stop there.
        m.add_bytes(3, MIB);
        assert_eq!(m.bytes_under(ROOT_INO), 0);
        assert_eq!(m.plan(3), None, "18 MiB in a root: nothing to do");
        // A second split gets a new id.
        m.add_bytes(4, 17 * MIB);
        assert_eq!(m.plan(4), Some(Regroup::Split { dir: 4, group: 2 }));
    }

    #[test]
    fn a_root_below_a_quarter_merges_back() {
        let mut m = tree();
        m.add_bytes(3, 17 * MIB);
        m.apply(m.plan(3).unwrap());
        m.add_bytes(3, -(13 * MIB));
        assert_eq!(m.plan(3), None, "4 MiB is not below a quarter");
        m.add_bytes(3, -1);
        let change = m.plan(3).expect("below a quarter");
        assert_eq!(change, Regroup::Merge { dir: 3, group: 1 });
        m.apply(change);
        assert_eq!(m.group_of(3), ROOT_GROUP);
        assert_eq!(m.bytes_under(2), (4 * MIB - 1) as u64);
        assert_eq!(m.bytes_under(ROOT_INO), (4 * MIB - 1) as u64);
        assert_eq!(m.plan(ROOT_INO), None, "the root directory never merges");
    }

    #[test]
    fn renames_move_bytes_between_chains_and_roots_keep_their_group() {
        let mut m = tree();
        m.add_bytes(3, 8 * MIB);
        m.move_dir(3, 4);
        assert_eq!(m.bytes_under(2), 0);
        assert_eq!(m.bytes_under(4), (8 * MIB) as u64);
        assert_eq!(m.bytes_under(ROOT_INO), (8 * MIB) as u64);
        m.add_bytes(3, 9 * MIB);
        m.apply(m.plan(3).unwrap());
        m.move_dir(3, 2);
        assert_eq!(m.group_of(3), 1);
        assert_eq!(m.bytes_under(2), 0);
        assert_eq!(m.bytes_under(4), 0);
        // A directory moved under a root joins its group.
        m.add_dir(5, ROOT_INO);
        m.move_dir(5, 3);
        assert_eq!(m.group_of(5), 1);
        m.remove_dir(5);
        assert!(!m.contains(5));
        assert_eq!(
            m.group_of(5),
            ROOT_GROUP,
            "unknown directories are in the root group"
        );
    }

    #[test]
    fn reserved_ids_are_not_handed_out_again() {
        let mut m = tree();
        m.set_root(2, 7);
        m.reserve_group_ids_through(9);
        m.add_bytes(3, 17 * MIB);
        assert_eq!(m.plan(3), Some(Regroup::Split { dir: 3, group: 10 }));
        assert_eq!(m.group_of(3), 7);
    }

    #[test]
    fn a_parent_cycle_does_not_hang() {
        let mut m = GroupMap::new(16 << 20);
        m.add_dir(2, 3);
        m.add_dir(3, 2);
        m.add_bytes(2, 5);
        assert_eq!(m.group_of(2), ROOT_GROUP);
        assert_eq!(m.plan(2), None);
    }
}
