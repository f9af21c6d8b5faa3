#!/usr/bin/env python3
"""Fills a directory the way the mount benchmarks build their store of about 1M records:
N files of FILE_BYTES in NDIRS directories, written by PROCS processes (one per share of the
directories), then sync. Prints the fill rate in files/s.

    python3 scripts/fill_store.py DIR N NDIRS PROCS FILE_BYTES

Used by scripts/bench.sh (its mount workload) and scripts/mirror_bench.sh.
"""

import os
import sys
import time


def fill(d, n, ndirs, procs, file_bytes):
    """Writes the files; returns files/s (sync included). Exits 1 if a writer failed."""
    buf = os.urandom(file_bytes)
    t = time.perf_counter()
    pids = []
    for k in range(procs):
        pid = os.fork()
        if pid == 0:
            try:
                for j in range(k, ndirs, procs):
                    p = os.path.join(d, "d%04d" % j)
                    os.mkdir(p)
                    for i in range(j, n, ndirs):
                        fd = os.open(os.path.join(p, "f%07d" % i), os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644)
                        os.write(fd, buf)
                        os.close(fd)
                os._exit(0)
            except BaseException as e:
                sys.stderr.write("fill: %r\n" % e)
                os._exit(1)
        pids.append(pid)
    ok = all(os.waitpid(p, 0)[1] == 0 for p in pids)
    os.sync()
    if not ok:
        sys.exit(1)
    return n / (time.perf_counter() - t)


if __name__ == "__main__":
    d, n, ndirs, procs, file_bytes = sys.argv[1], *map(int, sys.argv[2:6])
    print("%.1f" % fill(d, n, ndirs, procs, file_bytes))
