#!/usr/bin/env bash
# Power-cut replay of a real mounted workload. `kill -9` cannot show what a
# power cut does, since the host page cache survives a killed process; this can:
#
# 1. Mount a new store with `--test-record-io`: the daemon logs every write, allocation, sync and
#    superblock replacement it makes (src/engine/storage/io_log.rs).
# 2. Run the crash workload (scripts/crash_workload.py) for STEPS steps with marks: once a step's
#    fsyncs have returned, the workload writes mark K into the same log.
# 3. For CUTS cut points (right after a sync, and anywhere at random), `logstorfs replay-cut`
#    builds the store a power cut there would leave: everything synced, plus any subset of the
#    unsynced 512-byte sectors (so the last writes may be torn).
# 4. Each image must pass `logstorfs fsck` (notes about torn tails are fine, problems are not),
#    mount without repair, hold every step confirmed before the cut with exact contents and no
#    confirmed delete come back, unmount, and pass fsck again.
#
#   bash scripts/powercut_replay.sh [BINARY]
#
# Env: STEPS (workload steps, default 600), CUTS (default 40), REPLAY_SEED, SPLIT (group split
# size, default 256K so that groups split and merge under the workload), REPLAY_SIZE (store,
# default 64M), KEEP=1, TMPDIR. Reports "powercut-replay: N passed, N failed".
set -euo pipefail
source "$(dirname "$0")/lib.sh"
[[ $# -ge 1 ]] && LOGSTORFS="$(realpath "$1")"
for tool in python3 mountpoint fusermount3; do
    command -v "$tool" >/dev/null || die "$tool is missing"
done
[[ -z "$MOUNT_CMD" ]] || die "powercut_replay.sh replays logstorfs's own I/O: MOUNT_CMD is not supported"

STEPS="${STEPS:-600}"
CUTS="${CUTS:-40}"
SEED="${REPLAY_SEED:-$RANDOM}"
WORKLOAD="$(dirname "$0")/crash_workload.py"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/logstorfs-replay.XXXXXX")"
MNT="$WORK/mnt"
IOLOG="$WORK/io.log"
JOURNAL="$WORK/journal"
cleanup() { cleanup_mounts; if [[ "${KEEP:-0}" == 1 ]]; then echo "kept $WORK"; else rm -rf "$WORK"; fi; }
trap cleanup EXIT

log "powercut_replay: $STEPS steps, $CUTS cuts, seed $SEED, work dir $WORK"
MOUNT_OPTS="--test-record-io $IOLOG --group-split-size ${SPLIT:-256K}"
check_here "mount a new store recording its I/O" mount_fresh "$WORK/store" "$MNT" "${REPLAY_SIZE:-64M}" \
    || { summary powercut-replay; exit 1; }
t_workload() {
    python3 "$WORKLOAD" run "$MNT" "$JOURNAL" "$SEED" "$WORK/ready" --steps "$STEPS" --mark
    expect_eq "$STEPS" "$(grep -c '^C ' "$JOURNAL")" "confirmed steps"
}
check "workload: $STEPS confirmed steps with marks" t_workload
check_here "unmount" unmount "$MNT" || { summary powercut-replay; exit 1; }
MOUNT_OPTS=""

"$LOGSTORFS" replay-cut --list "$IOLOG" > "$WORK/summary.json"
# The cut points: half right after a sync (what an fsync promised), half anywhere.
python3 - "$WORK/summary.json" "$CUTS" "$SEED" > "$WORK/cuts" <<'EOF'
import json, random, sys
s = json.load(open(sys.argv[1]))
n, rng = int(sys.argv[2]), random.Random(int(sys.argv[3]))
syncs = s["syncs"]
after_sync = sorted(rng.sample(syncs, min(len(syncs), n // 2)))
anywhere = sorted(rng.randrange(1, s["entries"] + 1) for _ in range(n - len(after_sync)))
for at in after_sync:
    print(at + 1, rng.randrange(1 << 30))
for at in anywhere:
    print(at, rng.randrange(1 << 30))
print("log: %d entries, %d writes (%d MiB), %d syncs, %d marks" % (
    s["entries"], s["writes"], s["bytes_written"] >> 20, len(syncs), len(s["marks"])),
    file=sys.stderr)
EOF
expect_marks() { python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["marks"]))' "$WORK/summary.json"; }
t_log() { expect_eq "$STEPS" "$(expect_marks)" "marks in the I/O log"; }
check "the I/O log holds a mark per confirmed step" t_log

fsck_ok() { # fsck_ok STORE: no problems (notes about torn tails are expected after a cut)
    local out rc=0
    out="$("$LOGSTORFS" fsck "$1" 2>&1)" || rc=$?
    [[ $rc -eq 0 ]] || { echo "$out" | tail -n 20; echo "fsck exit $rc"; return 1; }
}

i=0
while read -r at seed; do
    i=$((i + 1))
    img="$WORK/cut"
    rm -rf "$img"
    mark="$("$LOGSTORFS" replay-cut "$IOLOG" --at "$at" --seed "$seed" --out "$img/store")" \
        || { check "cut $i at entry $at: image built" false; continue; }
    name="cut $i (entry $at, seed $seed, last mark $mark)"
    check "$name: fsck of the image" fsck_ok "$img/store"
    if check_here "$name: mount without repair" mount_fresh "$img/store" "$img/mnt"; then
        check "$name: every step confirmed before the cut intact, no confirmed delete back" \
            python3 "$WORKLOAD" verify "$img/mnt" "$JOURNAL" --upto-mark "$mark"
        check_here "$name: unmount" unmount "$img/mnt"
        check "$name: fsck after mount and unmount" fsck_ok "$img/store"
    fi
done < "$WORK/cuts"
log "$i power-cut images checked"
summary powercut-replay
