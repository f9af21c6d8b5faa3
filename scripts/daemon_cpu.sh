#!/usr/bin/env bash
# The daemon's own cost of a sequential write: CPU time (the whole daemon and its background
# thread), minor page faults and wall time of `dd bs=1M conv=fsync` of a new file, for one or
# more logstorfs binaries in alternation. CPU seconds and page faults vary far less from run to
# run than wall time on a shared machine, so they show a change in the daemon's work where
# bench.sh's throughput cannot.
#
#   sudo bash scripts/daemon_cpu.sh BINARY [BINARY...]
#
# Each round mounts a fresh store (--size 4G) on an ext4 loop image, writes the file, reads the
# daemon's counters (/proc/PID/stat, the background thread's /proc/PID/task/TID/stat), unmounts.
# Prints one line per round, then the median of each figure per binary.
# Env: ROUNDS (5), MIB (2048: the file's size), BENCH_DIR (where the 16 GiB sparse image goes;
# default /tmp).
set -euo pipefail
[[ $# -ge 1 ]] || { echo "usage: $0 BINARY [BINARY...]" >&2; exit 2; }
[[ $(id -u) -eq 0 ]] || { echo "run as root (loop mount, drop_caches)" >&2; exit 1; }
for b in "$@"; do [[ -x "$b" ]] || { echo "not an executable: $b" >&2; exit 2; }; done
for tool in fusermount3 mkfs.ext4 mountpoint; do
    command -v "$tool" >/dev/null || { echo "$tool is missing (apt-get install -y fuse3 e2fsprogs)" >&2; exit 1; }
done
ROUNDS="${ROUNDS:-5}"
MIB="${MIB:-2048}"
W="$(mktemp -d "${BENCH_DIR:-/tmp}/daemon-cpu.XXXXXX")"
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

ticks() { awk '{print $14 + $15}' "$1"; } # utime + stime, in clock ticks
hz=$(getconf CLK_TCK)
results="$W/results"
for r in $(seq 1 "$ROUNDS"); do
    # The binary that goes first alternates from round to round.
    bins=("$@"); ((r % 2 == 0)) && mapfile -t bins < <(printf '%s\n' "$@" | tac)
    for b in "${bins[@]}"; do
        store="$W/ext4/store"
        rm -rf "$store"
        sync; echo 3 > /proc/sys/vm/drop_caches
        "$b" mount --daemon --create --size 4G "$store" "$W/mnt" </dev/null >/dev/null
        pid=$(sed -n 2p "$store/mounted")
        bg=$(dirname "$(grep -l '^logstor-bg$' /proc/"$pid"/task/*/comm | head -n 1)")
        p0=$(ticks "/proc/$pid/stat"); b0=$(ticks "$bg/stat"); f0=$(awk '{print $10}' "/proc/$pid/stat")
        t0=$(date +%s.%N)
        dd if=/dev/zero of="$W/mnt/f" bs=1M count="$MIB" conv=fsync status=none
        t1=$(date +%s.%N)
        p1=$(ticks "/proc/$pid/stat"); b1=$(ticks "$bg/stat"); f1=$(awk '{print $10}' "/proc/$pid/stat")
        "$b" umount "$W/mnt"
        line=$(python3 -c "
import sys
t0, t1, p, g, f, hz = (float(a) for a in sys.argv[1:])
print('wall %.2f s  daemon CPU %.2f s  background %.2f s  minor faults %d' % (t1 - t0, p / hz, g / hz, f))" \
            "$t0" "$t1" "$((p1 - p0))" "$((b1 - b0))" "$((f1 - f0))" "$hz")
        echo "round $r $b: $line"
        echo "$b $line" >> "$results"
    done
done
echo
python3 - "$results" <<'PY'
import statistics, sys
by = {}
for line in open(sys.argv[1]):
    b, rest = line.split(" ", 1)
    w = rest.split()
    by.setdefault(b, []).append((float(w[1]), float(w[5]), float(w[8]), int(w[12])))
print("median of %d rounds    wall s  daemon CPU s  background s  minor faults" % len(next(iter(by.values()))))
for b, rows in by.items():
    med = [statistics.median(col) for col in zip(*rows)]
    print("%-20s %7.2f %13.2f %13.2f %13d  %s" % (b.rsplit("/", 1)[-1][:20], *med[:3], med[3], b))
PY
