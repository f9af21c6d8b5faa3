#!/usr/bin/env bash
# Foreground write latency while compaction runs, on a real mount. A benchmark,
# not a test: it prints figures and fails only if fio reports an error.
#
#   bash scripts/compaction_latency.sh [BINARY...]
#
# For each binary (default: this repository's release build; give an older build beside it to
# compare), and for each fill level in FILLS (default "10 75": live data in percent of the
# store's usable capacity, the size `df` shows), it mounts a fresh store of SIZE (512M), writes one file of that size, then
# runs fio: 4 KiB random overwrites of the file by JOBS (1) psync writers for RUNTIME (60) s,
# with per-write completion latency percentiles. At 10% compaction has nothing to do (the
# baseline); at 75% it runs throughout (each MiB of overwrites costs a MiB of cleaning or more).
#
# Prints per run: IOPS, clat p50 / p99 / p99.9 / max (µs), compaction bytes / user bytes during
# the run, and how many compaction steps writers ran themselves (write stalls: the background
# compactor fell behind). Env: SIZE, FILLS, RUNTIME, JOBS, TMPDIR, and DISTRIBUTION (fio's
# random_distribution, default "random" (uniform); "zoned:90/10:10/90" sends 90% of the writes to
# 10% of the file), and MOUNT_OPTS (extra mount arguments, e.g. "--compaction-policy
# cost-benefit"). Offsets are drawn independently (fio --norandommap), as in the simulations of
# anchors.md A.6; fio's default random map would overwrite each block once per pass over the
# file, which makes cleaning look cheaper than it is.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
for tool in fio python3 mountpoint fusermount3; do
    command -v "$tool" >/dev/null || die "$tool is missing (scripts/test.sh installs it)"
done
SIZE="${SIZE:-512M}"
FILLS="${FILLS:-10 75}"
RUNTIME="${RUNTIME:-60}"
JOBS="${JOBS:-1}"
DISTRIBUTION="${DISTRIBUTION:-random}"
BINARIES=("$@")
[[ ${#BINARIES[@]} -eq 0 ]] && BINARIES=("$LOGSTORFS")
WORK="$(mktemp -d "${TMPDIR:-/tmp}/logstorfs-compaction-latency.XXXXXX")"
MNT="$WORK/mnt"
cleanup() { cleanup_mounts; rm -rf "$WORK"; }
trap cleanup EXIT

field() { # field JSON NAME
    python3 -c 'import json,sys; print(json.loads(sys.argv[1]).get(sys.argv[2], 0))' "$1" "$2"
}

log "compaction_latency: store $SIZE, fills $FILLS % of the usable capacity, $JOBS job(s), ${RUNTIME} s each, $DISTRIBUTION, mount options \"${MOUNT_OPTS:-}\"; load $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-40s %5s %8s %8s %8s %8s %9s %12s %12s %12s\n' binary fill IOPS p50 p99 p99.9 max \
    compaction/user device/user writer-steps
for bin in "${BINARIES[@]}"; do
    LOGSTORFS="$(realpath "$bin")"
    for fill in $FILLS; do
        rm -rf "$WORK/store"
        mount_fresh "$WORK/store" "$MNT" "$SIZE" || die "mount failed"
        capacity="$(field "$("$LOGSTORFS" stats --json "$MNT")" usable_capacity_bytes)"
        file_mib=$((capacity * fill / 100 / 1048576))
        # Live bytes count record headers too: stay a little under the level.
        file_mib=$((file_mib * 98 / 100))
        dd if=/dev/urandom of="$MNT/file" bs=1M count="$file_mib" status=none conv=fsync
        before="$("$LOGSTORFS" stats --json "$MNT")"
        fio --name=overwrite --filename="$MNT/file" --rw=randwrite --bs=4k --norandommap \
            --size="${file_mib}M" --numjobs="$JOBS" --ioengine=psync --time_based \
            --random_distribution="$DISTRIBUTION" \
            --runtime="$RUNTIME" --group_reporting --output-format=json \
            --output="$WORK/fio.json" >/dev/null
        after="$("$LOGSTORFS" stats --json "$MNT")"
        python3 - "$bin" "$fill" "$WORK/fio.json" "$before" "$after" <<'EOF'
import json, sys
name, fill, path, a, b = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4]), json.loads(sys.argv[5])
job = json.load(open(path))["jobs"][0]["write"]
if job.get("total_ios", 0) == 0:
    sys.exit("fio wrote nothing")
pct = job["clat_ns"]["percentile"]
us = lambda q: pct[q] / 1000
user = b["user_bytes_written"] - a["user_bytes_written"]
comp = b["compaction_bytes_written"] - a["compaction_bytes_written"]
device = b["device_bytes_written"] - a["device_bytes_written"]
steps = b.get("foreground_compaction_steps", 0) - a.get("foreground_compaction_steps", 0)
print("%-40s %4s%% %8.0f %8.0f %8.0f %8.0f %9.0f %12.2f %12.2f %12d" % (
    name[-40:], fill, job["iops"], us("50.000000"), us("99.000000"), us("99.900000"),
    job["clat_ns"]["max"] / 1000, comp / user if user else 0, device / user if user else 0, steps))
EOF
        unmount "$MNT" || die "unmount failed"
    done
done
