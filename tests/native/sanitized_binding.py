"""Run inside a Python whose _native extension was built with ASan/UBSan: hostile slots must not crash it."""

from __future__ import annotations

import os
import random
import struct
import sys

import _native  # the sanitized build, found first on sys.path

ring = _native.Ring.create(f"/fs-asan-{os.getpid()}", lanes=2, slots_per_lane=2, request_capacity=4096, response_capacity=4096)
client = _native.Ring.attach(ring.name)
view = memoryview(client)
slot = client.claim(1.0)
area = client.area_offset(slot, False)
base = _native.MSG_DATA_OFFSET
good = client.encode(slot, False, 1, 0, 7, 0, "00-trace", "feed", b"proto", [("ids", 3, (4,), base), ("ctx", 1, (2, 2), base + 64)])
pristine = bytes(view[area:area + good])
assert ring.decode(slot, False, good)[8][0][0] == "ids"

rng = random.Random(5)
rejected = 0
for _ in range(20000):
    data = bytearray(pristine)
    for _ in range(rng.randint(1, 6)):
        position = rng.randrange(len(data))
        data[position] = rng.randrange(256)
    if rng.random() < 0.3:  # aim at the integers of a descriptor: offsets, nbytes, shapes
        at = 256 + rng.choice([40, 48, 72, 80]) + 96 * rng.randrange(2)
        struct.pack_into("<q", data, at, rng.choice([-1, 2**62, 2**63 - 1, rng.randrange(1 << 20)]))
    view[area:area + len(data)] = data
    length = rng.choice([len(data), rng.randrange(1, 5000), 4096, 4097])
    try:
        ring.decode(slot, False, length)
    except ValueError:
        rejected += 1
for bad_slot in (-1, 4, 2**40):
    try:
        ring.decode(bad_slot, False, 10)
    except (ValueError, OverflowError):
        rejected += 1
view.release()
client.close()
ring.close()
print(f"sanitized binding: ok ({rejected} rejected)")
