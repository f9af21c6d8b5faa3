# shellcheck shell=bash
# Shared helpers for the real-mount scripts. Source it; do not execute it.
#
#   mount_fresh STORE MNT [SIZE]   mount STORE (created if missing) on MNT (daemonised) and wait
#                                  until it is mounted
#   unmount MNT                    fusermount3 -u, retried; fails if MNT stays mounted
#   check NAME CMD...              run CMD (a command or shell function) with `set -e`,
#                                  print PASS/FAIL, count the result
#   check_here NAME CMD...         like check, in the current shell; returns CMD's status
#   summary LABEL                  print "LABEL: N passed, N failed"; returns 1 if any failed
#
# Environment:
#   LOGSTORFS    the binary (default: $CARGO_TARGET_DIR/release/logstorfs, or <repo>/target/release/logstorfs)
#   MOUNT_CMD    if set, mount with "$MOUNT_CMD STORE MNT" instead of logstorfs, STORE being a
#                directory (used to validate the scripts themselves, e.g. MOUNT_CMD=bindfs)
#   MOUNT_OPTS   extra options for the mount command, e.g. "-o allow_other,default_permissions"
#   RESULTS_FILE if set, summary appends "LABEL PASSED FAILED" to it (scripts/test.sh reads it)

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOGSTORFS="${LOGSTORFS:-${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/logstorfs}"
MOUNT_CMD="${MOUNT_CMD:-}"
MOUNT_OPTS="${MOUNT_OPTS:-}"
PASSED=0
FAILED=0
FAILED_NAMES=()
MOUNTED=()          # mountpoints mounted by this script, unmounted by cleanup_mounts

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { printf 'FATAL: %s\n' "$*" >&2; exit 1; }

# Which file system backs the mount, as a label for the output.
backend_name() { if [[ -n "$MOUNT_CMD" ]]; then echo "${MOUNT_CMD%% *}"; else echo logstorfs; fi; }

mount_fresh() {
    local store="$1" mnt="$2" size="${3:-}"
    mkdir -p "$mnt"
    if mountpoint -q "$mnt"; then die "mount_fresh: $mnt is already a mountpoint"; fi
    if [[ -n "$MOUNT_CMD" ]]; then
        mkdir -p "$store"
        # shellcheck disable=SC2086
        $MOUNT_CMD $MOUNT_OPTS "$store" "$mnt" || { echo "mount command failed: $MOUNT_CMD $MOUNT_OPTS $store $mnt" >&2; return 1; }
    else
        [[ -x "$LOGSTORFS" ]] || die "logstorfs binary not found at $LOGSTORFS (cargo build --release)"
        local args=(mount --daemon --create)
        [[ -n "$size" ]] && args+=(--size "$size")
        # shellcheck disable=SC2206
        [[ -n "$MOUNT_OPTS" ]] && args+=($MOUNT_OPTS)
        "$LOGSTORFS" "${args[@]}" "$store" "$mnt" || { echo "mount failed: $LOGSTORFS ${args[*]} $store $mnt" >&2; return 1; }
    fi
    local i
    for i in $(seq 1 100); do
        if mountpoint -q "$mnt"; then MOUNTED+=("$mnt"); return 0; fi
        sleep 0.1
    done
    echo "mount_fresh: $mnt not mounted after 10 s" >&2
    return 1
}

unmount() {
    local mnt="$1" i
    for i in 1 2 3 4 5 6 7 8 9 10; do
        if ! mountpoint -q "$mnt" 2>/dev/null && ! grep -qs " $(realpath -m "$mnt") " /proc/mounts; then
            _forget_mount "$mnt"; return 0
        fi
        fusermount3 -u "$mnt" 2>/dev/null && { _forget_mount "$mnt"; _wait_daemon_exit "$mnt"; return 0; }
        sleep 0.5
    done
    echo "unmount: $mnt is still mounted after 10 attempts" >&2
    return 1
}

# After a clean unmount the daemon may still be flushing; wait (max 30 s) until it exits so that
# a remount does not race with it.
_wait_daemon_exit() {
    local pid i
    pid="$(daemon_pid "$1" || true)"
    [[ -z "$pid" ]] && return 0
    for i in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    echo "warning: daemon $pid for $1 still running 30 s after unmount" >&2
}

_forget_mount() {
    local m keep=()
    for m in "${MOUNTED[@]}"; do [[ "$m" != "$1" ]] && keep+=("$m"); done
    MOUNTED=("${keep[@]}")
}

# Unmount everything this script mounted (for `trap cleanup_mounts EXIT`). Lazy as a last resort.
cleanup_mounts() {
    local m
    for m in "${MOUNTED[@]}"; do
        unmount "$m" 2>/dev/null || fusermount3 -uz "$m" 2>/dev/null || true
    done
    MOUNTED=()
}

# PID of the FUSE daemon serving MNT: the process whose argv holds MNT as one argument (as given
# or as an absolute path). Prints nothing and returns 1 if there is none.
daemon_pid() {
    local mnt="$1" abs p arg
    abs="$(realpath -m "$mnt")"
    for p in /proc/[0-9]*; do
        [[ "${p#/proc/}" == "$$" || "${p#/proc/}" == "$BASHPID" ]] && continue
        while IFS= read -r -d '' arg; do
            if [[ "$arg" == "$mnt" || "$arg" == "$abs" ]]; then
                # skip shells and other scripts that merely mention the path
                case "$(cat "$p/comm" 2>/dev/null)" in bash|sh|timeout|sudo) break ;; esac
                echo "${p#/proc/}"; return 0
            fi
        done 2>/dev/null < "$p/cmdline"
    done
    return 1
}

check() {
    local name="$1"; shift
    local out rc
    out="$(mktemp)"
    set +e
    ( set -e; "$@" ) >"$out" 2>&1
    rc=$?
    set -e
    if [[ $rc -eq 0 ]]; then
        PASSED=$((PASSED + 1))
        printf 'PASS  %s\n' "$name"
    else
        FAILED=$((FAILED + 1))
        FAILED_NAMES+=("$name")
        printf 'FAIL  %s (exit %d)\n' "$name" "$rc"
        sed -e 's/^/      | /' "$out" | tail -n 20
    fi
    rm -f "$out"
    return 0
}

# Like check, but runs CMD in the current shell (needed for mount_fresh/unmount, which keep
# track of mounts in shell variables). CMD must signal failure by its return status.
check_here() {
    local name="$1" rc; shift
    set +e; "$@"; rc=$?; set -e
    if [[ $rc -eq 0 ]]; then
        PASSED=$((PASSED + 1)); printf 'PASS  %s\n' "$name"
    else
        FAILED=$((FAILED + 1)); FAILED_NAMES+=("$name"); printf 'FAIL  %s (exit %d)\n' "$name" "$rc"
    fi
    return $rc
}

summary() {
    local label="$1" n
    echo "----"
    if [[ $FAILED -gt 0 ]]; then
        echo "failed checks:"
        for n in "${FAILED_NAMES[@]}"; do echo "  - $n"; done
    fi
    echo "$label: $PASSED passed, $FAILED failed"
    [[ -n "${RESULTS_FILE:-}" ]] && echo "$label $PASSED $FAILED" >> "$RESULTS_FILE"
    [[ $FAILED -eq 0 ]]
}

# Assertion helpers for use inside check bodies.
expect_eq() { # expect_eq EXPECTED GOT [WHAT]
    if [[ "$1" != "$2" ]]; then echo "${3:-value}: expected '$1', got '$2'"; return 1; fi
}
expect_fail_msg() { # expect_fail_msg MESSAGE CMD... : CMD must fail and print MESSAGE on stderr
    local msg="$1" err rc; shift
    set +e; err="$("$@" 2>&1)"; rc=$?; set -e
    if [[ $rc -eq 0 ]]; then echo "expected '$*' to fail, it succeeded"; return 1; fi
    if [[ "$err" != *"$msg"* ]]; then echo "expected '$msg' from '$*', got: $err"; return 1; fi
}

# Make `trap ... EXIT` (unmounting) run when the script is stopped by a signal, e.g. by timeout.
trap 'exit 143' TERM
trap 'exit 130' INT

# Unmount leftover FUSE mounts under the scripts' work directories (a script killed with SIGKILL
# cannot clean up after itself). Only dead mounts (the daemon is gone: stat fails) at paths
# matching ${TMPDIR:-/tmp}/logstorfs-{verify,ext}.*, so that concurrent runs are left alone.
unmount_leftovers() {
    local base="${TMPDIR:-/tmp}" m
    while read -r _ m _; do
        m="$(printf '%b' "$m")"
        case "$m" in
            "$base"/logstorfs-verify.*|"$base"/logstorfs-ext.*)
                stat -t "$m" >/dev/null 2>&1 && continue
                echo "unmounting leftover $m"
                fusermount3 -u "$m" 2>/dev/null || fusermount3 -uz "$m" 2>/dev/null || true ;;
        esac
    done < <(grep ' fuse' /proc/mounts || true)
}


# watchdog SECONDS CMD...: run CMD; if it is still running after SECONDS, print the stacks of
# every thread of the test binaries it started (gdb, when installed) so that a hang can be
# diagnosed from the CI log, then kill it. Returns CMD's status, or 124 after a hang.
watchdog() {
    local limit="$1" pid waited=0 rc; shift
    "$@" & pid=$!
    while kill -0 "$pid" 2>/dev/null && (( waited < limit )); do sleep 1; waited=$((waited + 1)); done
    if kill -0 "$pid" 2>/dev/null; then
        echo "WATCHDOG: '$*' still running after ${limit}s: a hang. Stacks of its test processes:"
        local p
        for p in $(pgrep -f 'target/[^ ]*/deps/' || true); do
            echo "---- pid $p: $(tr '\0' ' ' < /proc/$p/cmdline 2>/dev/null | cut -c1-200)"
            if command -v gdb >/dev/null; then
                timeout 60 gdb -p "$p" -batch -ex 'thread apply all bt' 2>/dev/null \
                    | grep -E '^(Thread|#)' | grep -v '^#.* in (syscall|__futex|futex_wait)' | head -400
            fi
        done
        pkill -9 -f 'target/[^ ]*/deps/' 2>/dev/null || true
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        return 124
    fi
    set +e; wait "$pid"; rc=$?; set -e
    return $rc
}

# ---- comparisons with a kernel ext4 ----
# Scripts that compare logstorfs with ext4 run the same calls in $MNT (a logstorfs mount they
# make) and $EXT (a fresh ext4 loop mount made here).
# with_ext4 PREFIX SIZE MOUNT_OPTIONS [MKFS_OPTION...]: makes $WORK (mode 755: an unprivileged
# test user must reach both mounts), $MNT and $EXT, loop-mounts an ext4 of SIZE on $EXT, and on
# exit unmounts everything and removes $WORK (KEEP=1 keeps it). A script with more to undo
# first defines `extra_cleanup`.
with_ext4() {
    local prefix=$1 size=$2 options=$3
    shift 3
    WORK="$(mktemp -d "${TMPDIR:-/tmp}/$prefix.XXXXXX")"
    chmod 755 "$WORK"
    MNT="$WORK/mnt"
    EXT="$WORK/ext4"
    mkdir -p "$MNT" "$EXT"
    EXT_MOUNTED=0
    trap ext4_cleanup EXIT
    truncate -s "$size" "$WORK/ext4.img"
    mkfs.ext4 -q -F "$@" "$WORK/ext4.img"
    mount -o "loop${options:+,$options}" "$WORK/ext4.img" "$EXT" || die "cannot loop-mount ext4"
    EXT_MOUNTED=1
}
ext4_cleanup() {
    if declare -F extra_cleanup >/dev/null; then extra_cleanup; fi
    cleanup_mounts
    [[ $EXT_MOUNTED == 1 ]] && umount "$EXT" 2>/dev/null
    if [[ "${KEEP:-0}" == 1 ]]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
# test_user: the unprivileged user the comparisons run calls as (TEST_USER, and its TU and TG),
# created if missing, and allow_other open to it.
test_user() {
    TEST_USER=logstorfs-test
    id "$TEST_USER" >/dev/null 2>&1 || useradd --system --user-group --no-create-home \
        --shell /usr/sbin/nologin "$TEST_USER" || die "cannot create user $TEST_USER"
    TU="$(id -u "$TEST_USER")"
    TG="$(id -g "$TEST_USER")"
    grep -qs '^user_allow_other' /etc/fuse.conf || echo user_allow_other >> /etc/fuse.conf
}
