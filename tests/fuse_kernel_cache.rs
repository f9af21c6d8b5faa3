//! What the kernel caches of a real mount (attributes and entries for `fuse_adapter::TTL`) is
//! never staler than the store: a change the kernel cannot see the effect of is invalidated by
//! the daemon. Requires /dev/fuse and fusermount3 (CI installs fuse3): without them these tests
//! FAIL, they do not skip.

use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_logstorfs");
const FS_IOC_SETFLAGS: libc::c_ulong = 0x4008_6602;
const FS_APPEND_FL: libc::c_int = 0x20;

struct Mount {
    _dir: tempfile::TempDir,
    mnt: PathBuf,
}

impl Mount {
    fn new() -> Mount {
        assert!(
            Path::new("/dev/fuse").exists(),
            "/dev/fuse is missing: install and load fuse3"
        );
        let dir = tempfile::tempdir().unwrap();
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let out = Command::new(BIN)
            .args(["mount", "--daemon", "--create", "--size", "64M"])
            .arg(dir.path().join("store"))
            .arg(&mnt)
            .output()
            .expect("run logstorfs");
        assert!(
            out.status.success(),
            "mount failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Mount { mnt, _dir: dir }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("fusermount3")
            .arg("-u")
            .arg(&self.mnt)
            .status();
    }
}

fn set_flags(f: &std::fs::File, flags: libc::c_int) {
    // SAFETY: a valid descriptor and a pointer to an int, as FS_IOC_SETFLAGS takes.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), FS_IOC_SETFLAGS, &flags) };
    assert_eq!(
        rc,
        0,
        "FS_IOC_SETFLAGS: {}",
        std::io::Error::last_os_error()
    );
}

fn ctime(p: &Path) -> (i64, i64) {
    let m = std::fs::metadata(p).unwrap();
    (m.ctime(), m.ctime_nsec())
}

#[test]
fn stat_after_a_flag_change_shows_its_new_ctime() {
    let m = Mount::new();
    let path = m.mnt.join("f");
    let f = std::fs::File::create(&path).unwrap();
    let before = ctime(&path); // now in the kernel's attribute cache
    std::thread::sleep(std::time::Duration::from_millis(20));
    set_flags(&f, FS_APPEND_FL);
    let after = ctime(&path);
    set_flags(&f, 0);
    assert!(
        after > before,
        "chattr +a: stat still shows the ctime from before ({before:?}, after {after:?})"
    );
}
