#!/usr/bin/env python3
"""The crash workload and its checker, shared by crash_kill9.sh and powercut_replay.sh.

  crash_workload.py run MNT JOURNAL SEED READY [--steps N] [--until FILE] [--mark]
  crash_workload.py verify MNT JOURNAL [--upto-mark M|none]

run: creates, writes, partial overwrites, truncates, renames across directories (some over an
existing file) and deletes in several directories. A step is journaled OUTSIDE the mount only
once the fsync of the file and of every directory involved has returned. Journal lines:
"I <json>" (a step is about to start: the paths it may touch), "C <json>" (the step is durable).
Started with the journal of earlier rounds, it first adopts, as confirmed, whatever state the
paths of an unconfirmed step have after the crash (the remount made that state durable). It runs
until the mount dies (kill -9), or for N steps, or until FILE exists (checked between steps: the
journal then ends with a confirmed step, as scripts/mirror_outage.sh needs). With --mark, once a step is durable and before
its "C" line, it sends mark K (K = its number, kept in the "C" line as "step") into the mount's
I/O log (`mount --test-record-io`), by reading the root's xattr user.logstorfs.replay_mark.K.

verify: the mount must hold every confirmed file with exact contents, and nothing else but the
paths of the one unconfirmed step. With --upto-mark M, "confirmed" means the steps up to mark M
(a power cut right after it: later steps did not happen, except the next one, which may have
started); `none`: no step was confirmed.
"""

import hashlib
import json
import os
import random
import sys

DIRS = ["d0", "d1", "d2", "d1/sub", "d2/sub/deeper"]
MARK_PREFIX = "user.logstorfs.replay_mark."


def sha(b):
    return hashlib.sha256(b).hexdigest()


def apply(model, gone, op):
    if op["op"] == "put":
        model[op["path"]] = op["sha"]
        gone.discard(op["path"])
    elif op["op"] == "delete":
        model.pop(op["path"], None)
        gone.add(op["path"])
    elif op["op"] == "rename":
        model[op["to"]] = model.pop(op["from"])
        gone.discard(op["to"])
        gone.add(op["from"])
    elif op["op"] == "adopt":
        for p, h in op["paths"].items():
            if h is None:
                model.pop(p, None)
            else:
                model[p] = h
                gone.discard(p)


def replay(journal_path, upto_mark=None):
    """(model, inflight step or None, deleted paths, confirmed steps). upto_mark: stop after the
    "C" line of that step (-1: before any); the unconfirmed step is the next "I" line."""
    model, inflight, gone, steps = {}, None, set(), 0
    if not os.path.exists(journal_path):
        return model, inflight, gone, steps
    done = upto_mark is not None and upto_mark < 0
    for line in open(journal_path):
        kind, _, body = line.rstrip("\n").partition(" ")
        op = json.loads(body)
        if kind == "I":
            inflight = op
            if done:
                break
            continue
        if done:
            continue
        inflight = None
        steps += 1
        apply(model, gone, op)
        if upto_mark is not None and op.get("step") == upto_mark:
            done = True
    return model, inflight, gone, steps


def run(mnt, journal_path, seed, ready_path, steps_max, mark, until=None):
    rng = random.Random(seed)
    journal = open(journal_path, "a")

    def log(kind, op):
        journal.write(kind + " " + json.dumps(op, sort_keys=True) + "\n")
        journal.flush()

    def full(p):
        return os.path.join(mnt, p)

    def fsync_dir(d):
        fd = os.open(full(d), os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    for d in DIRS:
        os.makedirs(full(d), exist_ok=True)
    for d in ["", "d1", "d2", "d2/sub"]:
        fsync_dir(d)
    model, inflight, _, confirmed = replay(journal_path)
    # Adopt the state of the unconfirmed step's paths, in one journal line.
    if inflight is not None:
        state = {}
        for p in inflight["paths"]:
            state[p] = sha(open(full(p), "rb").read()) if os.path.exists(full(p)) else None
        log("C", {"op": "adopt", "paths": state})
        model, _, _, confirmed = replay(journal_path)
    contents = {p: open(full(p), "rb").read() for p in model}
    for p, h in model.items():
        if sha(contents[p]) != h:
            sys.exit("workload: %s does not match the journal at start" % p)
    open(ready_path, "w").close()

    counter = [0]

    def new_path():
        counter[0] += 1
        return "%s/f%d-%d" % (rng.choice(DIRS), seed, counter[0])

    def data(n):
        return rng.randbytes(n)

    def size():
        return rng.choice([0, 1, 100, 4095, 4096, 5000, 20000, 130000, 300000])

    def write_file(p, body, mode):
        fd = os.open(full(p), mode, 0o644)
        try:
            os.write(fd, body) if body else None
            os.fsync(fd)
        finally:
            os.close(fd)

    def confirm(op):
        confirmed_now = confirmed + done[0] + 1
        if mark:
            op["step"] = confirmed_now
            os.getxattr(mnt, MARK_PREFIX + str(confirmed_now))
        log("C", op)
        done[0] += 1

    done = [0]
    while steps_max is None or done[0] < steps_max:
        if until is not None and os.path.exists(until):
            break
        files = sorted(contents)
        r = rng.random()
        if not files or (r < 0.3 and len(files) < 80):
            p = new_path()
            body = data(size())
            log("I", {"paths": [p]})
            write_file(p, body, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
            fsync_dir(os.path.dirname(p))
            contents[p] = body
            confirm({"op": "put", "path": p, "sha": sha(body)})
        elif r < 0.45:
            p = rng.choice(files)
            body = data(size())
            log("I", {"paths": [p]})
            write_file(p, body, os.O_WRONLY | os.O_TRUNC)
            contents[p] = body
            confirm({"op": "put", "path": p, "sha": sha(body)})
        elif r < 0.6:
            p = rng.choice(files)
            old = contents[p]
            off = rng.randrange(0, len(old) + 5000)
            patch = data(rng.choice([1, 10, 4096, 9000, 70000]))
            log("I", {"paths": [p]})
            fd = os.open(full(p), os.O_WRONLY)
            try:
                os.pwrite(fd, patch, off)
                os.fsync(fd)
            finally:
                os.close(fd)
            new = bytearray(old)
            if len(new) < off:
                new.extend(b"\0" * (off - len(new)))
            new[off:off + len(patch)] = patch
            contents[p] = bytes(new)
            confirm({"op": "put", "path": p, "sha": sha(contents[p])})
        elif r < 0.68:
            p = rng.choice(files)
            n = rng.randrange(0, len(contents[p]) + 1)
            log("I", {"paths": [p]})
            os.truncate(full(p), n)
            fd = os.open(full(p), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            contents[p] = contents[p][:n]
            confirm({"op": "put", "path": p, "sha": sha(contents[p])})
        elif r < 0.85:
            src = rng.choice(files)
            if rng.random() < 0.3 and len(files) > 1:
                dst = rng.choice([f for f in files if f != src])   # rename over a file
            else:
                dst = new_path()
            log("I", {"paths": [src, dst]})
            os.rename(full(src), full(dst))
            for d in {os.path.dirname(src), os.path.dirname(dst)}:
                fsync_dir(d)
            contents[dst] = contents.pop(src)
            confirm({"op": "rename", "from": src, "to": dst})
        else:
            p = rng.choice(files)
            log("I", {"paths": [p]})
            os.unlink(full(p))
            fsync_dir(os.path.dirname(p))
            del contents[p]
            confirm({"op": "delete", "path": p})


def verify(mnt, journal_path, upto_mark):
    model, inflight, gone, steps = replay(journal_path, upto_mark)
    loose = set(inflight["paths"]) if inflight else set()
    bad = 0
    for p, h in sorted(model.items()):
        if p in loose:
            continue
        try:
            got = sha(open(os.path.join(mnt, p), "rb").read())
        except OSError as e:
            print("confirmed file %s: %s" % (p, e))
            bad += 1
            continue
        if got != h:
            print("confirmed file %s: contents differ" % p)
            bad += 1
    present = set()
    for root, _dirs, files in os.walk(mnt):
        for f in files:
            present.add(os.path.relpath(os.path.join(root, f), mnt))
    for p in sorted(present - set(model) - loose):
        why = "deleted or renamed away, and confirmed" if p in gone else "never confirmed"
        print("file %s is present: %s" % (p, why))
        bad += 1
    print("%d confirmed steps, %d files checked, %d unconfirmed path(s) at the crash, "
          "%d differences" % (steps, len(model), len(loose), bad))
    return 1 if bad else 0


def main(argv):
    if len(argv) >= 5 and argv[0] == "run":
        steps_max = None
        if "--steps" in argv:
            steps_max = int(argv[argv.index("--steps") + 1])
        until = argv[argv.index("--until") + 1] if "--until" in argv else None
        try:
            run(argv[1], argv[2], int(argv[3]), argv[4], steps_max, "--mark" in argv, until)
        except OSError as e:
            # The daemon was killed under us (ENOTCONN and friends): the round is over.
            print("workload stopped: %s" % e)
        return 0
    if len(argv) >= 3 and argv[0] == "verify":
        upto = None
        if "--upto-mark" in argv:
            m = argv[argv.index("--upto-mark") + 1]
            upto = -1 if m == "none" else int(m)
        return verify(argv[1], argv[2], upto)
    sys.exit(__doc__)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
