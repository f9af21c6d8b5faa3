//! Crash simulation: a storage in memory that keeps what was written apart from what is
//! durable, so that a test can cut power at any point and see exactly what a disk could have
//! kept (any subset of the unsynced 512-byte sectors, as a host page cache may write them back
//! in any order), and can fail writes, syncs or allocations on cue.

use std::collections::{BTreeMap, BTreeSet};
use std::io;

use super::super::concurrency::{Arc, Mutex};
use super::{DirtyFiles, SECTOR_SIZE, Storage};

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
}
