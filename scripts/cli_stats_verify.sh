#!/usr/bin/env bash
# `logstorfs stats`, `fsck` and the daemon's log lines on a real mount:
# - stats of a mounted store (by store and by mount point) and of the same store offline: one
#   report, the same JSON keys, the daemon's write counters null offline (never 0), and offline
#   stats changes no byte of the store (every file's contents, mtime and inode compared) and
#   logs nothing (no "checkpoint stale" warning); the next mount uses the checkpoint;
# - the daemon's log: "mounted STORE on MNT" and "unmounted" at the default level, no warning on
#   a clean unmount, -q drops them, -v adds the engine's; under systemd, readiness through
#   NOTIFY_SOCKET and journal priorities when stderr is JOURNAL_STREAM;
# - fsck's exit codes as fsck(8)'s: 0 clean, 4 problems (with what to do next), 8 operational
#   error (not a store, mounted), 16 usage error; a progress bar only on a terminal.
#
#   bash scripts/cli_stats_verify.sh [BINARY]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
[[ $# -ge 1 ]] && LOGSTORFS="$(realpath "$1")"
for tool in fusermount3 python3 script; do
    command -v "$tool" >/dev/null || die "$tool is missing"
done

WORK="$(mktemp -d "${TMPDIR:-/tmp}/logstorfs-verify.XXXXXX")"
MNT="$WORK/mnt"
STORE="$WORK/store"
# Checks mount in subshells too: the mount point is unmounted by path as well.
trap 'cleanup_mounts; fusermount3 -uz "$MNT" 2>/dev/null || true; [[ -n "${KEEP:-}" ]] || rm -rf "$WORK"' EXIT
log "cli stats/fsck/logs on $("$LOGSTORFS" --version), work dir $WORK"

# Every file of the store: contents, size, mtime (ns) and inode.
store_state() {
    (cd "$1" && find . -type f | sort | while read -r f; do
        printf '%s %s %s\n' "$f" "$(sha256sum <"$f" | cut -d' ' -f1)" "$(stat -c '%s %.9Y %i' "$f")"
    done)
}
# fusermount3 -u returns before the daemon has closed the store: wait for its last line.
wait_unmounted_line() { # wait_unmounted_line LOGFILE
    local i
    for i in $(seq 300); do grep -q "unmounted" "$1" && return 0; sleep 0.1; done
    echo "no 'unmounted' line in $1 after 30 s"; return 1
}
json_keys() { python3 -c 'import json,sys; print(" ".join(sorted(json.load(sys.stdin))))'; }
json_field() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

check_here "mount a fresh store" mount_fresh "$STORE" "$MNT" 256M || { summary cli-stats; exit 1; }
mkdir -p "$MNT/d"
head -c 3000000 /dev/urandom >"$MNT/d/f"
sync -f "$MNT/d/f"

t_stats_mounted() {
    local text j1 j2
    text="$("$LOGSTORFS" stats "$MNT")"
    echo "$text"
    [[ "$text" =~ ^usable\ [0-9.]+\ [KMG]iB,\ live\ [0-9.]+\ [KMG]iB\ \([0-9]+%\),\ write\ amplification\ [0-9.]+,\ 1\ group ]]
    j1="$("$LOGSTORFS" stats --json "$MNT")"
    j2="$("$LOGSTORFS" stats --json "$STORE")"
    expect_eq True "$(json_field mounted <<<"$j1")" "mounted (by mount point)"
    expect_eq True "$(json_field mounted <<<"$j2")" "mounted (by store)"
    [[ "$(json_field user_bytes_written <<<"$j1")" -ge 3000000 ]]
    json_keys <<<"$j1" >"$WORK/keys.mounted"
}
check "stats of a mounted store: summary line in human units, JSON by store and mount point" t_stats_mounted

t_fsck_mounted() {
    local rc=0 err
    err="$("$LOGSTORFS" fsck "$STORE" 2>&1)" || rc=$?
    echo "$err"
    expect_eq 8 "$rc" "fsck exit status on a mounted store"
}
check "fsck of a mounted store: operational error (8)" t_fsck_mounted

check_here "clean unmount" unmount "$MNT" || true

t_log_lines() {
    local logf="$STORE/logstorfs.log"
    wait_unmounted_line "$logf"
    cat "$logf"
    grep -q "mounted $STORE on $MNT" "$logf"
    grep -q "unmounted $STORE from $MNT" "$logf"
    if grep -E " (WARN|ERROR) " "$logf"; then echo "warnings or errors in the log of a clean mount"; return 1; fi
}
check "log: mounted and unmounted at the default level, no warning on a clean unmount" t_log_lines

t_stats_offline() {
    local before after text j err
    before="$(store_state "$STORE")"
    text="$("$LOGSTORFS" stats "$STORE" 2>"$WORK/err1")"
    echo "$text"
    j="$("$LOGSTORFS" stats --json "$STORE" 2>"$WORK/err2")"
    after="$(store_state "$STORE")"
    if [[ "$before" != "$after" ]]; then diff <(echo "$before") <(echo "$after"); return 1; fi
    err="$(cat "$WORK/err1" "$WORK/err2")"
    expect_eq "" "$err" "what offline stats logged"
    [[ "$text" =~ ^usable\ .*,\ 1\ group$'\n' ]]
    [[ "$text" != *"write amplification"* ]]
    expect_eq "$(cat "$WORK/keys.mounted")" "$(json_keys <<<"$j")" "JSON keys offline against mounted"
    expect_eq False "$(json_field mounted <<<"$j")" "mounted"
    expect_eq None "$(json_field user_bytes_written <<<"$j")" "user_bytes_written offline"
    expect_eq None "$(json_field write_amplification <<<"$j")" "write_amplification offline"
}
check "stats offline: same keys, daemon counters null, not a byte of the store changed, nothing logged" t_stats_offline

t_fsck_clean() {
    local out rc=0
    out="$("$LOGSTORFS" fsck "$STORE" 2>"$WORK/fsck.err")" || rc=$?
    echo "$out"
    expect_eq 0 "$rc" "fsck exit status on a clean store"
    expect_eq "" "$(cat "$WORK/fsck.err")" "fsck's stderr off a terminal (no progress bar)"
    # On a terminal (a pty from script(1); indicatif draws nothing when TERM is unset or dumb,
    # as it may be in CI), the bar is drawn on stderr.
    TERM=xterm script -qec "$LOGSTORFS fsck $STORE" "$WORK/typescript" >/dev/null
    grep -q "checking segments" "$WORK/typescript"
}
check "fsck of a clean store: 0; a progress bar only on a terminal" t_fsck_clean

t_remount_uses_checkpoint() {
    # Until the mount is live, a daemonising mount logs to the caller's stderr.
    MOUNT_OPTS="-v" mount_fresh "$STORE" "$MNT" 2>"$WORK/mount.err"
    unmount "$MNT"
    cat "$WORK/mount.err"
    grep -q "index checkpoint loaded" "$WORK/mount.err" || { echo "checkpoint not loaded"; return 1; }
    grep -q "open: recovery" "$WORK/mount.err" || { echo "no engine line with -v"; return 1; }
    if grep "stale" "$WORK/mount.err"; then return 1; fi
}
check "after offline stats the next mount (-v: engine lines too) loads the checkpoint" t_remount_uses_checkpoint

t_crash_scan_progress() {
    local pid
    mount_fresh "$STORE" "$MNT"
    echo more >"$MNT/d/g"
    pid="$(daemon_pid "$MNT")"
    kill -9 "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    # No checkpoint after a crash: the mount scans, with a bar on the terminal script(1) gives.
    TERM=xterm script -qec "$LOGSTORFS mount --daemon $STORE $MNT" "$WORK/typescript.mount" >/dev/null
    for _ in $(seq 100); do mountpoint -q "$MNT" && break; sleep 0.1; done
    MOUNTED+=("$MNT")
    expect_eq more "$(cat "$MNT/d/g")" "the file written before the kill"
    unmount "$MNT"
    cat -v "$WORK/typescript.mount"
    grep -q "scanning the store" "$WORK/typescript.mount"
}
check "a mount that scans after kill -9 shows a progress bar on a terminal" t_crash_scan_progress

t_quiet() {
    : >"$STORE/logstorfs.log"
    MOUNT_OPTS="-q" mount_fresh "$STORE" "$MNT"
    unmount "$MNT"
    # Nothing to wait for in the log: wait for the daemon to let go of the store instead.
    for _ in $(seq 300); do "$LOGSTORFS" stats "$STORE" >/dev/null 2>&1 && break; sleep 0.1; done
    cat "$STORE/logstorfs.log"
    if grep "mounted" "$STORE/logstorfs.log"; then return 1; fi
}
check "-q: no info lines" t_quiet

t_systemd() {
    local sock="$WORK/notify" errf="$WORK/journal-stream" pid
    : >"$errf"
    python3 - "$sock" >"$WORK/notified" <<'EOF' &
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
s.settimeout(60)
for _ in range(2):
    print(s.recv(4096).decode().strip(), flush=True)
EOF
    local listener=$!
    for _ in $(seq 50); do [[ -S "$sock" ]] && break; sleep 0.1; done
    # Foreground, as a Type=notify unit runs it; stderr is "the journal".
    NOTIFY_SOCKET="$sock" JOURNAL_STREAM="$(stat -c '%d:%i' "$errf")" \
        "$LOGSTORFS" mount "$STORE" "$MNT" 2>>"$errf" &
    pid=$!
    for _ in $(seq 100); do mountpoint -q "$MNT" && break; sleep 0.1; done
    fusermount3 -u "$MNT"
    wait "$pid"
    wait "$listener"
    cat "$WORK/notified" "$errf"
    expect_eq "READY=1 STOPPING=1" "$(tr '\n' ' ' <"$WORK/notified" | sed 's/ $//')" "notifications"
    grep -q "^<6>mounted $STORE on $MNT" "$errf"
    grep -q "^<6>unmounted" "$errf"
}
check "systemd: READY=1 once mounted, STOPPING=1 at unmount; journal priorities on JOURNAL_STREAM" t_systemd

t_fsck_codes() {
    local rc out empty="$WORK/empty" bad="$WORK/bad"
    mkdir -p "$empty"
    rc=0; "$LOGSTORFS" fsck 2>/dev/null || rc=$?
    expect_eq 16 "$rc" "fsck without a store"
    rc=0; "$LOGSTORFS" fsck --no-such-option "$STORE" 2>/dev/null || rc=$?
    expect_eq 16 "$rc" "fsck with an unknown option"
    rc=0; "$LOGSTORFS" fsck "$empty" 2>/dev/null || rc=$?
    expect_eq 8 "$rc" "fsck of a directory without a store"
    cp -a "$STORE" "$bad"
    printf '\x55' | dd of="$bad/superblock" bs=1 seek=13 conv=notrunc status=none
    rc=0; out="$("$LOGSTORFS" fsck "$bad" 2>&1)" || rc=$?
    echo "$out"
    expect_eq 4 "$rc" "fsck of a damaged store"
    grep -q "^What to do next:" <<<"$out"
}
check "fsck exit codes: 16 usage, 8 not a store, 4 problems (and what to do next)" t_fsck_codes

summary cli-stats
