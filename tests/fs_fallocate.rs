//! fallocate through `Fs`: every mode ext4 has, compared with what a kernel ext4 with 4 KiB
//! blocks gives for the same calls (sizes, `st_blocks`, contents, errno), the space an
//! allocation reserves in a full store, and all of it across a remount.

mod fs_common;

use fs_common::*;
use logstorfs::fs::{Fs, MAX_FILE_SIZE, ROOT_INO};

const KEEP_SIZE: i32 = 0x01;
const PUNCH_HOLE: i32 = 0x02;
const COLLAPSE_RANGE: i32 = 0x08;
const ZERO_RANGE: i32 = 0x10;
const INSERT_RANGE: i32 = 0x20;
const UNSHARE_RANGE: i32 = 0x40;
const WRITE_ZEROES: i32 = 0x80;

const PAGE: u64 = 4096;

fn size_blocks(fs: &Fs, ino: u64) -> (u64, u64) {
    let a = fs.getattr(ino).expect("getattr");
    (a.size, a.blocks)
}

fn errno(fs: &Fs, ino: u64, mode: i32, offset: u64, length: u64) -> i32 {
    match fs.fallocate(ino, offset, length, mode) {
        Ok(()) => 0,
        Err(e) => e.errno(),
    }
}

/// A punch that reaches past the end of file ends at the end of the file's last page, whole:
/// the figures are ext4's (4 KiB blocks, kernel 6.18). Found by fsdiff: punching [0, 4095) of a
/// one-byte file kept its page.
#[test]
fn a_punch_past_the_end_of_file_ends_with_the_files_last_page_as_on_ext4() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    let punch = KEEP_SIZE | PUNCH_HOLE;
    // (size, KEEP_SIZE allocation, punch offset, punch length, blocks after, as ext4)
    for (i, (size, prealloc, off, len, blocks)) in [
        (1u64, 0u64, 0u64, 4095u64, 0u64),
        (1, 65536, 0, 65536, 120),
        (4096, 65536, 8192, 8192, 128),
        (4096, 65536, 0, 65536, 120),
        (5000, 65536, 4096, 4096, 120),
        (5000, 65536, 0, 4095, 128),
        (8192, 0, 4096, 100, 16),
    ]
    .into_iter()
    .enumerate()
    {
        let f = make_file(&fs, ROOT_INO, &format!("f{i}"), &pattern(size as usize, 7));
        if prealloc > 0 {
            fs.fallocate(f, 0, prealloc, KEEP_SIZE).unwrap();
        }
        fs.fallocate(f, off, len, punch).unwrap();
        assert_eq!(
            size_blocks(&fs, f),
            (size, blocks),
            "size {size}, allocated {prealloc}, punch {off}+{len}"
        );
    }
}

/// A truncate to the size the file already has frees what KEEP_SIZE allocated past it, as
/// ext4's truncate frees the blocks past the new size whatever the old one (found by fsdiff:
/// `ftruncate(f, 0)` of an empty file with pages allocated past its end left st_blocks > 0).
#[test]
fn a_truncate_to_the_same_size_frees_what_keep_size_allocated_past_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    let set_size = |size| logstorfs::fs::SetAttr {
        size: Some(size),
        ..Default::default()
    };
    let empty = make_file(&fs, ROOT_INO, "empty", b"");
    fs.fallocate(empty, 4095, 511, KEEP_SIZE).unwrap();
    assert_eq!(size_blocks(&fs, empty), (0, 16));
    fs.setattr(empty, &set_size(0)).unwrap();
    assert_eq!(
        size_blocks(&fs, empty),
        (0, 0),
        "truncate to 0 of an empty file"
    );
    let data = pattern(5000, 3);
    let f = make_file(&fs, ROOT_INO, "f", &data);
    fs.fallocate(f, 0, 65536, KEEP_SIZE).unwrap();
    assert_eq!(size_blocks(&fs, f), (5000, 128));
    fs.setattr(f, &set_size(5000)).unwrap();
    assert_eq!(size_blocks(&fs, f), (5000, 16), "truncate to its own size");
    assert_eq!(read_all(&fs, f), data);
    fs.setattr(f, &set_size(8192)).unwrap();
    let mut want = data.clone();
    want.resize(8192, 0);
    assert_eq!(
        read_all(&fs, f),
        want,
        "the padded last page reads zeros past 5000"
    );
}

#[test]
fn allocation_extends_the_size_keeps_the_data_and_shows_in_st_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    let ino = make_file(&fs, ROOT_INO, "f", b"");
    fs.fallocate(ino, 0, 10000, 0).unwrap();
    assert_eq!(size_blocks(&fs, ino), (10000, 24), "3 pages allocated");
    assert_eq!(read_all(&fs, ino), vec![0u8; 10000]);
    // KEEP_SIZE past the end: allocated, size kept (ext4: 10000, 56 for pages 4..=7).
    fs.fallocate(ino, 20000, 10000, KEEP_SIZE).unwrap();
    assert_eq!(size_blocks(&fs, ino), (10000, 56));
    // Data already there stays; a short last page is padded, not counted twice.
    let data = pattern(5000, 1);
    let g = make_file(&fs, ROOT_INO, "g", &data);
    assert_eq!(size_blocks(&fs, g), (5000, 16));
    fs.fallocate(g, 0, 20000, 0).unwrap();
    assert_eq!(size_blocks(&fs, g), (20000, 40));
    let mut want = data.clone();
    want.resize(20000, 0);
    assert_eq!(read_all(&fs, g), want);
    // Inside the size, over allocated pages: nothing changes but the times.
    fs.fallocate(g, 4096, 4096, 0).unwrap();
    assert_eq!(size_blocks(&fs, g), (20000, 40));
    assert_eq!(read_all(&fs, g), want);
}

#[test]
fn a_large_allocation_is_written_in_batches_and_counted_whole() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    let ino = make_file(&fs, ROOT_INO, "big", b"");
    // Every other page stored first, so that batches meet holes and stored pages.
    for p in (0..64u64).step_by(2) {
        fs.write(ino, p * PAGE, &pattern(100, p)).unwrap();
    }
    fs.fallocate(ino, 0, 8 << 20, 0).unwrap();
    assert_eq!(size_blocks(&fs, ino), (8 << 20, (8 << 20) / 512));
    let got = read_all(&fs, ino);
    for p in (0..64u64).step_by(2) {
        let at = (p * PAGE) as usize;
        assert_eq!(&got[at..at + 100], &pattern(100, p)[..], "page {p}");
        assert!(got[at + 100..at + PAGE as usize].iter().all(|&b| b == 0));
    }
}

#[test]
fn punch_hole_zeroes_partial_pages_and_removes_whole_ones() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    let data = pattern(40960, 2);
    let ino = make_file(&fs, ROOT_INO, "f", &data);
    assert_eq!(size_blocks(&fs, ino), (40960, 80));
    // Pages 1 and 2 whole, partial bytes of pages 0 and 3.
    fs.fallocate(ino, 100, 12288, PUNCH_HOLE | KEEP_SIZE)
        .unwrap();
    let mut want = data.clone();
    want[100..12388].fill(0);
    assert_eq!(
        size_blocks(&fs, ino),
        (40960, 64),
        "two whole pages punched"
    );
    assert_eq!(read_all(&fs, ino), want);
    // Within one page: zeroed, still allocated.
    fs.fallocate(ino, 20000, 100, PUNCH_HOLE | KEEP_SIZE)
        .unwrap();
    want[20000..20100].fill(0);
    assert_eq!(size_blocks(&fs, ino), (40960, 64));
    assert_eq!(read_all(&fs, ino), want);
    // Past the end of file: pages KEEP_SIZE allocated there stay (as ext4: 40960 160 -> 80
    // after a punch of everything from 0).
    let g = make_file(&fs, ROOT_INO, "g", &data);
    fs.fallocate(g, 40960, 40960, KEEP_SIZE).unwrap();
    assert_eq!(size_blocks(&fs, g), (40960, 160));
    fs.fallocate(g, 0, 200000, PUNCH_HOLE | KEEP_SIZE).unwrap();
    assert_eq!(size_blocks(&fs, g), (40960, 80));
    assert_eq!(read_all(&fs, g), vec![0u8; 40960]);
    // A range at or past the end of file changes no data.
    fs.fallocate(g, 40960, 4096, PUNCH_HOLE | KEEP_SIZE)
        .unwrap();
    assert_eq!(size_blocks(&fs, g), (40960, 80));
}

#[test]
fn zero_range_allocates_and_zeroes_with_and_without_keep_size() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    let data = pattern(10000, 3);
    let ino = make_file(&fs, ROOT_INO, "f", &data);
    fs.fallocate(ino, 5000, 100, ZERO_RANGE).unwrap();
    let mut want = data.clone();
    want[5000..5100].fill(0);
    assert_eq!(size_blocks(&fs, ino), (10000, 24));
    assert_eq!(read_all(&fs, ino), want);
    // Whole pages and a partial one, past the end with KEEP_SIZE: allocated, size kept.
    fs.fallocate(ino, 8000, 12000, ZERO_RANGE | KEEP_SIZE)
        .unwrap();
    want[8000..].fill(0);
    assert_eq!(size_blocks(&fs, ino), (10000, 40));
    assert_eq!(read_all(&fs, ino), want);
    // Without KEEP_SIZE the size grows to the end of the range (ext4: 86016 88).
    let sparse = make_file(&fs, ROOT_INO, "sparse", b"");
    fs.setattr(
        sparse,
        &logstorfs::fs::SetAttr {
            size: Some(40960),
            ..Default::default()
        },
    )
    .unwrap();
    fs.fallocate(sparse, 5000, 100, ZERO_RANGE).unwrap();
    assert_eq!(
        size_blocks(&fs, sparse),
        (40960, 8),
        "a hole's partial page"
    );
    fs.fallocate(sparse, 81920, 4096, ZERO_RANGE).unwrap();
    assert_eq!(size_blocks(&fs, sparse), (86016, 16));
    assert_eq!(read_all(&fs, sparse), vec![0u8; 86016]);
}

#[test]
fn collapse_and_insert_move_the_pages_after_the_range() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    // 200 pages (several move batches), a hole at pages 50..60, a short last page.
    let mut data = pattern(200 * PAGE as usize - 1000, 4);
    data[50 * PAGE as usize..60 * PAGE as usize].fill(0);
    let ino = make_file(&fs, ROOT_INO, "f", &data[..50 * PAGE as usize]);
    fs.write(ino, 60 * PAGE, &data[60 * PAGE as usize..])
        .unwrap();
    let blocks = 190 * 8;
    assert_eq!(size_blocks(&fs, ino), (data.len() as u64, blocks));

    fs.fallocate(ino, 10 * PAGE, 5 * PAGE, COLLAPSE_RANGE)
        .unwrap();
    let mut want = data.clone();
    want.drain(10 * PAGE as usize..15 * PAGE as usize);
    assert_eq!(size_blocks(&fs, ino), (want.len() as u64, blocks - 40));
    assert_eq!(read_all(&fs, ino), want);

    fs.fallocate(ino, 3 * PAGE, 70 * PAGE, INSERT_RANGE)
        .unwrap();
    want.splice(
        3 * PAGE as usize..3 * PAGE as usize,
        std::iter::repeat_n(0u8, 70 * PAGE as usize),
    );
    assert_eq!(size_blocks(&fs, ino), (want.len() as u64, blocks - 40));
    assert_eq!(read_all(&fs, ino), want);

    // Insert at the page that holds a short end of file (ext4 takes an offset below the size).
    let short = make_file(&fs, ROOT_INO, "short", &pattern(40000, 5));
    fs.fallocate(short, 36864, 4096, INSERT_RANGE).unwrap();
    let mut want = pattern(40000, 5);
    want.splice(36864..36864, std::iter::repeat_n(0u8, 4096));
    assert_eq!(size_blocks(&fs, short), (44096, 80));
    assert_eq!(read_all(&fs, short), want);
    fs.fallocate(short, 36864, 4096, COLLAPSE_RANGE).unwrap();
    assert_eq!(size_blocks(&fs, short), (40000, 80));
    assert_eq!(read_all(&fs, short), pattern(40000, 5));
}

/// The errno of every bad call, as Linux 6.18 gives them on ext4 (4 KiB blocks) for a file of
/// 40960 bytes.
#[test]
fn errors_are_those_of_ext4() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    let ino = make_file(&fs, ROOT_INO, "f", &pattern(40960, 6));
    let (ok, inval, notsup, fbig) = (0, libc::EINVAL, libc::EOPNOTSUPP, libc::EFBIG);
    let cases: &[(&str, i32, u64, u64, i32)] = &[
        ("length 0", 0, 0, 0, inval),
        ("negative length", 0, 0, u64::MAX, inval),
        ("negative offset", 0, u64::MAX, 4096, inval),
        ("punch without keep size", PUNCH_HOLE, 0, 4096, notsup),
        (
            "punch and zero",
            PUNCH_HOLE | ZERO_RANGE | KEEP_SIZE,
            0,
            4096,
            notsup,
        ),
        (
            "punch and zero, no keep",
            PUNCH_HOLE | ZERO_RANGE,
            0,
            4096,
            notsup,
        ),
        (
            "collapse unaligned offset",
            COLLAPSE_RANGE,
            100,
            4096,
            inval,
        ),
        (
            "collapse unaligned length",
            COLLAPSE_RANGE,
            4096,
            100,
            inval,
        ),
        ("collapse to the end", COLLAPSE_RANGE, 4096, 36864, inval),
        ("collapse past the end", COLLAPSE_RANGE, 4096, 40960, inval),
        (
            "collapse keep size",
            COLLAPSE_RANGE | KEEP_SIZE,
            4096,
            4096,
            notsup,
        ),
        (
            "collapse and punch",
            COLLAPSE_RANGE | PUNCH_HOLE | KEEP_SIZE,
            4096,
            4096,
            notsup,
        ),
        ("insert at the end", INSERT_RANGE, 40960, 4096, inval),
        ("insert past the end", INSERT_RANGE, 49152, 4096, inval),
        ("insert unaligned", INSERT_RANGE, 4096, 100, inval),
        (
            "insert keep size",
            INSERT_RANGE | KEEP_SIZE,
            4096,
            4096,
            notsup,
        ),
        (
            "collapse and insert",
            COLLAPSE_RANGE | INSERT_RANGE,
            4096,
            4096,
            notsup,
        ),
        (
            "insert past the largest file",
            INSERT_RANGE,
            0,
            MAX_FILE_SIZE,
            fbig,
        ),
        ("unshare", UNSHARE_RANGE, 0, 4096, notsup),
        (
            "unshare keep size",
            UNSHARE_RANGE | KEEP_SIZE,
            0,
            4096,
            notsup,
        ),
        ("write zeroes", WRITE_ZEROES, 0, 4096, notsup),
        ("unknown bit 0x4", 0x4, 0, 4096, notsup),
        ("unknown bit 0x100", 0x100, 0, 4096, notsup),
        ("past the largest file", 0, MAX_FILE_SIZE, 4096, fbig),
        ("overflowing", 0, 1 << 62, 1 << 62, fbig),
        (
            "punch past the end",
            PUNCH_HOLE | KEEP_SIZE,
            81920,
            4096,
            ok,
        ),
    ];
    for &(what, mode, offset, length, want) in cases {
        assert_eq!(errno(&fs, ino, mode, offset, length), want, "{what}");
        assert_eq!(
            size_blocks(&fs, ino),
            (40960, 80),
            "{what} changed the file"
        );
    }
    assert_eq!(read_all(&fs, ino), pattern(40960, 6));
    let d = fs.mkdir(ROOT_INO, b"d", 0o755, 0o022, CALLER).unwrap();
    assert_eq!(errno(&fs, d.ino, 0, 0, 4096), libc::EISDIR);
}

/// Fills the file `name` with 256 KiB writes until the store refuses one; returns the errno.
fn fill_store(fs: &Fs, name: &str) -> i32 {
    let ino = make_file(fs, ROOT_INO, name, b"");
    let chunk = pattern(256 << 10, 7);
    let mut off = 0u64;
    loop {
        match fs.write(ino, off, &chunk) {
            Ok(n) => off += u64::from(n),
            Err(e) => return e.errno(),
        }
        assert!(off < 64 << 20, "a 32 MiB store accepted 64 MiB");
    }
}

#[test]
fn allocated_space_is_reserved_in_a_full_store_across_a_remount() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open_with(dir.path(), 32 << 20);
    let before = fs.statfs().blocks_available;

    // More than the free space: ENOSPC, and nothing changes.
    let big = make_file(&fs, ROOT_INO, "big", b"");
    assert_eq!(errno(&fs, big, 0, 0, 64 << 20), libc::ENOSPC);
    assert_eq!(errno(&fs, big, KEEP_SIZE, 0, 64 << 20), libc::ENOSPC);
    assert_eq!(errno(&fs, big, ZERO_RANGE, 0, 64 << 20), libc::ENOSPC);
    assert_eq!(size_blocks(&fs, big), (0, 0));
    assert_eq!(fs.statfs().blocks_available, before);

    let reserved = make_file(&fs, ROOT_INO, "reserved", b"");
    fs.fallocate(reserved, 0, 2 << 20, 0).unwrap();
    let kept = make_file(&fs, ROOT_INO, "kept", b"");
    fs.fallocate(kept, 0, 1 << 20, KEEP_SIZE).unwrap();
    assert_eq!(size_blocks(&fs, reserved), (2 << 20, 4096));
    assert_eq!(size_blocks(&fs, kept), (0, 2048));
    assert!(fs.statfs().blocks_available + 768 <= before);

    assert_eq!(fill_store(&fs, "fill"), libc::ENOSPC);
    assert_eq!(errno(&fs, big, 0, 0, 1 << 20), libc::ENOSPC);
    assert_eq!(size_blocks(&fs, big), (0, 0));

    // The store is full, yet every write into the allocated ranges is taken.
    let data = pattern(2 << 20, 8);
    for (i, piece) in data.chunks(100_000).enumerate() {
        fs.write(reserved, (i * 100_000) as u64, piece)
            .unwrap_or_else(|e| panic!("write at {} into allocated space: {e}", i * 100_000));
    }
    for (i, piece) in data[..1 << 20].chunks(4096).enumerate() {
        fs.write(kept, (i * 4096) as u64, piece)
            .unwrap_or_else(|e| panic!("write at {} into KEEP_SIZE space: {e}", i * 4096));
    }
    assert_eq!(read_all(&fs, reserved), data);
    assert_eq!(read_all(&fs, kept), &data[..1 << 20]);

    // A reservation not yet written, across a remount.
    let later = make_file(&fs, ROOT_INO, "later", b"");
    fs.unlink(ROOT_INO, b"fill").unwrap();
    fs.fallocate(later, 0, 1 << 20, 0).unwrap();
    assert_eq!(fill_store(&fs, "fill2"), libc::ENOSPC);
    fs.close().unwrap();

    let fs = open_with(dir.path(), 32 << 20);
    let reserved = resolve(&fs, "reserved").unwrap();
    let later = resolve(&fs, "later").unwrap();
    assert_eq!(size_blocks(&fs, reserved), (2 << 20, 4096));
    assert_eq!(size_blocks(&fs, later), (1 << 20, 2048));
    assert_eq!(read_all(&fs, reserved), data);
    let big = resolve(&fs, "big").unwrap();
    assert_eq!(errno(&fs, big, 0, 0, 1 << 20), libc::ENOSPC);
    for (i, piece) in data[..1 << 20].chunks(65536).enumerate() {
        fs.write(later, (i * 65536) as u64, piece)
            .unwrap_or_else(|e| panic!("write at {} after the remount: {e}", i * 65536));
    }
    assert_eq!(read_all(&fs, later), &data[..1 << 20]);

    // A punched hole gives its space back: st_blocks drops, another file may take it.
    fs.fallocate(reserved, 0, 1 << 20, PUNCH_HOLE | KEEP_SIZE)
        .unwrap();
    assert_eq!(size_blocks(&fs, reserved), (2 << 20, 2048));
    fs.fallocate(big, 0, 512 << 10, 0).unwrap();
    assert_eq!(size_blocks(&fs, big), (512 << 10, 1024));
}

#[test]
fn every_mode_survives_a_remount() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    let data = pattern(100 * PAGE as usize + 123, 9);
    let ino = make_file(&fs, ROOT_INO, "f", &data);
    let mut want = data.clone();
    fs.fallocate(ino, 0, 120 * PAGE, KEEP_SIZE).unwrap();
    fs.fallocate(ino, 5000, 30000, PUNCH_HOLE | KEEP_SIZE)
        .unwrap();
    want[5000..35000].fill(0);
    fs.fallocate(ino, 50000, 7000, ZERO_RANGE).unwrap();
    want[50000..57000].fill(0);
    fs.fallocate(ino, 20 * PAGE, 4 * PAGE, COLLAPSE_RANGE)
        .unwrap();
    want.drain(20 * PAGE as usize..24 * PAGE as usize);
    fs.fallocate(ino, 2 * PAGE, 3 * PAGE, INSERT_RANGE).unwrap();
    want.splice(
        2 * PAGE as usize..2 * PAGE as usize,
        std::iter::repeat_n(0u8, 3 * PAGE as usize),
    );
    fs.fallocate(ino, want.len() as u64, 10000, 0).unwrap();
    want.resize(want.len() + 10000, 0);
    let attr = size_blocks(&fs, ino);
    assert_eq!(attr.0, want.len() as u64);
    assert_eq!(read_all(&fs, ino), want);
    fs.close().unwrap();

    let fs = open(dir.path());
    let ino = resolve(&fs, "f").unwrap();
    assert_eq!(size_blocks(&fs, ino), attr);
    assert_eq!(read_all(&fs, ino), want);
}

/// The engine's promised bytes are what the unwritten pages stored hold, counted from the
/// index, after every operation: allocations over holes, writes into them, zeroing, punches,
/// truncations, copies, collapses and inserts, unlinks (of open files too) and remounts. The
/// contents are checked against a model at the same time: an unwritten page reads as zeros.
#[test]
fn the_promised_space_is_what_the_unwritten_pages_hold_after_any_operation() {
    use logstorfs::engine::{Mutation, ROOT_GROUP};
    use logstorfs::fs::SetAttr;
    use logstorfs::fs::keys;

    let unwritten = Mutation::put(ROOT_GROUP, keys::chunk_key(0, 0), Vec::new()).encoded_len();
    let full =
        Mutation::put(ROOT_GROUP, keys::chunk_key(0, 0), vec![0u8; PAGE as usize]).encoded_len();
    let promise = (full - unwritten) as u64;
    let stored_promises = |fs: &Fs| {
        fs.engine().count_records_of_len(
            &[keys::TAG_CHUNK],
            &[keys::TAG_CHUNK + 1],
            unwritten as u64,
        ) * promise
    };

    let dir = tempfile::tempdir().unwrap();
    let mut fs = open(dir.path());
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let names = ["a", "b", "c"];
    let mut model: Vec<Vec<u8>> = vec![Vec::new(); names.len()];
    let mut inos: Vec<u64> = names
        .iter()
        .map(|n| make_file(&fs, ROOT_INO, n, b""))
        .collect();
    let mut unwritten_seen = 0u64;
    for step in 0..1500 {
        let f = next(names.len() as u64) as usize;
        let ino = inos[f];
        let off = next(48 * PAGE);
        let len = 1 + next(6 * PAGE);
        let aligned = |x: u64| x / PAGE * PAGE;
        let what = next(11);
        match what {
            0 | 1 => {
                let data = pattern(len as usize, step);
                fs.write(ino, off, &data).unwrap();
                let m = &mut model[f];
                if m.len() < (off + len) as usize {
                    m.resize((off + len) as usize, 0);
                }
                m[off as usize..(off + len) as usize].copy_from_slice(&data);
            }
            2 | 3 => {
                let modes = [
                    0,
                    KEEP_SIZE,
                    ZERO_RANGE,
                    ZERO_RANGE | KEEP_SIZE,
                    PUNCH_HOLE | KEEP_SIZE,
                ];
                let mode = modes[next(modes.len() as u64) as usize];
                fs.fallocate(ino, off, len, mode).unwrap();
                let m = &mut model[f];
                let size = m.len() as u64;
                let zero_to = (off + len).min(size);
                if mode & (ZERO_RANGE | PUNCH_HOLE) != 0 && off < zero_to {
                    m[off as usize..zero_to as usize].fill(0);
                }
                if mode & KEEP_SIZE == 0 && off + len > size {
                    m.resize((off + len) as usize, 0);
                }
            }
            4 => {
                let size = next(52 * PAGE);
                let set = SetAttr {
                    size: Some(size),
                    ..Default::default()
                };
                fs.setattr(ino, &set).unwrap();
                model[f].resize(size as usize, 0);
            }
            5 => {
                let g = (f + 1 + next(names.len() as u64 - 1) as usize) % names.len();
                let (off_in, off_out) = match next(2) {
                    0 => (aligned(off), aligned(next(48 * PAGE))),
                    _ => (off, next(48 * PAGE)),
                };
                let copied = fs
                    .copy_file_range(ino, off_in, inos[g], off_out, len)
                    .unwrap();
                let src = &model[f];
                let n = (src.len() as u64).saturating_sub(off_in).min(len);
                assert_eq!(copied, n, "step {step}: bytes copied");
                if n > 0 {
                    let bytes = src[off_in as usize..(off_in + n) as usize].to_vec();
                    let out = &mut model[g];
                    if out.len() < (off_out + n) as usize {
                        out.resize((off_out + n) as usize, 0);
                    }
                    out[off_out as usize..(off_out + n) as usize].copy_from_slice(&bytes);
                }
            }
            6 => {
                let (o, l) = (aligned(off), aligned(len).max(PAGE));
                if o + l < model[f].len() as u64 {
                    fs.fallocate(ino, o, l, COLLAPSE_RANGE).unwrap();
                    model[f].drain(o as usize..(o + l) as usize);
                }
            }
            7 => {
                let (o, l) = (aligned(off), aligned(len).max(PAGE));
                if o < model[f].len() as u64 {
                    fs.fallocate(ino, o, l, INSERT_RANGE).unwrap();
                    model[f].splice(o as usize..o as usize, std::iter::repeat_n(0u8, l as usize));
                }
            }
            8 => {
                // Unlinked, sometimes while open: its pages go at the last close.
                let fh = (next(2) == 0).then(|| fs.open(ino).unwrap());
                fs.unlink(ROOT_INO, names[f].as_bytes()).unwrap();
                if let Some(fh) = fh {
                    assert_eq!(fs.engine().promised_bytes(), stored_promises(&fs));
                    fs.release(ino, fh).unwrap();
                }
                inos[f] = make_file(&fs, ROOT_INO, names[f], b"");
                model[f].clear();
            }
            9 => {
                // An xattr record as long as an unwritten page's (a 15-byte key, a 2-byte value):
                // set, replaced or removed, and purged with its file, it holds no space.
                match next(3) {
                    0 => fs.setxattr(ino, b"user.x", b"ab", 0).unwrap(),
                    1 => fs.setxattr(ino, b"user.x", b"abc", 0).unwrap(),
                    _ => {
                        let _ = fs.removexattr(ino, b"user.x");
                    }
                }
            }
            _ => {
                if next(4) == 0 {
                    let promised = fs.engine().promised_bytes();
                    fs.close().unwrap();
                    fs = open(dir.path());
                    assert_eq!(
                        fs.engine().promised_bytes(),
                        promised,
                        "step {step}: remount"
                    );
                    inos = names.iter().map(|n| resolve(&fs, n).unwrap()).collect();
                }
            }
        }
        let promised = fs.engine().promised_bytes();
        assert_eq!(
            promised,
            stored_promises(&fs),
            "step {step}: op {what} on {}",
            names[f]
        );
        unwritten_seen = unwritten_seen.max(promised / promise);
        if step % 50 == 0 {
            for (g, &ino) in inos.iter().enumerate() {
                assert_eq!(
                    read_all(&fs, ino),
                    model[g],
                    "step {step}: contents of {}",
                    names[g]
                );
            }
        }
    }
    for (g, &ino) in inos.iter().enumerate() {
        assert_eq!(read_all(&fs, ino), model[g], "contents of {}", names[g]);
    }
    assert!(
        unwritten_seen >= 20,
        "the operations made {unwritten_seen} unwritten pages at most"
    );
    // Unwritten pages, past the end of file too (KEEP_SIZE), are what fsck accepts.
    fs.close().unwrap();
    assert_fsck_clean(dir.path());
}

/// An allocation writes a small record per page, not the page's zeros.
#[test]
fn an_allocation_writes_no_zeros() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    let ino = make_file(&fs, ROOT_INO, "f", b"");
    let before = fs.engine().stats().user_bytes_written;
    fs.fallocate(ino, 0, 32 << 20, 0).unwrap();
    let written = fs.engine().stats().user_bytes_written - before;
    assert_eq!(size_blocks(&fs, ino), (32 << 20, 65536));
    assert!(
        written < 1 << 20,
        "allocating 32 MiB wrote {written} bytes of records"
    );
    assert_eq!(read_all(&fs, ino), vec![0u8; 32 << 20]);
}

#[test]
fn stats_report_the_space_allocated_pages_hold_mounted_and_offline() {
    use logstorfs::fs::STATS_XATTR;
    use logstorfs::fs::stats::{StatsReport, offline_report};
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    let report = |fs: &Fs| -> StatsReport {
        serde_json::from_slice(&fs.getxattr(ROOT_INO, STATS_XATTR).unwrap()).unwrap()
    };
    assert_eq!(report(&fs).promised_bytes, 0);
    let ino = make_file(&fs, ROOT_INO, "f", b"");
    fs.fallocate(ino, 0, 1 << 20, 0).unwrap();
    let held = report(&fs).promised_bytes;
    // 256 pages, each holding a full page's record less its empty one.
    assert!(
        (256 * 4000..=256 * 4096).contains(&held),
        "1 MiB allocated holds {held} bytes"
    );
    assert_eq!(held, fs.engine().promised_bytes());
    assert!(report(&fs).text().contains("held for allocated pages"));
    // Half the pages written: half the promise released.
    fs.write(ino, 0, &pattern(512 << 10, 3)).unwrap();
    assert_eq!(report(&fs).promised_bytes, held / 2);
    fs.close().unwrap();
    let offline = offline_report(dir.path()).unwrap();
    assert!(!offline.mounted);
    assert_eq!(offline.promised_bytes, held / 2);
}
