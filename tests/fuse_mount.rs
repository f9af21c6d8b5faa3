//! Real mounts through the kernel, using the built binary: `mount --daemon`, ordinary std::fs
//! operations, `stats` while mounted and offline, a second mount of the same store refused,
//! unmount with `fusermount3 -u`, remount and verify; foreground mode ending on unmount and on
//! SIGTERM. Requires /dev/fuse and fusermount3 (CI installs fuse3): without them these tests
//! FAIL, they do not skip.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_logstorfs");

fn require_fuse() {
    assert!(
        Path::new("/dev/fuse").exists(),
        "/dev/fuse is missing: install and load fuse3"
    );
    let found = Command::new("fusermount3").arg("-V").output();
    assert!(
        found.is_ok(),
        "fusermount3 is missing: apt-get install -y fuse3"
    );
}

fn is_mounted(mnt: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mnt = mnt.to_str().unwrap();
    info.lines().any(|l| l.split(' ').nth(4) == Some(mnt))
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run logstorfs")
}

/// A tempdir with `store/` and `mnt/`; unmounts on drop so a failed test leaves no mount.
struct Fixture {
    _dir: tempfile::TempDir,
    store: PathBuf,
    mnt: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        require_fuse();
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let mnt = mnt.canonicalize().unwrap();
        Fixture {
            _dir: dir,
            store,
            mnt,
        }
    }

    fn mount_daemon(&self) {
        let out = run(&[
            "mount",
            "--daemon",
            "--create",
            "--size",
            "64M",
            s(&self.store),
            s(&self.mnt),
        ]);
        assert!(
            out.status.success(),
            "mount failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            is_mounted(&self.mnt),
            "--daemon returned before the mount was live"
        );
    }

    fn daemon_pid(&self) -> i32 {
        let m = std::fs::read_to_string(self.store.join("mounted")).expect("STORE/mounted");
        let mut lines = m.lines();
        assert_eq!(lines.next(), Some(s(&self.mnt)));
        lines.next().unwrap().parse().unwrap()
    }

    /// fusermount3 -u, then wait until the daemon has exited (engine closed, lock released).
    fn unmount(&self) {
        let pid = self.daemon_pid();
        let st = Command::new("fusermount3")
            .arg("-u")
            .arg(&self.mnt)
            .status()
            .unwrap();
        assert!(st.success(), "fusermount3 -u failed");
        wait_for("daemon exit", || !process_alive(pid));
        assert!(!is_mounted(&self.mnt));
        assert!(
            !self.store.join("mounted").exists(),
            "STORE/mounted left after clean exit"
        );
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if is_mounted(&self.mnt) {
            let _ = Command::new("fusermount3")
                .arg("-uz")
                .arg(&self.mnt)
                .status();
        }
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn process_alive(pid: i32) -> bool {
    // A zombie (exited, not yet reaped by init in a container) counts as gone.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn daemon_mount_use_unmount_remount() {
    let fx = Fixture::new();
    fx.mount_daemon();
    let m = &fx.mnt;
    let data: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i * 7 + i / 4096) as u8)
        .collect();
    std::fs::write(m.join("big"), &data).unwrap();
    std::fs::write(m.join("small"), b"hello").unwrap();
    std::fs::create_dir_all(m.join("a/b/c")).unwrap();
    std::fs::rename(m.join("small"), m.join("a/b/moved")).unwrap();
    std::fs::hard_link(m.join("a/b/moved"), m.join("hard")).unwrap();
    std::os::unix::fs::symlink("a/b/moved", m.join("sym")).unwrap();
    assert_eq!(std::fs::read(m.join("sym")).unwrap(), b"hello");
    assert_eq!(std::fs::metadata(m.join("hard")).unwrap().nlink(), 2);
    assert_eq!(std::fs::metadata(m.join("a")).unwrap().nlink(), 3);
    // rm -r of a directory with many entries: nothing skipped, so remove_dir_all succeeds.
    std::fs::create_dir(m.join("many")).unwrap();
    for i in 0..500 {
        std::fs::write(m.join(format!("many/f{i}")), b"x").unwrap();
    }
    assert_eq!(std::fs::read_dir(m.join("many")).unwrap().count(), 500);
    std::fs::remove_dir_all(m.join("many")).unwrap();
    assert!(!m.join("many").exists());
    let long = "n".repeat(256);
    let err = std::fs::write(m.join(&long), b"").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENAMETOOLONG));
    let err = std::fs::remove_dir(m.join("a")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTEMPTY));
    let meta = std::fs::metadata(m.join("big")).unwrap();
    assert_eq!(meta.len(), data.len() as u64);
    assert_eq!(meta.blocks(), (data.len() as u64).div_ceil(4096) * 8);
    let big_ino = meta.ino();

    // stats while mounted, by store and by mount point.
    for target in [&fx.store, &fx.mnt] {
        let out = run(&["stats", "--json", s(target)]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json = String::from_utf8(out.stdout).unwrap();
        assert!(json.contains("\"capacity_bytes\":67108864"), "{json}");
        assert!(
            json.contains("\"groups\":[{\"id\":0,\"root\":\"/\""),
            "{json}"
        );
    }
    // A second daemon on the same store is refused with a clear message.
    let other = tempfile::tempdir().unwrap();
    let out = run(&["mount", "--daemon", s(&fx.store), s(other.path())]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("logstorfs: ") && err.contains("in use"),
        "{err}"
    );
    assert!(!is_mounted(other.path()));

    fx.unmount();
    let out = run(&["stats", "--json", s(&fx.store)]);
    assert!(
        out.status.success(),
        "offline stats: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    fx.mount_daemon();
    assert!(
        std::fs::read(m.join("big")).unwrap() == data,
        "big differs after remount"
    );
    assert_eq!(std::fs::read(m.join("a/b/moved")).unwrap(), b"hello");
    assert_eq!(
        std::fs::read_link(m.join("sym")).unwrap(),
        Path::new("a/b/moved")
    );
    assert_eq!(std::fs::metadata(m.join("big")).unwrap().ino(), big_ino);
    let mut names: Vec<String> = std::fs::read_dir(m)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["a", "big", "hard", "sym"]);
    fx.unmount();
}

fn spawn_foreground(fx: &Fixture) -> Child {
    let child = Command::new(BIN)
        .args([
            "mount",
            "--create",
            "--size",
            "64M",
            s(&fx.store),
            s(&fx.mnt),
        ])
        .spawn()
        .unwrap();
    wait_for("foreground mount", || is_mounted(&fx.mnt));
    child
}

#[test]
fn foreground_mount_exits_zero_on_unmount_and_on_sigterm() {
    let fx = Fixture::new();
    let mut child = spawn_foreground(&fx);
    std::fs::write(fx.mnt.join("f"), b"one").unwrap();
    let st = Command::new("fusermount3")
        .arg("-u")
        .arg(&fx.mnt)
        .status()
        .unwrap();
    assert!(st.success());
    assert!(
        child.wait().unwrap().success(),
        "foreground mount did not exit 0 after unmount"
    );

    let mut child = spawn_foreground(&fx);
    assert_eq!(std::fs::read(fx.mnt.join("f")).unwrap(), b"one");
    std::fs::write(fx.mnt.join("g"), b"two").unwrap();
    // SAFETY: sending a signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(
        child.wait().unwrap().success(),
        "SIGTERM did not end in a clean exit"
    );
    assert!(!is_mounted(&fx.mnt), "SIGTERM left the mount behind");

    let mut child = spawn_foreground(&fx);
    assert_eq!(std::fs::read(fx.mnt.join("g")).unwrap(), b"two");
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    assert!(child.wait().unwrap().success());
}

/// A signal that comes before the session can be unmounted (here while the store is being
/// opened, as during a long recovery) still ends the daemon cleanly once it has mounted.
#[test]
fn a_sigterm_before_the_mount_is_up_still_unmounts_and_exits_zero() {
    let fx = Fixture::new();
    let mut child = Command::new(BIN)
        .args([
            "mount",
            "--create",
            "--size",
            "64M",
            "--test-delay-open-ms",
            "1500",
        ])
        .args([s(&fx.store), s(&fx.mnt)])
        .spawn()
        .unwrap();
    let signals_thread = format!("/proc/{}/task", child.id());
    wait_for("the daemon's signal thread", || {
        std::fs::read_dir(&signals_thread).is_ok_and(|tasks| {
            tasks.flatten().any(|t| {
                std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "signals")
            })
        })
    });
    // SAFETY: sending a signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    // A hang guard, not a speed check: the daemon that lost the signal never exits.
    let hang_guard = std::time::Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if hang_guard.elapsed() > std::time::Duration::from_secs(30) {
            let _ = child.kill();
            let _ = Command::new("fusermount3").arg("-uz").arg(&fx.mnt).status();
            panic!("the daemon lost a SIGTERM that came before its mount was up");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    assert!(!is_mounted(&fx.mnt), "the mount was left behind");
}

#[test]
fn unlinked_open_file_stays_usable_through_its_descriptor() {
    use std::io::{Read, Seek, SeekFrom, Write};
    let fx = Fixture::new();
    fx.mount_daemon();
    let path = fx.mnt.join("tmp");
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    f.write_all(&vec![5u8; 200_000]).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(!path.exists());
    f.write_all(b"more").unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    let mut back = Vec::new();
    f.read_to_end(&mut back).unwrap();
    assert_eq!(back.len(), 200_004);
    assert_eq!(&back[200_000..], b"more");
    let live_open = stats_live_bytes(&fx.store);
    drop(f);
    // The last close purges the data: live bytes drop by at least the file's size.
    wait_for("purge after last close", || {
        stats_live_bytes(&fx.store) + 200_000 <= live_open
    });
    fx.unmount();
}

/// A sequential read comes in requests of a MiB: the daemon raises its mount's read-ahead after
/// INIT (the kernel offers at most 128 KiB there). Root only, as these tests run.
#[test]
fn the_mounts_read_ahead_is_raised_to_a_mebibyte() {
    let fx = Fixture::new();
    fx.mount_daemon();
    let dev = std::fs::metadata(&fx.mnt).unwrap().dev();
    let path = format!(
        "/sys/class/bdi/{}:{}/read_ahead_kb",
        libc::major(dev),
        libc::minor(dev)
    );
    wait_for("the read-ahead raised to 1024 KiB", || {
        std::fs::read_to_string(&path).is_ok_and(|kb| kb.trim() == "1024")
    });
    fx.unmount();
}

fn stats_live_bytes(store: &Path) -> u64 {
    let out = run(&["stats", "--json", s(store)]);
    let json = String::from_utf8(out.stdout).unwrap();
    let at = json.find("\"live_bytes\":").expect("live_bytes") + "\"live_bytes\":".len();
    json[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn kill_9_then_remount_keeps_synced_data_and_reclaims_orphans() {
    use std::io::Write;
    let fx = Fixture::new();
    fx.mount_daemon();
    let mut kept = std::fs::File::create(fx.mnt.join("kept")).unwrap();
    kept.write_all(&vec![9u8; 100_000]).unwrap();
    kept.sync_all().unwrap();
    drop(kept);
    let mut open_unlinked = std::fs::File::create(fx.mnt.join("orphan")).unwrap();
    open_unlinked.write_all(&vec![1u8; 500_000]).unwrap();
    std::fs::remove_file(fx.mnt.join("orphan")).unwrap();
    open_unlinked.sync_all().unwrap();
    let live_with_orphan = stats_live_bytes(&fx.store);
    let pid = fx.daemon_pid();
    // SAFETY: killing the daemon this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    wait_for("daemon death", || !process_alive(pid));
    drop(open_unlinked);
    // The dead mount is detached by the next mount of the same mount point.
    fx.mount_daemon();
    assert_eq!(
        std::fs::read(fx.mnt.join("kept")).unwrap(),
        vec![9u8; 100_000]
    );
    assert!(!fx.mnt.join("orphan").exists());
    let live = stats_live_bytes(&fx.store);
    assert!(
        live + 500_000 <= live_with_orphan,
        "orphan not reclaimed: {live} vs {live_with_orphan}"
    );
    fx.unmount();
}
