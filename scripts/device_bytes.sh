#!/usr/bin/env bash
# Device bytes per user byte for small files: kernel ext4 against logstorfs with its store on
# ext4, each on its own loop image, counted at the loop device (/sys/block/loopN/stat, sectors
# written), so that what the host filesystem adds under the store counts too.
#
#   sudo bash scripts/device_bytes.sh [FILES]      (default 3000 files per case)
#
# Cases, each FILES files of 4 KiB (create, write, close) in a new directory, then sync:
#   shared   no fsync: the batches of many files share write buffers
#   fsync    fsync(2) after each file: each file's batch goes down alone
#   fsync, segment file written   as fsync, on a store whose first segment file was written
#            with zeros before the mount (instead of only fallocated): ext4 then has no
#            unwritten extent to convert, so an fdatasync of the store needs no journal commit
# Not a speed benchmark (run bench.sh for that); the files/s column is for orientation only.
set -euo pipefail
FILES=${1:-3000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${LOGSTORFS_BIN:-$ROOT/target/release/logstorfs}
[ -x "$BIN" ] || cargo build --release --manifest-path "$ROOT/Cargo.toml" --bin logstorfs
WORK=$(mktemp -d "${BENCH_DIR:-/tmp}/device-bytes.XXXXXX")
cleanup() {
    for m in "$WORK"/fuse "$WORK"/ext4 "$WORK"/host; do
        mountpoint -q "$m" 2>/dev/null && umount "$m"
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$WORK"/ext4 "$WORK"/host "$WORK"/fuse
for fs in ext4 host; do
    truncate -s 4G "$WORK/$fs.img"
    mkfs.ext4 -q -F "$WORK/$fs.img"
    mount -o loop "$WORK/$fs.img" "$WORK/$fs"
done
sectors() { awk '{print $7}' "/sys/block/$(basename "$(findmnt -no SOURCE "$1")")/stat"; }

# write_files DIR fsync|shared -> files/s
write_files() {
    python3 - "$1" "$2" "$FILES" <<'PY'
import os, sys, time
d, mode, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
os.mkdir(d)
data = os.urandom(4096)
t = time.monotonic()
for i in range(n):
    fd = os.open(os.path.join(d, f"f{i}"), os.O_CREAT | os.O_WRONLY, 0o644)
    os.write(fd, data)
    if mode == "fsync":
        os.fsync(fd)
    os.close(fd)
os.sync()
print(round(n / (time.monotonic() - t)))
PY
}

# measure LABEL SYSTEM MODE: one case, one line of the table.
measure() {
    local label=$1 system=$2 mode=$3 dir dev rate before after
    if [ "$system" = ext4 ]; then dir=$WORK/ext4/$mode dev=$WORK/ext4; else dir=$WORK/fuse/$mode dev=$WORK/host; fi
    sync
    before=$(sectors "$dev")
    rate=$(write_files "$dir" "$mode")
    # Let ext4 commit its journal and write back what it holds (commit interval 5 s).
    sync; sleep 6; sync
    after=$(sectors "$dev")
    python3 -c "b=($after-$before)*512/$FILES; print(f'| $label | $system | {b:,.0f} | {b/4096:.2f} | $rate |')"
}

mount_store() { # STORE: format a 512 MiB store (the caller may change it) and mount it
    "$BIN" format -q --size 512M "$WORK/host/$1" >/dev/null
    [ "${2:-}" = written ] &&
        dd if=/dev/zero of="$WORK/host/$1/seg-000000" bs=1M count=64 conv=notrunc,fsync status=none
    "$BIN" mount -q --daemon "$WORK/host/$1" "$WORK/fuse"
    for _ in $(seq 100); do mountpoint -q "$WORK/fuse" && return; sleep 0.1; done
    echo "mount failed" >&2; exit 1
}
unmount_store() { "$BIN" umount -q "$WORK/fuse"; }

echo "$FILES files of 4 KiB each; $(uptime | sed 's/.*load/load/')"
echo
echo "| case | system | device bytes per file | per user byte | files/s |"
echo "|---|---|---|---|---|"
measure shared ext4 shared
measure fsync ext4 fsync
mount_store a
measure shared logstorfs shared
measure fsync logstorfs fsync
unmount_store
mount_store b written
measure "fsync, segment file written" logstorfs fsync
unmount_store
