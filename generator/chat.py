"""A GGUF's tokenizer rebuilt for `tokenizers`, and its chat template rendered the way the model was tuned on."""

from __future__ import annotations

from functools import lru_cache

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

from errors import InvalidArgument
from generator.gguf_reader import TokenizerData

__all__ = ["build_tokenizer", "render_chat"]

# llama.cpp's pre-tokenizer names: which splits come before byte-level BPE's own regex
_PRE_SPLITS = {
    "default": [], "gpt2": [],
    "smollm": [pre_tokenizers.Digits(individual_digits=True)],  # every digit on its own, as SmolLM's tokenizer.json
}


def build_tokenizer(data: TokenizerData) -> Tokenizer:
    """A byte-level BPE tokenizer with the file's vocabulary and merges; its control tokens (`<|im_start|>`, ...) are
    registered as special, so a chat template's markers encode to one token each instead of splitting into pieces."""
    if data.pre not in _PRE_SPLITS:
        raise InvalidArgument("path", f"tokenizer pre-tokenizer {data.pre!r} is not supported; known: {sorted(_PRE_SPLITS)}")
    vocab = {token: i for i, token in enumerate(data.tokens)}
    merges = [tuple(m.split(" ", 1)) for m in data.merges]
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))  # type: ignore[arg-type]
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [*_PRE_SPLITS[data.pre], pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([AddedToken(data.tokens[i], special=True, normalized=False) for i in data.special])
    return tokenizer


@lru_cache(maxsize=8)
def _template(source: str):
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    # a template from a model file is data, not code: sandboxed, as Hugging Face renders them
    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return environment.from_string(source)


def render_chat(template: str, user: str, system: str | None = None) -> str:
    """The prompt text for one user turn and the assistant's reply to come (the template's generation prompt)."""
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    return _template(template).render(messages=messages, add_generation_prompt=True)
