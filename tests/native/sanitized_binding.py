"""Run inside a Python whose _native extension was built with ASan/UBSan: hostile slots must not crash it."""

from __future__ import annotations

import os
import random
import struct

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

# The racing fuzz: decodes while another process rewrites the slot (tests/native/test_trust_boundary.py).
from test_trust_boundary import decode_while_rewritten  # noqa: E402

race_cases = int(os.environ.get("FEEDSERVE_FUZZ_CASES", "50000"))
accepted, race_rejected = decode_while_rewritten(race_cases, _native.Ring)
print(f"sanitized race: ok ({race_cases} cases, {accepted} accepted, {race_rejected} rejected)")

# The cuckoo table through the same sanitized build: growth, every precision, expiry, drift, export.
import numpy as np  # noqa: E402

keys = (np.arange(1, 30001, dtype=np.uint64) * np.uint64(2654435761)) | np.uint64(1)
for precision in ("fp32", "fp16", "int8"):
    table = _native.CuckooTable(16, precision, 100, 2)
    values = np.random.default_rng(1).standard_normal((len(keys), 16)).astype(np.float32)
    status = np.empty(len(keys), np.uint8)
    table.upsert_into(keys, values, status, 10, True)
    table.upsert_into(keys, values, status, 20, True)  # second sighting: admitted
    out, found = np.empty_like(values), np.empty(len(keys), np.uint8)
    assert table.lookup_into(keys, out, found, 20, 0) == len(keys)
    moved, drift_status = np.empty_like(values), np.empty(len(keys), np.uint8)
    planned, plan_status = np.empty_like(values), np.empty(len(keys), np.uint8)
    table.drift_into(keys, values[::-1].copy(), np.full(len(keys), 0.1, np.float32), planned, plan_status, 30, False)
    table.drift_into(keys, values[::-1].copy(), np.full(len(keys), 0.1, np.float32), moved, drift_status, 30)
    assert (plan_status == drift_status).all()
    exported = np.empty(len(keys), np.uint64), np.empty_like(values), np.empty(len(keys), np.uint32)
    assert table.export_into(*exported) == len(keys)
    removed = np.empty(100, np.uint8)
    assert table.remove_into(keys[:100], removed) == 100 and removed.all() and table.size == len(keys) - 100
    assert table.remove_into(keys[:100], removed) == 0 and not removed.any()
    assert table.expire(100, 50) == len(keys) - 100 and table.size == 0
    try:
        table.upsert_into(keys[:2], values[:1], status[:2], 0, True)
    except ValueError:
        pass
print("sanitized cuckoo: ok")
