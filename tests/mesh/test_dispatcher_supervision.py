"""Ring dispatchers never die silently: undeliverable replies are logged, dead dispatchers are restarted,
and dispatchers that cannot be kept alive close the ring and turn the service NOT_SERVING."""

from __future__ import annotations

import asyncio
import threading

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from feedserve.v1 import ranker_pb2
from mesh.methods import methods_of
from mesh.ring import MAX_RESTARTS, HandshakeServicer, RingBroken, RingChannel, RingServer
from mesh.transport import Transport
from tests.mesh.test_ring_transport import RANKER, SMALL_RING, Blocking, _serve

RANK = methods_of(RANKER)["Rank"]
FREE, BUSY = 0, 3  # fs_slot_state


class SlotThief(Blocking):
    """A handler whose client rewrites its BUSY slot to FREE while the server computes (a hostile client)."""

    ring: RingServer

    def __call__(self, request, tensors, outputs):
        if request.user_id == 13:
            server = self.ring
            for slot in range(server.ring.slot_count):
                state_at = server.ring.area_offset(slot, False) - 64  # the slot header precedes its request area
                if int.from_bytes(server.view[state_at:state_at + 4], "little") == BUSY:
                    server.view[state_at:state_at + 4] = FREE.to_bytes(4, "little")
        return super().__call__(request, tensors, outputs)


def test_a_reply_that_cannot_be_delivered_leaves_the_dispatcher_serving() -> None:
    """complete() finds the slot stolen: the call fails for that client only, and the next call is served
    (before, the error reply was sent again outside any handler and the dispatcher thread died)."""
    handler = SlotThief()
    ring = RingServer("ranker", RANKER, {"Rank": handler}, SMALL_RING, log_calls=False)
    handler.ring = ring
    ring.start()
    channel = RingChannel("ranker", ring.segment, SMALL_RING)
    try:
        with pytest.raises(RingBroken):
            channel.call(RANK, ranker_pb2.RankRequest(user_id=13, k=2), {}, 5)
        with channel.call(RANK, ranker_pb2.RankRequest(k=3), {}, 5) as reply:
            assert reply.message.candidates_considered == 3
        assert ring.restarts == 0 and not ring.failed
    finally:
        channel.close()
        ring.stop()


def test_a_dispatcher_that_dies_is_restarted_and_serves_the_next_call() -> None:
    """The test hook kills the dispatcher as a bug would: the supervisor restarts it at once."""
    ring = RingServer("ranker", RANKER, {"Rank": Blocking()}, SMALL_RING, log_calls=False)
    ring.start()
    channel = RingChannel("ranker", ring.segment, SMALL_RING)
    try:
        ring.kill_dispatcher()
        assert ring.restarted.wait(10)
        with channel.call(RANK, ranker_pb2.RankRequest(k=4), {}, 5) as reply:
            assert reply.message.candidates_considered == 4
        assert ring.restarts == 1 and not ring.failed and channel.alive()
    finally:
        channel.close()
        ring.stop()


def test_dispatchers_that_keep_dying_close_the_ring_and_the_service_reports_not_serving(run) -> None:
    """More than MAX_RESTARTS deaths in the window: the ring closes (clients fail over to gRPC, which still
    answers) and health turns NOT_SERVING, so that balancers move traffic elsewhere."""
    handler = Blocking()
    failed = threading.Event()

    async def body() -> None:
        loop = asyncio.get_running_loop()
        running = None

        def on_failure() -> None:
            running.mark_not_serving_threadsafe(loop, (RANKER.full_name,))
            failed.set()

        ring = RingServer("ranker", RANKER, {"Rank": handler}, SMALL_RING, log_calls=False, on_failure=on_failure)
        running = await _serve(handler, HandshakeServicer(ring))
        ring.start()
        address = f"127.0.0.1:{running.port}"
        transport = Transport("ranker", address, RANKER, config=SMALL_RING)
        try:
            (await transport.call("Rank", ranker_pb2.RankRequest(k=1), None, timeout=5)).release()
            assert transport.path == "ring"
            ring.kill_dispatcher(times=MAX_RESTARTS + 1)
            assert await loop.run_in_executor(None, failed.wait, 10)
            assert ring.failed
            reply = await transport.call("Rank", ranker_pb2.RankRequest(k=2), None, timeout=5)
            assert reply.message.candidates_considered == 2 and transport.path == "grpc"
            async with grpc.aio.insecure_channel(address) as channel:
                health = health_pb2_grpc.HealthStub(channel)
                for name in ("", RANKER.full_name):
                    # the mark is scheduled on this loop: a watch sees it arrive, with no sleep
                    async for status in health.Watch(health_pb2.HealthCheckRequest(service=name)):
                        if status.status == health_pb2.HealthCheckResponse.NOT_SERVING:
                            break
        finally:
            await transport.close()
            await running.stop(0)
            ring.stop()

    run(body())
