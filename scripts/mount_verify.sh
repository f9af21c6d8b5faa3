#!/usr/bin/env bash
# Mount a fresh store, use it with ordinary shell tools, unmount, remount and verify everything;
# then kill -9 the daemon after an fsync and verify what was synced survived.
#
#   bash scripts/mount_verify.sh [BINARY]
#
# BINARY defaults to target/release/logstorfs. To validate this script itself on another FUSE
# file system: MOUNT_CMD=bindfs bash scripts/mount_verify.sh
# Env: VERIFY_SIZE (store size, default 1G), VERIFY_SRC (a tree to copy, >= 25 MB), KEEP=1
# keeps the work dir, TMPDIR.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
[[ $# -ge 1 ]] && LOGSTORFS="$(realpath "$1")"

for tool in setfattr getfattr sqlite3 rsync mountpoint fusermount3; do
    command -v "$tool" >/dev/null || die "$tool is missing (scripts/test.sh installs it)"
done

SIZE="${VERIFY_SIZE:-1G}"
# A small group split size, so that the copies below split directories off as compaction
# groups and the removals merge them back: every check then runs with several groups.
[[ -z "$MOUNT_CMD" && -z "$MOUNT_OPTS" ]] && MOUNT_OPTS="--group-split-size 2M"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/logstorfs-verify.XXXXXX")"
STORE="$WORK/store"
MNT="$WORK/mnt"
REF="$WORK/ref"            # reference copies, outside the mount
mkdir -p "$REF" "$MNT"
cleanup() { cleanup_mounts; if [[ "${KEEP:-0}" == 1 ]]; then echo "kept $WORK"; else rm -rf "$WORK"; fi; }
trap cleanup EXIT

log "mount_verify on $(backend_name), work dir $WORK"

# ---- source trees: ~30 MB of real files, symlinks and directories from /usr/share/doc, or,
# where that is thin (slim container images drop the docs), from the cargo registry sources ----
DOC=""
for cand in "${VERIFY_SRC:-}" /usr/share/doc "$HOME"/.cargo/registry/src/*/; do
    [[ -n "$cand" && -d "$cand" ]] || continue
    if (( $(du -sk "$cand" 2>/dev/null | cut -f1) >= 25000 )); then DOC="${cand%/}"; break; fi
done
[[ -n "$DOC" ]] || die "no source tree of >= 25 MB found (/usr/share/doc, ~/.cargo/registry/src); set VERIFY_SRC"
CP_SET=()      # copied with cp -a
TAR_SET=()     # copied with tar
total=0
while read -r kb name; do
    [[ $kb -gt 8000 ]] && continue
    if (( total < 15000 )); then CP_SET+=("$name"); elif (( total < 30000 )); then TAR_SET+=("$name"); else break; fi
    total=$((total + kb))
done < <(cd "$DOC" && du -sk -- * 2>/dev/null | sort -k2)
[[ ${#CP_SET[@]} -gt 0 && ${#TAR_SET[@]} -gt 0 ]] || die "not enough in $DOC to copy"
log "copying ${#CP_SET[@]} + ${#TAR_SET[@]} directories of $DOC (~$((total / 1024)) MB)"

# Metadata listing of a tree: type, mode, owner, size (files), mtime (files, dirs), link target.
meta() {
    (cd "$1" && {
        find . -type f -printf '%P f %m %U:%G %s %T@ %n\n'
        find . -mindepth 1 -type d -printf '%P d %m %U:%G %T@\n'
        find . -type l -printf '%P l %l\n'
    } | LC_ALL=C sort)
}
meta_src() { # metadata of the doc dirs in the given set, as if rooted at one dir
    local d; for d in "$@"; do
        (cd "$DOC" && {
            find "$d" -type f -printf '%p f %m %U:%G %s %T@ %n\n'
            find "$d" -type d -printf '%p d %m %U:%G %T@\n'
            find "$d" -type l -printf '%p l %l\n'
        })
    done | LC_ALL=C sort
}

# ============================ first mount ============================
check_here "mount fresh store" mount_fresh "$STORE" "$MNT" "$SIZE" || { summary mount-verify; exit 1; }

t_empty() { expect_eq 0 "$(find "$MNT" -mindepth 1 -not -name lost+found | wc -l)" "entries in a fresh mount"; }
check "fresh mount is empty" t_empty

t_deep() {
    local p="$MNT/deep" i
    for i in $(seq 1 40); do p="$p/level$i"; done
    mkdir -p "$p"
    mkdir -p "$MNT/deep/level1/side/a/b/c" "$MNT/deep/level1/side/a/b/d"
    echo "bottom" > "$p/file"
    expect_eq bottom "$(cat "$p/file")"
    expect_eq 46 "$(find "$MNT/deep" -type d | wc -l)" "directories under deep/"
}
check "mkdir -p deep tree (40 levels)" t_deep

t_cp() {
    mkdir "$MNT/cp"
    (cd "$DOC" && cp -a -- "${CP_SET[@]}" "$MNT/cp/")
    (cd "$DOC" && for d in "${CP_SET[@]}"; do diff -r --no-dereference "$d" "$MNT/cp/$d"; done)
}
check "cp -a of real trees + diff -r" t_cp

t_cp_meta() { diff <(meta_src "${CP_SET[@]}") <(cd "$MNT/cp" && meta_src_here); }
meta_src_here() { local DOC="$PWD"; meta_src "${CP_SET[@]}"; }
check "cp -a preserved modes, owners, mtimes, symlinks" t_cp_meta

t_tar() {
    mkdir "$MNT/tar"
    tar -C "$DOC" -cf "$MNT/doc.tar" -- "${TAR_SET[@]}"
    tar -C "$MNT/tar" -xf "$MNT/doc.tar"
    (cd "$DOC" && for d in "${TAR_SET[@]}"; do diff -r --no-dereference "$d" "$MNT/tar/$d"; done)
    tar -C "$DOC" -cf "$REF/doc.tar" -- "${TAR_SET[@]}"
    cmp "$REF/doc.tar" "$MNT/doc.tar"
    tar -tf "$MNT/doc.tar" > /dev/null
}
check "tar c into the mount, tar x from it, diff -r" t_tar

t_rsync() {
    rsync -a "$DOC/${TAR_SET[0]}/" "$MNT/rsync/"
    diff -r --no-dereference "$DOC/${TAR_SET[0]}" "$MNT/rsync"
    # a second rsync must find nothing to transfer
    expect_eq 0 "$(rsync -a --itemize-changes "$DOC/${TAR_SET[0]}/" "$MNT/rsync/" | wc -l)" "rsync changes on 2nd run"
}
check "rsync -a and an idempotent second run" t_rsync

t_find_count() {
    expect_eq "$(cd "$DOC" && find "${CP_SET[@]}" | wc -l)" "$(cd "$MNT/cp" && find . -mindepth 1 | wc -l)" "find | wc -l"
}
check "find | wc -l matches the source" t_find_count

t_du() {
    local src dst
    src=$(cd "$DOC" && du -sk --apparent-size -- "${CP_SET[@]}" | awk '{s+=$1} END {print s}')
    dst=$(du -sk "$MNT/cp" | awk '{print $1}')
    echo "source apparent ${src} KiB, du on mount ${dst} KiB"
    (( dst > 0 && dst * 2 >= src && dst <= src * 4 ))
}
check "du -s of the copied tree is plausible" t_du

t_mv() {
    mkdir -p "$MNT/mv/a" "$MNT/mv/b"
    echo one > "$MNT/mv/a/f1"; echo two > "$MNT/mv/a/f2"; echo three > "$MNT/mv/b/f3"
    mv "$MNT/mv/a/f1" "$MNT/mv/a/g1"                       # rename in place
    mv "$MNT/mv/a/f2" "$MNT/mv/b/g2"                       # across directories
    mv "$MNT/mv/b/g2" "$MNT/mv/b/f3"                       # replace an existing file
    mkdir -p "$MNT/mv/a/sub/subsub"; echo deep > "$MNT/mv/a/sub/subsub/x"
    mv "$MNT/mv/a/sub" "$MNT/mv/b/moved"                   # directory across directories
    cp -a "$MNT/cp/${CP_SET[0]}" "$MNT/mv/tree"
    mv "$MNT/mv/tree" "$MNT/mv/a/tree"                     # a whole tree
    [[ ! -e "$MNT/mv/a/f1" && ! -e "$MNT/mv/a/f2" && ! -e "$MNT/mv/b/g2" && ! -e "$MNT/mv/a/sub" ]]
    expect_eq one "$(cat "$MNT/mv/a/g1")"
    expect_eq two "$(cat "$MNT/mv/b/f3")"
    expect_eq deep "$(cat "$MNT/mv/b/moved/subsub/x")"
    diff -r --no-dereference "$DOC/${CP_SET[0]}" "$MNT/mv/a/tree"
    expect_eq "f3 g1 moved tree" "$(cd "$MNT/mv" && ls a b | grep -v : | grep . | LC_ALL=C sort | xargs)" "names"
}
check "mv within and across directories" t_mv

t_mv_dir_over_nonempty() {
    mkdir -p "$MNT/mv2/src" "$MNT/mv2/dst/full"; touch "$MNT/mv2/dst/full/x"
    expect_fail_msg "" mv -T "$MNT/mv2/src" "$MNT/mv2/dst/full"
    [[ -d "$MNT/mv2/src" && -e "$MNT/mv2/dst/full/x" ]]
}
check "rename of a dir over a non-empty dir fails, changes nothing" t_mv_dir_over_nonempty

# The kernel keeps a directory's position as a signed loff_t: every telldir value (the d_off
# of the entry just read) must be non-negative, lseek to it must work, and seekdir to it must
# resume exactly after that entry.
t_seekdir() {
    mkdir "$MNT/seekdir"
    (cd "$MNT/seekdir" && touch $(seq -f 'entry-%g' 1 300))
    python3 - "$MNT/seekdir" <<'PY'
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
class Dirent(ctypes.Structure):
    _fields_ = [("d_ino", ctypes.c_uint64), ("d_off", ctypes.c_int64),
                ("d_reclen", ctypes.c_ushort), ("d_type", ctypes.c_ubyte),
                ("d_name", ctypes.c_char * 256)]
libc.opendir.restype = ctypes.c_void_p
libc.opendir.argtypes = [ctypes.c_char_p]
libc.readdir.restype = ctypes.POINTER(Dirent)
libc.readdir.argtypes = [ctypes.c_void_p]
libc.telldir.restype = ctypes.c_long
libc.telldir.argtypes = [ctypes.c_void_p]
libc.seekdir.argtypes = [ctypes.c_void_p, ctypes.c_long]
libc.closedir.argtypes = [ctypes.c_void_p]
path = sys.argv[1]
dp = libc.opendir(path.encode())
assert dp, "opendir failed"
def rest():
    out = []
    while True:
        e = libc.readdir(dp)
        if not e:
            return out
        out.append((e.contents.d_name, libc.telldir(dp)))
every = rest()
assert len(every) == 302, f"{len(every)} entries listed"
negative = [n for n, pos in every if pos < 0]
assert not negative, f"{len(negative)} of {len(every)} telldir values are negative"
fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
for i, (name, pos) in enumerate(every):
    assert os.lseek(fd, pos, os.SEEK_SET) == pos
    libc.seekdir(dp, pos)
    after = [n for n, _ in rest()]
    assert after == [n for n, _ in every[i + 1:]], f"seekdir after {name!r} resumed wrong"
os.close(fd)
libc.closedir(dp)
PY
    rm -r "$MNT/seekdir"
}
check "telldir values are non-negative; lseek and seekdir to each resume after its entry" t_seekdir

t_hardlink() {
    mkdir "$MNT/links"; echo "linked data" > "$MNT/links/orig"
    ln "$MNT/links/orig" "$MNT/links/hard"
    expect_eq 2 "$(stat -c %h "$MNT/links/orig")" "link count"
    expect_eq "$(stat -c %i "$MNT/links/orig")" "$(stat -c %i "$MNT/links/hard")" "inode numbers"
    echo more >> "$MNT/links/hard"
    expect_eq "linked data more" "$(cat "$MNT/links/orig" | xargs)" "content via other link"
    ln "$MNT/links/orig" "$MNT/links/hard2"; rm "$MNT/links/orig"
    expect_eq 2 "$(stat -c %h "$MNT/links/hard")" "link count after rm"
    expect_eq "linked data more" "$(cat "$MNT/links/hard2" | xargs)"
}
check "ln: hard links, link counts, shared content" t_hardlink

t_symlink() {
    ln -s ../cp "$MNT/links/sym"
    ln -s /nonexistent/target "$MNT/links/dangling"
    expect_eq ../cp "$(readlink "$MNT/links/sym")"
    expect_eq /nonexistent/target "$(readlink "$MNT/links/dangling")"
    [[ -L "$MNT/links/sym" && -d "$MNT/links/sym/${CP_SET[0]}" && ! -e "$MNT/links/dangling" ]]
}
check "ln -s + readlink" t_symlink

t_chmod() {
    echo x > "$MNT/modes"
    chmod 640 "$MNT/modes"; expect_eq 640 "$(stat -c %a "$MNT/modes")"
    chmod 4755 "$MNT/modes"; expect_eq 4755 "$(stat -c %a "$MNT/modes")"
    mkdir "$MNT/modedir"; chmod 1777 "$MNT/modedir"; expect_eq 1777 "$(stat -c %a "$MNT/modedir")"
    chmod 600 "$MNT/modes"; expect_eq 600 "$(stat -c %a "$MNT/modes")"
}
check "chmod + stat -c %a" t_chmod

# We clear these bits ourselves (FUSE_HANDLE_KILLPRIV_V2): root keeps them on write and
# truncate (it has CAP_FSETID), and loses them on chown, as on ext4.
t_killpriv() {
    echo x > "$MNT/suid"; chmod 6755 "$MNT/suid"
    echo y >> "$MNT/suid"; truncate -s 1 "$MNT/suid"
    expect_eq 6755 "$(stat -c %a "$MNT/suid")"
    chown 1:1 "$MNT/suid"; expect_eq 755 "$(stat -c %a "$MNT/suid")"
    chmod 2745 "$MNT/suid"; chown 2:2 "$MNT/suid"; expect_eq 2745 "$(stat -c %a "$MNT/suid")"
    rm "$MNT/suid"
}
check "set-user-ID and set-group-ID bits: kept by root's writes, dropped by chown" t_killpriv

t_touch() {
    touch -d "2001-02-03 04:05:06.123456789 UTC" "$MNT/modes"
    expect_eq "$(date -d "2001-02-03 04:05:06 UTC" +%s)" "$(stat -c %Y "$MNT/modes")" mtime
    expect_eq "2001-02-03 04:05:06.123456789 +0000" "$(TZ=UTC stat -c %y "$MNT/modes")" "mtime with ns"
    touch -a -d "2010-01-01 00:00:00 UTC" "$MNT/modes"
    expect_eq "$(date -d "2010-01-01 UTC" +%s)" "$(stat -c %X "$MNT/modes")" atime
    touch -d "1999-12-31 23:59:59 UTC" "$MNT/modedir"
    expect_eq "$(date -d "1999-12-31 23:59:59 UTC" +%s)" "$(stat -c %Y "$MNT/modedir")" "dir mtime"
    # Before the epoch with a fraction: fuser 0.18 reads (secs < 0, nsecs) as -(|secs| + nsecs).
    touch -m -d @-99999.25 "$MNT/modes"
    expect_eq "-99999.250000000" "$(stat -c %.9Y "$MNT/modes")" "mtime before the epoch"
}
check "touch -d + mtime/atime check" t_touch

t_sparse() {
    truncate -s 100M "$MNT/sparse"
    expect_eq 104857600 "$(stat -c %s "$MNT/sparse")" size
    local kb; kb=$(du -k "$MNT/sparse" | cut -f1)
    echo "du of a 100 MiB hole: ${kb} KiB"
    (( kb < 102400 ))
    expect_eq 0 "$(head -c 1M "$MNT/sparse" | tr -d '\0' | wc -c)" "non-zero bytes in hole"
    printf 'tail' | dd of="$MNT/sparse" bs=1 seek=104857596 conv=notrunc status=none
    expect_eq tail "$(tail -c 4 "$MNT/sparse")"
}
check "truncate grow is sparse (du < size), reads zeros" t_sparse

t_shrink() {
    head -c 10000 /dev/urandom > "$REF/shrink"
    cp "$REF/shrink" "$MNT/shrink"
    truncate -s 5000 "$MNT/shrink"
    expect_eq 5000 "$(stat -c %s "$MNT/shrink")" size
    cmp <(head -c 5000 "$REF/shrink") "$MNT/shrink"
    truncate -s 8000 "$MNT/shrink"          # grow again: the cut bytes must not come back
    cmp <(head -c 5000 "$REF/shrink"; head -c 3000 /dev/zero) "$MNT/shrink"
    truncate -s 0 "$MNT/shrink"; expect_eq 0 "$(stat -c %s "$MNT/shrink")" "size after truncate 0"
    cp "$REF/shrink" "$MNT/shrink"; truncate -s 8000 "$REF/shrink"; truncate -s 8000 "$MNT/shrink"
}
check "truncate shrink, regrow reads zeros (no stale bytes)" t_shrink

t_append() {
    local i
    : > "$MNT/append"; : > "$REF/append"
    for i in $(seq 1 500); do
        echo "line $i $(printf '%*s' $((i % 97)) '' | tr ' ' x)" >> "$MNT/append"
        echo "line $i $(printf '%*s' $((i % 97)) '' | tr ' ' x)" >> "$REF/append"
    done
    head -c 300000 "$REF/shrink" >> "$MNT/append"; head -c 300000 "$REF/shrink" >> "$REF/append"
    cmp "$REF/append" "$MNT/append"
}
check "appends with >>" t_append

t_dd() {
    head -c 3M /dev/urandom > "$REF/dd"
    head -c 200000 /dev/urandom > "$REF/patch"
    cp "$REF/dd" "$MNT/dd"
    local f
    for f in "$REF/dd" "$MNT/dd"; do
        dd if="$REF/patch" of="$f" bs=1 count=777 seek=1000000 conv=notrunc status=none
        dd if="$REF/patch" of="$f" bs=4096 count=10 seek=100 conv=notrunc status=none
        dd if="$REF/patch" of="$f" bs=1000 skip=7 count=150 seek=3000 conv=notrunc status=none  # straddles EOF
        dd if="$REF/patch" of="$f" bs=1 count=1 seek=0 conv=notrunc status=none
        dd if="$REF/patch" of="$f" bs=65536 count=1 seek=60 conv=notrunc status=none       # hole then data
    done
    expect_eq "$(stat -c %s "$REF/dd")" "$(stat -c %s "$MNT/dd")" size
    cmp "$REF/dd" "$MNT/dd"
}
check "dd conv=notrunc overwrites in the middle, past EOF" t_dd

t_xattr() {
    echo x > "$MNT/xattr"
    setfattr -n user.test -v hello "$MNT/xattr"
    setfattr -n user.bin -v 0x00ff00ff "$MNT/xattr"
    setfattr -n user.gone -v bye "$MNT/xattr"
    setfattr -x user.gone "$MNT/xattr"
    expect_eq hello "$(getfattr --only-values -n user.test "$MNT/xattr")"
    expect_eq "user.bin=0x00ff00ff" "$(getfattr -e hex -n user.bin "$MNT/xattr" | grep user.bin)"
    expect_eq "user.bin user.test" "$(getfattr -d -m 'user\.' "$MNT/xattr" | grep -o '^user\.[a-z]*' | sort | xargs)" "listxattr"
    expect_fail_msg "No such attribute" getfattr -n user.gone "$MNT/xattr"
    mkdir -p "$MNT/xattrdir"; setfattr -n user.dir -v d "$MNT/xattrdir"
    expect_eq d "$(getfattr --only-values -n user.dir "$MNT/xattrdir")"
}
check "xattrs: setfattr/getfattr/remove/list" t_xattr

t_sqlite() {
    { echo "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);"; echo "BEGIN;"
      seq 1 1000 | sed 's/.*/INSERT INTO t VALUES(&, printf("row-%08d", &));/'
      echo "COMMIT;"; } | sqlite3 "$MNT/db.sqlite"
    expect_eq 1000 "$(sqlite3 "$MNT/db.sqlite" 'SELECT count(*) FROM t;')" "rows"
    sqlite3 "$MNT/db.sqlite" "BEGIN; UPDATE t SET v='changed' WHERE id % 10 = 0; ROLLBACK;"
    expect_eq 0 "$(sqlite3 "$MNT/db.sqlite" "SELECT count(*) FROM t WHERE v='changed';")" "rolled back rows"
    sqlite3 "$MNT/db.sqlite" "PRAGMA journal_mode=WAL; BEGIN; DELETE FROM t WHERE id > 900; COMMIT;" > /dev/null
    expect_eq 900 "$(sqlite3 "$MNT/db.sqlite" 'SELECT count(*) FROM t;')" "rows after WAL delete"
    expect_eq ok "$(sqlite3 "$MNT/db.sqlite" 'PRAGMA integrity_check;')"
}
check "sqlite3 transaction: 1000 rows, rollback, WAL, integrity_check" t_sqlite

t_err_mkdir() { mkdir "$MNT/exists"; expect_fail_msg "File exists" mkdir "$MNT/exists"; }
check "mkdir of an existing dir fails with 'File exists'" t_err_mkdir
t_err_rmdir() {
    mkdir -p "$MNT/nonempty/child"
    expect_fail_msg "Directory not empty" rmdir "$MNT/nonempty"
    [[ -d "$MNT/nonempty/child" ]]
}
check "rmdir of a non-empty dir fails with 'Directory not empty'" t_err_rmdir
t_err_name() {
    local n255 n256; n255=$(printf 'a%.0s' $(seq 1 255)); n256="${n255}b"
    expect_fail_msg "File name too long" touch "$MNT/$n256"
    expect_fail_msg "File name too long" mkdir "$MNT/$n256"
    touch "$MNT/$n255"; [[ -f "$MNT/$n255" ]]
}
check "256-byte name fails with 'File name too long' (255 works)" t_err_name
t_err_misc() {
    expect_fail_msg "No such file or directory" cat "$MNT/does-not-exist"
    expect_fail_msg "Not a directory" ls "$MNT/modes/x"
    expect_fail_msg "Is a directory" sh -c "echo > '$MNT/exists'"
    expect_fail_msg "Not a directory" rmdir "$MNT/modes"
}
check "ENOENT, ENOTDIR, EISDIR" t_err_misc

t_rm() {
    cp -a "$MNT/cp/${CP_SET[0]}" "$MNT/rmme"
    mkdir -p "$MNT/rmme/deeper/still"; touch "$MNT/rmme/deeper/still/f"
    rm -r "$MNT/rmme"
    [[ ! -e "$MNT/rmme" ]]
    expect_eq 0 "$(ls -a "$MNT" | grep -c '^rmme$' || true)" "rmme in listing"
}
check "rm -r of a tree" t_rm

t_df() {
    local size used
    read -r size used < <(df -B1 --output=size,used "$MNT" | tail -n 1)
    echo "df: size $size used $used"
    if [[ -z "$MOUNT_CMD" ]]; then
        local want; want=$(numfmt --from=iec "$SIZE")
        (( size >= want / 2 && size <= want )) || { echo "df size $size, store size $want"; return 1; }
        (( used >= 20 * 1024 * 1024 )) || { echo "df used $used after writing > 40 MB"; return 1; }
    fi
    (( size > 0 ))
}
check "df shows the store's capacity and usage" t_df

# ---- compaction groups (logstorfs only): directories past the split size became group roots,
# stats name them, and rm -r of a root leaves its group owning no segments ----
# group_field JSON ROOT FIELD: FIELD of the group whose root is ROOT ("" if no such group).
group_field() {
    python3 -c 'import json,sys
j=json.loads(sys.argv[1])
print(next((str(g[sys.argv[3]]) for g in j["groups"] if g["root"]==sys.argv[2]), ""))' "$1" "$2" "$3"
}
if [[ -z "$MOUNT_CMD" ]]; then
    t_groups_split() {
        local j roots
        j="$("$LOGSTORFS" stats --json "$MNT")"
        roots="$(python3 -c 'import json,sys; print(" ".join(g["root"] for g in json.loads(sys.argv[1])["groups"]))' "$j")"
        echo "group roots: $roots"
        # The copied trees hold ~30 MB: with a 2 MiB split size, some directory below must be a root.
        (( $(wc -w <<<"$roots") >= 3 )) || { echo "expected several groups after copying ~30 MB"; return 1; }
        mkdir "$MNT/grp"
        local i; for i in 1 2 3 4 5 6; do head -c 1M /dev/urandom > "$MNT/grp/f$i"; done
        mkdir "$MNT/grp/sub"; head -c 1M /dev/urandom > "$MNT/grp/sub/g"
        sync "$MNT/grp/f1"
        j="$("$LOGSTORFS" stats --json "$MNT")"
        [[ -n "$(group_field "$j" /grp id)" ]] || { echo "/grp (7 MiB) is not a group root: $j"; return 1; }
    }
    check "groups: directories past the split size are group roots, named in stats" t_groups_split

    t_groups_rm() {
        local j id segs i
        j="$("$LOGSTORFS" stats --json "$MNT")"
        id="$(group_field "$j" /grp id)"
        [[ -n "$id" ]] || { echo "/grp is not a group root"; return 1; }
        rm -r "$MNT/grp"
        # The separator and reclamation run in the background; 60 s is a liveness limit only.
        for i in $(seq 1 120); do
            segs="$("$LOGSTORFS" stats --json "$MNT" | python3 -c 'import json,sys
j=json.load(sys.stdin); print(sum(g["segments"] for g in j["groups"] if g["id"]=='"$id"'))')"
            [[ "$segs" == 0 ]] && { echo "group $id owns no segments after ${i}x0.5 s"; return 0; }
            sleep 0.5
        done
        echo "group $id still owns $segs segments 60 s after rm -r of its root"
        return 1
    }
    check "groups: rm -r of a group root leaves its group owning no segments" t_groups_rm
else
    log "not logstorfs: the compaction group checks do not apply"
fi

# ---- record everything outside the mount, unmount, remount, compare ----
snapshot() { # snapshot DIR OUT: checksums + metadata
    (cd "$1" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum) > "$2.sums"
    meta "$1" | grep -v '^ d ' > "$2.meta"
    # atime is not compared; dir mtimes are
}
check "sha256sum of every file recorded" snapshot "$MNT" "$REF/before"
log "$(wc -l < "$REF/before.sums") files, $(wc -l < "$REF/before.meta") entries recorded"

check_here "clean unmount" unmount "$MNT"
check_here "remount after clean unmount" mount_fresh "$STORE" "$MNT" "$SIZE" || { summary mount-verify; exit 1; }

t_same() {
    snapshot "$MNT" "$REF/after"
    diff "$REF/before.sums" "$REF/after.sums"
    diff "$REF/before.meta" "$REF/after.meta"
}
check "after remount: every checksum and metadata identical" t_same
t_same_xattr() {
    expect_eq hello "$(getfattr --only-values -n user.test "$MNT/xattr")"
    expect_eq d "$(getfattr --only-values -n user.dir "$MNT/xattrdir")"
}
check "after remount: xattrs intact" t_same_xattr
t_same_sqlite() {
    expect_eq ok "$(sqlite3 "$MNT/db.sqlite" 'PRAGMA integrity_check;')"
    expect_eq 900 "$(sqlite3 "$MNT/db.sqlite" 'SELECT count(*) FROM t;')"
}
check "after remount: sqlite db intact" t_same_sqlite
t_same_links() {
    expect_eq 2 "$(stat -c %h "$MNT/links/hard")" "link count"
    expect_eq ../cp "$(readlink "$MNT/links/sym")"
    expect_eq 104857600 "$(stat -c %s "$MNT/sparse")"
}
check "after remount: links, symlinks, sparse size intact" t_same_links
t_modify_after_remount() {
    echo "after remount" >> "$MNT/append"; echo "after remount" >> "$REF/append"
    cmp "$REF/append" "$MNT/append"
    rm -r "$MNT/tar"; [[ ! -e "$MNT/tar" ]]
    mv "$MNT/mv/a/g1" "$MNT/mv/renamed-after-remount"
}
check "after remount: append, rm -r, mv still work" t_modify_after_remount

# ---- crash: kill -9 the daemon after fsync, remount, verify ----
t_pre_crash() {
    mkdir -p "$MNT/crash/sub"
    head -c 5M /dev/urandom > "$MNT/crash/big"
    for i in $(seq 1 200); do echo "small file $i" > "$MNT/crash/sub/f$i"; done
    cp "$REF/dd" "$MNT/crash/dd"
    dd if="$REF/patch" of="$MNT/crash/dd" bs=4096 count=3 seek=17 conv=notrunc status=none
    rm "$MNT/crash/sub/f7"
    mv "$MNT/crash/sub/f8" "$MNT/crash/f8-moved"
    sync
    # `sync` alone does not reach a /dev/fuse daemon (the kernel sends FUSE_SYNCFS only to
    # virtiofs), so fsync every file and directory, which is what the contract is about.
    find "$MNT" \( -type f -o -type d \) -print0 | xargs -0 sync --
    snapshot "$MNT" "$REF/synced"
}
check "write, rm, mv, then sync + fsync of everything" t_pre_crash

crash_and_remount() {
    local pid
    pid="$(daemon_pid "$MNT")" || { echo "no daemon process found for $MNT"; return 1; }
    echo "kill -9 $pid ($(cat /proc/"$pid"/comm))"
    kill -9 "$pid"
    local i; for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fusermount3 -u "$MNT" 2>/dev/null || fusermount3 -uz "$MNT"
    _forget_mount "$MNT"
    mount_fresh "$STORE" "$MNT" "$SIZE"
}
check_here "kill -9 the daemon, remount without repair" crash_and_remount || { summary mount-verify; exit 1; }

t_after_crash() {
    snapshot "$MNT" "$REF/crashed"
    diff "$REF/synced.sums" "$REF/crashed.sums"
    diff "$REF/synced.meta" "$REF/crashed.meta"
    [[ ! -e "$MNT/crash/sub/f7" && ! -e "$MNT/crash/sub/f8" && -f "$MNT/crash/f8-moved" ]]
}
check "after kill -9: synced files, deletes and renames intact" t_after_crash
t_after_crash_usable() {
    expect_eq ok "$(sqlite3 "$MNT/db.sqlite" 'PRAGMA integrity_check;')"
    echo "post-crash" > "$MNT/crash/new"; expect_eq post-crash "$(cat "$MNT/crash/new")"
    rm -r "$MNT/crash"; [[ ! -e "$MNT/crash" ]]
}
check "after kill -9: store usable (sqlite ok, write, rm -r)" t_after_crash_usable

check_here "final clean unmount" unmount "$MNT"
summary mount-verify
