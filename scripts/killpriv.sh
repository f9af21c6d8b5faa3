#!/usr/bin/env bash
# Set-user-ID, set-group-ID and file capabilities after writes, truncation, fallocate and chown,
# by an unprivileged user and by root, on the mount and on a kernel ext4 loop mount: every case
# must leave the same mode and capabilities on both. logstorfs negotiates
# FUSE_HANDLE_KILLPRIV_V2, so clearing them is the daemon's job on each of these paths (a bit
# left set is a privilege escalation).
#
#   bash scripts/killpriv.sh [BINARY]
#
# Needs root (loop mount, a test user, setcap). Env: KEEP=1 keeps the work dir, TMPDIR.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
[[ $# -ge 1 ]] && LOGSTORFS="$(realpath "$1")"

for tool in setpriv setcap getcap mkfs.ext4 fallocate perl fusermount3; do
    command -v "$tool" >/dev/null || die "$tool is missing"
done
[[ $(id -u) -eq 0 ]] || die "run as root (loop mount, test user, setcap)"

test_user

with_ext4 logstorfs-verify 64M ""

log "killpriv on $(backend_name) against ext4, work dir $WORK"
chmod 755 "$EXT"
MOUNT_OPTS="$MOUNT_OPTS -o allow_other,default_permissions"
check_here "mount fresh store (allow_other, default_permissions)" \
    mount_fresh "$WORK/store" "$MNT" 256M || { summary killpriv; exit 1; }
chmod 755 "$MNT"

# As the test user, with its own group only and no capabilities.
as_user() { setpriv --reuid="$TU" --regid="$TG" --clear-groups "$@"; }

# As the test user with group 0 as a supplementary group.
as_user_in_root_group() { setpriv --reuid="$TU" --regid="$TG" --groups=0 "$@"; }

# A fresh file DIR/NAME with 8 KiB of data, mode MODE, owner OWNER:GROUP and, if CAP is given,
# that file capability.
make_file() {
    local f="$1/$2" mode="$3" owner="$4" cap="${5:-}"
    rm -f "$f"
    head -c 8192 /dev/zero > "$f"
    chown "$owner" "$f"
    chmod "$mode" "$f"
    [[ -z "$cap" ]] || setcap "$cap" "$f"
}
# What the case left: mode, owner, size and capabilities.
state() {
    local caps
    caps="$(getcap "$1" 2>&1 | sed 's/^[^ ]* //')"
    echo "$(stat -c '%a %u:%g %s' "$1") caps=[${caps}]"
}

# kp_case NAME MODE OWNER CAP -- CMD...: on each of ext4 and the mount, make the file, run CMD
# with {} replaced by the file's path, and compare the states.
kp_case() {
    local name="$1" mode="$2" owner="$3" cap="$4"; shift 5
    local dir out=() f args a
    for dir in "$EXT" "$MNT"; do
        f="$dir/kp-$name"
        make_file "$dir" "kp-$name" "$mode" "$owner" "$cap"
        args=()
        for a in "$@"; do args+=("${a//\{\}/$f}"); done
        "${args[@]}" || { echo "'${args[*]}' failed on $dir"; return 1; }
        out+=("$(state "$f")")
    done
    echo "ext4:      ${out[0]}"
    echo "logstorfs: ${out[1]}"
    expect_eq "${out[0]}" "${out[1]}" "state after $name (ext4 vs logstorfs)"
}

U="$TU:$TG"          # owned by the test user, in its group
UR="$TU:0"           # owned by the test user, in a group it is not in
W=(dd if=/dev/zero of={} bs=4096 count=1 conv=notrunc status=none)
WD=(dd if=/dev/zero of={} bs=4096 count=1 conv=notrunc oflag=direct status=none)
PT=(perl -e 'truncate($ARGV[0], 100) or die "truncate: $!"' {})

# ---- unprivileged writes ----
check "user write: setuid+setgid (g+x) cleared"           kp_case w-6755      6755 "$U"  "" -- as_user "${W[@]}"
check "user write: setgid without g+x, own group, kept"   kp_case w-2745      2745 "$U"  "" -- as_user "${W[@]}"
check "user write: setgid without g+x, other group"       kp_case w-2745-o    2745 "$UR" "" -- as_user "${W[@]}"
check "user O_DIRECT write: setuid+setgid cleared"        kp_case wd-6755     6755 "$U"  "" -- as_user "${WD[@]}"
check "user O_DIRECT write: setgid without g+x, own group" kp_case wd-2745    2745 "$U"  "" -- as_user "${WD[@]}"
check "user O_DIRECT write: setgid without g+x, other group" kp_case wd-2745-o 2745 "$UR" "" -- as_user "${WD[@]}"
check "user write: capability removed"                    kp_case w-cap       0755 "$U"  "cap_net_raw+ep" -- as_user "${W[@]}"
check "user O_DIRECT write extending by 1 MiB: bits cleared" kp_case wdx-6755 6755 "$U" "" -- as_user dd if=/dev/zero of={} bs=1M count=1 seek=1 oflag=direct status=none
check "user write: setgid without g+x, supplementary group, kept" kp_case w-2745-s 2745 "$UR" "" -- as_user_in_root_group "${W[@]}"
check "user O_DIRECT write: capability removed"           kp_case wd-cap      0755 "$U"  "cap_net_raw+ep" -- as_user "${WD[@]}"
# ---- unprivileged fallocate ----
check "user fallocate: setuid+setgid cleared"             kp_case fa-6755     6755 "$U"  "" -- as_user fallocate -l 16384 {}
check "user fallocate: setgid without g+x, own group"     kp_case fa-2745     2745 "$U"  "" -- as_user fallocate -l 16384 {}
check "user fallocate: setgid without g+x, other group"   kp_case fa-2745-o   2745 "$UR" "" -- as_user fallocate -l 16384 {}
check "user fallocate within the size: bits cleared"      kp_case fa-in-6755  6755 "$U"  "" -- as_user fallocate -l 4096 {}
check "user fallocate: capability removed"                kp_case fa-cap      0755 "$U"  "cap_net_raw+ep" -- as_user fallocate -l 16384 {}
# ---- unprivileged truncation ----
check "user ftruncate: setuid+setgid cleared"             kp_case ft-6755     6755 "$U"  "" -- as_user truncate -s 100 {}
check "user ftruncate: setgid without g+x, other group"   kp_case ft-2745-o   2745 "$UR" "" -- as_user truncate -s 100 {}
check "user truncate(path): setuid+setgid cleared"        kp_case pt-6755     6755 "$U"  "" -- as_user "${PT[@]}"
check "user fallocate: setgid without g+x, supplementary group, kept" kp_case fa-2745-s 2745 "$UR" "" -- as_user_in_root_group fallocate -l 16384 {}
check "user ftruncate: setgid without g+x, supplementary group, kept" kp_case ft-2745-s 2745 "$UR" "" -- as_user_in_root_group truncate -s 100 {}
check "user ftruncate: capability removed"                kp_case ft-cap      0755 "$U"  "cap_net_raw+ep" -- as_user truncate -s 100 {}
# ---- copy_file_range (done by the daemon: the request does not say whether the caller has
# CAP_FSETID) into the second page of the same file ----
# The system's python3: the test user cannot reach a root-only one (pyenv) earlier on PATH.
SYS_PY3=/usr/bin/python3; [[ -x $SYS_PY3 ]] || SYS_PY3="$(command -v python3)"
CFR=("$SYS_PY3" -c 'import os, sys; fd = os.open(sys.argv[1], os.O_RDWR); assert os.copy_file_range(fd, fd, 4096, 0, 4096) == 4096' {})
check "user copy_file_range: setuid+setgid cleared"       kp_case cfr-6755    6755 "$U"  "" -- as_user "${CFR[@]}"
check "user copy_file_range: setgid without g+x, other group" kp_case cfr-2745-o 2745 "$UR" "" -- as_user "${CFR[@]}"
check "user copy_file_range: setgid without g+x, own group, kept" kp_case cfr-2745 2745 "$U" "" -- as_user "${CFR[@]}"
check "user copy_file_range: capability removed"          kp_case cfr-cap     0755 "$U"  "cap_net_raw+ep" -- as_user "${CFR[@]}"
check "root copy_file_range: bits kept"                   kp_case rcfr-6755   6755 "$U"  "" -- "${CFR[@]}"
check "root copy_file_range: capability removed"          kp_case rcfr-cap    0755 "0:0" "cap_net_raw+ep" -- "${CFR[@]}"
# ---- root (CAP_FSETID keeps the bits; capabilities go all the same) ----
check "root write: bits kept"                             kp_case rw-6755     6755 "$U"  "" -- "${W[@]}"
check "root O_DIRECT write: bits kept"                    kp_case rwd-6755    6755 "$U"  "" -- "${WD[@]}"
check "root fallocate: bits kept"                         kp_case rfa-6755    6755 "$U"  "" -- fallocate -l 16384 {}
check "root truncate: bits kept"                          kp_case rt-6755     6755 "$U"  "" -- truncate -s 100 {}
check "root write: capability removed"                    kp_case rw-cap      0755 "0:0" "cap_net_raw+ep" -- "${W[@]}"
check "root write with capability: bits kept"           kp_case rw-6755-cap  6755 "$U" "cap_net_raw+ep" -- "${W[@]}"
check "root fallocate with capability: bits kept"       kp_case rfa-6755-cap 6755 "$U" "cap_net_raw+ep" -- fallocate -l 16384 {}
check "root truncate with capability: bits kept"        kp_case rt-6755-cap  6755 "$U" "cap_net_raw+ep" -- truncate -s 100 {}
check "root truncate: capability removed"                 kp_case rt-cap      0755 "0:0" "cap_net_raw+ep" -- truncate -s 100 {}
check "root fallocate: capability removed"                kp_case rfa-cap     0755 "0:0" "cap_net_raw+ep" -- fallocate -l 16384 {}
# ---- chown ----
check "root chown: setuid+setgid cleared"                 kp_case rc-6755     6755 "$U"  "" -- chown 0 {}
check "root chgrp: setgid without g+x kept"               kp_case rc-2745     2745 "$U"  "" -- chgrp 0 {}
check "root chown to the same owner: bits cleared"        kp_case rcs-6755    6755 "$U"  "" -- chown "$TU" {}
check "root chown: capability removed"                    kp_case rc-cap      0755 "0:0" "cap_net_raw+ep" -- chown "$TU" {}
check "owner chgrp to own group: setuid+setgid cleared"   kp_case uc-6755     6755 "$UR" "" -- as_user chgrp "$TG" {}
check "owner chgrp to own group: setgid without g+x, from other group" kp_case uc-2745-o 2745 "$UR" "" -- as_user chgrp "$TG" {}
check "owner chgrp to own group: setgid without g+x, same group" kp_case uc-2745 2745 "$U" "" -- as_user chgrp "$TG" {}
check "owner chown to self: setuid cleared"               kp_case ucs-4755    4755 "$U"  "" -- as_user chown "$TU" {}
check "owner chown(-1, -1): setuid cleared"               kp_case ucn-6755    6755 "$U"  "" -- as_user perl -e 'chown(-1, -1, $ARGV[0]) or die "chown: $!"' {}

t_dir_chown() { # chown keeps a directory's set-group-ID (it decides new entries' group)
    local dir out=()
    for dir in "$EXT" "$MNT"; do
        rm -rf "$dir/kp-dir"; mkdir "$dir/kp-dir"; chmod 6755 "$dir/kp-dir"; chown "$TU:$TG" "$dir/kp-dir"
        out+=("$(stat -c '%a %u:%g' "$dir/kp-dir")")
    done
    expect_eq "${out[0]}" "${out[1]}" "directory after chown (ext4 vs logstorfs)"
}
check "root chown of a directory: bits kept" t_dir_chown

check_here "unmount" unmount "$MNT"
summary killpriv
