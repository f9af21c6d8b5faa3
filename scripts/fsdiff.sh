#!/usr/bin/env bash
# The differential tester (src/bin/fsdiff): the same random system calls on a fresh logstorfs
# mount and on a kernel ext4 loop mount, every result, errno, file checksum and the tree
# compared. Runs consecutive seeds for FSDIFF_SECONDS (the first seed is printed; a divergence
# prints the op log, which `fsdiff --replay` reruns). The ops known to differ today are listed,
# with their reasons, in src/bin/fsdiff/known.rs and left out.
#
#   bash scripts/fsdiff.sh [BINARY]
#
# Needs root (loop mount, chown). Env: FSDIFF_SECONDS (default 60), FSDIFF_SEED (default: from
# the clock), FSDIFF_COUNT (ops per seed, 400), FSDIFF_ARGS (more fsdiff arguments, e.g.
# "--all" or "--ops fallocate,punch_hole"), FSDIFF (the fsdiff binary), KEEP=1, TMPDIR.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
[[ $# -ge 1 ]] && LOGSTORFS="$(realpath "$1")"
FSDIFF="${FSDIFF:-$(dirname "$LOGSTORFS")/fsdiff}"

for tool in mkfs.ext4 fusermount3 mountpoint; do
    command -v "$tool" >/dev/null || die "$tool is missing"
done
[[ -x "$FSDIFF" ]] || die "fsdiff binary not found at $FSDIFF (cargo build --release)"
[[ $(id -u) -eq 0 ]] || die "run as root (loop mount, chown)"

SECONDS_BUDGET="${FSDIFF_SECONDS:-60}"
SEED="${FSDIFF_SEED:-$(( $(date +%s%N) % 1000000000 ))}"
# 1 KiB inodes: user xattrs stay in the inode, so that ext4's st_blocks counts data alone.
# ext4 is mounted nodev, as the mount under test is by FUSE's default (an open of a whiteout, a
# 0/0 device, is then EACCES on both).
with_ext4 logstorfs-verify 512M nodev -I 1024

log "fsdiff on $(backend_name) against ext4, first seed $SEED, ${SECONDS_BUDGET}s, work dir $WORK"
check_here "mount fresh store" mount_fresh "$WORK/store" "$MNT" 1G || { summary fsdiff; exit 1; }

t_fsdiff() {
    # shellcheck disable=SC2086
    "$FSDIFF" --test "$MNT/w" --reference "$EXT/w" --seed "$SEED" --duration "$SECONDS_BUDGET" \
        --count "${FSDIFF_COUNT:-400}" --log-dir "$WORK" ${FSDIFF_ARGS:-}
}
# Not `check`: its output is cut to 20 lines, and a divergence's op log must be shown whole.
t_fsdiff_logged() {
    local rc=0
    t_fsdiff || rc=$?
    if [[ $rc -ne 0 ]]; then
        echo "replay: $FSDIFF --test DIR --reference DIR --replay FILE (the op log above)"
    fi
    return $rc
}
# Half the time without copy_file_range and the allocating fallocate modes, so that SEEK_DATA/SEEK_HOLE and st_blocks are checked too (see
# copy_keeps_holes and allocated_is_data in src/bin/fsdiff/known.rs).
HALF=$(( SECONDS_BUDGET / 2 ))
SECONDS_BUDGET=$HALF check_here "fsdiff: seeds from $SEED for ${HALF}s agree with ext4" t_fsdiff_logged || true
SEED=$(( SEED + 100000 )) SECONDS_BUDGET=$HALF FSDIFF_ARGS="${FSDIFF_ARGS:-} --skip copy_file_range,fallocate,fallocate_keep_size,zero_range" \
    check_here "fsdiff without copy_file_range or allocation: seeds from $(( SEED + 100000 )) for ${HALF}s agree with ext4" \
    t_fsdiff_logged || true
# Seeds that once diverged where fsdiff, not logstorfs, was wrong, run every time. 728266803
# (without allocation): unlink(d1/f0) with d1 -> s0 and s0 immutable is EPERM on ext4 and
# EISDIR through FUSE, a known difference (flags_after_vfs) once the flag check follows d1.
SEED=728266803 SECONDS_BUDGET=0 FSDIFF_ARGS="${FSDIFF_ARGS:-} --skip copy_file_range,fallocate,fallocate_keep_size,zero_range" \
    check_here "fsdiff: the seeds that once diverged in fsdiff agree with ext4" t_fsdiff_logged || true
check_here "unmount" unmount "$MNT" || true
summary fsdiff
