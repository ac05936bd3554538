"""The planner: a request becomes a plan of stages, made once (ReWOO style), never re-planned."""

from __future__ import annotations

import re
from dataclasses import dataclass

from feedserve.v1 import generator_pb2
from generator.constraints import Constraints
from generator.corpus import STAGE_END, headline_prompt, ideas_prompt, post_prompt

__all__ = ["Stage", "Plan", "make_plan", "teaser_prompt", "AUTO", "TOPIC", "MAX_ITEMS", "TEASER_WORDS"]

MAX_ITEMS = 16  # teasers one request may ask for
TEASER_WORDS = 30  # a teaser's word limit when the prompt names none
_ABOUT_CHARS = 400  # of an item's text, given to the model as what the item is about

AUTO = "auto"  # the router picks: small first, escalating when unsure
TOPIC = "{topic}"  # filled from the plan's evidence before a stage runs

_MAX_WORDS = re.compile(r"\b(?:at most|no more than|up to|under|max(?:imum)?)\s+(\d{1,4})\s+words?\b", re.I)
_USER_TOPIC = re.compile(r"\b(?:their|his|her|my|the user's)\s+(?:top\s+)?(?:interest|interests|favourite|favorite)\b", re.I)
_KINDS = (("post", re.compile(r"\b(post|article|blog|write-up)\b", re.I)),
          ("headline", re.compile(r"\b(headline|title)\b", re.I)),
          ("ideas", re.compile(r"\b(ideas|list|suggestions)\b", re.I)))


@dataclass(frozen=True)
class Stage:
    """One step: its prompt (may name {topic}), tier ("small", "large", AUTO or a model name), constraints."""

    index: int
    name: str
    prompt: str
    tier: str
    constraints: Constraints


@dataclass(frozen=True)
class Plan:
    """The stages, the evidence they need first, and how their outputs join. Stages only depend on the
    evidence, never on each other, so all of them may run at once."""

    kind: str
    stages: tuple[Stage, ...]
    needs_user_topic: bool
    topic: str = ""
    separator: str = "\n"


def _topic_in(prompt: str, topics: tuple[str, ...]) -> str:
    words = {w.lower() for w in re.findall(r"\w+", prompt)}
    return next((t for t in topics if t.lower() in words), "")


def teaser_prompt(title: str, body: str, categories: list[str], for_user: bool, words: int) -> str:
    """The instruction for one item's teaser: the item's own title and text, and (for a user) TOPIC, filled with
    the user's interests from the paramserver before the stage runs."""
    about = " ".join(body.split())[:_ABOUT_CHARS]
    kind = f" ({', '.join(categories[:2])})" if categories else ""
    reader = f"a reader who likes {TOPIC}" if for_user else "a reader"
    return (f'Write one sentence of at most {words} words that makes {reader} want to read "{title}"{kind}. '
            f"What it is about: {about}\n")


def make_plan(request: generator_pb2.GenerateRequest, topics: tuple[str, ...],
              items: dict[int, tuple[str, str, list[str]]] | None = None) -> Plan:
    """Read the request once and lay out every stage. Item ids make one teaser stage per item, on the large
    tier (`items`: each id's title, text and categories from the catalog). A pattern makes the request one stage
    (a pattern shapes one text); otherwise the kind of text asked for decides the stages and their tiers."""
    prompt = request.prompt.strip()
    words = _MAX_WORDS.search(prompt)
    max_words = int(words[1]) if words else 0
    kind = next((k for k, rx in _KINDS if rx.search(prompt)), "answer")
    needs_user = bool(request.user_id) and bool(_USER_TOPIC.search(prompt))
    topic = "" if needs_user else _topic_in(prompt, topics)
    if kind != "answer" and not (needs_user or topic):
        kind = "answer"  # a post about something the tiers do not know: answer the prompt as written
    tier = request.model or None
    stops = (STAGE_END, *request.stop)
    banned = frozenset(request.banned_words)
    allowed = frozenset(request.allowed_words) if request.allowed_words else None
    budget = request.max_tokens

    def limits(max_tokens: int, words: int, pattern: str = "") -> Constraints:
        return Constraints(max_tokens=max_tokens, stop=stops, pattern=pattern, max_words=words, banned_words=banned,
                           allowed_words=allowed)

    if request.item_ids:
        found = items or {}
        limit = max_words or TEASER_WORDS
        for_user = bool(request.user_id)
        teasers = tuple(
            Stage(i, f"teaser {item}", teaser_prompt(*found[item], for_user, limit), tier or "large",
                  Constraints(max_tokens=budget, stop=(*stops, "\n"), max_words=limit, banned_words=banned,
                              allowed_words=allowed, pattern=request.pattern))
            for i, item in enumerate(request.item_ids))
        return Plan("teasers", teasers, for_user, topic)
    if request.pattern or kind == "answer":
        stage = Stage(0, "answer", prompt + "\n", tier or AUTO, limits(budget, max_words, request.pattern))
        return Plan("answer", (stage,), False, topic)
    if kind == "post":
        head_tokens = max(1, min(16, budget // 4))
        head_words = min(10, max_words // 4) if max_words else 0
        if max_words and head_words == 0:
            head_words = 1
        body_words = max(max_words - head_words, 1) if max_words else 0
        stages: tuple[Stage, ...] = (
            Stage(0, "headline", headline_prompt(TOPIC), tier or "small", limits(head_tokens, head_words)),
            Stage(1, "body", post_prompt(TOPIC), tier or "large", limits(max(1, budget - head_tokens), body_words)),
        )
    elif kind == "headline":
        stages = (Stage(0, "headline", headline_prompt(TOPIC), tier or "small", limits(budget, max_words)),)
    else:
        stages = (Stage(0, "ideas", ideas_prompt(TOPIC), tier or AUTO, limits(budget, max_words)),)
    return Plan(kind, stages, needs_user, topic)
