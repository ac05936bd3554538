"""Hop-by-hop tracing: one W3C trace id from the caller through every service, over gRPC and over the ring."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from feedserve.v1 import gateway_pb2, generator_pb2, ranker_pb2
from mesh.ring import RingServer
from mesh.tracing import configure_tracing, current_traceparent, server_span
from mesh.transport import Transport
from tests.stack import generation_stack, ranker_for, running_stack

TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
TRACEPARENT = f"00-{TRACE_ID:032x}-b7ad6b7169203331-01"


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    """Finished spans of this process (the tracer provider is process-wide: installed once)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    configure_tracing("tests")  # keeps the provider already installed
    return exporter


def test_a_feed_is_one_trace_across_gateway_paramserver_and_ranker(catalog, manifest, tmp_path, run, spans) -> None:
    """The caller's traceparent continues through every hop; each service's span is a child of the gateway's."""
    spans.clear()

    async def body() -> None:
        async with running_stack(catalog, manifest, tmp_path) as stack:
            await stack.gateway.Feed(gateway_pb2.FeedRequest(user_id=2), timeout=10, metadata=(("traceparent", TRACEPARENT),))

    run(body())
    by_name = {span.name: span for span in spans.get_finished_spans() if span.context.trace_id == TRACE_ID}
    feed = by_name["/feedserve.v1.Gateway/Feed"]
    assert feed.parent.span_id == 0xB7AD6B7169203331
    for child in ("/feedserve.v1.ParamServer/Lookup", "/feedserve.v1.Ranker/Rank"):
        assert by_name[child].parent.span_id == feed.context.span_id


def test_a_generation_stream_is_one_trace_across_gateway_and_generator(generation_home, catalog, tmp_path, run,
                                                                       spans) -> None:
    """Streams are traced too: the generator's span is a child of the gateway's, in the caller's trace."""
    spans.clear()

    async def body() -> None:
        async with generation_stack(generation_home, catalog, tmp_path) as stack:
            request = generator_pb2.GenerateRequest(prompt="Write a headline about food.", max_tokens=8)
            async for _ in stack.gateway.Generate(request, timeout=10, metadata=(("traceparent", TRACEPARENT),)):
                pass

    run(body())
    by_name = {span.name: span for span in spans.get_finished_spans() if span.context.trace_id == TRACE_ID}
    relay = by_name["/feedserve.v1.Gateway/Generate"]
    assert relay.parent.span_id == 0xB7AD6B7169203331
    assert by_name["/feedserve.v1.Generator/Generate"].parent.span_id == relay.context.span_id


def test_the_traceparent_crosses_the_ring_header(catalog, manifest, spans, run) -> None:
    """Over the shared-memory ring the server's span joins the caller's trace, as over gRPC."""

    core = ranker_for(catalog, manifest)
    ring = RingServer("ranker", ranker_pb2.DESCRIPTOR.services_by_name["Ranker"], core.handlers(), log_calls=False)
    ring.start()
    spans.clear()

    async def body() -> None:
        from mesh.grpc_server import start_server
        from mesh.ring import transport_registration

        server = await start_server(transport_registration(ring), "127.0.0.1:0")
        transport = Transport("ranker", f"127.0.0.1:{server.port}", ranker_pb2.DESCRIPTOR.services_by_name["Ranker"])
        try:
            with server_span("caller", TRACEPARENT):
                outgoing = current_traceparent()
                reply = await transport.call("Rank", ranker_pb2.RankRequest(k=3), {"user_vector": catalog.vector(1)}, 10)
                reply.release()
            assert transport.path == "ring" and outgoing.startswith(f"00-{TRACE_ID:032x}-")
        finally:
            await transport.close()
            await server.stop(0)

    try:
        run(body())
    finally:
        ring.stop()
    ring_spans = [s for s in spans.get_finished_spans() if s.attributes.get("transport") == "ring"]
    assert ring_spans and ring_spans[0].context.trace_id == TRACE_ID and ring_spans[0].name == "/feedserve.v1.Ranker/Rank"
