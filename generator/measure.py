"""What a decoder holds while resident, measured in a child process: weights and tokenizer, ONNX Runtime's arena, KV cache.

`python -m generator.measure GRAPH TOKENIZER CONTEXT` prints one JSON line; `measured_footprint` runs it once per
model file and keeps the answer beside the graph."""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

__all__ = ["Footprint", "measured_footprint", "MEASURE_FILE", "PROBE_TOKENS"]

MEASURE_FILE = "footprint.json"
# part of a kept measurement's key: raised when what a load holds changes (2: the vocabulary's character matrix)
MEASURED_BY = 2
PROBE_TOKENS = 128  # the prefill whose working memory is taken as the arena's size (prompts are shorter)


class Footprint(dict):
    """`weights` (resident growth on loading the session and tokenizer), `arena` (further growth, at its peak,
    while running a PROBE_TOKENS prefill and decode steps), `kv` (one sequence's cache at full context, computed
    from the graph's shapes) and `total`, in bytes."""


def _resident() -> tuple[int, int]:
    """(current, peak) resident set of this process, in bytes."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024


def _probe(graph: Path, tokenizer: Path, context: int) -> Footprint:
    from generator.decoding import LanguageModel

    before, _ = _resident()
    model = LanguageModel.load("probe", graph, tokenizer, 0.0, context)
    loaded, _ = _resident()
    ids = [int(i) % model.vocabulary.size for i in range(PROBE_TOKENS)]
    logits, state = model.decoder.start(ids)
    for _ in range(8):
        logits = model.decoder.step(int(logits.argmax()), state)
    _, peak = _resident()
    kv = model.decoder.kv_bytes(context)
    weights, arena = max(0, loaded - before), max(0, peak - loaded - model.decoder.kv_bytes(PROBE_TOKENS + 8))
    return Footprint(weights=weights, arena=arena, kv=kv, total=weights + arena + kv)


def measured_footprint(graph: Path, tokenizer: Path, context: int) -> Footprint:
    """The footprint, measured in a fresh child process (so nothing else this process holds is counted) and kept
    in MEASURE_FILE beside the graph, keyed by the graph's content, the sizes of its data and tokenizer, the
    context and MEASURED_BY."""
    data = graph.with_name(graph.name + ".data")
    # by content, not path or time: a copied model directory (the shipped tiers) keeps its measurement
    key = [hashlib.sha256(graph.read_bytes()).hexdigest(), data.stat().st_size if data.exists() else 0,
           tokenizer.stat().st_size, context, MEASURED_BY]
    kept = graph.parent / MEASURE_FILE
    try:
        saved = json.loads(kept.read_text())
        if saved.get("key") == key:
            return Footprint(saved["footprint"])
    except (OSError, ValueError, KeyError):
        pass
    done = subprocess.run([sys.executable, "-m", "generator.measure", str(graph), str(tokenizer), str(context)],
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"measuring {graph} failed: {done.stderr.strip()[-2000:]}")
    footprint = Footprint(json.loads(done.stdout.strip().splitlines()[-1]))
    try:
        kept.write_text(json.dumps({"key": key, "footprint": footprint}))
    except OSError:  # a read-only model directory: measured again next time
        pass
    return footprint


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m generator.measure", description=__doc__)
    parser.add_argument("graph", type=Path)
    parser.add_argument("tokenizer", type=Path)
    parser.add_argument("context", type=int)
    args = parser.parse_args()
    print(json.dumps(_probe(args.graph, args.tokenizer, args.context)))


if __name__ == "__main__":
    main()
