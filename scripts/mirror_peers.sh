#!/usr/bin/env bash
# logstorfs --remote against S3 file systems on the same gateway (issue 21): s3fs-fuse and
# `rclone mount`, on scripts/mirror_bench.sh's workloads plus scripts/bench.sh's fsync_append.
#
# Systems (SYSTEMS, default "logstorfs logstorfs-sync s3fs rclone"), each on its own fresh
# prefix of the same bucket in every round:
#   logstorfs       `logstorfs mount --create --size 2G --remote s3://BUCKET/P --remote-lag LAG`,
#                   the store on the host file system (WORK). fsync: durable in the local store;
#                   the bucket gets it at the next round (every LAG s) or at unmount.
#   logstorfs-sync  the same with --remote-sync: each fsync (and sync at unmount) returns once
#                   the bucket's newest manifest holds its data.
#   s3fs            `s3fs BUCKET MNT -o use_path_request_style,url=ENDPOINT,tmpdir=WORK/..`
#                   (s3fs 1.90 defaults otherwise: no local cache, 10 MB multipart parts, 5 in
#                   parallel). fsync and close(2) of a written file upload the whole file, and
#                   return after the PUT (or multipart upload) completes.
#   rclone          `rclone mount REMOTE:BUCKET/P MNT --vfs-cache-mode writes --cache-dir WORK/..`
#                   (rclone's defaults otherwise: --vfs-write-back 5s, --transfers 4). Writes go
#                   to a local cache file; fsync syncs that cache file only; the upload starts
#                   5 s after the last close, in the background. `writes` is the least caching
#                   mode with which ordinary POSIX writes work (mode `off` refuses a write that
#                   is not sequential from offset 0, and O_APPEND/O_RDWR opens); `full` adds
#                   read caching, which these write workloads do not use. At unmount rclone
#                   exits without waiting for queued uploads (they wait in the cache dir for
#                   the next mount), so for rclone "drain" polls the bucket until it holds
#                   every file before unmounting.
#
# Workloads, in this order on each system (ROUNDS rounds; the systems' order rotates by one
# every round, so load from other processes falls on each system in turn):
#   seq     SEQ_MIB (512) MiB of random data (pre-generated in /dev/shm) with dd bs=1M
#           conv=fsync, MiB/s
#   small   SMALL_FILES (5000) files of 4 KiB (distinct random data) created, written, closed
#           in one directory by one process, then sync(), files/s
#   append  APPEND_OPS (300) appends of 4 KiB to one file, each followed by fsync, ops/s
#   drain   from the end of the workloads until the bucket holds everything and the mount is
#           gone: logstorfs and s3fs: the unmount (logstorfs umount; fusermount3 -u and s3fs's
#           exit); rclone: polls of ListObjects (every 0.2 s) until the prefix holds all files
#           with their full sizes, then the unmount; s
# After the drain, the objects and bytes under the system's prefix (ListObjects); then the
# prefix is deleted (`rclone purge`) so that the memstore gateway's RAM is not exhausted.
# Requests: the gateway's access log (RGW_LOG, default CEPH_DIR/log/client.rgw.log, radosgw's
# "beast:" lines at its default debug level) from the mount to the end of the drain, counted by
# method (the script's own ListObjects polls, user agent Python-urllib, left out); n/a when the
# log is not readable (a gateway not started by scripts/ceph.sh).
# Ratios are logstorfs/peer speeds (> 1: logstorfs faster; for drain, peer time / logstorfs
# time), one per round; the tables give median (min..max) over the rounds.
#
# The gateway: as scripts/mirror_bench.sh (the AWS_* environment, or with AWS_ENDPOINT unset a
# cluster of scripts/ceph.sh in CEPH_DIR, default /tmp/mirrorpeers-ceph, stopped at exit).
# Env: LOGSTORFS, ROUNDS (3), REMOTE_LAG (5), SEQ_MIB, SMALL_FILES, APPEND_OPS, SYSTEMS, WORK,
# OUT (also write the tables, as markdown, to this file). Needs s3fs and rclone (Debian
# packages s3fs, rclone) and fusermount3.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOGSTORFS="${LOGSTORFS:-${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/logstorfs}"
ROUNDS="${ROUNDS:-3}"
LAG="${REMOTE_LAG:-5}"
SEQ_MIB="${SEQ_MIB:-512}"
SMALL_FILES="${SMALL_FILES:-5000}"
SMALL_BYTES=4096
APPEND_OPS="${APPEND_OPS:-300}"
SYSTEMS="${SYSTEMS:-logstorfs logstorfs-sync s3fs rclone}"
OUT="${OUT:-}"
export CEPH_DIR="${CEPH_DIR:-/tmp/mirrorpeers-ceph}"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'mirror_peers.sh: %s\n' "$*" >&2; exit 1; }

read -r -a SYS <<< "$SYSTEMS"
for s in "${SYS[@]}"; do
    case "$s" in
        logstorfs|logstorfs-sync)
            [[ -x "$LOGSTORFS" ]] || die "no logstorfs at $LOGSTORFS (cargo build --release --features s3)"
            "$LOGSTORFS" mount --help 2>&1 | grep -q -- '--remote-sync' || die "$LOGSTORFS was built without --features s3" ;;
        s3fs) command -v s3fs >/dev/null || die "s3fs is not installed (apt-get install --no-install-recommends s3fs)" ;;
        rclone) command -v rclone >/dev/null || die "rclone is not installed (apt-get install --no-install-recommends rclone)" ;;
        *) die "unknown system $s" ;;
    esac
done
command -v fusermount3 >/dev/null || die "fusermount3 is required"

OWN_WORK=0
if [[ -z "${WORK:-}" ]]; then WORK="$(mktemp -d /var/tmp/mirrorpeers.XXXXXX)"; OWN_WORK=1; fi
mkdir -p "$WORK"
RAND="/dev/shm/mirrorpeers-rand.$$"
STARTED_CEPH=0
MOUNTED=()      # mount points
PIDS=()         # peer daemons (run in the foreground of a background job: their pids are ours)

unmount_any() { # unmount_any MNT: whatever is mounted there
    local m="$1"
    mountpoint -q "$m" || return 0
    if [[ -f "$m.logstorfs" ]]; then "$LOGSTORFS" umount "$m" >/dev/null 2>&1 && return 0; fi
    fusermount3 -u "$m" 2>/dev/null || fusermount3 -uz "$m" 2>/dev/null || true
}
cleanup() {
    local rc=$? m p
    set +e
    for m in "${MOUNTED[@]}"; do unmount_any "$m"; done
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    rm -f "$RAND"
    if [[ $OWN_WORK == 1 ]]; then rm -rf "$WORK"; else rm -rf "$WORK"/r[0-9]*; fi
    if [[ $STARTED_CEPH == 1 ]]; then "$REPO_ROOT/scripts/ceph.sh" down >/dev/null 2>&1; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ -z "${AWS_ENDPOINT:-}" ]]; then
    log "AWS_ENDPOINT unset: starting a gateway with scripts/ceph.sh in $CEPH_DIR"
    STARTED_CEPH=1
    CEPH_MEMSTORE_BYTES="${CEPH_MEMSTORE_BYTES:-$((6 << 30))}" "$REPO_ROOT/scripts/ceph.sh" up > "$WORK/ceph.env"
    # shellcheck disable=SC1091
    source "$WORK/ceph.env"
fi
: "${LOGSTORFS_S3_BUCKET:?LOGSTORFS_S3_BUCKET must name the bucket}"
BUCKET="$LOGSTORFS_S3_BUCKET"
RGW_LOG="${RGW_LOG:-$CEPH_DIR/log/client.rgw.log}"
RUN_PREFIX="mirrorpeers-$(date -u +%Y%m%dT%H%M%S)-$$"

# rclone's remote, from the environment only (no config file is read or written). Go's AWS SDK
# refuses a custom CA bundle with rclone's HTTP transport, and the endpoint is plain HTTP, so
# AWS_CA_BUNDLE is dropped for rclone.
RCLONE=(env -u AWS_CA_BUNDLE RCLONE_CONFIG_GW_TYPE=s3 RCLONE_CONFIG_GW_PROVIDER=Ceph
        RCLONE_CONFIG_GW_ENDPOINT="$AWS_ENDPOINT" RCLONE_CONFIG_GW_ACCESS_KEY_ID="$AWS_ACCESS_KEY_ID"
        RCLONE_CONFIG_GW_SECRET_ACCESS_KEY="$AWS_SECRET_ACCESS_KEY" RCLONE_CONFIG_GW_REGION="${AWS_REGION:-us-east-1}"
        RCLONE_CONFIG_GW_FORCE_PATH_STYLE=true rclone --config /dev/null)
printf '%s:%s\n' "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" > "$WORK/s3fs.passwd"
chmod 600 "$WORK/s3fs.passwd"

now() { date +%s.%N; }
secs() { python3 -c "import sys; print('%.3f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$1" "$2"; }

# s3_list PREFIX: "OBJECTS BYTES" under PREFIX in the bucket
s3_list() { python3 "$REPO_ROOT/scripts/s3_list.py" "$BUCKET" "$1"; }

# mount_wait MNT: wait until MNT answers (its device differs from its parent's), 120 s at most
mount_wait() {
    local mnt="$1" pdev
    pdev="$(stat -c %d "$(dirname "$mnt")")"
    for _ in $(seq 1 12000); do
        [[ "$(stat -c %d "$mnt" 2>/dev/null)" != "$pdev" ]] && return 0
        sleep 0.01
    done
    die "$mnt does not answer 120 s after its mount command"
}

# sys_mount SYSTEM DIR ROUND: mounts SYSTEM on DIR/mnt; sets WD (the workloads' directory),
# KEY (the bucket prefix the workloads' data goes under) and DPID (the peer daemon's pid)
sys_mount() {
    local s="$1" dir="$2" r="$3" mnt="$2/mnt" url
    mkdir -p "$mnt"; MOUNTED+=("$mnt"); DPID=""
    KEY="$RUN_PREFIX/r$r-$s/"
    case "$s" in
        logstorfs|logstorfs-sync)
            url="s3://$BUCKET/$RUN_PREFIX/r$r-$s"
            local extra=(); [[ $s == logstorfs-sync ]] && extra=(--remote-sync)
            mkdir -p "$dir/store"; touch "$mnt.logstorfs"
            "$LOGSTORFS" mount --daemon --create --size 2G --remote "$url" --remote-lag "$LAG" \
                "${extra[@]}" "$dir/store" "$mnt" </dev/null >>"$WORK/mount.out" 2>&1
            mount_wait "$mnt"; WD="$mnt" ;;
        s3fs)
            mkdir -p "$dir/s3fs-tmp"
            setsid s3fs "$BUCKET" "$mnt" -f -o "passwd_file=$WORK/s3fs.passwd,url=$AWS_ENDPOINT" \
                -o "use_path_request_style,endpoint=${AWS_REGION:-us-east-1},tmpdir=$dir/s3fs-tmp" \
                </dev/null >>"$dir/s3fs.log" 2>&1 &
            DPID=$!; PIDS+=("$DPID")
            mount_wait "$mnt"
            WD="$mnt/$RUN_PREFIX/r$r-$s"; mkdir -p "$WD" ;;
        rclone)
            setsid "${RCLONE[@]}" mount "gw:$BUCKET/$RUN_PREFIX/r$r-$s" "$mnt" --vfs-cache-mode writes \
                --cache-dir "$dir/rclone-cache" </dev/null >>"$dir/rclone.log" 2>&1 &
            DPID=$!; PIDS+=("$DPID")
            mount_wait "$mnt"; WD="$mnt" ;;
    esac
}

# sys_drain SYSTEM DIR: until the bucket holds everything and the mount is gone
sys_drain() {
    local s="$1" mnt="$2/mnt" want_objs want_bytes
    case "$s" in
        logstorfs|logstorfs-sync) "$LOGSTORFS" umount "$mnt" >>"$WORK/mount.out" 2>&1 ;;
        rclone)
            want_objs=$((1 + SMALL_FILES + 1)); want_bytes=$(((SEQ_MIB << 20) + SMALL_FILES * SMALL_BYTES + APPEND_OPS * 4096))
            local l deadline=$((SECONDS + 600))
            while :; do
                l="$(s3_list "$KEY")"
                (( ${l% *} >= want_objs && ${l#* } >= want_bytes )) && break
                (( SECONDS < deadline )) || { log "rclone: the bucket holds $l of $want_objs $want_bytes after 600 s"; break; }
                sleep 0.2
            done
            fusermount3 -u "$mnt"; reap ;;
        s3fs) fusermount3 -u "$mnt"; reap ;;
    esac
}
reap() { # waits for the peer daemon DPID to exit, and forgets it
    local p keep=()
    wait "$DPID" 2>/dev/null || true
    for p in "${PIDS[@]}"; do [[ $p == "$DPID" ]] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

cat > "$WORK/wl.py" <<'EOF'
import os, sys, time
pc = time.perf_counter
def small(d, n, size):
    data = os.urandom(n * size)           # distinct random content per file, made before the clock
    os.mkdir(d)
    t = pc()
    for i in range(n):
        fd = os.open(os.path.join(d, "f%06d" % i), os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644)
        os.write(fd, data[i * size:(i + 1) * size])
        os.close(fd)
    os.sync()
    print("%.1f" % (n / (pc() - t)))
def append(path, n):
    buf = os.urandom(4096)
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_APPEND | os.O_EXCL, 0o644)
    t = pc()
    for _ in range(n):
        os.write(fd, buf)
        os.fsync(fd)
    el = pc() - t
    os.close(fd)
    print("%.1f" % (n / el))
globals()[sys.argv[1]](sys.argv[2], int(sys.argv[3]), *[int(a) for a in sys.argv[4:]])
EOF

log "random data: $SEQ_MIB MiB in $RAND"
head -c "$((SEQ_MIB << 20))" /dev/urandom > "$RAND"
WRITTEN=$(((SEQ_MIB << 20) + SMALL_FILES * SMALL_BYTES + APPEND_OPS * 4096))
log "systems: ${SYS[*]}; gateway $AWS_ENDPOINT, s3://$BUCKET/$RUN_PREFIX/, work in $WORK"

declare -A R    # R[system,round,metric]
one_system() {
    local s="$1" r="$2" dir="$WORK/r$2-$1" t0 t1
    mkdir -p "$dir"
    local off0=0; [[ -r "$RGW_LOG" ]] && off0="$(stat -c %s "$RGW_LOG")"
    sys_mount "$s" "$dir" "$r"
    t0=$(now)
    dd if="$RAND" of="$WD/seq" bs=1M count="$SEQ_MIB" conv=fsync status=none
    t1=$(now)
    R[$s,$r,seq]="$(python3 -c "print('%.1f' % ($SEQ_MIB / ($t1 - $t0)))")"
    R[$s,$r,small]="$(python3 "$WORK/wl.py" small "$WD/small" "$SMALL_FILES" "$SMALL_BYTES")"
    R[$s,$r,append]="$(python3 "$WORK/wl.py" append "$WD/append" "$APPEND_OPS")"
    t0=$(now); sys_drain "$s" "$dir"; t1=$(now)
    R[$s,$r,drain]="$(secs "$t0" "$t1")"
    local l; l="$(s3_list "$KEY")"
    R[$s,$r,objs]="${l% *}"; R[$s,$r,bytes]="${l#* }"
    R[$s,$r,reqs]="n/a"
    if [[ -r "$RGW_LOG" ]]; then   # the gateway's access log since the mount, our own LISTs left out
        sleep 1
        R[$s,$r,reqs]="$(tail -c +$((off0 + 1)) "$RGW_LOG" | grep ' beast: ' | grep -v 'Python-urllib' \
            | grep -o '"[A-Z]* /' | tr -d '"/ ' | sort | uniq -c | awk '{printf "%s%s=%s", (NR>1?",":""), $2, $1}')"
    fi
    if [[ $s == logstorfs* ]]; then
        R[$s,$r,puts]="$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['objects_put'])" "$dir/store/remote.json")"
    else
        R[$s,$r,puts]="n/a"
    fi
    log "round $r $s: seq ${R[$s,$r,seq]} MiB/s, small ${R[$s,$r,small]} files/s, append ${R[$s,$r,append]} ops/s, drain ${R[$s,$r,drain]} s; bucket $l; requests ${R[$s,$r,reqs]}"
    "${RCLONE[@]}" purge "gw:$BUCKET/${KEY%/}" >>"$WORK/purge.out" 2>&1 || log "rclone purge of $KEY failed (see $WORK/purge.out)"
    rm -rf "$dir"
}

UPTIME_BEFORE="$(uptime)"
log "uptime before: $UPTIME_BEFORE"
for r in $(seq 1 "$ROUNDS"); do
    n=${#SYS[@]}
    for i in $(seq 0 $((n - 1))); do one_system "${SYS[$(((i + r - 1) % n))]}" "$r"; done
done
UPTIME_AFTER="$(uptime)"

# ---- tables ----
vals() { local s="$1" m="$2" r o=""; for r in $(seq 1 "$ROUNDS"); do o+="${R[$s,$r,$m]} "; done; echo "$o"; }
# ratios A B METRIC [inv]: per round A/B (inv: B/A, for times)
ratios() {
    local a="$1" b="$2" m="$3" inv="${4:-}" r o=""
    for r in $(seq 1 "$ROUNDS"); do
        if [[ -n "$inv" ]]; then o+="$(python3 -c "print('%.3f' % (${R[$b,$r,$m]} / ${R[$a,$r,$m]}))") "
        else o+="$(python3 -c "print('%.3f' % (${R[$a,$r,$m]} / ${R[$b,$r,$m]}))") "; fi
    done; echo "$o"
}
stat3() { # stat3 "V1 V2 ...": "median (min..max)"
    # shellcheck disable=SC2086
    python3 -c "
import statistics, sys
v = [float(x) for x in sys.argv[1:]]
f = lambda x: ('%.0f' % x) if abs(x) >= 1000 else ('%.3g' % x if abs(x) < 10 else '%.1f' % x)
print('%s (%s..%s)' % (f(statistics.median(v)), f(min(v)), f(max(v))))" $1
}
has() { [[ " $SYSTEMS " == *" $1 "* ]]; }
PAIRS=()
for p in s3fs rclone; do has logstorfs && has "$p" && PAIRS+=("logstorfs $p"); done
has logstorfs-sync && has s3fs && PAIRS+=("logstorfs-sync s3fs")
METRICS=("seq|sequential write $SEQ_MIB MiB, dd bs=1M conv=fsync|MiB/s|"
         "small|small files: $SMALL_FILES x 4 KiB in one dir, then sync|files/s|"
         "append|fsync_append: $APPEND_OPS x (4 KiB append + fsync)|ops/s|"
         "drain|drain: until the bucket holds all and the mount is gone|s|inv")
{
echo "Rounds: $ROUNDS (the systems' order rotated by one each round: ${SYS[*]}), --remote-lag $LAG s; each system on a fresh prefix of one bucket on the same gateway; median (min..max) over the rounds."
echo "Written per system: $SEQ_MIB MiB + $SMALL_FILES x $SMALL_BYTES B files + $APPEND_OPS x 4 KiB appends = $(python3 -c "print('%.3f' % ($WRITTEN / 2**30))") GiB."
echo
printf '| workload | unit |'; for s in "${SYS[@]}"; do printf ' %s |' "$s"; done
for p in "${PAIRS[@]}"; do printf ' %s / %s |' "${p% *}" "${p#* }"; done; echo
printf '|---|---|'; for _ in "${SYS[@]}" "${PAIRS[@]}"; do printf -- '---|'; done; echo
for md in "${METRICS[@]}"; do
    IFS='|' read -r m name unit inv <<< "$md"
    printf '| %s | %s |' "$name" "$unit"
    for s in "${SYS[@]}"; do printf ' %s |' "$(stat3 "$(vals "$s" "$m")")"; done
    for p in "${PAIRS[@]}"; do
        read -r a b <<< "$p"
        printf ' %s |' "$(stat3 "$(ratios "$a" "$b" "$m" "$inv")")"
    done
    echo
done
echo
echo "Ratios: logstorfs speed / peer speed (> 1: logstorfs faster; drain: peer time / logstorfs time)."
echo
echo "Per round ($(IFS=/; echo "${SYS[*]}")):"
for r in $(seq 1 "$ROUNDS"); do
    printf -- '- r%s:' "$r"
    for md in "${METRICS[@]}"; do
        IFS='|' read -r m _ unit _ <<< "$md"
        printf ' %s %s %s;' "$m" "$(for s in "${SYS[@]}"; do printf '%s/' "${R[$s,$r,$m]}"; done | sed 's:/$::')" "$unit"
    done
    echo
done
echo
printf '| after the drain |'; for s in "${SYS[@]}"; do printf ' %s |' "$s"; done; echo
printf '|---|'; for _ in "${SYS[@]}"; do printf -- '---|'; done; echo
printf '| objects under the prefix (per round) |'; for s in "${SYS[@]}"; do printf ' %s|' "$(vals "$s" objs)"; done; echo
printf '| MiB under the prefix (per round) |'; for s in "${SYS[@]}"; do printf ' %s|' "$(for r in $(seq 1 "$ROUNDS"); do python3 -c "print('%.1f' % (${R[$s,$r,bytes]} / 2**20), end=' ')"; done)"; done; echo
printf '| PUT requests (remote.json objects_put) |'; for s in "${SYS[@]}"; do printf ' %s|' "$(vals "$s" puts)"; done; echo
printf '| requests seen by the gateway, mount to drain (per round) |'; for s in "${SYS[@]}"; do printf ' %s|' "$(vals "$s" reqs)"; done; echo
echo
echo "uptime before: $UPTIME_BEFORE"
echo "uptime after: $UPTIME_AFTER"
} | tee "$WORK/tables.md"
[[ -z "$OUT" ]] || cp "$WORK/tables.md" "$OUT"
