//! A store directory opened for reading only, as fsck reads it: nothing on disk may change
//! while the store is checked (no recovery, no created file, no lock taken exclusively), and a
//! mounted store is refused rather than read while a daemon writes it.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::super::api::{EngineError, Result};
use super::super::concurrency::{Arc, Mutex};
use super::super::storage::{LOCK_FILE, SUPERBLOCK_FILE, Storage, store_file_name};

/// A store directory opened for reading only: segment files are opened read-only, nothing is
/// created, and a shared lock on the store's lock file keeps a daemon from mounting the store
/// meanwhile (and tells whether one has it mounted now).
pub struct ReadOnlyStorage {
    dir: PathBuf,
    files: Mutex<Vec<Option<Arc<File>>>>,
    _lock: Option<File>,
}

impl ReadOnlyStorage {
    /// Opens `dir`. [`EngineError::NotAStore`] if it holds no superblock,
    /// [`EngineError::Locked`] if a process (a mounted daemon) holds the store.
    pub fn open(dir: &Path) -> Result<ReadOnlyStorage> {
        if !dir.is_dir() {
            return Err(EngineError::NotAStore(format!(
                "{} is not a directory",
                dir.display()
            )));
        }
        if !dir.join(SUPERBLOCK_FILE).exists() {
            return Err(EngineError::NotAStore(format!(
                "{} holds no logstorfs store (no superblock)",
                dir.display()
            )));
        }
        // A store never opened has no lock file; creating one would change the store.
        let lock = match File::open(dir.join(LOCK_FILE)) {
            Ok(f) => Some(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(EngineError::Io(e)),
        };
        if let Some(f) = &lock {
            super::super::storage::lock_store(dir, f, libc::LOCK_SH).map_err(|e| {
                if e.kind() == io::ErrorKind::WouldBlock {
                    EngineError::Locked(e.to_string())
                } else {
                    EngineError::Io(e)
                }
            })?;
        }
        Ok(ReadOnlyStorage {
            dir: dir.to_path_buf(),
            files: Mutex::new(Vec::new()),
            _lock: lock,
        })
    }

    /// Path of segment file `file`.
    pub fn segment_path(&self, file: u32) -> PathBuf {
        self.dir.join(store_file_name(file))
    }

    fn file(&self, file: u32) -> io::Result<Arc<File>> {
        let mut files = self.files.lock();
        if files.len() <= file as usize {
            files.resize(file as usize + 1, None);
        }
        if let Some(f) = &files[file as usize] {
            return Ok(f.clone());
        }
        let f = Arc::new(
            OpenOptions::new()
                .read(true)
                .open(self.segment_path(file))?,
        );
        files[file as usize] = Some(f.clone());
        Ok(f)
    }
}

fn read_only() -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        "the store is open read-only",
    )
}

impl Storage for ReadOnlyStorage {
    fn read_at(&self, file: u32, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file(file)?.read_exact_at(buf, offset)
    }
    fn write_at(&self, _file: u32, _offset: u64, _data: &[u8]) -> io::Result<()> {
        Err(read_only())
    }
    fn allocate(&self, _file: u32, _len: u64) -> io::Result<()> {
        Err(read_only())
    }
    fn file_len(&self, file: u32) -> io::Result<u64> {
        match std::fs::metadata(self.segment_path(file)) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e),
        }
    }
    fn sync(&self) -> io::Result<()> {
        Ok(())
    }
    fn read_superblock(&self) -> io::Result<Option<Vec<u8>>> {
        match std::fs::read(self.dir.join(SUPERBLOCK_FILE)) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
    fn write_superblock(&self, _data: &[u8]) -> io::Result<()> {
        Err(read_only())
    }
    fn map_file(
        &self,
        file: u32,
        len: u64,
    ) -> io::Result<Option<super::super::storage::MappedFile>> {
        super::super::storage::MappedFile::map(&*self.file(file)?, len).map(Some)
    }
    fn read_checkpoint(&self) -> io::Result<Option<Vec<u8>>> {
        super::super::storage::read_checkpoint_in(&self.dir)
    }
}
