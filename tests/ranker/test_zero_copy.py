"""Zero copy into the engine: over the ring, ONNX Runtime reads the user vector from the request slot and
writes the scores into the response slot."""

from __future__ import annotations

import numpy as np

from engines import load_engine
from feedserve.v1 import ranker_pb2
from mesh.dispatch import methods_of
from mesh.ring import RingChannel, RingServer
from ranker.service import Ranker

RANKER = ranker_pb2.DESCRIPTOR.services_by_name["Ranker"]


class AddressRecordingEngine:
    """The real ONNX Runtime engine, noting the address of every buffer it is bound to."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.manifest = inner.manifest
        self.addresses: dict[str, int] = {}

    def run(self, inputs, outputs) -> None:
        for name, array in {**inputs, **outputs}.items():
            self.addresses[name] = array.ctypes.data
        self.inner.run(inputs, outputs)


def test_engine_input_and_output_buffers_lie_inside_the_ring_segment(world, manifest) -> None:
    """The bound 'user' input and 'scores' output addresses fall inside the server's mapping of the segment."""
    engine = AddressRecordingEngine(load_engine(manifest))
    ring = RingServer("ranker", RANKER, Ranker(world, engine).handlers(), log_calls=False)
    ring.start()
    channel = RingChannel("ranker", ring.segment)
    try:
        user = np.asarray(world.user_tastes[0])
        request = ranker_pb2.RankRequest(k=10, return_all_scores=True)
        with channel.call(methods_of(RANKER)["Rank"], request, {"user_vector": user}, timeout=10) as reply:
            scores = reply.tensors["scores"].copy()
        segment = range(ring.ring.address, ring.ring.address + ring.ring.size)
        assert engine.addresses["user"] in segment
        assert engine.addresses["scores"] in segment
        assert engine.addresses["items"] not in segment  # gathered from the item table: computed, not received
        assert len(scores) > 1000 and np.isfinite(scores).all()
    finally:
        channel.close()
        ring.stop()
