#!/usr/bin/env bash
# The mirror (`mount --remote`, issue 21) through a gateway outage, on a real mount: radosgw is
# stopped for OUTAGE_SECS in the middle of a workload (never the OSD: a memstore OSD loses its
# objects), and then started again.
#
# A store is created and mounted with `--remote --remote-lag 1`, and the crash workload
# (scripts/crash_workload.py: creates, overwrites, truncates, renames, deletes; a step is
# journaled outside the mount once its fsyncs have returned) runs from before the outage to
# after it. Checked: the bucket holds part of the workload before the outage; while the gateway
# is down the workload goes on (steps are confirmed between the stop and the start) and the
# bucket falls behind the store; once it is back, rounds publish again while the workload
# runs, and once the workload stopped the bucket catches up with the store's durable LSN
# (`logstorfs stats --json`, its "remote" section); the store is then unmounted and deleted, a
# mount with `--remote` over an empty directory restores it, and it holds every confirmed step
# byte for byte and nothing else; `fsck --remote` finds the bucket clean. Every wait has a hang
# guard only; nothing is checked against a time.
#
#   CEPH_DIR=/tmp/logstorfs-ceph-tests bash scripts/mirror_outage.sh
#
# The gateway is the cluster of scripts/ceph.sh in CEPH_DIR: scripts/object_s3.sh runs this
# script on its cluster once its tests are done (it stops radosgw: never while other tests use
# it). Without a cluster running there, the script brings one up and takes it down at exit.
#
# Env: CEPH_DIR (default /tmp/logstorfs-ceph-outage), OUTAGE_SECS (60), LOGSTORFS (a binary
# built with --features s3; default $CARGO_TARGET_DIR/release/logstorfs), KEEP=1 keeps the work
# directory, TMPDIR. Reports "mirror-outage: N passed, N failed" (and into RESULTS_FILE).
# Figures: about 75 s with the 60 s outage (2 cores).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
for tool in python3 mountpoint fusermount3; do
    command -v "$tool" >/dev/null || die "$tool is missing"
done
[[ -z "$MOUNT_CMD" ]] || die "mirror_outage.sh tests logstorfs's mirror: MOUNT_CMD is not supported"

CEPH="$REPO_ROOT/scripts/ceph.sh"
WORKLOAD="$REPO_ROOT/scripts/crash_workload.py"
OUTAGE_SECS="${OUTAGE_SECS:-60}"
export CEPH_DIR="${CEPH_DIR:-/tmp/logstorfs-ceph-outage}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/logstorfs-verify.outage.XXXXXX")"
STORE="$WORK/store"
MNT="$WORK/mnt"
JOURNAL="$WORK/journal"      # outside the mount
STOP="$WORK/stop"            # the workload stops between two steps once it exists
mkdir -p "$MNT"
: > "$JOURNAL"
OWN_CLUSTER=0
RGW_STOPPED=0
WORKLOAD_PID=""

cleanup() {
    [[ -n "$WORKLOAD_PID" ]] && kill "$WORKLOAD_PID" 2>/dev/null
    cleanup_mounts
    if mountpoint -q "$MNT" 2>/dev/null; then fusermount3 -uz "$MNT" 2>/dev/null || true; fi
    # The cluster may be another script's: a gateway stopped here is started again.
    if [[ $OWN_CLUSTER == 1 ]]; then
        bash "$CEPH" down 2>/dev/null || true
    elif [[ $RGW_STOPPED == 1 ]]; then
        bash "$CEPH" rgw-start 2>/dev/null || true
    fi
    if [[ "${KEEP:-0}" == 1 ]]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

if [[ -f "$CEPH_DIR/env" ]]; then
    bash "$CEPH" status | grep -q '^rgw: running' || die "the cluster in $CEPH_DIR has no radosgw running"
    eval "$(bash "$CEPH" env)"
else
    OWN_CLUSTER=1
    env_lines="$(bash "$CEPH" up)" || die "scripts/ceph.sh up failed"
    eval "$env_lines"
fi
URL="s3://$LOGSTORFS_S3_BUCKET/mirror-outage-$(date +%s%N)-$$"
SEED="${OUTAGE_SEED:-$RANDOM}"
T0=$SECONDS
log "mirror-outage: gateway $AWS_ENDPOINT (cluster $CEPH_DIR$([[ $OWN_CLUSTER == 1 ]] && echo ", brought up here")), $URL, outage ${OUTAGE_SECS} s, workload seed $SEED (OUTAGE_SEED), work dir $WORK"

# "DURABLE_LSN BUCKET_LSN MANIFEST LAST_ROUND" from the daemon's stats: the store's durable LSN,
# and the mirror's record of the bucket's newest image (LAST_ROUND: ok, or failed).
figures() {
    "$LOGSTORFS" stats --json "$MNT" | python3 -c '
import json, sys
d = json.load(sys.stdin)
r = d["remote"] or {}
print(d["durable_lsn"], r.get("bucket_lsn", 0), r.get("manifest", 0),
      "failed" if r.get("last_error") else "ok")'
}
confirmed() { grep -c '^C ' "$JOURNAL" || true; }
# wait_until WHAT SECS CMD...: CMD succeeds within SECS seconds (a hang guard, not a measure).
wait_until() {
    local what="$1" secs="$2" deadline; shift 2
    deadline=$((SECONDS + secs))
    until "$@"; do
        if [[ $SECONDS -ge $deadline ]]; then
            echo "not after $secs s: $what ($(figures 2>&1 || true))"
            return 1
        fi
        sleep 0.2
    done
}
bucket_holds() { # bucket_holds LSN: the bucket's newest image holds every batch up to LSN
    local f; read -r -a f <<< "$(figures)"
    [[ ${f[1]} -ge $1 ]]
}
steps_at_least() { [[ $(confirmed) -ge $1 ]]; }
published_past() { # published_past MANIFEST LSN: a newer manifest, with more than LSN
    local f; read -r -a f <<< "$(figures)"
    [[ ${f[2]} -gt $1 && ${f[1]} -gt $2 ]]
}
workload_runs() {
    kill -0 "$WORKLOAD_PID" 2>/dev/null || { echo "the workload ended:"; cat "$WORK/workload.log"; return 1; }
}

t_mount() {
    "$LOGSTORFS" mount --daemon --create --size 256M --remote "$URL" --remote-lag 1 "$STORE" "$MNT" \
        || { echo "(a binary built without --features s3 cannot mount --remote: $LOGSTORFS)"; return 1; }
    MOUNTED+=("$MNT")
}
check_here "mount a new store with --remote $URL --remote-lag 1" t_mount || { summary mirror-outage; exit 1; }

python3 "$WORKLOAD" run "$MNT" "$JOURNAL" "$SEED" "$WORK/ready" --until "$STOP" \
    > "$WORK/workload.log" 2>&1 &
WORKLOAD_PID=$!

# The functions run by check_here run in this shell, where a failure does not stop them (they
# run in the condition of an ||): every step says `|| return 1`.
t_before() {
    wait_until "20 steps confirmed" 60 steps_at_least 20 || return 1
    local f; read -r -a f <<< "$(figures)" || return 1
    wait_until "the bucket holds LSN ${f[0]}" 60 bucket_holds "${f[0]}" || return 1
    workload_runs
}
check_here "before the outage: the bucket takes the workload's first steps" t_before \
    || { summary mirror-outage; exit 1; }

t_rgw_stop() { bash "$CEPH" rgw-stop && RGW_STOPPED=1; }
check_here "radosgw stopped (the OSD and the monitor go on)" t_rgw_stop || { summary mirror-outage; exit 1; }
n_stop=$(confirmed)
t_refused() {
    if python3 -c 'import sys, urllib.request as u; u.urlopen(sys.argv[1], timeout=5)' "$AWS_ENDPOINT/" 2>/dev/null; then
        echo "the gateway still answers on $AWS_ENDPOINT"; return 1
    fi
}
check "the gateway does not answer" t_refused
log "the gateway is down for $OUTAGE_SECS s; the workload goes on"
failed_round=no
outage_end=$((SECONDS + OUTAGE_SECS))
while [[ $SECONDS -lt $outage_end ]]; do
    sleep 1
    [[ "$(figures 2>/dev/null)" == *failed ]] && failed_round=yes
done
n_start=$(confirmed)
read -r -a at_end <<< "$(figures)"
log "outage over: $((n_start - n_stop)) steps confirmed during it; store LSN ${at_end[0]}, bucket LSN ${at_end[1]} (manifest ${at_end[2]}); a failed round seen in stats: $failed_round"
t_writes_went_on() {
    workload_runs
    # A step counted here may have begun before the stop, but one only.
    [[ $((n_start - n_stop)) -ge 2 ]] \
        || { echo "$((n_start - n_stop)) steps confirmed while the gateway was down"; return 1; }
}
check "writes and fsyncs go on while the gateway is down ($((n_start - n_stop)) steps confirmed)" t_writes_went_on
t_behind() {
    [[ ${at_end[1]} -lt ${at_end[0]} ]] \
        || { echo "the bucket holds LSN ${at_end[1]}, the store ${at_end[0]}: no outage?"; return 1; }
}
check "the bucket fell behind the store during the outage" t_behind

t_rgw_start() { bash "$CEPH" rgw-start && RGW_STOPPED=0; }
check_here "radosgw started again" t_rgw_start || { summary mirror-outage; exit 1; }
t_resumed() {
    wait_until "a manifest after ${at_end[2]} with more than LSN ${at_end[1]}" 120 \
        published_past "${at_end[2]}" "${at_end[1]}" || return 1
    workload_runs
}
check_here "uploads resume while the workload goes on" t_resumed || true
t_warned() {
    # A round retried through the outage published at last: the daemon says how far behind
    # the bucket was (writers never wait for it, so the log and stats are how a user learns).
    grep -h "s behind the store until manifest" "$STORE"/logstorfs.log* \
        || { echo "no warning in $STORE/logstorfs.log that the bucket was behind"; return 1; }
}
check "the daemon warned that the bucket was behind the store" t_warned

touch "$STOP"
t_stopped() {
    local rc=0
    wait "$WORKLOAD_PID" || rc=$?
    WORKLOAD_PID=""
    if [[ $rc -ne 0 ]] || grep -q "workload stopped" "$WORK/workload.log"; then
        echo "exit $rc:"; cat "$WORK/workload.log"; return 1
    fi
    [[ "$(tail -n 1 "$JOURNAL")" == "C "* ]] || { echo "the journal ends in an unconfirmed step"; return 1; }
    return 0
}
check_here "the workload ran to its stop without an error ($(confirmed) steps)" t_stopped || true
t_caught_up() {
    local f; read -r -a f <<< "$(figures)" || return 1
    wait_until "the bucket holds LSN ${f[0]}" 120 bucket_holds "${f[0]}" || return 1
    log "the bucket caught up with LSN ${f[0]}: $(figures)"
}
check_here "the bucket catches up with the store's durable LSN" t_caught_up || true

t_umount() { "$LOGSTORFS" umount "$MNT" && _forget_mount "$MNT"; }
check_here "unmount" t_umount || { summary mirror-outage; exit 1; }
rm -rf "$STORE"
t_restore() {
    "$LOGSTORFS" mount --daemon --remote "$URL" "$WORK/restored" "$MNT" || return 1
    MOUNTED+=("$MNT")
}
check_here "the store deleted, a mount --remote over an empty directory restores it" t_restore \
    || { summary mirror-outage; exit 1; }
check "every confirmed step is there byte for byte, and nothing else ($(confirmed) steps)" \
    python3 "$WORKLOAD" verify "$MNT" "$JOURNAL"
check_here "unmount the restored store" unmount "$MNT" || true
check "fsck --remote finds every manifest and object in the bucket sound" "$LOGSTORFS" fsck --remote "$URL"

log "mirror-outage took $((SECONDS - T0)) s"
summary mirror-outage
