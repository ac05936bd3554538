"""The generator's caches: semantic results (a sentence encoder plus a contrast guard) and the embeddings
themselves. Exact repeats are answered a hop earlier, by the gateway (gateway/cache.py)."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from feedserve.v1 import generator_pb2
from generator.antonyms import antonyms_of, lemmas, preload
from mesh.lru import LruCache

__all__ = ["Answer", "EmbeddingCache", "SemanticCache", "request_scope", "contrast_signature",
           "contrasts"]


@dataclass(frozen=True)
class Answer:
    """A finished generation as the cache replays it: the streamed (stage, text) pieces, coalesced per stage,
    and what producing it took."""

    pieces: tuple[tuple[int, str], ...]
    models: tuple[str, ...]
    tokens_in: int
    tokens_out: int


def request_scope(request: generator_pb2.GenerateRequest) -> str:
    """Everything in the request except the prompt's wording: two requests share cached answers only if all
    of it is equal (tenant, user, model, token limit, stops, word lists, pattern)."""
    parts = [request.context.tenant, str(request.user_id), request.model, str(request.max_tokens),
             "\x1f".join(request.stop), "\x1f".join(sorted(w.lower() for w in request.banned_words)),
             "\x1f".join(sorted(w.lower() for w in request.allowed_words)), request.pattern,
             ",".join(str(i) for i in request.item_ids)]
    return hashlib.blake2b("\x1e".join(parts).encode(), digest_size=16).hexdigest()


class EmbeddingCache:
    """Text to its sentence embedding, LRU; the encoder runs once per distinct text."""

    def __init__(self, encode: Callable[[str], np.ndarray], capacity: int = 50_000) -> None:
        self._encode, self.capacity = encode, capacity
        self._vectors: LruCache[str, np.ndarray] = LruCache(capacity)
        self.hits = self.misses = 0

    def get(self, text: str) -> np.ndarray:
        vector = self._vectors.get(text)
        if vector is not None:
            self.hits += 1
            return vector
        self.misses += 1
        vector = self._encode(text)
        self._vectors.put(text, vector)
        return vector


_NEGATIONS = {"not", "no", "never", "without", "none", "nobody", "nothing", "neither", "nor", "cannot", "dont",
              "doesnt", "isnt", "arent", "wasnt", "werent", "wont", "cant", "shouldnt", "didnt", "couldnt", "wouldnt",
              "hasnt", "havent", "hadnt", "mustnt", "neednt", "hardly"}
_NUMBER_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())} | {"thirty": 30, "forty": 40, "fifty": 50, "hundred": 100,
                                                     "thousand": 1000, "million": 10**6, "dozen": 12, "half": 0.5}
# Asymmetric relations: "from A to B" and "from B to A" read alike to an encoder but ask different things.
_RELATIONS = {"from", "to", "into", "than", "before", "after", "over", "under", "above", "below", "vs", "versus",
              "against", "by", "for", "onto", "toward", "towards"}
_ANTONYMS = dict(p.split("/") for p in (
    "best/worst", "cheap/expensive", "cheapest/priciest", "hot/cold", "increase/decrease", "more/less",
    "buy/sell", "up/down", "early/late", "earliest/latest", "true/false", "open/close", "win/lose", "start/stop",
    "minimum/maximum", "min/max", "high/low", "highest/lowest", "love/hate", "good/bad", "fast/slow",
    "faster/slower", "large/small", "big/small", "old/new", "oldest/newest", "first/last", "add/remove",
    "enable/disable", "allow/deny", "safe/dangerous", "healthy/unhealthy", "legal/illegal", "import/export",
    "north/south", "east/west", "left/right", "above/below", "inside/outside", "light/dark", "easy/hard",
    "beginner/advanced", "positive/negative", "rise/fall", "gain/loss", "gain/lose", "raise/lower", "strong/weak", "pros/cons",
    "advantages/disadvantages", "input/output", "encrypt/decrypt", "upload/download", "push/pull",
    "accept/reject", "long/short", "men/women", "male/female", "before/after", "morning/evening",
    "summer/winter", "day/night", "increase/reduce", "lighter/heavier", "higher/lower", "better/worse",
    "most/least", "younger/older", "boil/freeze", "join/leave", "hire/fire", "lend/borrow", "teach/learn"))
_ANTONYMS |= {b: a for a, b in list(_ANTONYMS.items())}
_TOKEN = re.compile(r"\d+(?:[.,]\d+)?|[a-z]+(?:'[a-z]+)?")


def contrast_signature(text: str) -> tuple[tuple, bool, dict[str, set[str]], set[str]]:
    """What two similar sentences must share to mean the same: their numbers, their polarity (an odd or even
    count of negations), what follows each relation word, and their words that have an antonym."""
    tokens = [t.replace("'", "") for t in _TOKEN.findall(text.lower())]
    numbers = []
    for t in tokens:
        if t[0].isdigit():
            numbers.append(float(t.replace(",", "")))
        elif t in _NUMBER_WORDS:
            numbers.append(float(_NUMBER_WORDS[t]))
    negative = sum(t in _NEGATIONS for t in tokens) % 2 == 1
    relations: dict[str, set[str]] = {}
    for i, t in enumerate(tokens[:-1]):
        if t in _RELATIONS:
            following = next((u for u in tokens[i + 1:] if u not in {"the", "a", "an", "my", "your", "our"}), "")
            relations.setdefault(t, set()).add(following)
    polar = {t for t in tokens if t in _ANTONYMS}
    return tuple(sorted(numbers)), negative, relations, polar


def contrasts(a: str, b: str) -> bool:
    """Whether two texts differ in a way an encoder blurs: a number, a negation, a reversed relation, an antonym
    (the list above, then WordNet's)."""
    numbers_a, negative_a, relations_a, polar_a = contrast_signature(a)
    numbers_b, negative_b, relations_b, polar_b = contrast_signature(b)
    if numbers_a != numbers_b or negative_a != negative_b:
        return True
    for word in relations_a.keys() & relations_b.keys():
        if not relations_a[word] & relations_b[word]:
            return True
    if any(_ANTONYMS[w] in polar_b and w not in polar_b for w in polar_a) or \
            any(_ANTONYMS[w] in polar_a and w not in polar_a for w in polar_b):
        return True
    return _opposed(a, b)


def _opposed(a: str, b: str) -> bool:
    """Whether a word only one text has is, by WordNet, the opposite of a word only the other has (in any
    inflection: "warmer" against "cooler")."""
    words_a, words_b = set(_TOKEN.findall(a.lower())), set(_TOKEN.findall(b.lower()))
    only_a, only_b = words_a - words_b, words_b - words_a
    if not only_a or not only_b:
        return False
    forms_a = set().union(*(lemmas(w) for w in only_a)) - set().union(*(lemmas(w) for w in words_b & words_a))
    forms_b = set().union(*(lemmas(w) for w in only_b))
    return any(antonyms_of(w) & forms_b for w in only_a) or any(antonyms_of(w) & forms_a for w in only_b)


@dataclass
class _Scope:
    vectors: np.ndarray  # [n, dim], unit rows
    texts: list[str]
    answers: list[Answer]
    expires: list[float]


class SemanticCache:
    """Answers by meaning, within one scope (tenant + everything in the request but the prompt's wording):
    a hit needs cosine similarity ≥ `threshold` to a cached prompt and no contrast between the two. At most
    `max_scopes` scopes are kept (the least recently used go), and a user's scopes go when the user is deleted."""

    def __init__(self, embeddings: EmbeddingCache, threshold: float = 0.88, ttl_s: float = 300.0,
                 per_scope: int = 2_000, max_scopes: int = 10_000) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold is expected in (0, 1], got {threshold}")
        self.embeddings, self.threshold, self.ttl_s, self.per_scope = embeddings, threshold, ttl_s, per_scope
        preload()  # the contrast guard's WordNet, read before the first lookup rather than during it
        self._scopes: LruCache[str, _Scope] = LruCache(max_scopes)  # grouped by user: a delete drops them at once
        self.guarded = 0  # near neighbours the contrast guard refused

    def __len__(self) -> int:
        return len(self._scopes)

    def forget_user(self, user: int) -> int:
        """Drop every scope written for `user` (a deleted user's answers must not outlive the delete)."""
        return self._scopes.drop_group(user)

    def get(self, scope: str, prompt: str) -> tuple[Answer, float] | None:
        found = self._scopes.get(scope)
        if found is None or not found.texts:
            return None
        vector = self.embeddings.get(prompt)
        similarity = found.vectors @ vector
        now = time.monotonic()
        for index in np.argsort(-similarity)[:8]:
            if similarity[index] < self.threshold:
                break
            if found.expires[index] < now:
                continue
            if contrasts(prompt, found.texts[index]):
                self.guarded += 1
                continue
            return found.answers[index], float(similarity[index])
        return None

    def put(self, scope: str, prompt: str, answer: Answer, user: int = 0) -> None:
        vector = self.embeddings.get(prompt)
        found = self._scopes.get(scope)
        if found is None:
            found = _Scope(np.zeros((0, len(vector)), np.float32), [], [], [])
            self._scopes.put(scope, found, group=user or None)
        now = time.monotonic()
        keep = [i for i, e in enumerate(found.expires) if e >= now][-(self.per_scope - 1):] if found.texts else []
        found.vectors = np.vstack([found.vectors[keep], vector[None]])
        found.texts = [found.texts[i] for i in keep] + [prompt]
        found.answers = [found.answers[i] for i in keep] + [answer]
        found.expires = [found.expires[i] for i in keep] + [now + self.ttl_s]
