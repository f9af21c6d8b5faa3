#!/usr/bin/env bash
# fallocate on the mount and on a kernel ext4 loop mount (4 KiB blocks): each case runs the same
# fallocate(1) calls (-l, -n, -p, -z, -d, -c, -i) on a file made the same way on both, and
# compares sizes, st_blocks and content checksums; then scripts/fallocate_probe.py compares the
# errno of every mode combination, made through fallocate(2) itself.
#
# COLLAPSE_RANGE and INSERT_RANGE never reach a FUSE daemon: the kernel's FUSE module refuses them
# with EOPNOTSUPP (fuse_file_fallocate accepts KEEP_SIZE, PUNCH_HOLE and ZERO_RANGE only). Those
# cases check that difference as it is: done on ext4, EOPNOTSUPP and the file unchanged on the
# mount (`tests/fs_fallocate.rs` checks the modes themselves through `Fs`).
#
#   bash scripts/fallocate_vs_ext4.sh [BINARY]
#
# Needs root (loop mount). Env: KEEP=1 keeps the work dir, TMPDIR.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
[[ $# -ge 1 ]] && LOGSTORFS="$(realpath "$1")"
HERE="$(cd "$(dirname "$0")" && pwd)"

for tool in mkfs.ext4 fallocate python3 sha256sum fusermount3; do
    command -v "$tool" >/dev/null || die "$tool is missing"
done
[[ $(id -u) -eq 0 ]] || die "run as root (loop mount)"

# 4 KiB blocks, as logstorfs pages (mkfs picks 1 KiB blocks for an image this small).
with_ext4 logstorfs-verify 128M "" -b 4096

log "fallocate on $(backend_name) against ext4, work dir $WORK"
check_here "mount fresh store" mount_fresh "$WORK/store" "$MNT" 256M || { summary fallocate-vs-ext4; exit 1; }

head -c 400000 /dev/urandom > "$WORK/seed"

# make_file PATH SPEC...: the file's content, built from parts: dN (N bytes of the seed, from
# where the last part ended), zN (N zero bytes written), hN (an N-byte hole: truncate).
make_file() {
    local f="$1" part n at=0; shift
    rm -f "$f"; : > "$f"
    for part in "$@"; do
        n="${part:1}"
        case "$part" in
            d*) head -c "$n" < <(tail -c +"$((at + 1))" "$WORK/seed") >> "$f" ;;
            z*) head -c "$n" /dev/zero >> "$f" ;;
            h*) truncate -s "+$n" "$f" ;;
        esac
        at=$((at + n))
    done
}
state() { echo "$(stat -c '%s %b' "$1") $(sha256sum < "$1" | cut -c1-16)"; }

# fa_case NAME SPEC -- CMD... [-- CMD...]: on ext4 and the mount, make the file from SPEC, run each
# CMD with {} replaced by its path, and compare the states (and each command's success).
fa_case() {
    local name="$1" spec=() dir f out=() cmds=() a
    shift
    while [[ "$1" != -- ]]; do spec+=("$1"); shift; done
    shift
    for dir in "$EXT" "$MNT"; do
        f="$dir/fa-$name"
        make_file "$f" "${spec[@]}"
        local res="" args=()
        for a in "$@" --; do
            if [[ "$a" == -- ]]; then
                [[ ${#args[@]} -gt 0 ]] && { if "${args[@]}" 2>/dev/null; then res+=" ok"; else res+=" fail"; fi; }
                args=()
            else
                args+=("${a//\{\}/$f}")
            fi
        done
        out+=("$(state "$f")$res")
    done
    echo "ext4:      ${out[0]}"
    echo "logstorfs: ${out[1]}"
    expect_eq "${out[0]}" "${out[1]}" "size, st_blocks, sha256, results after $name (ext4 vs logstorfs)"
}

# fuse_refuses NAME SPEC -- CMD: done on ext4; on the mount EOPNOTSUPP and the file unchanged.
fuse_refuses() {
    local name="$1" spec=() f before err
    shift
    while [[ "$1" != -- ]]; do spec+=("$1"); shift; done
    shift
    f="$EXT/fr-$name"; make_file "$f" "${spec[@]}"
    "${@//\{\}/$f}" || { echo "ext4 refused: $*"; return 1; }
    f="$MNT/fr-$name"; make_file "$f" "${spec[@]}"
    before="$(state "$f")"
    if err="$("${@//\{\}/$f}" 2>&1)"; then echo "the mount took it: $*"; return 1; fi
    [[ "$err" == *"Operation not supported"* ]] || { echo "expected EOPNOTSUPP, got: $err"; return 1; }
    expect_eq "$before" "$(state "$f")" "state after a refused $name"
}

D40=(d40960)
check "-l on an empty file"                fa_case alloc-empty  h0        -- fallocate -l 10000 {}
check "-l inside the size"                 fa_case alloc-inside d10000    -- fallocate -l 5000 {}
check "-l past a short last page"          fa_case alloc-short  d5000     -- fallocate -l 20000 {}
check "-l over a sparse file"              fa_case alloc-sparse d100 h40000 d100 -- fallocate -o 2000 -l 100000 {}
check "-n past the end"                    fa_case keep         d10000    -- fallocate -n -o 20000 -l 10000 {}
check "-l then a write into the range"     fa_case alloc-write  h0        -- fallocate -l 65536 {} -- dd if="$WORK/seed" of={} bs=1000 count=7 seek=3 conv=notrunc status=none
check "-p whole and partial pages"         fa_case punch        "${D40[@]}" -- fallocate -p -o 100 -l 12288 {}
check "-p inside one page"                 fa_case punch-one    "${D40[@]}" -- fallocate -p -o 20000 -l 100 {}
check "-p past the end keeps -n pages"     fa_case punch-eof    "${D40[@]}" -- fallocate -n -o 40960 -l 40960 {} -- fallocate -p -o 0 -l 200000 {}
check "-p at the end of file"              fa_case punch-at-eof d10000    -- fallocate -p -o 10000 -l 8192 {}
check "-z partial page"                    fa_case zero-part    d10000    -- fallocate -z -o 5000 -l 100 {}
check "-z -n past the end"                 fa_case zero-keep    d10000    -- fallocate -z -n -o 8000 -l 12000 {}
check "-z in a hole and past the end"      fa_case zero-sparse  h40960    -- fallocate -z -o 5000 -l 100 {} -- fallocate -z -o 81920 -l 4096 {}
check "-d digs the zero pages out"         fa_case dig          d8192 z16384 d5000 z8192 -- fallocate -d {}
check "-p then -l again"                   fa_case punch-alloc  "${D40[@]}" -- fallocate -p -o 0 -l 40960 {} -- fallocate -l 40960 {}
check "-c refused by FUSE, done by ext4"   fuse_refuses collapse "${D40[@]}" -- fallocate -c -o 4096 -l 8192 {}
check "-i refused by FUSE, done by ext4"   fuse_refuses insert   "${D40[@]}" -- fallocate -i -o 4096 -l 8192 {}

t_errno() {
    local a b
    a="$(python3 "$HERE/fallocate_probe.py" "$EXT")"
    b="$(python3 "$HERE/fallocate_probe.py" "$MNT" --fuse)"
    diff <(echo "$a") <(echo "$b") && echo "$a" | head -3
}
check "every mode combination: errno, size, st_blocks as ext4" t_errno

# The allocations stay across a remount.
t_remount() {
    local before after
    before="$(cd "$MNT" && for f in fa-*; do echo "$f $(state "$f")"; done)"
    unmount "$MNT"
    mount_fresh "$WORK/store" "$MNT" 256M
    after="$(cd "$MNT" && for f in fa-*; do echo "$f $(state "$f")"; done)"
    expect_eq "$before" "$after" "sizes, st_blocks and sha256 across a remount"
}
check_here "allocations survive a remount" t_remount

# In a full store, writes into allocated space are taken and an allocation larger than the free
# space fails with ENOSPC, changing nothing (as on ext4, which needs no check here).
t_full() {
    local err
    fallocate -l 8M "$MNT/reserved"
    : > "$MNT/kept"; fallocate -n -l 4M "$MNT/kept"
    if dd if=/dev/urandom of="$MNT/fill" bs=1M count=1024 status=none 2>"$WORK/fill.err"; then
        echo "a 256 MiB store took 1 GiB"; return 1
    fi
    grep -q "No space left" "$WORK/fill.err" || { cat "$WORK/fill.err"; return 1; }
    dd if=/dev/urandom of="$MNT/reserved" bs=64K count=128 conv=notrunc status=none
    dd if=/dev/urandom of="$MNT/kept" bs=4K count=1024 conv=notrunc status=none
    expect_eq "8388608 16384" "$(stat -c '%s %b' "$MNT/reserved")" "reserved file after the writes"
    expect_eq "4194304 8192" "$(stat -c '%s %b' "$MNT/kept")" "KEEP_SIZE file after the writes"
    : > "$MNT/other"
    if err="$(fallocate -l 16M "$MNT/other" 2>&1)"; then echo "a full store took a 16 MiB allocation"; return 1; fi
    [[ "$err" == *"No space left"* ]] || { echo "expected ENOSPC, got: $err"; return 1; }
    expect_eq "0 0" "$(stat -c '%s %b' "$MNT/other")" "file after a refused allocation"
    rm -f "$MNT/fill" "$MNT/reserved" "$MNT/kept" "$MNT/other"
}
check "a full store takes writes into allocated space, refuses a larger allocation" t_full

summary fallocate-vs-ext4
