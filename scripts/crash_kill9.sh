#!/usr/bin/env bash
# kill -9 rounds on a real mount. A workload (creates, writes, partial overwrites, truncates,
# renames across directories, deletes, in several directories) journals a step OUTSIDE the
# mount only once the fsync of the file and of every directory involved has returned. At a
# random moment the daemon is killed with SIGKILL; the dead mount is detached, `logstorfs fsck`
# must find the store clean, the store is mounted again, every confirmed step must be there
# with exact contents (and no confirmed delete or rename-away may come back), then it is
# unmounted and `logstorfs fsck` must find it clean again. All rounds use the same store.
#
#   bash scripts/crash_kill9.sh [BINARY]
#
# Env: ROUNDS (default 5), CRASH_SIZE (store size, default 256M), KEEP=1 keeps the work dir,
# TMPDIR. Reports "crash-kill9: N passed, N failed" (and into RESULTS_FILE).
# Figures: a round takes about 3 to 5 s here (2 cores), 50 rounds about 4 minutes.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
[[ $# -ge 1 ]] && LOGSTORFS="$(realpath "$1")"
for tool in python3 mountpoint fusermount3; do
    command -v "$tool" >/dev/null || die "$tool is missing"
done
[[ -z "$MOUNT_CMD" ]] || die "crash_kill9.sh kills the logstorfs daemon: MOUNT_CMD is not supported"

ROUNDS="${ROUNDS:-5}"
# A small group split size: the workload's directories hold a few hundred KiB each, so they
# split off as compaction groups and merge back all the time, and kills land in the middle.
[[ -z "$MOUNT_OPTS" ]] && MOUNT_OPTS="--group-split-size 256K"
SIZE="${CRASH_SIZE:-256M}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/logstorfs-crash.XXXXXX")"
STORE="$WORK/store"
MNT="$WORK/mnt"
JOURNAL="$WORK/journal"      # outside the mount
mkdir -p "$MNT"
: > "$JOURNAL"
cleanup() {
    [[ -n "${WORKLOAD_PID:-}" ]] && kill "$WORKLOAD_PID" 2>/dev/null
    cleanup_mounts
    if mountpoint -q "$MNT" 2>/dev/null; then fusermount3 -uz "$MNT" 2>/dev/null || true; fi
    if [[ "${KEEP:-0}" == 1 ]]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# The workload and its checker: scripts/crash_workload.py (journal format there).
WORKLOAD="$(dirname "$0")/crash_workload.py"

fsck_clean() { # fsck_clean WHEN: the store (unmounted) must be clean
    local out rc=0
    out="$("$LOGSTORFS" fsck "$STORE" 2>&1)" || rc=$?
    echo "$out" | tail -n 20
    [[ $rc -eq 0 ]] || { echo "fsck exit $rc $1"; return 1; }
}

kill_daemon() {
    local pid
    pid="$(sed -n 2p "$STORE/mounted" 2>/dev/null || true)"
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || pid="$(daemon_pid "$MNT")" \
        || { echo "no daemon for $MNT"; return 1; }
    kill -9 "$pid"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then echo "daemon $pid survived kill -9"; return 1; fi
    fusermount3 -u -z "$MNT" 2>/dev/null || true
    _forget_mount "$MNT"
    ! mountpoint -q "$MNT"
}

verify_mount() { python3 "$WORKLOAD" verify "$MNT" "$JOURNAL"; }

BASE_SEED="${CRASH_SEED:-$RANDOM}"
log "crash_kill9: $ROUNDS rounds on $(backend_name), seed $BASE_SEED, work dir $WORK"
start_all=$SECONDS
check_here "mount a fresh store" mount_fresh "$STORE" "$MNT" "$SIZE" || { summary crash-kill9; exit 1; }
for round in $(seq 1 "$ROUNDS"); do
    t0=$SECONDS
    if [[ $round -gt 1 ]]; then
        check_here "round $round: mount" mount_fresh "$STORE" "$MNT" || break
    fi
    rm -f "$WORK/ready"
    python3 "$WORKLOAD" run "$MNT" "$JOURNAL" "$((BASE_SEED * 1000 + round))" "$WORK/ready" \
        > "$WORK/workload.$round.log" 2>&1 &
    WORKLOAD_PID=$!
    # Kill at a random moment once the workload is past its start (reading back the files).
    for _ in $(seq 1 600); do
        [[ -e "$WORK/ready" ]] || ! kill -0 "$WORKLOAD_PID" 2>/dev/null && break
        sleep 0.1
    done
    sleep "$(python3 -c 'import random; print(round(random.uniform(0.3, 3.0), 2))')"
    t_kill() {
        if ! kill -0 "$WORKLOAD_PID" 2>/dev/null; then
            echo "the workload ended before the kill:"; cat "$WORK/workload.$round.log"; return 1
        fi
        kill_daemon
    }
    check_here "round $round: kill -9 the daemon during the workload" t_kill || break
    wait "$WORKLOAD_PID" || true
    WORKLOAD_PID=""
    t_workload_stopped_by_kill() {
        cat "$WORK/workload.$round.log"
        grep -q "workload stopped: \[Errno \(107\|103\|5\|2\)\]" "$WORK/workload.$round.log"
    }
    check "round $round: the workload ran until the kill ($(grep -c '^C ' "$JOURNAL") steps confirmed so far)" \
        t_workload_stopped_by_kill
    check "round $round: fsck clean right after the kill" fsck_clean "after kill -9"
    check_here "round $round: remount without repair" mount_fresh "$STORE" "$MNT" || break
    check "round $round: every confirmed step intact, nothing deleted came back" verify_mount
    check_here "round $round: clean unmount" unmount "$MNT" || break
    check "round $round: fsck clean after remount and unmount" fsck_clean "after remount"
    log "round $round took $((SECONDS - t0)) s"
done
log "$ROUNDS rounds in $((SECONDS - start_all)) s; $(grep -c '^C ' "$JOURNAL") steps confirmed in all"
summary crash-kill9
