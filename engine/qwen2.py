"""Qwen2 decoder stack: the lower text LM (no final norm) and the upper TTS LM.

Mirrors ``transformers.models.qwen2.modeling_qwen2`` (4.51.3): pre-norm blocks, GQA
attention with q/k/v biases, rotate-half RoPE, SwiGLU MLP. Embeddings are not scaled.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from engine.cache import CFGKVCache, KVCache
from engine.config import Qwen2Config
from engine.layers import RMSNorm, SwiGLU


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

    def __call__(self, x: mx.array, cache: KVCache | CFGKVCache) -> mx.array:
        B, L, _ = x.shape
        q = self.q_proj(x).reshape(B, L, self.n_heads, -1).transpose(0, 2, 1, 3)
        k = self.k_proj(x).reshape(B, L, self.n_kv, -1).transpose(0, 2, 1, 3)
        v = self.v_proj(x).reshape(B, L, self.n_kv, -1).transpose(0, 2, 1, 3)
        # Positions continue after everything already in the cache (the voice prompt first).
        offset = cache.rope_offset()
        q = mx.fast.rope(
            q, self.head_dim, traditional=False, base=self.rope_theta, scale=1.0, offset=offset
        )
        k = mx.fast.rope(
            k, self.head_dim, traditional=False, base=self.rope_theta, scale=1.0, offset=offset
        )
        k, v = cache.update_and_fetch(k, v)
        mask = cache.attention_mask(L)
        o = mx.fast.scaled_dot_product_attention(q, k, v, scale=self.scale, mask=mask)
        return self.o_proj(o.transpose(0, 2, 1, 3).reshape(B, L, -1))


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

    def __call__(self, h: mx.array, caches: list[KVCache] | list[CFGKVCache]) -> mx.array:
        for layer, cache in zip(self.layers, caches, strict=True):
            h = layer(h, cache)
        norm = self.get("norm")
        return norm(h) if norm is not None else h
