#!/usr/bin/env bash
# THE test command: installs what is missing, builds, runs the unit and integration tests, then
# the real-mount scripts (scripts/mount_verify.sh, scripts/external.sh). Meant for a fresh
# Debian machine as root (CI runs it through .ci/run). Exits non-zero if anything failed.
#
#   bash scripts/test.sh
#
# Env: SKIP_INSTALL=1 (do not apt-get/cargo install), STAGES="build unit mutants verify external"
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
export PATH="$HOME/.cargo/bin:$PATH"

STAGES="${STAGES:-install build unit mutants verify external}"
RESULTS_FILE="$(mktemp)"
export RESULTS_FILE
STAGE_FAILED=()
TIMINGS=()
T0=$SECONDS
trap 'cleanup_mounts; unmount_leftovers; rm -f "$RESULTS_FILE"' EXIT

stage() { [[ " $STAGES " == *" $1 "* ]]; }
banner() { echo; echo "==================== $* ===================="; }
timed() { # timed LABEL CMD...: run CMD, record its time; failure is recorded, not fatal
    local label="$1" start=$SECONDS rc; shift
    banner "$label"
    set +e; "$@"; rc=$?; set -e
    TIMINGS+=("$(printf '%-28s %5ds  %s' "$label" $((SECONDS - start)) "$([[ $rc -eq 0 ]] && echo ok || echo "FAILED (exit $rc)")")")
    [[ $rc -eq 0 ]] || STAGE_FAILED+=("$label")
    return $rc
}
print_timings() {
    banner "timings"
    printf '%s\n' "${TIMINGS[@]}"
    printf '%-28s %5ds\n' total $((SECONDS - T0))
}

# ---------------- install ----------------
APT_UPDATED=0
apt_install() { # apt_install PACKAGE...: install the packages that dpkg says are absent
    local missing=() p
    for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    [[ $(id -u) -eq 0 ]] || die "need root to install: ${missing[*]}"
    if [[ $APT_UPDATED -eq 0 ]]; then apt-get update -qq || die "apt-get update failed"; APT_UPDATED=1; fi
    echo "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null \
        || die "apt-get install ${missing[*]} failed"
}
install_deps() {
    command -v fusermount3 >/dev/null || apt_install fuse3
    command -v fio >/dev/null || apt_install fio
    command -v stress-ng >/dev/null || apt_install stress-ng
    command -v sqlite3 >/dev/null || apt_install sqlite3
    command -v setfattr >/dev/null || apt_install attr
    command -v setfacl >/dev/null || apt_install acl
    command -v rsync >/dev/null || apt_install rsync
    command -v pkg-config >/dev/null || apt_install pkg-config
    apt_install libacl1-dev          # pjdfstest links against libacl
    # scripts/export_nfs.sh: a userspace NFS server (FSAL_VFS opens file handles) and client
    apt_install nfs-ganesha nfs-ganesha-vfs libnfs-utils rpcbind
    command -v cargo >/dev/null || die "cargo not found: install Rust (rustup) first"
    local t
    if ! command -v fsx >/dev/null; then
        t=$SECONDS; echo "cargo install fsx --locked"
        cargo install fsx --locked --quiet || die "cargo install fsx failed"
        echo "fsx installed in $((SECONDS - t)) s"
    fi
    if ! command -v pjdfstest >/dev/null; then
        t=$SECONDS; echo "cargo install pjdfstest --locked"
        cargo install pjdfstest --locked --quiet || die "cargo install pjdfstest failed"
        echo "pjdfstest installed in $((SECONDS - t)) s"
    fi
    for t in fusermount3 fio stress-ng sqlite3 setfattr getfattr rsync fsx pjdfstest; do
        command -v "$t" >/dev/null || die "$t is still missing after installation"
    done
    modprobe fuse 2>/dev/null || true
    [[ -c /dev/fuse ]] || die "/dev/fuse does not exist (no FUSE in this kernel/container?): the real-mount tests cannot run"
    # user_allow_other lets non-root test users use allow_other mounts; harmless as root
    grep -qs '^user_allow_other' /etc/fuse.conf || echo user_allow_other >> /etc/fuse.conf
    echo "fuse3 $(fusermount3 -V 2>&1 | awk '{print $NF}'), $(fio --version), $(stress-ng --version | awk '{print $3}') stress-ng, $(fsx -V), $(pjdfstest -V)"
}

# ---------------- run ----------------
if stage install; then
    if [[ "${SKIP_INSTALL:-0}" == 1 ]]; then
        echo "SKIP_INSTALL=1: not installing"
    else
        timed "install dependencies" install_deps   # dies loudly on any failure
    fi
fi
[[ -c /dev/fuse ]] || die "/dev/fuse does not exist: the real-mount tests cannot run"

if stage build; then
    timed "cargo build --release" cargo build --release || { print_timings; die "build failed"; }
fi
if stage unit; then
    # A hung test must fail CI in minutes with its stacks, not eat the whole CI budget.
    timed "cargo test --release" watchdog 900 cargo test --release || true
    # The engine's threads under the shuttle scheduler: random schedules, replayable by seed.
    # A target directory of their own: a build with the feature must never replace the
    # target/release/logstorfs that the real-mount scripts run (its locks need the scheduler).
    scheduled() { (export CARGO_TARGET_DIR="$PWD/target/shuttle"; watchdog "$@"); }
    timed "engine schedules (shuttle)" scheduled 900 cargo test --release --features shuttle \
        --test engine_schedules || true
    timed "write gate schedules (shuttle)" scheduled 300 cargo test --release --features shuttle \
        --lib gate_schedules || true
    # Again without optimisation, so that the engine's debug assertions run (a segment read
    # after it was freed was caught this way); the long endurance and model tests only once.
    timed "cargo test (debug assertions)" watchdog 900 cargo test --lib --test fs_groups \
        --test fs_concurrency --test fs_data --test fs_namespace --test fs_persistence \
        --test fsck || true
fi
if stage mutants; then
    # Each invariant of DESIGN.md section 4 broken on purpose must make a test fail.
    timed "scripts/mutants.py" python3 scripts/mutants.py || true
fi
if stage verify; then
    timed "scripts/mount_verify.sh" timeout --kill-after=30 1200 bash scripts/mount_verify.sh || true
    grep -q '^mount-verify ' "$RESULTS_FILE" || echo "mount-verify 0 1" >> "$RESULTS_FILE"   # crashed before its summary
    # Set-user-ID, set-group-ID and capabilities through each path, as an unprivileged user,
    # compared with a kernel ext4 loop mount.
    timed "scripts/killpriv.sh" timeout --kill-after=30 300 bash scripts/killpriv.sh || true
    grep -q '^killpriv ' "$RESULTS_FILE" || echo "killpriv 0 1" >> "$RESULTS_FILE"
    # fallocate's modes, sizes, st_blocks, contents and errno, compared with a kernel ext4.
    timed "scripts/fallocate_vs_ext4.sh" timeout --kill-after=30 300 bash scripts/fallocate_vs_ext4.sh || true
    grep -q '^fallocate-vs-ext4 ' "$RESULTS_FILE" || echo "fallocate-vs-ext4 0 1" >> "$RESULTS_FILE"
    # File handles after the kernel forgot the inodes, against ext4; NFS re-export by ganesha.
    timed "scripts/export_nfs.sh" timeout --kill-after=30 180 bash scripts/export_nfs.sh || true
    grep -q '^export-nfs ' "$RESULTS_FILE" || echo "export-nfs 0 1" >> "$RESULTS_FILE"
    # Inode flags (chattr/lsattr) and their refusals, renameat2 and an overlayfs upper on the
    # mount, the O_TMPFILE/statx fallback: as root and as an unprivileged user, against ext4.
    timed "scripts/chattr_vs_ext4.sh" timeout --kill-after=30 300 bash scripts/chattr_vs_ext4.sh || true
    grep -q '^chattr-vs-ext4 ' "$RESULTS_FILE" || echo "chattr-vs-ext4 0 1" >> "$RESULTS_FILE"
    # The same random system calls on the mount and on ext4, every result and errno compared.
    timed "scripts/fsdiff.sh" timeout --kill-after=30 180 bash scripts/fsdiff.sh || true
    grep -q '^fsdiff ' "$RESULTS_FILE" || echo "fsdiff 0 1" >> "$RESULTS_FILE"
    # Default ACL inheritance, ACL enforcement (FUSE_POSIX_ACL) and atime rules, compared with
    # a kernel ext4 loop mount (needs setfacl, from the acl package installed above).
    timed "scripts/acl_vs_ext4.sh" timeout --kill-after=30 300 bash scripts/acl_vs_ext4.sh || true
    grep -q '^acl-vs-ext4 ' "$RESULTS_FILE" || echo "acl-vs-ext4 0 1" >> "$RESULTS_FILE"
    # lseek(SEEK_DATA/SEEK_HOLE) and copy_file_range, cp --sparse and tar --sparse, against a
    # kernel ext4 loop mount.
    timed "scripts/seek_copy_vs_ext4.sh" timeout --kill-after=30 300 bash scripts/seek_copy_vs_ext4.sh || true
    grep -q '^seek-copy ' "$RESULTS_FILE" || echo "seek-copy 0 1" >> "$RESULTS_FILE"
fi
if stage external; then
    timed "scripts/external.sh" timeout --kill-after=30 1800 bash scripts/external.sh || true
    grep -q '^external ' "$RESULTS_FILE" || echo "external 0 1" >> "$RESULTS_FILE"
    timed "scripts/crash_kill9.sh" timeout --kill-after=30 600 bash scripts/crash_kill9.sh || true; grep -q '^crash-kill9 ' "$RESULTS_FILE" || echo "crash-kill9 0 1" >> "$RESULTS_FILE"
    timed "scripts/crash_powercut_fs.sh" timeout --kill-after=30 600 bash scripts/crash_powercut_fs.sh || true; grep -q '^crash-powercut-fs ' "$RESULTS_FILE" || echo "crash-powercut-fs 0 1" >> "$RESULTS_FILE"
    timed "scripts/powercut_replay.sh" timeout --kill-after=30 600 bash scripts/powercut_replay.sh || true; grep -q '^powercut-replay ' "$RESULTS_FILE" || echo "powercut-replay 0 1" >> "$RESULTS_FILE"
    timed "scripts/crash_damage.sh" timeout --kill-after=30 300 bash scripts/crash_damage.sh || true; grep -q '^crash-damage ' "$RESULTS_FILE" || echo "crash-damage 0 1" >> "$RESULTS_FILE"
    timed "scripts/limits.sh" timeout --kill-after=30 900 bash scripts/limits.sh || true
    grep -q '^limits ' "$RESULTS_FILE" || echo "limits 0 1" >> "$RESULTS_FILE"
fi

print_timings
banner "summary"
P=0; F=0
while read -r label p f; do
    printf '%s: %d passed, %d failed\n' "$label" "$p" "$f"
    P=$((P + p)); F=$((F + f))
done < "$RESULTS_FILE"
if [[ ${#STAGE_FAILED[@]} -gt 0 ]]; then
    echo "failed stages: $(IFS=,; echo "${STAGE_FAILED[*]}" | sed 's/,/, /g')"
fi
echo "script checks: $P passed, $F failed"
[[ $F -eq 0 && ${#STAGE_FAILED[@]} -eq 0 ]]
