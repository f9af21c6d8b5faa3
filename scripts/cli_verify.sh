#!/usr/bin/env bash
# Linux's mount conventions on real mounts: `mount -t fuse.logstorfs` (mount(8) runs mount.fuse3,
# which runs `logstorfs STORE MNT -o OPTIONS` from PATH), an fstab line mounted with
# `mount -a -T` on a temporary fstab, findmnt and df naming the store, `logstorfs umount`
# returning once the store is closed, `fusermount3 -u`, the refusals that need a live mount
# (nothing written), and `-o ro` changing no byte of a store left by kill -9.
#
#   bash scripts/cli_verify.sh [BINARY]
#
# Needs root (mount(8)) and fuse3's mount.fuse3. Puts a symlink /usr/local/bin/logstorfs to the
# binary for the run (mount.fuse3 sets its own PATH) and removes it after. Env: KEEP=1, TMPDIR.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
[[ $# -ge 1 ]] && LOGSTORFS="$(realpath "$1")"
[[ $(id -u) -eq 0 ]] || die "run as root (mount(8))"
for tool in mount.fuse3 fusermount3 findmnt mountpoint sha256sum; do
    command -v "$tool" >/dev/null || die "$tool is missing (scripts/test.sh installs fuse3)"
done
[[ -x "$LOGSTORFS" ]] || die "logstorfs binary not found at $LOGSTORFS (cargo build --release)"
LOGSTORFS="$(realpath "$LOGSTORFS")"

LINK=/usr/local/bin/logstorfs
if [[ -e "$LINK" && ! -L "$LINK" ]]; then
    die "$LINK exists and is not a symlink: this script needs that name for the binary under test"
fi
WORK="$(mktemp -d "${TMPDIR:-/tmp}/logstorfs-verify.XXXXXX")"
STORE="$WORK/store"
MNT="$WORK/mnt"
mkdir -p "$MNT"
cleanup() {
    cleanup_mounts
    mountpoint -q "$MNT" 2>/dev/null && { umount "$MNT" 2>/dev/null || fusermount3 -uz "$MNT" 2>/dev/null || true; }
    [[ "$(readlink "$LINK" 2>/dev/null)" == "$LOGSTORFS" ]] && rm -f "$LINK"
    if [[ "${KEEP:-0}" == 1 ]]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
ln -sfn "$LOGSTORFS" "$LINK"
log "cli_verify: $LOGSTORFS as $LINK, work dir $WORK"

# The names, kinds, sizes, modes, times and contents of everything under DIR, as one hash.
tree_hash() {
    (cd "$1" && {
        find . -printf '%P %y %s %m %T@\n' | LC_ALL=C sort
        find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum
    }) | sha256sum | cut -d' ' -f1
}

# refused_unchanged DIR MESSAGE CMD...: CMD fails, says MESSAGE, and leaves DIR as it was.
refused_unchanged() {
    local dir="$1" msg="$2" before after; shift 2
    before="$(tree_hash "$dir")"
    expect_fail_msg "$msg" "$@"
    after="$(tree_hash "$dir")"
    expect_eq "$before" "$after" "tree of $dir after '$*'"
}

t_format() {
    logstorfs format --size 64M "$STORE" | grep -q "created a store of 64 MiB"
}

t_mount_t_ro() {
    mount -t fuse.logstorfs "$STORE" "$MNT" -o ro,allow_other,noatime
    mountpoint -q "$MNT" || { echo "mount -t returned before the mount was live"; return 1; }
    expect_eq "$STORE" "$(findmnt -n -o SOURCE "$MNT")" "findmnt SOURCE"
    expect_eq "$STORE" "$(df --output=source "$MNT" | tail -n 1)" "df source"
    findmnt -n -o OPTIONS "$MNT" | grep -q '^ro,' || { echo "not read-only: $(findmnt -n -o OPTIONS "$MNT")"; return 1; }
    expect_fail_msg "Read-only file system" touch "$MNT/x"
    logstorfs umount "$MNT"
    ! mountpoint -q "$MNT"
}

t_fstab() {
    local fstab="$WORK/fstab"
    printf '# a temporary fstab\n%s %s fuse.logstorfs defaults,nofail,_netdev,x-test.opt=1,comment=x,flush_interval=1,compaction_policy=greedy 0 0\n' \
        "$STORE" "$MNT" > "$fstab"
    mount -a -T "$fstab"
    mountpoint -q "$MNT" || { echo "mount -a -T did not mount $MNT"; return 1; }
    expect_eq "$STORE" "$(findmnt -n -o SOURCE "$MNT")" "findmnt SOURCE"
    echo "from fstab" > "$MNT/f"
    dd if=/dev/null of="$MNT/f" conv=notrunc,fsync status=none
    # logstorfs umount returns once the daemon closed the store: fsck finds it free at once.
    logstorfs umount "$MNT"
    logstorfs fsck "$STORE" | tail -n 1 | grep -q ": clean"
}

t_fusermount() {
    logstorfs "$STORE" "$MNT" -o flush_interval=1
    MOUNTED+=("$MNT")
    expect_eq "from fstab" "$(cat "$MNT/f")" "content after remount"
    unmount "$MNT"
}

t_refused_unknown_option() {
    refused_unchanged "$WORK" "unknown mount option 'bogus=1'" \
        mount -t fuse.logstorfs "$STORE" "$MNT" -o ro,bogus=1
    ! mountpoint -q "$MNT"
}

t_refused_on_busy_mountpoint() {
    local other="$WORK/other"
    logstorfs format --size 32M "$other" >/dev/null
    mount -t fuse.logstorfs "$STORE" "$MNT"
    MOUNTED+=("$MNT")
    refused_unchanged "$other" "is already a mount point" mount -t fuse.logstorfs "$other" "$MNT"
    refused_unchanged "$other" "is already a mount point" logstorfs mount "$other" "$MNT"
    expect_eq "from fstab" "$(cat "$MNT/f")" "the first mount after the refused one"
    logstorfs umount "$MNT"
    _forget_mount "$MNT"
}

t_store_on_itself() {
    # Used to hang for good; now refused at once, whatever timeout says.
    refused_unchanged "$WORK" "inside the store" timeout 30 logstorfs mount "$STORE" "$STORE"
}

# A store left by kill -9 (a write in flight, and no clean close: the next mount would recover),
# mounted read-only: it reads what was synced, and not one byte of the store changes.
t_ro_after_kill9() {
    local pid before after
    logstorfs mount --daemon -o flush_interval=0 "$STORE" "$MNT"
    MOUNTED+=("$MNT")
    mkdir -p "$MNT/d"
    for i in 1 2 3 4 5; do head -c 300000 /dev/urandom > "$MNT/d/$i"; done
    rm "$MNT/d/1"
    (cd "$MNT" && sha256sum d/*) > "$WORK/synced.sum"
    dd if=/dev/null of="$MNT/d/5" conv=notrunc,fsync status=none
    # Written, not synced: kill -9 leaves it in the host's page cache, torn or whole.
    head -c 500000 /dev/urandom > "$MNT/unsynced"
    pid="$(sed -n 2p "$STORE/mounted")"
    kill -9 "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    fusermount3 -uz "$MNT"
    _forget_mount "$MNT"
    before="$(tree_hash "$STORE")"
    mount -t fuse.logstorfs "$STORE" "$MNT" -o ro
    MOUNTED+=("$MNT")
    (cd "$MNT" && sha256sum -c --quiet "$WORK/synced.sum")
    logstorfs umount "$MNT"
    _forget_mount "$MNT"
    after="$(tree_hash "$STORE")"
    expect_eq "$before" "$after" "hash of the store before and after a read-only mount"
}

check "format a store" t_format
check "mount -t fuse.logstorfs -o ro,allow_other,noatime: live on return, source is the store, read-only" t_mount_t_ro
check "fstab line with mount(8)'s words and our options, mount -a -T; umount then fsck at once" t_fstab
check_here "logstorfs STORE MNT (mount.fuse3 form), then fusermount3 -u" t_fusermount || true
check "unknown -o option through mount -t: refused by name, nothing written" t_refused_unknown_option
check_here "a second mount on a busy mount point is refused, nothing written" t_refused_on_busy_mountpoint || true
check "mount STORE STORE is refused, not hung" t_store_on_itself
check_here "-o ro after kill -9 reads the synced state and changes no byte" t_ro_after_kill9 || true
summary cli-verify
