"""One stage's decode loop: greedy choice among the tokens the constraints allow, streamed as it goes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from engines.decoder_session import Decoder
from errors import DeadlineExceeded, InvalidArgument
from generator.chat import render_chat
from generator.constraints import Constraints, Guide, Pattern, Vocabulary

__all__ = ["LanguageModel", "Generation", "generate", "prompt_logprob", "Abandoned", "PATTERNS_KEPT"]

PATTERNS_KEPT = 64


class Abandoned(Exception):
    """The router declined the output after its probe (low confidence): nothing was streamed."""

    def __init__(self, mean_logprob: float, tokens_in: int, tokens_out: int) -> None:
        judged = f"after {tokens_out} tokens" if tokens_out else "of the prompt"
        super().__init__(f"mean log-probability {mean_logprob:.3f} {judged}")
        self.mean_logprob, self.tokens_in, self.tokens_out = mean_logprob, tokens_in, tokens_out


_CONTENT = "\x00feedserve-turn-content\x00"  # stands for the user's text while the chat template is rendered


@dataclass
class LanguageModel:
    """A decoder, its tokenizer and price: what the residency pool loads and unloads as one."""

    name: str
    decoder: Decoder
    tokenizer: Tokenizer
    vocabulary: Vocabulary
    price_per_1k_tokens: float
    context: int
    chat_template: str = ""  # an instruction model's: prompts are rendered through it as the user's turn
    repetition_penalty: float = 1.0  # >1 lowers the logits of tokens already in the sequence (small models loop)
    _patterns: dict[str, Pattern] = field(default_factory=dict)
    _plain: Tokenizer | None = None

    @classmethod
    def load(cls, name: str, graph: Path, tokenizer_path: Path, price_per_1k_tokens: float, context: int,
             threads: int = 1, chat_template: str = "", repetition_penalty: float = 1.0) -> LanguageModel:
        from tokenizers import Tokenizer

        decoder = Decoder(graph, threads=threads)
        tokenizer = Tokenizer.from_file(str(tokenizer_path))
        return cls(name, decoder, tokenizer, Vocabulary(tokenizer), price_per_1k_tokens, context, chat_template,
                   repetition_penalty)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text).ids

    def encode_text(self, text: str) -> list[int]:
        """`text` as plain text: a control marker written in it (`<|im_start|>`, `<|endoftext|>`) is its
        characters, never the marker, so a prompt or an item's text cannot open a turn of its own."""
        if self._plain is None:  # a copy of its own: the flag is the tokenizer's state, shared by every thread
            plain = Tokenizer.from_str(self.tokenizer.to_str())
            plain.encode_special_tokens = True
            self._plain = plain
        return self._plain.encode(text).ids

    def prompt_ids(self, prompt: str) -> list[int]:
        """The tokens the model is given: an instruction model's chat turn, or the prompt as written. Only the
        template's own markers are markers; everything the request brought (the prompt, items' texts within it)
        is encoded as plain text."""
        if not self.chat_template:
            return self.encode_text(prompt)
        rendered = render_chat(self.chat_template, _CONTENT)
        if rendered.count(_CONTENT) != 1:  # a template that rewrites its content: render the prompt in place
            return self.encode(render_chat(self.chat_template, prompt.strip()))
        before, _, after = rendered.partition(_CONTENT)
        return self.encode(before) + self.encode_text(prompt.strip()) + self.encode(after)

    def pattern(self, regex: str) -> Pattern:
        """The compiled pattern, kept per model (its per-state token tables are the costly part); the
        `PATTERNS_KEPT` most recently used only, so distinct patterns cannot grow memory without bound."""
        found = self._patterns.pop(regex, None) or Pattern(regex, self.vocabulary)
        self._patterns[regex] = found  # dicts keep insertion order: the last is the most recent
        while len(self._patterns) > PATTERNS_KEPT:
            del self._patterns[next(iter(self._patterns))]
        return found


@dataclass
class Generation:
    """What one stage produced and what it cost in tokens."""

    text: str
    tokens_in: int
    tokens_out: int
    logprob_sum: float
    first_chunk_at: float | None  # time.monotonic() of the first streamed piece
    model: str

    @property
    def mean_logprob(self) -> float:
        return self.logprob_sum / self.tokens_out if self.tokens_out else 0.0


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    # float32 over the vocabulary, the normaliser summed in float64: a 49k vocabulary costs a tenth of a millisecond
    shifted = logits - logits.max()
    return shifted - np.float32(np.log(np.exp(shifted).sum(dtype=np.float64)))


def prompt_logprob(logits: np.ndarray, ids: list[int]) -> float:
    """Mean log-probability the model gave each prompt token after the first (logits at every position)."""
    if len(ids) < 2:
        return 0.0
    scores = logits[:-1].astype(np.float64)
    scores -= scores.max(axis=-1, keepdims=True)
    logprobs = scores - np.log(np.exp(scores).sum(axis=-1, keepdims=True))
    return float(logprobs[np.arange(len(ids) - 1), ids[1:]].mean())


def generate(model: LanguageModel, prompt: str, constraints: Constraints, emit: Callable[[str], None],
             deadline: float | None = None, cancelled: threading.Event | None = None, probe_tokens: int = 0,
             confident: Callable[[float], bool] | None = None,
             knows_prompt: Callable[[float], bool] | None = None) -> Generation:
    """Decode greedily under `constraints`, calling `emit` with each piece of text that can no longer change.

    With `knows_prompt`, the prompt's own mean log-probability under the model is judged first: a request unlike
    anything the model learned raises Abandoned before a token is decoded (a small model can be confident and wrong
    about such a request; its surprise at the request is the signal that holds). With `probe_tokens` and
    `confident`, the first tokens are held back; if `confident(mean_logprob)` is false the stage raises Abandoned
    before anything was emitted, so a larger tier can answer instead."""
    ids = model.prompt_ids(prompt)
    if not ids:
        raise InvalidArgument("prompt", "prompt encodes to no tokens")
    if len(ids) + constraints.max_tokens > model.context:
        raise InvalidArgument("max_tokens", f"prompt of {len(ids)} tokens plus max_tokens {constraints.max_tokens} "
                              f"exceeds model {model.name}'s context of {model.context}")
    pattern = model.pattern(constraints.pattern) if constraints.pattern else None
    guide = Guide(constraints, model.vocabulary, pattern)
    logits, state = model.decoder.start(ids, every_position=knows_prompt is not None)
    if knows_prompt is not None:
        fit = prompt_logprob(logits, ids)
        if not knows_prompt(fit):
            raise Abandoned(fit, len(ids), 0)
        logits = logits[-1]
    emitted, logprob_sum, first_at, out = 0, 0.0, None, 0
    history = dict.fromkeys(ids)  # the distinct tokens of the prompt and of what is generated: the penalty's
    holding = probe_tokens > 0 and confident is not None
    for step in range(constraints.max_tokens):
        if cancelled is not None and cancelled.is_set():
            raise DeadlineExceeded("generation cancelled")
        if deadline is not None and time.monotonic() > deadline:
            raise DeadlineExceeded(f"deadline passed after {out} tokens")
        if model.repetition_penalty != 1.0:  # as Hugging Face's: positive logits divided, negative multiplied
            seen = np.fromiter(history, np.int64, len(history))
            picked = logits[seen]
            logits = logits.copy()
            logits[seen] = np.where(picked > 0, picked / model.repetition_penalty, picked * model.repetition_penalty)
        logprobs = _log_softmax(logits)
        best = int(np.argmax(logprobs))
        if best in model.vocabulary.end_ids and guide.complete():
            break
        if pattern is not None and guide.complete() and "\n" in (model.vocabulary.texts[best] or "\n"):
            break  # the pattern is satisfied and the model wants to end the line
        chosen = None
        for token in guide.candidates(logprobs, constraints.max_tokens - step - 1):
            if guide.accept(token, constraints.max_tokens - step - 1) is not None:
                chosen = token
                break
            if token == best and guide.at_word_limit() and guide.complete():
                break  # the model wants another word past the limit: the text ends here, not in forced punctuation
        if chosen is None:
            if guide.complete():
                break
            raise InvalidArgument("constraints", "no token satisfies every constraint at once; loosen them")
        logprob_sum += float(logprobs[chosen])
        history[chosen] = None
        out += 1
        if holding and out >= probe_tokens:
            holding = False
            if confident is not None and not confident(logprob_sum / out):
                raise Abandoned(logprob_sum / out, len(ids), out)
        if not holding:
            safe = len(guide.text) if guide.finished else len(guide.text) - guide.held_back()
            if safe > emitted:
                emit(guide.text[emitted:safe])
                emitted = safe
                first_at = first_at or time.monotonic()
        if guide.finished:
            break
        logits = model.decoder.step(chosen, state)
    if holding and confident is not None and out and not confident(logprob_sum / out):
        raise Abandoned(logprob_sum / out, len(ids), out)
    if len(guide.text) > emitted:
        emit(guide.text[emitted:])
        first_at = first_at or time.monotonic()
    return Generation(guide.text, len(ids), out, logprob_sum, first_at, model.name)
