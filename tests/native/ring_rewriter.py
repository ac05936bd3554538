"""A hostile peer for the racing fuzz: keeps rewriting one ring slot's message header until killed.

Usage: ring_rewriter.py SEGMENT AREA_OFFSET. It maps /dev/shm/SEGMENT with plain mmap (no feedserve code)
and flips, in turn, the tensor count to 65,535, the first tensor's ndim to 200, and its name to 32
unterminated bytes, each time restoring the honest bytes: every decode of that slot races these writes.
It prints "racing" once it has the mapping.
"""

from __future__ import annotations

import mmap
import os
import sys

segment, area = sys.argv[1], int(sys.argv[2])
fd = os.open(f"/dev/shm/{segment.lstrip('/')}", os.O_RDWR)
mm = mmap.mmap(fd, 0)
count_at, ndim_at, name_at = area + 6, area + 256 + 33, area + 256
honest_count, honest_ndim, honest_name = mm[count_at:count_at + 2], mm[ndim_at:ndim_at + 1], mm[name_at:name_at + 32]
hostile = [(count_at, b"\xff\xff", honest_count), (ndim_at, b"\xc8", honest_ndim), (name_at, b"n" * 32, honest_name)]
print("racing", flush=True)
while True:
    for at, bad, good in hostile:
        mm[at:at + len(bad)] = bad
        mm[at:at + len(good)] = good
