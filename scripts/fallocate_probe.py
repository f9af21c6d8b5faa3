#!/usr/bin/env python3
"""fallocate(2) with every combination of mode bits and odd ranges, on a fresh 40960-byte file
(40000 for a few) in DIR; prints one line per case: the errno, then the file's size and
st_blocks. scripts/fallocate_vs_ext4.sh diffs the output on ext4 and on the mount.

With --fuse, the cases in which COLLAPSE_RANGE or INSERT_RANGE would reach the file system are
checked apart (the kernel's FUSE module refuses them with EOPNOTSUPP before any daemon sees
them: they must fail so and change nothing) and left out of the output, as they are without
--fuse.

Usage: fallocate_probe.py DIR [--fuse]
"""

import ctypes
import errno
import os
import sys

libc = ctypes.CDLL(None, use_errno=True)
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]

K, P, C, Z, I, U, W = 0x1, 0x2, 0x8, 0x10, 0x20, 0x40, 0x80

CASES = [
    ("mode 0 inside", 0, 0, 4096),
    ("length 0", 0, 0, 0),
    ("negative length", 0, 0, -1),
    ("negative offset", 0, -1, 4096),
    ("keep size", K, 0, 4096),
    ("keep size past the end", K, 45056, 8192),
    ("punch without keep size", P, 0, 4096),
    ("punch", P | K, 100, 5000),
    ("punch past the end", P | K, 81920, 4096),
    ("zero", Z, 100, 5000),
    ("zero keep size", Z | K, 100, 5000),
    ("zero past the end", Z, 81920, 4096),
    ("zero keep size past the end", Z | K, 81920, 4096),
    ("punch and zero", P | Z | K, 0, 4096),
    ("punch and zero, no keep", P | Z, 0, 4096),
    ("collapse keep size", C | K, 4096, 4096),
    ("collapse and punch", C | P | K, 4096, 4096),
    ("insert keep size", I | K, 4096, 4096),
    ("collapse and insert", C | I, 4096, 4096),
    ("collapse length 0", C, 4096, 0),
    ("insert length 0", I, 4096, 0),
    ("unshare", U, 0, 4096),
    ("unshare keep size", U | K, 0, 4096),
    ("write zeroes", W, 0, 4096),
    ("write zeroes keep size", W | K, 0, 4096),
    ("unknown bit 0x4", 0x4, 0, 4096),
    ("unknown bit 0x100", 0x100, 0, 4096),
    ("past the largest file", 0, 1 << 44, 4096),
    ("overflowing", 0, 1 << 62, 1 << 62),
]

# Reach the file system's own checks: ext4 answers them, the FUSE kernel module refuses them.
SHIFTS = [
    ("collapse", C, 4096, 4096),
    ("collapse unaligned offset", C, 100, 4096),
    ("collapse unaligned length", C, 4096, 100),
    ("collapse to the end", C, 4096, 36864),
    ("insert", I, 4096, 4096),
    ("insert at the end", I, 40960, 4096),
    ("insert unaligned", I, 4096, 100),
]


def fresh(d, size=40960):
    p = os.path.join(d, "probe")
    if os.path.exists(p):
        os.unlink(p)
    fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
    os.write(fd, b"x" * size)
    return fd


def fa(fd, mode, off, ln):
    if libc.fallocate(fd, mode, off, ln) == 0:
        return "ok"
    return errno.errorcode[ctypes.get_errno()]


def main():
    d = sys.argv[1]
    fuse = "--fuse" in sys.argv[2:]
    bad = 0
    for name, mode, off, ln in CASES:
        fd = fresh(d)
        r = fa(fd, mode, off, ln)
        st = os.fstat(fd)
        print(f"{name:32} {r:10} size={st.st_size} blocks={st.st_blocks}")
        os.close(fd)
    if fuse:
        for name, mode, off, ln in SHIFTS:
            fd = fresh(d)
            r = fa(fd, mode, off, ln)
            st = os.fstat(fd)
            if r != errno.errorcode[errno.EOPNOTSUPP] or (st.st_size, st.st_blocks) != (40960, 80):
                print(f"{name}: expected EOPNOTSUPP from the FUSE kernel module and no change, "
                      f"got {r} size={st.st_size} blocks={st.st_blocks}", file=sys.stderr)
                bad += 1
            os.close(fd)
    fd = os.open(os.path.join(d, "probe"), os.O_RDONLY)
    print(f"{'read-only descriptor':32} {fa(fd, 0, 0, 4096)}")
    os.close(fd)
    fd = os.open(d, os.O_RDONLY)
    print(f"{'directory':32} {fa(fd, 0, 0, 4096)}")
    os.close(fd)
    os.unlink(os.path.join(d, "probe"))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
