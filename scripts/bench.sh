#!/usr/bin/env bash
# Filesystem vs peers benchmark: logstorfs against kernel ext4, bindfs and fuse2fs,
# all on the same disk, each workload run on every system in alternation.
#
#   sudo bash scripts/bench.sh [--quick]
#
# Setup (in a scratch directory BENCH_DIR, default a `mktemp -d` under /work or the repo's parent):
#   ext4       a sparse image file, mkfs.ext4, mount -o loop          (kernel baseline)
#   bindfs     bindfs over a directory on that ext4                   (FUSE pass-through peer)
#   fuse2fs    fuse2fs on a second ext4 image file                    (FUSE file system peer)
#   logstorfs  logstorfs with its store on the ext4 mount
#   floor      `fuse_floor --xattrs` (src/bin/fuse_floor): a fuser daemon that stores
#              nothing, mounted as logstorfs is here (default_permissions: the kernel checks),
#              the FUSE floor of this machine (issue 20 leaves a target unmet only where this
#              floor is within 20% of logstorfs: logstorfs/floor >= 0.83). It keeps its table
#              in memory, so a "remount" of it is only the drop_caches that follows; it has no
#              listing or symlinks, so it runs the workloads seq rand small meta append only.
#
# Every workload runs RUNS times (default 3) on every system, the systems alternating within each
# run (the order rotates from run to run); the median is reported, with ratios logstorfs/peer
# (the median of the per-round ratios, with their range).
# Ratios are "how fast logstorfs is relative to the peer": > 1 means logstorfs is faster (for a
# time, lower is better, so the ratio is peer time / logstorfs time).
#
# Workloads (sizes from the environment; --quick shrinks the defaults ~10x):
#   seq_write   1 MiB sequential write of SEQ_MB (2048; quick 256) MiB with fio, fsync at the end
#   seq_read    read it back (dd bs=1M) after unmount + remount + drop_caches
#   rand_write  4 KiB random overwrite of a RAND_MB (1024; quick 128) MiB file, fio psync,
#               end_fsync, every block once or RAND_RUNTIME (60) seconds, whichever ends first
#   small_files create + 4 KiB write + close of SMALL_FILES (50000; quick 5000) files in
#               SMALL_DIRS (100) directories, then sync and fsync of the directories
#   meta_*      create META_FILES (20000; quick 2000) empty files in one directory, then (after
#               drop_caches) stat them all, then unlink them all
#   ls_l        `ls -l` of a directory of LS_FILES (10000; quick 1000) files, after drop_caches
#   untar, du   untar a real source tree (UNTAR_SRC, default /usr/share/doc or a cargo registry
#               source tree, whichever first has >= 20 MB; tarred once at setup) then sync;
#               after drop_caches `du -s` of it
#   fsync_append  APPEND_OPS (2000; quick 300) appends of 4 KiB to one file, each followed by
#               fsync (ops/s)
#   mount       logstorfs only, run once: a fresh store filled with MOUNT_FILES (330000; quick
#               33000) files of MOUNT_FILE_BYTES (100) in MOUNT_DIRS (330) directories (each file
#               of 100 bytes is about 3
#               records: inode, entry, data page) by MOUNT_PROCS (4) parallel creators; then
#               MOUNT_REPEATS (3) cold remounts (drop_caches first) and as many warm ones, timed
#               from `logstorfs mount --daemon` until `stat` on the mount point answers (median);
#               then the daemon's VmRSS per index entry and per file, minus the VmRSS of a daemon
#               on an empty store, and the engine's own index_bytes / index_entries; then
#               MOUNT_REPEATS crash rounds: 100 unsynced creates, kill -9 of the daemon,
#               drop_caches, the next mount timed the same way (mount_crash: recovery reads the
#               segments changed since the fill's clean unmount, whose checkpoint stays in place
#               and stands for the others); MOUNT_PERF=DIR
#               records each crash mount with `perf record -g` into DIR/crash-N.data
#
# Metrics that do not apply to a system (the mount workload's on the peers) show "n/a".
# Other environment: LOGSTORFS (a logstorfs binary to use instead of building one with `cargo
# build --release`, which honours CARGO_TARGET_DIR), BENCH_COMMIT (the commit named in the
# report; default HEAD), WORKLOADS (default "seq rand small meta ls untar append mount"), RUNS (3), SYSTEMS ("ext4 bindfs fuse2fs floor logstorfs"), FUSE_FLOOR (a fuse_floor binary; default built like logstorfs), LOGSTOR_SIZE (4G),
# LOGSTOR_OPTS (more arguments for logstorfs mount, e.g. "-o writeback_cache"), EXT4_IMG_SIZE (16G), FUSE2FS_IMG_SIZE (8G), MOUNT_STORE_SIZE (4G), BENCH_DOCS (1: add the
# table at the end of the "Filesystem vs peers" section of docs/BENCHMARKS.md; 0: only print
# it), KEEP (0; 1 keeps the scratch directory), BENCH_RAW (a file to which every run's figure is
# appended as "METRIC SYSTEM VALUE" lines, for scripts/bench_compare.sh).
#
# Adding a workload: write a function wl_NAME SYSTEM DIR that prints "METRIC VALUE" lines,
# declare its metrics (unit, higher/lower better) in METRICS below and list it in WORKLOADS.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$(pwd)"
export PATH="$HOME/.cargo/bin:$PATH"

QUICK=0
for a in "$@"; do
    case "$a" in
        --quick) QUICK=1 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $a (try --help)" >&2; exit 2 ;;
    esac
done
q() { if [[ $QUICK -eq 1 ]]; then echo "$2"; else echo "$1"; fi; }
SEQ_MB="${SEQ_MB:-$(q 2048 256)}"
RAND_MB="${RAND_MB:-$(q 1024 128)}"
RAND_RUNTIME="${RAND_RUNTIME:-60}"
SMALL_FILES="${SMALL_FILES:-$(q 50000 5000)}"
SMALL_DIRS="${SMALL_DIRS:-100}"
META_FILES="${META_FILES:-$(q 20000 2000)}"
LS_FILES="${LS_FILES:-$(q 10000 1000)}"
UNTAR_SRC="${UNTAR_SRC:-}"
APPEND_OPS="${APPEND_OPS:-$(q 2000 300)}"
MOUNT_FILES="${MOUNT_FILES:-$(q 330000 33000)}"
MOUNT_DIRS="${MOUNT_DIRS:-330}"
# 65536 with MOUNT_FILES=30000: a store of large records, which a crash mount takes mostly from
# segment summaries (100-byte files get none: see engine/summaries.rs, `worth_reading`).
export MOUNT_FILE_BYTES="${MOUNT_FILE_BYTES:-100}"
MOUNT_PROCS="${MOUNT_PROCS:-4}"
MOUNT_REPEATS="${MOUNT_REPEATS:-3}"
MOUNT_STORE_SIZE="${MOUNT_STORE_SIZE:-4G}"
RUNS="${RUNS:-3}"
SYSTEMS="${SYSTEMS:-ext4 bindfs fuse2fs floor logstorfs}"
LOGSTOR_SIZE="${LOGSTOR_SIZE:-4G}"
EXT4_IMG_SIZE="${EXT4_IMG_SIZE:-16G}"
FUSE2FS_IMG_SIZE="${FUSE2FS_IMG_SIZE:-8G}"
BENCH_DOCS="${BENCH_DOCS:-1}"
KEEP="${KEEP:-0}"
read -r -a WORKLOADS <<< "${WORKLOADS:-seq rand small meta ls untar append mount}"
# Workloads that run only on some systems (others show "n/a"), and how many runs they get.
declare -A WL_SYSTEMS=([mount]="logstorfs" [ls]="ext4 bindfs fuse2fs logstorfs" [untar]="ext4 bindfs fuse2fs logstorfs")
declare -A WL_RUNS=([mount]=1)
# metric -> "unit|better|label"
declare -A METRICS=(
    [seq_write]="MiB/s|higher|seq write 1M + fsync"
    [seq_read]="MiB/s|higher|seq read 1M, cold (remount)"
    [rand_write]="IOPS|higher|4k random overwrite + fsync"
    [small_files]="files/s|higher|small files 4k create+write+close, sync"
    [meta_create]="ops/s|higher|create empty files"
    [meta_stat]="ops/s|higher|stat (cold)"
    [meta_unlink]="ops/s|higher|unlink"
    [ls_l]="s|lower|ls -l of ${LS_FILES}-file dir (cold)|${WL_SYSTEMS[ls]}"
    [untar]="s|lower|untar of a source tree, then sync|${WL_SYSTEMS[untar]}"
    [du]="s|lower|du -s of the untarred tree (cold)|${WL_SYSTEMS[untar]}"
    [fsync_append]="ops/s|higher|4k append + fsync, one file"
    [mount_files]="files|info|mount store: files|logstorfs"
    [mount_records]="records|info|mount store: index entries|logstorfs"
    [mount_fill]="files/s|info|mount store: fill rate (${MOUNT_PROCS} parallel creators, then sync)|logstorfs"
    [mount_cold]="s|info|mount time, cold (drop_caches; target < 2 s at 1M records)|logstorfs"
    [mount_warm]="s|info|mount time, warm|logstorfs"
    [mount_crash]="s|info|mount time after kill -9, cold (drop_caches; target < 1 s at 1M records)|logstorfs"
    [mount_rss]="MiB|info|daemon VmRSS after the last remount|logstorfs"
    [rss_per_record]="B|info|VmRSS / index entries (target <= 64)|logstorfs"
    [rss_delta_per_record]="B|info|(VmRSS - VmRSS on an empty store) / index entries|logstorfs"
    [rss_per_file]="B|info|VmRSS / files (target <= 256)|logstorfs"
    [index_bytes_per_record]="B|info|index_bytes / index_entries (engine estimate)|logstorfs"
)
# The 4th field, if any, lists the systems a metric applies to; the others show "n/a", as do the
# ratios of "info" metrics (absolute figures of logstorfs alone).
METRIC_ORDER=(seq_write seq_read rand_write small_files meta_create meta_stat meta_unlink ls_l
              untar du fsync_append mount_files mount_records mount_fill mount_cold mount_warm mount_crash
              mount_rss rss_per_record rss_delta_per_record rss_per_file index_bytes_per_record)

[[ $(id -u) -eq 0 ]] || { echo "run as root (loop mounts, drop_caches, apt-get)" >&2; exit 1; }
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# ---- dependencies -------------------------------------------------------------------------------
need=()
command -v bindfs >/dev/null || need+=(bindfs)
command -v fuse2fs >/dev/null || need+=(fuse2fs)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
command -v fio >/dev/null || need+=(fio)
command -v fusermount3 >/dev/null || need+=(fuse3)
if [[ ${#need[@]} -gt 0 ]]; then
    log "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq "${need[@]}" >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null; }
fi
command -v python3 >/dev/null || { echo "python3 is required" >&2; exit 1; }
modprobe fuse 2>/dev/null || true
if [[ -n "${LOGSTORFS:-}" ]]; then
    log "using $LOGSTORFS"
else
    log "building logstorfs (release)"
    cargo build --release --quiet
    LOGSTORFS="${CARGO_TARGET_DIR:-$REPO/target}/release/logstorfs"
fi
if [[ " $SYSTEMS " == *" floor "* && -z "${FUSE_FLOOR:-}" ]]; then
    cargo build --release --quiet --bin fuse_floor
    FUSE_FLOOR="${CARGO_TARGET_DIR:-$REPO/target}/release/fuse_floor"
fi
[[ -x "$LOGSTORFS" ]] || { echo "no logstorfs binary at $LOGSTORFS" >&2; exit 1; }
LOGSTORFS="$(realpath "$LOGSTORFS")"
BENCH_COMMIT="${BENCH_COMMIT:-$(git -C "$REPO" rev-parse --short HEAD)}"
source scripts/lib.sh   # unmount, daemon_pid

# ---- scratch directory and mounts ---------------------------------------------------------------
if [[ -z "${BENCH_DIR:-}" ]]; then
    base=/work; [[ -d $base && -w $base ]] || base="$(dirname "$REPO")"
    BENCH_DIR="$(mktemp -d "$base/logstorfs-bench.XXXXXX")"
fi
W="$BENCH_DIR"
mkdir -p "$W/ext4" "$W/mnt/bindfs" "$W/mnt/fuse2fs" "$W/mnt/floor" "$W/mnt/logstorfs" "$W/mnt/logstor-mt"
MNT_MT="$W/mnt/logstor-mt"          # the mount workload's own stores
EXT4="$W/ext4"                      # kernel ext4 mount (the "ext4" system and the others' disk)
declare -A MNT=([ext4]="$EXT4/bench" [bindfs]="$W/mnt/bindfs" [fuse2fs]="$W/mnt/fuse2fs" [floor]="$W/mnt/floor" [logstorfs]="$W/mnt/logstorfs")
FAILURES=()

is_mounted() { grep -qs " $(realpath -m "$1") " /proc/mounts; }

cleanup() {
    local rc=$? m
    set +e
    for m in "$MNT_MT" "${MNT[logstorfs]}" "${MNT[floor]}" "${MNT[fuse2fs]}" "${MNT[bindfs]}"; do
        is_mounted "$m" && { unmount "$m" >/dev/null 2>&1 || fusermount3 -uz "$m"; }
    done
    is_mounted "$EXT4" && { umount "$EXT4" || umount -l "$EXT4"; }
    if [[ "$KEEP" != 1 ]] && ! grep -qs " $W/" /proc/mounts; then
        rm -rf "$W"
    else
        echo "scratch directory kept: $W" >&2
    fi
    exit $rc
}
trap cleanup EXIT

drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }

mount_ext4() { mount -o loop "$W/ext4.img" "$EXT4"; }
# Daemons must not inherit stdout (workloads run in $(...) and may remount).
mount_bindfs() { bindfs "$EXT4/bindfs-src" "${MNT[bindfs]}" </dev/null >/dev/null 2>>"$W/mount.log"; }
mount_fuse2fs() { fuse2fs "$W/fuse2fs.img" "${MNT[fuse2fs]}" -o fakeroot </dev/null >/dev/null 2>>"$W/mount.log"; }
# fuse_floor stays in the foreground until unmounted.
mount_floor() { "$FUSE_FLOOR" "${MNT[floor]}" --xattrs </dev/null >/dev/null 2>>"$W/mount.log" & }
mount_logstorfs() {
    # shellcheck disable=SC2086 # LOGSTOR_OPTS is a list of arguments
    "$LOGSTORFS" mount --daemon --create --size "$LOGSTOR_SIZE" ${LOGSTOR_OPTS:-} "$EXT4/logstor-store" "${MNT[logstorfs]}" \
        </dev/null >/dev/null 2>>"$W/mount.log"
}
wait_mounted() {
    local i; for i in $(seq 1 100); do is_mounted "$1" && return 0; sleep 0.1; done
    echo "$1 is not mounted after 10 s" >&2; return 1
}
mount_sys() { # mount_sys SYSTEM (ext4: the whole stack)
    case "$1" in
        ext4) mount_ext4; mkdir -p "${MNT[ext4]}" "$EXT4/bindfs-src"
              for s in bindfs fuse2fs logstorfs; do [[ " $SYSTEMS " == *" $s "* && $s != fuse2fs ]] && mount_sys $s; done; return 0 ;;
        *) "mount_$1"; wait_mounted "${MNT[$1]}" ;;
    esac
}
umount_sys() {
    case "$1" in
        ext4) for s in logstorfs bindfs; do is_mounted "${MNT[$s]}" && umount_sys $s; done; umount "$EXT4" ;;
        *) unmount "${MNT[$1]}" ;;
    esac
}
remount_sys() { # the floor would lose its table (its files) in a remount
    [[ $1 == floor ]] && return 0
    umount_sys "$1" && mount_sys "$1"
}

log "scratch: $W"
LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"
truncate -s "$EXT4_IMG_SIZE" "$W/ext4.img"
mkfs.ext4 -q -F "$W/ext4.img"
if [[ " $SYSTEMS " == *" fuse2fs "* ]]; then
    truncate -s "$FUSE2FS_IMG_SIZE" "$W/fuse2fs.img"
    mkfs.ext4 -q -F "$W/fuse2fs.img"
    mount_sys fuse2fs
fi
[[ " $SYSTEMS " == *" floor "* ]] && mount_sys floor
mount_sys ext4
if [[ " ${WORKLOADS[*]} " == *" untar "* ]]; then
    # the untar source: a real tree of >= 20 MB, tarred once here (not timed)
    for cand in "$UNTAR_SRC" /usr/share/doc "$HOME"/.cargo/registry/src/*/; do
        [[ -n "$cand" && -d "$cand" ]] || continue
        if (( $(du -sk "$cand" 2>/dev/null | cut -f1) >= 20000 )); then UNTAR_SRC="${cand%/}"; break; fi
    done
    [[ -d "$UNTAR_SRC" ]] || { echo "no source tree of >= 20 MB for untar (set UNTAR_SRC)" >&2; exit 1; }
    tar -cf "$W/src.tar" -C "$(dirname "$UNTAR_SRC")" "$(basename "$UNTAR_SRC")" 2>/dev/null || [[ $? -eq 1 ]]
    UNTAR_DESC="$UNTAR_SRC ($(tar -tvf "$W/src.tar" | grep -c '^-') files, $(tar -tvf "$W/src.tar" | grep -c '^d') directories, $(( $(stat -c %s "$W/src.tar") / 1048576 )) MiB tar)"
    log "untar source: $UNTAR_DESC"
fi
log "mounted: $(for s in $SYSTEMS; do printf '%s=%s ' "$s" "${MNT[$s]}"; done)"

# ---- workload helpers ---------------------------------------------------------------------------
cat > "$W/wl.py" <<'EOF'
import os, sys, time
pc = time.perf_counter
def drop():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f: f.write("3\n")
def small(d, n, ndirs):
    dirs = [os.path.join(d, "d%03d" % i) for i in range(ndirs)]
    buf = os.urandom(4096)
    t = pc()
    for p in dirs: os.mkdir(p)
    for i in range(n):
        fd = os.open(os.path.join(dirs[i % ndirs], "f%06d" % i), os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644)
        os.write(fd, buf)
        os.close(fd)
    os.sync()
    for p in dirs + [d]:
        fd = os.open(p, os.O_RDONLY | os.O_DIRECTORY); os.fsync(fd); os.close(fd)
    print("small_files %.1f" % (n / (pc() - t)))
def meta(d, n):
    names = [os.path.join(d, "e%06d" % i) for i in range(n)]
    t = pc()
    for p in names: os.close(os.open(p, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644))
    print("meta_create %.1f" % (n / (pc() - t)))
    drop()
    t = pc()
    for p in names: os.stat(p)
    print("meta_stat %.1f" % (n / (pc() - t)))
    t = pc()
    for p in names: os.unlink(p)
    print("meta_unlink %.1f" % (n / (pc() - t)))
def mkfiles(d, n):
    for i in range(n): os.close(os.open(os.path.join(d, "l%06d" % i), os.O_CREAT | os.O_WRONLY, 0o644))
def append(path, n):
    buf = os.urandom(4096)
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_APPEND | os.O_EXCL, 0o644)
    t = pc()
    for _ in range(n):
        os.write(fd, buf)
        os.fsync(fd)
    el = pc() - t
    os.close(fd)
    print("fsync_append %.1f" % (n / el))
def fill(d, n, ndirs, procs):
    # n files of MOUNT_FILE_BYTES in ndirs directories, by procs processes (scripts/fill_store.py)
    sys.path.insert(0, os.environ["SCRIPTS_DIR"])
    from fill_store import fill as fill_store
    rate = fill_store(d, n, ndirs, procs, int(os.environ.get("MOUNT_FILE_BYTES", "100")))
    print("mount_files %d" % n)
    print("mount_fill %.1f" % rate)
def fio_iops(path, bs):
    import json
    j = json.load(open(path))["jobs"][0]["write"]
    print(j["io_bytes"] // bs)
cmd = sys.argv[1]
args = [int(a) if a.isdigit() else a for a in sys.argv[2:]]
globals()[cmd](*args)
EOF
wl() { SCRIPTS_DIR="$PWD/scripts" python3 "$W/wl.py" "$@"; }
now() { date +%s.%N; }
elapsed() { python3 -c "import sys; print('%.3f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$@"; }
# No figures (every run failed) give "ERR", never a failed pipeline: under `set -e` that ended
# the script before its report, losing every other figure of the run.
median() { tr ' ' '\n' <<< "$1" | { grep -v '^$' || true; } | sort -g | awk '{a[NR]=$1} END {if (NR==0) print "ERR"; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
rate() { python3 -c "import sys; print('%.1f' % (float(sys.argv[1]) / (float(sys.argv[3]) - float(sys.argv[2]))))" "$@"; }

# Each wl_* gets SYSTEM and a fresh empty DIR on it and prints "METRIC VALUE" lines.
wl_seq() {
    local sys=$1 d=$2 t0 t1
    t0=$(now)
    fio --name=seqw --filename="$d/seq" --rw=write --bs=1M --size="${SEQ_MB}M" --ioengine=psync \
        --end_fsync=1 --output="$W/fio.json" --output-format=json >/dev/null
    t1=$(now); echo "seq_write $(rate "$SEQ_MB" "$t0" "$t1")"
    remount_sys "$sys" >&2; drop_caches
    t0=$(now); dd if="$d/seq" of=/dev/null bs=1M status=none; t1=$(now)
    echo "seq_read $(rate "$SEQ_MB" "$t0" "$t1")"
}
wl_rand() {
    local d=$2 t0 t1 ops
    fio --name=prep --filename="$d/rand" --rw=write --bs=1M --size="${RAND_MB}M" --ioengine=psync \
        --end_fsync=1 --output="$W/fio.json" >/dev/null
    drop_caches
    t0=$(now)
    fio --name=randw --filename="$d/rand" --rw=randwrite --bs=4k --size="${RAND_MB}M" --ioengine=psync \
        --direct=0 --end_fsync=1 --time_based=0 --runtime="$RAND_RUNTIME" \
        --output="$W/fio.json" --output-format=json >/dev/null
    t1=$(now)
    ops=$(wl fio_iops "$W/fio.json" 4096)
    echo "rand_write $(rate "$ops" "$t0" "$t1")"
}
wl_small() { wl small "$2" "$SMALL_FILES" "$SMALL_DIRS"; }
wl_meta() { wl meta "$2" "$META_FILES"; }
wl_ls() {
    local d=$2 t0 t1
    wl mkfiles "$d" "$LS_FILES"; drop_caches
    t0=$(now); ls -l "$d" >/dev/null; t1=$(now)
    echo "ls_l $(python3 -c "print('%.3f' % ($t1 - $t0))")"
}

wl_untar() {
    local d=$2 t0 t1
    cat "$W/src.tar" > /dev/null    # the tarball is read from the page cache, not timed
    sync
    t0=$(now); tar -xf "$W/src.tar" -C "$d"; sync; t1=$(now)
    echo "untar $(elapsed "$t0" "$t1")"
    drop_caches
    t0=$(now); du -s "$d" >/dev/null; t1=$(now)
    echo "du $(elapsed "$t0" "$t1")"
}
wl_append() { wl append "$2/append" "$APPEND_OPS"; }

# wl_mount (logstorfs only) works on stores of its own (STORE_MT on the ext4, mounted on MNT_MT),
# not in DIR: mount time depends on everything a store holds, including what other workloads
# left behind in the shared store.
mt_mount() { # mt_mount STORE [WRAPPER...]: mount on MNT_MT, wait until the mount point answers
    local pdev store=$1; shift; pdev="$(stat -c %d "$(dirname "$MNT_MT")")"
    # info: the open's timing lines (mt_open_log) reach mount.log before the daemon detaches.
    RUST_LOG="${RUST_LOG:-info}" "$@" "$LOGSTORFS" mount --daemon --create --size "$MOUNT_STORE_SIZE" "$store" "$MNT_MT" </dev/null >/dev/null 2>>"$W/mount.log"
    local i; for i in $(seq 1 3000); do
        [[ "$(stat -c %d "$MNT_MT" 2>/dev/null)" != "$pdev" ]] && return 0; sleep 0.01
    done
    echo "$MNT_MT does not answer 30 s after logstorfs mount returned" >&2; return 1
}
mt_open_log() { # the last mount's own timing: engine open (recovery, then the rest), orphans
    grep -E 'open: recovery|mount: orphans' "$W/mount.log" | tail -n 2 | sed 's/^.*\] //' | paste -sd ',' -
}
mt_rss_kb() { # VmRSS (kB) of the daemon serving STORE
    local pid; pid="$(sed -n 2p "$1/mounted")"
    awk '/^VmRSS:/ {print $2}' "/proc/$pid/status"
}
mt_stat() { "$LOGSTORFS" stats --json "$MNT_MT" | python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
wl_mount() {
    local store="$EXT4/logstor-mt" empty="$EXT4/logstor-empty" base_kb rss_kb entries ibytes t0 t1 i
    local cold="" warm=""
    rm -rf "$store" "$empty"
    mt_mount "$empty"; sleep 1; base_kb="$(mt_rss_kb "$empty")"; unmount "$MNT_MT"; rm -rf "$empty"
    mt_mount "$store"
    wl fill "$MNT_MT" "$MOUNT_FILES" "$MOUNT_DIRS" "$MOUNT_PROCS"
    unmount "$MNT_MT"
    for i in $(seq 1 "$MOUNT_REPEATS"); do
        drop_caches
        t0=$(now); mt_mount "$store"; t1=$(now); cold+="$(elapsed "$t0" "$t1") "
        echo "cold remount $i: $(mt_open_log)" >> "$W/mount.detail"
        unmount "$MNT_MT"
    done
    for i in $(seq 1 "$MOUNT_REPEATS"); do
        t0=$(now); mt_mount "$store"; t1=$(now); warm+="$(elapsed "$t0" "$t1") "
        [[ $i -lt $MOUNT_REPEATS ]] && unmount "$MNT_MT"
    done
    echo "mount_cold $(median "$cold")"
    echo "mount_warm $(median "$warm")"
    # (no log here: lib.sh's log prints to stdout, which is this function's result)
    echo "cold remounts ${cold% }, warm remounts ${warm% } s; empty-store daemon VmRSS ${base_kb} kB" >> "$W/mount.detail"
    sleep 1
    rss_kb="$(mt_rss_kb "$store")"
    entries="$(mt_stat index_entries)"; ibytes="$(mt_stat index_bytes)"
    # After a crash: the daemon is killed while serving, just after a few unsynced creates;
    # the next open reads what changed since the checkpoint of the last clean unmount.
    local crash="" pid
    for i in $(seq 1 "$MOUNT_REPEATS"); do
        wl mkfiles "$MNT_MT" 100
        pid="$(sed -n 2p "$store/mounted")"
        kill -9 "$pid"
        while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
        fusermount3 -uz "$MNT_MT"
        drop_caches
        if [[ -n "${MOUNT_PERF:-}" ]]; then
            # perf follows the mount command into its daemon until the command exits, which is
            # once the mount is live: the profile is the mount's, serving left out.
            mkdir -p "$MOUNT_PERF"
            t0=$(now); mt_mount "$store" perf record -F 999 -g -o "$MOUNT_PERF/crash-$i.data" --; t1=$(now)
        else
            t0=$(now); mt_mount "$store"; t1=$(now)
        fi
        crash+="$(elapsed "$t0" "$t1") "
        echo "crash remount $i: $(mt_open_log)" >> "$W/mount.detail"
    done
    echo "mount_crash $(median "$crash")"
    echo "cold remounts after kill -9 ${crash% } s" >> "$W/mount.detail"
    unmount "$MNT_MT"
    rm -rf "$store"
    python3 -c "
import sys
rss, base, n, ib, files = (int(a) for a in sys.argv[1:])
print('mount_records %d' % n)
print('mount_rss %.1f' % (rss / 1024))
print('rss_per_record %.1f' % (rss * 1024 / n))
print('rss_delta_per_record %.1f' % ((rss - base) * 1024 / n))
print('rss_per_file %.1f' % (rss * 1024 / files))
print('index_bytes_per_record %.1f' % (ib / n))" "$rss_kb" "$base_kb" "$entries" "$ibytes" "$MOUNT_FILES"
}

declare -A RES=()
run_one() { # run_one WORKLOAD SYSTEM RUN
    local w=$1 s=$2 r=$3 d="${MNT[$2]}/b.$1.$3" out err m v
    mkdir "$d"
    err="$W/err"
    if out="$(wl_"$w" "$s" "$d" 2>"$err")"; then
        while read -r m v; do [[ -n "$m" ]] && RES[$m|$s]+="$v "; done <<< "$out"
        log "  $w run $r $s: $(echo $out)"
    else
        FAILURES+=("$s: workload $w run $r failed: $(tail -n 3 "$err" | tr '\n' ' ')")
        log "  $w run $r $s: FAILED: $(tail -n 3 "$err" | tr '\n' ' ')"
        local mp="${MNT[$s]}"; [[ $s == ext4 ]] && mp="$EXT4"
        is_mounted "$mp" || mount_sys "$s" >&2 || true
    fi
    rm -rf "$d" 2>/dev/null || FAILURES+=("$s: rm -rf of the workload $w directory failed")
    sync
}

read -r -a SYS <<< "$SYSTEMS"
for w in "${WORKLOADS[@]}"; do
    declare -F "wl_$w" >/dev/null || { echo "unknown workload $w" >&2; exit 2; }
    wsys=()
    for s in "${SYS[@]}"; do [[ -z "${WL_SYSTEMS[$w]:-}" || " ${WL_SYSTEMS[$w]} " == *" $s "* ]] && wsys+=("$s"); done
    n=${#wsys[@]}
    [[ $n -gt 0 ]] || { log "workload $w: none of its systems (${WL_SYSTEMS[$w]}) is benchmarked, skipped"; continue; }
    log "workload $w"
    for r in $(seq 1 "${WL_RUNS[$w]:-$RUNS}"); do
        for i in $(seq 0 $((n - 1))); do run_one "$w" "${wsys[$(( (i + r - 1) % n ))]}" "$r"; done
    done
done

if [[ -n "${BENCH_RAW:-}" ]]; then
    for k in "${!RES[@]}"; do for v in ${RES[$k]}; do echo "${k%|*} ${k#*|} $v"; done; done >> "$BENCH_RAW"
fi

# ---- report -------------------------------------------------------------------------------------
# ratio "LOGSTORFS RUNS" "PEER RUNS" BETTER: the median of the per-round ratios, with their
# range when there is more than one round. Round r of both lists ran in the same alternation, so
# a drift of the machine weighs on both sides of each ratio; a list with a failed run has fewer
# values, and then the ratio of the medians is all that can be said ("of medians").
ratio() {
    python3 -c "
import statistics, sys
l, p, b = sys.argv[1:]
try:
    l, p = [float(v) for v in l.split()], [float(v) for v in p.split()]
    f = (lambda x, y: x / y) if b == 'higher' else (lambda x, y: y / x)
    if len(l) != len(p):
        print('%.2f of medians' % f(statistics.median(l), statistics.median(p)))
    elif len(l) == 1:
        print('%.2f' % f(l[0], p[0]))
    else:
        r = [f(x, y) for x, y in zip(l, p)]
        print('%.2f (%.2f..%.2f)' % (statistics.median(r), min(r), max(r)))
except Exception: print('-')" "$@"
}
peers=()
for s in bindfs fuse2fs ext4 floor; do [[ " $SYSTEMS " == *" $s "* ]] && peers+=("$s"); done
TABLE="$W/table.md"
{
    printf '| workload | unit |'; for s in "${SYS[@]}"; do printf ' %s |' "$s"; done
    for p in "${peers[@]}"; do printf ' logstorfs/%s |' "$p"; done; echo
    printf '|---|---|'; for _ in "${SYS[@]}" "${peers[@]}"; do printf -- '---:|'; done; echo
    for m in "${METRIC_ORDER[@]}"; do
        IFS='|' read -r unit better label msys <<< "${METRICS[$m]}"
        # skip metrics of workloads that were not run
        ran=0; for s in "${SYS[@]}"; do [[ -n "${RES[$m|$s]:-}" ]] && ran=1; done
        [[ $ran -eq 1 ]] || continue
        declare -A MED=()
        for s in "${SYS[@]}"; do
            if [[ -n "$msys" && " $msys " != *" $s "* ]]; then MED[$s]="n/a"; else MED[$s]="$(median "${RES[$m|$s]:-}")"; fi
        done
        u="$unit"; [[ $better == lower ]] && u="$unit (lower is better)"
        printf '| %s | %s |' "$label" "$u"; for s in "${SYS[@]}"; do printf ' %s |' "${MED[$s]}"; done
        for p in "${peers[@]}"; do
            if [[ $better == info || ${MED[$p]} == n/a ]]; then printf ' n/a |'
            else printf ' %s |' "$(ratio "${RES[$m|logstorfs]:-ERR}" "${RES[$m|$p]}" "$better")"; fi
        done; echo
        unset MED
    done
} > "$TABLE"
MODE="full"; [[ $QUICK -eq 1 ]] && MODE="quick"
DISK_DEV="$(df --output=source "$W" | tail -n 1)"
DISK_INFO="$(lsblk -dno NAME,SIZE,ROTA,MODEL "$(lsblk -no PKNAME "$DISK_DEV" 2>/dev/null | head -n 1 | sed 's|^|/dev/|;s|^/dev/$||')" 2>/dev/null || lsblk -dno NAME,SIZE,ROTA,MODEL "$DISK_DEV" 2>/dev/null || echo "$DISK_DEV")"
{
    echo
    echo "### $(date -u '+%Y-%m-%d %H:%M UTC'), $MODE mode ($BENCH_COMMIT)"
    echo
    declare -A SIZE_DESC=([seq]="seq ${SEQ_MB} MiB" [rand]="random overwrite ${RAND_MB} MiB (max ${RAND_RUNTIME} s)"
        [small]="small files ${SMALL_FILES} in ${SMALL_DIRS} dirs" [meta]="metadata ${META_FILES} files"
        [ls]="ls -l ${LS_FILES} files" [untar]="untar ${UNTAR_DESC:-}" [append]="${APPEND_OPS} fsync'd 4k appends")
    sizes=""; for w in "${WORKLOADS[@]}"; do [[ -n "${SIZE_DESC[$w]:-}" ]] && sizes+="${SIZE_DESC[$w]}, "; done
    echo "Workloads: ${WORKLOADS[*]}. Sizes: ${sizes%, }; median of ${RUNS} alternating runs; logstorfs --size ${LOGSTOR_SIZE}${LOGSTOR_OPTS:+ ${LOGSTOR_OPTS}}."
    if [[ " ${WORKLOADS[*]} " == *" mount "* ]]; then
        echo "Mount and memory (logstorfs only, once): a fresh store (--size ${MOUNT_STORE_SIZE}) of ${MOUNT_FILES} files of ${MOUNT_FILE_BYTES} B in ${MOUNT_DIRS} dirs; median of ${MOUNT_REPEATS} remounts, timed from \`logstorfs mount --daemon\` until \`stat\` of the mount point sees it; VmRSS of the daemon after the last (warm) remount."
    fi
    echo "Ratios: > 1 means logstorfs is faster than the peer (for times: peer time / logstorfs time), the median of the per-round ratios with their range; n/a: does not apply."
    if [[ " $SYSTEMS " == *" floor "* ]]; then
        echo "floor: \`fuse_floor --xattrs\`, a fuser daemon that stores nothing, mounted as logstorfs is (the FUSE floor here); logstorfs/floor >= 0.83 means the floor is within 20% of logstorfs."
    fi
    echo
    cat "$TABLE"
    echo
    if [[ -s "$W/mount.detail" ]]; then echo "Mount detail: $(paste -sd ';' "$W/mount.detail")."; echo; fi
    echo "Machine: $(nproc) CPUs, kernel $(uname -r), disk ${DISK_INFO:-$DISK_DEV} (ext4 and fuse2fs images are sparse files on it); load average at the start ${LOAD_START}, at the end $(cut -d' ' -f1-3 /proc/loadavg) (other jobs on the machine show here); \`free -g\`:"
    echo
    echo '```'
    free -g
    echo '```'
    if [[ ${#FAILURES[@]} -gt 0 ]]; then
        echo; echo "Failures:"; for f in "${FAILURES[@]}"; do echo "- $f"; done
    fi
} > "$W/section.md"
cat "$W/section.md"

if [[ "$BENCH_DOCS" == 1 ]]; then
    DOC="$REPO/docs/BENCHMARKS.md"
    mkdir -p "$REPO/docs"
    [[ -f "$DOC" ]] || printf '# Benchmarks\n' > "$DOC"
    # Re-read right before writing: the new section goes at the end of the "## Filesystem vs
    # peers" section (before the next "## " heading), which is created at the end if missing.
    if ! grep -qx '## Filesystem vs peers' "$DOC"; then
        printf '\n## Filesystem vs peers\n\nWritten by `scripts/bench.sh` (logstorfs vs kernel ext4, bindfs and fuse2fs on the same disk).\n' >> "$DOC"
    fi
    python3 - "$DOC" "$W/section.md" <<'PYEOF'
import sys
doc, sec = sys.argv[1:]
lines = open(doc).read().split("\n")
new = open(sec).read().rstrip("\n").split("\n")
start = lines.index("## Filesystem vs peers")
end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
while end > start + 1 and lines[end - 1] == "": end -= 1
lines[end:end] = new + ([""] if end < len(lines) and lines[end] != "" else [])
open(doc, "w").write("\n".join(lines).rstrip("\n") + "\n")
PYEOF
    log "written to $DOC (end of its section \"Filesystem vs peers\")"
fi
[[ ${#FAILURES[@]} -eq 0 ]]
