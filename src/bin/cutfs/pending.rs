//! What a disk has not yet made durable for one regular file: the writes and size changes since
//! its last `fsync`/`fdatasync`, kept in 512-byte sectors apart from the backing file.
//!
//! The view through the mount is the backing file's bytes below `zero_from` (the smallest size
//! the file had since its last sync: a shrink hides what lay beyond it, even if the file grows
//! again), overlaid with the pending sectors, cut at `size`. Bytes of a pending sector at or past
//! `size` are always zero, so growing the file shows zeros as it must.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

pub const SECTOR: u64 = 512;

/// A small seeded generator (splitmix64): a cut is replayable from its printed seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
}

/// The backing file a [`Pending`] stands in front of.
pub trait Backing {
    fn pread(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    fn pwrite(&self, data: &[u8], offset: u64) -> io::Result<()>;
    fn set_len(&self, len: u64) -> io::Result<()>;
}

impl Backing for BorrowedFd<'_> {
    fn pread(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            // SAFETY: reads into the unfilled tail of `buf`, which we own mutably.
            let n = unsafe {
                libc::pread(
                    self.as_raw_fd(),
                    buf[done..].as_mut_ptr() as *mut libc::c_void,
                    buf.len() - done,
                    (offset + done as u64) as libc::off_t,
                )
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            if n == 0 {
                break;
            }
            done += n as usize;
        }
        Ok(done)
    }
    fn pwrite(&self, data: &[u8], offset: u64) -> io::Result<()> {
        let mut done = 0;
        while done < data.len() {
            // SAFETY: writes from `data`, which outlives the call.
            let n = unsafe {
                libc::pwrite(
                    self.as_raw_fd(),
                    data[done..].as_ptr() as *const libc::c_void,
                    data.len() - done,
                    (offset + done as u64) as libc::off_t,
                )
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            done += n as usize;
        }
        Ok(())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        // SAFETY: a plain system call on a descriptor the caller owns.
        if unsafe { libc::ftruncate(self.as_raw_fd(), len as libc::off_t) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// The unsynced state of one regular file.
#[derive(Debug, Clone)]
pub struct Pending {
    /// The size seen through the mount.
    pub size: u64,
    /// The backing file's size (what a disk holds).
    pub disk_size: u64,
    /// Backing bytes at or past this offset are not part of the view (see the module comment).
    pub zero_from: u64,
    /// Sector number -> the view's 512 bytes of it.
    pub sectors: BTreeMap<u64, Box<[u8]>>,
}

/// What a cut kept of one file.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CutCount {
    pub sectors_pending: u64,
    pub sectors_kept: u64,
    pub size_changed: bool,
    pub size_kept: bool,
}

impl Pending {
    pub fn new(disk_size: u64) -> Pending {
        Pending {
            size: disk_size,
            disk_size,
            zero_from: disk_size,
            sectors: BTreeMap::new(),
        }
    }

    pub fn is_clean(&self) -> bool {
        self.sectors.is_empty() && self.size == self.disk_size && self.zero_from == self.disk_size
    }

    /// The view's bytes [offset, offset + buf.len()) not counting pending sectors: the backing
    /// file below `zero_from`, zeros elsewhere.
    fn read_backing(&self, b: &dyn Backing, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        buf.fill(0);
        let visible_end = self.zero_from.min(self.disk_size);
        if offset < visible_end {
            let n = ((visible_end - offset) as usize).min(buf.len());
            b.pread(&mut buf[..n], offset)?;
        }
        Ok(())
    }

    /// The view's bytes from `offset`, at most `len` of them (fewer at the end of the file).
    pub fn read(&self, b: &dyn Backing, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        if offset >= self.size {
            return Ok(Vec::new());
        }
        let len = (len as u64).min(self.size - offset) as usize;
        let mut out = vec![0u8; len];
        self.read_backing(b, offset, &mut out)?;
        let end = offset + len as u64;
        for (&s, data) in self.sectors.range(offset / SECTOR..end.div_ceil(SECTOR)) {
            let start = (s * SECTOR).max(offset);
            let stop = ((s + 1) * SECTOR).min(end);
            out[(start - offset) as usize..(stop - offset) as usize].copy_from_slice(
                &data[(start - s * SECTOR) as usize..(stop - s * SECTOR) as usize],
            );
        }
        Ok(out)
    }

    fn sector_mut(&mut self, b: &dyn Backing, s: u64) -> io::Result<&mut [u8]> {
        if !self.sectors.contains_key(&s) {
            let mut data = vec![0u8; SECTOR as usize];
            self.read_backing(b, s * SECTOR, &mut data)?;
            // Bytes past the size are zero in a pending sector (see the module comment).
            let size = self.size;
            for (i, byte) in data.iter_mut().enumerate() {
                if s * SECTOR + i as u64 >= size {
                    *byte = 0;
                }
            }
            self.sectors.insert(s, data.into_boxed_slice());
        }
        Ok(self.sectors.get_mut(&s).expect("just inserted"))
    }

    pub fn write(&mut self, b: &dyn Backing, offset: u64, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let end = offset + data.len() as u64;
        for s in offset / SECTOR..end.div_ceil(SECTOR) {
            let start = (s * SECTOR).max(offset);
            let stop = ((s + 1) * SECTOR).min(end);
            let sector = self.sector_mut(b, s)?;
            sector[(start - s * SECTOR) as usize..(stop - s * SECTOR) as usize]
                .copy_from_slice(&data[(start - offset) as usize..(stop - offset) as usize]);
        }
        self.size = self.size.max(end);
        Ok(())
    }

    pub fn set_size(&mut self, b: &dyn Backing, n: u64) -> io::Result<()> {
        if n < self.size {
            let first_gone = n.div_ceil(SECTOR);
            self.sectors.retain(|&s, _| s < first_gone);
            if !n.is_multiple_of(SECTOR) {
                let s = n / SECTOR;
                let sector = self.sector_mut(b, s)?;
                sector[(n % SECTOR) as usize..].fill(0);
            }
            self.zero_from = self.zero_from.min(n);
        }
        self.size = n;
        Ok(())
    }

    /// fsync: the backing file becomes the view.
    pub fn sync(&mut self, b: &dyn Backing) -> io::Result<()> {
        if self.is_clean() {
            return Ok(());
        }
        if self.zero_from < self.disk_size {
            b.set_len(self.zero_from)?;
        }
        for (&s, data) in &self.sectors {
            b.pwrite(data, s * SECTOR)?;
        }
        b.set_len(self.size)?;
        *self = Pending::new(self.size);
        Ok(())
    }

    /// A power cut: the backing file keeps each pending sector with probability `p` (0: none),
    /// and the new size (with the shrink it implies) with probability `p` too.
    pub fn cut(&mut self, b: &dyn Backing, rng: &mut Rng, p: f64) -> io::Result<CutCount> {
        let mut count = CutCount {
            sectors_pending: self.sectors.len() as u64,
            size_changed: self.size != self.disk_size || self.zero_from < self.disk_size,
            ..CutCount::default()
        };
        let keep_size = count.size_changed && p > 0.0 && rng.chance(p);
        let final_size = if keep_size {
            if self.zero_from < self.disk_size {
                b.set_len(self.zero_from)?;
            }
            b.set_len(self.size)?;
            count.size_kept = true;
            self.size
        } else {
            self.disk_size
        };
        for (&s, data) in &self.sectors {
            if p > 0.0 && rng.chance(p) {
                let start = s * SECTOR;
                if start < final_size {
                    let n = (final_size - start).min(SECTOR) as usize;
                    b.pwrite(&data[..n], start)?;
                }
                count.sectors_kept += 1;
            }
        }
        *self = Pending::new(final_size);
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// An in-memory backing file.
    #[derive(Default)]
    struct Mem(RefCell<Vec<u8>>);

    impl Backing for Mem {
        fn pread(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
            let v = self.0.borrow();
            let start = (offset as usize).min(v.len());
            let n = buf.len().min(v.len() - start);
            buf[..n].copy_from_slice(&v[start..start + n]);
            Ok(n)
        }
        fn pwrite(&self, data: &[u8], offset: u64) -> io::Result<()> {
            let mut v = self.0.borrow_mut();
            let end = offset as usize + data.len();
            if v.len() < end {
                v.resize(end, 0);
            }
            v[offset as usize..end].copy_from_slice(data);
            Ok(())
        }
        fn set_len(&self, len: u64) -> io::Result<()> {
            self.0.borrow_mut().resize(len as usize, 0);
            Ok(())
        }
    }

    fn bytes(seed: u64, n: usize) -> Vec<u8> {
        let mut r = Rng::new(seed);
        (0..n).map(|_| r.next_u64() as u8).collect()
    }

    /// Random writes, shrinks and growths against a plain byte vector: the view always equals
    /// the model, the backing file never changes before a sync, and equals the model after it.
    #[test]
    fn view_matches_a_plain_file_and_backing_waits_for_sync() {
        for seed in 0..200u64 {
            let mut rng = Rng::new(seed);
            let initial = bytes(seed, rng.below(3000) as usize);
            let disk = Mem(RefCell::new(initial.clone()));
            let mut model = initial.clone();
            let mut p = Pending::new(initial.len() as u64);
            for step in 0..30 {
                match rng.below(4) {
                    0 | 1 => {
                        let off = rng.below(model.len() as u64 + 1500);
                        let data = bytes(seed * 100 + step, rng.below(1300) as usize + 1);
                        p.write(&disk, off, &data).unwrap();
                        let end = off as usize + data.len();
                        if model.len() < end {
                            model.resize(end, 0);
                        }
                        model[off as usize..end].copy_from_slice(&data);
                    }
                    2 => {
                        let n = rng.below(model.len() as u64 + 1200);
                        p.set_size(&disk, n).unwrap();
                        model.resize(n as usize, 0);
                    }
                    _ => {
                        let off = rng.below(model.len() as u64 + 10);
                        let got = p.read(&disk, off, rng.below(4000) as usize).unwrap();
                        let from = (off as usize).min(model.len());
                        let want = &model[from..(from + got.len()).min(model.len())];
                        assert_eq!(got, want, "seed {seed} step {step}: read at {off}");
                    }
                }
                assert_eq!(p.size, model.len() as u64);
                let whole = p.read(&disk, 0, model.len() + 10).unwrap();
                assert!(whole == model, "seed {seed} step {step}: view differs");
                assert!(
                    *disk.0.borrow() == initial,
                    "seed {seed}: backing changed unsynced"
                );
            }
            p.sync(&disk).unwrap();
            assert!(*disk.0.borrow() == model, "seed {seed}: backing after sync");
            assert!(p.is_clean());
        }
    }

    /// A cut that keeps nothing leaves the backing file as at the last sync; one that keeps all
    /// leaves it as a sync would; a partial one leaves each sector either old or new.
    #[test]
    fn cut_keeps_old_or_new_per_sector() {
        for seed in 0..100u64 {
            let old = bytes(seed, 4096);
            let new = bytes(seed + 1000, 4096);
            for (p, what) in [(0.0, "none"), (1.0, "all"), (0.5, "half")] {
                let disk = Mem(RefCell::new(old.clone()));
                let mut pend = Pending::new(4096);
                pend.write(&disk, 0, &new).unwrap();
                let count = pend.cut(&disk, &mut Rng::new(seed), p).unwrap();
                let got = disk.0.borrow().clone();
                assert_eq!(got.len(), 4096);
                match what {
                    "none" => assert!(got == old && count.sectors_kept == 0),
                    "all" => assert!(got == new && count.sectors_kept == 8),
                    _ => {
                        let mut kept = 0;
                        for s in 0..8 {
                            let r = s * 512..(s + 1) * 512;
                            if got[r.clone()] == new[r.clone()] {
                                kept += 1;
                            } else {
                                assert!(got[r.clone()] == old[r], "seed {seed}: sector {s} torn");
                            }
                        }
                        assert_eq!(kept, count.sectors_kept);
                    }
                }
            }
        }
    }
}
