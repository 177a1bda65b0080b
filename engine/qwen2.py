"""Qwen2 decoder stack: the lower text LM (no final norm) and the upper TTS LM.

Mirrors ``transformers.models.qwen2.modeling_qwen2`` (4.51.3): pre-norm blocks, GQA
attention with q/k/v biases, rotate-half RoPE, SwiGLU MLP. Embeddings are not scaled.
"""

from __future__ import annotations

import engine.backend  # noqa: F401  (chooses MLX's BLAS before mlx.core is imported)

import mlx.core as mx
import mlx.nn as nn

from engine.cache import CFGKVCache, KVCache
from engine.config import Qwen2Config
from engine.layers import Fused, RMSNorm, SwiGLU, fuse_linears, fused_or_none


class Attention(nn.Module):
    def __init__(self, cfg: Qwen2Config) -> None:
        super().__init__()
        dim, heads, kv, hd = (
            cfg.hidden_size,
            cfg.num_attention_heads,
            cfg.kv_heads,
            cfg.dim_per_head,
        )
        self.n_heads, self.n_kv, self.head_dim = heads, kv, hd
        self.scale = hd**-0.5
        self.rope_theta = cfg.rope_theta
        self.q_proj = nn.Linear(dim, heads * hd, bias=True)
        self.k_proj = nn.Linear(dim, kv * hd, bias=True)
        self.v_proj = nn.Linear(dim, kv * hd, bias=True)
        self.o_proj = nn.Linear(heads * hd, dim, bias=False)
        self.fused: Fused | None = None

    def fuse(self) -> None:
        """q, k and v as one matmul (see :func:`engine.layers.fuse_linears`); idempotent."""
        self.fused = fuse_linears([self.q_proj, self.k_proj, self.v_proj], self.fused)

    def _rope(self, x: mx.array, offset: int | mx.array) -> mx.array:
        return mx.fast.rope(
            x, self.head_dim, traditional=False, base=self.rope_theta, scale=1.0, offset=offset
        )

    def __call__(self, x: mx.array, cache: KVCache | CFGKVCache) -> mx.array:
        """``x`` is (B, L, hidden), or (B, hidden) for one position per row: a speech
        frame stays 2-D, which spares a flatten and an unflatten around every matmul."""
        one = x.ndim == 2
        B, L = x.shape[0], 1 if one else x.shape[1]
        H, KV, D = self.n_heads, self.n_kv, self.head_dim

        def heads(y: mx.array, n: int) -> mx.array:
            # (B, [L,] n * D) -> (B, n, L, D); with one position that is a plain reshape.
            return y.reshape(B, n, 1, D) if one else y.reshape(B, L, n, D).transpose(0, 2, 1, 3)

        # Positions continue after everything already in the cache (the voice prompt first).
        offset = cache.rope_offset()
        if (fused := fused_or_none(self.fused)) is not None:
            # RoPE once over the q and k heads (same positions); the three groups are views.
            qkv = heads(fused(x), H + 2 * KV)
            qk = self._rope(qkv[:, : H + KV], offset)
            q, k, v = qk[:, :H], qk[:, H:], qkv[:, H + KV :]
        else:
            q, k = heads(self.q_proj(x), H), heads(self.k_proj(x), KV)
            v = heads(self.v_proj(x), KV)
            q, k = self._rope(q, offset), self._rope(k, offset)
        k, v = cache.update_and_fetch(k, v)
        mask = cache.attention_mask(L)
        if L == 1 and isinstance(mask, mx.array):
            o = _one_query_attention(q, k, v, self.scale, mask)
        else:
            o = mx.fast.scaled_dot_product_attention(q, k, v, scale=self.scale, mask=mask)
            o = o.transpose(0, 2, 1, 3)
        return self.o_proj(o.reshape(B, H * D) if one else o.reshape(B, L, H * D))


def _one_query_attention(
    q: mx.array, k: mx.array, v: mx.array, scale: float, mask: mx.array
) -> mx.array:
    """``softmax(q k^T * scale, masked) v`` for one query per row, written out.

    q (B, H, 1, D), k/v (B, KV, S, D), boolean ``mask`` (B, 1, 1, S). Query head h reads
    KV head h // (H / KV), so the H heads are viewed as (KV, H / KV) rows against their
    own KV head. Deviation from ``mx.fast.scaled_dot_product_attention``: same math; its
    masked case is this same decomposition (no fused kernel takes an array mask), with
    more reshapes and broadcasts, each a primitive the host has to launch.
    """
    B, H, _, D = q.shape
    KV = k.shape[1]
    scores = q.reshape(B, KV, H // KV, D) @ k.swapaxes(-1, -2)  # (B, KV, H / KV, S)
    scores = mx.where(mask, scores * scale, -mx.inf)
    return mx.softmax(scores, axis=-1, precise=True) @ v  # (B, KV, H / KV, D)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: Qwen2Config) -> None:
        super().__init__()
        self.self_attn = Attention(cfg)
        self.mlp = SwiGLU(cfg.hidden_size, cfg.intermediate_size)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def __call__(self, x: mx.array, cache: KVCache | CFGKVCache) -> mx.array:
        h = x + self.self_attn(self.input_layernorm(x), cache)
        return h + self.mlp(self.post_attention_layernorm(h))


class Qwen2Stack(nn.Module):
    """``num_layers`` Qwen2 blocks over caller-supplied embeddings.

    Args:
        cfg: the shared decoder config.
        num_layers: 4 for the text LM, 20 for the TTS LM in the real model.
        final_norm: the TTS LM ends with an RMSNorm, the text LM does not.
        embed: whether the stack owns ``embed_tokens`` (only the text LM's is used).
    """

    def __init__(self, cfg: Qwen2Config, num_layers: int, final_norm: bool, embed: bool) -> None:
        super().__init__()
        if embed:
            self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = [DecoderLayer(cfg) for _ in range(num_layers)]
        if final_norm:
            self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def fuse(self, mlp: bool = True) -> None:
        """Stack each layer's q/k/v projections, and with ``mlp`` its gate/up projections
        (one matmul each)."""
        for layer in self.layers:
            layer.self_attn.fuse()
            if mlp:
                layer.mlp.fuse()

    def __call__(self, h: mx.array, caches: list[KVCache] | list[CFGKVCache]) -> mx.array:
        for layer, cache in zip(self.layers, caches, strict=True):
            h = layer(h, cache)
        norm = self.get("norm")
        return norm(h) if norm is not None else h
