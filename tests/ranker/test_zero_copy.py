"""Zero copy into the engine: over the ring, ONNX Runtime reads candidate ids and context from the request
slot and writes the scores into the response slot (the ids only when the full model scores every candidate: the
cascade passes on a subset)."""

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


def _bound_addresses(catalog, manifest, keep: int) -> tuple[dict[str, int], range, np.ndarray]:
    core = ranker_for(catalog, manifest, cascade_keep=keep)
    engine = core.resident.primary.engine = AddressRecordingEngine(core.engine)
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
        return engine.addresses, range(ring.ring.address, ring.ring.address + ring.ring.size), scores
    finally:
        channel.close()
        ring.stop()


def test_engine_inputs_and_outputs_lie_inside_the_ring_segment(catalog, manifest) -> None:
    """With the full model on every candidate, the bound 'ids' and 'context' inputs and the 'scores' output fall
    inside the server's mapping."""
    addresses, segment, scores = _bound_addresses(catalog, manifest, keep=0)
    assert addresses["ids"] in segment
    assert addresses["context"] in segment
    assert addresses["scores"] in segment
    assert addresses["item_table"] not in segment  # precomputed in the ranker's own memory
    assert len(scores) == 2400 and np.isfinite(scores).all()


def test_with_the_cascade_context_and_scores_stay_in_the_segment(catalog, manifest) -> None:
    """With the cascade, the context is still read from the request slot and the scores of the kept candidates
    written into the response slot; the kept ids are the ranker's own subset."""
    addresses, segment, scores = _bound_addresses(catalog, manifest, keep=300)
    assert addresses["context"] in segment
    assert addresses["scores"] in segment
    assert addresses["ids"] not in segment
    assert len(scores) == 300 and np.isfinite(scores).all()
