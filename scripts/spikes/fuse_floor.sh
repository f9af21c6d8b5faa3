#!/usr/bin/env bash
# The FUSE floor on this machine: round trips and the bench's small-file and metadata loops on
# `fuse_floor` (a daemon that stores nothing, src/bin/fuse_floor) beside logstorfs, each mount
# in alternation, ROUNDS times; prints the medians and the median of per-round ratios.
# Three floors: `floor` (default_permissions, no extended attributes: the kernel stops asking
# after the first ENOSYS), `floor-nodp` (no default_permissions) and `floor-xattrs` (answers
# GETXATTR with ENODATA, as a file system with extended attributes whose files have none: the
# kernel then asks for `security.capability` before the first write to each new file, as it
# asks logstorfs).
#
#   sudo bash scripts/spikes/fuse_floor.sh
#
# Env: ROUNDS (5), N (files per loop, 3000), RT (round trips per loop, 20000), LOGSTOR_OPTS.
# FUSE over io_uring (CONFIG_FUSE_IO_URING, /sys/module/fuse/parameters/enable_uring) needs a
# daemon that registers its queues with io_uring commands after INIT; fuser has no such
# transport, so both daemons here use /dev/fuse read/write whatever the parameter says. The
# script reports the parameter and measures the /dev/fuse floor only.
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/lib.sh
export PATH="$HOME/.cargo/bin:$PATH"
for tool in fusermount3 python3 mountpoint; do
    # Without fusermount3 the mounts could not be detached at the end, and the wait for the
    # daemons would never return.
    command -v "$tool" >/dev/null || die "$tool is missing (apt-get install -y fuse3)"
done
ROUNDS="${ROUNDS:-5}"; N="${N:-3000}"; RT="${RT:-20000}"
cargo build --release --quiet --bin logstorfs --bin fuse_floor
T="${CARGO_TARGET_DIR:-target}/release"
W="$(mktemp -d /tmp/fuse-speed-floor.XXXXXX)"
mkdir -p "$W/floor" "$W/logstorfs" "$W/floor-nodp" "$W/floor-xattrs"
FLOOR_PIDS=()
cleanup() {
    set +e
    for m in "$W/floor" "$W/floor-nodp" "$W/floor-xattrs" "$W/logstorfs"; do mountpoint -q "$m" && fusermount3 -u "$m"; done
    for p in "${FLOOR_PIDS[@]}"; do wait "$p" 2>/dev/null; done
    rm -rf "$W"
}
trap cleanup EXIT
"$T/fuse_floor" "$W/floor" & FLOOR_PIDS+=($!)
"$T/fuse_floor" "$W/floor-nodp" --no-default-permissions & FLOOR_PIDS+=($!)
"$T/fuse_floor" "$W/floor-xattrs" --xattrs & FLOOR_PIDS+=($!)
# shellcheck disable=SC2086
"$T/logstorfs" mount --daemon --create --size 2G ${LOGSTOR_OPTS:-} "$W/store" "$W/logstorfs"
for m in floor floor-nodp floor-xattrs; do
    for _ in $(seq 1 50); do mountpoint -q "$W/$m" && break; sleep 0.1; done
done
echo "enable_uring: $(cat /sys/module/fuse/parameters/enable_uring 2>/dev/null || echo absent) (unused: fuser reads /dev/fuse)"
python3 - "$W" "$ROUNDS" "$N" "$RT" <<'PY'
import os, sys, time, statistics
w, rounds, n, rt = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
pc = time.perf_counter
systems = ["floor", "floor-nodp", "floor-xattrs", "logstorfs"]
res = {}
def put(k, s, v): res.setdefault((k, s), []).append(v)
buf = os.urandom(4096)
for r in range(rounds):
    for s in systems[r % len(systems):] + systems[:r % len(systems)]:
        d = os.path.join(w, s, "r%d" % r); os.mkdir(d)
        t = pc()
        for _ in range(rt): os.statvfs(d)
        put("statfs_us", s, (pc() - t) / rt * 1e6)
        t = pc()
        for i in range(n):
            fd = os.open(os.path.join(d, "f%d" % i), os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644)
            os.write(fd, buf); os.close(fd)
        put("small_us", s, (pc() - t) / n * 1e6)
        names = [os.path.join(d, "e%d" % i) for i in range(n)]
        t = pc()
        for p in names: os.close(os.open(p, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644))
        put("create_us", s, (pc() - t) / n * 1e6)
        with open("/proc/sys/vm/drop_caches", "w") as f: f.write("2\n")
        t = pc()
        for p in names: os.stat(p)
        put("stat_cold_us", s, (pc() - t) / n * 1e6)
        t = pc()
        for p in names: os.unlink(p)
        put("unlink_us", s, (pc() - t) / n * 1e6)
        for i in range(n): os.unlink(os.path.join(d, "f%d" % i))
        os.rmdir(d)
print("%-14s %12s %12s %12s %12s   %-20s %s" % ("us per op", *systems, "logstorfs/floor", "logstorfs/floor-xattrs (median of per-round ratios, range)"))
for k in ["statfs_us", "small_us", "create_us", "stat_cold_us", "unlink_us"]:
    med = [statistics.median(res[(k, s)]) for s in systems]
    cols = []
    for floor in ("floor", "floor-xattrs"):
        ratios = [a / b for a, b in zip(res[(k, "logstorfs")], res[(k, floor)])]
        cols.append("%.2f (%.2f..%.2f)" % (statistics.median(ratios), min(ratios), max(ratios)))
    print("%-14s %12.1f %12.1f %12.1f %12.1f   %-20s %s" % (k, *med, *cols))
PY
