//! File handles through the `Fs` core, without FUSE: what the kernel asks once a handle names an
//! inode that left its cache (LOOKUP of `.` in the node id, of `..` for a directory), answered
//! from the store after the inode was forgotten and after a remount; ENOENT (ESTALE for the
//! caller) once the inode is deleted; and generations, which tell a number handed out again
//! from the inode that first had it. The kernel path is `scripts/export_nfs.sh`.

mod fs_common;

use fs_common::*;
use logstorfs::fs::export::{attr_generation, generation};
use logstorfs::fs::{FileKind, ROOT_INO};

fn e<T: std::fmt::Debug>(r: Result<T, logstorfs::fs::FsError>) -> i32 {
    r.unwrap_err().errno()
}

#[test]
fn dot_and_dotdot_lookups_resolve_forgotten_inodes_from_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    let d = fs.mkdir(ROOT_INO, b"d", 0o755, 0, CALLER).unwrap();
    let sub = fs.mkdir(d.ino, b"sub", 0o755, 0, CALLER).unwrap();
    let f = make_file(&fs, sub.ino, "f", b"handle content");
    let f_gen = attr_generation(&fs.getattr(f).unwrap());
    // The kernel evicts them all: every lookup reference goes back.
    for ino in [d.ino, sub.ino, f] {
        fs.forget(ino, u64::MAX);
    }
    let check = |fs: &logstorfs::fs::Fs| {
        let a = fs.lookup(f, b".").expect("lookup of . in a forgotten file");
        assert_eq!((a.ino, a.kind, a.size), (f, FileKind::Regular, 14));
        assert_eq!(attr_generation(&a), f_gen, "generation changed");
        assert_eq!(read_all(fs, f), b"handle content");
        let s = fs
            .lookup(sub.ino, b".")
            .expect("lookup of . in a directory");
        assert_eq!((s.ino, s.kind), (sub.ino, FileKind::Directory));
        assert_eq!(attr_generation(&s), attr_generation(&sub));
        let p = fs
            .lookup(sub.ino, b"..")
            .expect("lookup of .. in a directory");
        assert_eq!(p.ino, d.ino);
        assert_eq!(fs.lookup(d.ino, b"..").unwrap().ino, ROOT_INO);
        assert_eq!(fs.lookup(ROOT_INO, b"..").unwrap().ino, ROOT_INO);
        assert_eq!(fs.lookup(ROOT_INO, b".").unwrap().ino, ROOT_INO);
        // ".." follows a rename of the directory.
        for ino in [d.ino, sub.ino, f] {
            fs.forget(ino, u64::MAX);
        }
    };
    check(&fs);
    fs.rename(d.ino, b"sub", ROOT_INO, b"moved", 0).unwrap();
    fs.forget(sub.ino, u64::MAX);
    assert_eq!(fs.lookup(sub.ino, b"..").unwrap().ino, ROOT_INO);
    fs.rename(ROOT_INO, b"moved", d.ino, b"sub", 0).unwrap();
    fs.forget(sub.ino, u64::MAX);
    // After a remount no node but the root is in memory.
    fs.close().unwrap();
    let fs = open(dir.path());
    check(&fs);
    // A lookup of "." takes a reference like any lookup: the node stays until forgotten.
    fs.lookup(f, b".").unwrap();
    fs.unlink(sub.ino, b"f").unwrap();
    assert_eq!(fs.getattr(f).unwrap().nlink, 0, "the ghost answers getattr");
}

#[test]
fn dot_lookup_of_a_deleted_inode_is_enoent() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    let d = fs.mkdir(ROOT_INO, b"d", 0o755, 0, CALLER).unwrap().ino;
    let gone = make_file(&fs, d, "gone", b"x");
    let ghost = make_file(&fs, d, "ghost", b"x");
    let open_unlinked = make_file(&fs, d, "open", b"still here");
    let removed = fs.mkdir(d, b"removed", 0o755, 0, CALLER).unwrap().ino;
    let linked = make_file(&fs, d, "linked", b"two names");
    fs.link(linked, ROOT_INO, b"other").unwrap();
    for ino in [gone, open_unlinked, removed, linked] {
        fs.forget(ino, u64::MAX);
    }
    // Unlinked with no reference left: its records are purged.
    fs.unlink(d, b"gone").unwrap();
    assert_eq!(e(fs.lookup(gone, b".")), libc::ENOENT);
    // Unlinked while the kernel still held it (its FORGET on the way): a ghost in memory only.
    fs.unlink(d, b"ghost").unwrap();
    assert_eq!(fs.getattr(ghost).unwrap().nlink, 0);
    assert_eq!(e(fs.lookup(ghost, b".")), libc::ENOENT);
    // Removed directory.
    fs.rmdir(d, b"removed").unwrap();
    assert_eq!(e(fs.lookup(removed, b".")), libc::ENOENT);
    assert_eq!(e(fs.lookup(removed, b"..")), libc::ENOENT);
    // A number never handed out.
    assert_eq!(e(fs.lookup(1 << 40, b".")), libc::ENOENT);
    // Open and unlinked: the file still exists for whoever holds it, as on ext4.
    let fh = fs.open(open_unlinked).unwrap();
    fs.unlink(d, b"open").unwrap();
    assert_eq!(fs.lookup(open_unlinked, b".").unwrap().nlink, 0);
    fs.forget(open_unlinked, u64::MAX);
    fs.release(open_unlinked, fh).unwrap();
    assert_eq!(e(fs.lookup(open_unlinked, b".")), libc::ENOENT);
    // One of two links removed: the file lives on under the other name.
    fs.unlink(d, b"linked").unwrap();
    let a = fs.lookup(linked, b".").unwrap();
    assert_eq!((a.nlink, a.size), (1, 9));
}

#[test]
fn a_number_handed_out_again_gets_another_generation() {
    // A power cut that takes back an unsynced create, with the raise of the high-water mark it
    // carried, leaves the store as it was before it: the next create gets the same number. Two
    // fresh stores given the same creates are that situation.
    let numbered = |tag: &str| {
        let dir = tempfile::tempdir().unwrap();
        let fs = open(dir.path());
        let a = fs
            .create(ROOT_INO, tag.as_bytes(), 0o644, 0, CALLER)
            .unwrap()
            .0;
        let d = fs.mkdir(ROOT_INO, b"d", 0o755, 0, CALLER).unwrap();
        (a.ino, attr_generation(&a), d.ino, attr_generation(&d))
    };
    let (f1, g1, d1, h1) = numbered("vanished");
    let (f2, g2, d2, h2) = numbered("successor");
    assert_eq!((f1, d1), (f2, d2), "the same numbers are handed out");
    assert_ne!(g1, g2, "a file's successor has its generation");
    assert_ne!(h1, h2, "a directory's successor has its generation");
    assert!(g1 <= u64::from(u32::MAX), "the kernel keeps 32 bits");
    assert_eq!(generation(ROOT_INO, std::time::SystemTime::now()), 0);
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    assert_eq!(attr_generation(&fs.getattr(ROOT_INO).unwrap()), 0);
}
