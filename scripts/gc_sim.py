#!/usr/bin/env python3
"""The floor of greedy cleaning for our geometry: a small simulator (orientation, not a test).

Like the simulator of shared/reference/anchors.md A.6, with logstorfs' geometry: NSEG segments of
SLOTS record slots, LIVE live records, RESERVE segments user data never takes, and HELD more that
the cleaner keeps free (its headroom). Uniform random single-record overwrites; user writes go to
one head, cleaner copies to another; greedy victims (fewest live records). Prints compaction
writes per user write after the first capacity of overwrites.

  python3 scripts/gc_sim.py [SLOTS [HELD ...]]

SLOTS per 1 MiB segment: 253 for 4,137-byte records with no padding, 240 for batches of 16 pages
(17 blocks per 16 pages), 128 for one page per batch (two blocks per page).
LIVE defaults to 75% of a 256 MiB store's record bytes: 256 MiB * 0.75 / 4137 = 48,670.
"""

import random
import sys


def simulate(slots, held, nseg=256, live=48670, reserve=5, capacities=3, seed=1):
    rnd = random.Random(seed)
    seg_of = [None] * live
    members = [set() for _ in range(nseg)]
    filled = [0] * nseg
    free = list(range(nseg))
    heads = {"user": free.pop(), "gc": free.pop()}
    counts = {"user": 0, "gc": 0}

    def write(key, head):
        s = heads[head]
        if filled[s] == slots:
            s = heads[head] = free.pop()
        old = seg_of[key]
        if old is not None:
            members[old].discard(key)
        seg_of[key] = s
        members[s].add(key)
        filled[s] += 1
        counts[head] += 1

    def clean():
        while len(free) < reserve + held:
            busy = set(heads.values())
            victim = min((s for s in range(nseg) if filled[s] == slots and s not in busy),
                         key=lambda s: len(members[s]))
            for key in list(members[victim]):
                write(key, "gc")
            filled[victim] = 0
            free.insert(0, victim)

    for key in range(live):
        write(key, "user")
        clean()
    total = nseg * slots
    warm_user = warm_gc = None
    for i in range((capacities + 1) * total):
        if i == total:
            warm_user, warm_gc = counts["user"], counts["gc"]
        write(rnd.randrange(live), "user")
        clean()
    return (counts["gc"] - warm_gc) / (counts["user"] - warm_user)


if __name__ == "__main__":
    slots = int(sys.argv[1]) if len(sys.argv) > 1 else 240
    helds = [int(x) for x in sys.argv[2:]] or [1, 4, 8, 16, 32]
    for held in helds:
        print("slots %d, held free %2d: compaction / user %.2f" % (slots, held, simulate(slots, held)))
