//! Storage on the host filesystem: a store directory of segment files, each opened once and
//! kept, the superblock and checkpoint replaced atomically, and the store locked against a
//! second process. A sync makes durable exactly the files written since the last one
//! ([`DirtyFiles`], shared with the crash simulation so that it runs the same bookkeeping).

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use super::super::concurrency::{self, Arc, Mutex, RwLock};
use super::{
    CHECKPOINT_FILE, LOCK_FILE, SUPERBLOCK_FILE, Storage, create_dir_durably, store_file_name,
};

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
        let table = super::SYNC_TABLE_FILE;
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

#[cfg(test)]
mod tests {
    use super::*;

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
