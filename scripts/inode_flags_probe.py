#!/usr/bin/env python3
"""The system calls behind chattr/lsattr, and what immutable and append-only refuse, run in one
directory; prints one line per call ("case: OK" or "case: ERRNO NAME"), so that the output on a
logstorfs mount and on a kernel ext4 directory can be compared line by line
(scripts/chattr_vs_ext4.sh). Lines starting with "info:" differ on purpose and are not compared.

    inode_flags_probe.py root DIR       as root: sets the flags, runs every case
    inode_flags_probe.py prepare DIR UID as root: files owned by UID with flags, for `user`
    inode_flags_probe.py user DIR       as that user (no capabilities): what it may not do
    inode_flags_probe.py fallback DIR   O_TMPFILE and statx birth time (differ from ext4)
"""

import ctypes
import errno
import fcntl
import os
import struct
import subprocess
import sys

libc = ctypes.CDLL(None, use_errno=True)
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                           ctypes.c_uint]

FS_IOC_GETFLAGS = 0x80086601
FS_IOC_SETFLAGS = 0x40086602
FS_IOC_FSGETXATTR = 0x801C581F
FS_IOC_FSSETXATTR = 0x401C5820
FS_EXTENT_FL = 0x80000  # ext4 shows it on every file; no meaning here
AT_FDCWD = -100
RENAME_NOREPLACE, RENAME_EXCHANGE, RENAME_WHITEOUT = 1, 2, 4


def result(name, fn):
    try:
        r = fn()
        print(f"{name}: OK" + ("" if r is None else f" {r}"))
    except OSError as e:
        print(f"{name}: {errno.errorcode.get(e.errno, e.errno)}")


def check(rc):
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def write_file(p, data, flags=os.O_WRONLY | os.O_CREAT | os.O_TRUNC):
    fd = os.open(p, flags, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def read_file(p):
    with open(p, "rb") as f:
        return f.read()


def getflags(p):
    fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK)
    try:
        buf = fcntl.ioctl(fd, FS_IOC_GETFLAGS, b"\0" * 8)
        return struct.unpack("i", buf[:4])[0] & ~FS_EXTENT_FL
    finally:
        os.close(fd)


def setflags(p, flags):
    fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK)
    try:
        keep = getflags_raw(fd) & FS_EXTENT_FL
        fcntl.ioctl(fd, FS_IOC_SETFLAGS, struct.pack("i", flags | keep) + b"\0" * 4)
    finally:
        os.close(fd)


def getflags_raw(fd):
    return struct.unpack("i", fcntl.ioctl(fd, FS_IOC_GETFLAGS, b"\0" * 8)[:4])[0]


STRERROR = {os.strerror(e): e for e in errno.errorcode}


def chattr_message(args, p):
    r = subprocess.run(["chattr", *args, p], capture_output=True, text=True)
    return "OK" if r.returncode == 0 else r.stderr.strip().split(": ", 1)[-1].split(" while")[0]


def chattr(args, p):
    """chattr itself; its failure as the errno its message names."""
    msg = chattr_message(args, p)
    if msg != "OK":
        raise OSError(STRERROR.get(msg, 0), msg)


def lsattr(p, d=False):
    out = subprocess.run(["lsattr", *(["-d"] if d else []), p], capture_output=True,
                         text=True, check=True).stdout.split()[0]
    return out.replace("e", "-")  # extents: ext4's own


def open_close(p, flags):
    os.close(os.open(p, flags))


def fallocate(p, mode, off, length):
    fd = os.open(p, os.O_WRONLY | os.O_APPEND)
    try:
        check(libc.fallocate(fd, mode, off, length))
    finally:
        os.close(fd)


def renameat2(a, b, flags):
    check(libc.renameat2(AT_FDCWD, a.encode(), AT_FDCWD, b.encode(), flags))


def describe(p):
    st = os.lstat(p)
    kind = "chr" if (st.st_mode & 0o170000) == 0o020000 else oct(st.st_mode & 0o170000)
    return f"{kind} {os.major(st.st_rdev)}:{os.minor(st.st_rdev)} mode {oct(st.st_mode & 0o7777)}"


def immutable_file_cases(w, f, other, d):
    result("imm open O_WRONLY", lambda: open_close(f, os.O_WRONLY))
    result("imm open O_RDWR", lambda: open_close(f, os.O_RDWR))
    result("imm open O_APPEND", lambda: open_close(f, os.O_WRONLY | os.O_APPEND))
    result("imm open O_RDONLY", lambda: open_close(f, os.O_RDONLY))
    result("imm truncate", lambda: os.truncate(f, 0))
    result("imm chmod", lambda: os.chmod(f, 0o600))
    result("imm chown", lambda: os.chown(f, 0, 0))
    result("imm utime now", lambda: os.utime(f, None))
    result("imm utime explicit", lambda: os.utime(f, (1, 1)))
    result("imm link", lambda: os.link(f, os.path.join(d, "l")))
    result("imm unlink", lambda: os.unlink(f))
    result("imm rename", lambda: os.rename(f, os.path.join(d, "g")))
    result("imm rename over", lambda: os.rename(other, f))
    result("imm exchange", lambda: renameat2(other, f, RENAME_EXCHANGE))
    result("imm rename NOREPLACE over", lambda: renameat2(other, f, RENAME_NOREPLACE))
    result("imm setxattr", lambda: os.setxattr(f, "user.y", b"2"))
    result("imm removexattr", lambda: os.removexattr(f, "user.x"))
    result("imm content", lambda: read_file(f))


def run_root(w):
    f, other, d = (os.path.join(w, n) for n in ("f", "other", "d"))
    os.mkdir(d)
    write_file(f, b"data")
    write_file(other, b"other")
    os.setxattr(f, "user.x", b"1")
    result("lsattr fresh", lambda: lsattr(f))
    result("getflags fresh", lambda: getflags(f))
    result("chattr +i", lambda: chattr(["+i"], f))
    result("lsattr +i", lambda: lsattr(f))
    immutable_file_cases(w, f, other, d)
    result("chattr +d on immutable", lambda: chattr(["+d"], f))
    result("chattr -i", lambda: chattr(["-i"], f))
    result("write after -i", lambda: write_file(f, b"data"))

    # Append-only.
    result("chattr +a", lambda: chattr(["+a"], f))
    result("lsattr +a", lambda: lsattr(f))
    result("app open O_WRONLY", lambda: open_close(f, os.O_WRONLY))
    result("app open O_RDWR", lambda: open_close(f, os.O_RDWR))
    result("app open O_APPEND|O_TRUNC",
           lambda: open_close(f, os.O_WRONLY | os.O_APPEND | os.O_TRUNC))
    result("app append", lambda: write_file(f, b"+more", os.O_WRONLY | os.O_APPEND))
    result("app content", lambda: read_file(f))

    def clear_append_and_overwrite():
        # ext4 refuses to drop O_APPEND (F_SETFL: EPERM), so pwrite still appends; over FUSE
        # the kernel lets it go and the daemon refuses the write below the end instead.
        fd = os.open(f, os.O_WRONLY | os.O_APPEND)
        try:
            try:
                fcntl.fcntl(fd, fcntl.F_SETFL, 0)
            except OSError:
                pass
            try:
                os.pwrite(fd, b"X", 0)
            except OSError:
                pass
        finally:
            os.close(fd)
        return read_file(f)[:9]
    result("app first bytes after F_SETFL and pwrite(0)", clear_append_and_overwrite)
    result("app truncate", lambda: os.truncate(f, 0))
    result("app truncate up", lambda: os.truncate(f, 100000))
    result("app fallocate", lambda: fallocate(f, 0, 0, 8192))
    result("app fallocate punch", lambda: fallocate(f, 3, 0, 4096))
    result("app chmod", lambda: os.chmod(f, 0o600))
    result("app chown", lambda: os.chown(f, 0, 0))
    result("app utime now", lambda: os.utime(f, None))
    result("app utime explicit", lambda: os.utime(f, (1, 1)))
    result("app link", lambda: os.link(f, os.path.join(d, "l")))
    result("app unlink", lambda: os.unlink(f))
    result("app rename", lambda: os.rename(f, os.path.join(d, "g")))
    result("app rename over", lambda: os.rename(other, f))
    result("app setxattr", lambda: os.setxattr(f, "user.y", b"2"))
    result("app removexattr", lambda: os.removexattr(f, "user.x"))
    result("chattr -a", lambda: chattr(["-a"], f))

    # Other flags: kept (d, A) or refused (the rest: see src/fs/inode_flags.rs).
    result("chattr +dA", lambda: chattr(["+d", "+A"], f))
    result("lsattr +dA", lambda: lsattr(f))
    for flag in ("S", "e", "j", "C", "s", "u", "c", "t"):
        print(f"info: chattr +{flag}: {chattr_message(['+' + flag], f)}")
    print(f"info: lsattr after the refused flags: {lsattr(f)}")
    result("chattr = (clear all)", lambda: chattr(["="], f))
    result("fsgetxattr", lambda: fsx_xflags(f))
    result("fssetxattr append+nodump", lambda: fsx_set(f, 0x10 | 0x80))
    result("lsattr after fssetxattr", lambda: lsattr(f))
    result("fsgetxattr after fssetxattr", lambda: fsx_xflags(f))
    result("fssetxattr append-only open O_WRONLY", lambda: open_close(f, os.O_WRONLY))
    result("fssetxattr clear", lambda: fsx_set(f, 0))

    # Directories.
    x = os.path.join(d, "x")
    write_file(x, b"x")
    os.mkdir(os.path.join(d, "sub"))
    result("chattr +i dir", lambda: chattr(["+i"], d))
    result("lsattr -d +i", lambda: lsattr(d, True))
    result("idir create", lambda: write_file(os.path.join(d, "n"), b""))
    result("idir mkdir", lambda: os.mkdir(os.path.join(d, "n")))
    result("idir symlink", lambda: os.symlink("t", os.path.join(d, "n")))
    result("idir mkfifo", lambda: os.mkfifo(os.path.join(d, "n")))
    result("idir link in", lambda: os.link(other, os.path.join(d, "n")))
    result("idir unlink", lambda: os.unlink(x))
    result("idir rmdir", lambda: os.rmdir(os.path.join(d, "sub")))
    result("idir rename inside", lambda: os.rename(x, os.path.join(d, "y")))
    result("idir rename out", lambda: os.rename(x, os.path.join(w, "y")))
    result("idir rename in", lambda: os.rename(other, os.path.join(d, "y")))
    result("idir rename of it", lambda: os.rename(d, os.path.join(w, "e")))
    result("idir chmod", lambda: os.chmod(d, 0o700))
    result("idir write to a file inside", lambda: write_file(x, b"y", os.O_WRONLY))
    result("chattr -i+a dir", lambda: chattr(["-i", "+a"], d))
    result("adir create", lambda: write_file(os.path.join(d, "n"), b""))
    result("adir mkdir", lambda: os.mkdir(os.path.join(d, "m")))
    result("adir unlink", lambda: os.unlink(os.path.join(d, "n")))
    result("adir rmdir", lambda: os.rmdir(os.path.join(d, "m")))
    result("adir rename out", lambda: os.rename(x, os.path.join(w, "y")))
    result("adir rename inside", lambda: os.rename(x, os.path.join(d, "y")))
    result("adir rename in", lambda: os.rename(other, os.path.join(d, "in")))
    for flag in ("D", "T"):
        print(f"info: chattr +{flag} dir: {chattr_message(['+' + flag], d)}")
    result("chattr = dir", lambda: chattr(["="], d))
    result("unlink after clearing", lambda: os.unlink(os.path.join(d, "n")))

    # What a new inode takes from its directory: no-dump and no-atime, not append-only; and
    # no-atime keeps the atime of a read that relatime would otherwise let set it.
    h = os.path.join(w, "inherit")
    os.mkdir(h)
    result("chattr +dAa dir", lambda: chattr(["+d", "+A", "+a"], h))
    hf = os.path.join(h, "f")
    result("create in +dAa dir", lambda: write_file(hf, b"data"))
    result("mkdir in +dAa dir", lambda: os.mkdir(os.path.join(h, "sub")))
    result("lsattr of the new file", lambda: lsattr(hf))
    result("lsattr -d of the new dir", lambda: lsattr(os.path.join(h, "sub"), True))

    def atime_after_read():
        os.utime(hf, (1000000000, 1000000000))
        read_file(hf)
        return os.stat(hf).st_atime
    result("atime of a no-atime file after a read", atime_after_read)
    result("chattr = dir", lambda: chattr(["="], h))

    # renameat2.
    a, b = os.path.join(w, "ra"), os.path.join(w, "rb")
    write_file(a, b"a")
    write_file(b, b"b")
    result("rename NOREPLACE onto existing", lambda: renameat2(a, b, RENAME_NOREPLACE))
    result("rename EXCHANGE", lambda: renameat2(a, b, RENAME_EXCHANGE))
    result("after EXCHANGE", lambda: (read_file(a), read_file(b)))
    result("rename EXCHANGE|NOREPLACE",
           lambda: renameat2(a, b, RENAME_EXCHANGE | RENAME_NOREPLACE))
    result("rename EXCHANGE|WHITEOUT",
           lambda: renameat2(a, b, RENAME_EXCHANGE | RENAME_WHITEOUT))
    result("rename EXCHANGE with missing target",
           lambda: renameat2(a, os.path.join(w, "none"), RENAME_EXCHANGE))
    result("rename WHITEOUT", lambda: renameat2(a, os.path.join(w, "rc"), RENAME_WHITEOUT))
    result("whiteout left", lambda: describe(a))
    result("renamed", lambda: read_file(os.path.join(w, "rc")))
    result("rename WHITEOUT over", lambda: renameat2(b, os.path.join(w, "rc"), RENAME_WHITEOUT))
    result("whiteout left 2", lambda: describe(b))

    # Unknown ioctls: ENOTTY, as ext4 answers one it does not know (TCGETS: isatty()).
    def tcgets():
        fd = os.open(os.path.join(w, "rc"), os.O_RDONLY)
        try:
            fcntl.ioctl(fd, 0x5401, b"\0" * 64)
        finally:
            os.close(fd)
    result("ioctl TCGETS", tcgets)


def fsx_xflags(p):
    fd = os.open(p, os.O_RDONLY)
    try:
        return struct.unpack("I", fcntl.ioctl(fd, FS_IOC_FSGETXATTR, b"\0" * 28)[:4])[0]
    finally:
        os.close(fd)


def fsx_set(p, xflags):
    fd = os.open(p, os.O_RDONLY)
    try:
        cur = bytearray(fcntl.ioctl(fd, FS_IOC_FSGETXATTR, b"\0" * 28))
        cur[0:4] = struct.pack("I", xflags)
        fcntl.ioctl(fd, FS_IOC_FSSETXATTR, bytes(cur))
    finally:
        os.close(fd)


def run_prepare(w, uid):
    for name, flags in (("ui", "+i"), ("ua", "+a"), ("uplain", None)):
        p = os.path.join(w, name)
        write_file(p, b"data")
        os.chown(p, uid, -1)
        if flags:
            subprocess.run(["chattr", flags, p], check=True)
    os.chown(w, uid, -1)


def run_user(w):
    ui, ua, plain = (os.path.join(w, n) for n in ("ui", "ua", "uplain"))
    result("user lsattr", lambda: (lsattr(ui), lsattr(ua), lsattr(plain)))
    result("user chattr -i", lambda: chattr(["-i"], ui))
    result("user chattr -a", lambda: chattr(["-a"], ua))
    result("user chattr +i own file", lambda: chattr(["+i"], plain))
    result("user chattr +a own file", lambda: chattr(["+a"], plain))
    result("user chattr +d own file", lambda: chattr(["+d"], plain))
    result("user setflags +i (ioctl)", lambda: setflags(plain, 0x10))
    result("user write immutable", lambda: write_file(ui, b"x", os.O_WRONLY))
    result("user unlink immutable", lambda: os.unlink(ui))
    result("user chmod immutable", lambda: os.chmod(ui, 0o600))
    result("user utime now immutable", lambda: os.utime(ui, None))
    result("user open append-only O_WRONLY", lambda: open_close(ua, os.O_WRONLY))
    result("user append", lambda: write_file(ua, b"+", os.O_WRONLY | os.O_APPEND))
    result("user truncate append-only", lambda: os.truncate(ua, 0))
    result("user unlink append-only", lambda: os.unlink(ua))
    result("user contents", lambda: (read_file(ui), read_file(ua)))


def run_fallback(w):
    """What a FUSE filesystem gets with fuser 0.18: no FUSE_TMPFILE (opcode 51) and no
    FUSE_STATX (opcode 52), so the kernel falls back. Pinned: a fuser that brings them changes
    these lines, and then this check fails and says what to wire up."""
    def tmpfile():
        os.close(os.open(w, os.O_TMPFILE | os.O_RDWR, 0o600))
    result("open O_TMPFILE", tmpfile)
    p = os.path.join(w, "statx")
    write_file(p, b"")
    buf = ctypes.create_string_buffer(256)
    libc.statx.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint,
                           ctypes.c_void_p]
    check(libc.statx(AT_FDCWD, p.encode(), 0x2000, 0x800, buf))  # FORCE_SYNC, STATX_BTIME
    mask = struct.unpack("I", buf.raw[:4])[0]
    print(f"statx STATX_BTIME: {'yes' if mask & 0x800 else 'no'}")


def main():
    mode, w = sys.argv[1], sys.argv[2]
    if mode == "root":
        run_root(w)
    elif mode == "prepare":
        run_prepare(w, int(sys.argv[3]))
    elif mode == "user":
        run_user(w)
    elif mode == "fallback":
        run_fallback(w)
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
