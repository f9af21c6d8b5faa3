#!/usr/bin/env bash
# File handles and NFS re-export of a logstorfs mount.
#
# 1. scripts/handles.py on a kernel ext4 loop mount and on the mount: name_to_handle_at on files
#    and directories, the kernel's dentry and inode caches dropped (so the daemon gets FORGET and
#    open_by_handle_at becomes LOOKUP of "." and ".."), then open_by_handle_at, reads, listings,
#    a write, ESTALE for deleted inodes. Both must pass and print the same transcript.
# 2. NFS re-export: this machine has no kernel NFS server or client, so a userspace server,
#    nfs-ganesha with FSAL_VFS (which keeps name_to_handle_at handles and opens them with
#    open_by_handle_at, the kernel nfsd's path), run in the foreground of this script (no
#    systemd), exports the mount on 127.0.0.1 over NFSv3 and v4 (rpcbind started here if none
#    runs), and libnfs's nfs-ls/nfs-cat/nfs-cp are the client: files written on the mount read
#    through NFS and the other way round, listings, and all of it again after the caches were
#    dropped while ganesha kept its handles.
#
#   bash scripts/export_nfs.sh [BINARY]
#
# Needs root (loop mount, drop_caches, open_by_handle_at). Installs nfs-ganesha,
# nfs-ganesha-vfs, libnfs-utils and rpcbind when absent (not with SKIP_INSTALL=1). Env: KEEP=1 keeps the
# work dir, TMPDIR.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
[[ $# -ge 1 ]] && LOGSTORFS="$(realpath "$1")"
[[ $(id -u) -eq 0 ]] || die "run as root (loop mount, drop_caches, open_by_handle_at)"

missing=()
command -v ganesha.nfsd >/dev/null || missing+=(nfs-ganesha)
compgen -G "/usr/lib/*/ganesha/libfsalvfs.so" >/dev/null || missing+=(nfs-ganesha-vfs)
command -v nfs-cp >/dev/null || missing+=(libnfs-utils)
command -v rpcbind >/dev/null || missing+=(rpcbind)
if [[ ${#missing[@]} -gt 0 ]]; then
    [[ "${SKIP_INSTALL:-0}" == 1 ]] && die "missing packages: ${missing[*]} (SKIP_INSTALL=1)"
    log "installing ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" \
        >/dev/null || die "apt-get install ${missing[*]} failed"
fi
for tool in python3 mkfs.ext4 ganesha.nfsd rpcbind rpcinfo nfs-ls nfs-cat nfs-cp fusermount3 ss shuf; do
    command -v "$tool" >/dev/null || die "$tool is missing"
done

WORK="$(mktemp -d "${TMPDIR:-/tmp}/logstorfs-verify.XXXXXX")"
MNT="$WORK/mnt"
EXT="$WORK/ext4"
mkdir -p "$MNT" "$EXT" "$WORK/recovery"
EXT_MOUNTED=0
GANESHA_PID=""
stop_ganesha() {
    [[ -z "$GANESHA_PID" ]] && return 0
    kill "$GANESHA_PID" 2>/dev/null || true
    local i
    for i in $(seq 1 50); do kill -0 "$GANESHA_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$GANESHA_PID" 2>/dev/null || true
    wait "$GANESHA_PID" 2>/dev/null || true
    GANESHA_PID=""
}
cleanup() {
    stop_ganesha
    stop_rpcbind
    cleanup_mounts
    [[ $EXT_MOUNTED == 1 ]] && { umount "$EXT" 2>/dev/null || true; }
    if [[ "${KEEP:-0}" == 1 ]]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

log "file handles and NFS re-export on $(backend_name), work dir $WORK"
truncate -s 64M "$WORK/ext4.img"
mkfs.ext4 -q -F "$WORK/ext4.img"
mount -o loop "$WORK/ext4.img" "$EXT" || die "cannot loop-mount ext4"
EXT_MOUNTED=1
check_here "mount fresh store" mount_fresh "$WORK/store" "$MNT" 256M || { summary export-nfs; exit 1; }

# ---------------- file handles ----------------
HANDLES="$(dirname "$0")/handles.py"
handles_ext4() { python3 "$HANDLES" "$EXT" | tee "$WORK/handles.ext4"; }
handles_mnt() { python3 "$HANDLES" "$MNT" | tee "$WORK/handles.mnt"; }
check "file handles on ext4 (the reference)" handles_ext4
check "file handles after drop_caches: open, read, list, write, ESTALE when deleted" handles_mnt
check "the same handle transcript as ext4" diff -u "$WORK/handles.ext4" "$WORK/handles.mnt"

# ---------------- NFS re-export through nfs-ganesha ----------------
free_port() {
    local p
    for p in $(shuf -i 20000-29999 -n 50); do
        [[ "$p" == "${PORT:-}" ]] && continue
        ss -Htln "sport = :$p" | grep -q . || { echo "$p"; return 0; }
    done
    return 1
}
PORT="$(free_port)" || die "no free TCP port for ganesha"
MNT_PORT="$(free_port)" || die "no free TCP port for ganesha's MOUNT service"
# NFSv3 and v4. v4 alone needs no rpcbind, but libnfs 4.0's NFSv4 writes of 4 KiB or more fail
# in the client itself ("ZDR error: Failed to encode COMPOUND4args", on ext4 too), so writes go
# through v3, whose server ganesha starts only once rpcbind registered it. Attributes are
# revalidated at every request (Attr_Expiration_Time = 0): the mount is changed behind
# ganesha's back too, as a re-exported file system is.
cat > "$WORK/ganesha.conf" <<EOF
NFS_CORE_PARAM {
    NFS_Protocols = 3, 4;
    Bind_addr = 127.0.0.1;
    NFS_Port = $PORT;
    MNT_Port = $MNT_PORT;
    Enable_NLM = false;
    Enable_RQUOTA = false;
    Enable_UDP = false;
}
NFS_KRB5 { Active_krb5 = false; }
NFSv4 {
    Graceless = true;
    RecoveryBackend = fs;
    RecoveryRoot = "$WORK/recovery";
    Only_Numeric_Owners = true;
}
EXPORT {
    Export_Id = 1;
    Path = "$MNT";
    Pseudo = /logstorfs;
    Access_Type = RW;
    Squash = No_Root_Squash;
    Protocols = 3, 4;
    Transports = TCP;
    SecType = sys;
    Attr_Expiration_Time = 0;
    FSAL { Name = VFS; }
}
EOF
RPCBIND_PID=""
start_rpcbind() {
    rpcinfo -p 127.0.0.1 >/dev/null 2>&1 && return 0   # one is running already: use it
    rpcbind -f -w &
    RPCBIND_PID=$!
    local i
    for i in $(seq 1 50); do rpcinfo -p 127.0.0.1 >/dev/null 2>&1 && return 0; sleep 0.1; done
    echo "rpcbind does not answer"; return 1
}
stop_rpcbind() {
    [[ -z "$RPCBIND_PID" ]] && return 0
    kill "$RPCBIND_PID" 2>/dev/null || true
    wait "$RPCBIND_PID" 2>/dev/null || true
    RPCBIND_PID=""
}
start_ganesha() {
    start_rpcbind || return 1
    ganesha.nfsd -F -f "$WORK/ganesha.conf" -L "$WORK/ganesha.log" -p "$WORK/ganesha.pid" \
        -N NIV_EVENT &
    GANESHA_PID=$!
    local i
    for i in $(seq 1 100); do
        kill -0 "$GANESHA_PID" 2>/dev/null || { echo "ganesha exited:"; tail -20 "$WORK/ganesha.log"; return 1; }
        ss -Htln "sport = :$PORT" | grep -q . && grep -q "NFS SERVER INITIALIZED" "$WORK/ganesha.log" \
            && return 0
        sleep 0.1
    done
    echo "ganesha not listening on $PORT after 10 s:"; tail -20 "$WORK/ganesha.log"; return 1
}
# NFSv3 names the export by its path, v4 by its pseudo path.
V3="nfs://127.0.0.1$MNT"
Q3="?version=3&nfsport=$PORT&mountport=$MNT_PORT"
V4="nfs://127.0.0.1/logstorfs"
Q4="?version=4&nfsport=$PORT"
nfs() { timeout 20 "$@"; }   # a client that spins (it can) must not hang the script
drop_caches() { sync; echo 2 > /proc/sys/vm/drop_caches; sleep 0.2; echo 2 > /proc/sys/vm/drop_caches; sleep 0.2; }

nfs_setup() {
    mkdir -p "$MNT/nfs/sub" "$MNT/nfs/in"
    head -c 300000 /dev/urandom > "$WORK/local.bin"
    cp "$WORK/local.bin" "$MNT/nfs/sub/written-on-mount"
    echo "small file" > "$MNT/nfs/small"
    head -c 1000000 /dev/urandom > "$WORK/remote.bin"
}
# A file written on the mount, read through NFS (v3 and v4).
nfs_read_mount_file() {
    nfs nfs-cat "$V3/nfs/sub/written-on-mount$Q3" > "$WORK/got.bin"
    cmp "$WORK/local.bin" "$WORK/got.bin"
    nfs nfs-cat "$V4/nfs/sub/written-on-mount$Q4" > "$WORK/got.bin"
    cmp "$WORK/local.bin" "$WORK/got.bin"
    expect_eq "small file" "$(nfs nfs-cat "$V4/nfs/small$Q4")" "nfs/small through NFSv4"
}
# A file written through NFS, read on the mount.
nfs_write_read_on_mount() {
    local name="$1"
    nfs nfs-cp "$WORK/remote.bin" "$V3/nfs/in/$name$Q3" >/dev/null
    cmp "$WORK/remote.bin" "$MNT/nfs/in/$name"
}
# The listings through NFS (v3 and v4) are the listings on the mount.
nfs_names() { nfs nfs-ls "$1" | awk '{print $NF}' | grep -vxF -e . -e .. | sort; }
nfs_listing() {
    local d want
    for d in nfs nfs/sub nfs/in; do
        want="$(ls -A "$MNT/$d" | sort)"
        expect_eq "$want" "$(nfs_names "$V3/$d$Q3")" "listing of $d through NFSv3"
        expect_eq "$want" "$(nfs_names "$V4/$d$Q4")" "listing of $d through NFSv4"
    done
    expect_eq "$(ls -A "$MNT" | sort)" "$(nfs_names "$V4$Q4")" "listing of the root through NFSv4"
}
# A file rewritten on the mount (its inode evicted afterwards) reads rewritten through NFS.
nfs_sees_change() {
    echo changed > "$MNT/nfs/small"
    drop_caches
    expect_eq changed "$(nfs nfs-cat "$V3/nfs/small$Q3")" "nfs/small through NFSv3 after a change"
}
after_drop() { drop_caches; "$@"; }

check "files for the NFS checks" nfs_setup
if check_here "nfs-ganesha (FSAL_VFS) exports the mount" start_ganesha; then
    check "NFS: a file written on the mount reads the same" nfs_read_mount_file
    check "NFS: a file written through NFS reads the same on the mount" nfs_write_read_on_mount w1
    check "NFS: directory listings" nfs_listing
    # ganesha keeps the handles it resolved (name_to_handle_at); once the kernel forgot the
    # inodes it opens them by handle: LOOKUP of "." and ".." in the daemon.
    check "NFS after drop_caches: read" after_drop nfs_read_mount_file
    check "NFS after drop_caches: write" after_drop nfs_write_read_on_mount w2
    check "NFS after drop_caches: listings" after_drop nfs_listing
    check "NFS after drop_caches: a file changed on the mount reads changed" nfs_sees_change
fi
stop_ganesha
stop_rpcbind
check_here "unmount" unmount "$MNT" || true
summary export-nfs
