#!/usr/bin/env bash
# What mirroring to S3 (`mount --remote`, issue 21) costs and what a restore takes.
#
# ROUNDS alternating rounds (local first in odd rounds, remote first in even ones), each system
# on a fresh store (`--create --size 2G`) on the host file system; the workloads of
# scripts/bench.sh's peer table, in smaller sizes:
#   seq      SEQ_MIB (512) MiB of random data (pre-generated once in /dev/shm) written with
#            dd bs=1M conv=fsync, MiB/s
#   rand     RAND_OPS (20000) 4 KiB pwrites at random page offsets of that file, then fsync,
#            writes/s
#   small    SMALL_FILES (5000) files of 4 KiB (distinct random data) created, written,
#            closed by one process in one directory, then sync(), files/s
#   meta     META_FILES (2000) empty files created in one directory, then stat'ed (warm), then
#            unlinked, files/s for each
#   append   APPEND_OPS (300) appends of 4 KiB to one file, each followed by fsync, ops/s
#   umount   `logstorfs umount` after both (for --remote: the last upload included), s
# For the --remote store, after the umount: PUT requests and bytes uploaded (STORE/remote.json:
# objects_put, bytes_put), per GiB the workloads wrote; the objects and bytes under the prefix
# (a ListObjects of the bucket); then the store directory is removed and
# `mount --daemon --remote URL EMPTY_DIR MNT` is timed until the mount point answers, with
# the objects and bytes the restore fetched (the "restored ..." line of its log); the restored
# files are checked against what was written (cmp of the big file, count of the small ones).
#
# Then one round (once only) of a store of about 1M records: BIG_FILES (330000) files of
# 100 B in 330 directories by 4 parallel creators (as scripts/bench.sh fills its mount
# store), mirrored, unmounted, remounted once in place (the local mount time, for comparison),
# then removed and restored into an empty directory: time until the mount answers, objects
# and bytes fetched.
#
# The gateway is the one the AWS_* environment names (bucket LOGSTORFS_S3_BUCKET); with
# AWS_ENDPOINT unset, scripts/ceph.sh starts one in CEPH_DIR (default /tmp/mirrorbench-ceph)
# and stops it at exit. Every run uses its own prefix mirrorbench-<time>-<pid>/ in the bucket.
#
# Env: LOGSTORFS (binary; default $CARGO_TARGET_DIR/release/logstorfs, built with --features s3),
#      ROUNDS (3), REMOTE_LAG (5), SEQ_MIB (512), RAND_OPS (20000), SMALL_FILES (5000),
#      META_FILES (2000), APPEND_OPS (300), BIG_FILES (330000;
#      0 skips the big store), WORK (a directory on the host file system; default a new one
#      under /var/tmp), OUT (also write the result tables, as markdown, to this file).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOGSTORFS="${LOGSTORFS:-${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/logstorfs}"
ROUNDS="${ROUNDS:-3}"
LAG="${REMOTE_LAG:-5}"
SEQ_MIB="${SEQ_MIB:-512}"
SMALL_FILES="${SMALL_FILES:-5000}"
RAND_OPS="${RAND_OPS:-20000}"
META_FILES="${META_FILES:-2000}"
APPEND_OPS="${APPEND_OPS:-300}"
SMALL_BYTES=4096
BIG_FILES="${BIG_FILES:-330000}"
BIG_DIRS=330
BIG_PROCS=4
BIG_FILE_BYTES=100
OUT="${OUT:-}"
export CEPH_DIR="${CEPH_DIR:-/tmp/mirrorbench-ceph}"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'mirror_bench.sh: %s\n' "$*" >&2; exit 1; }

[[ -x "$LOGSTORFS" ]] || die "no logstorfs at $LOGSTORFS (cargo build --release --features s3)"
command -v python3 >/dev/null || die "python3 is required"
"$LOGSTORFS" mount --help 2>&1 | grep -q -- '--remote' || die "$LOGSTORFS was built without --features s3"

OWN_WORK=0
if [[ -z "${WORK:-}" ]]; then WORK="$(mktemp -d /var/tmp/mirrorbench.XXXXXX)"; OWN_WORK=1; fi
mkdir -p "$WORK"
RAND="/dev/shm/mirrorbench-rand.$$"
STARTED_CEPH=0
MOUNTED=()

cleanup() {
    local rc=$? m
    set +e
    for m in "${MOUNTED[@]}"; do
        if mountpoint -q "$m"; then
            "$LOGSTORFS" umount "$m" >/dev/null 2>&1 || fusermount3 -u "$m" 2>/dev/null || fusermount3 -uz "$m" 2>/dev/null
        fi
    done
    rm -f "$RAND"
    if [[ $OWN_WORK == 1 ]]; then rm -rf "$WORK"; else rm -rf "$WORK"/r[0-9]* "$WORK/big"; fi
    if [[ $STARTED_CEPH == 1 ]]; then "$REPO_ROOT/scripts/ceph.sh" down >/dev/null 2>&1; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ -z "${AWS_ENDPOINT:-}" ]]; then
    log "AWS_ENDPOINT unset: starting a gateway with scripts/ceph.sh in $CEPH_DIR"
    STARTED_CEPH=1
    CEPH_MEMSTORE_BYTES="${CEPH_MEMSTORE_BYTES:-$((8 << 30))}" "$REPO_ROOT/scripts/ceph.sh" up > "$WORK/ceph.env"
    # shellcheck disable=SC1091
    source "$WORK/ceph.env"
fi
: "${LOGSTORFS_S3_BUCKET:?LOGSTORFS_S3_BUCKET must name the bucket}"
BUCKET="$LOGSTORFS_S3_BUCKET"
RUN_PREFIX="mirrorbench-$(date -u +%Y%m%dT%H%M%S)-$$"

now() { date +%s.%N; }
secs() { python3 -c "import sys; print('%.3f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$1" "$2"; }

# mount_wait MNT CMD...: run the mount command CMD, then wait until MNT answers (its device
# differs from its parent's); prints nothing, returns 1 after 120 s.
mount_wait() {
    local mnt="$1" pdev; shift
    mkdir -p "$mnt"
    pdev="$(stat -c %d "$(dirname "$mnt")")"
    local rc=0
    "$@" </dev/null >"$WORK/last_mount.out" 2>&1 || rc=$?
    cat "$WORK/last_mount.out" >> "$WORK/mount.out"
    [[ $rc == 0 ]] || { tail -n 20 "$WORK/last_mount.out" >&2; return 1; }
    MOUNTED+=("$mnt")
    for _ in $(seq 1 12000); do
        [[ "$(stat -c %d "$mnt" 2>/dev/null)" != "$pdev" ]] && return 0
        sleep 0.01
    done
    echo "$mnt does not answer 120 s after the mount command returned" >&2
    return 1
}
umount_store() { "$LOGSTORFS" umount "$1" >>"$WORK/mount.out" 2>&1; }

# s3_list PREFIX: "OBJECTS BYTES" under PREFIX in the bucket
s3_list() { python3 "$REPO_ROOT/scripts/s3_list.py" "$BUCKET" "$1"; }

remote_field() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$1/remote.json" "$2"; }

# restored_line STORE: "OBJECTS BYTES" from the restore's log line
restored_line() {
    local line
    line="$(cat "$1/logstorfs.log" "$WORK/last_mount.out" 2>/dev/null | grep -E 'restored .* objects, [0-9]+ bytes fetched' | tail -n 1)"
    [[ -n "$line" ]] || { echo "no 'restored ...' line in $1/logstorfs.log or the mount's output" >&2; echo "ERR ERR"; return 0; }
    sed -E 's/.* ([0-9]+) objects, ([0-9]+) bytes fetched.*/\1 \2/' <<< "$line"
}

cat > "$WORK/small.py" <<'EOF'
import os, sys, time
d, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
data = os.urandom(n * size)           # distinct random content per file, made before the clock
os.mkdir(d)
t = time.perf_counter()
for i in range(n):
    fd = os.open(os.path.join(d, "f%06d" % i), os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644)
    os.write(fd, data[i * size:(i + 1) * size])
    os.close(fd)
os.sync()
print("%.1f" % (n / (time.perf_counter() - t)))
EOF

cat > "$WORK/rand.py" <<'EOF'
import os, random, sys, time
path, ops = sys.argv[1], int(sys.argv[2])
pages = os.path.getsize(path) // 4096
rng = random.Random(7)
offsets = [rng.randrange(pages) * 4096 for _ in range(ops)]
data = os.urandom(4096)
fd = os.open(path, os.O_WRONLY)
t = time.perf_counter()
for off in offsets:
    os.pwrite(fd, data, off)
os.fsync(fd)
os.close(fd)
print("%.1f" % (ops / (time.perf_counter() - t)))
EOF

cat > "$WORK/meta.py" <<'EOF'
import os, sys, time
d, n = sys.argv[1], int(sys.argv[2])
os.mkdir(d)
names = [os.path.join(d, "m%06d" % i) for i in range(n)]
rates = []
for step in (lambda p: os.close(os.open(p, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644)),
             os.stat, os.unlink):
    t = time.perf_counter()
    for p in names:
        step(p)
    rates.append("%.1f" % (n / (time.perf_counter() - t)))
print(" ".join(rates))
EOF

cat > "$WORK/append.py" <<'EOF'
import os, sys, time
path, n = sys.argv[1], int(sys.argv[2])
data = os.urandom(4096)
fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o644)
t = time.perf_counter()
for _ in range(n):
    os.write(fd, data)
    os.fsync(fd)
os.close(fd)
print("%.1f" % (n / (time.perf_counter() - t)))
EOF

count_files() { python3 -c "
import os, sys
print(sum(len(os.listdir(os.path.join(sys.argv[1], e))) for e in os.listdir(sys.argv[1])))" "$1"; }

log "random data: $SEQ_MIB MiB in $RAND"
head -c "$((SEQ_MIB << 20))" /dev/urandom > "$RAND"
# Bytes the workloads write per store (metadata aside).
WRITTEN=$(((SEQ_MIB << 20) + (RAND_OPS + SMALL_FILES + APPEND_OPS) * 4096))
log "logstorfs $LOGSTORFS, gateway $AWS_ENDPOINT, s3://$BUCKET/$RUN_PREFIX/, work in $WORK"

declare -A R    # R[kind,round,metric]
# one_store KIND ROUND: the workloads on a fresh store of KIND (local|remote)
one_store() {
    local kind="$1" r="$2" dir="$WORK/r$2-$1" store mnt url="" t0 t1 args
    store="$dir/store"; mnt="$dir/mnt"
    mkdir -p "$store"
    args=(mount --daemon --create --size 2G)
    if [[ $kind == remote ]]; then
        url="s3://$BUCKET/$RUN_PREFIX/r$r"
        args+=(--remote "$url" --remote-lag "$LAG")
    fi
    mount_wait "$mnt" "$LOGSTORFS" "${args[@]}" "$store" "$mnt"
    t0=$(now)
    dd if="$RAND" of="$mnt/seq" bs=1M count="$SEQ_MIB" conv=fsync status=none
    t1=$(now)
    R[$kind,$r,seq]="$(python3 -c "print('%.1f' % ($SEQ_MIB / ($t1 - $t0)))")"
    R[$kind,$r,rand]="$(python3 "$WORK/rand.py" "$mnt/seq" "$RAND_OPS")"
    cp "$mnt/seq" "$WORK/seq-written"   # what the restore must give back
    R[$kind,$r,small]="$(python3 "$WORK/small.py" "$mnt/small" "$SMALL_FILES" "$SMALL_BYTES")"
    local meta; read -r -a meta <<< "$(python3 "$WORK/meta.py" "$mnt/meta" "$META_FILES")"
    R[$kind,$r,create]="${meta[0]}"; R[$kind,$r,stat]="${meta[1]}"; R[$kind,$r,unlink]="${meta[2]}"
    R[$kind,$r,append]="$(python3 "$WORK/append.py" "$mnt/append" "$APPEND_OPS")"
    t0=$(now); umount_store "$mnt"; t1=$(now)
    R[$kind,$r,umount]="$(secs "$t0" "$t1")"
    log "round $r $kind: seq ${R[$kind,$r,seq]} MiB/s, rand ${R[$kind,$r,rand]}/s, small ${R[$kind,$r,small]} files/s, create/stat/unlink ${R[$kind,$r,create]}/${R[$kind,$r,stat]}/${R[$kind,$r,unlink]} /s, append ${R[$kind,$r,append]}/s, umount ${R[$kind,$r,umount]} s"
    [[ $kind == remote ]] || { rm -rf "$dir"; return 0; }

    local puts bytes err listing restored new="$dir/restored"
    puts="$(remote_field "$store" objects_put)"; bytes="$(remote_field "$store" bytes_put)"
    err="$(remote_field "$store" last_error)"
    [[ "$err" == None ]] || log "round $r: remote.json has last_error: $err"
    R[$kind,$r,puts]="$puts"; R[$kind,$r,bytes_put]="$bytes"
    R[$kind,$r,puts_gib]="$(python3 -c "print('%.1f' % ($puts / ($WRITTEN / 2**30)))")"
    R[$kind,$r,mib_gib]="$(python3 -c "print('%.1f' % ($bytes / 2**20 / ($WRITTEN / 2**30)))")"
    listing="$(s3_list "$RUN_PREFIX/r$r/")"
    R[$kind,$r,bucket_objs]="${listing% *}"; R[$kind,$r,bucket_bytes]="${listing#* }"
    rm -rf "$store"; mkdir -p "$new"
    t0=$(now)
    mount_wait "$mnt" "$LOGSTORFS" mount --daemon --remote "$url" "$new" "$mnt"
    t1=$(now)
    R[$kind,$r,restore]="$(secs "$t0" "$t1")"
    restored="$(restored_line "$new")"
    R[$kind,$r,fetch_objs]="${restored% *}"; R[$kind,$r,fetch_bytes]="${restored#* }"
    local ok=yes n
    cmp -s "$WORK/seq-written" "$mnt/seq" || { ok=no; log "round $r: the restored seq file differs from what was written"; }
    [[ $(stat -c %s "$mnt/append") == $((APPEND_OPS * 4096)) ]] || { ok=no; log "round $r: the restored append file has the wrong size"; }
    n="$(find "$mnt/small" -type f | wc -l)"
    [[ $n == "$SMALL_FILES" ]] || { ok=no; log "round $r: $n small files restored, $SMALL_FILES written"; }
    R[$kind,$r,verified]="$ok"
    umount_store "$mnt"
    log "round $r remote: ${puts} PUTs, ${bytes} B put; bucket ${listing}; restore ${R[$kind,$r,restore]} s, fetched ${restored}; verified $ok"
    rm -rf "$dir"
}

UPTIME_BEFORE="$(uptime)"
for r in $(seq 1 "$ROUNDS"); do
    if (( r % 2 )); then one_store local "$r"; one_store remote "$r"
    else one_store remote "$r"; one_store local "$r"; fi
done

# The big store, once.
BIG=()
if [[ $BIG_FILES -gt 0 ]]; then
    dir="$WORK/big"; store="$dir/store"; mnt="$dir/mnt"; url="s3://$BUCKET/$RUN_PREFIX/big"
    mkdir -p "$store"
    mount_wait "$mnt" "$LOGSTORFS" mount --daemon --create --size 4G --remote "$url" --remote-lag "$LAG" "$store" "$mnt"
    log "big store: filling $BIG_FILES files of $BIG_FILE_BYTES B in $BIG_DIRS dirs by $BIG_PROCS creators"
    fill_rate="$(python3 "$REPO_ROOT/scripts/fill_store.py" "$mnt" "$BIG_FILES" "$BIG_DIRS" "$BIG_PROCS" "$BIG_FILE_BYTES")"
    t0=$(now); umount_store "$mnt"; t1=$(now); big_umount="$(secs "$t0" "$t1")"
    big_puts="$(remote_field "$store" objects_put)"; big_bytes="$(remote_field "$store" bytes_put)"
    big_err="$(remote_field "$store" last_error)"
    [[ "$big_err" == None ]] || log "big store: remote.json has last_error: $big_err"
    store_du="$(du -sb "$store" | cut -f1)"
    t0=$(now); mount_wait "$mnt" "$LOGSTORFS" mount --daemon --remote "$url" --remote-lag "$LAG" "$store" "$mnt"; t1=$(now)
    big_remount="$(secs "$t0" "$t1")"
    umount_store "$mnt"
    big_list="$(s3_list "$RUN_PREFIX/big/")"
    rm -rf "$store"; mkdir -p "$dir/restored"
    t0=$(now); mount_wait "$mnt" "$LOGSTORFS" mount --daemon --remote "$url" "$dir/restored" "$mnt"; t1=$(now)
    big_restore="$(secs "$t0" "$t1")"
    big_fetched="$(restored_line "$dir/restored")"
    big_count="$(count_files "$mnt")"
    umount_store "$mnt"
    log "big store: fill $fill_rate files/s, umount $big_umount s, $big_puts PUTs, $big_bytes B put, local remount $big_remount s, restore $big_restore s, fetched $big_fetched, $big_count files"
    BIG=("$fill_rate" "$big_umount" "$big_puts" "$big_bytes" "$store_du" "$big_list" "$big_remount" "$big_restore" "$big_fetched" "$big_count")
fi
UPTIME_AFTER="$(uptime)"

# ---- tables ----
vals() { local k="$1" m="$2" r s=""; for r in $(seq 1 "$ROUNDS"); do s+="${R[$k,$r,$m]} "; done; echo "$s"; }
ratios() { local m="$1" r s=""; for r in $(seq 1 "$ROUNDS"); do s+="$(python3 -c "print('%.3f' % (${R[remote,$r,$m]} / ${R[local,$r,$m]}))") "; done; echo "$s"; }
stat3() { # stat3 "V1 V2 ...": "median (min..max)"
    # shellcheck disable=SC2086
    python3 -c "
import statistics, sys
v = [float(x) for x in sys.argv[1:]]
f = lambda x: ('%.0f' % x) if abs(x) >= 1000 else ('%.3g' % x if abs(x) < 10 else '%.1f' % x)
print('%s (%s..%s)' % (f(statistics.median(v)), f(min(v)), f(max(v))))" $1
}
{
echo "Rounds: $ROUNDS (alternating order), --remote-lag $LAG s; each store fresh (--create --size 2G) on the host file system; median (min..max) over the rounds."
echo "Written per store: $SEQ_MIB MiB sequential, $RAND_OPS random 4 KiB overwrites of it, $SMALL_FILES x $SMALL_BYTES B files, $META_FILES empty files created and removed, $APPEND_OPS fsynced 4 KiB appends = $(python3 -c "print('%.3f' % ($WRITTEN / 2**30))") GiB."
echo
echo "| workload | unit | local | --remote | ratio remote/local |"
echo "|---|---|---|---|---|"
echo "| sequential write ${SEQ_MIB} MiB + fsync (dd bs=1M) | MiB/s | $(stat3 "$(vals local seq)") | $(stat3 "$(vals remote seq)") | $(stat3 "$(ratios seq)") |"
echo "| random 4 KiB overwrites x $RAND_OPS, then fsync | writes/s | $(stat3 "$(vals local rand)") | $(stat3 "$(vals remote rand)") | $(stat3 "$(ratios rand)") |"
echo "| small files: $SMALL_FILES x 4 KiB, then sync | files/s | $(stat3 "$(vals local small)") | $(stat3 "$(vals remote small)") | $(stat3 "$(ratios small)") |"
echo "| create $META_FILES empty files | files/s | $(stat3 "$(vals local create)") | $(stat3 "$(vals remote create)") | $(stat3 "$(ratios create)") |"
echo "| stat them (the kernel's cache warm) | files/s | $(stat3 "$(vals local stat)") | $(stat3 "$(vals remote stat)") | $(stat3 "$(ratios stat)") |"
echo "| unlink them | files/s | $(stat3 "$(vals local unlink)") | $(stat3 "$(vals remote unlink)") | $(stat3 "$(ratios unlink)") |"
echo "| $APPEND_OPS x (4 KiB append + fsync) | ops/s | $(stat3 "$(vals local append)") | $(stat3 "$(vals remote append)") | $(stat3 "$(ratios append)") |"
echo "| logstorfs umount after all of them | s | $(stat3 "$(vals local umount)") | $(stat3 "$(vals remote umount)") | $(stat3 "$(ratios umount)") |"
echo
echo "Per round: $(for r in $(seq 1 "$ROUNDS"); do printf 'r%s seq %s/%s MiB/s, small %s/%s files/s; ' "$r" "${R[local,$r,seq]}" "${R[remote,$r,seq]}" "${R[local,$r,small]}" "${R[remote,$r,small]}"; done)(local/remote)"
echo
echo "| --remote store, after umount | median (min..max) | per round |"
echo "|---|---|---|"
echo "| PUT requests (objects_put) | $(stat3 "$(vals remote puts)") | $(vals remote puts)|"
echo "| PUT requests per GiB written | $(stat3 "$(vals remote puts_gib)") | $(vals remote puts_gib)|"
echo "| bytes uploaded (bytes_put), MiB | $(stat3 "$(for r in $(seq 1 "$ROUNDS"); do python3 -c "print('%.1f' % (${R[remote,$r,bytes_put]} / 2**20))"; done | tr '\n' ' ')") | $(vals remote bytes_put)B |"
echo "| MiB uploaded per GiB written | $(stat3 "$(vals remote mib_gib)") | $(vals remote mib_gib)|"
echo "| objects under the prefix (ListObjects) | $(stat3 "$(vals remote bucket_objs)") | $(vals remote bucket_objs)|"
echo "| bytes under the prefix, MiB | $(stat3 "$(for r in $(seq 1 "$ROUNDS"); do python3 -c "print('%.1f' % (${R[remote,$r,bucket_bytes]} / 2**20))"; done | tr '\n' ' ')") | $(vals remote bucket_bytes)B |"
echo "| restore into an empty dir until the mount answers, s | $(stat3 "$(vals remote restore)") | $(vals remote restore)|"
echo "| objects fetched by the restore | $(stat3 "$(vals remote fetch_objs)") | $(vals remote fetch_objs)|"
echo "| bytes fetched by the restore, MiB | $(stat3 "$(for r in $(seq 1 "$ROUNDS"); do python3 -c "print('%.1f' % (${R[remote,$r,fetch_bytes]} / 2**20))"; done | tr '\n' ' ')") | $(vals remote fetch_bytes)B |"
echo "| restored data equal to what was written | | $(vals remote verified)|"
if [[ ${#BIG[@]} -gt 0 ]]; then
    echo
    echo "Store of about 1M records, one round only: $BIG_FILES files of $BIG_FILE_BYTES B in $BIG_DIRS directories by $BIG_PROCS parallel creators (as scripts/bench.sh's mount store), --size 4G, --remote-lag $LAG."
    echo
    echo "| big store | value |"
    echo "|---|---|"
    echo "| fill rate with --remote (then sync) | ${BIG[0]} files/s |"
    echo "| logstorfs umount (last upload included) | ${BIG[1]} s |"
    echo "| PUT requests / bytes uploaded (remote.json) | ${BIG[2]} / ${BIG[3]} B ($(python3 -c "print('%.1f' % (${BIG[3]} / 2**20))") MiB) |"
    echo "| store directory size (du -sb) | ${BIG[4]} B ($(python3 -c "print('%.1f' % (${BIG[4]} / 2**20))") MiB) |"
    echo "| objects / bytes under the prefix (ListObjects, after a remount) | ${BIG[5]% *} / ${BIG[5]#* } B |"
    echo "| local remount of the store, until the mount answers | ${BIG[6]} s |"
    echo "| restore into an empty dir, until the mount answers | ${BIG[7]} s |"
    echo "| objects / bytes fetched by the restore | ${BIG[8]% *} / ${BIG[8]#* } B |"
    echo "| files found after the restore | ${BIG[9]} of $BIG_FILES |"
fi
echo
echo "uptime before: $UPTIME_BEFORE"
echo "uptime after: $UPTIME_AFTER"
} | tee "$WORK/tables.md"
[[ -z "$OUT" ]] || cp "$WORK/tables.md" "$OUT"
