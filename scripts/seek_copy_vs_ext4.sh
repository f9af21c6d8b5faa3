#!/usr/bin/env bash
# SEEK_DATA/SEEK_HOLE and copy_file_range on a real mount, against a kernel ext4 loop mount.
#
# - The same sparse files (holes, stored pages of zeros, partial pages, truncated tails, a file
#   grown by truncate or fallocate only) are built on both; lseek(SEEK_DATA) and
#   lseek(SEEK_HOLE) from every page boundary and the offsets around it must answer the same
#   (offset or errno) on both.
# - copy_file_range of a 64 MiB sparse file on the mount (os.copy_file_range, as cp and
#   shutil call it) gives the same bytes and keeps the holes: the same st_blocks and data
#   extents as the source. That shows the daemon did the copy: the kernel's fallback reads
#   and writes every byte and fills every hole with zeros (as ext4's copy does, printed for
#   reference). cp of a dense file (cp uses copy_file_range for those) gives the same bytes.
# - cp --sparse=always and tar --sparse (create, then extract) round trips give the same bytes
#   and the same data extents on the mount as on ext4, and tar archives identical to ext4's.
#
#   bash scripts/seek_copy_vs_ext4.sh [BINARY]
#
# Needs root (loop mount). Env: KEEP=1 keeps the work dir, TMPDIR.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
[[ $# -ge 1 ]] && LOGSTORFS="$(realpath "$1")"

for tool in mkfs.ext4 python3 cp tar sha256sum fusermount3; do
    command -v "$tool" >/dev/null || die "$tool is missing"
done
[[ $(id -u) -eq 0 ]] || die "run as root (loop mount)"

with_ext4 logstorfs-verify 512M ""

log "SEEK_DATA/SEEK_HOLE and copy_file_range on $(backend_name) against ext4, work dir $WORK"
check_here "mount fresh store" mount_fresh "$WORK/store" "$MNT" 1G || { summary seek-copy; exit 1; }

# The Python side: `make DIR` builds the sparse files, `probe DIR` prints every seek answer,
# `extents FILE` prints a file's data extents, `copy SRC DST` copies with copy_file_range.
PY="$WORK/seekcopy.py"
cat > "$PY" <<'EOF'
import os, random, sys

PAGE = 4096
FAR = 100 << 20     # a hole that long before the last data of file "far"

def layout(seed):
    """A sparse file's writes and final size, chosen by seed."""
    r = random.Random(seed)
    pages = r.randint(1, 120)
    writes = []
    for p in range(pages):
        k = r.random()
        if k < 0.4:
            continue                                    # a hole
        if k < 0.55:
            writes.append((p * PAGE, bytes(PAGE)))      # a stored page of zeros
        elif k < 0.75:
            off = p * PAGE + r.randrange(PAGE)          # part of a page
            writes.append((off, r.randbytes(r.randint(1, 300))))
        else:
            writes.append((p * PAGE, r.randbytes(PAGE)))
    size = r.choice([pages * PAGE, pages * PAGE - r.randrange(1, 2 * PAGE),
                     pages * PAGE + r.randrange(1, 6 * PAGE)])
    return writes, max(size, 0)

def make(d):
    files = {}
    for seed in range(1, 25):
        files[f"r{seed}"] = layout(seed)
    files["example"] = ([(0, b"a" * 100), (3 * PAGE, bytes(PAGE)), (10 * PAGE + 5, b"b" * 10)],
                        20 * PAGE + 7)
    files["empty"] = ([], 0)
    files["grown"] = ([], 1 << 20)
    files["dense"] = ([(0, random.Random(0).randbytes(3 * PAGE + 10))], 3 * PAGE + 10)
    files["far"] = ([(0, b"x"), (FAR + 5, b"y")], FAR + 4 * PAGE)
    for name, (writes, size) in files.items():
        fd = os.open(os.path.join(d, name), os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o644)
        for off, data in writes:
            os.pwrite(fd, data, off)
        os.ftruncate(fd, size)
        os.fsync(fd)
        os.close(fd)
    fd = os.open(os.path.join(d, "fallocated"), os.O_CREAT | os.O_WRONLY, 0o644)
    os.pwrite(fd, b"z" * 10, 0)
    os.posix_fallocate(fd, 0, 64 * PAGE)
    os.fsync(fd)
    os.close(fd)

def seek(fd, off, whence):
    try:
        return str(os.lseek(fd, off, whence))
    except OSError as e:
        return e.strerror

def probe(d):
    for name in sorted(os.listdir(d)):
        path = os.path.join(d, name)
        # The fallocated file's reservation is stored zero pages here (data to SEEK_DATA),
        # unwritten extents on ext4 (holes): allocated_is_data in src/bin/fsdiff/known.rs.
        if not os.path.isfile(path) or name == "fallocated":
            continue
        fd = os.open(path, os.O_RDONLY)
        size = os.fstat(fd).st_size
        offs = {-1, 0, size - 1, size, size + 1, size + PAGE}
        for p in range(min(size // PAGE + 2, 300)):
            offs.update({p * PAGE, p * PAGE + 1, p * PAGE + 2048, p * PAGE + 4095})
        offs.update({FAR - 1, FAR, FAR + 1, FAR + 6, FAR + PAGE})
        for off in sorted(o for o in offs if o >= -1):
            print(name, off, seek(fd, off, os.SEEK_DATA), seek(fd, off, os.SEEK_HOLE))
        os.close(fd)

def extents(path):
    fd = os.open(path, os.O_RDONLY)
    out, at = [], 0
    while True:
        try:
            start = os.lseek(fd, at, os.SEEK_DATA)
        except OSError:
            break
        end = os.lseek(fd, start, os.SEEK_HOLE)
        out.append(f"{start}-{end}")
        at = end
    os.close(fd)
    return " ".join(out) or "none"

def copy(src, dst):
    fi = os.open(src, os.O_RDONLY)
    fo = os.open(dst, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o644)
    while os.copy_file_range(fi, fo, 1 << 30):
        pass
    os.close(fi)
    os.close(fo)

def big(path):
    """64 MiB: 1 MiB of data every 8 MiB, scattered pages, a page of zeros, holes between."""
    r = random.Random(64)
    fd = os.open(path, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o644)
    for i in range(8):
        os.pwrite(fd, r.randbytes(1 << 20), i * (8 << 20) + 12345)
    for _ in range(40):
        os.pwrite(fd, r.randbytes(100), r.randrange(64 << 20))
    os.pwrite(fd, bytes(PAGE), 60 << 20)
    os.ftruncate(fd, 64 << 20)
    os.fsync(fd)
    os.close(fd)

cmd = sys.argv[1]
if cmd == "make": make(sys.argv[2])
elif cmd == "probe": probe(sys.argv[2])
elif cmd == "extents": print(extents(sys.argv[2]))
elif cmd == "copy": copy(sys.argv[2], sys.argv[3])
elif cmd == "big": big(sys.argv[2])
EOF

blocks() { stat -c %b "$1"; }
sum() { sha256sum < "$1" | cut -d' ' -f1; }
extents() { python3 "$PY" extents "$1"; }
# The 512-byte blocks of a file's data extents, whole pages: what st_blocks must say on the
# mount (ext4's also counts its extent tree's blocks, so it is not compared).
extent_blocks() {
    local e n=0 s t
    for e in $(extents "$1"); do
        [[ "$e" == none ]] && break
        s=${e%-*}; t=${e#*-}
        n=$(( n + ((t + 4095) / 4096 - s / 4096) * 8 ))
    done
    echo "$n"
}

t_seek() {
    mkdir -p "$EXT/seek" "$MNT/seek"
    python3 "$PY" make "$EXT/seek"
    python3 "$PY" make "$MNT/seek"
    python3 "$PY" probe "$EXT/seek" > "$WORK/seek.ext4"
    python3 "$PY" probe "$MNT/seek" > "$WORK/seek.mnt"
    echo "$(wc -l < "$WORK/seek.ext4") answers (offset, SEEK_DATA, SEEK_HOLE) compared"
    diff "$WORK/seek.ext4" "$WORK/seek.mnt" | head -20 || true
    cmp -s "$WORK/seek.ext4" "$WORK/seek.mnt"
}
check "SEEK_DATA/SEEK_HOLE answer as ext4 on sparse files" t_seek

t_copy_sparse() {
    local src="$MNT/big" dst="$MNT/big.copy" start
    python3 "$PY" big "$src"
    start=$(date +%s%N)
    python3 "$PY" copy "$src" "$dst"
    echo "copy_file_range of 64 MiB sparse: $(( ($(date +%s%N) - start) / 1000000 )) ms"
    echo "st_blocks source $(blocks "$src"), copy $(blocks "$dst")"
    expect_eq "$(sum "$src")" "$(sum "$dst")" "sha256 of the copy"
    expect_eq "$(stat -c %s "$src")" "$(stat -c %s "$dst")" "size of the copy"
    expect_eq "$(blocks "$src")" "$(blocks "$dst")" "st_blocks of the copy (holes kept)"
    expect_eq "$(extents "$src")" "$(extents "$dst")" "data extents of the copy"
    # For reference: ext4 has no copy_file_range of its own; the kernel's copy fills holes.
    python3 "$PY" big "$EXT/big"
    python3 "$PY" copy "$EXT/big" "$EXT/big.copy"
    echo "ext4 for reference: st_blocks source $(blocks "$EXT/big"), copy $(blocks "$EXT/big.copy")"
}
check "copy_file_range of a 64 MiB sparse file: same bytes, holes kept (done by the daemon)" t_copy_sparse

t_copy_cases() {
    # Unaligned offsets, within one file, overlap, past the end: same bytes and results as ext4.
    local d
    for d in "$EXT" "$MNT"; do
        python3 - "$d" > "$d.cases" <<'EOF'
import errno, hashlib, os, random, sys
d = sys.argv[1]
r = random.Random(7)
src, dst = os.path.join(d, "cs"), os.path.join(d, "cd")
with open(src, "wb") as f:
    f.write(r.randbytes(100000))
    f.seek(300000)
    f.write(r.randbytes(5000))
with open(dst, "wb") as f:
    f.write(r.randbytes(50000))
fi, fo = os.open(src, os.O_RDWR), os.open(dst, os.O_RDWR)
for i in range(60):
    a, b, n = r.randrange(320000), r.randrange(400000), r.choice([r.randrange(10000), r.randrange(200000)])
    same = i % 4 == 0
    try:
        got = os.copy_file_range(fi, fi if same else fo, n, a, b)
    except OSError as e:
        got = errno.errorcode[e.errno]
    print(i, same, got)
for p in (src, dst):
    print(p[len(d):], os.stat(p).st_size, hashlib.sha256(open(p, "rb").read()).hexdigest())
EOF
    done
    diff "$EXT.cases" "$MNT.cases" | head -20 || true
    cmp -s "$EXT.cases" "$MNT.cases"
}
check "copy_file_range at unaligned offsets, within one file and past the end: as ext4" t_copy_cases

t_cp_dense() {
    head -c $((16 << 20)) /dev/urandom > "$WORK/dense"
    cp "$WORK/dense" "$MNT/dense"
    cp "$MNT/dense" "$MNT/dense.cp"      # cp uses copy_file_range for a file without holes
    expect_eq "$(sum "$WORK/dense")" "$(sum "$MNT/dense.cp")" "sha256 of cp's copy"
}
check "cp of a dense file on the mount" t_cp_dense

t_cp_sparse() {
    local d
    for d in "$EXT" "$MNT"; do
        python3 "$PY" big "$d/cps"
        cp --sparse=always "$d/cps" "$d/cps.1"
        cp --sparse=always "$d/cps.1" "$d/cps.2"
        expect_eq "$(sum "$d/cps")" "$(sum "$d/cps.2")" "sha256 after cp --sparse=always twice on $d"
    done
    echo "ext4:      st_blocks $(blocks "$EXT/cps") -> $(blocks "$EXT/cps.2"), extents $(extents "$EXT/cps.2")"
    echo "logstorfs: st_blocks $(blocks "$MNT/cps") -> $(blocks "$MNT/cps.2"), extents $(extents "$MNT/cps.2")"
    expect_eq "$(extents "$EXT/cps.2")" "$(extents "$MNT/cps.2")" "data extents after cp --sparse=always"
    expect_eq "$(extent_blocks "$MNT/cps.2")" "$(blocks "$MNT/cps.2")" "st_blocks after cp --sparse=always"
}
check "cp --sparse=always round trip: same bytes and holes as ext4" t_cp_sparse

t_tar_sparse() {
    local d
    for d in "$EXT" "$MNT"; do
        mkdir -p "$d/tarsrc" "$d/tarout"
        python3 "$PY" make "$d/tarsrc"
        python3 "$PY" big "$d/tarsrc/big"
        # Not the fallocated file: tar takes a file with st_blocks below its size for sparse,
        # and fallocate's st_blocks (ext4 counts the reservation) is not this check's matter.
        tar -C "$d/tarsrc" --sparse --mtime=@0 --owner=0 --group=0 --numeric-owner --sort=name \
            --exclude=./fallocated -cf "$d.tar" .
        rm "$d/tarsrc/fallocated"
        tar -C "$d/tarout" --sparse -xf "$d.tar"
        (cd "$d/tarsrc" && find . -type f | sort | xargs sha256sum) > "$d.src.sums"
        (cd "$d/tarout" && find . -type f | sort | xargs sha256sum) > "$d.out.sums"
        cmp -s "$d.src.sums" "$d.out.sums" || { echo "tar round trip changed bytes on $d"; return 1; }
    done
    cmp -s "$EXT.tar" "$MNT.tar" || { echo "tar --sparse archives differ from ext4's"; return 1; }
    echo "archive $(stat -c %s "$MNT.tar") bytes, identical to ext4's"
    local f
    for f in big r3 r7 example far; do
        expect_eq "$(extents "$EXT/tarout/$f")" "$(extents "$MNT/tarout/$f")" "extents of extracted $f"
    done
    expect_eq "$(extent_blocks "$MNT/tarout/big")" "$(blocks "$MNT/tarout/big")" "st_blocks of extracted big"
}
check "tar --sparse round trip: same archive as ext4, same bytes and holes" t_tar_sparse

check_here "unmount" unmount "$MNT"
summary seek-copy
