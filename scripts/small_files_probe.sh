#!/usr/bin/env bash
# Small-files probe, to attribute the small-files figure of scripts/bench.sh: create + 4 KiB
# write + close of N files in 10 directories from one Python process, then sync, on fuse2fs,
# bindfs and logstorfs in turn.
# Prints files/s and the daemon's CPU time per file (utime + stime from /proc/PID/stat): the
# CPU time is the daemon's own work per file, which moves less with the machine's noise than
# the wall time does. Not a benchmark of record (scripts/bench.sh is); a tool for attributing
# the small-files ratio.
#
#   sudo bash scripts/small_files_probe.sh [BINARY]
#
# Env: N (files, default 10000), ROUNDS (default 3), SYSTEMS (default "fuse2fs bindfs logstorfs").
set -euo pipefail
source "$(dirname "$0")/lib.sh"
[[ $# -ge 1 ]] && LOGSTORFS="$(realpath "$1")"
for tool in fuse2fs bindfs mkfs.ext4 fusermount3 python3; do
    command -v "$tool" >/dev/null || die "$tool is missing (apt-get install -y fuse2fs bindfs e2fsprogs fuse3)"
done
N="${N:-10000}"; ROUNDS="${ROUNDS:-3}"; SYSTEMS="${SYSTEMS:-fuse2fs bindfs logstorfs}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/logstorfs-probe.XXXXXX")"
trap 'cleanup_mounts; rm -rf "$WORK"' EXIT
MNT="$WORK/mnt"; mkdir -p "$MNT" "$WORK/src"

# probe NAME PID: the workload on $MNT, then files/s and the daemon's CPU per file.
probe() {
    local name="$1" pid="$2" t0 t1 start end
    t0="$(awk '{print $14 + $15}' "/proc/$pid/stat")"
    start="$(date +%s.%N)"
    python3 - "$MNT" "$N" <<'PY'
import os, sys
mnt, n = sys.argv[1], int(sys.argv[2])
data = os.urandom(4096)
for d in range(10):
    os.mkdir(f"{mnt}/d{d}")
for i in range(n):
    fd = os.open(f"{mnt}/d{i % 10}/f{i}", os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644)
    os.write(fd, data)
    os.close(fd)
PY
    sync
    end="$(date +%s.%N)"
    t1="$(awk '{print $14 + $15}' "/proc/$pid/stat")"
    python3 -c "n=$N; cpu=($t1-$t0)/$(getconf CLK_TCK); wall=$end-$start
print(f'$name: {n/wall:.0f} files/s, daemon CPU {cpu*1e6/n:.0f} us/file')"
}

for round in $(seq 1 "$ROUNDS"); do
    log "round $round"
    for system in $SYSTEMS; do
        case "$system" in
            fuse2fs)
                rm -f "$WORK/img"; truncate -s 2G "$WORK/img"; mkfs.ext4 -q -F "$WORK/img"
                fuse2fs "$WORK/img" "$MNT" -o fakeroot; MOUNTED+=("$MNT")
                probe fuse2fs "$(pgrep -f "fuse2fs $WORK/img")" ;;
            bindfs)
                rm -rf "$WORK/src"; mkdir -p "$WORK/src"
                bindfs "$WORK/src" "$MNT"; MOUNTED+=("$MNT")
                probe bindfs "$(pgrep -f "bindfs $WORK/src")" ;;
            logstorfs)
                rm -rf "$WORK/store"
                mount_fresh "$WORK/store" "$MNT" 2G
                probe logstorfs "$(daemon_pid "$MNT")" ;;
            *) die "unknown system $system" ;;
        esac
        unmount "$MNT"
    done
done
