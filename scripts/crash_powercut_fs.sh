#!/usr/bin/env bash
# Power cuts on the real I/O path. `kill -9` leaves the host's page cache intact, so it cannot
# show what a power cut does to the store's pwrite/fallocate/fdatasync/rename calls; this can.
# The store lives on a cutfs mount (src/bin/cutfs: a FUSE passthrough that holds back every
# file's writes since its last fsync, and every namespace change since its directory's fsync).
# Each round:
#
# 1. cutfs is mounted on the backing directory, and logstorfs on the store inside it;
# 2. the crash workload (scripts/crash_workload.py) runs, journaling a step OUTSIDE the mounts
#    only once the fsyncs of the file and of its directories have returned;
# 3. at a random moment cutfs cuts the power (SIGUSR1: nothing unsynced survives; SIGUSR2: a
#    seeded random part of the unsynced 512-byte sectors, size changes and a prefix of the
#    namespace changes survives), then the logstorfs daemon is killed with SIGKILL and both
#    mounts are detached: the backing directory is what a disk would hold after the cut;
# 4. `logstorfs fsck` must find the store (on the backing directory) clean, it is mounted
#    directly from there, every confirmed step must be there with exact contents and no
#    confirmed delete or rename-away may come back; it is unmounted and fsck must find it clean.
#
# Before the rounds, a self-check of cutfs (synced data and names survive a cut that keeps
# nothing, unsynced ones do not). All rounds use the same store. Seeds are printed:
# CRASH_SEED=N replays the same workloads, cut kinds and cutfs seeds (the moments of the cuts
# are random in time).
#
#   bash scripts/crash_powercut_fs.sh [BINARY]
#
# Env: ROUNDS (default 50), CRASH_SEED, CRASH_SIZE (store size, default 256M), CUTFS (the
# cutfs binary, default next to logstorfs), KEEP=1 keeps the work dir, TMPDIR.
# Reports "crash-powercut-fs: N passed, N failed" (and into RESULTS_FILE).
# Figures: a round takes about 5 to 8 s here (2 cores), 50 rounds about 6 minutes.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
[[ $# -ge 1 ]] && LOGSTORFS="$(realpath "$1")"
CUTFS="${CUTFS:-$(dirname "$LOGSTORFS")/cutfs}"
for tool in python3 mountpoint fusermount3; do
    command -v "$tool" >/dev/null || die "$tool is missing"
done
[[ -x "$CUTFS" ]] || die "cutfs binary not found at $CUTFS (cargo build --release)"
[[ -z "$MOUNT_CMD" ]] || die "crash_powercut_fs.sh kills the logstorfs daemon: MOUNT_CMD is not supported"

ROUNDS="${ROUNDS:-50}"
# A small group split size, as in crash_kill9.sh: groups split and merge under the workload.
[[ -z "$MOUNT_OPTS" ]] && MOUNT_OPTS="--group-split-size 256K"
SIZE="${CRASH_SIZE:-256M}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/logstorfs-cutfs.XXXXXX")"
BACKING="$WORK/backing"        # the "disk"
CUTMNT="$WORK/cut"             # cutfs's view of it
STORE="$BACKING/store"         # the store, as the disk holds it
MNT="$WORK/mnt"
JOURNAL="$WORK/journal"        # outside every mount
mkdir -p "$BACKING" "$CUTMNT" "$MNT"
: > "$JOURNAL"
CUTFS_PID=""
DAEMON_PID=""
cleanup() {
    # Each step may fail (a process already gone): none may stop the rest.
    [[ -n "${WORKLOAD_PID:-}" ]] && { kill "$WORKLOAD_PID" 2>/dev/null || true; }
    # The daemon on cutfs keeps cutfs busy: it goes first.
    [[ -n "$DAEMON_PID" ]] && { kill -9 "$DAEMON_PID" 2>/dev/null || true; sleep 0.2; }
    cleanup_mounts
    if mountpoint -q "$MNT" 2>/dev/null; then fusermount3 -uz "$MNT" 2>/dev/null || true; fi
    if mountpoint -q "$CUTMNT" 2>/dev/null; then fusermount3 -uz "$CUTMNT" 2>/dev/null || true; fi
    if [[ -n "$CUTFS_PID" ]]; then
        kill "$CUTFS_PID" 2>/dev/null || true
        sleep 0.5
        kill -9 "$CUTFS_PID" 2>/dev/null || true
    fi
    if [[ "${KEEP:-0}" == 1 ]] || mountpoint -q "$MNT" || mountpoint -q "$CUTMNT"; then
        echo "kept $WORK"       # never rm -rf through a live mount
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

WORKLOAD="$(dirname "$0")/crash_workload.py"

fsck_clean() { # fsck_clean WHEN: the store (unmounted, on the backing directory) must be clean
    local out rc=0
    out="$("$LOGSTORFS" fsck "$STORE" 2>&1)" || rc=$?
    echo "$out" | tail -n 20
    [[ $rc -eq 0 ]] || { echo "fsck exit $rc $1"; return 1; }
}

mount_cutfs() { mount_cutfs_on "$BACKING" "$@"; } # mount_cutfs SEED LOG
mount_cutfs_on() { # mount_cutfs_on BACKING SEED LOG
    local backing="$1"; shift
    "$CUTFS" "$backing" "$CUTMNT" --seed "$1" >"$2" 2>&1 &
    CUTFS_PID=$!
    local i
    for i in $(seq 1 100); do
        mountpoint -q "$CUTMNT" && { MOUNTED+=("$CUTMNT"); return 0; }
        kill -0 "$CUTFS_PID" 2>/dev/null || break
        sleep 0.1
    done
    echo "cutfs did not mount:"; cat "$2"
    return 1
}

power_cut() { # power_cut SIGNAL LOG: cut, wait until cutfs reports it done
    kill -"$1" "$CUTFS_PID"
    local i
    for i in $(seq 1 100); do
        grep -q "power cut done" "$2" && { grep "power cut done" "$2"; return 0; }
        sleep 0.05
    done
    echo "cutfs did not report the cut:"; cat "$2"
    return 1
}

t_refuses() { # after the cut every write through cutfs fails
    if ( : > "$CUTMNT/after-the-cut" ) 2>/dev/null; then
        echo "cutfs accepted a create after the power cut"; return 1
    fi
}

kill_and_detach() { # SIGKILL the daemon (pid taken before the cut), detach both mounts
    local pid="$1"
    kill -9 "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then echo "daemon $pid survived kill -9"; return 1; fi
    fusermount3 -u -z "$MNT" 2>/dev/null || true
    _forget_mount "$MNT"
    unmount "$CUTMNT" || return 1
    for _ in $(seq 1 100); do kill -0 "$CUTFS_PID" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$CUTFS_PID" 2>/dev/null; then echo "cutfs $CUTFS_PID did not exit"; return 1; fi
    CUTFS_PID=""
    ! mountpoint -q "$MNT" && ! mountpoint -q "$CUTMNT"
}

verify_mount() { python3 "$WORKLOAD" verify "$MNT" "$JOURNAL"; }

# cutfs itself first: if it let unsynced changes through, every round would pass for nothing.
# Synced files and names must survive a cut that keeps nothing; an unsynced overwrite,
# truncate, create, mkdir, unlink and rename over a synced file must all be gone.
t_cutfs_self_check() {
    local b="$WORK/selfcheck" log="$WORK/cutfs.selfcheck.log"
    mkdir -p "$b"
    mount_cutfs_on "$b" 1 "$log" || return 1
    python3 - "$CUTMNT" <<'PY' || return 1
import os, sys
m = sys.argv[1]
def put(name, body):
    fd = os.open(os.path.join(m, name), os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
    os.write(fd, body); os.fsync(fd); os.close(fd)
def fsync_dir():
    fd = os.open(m, os.O_RDONLY); os.fsync(fd); os.close(fd)
for n in "adefhi":
    put(n, (n * 5000).encode())
fsync_dir()
fd = os.open(os.path.join(m, "a"), os.O_WRONLY); os.pwrite(fd, b"XXXX", 100); os.close(fd)
os.truncate(os.path.join(m, "h"), 10)
fd = os.open(os.path.join(m, "c"), os.O_CREAT | os.O_WRONLY, 0o644)
os.write(fd, b"c"); os.fsync(fd); os.close(fd)
os.mkdir(os.path.join(m, "g"))
os.rename(os.path.join(m, "d"), os.path.join(m, "e"))
os.unlink(os.path.join(m, "f"))
fd = os.open(os.path.join(m, "i"), os.O_WRONLY | os.O_APPEND); os.write(fd, b"more"); os.fsync(fd); os.close(fd)
assert open(os.path.join(m, "a"), "rb").read(104)[100:] == b"XXXX", "the mount shows an unsynced write"
assert sorted(os.listdir(m)) == ["a", "c", "e", "g", "h", "i"], sorted(os.listdir(m))
PY
    power_cut USR1 "$log" || return 1
    if ( : > "$CUTMNT/x" ) 2>/dev/null; then echo "cutfs accepted a create after the cut"; return 1; fi
    unmount "$CUTMNT" || return 1
    wait "$CUTFS_PID" 2>/dev/null || true
    CUTFS_PID=""
    python3 - "$b" <<'PY'
import os, sys
b = sys.argv[1]
got = {n: open(os.path.join(b, n), "rb").read() for n in sorted(os.listdir(b))}
want = {n: (n * 5000).encode() for n in "adefh"}
want["i"] = b"i" * 5000 + b"more"
assert set(got) == set(want), "names after the cut: %s, want %s" % (sorted(got), sorted(want))
for n in want:
    assert got[n] == want[n], "%s after the cut: %d bytes, %r..." % (n, len(got[n]), got[n][:8])
print("cutfs self-check: synced data and names kept, unsynced ones dropped")
PY
}

BASE_SEED="${CRASH_SEED:-$RANDOM}"
log "crash_powercut_fs: $ROUNDS power cuts through cutfs, seed $BASE_SEED, work dir $WORK"
start_all=$SECONDS
cuts=0
check_here "cutfs drops exactly what was not synced" t_cutfs_self_check || { summary crash-powercut-fs; exit 1; }
for round in $(seq 1 "$ROUNDS"); do
    t0=$SECONDS
    seed=$((BASE_SEED * 1000 + round))
    # Per round, from the seed: the cut kind (a third keep nothing), the cutfs seed, the moment.
    read -r sig cutfs_seed delay < <(python3 -c '
import random, sys
r = random.Random(int(sys.argv[1]))
print("USR1" if r.random() < 1 / 3 else "USR2", r.randrange(1 << 40), round(r.uniform(0.3, 2.5), 2))
' "$seed")
    cutlog="$WORK/cutfs.$round.log"
    log "round $round: workload seed $seed, cut SIG$sig after ${delay} s, cutfs seed $cutfs_seed"
    check_here "round $round: mount cutfs" mount_cutfs "$cutfs_seed" "$cutlog" || break
    if [[ $round -eq 1 ]]; then
        # logstorfs creates the store directory itself, through cutfs: a cut must not take the
        # new directory away with every confirmed file in it (its parent is synced).
        check_here "round $round: create the store on cutfs and mount it" \
            mount_fresh "$CUTMNT/store" "$MNT" "$SIZE" || break
    else
        check_here "round $round: mount the store through cutfs" mount_fresh "$CUTMNT/store" "$MNT" || break
    fi
    DAEMON_PID="$(daemon_pid "$MNT")" || { check_here "round $round: find the daemon" false; break; }
    rm -f "$WORK/ready"
    python3 "$WORKLOAD" run "$MNT" "$JOURNAL" "$seed" "$WORK/ready" > "$WORK/workload.$round.log" 2>&1 &
    WORKLOAD_PID=$!
    for _ in $(seq 1 600); do
        [[ -e "$WORK/ready" ]] || ! kill -0 "$WORKLOAD_PID" 2>/dev/null && break
        sleep 0.1
    done
    sleep "$delay"
    t_cut() {
        if ! kill -0 "$WORKLOAD_PID" 2>/dev/null; then
            echo "the workload ended before the cut:"; cat "$WORK/workload.$round.log"; return 1
        fi
        power_cut "$sig" "$cutlog"
    }
    check_here "round $round: power cut (SIG$sig) during the workload" t_cut || break
    cuts=$((cuts + 1))
    check "round $round: cutfs refuses writes after the cut" t_refuses
    check_here "round $round: kill -9 the daemon, detach both mounts" kill_and_detach "$DAEMON_PID" || break
    DAEMON_PID=""
    wait "$WORKLOAD_PID" || true
    WORKLOAD_PID=""
    t_workload_stopped() {
        cat "$WORK/workload.$round.log"
        grep -q "workload stopped: \[Errno \(107\|103\|5\|2\)\]" "$WORK/workload.$round.log"
    }
    check "round $round: the workload ran until the cut ($(grep -c '^C ' "$JOURNAL") steps confirmed so far)" \
        t_workload_stopped
    check "round $round: fsck clean right after the cut" fsck_clean "after the power cut"
    check_here "round $round: mount the store from the backing directory, without repair" \
        mount_fresh "$STORE" "$MNT" || break
    check "round $round: every confirmed step intact, nothing deleted came back" verify_mount
    check_here "round $round: clean unmount" unmount "$MNT" || break
    check "round $round: fsck clean after remount and unmount" fsck_clean "after remount"
    log "round $round took $((SECONDS - t0)) s"
done
log "$cuts power cuts in $((SECONDS - start_all)) s (seed $BASE_SEED); $(grep -c '^C ' "$JOURNAL") steps confirmed in all"
[[ $cuts -eq $ROUNDS ]] || check "all $ROUNDS power cuts made (only $cuts)" false
summary crash-powercut-fs
