"""The real tier's figures for bench/generate.py, measured in process on SmolLM2-135M-Instruct as the generator serves
it (one ONNX Runtime thread): each precision's speed and held-out perplexity, the constraint engine's share of a
token, escalation between the two tiers with its quality and cost, and the planner against a ReAct loop."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np

from bench.common import p50_p99
from feedserve.v1 import generator_pb2
from generator.constraints import WORD, Constraints
from generator.corpus import STAGE_END
from generator.corpus import TOPICS as CATEGORIES
from generator.decoding import LanguageModel, generate
from generator.llm_import import ensure_real_tier, heldout_text, perplexity
from generator.pipeline import Pipeline, PlanRun
from generator.planner import make_plan
from generator.registry import tier_spec
from generator.residency import ModelSpec, ResidencyPool

__all__ = ["precisions", "constraint_overhead", "escalation", "react_tokens", "planner_tokens_real",
           "PROMPT_40", "ROUTED_PROMPTS", "TASKS"]

PROMPT_40 = "Invite a friend to a Sunday picnic in {city}."  # 40 tokens through SmolLM2's chat template
CITIES = ("Paris", "Rome", "Oslo", "Lima", "Cairo", "Seoul", "Quito", "Perth", "Turin", "Delhi")
TASKS = [f"Write a post about {c}, at most 60 words." for c in ("music", "travel", "food", "science", "cars",
                                                               "poetry", "gaming", "history")]
# what the router sees: requests of the kinds the small tier was trained on, and requests unlike them
ROUTED_PROMPTS = (
    [f"List ideas about {c}." for c in ("music", "travel", "food", "film", "sports", "books", "art", "pets")]
    + [f"Write a headline about {c}." for c in ("science", "health", "space", "fashion")]
    + ["What should I pack for a beach holiday?", "Explain how photosynthesis works.", "How do I make a cup of tea?",
       "Why is the sky blue?", "Give me three tips for sleeping better.", "What is a good name for a cat?",
       "How do solar panels work?", "Suggest a weekend plan in the mountains.", "What causes rain?",
       "Tell me a fun fact about octopuses.", "How can I learn to cook?", "Describe a quiet morning at the lake."])


class _TimedDecoder:
    """The decoder with its own time counted apart: what is left of a token's time is the constraint engine's."""

    def __init__(self, decoder) -> None:
        self.decoder, self.seconds = decoder, 0.0

    def start(self, ids, every_position: bool = False):
        started = time.perf_counter()
        try:
            return self.decoder.start(ids, every_position)
        finally:
            self.seconds += time.perf_counter() - started

    def step(self, token, state):
        started = time.perf_counter()
        try:
            return self.decoder.step(token, state)
        finally:
            self.seconds += time.perf_counter() - started

    def __getattr__(self, name: str):
        return getattr(self.decoder, name)


def _spec(home: Path, precision: str) -> ModelSpec:
    return tier_spec(f"smollm2-{precision}", ensure_real_tier(home, precision))


def precisions(home: Path, quick: bool) -> dict[str, dict[str, float]]:
    """Per precision: held-out perplexity, decode step and 40-token prefill P50/P99 (alternating blocks), bytes."""
    names = ("fp32", "int8", "int4")
    specs = {p: _spec(home, p) for p in names}
    models = {p: spec.load() for p, spec in specs.items()}
    text_ids = models["int4"].encode(heldout_text())
    out: dict[str, dict[str, float]] = {p: {"ppl": perplexity(models[p].decoder, text_ids), "bytes": specs[p].bytes}
                                        for p in names}
    prompt = models["int4"].prompt_ids(PROMPT_40.format(city="Paris"))
    steps: dict[str, list[float]] = {p: [] for p in names}
    prefills: dict[str, list[float]] = {p: [] for p in names}
    for _ in range(3 if quick else 8):  # alternating blocks: every precision sees the same machine state
        for p in names:
            decoder = models[p].decoder
            for _ in range(3):
                started = time.perf_counter()
                logits, state = decoder.start(prompt)
                prefills[p].append((time.perf_counter() - started) * 1e3)
            for _ in range(16):
                started = time.perf_counter()
                logits = decoder.step(int(logits.argmax()), state)
                steps[p].append((time.perf_counter() - started) * 1e3)
    for p in names:
        out[p]["step_p50_ms"], out[p]["step_p99_ms"] = p50_p99(steps[p])
        out[p]["prefill40_p50_ms"], out[p]["prefill40_p99_ms"] = p50_p99(prefills[p])
        out[p]["tokens_per_s"] = 1e3 / out[p]["step_p50_ms"]
        out[p]["prompt_tokens"] = len(prompt)
    return out


CONSTRAINT_KINDS = {
    "none": ("Write about hiking in the mountains.", Constraints(max_tokens=40)),
    "stop+banned+words": ("Write about hiking in the mountains.",
                          Constraints(max_tokens=40, stop=(STAGE_END, "!"), banned_words=frozenset({"hike", "trail"}),
                                      max_words=30)),
    "allowed words": ("Describe the sea in a few words.",
                      Constraints(max_tokens=16, allowed_words=frozenset("the sea is blue and calm deep very".split()))),
    "json pattern": ("Give a JSON object with a person's name and age.",
                     Constraints(max_tokens=30, pattern=r'\{"name": "[A-Za-z ]{1,20}", "age": [0-9]{1,3}\}')),
}


def constraint_overhead(model: LanguageModel, quick: bool) -> dict[str, dict[str, float]]:
    """Per constraint kind, in alternating blocks: the engine's time per token over the model's time per token
    (the decoder is timed apart). A pattern's first use, which builds its per-state token tables, is reported
    on its own ('cold'); the served path keeps compiled patterns per model."""
    timed = _TimedDecoder(model.decoder)
    model.decoder = timed  # type: ignore[assignment]
    ratios: dict[str, list[float]] = {k: [] for k in CONSTRAINT_KINDS}
    per_token: dict[str, list[float]] = {k: [] for k in CONSTRAINT_KINDS}
    cold: dict[str, float] = {}
    try:
        for block in range(4 if quick else 10):
            for kind, (prompt, constraints) in CONSTRAINT_KINDS.items():
                if block == 0 and constraints.pattern:
                    model._patterns.clear()
                timed.seconds = 0.0
                started = time.perf_counter()
                out = generate(model, prompt, constraints, lambda _: None)
                wall = time.perf_counter() - started
                ratio = (wall - timed.seconds) / timed.seconds
                if block == 0 and constraints.pattern:
                    cold[kind] = ratio
                    continue
                ratios[kind].append(ratio)
                per_token[kind].append((wall - timed.seconds) / max(out.tokens_out, 1) * 1e3)
    finally:
        model.decoder = timed.decoder
    return {k: {"overhead": float(np.median(ratios[k])), "engine_ms_per_token": float(np.median(per_token[k])),
                **({"cold_overhead": cold[k]} if k in cold else {})} for k in CONSTRAINT_KINDS}


def escalation(specs: dict[str, ModelSpec], encode, cpu_second_price: float) -> dict[str, dict[str, float]]:
    """ROUTED_PROMPTS under three policies (small only, the router, SmolLM2 only): how often the router escalates,
    answer relevance (the sentence encoder's cosine between prompt and answer, a model neither tier is), tokens
    and cost (tokens at each model's price plus CPU at the generator's price)."""
    pool = ResidencyPool(specs, sum(s.bytes for s in specs.values()))
    pipeline = Pipeline(pool)
    out: dict[str, dict[str, float]] = {}

    async def run_all(model: str) -> dict[str, float]:
        relevance, cost, tokens, escalated, cpu = [], [], [], 0, []
        for prompt in ROUTED_PROMPTS:
            plan = make_plan(generator_pb2.GenerateRequest(prompt=prompt, max_tokens=48, model=model), CATEGORIES)
            state = PlanRun([None] * len(plan.stages), concurrent=False)
            started = time.process_time()
            text = "".join([p async for _, p in pipeline.run(plan, plan.topic or "music", None, bool(model), state)])
            spent = time.process_time() - started
            escalated += state.escalated
            used = [(a.tokens_in + a.tokens_out, name) for r in state.finished for a, name in zip(r.abandoned, r.models)]
            used += [(r.generation.tokens_in + r.generation.tokens_out, r.generation.model) for r in state.finished]
            cost.append(sum(n * pool.spec(m).price_per_1k_tokens / 1000 for n, m in used) + spent * cpu_second_price)
            tokens.append(sum(n for n, _ in used))
            cpu.append(spent)
            relevance.append(float(encode(prompt) @ encode(text)) if WORD.search(text) else 0.0)
        return {"relevance": float(np.mean(relevance)), "cost": float(np.mean(cost)), "tokens": float(np.mean(tokens)),
                "cpu_ms": float(np.mean(cpu)) * 1e3, "escalation_rate": escalated / len(ROUTED_PROMPTS)}

    for label, model in (("small only", "small"), ("router", ""), ("large only", "large")):
        out[label] = asyncio.run(run_all(model))
    return out


async def _planned(pipeline: Pipeline, task: str) -> int:
    plan = make_plan(generator_pb2.GenerateRequest(prompt=task, max_tokens=120, model="large"), CATEGORIES)
    state = PlanRun([None] * len(plan.stages), concurrent=False)
    async for _ in pipeline.run(plan, plan.topic, None, True, state):
        pass
    return sum(r.generation.tokens_in + r.generation.tokens_out for r in state.finished)


def planner_tokens_real(specs: dict[str, ModelSpec], tasks: list[str]) -> int:
    """The planner's tokens with every stage on SmolLM2 (one plan, each stage sees only its own inputs)."""
    pipeline = Pipeline(ResidencyPool(specs, sum(s.bytes for s in specs.values())))
    return sum(asyncio.run(_planned(pipeline, task)) for task in tasks)


REACT_TOOLS = ("Tools: headline(topic) writes a headline; body(topic, words) writes the post's text; "
               "finish() ends when the post has both.")


def react_tokens(model: LanguageModel, tasks: list[str], max_steps: int = 5, scripted: bool = False) -> tuple[int, float]:
    """The baseline: a ReAct loop in which SmolLM2 writes each next step. Each turn it reads the task, the tools and
    the transcript so far and writes `Action: tool(args)`; the action runs on SmolLM2 and its output is appended as
    the observation; it ends on finish(), or as soon as it has both a headline and a body (stopped for it, in its
    favour: left alone, SmolLM2 rarely writes finish()), or after `max_steps` actions. Every call's prompt and output
    tokens count (SmolLM2's tokenizer, chat template included). Also returns the share it finished by itself.

    `scripted`: the least any ReAct loop spends on these tasks. SmolLM2 still writes every step (and its tokens
    count), but its i-th step is taken as headline, body, finish in turn, whatever it wrote: three steps and two
    actions, the loop's floor (left free, SmolLM2-135M does not follow the action format)."""
    total, finished = 0, 0
    for task in tasks:
        topic = next((c for c in CATEGORIES if c in task), "music")
        transcript = ""
        done: set[str] = set()
        for turn in range(max_steps):
            prompt = f"Task: {task}\n{REACT_TOOLS}\nWrite the next step as: Action: tool(arguments)\n{transcript}"
            step = generate(model, prompt, Constraints(max_tokens=24, stop=("\n",)), lambda _: None)
            total += step.tokens_in + step.tokens_out
            action = step.text.strip()
            if scripted:
                action = ("Action: headline()", "Action: body()", "Action: finish()")[min(turn, 2)]
            transcript += f"{action}\n"
            if "finish" in action.lower():
                finished += 1
                break
            part = "headline" if "headline" in action.lower() else "body"
            if part == "headline":
                work = f"Write a headline about {topic}."
                constraints = Constraints(max_tokens=16, stop=(STAGE_END,))
            else:
                work = f"Write a post about {topic}."
                constraints = Constraints(max_tokens=100, stop=(STAGE_END,), max_words=50)
            observed = generate(model, work, constraints, lambda _: None)
            total += observed.tokens_in + observed.tokens_out
            transcript += f"Observation: {observed.text.strip()}\n"
            done.add(part)
            if done == {"headline", "body"}:
                break
    return total, finished / len(tasks)
