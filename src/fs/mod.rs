//! The filesystem layer: inodes, directory entries, file pages, symlinks and xattrs as engine
//! records (layout in [`keys`]), driven in terms of inode numbers.
//!
//! - [`Fs`] is the core. It uses only the engine's public API and knows nothing of FUSE, so it is
//!   tested without a mount (`tests/fs_*.rs`).
//! - [`fuse_adapter`] is the only code that names fuser's `Filesystem`, `Request` and `Reply*`.
//! - [`FsError::errno`] is the one errno table.
//!
//! Rules kept here:
//! 1. Every metadata operation (create, mknod, mkdir, symlink, link, unlink, rmdir, rename,
//!    setattr, setxattr, removexattr) is ONE `engine.write` batch: atomic after a crash.
//! 2. Inode numbers are never reused: a persisted high-water mark (`M inode_high_water`) is
//!    raised in blocks of [`INODE_RESERVE_BLOCK`], in the same batch as the create that needs it.
//! 3. Open-but-unlinked files: the unlink's batch writes an orphan record (`O ino`) and keeps the
//!    data; the last release purges it; mount purges orphans left by a crash. A file unlinked
//!    with no open handle is purged in the unlink's own batch; if the kernel still holds lookup
//!    references to it, a "ghost" copy of its attributes stays in memory until `forget`, so
//!    `getattr` keeps working (nobody can read its data without an open handle).
//! 4. A data write larger than one engine batch is split into several batches (not atomic across
//!    a crash, as in POSIX); each batch carries the inode record with the size reached so far.
//! 5. Truncate and purge delete pages with one `DeleteRange`/`DeletePrefix`, never a tombstone
//!    per page. A partial last page is rewritten shortened, so bytes past the size read as zero.
//!    Their work is in proportion to the pages the file stores past the cut, never to its size
//!    (holes are not visited: `truncate_and_unlink_work_grows_with_stored_pages_not_file_size`).
//!
//! Locking: one mutex (`Fs::state`) serialises every operation that writes, and guards the
//! in-memory node table (lookup counts, open counts, cached attributes). Reads take it only to
//! read the size, then read pages without it.
//!
//! Durability (DESIGN.md section 6): a write or metadata operation is visible to every reader
//! when it returns. It is durable after fsync/fdatasync/fsyncdir (all call `Engine::sync`, so
//! they make *everything* written so far durable, not just that file), after a clean unmount
//! or SIGINT/SIGTERM (the daemon syncs and closes the engine), and at the latest after the
//! engine's `sync_interval` (5 s by default). The kernel writeback cache is off unless the
//! mount asks for it (`FsOptions::writeback_cache`), so write(2) itself reports ENOSPC (decided
//! before the batch is taken). The engine writes behind: a disk
//! error writing a batch that was already acknowledged latches the store, and reaches the user
//! as EIO at the next write or fsync, as ext4's writeback errors do.
//!
//! Other decisions: atime follows the mount's atime option, `relatime` by default ([`atime`]);
//! permission checks are the kernel's (`default_permissions` is always on, and `FUSE_POSIX_ACL`
//! makes it enforce ACLs, [`acl`]); `access()` checks mode bits and the access ACL for callers
//! that ask; fallocate reserves space by storing zero pages and has ext4's modes ([`falloc`]);
//! `st_blocks` is 8 per stored 4 KiB page (directories report 8).

pub mod acl;
pub mod atime;
pub mod check;
pub mod copy_range;
pub mod error;
pub mod export;
pub mod falloc;
pub mod fsck_report;
pub mod fuse_adapter;
pub mod groups;
pub mod inode_flags;
pub mod kernel_time;
pub mod keys;
pub mod seek;
pub mod stats;
pub mod whiteout;
pub mod xattr_names;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::SystemTime;

use parking_lot::{Mutex, RwLock};

pub use error::{FsError, FsResult};
pub use keys::FileKind;

use crate::engine::{Engine, GroupId, MAX_BATCH_BYTES, Mutation, ROOT_GROUP};
use groups::{GroupMap, Regroup};
use keys::{DirEntry, InodeRecord, Timestamp};

/// The group every delete (tombstone, range delete) is written to. A tombstone must outlive
/// the puts it shadows, wherever they are, and is dropped by compaction once they are gone; in
/// the root group it never keeps a removed subtree's group alive (`rm -r` of a group root leaves
/// that group owning nothing).
const TOMBSTONE_GROUP: GroupId = ROOT_GROUP;

/// Filesystem settings.
#[derive(Clone, Debug)]
pub struct FsOptions {
    /// A directory becomes a compaction group root past this many bytes of live data under it
    /// (outside deeper roots), and merges back below a quarter of it.
    pub group_split_bytes: u64,
    /// Leave the rebuild of the group map's byte counts (a read of every inode record) to the
    /// caller: [`Fs::rebuild_group_map`], typically in a thread of its own once the mount is
    /// live. Until it ends, splits and merges wait and copies stay in their groups.
    pub defer_group_map: bool,
    /// When reads, listings and readlinks change atime (the mount's atime option).
    pub atime: atime::AtimeMode,
    /// Ask the kernel for its writeback cache (`-o writeback_cache`): write(2) returns once the
    /// page cache holds the data, which reaches us later, in larger writes. ENOSPC and EIO
    /// then surface at fsync(2) or close(2), not at write(2) (README, "Mount options").
    pub writeback_cache: bool,
}

impl Default for FsOptions {
    fn default() -> Self {
        FsOptions {
            group_split_bytes: groups::DEFAULT_SPLIT_BYTES,
            defer_group_map: false,
            atime: atime::AtimeMode::default(),
            writeback_cache: false,
        }
    }
}

/// Inode records read per step of a group map rebuild (each step holds the state lock).
const GROUP_MAP_CHUNK: usize = 4096;

/// Live bytes a file counts towards its home directory's group (stored pages, so a sparse file
/// counts what it stores).
fn file_bytes(rec: &InodeRecord) -> u64 {
    if rec.kind == FileKind::Regular {
        rec.pages.saturating_mul(keys::PAGE_SIZE)
    } else {
        0
    }
}

/// The root directory's inode number.
pub const ROOT_INO: u64 = 1;
/// Longest name of a directory entry, in bytes (as ext4).
pub const MAX_NAME_LEN: usize = 255;
/// Longest symlink target, in bytes (PATH_MAX - 1).
pub const MAX_SYMLINK_LEN: usize = 4095;
/// Longest xattr name, in bytes (as the VFS).
pub const MAX_XATTR_NAME_LEN: usize = 255;
/// Largest xattr value, in bytes (as the VFS, XATTR_SIZE_MAX).
pub const MAX_XATTR_VALUE_LEN: usize = 65536;
/// Largest file size: 8 TiB. Writes or truncates beyond get EFBIG.
pub const MAX_FILE_SIZE: u64 = 8 << 40;
/// Inode numbers reserved per high-water-mark record.
pub const INODE_RESERVE_BLOCK: u64 = 1024;
/// Block size reported in `st_blksize` and statfs.
pub const BLOCK_SIZE: u32 = 4096;
/// Virtual xattr on the root directory that returns `logstorfs stats --json` output. Not listed
/// by listxattr, not settable.
pub const STATS_XATTR: &[u8] = b"user.logstorfs.stats";
/// Virtual xattr prefix on the root directory: `getxattr(root, PREFIX + decimal N)` writes mark
/// N into the I/O log of a mount recording one (`mount --test-record-io`) and returns an empty
/// value; ENODATA on any other mount. A power-cut replay workload sends it once step N is
/// confirmed, so that the replay knows which steps every cut point must keep.
pub const REPLAY_MARK_XATTR_PREFIX: &[u8] = b"user.logstorfs.replay_mark.";
/// Directory records returned per readdir call (the adapter stops early when the reply is full).
const READDIR_BATCH: usize = 128;
/// Most data pages in one write batch. 31 pages with their record headers and keys, plus the
/// inode record, fill exactly 32 blocks of 4 KiB (128 KiB): half a write buffer, and a divisor
/// of the segment size, so that consecutive batches pack segments with little padding. (Full
/// 63-page batches left up to a quarter of each segment unused when a short batch came between
/// them.)
pub const WRITE_PAGES_PER_BATCH: usize = 31;
/// The record directory (`engine/format.rs`) copies each record's header and key again: a
/// batch of 31 pages and the inode still fits in 32 blocks with it.
const _: () = assert!(
    WRITE_PAGES_PER_BATCH * (4096 + 17 + crate::engine::put_overhead_bytes(17))
        + keys::INODE_RECORD_SIZE
        + 9
        + crate::engine::put_overhead_bytes(9)
        + 64
        + 32
        <= 32 * 4096
);
const _: () = assert!(32 * 4096 <= MAX_BATCH_BYTES);

/// Who is asking (for ownership of new inodes and access checks).
#[derive(Clone, Copy, Debug)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
}

/// Attributes returned to callers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub kind: FileKind,
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u32,
    pub flags: u32,
    pub size: u64,
    /// 512-byte blocks: 8 per stored page.
    pub blocks: u64,
    pub blksize: u32,
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
    pub crtime: SystemTime,
}

/// A time to set: now, or a given time.
#[derive(Clone, Copy, Debug)]
pub enum TimeSet {
    Now,
    At(SystemTime),
}

/// What setattr changes; `None` leaves a field alone.
#[derive(Clone, Copy, Debug, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<TimeSet>,
    pub mtime: Option<TimeSet>,
    pub ctime: Option<SystemTime>,
    pub crtime: Option<SystemTime>,
    pub flags: Option<u32>,
    /// Drop the set-user-ID and set-group-ID bits as a chown, or a truncation by a caller without
    /// `CAP_FSETID`, drops them (see [`drop_privileges`]; [`Fs::setattr_as`] says whether the
    /// caller is in the file's group): the kernel leaves this to us under
    /// `FUSE_HANDLE_KILLPRIV_V2`. Ignored for directories and when `mode` is set.
    pub kill_suid_sgid: bool,
}

/// Whether the caller of a change is in group `gid` (its filesystem group ID or a supplementary
/// group) or has `CAP_FSETID`: Linux's `in_group_or_capable`, which decides whether a change
/// drops the set-group-ID bit of a file whose group may not execute.
pub type InGroup<'a> = &'a dyn Fn(u32) -> bool;

/// [`InGroup`] of a caller with `CAP_FSETID`, and of the daemon's own changes.
pub const IN_EVERY_GROUP: InGroup<'static> = &|_| true;

/// One readdir entry; `cookie` is the offset to pass to continue after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirListEntry {
    pub ino: u64,
    pub kind: FileKind,
    pub name: Vec<u8>,
    pub cookie: u64,
}

/// rename(2) flags we understand.
pub const RENAME_NOREPLACE: u32 = 1;
pub const RENAME_EXCHANGE: u32 = 2;
/// Leave a whiteout at the source name (see [`whiteout`]).
pub const RENAME_WHITEOUT: u32 = 4;

/// Filesystem figures for statfs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatFs {
    pub blocks: u64,
    pub blocks_free: u64,
    pub blocks_available: u64,
    pub files: u64,
    pub files_free: u64,
    pub block_size: u32,
    pub name_len_max: u32,
}

/// An inode the kernel holds references to (lookups or open handles), plus the root.
#[derive(Debug)]
struct Node {
    rec: InodeRecord,
    lookups: u64,
    opens: u64,
    /// nlink reached 0 while open: the orphan record exists, data kept until the last release.
    orphan: bool,
    /// The inode's records are deleted; only this in-memory copy remains until `forget`.
    gone: bool,
}

struct State {
    nodes: HashMap<u64, Node>,
    /// Next inode number to hand out.
    next_ino: u64,
    /// Persisted high-water mark: every number below it may have been used.
    ino_limit: u64,
    /// Directory -> compaction group, and live bytes per directory. Shared with the engine's
    /// separator and compaction (`Fs::current_group`), which must not wait on `Fs::state`:
    /// taken after `state`, and never held across an engine call.
    groups: Arc<RwLock<GroupMap>>,
}

impl State {
    /// The group a directory's entries go to (its own group).
    fn dir_group(&self, dir: u64) -> GroupId {
        self.groups.read().group_of(dir)
    }

    /// The group `rec`'s records go to: a directory's own group (a directory not yet in the map,
    /// being created, takes its parent's), a file's home directory's.
    fn record_group(&self, ino: u64, rec: &InodeRecord) -> GroupId {
        let groups = self.groups.read();
        if rec.kind == FileKind::Directory && groups.contains(ino) {
            groups.group_of(ino)
        } else {
            groups.group_of(rec.parent)
        }
    }
}

/// The changes of one operation, turned into one engine batch by [`Txn::into_batch`].
#[derive(Default)]
struct Txn {
    /// Mutations that go first (purges, range deletes).
    pre: Vec<Mutation>,
    /// Dirent lists changed: (parent, hash) -> (group, entries). The group is set at commit.
    dirents: BTreeMap<(u64, u64), (GroupId, Vec<DirEntry>)>,
    /// Inode records changed (their `group` is set at commit).
    inodes: BTreeMap<u64, InodeRecord>,
    /// The records of `inodes` as they were before this operation (for the group accounting).
    loaded: BTreeMap<u64, InodeRecord>,
    /// Inodes this operation creates.
    created: BTreeSet<u64>,
    /// Inodes purged by this batch (their record is deleted, not rewritten).
    purged: BTreeSet<u64>,
    /// Mutations that go last (data, symlink targets, xattrs, metadata).
    post: Vec<Mutation>,
    /// Inode allocation: (next_ino, ino_limit) after commit.
    alloc: Option<(u64, u64)>,
}

impl Txn {
    fn into_batch(self) -> Vec<Mutation> {
        let mut batch = self.pre;
        for ((parent, hash), (group, entries)) in self.dirents {
            let key = keys::dirent_key(parent, hash);
            if entries.is_empty() {
                batch.push(Mutation::delete(TOMBSTONE_GROUP, key));
            } else {
                batch.push(Mutation::put(group, key, keys::encode_dirents(&entries)));
            }
        }
        for (ino, rec) in self.inodes {
            if !self.purged.contains(&ino) {
                batch.push(Mutation::put(rec.group, keys::inode_key(ino), rec.encode()));
            }
        }
        batch.extend(self.post);
        batch
    }
}

/// The filesystem core.
pub struct Fs {
    engine: Engine,
    /// Lock order: `state` is the only lock; engine calls are made while holding it.
    state: Mutex<State>,
    next_fh: AtomicU64,
    /// Set at unmount: a group map rebuild still running stops (see `rebuild_group_map`).
    rebuild_stop: AtomicBool,
    atime: atime::AtimeMode,
    writeback_cache: bool,
}

fn check_name(name: &[u8]) -> FsResult<()> {
    if name.len() > MAX_NAME_LEN {
        return Err(FsError::NameTooLong);
    }
    if name.is_empty() || name.contains(&b'/') || name.contains(&0) {
        return Err(FsError::Invalid);
    }
    Ok(())
}

fn corrupt(what: &str, key: &[u8]) -> FsError {
    FsError::Corrupt(format!("{what} at key {key:02x?}"))
}

fn to_attr(ino: u64, rec: &InodeRecord) -> Attr {
    Attr {
        ino,
        kind: rec.kind,
        perm: rec.perm,
        nlink: rec.nlink,
        uid: rec.uid,
        gid: rec.gid,
        rdev: rec.rdev,
        flags: rec.flags,
        size: rec.size,
        blocks: match rec.kind {
            FileKind::Regular => rec.pages * (keys::PAGE_SIZE / 512),
            FileKind::Directory => keys::PAGE_SIZE / 512,
            _ => 0,
        },
        blksize: BLOCK_SIZE,
        atime: rec.atime.to_system(),
        mtime: rec.mtime.to_system(),
        ctime: rec.ctime.to_system(),
        crtime: rec.crtime.to_system(),
    }
}

/// The xattr that holds a file's capabilities: dropped by writes, truncation and chown.
const CAPABILITY_XATTR: &[u8] = b"security.capability";

/// Clears what a write, truncation or fallocate by a caller without `CAP_FSETID`, or any chown,
/// clears on Linux (`setattr_should_drop_suidgid`, as ext4 shows it): the set-user-ID bit, and
/// the set-group-ID bit if the group may execute or the caller is not in the file's group
/// (without group execute the bit marks mandatory locking, and a member of the group keeps it).
fn drop_privileges(rec: &mut InodeRecord, in_group: InGroup) {
    rec.perm &= !(libc::S_ISUID as u16);
    if rec.perm & (libc::S_ISGID as u16) != 0
        && (rec.perm & (libc::S_IXGRP as u16) != 0 || !in_group(rec.gid))
    {
        rec.perm &= !(libc::S_ISGID as u16);
    }
}

fn resolve_time(t: TimeSet, now: Timestamp) -> Timestamp {
    match t {
        TimeSet::Now => now,
        TimeSet::At(s) => Timestamp::from_system(s),
    }
}

/// What the engine's separator and compaction ask to place a copy: the group a key belongs to
/// now. Entries go to their directory's group; an inode's records (inode, pages, symlink
/// target, xattrs) to the directory itself for a directory, else to the home directory's
/// group, read from the inode record (the engine passes a reader). Other records (metadata,
/// orphans, group roots) stay where they are. Takes only the group map's read lock.
fn current_group(groups: Arc<RwLock<GroupMap>>) -> crate::engine::CurrentGroup {
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
fn for_each_record(
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
fn dir_path(engine: &Engine, dir: u64) -> Option<String> {
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

/// The purge of an inode: every record it owns, as a handful of range deletes.
fn purge_mutations(ino: u64, rec: &InodeRecord) -> Vec<Mutation> {
    let g = TOMBSTONE_GROUP;
    let mut m = vec![
        Mutation::delete_prefix(g, keys::chunk_prefix(ino)),
        Mutation::delete_prefix(g, keys::xattr_prefix(ino)),
        Mutation::delete(g, keys::inode_key(ino)),
    ];
    if rec.kind == FileKind::Symlink {
        m.push(Mutation::delete(g, keys::symlink_key(ino)));
    }
    m
}

impl Fs {
    /// [`Fs::with_options`] with the default options.
    pub fn new(engine: Engine) -> FsResult<Fs> {
        Fs::with_options(engine, FsOptions::default())
    }

    /// Mounts the filesystem held by `engine`: creates the root directory on first use, loads
    /// the inode high-water mark, purges orphans left by a crash and rebuilds the directory ->
    /// group map with its byte counts.
    pub fn with_options(engine: Engine, options: FsOptions) -> FsResult<Fs> {
        let now = Timestamp::now();
        let root = match engine.get(&keys::inode_key(ROOT_INO))? {
            Some(v) => InodeRecord::decode(&v)
                .ok_or_else(|| corrupt("root inode record", &keys::inode_key(ROOT_INO)))?,
            None => {
                // SAFETY: getuid/getgid cannot fail and have no preconditions.
                let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
                let root = InodeRecord {
                    kind: FileKind::Directory,
                    perm: 0o755,
                    nlink: 2,
                    uid,
                    gid,
                    rdev: 0,
                    flags: 0,
                    size: 0,
                    pages: 0,
                    atime: now,
                    mtime: now,
                    ctime: now,
                    crtime: now,
                    group: ROOT_GROUP,
                    parent: ROOT_INO,
                };
                engine.write(&[
                    Mutation::put(ROOT_GROUP, keys::inode_key(ROOT_INO), root.encode()),
                    Mutation::put(
                        ROOT_GROUP,
                        keys::meta_key(keys::META_INODE_HIGH_WATER),
                        keys::encode_u64(ROOT_INO + 1),
                    ),
                ])?;
                root
            }
        };
        let hw_key = keys::meta_key(keys::META_INODE_HIGH_WATER);
        let high_water = match engine.get(&hw_key)? {
            Some(v) => {
                keys::decode_u64(&v).ok_or_else(|| corrupt("inode high-water mark", &hw_key))?
            }
            None => return Err(corrupt("missing inode high-water mark", &hw_key)),
        };
        let mut nodes = HashMap::new();
        nodes.insert(
            ROOT_INO,
            Node {
                rec: root,
                lookups: 0,
                opens: 0,
                orphan: false,
                gone: false,
            },
        );
        let fs = Fs {
            engine,
            state: Mutex::new(State {
                nodes,
                next_ino: high_water,
                ino_limit: high_water,
                groups: Arc::new(RwLock::new(GroupMap::new(options.group_split_bytes))),
            }),
            next_fh: AtomicU64::new(1),
            rebuild_stop: AtomicBool::new(false),
            atime: options.atime,
            writeback_cache: options.writeback_cache,
        };
        let started = std::time::Instant::now();
        // A read-only mount leaves a crash's orphans for the next writable one.
        if !fs.engine.is_read_only() {
            fs.reclaim_orphans()?;
        }
        let orphans_at = started.elapsed();
        // The stored roots now (a few records); the directories and bytes by a rebuild.
        let mut roots = Vec::new();
        for_each_record(&fs.engine, &keys::group_root_prefix(), |key, value| {
            let dir = keys::group_root_ino(key).ok_or_else(|| corrupt("group root key", key))?;
            let group =
                keys::decode_group(value).ok_or_else(|| corrupt("group root record", key))?;
            roots.push((dir, group));
            Ok(())
        })?;
        let shared = fs.state.lock().groups.clone();
        *shared.write() = GroupMap::loading(options.group_split_bytes, roots);
        fs.engine.set_current_group(current_group(shared));
        log::info!("mount: orphans {:.3} s", orphans_at.as_secs_f64());
        if !options.defer_group_map {
            fs.rebuild_group_map()?;
        }
        Ok(fs)
    }

    /// Rebuilds the group map from the store, if a rebuild is pending (see
    /// [`FsOptions::defer_group_map`]): every directory and its parent, and each file's stored
    /// bytes counted towards its home directory, from one pass over the inode records (adjacent
    /// in key order), a chunk at a time, while the filesystem serves requests.
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

    /// Whether a group map rebuild is pending (see [`FsOptions::defer_group_map`]).
    pub fn group_map_loading(&self) -> bool {
        self.state.lock().groups.read().is_loading()
    }

    /// Every known directory with its parent, group (if a root) and bytes (for tests).
    pub fn group_map_snapshot(&self) -> Vec<(u64, u64, Option<GroupId>, u64)> {
        self.state.lock().groups.read().snapshot()
    }

    /// Purges every inode recorded as an orphan (unlinked while open when the daemon stopped).
    fn reclaim_orphans(&self) -> FsResult<()> {
        loop {
            let found = self.engine.scan(&keys::orphan_prefix(), None, 256)?;
            if found.is_empty() {
                return Ok(());
            }
            for (key, _) in found {
                let ino = keys::orphan_ino(&key).ok_or_else(|| corrupt("orphan key", &key))?;
                let mut batch = match self.engine.get(&keys::inode_key(ino))? {
                    Some(v) => {
                        let rec = InodeRecord::decode(&v)
                            .ok_or_else(|| corrupt("orphan inode", &keys::inode_key(ino)))?;
                        purge_mutations(ino, &rec)
                    }
                    None => Vec::new(),
                };
                batch.push(Mutation::delete(ROOT_GROUP, key));
                self.engine.write(&batch)?;
                log::info!("reclaimed orphan inode {ino}");
            }
        }
    }

    /// Whether the mount asked for the kernel's writeback cache ([`FsOptions::writeback_cache`]).
    pub fn writeback_cache(&self) -> bool {
        self.writeback_cache
    }

    /// The engine underneath (for stats).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The compaction group of directory `dir` (its nearest group root's).
    pub fn group_of_dir(&self, dir: u64) -> GroupId {
        self.state.lock().dir_group(dir)
    }

    /// Every group root with the live bytes under it (outside deeper roots), root group first.
    pub fn group_roots(&self) -> Vec<groups::GroupRoot> {
        self.state.lock().groups.read().roots()
    }

    /// Syncs and closes the engine.
    pub fn close(self) -> FsResult<()> {
        self.engine.close()?;
        Ok(())
    }

    // ----- helpers (called with the state lock held) -----

    fn load(&self, st: &State, ino: u64) -> FsResult<InodeRecord> {
        if let Some(n) = st.nodes.get(&ino) {
            // A ghost (gone) still answers getattr; callers that need a live inode check.
            return Ok(n.rec.clone());
        }
        let key = keys::inode_key(ino);
        match self.engine.get(&key)? {
            Some(v) => InodeRecord::decode(&v).ok_or_else(|| corrupt("inode record", &key)),
            None => Err(FsError::NotFound),
        }
    }

    /// A directory that still exists (not removed).
    fn load_dir(&self, st: &State, ino: u64) -> FsResult<InodeRecord> {
        let rec = self.load(st, ino)?;
        if rec.kind != FileKind::Directory {
            return Err(FsError::NotDir);
        }
        if rec.nlink == 0 {
            return Err(FsError::NotFound);
        }
        Ok(rec)
    }

    fn read_dirents(&self, parent: u64, hash: u64) -> FsResult<Vec<DirEntry>> {
        let key = keys::dirent_key(parent, hash);
        match self.engine.get(&key)? {
            Some(v) => keys::decode_dirents(&v).ok_or_else(|| corrupt("directory entry", &key)),
            None => Ok(Vec::new()),
        }
    }

    fn find_entry(&self, parent: u64, name: &[u8]) -> FsResult<Option<DirEntry>> {
        let list = self.read_dirents(parent, keys::name_hash(name))?;
        Ok(list.into_iter().find(|e| e.name == name))
    }

    fn txn_inode<'t>(
        &self,
        st: &State,
        txn: &'t mut Txn,
        ino: u64,
    ) -> FsResult<&'t mut InodeRecord> {
        if !txn.inodes.contains_key(&ino) {
            let rec = self.load(st, ino)?;
            txn.loaded.insert(ino, rec.clone());
            txn.inodes.insert(ino, rec);
        }
        Ok(txn.inodes.get_mut(&ino).expect("inserted above"))
    }

    fn txn_dirents<'t>(
        &self,
        txn: &'t mut Txn,
        parent: u64,
        name: &[u8],
    ) -> FsResult<&'t mut Vec<DirEntry>> {
        let hash = keys::name_hash(name);
        if let std::collections::btree_map::Entry::Vacant(e) = txn.dirents.entry((parent, hash)) {
            let list = self.read_dirents(parent, hash)?;
            e.insert((ROOT_GROUP, list));
        }
        Ok(&mut txn
            .dirents
            .get_mut(&(parent, hash))
            .expect("inserted above")
            .1)
    }

    fn add_entry(&self, txn: &mut Txn, parent: u64, entry: DirEntry) -> FsResult<()> {
        let list = self.txn_dirents(txn, parent, &entry.name)?;
        if list.len() >= keys::MAX_ENTRIES_PER_HASH {
            // Hundreds of names sharing one 56-bit hash: treat as a full directory.
            return Err(FsError::Engine(crate::engine::EngineError::NoSpace));
        }
        list.push(entry);
        Ok(())
    }

    fn remove_entry(&self, txn: &mut Txn, parent: u64, name: &[u8]) -> FsResult<()> {
        let list = self.txn_dirents(txn, parent, name)?;
        let before = list.len();
        list.retain(|e| e.name != name);
        if list.len() == before {
            return Err(FsError::NotFound);
        }
        Ok(())
    }

    fn set_entry(
        &self,
        txn: &mut Txn,
        parent: u64,
        name: &[u8],
        ino: u64,
        kind: FileKind,
    ) -> FsResult<()> {
        let list = self.txn_dirents(txn, parent, name)?;
        let e = list
            .iter_mut()
            .find(|e| e.name == name)
            .ok_or(FsError::NotFound)?;
        e.ino = ino;
        e.kind = kind;
        Ok(())
    }

    fn alloc_ino(st: &State, txn: &mut Txn) -> u64 {
        let (next, limit) = txn.alloc.unwrap_or((st.next_ino, st.ino_limit));
        let ino = next;
        let mut limit = limit;
        if ino >= limit {
            limit = ino + INODE_RESERVE_BLOCK;
            // IMPORTANT: the raised mark is in the same batch as the inode that needs it, so a
            // crash can never leave an inode numbered at or above the persisted mark.
            txn.post.push(Mutation::put(
                ROOT_GROUP,
                keys::meta_key(keys::META_INODE_HIGH_WATER),
                keys::encode_u64(limit),
            ));
        }
        txn.alloc = Some((ino + 1, limit));
        ino
    }

    /// Drops the link of `ino` in directory `from` inside `txn`: at zero links, purge now (no
    /// open handle) or record an orphan (open handles keep the data until the last release).
    fn drop_link(
        &self,
        st: &State,
        txn: &mut Txn,
        ino: u64,
        from: u64,
        now: Timestamp,
    ) -> FsResult<()> {
        let opens = st.nodes.get(&ino).map_or(0, |n| n.opens);
        let rec = self.txn_inode(st, txn, ino)?;
        rec.nlink = rec.nlink.saturating_sub(1);
        if rec.kind == FileKind::Directory {
            // A removed directory loses both its entry and its "." link.
            rec.nlink = 0;
        } else if rec.parent == from {
            // The home entry goes: the other links (if any) are not known by name, so the file's
            // home becomes the root, which always exists.
            rec.parent = ROOT_INO;
        }
        rec.ctime = now;
        if rec.nlink > 0 {
            return Ok(());
        }
        let rec = rec.clone();
        if opens > 0 {
            txn.post
                .push(Mutation::put(ROOT_GROUP, keys::orphan_key(ino), Vec::new()));
        } else {
            txn.pre.extend(purge_mutations(ino, &rec));
            txn.purged.insert(ino);
        }
        Ok(())
    }

    /// Writes `txn` as one batch and, once it is applied, updates the in-memory state: the
    /// node table, and the group map's directories and byte counts (which may then split or
    /// merge a group).
    fn commit(&self, st: &mut State, mut txn: Txn) -> FsResult<()> {
        // Records go to their current groups (a directory's entries to its own group).
        for (&(parent, _), (group, _)) in txn.dirents.iter_mut() {
            *group = st.dir_group(parent);
        }
        for (&ino, rec) in txn.inodes.iter_mut() {
            rec.group = st.record_group(ino, rec);
        }
        for &ino in &txn.purged {
            if st.groups.read().root_group(ino).is_some() {
                txn.post
                    .push(Mutation::delete(TOMBSTONE_GROUP, keys::group_root_key(ino)));
            }
        }
        let alloc = txn.alloc;
        let purged = std::mem::take(&mut txn.purged);
        let loaded = std::mem::take(&mut txn.loaded);
        let created = std::mem::take(&mut txn.created);
        let inodes: Vec<(u64, InodeRecord)> =
            txn.inodes.iter().map(|(k, v)| (*k, v.clone())).collect();
        txn.purged = purged.clone();
        let batch = txn.into_batch();
        if !batch.is_empty() {
            self.engine.write(&batch)?;
        }
        if let Some((next, limit)) = alloc {
            st.next_ino = next;
            st.ino_limit = limit;
        }
        let mut touched = Vec::new();
        for (ino, rec) in &inodes {
            let old = loaded.get(ino);
            if old.is_none() && !created.contains(ino) {
                debug_assert!(false, "inode {ino} changed without txn_inode");
                continue;
            }
            let new = (!purged.contains(ino)).then_some(rec);
            Self::account(st, *ino, old, new);
            if let Some(r) = new {
                touched.push(if r.kind == FileKind::Directory {
                    *ino
                } else {
                    r.parent
                });
            }
            if let Some(o) = old {
                touched.push(o.parent);
            }
        }
        self.regroup(st, &touched);
        for (ino, rec) in inodes {
            if let Some(node) = st.nodes.get_mut(&ino) {
                node.rec = rec;
                if node.rec.nlink == 0 {
                    if purged.contains(&ino) {
                        node.gone = true;
                    } else {
                        node.orphan = true;
                    }
                }
            }
        }
        Ok(())
    }

    /// Updates the group map for inode `ino` going from `old` to `new` (`None`: absent before,
    /// or purged now): directories join, leave or move; a file's bytes move between homes.
    fn account(st: &mut State, ino: u64, old: Option<&InodeRecord>, new: Option<&InodeRecord>) {
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
    fn regroup(&self, st: &mut State, dirs: &[u64]) {
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
                if let Err(e) = self.engine.write(&[m]) {
                    log::warn!("group change {change:?} not written: {e}");
                    return;
                }
                log::info!("group change: {change:?}");
                st.groups.write().apply(change);
            }
        }
    }

    fn remember(st: &mut State, ino: u64, rec: &InodeRecord, lookups: u64, opens: u64) {
        let node = st.nodes.entry(ino).or_insert_with(|| Node {
            rec: rec.clone(),
            lookups: 0,
            opens: 0,
            orphan: false,
            gone: false,
        });
        node.lookups += lookups;
        node.opens += opens;
    }

    /// Drops a node nobody references; purges an orphan whose last handle closed.
    fn settle(&self, st: &mut State, ino: u64) -> FsResult<()> {
        let Some(node) = st.nodes.get(&ino) else {
            return Ok(());
        };
        if node.orphan && !node.gone && node.opens == 0 {
            let mut batch = purge_mutations(ino, &node.rec);
            batch.push(Mutation::delete(TOMBSTONE_GROUP, keys::orphan_key(ino)));
            self.engine.write(&batch)?;
            let rec = node.rec.clone();
            Self::account(st, ino, Some(&rec), None);
            self.regroup(st, &[rec.parent]);
            let node = st.nodes.get_mut(&ino).expect("checked above");
            node.gone = true;
            node.orphan = false;
        }
        let node = st.nodes.get(&ino).expect("checked above");
        if ino != ROOT_INO && node.lookups == 0 && node.opens == 0 {
            st.nodes.remove(&ino);
        }
        Ok(())
    }

    // ----- operations -----

    /// Looks `name` up in `parent` and takes one lookup reference on the result.
    pub fn lookup(&self, parent: u64, name: &[u8]) -> FsResult<Attr> {
        if name.len() > MAX_NAME_LEN {
            return Err(FsError::NameTooLong);
        }
        if name == b"." {
            // Only file handles ask this, of any file type (`export`).
            return self.lookup_ino(parent);
        }
        let mut st = self.state.lock();
        let prec = self.load_dir(&st, parent)?;
        let ino = match name {
            b".." => prec.parent,
            _ => self.find_entry(parent, name)?.ok_or(FsError::NotFound)?.ino,
        };
        let rec = self.load(&st, ino)?;
        Self::remember(&mut st, ino, &rec, 1, 0);
        Ok(to_attr(ino, &rec))
    }

    /// The attributes of a readdirplus entry, taking one lookup reference on it (the kernel
    /// counts one for every entry but `.` and `..`; if the entry does not fit in the reply after
    /// all, the caller gives the reference back with [`Fs::forget`]). ENOENT if it was removed
    /// since the listing.
    pub fn readdir_entry(&self, ino: u64) -> FsResult<Attr> {
        let mut st = self.state.lock();
        let rec = self.load(&st, ino)?;
        Self::remember(&mut st, ino, &rec, 1, 0);
        Ok(to_attr(ino, &rec))
    }

    /// Starts reading the inode records of `inos` that are not cached (a hint: see
    /// `Engine::prefetch`), before a listing asks for their attributes one by one.
    pub fn prefetch_inodes(&self, inos: impl Iterator<Item = u64>) {
        let keys: Vec<Vec<u8>> = {
            let st = self.state.lock();
            inos.filter(|ino| !st.nodes.contains_key(ino))
                .map(keys::inode_key)
                .collect()
        };
        if keys.len() > 1 {
            self.engine.prefetch(&keys);
        }
    }

    /// Drops `count` lookup references.
    pub fn forget(&self, ino: u64, count: u64) {
        let mut st = self.state.lock();
        if let Some(node) = st.nodes.get_mut(&ino) {
            node.lookups = node.lookups.saturating_sub(count);
            if let Err(e) = self.settle(&mut st, ino) {
                log::error!("forget of inode {ino}: {e}");
            }
        }
    }

    pub fn getattr(&self, ino: u64) -> FsResult<Attr> {
        let st = self.state.lock();
        let rec = self.load(&st, ino)?;
        Ok(to_attr(ino, &rec))
    }

    pub fn setattr(&self, ino: u64, set: &SetAttr) -> FsResult<Attr> {
        self.setattr_as(ino, set, IN_EVERY_GROUP)
    }

    /// [`Fs::setattr`] by a caller that is in the groups `in_group` names: with
    /// `set.kill_suid_sgid`, the set-group-ID bit of a file its group may not execute goes only
    /// if the caller is not in the file's (former) group.
    pub fn setattr_as(&self, ino: u64, set: &SetAttr, in_group: InGroup) -> FsResult<Attr> {
        let now = Timestamp::now();
        let mut st = self.state.lock();
        let mut txn = Txn::default();
        let rec = self.txn_inode(&st, &mut txn, ino)?;
        if rec.nlink == 0 && st.nodes.get(&ino).is_some_and(|n| n.gone) {
            return Err(FsError::NotFound);
        }
        inode_flags::check_setattr(rec, set)?;
        let mut rec = rec.clone();
        if let Some(size) = set.size {
            match rec.kind {
                FileKind::Regular => {}
                FileKind::Directory => return Err(FsError::IsDir),
                _ => return Err(FsError::Invalid),
            }
            if size > MAX_FILE_SIZE {
                return Err(FsError::FileTooBig);
            }
            let group = st.record_group(ino, &rec);
            self.truncate_mutations(ino, &mut rec, size, group, &mut txn)?;
            rec.mtime = now;
        }
        if let Some(mode) = set.mode {
            rec.perm = (mode & 0o7777) as u16;
            // A chmod rewrites the access ACL's owner, mask (or group) and other entries.
            let key = keys::xattr_key(ino, acl::ACCESS_ACL_XATTR);
            let stored = match rec.kind {
                FileKind::Symlink => None,
                _ => self.engine.get(&key)?,
            };
            if let Some(mut a) = stored
                .as_deref()
                .map(acl::Acl::parse)
                .transpose()?
                .flatten()
            {
                a.chmod(rec.perm);
                txn.post
                    .push(Mutation::put(st.record_group(ino, &rec), key, a.encode()));
            }
        } else if set.kill_suid_sgid && rec.kind != FileKind::Directory {
            drop_privileges(&mut rec, in_group);
        }
        // A file's capabilities go with any change of its owner or contents (as on ext4).
        if rec.kind != FileKind::Directory
            && (set.size.is_some() || set.uid.is_some() || set.gid.is_some())
        {
            self.drop_capabilities(ino, &mut txn.post);
        }
        if let Some(uid) = set.uid {
            rec.uid = uid;
        }
        if let Some(gid) = set.gid {
            rec.gid = gid;
        }
        if let Some(flags) = set.flags {
            rec.flags = flags;
        }
        if let Some(t) = set.atime {
            rec.atime = resolve_time(t, now);
        }
        if let Some(t) = set.mtime {
            rec.mtime = resolve_time(t, now);
        }
        if let Some(t) = set.crtime {
            rec.crtime = Timestamp::from_system(t);
        }
        rec.ctime = set.ctime.map_or(now, Timestamp::from_system);
        txn.inodes.insert(ino, rec.clone());
        self.commit(&mut st, txn)?;
        Ok(to_attr(ino, &rec))
    }

    /// Adds to `txn` what changes the size of regular file `ino` from `rec.size` to `size`, and
    /// updates `rec` (size, page count). A shortened last page is rewritten into `group`.
    fn truncate_mutations(
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

    #[allow(clippy::too_many_arguments)]
    fn make_node(
        &self,
        parent: u64,
        name: &[u8],
        kind: FileKind,
        mode: u32,
        umask: u32,
        rdev: u32,
        caller: Caller,
        symlink_target: Option<&[u8]>,
        open: bool,
    ) -> FsResult<(Attr, Option<u64>)> {
        check_name(name)?;
        let now = Timestamp::now();
        let mut st = self.state.lock();
        let prec = self.load_dir(&st, parent)?;
        inode_flags::check_add_entry(&prec)?;
        let mut txn = Txn::default();
        if self
            .txn_dirents(&mut txn, parent, name)?
            .iter()
            .any(|e| e.name == name)
        {
            return Err(FsError::Exists);
        }
        let ino = Self::alloc_ino(&st, &mut txn);
        let mut perm = (mode & 0o7777) as u16;
        let mut gid = caller.gid;
        if prec.perm & (libc::S_ISGID as u16) != 0 {
            gid = prec.gid;
            if kind == FileKind::Directory {
                perm |= libc::S_ISGID as u16;
            }
        }
        // The parent's default ACL, if any, is inherited and replaces the umask (`acl`); the
        // kernel leaves both to us (`FUSE_DONT_MASK`).
        let inherited = match kind {
            FileKind::Symlink => None,
            _ => self.inherit_acl(parent, kind, &mut perm)?,
        };
        if inherited.is_none() {
            perm &= !(umask & 0o7777) as u16;
        }
        let rec = InodeRecord {
            kind,
            perm: if kind == FileKind::Symlink {
                0o777
            } else {
                perm
            },
            nlink: if kind == FileKind::Directory { 2 } else { 1 },
            uid: caller.uid,
            gid,
            rdev,
            flags: inode_flags::inherited_flags(&prec, kind),
            size: symlink_target.map_or(0, |t| t.len() as u64),
            pages: 0,
            atime: now,
            mtime: now,
            ctime: now,
            crtime: now,
            // A new directory starts in its parent's group; so do a file's records (its home).
            group: st.dir_group(parent),
            parent,
        };
        self.add_entry(
            &mut txn,
            parent,
            DirEntry {
                name: name.to_vec(),
                ino,
                kind,
            },
        )?;
        {
            let p = self.txn_inode(&st, &mut txn, parent)?;
            p.mtime = now;
            p.ctime = now;
            if kind == FileKind::Directory {
                p.nlink += 1;
            }
        }
        if let Some(target) = symlink_target {
            txn.post.push(Mutation::put(
                st.dir_group(parent),
                keys::symlink_key(ino),
                target.to_vec(),
            ));
        }
        for (name, value) in inherited.into_iter().flatten() {
            txn.post.push(Mutation::put(
                st.dir_group(parent),
                keys::xattr_key(ino, name),
                value,
            ));
        }
        txn.inodes.insert(ino, rec.clone());
        txn.created.insert(ino);
        self.commit(&mut st, txn)?;
        Self::remember(&mut st, ino, &rec, 1, u64::from(open));
        let fh = open.then(|| self.next_fh.fetch_add(1, Ordering::Relaxed));
        Ok((to_attr(ino, &rec), fh))
    }

    /// The ACL xattrs a new inode of `kind` with permission bits `perm` in directory `parent`
    /// inherits from its default ACL (`acl::Acl::inherit`), `perm` cut to them; `None` if the
    /// parent has no default ACL (then the umask applies).
    fn inherit_acl(
        &self,
        parent: u64,
        kind: FileKind,
        perm: &mut u16,
    ) -> FsResult<Option<Vec<acl::InheritedXattr>>> {
        let Some(value) = self
            .engine
            .get(&keys::xattr_key(parent, acl::DEFAULT_ACL_XATTR))?
        else {
            return Ok(None);
        };
        let Some(default) = acl::Acl::parse(&value)? else {
            return Ok(None);
        };
        let (access, mode) = default.inherit(*perm);
        *perm = mode;
        let mut xattrs = Vec::new();
        if kind == FileKind::Directory {
            xattrs.push((acl::DEFAULT_ACL_XATTR, value));
        }
        if let Some(access) = access {
            xattrs.push((acl::ACCESS_ACL_XATTR, access.encode()));
        }
        Ok(Some(xattrs))
    }

    /// Creates and opens a regular file; returns its attributes and a file handle.
    pub fn create(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        umask: u32,
        caller: Caller,
    ) -> FsResult<(Attr, u64)> {
        let (attr, fh) = self.make_node(
            parent,
            name,
            FileKind::Regular,
            mode,
            umask,
            0,
            caller,
            None,
            true,
        )?;
        Ok((attr, fh.expect("opened")))
    }

    pub fn mknod(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        umask: u32,
        rdev: u32,
        caller: Caller,
    ) -> FsResult<Attr> {
        let kind = FileKind::from_mode(mode).ok_or(FsError::Invalid)?;
        if kind == FileKind::Directory || kind == FileKind::Symlink {
            return Err(FsError::Invalid);
        }
        Ok(self
            .make_node(parent, name, kind, mode, umask, rdev, caller, None, false)?
            .0)
    }

    pub fn mkdir(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        umask: u32,
        caller: Caller,
    ) -> FsResult<Attr> {
        Ok(self
            .make_node(
                parent,
                name,
                FileKind::Directory,
                mode,
                umask,
                0,
                caller,
                None,
                false,
            )?
            .0)
    }

    pub fn symlink(
        &self,
        parent: u64,
        name: &[u8],
        target: &[u8],
        caller: Caller,
    ) -> FsResult<Attr> {
        if target.len() > MAX_SYMLINK_LEN {
            return Err(FsError::NameTooLong);
        }
        if target.is_empty() {
            return Err(FsError::NotFound);
        }
        Ok(self
            .make_node(
                parent,
                name,
                FileKind::Symlink,
                0o777,
                0,
                0,
                caller,
                Some(target),
                false,
            )?
            .0)
    }

    pub fn readlink(&self, ino: u64) -> FsResult<Vec<u8>> {
        let mut st = self.state.lock();
        let rec = self.load(&st, ino)?;
        if rec.kind != FileKind::Symlink {
            return Err(FsError::Invalid);
        }
        self.touch_atime(&mut st, ino, &rec);
        self.engine
            .get(&keys::symlink_key(ino))?
            .ok_or(FsError::NotFound)
    }

    pub fn unlink(&self, parent: u64, name: &[u8]) -> FsResult<()> {
        if name.len() > MAX_NAME_LEN {
            return Err(FsError::NameTooLong);
        }
        let now = Timestamp::now();
        let mut st = self.state.lock();
        let prec = self.load_dir(&st, parent)?;
        let entry = self.find_entry(parent, name)?.ok_or(FsError::NotFound)?;
        if entry.kind == FileKind::Directory {
            return Err(FsError::IsDir);
        }
        inode_flags::check_remove_entry(&prec, &self.load(&st, entry.ino)?)?;
        let mut txn = Txn::default();
        self.remove_entry(&mut txn, parent, name)?;
        {
            let p = self.txn_inode(&st, &mut txn, parent)?;
            p.mtime = now;
            p.ctime = now;
        }
        self.drop_link(&st, &mut txn, entry.ino, parent, now)?;
        self.commit(&mut st, txn)
    }

    fn dir_is_empty(&self, ino: u64) -> FsResult<bool> {
        Ok(self
            .engine
            .scan(&keys::dirent_prefix(ino), None, 1)?
            .is_empty())
    }

    pub fn rmdir(&self, parent: u64, name: &[u8]) -> FsResult<()> {
        if name.len() > MAX_NAME_LEN {
            return Err(FsError::NameTooLong);
        }
        match name {
            b"." => return Err(FsError::Invalid),
            b".." => return Err(FsError::NotEmpty),
            _ => {}
        }
        let now = Timestamp::now();
        let mut st = self.state.lock();
        let prec = self.load_dir(&st, parent)?;
        let entry = self.find_entry(parent, name)?.ok_or(FsError::NotFound)?;
        if entry.kind != FileKind::Directory {
            return Err(FsError::NotDir);
        }
        inode_flags::check_remove_entry(&prec, &self.load(&st, entry.ino)?)?;
        if !self.dir_is_empty(entry.ino)? {
            return Err(FsError::NotEmpty);
        }
        let mut txn = Txn::default();
        self.remove_entry(&mut txn, parent, name)?;
        {
            let p = self.txn_inode(&st, &mut txn, parent)?;
            p.mtime = now;
            p.ctime = now;
            p.nlink = p.nlink.saturating_sub(1);
        }
        self.drop_link(&st, &mut txn, entry.ino, parent, now)?;
        self.commit(&mut st, txn)
    }

    pub fn link(&self, ino: u64, newparent: u64, newname: &[u8]) -> FsResult<Attr> {
        check_name(newname)?;
        let now = Timestamp::now();
        let mut st = self.state.lock();
        let prec = self.load_dir(&st, newparent)?;
        let rec = self.load(&st, ino)?;
        if rec.kind == FileKind::Directory {
            return Err(FsError::NotPermitted);
        }
        inode_flags::check_link(&rec)?;
        inode_flags::check_add_entry(&prec)?;
        if rec.nlink == 0 {
            return Err(FsError::NotFound);
        }
        if self.find_entry(newparent, newname)?.is_some() {
            return Err(FsError::Exists);
        }
        let mut txn = Txn::default();
        self.add_entry(
            &mut txn,
            newparent,
            DirEntry {
                name: newname.to_vec(),
                ino,
                kind: rec.kind,
            },
        )?;
        {
            let r = self.txn_inode(&st, &mut txn, ino)?;
            r.nlink += 1;
            r.ctime = now;
        }
        {
            let p = self.txn_inode(&st, &mut txn, newparent)?;
            p.mtime = now;
            p.ctime = now;
        }
        let rec = txn.inodes[&ino].clone();
        self.commit(&mut st, txn)?;
        Self::remember(&mut st, ino, &rec, 1, 0);
        Ok(to_attr(ino, &rec))
    }

    /// Whether `dir` is `ancestor` or lies below it (walks parent pointers up to the root).
    fn is_within(&self, st: &State, dir: u64, ancestor: u64) -> FsResult<bool> {
        let mut cur = dir;
        // Bounded walk: a corrupt parent cycle must not hang the daemon.
        for _ in 0..100_000 {
            if cur == ancestor {
                return Ok(true);
            }
            if cur == ROOT_INO {
                return Ok(false);
            }
            cur = self.load(st, cur)?.parent;
        }
        Err(FsError::Corrupt(format!(
            "directory parent chain of {dir} does not reach the root"
        )))
    }

    pub fn rename(
        &self,
        parent: u64,
        name: &[u8],
        newparent: u64,
        newname: &[u8],
        flags: u32,
    ) -> FsResult<()> {
        let root = Caller { uid: 0, gid: 0 };
        self.rename_as(parent, name, newparent, newname, flags, root)
    }

    /// rename(2) and renameat2(2) by `caller`, who owns the whiteout that `RENAME_WHITEOUT`
    /// leaves, in the same batch as the rename.
    pub fn rename_as(
        &self,
        parent: u64,
        name: &[u8],
        newparent: u64,
        newname: &[u8],
        flags: u32,
        caller: Caller,
    ) -> FsResult<()> {
        if flags & !(RENAME_NOREPLACE | RENAME_EXCHANGE | RENAME_WHITEOUT) != 0 {
            return Err(FsError::Invalid);
        }
        if flags & (RENAME_NOREPLACE | RENAME_WHITEOUT) != 0 && flags & RENAME_EXCHANGE != 0 {
            return Err(FsError::Invalid);
        }
        if name.len() > MAX_NAME_LEN {
            return Err(FsError::NameTooLong);
        }
        check_name(newname)?;
        let now = Timestamp::now();
        let mut st = self.state.lock();
        let prec = self.load_dir(&st, parent)?;
        let nprec = self.load_dir(&st, newparent)?;
        let src = self.find_entry(parent, name)?.ok_or(FsError::NotFound)?;
        let dst = self.find_entry(newparent, newname)?;
        if parent == newparent && name == newname {
            return Ok(());
        }
        let exchange = flags & RENAME_EXCHANGE != 0;
        if exchange && dst.is_none() {
            return Err(FsError::NotFound);
        }
        if flags & RENAME_NOREPLACE != 0 && dst.is_some() {
            return Err(FsError::Exists);
        }
        let src_dir = src.kind == FileKind::Directory;
        if src_dir && self.is_within(&st, newparent, src.ino)? {
            return Err(FsError::Invalid);
        }
        // After the checks the VFS makes before it asks the file system (EEXIST, ENOENT,
        // EINVAL), as ext4's `may_delete` comes after them.
        if dst.as_ref().is_none_or(|d| d.ino != src.ino) {
            inode_flags::check_remove_entry(&prec, &self.load(&st, src.ino)?)?;
            match &dst {
                Some(d) => inode_flags::check_remove_entry(&nprec, &self.load(&st, d.ino)?)?,
                None => inode_flags::check_add_entry(&nprec)?,
            }
        }
        let mut txn = Txn::default();
        if exchange {
            let dst = dst.expect("checked above");
            let dst_dir = dst.kind == FileKind::Directory;
            if dst_dir && self.is_within(&st, parent, dst.ino)? {
                return Err(FsError::Invalid);
            }
            self.set_entry(&mut txn, parent, name, dst.ino, dst.kind)?;
            self.set_entry(&mut txn, newparent, newname, src.ino, src.kind)?;
            for (ino, is_dir, old_parent, new_parent) in [
                (src.ino, src_dir, parent, newparent),
                (dst.ino, dst_dir, newparent, parent),
            ] {
                let r = self.txn_inode(&st, &mut txn, ino)?;
                r.ctime = now;
                // A directory's parent, and a file's home if it was renamed out of it.
                if is_dir || r.parent == old_parent {
                    r.parent = new_parent;
                }
            }
            if parent != newparent && src_dir != dst_dir {
                let delta: i64 = if dst_dir { 1 } else { -1 };
                let p = self.txn_inode(&st, &mut txn, parent)?;
                p.nlink = (i64::from(p.nlink) + delta) as u32;
                let np = self.txn_inode(&st, &mut txn, newparent)?;
                np.nlink = (i64::from(np.nlink) - delta) as u32;
            }
        } else {
            if let Some(dst) = &dst {
                if dst.ino == src.ino {
                    // Two links to one inode: rename does nothing (POSIX).
                    return Ok(());
                }
                let dst_dir = dst.kind == FileKind::Directory;
                if src_dir && !dst_dir {
                    return Err(FsError::NotDir);
                }
                if !src_dir && dst_dir {
                    return Err(FsError::IsDir);
                }
                if dst_dir && !self.dir_is_empty(dst.ino)? {
                    return Err(FsError::NotEmpty);
                }
                self.remove_entry(&mut txn, newparent, newname)?;
                if dst_dir {
                    let np = self.txn_inode(&st, &mut txn, newparent)?;
                    np.nlink = np.nlink.saturating_sub(1);
                }
                self.drop_link(&st, &mut txn, dst.ino, newparent, now)?;
            }
            self.remove_entry(&mut txn, parent, name)?;
            if flags & RENAME_WHITEOUT != 0 {
                self.add_whiteout(&st, &mut txn, parent, &prec, name, caller, now)?;
            }
            self.add_entry(
                &mut txn,
                newparent,
                DirEntry {
                    name: newname.to_vec(),
                    ino: src.ino,
                    kind: src.kind,
                },
            )?;
            {
                let r = self.txn_inode(&st, &mut txn, src.ino)?;
                r.ctime = now;
                // A directory's parent, and a file's home if it was renamed out of it.
                if src_dir || r.parent == parent {
                    r.parent = newparent;
                }
            }
            if src_dir && parent != newparent {
                let p = self.txn_inode(&st, &mut txn, parent)?;
                p.nlink = p.nlink.saturating_sub(1);
                let np = self.txn_inode(&st, &mut txn, newparent)?;
                np.nlink += 1;
            }
        }
        for p in [parent, newparent] {
            let r = self.txn_inode(&st, &mut txn, p)?;
            r.mtime = now;
            r.ctime = now;
        }
        self.commit(&mut st, txn)
    }

    /// Sets the atime of `ino` (whose record is `rec`) to now if the mount's atime option says
    /// this access changes it ([`atime::needs_update`]): only then is a record written, so
    /// repeated reads under `relatime` write nothing. A failure to store it fails no access
    /// (as on Linux).
    fn touch_atime(&self, st: &mut State, ino: u64, rec: &InodeRecord) {
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
            return Ok(Vec::new());
        }
        let end = file_size.min(offset.saturating_add(u64::from(size)));
        let mut out = vec![0u8; (end - offset) as usize];
        let first = offset / keys::PAGE_SIZE;
        let last = (end - 1) / keys::PAGE_SIZE;
        let pages = self.engine.scan_range(
            &keys::chunk_key(ino, first),
            &keys::chunk_key(ino, last + 1),
            (last - first + 1) as usize,
        )?;
        for (key, value) in pages {
            let page =
                keys::chunk_page_index(ino, &key).ok_or_else(|| corrupt("page key", &key))?;
            let pstart = page * keys::PAGE_SIZE;
            let from = pstart.max(offset);
            let to = (pstart + value.len() as u64).min(end);
            if from < to {
                out[(from - offset) as usize..(to - offset) as usize]
                    .copy_from_slice(&value[(from - pstart) as usize..(to - pstart) as usize]);
            }
        }
        Ok(out)
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
        let mut rec = self.load(&st, ino)?;
        match rec.kind {
            FileKind::Regular => {}
            FileKind::Directory => return Err(FsError::IsDir),
            _ => return Err(FsError::Invalid),
        }
        if st.nodes.get(&ino).is_some_and(|n| n.gone) {
            return Err(FsError::NotFound);
        }
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
            let value = if from == 0 && to == keys::PAGE_SIZE as usize {
                src.to_vec()
            } else {
                // Read-modify-write of a partial page only.
                let mut buf = if existed {
                    self.engine.get(&key)?.unwrap_or_default()
                } else {
                    Vec::new()
                };
                if buf.len() < to {
                    buf.resize(to, 0);
                }
                buf[from..to].copy_from_slice(src);
                buf
            };
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
                let result = self.engine.write(&batch);
                batch.clear();
                if let Err(e) = result {
                    if written_end > offset {
                        break;
                    }
                    return Err(e.into());
                }
                written_end = pos;
                if let Some(node) = st.nodes.get_mut(&ino) {
                    node.rec = rec.clone();
                }
            }
        }
        // Reload the committed record if a later batch failed (rec holds uncommitted counts).
        let mut pages_after = rec.pages;
        if written_end < end
            && let Ok(r) = self.load(&st, ino)
        {
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
            self.regroup(&mut st, &[rec.parent]);
        }
        drop(st);
        Ok((written_end - offset) as u32)
    }

    /// Adds the deletion of `ino`'s `security.capability` xattr to `out`, if it has one (an
    /// index lookup, no I/O).
    fn drop_capabilities(&self, ino: u64, out: &mut Vec<Mutation>) {
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

    /// fallocate as ext4 gives it: see [`falloc`] for the modes and how space is reserved.
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

    /// Makes everything written so far durable.
    pub fn fsync(&self) -> FsResult<()> {
        self.engine.sync()?;
        Ok(())
    }

    /// Checks that `ino` is a directory that can be listed.
    pub fn opendir(&self, ino: u64) -> FsResult<u64> {
        let st = self.state.lock();
        let rec = self.load(&st, ino)?;
        if rec.kind != FileKind::Directory {
            return Err(FsError::NotDir);
        }
        Ok(self.next_fh.fetch_add(1, Ordering::Relaxed))
    }

    /// Entries of directory `ino` after cookie `offset` (0: from the start), `.` and `..`
    /// included. An empty result means the end. Cookies are name hashes, so entries added or
    /// removed meanwhile never make the listing skip or repeat others.
    pub fn readdir(&self, ino: u64, offset: u64) -> FsResult<Vec<DirListEntry>> {
        let parent = {
            let mut st = self.state.lock();
            let rec = self.load(&st, ino)?;
            if rec.kind != FileKind::Directory {
                return Err(FsError::NotDir);
            }
            self.touch_atime(&mut st, ino, &rec);
            rec.parent
        };
        let mut out = Vec::new();
        if offset < 1 {
            out.push(DirListEntry {
                ino,
                kind: FileKind::Directory,
                name: b".".to_vec(),
                cookie: 1,
            });
        }
        if offset < 2 {
            out.push(DirListEntry {
                ino: parent,
                kind: FileKind::Directory,
                name: b"..".to_vec(),
                cookie: 2,
            });
        }
        let prefix = keys::dirent_prefix(ino);
        let start_after = if offset <= 2 {
            None
        } else {
            let (hash, done) = keys::split_cookie(offset);
            for (i, e) in self
                .read_dirents(ino, hash)?
                .into_iter()
                .enumerate()
                .skip(done)
            {
                out.push(DirListEntry {
                    ino: e.ino,
                    kind: e.kind,
                    name: e.name,
                    cookie: keys::dirent_cookie(hash, i),
                });
            }
            Some(keys::dirent_key(ino, hash))
        };
        let records = self
            .engine
            .scan(&prefix, start_after.as_deref(), READDIR_BATCH)?;
        for (key, value) in records {
            let hash =
                keys::dirent_key_hash(ino, &key).ok_or_else(|| corrupt("dirent key", &key))?;
            let list = keys::decode_dirents(&value).ok_or_else(|| corrupt("dirent", &key))?;
            for (i, e) in list.into_iter().enumerate() {
                out.push(DirListEntry {
                    ino: e.ino,
                    kind: e.kind,
                    name: e.name,
                    cookie: keys::dirent_cookie(hash, i),
                });
            }
        }
        Ok(out)
    }

    pub fn statfs(&self) -> StatFs {
        let s = self.engine.stats();
        let bs = u64::from(BLOCK_SIZE);
        // The usable capacity, not the store's size: the reserve and compaction's headroom are
        // never the user's, so an empty store shows nothing used and `df`'s use% is the live
        // data level that compaction's cost depends on.
        let blocks = s.usable_capacity_bytes / bs;
        // What user writes may still add before ENOSPC, so `df` never promises space a write
        // would not get.
        let free = self.engine.available_bytes() / bs;
        let st = self.state.lock();
        let files_total = u64::MAX >> 1;
        StatFs {
            blocks,
            blocks_free: free,
            blocks_available: free,
            files: files_total,
            files_free: files_total - st.next_ino.min(files_total),
            block_size: BLOCK_SIZE,
            name_len_max: MAX_NAME_LEN as u32,
        }
    }

    // ----- xattrs -----

    pub fn setxattr(&self, ino: u64, name: &[u8], value: &[u8], flags: i32) -> FsResult<()> {
        self.setxattr_as(ino, name, value, flags, IN_EVERY_GROUP)
    }

    /// [`Fs::setxattr`] by a caller in the groups `in_group` names: an access ACL set by a
    /// caller neither in the file's group nor with `CAP_FSETID` drops its set-group-ID bit
    /// (`posix_acl_update_mode`).
    pub fn setxattr_as(
        &self,
        ino: u64,
        name: &[u8],
        value: &[u8],
        flags: i32,
        in_group: InGroup,
    ) -> FsResult<()> {
        if name.len() > MAX_XATTR_NAME_LEN {
            return Err(FsError::NameTooLong);
        }
        if name.is_empty() {
            return Err(FsError::Invalid);
        }
        if value.len() > MAX_XATTR_VALUE_LEN {
            return Err(FsError::TooBig);
        }
        if ino == ROOT_INO && name == STATS_XATTR {
            return Err(FsError::NotPermitted);
        }
        let mut st = self.state.lock();
        let mut txn = Txn::default();
        let mut rec = self.txn_inode(&st, &mut txn, ino)?.clone();
        // The VFS refuses a change to an immutable or append-only inode before it looks for
        // the name's handler.
        inode_flags::check_xattr_change(&rec)?;
        xattr_names::check(name)?;
        let key = keys::xattr_key(ino, name);
        let exists = self.engine.contains(&key);
        if flags & libc::XATTR_CREATE != 0 && exists {
            return Err(FsError::Exists);
        }
        if flags & libc::XATTR_REPLACE != 0 && !exists {
            return Err(FsError::NoXattr);
        }
        rec.ctime = Timestamp::now();
        if name == acl::ACCESS_ACL_XATTR || name == acl::DEFAULT_ACL_XATTR {
            // An ACL without entries removes it, as Linux reads one.
            let parsed = acl::Acl::parse(value)?;
            let keep = match &parsed {
                None => false,
                Some(_) if name == acl::DEFAULT_ACL_XATTR => {
                    if rec.kind != FileKind::Directory {
                        return Err(FsError::Access);
                    }
                    true
                }
                Some(a) => {
                    // The access ACL sets the mode bits; one that says nothing more is not kept
                    // (as ext4).
                    let mode = a.mode();
                    rec.perm = (rec.perm & !0o777) | mode.perm;
                    if !in_group(rec.gid) {
                        rec.perm &= !(libc::S_ISGID as u16);
                    }
                    !mode.equivalent
                }
            };
            if !keep {
                if exists {
                    txn.post.push(Mutation::delete(TOMBSTONE_GROUP, key));
                }
                txn.inodes.insert(ino, rec);
                return self.commit(&mut st, txn);
            }
        }
        txn.post.push(Mutation::put(
            st.record_group(ino, &rec),
            key,
            value.to_vec(),
        ));
        txn.inodes.insert(ino, rec);
        self.commit(&mut st, txn)
    }

    pub fn getxattr(&self, ino: u64, name: &[u8]) -> FsResult<Vec<u8>> {
        if let Some(label) = name.strip_prefix(REPLAY_MARK_XATTR_PREFIX) {
            let label = std::str::from_utf8(label).ok().and_then(|l| l.parse().ok());
            return match label {
                Some(l) if ino == ROOT_INO && self.engine.mark_io_log(l) => Ok(Vec::new()),
                _ => Err(FsError::NoXattr),
            };
        }
        if ino == ROOT_INO && name == STATS_XATTR {
            let roots = group_root_paths(&self.engine)?;
            return Ok(stats::StatsReport::new(&self.engine.stats(), &roots, true)
                .json()
                .into_bytes());
        }
        if name.len() > MAX_XATTR_NAME_LEN {
            return Err(FsError::NameTooLong);
        }
        xattr_names::check(name)?;
        let st = self.state.lock();
        self.load(&st, ino)?;
        self.engine
            .get(&keys::xattr_key(ino, name))?
            .ok_or(FsError::NoXattr)
    }

    /// Names of `ino`'s xattrs, each followed by a NUL byte (the listxattr format).
    pub fn listxattr(&self, ino: u64) -> FsResult<Vec<u8>> {
        let st = self.state.lock();
        self.load(&st, ino)?;
        let prefix = keys::xattr_prefix(ino);
        let mut out = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let found = self.engine.scan(&prefix, after.as_deref(), 256)?;
            if found.is_empty() {
                return Ok(out);
            }
            for (key, _) in &found {
                out.extend_from_slice(&key[prefix.len()..]);
                out.push(0);
            }
            after = found.last().map(|(k, _)| k.clone());
        }
    }

    pub fn removexattr(&self, ino: u64, name: &[u8]) -> FsResult<()> {
        if name.len() > MAX_XATTR_NAME_LEN {
            return Err(FsError::NameTooLong);
        }
        let mut st = self.state.lock();
        let mut txn = Txn::default();
        let key = keys::xattr_key(ino, name);
        let rec = self.txn_inode(&st, &mut txn, ino)?;
        inode_flags::check_xattr_change(rec)?;
        xattr_names::check(name)?;
        if !self.engine.contains(&key) {
            return Err(FsError::NoXattr);
        }
        rec.ctime = Timestamp::now();
        txn.post.push(Mutation::delete(TOMBSTONE_GROUP, key));
        self.commit(&mut st, txn)
    }

    /// access(2): checks `mask` (R_OK/W_OK/X_OK bits; 0 = existence) against the mode bits and,
    /// for a caller other than the owner, the access ACL if the group class has any bit (as
    /// Linux's `acl_permission_check`). The caller's groups are its `gid` only.
    pub fn access(&self, ino: u64, mask: i32, caller: Caller) -> FsResult<()> {
        let st = self.state.lock();
        let rec = self.load(&st, ino)?;
        if mask == libc::F_OK {
            return Ok(());
        }
        let perm = u32::from(rec.perm);
        let granted = if caller.uid == 0 {
            // Root may read and write anything, and execute if any execute bit is set.
            let x = if perm & 0o111 != 0 || rec.kind == FileKind::Directory {
                1
            } else {
                0
            };
            6 | x
        } else if caller.uid == rec.uid {
            (perm >> 6) & 7
        } else if let Some(a) = (perm & 0o070 != 0)
            .then(|| {
                self.engine
                    .get(&keys::xattr_key(ino, acl::ACCESS_ACL_XATTR))
            })
            .transpose()?
            .flatten()
            .as_deref()
            .map(acl::Acl::parse)
            .transpose()?
            .flatten()
        {
            let in_group = |g| g == caller.gid;
            if a.permits(caller.uid, rec.uid, rec.gid, &in_group, mask as u16) {
                return Ok(());
            }
            return Err(FsError::Access);
        } else if caller.gid == rec.gid {
            (perm >> 3) & 7
        } else {
            perm & 7
        };
        if (mask as u32) & 7 & !granted != 0 {
            return Err(FsError::Access);
        }
        Ok(())
    }
}

/// What a getxattr/listxattr reply should say for a value and the caller's buffer size.
#[derive(Debug, PartialEq, Eq)]
pub enum XattrReply {
    /// The caller asked for the size only.
    Size(u32),
    /// The value fits.
    Data(Vec<u8>),
}

/// Size 0 asks for the length; a buffer too small is ERANGE.
pub fn xattr_reply(value: Vec<u8>, size: u32) -> FsResult<XattrReply> {
    if size == 0 {
        Ok(XattrReply::Size(value.len() as u32))
    } else if value.len() > size as usize {
        Err(FsError::Range)
    } else {
        Ok(XattrReply::Data(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xattr_reply_sizes() {
        assert_eq!(xattr_reply(vec![1, 2, 3], 0).unwrap(), XattrReply::Size(3));
        assert_eq!(
            xattr_reply(vec![1, 2, 3], 3).unwrap(),
            XattrReply::Data(vec![1, 2, 3])
        );
        assert_eq!(
            xattr_reply(vec![1, 2, 3], 2).unwrap_err().errno(),
            libc::ERANGE
        );
    }

    #[test]
    fn names_are_checked() {
        assert_eq!(
            check_name(&[b'a'; 256]).unwrap_err().errno(),
            libc::ENAMETOOLONG
        );
        assert!(check_name(&[b'a'; 255]).is_ok());
        assert_eq!(check_name(b"a/b").unwrap_err().errno(), libc::EINVAL);
    }

    #[test]
    fn blocks_count_stored_pages() {
        let now = Timestamp::now();
        let rec = InodeRecord {
            kind: FileKind::Regular,
            perm: 0o644,
            nlink: 1,
            uid: 0,
            gid: 0,
            rdev: 0,
            flags: 0,
            size: 1 << 30,
            pages: 3,
            atime: now,
            mtime: now,
            ctime: now,
            crtime: now,
            group: 0,
            parent: 1,
        };
        assert_eq!(to_attr(5, &rec).blocks, 24);
    }
}
