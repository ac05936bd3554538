"""A reference forward pass of a Llama-family decoder in plain numpy (float64) over a checkpoint's dequantised weights."""

from __future__ import annotations

import numpy as np

from generator.gguf_reader import LlamaCheckpoint


def _rms(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * weight


def _rotate(x: np.ndarray, positions: np.ndarray, base: float) -> np.ndarray:
    """Rotary embedding, rotate-half form: dimension i pairs with i + head_dim/2. x: [heads, tokens, head_dim]."""
    half = x.shape[-1] // 2
    angles = positions[:, None] * base ** (-np.arange(half) * 2.0 / x.shape[-1])[None, :]
    cos, sin = np.cos(angles), np.sin(angles)
    a, b = x[..., :half], x[..., half:]
    return np.concatenate([a * cos - b * sin, b * cos + a * sin], axis=-1)


def forward(checkpoint: LlamaCheckpoint, ids: list[int]) -> np.ndarray:
    """Logits [tokens, vocab] of a whole prompt, causally masked, in float64."""
    c = checkpoint.config
    d, group = c.head_dim, c.heads // c.kv_heads
    x = checkpoint.embed[ids].astype(np.float64)
    count = len(ids)
    positions = np.arange(count, dtype=np.float64)
    mask = np.triu(np.full((count, count), -np.inf), 1)
    for block in checkpoint.blocks:
        h = _rms(x, block["attn_norm"], c.rms_eps)
        q = (h @ block["q"].T).reshape(count, c.heads, d).transpose(1, 0, 2)
        k = (h @ block["k"].T).reshape(count, c.kv_heads, d).transpose(1, 0, 2)
        v = (h @ block["v"].T).reshape(count, c.kv_heads, d).transpose(1, 0, 2)
        q, k = _rotate(q, positions, c.rope_base), _rotate(k, positions, c.rope_base)
        k, v = np.repeat(k, group, axis=0), np.repeat(v, group, axis=0)
        scores = q @ k.transpose(0, 2, 1) / np.sqrt(d) + mask
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        attended = (scores / scores.sum(-1, keepdims=True)) @ v
        x = x + attended.transpose(1, 0, 2).reshape(count, c.width) @ block["o"].T
        h = _rms(x, block["ffn_norm"], c.rms_eps)
        gate = h @ block["gate"].T
        x = x + ((gate / (1 + np.exp(-gate))) * (h @ block["up"].T)) @ block["down"].T
    return _rms(x, checkpoint.norm, c.rms_eps) @ checkpoint.lm_head.T.astype(np.float64)
