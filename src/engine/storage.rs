//! Where the bytes go: the only code that opens files, reads, writes, allocates and syncs.
//!
//! Two implementations of [`Storage`]:
//! - [`FileStorage`]: a store directory of segment files on the host filesystem.
//! - [`SimStorage`]: memory that keeps what was written apart from what is durable, so that a
//!   test can cut power at any point (keeping any subset of the unsynced 512-byte sectors, as a
//!   host page cache may write them back in any order) and inject I/O errors.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use super::concurrency::{self, Arc, Mutex, RwLock};

/// The sector size of simulated power cuts: a sector is either all old or all new.
pub const SECTOR_SIZE: usize = 512;

/// Storage under a store: numbered segment files plus an atomically replaced superblock.
pub trait Storage: Send + Sync {
    /// Reads exactly `buf.len()` bytes at `offset` of file `file`. Bytes never written read as
    /// zeros; reading past the allocated length is an error.
    fn read_at(&self, file: u32, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Writes `data` at `offset` of file `file` (already allocated). Not durable until `sync`.
    fn write_at(&self, file: u32, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Makes sure file `file` exists with `len` bytes of space really allocated, so that later
    /// writes inside it cannot fail for lack of space.
    fn allocate(&self, file: u32, len: u64) -> io::Result<()>;
    /// Allocated length of file `file` (0 if it does not exist).
    fn file_len(&self, file: u32) -> io::Result<u64>;
    /// Makes every write that returned before this call durable.
    fn sync(&self) -> io::Result<()>;
    /// Makes everything in the store durable, including what an earlier process wrote and did
    /// not sync (recovery builds on it).
    fn sync_everything(&self) -> io::Result<()> {
        self.sync()
    }
    /// The superblock, or `None` if the store has none yet.
    fn read_superblock(&self) -> io::Result<Option<Vec<u8>>>;
    /// Replaces the superblock atomically and durably.
    fn write_superblock(&self, data: &[u8]) -> io::Result<()>;
    /// Hints that `[offset, offset + len)` of file `file` will be read soon, so that the reads
    /// of many scattered records can be in flight together instead of one after the other
    /// (a cold `ls -l` or `du`). Only a hint: nothing is read, and errors are ignored.
    fn will_need(&self, _file: u32, _offset: u64, _len: u64) {}
    /// Records a mark in an I/O log, if this storage keeps one (`instrument.rs`); false if not.
    fn mark(&self, _label: u64) -> bool {
        false
    }
    /// A read-only map of the first `len` bytes of file `file` (which must hold them), for
    /// recovery's single pass over the store; `None` if this storage does not map (the caller
    /// reads with [`Storage::read_at`]). Nothing may write the file while the map is alive.
    fn map_file(&self, _file: u32, _len: u64) -> io::Result<Option<MappedFile>> {
        Ok(None)
    }
    /// The index checkpoint left by the last clean close (`checkpoint.rs`), if this storage
    /// keeps one. Storages that do not (the default) always recover by a full scan.
    fn read_checkpoint(&self) -> io::Result<Option<Vec<u8>>> {
        Ok(None)
    }
    /// Stores an index checkpoint atomically and durably (or does nothing, by default).
    fn write_checkpoint(&self, _data: &[u8]) -> io::Result<()> {
        Ok(())
    }
    /// Removes the checkpoint durably: once this returns, no later open can find it.
    fn remove_checkpoint(&self) -> io::Result<()> {
        Ok(())
    }
    /// What changes whenever anything writes the store's segment files or superblock (sizes,
    /// modification times, inode numbers): a checkpoint records it and is ignored if it differs.
    fn fingerprint(&self) -> io::Result<Vec<u8>> {
        Ok(Vec::new())
    }
}

/// A read-only shared memory map of a segment file (see [`Storage::map_file`]). Recovery reads
/// segments through it rather than `pread`: a store of small batches is mostly the zero padding
/// of 4 KiB buffers, and a map reads only the pages looked at, from the host's page cache, with
/// no copy (copying whole segments was two thirds of a warm mount of such a store).
pub struct MappedFile {
    ptr: *mut libc::c_void,
    len: usize,
}

// SAFETY: the map is read-only and owned; `bytes` hands out shared borrows only.
unsafe impl Send for MappedFile {}
// SAFETY: as above.
unsafe impl Sync for MappedFile {}

impl MappedFile {
    pub(crate) fn map(f: &File, len: u64) -> io::Result<MappedFile> {
        let len = usize::try_from(len).map_err(io::Error::other)?;
        if len == 0 {
            return Err(io::Error::other("empty map"));
        }
        // SAFETY: a fresh read-only shared map of a descriptor we own; the store lock keeps
        // other daemons from writing or truncating the file, and the file is never shortened.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(MappedFile { ptr, len })
    }

    /// The mapped bytes.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes for as long as `self` lives.
        unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.len) }
    }

    /// Asks the host to start reading `[offset, offset + len)` in the background (a hint: any
    /// error is ignored), so that a cold scan overlaps its reads with its work.
    pub fn will_need(&self, offset: usize, len: usize) {
        let page = 4096;
        let start = offset / page * page;
        let end = (offset + len).min(self.len);
        if start >= end {
            return;
        }
        // SAFETY: a hint on a page-aligned range inside our own map.
        unsafe {
            libc::madvise(
                (self.ptr as *mut u8).add(start) as *mut libc::c_void,
                end - start,
                libc::MADV_WILLNEED,
            )
        };
    }
}

impl Drop for MappedFile {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the map made in `MappedFile::map`.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

pub(crate) fn segment_file_name(file: u32) -> String {
    format!("seg-{file:06}")
}

/// The name in a store directory of storage file `file`: a segment file, or the segment sync
/// table (`synctable.rs`), which has a file number no segment file can have.
pub(crate) fn store_file_name(file: u32) -> String {
    if file == super::synctable::SYNC_TABLE_FILE {
        super::synctable::SYNC_TABLE_NAME.to_string()
    } else {
        segment_file_name(file)
    }
}

pub(crate) const SUPERBLOCK_FILE: &str = "superblock";
pub(crate) const LOCK_FILE: &str = "lock";
/// The index checkpoint of the last clean close (see `checkpoint.rs`).
pub(crate) const CHECKPOINT_FILE: &str = "checkpoint";

/// Which files hold writes that no sync has covered yet. [`FileStorage`] and [`SimStorage`]
/// share it, so that the crash simulation runs the very bookkeeping real syncs rely on.
#[derive(Default)]
pub(crate) struct DirtyFiles {
    files: Mutex<BTreeSet<u32>>,
    /// Held by a sync from taking the dirty files until their syncs returned. A second sync
    /// must not find the set empty and return while the first one's syncs, which cover
    /// writes made before it, are still running.
    sync_in_progress: Mutex<()>,
}

impl DirtyFiles {
    /// Runs `land` (the write itself), then notes `file` as dirty. Never the other way round:
    /// a sync that took the set between the note and the landing would sync the file before
    /// the bytes were there, and the writer's own sync would then find nothing to do and
    /// return while the bytes are not durable. Noted even if the write failed: part of it may
    /// have landed.
    pub(crate) fn write(&self, file: u32, land: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
        let landed = land();
        concurrency::between_steps();
        self.note(file);
        landed
    }

    /// Notes `file` as dirty (its writes landed already).
    pub(crate) fn note(&self, file: u32) {
        self.files.lock().insert(file);
    }

    /// Syncs every dirty file with `sync_file`, one sync at a time. A file whose sync failed
    /// stays dirty (so do the ones not reached), for a later sync to try again.
    pub(crate) fn sync(&self, mut sync_file: impl FnMut(u32) -> io::Result<()>) -> io::Result<()> {
        let _one_at_a_time = self.sync_in_progress.lock();
        let dirty = std::mem::take(&mut *self.files.lock());
        for &file in &dirty {
            if let Err(e) = sync_file(file) {
                self.files.lock().extend(dirty.iter().copied());
                return Err(e);
            }
        }
        Ok(())
    }
}

/// A store directory on the host filesystem.
///
/// Holds one descriptor per segment file (never one per segment), opened on first use.
pub struct FileStorage {
    dir: PathBuf,
    files: RwLock<Vec<Option<Arc<File>>>>,
    dirty: DirtyFiles,
    /// Held for as long as the storage lives: `flock` on it keeps other processes out.
    _lock: File,
}

/// Takes `flock` lock `mode` (`LOCK_EX` or `LOCK_SH`) on `lock`, the lock file of store `dir`,
/// without waiting; refused (`WouldBlock`, naming the holder's pid) if another process holds
/// it. When the holder recorded is this very process, the store was just closed here and a
/// child being spawned by another thread still holds a copy of the lock's descriptor until it
/// execs (close-on-exec): that moment is waited out (up to 2 s) instead of refusing.
pub(crate) fn lock_store(dir: &Path, lock: &File, mode: libc::c_int) -> io::Result<()> {
    let try_lock = || {
        // SAFETY: flock on a descriptor the caller owns; no memory is involved.
        let rc = unsafe { libc::flock(lock.as_raw_fd(), mode | libc::LOCK_NB) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    let holder = || std::fs::read_to_string(dir.join(LOCK_FILE)).unwrap_or_default();
    let mut locked = try_lock();
    let mut waits = 0;
    while locked
        .as_ref()
        .is_err_and(|e| e.raw_os_error() == Some(libc::EWOULDBLOCK))
        && waits < 40
        && holder().trim() == std::process::id().to_string()
    {
        concurrency::sleep(std::time::Duration::from_millis(50));
        waits += 1;
        locked = try_lock();
    }
    match locked {
        Err(err) if err.raw_os_error() == Some(libc::EWOULDBLOCK) => {
            let holder = holder();
            Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "{} is open in another process{}",
                    dir.display(),
                    if holder.trim().is_empty() {
                        String::new()
                    } else {
                        format!(" (pid {})", holder.trim())
                    }
                ),
            ))
        }
        other => other,
    }
}

/// Creates directory `dir` and its missing parents durably: each new directory's entry is
/// synced in its parent, so that a power cut after the store's first syncs cannot take the
/// whole store away (a new directory's name is durable only once its parent is synced).
pub fn create_dir_durably(dir: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut at = dir;
    while !at.exists() {
        missing.push(at);
        match at.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => at = parent,
            _ => break,
        }
    }
    std::fs::create_dir_all(dir)?;
    // Deepest first: a directory's parent is synced before the parent's own entry is, which is
    // harmless; every new entry is synced before this returns.
    for new in missing {
        let parent = match new.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        File::open(parent)?.sync_all()?;
    }
    Ok(())
}

impl FileStorage {
    /// Opens (creating the directory if `create`) and locks the store directory `dir`.
    pub fn open(dir: &Path, create: bool) -> io::Result<FileStorage> {
        if create {
            create_dir_durably(dir)?;
        }
        if !dir.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} is not a directory", dir.display()),
            ));
        }
        if !create && !dir.join(SUPERBLOCK_FILE).exists() {
            // Not a store: leave the directory exactly as it was (no lock file).
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} holds no logstorfs store (no superblock)", dir.display()),
            ));
        }
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(LOCK_FILE))?;
        lock_store(dir, &lock, libc::LOCK_EX)?;
        lock.set_len(0)?;
        lock.write_at(std::process::id().to_string().as_bytes(), 0)?;
        Ok(FileStorage {
            dir: dir.to_path_buf(),
            files: RwLock::new(Vec::new()),
            dirty: DirtyFiles::default(),
            _lock: lock,
        })
    }

    fn file(&self, file: u32, create: bool) -> io::Result<Arc<File>> {
        if let Some(Some(f)) = self.files.read().get(file as usize) {
            return Ok(f.clone());
        }
        let mut files = self.files.write();
        if files.len() <= file as usize {
            files.resize(file as usize + 1, None);
        }
        if let Some(f) = &files[file as usize] {
            return Ok(f.clone());
        }
        let path = self.dir.join(store_file_name(file));
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(&path)?;
        let f = Arc::new(f);
        files[file as usize] = Some(f.clone());
        Ok(f)
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }
}

impl Storage for FileStorage {
    fn will_need(&self, file: u32, offset: u64, len: u64) {
        use std::os::fd::AsRawFd;
        if let Ok(f) = self.file(file, false) {
            // SAFETY: a plain system call on a file descriptor we own; it reads no memory.
            unsafe {
                libc::posix_fadvise(
                    f.as_raw_fd(),
                    offset as libc::off_t,
                    len as libc::off_t,
                    libc::POSIX_FADV_WILLNEED,
                );
            }
        }
    }

    fn read_at(&self, file: u32, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file(file, false)?.read_exact_at(buf, offset)
    }

    fn write_at(&self, file: u32, offset: u64, data: &[u8]) -> io::Result<()> {
        let f = self.file(file, false)?;
        self.dirty.write(file, || f.write_all_at(data, offset))
    }

    fn allocate(&self, file: u32, len: u64) -> io::Result<()> {
        let f = self.file(file, true)?;
        // SAFETY: fallocate on a descriptor we own.
        let rc = unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, len as libc::off_t) };
        if rc != 0 {
            let err = io::Error::last_os_error();
            // Filesystems without fallocate: fall back to a plain length (space not reserved).
            if err.raw_os_error() == Some(libc::EOPNOTSUPP) {
                if f.metadata()?.len() < len {
                    f.set_len(len)?;
                }
            } else {
                return Err(err);
            }
        }
        f.sync_all()?;
        self.sync_dir()
    }

    fn file_len(&self, file: u32) -> io::Result<u64> {
        match std::fs::metadata(self.dir.join(store_file_name(file))) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e),
        }
    }

    fn sync(&self) -> io::Result<()> {
        self.dirty.sync(|file| self.file(file, false)?.sync_data())
    }

    fn sync_everything(&self) -> io::Result<()> {
        let mut file = 0;
        while self.file_len(file)? > 0 {
            self.dirty.note(file);
            file += 1;
        }
        let table = super::synctable::SYNC_TABLE_FILE;
        if self.file_len(table)? > 0 {
            self.dirty.note(table);
        }
        self.sync()
    }

    fn read_superblock(&self) -> io::Result<Option<Vec<u8>>> {
        match std::fs::read(self.dir.join(SUPERBLOCK_FILE)) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn map_file(&self, file: u32, len: u64) -> io::Result<Option<MappedFile>> {
        MappedFile::map(&*self.file(file, false)?, len).map(Some)
    }

    fn read_checkpoint(&self) -> io::Result<Option<Vec<u8>>> {
        read_checkpoint_in(&self.dir)
    }

    fn write_checkpoint(&self, data: &[u8]) -> io::Result<()> {
        let tmp = self.dir.join("checkpoint.tmp");
        {
            let f = File::create(&tmp)?;
            f.write_all_at(data, 0)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, self.dir.join(CHECKPOINT_FILE))?;
        self.sync_dir()
    }

    fn remove_checkpoint(&self) -> io::Result<()> {
        match std::fs::remove_file(self.dir.join(CHECKPOINT_FILE)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let _ = std::fs::remove_file(self.dir.join("checkpoint.tmp"));
        self.sync_dir()
    }

    fn fingerprint(&self) -> io::Result<Vec<u8>> {
        fingerprint_of(&self.dir)
    }

    fn write_superblock(&self, data: &[u8]) -> io::Result<()> {
        let tmp = self.dir.join("superblock.tmp");
        {
            let f = File::create(&tmp)?;
            f.write_all_at(data, 0)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, self.dir.join(SUPERBLOCK_FILE))?;
        self.sync_dir()
    }
}

/// The checkpoint file of the store in `dir`, if there is one.
pub(crate) fn read_checkpoint_in(dir: &Path) -> io::Result<Option<Vec<u8>>> {
    match std::fs::read(dir.join(CHECKPOINT_FILE)) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// [`Storage::fingerprint`] of the store in `dir`, whoever opened it (a read-only open must
/// find the checkpoint a writer left as that writer's next open would).
pub(crate) fn fingerprint_of(dir: &Path) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut add = |m: &std::fs::Metadata| {
        for v in [
            m.ino(),
            m.size(),
            m.mtime() as u64,
            m.mtime_nsec() as u64,
            m.ctime() as u64,
            m.ctime_nsec() as u64,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    };
    add(&std::fs::metadata(dir.join(SUPERBLOCK_FILE))?);
    let mut file = 0;
    loop {
        match std::fs::metadata(dir.join(segment_file_name(file))) {
            Ok(m) => add(&m),
            Err(e) if e.kind() == io::ErrorKind::NotFound => break,
            Err(e) => return Err(e),
        }
        file += 1;
    }
    Ok(out)
}

/// What [`SimStorage`] should fail, for fault-injection tests.
#[derive(Clone, Debug, Default)]
pub struct FaultPlan {
    /// Fail every `write_at` after this many more have succeeded.
    pub fail_writes_after: Option<u64>,
    /// Fail every `sync` after this many more have succeeded.
    pub fail_syncs_after: Option<u64>,
    /// Fail `allocate` (a full host disk).
    pub fail_allocate: bool,
}

#[derive(Clone, Default)]
struct SimFile {
    /// What readers see now.
    live: Vec<u8>,
    /// What survives a power cut for certain.
    durable: Vec<u8>,
    /// Sectors written since the last sync (their `durable` contents may be old).
    dirty: BTreeSet<u64>,
}

#[derive(Default)]
struct SimState {
    /// By file number (segment files, and the sync table's high number).
    files: BTreeMap<u32, SimFile>,
    superblock: Option<Vec<u8>>,
    faults: FaultPlan,
    writes: u64,
    syncs: u64,
}

/// Crash-simulation storage. Cheap to clone the durable image of (see [`SimStorage::crash`]).
#[derive(Default)]
pub struct SimStorage {
    state: Mutex<SimState>,
    /// As in [`FileStorage`]: a sync makes durable only the files noted here, and a write
    /// lands and is noted in two steps that a sync may fall between.
    dirty: DirtyFiles,
    /// Called at the start of every `allocate` (a test that wants to know what waits on an
    /// allocation: a slow `fallocate` and `fsync` on a real disk).
    allocate_hook: Mutex<Option<AllocateHook>>,
}

type AllocateHook = Arc<dyn Fn() + Send + Sync>;

/// Which of the unsynced sectors survive a simulated power cut.
#[derive(Clone, Copy, Debug)]
pub enum PowerCut {
    /// Only what was synced.
    DropAllUnsynced,
    /// Everything written (the page cache made it to disk, as after `kill -9`).
    KeepAllWritten,
    /// Each unsynced sector kept or dropped by a pseudo-random choice from this seed.
    Random(u64),
    /// The unsynced sectors in bytes `start..end` of segment file `file` kept, all others
    /// dropped: the page cache wrote back exactly that range (a targeted reordering).
    KeepOnlyIn { file: u32, start: u64, end: u64 },
}

/// A small deterministic generator (xorshift*), so crash tests are reproducible by seed.
#[derive(Clone, Debug)]
pub struct SimRng(u64);

impl SimRng {
    pub fn new(seed: u64) -> SimRng {
        SimRng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
}

impl SimStorage {
    pub fn new() -> Arc<SimStorage> {
        Arc::new(SimStorage::default())
    }

    /// Has `hook` called at the start of every `allocate` (`None`: no more).
    pub fn set_allocate_hook(&self, hook: Option<AllocateHook>) {
        *self.allocate_hook.lock() = hook;
    }

    pub fn set_faults(&self, faults: FaultPlan) {
        let mut s = self.state.lock();
        s.faults = faults;
    }

    /// Counts of successful writes and syncs so far.
    pub fn op_counts(&self) -> (u64, u64) {
        let s = self.state.lock();
        (s.writes, s.syncs)
    }

    /// The storage a machine would find after a power cut now: the durable bytes plus, per
    /// `cut`, some of the unsynced sectors. `self` is left as it is (the "dead" machine).
    pub fn crash(&self, cut: PowerCut) -> Arc<SimStorage> {
        let s = self.state.lock();
        let mut rng = match cut {
            PowerCut::Random(seed) => Some(SimRng::new(seed)),
            _ => None,
        };
        let files = s
            .files
            .iter()
            .map(|(&index, f)| {
                let mut image = f.durable.clone();
                for &sector in &f.dirty {
                    let keep = match cut {
                        PowerCut::DropAllUnsynced => false,
                        PowerCut::KeepAllWritten => true,
                        PowerCut::Random(_) => rng.as_mut().unwrap().below(2) == 1,
                        PowerCut::KeepOnlyIn { file, start, end } => {
                            let at = sector * SECTOR_SIZE as u64;
                            index == file && at >= start && at < end
                        }
                    };
                    if keep {
                        let a = sector as usize * SECTOR_SIZE;
                        let b = (a + SECTOR_SIZE).min(image.len());
                        image[a..b].copy_from_slice(&f.live[a..b]);
                    }
                }
                let file = SimFile {
                    live: image.clone(),
                    durable: image,
                    dirty: BTreeSet::new(),
                };
                (index, file)
            })
            .collect();
        Arc::new(SimStorage {
            state: Mutex::new(SimState {
                files,
                superblock: s.superblock.clone(),
                ..SimState::default()
            }),
            dirty: DirtyFiles::default(),
            allocate_hook: Mutex::new(None),
        })
    }

    /// A copy of this storage as it is now, unsynced sectors included, to cut power on later
    /// (when a test knows which sectors it wants to keep).
    pub fn freeze(&self) -> Arc<SimStorage> {
        let s = self.state.lock();
        let dirty = DirtyFiles::default();
        for (&file, f) in &s.files {
            if !f.dirty.is_empty() {
                dirty.note(file);
            }
        }
        Arc::new(SimStorage {
            state: Mutex::new(SimState {
                files: s.files.clone(),
                superblock: s.superblock.clone(),
                ..SimState::default()
            }),
            dirty,
            allocate_hook: Mutex::new(None),
        })
    }

    /// Flips the bits of `mask` in the byte at `offset` of `file`, in both images (media damage).
    pub fn corrupt(&self, file: u32, offset: u64, mask: u8) {
        let mut s = self.state.lock();
        let f = s.files.get_mut(&file).expect("no such file");
        f.live[offset as usize] ^= mask;
        f.durable[offset as usize] ^= mask;
    }
}

fn injected(what: &str) -> io::Error {
    io::Error::other(format!("injected I/O error ({what})"))
}

impl Storage for SimStorage {
    fn read_at(&self, file: u32, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let s = self.state.lock();
        let f = s
            .files
            .get(&file)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        let a = offset as usize;
        let b = a + buf.len();
        if b > f.live.len() {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
        }
        buf.copy_from_slice(&f.live[a..b]);
        Ok(())
    }

    fn write_at(&self, file: u32, offset: u64, data: &[u8]) -> io::Result<()> {
        self.dirty.write(file, || self.land(file, offset, data))
    }

    fn allocate(&self, file: u32, len: u64) -> io::Result<()> {
        let hook = self.allocate_hook.lock().clone();
        if let Some(hook) = hook {
            hook();
        }
        let mut s = self.state.lock();
        if s.faults.fail_allocate {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        let f = s.files.entry(file).or_default();
        if (f.live.len() as u64) < len {
            f.live.resize(len as usize, 0);
            f.durable.resize(len as usize, 0);
        }
        Ok(())
    }

    fn file_len(&self, file: u32) -> io::Result<u64> {
        Ok(self
            .state
            .lock()
            .files
            .get(&file)
            .map_or(0, |f| f.live.len() as u64))
    }

    fn sync(&self) -> io::Result<()> {
        {
            let mut s = self.state.lock();
            if let Some(n) = s.faults.fail_syncs_after {
                if n == 0 {
                    return Err(injected("sync"));
                }
                s.faults.fail_syncs_after = Some(n - 1);
            }
        }
        self.dirty.sync(|file| {
            let mut s = self.state.lock();
            if let Some(f) = s.files.get_mut(&file) {
                for &sector in &f.dirty {
                    let a = sector as usize * SECTOR_SIZE;
                    let b = (a + SECTOR_SIZE).min(f.live.len());
                    let (live, durable) = (&f.live, &mut f.durable);
                    durable[a..b].copy_from_slice(&live[a..b]);
                }
                f.dirty.clear();
            }
            Ok(())
        })?;
        self.state.lock().syncs += 1;
        Ok(())
    }

    fn sync_everything(&self) -> io::Result<()> {
        let files: Vec<u32> = self.state.lock().files.keys().copied().collect();
        for file in files {
            self.dirty.note(file);
        }
        self.sync()
    }

    fn read_superblock(&self) -> io::Result<Option<Vec<u8>>> {
        Ok(self.state.lock().superblock.clone())
    }

    fn write_superblock(&self, data: &[u8]) -> io::Result<()> {
        self.state.lock().superblock = Some(data.to_vec());
        Ok(())
    }
}

impl SimStorage {
    /// The first step of a write: the bytes reach the file's page cache (`live`), and their
    /// sectors become unsynced; only the file's next sync makes them durable.
    fn land(&self, file: u32, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut s = self.state.lock();
        if let Some(n) = s.faults.fail_writes_after {
            if n == 0 {
                return Err(injected("write"));
            }
            s.faults.fail_writes_after = Some(n - 1);
        }
        let f = s
            .files
            .get_mut(&file)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        let a = offset as usize;
        let b = a + data.len();
        if b > f.live.len() {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
        }
        f.live[a..b].copy_from_slice(data);
        for sector in (a / SECTOR_SIZE)..b.div_ceil(SECTOR_SIZE) {
            f.dirty.insert(sector as u64);
        }
        s.writes += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sim_power_cut_keeps_synced_and_drops_unsynced() {
        let s = SimStorage::new();
        s.allocate(0, 4096).unwrap();
        s.write_at(0, 0, &[1u8; 1024]).unwrap();
        s.sync().unwrap();
        s.write_at(0, 0, &[2u8; 1024]).unwrap();
        let after = s.crash(PowerCut::DropAllUnsynced);
        let mut buf = [0u8; 1024];
        after.read_at(0, 0, &mut buf).unwrap();
        assert_eq!(buf, [1u8; 1024]);
        let kept = s.crash(PowerCut::KeepAllWritten);
        kept.read_at(0, 0, &mut buf).unwrap();
        assert_eq!(buf, [2u8; 1024]);
    }

    #[test]
    fn sim_random_cut_mixes_sectors() {
        let s = SimStorage::new();
        s.allocate(0, 64 * 1024).unwrap();
        s.write_at(0, 0, &[9u8; 64 * 1024]).unwrap();
        let img = s.crash(PowerCut::Random(3));
        let mut buf = vec![0u8; 64 * 1024];
        img.read_at(0, 0, &mut buf).unwrap();
        let kept = buf.chunks(SECTOR_SIZE).filter(|c| c[0] == 9).count();
        assert!(kept > 0 && kept < 128, "kept {kept} of 128 sectors");
        for c in buf.chunks(SECTOR_SIZE) {
            assert!(
                c.iter().all(|&b| b == c[0]),
                "a sector is all old or all new"
            );
        }
    }

    #[test]
    fn opening_a_non_store_without_create_leaves_no_trace() {
        let dir = tempfile::tempdir().unwrap();
        let err = FileStorage::open(dir.path(), false).err().unwrap();
        assert!(err.to_string().contains("no logstorfs store"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn file_storage_lock_refuses_second_opener() {
        let dir = tempfile::tempdir().unwrap();
        let _a = FileStorage::open(dir.path(), true).unwrap();
        let err = FileStorage::open(dir.path(), true).err().unwrap();
        assert!(err.to_string().contains("open in another process"), "{err}");
    }
}
