#!/usr/bin/env python3
"""The workload behind the committed format fixtures (scripts/make_format_fixture.sh), run on a
live logstorfs mount, and the manifest that tests/format_fixture.rs reads every file against.

    format_fixture_workload.py build MNT SEED       the tree (see build()), then fsync
    format_fixture_workload.py overwrite MNT SEED N  N more page overwrites of the churn files
    format_fixture_workload.py manifest MNT OUT     one line per entry of the tree (format below)
    format_fixture_workload.py inflight MNT LOG     creates and unlinks files under inflight/ until
                                                    the mount dies; LOG names each file and its
                                                    contents before the attempt

Contents are text from a seeded generator, so that the store image compresses well; every kind
of entry the filesystem stores is there: directories in several compaction groups, small and
multi-page files, a sparse file, a hard link, symlinks, a FIFO, xattrs (text, binary, large),
modes and owners, a file renamed across directories, a renamed directory, deleted files and
directory, a truncated file, and files overwritten many times over (compaction).

Manifest: a header line `# logstorfs format fixture manifest v1`, then one tab-separated line
per entry, sorted by path:

    path  kind  perm  uid  gid  size  nlink  ino  sha256  xattrs

kind is file, dir, symlink or fifo; perm is octal; sha256 is of a file's bytes or a symlink's
target ("-" otherwise); xattrs is "-" or name=hexvalue joined by ",", sorted by name. The root
is ".". Lines starting with `maybe` name a file written after the last sync before a crash:

    maybe  path  size  sha256

which after recovery is absent, empty (its create survived, its one write did not) or whole.
"""
import hashlib
import os
import random
import sys

WORDS = (
    "log segment buffer record index group compaction separator version checkpoint recovery "
    "durable floor generation tombstone range delete inode entry page xattr symlink hardlink "
    "sparse fsync rename unlink directory superblock trailer header magic"
).split()


def text(rng, size):
    """size bytes of compressible text."""
    out = []
    n = 0
    line = 0
    while n < size:
        s = "%06d %s\n" % (line, " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))))
        out.append(s)
        n += len(s)
        line += 1
    return "".join(out).encode()[:size]


BULK_FILES = 5


def page(f, p, r):
    """A 4 KiB page of bulk file f, page p, written in round r."""
    return ("file %d page %d round %d\n" % (f, p, r)).encode().ljust(4096, b".")


def write_file(path, data, mode=0o644):
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    os.fsync(fd)
    os.close(fd)


def build(mnt, seed):
    rng = random.Random(seed)
    j = lambda *p: os.path.join(mnt, *p)
    for d in ("docs", "src/deep/nested", "media", "churn", "links", "olddir", "tmpdir"):
        os.makedirs(j(d))
    # Small files in several directories, and multi-page ones.
    for i in range(40):
        write_file(j("docs", "note%02d.txt" % i), text(rng, rng.randint(1, 3000)))
    for i in range(30):
        write_file(j("src/deep/nested", "mod%02d.rs" % i), text(rng, rng.randint(100, 5000)))
    write_file(j("docs", "big.txt"), text(rng, 40_000 + 123))
    write_file(j("src/deep", "lib.rs"), text(rng, 30_000))
    write_file(j("media", "clip.bin"), text(rng, 50_000))
    write_file(j("empty"), b"")
    write_file(j("README"), b"logstorfs format fixture\n")
    # A sparse file: data at the start, in the middle (unaligned) and at its end, holes between.
    fd = os.open(j("media", "sparse.img"), os.O_CREAT | os.O_WRONLY, 0o644)
    os.pwrite(fd, b"head", 0)
    os.pwrite(fd, text(rng, 10_000), (1 << 20) + 123)
    os.pwrite(fd, b"tail", (6 << 20) - 4)
    os.fsync(fd)
    os.close(fd)
    # Links.
    os.link(j("docs", "note01.txt"), j("links", "note01-hard"))
    os.symlink("../docs/big.txt", j("links", "to-big"))
    os.symlink("nowhere/at/all", j("links", "dangling"))
    os.symlink("x" * 3000, j("links", "long-target"))
    os.mkfifo(j("links", "fifo"), 0o640)
    # Xattrs: text, binary, large, on a directory.
    os.setxattr(j("docs", "note00.txt"), "user.comment", b"the first note")
    os.setxattr(j("docs", "note00.txt"), "user.binary", bytes(range(256)))
    os.setxattr(j("docs", "big.txt"), "user.large", text(rng, 8000))
    os.setxattr(j("src"), "user.dir", b"a directory's xattr")
    os.setxattr(j("docs", "note02.txt"), "user.gone", b"removed again")
    os.removexattr(j("docs", "note02.txt"), "user.gone")
    # Modes and owners.
    os.chmod(j("docs", "note03.txt"), 0o600)
    os.chmod(j("src/deep/nested", "mod00.rs"), 0o755)
    os.chmod(j("olddir"), 0o700)
    os.chown(j("docs", "note04.txt"), 1000, 1000)
    # Renames: a file across directories, a directory into another.
    write_file(j("docs", "draft.txt"), text(rng, 7000))
    os.rename(j("docs", "draft.txt"), j("src", "final.txt"))
    write_file(j("tmpdir", "inside.txt"), text(rng, 5000))
    os.rename(j("tmpdir"), j("media", "moved"))
    # Deletions: files, a directory with files, a file over an existing name.
    write_file(j("docs", "gone.txt"), text(rng, 20_000))
    os.unlink(j("docs", "gone.txt"))
    for i in range(5):
        write_file(j("olddir", "f%d" % i), text(rng, 3000))
    for i in range(5):
        os.unlink(j("olddir", "f%d" % i))
    os.rmdir(j("olddir"))
    write_file(j("docs", "replacement.txt"), text(rng, 4000))
    os.rename(j("docs", "replacement.txt"), j("docs", "note05.txt"))
    # A truncated file, then extended by a write past its end (a hole in the middle).
    write_file(j("docs", "trunc.txt"), text(rng, 50_000))
    os.truncate(j("docs", "trunc.txt"), 10_001)
    fd = os.open(j("docs", "trunc.txt"), os.O_WRONLY)
    os.pwrite(fd, b"after the hole", 40_000)
    os.fsync(fd)
    os.close(fd)
    # Churn: files of nearly a third of the store overwritten page by page many times over, so
    # that segments hold live and dead records mixed, free segments run short and compaction
    # copies; and one file rewritten whole. Their pages are low-entropy (a line naming the page,
    # then filler), so that the image stays small compressed.
    for f in range(BULK_FILES):
        write_file(j("churn", "bulk%02d.dat" % f), b"".join(page(f, p, 0) for p in range(256)))
    overwrite(mnt, seed, 2000)
    for r in range(10):
        write_file(j("churn", "hot.dat"), text(rng, 20_000 + r))
    for d in ("", "docs", "src", "src/deep", "src/deep/nested", "media", "churn", "links"):
        fsync_dir(j(d))


def overwrite(mnt, seed, n):
    """n random whole-page overwrites of the churn files (run again until compaction copied)."""
    rng = random.Random(seed * 1000 + n)
    fds = [os.open(os.path.join(mnt, "churn", "bulk%02d.dat" % f), os.O_WRONLY)
           for f in range(BULK_FILES)]
    for _ in range(n):
        f = rng.randrange(BULK_FILES)
        p = rng.randrange(256)
        os.pwrite(fds[f], page(f, p, rng.randrange(1 << 30)), p * 4096)
    for fd in fds:
        os.fsync(fd)
        os.close(fd)


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def manifest(mnt, out):
    lines = []
    for root, dirs, files in os.walk(mnt):
        for name in [None] + sorted(dirs) + sorted(files):
            if name is None:
                if root != mnt:
                    continue
                path = mnt
            else:
                path = os.path.join(root, name)
            rel = os.path.relpath(path, mnt)
            st = os.lstat(path)
            fmt = st.st_mode & 0o170000
            digest = "-"
            if fmt == 0o100000:
                kind = "file"
                with open(path, "rb") as f:
                    digest = sha256(f.read())
            elif fmt == 0o040000:
                kind = "dir"
            elif fmt == 0o120000:
                kind = "symlink"
                digest = sha256(os.readlink(path).encode())
            elif fmt == 0o010000:
                kind = "fifo"
            else:
                sys.exit("unexpected file type at %s" % rel)
            xattrs = "-"
            if kind != "symlink":
                names = sorted(os.listxattr(path, follow_symlinks=False))
                if names:
                    xattrs = ",".join(
                        "%s=%s" % (n, os.getxattr(path, n, follow_symlinks=False).hex()) for n in names
                    )
            size = st.st_size if kind in ("file", "symlink") else 0
            lines.append(
                "\t".join(
                    str(x)
                    for x in (rel, kind, "%o" % (st.st_mode & 0o7777), st.st_uid, st.st_gid, size,
                              st.st_nlink, st.st_ino, digest, xattrs)
                )
            )
    lines.sort()
    with open(out, "w") as f:
        f.write("# logstorfs format fixture manifest v1\n")
        f.write("\n".join(lines) + "\n")


def inflight(mnt, log):
    """Creates inflight/fNNNNN (one write each, under a batch's size) and unlinks the one 40
    before, until the mount dies."""
    rng = random.Random(7)
    d = os.path.join(mnt, "inflight")
    with open(log, "a") as lf:
        i = 0
        try:
            while True:
                size = rng.randint(1000, 100_000)
                data = b"".join(page(i, p, 0) for p in range(size // 4096 + 1))[:size]
                name = "inflight/f%05d" % i
                lf.write("maybe\t%s\t%d\t%s\n" % (name, len(data), sha256(data)))
                lf.flush()
                fd = os.open(os.path.join(mnt, name), os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644)
                os.write(fd, data)
                os.close(fd)
                if i >= 40:
                    os.unlink(os.path.join(d, "f%05d" % (i - 40)))
                i += 1
        except OSError as e:
            print("inflight: stopped after %d files: %s" % (i, e), file=sys.stderr)


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "build":
        build(args[0], int(args[1]))
    elif cmd == "overwrite":
        overwrite(args[0], int(args[1]), int(args[2]))
    elif cmd == "manifest":
        manifest(args[0], args[1])
    elif cmd == "inflight":
        inflight(args[0], args[1])
    else:
        sys.exit("unknown command %s" % cmd)
