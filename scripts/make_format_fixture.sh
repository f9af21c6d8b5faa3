#!/usr/bin/env bash
# Makes the committed store images of the current on-disk format that every later build must
# still read (tests/format_fixture.rs): run it once per format version, when a version constant
# in src/engine/format.rs changes, and commit what it writes. Never regenerate the images of an
# older version: they are what users' stores of that version hold.
#
#   bash scripts/make_format_fixture.sh [BINARY]     (root: FUSE mounts)
#
# Writes tests/fixtures/format-vF-sbS/ (F = FORMAT_VERSION, S = SUPERBLOCK_VERSION):
#   clean.tar.gz, clean.manifest   the workload of scripts/format_fixture_workload.py on a real
#                                  mount, then a clean unmount
#   crash.tar.gz, crash.manifest   the same workload synced, then files created and unlinked
#                                  without a sync while the daemon is killed with SIGKILL; the
#                                  image is the one a power cut at that moment leaves (replayed
#                                  from the mount's recorded storage calls, a seeded random part
#                                  of the unsynced sectors kept): recovery's path (a full scan,
#                                  torn buffers, a log end) is pinned too
# Each tarball holds one directory, `store`, as the daemon left it (its log and the `mounted`
# note apart). The store is small (FIXTURE_SIZE, 32M) and its contents text, so each image
# compresses to a few hundred KiB (the bulk of what is written is low-entropy pages). The script checks that the workload did what the fixture
# promises (group-owned segments of several groups, compaction copies, segments reused), fscks
# each image and runs the test on them.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
[[ $# -ge 1 ]] && LOGSTORFS="$(realpath "$1")"
[[ $(id -u) -eq 0 ]] || die "run as root (FUSE mounts)"
for tool in python3 mountpoint fusermount3 tar gzip getfattr; do
    command -v "$tool" >/dev/null || die "$tool is missing"
done
[[ -z "$MOUNT_CMD" ]] || die "make_format_fixture.sh needs logstorfs itself: MOUNT_CMD is not supported"
cd "$REPO_ROOT"
[[ $# -ge 1 ]] || cargo build --release --quiet
[[ -x "$LOGSTORFS" ]] || die "no logstorfs binary at $LOGSTORFS"

const() { sed -n "s/^pub const $1: u16 = \([0-9]*\);.*/\1/p" src/engine/format.rs; }
FV="$(const FORMAT_VERSION)"; SV="$(const SUPERBLOCK_VERSION)"
[[ -n "$FV" && -n "$SV" ]] || die "cannot read FORMAT_VERSION / SUPERBLOCK_VERSION in src/engine/format.rs"
OUT="tests/fixtures/format-v$FV-sb$SV"
if [[ -e "$OUT" && "${FORCE:-0}" != 1 ]]; then
    die "$OUT exists: the fixture of a released format is never remade (FORCE=1 while it is unreleased)"
fi
SIZE="${FIXTURE_SIZE:-32M}"
# Small enough that the workload's directories become compaction groups of their own.
MOUNT_OPTS="--group-split-size 32K"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/fixture-make.XXXXXX")"
trap 'cleanup_mounts; [[ "${KEEP:-0}" == 1 ]] || rm -rf "$WORK"' EXIT
WL=(python3 scripts/format_fixture_workload.py)

stat_of() { "$LOGSTORFS" stats --json "$1" | python3 -c "import json,sys; print(json.load(sys.stdin)['$2'])"; }

# The promises of the fixture, read from the mounted store's figures.
check_figures() { # check_figures MNT SEED
    local mnt=$1 i mixed
    # Compaction runs in the background once free segments run short: overwrite until it has.
    for i in $(seq 1 20); do
        [[ "$(stat_of "$mnt" compaction_bytes_written)" -gt 0 ]] && break
        "${WL[@]}" overwrite "$mnt" "$2" 1000
        sleep 0.5
    done
    # The separator sorts the log once writes pause: wait until only the active segment is mixed.
    for i in $(seq 1 100); do
        mixed="$(stat_of "$mnt" mixed_segments)"
        [[ "$mixed" -le 1 ]] && break
        sleep 0.2
    done
    "$LOGSTORFS" stats --json "$mnt" > "$WORK/stats.json"
    python3 - "$WORK/stats.json" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
groups = [g for g in s["groups"] if g["segments"] > 0]
problems = []
if len(groups) < 3: problems.append("%d groups own segments, want >= 3" % len(groups))
if s["separator_bytes_written"] + s["segments_handed_over"] == 0: problems.append("the separator did nothing")
if s["compaction_bytes_written"] == 0: problems.append("compaction copied nothing")
if s["segments_reclaimed"] == 0: problems.append("no segment was reclaimed")
print("figures: %d groups with segments, separator %d B, handed over %d, compaction %d B, reclaimed %d"
      % (len(groups), s["separator_bytes_written"], s["segments_handed_over"],
         s["compaction_bytes_written"], s["segments_reclaimed"]))
if problems: sys.exit("the workload does not give the fixture it promises: " + "; ".join(problems))
EOF
}

pack() { # pack STORE NAME
    rm -f "$1/logstorfs.log" "$1/mounted"
    "$LOGSTORFS" fsck "$1" > "$WORK/$2.fsck" || { cat "$WORK/$2.fsck"; die "fsck of the $2 image failed"; }
    tail -n 1 "$WORK/$2.fsck"
    tar -C "$(dirname "$1")" --owner=0 --group=0 --numeric-owner -cf - "$(basename "$1")" | gzip -9 > "$WORK/$2.tar.gz"
    log "$2.tar.gz: $(stat -c %s "$WORK/$2.tar.gz") bytes"
}

log "clean image"
mount_fresh "$WORK/clean/store" "$WORK/mnt-clean" "$SIZE"
"${WL[@]}" build "$WORK/mnt-clean" 1
check_figures "$WORK/mnt-clean" 1
"${WL[@]}" manifest "$WORK/mnt-clean" "$WORK/clean.manifest"
unmount "$WORK/mnt-clean"
pack "$WORK/clean/store" clean

log "crash image"
# Every storage call of this mount is recorded, so that the image can be the one a power cut at
# the moment of the kill leaves: a random part of what was written since the last sync is kept,
# sector by sector (a kill alone keeps everything the daemon wrote, in the host's page cache).
MOUNT_OPTS="$MOUNT_OPTS --test-record-io $WORK/crash.iolog"
mount_fresh "$WORK/mnt-crash-store" "$WORK/mnt-crash" "$SIZE"
"${WL[@]}" build "$WORK/mnt-crash" 2
mkdir "$WORK/mnt-crash/inflight"
python3 -c "import os,sys; fd=os.open(sys.argv[1], os.O_RDONLY); os.fsync(fd)" "$WORK/mnt-crash/inflight"
check_figures "$WORK/mnt-crash" 2
"${WL[@]}" manifest "$WORK/mnt-crash" "$WORK/crash.manifest"
getfattr -n user.logstorfs.replay_mark.1 "$WORK/mnt-crash" >/dev/null 2>&1 || die "cannot mark the I/O log"
pid="$(daemon_pid "$WORK/mnt-crash")"
"${WL[@]}" inflight "$WORK/mnt-crash" "$WORK/crash.maybe" &
writer=$!
sleep 0.7
kill -9 "$pid"
wait "$writer" || true
while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
fusermount3 -uz "$WORK/mnt-crash"
_forget_mount "$WORK/mnt-crash"
log "killed mid-workload after $(wc -l < "$WORK/crash.maybe") in-flight files"
cat "$WORK/crash.maybe" >> "$WORK/crash.manifest"
# The cut: just before the sync, after mark 1 (the manifest's state is durable), that ends the
# longest run of unsynced storage calls, so that the cut tears what those calls wrote.
at="$("$LOGSTORFS" replay-cut --list "$WORK/crash.iolog" | python3 -c "
import json, sys
s = json.load(sys.stdin)
mark = [e for e, label in s['marks'] if label == 1][0]
runs = [(b - a, b) for a, b in zip(s['syncs'], s['syncs'][1:]) if a > mark]
if not runs: sys.exit('no sync after the mark: nothing to cut')
print(max(runs)[1])")"
log "power cut before storage call $at of the recorded mount"
mkdir -p "$WORK/crash"
"$LOGSTORFS" replay-cut "$WORK/crash.iolog" --at "$at" --keep random --seed 1 --out "$WORK/crash/store" >/dev/null
pack "$WORK/crash/store" crash

mkdir -p "$OUT"
cp "$WORK"/{clean,crash}.tar.gz "$WORK"/{clean,crash}.manifest "$OUT/"
log "written to $OUT; running the test on it"
cargo test --release --quiet --test format_fixture
