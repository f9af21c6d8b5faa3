#!/usr/bin/env bash
# THE test command: installs what is missing, builds, runs the unit and integration tests, then
# the real-mount scripts (scripts/mount_verify.sh, scripts/external.sh). Meant for a fresh
# Debian machine as root (CI runs it through .ci/run). Exits non-zero if anything failed.
#
#   bash scripts/test.sh
#
# Env: SKIP_INSTALL=1 (do not apt-get/cargo install), STAGES="build unit object mutants verify external"
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
export PATH="$HOME/.cargo/bin:$PATH"

STAGES="${STAGES:-install build unit object mutants verify external}"
RESULTS_FILE="$(mktemp)"
export RESULTS_FILE
STAGE_FAILED=()
TIMINGS=()
T0=$SECONDS
trap 'cleanup_mounts; unmount_leftovers; rm -f "$RESULTS_FILE"; CEPH_DIR=/tmp/logstorfs-ceph-tests bash scripts/ceph.sh down 2>/dev/null || true' EXIT

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
script_checks() { # script_checks SCRIPT SECONDS SUMMARY: run a check script under a time limit;
    # a script that died before printing its summary line counts as one failed check.
    timed "scripts/$1" timeout --kill-after=30 "$2" bash "scripts/$1" || true
    grep -q "^$3 " "$RESULTS_FILE" || echo "$3 0 1" >> "$RESULTS_FILE"
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
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ${APT_NO_RECOMMENDS:+--no-install-recommends} "${missing[@]}" >/dev/null \
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
    command -v script >/dev/null || apt_install bsdutils   # a terminal for fsck's progress bar
    command -v pkg-config >/dev/null || apt_install pkg-config
    apt_install libacl1-dev          # pjdfstest links against libacl
    # scripts/export_nfs.sh: a userspace NFS server (FSAL_VFS opens file handles) and client
    apt_install nfs-ganesha nfs-ganesha-vfs libnfs-utils rpcbind
    command -v cargo >/dev/null || die "cargo not found: install Rust (rustup) first"
    local t
    # scripts/ceph.sh: a single-node Ceph cluster whose S3 gateway tests/object_s3.rs uses
    # (about 57 MB without the recommended packages; ~18 s with apt-get update here).
    if ! command -v radosgw >/dev/null || ! command -v ceph-mon >/dev/null || ! command -v ceph-osd >/dev/null; then
        t=$SECONDS
        APT_NO_RECOMMENDS=1 apt_install ceph-mon ceph-osd radosgw ceph-common
        echo "ceph packages installed in $((SECONDS - t)) s"
    fi
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
    for t in fusermount3 fio stress-ng sqlite3 setfattr getfattr rsync fsx pjdfstest ceph-mon ceph-osd radosgw radosgw-admin; do
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
    # Style and lints: rustfmt's layout, and clippy with warnings as errors, which also enforces
    # the engine's concurrency facade (clippy.toml: no std/parking_lot locks, threads or clock
    # in src/engine outside engine/concurrency.rs), with and without the scheduler.
    timed "cargo fmt --check" cargo fmt --check || true
    # ARCHITECTURE.md names every module, its layer rules hold, its invariants name real tests.
    timed "scripts/arch_map_check.py" python3 scripts/arch_map_check.py || true
    timed "cargo clippy -D warnings" cargo clippy --release --all-targets -- -D warnings || true
    timed "cargo clippy (shuttle)" env CARGO_TARGET_DIR="$PWD/target/shuttle" \
        cargo clippy --release --all-targets --features shuttle -- -D warnings || true
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
if stage object; then
    # The object tier against a real S3 gateway (radosgw on a memstore OSD, scripts/ceph.sh):
    # up, tests/object_s3.rs (a missing gateway fails them), then scripts/mirror_outage.sh (a
    # minute with radosgw stopped under a mirrored mount; "mirror-outage" in the summary), down;
    # ~20 s after the build, and ~75 s for the outage.
    timed "object tier (Ceph S3 gateway)" watchdog 700 bash scripts/object_s3.sh || true
    # The object tier's code and tests are built only with the `s3` feature: linted here.
    timed "cargo clippy (s3)" cargo clippy --release --all-targets --features s3 -- -D warnings || true
fi
if stage mutants; then
    # Each invariant of DESIGN.md section 4 broken on purpose must make a test fail.
    # Its log is kept so that the summary can name the mutants that failed.
    # CI runs one of three shards, chosen by the commit count, so each mutant runs every third
    # commit and the run stays well under an hour; MUTANTS_SHARD=0/1 runs all of them.
    mkdir -p target
    export MUTANTS_SHARD="${MUTANTS_SHARD:-$(( $(git rev-list --count HEAD 2>/dev/null || echo 0) % 3 ))/3}"
    timed "scripts/mutants.py" bash -c 'set -o pipefail; python3 scripts/mutants.py | tee target/mutants.log' || true
fi
if stage verify; then
    script_checks mount_verify.sh 1200 mount-verify
    # format, mount -t fuse.logstorfs and an fstab line, umount, refusals on live mounts, -o ro.
    script_checks cli_verify.sh 180 cli-verify
    # Set-user-ID, set-group-ID and capabilities through each path, as an unprivileged user,
    # compared with a kernel ext4 loop mount.
    script_checks killpriv.sh 300 killpriv
    # The same with the writeback cache, whose kernel adds a ctime to the SETATTR of chown(-1, -1).
    MOUNT_OPTS="-o writeback_cache" script_checks killpriv.sh 300 killpriv
    # fallocate's modes, sizes, st_blocks, contents and errno, compared with a kernel ext4.
    script_checks fallocate_vs_ext4.sh 300 fallocate-vs-ext4
    # File handles after the kernel forgot the inodes, against ext4; NFS re-export by ganesha.
    script_checks export_nfs.sh 180 export-nfs
    # Inode flags (chattr/lsattr) and their refusals, renameat2 and an overlayfs upper on the
    # mount, the O_TMPFILE/statx fallback: as root and as an unprivileged user, against ext4.
    script_checks chattr_vs_ext4.sh 300 chattr-vs-ext4
    # The same random system calls on the mount and on ext4, every result and errno compared.
    script_checks fsdiff.sh 180 fsdiff
    # Default ACL inheritance, ACL enforcement (FUSE_POSIX_ACL) and atime rules, compared with
    # a kernel ext4 loop mount (needs setfacl, from the acl package installed above).
    script_checks acl_vs_ext4.sh 300 acl-vs-ext4
    # lseek(SEEK_DATA/SEEK_HOLE) and copy_file_range, cp --sparse and tar --sparse, against a
    # kernel ext4 loop mount.
    script_checks seek_copy_vs_ext4.sh 300 seek-copy
    # stats mounted and offline (no byte written offline), the daemon's log lines, systemd
    # readiness, fsck's exit codes and progress bar.
    script_checks cli_stats_verify.sh 180 cli-stats
fi
if stage external; then
    script_checks external.sh 1800 external
    script_checks crash_kill9.sh 600 crash-kill9
    # fsx and kill -9 rounds again with the kernel's writeback cache (-o writeback_cache): writes
    # reach the daemon late and merged, and what fsync confirmed must still survive a kill.
    ONLY=fsx FSX_OPS=20000 MOUNT_OPTS="-o writeback_cache" script_checks external.sh 600 external
    ROUNDS=3 MOUNT_OPTS="--group-split-size 256K -o writeback_cache" \
        script_checks crash_kill9.sh 300 crash-kill9
    script_checks crash_powercut_fs.sh 600 crash-powercut-fs
    script_checks powercut_replay.sh 600 powercut-replay
    script_checks crash_damage.sh 300 crash-damage
    script_checks limits.sh 900 limits
fi

print_timings
banner "summary"
P=0; F=0
while read -r label p f; do
    printf '%s: %d passed, %d failed\n' "$label" "$p" "$f"
    P=$((P + p)); F=$((F + f))
done < "$RESULTS_FILE"
if [[ " ${STAGE_FAILED[*]} " == *" scripts/mutants.py "* ]]; then
    grep -E "^failed mutants:" target/mutants.log || echo "mutants: no summary line (see the stage's log)"
fi
if [[ ${#STAGE_FAILED[@]} -gt 0 ]]; then
    echo "failed stages: $(IFS=,; echo "${STAGE_FAILED[*]}" | sed 's/,/, /g')"
fi
echo "script checks: $P passed, $F failed"
[[ $F -eq 0 && ${#STAGE_FAILED[@]} -eq 0 ]]
