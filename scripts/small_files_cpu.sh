#!/usr/bin/env bash
# Where a small file's time goes: bench.sh's small-file loop (create + one 4 KiB write + close
# of N files in 100 directories, then sync) on the no-op `fuse_floor` and on one or more
# logstorfs binaries in alternation, with the CPU each side spends per file: the writer's user
# and system time (getrusage) and each daemon thread's (/proc/PID/task/TID/stat, threads of
# one name summed).
#
#   sudo bash scripts/small_files_cpu.sh BINARY [BINARY...]
#
# The loop is a chain of synchronous FUSE round trips (six requests a file), so its time is
# the latency of that chain, not the machine's throughput: most of the time both CPUs are idle.
# PLACE says where the writer and the daemons may run:
#   free  (default) where the scheduler puts them, as in bench.sh;
#   one   all of them on CPU 0, so that no request or reply wakes a thread on another CPU;
#   split the daemon's FUSE threads one to a CPU (fuser-0 on CPU 0, fuser-1 on CPU 1), the
#         writer and the daemon's other threads free;
#   apart the writer and the FUSE threads on CPU 0, the daemon's other threads (background,
#         flusher) on CPU 1.
# Prints one line per run, then the median of each figure per system. Figures per file, in µs.
# Env: ROUNDS (5), N (20000 files), PLACE (free), FUSE_FLOOR (default: built like logstorfs),
# FLOOR_OPTS (default "--xattrs": mounted as logstorfs is, with default_permissions; add
# "--no-default-permissions" to compare with logstorfs -o daemon_permissions),
# BENCH_DIR (where the 16 GiB sparse ext4 image for the stores goes; default /tmp).
set -euo pipefail
[[ $# -ge 1 ]] || { echo "usage: $0 BINARY [BINARY...]" >&2; exit 2; }
[[ $(id -u) -eq 0 ]] || { echo "run as root (loop mount, drop_caches, taskset)" >&2; exit 1; }
for b in "$@"; do [[ -x "$b" ]] || { echo "not an executable: $b" >&2; exit 2; }; done
for tool in fusermount3 mkfs.ext4 mountpoint taskset python3; do
    command -v "$tool" >/dev/null || { echo "$tool is missing (apt-get install -y fuse3 e2fsprogs util-linux python3)" >&2; exit 1; }
done
ROUNDS="${ROUNDS:-5}"
N="${N:-20000}"
PLACE="${PLACE:-free}"
FLOOR_OPTS="${FLOOR_OPTS:---xattrs}"
case "$PLACE" in free | one | split | apart) ;; *) echo "PLACE must be free, one, split or apart, not '$PLACE'" >&2; exit 2 ;; esac
REPO="$(cd "$(dirname "$0")/.." && pwd)"
if [[ -z "${FUSE_FLOOR:-}" ]]; then
    (cd "$REPO" && cargo build --release --quiet --bin fuse_floor)
    FUSE_FLOOR="${CARGO_TARGET_DIR:-$REPO/target}/release/fuse_floor"
fi
W="$(mktemp -d "${BENCH_DIR:-/tmp}/small-cpu.XXXXXX")"
cleanup() {
    set +e
    mountpoint -q "$W/mnt" && fusermount3 -u "$W/mnt"
    mountpoint -q "$W/ext4" && umount "$W/ext4"
    rm -rf "$W"
}
trap cleanup EXIT
mkdir -p "$W/ext4" "$W/mnt"
truncate -s 16G "$W/ext4.img"
mkfs.ext4 -q -F "$W/ext4.img"
mount -o loop "$W/ext4.img" "$W/ext4"

# The writer: bench.sh's small-file loop, timed without its final sync (printed apart).
cat > "$W/writer.py" <<'EOF'
import os, sys, time, resource
d, n = sys.argv[1], int(sys.argv[2])
dirs = [os.path.join(d, "d%03d" % i) for i in range(100)]
buf = os.urandom(4096)
r0 = resource.getrusage(resource.RUSAGE_SELF)
t0 = time.perf_counter()
for p in dirs:
    os.mkdir(p)
for i in range(n):
    fd = os.open(os.path.join(dirs[i % 100], "f%06d" % i), os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644)
    os.write(fd, buf)
    os.close(fd)
t1 = time.perf_counter()
r1 = resource.getrusage(resource.RUSAGE_SELF)
os.sync()
for p in dirs + [d]:
    fd = os.open(p, os.O_RDONLY | os.O_DIRECTORY)
    os.fsync(fd)
    os.close(fd)
t2 = time.perf_counter()
us = 1e6 / n
print("loop=%.1f writer_user=%.1f writer_sys=%.1f sync_ms=%.1f" % (
    (t1 - t0) * us, (r1.ru_utime - r0.ru_utime) * us, (r1.ru_stime - r0.ru_stime) * us, (t2 - t1) * 1e3))
EOF

# "name ticks" per thread name of process $1 (utime + stime, summed over threads of one name).
thread_ticks() {
    local t
    for t in /proc/"$1"/task/*; do
        echo "$(tr ' ' '_' < "$t/comm") $(awk '{print $14 + $15}' "$t/stat")"
    done | awk '{a[$1] += $2} END {for (k in a) print k, a[k]}' | sort
}
place_daemon() { # $1: the daemon's pid
    local t comm
    for t in /proc/"$1"/task/*; do
        comm=$(cat "$t/comm")
        case "$PLACE:$comm" in
            one:*) taskset -pc 0 "${t##*/}" >/dev/null ;;
            split:fuser-0) taskset -pc 0 "${t##*/}" >/dev/null ;;
            split:fuser-1) taskset -pc 1 "${t##*/}" >/dev/null ;;
            apart:fuser-*) taskset -pc 0 "${t##*/}" >/dev/null ;;
            apart:*) taskset -pc 1 "${t##*/}" >/dev/null ;;
        esac
    done
}
hz=$(getconf CLK_TCK)
results="$W/results"
systems=(floor "$@")
for r in $(seq 1 "$ROUNDS"); do
    # The system that goes first rotates from round to round.
    order=()
    for i in "${!systems[@]}"; do order+=("${systems[$(((i + r) % ${#systems[@]}))]}"); done
    for s in "${order[@]}"; do
        rm -rf "$W/ext4/store"
        sync; echo 3 > /proc/sys/vm/drop_caches
        if [[ $s == floor ]]; then
            # shellcheck disable=SC2086 # FLOOR_OPTS is a list of arguments
            "$FUSE_FLOOR" "$W/mnt" $FLOOR_OPTS </dev/null >/dev/null 2>&1 &
            pid=$!
            for _ in $(seq 50); do mountpoint -q "$W/mnt" && break; sleep 0.1; done
        else
            "$s" mount --daemon --create --size 4G "$W/ext4/store" "$W/mnt" </dev/null >/dev/null
            pid=$(sed -n 2p "$W/ext4/store/mounted")
        fi
        mkdir "$W/mnt/b"
        place_daemon "$pid"
        thread_ticks "$pid" > "$W/before"
        if [[ $PLACE == one || $PLACE == apart ]]; then
            line=$(taskset -c 0 python3 "$W/writer.py" "$W/mnt/b" "$N")
        else
            line=$(python3 "$W/writer.py" "$W/mnt/b" "$N")
        fi
        thread_ticks "$pid" > "$W/after"
        threads=$(join "$W/before" "$W/after" | awk -v n="$N" -v hz="$hz" \
            '{printf " %s=%.1f", $1, ($3 - $2) * 1e6 / hz / n}')
        if [[ $s == floor ]]; then
            fusermount3 -u "$W/mnt"
            wait "$pid" || true
            name=floor
        else
            "$s" umount "$W/mnt"
            name=$s
        fi
        echo "round $r $name: $line$threads" | tee -a "$results"
    done
done
echo "median per file, µs (PLACE=$PLACE, N=$N, $ROUNDS rounds; clock ticks of 1/$hz s, so a thread's figure is exact only to $((1000000 / hz)) µs / N):"
python3 - "$results" <<'EOF'
import sys, statistics, collections
runs = collections.defaultdict(lambda: collections.defaultdict(list))
for line in open(sys.argv[1]):
    head, _, figs = line.partition(": ")
    name = head.split(" ", 2)[2]
    for f in figs.split():
        k, v = f.split("=")
        runs[name][k].append(float(v))
for name, figs in runs.items():
    print("%s: %s" % (name, " ".join("%s=%.1f" % (k, statistics.median(v)) for k, v in figs.items())))
EOF
