//! The filesystem layer: inodes, directory entries, file pages, symlinks and xattrs as engine
//! records (layout in [`keys`]), driven in terms of inode numbers.
//!
//! - [`Fs`] is the core. It uses only the engine's public API and knows nothing of FUSE, so it is
//!   tested without a mount (`tests/fs_*.rs`).
//! - [`fuse_adapter`] is the only code that names fuser's `Filesystem`, `Request` and `Reply*`.
//! - [`FsError::errno`] is the one errno table.
//! - The operations are grouped by the part of the design they belong to: [`namespace`],
//!   [`file_data`], [`attr`], [`xattr`] (and [`acl`]), the batch of one operation ([`txn`]) and
//!   the group map's upkeep ([`group_tracking`]); this file keeps the type, its construction and
//!   the helpers they share.
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
//!    `getattr` keeps working and `setattr` changes that copy only (the writeback cache writes
//!    back the times the kernel keeps, after the unlink too); nobody can read its data without
//!    an open handle. The same holds for an orphan after its last release.
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
//! permission checks are the daemon's on a mount only its owner may use ([`permit`]), the
//! kernel's on others (`default_permissions`, and `FUSE_POSIX_ACL` makes it enforce ACLs,
//! [`acl`]); fallocate reserves space by storing zero pages and has ext4's modes ([`falloc`]);
//! `st_blocks` is 8 per stored 4 KiB page (directories report 8).

pub mod acl;
pub mod atime;
mod attr;
pub mod check;
pub mod copy_range;
pub mod error;
pub mod export;
pub mod falloc;
mod file_data;
pub mod fsck_report;
pub mod fuse_adapter;
mod group_tracking;
pub mod groups;
pub mod inode_flags;
pub mod kernel_time;
pub mod keys;
mod namespace;
mod open;
pub mod permission;
pub mod permit;
pub mod seek;
pub mod stats;
mod txn;
mod unwritten;
pub mod whiteout;
mod xattr;
pub mod xattr_names;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::SystemTime;

use parking_lot::{Mutex, RwLock};

pub use error::{FsError, FsResult};
pub use group_tracking::group_root_paths;
pub use keys::FileKind;
pub use xattr::{XattrReply, xattr_reply};

use crate::engine::{Engine, GroupId, MAX_BATCH_BYTES, Mutation, ROOT_GROUP};
use group_tracking::current_group;
use groups::GroupMap;
use keys::{DirEntry, InodeRecord, Timestamp};
use txn::Txn;

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
    /// then surface at fsync(2) (and at most one close(2)), not at write(2) (README, "Mount
    /// options").
    pub writeback_cache: bool,
    /// Check permissions in the daemon ([`permit`]) instead of leaving them to the kernel: for
    /// a mount without `default_permissions`, which the kernel then sends every request
    /// unchecked. Such a mount costs a round trip less per create, and no access ACL is read
    /// to decide what the owner may do.
    pub checks_permissions: bool,
}

impl Default for FsOptions {
    fn default() -> Self {
        FsOptions {
            group_split_bytes: groups::DEFAULT_SPLIT_BYTES,
            defer_group_map: false,
            atime: atime::AtimeMode::default(),
            writeback_cache: false,
            checks_permissions: false,
        }
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

/// A caller known by its request alone: in its own group only, with no capabilities.
impl permission::Credentials for Caller {
    fn uid(&self) -> u32 {
        self.uid
    }
    fn in_group(&self, gid: u32) -> bool {
        gid == self.gid
    }
    fn capable(&self, _cap: u32) -> bool {
        false
    }
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
    checks_permissions: bool,
    /// Called by [`Fs::fsync`] once the store made everything durable, with the durable LSN:
    /// a further copy (a mirror) that an fsync waits for too. Its error fails the fsync.
    after_sync: std::sync::OnceLock<AfterSync>,
    /// Test hook: called between the batches of a copy, with the state lock let go.
    #[cfg(any(test, feature = "test-hooks"))]
    test_between_copy_batches: Mutex<Option<CopyBatchHook>>,
}

#[cfg(any(test, feature = "test-hooks"))]
type CopyBatchHook = Arc<dyn Fn() + Send + Sync>;

/// See [`Fs::set_after_sync`].
pub type AfterSync = Box<dyn Fn(u64) -> Result<(), String> + Send + Sync>;

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

/// Clears what a write, truncation or fallocate by a caller without `CAP_FSETID`, or any chown,
/// clears on Linux, as ext4 shows it ([`permission::set_id_bits_dropped`]).
fn drop_privileges(rec: &mut InodeRecord, in_group: InGroup) {
    rec.perm &= !permission::set_id_bits_dropped(rec.perm, in_group(rec.gid));
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
        let root = open::root_record(&engine, now)?;
        let high_water = open::high_water(&engine)?;
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
            checks_permissions: options.checks_permissions,
            after_sync: std::sync::OnceLock::new(),
            #[cfg(any(test, feature = "test-hooks"))]
            test_between_copy_batches: Mutex::new(None),
        };
        let started = std::time::Instant::now();
        // Before the first batch: purging an orphan releases what its unwritten pages hold.
        fs.count_promises();
        // A read-only mount leaves a crash's orphans for the next writable one.
        if !fs.engine.is_read_only() {
            fs.reclaim_orphans()?;
        }
        let orphans_at = started.elapsed();
        // The stored roots now (a few records); the directories and bytes by a rebuild.
        let roots = open::stored_group_roots(&fs.engine)?;
        let shared = fs.state.lock().groups.clone();
        *shared.write() = GroupMap::loading(options.group_split_bytes, roots);
        fs.engine.set_current_group(current_group(shared));
        log::info!("mount: orphans {:.3} s", orphans_at.as_secs_f64());
        if !options.defer_group_map {
            fs.rebuild_group_map()?;
        }
        Ok(fs)
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
                self.store(&batch)?;
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
            self.store(&batch)?;
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
