#!/usr/bin/env bash
# Limits on a real mount:
#  1. A full filesystem: writing past the store's capacity gives ENOSPC; nothing already written
#     is damaged; after deleting, writes succeed again; a remount keeps everything.
#  2. A full host disk: the store sits on a small tmpfs, smaller than the store's capacity, so
#     the host runs out first (segment files are allocated whole before use): ENOSPC at the FUSE
#     edge, nothing damaged, the daemon keeps serving reads and a remount keeps everything.
#  3. Soak: stress-ng filesystem stressors and fio --verify with 8 jobs at the same time, on one
#     mount, for SOAK_SECS (default 60; run it for minutes by hand: SOAK_SECS=600).
#
#   bash scripts/limits.sh [BINARY]
#
#  4. Shape: 10,000 directories with a 1 KiB file each, remount, a new file takes half the store.
#
# Env: SOAK_SECS, ONLY="full hostfull shape soak", KEEP=1 keeps the work dir.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
[[ $# -ge 1 ]] && LOGSTORFS="$(realpath "$1")"
for tool in fio stress-ng mountpoint fusermount3 sha256sum; do
    command -v "$tool" >/dev/null || die "$tool is missing (scripts/test.sh installs it)"
done
SOAK_SECS="${SOAK_SECS:-60}"
ONLY="${ONLY:-full hostfull shape soak}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/logstorfs-limits.XXXXXX")"
HOSTFS="$WORK/hostfs"
cleanup() {
    cleanup_mounts
    mountpoint -q "$HOSTFS" 2>/dev/null && umount "$HOSTFS"
    if [[ "${KEEP:-0}" == 1 ]]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
log "limits on $(backend_name), work dir $WORK"

# write_until_full FILE: writes 1 MiB blocks until the filesystem refuses; passes only if the
# refusal is ENOSPC ("No space left on device"), not another error.
write_until_full() {
    local err
    err="$(dd if=/dev/urandom of="$1" bs=1M count=100000 iflag=fullblock 2>&1 >/dev/null || true)"
    echo "dd: $(echo "$err" | head -1)"
    grep -q "No space left on device" <<<"$err"
}

# keep_files DIR N: writes N files of random size with their checksums beside the mount.
keep_files() {
    local dir="$1" n="$2" i
    mkdir -p "$dir"
    for i in $(seq 1 "$n"); do
        head -c $(( (RANDOM % 64 + 1) * 1024 )) /dev/urandom > "$dir/keep$i"
    done
    (cd "$dir" && sha256sum keep*) > "$WORK/$(basename "$dir").sums"
    sync
}
files_intact() { (cd "$1" && sha256sum --quiet -c "$WORK/$(basename "$1").sums"); }

# ---------------- 1. full filesystem ----------------
if [[ " $ONLY " == *" full "* ]]; then
    STORE="$WORK/full.store"; MNT="$WORK/full.mnt"
    if check_here "full: mount a 96 MiB store" mount_fresh "$STORE" "$MNT" 96M; then
        check "full: 40 files written and synced" keep_files "$MNT/kept" 40
        check "full: writing past capacity gives ENOSPC" write_until_full "$MNT/big"
        t_statfs_full() { # statfs tells the truth: next to nothing is left
            local avail; avail=$(( $(stat -f -c %a "$MNT") * $(stat -f -c %S "$MNT") ))
            echo "available after ENOSPC: $avail bytes"; [[ $avail -lt $((8 << 20)) ]]
        }
        check "full: statfs shows the store full" t_statfs_full
        check "full: files written before are intact" files_intact "$MNT/kept"
        t_delete_then_write() {
            rm "$MNT/big"; sync
            dd if=/dev/urandom of="$MNT/again" bs=1M count=32 conv=fsync status=none
            [[ $(stat -c %s "$MNT/again") -eq $((32 << 20)) ]]
        }
        check "full: after deleting, 32 MiB can be written again" t_delete_then_write
        check_here "full: unmount" unmount "$MNT" || true
        if check_here "full: remount" mount_fresh "$STORE" "$MNT"; then
            check "full: after remount the kept files are intact" files_intact "$MNT/kept"
            check_here "full: final unmount" unmount "$MNT" || true
        fi
    fi
fi

# ---------------- 2. full host disk ----------------
if [[ " $ONLY " == *" hostfull "* ]]; then
    mkdir -p "$HOSTFS"
    if [[ -z "$MOUNT_CMD" ]] && check_here "hostfull: 100 MiB tmpfs under a 512 MiB store" \
        mount -t tmpfs -o size=100m tmpfs "$HOSTFS"; then
        STORE="$HOSTFS/store"; MNT="$WORK/hostfull.mnt"
        if check_here "hostfull: mount" mount_fresh "$STORE" "$MNT" 512M; then
            check "hostfull: 20 files written and synced" keep_files "$MNT/kept" 20
            check "hostfull: filling the host gives ENOSPC" write_until_full "$MNT/big"
            check "hostfull: files written before are intact" files_intact "$MNT/kept"
            t_daemon_alive() { mountpoint -q "$MNT" && ls "$MNT/kept" >/dev/null; }
            check "hostfull: the daemon still serves the mount" t_daemon_alive
            t_delete_write_again() {
                rm "$MNT/big"; sync
                dd if=/dev/urandom of="$MNT/small" bs=64k count=16 conv=fsync status=none
            }
            check "hostfull: after deleting, writes succeed again" t_delete_write_again
            check_here "hostfull: unmount" unmount "$MNT" || true
            if check_here "hostfull: remount" mount_fresh "$STORE" "$MNT"; then
                check "hostfull: after remount the kept files are intact" files_intact "$MNT/kept"
                check_here "hostfull: final unmount" unmount "$MNT" || true
            fi
        fi
        umount "$HOSTFS" || true
    fi
fi

# ---------------- 4. space overhead whatever the directory shape ----------------
# 10,000 directories right under the root, each with one 1 KiB file; after a remount a new file
# can still take half of the 1 GiB store (issue 4, point 6: groups must not cost a segment each).
if [[ " $ONLY " == *" shape "* ]]; then
    STORE="$WORK/shape.store"; MNT="$WORK/shape.mnt"
    if check_here "shape: mount a 1 GiB store" mount_fresh "$STORE" "$MNT" 1G; then
        t_many_dirs() {
            head -c 1024 /dev/urandom > "$WORK/one-kib"
            (cd "$MNT" && for i in $(seq 1 10000); do mkdir "d$i" && cp "$WORK/one-kib" "d$i/f"; done)
            [[ $(find "$MNT" -mindepth 1 -maxdepth 1 -type d | wc -l) -eq 10000 ]]
        }
        check "shape: 10,000 directories with a 1 KiB file each" t_many_dirs
        check_here "shape: unmount" unmount "$MNT" || true
        if check_here "shape: remount" mount_fresh "$STORE" "$MNT"; then
            t_half_store() {
                dd if=/dev/zero of="$MNT/half" bs=1M count=512 conv=fsync status=none
                [[ $(stat -c %s "$MNT/half") -eq $((512 << 20)) ]]
                cmp -s "$WORK/one-kib" "$MNT/d9999/f"
            }
            check "shape: a new 512 MiB file still fits" t_half_store
            "$LOGSTORFS" stats --json "$MNT" | python3 -c 'import json,sys; j=json.load(sys.stdin); print(" ".join("%s %s" % (k, j[k]) for k in ("segments_free","mixed_segments","segments_handed_over")))' || true
            check_here "shape: final unmount" unmount "$MNT" || true
        fi
    fi
fi

# ---------------- 3. soak: stress-ng and fio --verify, 8 jobs, together ----------------
if [[ " $ONLY " == *" soak "* ]]; then
    STORE="$WORK/soak.store"; MNT="$WORK/soak.mnt"
    if check_here "soak: mount a 2 GiB store" mount_fresh "$STORE" "$MNT" 2G; then
        mkdir -p "$MNT/fio" "$MNT/stress"
        t_soak() {
            local fio_rc=0 stress_rc=0
            timeout --kill-after=30 $((SOAK_SECS + 300)) fio --verify_state_save=0 \
                --name=soak --directory="$MNT/fio" --numjobs=8 --size=48M --bs=4k \
                --rw=randrw --rwmixread=30 --ioengine=psync --verify=crc32c --verify_fatal=1 \
                --time_based --runtime="$SOAK_SECS" --fsync=64 --group_reporting \
                > "$WORK/soak-fio.log" 2>&1 &
            local fio_pid=$!
            timeout --kill-after=30 $((SOAK_SECS + 300)) stress-ng --temp-path "$MNT/stress" \
                --timeout "${SOAK_SECS}s" --verify --metrics-brief \
                --hdd 2 --hdd-bytes 32M --dir 1 --rename 1 --link 1 --fallocate 1 --dentry 1 \
                > "$WORK/soak-stress.log" 2>&1 || stress_rc=$?
            wait "$fio_pid" || fio_rc=$?
            tail -5 "$WORK/soak-fio.log"; tail -8 "$WORK/soak-stress.log"
            echo "fio exit $fio_rc, stress-ng exit $stress_rc"
            [[ $fio_rc -eq 0 && $stress_rc -eq 0 ]] || return 1
            ! grep -qiE 'verify: bad|crc32c: verify failed|bad magic' "$WORK/soak-fio.log"
            ! grep -qE '^stress-ng: (fail|error):|unsuccessful run' "$WORK/soak-stress.log"
        }
        check "soak: fio --verify 8 jobs + stress-ng hdd/dir/rename/link/fallocate/dentry for ${SOAK_SECS}s" t_soak
        check_here "soak: unmount" unmount "$MNT" || true
    fi
fi

summary limits
