#!/usr/bin/env bash
# Damaged media on a real mount, and an injected disk write error (the daemon must refuse
# every later write with EIO; see the end). Damage: writes two files (fsync each), unmounts, flips bytes in the
# segment file region that holds one of them (found by searching the segment files for its
# known contents), then: `logstorfs fsck` must report the damage and name the damaged file;
# after a remount, reading the damaged file must fail with EIO (never return wrong bytes) and
# the other file must read back exactly. A third file, written twice, gets one byte of a page
# record's key flipped: reading it must fail with EIO, never return its older contents. Then
# random flips in a tree of files (FLIPS rounds, see there).
#
#   bash scripts/crash_damage.sh [BINARY]
#
# Env: KEEP=1 keeps the work dir, TMPDIR, FLIPS (random flip rounds, default 12), FLIP_SEED. Reports "crash-damage: N passed, N failed" (and into
# RESULTS_FILE).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
[[ $# -ge 1 ]] && LOGSTORFS="$(realpath "$1")"
for tool in python3 mountpoint fusermount3 sha256sum; do
    command -v "$tool" >/dev/null || die "$tool is missing"
done
[[ -z "$MOUNT_CMD" ]] || die "crash_damage.sh damages logstorfs segment files: MOUNT_CMD is not supported"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/logstorfs-damage.XXXXXX")"
STORE="$WORK/store"
MNT="$WORK/mnt"
mkdir -p "$MNT"
cleanup() {
    cleanup_mounts
    if [[ "${KEEP:-0}" == 1 ]]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
log "crash_damage on $(backend_name), work dir $WORK"

# Two files of recognisable, distinct contents (40 KB each: several pages, one batch each).
python3 - "$WORK" <<'EOF'
import sys
work = sys.argv[1]
for name, tag in (("victim", "VICTIM"), ("bystander", "BYSTANDER"), ("rewritten.old", "OLDER"),
                  ("rewritten", "NEWER")):
    body = b"".join(b"%s-line-%06d-of-crash-damage-test\n" % (tag.encode(), i) for i in range(1100))
    open("%s/%s.ref" % (work, name), "wb").write(body[:40000])
EOF

write_files() {
    mkdir -p "$MNT/dir"
    python3 - "$MNT/dir" "$WORK" <<'EOF'
import os, sys
d, work = sys.argv[1], sys.argv[2]
# "rewritten" is written twice: its older contents stay on disk until compaction, the version a
# damaged record of the newer one must never bring back.
for name, ref in (("rewritten", "rewritten.old"), ("rewritten", "rewritten"),
                  ("victim", "victim"), ("bystander", "bystander")):
    body = open("%s/%s.ref" % (work, ref), "rb").read()
    fd = os.open(os.path.join(d, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, body)
    os.fsync(fd)
    os.close(fd)
    dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    os.fsync(dfd)
    os.close(dfd)
EOF
    cmp "$WORK/victim.ref" "$MNT/dir/victim"
    cmp "$WORK/bystander.ref" "$MNT/dir/bystander"
    cmp "$WORK/rewritten.ref" "$MNT/dir/rewritten"
}

check_here "mount a fresh store" mount_fresh "$STORE" "$MNT" 64M || { summary crash-damage; exit 1; }
check "write two files, fsync" write_files
check_here "clean unmount" unmount "$MNT" || { summary crash-damage; exit 1; }
check "fsck clean before the damage" "$LOGSTORFS" fsck "$STORE"

# Flip 16 bytes in the middle of the victim's contents, wherever a segment file holds them.
damage() {
    python3 - "$STORE" "$WORK/victim.ref" "$WORK/bystander.ref" <<'EOF'
import glob, sys
store, victim, bystander = sys.argv[1], open(sys.argv[2], "rb").read(), open(sys.argv[3], "rb").read()
needle = victim[20000:20064]
hits = 0
for path in sorted(glob.glob(store + "/seg-*")):
    data = bytearray(open(path, "rb").read())
    at = data.find(needle)
    while at >= 0:
        for i in range(at, at + 16):
            data[i] ^= 0xFF
        print("flipped 16 bytes at %s byte %d" % (path, at))
        hits += 1
        at = data.find(needle, at + 1)
    if hits:
        open(path, "r+b").write(data)
if hits == 0:
    sys.exit("the victim's contents are in no segment file")
for path in sorted(glob.glob(store + "/seg-*")):
    if bystander[20000:20064] in open(path, "rb").read():
        break
else:
    sys.exit("the bystander's contents are in no segment file")
EOF
}
check "flip bytes in the segment file region holding the victim" damage

# Flip one byte of the *key* of a page record of "rewritten" (its type tag, 17 bytes before the
# page's contents), wherever a segment file holds the newer contents of that page: the record
# can no longer be found by its own key. Its buffer's record directory must name it, so that
# reading the file fails instead of serving the older contents or, since the rewrite truncated
# the file first, a hole of zeros (what the build before the record directory returned).
damage_key() {
    python3 - "$STORE" "$WORK/rewritten.ref" <<'EOF'
import glob, sys
store, newer = sys.argv[1], open(sys.argv[2], "rb").read()
needle = newer[2 * 4096:2 * 4096 + 64]   # the start of page 2: a record's value starts there
hits = 0
for path in sorted(glob.glob(store + "/seg-*")):
    data = bytearray(open(path, "rb").read())
    at = data.find(needle)
    while at >= 0:
        if data[at - 17] != ord("C"):
            sys.exit("no page key before the page's contents at %s byte %d" % (path, at))
        data[at - 17] ^= 0x01
        print("flipped the key's tag at %s byte %d" % (path, at - 17))
        hits += 1
        at = data.find(needle, at + 1)
    if hits:
        open(path, "r+b").write(data)
if hits == 0:
    sys.exit("the rewritten file's contents are in no segment file")
EOF
}
check "flip a byte of a page record's key of a rewritten file" damage_key

t_fsck_names() {
    local out rc=0
    out="$("$LOGSTORFS" fsck "$STORE" 2>&1)" || rc=$?
    echo "$out"
    expect_eq 4 "$rc" "fsck exit status (problems left uncorrected)"
    grep -q "fails its checksum" <<<"$out"
    grep -q "^/dir/victim (inode [0-9]*): damaged file: .*data page" <<<"$out"
    grep -q "^/dir/rewritten (inode [0-9]*): damaged file: .*data page" <<<"$out"
    local json
    json="$("$LOGSTORFS" fsck --json "$STORE")" || true
    python3 -c 'import json,sys; r=json.loads(sys.argv[1]); assert not r["clean"]; assert "/dir/victim" in [d["path"] for d in r["damaged_files"]], r["damaged_files"]' "$json"
}
check "fsck reports the damage and names the damaged file" t_fsck_names

check_here "remount the damaged store" mount_fresh "$STORE" "$MNT" || { summary crash-damage; exit 1; }
t_fsck_refuses_mounted() {
    local rc=0 err
    err="$("$LOGSTORFS" fsck "$STORE" 2>&1)" || rc=$?
    echo "$err"
    expect_eq 8 "$rc" "fsck exit status on a mounted store"
    grep -q "is mounted on .*unmount it first" <<<"$err"
    rc=0; err="$("$LOGSTORFS" fsck "$MNT" 2>&1)" || rc=$?
    echo "$err"
    expect_eq 8 "$rc" "fsck exit status on a mount point"
}
check "fsck refuses the mounted store (exit 8, says where it is mounted)" t_fsck_refuses_mounted
t_victim_eio() {
    local err rc=0
    err="$(cat "$MNT/dir/victim" 2>&1 >"$WORK/victim.read")" || rc=$?
    if [[ $rc -eq 0 ]]; then
        if cmp -s "$WORK/victim.ref" "$WORK/victim.read"; then
            echo "reading the damaged file returned its original bytes: the damage was not seen"
        else
            echo "reading the damaged file returned WRONG bytes ($(stat -c %s "$WORK/victim.read") bytes, $(stat -c %s "$MNT/dir/victim" 2>&1) by stat)"
        fi
        return 1
    fi
    echo "$err"
    grep -q "Input/output error" <<<"$err"
}
check "reading the damaged file fails with EIO, never wrong bytes" t_victim_eio
t_rewritten_eio() {
    local err rc=0
    err="$(cat "$MNT/dir/rewritten" 2>&1 >"$WORK/rewritten.read")" || rc=$?
    if [[ $rc -eq 0 ]]; then
        if grep -q "OLDER" "$WORK/rewritten.read"; then
            echo "reading the file whose page key is damaged returned its OLDER contents"
        elif cmp -s "$WORK/rewritten.ref" "$WORK/rewritten.read"; then
            echo "reading the file whose page key is damaged returned its contents: the damage was not seen"
        else
            # The truncate of the rewrite deleted the older pages: the page reads as a hole.
            echo "reading the file whose page key is damaged returned WRONG bytes (zeros where the page was?): $(cmp "$WORK/rewritten.ref" "$WORK/rewritten.read" 2>&1)"
        fi
        return 1
    fi
    echo "$err"
    grep -q "Input/output error" <<<"$err"
}
check "reading a file whose page record's key is damaged fails with EIO, never its older contents" t_rewritten_eio
check "the other file reads back exactly" cmp "$WORK/bystander.ref" "$MNT/dir/bystander"
check_here "clean unmount" unmount "$MNT"

# ---- random flips (issue 6 point 4 at large): a store of many files and directories, then
# FLIPS rounds (default 12; by hand more), each on a fresh copy of the store: one byte flipped
# at a random place of a segment file (a buffer header in a third of the rounds, else anywhere
# in a written block), then fsck, a mount, and a read of every file and every directory
# listing. Each must read exactly, or fail with EIO; never wrong bytes, never a missing or
# extra name. fsck must name every file whose data fails (exit 4), exit 4 if anything fails,
# and exit 0 when nothing does. FLIP_SEED picks the places (default 1). ----
FLIPS="${FLIPS:-12}"
FLIP_STORE="$WORK/flip-store"
FLIP_COPY="$WORK/flip-copy"
check_here "mount a new store for random flips" mount_fresh "$FLIP_STORE" "$MNT" 64M \
    || { summary crash-damage; exit 1; }
t_flip_tree() {
    python3 - "$MNT" "$WORK/flip-manifest.json" <<'EOF'
import hashlib, json, os, random, sys
mnt, manifest = sys.argv[1], sys.argv[2]
rng = random.Random(7)
def write(path, body):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, body)
    os.fsync(fd)
    os.close(fd)
for d in range(4):
    os.makedirs(os.path.join(mnt, "d%d" % d, "sub"), exist_ok=True)
for i in range(48):
    where = os.path.join(mnt, "d%d" % (i % 4), "sub" if i % 3 == 0 else "", "f%02d" % i)
    size = rng.choice([0, 100, 5000, 40000, 200000])
    body = bytes(rng.getrandbits(8) for _ in range(64)) * (size // 64 + 1)
    if i % 5 == 0:  # written twice: the older contents stay on disk until compaction
        write(where, b"OLDER" * (size // 5 + 1))
    write(where, body[:size])
os.rename(os.path.join(mnt, "d0", "f04"), os.path.join(mnt, "d1", "moved"))
os.unlink(os.path.join(mnt, "d2", "f02"))
for d in [mnt] + [os.path.join(r, x) for r, ds, _ in os.walk(mnt) for x in ds]:
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    os.fsync(fd)
    os.close(fd)
files, dirs = {}, {}
for root, ds, fs in os.walk(mnt):
    rel = os.path.relpath(root, mnt)
    dirs[rel] = sorted(ds + fs)
    for f in fs:
        files[os.path.join(rel, f)] = hashlib.sha256(open(os.path.join(root, f), "rb").read()).hexdigest()
json.dump({"files": files, "dirs": dirs}, open(manifest, "w"))
print("%d files in %d directories" % (len(files), len(dirs)))
EOF
}
check "write a tree of files for random flips (fsync each)" t_flip_tree
check_here "clean unmount" unmount "$MNT"
check "fsck clean before the flips" "$LOGSTORFS" fsck "$FLIP_STORE"

flip_one_byte() { # flip_one_byte STORE SEED: prints where
    python3 - "$1" "$2" <<'EOF'
import glob, os, random, sys
store, seed = sys.argv[1], int(sys.argv[2])
rng = random.Random(seed)
blocks = []   # (path, offset) of every 4 KiB block holding a non-zero byte
headers = []  # (path, offset) of every block that starts with a buffer header's magic
for path in sorted(glob.glob(store + "/seg-*")):
    data = open(path, "rb").read()
    for at in range(0, len(data), 4096):
        block = data[at:at + 4096]
        if block.count(0) != len(block):
            blocks.append((path, at))
            if block[:4] == b"LSBF":
                headers.append((path, at))
if rng.random() < 1 / 3:
    path, at = rng.choice(headers)
    at += rng.randrange(64)
else:
    path, at = rng.choice(blocks)
    at += rng.randrange(4096)
mask = rng.randrange(1, 256)
with open(path, "r+b") as f:
    f.seek(at)
    byte = f.read(1)[0]
    f.seek(at)
    f.write(bytes([byte ^ mask]))
print("seed %d: flipped %s byte %d ^ 0x%02x" % (seed, os.path.basename(path), at, mask))
EOF
}

verify_flipped() { # verify_flipped MNT MANIFEST FSCK_EXIT FSCK_JSON
    python3 - "$@" <<'EOF'
import errno, hashlib, json, os, sys
mnt, manifest, fsck_rc, report = sys.argv[1], json.load(open(sys.argv[2])), int(sys.argv[3]), sys.argv[4]
try:
    named = {d["path"].lstrip("/") for d in json.loads(report)["damaged_files"]}
except Exception as e:
    sys.exit("fsck --json printed no report: %s" % e)
wrong, data_eio, meta_eio = [], [], []
for rel, names in manifest["dirs"].items():
    try:
        got = sorted(os.listdir(os.path.join(mnt, rel)))
        if got != names:
            wrong.append("directory %s lists %s, not %s" % (rel, got, names))
    except OSError as e:
        (meta_eio if e.errno == errno.EIO else wrong).append("listing %s: %s" % (rel, e))
for rel, digest in manifest["files"].items():
    try:
        f = open(os.path.join(mnt, rel), "rb")
    except OSError as e:
        (meta_eio if e.errno == errno.EIO else wrong).append("open %s: %s" % (rel, e))
        continue
    try:
        body = f.read()
        if hashlib.sha256(body).hexdigest() != digest:
            wrong.append("%s reads WRONG bytes (%d bytes)" % (rel, len(body)))
    except OSError as e:
        (data_eio if e.errno == errno.EIO else wrong).append(os.path.normpath(rel))
    finally:
        f.close()
print("%d file(s) fail with EIO, %d lookup(s) or listing(s) fail with EIO; fsck exit %d, names %s"
      % (len(data_eio), len(meta_eio), fsck_rc, sorted(named)))
with open(os.environ["FLIP_TALLY"], "a") as tally:
    tally.write("%d %d\n" % (len(data_eio), len(meta_eio)))
problems = list(wrong)
if (data_eio or meta_eio) and fsck_rc != 4:
    problems.append("reads fail but fsck exits %d" % fsck_rc)
if not (data_eio or meta_eio) and fsck_rc != 0:
    problems.append("every read succeeds but fsck exits %d" % fsck_rc)
for rel in data_eio:
    if rel not in named:
        problems.append("%s fails with EIO but fsck does not name it" % rel)
if problems:
    sys.exit("\n".join(problems + meta_eio))
EOF
}

t_random_flip() { # t_random_flip SEED
    rm -rf "$FLIP_COPY"
    cp -a --sparse=always "$FLIP_STORE" "$FLIP_COPY"
    flip_one_byte "$FLIP_COPY" "$1"
    local report rc=0 vrc=0
    report="$("$LOGSTORFS" fsck --json "$FLIP_COPY" 2>/dev/null)" || rc=$?
    mount_fresh "$FLIP_COPY" "$MNT" || return 1
    verify_flipped "$MNT" "$WORK/flip-manifest.json" "$rc" "$report" || vrc=$?
    unmount "$MNT" || return 1
    return $vrc
}
export FLIP_TALLY="$WORK/flip-tally"
: >"$FLIP_TALLY"
for round in $(seq 1 "$FLIPS"); do
    seed=$(( ${FLIP_SEED:-1} * 100000 + round ))
    check "random flip $round of $FLIPS (seed $seed): every file reads exactly or fails with EIO, fsck names it" \
        t_random_flip "$seed"
done
log "random flips: $(awk '$1 + $2 > 0 { hit++ } $1 > 0 { files += $1 } END { printf "%d of %d made reads fail (%d file reads in all); the others cost nothing", hit, NR, files }' "$FLIP_TALLY")"

# ---- an I/O error from the disk (injected: `mount --test-fail-writes-after N`): the daemon
# must refuse every later write with EIO, not go on silently; what was synced before stays
# readable, and intact after a remount without the fault ----
EIO_STORE="$WORK/eio-store"
MOUNT_OPTS="--test-fail-writes-after 200"
check_here "mount a new store that fails its 201st segment write" mount_fresh "$EIO_STORE" "$MNT" 64M \
    || { summary crash-damage; exit 1; }
MOUNT_OPTS=""
t_eio_latches() {
    python3 - "$MNT" "$WORK" <<'EOF'
import errno, os, sys
mnt, work = sys.argv[1], sys.argv[2]
synced = []
failed = None
for i in range(2000):
    p = os.path.join(mnt, "f%04d" % i)
    body = (b"%06d-" % i) * 700
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, body)
            os.fsync(fd)
        finally:
            os.close(fd)
        dfd = os.open(mnt, os.O_RDONLY | os.O_DIRECTORY)
        os.fsync(dfd)
        os.close(dfd)
        synced.append(i)
    except OSError as e:
        failed = e
        break
if failed is None:
    sys.exit("2000 files written and synced: the injected write error never surfaced")
print("first error after %d synced files: %s" % (len(synced), failed))
if failed.errno != errno.EIO:
    sys.exit("expected EIO, got %s" % failed)
# Every later write is refused with EIO, whatever it is.
for what, op in (("create", lambda: open(os.path.join(mnt, "late"), "wb").close()),
                 ("mkdir", lambda: os.mkdir(os.path.join(mnt, "latedir"))),
                 ("rename", lambda: os.rename(os.path.join(mnt, "f0000"), os.path.join(mnt, "moved")))):
    try:
        op()
        sys.exit("%s succeeded after the disk error" % what)
    except OSError as e:
        if e.errno != errno.EIO:
            sys.exit("%s after the disk error: expected EIO, got %s" % (what, e))
# What was synced is still readable.
for i in synced:
    if open(os.path.join(mnt, "f%04d" % i), "rb").read() != (b"%06d-" % i) * 700:
        sys.exit("f%04d reads back wrong after the disk error" % i)
open(os.path.join(work, "eio-synced"), "w").write("\n".join(map(str, synced)))
print("%d synced files read back; create, mkdir, rename refused with EIO" % len(synced))
EOF
}
check "an injected disk write error: EIO, every later write refused with EIO, synced data readable" t_eio_latches
# The daemon latched read-only; unmounting must still work.
check_here "unmount after the disk error" unmount "$MNT"
t_eio_remount() {
    mount_fresh "$EIO_STORE" "$MNT" || return 1
    python3 - "$MNT" "$WORK/eio-synced" <<'EOF'
import os, sys
mnt = sys.argv[1]
synced = [int(x) for x in open(sys.argv[2]).read().split()]
for i in synced:
    if open(os.path.join(mnt, "f%04d" % i), "rb").read() != (b"%06d-" % i) * 700:
        sys.exit("f%04d lost or wrong after remount" % i)
open(os.path.join(mnt, "after"), "wb").write(b"writable again")
print("%d synced files intact after remount; the store takes writes again" % len(synced))
EOF
    unmount "$MNT"
}
check "remount without the fault: every synced file intact, writable" t_eio_remount
check "fsck of the store after the disk error" "$LOGSTORFS" fsck "$EIO_STORE"
summary crash-damage
