//! `-o writeback_cache` on real mounts: write(2) is answered by the kernel's page cache, so a
//! full store is reported by fsync(2) instead (README, "logstorfs mount"), and data
//! written through the cache reads back, also after a remount. Requires /dev/fuse and
//! fusermount3 (CI installs fuse3): without them these tests FAIL, they do not skip.

use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_logstorfs");

struct Mount {
    _dir: tempfile::TempDir,
    store: PathBuf,
    mnt: PathBuf,
    mounted: bool,
}

impl Mount {
    fn new(size: &str) -> Mount {
        assert!(
            Path::new("/dev/fuse").exists(),
            "/dev/fuse is missing: install and load fuse3"
        );
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let mut m = Mount {
            mnt: mnt.canonicalize().unwrap(),
            _dir: dir,
            store,
            mounted: false,
        };
        m.mount(size);
        m
    }

    /// Mounts; a daemon still closing the store after an unmount holds its lock for a moment.
    fn mount(&mut self, size: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let out = loop {
            let out = Command::new(BIN)
                .args([
                    "mount",
                    "--daemon",
                    "--create",
                    "--size",
                    size,
                    "-o",
                    "writeback_cache",
                ])
                .arg(&self.store)
                .arg(&self.mnt)
                .output()
                .expect("run logstorfs");
            let busy = String::from_utf8_lossy(&out.stderr).contains("already in use");
            if out.status.success() || !busy || std::time::Instant::now() > deadline {
                break out;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        assert!(
            out.status.success(),
            "mount -o writeback_cache failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.mounted = true;
    }

    /// Unmounts. The mount is busy for a moment if another test of this binary spawns a
    /// process while this one has a file open: the child holds a copy of the descriptor
    /// between its fork and its exec.
    fn unmount(&mut self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let out = Command::new("fusermount3")
                .arg("-u")
                .arg(&self.mnt)
                .output()
                .expect("run fusermount3");
            if out.status.success() {
                break;
            }
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                stderr.contains("busy") && std::time::Instant::now() < deadline,
                "cannot unmount {}: {stderr}",
                self.mnt.display()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        self.mounted = false;
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("fusermount3")
                .arg("-uz")
                .arg(&self.mnt)
                .status();
        }
    }
}

#[test]
fn a_full_store_is_reported_by_fsync_when_write_was_answered_by_the_cache() {
    let m = Mount::new("64M");
    let path = m.mnt.join("big");
    let f = std::fs::File::create(&path).unwrap();
    let buf = vec![0x5au8; 1 << 20];
    // Three times the store: without the writeback cache the store's ENOSPC would stop write(2).
    for i in 0..192u64 {
        f.write_all_at(&buf, i << 20).unwrap_or_else(|e| {
            panic!("write(2) of MiB {i} failed ({e}): the cache should take it")
        });
    }
    // A child spawned while the file is open (any thread of this test binary may spawn one:
    // the other tests run mounts) inherits the descriptor and closes it at exec. That close
    // writes the dirty pages back and takes the error close(2) would have reported: the kernel
    // keeps one error flag per inode for whichever close checks first. fsync(2) reports it
    // through this open file's own error sequence, which no other close advances.
    let st = Command::new("true").status().expect("run true(1)");
    assert!(st.success(), "true(1) failed: {st}");
    let err = f
        .sync_all()
        .expect_err("fsync(2) hid the ENOSPC of the write-back");
    assert_eq!(
        err.kind(),
        ErrorKind::StorageFull,
        "fsync(2) failed with {err}, not ENOSPC"
    );
}

/// Writes `size` bytes to a new file through the page cache and fsyncs it.
fn write_and_fsync(path: &Path, size: usize) -> std::io::Result<()> {
    let f = std::fs::File::create(path)?;
    let buf = vec![0x5au8; 1 << 20];
    for off in (0..size).step_by(buf.len()) {
        f.write_all_at(&buf[..buf.len().min(size - off)], off as u64)?;
    }
    f.sync_all()
}

#[test]
fn a_write_back_the_full_store_cuts_short_fails_fsync() {
    let m = Mount::new("64M");
    // Room for part of the last file: a file deleted once the store is full.
    write_and_fsync(&m.mnt.join("room"), 2560 << 10).expect("the room file fits");
    let err = write_and_fsync(&m.mnt.join("fill"), 64 << 20)
        .expect_err("64 MiB of data fit in a 64M store");
    assert_eq!(
        err.kind(),
        ErrorKind::StorageFull,
        "filling failed with {err}"
    );
    std::fs::remove_file(m.mnt.join("room")).unwrap();
    // The kernel writes the last MiB back in one WRITE; the store runs out in its middle, after
    // some of its batches were stored. A short count for that WRITE is ignored by the kernel,
    // so fsync(2) would succeed with the tail of the file lost.
    let err = write_and_fsync(&m.mnt.join("last"), 3 << 20)
        .expect_err("fsync(2) succeeded for 3 MiB written into 2.5 MiB of room");
    assert_eq!(
        err.kind(),
        ErrorKind::StorageFull,
        "fsync(2) failed with {err}, not ENOSPC"
    );
}

#[test]
fn overwrites_through_the_cache_read_back_after_fsync_and_remount() {
    let mut m = Mount::new("256M");
    let path = m.mnt.join("f");
    let size = 4u64 << 20;
    let mut model = vec![0u8; size as usize];
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .unwrap();
    f.write_all_at(&model, 0).unwrap();
    // A fixed pseudo-random sequence of 4 KiB and unaligned overwrites.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..3000u32 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = if i % 3 == 0 {
            1 + (x >> 40) % 9000
        } else {
            4096
        };
        let off = (x % (size - len)) & if i % 3 == 0 { !0 } else { !4095 };
        let data: Vec<u8> = (0..len).map(|k| (k as u8) ^ (i as u8)).collect();
        f.write_all_at(&data, off).unwrap();
        model[off as usize..(off + len) as usize].copy_from_slice(&data);
    }
    f.sync_all().unwrap();
    let mut back = vec![0u8; size as usize];
    f.read_exact_at(&mut back, 0).unwrap();
    assert!(
        back == model,
        "contents differ from what was written, before the remount"
    );
    drop(f);
    m.unmount();
    m.mount("256M");
    let got = std::fs::read(&path).unwrap();
    assert_eq!(got.len(), model.len(), "size after remount");
    let first = got.iter().zip(&model).position(|(a, b)| a != b);
    assert_eq!(
        first, None,
        "contents differ after the remount at this byte offset"
    );
}

/// The kernel keeps a cached file's times itself and writes back the ctime an unlink sets in
/// its copy (a SETATTR of mtime and ctime) while it still holds the inode, after the unlink
/// purged the file (no open handle) or after the last close of a file unlinked while open.
/// An error there is recorded as a writeback error of the whole file system: syncfs(2) then
/// fails, for every descriptor on the mount opened before it (stress-ng --io saw ENOENT).
#[test]
fn syncfs_after_unlinks_reports_no_writeback_error() {
    use std::os::fd::AsRawFd;
    let m = Mount::new("64M");
    let dir = std::fs::File::open(&m.mnt).unwrap();
    let syncfs = || {
        // SAFETY: syncfs(2) on a descriptor this test holds open.
        if unsafe { libc::syncfs(dir.as_raw_fd()) } == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    syncfs().expect("syncfs(2) of a fresh mount");
    for i in 0..10 {
        let closed = m.mnt.join(format!("closed-{i}"));
        std::fs::write(&closed, b"written through the cache").unwrap();
        std::fs::remove_file(&closed).unwrap();
        syncfs().unwrap_or_else(|e| panic!("syncfs(2) after unlinking a closed file: {e}"));
        let open = m.mnt.join(format!("open-{i}"));
        let f = std::fs::File::create(&open).unwrap();
        f.write_all_at(b"unlinked while open", 0).unwrap();
        std::fs::remove_file(&open).unwrap();
        drop(f);
        syncfs()
            .unwrap_or_else(|e| panic!("syncfs(2) after the last close of an unlinked file: {e}"));
    }
}
