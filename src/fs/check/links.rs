//! fsck's namespace rules: every inode's link count agrees with the entries naming it, an
//! inode is named or an orphan (a file unlinked while open), never both nor neither, and every
//! inode is reachable from the root. A break here is what loses files: a leaked inode holds
//! space forever, a wrong count purges a linked file at the next mount.

use std::collections::{BTreeSet, HashMap, VecDeque};

use super::super::ROOT_INO;
use super::super::keys::FileKind;
use super::Checker;
use crate::engine::check::Finding;

impl Checker<'_> {
    pub(super) fn check_links_and_reachability(&mut self) {
        let mut found = Vec::new();
        self.check_link_counts(&mut found);
        self.check_orphans(&mut found);
        self.check_reachability(&mut found);
        for (p, w) in found {
            self.problem(p, w);
        }
    }

    /// Each directory is named once (the root never) and has 2 + its subdirectories as nlink
    /// and its entry's directory as parent; every other inode has as many links as names; an
    /// inode is named or an orphan, never both.
    fn check_link_counts(&self, found: &mut Vec<(String, String)>) {
        // Subdirectory counts.
        let mut subdirs: HashMap<u64, u32> = HashMap::new();
        for e in &self.entries {
            if self
                .inodes
                .get(&e.ino)
                .is_some_and(|r| r.kind == FileKind::Directory)
            {
                *subdirs.entry(e.parent).or_default() += 1;
            }
        }
        for (&ino, r) in &self.inodes {
            let named = self.names.get(&ino).map_or(0, |v| v.len()) as u32;
            let orphan = self.orphans.contains(&ino);
            if r.kind == FileKind::Directory {
                let expected_names = u32::from(ino != ROOT_INO);
                if named != expected_names && !(named == 0 && orphan) {
                    found.push((
                        self.inode_place(ino),
                        format!("directory named by {named} entries (expected {expected_names})"),
                    ));
                }
                let want = 2 + subdirs.get(&ino).copied().unwrap_or(0);
                if r.nlink != want && !(orphan && r.nlink == 0) {
                    found.push((
                        self.inode_place(ino),
                        format!("directory has nlink {} but {want} links", r.nlink),
                    ));
                }
                if named == 1 && ino != ROOT_INO {
                    let parent = self.entries[self.names[&ino][0]].parent;
                    if r.parent != parent {
                        found.push((
                            self.inode_place(ino),
                            format!(
                                "directory records parent {} but is named in directory {parent}",
                                r.parent
                            ),
                        ));
                    }
                }
            } else if r.nlink != named {
                found.push((
                    self.inode_place(ino),
                    format!("nlink is {} but {named} entries name it", r.nlink),
                ));
            }
            if orphan && (named > 0 || r.nlink > 0) {
                found.push((
                    self.inode_place(ino),
                    format!(
                        "recorded as an orphan but has nlink {} and {named} entries (the next \
                         mount would purge a linked file)",
                        r.nlink
                    ),
                ));
            } else if named == 0 && ino != ROOT_INO && !orphan {
                found.push((
                    format!("inode {ino}"),
                    format!(
                        "{:?} named by no entry and not recorded as an orphan (leaked)",
                        r.kind
                    ),
                ));
            }
        }
    }

    /// Every orphan record names an inode that exists; one unlinked while open is noted.
    fn check_orphans(&mut self, found: &mut Vec<(String, String)>) {
        for &ino in &self.orphans {
            match self.inodes.get(&ino) {
                None => found.push((
                    format!("inode {ino}"),
                    "orphan record of an inode that does not exist".into(),
                )),
                Some(r) if r.nlink == 0 => self.findings.push(Finding::note(
                    format!("inode {ino}"),
                    format!(
                        "{:?} unlinked while open: an orphan, reclaimed at the next mount",
                        r.kind
                    ),
                )),
                _ => {}
            }
        }
    }

    /// Every inode is reachable from the root; an unreachable directory is reported with the
    /// cycle it is in, or its top-most ancestor.
    fn check_reachability(&self, found: &mut Vec<(String, String)>) {
        let reached = self.reached_from_root();
        let mut reported_cycles = BTreeSet::new();
        for (&ino, r) in &self.inodes {
            if reached.contains(&ino) || self.names.get(&ino).is_none_or(|v| v.is_empty()) {
                continue; // reached, or reported above as unnamed
            }
            if r.kind != FileKind::Directory {
                if !self.names[&ino]
                    .iter()
                    .any(|&i| !self.inodes.contains_key(&self.entries[i].parent))
                {
                    continue; // its directory is unreachable: reported for the directory
                }
                found.push((
                    format!("inode {ino}"),
                    "file not reachable from the root".into(),
                ));
                continue;
            }
            let (path, verdict) = self.walk_up(ino, &reached);
            match verdict {
                Some(mut cycle) => {
                    let mut key = cycle.clone();
                    key.sort_unstable();
                    if reported_cycles.insert(key) {
                        cycle.reverse();
                        let list: Vec<String> = cycle.iter().map(|i| i.to_string()).collect();
                        found.push((
                            format!("inode {ino}"),
                            format!(
                                "directory cycle, unreachable from the root: inodes {}",
                                list.join(" -> ")
                            ),
                        ));
                    }
                }
                None => found.push((
                    format!("inode {ino}"),
                    format!(
                        "directory not reachable from the root (its top-most ancestor is inode \
                         {})",
                        path.last().copied().unwrap_or(ino)
                    ),
                )),
            }
        }
    }

    /// The inodes reachable from the root through entries, breadth first.
    fn reached_from_root(&self) -> BTreeSet<u64> {
        let mut children: HashMap<u64, Vec<u64>> = HashMap::new();
        for e in &self.entries {
            children.entry(e.parent).or_default().push(e.ino);
        }
        let mut reached = BTreeSet::new();
        let mut queue = VecDeque::from([ROOT_INO]);
        reached.insert(ROOT_INO);
        while let Some(d) = queue.pop_front() {
            for &c in children.get(&d).map_or(&[][..], |v| &v[..]) {
                if reached.insert(c) {
                    queue.push_back(c);
                }
            }
        }
        reached
    }

    /// Walks up from directory `ino` through the first entry naming each directory until a
    /// reached one, a directory named by nothing, or one seen before: returns the directories
    /// walked and, in the last case, the cycle.
    fn walk_up(&self, ino: u64, reached: &BTreeSet<u64>) -> (Vec<u64>, Option<Vec<u64>>) {
        let mut path = vec![ino];
        let mut cur = ino;
        let verdict = loop {
            let Some(&i) = self.names.get(&cur).and_then(|v| v.first()) else {
                break None;
            };
            cur = self.entries[i].parent;
            if reached.contains(&cur) {
                break None;
            }
            if let Some(at) = path.iter().position(|&p| p == cur) {
                break Some(path[at..].to_vec());
            }
            path.push(cur);
        };
        (path, verdict)
    }
}
