"""The text the generation tiers learn from: headlines and posts about the synthetic world's categories."""

from __future__ import annotations

import random

__all__ = ["corpus", "headline_prompt", "post_prompt", "ideas_prompt", "STAGE_END", "TOPICS"]

# What the packaged tiers were trained to write about (the simulator's categories when they were trained); a user's
# top interest outside these still names the topic, but the toy tiers write best about these.
TOPICS = (
    "tech", "science", "sports", "music", "film", "travel", "food", "fashion",
    "finance", "health", "gaming", "art", "books", "politics", "nature", "cars",
    "design", "history", "comedy", "pets", "space", "fitness", "parenting", "diy",
    "photography", "architecture", "education", "crypto", "climate", "startups", "theatre", "poetry",
)

STAGE_END = "\n\n"  # every document in the corpus ends so; stages stop on it

_ADJECTIVES = ("quiet", "bold", "hidden", "modern", "tiny", "endless", "golden", "strange", "simple", "wild",
               "honest", "rapid", "forgotten", "bright", "curious", "ancient", "clever", "gentle", "vivid", "small")
_NOUNS = ("guide", "story", "secrets", "lessons", "notes", "review", "ideas", "map", "diary", "questions",
          "mistakes", "habits", "tricks", "history", "future", "debate", "numbers", "moments", "rules", "myths")
_SENTENCES = (
    "{Cat} is full of {adj} {noun}.",
    "I spent a week on {cat} and found {n} {adj} {noun}.",
    "The best part of {cat} is the {adj} {noun}.",
    "If you love {cat}, start with the {adj} {noun}.",
    "Nobody talks about the {adj} {noun} of {cat}.",
    "Here is why {cat} matters more than ever.",
    "My {adj} {noun} for {cat} fit on one page.",
    "Share this with a friend who likes {cat}.",
    "Every fan of {cat} should know these {noun}.",
    "The {adj} side of {cat} surprised me.",
    "Try one of these {noun} this weekend.",
    "It takes {n} minutes to learn the {adj} {noun}.",
)
_HEADLINES = ("The {adj} {noun} of {cat}", "{N} {adj} {noun} about {cat}", "Why {cat} needs {adj} {noun}",
              "A {adj} guide to {cat}", "What {cat} taught me about {noun}")


def headline_prompt(topic: str) -> str:
    return f"Write a headline about {topic}.\n"


def post_prompt(topic: str) -> str:
    return f"Write a post about {topic}.\n"


def ideas_prompt(topic: str) -> str:
    return f"List ideas about {topic}.\n"


def _fill(template: str, rng: random.Random, cat: str) -> str:
    n = rng.randint(2, 9)
    return template.format(cat=cat, Cat=cat.capitalize(), adj=rng.choice(_ADJECTIVES), noun=rng.choice(_NOUNS),
                           n=n, N=str(n))


def corpus(documents: int, seed: int = 0) -> str:
    """`documents` prompt-and-answer documents, each ending with STAGE_END; the same seed gives the same text."""
    rng = random.Random(seed)
    parts = []
    for _ in range(documents):
        cat = rng.choice(TOPICS)
        kind = rng.random()
        if kind < 0.35:
            parts.append(headline_prompt(cat) + _fill(rng.choice(_HEADLINES), rng, cat))
        elif kind < 0.85:
            body = " ".join(_fill(rng.choice(_SENTENCES), rng, cat) for _ in range(rng.randint(2, 6)))
            parts.append(post_prompt(cat) + body)
        else:
            ideas = ", ".join(f"{rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)}" for _ in range(rng.randint(3, 5)))
            parts.append(ideas_prompt(cat) + ideas + ".")
    return STAGE_END.join(parts) + STAGE_END
