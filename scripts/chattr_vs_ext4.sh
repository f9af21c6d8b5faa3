#!/usr/bin/env bash
# Inode flags (chattr/lsattr) and what immutable and append-only refuse, renameat2 flags and
# unknown ioctls, on the mount and on a kernel ext4 loop mount, as root and as an unprivileged
# user: every result and errno must match (scripts/inode_flags_probe.py prints them; lines
# marked "info:" are the flags ext4 keeps and we refuse, pinned here instead). Then what fuser
# 0.18 cannot serve, pinned to the kernel's clean fallback (O_TMPFILE: EOPNOTSUPP; statx: no
# birth time), and an overlayfs whose upper and work directories are on the mount (whiteouts
# from deletes and renames, a small workload compared with the same on an ext4 upper, and the
# whiteouts still there after a remount).
#
#   bash scripts/chattr_vs_ext4.sh [BINARY]
#
# Needs root (loop mount, overlayfs, a test user). Env: KEEP=1 keeps the work dir, TMPDIR.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
[[ $# -ge 1 ]] && LOGSTORFS="$(realpath "$1")"
PROBE_SRC="$(realpath "$(dirname "$0")/inode_flags_probe.py")"

for tool in setpriv chattr lsattr mkfs.ext4 python3 fusermount3; do
    command -v "$tool" >/dev/null || die "$tool is missing"
done
[[ $(id -u) -eq 0 ]] || die "run as root (loop mount, overlayfs, test user)"

test_user
as_user() { setpriv --reuid="$TU" --regid="$TG" --clear-groups "$@"; }

extra_cleanup() {
    local o
    for o in "$WORK/merged" "$WORK/merged-ext4"; do umount "$o" 2>/dev/null || true; done
}
with_ext4 logstorfs-chattr 64M ""
OUT="$WORK/out"
mkdir -p "$MNT" "$EXT" "$OUT"
# The test user must be able to read the probe, and to run a Python of its own (a Python
# installed under root's home is out of its reach).
PROBE="$WORK/inode_flags_probe.py"
cp "$PROBE_SRC" "$PROBE"
chmod 644 "$PROBE"
PY=python3
[[ -x /usr/bin/python3 ]] && PY=/usr/bin/python3

log "chattr on $(backend_name) against ext4, work dir $WORK"
chmod 755 "$EXT"
MOUNT_OPTS="$MOUNT_OPTS -o allow_other,default_permissions"
check_here "mount fresh store (allow_other, default_permissions)" \
    mount_fresh "$WORK/store" "$MNT" 256M || { summary chattr-vs-ext4; exit 1; }
chmod 755 "$MNT"

# probe_both MODE: runs the probe in a fresh directory of each, output in $OUT/MODE.{fs,ext4}.
probe_both() {
    local mode="$1" runner=("${@:2}") root name
    for root in "$MNT" "$EXT"; do
        name=fs; [[ $root == "$EXT" ]] && name=ext4
        rm -rf "$root/$mode"; mkdir "$root/$mode"
        if [[ $mode == user ]]; then "$PY" "$PROBE" prepare "$root/$mode" "$TU" || true; fi
        "${runner[@]}" "$PY" "$PROBE" "$mode" "$root/$mode" > "$OUT/$mode.$name" 2>&1 || true
    done
}

same_as_ext4() { # same_as_ext4 MODE LINE...: outputs equal but for info lines, and hold LINEs
    local mode="$1" line; shift
    diff <(grep -v '^info:' "$OUT/$mode.fs") <(grep -v '^info:' "$OUT/$mode.ext4") \
        || { echo "differs from ext4 (< logstorfs, > ext4)"; return 1; }
    for line in "$@"; do
        grep -qxF "$line" "$OUT/$mode.fs" || { echo "missing: $line"; cat "$OUT/$mode.fs"; return 1; }
    done
}

probe_both root
check "root: chattr/lsattr, immutable and append-only refusals, renameat2 as on ext4" \
    same_as_ext4 root "imm open O_WRONLY: EPERM" "app open O_WRONLY: EPERM" \
    "app truncate: EPERM" "app first bytes after F_SETFL and pwrite(0): OK b'data+more'" \
    "idir create: EPERM" "adir unlink: EPERM" "lsattr +a: OK -----a----------------" \
    "whiteout left: OK chr 0:0 mode 0o0" "rename EXCHANGE|WHITEOUT: EINVAL" \
    "ioctl TCGETS: ENOTTY" "lsattr of the new file: OK ------dA--------------" \
    "atime of a no-atime file after a read: OK 1000000000.0"
refused_flags() { # every flag ext4 keeps and we do not is refused, none stored
    local n
    n="$(grep -c '^info: chattr +.*: Operation not supported$' "$OUT/root.fs")"
    [[ $n -eq 10 ]] || { echo "want 10 refused flags, got $n"; grep '^info:' "$OUT/root.fs"; return 1; }
    grep -qxF "info: lsattr after the refused flags: ------dA--------------" "$OUT/root.fs"
}
check "flags not honoured (S, D, T, j, e, ...) are refused with EOPNOTSUPP" refused_flags

probe_both user as_user
check "unprivileged user: no flag change without CAP_LINUX_IMMUTABLE, refusals as on ext4" \
    same_as_ext4 user "user chattr -i: EPERM" "user chattr +i own file: EPERM" \
    "user chattr +d own file: OK" "user write immutable: EPERM" \
    "user open append-only O_WRONLY: EPERM" "user unlink append-only: EPERM"

# fuser 0.18 has no FUSE_TMPFILE (51) or FUSE_STATX (52): it answers ENOSYS and the kernel
# falls back. A fuser that brings them changes these lines: then wire them up.
probe_both fallback
fallback_pinned() {
    # ENOTSUP is EOPNOTSUPP on Linux (Python names the number ENOTSUP).
    diff <(printf 'open O_TMPFILE: ENOTSUP\nstatx STATX_BTIME: no\n') "$OUT/fallback.fs" \
        || return 1
    diff <(printf 'open O_TMPFILE: OK\nstatx STATX_BTIME: yes\n') "$OUT/fallback.ext4" \
        || { echo "the probe itself is wrong: ext4 must give both"; return 1; }
}
check "O_TMPFILE is EOPNOTSUPP and statx has no birth time (fuser 0.18; ext4 has both)" \
    fallback_pinned

no_ioctl_warnings() { # Python's open() alone asks TCGETS of every file it opens
    local logf="$WORK/store/logstorfs.log"
    [[ -f $logf ]] || { echo "no daemon log at $logf"; return 1; }
    ! grep -iE 'not implemented|ioctl' "$logf"
}
check "unknown ioctls: ENOTTY and no warning in the daemon log" no_ioctl_warnings

# ---- overlayfs with upper and work directories on the mount ----
mkdir -p "$WORK/lower/dir" "$MNT/ov/upper" "$MNT/ov/work" "$WORK/merged" \
    "$EXT/ov/upper" "$EXT/ov/work" "$WORK/merged-ext4"
echo lower > "$WORK/lower/gone"
echo keep > "$WORK/lower/moved"
echo inner > "$WORK/lower/dir/inner"
mount_overlay() { # mount_overlay UPPER_ROOT MERGED
    mount -t overlay overlay -o "lowerdir=$WORK/lower,upperdir=$1/ov/upper,workdir=$1/ov/work" \
        "$2"
}
overlay_workload() { # the same changes through an overlay
    local m="$1" i
    rm "$m/gone"
    mv "$m/moved" "$m/moved2"
    rm "$m/dir/inner"
    echo appended >> "$m/moved2"
    for i in $(seq 1 20); do
        mkdir -p "$m/new/d$((i % 4))"
        head -c $((i * 3000)) /dev/urandom > "$m/new/d$((i % 4))/f$i"
    done
    mv "$m/new/d1" "$m/new/d1-renamed"
    rm -r "$m/new/d2"
    mv "$m/new/d0/f4" "$m/new/d3/f4-moved"
    ln "$m/new/d3/f3" "$m/new/d3/f3-link"
    setfattr -n user.k -v v "$m/new/d3/f3"
    # Same bytes on both sides, whatever /dev/urandom gave.
    (cd "$m/new" && find . -type f | sort | while read -r f; do head -c 1000 /dev/zero > "$f"; done)
}
view() { # view MERGED: names, kinds, sizes, contents of the merged tree
    # (a directory's size is the file system's own: ext4 counts its blocks)
    (cd "$1" && find . \( -type d -printf '%p d %n\n' \) -o -printf '%p %y %s %n\n' | sort && find . -type f -print0 | sort -z \
        | xargs -0 md5sum && getfattr -d -R . 2>/dev/null | grep -v '^#' | sort)
}
whiteouts() { # the whiteouts an upper directory holds
    (cd "$1" && find . -type c -printf '%p %Y %m\n' | sort && find . -type c -exec stat -c '%n %t:%T' {} + | sort)
}
overlay_check() {
    mount_overlay "$MNT" "$WORK/merged" || { echo "overlay on logstorfs did not mount"; return 1; }
    mount_overlay "$EXT" "$WORK/merged-ext4" || { echo "overlay on ext4 did not mount"; return 1; }
    overlay_workload "$WORK/merged"
    overlay_workload "$WORK/merged-ext4"
    diff <(view "$WORK/merged") <(view "$WORK/merged-ext4") || { echo "merged views differ"; return 1; }
    [[ -c $MNT/ov/upper/gone && "$(stat -c '%t:%T %a' "$MNT/ov/upper/gone")" == "0:0 0" ]] \
        || { echo "no whiteout for the deleted lower file"; ls -la "$MNT/ov/upper"; return 1; }
    [[ -c $MNT/ov/upper/moved && -f $MNT/ov/upper/moved2 ]] \
        || { echo "no whiteout for the renamed lower file"; ls -la "$MNT/ov/upper"; return 1; }
    [[ ! -e $WORK/merged/gone && ! -e $WORK/merged/moved && ! -e $WORK/merged/dir/inner ]] \
        || { echo "a deleted lower file shows through"; return 1; }
    diff <(whiteouts "$MNT/ov/upper") <(whiteouts "$EXT/ov/upper") \
        || { echo "whiteouts differ from an ext4 upper"; return 1; }
    view "$WORK/merged" > "$OUT/view-before"
    umount "$WORK/merged"
}
check "overlayfs on the mount: whiteouts and a workload as with an ext4 upper" overlay_check
umount "$WORK/merged" 2>/dev/null || true
umount "$WORK/merged-ext4" 2>/dev/null || true
overlay_after_remount() {
    unmount "$MNT" || return 1
    mount_fresh "$WORK/store" "$MNT" 256M || return 1
    [[ "$(stat -c '%F %t:%T %a' "$MNT/ov/upper/gone")" == "character special file 0:0 0" ]] \
        || { echo "whiteout lost at remount"; return 1; }
    mount_overlay "$MNT" "$WORK/merged" || return 1
    diff "$OUT/view-before" <(view "$WORK/merged") || { echo "merged view changed"; return 1; }
    umount "$WORK/merged"
}
check_here "overlayfs: whiteouts and the merged view survive a remount" overlay_after_remount || true

summary chattr-vs-ext4
