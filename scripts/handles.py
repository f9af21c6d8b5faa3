#!/usr/bin/env python3
"""File handles on a mounted file system: name_to_handle_at on files and directories, the
kernel's inode and dentry caches dropped (`echo 2 > /proc/sys/vm/drop_caches`: the FUSE daemon
gets FORGET for every inode nobody holds), then open_by_handle_at of each handle, which for FUSE
becomes LOOKUP of "." (and ".." to reconnect a directory) in the daemon.

    python3 scripts/handles.py DIR      (as root: open_by_handle_at needs CAP_DAC_READ_SEARCH)

Checks, failing with exit 1 and a message: content read through a handle, writes through a
handle seen by path, directory listings and paths of directory handles (reconnected to the
tree), a handle surviving a rename, ESTALE for an unlinked file and a removed directory, EINVAL
or ESTALE for a garbled handle. Prints a transcript that does not depend on the file system
(inode numbers and handle bytes left out), so that scripts/export_nfs.sh can compare it with the
one of a kernel ext4 mount.
"""

import ctypes
import errno
import os
import sys
import time

libc = ctypes.CDLL(None, use_errno=True)
MAX_HANDLE_SZ = 128


class FileHandle(ctypes.Structure):
    _fields_ = [
        ("handle_bytes", ctypes.c_uint),
        ("handle_type", ctypes.c_int),
        ("f_handle", ctypes.c_ubyte * MAX_HANDLE_SZ),
    ]


libc.name_to_handle_at.argtypes = [
    ctypes.c_int,
    ctypes.c_char_p,
    ctypes.POINTER(FileHandle),
    ctypes.POINTER(ctypes.c_int),
    ctypes.c_int,
]
libc.open_by_handle_at.argtypes = [ctypes.c_int, ctypes.POINTER(FileHandle), ctypes.c_int]

AT_FDCWD = -100
transcript = []
failures = []


def say(line):
    transcript.append(line)
    print(line)


def fail(msg):
    failures.append(msg)
    print("FAIL: " + msg)


def name_to_handle(path):
    h = FileHandle()
    h.handle_bytes = MAX_HANDLE_SZ
    mount_id = ctypes.c_int()
    if libc.name_to_handle_at(AT_FDCWD, path.encode(), ctypes.byref(h), ctypes.byref(mount_id), 0):
        e = ctypes.get_errno()
        raise OSError(e, "name_to_handle_at " + path + ": " + os.strerror(e))
    return h


def open_handle(mount_fd, h, flags):
    """The fd, or the errno name."""
    fd = libc.open_by_handle_at(mount_fd, ctypes.byref(h), flags)
    if fd < 0:
        return errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
    return fd


def drop_caches():
    os.sync()
    for _ in range(2):
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("2\n")
        # FORGETs reach a FUSE daemon asynchronously.
        time.sleep(0.2)


def main():
    top = os.path.realpath(sys.argv[1])
    root = os.path.join(top, "handles")
    os.mkdir(root)
    os.makedirs(os.path.join(root, "d", "sub"))
    files = {
        "d/f": b"content of f\n" * 100,
        "d/sub/g": b"g" * 10000,
        "d/gone": b"unlinked before the handle is opened",
        "d/moves": b"renamed after its handle was taken",
    }
    for rel, data in files.items():
        with open(os.path.join(root, rel), "wb") as f:
            f.write(data)
    os.mkdir(os.path.join(root, "d", "rmdir"))
    names = ["d", "d/sub", "d/f", "d/sub/g", "d/gone", "d/moves", "d/rmdir"]
    handles = {rel: name_to_handle(os.path.join(root, rel)) for rel in names}
    for rel in names:
        say("handle of %s taken" % rel)
    os.unlink(os.path.join(root, "d", "gone"))
    os.rmdir(os.path.join(root, "d", "rmdir"))
    os.rename(os.path.join(root, "d", "moves"), os.path.join(root, "moved"))
    files["moved"] = files.pop("d/moves")
    mount_fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)

    for round_no in (1, 2):
        drop_caches()
        say("round %d: caches dropped" % round_no)
        for rel in ["d/f", "d/sub/g", "d/moves"]:
            fd = open_handle(mount_fd, handles[rel], os.O_RDONLY)
            if isinstance(fd, str):
                fail("round %d: open_by_handle_at %s: %s" % (round_no, rel, fd))
                say("open %s: %s" % (rel, fd))
                continue
            data = os.pread(fd, 1 << 20, 0)
            os.close(fd)
            want = files["moved" if rel == "d/moves" else rel]
            if data != want:
                fail("round %d: %s read %d bytes, not its content" % (round_no, rel, len(data)))
            say("open %s: read %d bytes, content %s" % (rel, len(data), data == want))
        for rel in ["d", "d/sub"]:
            fd = open_handle(mount_fd, handles[rel], os.O_RDONLY | os.O_DIRECTORY)
            if isinstance(fd, str):
                fail("round %d: open_by_handle_at directory %s: %s" % (round_no, rel, fd))
                say("open %s: %s" % (rel, fd))
                continue
            listing = sorted(os.listdir(fd))
            # The path the kernel gives the fd: the directory was reconnected to the tree
            # (through LOOKUP of ".." and a listing of its parent).
            path = os.readlink("/proc/self/fd/%d" % fd)
            os.close(fd)
            want = sorted(os.listdir(os.path.join(root, rel)))
            if listing != want:
                fail("round %d: listing of %s by handle %s, by path %s" % (round_no, rel, listing, want))
            if path != os.path.join(root, rel):
                fail("round %d: %s opened by handle has path %s" % (round_no, rel, path))
            say("open %s: lists %s, path %s" % (rel, listing, os.path.relpath(path, top)))
        for rel in ["d/gone", "d/rmdir"]:
            flags = os.O_RDONLY | (os.O_DIRECTORY if rel == "d/rmdir" else 0)
            fd = open_handle(mount_fd, handles[rel], flags)
            if not isinstance(fd, str):
                os.close(fd)
                fd = "opened"
            if fd != "ESTALE":
                fail("round %d: deleted %s through its handle: %s, not ESTALE" % (round_no, rel, fd))
            say("open deleted %s: %s" % (rel, fd))

    # A write through a handle, read back by path after the caches are dropped again.
    drop_caches()
    fd = open_handle(mount_fd, handles["d/f"], os.O_RDWR)
    if isinstance(fd, str):
        fail("open_by_handle_at d/f for writing: %s" % fd)
    else:
        os.pwrite(fd, b"WRITTEN", 0)
        os.close(fd)
        drop_caches()
        with open(os.path.join(root, "d", "f"), "rb") as f:
            head = f.read(7)
        if head != b"WRITTEN":
            fail("a write through a handle reads back by path as %r" % head)
        say("write through handle, read by path: %r" % head)

    # A garbled handle: the kernel's own check (ext4: EINVAL or ESTALE as FUSE).
    bad = FileHandle()
    ctypes.memmove(ctypes.byref(bad), ctypes.byref(handles["d/f"]), ctypes.sizeof(FileHandle))
    bad.f_handle[0] ^= 0x55
    bad.f_handle[1] ^= 0x55
    fd = open_handle(mount_fd, bad, os.O_RDONLY)
    if not isinstance(fd, str):
        os.close(fd)
        fail("a garbled handle opened a file")
    say("garbled handle refused")
    os.close(mount_fd)

    if failures:
        print("%d failures" % len(failures))
        sys.exit(1)
    print("all handle checks passed")


if __name__ == "__main__":
    main()
