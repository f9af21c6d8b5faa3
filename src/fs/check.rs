//! The filesystem's half of `logstorfs fsck`: checks the namespace held by the key -> newest
//! version map that [`crate::engine::check`] rebuilt from the segments, and names the files
//! that damaged records belong to. Changes nothing.
//!
//! Checks (each failure is one [`Finding`]):
//! - every key decodes as one of the layouts of [`super::keys`], every value too;
//! - the root directory exists; the inode high-water mark is above every inode number;
//! - every directory entry sits in an existing directory, points at an existing inode of the
//!   kind it says, and is filed under the hash of its name;
//! - link counts: a file's `nlink` is the number of entries naming it; a directory has exactly
//!   one entry (the root none), `2 + subdirectories` links, and its `parent` is that entry's
//!   directory;
//! - every directory is reachable from the root (no cycles), every inode is named or recorded
//!   as an orphan (unlinked while open; reclaimed at the next mount), every orphan record
//!   belongs to an unlinked inode;
//! - data pages belong to regular files, lie within the file's size (but for what fallocate
//!   allocates past it: unwritten or full pages), and their count is the inode's page count;
//!   symlinks have their target, of the recorded length; xattrs belong to existing inodes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use super::ROOT_INO;
use super::keys::{self, FileKind, InodeRecord, PAGE_SIZE};
use crate::engine::EngineError;
use crate::engine::check::{self as echeck, EngineCheck, Finding, Severity};

mod links;

/// Whether the checker needs `key`'s value in memory (everything but file data pages).
pub fn keep_value(key: &[u8]) -> bool {
    key.first() != Some(&keys::TAG_CHUNK)
}

/// A file (or directory) that damaged records belong to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DamagedFile {
    pub ino: u64,
    pub path: String,
    /// What of it is damaged, e.g. "data page 3", "inode record", "entries".
    pub parts: Vec<String>,
    /// Where the first damaged record is.
    pub place: String,
}

/// Figures of the namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FsFigures {
    pub inodes: u64,
    pub directories: u64,
    pub regular_files: u64,
    pub symlinks: u64,
    pub other_files: u64,
    pub entries: u64,
    pub data_pages: u64,
    pub xattrs: u64,
    pub orphans: u64,
    /// Directories that are compaction group roots (besides the root directory).
    pub group_roots: u64,
}

/// Both halves of a check.
pub struct Report {
    pub engine: EngineCheck,
    /// Filesystem findings (the engine's are in `engine.findings`).
    pub findings: Vec<Finding>,
    pub damaged_files: Vec<DamagedFile>,
    pub figures: FsFigures,
}

impl Report {
    /// Every finding, engine first.
    pub fn all_findings(&self) -> impl Iterator<Item = &Finding> {
        self.engine.findings.iter().chain(self.findings.iter())
    }

    pub fn problems(&self) -> usize {
        self.all_findings()
            .filter(|f| f.severity == Severity::Problem)
            .count()
    }

    pub fn is_clean(&self) -> bool {
        self.problems() == 0
    }
}

/// Checks the store in directory `dir`: engine, then namespace. Read-only; an error if the
/// store cannot be read (not a store, in use, I/O error).
pub fn check_store(dir: &Path) -> Result<Report, EngineError> {
    let engine = echeck::check_dir(dir, &keep_value)?;
    Ok(check_engine_result(engine))
}

/// The namespace checks on an engine check's result.
pub fn check_engine_result(engine: EngineCheck) -> Report {
    let mut c = Checker::new(&engine);
    if engine.segment_size != 0 {
        c.run();
    }
    let findings = c.findings;
    let damaged_files = c.damaged_files;
    let figures = c.figures;
    Report {
        engine,
        findings,
        damaged_files,
        figures,
    }
}

struct Entry {
    parent: u64,
    name: Vec<u8>,
    ino: u64,
    kind: FileKind,
}

/// What the keys other than inodes and entries hold, by inode, for the later checks.
#[derive(Default)]
struct Decoded {
    /// ino -> (page index, stored length, place) of each data page.
    pages: BTreeMap<u64, Vec<(u64, u32, echeck::Place)>>,
    /// ino -> the length of its symlink target.
    symlinks: BTreeMap<u64, u32>,
    /// ino -> how many extended attributes it has.
    xattrs: BTreeMap<u64, u64>,
    high_water: Option<u64>,
    /// Group root records: directory -> (group id, place).
    group_roots: BTreeMap<u64, (crate::engine::GroupId, String)>,
}

struct Checker<'a> {
    e: &'a EngineCheck,
    findings: Vec<Finding>,
    damaged_files: Vec<DamagedFile>,
    figures: FsFigures,
    inodes: BTreeMap<u64, InodeRecord>,
    entries: Vec<Entry>,
    /// ino -> indexes into `entries` naming it.
    names: HashMap<u64, Vec<usize>>,
    orphans: BTreeSet<u64>,
    /// Names found only in lost (intact but unrecovered) entry records: ino -> (parent, name).
    lost_names: HashMap<u64, (u64, Vec<u8>)>,
}

fn hex(b: &[u8]) -> String {
    if !b.is_empty() && b.iter().all(|c| c.is_ascii_graphic()) {
        return String::from_utf8_lossy(b).into_owned();
    }
    b.iter().map(|c| format!("{c:02x}")).collect()
}

fn be_u64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b.try_into().expect("8 bytes"))
}

impl<'a> Checker<'a> {
    fn new(e: &'a EngineCheck) -> Self {
        Checker {
            e,
            findings: Vec::new(),
            damaged_files: Vec::new(),
            figures: FsFigures::default(),
            inodes: BTreeMap::new(),
            entries: Vec::new(),
            names: HashMap::new(),
            orphans: BTreeSet::new(),
            lost_names: HashMap::new(),
        }
    }

    fn problem(&mut self, place: impl Into<String>, what: impl Into<String>) {
        self.findings.push(Finding::problem(place, what));
    }

    fn inode_place(&self, ino: u64) -> String {
        format!("inode {ino} ({})", self.path_of(ino))
    }

    /// A path of `ino` from the root, through the first entry naming it at every step.
    fn path_of(&self, ino: u64) -> String {
        if ino == ROOT_INO {
            return "/".into();
        }
        let mut parts = Vec::new();
        let mut cur = ino;
        let mut seen = BTreeSet::new();
        while cur != ROOT_INO {
            if !seen.insert(cur) || parts.len() > 4096 {
                return format!("(in a directory cycle)/{}", join_rev(&parts));
            }
            let named = self
                .names
                .get(&cur)
                .and_then(|v| v.first())
                .map(|&i| (self.entries[i].parent, &self.entries[i].name));
            let lost = self.lost_names.get(&cur).map(|(p, n)| (*p, n));
            let Some((parent, name)) = named.or(lost) else {
                return if cur == ino {
                    if self.orphans.contains(&ino) {
                        "(unlinked while open)".into()
                    } else {
                        "(no name)".into()
                    }
                } else {
                    format!("(unnamed directory {cur})/{}", join_rev(&parts))
                };
            };
            parts.push(String::from_utf8_lossy(name).into_owned());
            cur = parent;
        }
        format!("/{}", join_rev(&parts))
    }

    fn run(&mut self) {
        let e = self.e;
        if e.live.is_empty() && e.damaged.is_empty() {
            self.findings.push(Finding::note(
                "store",
                "holds no filesystem yet (never mounted)",
            ));
            return;
        }
        let d = self.decode_keys();
        self.count_figures(&d);
        self.check_root_and_high_water(d.high_water);
        self.check_entries();
        self.check_links_and_reachability();
        self.check_pages(&d.pages);
        self.check_symlinks(&d.symlinks);
        self.check_xattr_owners(&d.xattrs);
        self.check_group_roots(&d.group_roots);
        self.name_damaged_files();
    }

    /// Decodes every live key: inodes and entries into the checker, the rest into `Decoded`;
    /// a key or value that is none of the filesystem's is a problem.
    fn decode_keys(&mut self) -> Decoded {
        let e = self.e;
        let mut d = Decoded::default();
        for (key, rec) in &e.live {
            let place = e.describe(rec.place);
            let value = rec.value.as_deref().unwrap_or(&[]);
            let Some(&tag) = key.first() else {
                self.problem(place, "empty key");
                continue;
            };
            let ino_key = key.len() == 9;
            match tag {
                keys::TAG_INODE if ino_key => {
                    let ino = be_u64(&key[1..9]);
                    match InodeRecord::decode(value) {
                        Some(r) => {
                            self.inodes.insert(ino, r);
                        }
                        None => self.problem(place, format!("inode {ino}: record does not decode")),
                    }
                }
                keys::TAG_DIRENT if key.len() == 17 => {
                    self.decode_entry_record(place, key, value);
                }
                keys::TAG_CHUNK if key.len() == 17 => {
                    let ino = be_u64(&key[1..9]);
                    let page = be_u64(&key[9..17]);
                    d.pages
                        .entry(ino)
                        .or_default()
                        .push((page, rec.value_len, rec.place));
                }
                keys::TAG_SYMLINK if ino_key => {
                    d.symlinks.insert(be_u64(&key[1..9]), rec.value_len);
                }
                keys::TAG_XATTR if key.len() > 9 => {
                    *d.xattrs.entry(be_u64(&key[1..9])).or_default() += 1;
                }
                keys::TAG_ORPHAN if ino_key => {
                    self.orphans.insert(be_u64(&key[1..9]));
                }
                keys::TAG_GROUP_ROOT if ino_key => match keys::decode_group(value) {
                    Some(g) => {
                        d.group_roots.insert(be_u64(&key[1..9]), (g, place));
                    }
                    None => self.problem(place, "group root record does not decode"),
                },
                keys::TAG_META if key[1..] == *keys::META_INODE_HIGH_WATER => {
                    match keys::decode_u64(value) {
                        Some(v) => d.high_water = Some(v),
                        None => self.problem(place, "inode high-water mark does not decode"),
                    }
                }
                _ => self.problem(
                    place,
                    format!("key {} is none of the filesystem's", hex(key)),
                ),
            }
        }
        d
    }

    /// A directory entry record (a hash bucket of `parent`): each entry must be filed under
    /// its name's hash and have a valid name.
    fn decode_entry_record(&mut self, place: String, key: &[u8], value: &[u8]) {
        let parent = be_u64(&key[1..9]);
        let hash = be_u64(&key[9..17]);
        let Some(list) = keys::decode_dirents(value) else {
            self.problem(
                place,
                format!("directory {parent}: entry record does not decode"),
            );
            return;
        };
        if list.is_empty() {
            self.problem(
                place.clone(),
                format!("directory {parent}: empty entry record"),
            );
        }
        for d in list {
            let name = String::from_utf8_lossy(&d.name).into_owned();
            if keys::name_hash(&d.name) != hash {
                self.problem(
                    place.clone(),
                    format!("directory {parent}: entry '{name}' filed under the wrong hash"),
                );
            }
            if d.name.is_empty()
                || d.name.len() > super::MAX_NAME_LEN
                || d.name.contains(&b'/')
                || d.name.contains(&0)
                || d.name == b"."
                || d.name == b".."
            {
                self.problem(
                    place.clone(),
                    format!("directory {parent}: invalid entry name '{name}'"),
                );
            }
            self.names
                .entry(d.ino)
                .or_default()
                .push(self.entries.len());
            self.entries.push(Entry {
                parent,
                name: d.name,
                ino: d.ino,
                kind: d.kind,
            });
        }
    }

    fn count_figures(&mut self, d: &Decoded) {
        self.figures.inodes = self.inodes.len() as u64;
        self.figures.entries = self.entries.len() as u64;
        self.figures.orphans = self.orphans.len() as u64;
        for r in self.inodes.values() {
            match r.kind {
                FileKind::Directory => self.figures.directories += 1,
                FileKind::Regular => self.figures.regular_files += 1,
                FileKind::Symlink => self.figures.symlinks += 1,
                _ => self.figures.other_files += 1,
            }
        }
        self.figures.data_pages = d.pages.values().map(|v| v.len() as u64).sum();
        self.figures.xattrs = d.xattrs.values().sum();
    }

    /// The root is a directory, and every inode number is below the high-water mark (the next
    /// one handed out).
    fn check_root_and_high_water(&mut self, high_water: Option<u64>) {
        match self.inodes.get(&ROOT_INO) {
            None => self.problem("inode 1 (/)", "the root directory is missing"),
            Some(r) if r.kind != FileKind::Directory => {
                self.problem("inode 1 (/)", "the root is not a directory")
            }
            _ => {}
        }
        let max_ino = self.inodes.keys().next_back().copied().unwrap_or(0);
        match high_water {
            None => self.problem("metadata", "the inode high-water mark is missing"),
            Some(hw) if max_ino >= hw => self.problem(
                "metadata",
                format!("inode {max_ino} is at or above the inode high-water mark {hw}"),
            ),
            _ => {}
        }
    }

    /// Every symlink target belongs to a symlink of its size, and every symlink has one.
    fn check_symlinks(&mut self, symlinks: &BTreeMap<u64, u32>) {
        for (&ino, &len) in symlinks {
            match self.inodes.get(&ino) {
                None => self.problem(format!("inode {ino}"), "symlink target of a missing inode"),
                Some(r) if r.kind != FileKind::Symlink => self.problem(
                    self.inode_place(ino),
                    "symlink target stored for an inode that is not a symlink",
                ),
                Some(r) if r.size != len as u64 => self.problem(
                    self.inode_place(ino),
                    format!("symlink size {} but its target has {len} bytes", r.size),
                ),
                _ => {}
            }
        }
        let missing_targets: Vec<u64> = self
            .inodes
            .iter()
            .filter(|(ino, r)| r.kind == FileKind::Symlink && !symlinks.contains_key(ino))
            .map(|(&ino, _)| ino)
            .collect();
        for ino in missing_targets {
            self.problem(self.inode_place(ino), "symlink without a target");
        }
    }

    /// Every extended attribute belongs to an inode that exists.
    fn check_xattr_owners(&mut self, xattrs: &BTreeMap<u64, u64>) {
        for &ino in xattrs.keys() {
            if !self.inodes.contains_key(&ino) {
                self.problem(
                    format!("inode {ino}"),
                    "extended attributes of a missing inode",
                );
            }
        }
    }

    /// Every group root record names a live directory other than the root, with a group id of
    /// its own (two roots sharing an id would merge two subtrees' segments into one group).
    fn check_group_roots(&mut self, roots: &BTreeMap<u64, (crate::engine::GroupId, String)>) {
        let mut owner: BTreeMap<crate::engine::GroupId, u64> = BTreeMap::new();
        for (&dir, (group, place)) in roots {
            match self.inodes.get(&dir) {
                None => self.problem(
                    place.clone(),
                    format!("group root record of missing directory {dir}"),
                ),
                Some(r) if r.kind != FileKind::Directory => self.problem(
                    place.clone(),
                    format!(
                        "group root record of {}, not a directory",
                        self.inode_place(dir)
                    ),
                ),
                _ => {}
            }
            if dir == ROOT_INO || *group == crate::engine::ROOT_GROUP {
                self.problem(
                    place.clone(),
                    format!("group root record of directory {dir} with group {group}: the root group is the root directory's alone"),
                );
            }
            if let Some(other) = owner.insert(*group, dir) {
                self.problem(
                    place.clone(),
                    format!("group {group} has two roots: directories {other} and {dir}"),
                );
            }
        }
        self.figures.group_roots = roots.len() as u64;
    }

    fn check_entries(&mut self) {
        let mut found = Vec::new();
        for e in &self.entries {
            let name = String::from_utf8_lossy(&e.name);
            match self.inodes.get(&e.parent) {
                None => found.push((
                    format!("directory {}", e.parent),
                    format!(
                        "entry '{name}' -> inode {} in a directory that does not exist",
                        e.ino
                    ),
                )),
                Some(p) if p.kind != FileKind::Directory => found.push((
                    self.inode_place(e.parent),
                    format!("entry '{name}' in an inode that is not a directory"),
                )),
                _ => {}
            }
            let place = format!("{} entry '{name}'", self.path_of(e.parent));
            match self.inodes.get(&e.ino) {
                None => found.push((
                    place,
                    format!("points at inode {}, which does not exist", e.ino),
                )),
                Some(r) if r.kind != e.kind => found.push((
                    place,
                    format!("says {:?} but inode {} is {:?}", e.kind, e.ino, r.kind),
                )),
                Some(_) if e.ino == ROOT_INO => {
                    found.push((place, "names the root directory".into()))
                }
                _ => {}
            }
        }
        for (p, w) in found {
            self.problem(p, w);
        }
    }

    fn check_pages(&mut self, pages: &BTreeMap<u64, Vec<(u64, u32, echeck::Place)>>) {
        let mut found = Vec::new();
        for (&ino, list) in pages {
            let Some(r) = self.inodes.get(&ino) else {
                found.push((
                    format!("inode {ino}"),
                    format!(
                        "{} data page(s) of an inode that does not exist",
                        list.len()
                    ),
                ));
                continue;
            };
            if r.kind != FileKind::Regular {
                found.push((
                    self.inode_place(ino),
                    format!("{} data page(s) of a {:?}", list.len(), r.kind),
                ));
                continue;
            }
            for &(page, len, place) in list {
                let end = page.saturating_mul(PAGE_SIZE).saturating_add(len as u64);
                if len as u64 > PAGE_SIZE {
                    found.push((
                        self.inode_place(ino),
                        format!(
                            "data page {page} holds {len} bytes (more than a page), at {}",
                            self.e.describe(place)
                        ),
                    ));
                } else if end > r.size && !allocated_past_the_end(len) {
                    found.push((
                        self.inode_place(ino),
                        format!(
                            "data page {page} ends at byte {end}, beyond the file's size {}, \
                             at {}",
                            r.size,
                            self.e.describe(place)
                        ),
                    ));
                }
            }
            if r.pages != list.len() as u64 {
                found.push((
                    self.inode_place(ino),
                    format!(
                        "inode counts {} data page(s), the store holds {}",
                        r.pages,
                        list.len()
                    ),
                ));
            }
        }
        for (&ino, r) in &self.inodes {
            if r.kind == FileKind::Regular && r.pages > 0 && !pages.contains_key(&ino) {
                found.push((
                    self.inode_place(ino),
                    format!(
                        "inode counts {} data page(s), the store holds none",
                        r.pages
                    ),
                ));
            }
        }
        for (p, w) in found {
            self.problem(p, w);
        }
    }

    /// One problem per file that damaged records belong to.
    fn name_damaged_files(&mut self) {
        self.collect_lost_names();
        let mut by_ino: BTreeMap<u64, (Vec<String>, String)> = BTreeMap::new();
        let mut other = Vec::new();
        for d in &self.e.damaged {
            let k = &d.key;
            let part = damaged_part(k);
            match part {
                Some((ino, part)) => {
                    let entry = by_ino
                        .entry(ino)
                        .or_insert_with(|| (Vec::new(), self.e.describe(d.place)));
                    if !entry.0.contains(&part) {
                        entry.0.push(part);
                    }
                }
                None => other.push(d),
            }
        }
        for (ino, (parts, place)) in by_ino {
            self.report_damaged_file(ino, parts, place);
        }
        for d in other {
            self.problem(
                self.e.describe(d.place),
                format!("damaged record of key {}", hex(&d.key)),
            );
        }
    }

    /// The names in damaged entry records, so that a file named only there still gets a path.
    fn collect_lost_names(&mut self) {
        for d in &self.e.damaged {
            if d.key.first() == Some(&keys::TAG_DIRENT) && d.key.len() == 17 {
                let parent = be_u64(&d.key[1..9]);
                for entry in d
                    .value
                    .as_deref()
                    .and_then(keys::decode_dirents)
                    .unwrap_or_default()
                {
                    self.lost_names.insert(entry.ino, (parent, entry.name));
                }
            }
        }
    }

    /// One problem for a damaged file, naming its damaged parts (the first eight), and its
    /// entry in the report's list of damaged files.
    fn report_damaged_file(&mut self, ino: u64, parts: Vec<String>, place: String) {
        let path = self.path_of(ino);
        let shown: Vec<String> = parts.iter().take(8).cloned().collect();
        let more = if parts.len() > 8 {
            format!(" and {} more", parts.len() - 8)
        } else {
            String::new()
        };
        self.problem(
            format!("{path} (inode {ino})"),
            format!(
                "damaged file: {}{more} (first at {place}); reading it fails, or the next \
                 mount serves an older version",
                shown.join(", ")
            ),
        );
        self.damaged_files.push(DamagedFile {
            ino,
            path,
            parts,
            place,
        });
    }
}

/// The inode a damaged record belongs to and which part of it the record is; None for a key
/// that is no file's.
fn damaged_part(k: &[u8]) -> Option<(u64, String)> {
    match k.first() {
        Some(&keys::TAG_CHUNK) if k.len() == 17 => {
            Some((be_u64(&k[1..9]), format!("data page {}", be_u64(&k[9..17]))))
        }
        Some(&keys::TAG_INODE) if k.len() == 9 => {
            Some((be_u64(&k[1..9]), "inode record".to_string()))
        }
        Some(&keys::TAG_DIRENT) if k.len() == 17 => {
            Some((be_u64(&k[1..9]), "directory entries".to_string()))
        }
        Some(&keys::TAG_SYMLINK) if k.len() == 9 => {
            Some((be_u64(&k[1..9]), "symlink target".to_string()))
        }
        Some(&keys::TAG_XATTR) if k.len() > 9 => Some((
            be_u64(&k[1..9]),
            format!("xattr {}", String::from_utf8_lossy(&k[9..])),
        )),
        Some(&keys::TAG_ORPHAN) if k.len() == 9 => {
            Some((be_u64(&k[1..9]), "orphan record".to_string()))
        }
        _ => None,
    }
}

fn join_rev(parts: &[String]) -> String {
    parts.iter().rev().cloned().collect::<Vec<_>>().join("/")
}

/// Whether a data page of `len` stored bytes may reach past the end of file: what fallocate
/// allocates there (ext4 keeps blocks past the size too), an unwritten page (empty) or a page
/// padded with zeros to full length. A partial page reaching past the size is never stored: a
/// truncation cuts the page that holds the new end to it, so its bytes would be stale data
/// that growing the file again would show.
fn allocated_past_the_end(len: u32) -> bool {
    len == 0 || u64::from(len) == PAGE_SIZE
}
