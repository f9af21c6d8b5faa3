#!/usr/bin/env bash
# How far the bucket lags behind the store under sustained writes (`mount --remote`, issue 21).
#
# For each --remote-lag in LAGS ("5 1"), ROUNDS (2) rounds, the lags' order reversed every
# other round: a fresh store (`--create --size 2G --remote s3://BUCKET/PREFIX --remote-lag L`
# on the host file system), one fio writer for DURATION (60) s: 1 MiB sequential writes over a
# FILE_MIB (512) MiB file again and again (so overwrites, freed segments and compaction go on
# as in a store in use), rate-limited to RATE_MIB (20) MiB/s, an fsync after every FSYNC_EVERY
# (RATE_MIB: about one a second) writes. Every second, `logstorfs stats --json STORE`: the
# store's durable_lsn and user_bytes_written (the daemon's figures) and its "remote" section
# (bucket_lsn: the LSN of the newest image in the bucket; published_unix_ms).
#
# Lag at a sample taken at time t: the bucket holds the store as it was when its durable LSN
# reached bucket_lsn, at time T (interpolated linearly between the samples that straddle it;
# before the first manifest, T is the first sample). lag seconds = t - T; lag bytes =
# user_bytes_written(t) - user_bytes_written(T) (bytes the file system wrote for its users that
# the bucket does not hold yet). Also: the age of the newest manifest (t - published_unix_ms).
# Reported: median, p95 and max over the samples taken while fio ran (all rounds of a lag
# pooled), with each round's median beside; fio's achieved rate; PUTs and MiB uploaded per GiB
# of user_bytes_written (remote.json, after the unmount); the objects and bytes under the prefix
# after the unmount (ListObjects); the gateway's requests by method from the mount to the unmount
# (RGW_LOG, default CEPH_DIR/log/client.rgw.log, as scripts/mirror_peers.sh). Then, if rclone
# is installed, the prefix is deleted (`rclone purge`): a memstore gateway keeps it in RAM.
#
# The gateway: as scripts/mirror_bench.sh (the AWS_* environment, or with AWS_ENDPOINT unset a
# cluster of scripts/ceph.sh in CEPH_DIR, default /tmp/mirrorlag-ceph, stopped at exit).
# With WORK given, the samples (lag-L-rR.samples: "TIME STATS_JSON" lines), fio's JSON, the
# store's remote.json and logstorfs.log of each run are left there.
# Env: LOGSTORFS, LAGS, ROUNDS, DURATION, RATE_MIB, FILE_MIB, FSYNC_EVERY, WORK, OUT (also write
# the tables, as markdown, to this file). Needs fio.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOGSTORFS="${LOGSTORFS:-${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/logstorfs}"
LAGS="${LAGS:-5 1}"
ROUNDS="${ROUNDS:-2}"
DURATION="${DURATION:-60}"
RATE_MIB="${RATE_MIB:-20}"
FILE_MIB="${FILE_MIB:-512}"
FSYNC_EVERY="${FSYNC_EVERY:-$RATE_MIB}"
OUT="${OUT:-}"
export CEPH_DIR="${CEPH_DIR:-/tmp/mirrorlag-ceph}"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'mirror_lag.sh: %s\n' "$*" >&2; exit 1; }

[[ -x "$LOGSTORFS" ]] || die "no logstorfs at $LOGSTORFS (cargo build --release --features s3)"
"$LOGSTORFS" mount --help 2>&1 | grep -q -- '--remote' || die "$LOGSTORFS was built without --features s3"
command -v fio >/dev/null || die "fio is required"

OWN_WORK=0
if [[ -z "${WORK:-}" ]]; then WORK="$(mktemp -d /var/tmp/mirrorlag.XXXXXX)"; OWN_WORK=1; fi
mkdir -p "$WORK"
STARTED_CEPH=0
MNT=""
FIO_PID=""
cleanup() {
    local rc=$?
    set +e
    [[ -n "$FIO_PID" ]] && kill "$FIO_PID" 2>/dev/null && wait "$FIO_PID" 2>/dev/null
    if [[ -n "$MNT" ]] && mountpoint -q "$MNT"; then
        "$LOGSTORFS" umount "$MNT" >/dev/null 2>&1 || fusermount3 -uz "$MNT" 2>/dev/null
    fi
    if [[ $OWN_WORK == 1 ]]; then rm -rf "$WORK"; else rm -rf "$WORK"/lag-*-r*/; fi
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
RUN_PREFIX="mirrorlag-$(date -u +%Y%m%dT%H%M%S)-$$"
log "gateway $AWS_ENDPOINT, s3://$BUCKET/$RUN_PREFIX/, work in $WORK"

now() { date +%s.%N; }
RGW_LOG="${RGW_LOG:-$CEPH_DIR/log/client.rgw.log}"

# s3_list PREFIX: "OBJECTS BYTES" under PREFIX in the bucket
s3_list() { python3 "$REPO_ROOT/scripts/s3_list.py" "$BUCKET" "$1"; }

# one_run LAG ROUND: the writer and the samples; leaves WORK/lag-L-rR.samples, .fio.json, .remote.json
one_run() {
    local lag="$1" r="$2" dir="$WORK/lag-$1-r$2" pdev t
    local store="$dir/store" samples="$WORK/lag-$1-r$2.samples"
    MNT="$dir/mnt"
    mkdir -p "$store" "$MNT"
    pdev="$(stat -c %d "$dir")"
    local off0=0; [[ -r "$RGW_LOG" ]] && off0="$(stat -c %s "$RGW_LOG")"
    "$LOGSTORFS" mount --daemon --create --size 2G --remote "s3://$BUCKET/$RUN_PREFIX/lag$lag-r$r" \
        --remote-lag "$lag" "$store" "$MNT" </dev/null >>"$WORK/mount.out" 2>&1
    for _ in $(seq 1 12000); do [[ "$(stat -c %d "$MNT")" != "$pdev" ]] && break; sleep 0.01; done
    fio --name=lag --filename="$MNT/f" --rw=write --bs=1M --size="${FILE_MIB}M" --ioengine=psync \
        --fallocate=none --rate="${RATE_MIB}m" --fsync="$FSYNC_EVERY" --time_based --runtime="$DURATION" \
        --output-format=json --output="$WORK/lag-$lag-r$r.fio.json" >/dev/null 2>"$dir/fio.err" &
    FIO_PID=$!
    : > "$samples"
    local next; next="$(now)"
    while kill -0 "$FIO_PID" 2>/dev/null; do
        t="$(now)"
        printf '%s %s\n' "$t" "$("$LOGSTORFS" stats --json "$store" 2>/dev/null | tr -d '\n')" >> "$samples"
        next="$(python3 -c "print(float('$next') + 1)")"
        sleep "$(python3 -c "print(max(0.0, $next - $(now)))")"
    done
    wait "$FIO_PID" || { cat "$dir/fio.err" >&2; die "fio failed"; }
    FIO_PID=""
    "$LOGSTORFS" umount "$MNT" >>"$WORK/mount.out" 2>&1
    cp "$store/remote.json" "$WORK/lag-$lag-r$r.remote.json"
    cp "$store/logstorfs.log" "$WORK/lag-$lag-r$r.log" 2>/dev/null || true
    s3_list "$RUN_PREFIX/lag$lag-r$r/" > "$WORK/lag-$lag-r$r.bucket"
    if [[ -r "$RGW_LOG" ]]; then   # the gateway's requests from the mount to the unmount, by method
        sleep 1
        tail -c +$((off0 + 1)) "$RGW_LOG" | grep ' beast: ' | grep -v -e 'Python-urllib' -e '"rclone/' \
            | grep -o '"[A-Z]* /' | tr -d '"/ ' | sort | uniq -c | awk '{printf "%s%s=%s", (NR>1?",":""), $2, $1}' > "$WORK/lag-$lag-r$r.reqs"
    else
        echo n/a > "$WORK/lag-$lag-r$r.reqs"
    fi
    if command -v rclone >/dev/null; then   # free the memstore gateway's RAM for the next run
        env -u AWS_CA_BUNDLE RCLONE_CONFIG_GW_TYPE=s3 RCLONE_CONFIG_GW_PROVIDER=Ceph \
            RCLONE_CONFIG_GW_ENDPOINT="$AWS_ENDPOINT" RCLONE_CONFIG_GW_ACCESS_KEY_ID="$AWS_ACCESS_KEY_ID" \
            RCLONE_CONFIG_GW_SECRET_ACCESS_KEY="$AWS_SECRET_ACCESS_KEY" RCLONE_CONFIG_GW_REGION="${AWS_REGION:-us-east-1}" \
            RCLONE_CONFIG_GW_FORCE_PATH_STYLE=true rclone --config /dev/null purge "gw:$BUCKET/$RUN_PREFIX/lag$lag-r$r" \
            >>"$WORK/purge.out" 2>&1 || log "rclone purge failed (see $WORK/purge.out)"
    fi
    log "lag $lag round $r: $(wc -l < "$samples") samples; $(python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(r['manifests_published'], 'manifests,', r['objects_put'], 'PUTs,', r['bytes_put'], 'B put, last_error', r['last_error'])" "$store/remote.json")"
    rm -rf "$dir"
    MNT=""
}

UPTIME_BEFORE="$(uptime)"
log "uptime before: $UPTIME_BEFORE"
read -r -a LAGV <<< "$LAGS"
for r in $(seq 1 "$ROUNDS"); do
    if (( r % 2 )); then order=("${LAGV[@]}"); else order=(); for ((i=${#LAGV[@]}-1; i>=0; i--)); do order+=("${LAGV[$i]}"); done; fi
    for l in "${order[@]}"; do one_run "$l" "$r"; done
done
UPTIME_AFTER="$(uptime)"

{
echo "Writer: fio, 1 MiB sequential writes over a $FILE_MIB MiB file in a loop, --rate ${RATE_MIB}m, fsync every $FSYNC_EVERY writes, $DURATION s; fresh store (--size 2G) per run; $ROUNDS rounds per lag, the lags' order reversed every other round; a sample a second (logstorfs stats --json)."
echo
python3 - "$WORK" "$ROUNDS" "$LAGS" <<'EOF'
import json, statistics, sys
work, rounds, lags = sys.argv[1], int(sys.argv[2]), sys.argv[3].split()

def pct(v, p):
    v = sorted(v)
    k = (len(v) - 1) * p / 100
    lo = int(k); hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)

def interp(ts, xs, ys, x):
    # the t at which the monotone series xs first reaches x, and y interpolated there
    if x <= xs[0]:
        return ts[0], ys[0]
    for j in range(1, len(xs)):
        if xs[j] >= x:
            f = (x - xs[j - 1]) / (xs[j] - xs[j - 1]) if xs[j] > xs[j - 1] else 1.0
            return ts[j - 1] + f * (ts[j] - ts[j - 1]), ys[j - 1] + f * (ys[j] - ys[j - 1])
    return ts[-1], ys[-1]

rows = {}
for lag in lags:
    pooled = {"s": [], "b": [], "age": []}
    per_round, rates, puts_gib, mib_gib, manifests, bucket, reqs = [], [], [], [], [], [], []
    for r in range(1, rounds + 1):
        base = f"{work}/lag-{lag}-r{r}"
        ts, lsn, ubw, blsn, pub, live = [], [], [], [], [], []
        for line in open(base + ".samples"):
            t, _, js = line.partition(" ")
            try:
                j = json.loads(js)
            except ValueError:
                continue
            rem = j.get("remote") or {}
            ts.append(float(t)); lsn.append(j["durable_lsn"]); ubw.append(j["user_bytes_written"] or 0)
            blsn.append(rem.get("bucket_lsn", 0)); pub.append(rem.get("published_unix_ms", 0))
            live.append(j["live_bytes"])
        s_l, b_l = [], []
        for i in range(len(ts)):
            T, u = interp(ts[: i + 1], lsn[: i + 1], ubw[: i + 1], blsn[i])
            s_l.append(ts[i] - T); b_l.append(ubw[i] - u)
            if pub[i]:
                pooled["age"].append(ts[i] - pub[i] / 1000)
        pooled["s"] += s_l; pooled["b"] += b_l
        per_round.append((statistics.median(s_l), statistics.median(b_l) / 2**20))
        f = json.load(open(base + ".fio.json"))["jobs"][0]
        rates.append(f["write"]["bw_bytes"] / 2**20)
        rem = json.load(open(base + ".remote.json"))
        gib = ubw[-1] / 2**30
        puts_gib.append(rem["objects_put"] / gib); mib_gib.append(rem["bytes_put"] / 2**20 / gib)
        manifests.append(rem["manifests_published"])
        objs, byts = open(base + ".bucket").read().split()
        bucket.append("%s objects, %.0f MiB (store live %.0f MiB)" % (objs, int(byts) / 2**20, live[-1] / 2**20))
        reqs.append(open(base + ".reqs").read().strip())
    rows[lag] = (pooled, per_round, rates, puts_gib, mib_gib, manifests, bucket, reqs)

print("| --remote-lag | lag s: median / p95 / max | lag MiB: median / p95 / max | age of newest manifest s: median / p95 / max | per-round medians (s, MiB) | samples |")
print("|---|---|---|---|---|---|")
for lag, (p, pr, *_) in rows.items():
    f3 = lambda v, d=1: " / ".join(("%%.%df" % d) % x for x in (statistics.median(v), pct(v, 95), max(v))) if v else "n/a"
    print(f"| {lag} s | {f3(p['s'])} | {f3([b / 2**20 for b in p['b']])} | {f3(p['age'])} | "
          + "; ".join("%.1f s, %.0f MiB" % x for x in pr) + f" | {len(p['s'])} |")
print()
print("| --remote-lag | fio rate MiB/s (per round) | manifests published | PUTs per GiB written | MiB uploaded per GiB written |")
print("|---|---|---|---|---|")
for lag, (_, _, rates, pg, mg, man, _, _) in rows.items():
    j = lambda v, fmt: " ".join(fmt % x for x in v)
    print(f"| {lag} s | {j(rates, '%.1f')} | {j(man, '%d')} | {j(pg, '%.0f')} | {j(mg, '%.0f')} |")
print()
print("| --remote-lag | under the prefix after the unmount (per round) | gateway requests, mount to unmount (per round) |")
print("|---|---|---|")
for lag, row in rows.items():
    print(f"| {lag} s | {'; '.join(row[6])} | {'; '.join(row[7])} |")
EOF
echo
echo "GiB written: the engine's user_bytes_written at the last sample."
echo
echo "uptime before: $UPTIME_BEFORE"
echo "uptime after: $UPTIME_AFTER"
} | tee "$WORK/tables.md"
[[ -z "$OUT" ]] || cp "$WORK/tables.md" "$OUT"
