"""OpenTelemetry spans for every hop, joined by the W3C traceparent (gRPC metadata, or the ring header).

`FEEDSERVE_TRACE_EXPORT` picks the exporter: `file:PATH` (one JSON span per line; `{service}` in PATH is
replaced; `feedserve up` uses HOME/traces/{service}.jsonl), `console`, `otlp:HOST:PORT` (needs
opentelemetry-exporter-otlp-proto-grpc), or `none` (the default for a bare `python -m SERVICE`: no SDK
is installed, spans cost nothing, and the caller's traceparent is still passed on).
`FEEDSERVE_TRACE_SAMPLE` is the share of new traces recorded (default 1.0); a caller's sampling decision
is always followed.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = ["configure_tracing", "server_span", "current_traceparent", "FileSpanExporter"]

_PROPAGATOR = TraceContextTextMapPropagator()


class FileSpanExporter(SpanExporter):
    """Appends each finished span as one JSON line."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "a", buffering=1)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        for span in spans:
            self._file.write(span.to_json(indent=None) + "\n")
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self._file.close()


def _exporter(spec: str) -> SpanExporter | None:
    kind, _, target = spec.partition(":")
    if kind == "none":
        return None
    if kind == "console":
        return ConsoleSpanExporter(out=sys.stderr)
    if kind == "file" and target:
        return FileSpanExporter(Path(target))
    if kind == "otlp" and target:
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        except ImportError:
            raise ValueError("FEEDSERVE_TRACE_EXPORT=otlp:... needs opentelemetry-exporter-otlp-proto-grpc") from None
        return OTLPSpanExporter(endpoint=target, insecure=True)
    raise ValueError(f"FEEDSERVE_TRACE_EXPORT is expected as none, console, file:PATH or otlp:HOST:PORT, got {spec!r}")


def configure_tracing(service: str, spec: str | None = None) -> None:
    """Install the process's tracer provider once (later calls keep the first one)."""
    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return
    spec = (spec or os.environ.get("FEEDSERVE_TRACE_EXPORT", "none")).replace("{service}", service)
    exporter = _exporter(spec)
    if exporter is None:
        return  # the API's no-op tracer still carries a caller's trace context to the next hop
    ratio = float(os.environ.get("FEEDSERVE_TRACE_SAMPLE", "1.0"))
    provider = TracerProvider(resource=Resource.create({"service.name": service}),
                              sampler=ParentBased(TraceIdRatioBased(ratio)))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)


@contextmanager
def server_span(name: str, traceparent: str, **attributes: str | bool | int | float | None) -> Iterator[trace.Span]:
    """A server span continuing the caller's trace (a new trace when there is none); current inside."""
    parent = _PROPAGATOR.extract({"traceparent": traceparent}) if traceparent else otel_context.Context()
    tracer = trace.get_tracer("feedserve")
    with tracer.start_as_current_span(name, context=parent, kind=trace.SpanKind.SERVER,
                                      attributes={k: v for k, v in attributes.items() if v is not None}) as span:
        yield span


def current_traceparent() -> str:
    """The W3C traceparent of the current span, to send to the next hop ('' outside any trace)."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get("traceparent", "")
