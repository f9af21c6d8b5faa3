//! Stores written by earlier builds still mount and read exactly: every on-disk format version
//! has committed images (`tests/fixtures/format-vF-sbS/`, made once by
//! `scripts/make_format_fixture.sh` on a real mount), one left by a clean unmount and one by a
//! `kill -9` in the middle of unsynced writes. Each is unpacked, fscked (engine and namespace:
//! no problem; the clean one not even a note), opened with the current code at the `Fs` level,
//! and every entry is read against the manifest written on the live mount (kind, mode, owner,
//! size, link count, inode number, sha256 of the bytes or the symlink target, xattrs); then it
//! is closed, fscked again, reopened (now from the current build's own checkpoint) and read
//! again. A change that strands older stores fails here, naming the fixture and what differs.

mod fs_common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use fs_common::{list, options, read_all};
use logstorfs::engine::Engine;
use logstorfs::engine::check::Severity;
use logstorfs::fs::check::{Report, check_store};
use logstorfs::fs::{FileKind, Fs, ROOT_INO};
use sha2::{Digest, Sha256};

/// One entry as the manifest names it, or as the current code reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    kind: String,
    perm: u32,
    uid: u32,
    gid: u32,
    size: u64,
    nlink: u32,
    ino: u64,
    /// sha256 of a file's bytes or a symlink's target, "-" otherwise.
    digest: String,
    /// "-" or name=hexvalue joined by ",", sorted by name.
    xattrs: String,
}

/// A file written after the last sync before a crash: absent, empty or whole after recovery.
struct Maybe {
    size: u64,
    digest: String,
}

struct Manifest {
    exact: BTreeMap<String, Entry>,
    maybe: BTreeMap<String, Maybe>,
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Every committed format's fixture directory, oldest first.
fn format_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .expect("tests/fixtures")
        .map(|e| e.expect("fixture entry").path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("format-v"))
        })
        .collect();
    dirs.sort();
    assert!(
        !dirs.is_empty(),
        "no format fixture in {:?}",
        fixtures_dir()
    );
    dirs
}

fn sha256(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_manifest(path: &Path) -> Manifest {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("# logstorfs format fixture manifest v1"),
        "{path:?}: not a manifest"
    );
    let mut m = Manifest {
        exact: BTreeMap::new(),
        maybe: BTreeMap::new(),
    };
    for line in lines {
        let f: Vec<&str> = line.split('\t').collect();
        let num = |i: usize| -> u64 {
            f[i].parse()
                .unwrap_or_else(|_| panic!("{path:?}: field {i} of {line:?}"))
        };
        if f[0] == "maybe" {
            assert_eq!(f.len(), 4, "{path:?}: {line:?}");
            m.maybe.insert(
                f[1].to_string(),
                Maybe {
                    size: num(2),
                    digest: f[3].to_string(),
                },
            );
            continue;
        }
        assert_eq!(f.len(), 10, "{path:?}: {line:?}");
        let entry = Entry {
            kind: f[1].to_string(),
            perm: u32::from_str_radix(f[2], 8).expect("octal mode"),
            uid: num(3) as u32,
            gid: num(4) as u32,
            size: num(5),
            nlink: num(6) as u32,
            ino: num(7),
            digest: f[8].to_string(),
            xattrs: f[9].to_string(),
        };
        m.exact.insert(f[0].to_string(), entry);
    }
    m
}

fn unpack(tarball: &Path, into: &Path) -> PathBuf {
    let out = Command::new("tar")
        .arg("-xzf")
        .arg(tarball)
        .arg("-C")
        .arg(into)
        .output()
        .expect("run tar (Debian's essential set has it)");
    assert!(
        out.status.success(),
        "tar -xzf {tarball:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    into.join("store")
}

fn kind_name(kind: FileKind) -> &'static str {
    match kind {
        FileKind::Regular => "file",
        FileKind::Directory => "dir",
        FileKind::Symlink => "symlink",
        FileKind::NamedPipe => "fifo",
        FileKind::CharDevice => "chardev",
        FileKind::BlockDevice => "blockdev",
        FileKind::Socket => "socket",
    }
}

fn read_entry(fs: &Fs, attr: &logstorfs::fs::Attr) -> Entry {
    let digest = match attr.kind {
        FileKind::Regular => sha256(&read_all(fs, attr.ino)),
        FileKind::Symlink => sha256(&fs.readlink(attr.ino).expect("readlink")),
        _ => "-".to_string(),
    };
    let mut xattrs = Vec::new();
    if attr.kind != FileKind::Symlink {
        let names = fs.listxattr(attr.ino).expect("listxattr");
        let mut names: Vec<&[u8]> = names.split(|b| *b == 0).filter(|n| !n.is_empty()).collect();
        names.sort();
        for name in names {
            let value = fs.getxattr(attr.ino, name).expect("getxattr");
            xattrs.push(format!("{}={}", String::from_utf8_lossy(name), hex(&value)));
        }
    }
    Entry {
        kind: kind_name(attr.kind).to_string(),
        perm: u32::from(attr.perm),
        uid: attr.uid,
        gid: attr.gid,
        size: if matches!(attr.kind, FileKind::Regular | FileKind::Symlink) {
            attr.size
        } else {
            0
        },
        nlink: attr.nlink,
        ino: attr.ino,
        digest,
        xattrs: if xattrs.is_empty() {
            "-".to_string()
        } else {
            xattrs.join(",")
        },
    }
}

/// Every entry reachable from the root, by path ("." is the root).
fn read_tree(fs: &Fs) -> BTreeMap<String, Entry> {
    let mut out = BTreeMap::new();
    let root = fs.getattr(ROOT_INO).expect("getattr of the root");
    out.insert(".".to_string(), read_entry(fs, &root));
    let mut dirs = vec![(ROOT_INO, String::new())];
    while let Some((dir, prefix)) = dirs.pop() {
        for name in list(fs, dir) {
            let attr = fs.lookup(dir, name.as_bytes()).expect("lookup");
            let path = format!("{prefix}{name}");
            if attr.kind == FileKind::Directory {
                dirs.push((attr.ino, format!("{path}/")));
            }
            out.insert(path, read_entry(fs, &attr));
        }
    }
    out
}

/// What differs between the tree read and the manifest, one line each.
fn differences(manifest: &Manifest, found: &BTreeMap<String, Entry>) -> Vec<String> {
    let mut diffs = Vec::new();
    for (path, want) in &manifest.exact {
        match found.get(path) {
            None => diffs.push(format!("{path}: missing")),
            Some(got) if got != want => {
                diffs.push(format!("{path}: read {got:?}, manifest {want:?}"))
            }
            Some(_) => {}
        }
    }
    let empty = sha256(b"");
    for (path, got) in found {
        if manifest.exact.contains_key(path) {
            continue;
        }
        match manifest.maybe.get(path) {
            None => diffs.push(format!("{path}: not in the manifest ({got:?})")),
            Some(m) => {
                let whole = got.size == m.size && got.digest == m.digest;
                let created_only = got.size == 0 && got.digest == empty;
                if got.kind != "file" || !(whole || created_only) {
                    diffs.push(format!(
                        "{path}: written after the last sync, so absent, empty or whole; read \
                         {got:?}, whole is {} bytes with sha256 {}",
                        m.size, m.digest
                    ));
                }
            }
        }
    }
    diffs
}

fn findings(report: &Report, severity: Option<Severity>) -> Vec<String> {
    report
        .all_findings()
        .filter(|f| severity.is_none_or(|s| f.severity == s))
        .map(|f| f.to_string())
        .collect()
}

fn open_fs(store: &Path) -> Fs {
    let opts = logstorfs::engine::EngineOptions {
        // A fixture is never created: a missing store must fail, not read as empty.
        create_if_missing: false,
        ..options(32 << 20)
    };
    let engine = Engine::open(store, &opts).unwrap_or_else(|e| panic!("open {store:?}: {e}"));
    Fs::new(engine).unwrap_or_else(|e| panic!("mount {store:?}: {e:?}"))
}

fn assert_same(what: &str, diffs: Vec<String>) {
    assert!(
        diffs.is_empty(),
        "{what}: {} difference(s), the first ones:\n{}",
        diffs.len(),
        diffs
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Unpacks `NAME.tar.gz` of one format's fixture directory and checks it as the module doc says.
fn check_image(format_dir: &Path, name: &str, clean_close: bool) {
    let label = format!(
        "{}/{name}",
        format_dir.file_name().unwrap().to_string_lossy()
    );
    let manifest = parse_manifest(&format_dir.join(format!("{name}.manifest")));
    assert!(
        manifest.exact.len() >= 50,
        "{label}: the manifest names only {} entries",
        manifest.exact.len()
    );
    let tmp = tempfile::tempdir().unwrap();
    let store = unpack(&format_dir.join(format!("{name}.tar.gz")), tmp.path());

    let before = check_store(&store).unwrap_or_else(|e| panic!("{label}: fsck: {e}"));
    let allowed = if clean_close {
        None
    } else {
        Some(Severity::Problem)
    };
    assert_same(
        &format!("{label}: fsck of the image as committed"),
        findings(&before, allowed),
    );
    // The fixture keeps exercising what it was made for: group-owned segments of several groups.
    let mut groups: Vec<u32> = before
        .engine
        .segments
        .iter()
        .filter(|s| s.kind == "group" && s.records > 0)
        .map(|s| s.group)
        .collect();
    groups.sort();
    groups.dedup();
    assert!(
        groups.len() >= 3,
        "{label}: group-owned segments of {} groups only",
        groups.len()
    );

    let fs = open_fs(&store);
    let found = read_tree(&fs);
    assert_same(
        &format!("{label}: tree read against the manifest"),
        differences(&manifest, &found),
    );
    if !manifest.maybe.is_empty() {
        let empty = sha256(b"");
        let kept = |whole: bool| {
            manifest
                .maybe
                .iter()
                .filter(|(p, m)| {
                    found.get(*p).is_some_and(|e| {
                        if whole {
                            e.digest == m.digest
                        } else {
                            e.digest == empty
                        }
                    })
                })
                .count()
        };
        eprintln!(
            "{label}: of {} files the writer created after the manifest was synced (it keeps 40), {} whole, {} empty, the rest absent",
            manifest.maybe.len(),
            kept(true),
            kept(false)
        );
    }
    fs.close()
        .unwrap_or_else(|e| panic!("{label}: close: {e:?}"));

    let after = check_store(&store).unwrap_or_else(|e| panic!("{label}: fsck: {e}"));
    assert_same(
        &format!("{label}: fsck after the current build opened and closed it"),
        findings(&after, allowed),
    );

    let fs = open_fs(&store);
    let again = read_tree(&fs);
    fs.close().unwrap();
    let changed: Vec<String> = found
        .keys()
        .chain(again.keys())
        .filter(|p| found.get(*p) != again.get(*p))
        .map(|p| format!("{p}: {:?} then {:?}", found.get(p), again.get(p)))
        .collect();
    assert_same(&format!("{label}: second open against the first"), changed);
}

#[test]
fn clean_images_of_every_format_read_exactly_and_fsck_clean() {
    for dir in format_dirs() {
        check_image(&dir, "clean", true);
    }
}

#[test]
fn crash_images_of_every_format_recover_everything_synced_and_nothing_torn() {
    for dir in format_dirs() {
        check_image(&dir, "crash", false);
    }
}

/// The format version constants, read from the source that defines them (they are private to
/// the engine).
fn format_constant(name: &str) -> u16 {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/engine/format.rs");
    let src = std::fs::read_to_string(&path).unwrap();
    let prefix = format!("pub const {name}: u16 = ");
    let line = src
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("{name} not found in {path:?}"));
    line.trim_end_matches(';').parse().unwrap()
}

#[test]
fn the_current_format_has_a_fixture() {
    let name = format!(
        "format-v{}-sb{}",
        format_constant("FORMAT_VERSION"),
        format_constant("SUPERBLOCK_VERSION")
    );
    let dir = fixtures_dir().join(&name);
    for file in [
        "clean.tar.gz",
        "clean.manifest",
        "crash.tar.gz",
        "crash.manifest",
    ] {
        assert!(
            dir.join(file).is_file(),
            "{name}/{file} is missing: a new format version needs its fixture (run \
             scripts/make_format_fixture.sh and commit what it writes)"
        );
    }
}
