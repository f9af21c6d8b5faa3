#!/usr/bin/env bash
# POSIX ACLs and access times on the mount against a kernel ext4 loop mount: the same calls on
# both must leave the same getfacl output, modes, owners and access results.
#   - default ACLs inherited by files, directories, FIFOs (not symlinks) under several umasks,
#     as root and as an unprivileged user, in a set-group-ID directory too;
#   - named ACL entries enforced (a 0600 file readable by the test user only through its entry),
#     chmod rewriting the ACL's mask;
#   - atime under relatime (the default), noatime and strictatime: whether each read, listing
#     and readlink changes it.
# logstorfs negotiates FUSE_POSIX_ACL: the kernel enforces the ACLs the daemon stores, and the
# daemon does inheritance, the umask and atime.
#
#   bash scripts/acl_vs_ext4.sh [BINARY]
#
# Needs root (loop mount, a test user). Env: KEEP=1 keeps the work dir, TMPDIR.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
[[ $# -ge 1 ]] && LOGSTORFS="$(realpath "$1")"

for tool in setpriv setfacl getfacl mkfs.ext4 perl fusermount3; do
    command -v "$tool" >/dev/null || die "$tool is missing"
done
[[ $(id -u) -eq 0 ]] || die "run as root (loop mount, test user)"

test_user

with_ext4 logstorfs-acl 64M "relatime"

log "ACLs and atime on $(backend_name) against ext4, work dir $WORK"
chmod 755 "$EXT"
BASE_OPTS="$MOUNT_OPTS"
MOUNT_OPTS="$BASE_OPTS -o allow_other"
check_here "mount fresh store (allow_other)" \
    mount_fresh "$WORK/store" "$MNT" 256M || { summary acl-vs-ext4; exit 1; }
chmod 755 "$MNT"

as_user() { setpriv --reuid="$TU" --regid="$TG" --clear-groups "$@"; }

# create PATH MODE: open(O_CREAT|O_WRONLY, MODE), as the umask of the caller leaves it.
create() { perl -MFcntl -e 'sysopen(F, $ARGV[0], O_CREAT|O_WRONLY, oct $ARGV[1]) or die "$ARGV[0]: $!"' "$1" "$2"; }

# describe NAME...: mode, owner, group and ACLs (numeric) of each name, one block each.
describe() {
    local n
    for n in "$@"; do
        stat -c '%n %A %u %g' "$n"
        [[ -L "$n" ]] || getfacl -p -n "$n" 2>&1 | grep -v '^# file:'
    done
}

# both NAME FUNCTION: run FUNCTION in a fresh directory NAME on each mount, its output compared.
both() {
    local name="$1" fn="$2" root
    for root in "$MNT" "$EXT"; do
        mkdir -p "$root/$name"
        chmod 777 "$root/$name"
        (cd "$root/$name" && "$fn") > "$WORK/$name.$(basename "$root").out" 2>&1 \
            || { echo "$fn failed on $root:"; cat "$WORK/$name.$(basename "$root").out"; return 1; }
    done
    diff -u --label logstorfs --label ext4 "$WORK/$name.mnt.out" "$WORK/$name.ext4.out"
    [[ -s "$WORK/$name.mnt.out" ]] || { echo "no output"; return 1; }
}

# ---------------- default ACLs ----------------
inherit_as_root() {
    local um
    for um in 000 022 027 077; do
        mkdir "d$um"
        setfacl -d -m u:"$TEST_USER":rwx,g::r-x,g:"$TEST_USER":r--,o::- "d$um"
        mkdir "m$um"
        setfacl -d -m u::rwx,g::r-x,o::--x "m$um"     # a minimal default ACL
        ( umask "$um"
          for d in "d$um" "m$um"; do
              create "$d/f666" 666; create "$d/f640" 640; create "$d/f700" 700
              mkdir "$d/sub"; mkdir -m 750 "$d/sub750"; mkfifo "$d/fifo"; ln -s f666 "$d/link"
              create "$d/sub/nested" 666
          done )
        ( umask "$um"; create "plain$um" 666; mkdir "plaindir$um" )
    done
    describe d* m* plain* d*/* m*/* d*/sub/nested
}
check "default ACLs inherited by files, dirs, FIFOs (not symlinks) under umasks 000..077, as root" \
    both inherit inherit_as_root

inherit_as_user() {
    mkdir ud; chown "$TU:$TG" ud
    as_user setfacl -d -m u::rwx,g::rwx,o::r-x,u:0:rwx ud
    as_user bash -c 'umask 077; perl -MFcntl -e "sysopen(F, q(ud/f), O_CREAT|O_WRONLY, 0666) or die" && mkdir ud/sub && mkfifo ud/p'
    as_user bash -c 'umask 022; perl -MFcntl -e "sysopen(F, q(ud/g), O_CREAT|O_WRONLY, 0644) or die"'
    describe ud ud/*
}
check "default ACLs inherited by the unprivileged user's creates" both inherit-user inherit_as_user

setgid_dir() {
    mkdir sg; chgrp "$TG" sg; chmod 2777 sg
    setfacl -d -m u::rwx,g::rwx,o::rx sg
    ( umask 022; create sg/root-file 666; mkdir sg/root-dir )
    as_user bash -c 'umask 022; perl -MFcntl -e "sysopen(F, q(sg/user-file), O_CREAT|O_WRONLY, 02775) or die" && mkdir sg/user-dir && mkdir -m 2700 sg/user-dir2'
    # Without a default ACL: the umask applies, the group and the bit are inherited alike.
    mkdir sg2; chmod 2777 sg2
    as_user bash -c 'umask 027; perl -MFcntl -e "sysopen(F, q(sg2/f), O_CREAT|O_WRONLY, 02775) or die" && mkdir sg2/d'
    # Setting an access ACL drops set-group-ID when its owner is outside the file's group.
    create acl-out 644; chown "$TU:0" acl-out; chmod 2770 acl-out
    create acl-in 644; chown "$TU:$TG" acl-in; chmod 2770 acl-in
    as_user setfacl -m u:0:r acl-out acl-in
    describe sg sg/* sg2 sg2/* acl-out acl-in
}
check "set-group-ID directory: group and bit inherited, set-group-ID of a non-member's file or ACL dropped" \
    both setgid setgid_dir

# ---------------- enforcement and chmod ----------------
# can WHAT PATH: the test user's result of reading (r), writing (w) or listing (x) PATH.
can() {
    case "$1" in
        r) as_user cat "$2" >/dev/null 2>&1 && echo "read $2: yes" || echo "read $2: no" ;;
        w) as_user bash -c ': >> "$1"' _ "$2" 2>/dev/null && echo "write $2: yes" || echo "write $2: no" ;;
        x) as_user ls "$2" >/dev/null 2>&1 && echo "list $2: yes" || echo "list $2: no" ;;
    esac
}

enforce() {
    echo secret > s; chmod 600 s
    can r s
    setfacl -m u:"$TEST_USER":r s; describe s; can r s; can w s
    chmod 600 s; describe s; can r s           # chmod cuts the mask: the entry grants nothing
    chmod 640 s; describe s; can r s
    setfacl -m m::- s; can r s
    setfacl -b s; describe s; can r s
    # A group entry, and a directory the user may only enter through its entry.
    echo g > g; chmod 600 g; setfacl -m g:"$TEST_USER":rw g; can r g; can w g
    mkdir priv; chmod 700 priv; echo x > priv/x; chmod 644 priv/x
    can r priv/x; setfacl -m u:"$TEST_USER":x priv; can r priv/x; can x priv
    setfacl -m u:"$TEST_USER":rx priv; can x priv
    # Inherited entries are enforced on the new file at once.
    mkdir inh; setfacl -d -m u:"$TEST_USER":r,o::- inh
    ( umask 077; echo y > inh/y ); describe inh/y; can r inh/y
    # Modes set by chmod keep the named entries; getfacl shows their effective rights.
    chmod 751 inh/y; describe inh/y
}
check "named ACL entries enforced for the test user (read, write, search), chmod updates the mask" \
    both enforce enforce

# ---------------- atime ----------------
# changed LABEL CMD...: run CMD, then say whether it changed the atime of $F.
changed() {
    local label="$1" before after; shift
    before="$(stat -c %x "$F")"
    "$@" >/dev/null
    after="$(stat -c %x "$F")"
    [[ "$before" == "$after" ]] && echo "$label: atime kept" || echo "$label: atime changed"
}

atime_rules() {
    F=f; head -c 20000 /dev/urandom > f; sleep 0.02
    changed "first read after the write" cat f
    changed "second read" cat f
    changed "third read, another process" as_user cat f
    sleep 0.02; touch -m f; sleep 0.02
    changed "read after mtime changed" cat f
    changed "read again" cat f
    sleep 0.02; chmod 644 f; sleep 0.02
    changed "read after ctime changed" cat f
    changed "read again" cat f
    sleep 0.02; echo more >> f; sleep 0.02
    changed "read after an append" tail -c 5 f
    changed "read again" tail -c 5 f
    touch -a -d '2000-01-01' f
    changed "read of a 26-year-old atime" cat f
    changed "read again" cat f
    F=d; mkdir d; touch d/a; sleep 0.02
    changed "listing after a create in it" ls d
    changed "listing again" ls d
    F=l; ln -s f l; sleep 0.02
    changed "readlink of a new symlink" readlink l
    changed "readlink again" readlink l
    F=e; : > e; sleep 0.02
    changed "open and close, no read" bash -c ': < e'
}
check "relatime: which reads, listings and readlinks change atime" both relatime atime_rules

# Remount both with another atime option; the same steps.
remount_both() { # remount_both OPTION
    unmount "$MNT" || return 1
    MOUNT_OPTS="$BASE_OPTS -o allow_other,$1"
    mount_fresh "$WORK/store" "$MNT" 256M || return 1
    mount -o "remount,$1" "$EXT"
}
atime_strict() {
    F=f; head -c 20000 /dev/urandom > f; sleep 0.02
    local i
    for i in 1 2 3; do changed "read $i" cat f; sleep 0.02; done
    F=d; mkdir d; sleep 0.02
    changed "listing" ls d; sleep 0.02; changed "listing again" ls d
}
check_here "remount both with strictatime" remount_both strictatime
check "strictatime: every read changes atime" both strict atime_strict
check_here "remount both with noatime" remount_both noatime
check "noatime: no read changes atime" both noatime atime_strict
check_here "remount both with relatime (atime clears noatime)" remount_both atime,relatime
check "relatime again after a remount (the stored atimes kept)" both relatime2 atime_rules

check_here "unmount" unmount "$MNT" || true
summary acl-vs-ext4
