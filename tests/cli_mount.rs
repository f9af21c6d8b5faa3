//! The store and mount commands as a user meets them: `format`, `mount` (with and without
//! `--create`), `resize`, `umount`, and the form `mount.fuse3` runs (`logstorfs STORE MNT -o
//! OPTS`). Every refused command shows its message and exit code, and leaves the whole
//! directory tree it was given exactly as it was. The tests that mount need /dev/fuse and
//! fusermount3 (CI installs fuse3): without them they FAIL, they do not skip.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_logstorfs");

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run logstorfs")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Every entry under `root` (not below the directories `skip`): its kind, mode, size, modification time and,
/// for a file, its bytes.
fn tree(root: &Path, skip: &[&Path]) -> BTreeMap<PathBuf, (u32, u64, i64, i64, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let bytes = if m.is_file() {
                std::fs::read(&p).unwrap()
            } else {
                Vec::new()
            };
            out.insert(
                p.clone(),
                (m.mode(), m.len(), m.mtime(), m.mtime_nsec(), bytes),
            );
            if m.is_dir() && !skip.contains(&p.as_path()) {
                stack.push(p);
            }
        }
    }
    out
}

/// Runs `args`, which must fail with exit code `code` and a message containing `says`, and
/// must leave the tree under `root` (outside `skip`) unchanged.
fn refused(root: &Path, skip: &[&Path], args: &[&str], code: i32, says: &str) {
    let before = tree(root, skip);
    let out = run(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
    assert!(err.contains(says), "{args:?}: expected '{says}' in: {err}");
    let after = tree(root, skip);
    assert!(
        before == after,
        "{args:?} changed the tree under {}",
        root.display()
    );
}

fn is_mounted(mnt: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .any(|l| l.split(' ').nth(4) == Some(mnt.to_str().unwrap()))
}

fn require_fuse() {
    assert!(
        Path::new("/dev/fuse").exists(),
        "/dev/fuse is missing: install and load fuse3"
    );
    assert!(
        Command::new("fusermount3").arg("-V").output().is_ok(),
        "fusermount3 is missing: apt-get install -y fuse3"
    );
}

/// A temporary directory with `mnt/` in it; unmounts it on drop.
struct Dir {
    dir: tempfile::TempDir,
    mnt: PathBuf,
}

impl Dir {
    fn new() -> Dir {
        let dir = tempfile::tempdir().unwrap();
        let mnt = dir.path().canonicalize().unwrap().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        Dir { dir, mnt }
    }
    fn root(&self) -> &Path {
        self.dir.path()
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().canonicalize().unwrap().join(name)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        if is_mounted(&self.mnt) {
            let _ = Command::new("fusermount3")
                .arg("-uz")
                .arg(&self.mnt)
                .status();
        }
    }
}

fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn capacity(store: &Path) -> String {
    let json = ok(&["stats", "--json", s(store)]);
    let at = json.find("\"capacity_bytes\":").unwrap() + 17;
    json[at..].split([',', '}']).next().unwrap().to_string()
}

#[test]
fn refused_arguments_write_nothing() {
    let d = Dir::new();
    let store = d.path("store");
    let (st, mnt, root) = (s(&store), s(&d.mnt), d.root());
    // A store that does not exist yet.
    refused(
        root,
        &[],
        &["mount", st, mnt],
        1,
        "holds no logstorfs store: create one with `logstorfs format",
    );
    refused(
        root,
        &[],
        &["mount", "--size", "64M", st, mnt],
        2,
        "--create",
    );
    for size in ["0", "15M", "17T", "1Q"] {
        refused(
            root,
            &[],
            &["mount", "--create", "--size", size, st, mnt],
            2,
            "--size",
        );
        refused(root, &[], &["format", "--size", size, st], 2, "--size");
    }
    refused(
        root,
        &[],
        &["mount", "--create", "-o", "ro,bogus", st, mnt],
        1,
        "unknown mount option 'bogus'",
    );
    refused(
        root,
        &[],
        &["mount", "--create", "-o", "flush_interval=soon", st, mnt],
        1,
        "flush_interval=soon",
    );
    refused(
        root,
        &[],
        &[st, mnt, "-o", "compaction_policy=lru"],
        1,
        "expected greedy or cost-benefit",
    );
    refused(
        root,
        &[],
        &["mount", "--create", "--compaction-policy", "lru", st, mnt],
        2,
        "lru",
    );
    refused(
        root,
        &[],
        &["mount", "--create", "-o", "ro", st, mnt],
        1,
        "a read-only mount cannot create one",
    );
    // Too large for one manifest to name: refused before the bucket is even asked.
    refused(
        root,
        &[],
        &["format", "--size", "16T", "--remote", "s3://bucket/p", st],
        1,
        "cannot be mirrored",
    );
    let missing = d.path("nowhere");
    refused(
        root,
        &[],
        &["mount", "--create", st, s(&missing)],
        1,
        "No such file",
    );
    let file = d.path("file");
    std::fs::write(&file, b"x").unwrap();
    refused(
        root,
        &[],
        &["mount", "--create", st, s(&file)],
        1,
        "is not a directory",
    );
    refused(
        root,
        &[],
        &["format", s(&file.join("store"))],
        1,
        "Not a directory",
    );
    refused(
        root,
        &[],
        &["mount", "--create", st, st],
        1,
        "inside the store",
    );
    refused(
        root,
        &[],
        &["mount", "--create", st, s(&store.join("m"))],
        1,
        "inside the store",
    );
    refused(
        root,
        &[],
        &["mount", "--create", s(&d.mnt.join("s")), mnt],
        1,
        "inside the mount point",
    );
    refused(
        root,
        &[],
        &["resize", "--size", "1G", st],
        1,
        "holds no logstorfs store",
    );
    // A directory of the user's files is not a store, and does not become one.
    let home = d.path("home");
    std::fs::create_dir(&home).unwrap();
    std::fs::write(home.join("notes.txt"), b"mine").unwrap();
    refused(
        root,
        &[],
        &["format", s(&home)],
        1,
        "holds files that are not a logstorfs store's (notes.txt)",
    );
    refused(
        root,
        &[],
        &["mount", "--create", s(&home), mnt],
        1,
        "notes.txt",
    );
    refused(root, &[], &["mount", s(&home), mnt], 1, "notes.txt");
    // An existing store.
    assert!(ok(&["format", "--size", "32M", st]).contains("created a store of 32 MiB"));
    refused(
        root,
        &[],
        &["format", st],
        1,
        "already holds a logstorfs store: give --force",
    );
    refused(
        root,
        &[],
        &["mount", "--create", "--size", "64M", st, mnt],
        1,
        "exists with a capacity of 32 MiB",
    );
    refused(
        root,
        &[],
        &["resize", "--size", "16M", st],
        1,
        "cannot shrink",
    );
    refused(root, &[], &["resize", "--size", "32M", st], 1, "already");
    refused(root, &[], &["resize", st], 2, "--size");
    refused(
        root,
        &[],
        &["format", "--force", "--size", "20T", st],
        2,
        "outside the supported store sizes",
    );
}

#[test]
fn format_creates_force_replaces_and_resize_grows() {
    let d = Dir::new();
    let store = d.path("store");
    let st = s(&store);
    ok(&["format", "--size", "32M", st]);
    assert_eq!(capacity(&store), (32u64 << 20).to_string());
    assert!(ok(&["resize", "--size", "64M", st]).contains("grew from 32 MiB to 64 MiB"));
    assert_eq!(capacity(&store), (64u64 << 20).to_string());
    // An empty directory takes a store; so does a missing one.
    let empty = d.path("empty");
    std::fs::create_dir(&empty).unwrap();
    ok(&["format", s(&empty)]);
    assert_eq!(capacity(&empty), (1u64 << 30).to_string());
    // --force replaces a store, leaving other files in its directory alone.
    std::fs::write(store.join("notes.txt"), b"mine").unwrap();
    ok(&["format", "--force", "--size", "16M", st]);
    assert_eq!(capacity(&store), (16u64 << 20).to_string());
    assert_eq!(std::fs::read(store.join("notes.txt")).unwrap(), b"mine");
    // A new store's first open (here offline stats) loads the checkpoint format left, as
    // the mount's would: no warning of a stale checkpoint, no scan.
    let quiet = d.path("quiet");
    for args in [
        &["format", "--size", "32M", s(&quiet)][..],
        &["stats", s(&quiet)],
    ] {
        let out = run(args);
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn mounted_store_refusals_and_umount_waits_for_the_store() {
    require_fuse();
    let d = Dir::new();
    let store = d.path("store");
    let (st, mnt) = (s(&store), s(&d.mnt));
    ok(&["format", "--size", "32M", st]);
    // The form mount.fuse3 runs: detaches, and is live when it returns.
    ok(&[
        st,
        mnt,
        "-o",
        "defaults,noauto,nofail,_netdev,x-systemd.idle=1,comment=x,flush_interval=1",
    ]);
    assert!(
        is_mounted(&d.mnt),
        "the mount is not live when logstorfs returned"
    );
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = info
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(mnt))
        .unwrap();
    assert!(
        line.contains(" - fuse") && line.contains(&format!(" {st} ")),
        "source is not the store: {line}"
    );
    std::fs::write(d.mnt.join("f"), b"kept").unwrap();

    // Refused while mounted, nothing written around the store (the mount point's tree is left
    // out, and so is the store, which the daemon writes meanwhile).
    let root = d.root();
    let other = d.path("other");
    std::fs::create_dir(&other).unwrap();
    let skip = &[d.mnt.as_path(), store.as_path()][..];
    let store2 = d.path("store2");
    refused(
        root,
        skip,
        &["mount", "--create", s(&store2), mnt],
        1,
        "is already a mount point",
    );
    refused(
        root,
        skip,
        &[s(&store2), mnt],
        1,
        "holds no logstorfs store",
    );
    refused(root, skip, &["resize", "--size", "64M", st], 1, "in use");
    refused(root, skip, &["format", "--force", st], 1, "in use");
    let out = run(&["mount", st, s(&other)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use"));
    refused(root, skip, &["umount", s(&other)], 1, "is not mounted");
    // A busy mount point is not unmounted, and says who holds it.
    let busy = std::fs::File::open(d.mnt.join("f")).unwrap();
    let before = tree(root, skip);
    let out = run(&["umount", mnt]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("busy") && err.contains(&format!("{} (", std::process::id())),
        "{err}"
    );
    assert!(before == tree(root, skip));
    drop(busy);

    // umount returns once the store is closed: fsck right after finds it free and clean.
    ok(&["umount", mnt]);
    assert!(!is_mounted(&d.mnt));
    assert!(!store.join("mounted").exists());
    let out = run(&["fsck", st]);
    assert!(
        out.status.success(),
        "fsck right after umount: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Grown while unmounted, the data is there on the next mount.
    ok(&["resize", "--size", "64M", st]);
    ok(&["mount", "--daemon", st, mnt]);
    assert_eq!(std::fs::read(d.mnt.join("f")).unwrap(), b"kept");
    assert_eq!(capacity(&d.mnt), (64u64 << 20).to_string());
    ok(&["umount", mnt]);
}
