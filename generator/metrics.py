"""The generator's Prometheus metrics: streaming latency, tokens, caches, routing, residency and cost."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from mesh.metrics import REGISTRY

__all__ = ["observe_pool", "TTFT_SECONDS", "INTER_TOKEN_SECONDS", "TOKENS", "CACHE", "ESCALATIONS", "COST", "MODEL_EVENTS",
           "RESIDENT_BYTES", "BUDGET_BYTES"]

_LATENCY = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0)

TTFT_SECONDS = Histogram("feedserve_generation_ttft_seconds", "time to the first streamed chunk, by first model",
                         ["model"], buckets=_LATENCY, registry=REGISTRY)
INTER_TOKEN_SECONDS = Histogram("feedserve_generation_inter_token_seconds", "mean gap between streamed chunks",
                                ["model"], buckets=_LATENCY, registry=REGISTRY)
TOKENS = Counter("feedserve_generation_tokens", "tokens processed, by model and direction (in, out)",
                 ["model", "direction"], registry=REGISTRY)
CACHE = Counter("feedserve_generation_cache", "Generate requests by semantic-cache outcome (semantic, miss)",
                ["outcome"], registry=REGISTRY)
ESCALATIONS = Counter("feedserve_generation_escalations", "stages redone on the large tier after a low-confidence "
                      "probe", registry=REGISTRY)
COST = Counter("feedserve_generation_cost", "priced tokens and compute, by feature tag", ["feature_tag"],
               registry=REGISTRY)
MODEL_EVENTS = Counter("feedserve_generator_model_events", "model loads and evictions", ["model", "event"],
                       registry=REGISTRY)
RESIDENT_BYTES = Gauge("feedserve_generator_resident_bytes", "bytes of models resident (or loading)",
                       registry=REGISTRY)
BUDGET_BYTES = Gauge("feedserve_generator_budget_bytes", "the residency memory budget", registry=REGISTRY)


def observe_pool(event: str, model: str, used_bytes: int) -> None:
    """The residency pool's `on_change`: count the load or eviction, and set the resident bytes."""
    MODEL_EVENTS.labels(model, event).inc()
    RESIDENT_BYTES.set(used_bytes)
