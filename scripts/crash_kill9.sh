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

# The workload. Journal lines: "I <json>" (a step is about to start: the paths it may touch),
# "C <json>" (the step is durable: its fsyncs returned). Started with the journal of earlier
# rounds: it first adopts, as confirmed, whatever state the paths of an unconfirmed step have
# after the crash (the remount made that state durable), then runs steps until the mount dies.
cat > "$WORK/workload.py" <<'EOF'
import hashlib, json, os, random, sys

mnt, journal_path, seed, ready_path = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
rng = random.Random(seed)
DIRS = ["d0", "d1", "d2", "d1/sub", "d2/sub/deeper"]

def replay(path):
    model, inflight = {}, None
    for line in open(path):
        kind, _, body = line.rstrip("\n").partition(" ")
        op = json.loads(body)
        if kind == "I":
            inflight = op
        elif kind == "C":
            inflight = None
            if op["op"] == "put":
                model[op["path"]] = op["sha"]
            elif op["op"] == "delete":
                model.pop(op["path"], None)
            elif op["op"] == "rename":
                model[op["to"]] = model.pop(op["from"])
            elif op["op"] == "adopt":
                for p, h in op["paths"].items():
                    if h is None:
                        model.pop(p, None)
                    else:
                        model[p] = h
    return model, inflight

journal = open(journal_path, "a")
def log(kind, op):
    journal.write(kind + " " + json.dumps(op, sort_keys=True) + "\n")
    journal.flush()

def sha(b):
    return hashlib.sha256(b).hexdigest()

def fsync_dir(d):
    fd = os.open(os.path.join(mnt, d), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

def full(p):
    return os.path.join(mnt, p)

def start():
    for d in DIRS:
        os.makedirs(full(d), exist_ok=True)
    for d in ["", "d1", "d2", "d2/sub"]:
        fsync_dir(d)
    model, inflight = replay(journal_path)
    # Adopt the state of the unconfirmed step's paths, in one journal line.
    if inflight is not None:
        state = {}
        for p in inflight["paths"]:
            state[p] = sha(open(full(p), "rb").read()) if os.path.exists(full(p)) else None
        log("C", {"op": "adopt", "paths": state})
        model, _ = replay(journal_path)
    contents = {p: open(full(p), "rb").read() for p in model}
    for p, h in model.items():
        if sha(contents[p]) != h:
            sys.exit("workload: %s does not match the journal at start" % p)
    open(ready_path, "w").close()
    return contents

try:
    contents = start()
except OSError as e:
    print("workload stopped: %s" % e)
    sys.exit(0)

counter = [0]
def new_path():
    counter[0] += 1
    return "%s/f%d-%d" % (rng.choice(DIRS), seed, counter[0])

def data(n):
    return rng.randbytes(n)

def size():
    return rng.choice([0, 1, 100, 4095, 4096, 5000, 20000, 130000, 300000])

def write_file(p, body, mode):
    fd = os.open(full(p), mode, 0o644)
    try:
        os.write(fd, body) if body else None
        os.fsync(fd)
    finally:
        os.close(fd)

try:
    while True:
        files = sorted(contents)
        r = rng.random()
        if not files or (r < 0.3 and len(files) < 80):
            p = new_path()
            body = data(size())
            log("I", {"paths": [p]})
            write_file(p, body, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
            fsync_dir(os.path.dirname(p))
            contents[p] = body
            log("C", {"op": "put", "path": p, "sha": sha(body)})
        elif r < 0.45:
            p = rng.choice(files)
            body = data(size())
            log("I", {"paths": [p]})
            write_file(p, body, os.O_WRONLY | os.O_TRUNC)
            contents[p] = body
            log("C", {"op": "put", "path": p, "sha": sha(body)})
        elif r < 0.6:
            p = rng.choice(files)
            old = contents[p]
            off = rng.randrange(0, len(old) + 5000)
            patch = data(rng.choice([1, 10, 4096, 9000, 70000]))
            log("I", {"paths": [p]})
            fd = os.open(full(p), os.O_WRONLY)
            try:
                os.pwrite(fd, patch, off)
                os.fsync(fd)
            finally:
                os.close(fd)
            new = bytearray(old)
            if len(new) < off:
                new.extend(b"\0" * (off - len(new)))
            new[off:off + len(patch)] = patch
            contents[p] = bytes(new)
            log("C", {"op": "put", "path": p, "sha": sha(contents[p])})
        elif r < 0.68:
            p = rng.choice(files)
            n = rng.randrange(0, len(contents[p]) + 1)
            log("I", {"paths": [p]})
            os.truncate(full(p), n)
            fd = os.open(full(p), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            contents[p] = contents[p][:n]
            log("C", {"op": "put", "path": p, "sha": sha(contents[p])})
        elif r < 0.85:
            src = rng.choice(files)
            if rng.random() < 0.3 and len(files) > 1:
                dst = rng.choice([f for f in files if f != src])   # rename over a file
            else:
                dst = new_path()
            log("I", {"paths": [src, dst]})
            os.rename(full(src), full(dst))
            for d in {os.path.dirname(src), os.path.dirname(dst)}:
                fsync_dir(d)
            contents[dst] = contents.pop(src)
            log("C", {"op": "rename", "from": src, "to": dst})
        else:
            p = rng.choice(files)
            log("I", {"paths": [p]})
            os.unlink(full(p))
            fsync_dir(os.path.dirname(p))
            del contents[p]
            log("C", {"op": "delete", "path": p})
except OSError as e:
    # The daemon was killed under us (ENOTCONN and friends): the round is over.
    print("workload stopped: %s" % e)
EOF

# Verifies the mount against the journal: every confirmed file with exact contents, nothing
# else but the paths of the one unconfirmed step. Prints what differs.
cat > "$WORK/verify.py" <<'EOF'
import hashlib, json, os, sys
mnt, journal_path = sys.argv[1], sys.argv[2]
model, inflight, gone = {}, None, set()
steps = 0
for line in open(journal_path):
    kind, _, body = line.rstrip("\n").partition(" ")
    op = json.loads(body)
    if kind == "I":
        inflight = op
        continue
    inflight = None
    steps += 1
    if op["op"] == "put":
        model[op["path"]] = op["sha"]; gone.discard(op["path"])
    elif op["op"] == "delete":
        model.pop(op["path"], None); gone.add(op["path"])
    elif op["op"] == "rename":
        model[op["to"]] = model.pop(op["from"]); gone.discard(op["to"]); gone.add(op["from"])
    elif op["op"] == "adopt":
        for p, h in op["paths"].items():
            if h is None:
                model.pop(p, None)
            else:
                model[p] = h; gone.discard(p)
loose = set(inflight["paths"]) if inflight else set()
bad = 0
for p, h in sorted(model.items()):
    if p in loose:
        continue
    try:
        got = hashlib.sha256(open(os.path.join(mnt, p), "rb").read()).hexdigest()
    except OSError as e:
        print("confirmed file %s: %s" % (p, e)); bad += 1; continue
    if got != h:
        print("confirmed file %s: contents differ" % p); bad += 1
present = set()
for root, dirs, files in os.walk(mnt):
    for f in files:
        present.add(os.path.relpath(os.path.join(root, f), mnt))
for p in sorted(present - set(model) - loose):
    why = "deleted or renamed away, and confirmed" if p in gone else "never confirmed"
    print("file %s is present: %s" % (p, why)); bad += 1
print("%d confirmed steps, %d files checked, %d unconfirmed path(s) at the crash, %d differences"
      % (steps, len(model), len(loose), bad))
sys.exit(1 if bad else 0)
EOF

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

verify_mount() { python3 "$WORK/verify.py" "$MNT" "$JOURNAL"; }

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
    python3 "$WORK/workload.py" "$MNT" "$JOURNAL" "$((BASE_SEED * 1000 + round))" "$WORK/ready" \
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
