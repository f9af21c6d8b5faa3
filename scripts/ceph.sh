#!/usr/bin/env bash
# A single-node Ceph cluster on 127.0.0.1 with an S3 gateway, for the object tier's tests:
# one monitor, one memstore OSD, one radosgw (beast frontend), one S3 user and one bucket.
# Everything lives in one directory and dies with `down`; nothing of the machine's own Ceph
# configuration (/etc/ceph, systemd units) is used or changed.
#
#   scripts/ceph.sh up     bring the cluster up, print the exports below (progress on stderr)
#   scripts/ceph.sh env    print the exports of the running cluster: eval "$(scripts/ceph.sh env)"
#   scripts/ceph.sh down   stop every daemon (radosgw first) and remove the directory
#   scripts/ceph.sh status show which daemons run
#   scripts/ceph.sh rgw-stop | rgw-start   stop / restart only the gateway (fault tests; the
#                          objects live on as long as the OSD runs)
#
# Exports: AWS_ENDPOINT AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION AWS_ALLOW_HTTP
#          AWS_VIRTUAL_HOSTED_STYLE_REQUEST=false (radosgw is addressed path-style) and
#          LOGSTORFS_S3_BUCKET (the bucket made by `up`).
#
# Env: CEPH_DIR (default /tmp/logstorfs-ceph), CEPH_MON_PORT and CEPH_RGW_PORT (default: free
#      ports picked by the kernel), CEPH_BUCKET (default logstorfs-test),
#      CEPH_MEMSTORE_BYTES (default 4 GiB; memstore keeps every object in memory).
#
# Needs the Debian packages ceph-mon ceph-osd radosgw ceph-common (scripts/test.sh installs them).
set -euo pipefail

DIR="${CEPH_DIR:-/tmp/logstorfs-ceph}"
BUCKET="${CEPH_BUCKET:-logstorfs-test}"
MEMSTORE_BYTES="${CEPH_MEMSTORE_BYTES:-$((4 << 30))}"
CONF="$DIR/ceph.conf"
REGION=us-east-1           # radosgw's default zonegroup answers to any region; the SDK needs one

say() { printf '[ceph.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'ceph.sh: %s\n' "$*" >&2; exit 1; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The daemons run in the foreground of a background job so that their pids are ours to stop.
start_daemon() { # start_daemon NAME CMD...: run CMD in the background, its pid in $DIR/NAME.pid
    local name="$1"; shift
    setsid "$@" >"$DIR/log/$name.out" 2>&1 < /dev/null &
    echo $! > "$DIR/$name.pid"
}

# A daemon outlives the `up` that started it, so a dead one is a zombie until whatever adopted
# it reaps it (seconds, here): kill -0 would still find it.
pid_runs() { local st; st="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" && [[ -n "$st" && "$st" != Z ]]; }
alive() { [[ -f "$DIR/$1.pid" ]] && pid_runs "$(cat "$DIR/$1.pid")"; }

stop_daemon() { # stop_daemon NAME [GRACE]: SIGTERM, SIGKILL after GRACE s (0: at once); waits until gone
    local name="$1" grace="${2:-15}" pid i
    [[ -f "$DIR/$name.pid" ]] || return 0
    pid="$(cat "$DIR/$name.pid")"
    if pid_runs "$pid"; then
        if [[ $grace -gt 0 ]]; then
            kill -TERM "$pid" 2>/dev/null || true
            for i in $(seq 1 $((grace * 20))); do pid_runs "$pid" || break; sleep 0.05; done
        fi
        if pid_runs "$pid"; then
            [[ $grace -gt 0 ]] && say "$name (pid $pid) still runs $grace s after SIGTERM: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            for i in $(seq 1 100); do pid_runs "$pid" || break; sleep 0.05; done
        fi
        pid_runs "$pid" && die "$name (pid $pid) is still running"
    fi
    rm -f "$DIR/$name.pid"
}

# Waits up to $2 seconds for command $3... to succeed; dies naming $1 and the log otherwise.
wait_for() {
    local what="$1" secs="$2" deadline; shift 2
    deadline=$((SECONDS + secs))
    while [[ $SECONDS -lt $deadline ]]; do
        "$@" >/dev/null 2>&1 && return 0
        local d
        for d in mon osd rgw; do
            if [[ -f "$DIR/$d.pid" ]] && ! alive "$d"; then
                say "$d died while waiting for $what; the end of its logs:"
                tail -n 30 "$DIR/log/$d.out" >&2 2>/dev/null || true
                die "$d died"
            fi
        done
        sleep 0.1
    done
    say "$what not ready after $secs s; the end of the logs:"
    tail -n 20 "$DIR"/log/*.out "$DIR"/log/*.log >&2 2>/dev/null || true
    die "$what not ready after $secs s"
}

ceph_cli() { timeout 20 ceph -c "$CONF" --connect-timeout 10 "$@"; }

print_env() {
    [[ -f "$DIR/env" ]] || die "no cluster in $DIR (scripts/ceph.sh up)"
    cat "$DIR/env"
}

# radosgw-admin has no command that makes a bucket, so `up` sends one signed PUT (AWS signature
# version 2, which radosgw accepts, needs only HMAC-SHA1) from Python's standard library.
create_bucket() { # create_bucket ENDPOINT ACCESS SECRET BUCKET
    python3 - "$@" <<'EOF'
import base64, hmac, hashlib, sys, urllib.request, urllib.error
from email.utils import formatdate
endpoint, access, secret, bucket = sys.argv[1:5]
date = formatdate(usegmt=True)
sig = base64.b64encode(hmac.new(secret.encode(), f"PUT\n\n\n{date}\n/{bucket}".encode(),
                                hashlib.sha1).digest()).decode()
req = urllib.request.Request(f"{endpoint}/{bucket}", method="PUT",
                             headers={"Date": date, "Authorization": f"AWS {access}:{sig}"})
try:
    urllib.request.urlopen(req, timeout=30).read()
except urllib.error.HTTPError as e:
    sys.exit(f"create bucket {bucket}: HTTP {e.code} {e.read().decode(errors='replace')}")
EOF
}

rgw_answers() { python3 -c 'import sys,urllib.request as u; u.urlopen(sys.argv[1], timeout=5)' "$1"; }

up() {
    local t0=$SECONDS start_ns
    start_ns=$(date +%s%N)
    for b in ceph-mon ceph-osd radosgw radosgw-admin ceph monmaptool python3; do
        command -v "$b" >/dev/null || die "$b not found: apt-get install --no-install-recommends ceph-mon ceph-osd radosgw ceph-common"
    done
    if [[ -d "$DIR" ]]; then
        if alive mon || alive osd || alive rgw; then die "a cluster already runs in $DIR (scripts/ceph.sh down)"; fi
        rm -rf "$DIR"
    fi
    mkdir -p "$DIR/mon" "$DIR/osd0" "$DIR/log" "$DIR/run"
    local mon_port="${CEPH_MON_PORT:-$(free_port)}" rgw_port="${CEPH_RGW_PORT:-$(free_port)}"
    local fsid; fsid="$(uuidgen)"
    # Authentication inside the cluster is off (it listens on loopback only, and lives for one
    # test run); S3 requests are still signed and checked by radosgw with the user's keys.
    cat > "$CONF" <<EOF
[global]
fsid = $fsid
mon host = v1:127.0.0.1:$mon_port
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind msgr2 = false
ms bind ipv6 = false
auth cluster required = none
auth service required = none
auth client required = none
run dir = $DIR/run
admin socket = $DIR/run/\$name.asok
log file = $DIR/log/\$name.log
crash dir = $DIR/crash
keyring = $DIR/keyring
# One OSD: every pool keeps one copy, placed by OSD rather than by host.
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon warn on pool no redundancy = false
# Commits a map change in ~50 ms instead of ~1 s: the cluster is up in seconds, not 15.
paxos propose interval = 0.05
mon data = $DIR/mon

[osd]
osd data = $DIR/osd0
osd objectstore = memstore
# The script places the OSD in the CRUSH map itself: the OSD's own commands for it race with its
# monitor session and were seen refused ("wrong fsid"), which stops the OSD.
osd crush update on start = false
osd class update on start = false
# memstore holds every object in memory; a PUT that would pass this size hangs (the OSD is
# full), so it must exceed what the tests store.
memstore device bytes = $MEMSTORE_BYTES

[client.rgw]
# tcp_nodelay: without it each small request waits ~40 ms for a delayed ACK.
rgw frontends = beast endpoint=127.0.0.1:$rgw_port tcp_nodelay=1
rgw data = $DIR/rgw
# Deleted objects' data is freed in seconds, not hours, so that a long test does not fill memstore.
rgw gc obj min wait = 10
rgw gc processor period = 10
rgw init timeout = 60
EOF
    mkdir -p "$DIR/rgw" "$DIR/crash"

    say "monitor on 127.0.0.1:$mon_port"
    monmaptool --create --fsid "$fsid" --addv a "[v1:127.0.0.1:$mon_port]" "$DIR/monmap" >/dev/null
    ceph-mon -c "$CONF" --mkfs -i a --monmap "$DIR/monmap" >"$DIR/log/mon-mkfs.out" 2>&1 \
        || { cat "$DIR/log/mon-mkfs.out" >&2; die "ceph-mon --mkfs failed"; }
    start_daemon mon ceph-mon -c "$CONF" -f -i a

    say "memstore OSD ($((MEMSTORE_BYTES >> 20)) MiB)"
    local osd_uuid id; osd_uuid="$(uuidgen)"
    # The first command to the monitor waits (--connect-timeout) until it answers.
    id="$(ceph_cli osd new "$osd_uuid")" || { tail -n 20 "$DIR/log/mon.a.log" >&2; die "the monitor did not answer"; }
    [[ "$id" == 0 ]] || die "expected OSD id 0, the monitor gave $id"
    ceph_cli osd crush add osd.0 1.0 root=default >/dev/null 2>&1 || die "ceph osd crush add osd.0 failed"
    ceph-osd -c "$CONF" -i 0 --mkfs --osd-uuid "$osd_uuid" >"$DIR/log/osd-mkfs.out" 2>&1 \
        || { cat "$DIR/log/osd-mkfs.out" >&2; die "ceph-osd --mkfs failed"; }
    start_daemon osd ceph-osd -c "$CONF" -f -i 0
    # No wait for the OSD here: radosgw waits for its pools itself (rgw init timeout).

    say "radosgw on 127.0.0.1:$rgw_port"
    start_daemon rgw radosgw -c "$CONF" -f -n client.rgw
    wait_for "radosgw" 90 rgw_answers "http://127.0.0.1:$rgw_port/"

    local access secret
    access="$(head -c 60 /dev/urandom | base32 | tr -dc 'A-Z0-9' | head -c 20)"
    secret="$(head -c 90 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 40)"
    radosgw-admin -c "$CONF" user create --uid=logstorfs --display-name="logstorfs tests" \
        --access-key="$access" --secret-key="$secret" >"$DIR/log/user-create.out" 2>&1 \
        || { cat "$DIR/log/user-create.out" >&2; die "radosgw-admin user create failed"; }
    create_bucket "http://127.0.0.1:$rgw_port" "$access" "$secret" "$BUCKET" \
        || die "could not create bucket $BUCKET"

    cat > "$DIR/env" <<EOF
export AWS_ENDPOINT=http://127.0.0.1:$rgw_port
export AWS_ACCESS_KEY_ID=$access
export AWS_SECRET_ACCESS_KEY=$secret
export AWS_REGION=$REGION
export AWS_ALLOW_HTTP=true
export AWS_VIRTUAL_HOSTED_STYLE_REQUEST=false
export LOGSTORFS_S3_BUCKET=$BUCKET
EOF
    local ms=$((($(date +%s%N) - start_ns) / 1000000))
    say "up in $((ms / 1000)).$(printf '%03d' $((ms % 1000))) s (bucket s3://$BUCKET); stop it with: scripts/ceph.sh down"
    print_env
    : "$t0"
}

down() {
    [[ -d "$DIR" ]] || return 0
    # Everything is thrown away, so no daemon is asked to shut down cleanly (radosgw takes 5 to
    # 10 s to obey SIGTERM). radosgw first all the same: one that outlives its OSD retries.
    stop_daemon rgw 0
    stop_daemon osd 0
    stop_daemon mon 0
    rm -rf "$DIR"
    say "down"
}

# For fault tests: the gateway stops and comes back while the cluster (and so every object on
# the memstore OSD, which would lose them if it stopped) stays up.
rgw_stop() {
    alive rgw || die "radosgw is not running"
    stop_daemon rgw
    say "radosgw stopped"
}

rgw_start() {
    [[ -f "$DIR/env" ]] || die "no cluster in $DIR (scripts/ceph.sh up)"
    alive rgw && die "radosgw already runs"
    alive osd && alive mon || die "the monitor or the OSD is not running"
    local endpoint; endpoint="$(sed -n 's/^export AWS_ENDPOINT=//p' "$DIR/env")"
    start_daemon rgw radosgw -c "$CONF" -f -n client.rgw
    wait_for "radosgw" 90 rgw_answers "$endpoint/"
    say "radosgw answers again on $endpoint"
}

status() {
    local d
    for d in mon osd rgw; do
        if alive "$d"; then echo "$d: running (pid $(cat "$DIR/$d.pid"))"; else echo "$d: not running"; fi
    done
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    env) print_env ;;
    status) status ;;
    rgw-stop) rgw_stop ;;
    rgw-start) rgw_start ;;
    *) echo "usage: $0 up|down|env|status|rgw-stop|rgw-start" >&2; exit 2 ;;
esac
