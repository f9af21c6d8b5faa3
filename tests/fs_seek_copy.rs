//! `lseek(SEEK_DATA/SEEK_HOLE)` and `copy_file_range` through the `Fs` core, without FUSE.
//!
//! Method: an `Fs` on a fresh engine in a temporary directory. The seek answers are those a
//! kernel ext4 gave for the same file (noted below; `scripts/seek_copy_vs_ext4.sh` compares on a
//! real mount). Copies are checked byte for byte against a model (the bytes read before, moved
//! as read and write would), and for holes by `st_blocks` and the seek answers; the work of
//! both is counted with `Engine::index_keys_visited`, so that a walk over every 4 KiB of a hole
//! fails.

mod fs_common;

use std::sync::Arc;
use std::time::Duration;

use fs_common::*;
use logstorfs::engine::Engine;
use logstorfs::fs::{Fs, FsOptions, IN_EVERY_GROUP, MAX_FILE_SIZE, ROOT_INO, SetAttr};

const PAGE: u64 = 4096;
const DATA: i32 = libc::SEEK_DATA;
const HOLE: i32 = libc::SEEK_HOLE;

/// An offset, or an errno.
type Seek = Result<u64, i32>;

/// `lseek`'s answer, or its errno.
fn seek(fs: &Fs, ino: u64, offset: i64, whence: i32) -> Seek {
    fs.lseek(ino, offset, whence).map_err(|e| e.errno())
}

fn truncate(fs: &Fs, ino: u64, size: u64) {
    fs.setattr(
        ino,
        &SetAttr {
            size: Some(size),
            ..Default::default()
        },
    )
    .unwrap();
}

/// The data extents `[start, end)` of a file as `SEEK_DATA`/`SEEK_HOLE` walk them (as `cp` and
/// `tar --sparse` do).
fn extents(fs: &Fs, ino: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Ok(start) = seek(fs, ino, at as i64, DATA) {
        let end = seek(fs, ino, start as i64, HOLE).expect("a hole after data");
        assert!(end > start, "SEEK_HOLE from data at {start} gave {end}");
        out.push((start, end));
        at = end;
    }
    out
}

/// The file ext4 was asked about (`scripts/seek_copy_vs_ext4.sh` builds the same): 100 bytes at
/// 0, a page of zeros written at page 3, 10 bytes at 10 pages + 5, size 20 pages + 7.
fn ext4_example(fs: &Fs, name: &str) -> u64 {
    let ino = make_file(fs, ROOT_INO, name, &[b'a'; 100]);
    fs.write(ino, 3 * PAGE, &[0u8; PAGE as usize]).unwrap();
    fs.write(ino, 10 * PAGE + 5, &[b'b'; 10]).unwrap();
    truncate(fs, ino, 20 * PAGE + 7);
    ino
}

#[test]
fn seek_data_and_hole_answer_as_ext4() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    let ino = ext4_example(&fs, "s");
    const NX: i32 = libc::ENXIO;
    // (offset, SEEK_DATA, SEEK_HOLE) as ext4 answered for the same file.
    let ext4: &[(i64, Seek, Seek)] = &[
        (-1, Err(NX), Err(NX)),
        (0, Ok(0), Ok(4096)),
        (50, Ok(50), Ok(4096)),
        (100, Ok(100), Ok(4096)),
        (4096, Ok(12288), Ok(4096)),
        (5000, Ok(12288), Ok(5000)),
        (12288, Ok(12288), Ok(16384)),
        (12289, Ok(12289), Ok(16384)),
        (16384, Ok(40960), Ok(16384)),
        (40960, Ok(40960), Ok(45056)),
        (40980, Ok(40980), Ok(45056)),
        (45056, Err(NX), Ok(45056)),
        (81926, Err(NX), Ok(81926)),
        (81927, Err(NX), Err(NX)),
        (81928, Err(NX), Err(NX)),
        (1_000_000_000, Err(NX), Err(NX)),
    ];
    for &(offset, data, hole) in ext4 {
        assert_eq!(
            seek(&fs, ino, offset, DATA),
            data,
            "SEEK_DATA from {offset}"
        );
        assert_eq!(
            seek(&fs, ino, offset, HOLE),
            hole,
            "SEEK_HOLE from {offset}"
        );
    }
    assert_eq!(
        seek(&fs, ino, 0, libc::SEEK_END),
        Err(libc::EINVAL),
        "only SEEK_DATA and SEEK_HOLE reach the daemon"
    );
    assert_eq!(seek(&fs, ROOT_INO, 0, DATA), Err(libc::EISDIR));

    // A dense file whose size is not a page multiple: its only hole is its end.
    let dense = make_file(&fs, ROOT_INO, "dense", &pattern(3 * PAGE as usize + 10, 1));
    assert_eq!(extents(&fs, dense), vec![(0, 3 * PAGE + 10)]);
    assert_eq!(
        seek(&fs, dense, 3 * PAGE as i64 + 9, HOLE),
        Ok(3 * PAGE + 10)
    );
    // An empty file has neither.
    let empty = make_file(&fs, ROOT_INO, "empty", b"");
    assert_eq!(seek(&fs, empty, 0, DATA), Err(NX));
    assert_eq!(seek(&fs, empty, 0, HOLE), Err(NX));
    // A file that only grew by truncate is a hole.
    let grown = make_file(&fs, ROOT_INO, "grown", b"");
    truncate(&fs, grown, 1 << 20);
    assert_eq!(seek(&fs, grown, 0, DATA), Err(NX));
    assert_eq!(seek(&fs, grown, 0, HOLE), Ok(0));
    // fallocate reserves space by storing zero pages, which are data here (ext4's unwritten
    // extents are holes to SEEK_DATA; see allocated_is_data in src/bin/fsdiff/known.rs).
    fs.fallocate(grown, 0, 2 << 20, 0).unwrap();
    assert_eq!(seek(&fs, grown, 0, DATA), Ok(0));
    assert_eq!(seek(&fs, grown, 0, HOLE), Ok(2 << 20));
    // Pages cut by a truncate are holes once the file grows again; a stored page of zeros is
    // data; runs longer than one index step are followed to their end.
    let f = make_file(&fs, ROOT_INO, "f", &pattern(3000 * PAGE as usize, 2));
    truncate(&fs, f, 10 * PAGE + 1);
    fs.write(f, 20 * PAGE, &[0u8; 4096]).unwrap();
    fs.write(f, 40 * PAGE, &pattern(2500 * PAGE as usize, 3))
        .unwrap();
    assert_eq!(
        extents(&fs, f),
        vec![
            (0, 11 * PAGE),
            (20 * PAGE, 21 * PAGE),
            (40 * PAGE, 2540 * PAGE)
        ]
    );
    assert_eq!(seek(&fs, f, 10 * PAGE as i64 + 1, DATA), Ok(10 * PAGE + 1));
    assert_eq!(seek(&fs, f, 11 * PAGE as i64, DATA), Ok(20 * PAGE));
    assert_eq!(seek(&fs, f, 41 * PAGE as i64 + 3, HOLE), Ok(2540 * PAGE));
}

/// The walk visits the pages stored from the offset on, never every 4 KiB of a hole: a 1 GiB
/// hole costs what a page costs.
#[test]
fn seek_work_grows_with_stored_pages_not_hole_size() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    let ino = make_file(&fs, ROOT_INO, "f", &pattern(3 * PAGE as usize, 1));
    fs.write(ino, 1 << 30, &pattern(PAGE as usize, 2)).unwrap();
    let visits = || fs.engine().index_keys_visited();
    let before = visits();
    assert_eq!(seek(&fs, ino, 3 * PAGE as i64, DATA), Ok(1 << 30));
    assert_eq!(seek(&fs, ino, 0, HOLE), Ok(3 * PAGE));
    assert_eq!(seek(&fs, ino, (1 << 30) - 1, HOLE), Ok((1 << 30) - 1));
    assert_eq!(seek(&fs, ino, 5 * PAGE as i64, HOLE), Ok(5 * PAGE));
    let cost = visits() - before;
    assert!(
        cost <= 64,
        "four seeks over a 1 GiB hole looked at {cost} index entries"
    );
}

/// A model of a file: its bytes, as reads return them.
fn bytes_of(fs: &Fs, ino: u64) -> Vec<u8> {
    read_all(fs, ino)
}

/// `data` with `len` bytes of `src` from `off_in` copied in at `off_out`, as a read of the
/// source then a write would (cut at the source's end).
fn model_copy(dst: &[u8], src: &[u8], off_in: u64, off_out: u64, len: u64) -> (Vec<u8>, u64) {
    let n = len.min((src.len() as u64).saturating_sub(off_in)) as usize;
    let mut out = dst.to_vec();
    if n == 0 {
        return (out, 0);
    }
    let end = off_out as usize + n;
    if out.len() < end {
        out.resize(end, 0);
    }
    out[off_out as usize..end].copy_from_slice(&src[off_in as usize..off_in as usize + n]);
    (out, n as u64)
}

/// A sparse file of `pages` pages: some stored with data, some stored zeros, some holes, and a
/// partial last page; page `i`'s fate is chosen by `seed`.
fn sparse_file(fs: &Fs, name: &str, pages: u64, seed: u64) -> u64 {
    let ino = make_file(fs, ROOT_INO, name, b"");
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for p in 0..pages {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        match x % 5 {
            0 | 1 => {} // a hole
            2 => {
                fs.write(ino, p * PAGE, &[0u8; PAGE as usize]).unwrap();
            }
            _ => {
                let data = pattern(PAGE as usize, seed * 1000 + p);
                fs.write(ino, p * PAGE, &data).unwrap();
            }
        }
    }
    truncate(fs, ino, pages * PAGE - 123);
    ino
}

#[test]
fn copy_of_a_whole_sparse_file_keeps_its_bytes_and_its_holes() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    let src = sparse_file(&fs, "src", 300, 1);
    let dst = make_file(&fs, ROOT_INO, "dst", b"");
    let size = fs.getattr(src).unwrap().size;
    // As `cp` and Python call it: a large count, repeated until it returns 0.
    let mut at = 0;
    loop {
        let n = fs.copy_file_range(src, at, dst, at, 1 << 40).unwrap();
        if n == 0 {
            break;
        }
        at += n;
    }
    assert_eq!(at, size);
    assert!(
        bytes_of(&fs, dst) == bytes_of(&fs, src),
        "the copy's bytes differ"
    );
    let (a, b) = (fs.getattr(src).unwrap(), fs.getattr(dst).unwrap());
    assert_eq!(
        (b.size, b.blocks),
        (a.size, a.blocks),
        "size and st_blocks (holes kept, stored zero pages kept)"
    );
    assert_eq!(extents(&fs, dst), extents(&fs, src));
}

#[test]
fn copies_at_any_offsets_match_read_and_write_and_keep_holes() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    let mut rng = 0x1234_5678_u64;
    let mut next = |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    for round in 0..120u64 {
        let src = sparse_file(&fs, &format!("s{round}"), 1 + next(40), round * 2 + 1);
        let dst = sparse_file(&fs, &format!("d{round}"), 1 + next(40), round * 2 + 2);
        let (src_bytes, dst_bytes) = (bytes_of(&fs, src), bytes_of(&fs, dst));
        let dst_blocks = fs.getattr(dst).unwrap().blocks;
        // Congruent offsets (page records copied whole) half the time, any offsets else.
        let off_in = next(src_bytes.len() as u64 + 2 * PAGE);
        let off_out = if round % 2 == 0 {
            next(50) * PAGE + off_in % PAGE
        } else {
            next(50 * PAGE)
        };
        let len = match round % 3 {
            0 => next(3 * PAGE),
            1 => next(50 * PAGE),
            _ => 1 << 30,
        };
        let (want, n) = model_copy(&dst_bytes, &src_bytes, off_in, off_out, len);
        let got = fs.copy_file_range(src, off_in, dst, off_out, len).unwrap();
        let what = format!("round {round}: copy {len} from {off_in} to {off_out}");
        assert_eq!(got, n, "{what}: count");
        assert!(bytes_of(&fs, dst) == want, "{what}: bytes differ");
        assert!(
            bytes_of(&fs, src) == src_bytes,
            "{what}: the source changed"
        );
        // Holes stay holes: the copy stores no page beyond those the destination stored and
        // those the copied source bytes touch.
        let touched = if n == 0 {
            0
        } else {
            (off_out + n).div_ceil(PAGE) - off_out / PAGE
        };
        let blocks = fs.getattr(dst).unwrap().blocks;
        assert!(
            blocks <= dst_blocks + 8 * touched,
            "{what}: st_blocks {dst_blocks} -> {blocks}"
        );
        let src_data: u64 = extents(&fs, src)
            .iter()
            .map(|&(s, e)| e.min(off_in + n).saturating_sub(s.max(off_in)))
            .sum();
        if src_data == 0 && n > 0 {
            // Nothing but holes copied: nothing new stored.
            assert!(blocks <= dst_blocks, "{what}: a hole became data");
        }
    }
}

#[test]
fn a_source_hole_over_stored_destination_pages_makes_them_holes() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    let src = make_file(&fs, ROOT_INO, "src", b"");
    truncate(&fs, src, 64 * PAGE);
    fs.write(src, 10 * PAGE, &pattern(PAGE as usize, 1))
        .unwrap();
    let dst = make_file(&fs, ROOT_INO, "dst", &pattern(64 * PAGE as usize, 2));
    assert_eq!(
        fs.copy_file_range(src, 0, dst, 0, 64 * PAGE).unwrap(),
        64 * PAGE
    );
    assert!(bytes_of(&fs, dst) == bytes_of(&fs, src));
    assert_eq!(
        fs.getattr(dst).unwrap().blocks,
        8,
        "one stored page is left"
    );
    assert_eq!(extents(&fs, dst), vec![(10 * PAGE, 11 * PAGE)]);
    // Unaligned: the partial pages at the ends keep their other bytes, whole ones go.
    let dst2 = make_file(&fs, ROOT_INO, "dst2", &pattern(64 * PAGE as usize, 3));
    let before = bytes_of(&fs, dst2);
    let n = fs.copy_file_range(src, 100, dst2, 100, 5 * PAGE).unwrap();
    let (want, _) = model_copy(&before, &bytes_of(&fs, src), 100, 100, 5 * PAGE);
    assert_eq!(n, 5 * PAGE);
    assert!(bytes_of(&fs, dst2) == want);
    assert_eq!(fs.getattr(dst2).unwrap().blocks, 8 * (64 - 4));
    // Offsets that are not congruent: each whole destination page takes bytes of two source
    // pages; where both are holes it becomes a hole.
    let dst3 = make_file(&fs, ROOT_INO, "dst3", &pattern(70 * PAGE as usize, 4));
    let before = bytes_of(&fs, dst3);
    assert_eq!(
        fs.copy_file_range(src, 0, dst3, 100, 64 * PAGE).unwrap(),
        64 * PAGE
    );
    let (want, _) = model_copy(&before, &bytes_of(&fs, src), 0, 100, 64 * PAGE);
    assert!(bytes_of(&fs, dst3) == want);
    assert_eq!(
        extents(&fs, dst3),
        vec![(0, PAGE), (10 * PAGE, 12 * PAGE), (64 * PAGE, 70 * PAGE)]
    );
}

#[test]
fn copy_within_one_file_refuses_overlap_and_allows_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    let data = pattern(10 * PAGE as usize, 1);
    let f = make_file(&fs, ROOT_INO, "f", &data);
    for (off_in, off_out, len) in [
        (0, 0, PAGE),
        (0, PAGE, 2 * PAGE),
        (PAGE, 0, 2 * PAGE),
        (100, 200, 200),
        (0, 10 * PAGE - 1, 1 << 30), // cut at the end of file, still overlapping
    ] {
        assert_eq!(
            fs.copy_file_range(f, off_in, f, off_out, len)
                .map_err(|e| e.errno()),
            Err(libc::EINVAL),
            "copy {len} from {off_in} to {off_out} within one file"
        );
    }
    assert!(bytes_of(&fs, f) == data, "a refused copy changed the file");
    // Adjacent ranges sharing a page, forwards and backwards, and past the end.
    let mut want = data.clone();
    for (off_in, off_out, len) in [
        (0u64, 100u64, 100u64),
        (5000, 4000, 1000),
        (0, 10 * PAGE + 7, 3 * PAGE + 5),
        (2 * PAGE, 20 * PAGE, 1 << 30),
    ] {
        let (w, n) = model_copy(&want, &want, off_in, off_out, len);
        want = w;
        assert_eq!(fs.copy_file_range(f, off_in, f, off_out, len).unwrap(), n);
        assert!(
            bytes_of(&fs, f) == want,
            "copy {len} from {off_in} to {off_out}"
        );
    }
}

#[test]
fn copy_grows_the_destination_sets_its_times_and_stops_at_the_source_end() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    let src = make_file(&fs, ROOT_INO, "src", &pattern(5000, 1));
    let dst = make_file(&fs, ROOT_INO, "dst", b"abc");
    let old = fs.getattr(dst).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    // From at or past the source's end: nothing, and nothing changes (as the VFS does).
    assert_eq!(fs.copy_file_range(src, 5000, dst, 0, 100).unwrap(), 0);
    assert_eq!(fs.copy_file_range(src, 9000, dst, 0, 100).unwrap(), 0);
    assert_eq!(fs.getattr(dst).unwrap(), old);
    // Cut at the source's end; the destination grows to the end of what was copied.
    assert_eq!(
        fs.copy_file_range(src, 1000, dst, 1 << 20, 1 << 20)
            .unwrap(),
        4000
    );
    let new = fs.getattr(dst).unwrap();
    assert_eq!(new.size, (1 << 20) + 4000);
    assert_eq!(
        new.blocks,
        8 + 8,
        "the first page, and one for 4000 bytes at 1 MiB"
    );
    assert!(
        new.mtime > old.mtime && new.ctime > old.ctime,
        "mtime and ctime"
    );
    let back = bytes_of(&fs, dst);
    assert_eq!(&back[..3], b"abc");
    assert!(back[3..1 << 20].iter().all(|&b| b == 0));
    assert!(back[1 << 20..] == pattern(5000, 1)[1000..]);
    // Not beyond the largest file size.
    assert_eq!(
        fs.copy_file_range(src, 0, dst, MAX_FILE_SIZE, 10)
            .map_err(|e| e.errno()),
        Err(libc::EFBIG)
    );
    assert_eq!(
        fs.copy_file_range(src, 0, dst, MAX_FILE_SIZE - 10, 100)
            .unwrap(),
        10
    );
    // Directories are no file to copy.
    assert_eq!(
        fs.copy_file_range(ROOT_INO, 0, dst, 0, 10)
            .map_err(|e| e.errno()),
        Err(libc::EISDIR)
    );
}

#[test]
fn copy_drops_privileges_of_the_destination_as_a_write_does() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    let cap = b"security.capability";
    let src = make_file(&fs, ROOT_INO, "src", &pattern(8192, 1));
    let dst = make_file(&fs, ROOT_INO, "dst", &[7u8; 8192]);
    let set_mode = |ino, mode| {
        fs.setattr(
            ino,
            &SetAttr {
                mode: Some(mode),
                ..Default::default()
            },
        )
        .unwrap();
    };
    let perm = |ino| fs.getattr(ino).unwrap().perm;
    set_mode(dst, 0o6755);
    set_mode(src, 0o6755);
    fs.setxattr(dst, cap, b"caps", 0).unwrap();
    fs.setxattr(src, cap, b"caps", 0).unwrap();
    // With CAP_FSETID: the bits stay, the capabilities go.
    fs.copy_file_range_as(src, 0, dst, 0, 100, None).unwrap();
    assert_eq!(perm(dst), 0o6755);
    assert!(
        fs.getxattr(dst, cap).is_err(),
        "the copy kept security.capability"
    );
    // Without: set-user-ID, and set-group-ID with group execute, go.
    fs.copy_file_range_as(src, 0, dst, 0, 100, Some(IN_EVERY_GROUP))
        .unwrap();
    assert_eq!(perm(dst), 0o0755);
    // Set-group-ID without group execute stays for a member of the group, not for others.
    set_mode(dst, 0o2745);
    fs.copy_file_range_as(src, 0, dst, 0, 100, Some(IN_EVERY_GROUP))
        .unwrap();
    assert_eq!(perm(dst), 0o2745);
    fs.copy_file_range_as(src, 0, dst, 0, 100, Some(&|_| false))
        .unwrap();
    assert_eq!(perm(dst), 0o0745);
    // The source keeps everything.
    assert_eq!(perm(src), 0o6755);
    assert_eq!(fs.getxattr(src, cap).unwrap(), b"caps");
}

#[test]
fn copy_into_a_full_store_is_enospc_and_never_half_a_batch() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open_with(dir.path(), 32 << 20);
    let src = make_file(&fs, ROOT_INO, "src", &pattern(4 << 20, 1));
    let dst = make_file(&fs, ROOT_INO, "dst", b"");
    let src_bytes = bytes_of(&fs, src);
    let mut at = 0u64;
    let err = loop {
        let before = fs.getattr(dst).unwrap();
        match fs.copy_file_range(src, 0, dst, at, 4 << 20) {
            Ok(n) => {
                assert!(n > 0 && n % PAGE == 0, "a copy of {n} bytes");
                at += n;
            }
            Err(e) => {
                assert_eq!(
                    fs.getattr(dst).unwrap(),
                    before,
                    "a refused copy changed the destination"
                );
                break e;
            }
        }
        assert!(at < 64 << 20, "a 32 MiB store took 64 MiB");
    };
    assert_eq!(err.errno(), libc::ENOSPC);
    let back = bytes_of(&fs, dst);
    assert_eq!(back.len() as u64, at);
    for (i, chunk) in back.chunks(4 << 20).enumerate() {
        assert!(
            chunk == &src_bytes[..chunk.len()],
            "copy {i} reads back wrong"
        );
    }
    // Over pages already stored, a copy adds nothing and is not refused.
    assert_eq!(
        fs.copy_file_range(src, 0, dst, 0, 1 << 20).unwrap(),
        1 << 20
    );
}

/// Work grows with the pages stored, not with the range: a copy of a 1 GiB file holding a few
/// pages looks at a few index entries.
#[test]
fn copy_work_grows_with_stored_pages_not_range_size() {
    let dir = tempfile::tempdir().unwrap();
    let fs = open(dir.path());
    let src = make_file(&fs, ROOT_INO, "src", &pattern(PAGE as usize, 1));
    fs.write(src, 1 << 30, &pattern(PAGE as usize, 2)).unwrap();
    let dst = make_file(&fs, ROOT_INO, "dst", b"");
    fs.write(dst, 512 << 20, &pattern(PAGE as usize, 3))
        .unwrap();
    let before = fs.engine().index_keys_visited();
    let mut at = 0;
    loop {
        let n = fs.copy_file_range(src, at, dst, at, 1 << 40).unwrap();
        if n == 0 {
            break;
        }
        at += n;
    }
    let cost = fs.engine().index_keys_visited() - before;
    assert!(
        cost <= 200,
        "a copy of 1 GiB storing 2 pages looked at {cost} index entries"
    );
    assert_eq!(
        extents(&fs, dst),
        vec![(0, PAGE), (1 << 30, (1 << 30) + PAGE)]
    );
    assert_eq!(fs.getattr(dst).unwrap().blocks, 16);
}

/// A large copy lets go of the filesystem's lock between batches: other operations go on
/// while it runs, and see it half done (an operation that waited for the whole copy would see
/// the destination empty or complete, never in between).
#[test]
fn a_large_copy_does_not_stall_other_operations() {
    const TOTAL: u64 = 128 << 20;
    // Long enough for a hang to be one, and not a slow machine.
    const HANG: Duration = Duration::from_secs(60);
    let dir = tempfile::tempdir().unwrap();
    let fs = Arc::new(open_with(dir.path(), 512 << 20));
    let src = make_file(&fs, ROOT_INO, "src", &pattern(TOTAL as usize, 1));
    let dst = make_file(&fs, ROOT_INO, "dst", b"");
    let other = make_file(&fs, ROOT_INO, "other", b"");
    // After the copy's first batch, the copier hands over to this thread and waits for it to
    // have used the filesystem: a copy that held the state lock across its batches leaves this
    // thread blocked and the copier waiting for it.
    let (paused_tx, paused_rx) = std::sync::mpsc::sync_channel::<()>(0);
    let (resume_tx, resume_rx) = std::sync::mpsc::sync_channel::<()>(1);
    let resume_rx = std::sync::Mutex::new(resume_rx);
    let handed_over = std::sync::atomic::AtomicBool::new(false);
    fs.test_set_between_copy_batches(Some(Box::new(move || {
        if !handed_over.swap(true, std::sync::atomic::Ordering::SeqCst) {
            paused_tx.send(()).unwrap();
            resume_rx
                .lock()
                .unwrap()
                .recv_timeout(HANG)
                .expect("other operations stay blocked while a copy is between batches");
        }
    })));
    let copier = {
        let fs = fs.clone();
        std::thread::spawn(move || {
            let n = fs.copy_file_range(src, 0, dst, 0, TOTAL);
            // Drops the hook's sender: a copy that never paused fails the wait below.
            fs.test_set_between_copy_batches(None);
            n.unwrap()
        })
    };
    paused_rx
        .recv_timeout(HANG)
        .expect("the copy goes in more than one batch");
    let size = fs.getattr(dst).unwrap().size;
    assert!(size > 0 && size < TOTAL, "a copy in progress: {size} bytes");
    fs.write(other, PAGE, b"x").unwrap();
    assert_eq!(bytes_of(&fs, other).len() as u64, PAGE + 1);
    resume_tx.send(()).unwrap();
    assert_eq!(copier.join().unwrap(), TOTAL);
    assert!(bytes_of(&fs, dst) == bytes_of(&fs, src));
}

#[test]
fn copies_between_compaction_groups_land_in_the_destination_group() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), &options(256 << 20)).unwrap();
    let fs = Fs::with_options(
        engine,
        FsOptions {
            group_split_bytes: 1 << 20,
            ..Default::default()
        },
    )
    .unwrap();
    let mkdir = |name: &str| {
        fs.mkdir(ROOT_INO, name.as_bytes(), 0o755, 0, CALLER)
            .unwrap()
            .ino
    };
    let (a, b) = (mkdir("a"), mkdir("b"));
    let data = pattern(2 << 20, 1);
    let (attr, fh) = fs.create(a, b"f", 0o644, 0, CALLER).unwrap();
    for (i, c) in data.chunks(128 << 10).enumerate() {
        fs.write(attr.ino, (i * (128 << 10)) as u64, c).unwrap();
    }
    fs.release(attr.ino, fh).unwrap();
    let ga = fs.group_of_dir(a);
    assert_ne!(ga, fs.group_of_dir(b), "/a is a group of its own");
    let (attr2, fh2) = fs.create(b, b"g", 0o644, 0, CALLER).unwrap();
    fs.release(attr2.ino, fh2).unwrap();
    assert_eq!(
        fs.copy_file_range(attr.ino, 0, attr2.ino, 0, 4 << 20)
            .unwrap(),
        2 << 20
    );
    assert!(bytes_of(&fs, attr2.ino) == data);
    // The copied bytes count for /b, which splits off in its turn; and back into /a.
    let gb = fs.group_of_dir(b);
    assert!(gb != ga && gb != fs.group_of_dir(ROOT_INO), "/b splits off");
    let bytes = |dir| {
        fs.group_roots()
            .into_iter()
            .find(|r| r.dir == dir)
            .unwrap()
            .bytes
    };
    assert_eq!(bytes(b), 2 << 20);
    assert_eq!(
        fs.copy_file_range(attr2.ino, 0, attr.ino, 2 << 20, 1 << 20)
            .unwrap(),
        1 << 20
    );
    assert_eq!(bytes(a), 3 << 20);
    fs.engine().test_separate().unwrap();
    fs.engine().test_compact().unwrap();
    let mut want = data.clone();
    want.extend_from_slice(&data[..1 << 20]);
    assert!(bytes_of(&fs, attr.ino) == want);
    assert!(bytes_of(&fs, attr2.ino) == data);
    fs.close().unwrap();
}
