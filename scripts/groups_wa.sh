#!/usr/bin/env bash
# The separator's share of device writes on a real mount with several compaction groups: three
# workloads, one after the other on one mount, each spread over DIRS directories that grow past
# the group split size and become group roots.
#
#   bash scripts/groups_wa.sh [BINARY]
#
#   sequential   one SEQ_MB (default 64) MiB file per directory, written one after the other
#   small_files  SMALL_FILES (default 2000) 4 KiB files per directory, created round-robin over
#                the directories (so every mixed segment holds several groups)
#   overwrite    fio: 4 KiB random overwrites (OVERWRITE_MB, default 128 MiB in all) of the
#                sequential files, all directories at once
#
# For each workload it prints, from `logstorfs stats` before and after: user bytes, device
# bytes, separator bytes, compaction bytes, segments handed over, and the ratios
# separator/device and device/user. Env: DIRS (4), SPLIT (group split size, default 16M),
# SIZE (store, 2G), TMPDIR, KEEP=1.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
[[ $# -ge 1 ]] && LOGSTORFS="$(realpath "$1")"
for tool in fio python3 mountpoint fusermount3; do
    command -v "$tool" >/dev/null || die "$tool is missing (scripts/test.sh installs it)"
done
DIRS="${DIRS:-4}"
SEQ_MB="${SEQ_MB:-64}"
SMALL_FILES="${SMALL_FILES:-2000}"
OVERWRITE_MB="${OVERWRITE_MB:-128}"
SPLIT="${SPLIT:-16M}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/logstorfs-groups-wa.XXXXXX")"
MNT="$WORK/mnt"
cleanup() { cleanup_mounts; if [[ "${KEEP:-0}" == 1 ]]; then echo "kept $WORK"; else rm -rf "$WORK"; fi; }
trap cleanup EXIT

MOUNT_OPTS="--group-split-size $SPLIT"
mount_fresh "$WORK/store" "$MNT" "${SIZE:-2G}" || die "mount failed"

stats() { "$LOGSTORFS" stats --json "$MNT"; }
# settle: sync, then wait until the separator has drained the mixed segments (at most the
# active one left) or 30 s passed, so that each workload's separator work is counted in it.
settle() {
    sync
    local i
    for i in $(seq 1 60); do
        [[ "$(stats | python3 -c 'import json,sys; print(json.load(sys.stdin)["mixed_segments"])')" -le 1 ]] && return 0
        sleep 0.5
    done
}
report() { # report NAME BEFORE_JSON AFTER_JSON
    python3 - "$1" "$2" "$3" <<'EOF'
import json, sys
name, a, b = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
d = {k: b[k] - a[k] for k in ["user_bytes_written", "device_bytes_written",
     "separator_bytes_written", "compaction_bytes_written", "segments_handed_over"]}
dev, user = d["device_bytes_written"], d["user_bytes_written"]
print("%-12s user %8.1f MiB  device %8.1f MiB  separator %7.1f MiB  compaction %7.1f MiB  "
      "handed over %4d  separator/device %.3f  device/user %.2f" % (
      name, user / 2**20, dev / 2**20, d["separator_bytes_written"] / 2**20,
      d["compaction_bytes_written"] / 2**20, d["segments_handed_over"],
      d["separator_bytes_written"] / dev if dev else 0, dev / user if user else 0))
EOF
}

log "groups_wa: $DIRS directories, split size $SPLIT, on $MNT"
for d in $(seq 1 "$DIRS"); do mkdir "$MNT/d$d"; done

before="$(stats)"
for d in $(seq 1 "$DIRS"); do
    dd if=/dev/urandom of="$MNT/d$d/seq" bs=1M count="$SEQ_MB" status=none
done
settle
after="$(stats)"; report sequential "$before" "$after"

before="$after"
python3 - "$MNT" "$DIRS" "$SMALL_FILES" <<'EOF'
import os, sys
mnt, dirs, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
block = os.urandom(4096)
for i in range(n):
    for d in range(1, dirs + 1):
        with open(os.path.join(mnt, "d%d" % d, "s%05d" % i), "wb") as f:
            f.write(block)
EOF
settle
after="$(stats)"; report small_files "$before" "$after"

before="$after"
files=""
for d in $(seq 1 "$DIRS"); do files="$files:$MNT/d$d/seq"; done
fio --name=overwrite --filename="${files#:}" --rw=randwrite --bs=4k --size="$((SEQ_MB * DIRS))M" \
    --io_size="$((OVERWRITE_MB / DIRS))M" --numjobs="$DIRS" --ioengine=psync --end_fsync=1 \
    --group_reporting >/dev/null
settle
after="$(stats)"; report overwrite "$before" "$after"

echo "groups:"
stats | python3 -c 'import json,sys
for g in json.load(sys.stdin)["groups"]:
    print("  %3d %-12s segments %4d live %7.1f MiB" % (g["id"], g["root"], g["segments"], g["live_bytes"] / 2**20))'
