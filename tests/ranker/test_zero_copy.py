"""Zero copy into the engine: over the ring, ONNX Runtime reads candidate ids and context from the request
slot and writes the scores into the response slot."""

from __future__ import annotations

import numpy as np

from feedserve.v1 import ranker_pb2
from mesh.methods import methods_of
from mesh.ring import RingChannel, RingServer
from ranker.features import CONTEXT_DIM
from tests.stack import ranker_for

RANKER = ranker_pb2.DESCRIPTOR.services_by_name["Ranker"]


class AddressRecordingEngine:
    """The ranker's real ONNX Runtime engine, noting the address of every buffer bound to it."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.manifest = inner.manifest
        self.addresses: dict[str, int] = {}

    def run(self, inputs, outputs) -> None:
        for name, array in {**inputs, **outputs}.items():
            self.addresses[name] = array.ctypes.data
        self.inner.run(inputs, outputs)


def test_engine_inputs_and_outputs_lie_inside_the_ring_segment(catalog, manifest) -> None:
    """The bound 'ids' and 'context' inputs and the 'scores' output fall inside the server's mapping."""
    core = ranker_for(catalog, manifest)
    engine = core.engine = AddressRecordingEngine(core.engine)
    ring = RingServer("ranker", RANKER, core.handlers(), log_calls=False)
    ring.start()
    channel = RingChannel("ranker", ring.segment)
    try:
        tensors = {
            "user_vector": catalog.vector(1),
            "candidates": np.arange(1, 2401, dtype=np.int64),
            "context_features": np.zeros(CONTEXT_DIM, np.float32),
        }
        request = ranker_pb2.RankRequest(user_id=1, k=10, return_all_scores=True, include_seen=True)
        with channel.call(methods_of(RANKER)["Rank"], request, tensors, timeout=10) as reply:
            scores = reply.tensors["scores"].copy()
        segment = range(ring.ring.address, ring.ring.address + ring.ring.size)
        assert engine.addresses["ids"] in segment
        assert engine.addresses["context"] in segment
        assert engine.addresses["scores"] in segment
        assert engine.addresses["item_table"] not in segment  # precomputed in the ranker's own memory
        assert len(scores) == 2400 and np.isfinite(scores).all()
    finally:
        channel.close()
        ring.stop()
