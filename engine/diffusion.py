"""Diffusion head: predicts the v-target of a noisy latent given a condition and a timestep.

Mirrors ``VibeVoiceDiffusionHead`` in ``vibevoice/modular/modular_vibevoice_diffusion_head.py``.
No layer of the head has a bias.
"""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn

from engine.config import DiffusionHeadConfig
from engine.layers import RMSNorm, SwiGLU

# Sinusoid width of the timestep embedding (upstream frequency_embedding_size).
FREQUENCY_EMBEDDING_SIZE = 256


def timestep_embedding(t: mx.array, dim: int = FREQUENCY_EMBEDDING_SIZE) -> mx.array:
    """Sinusoidal embedding of ``t`` (B,): ``[cos(t * f), sin(t * f)]``,
    ``f_i = exp(-ln(10000) * i / (dim / 2))``, computed in float32."""
    half = dim // 2
    freqs = mx.exp(-math.log(10000.0) * mx.arange(half, dtype=mx.float32) / half)
    args = t.astype(mx.float32)[:, None] * freqs[None]
    return mx.concatenate([mx.cos(args), mx.sin(args)], axis=-1)


class TimestepEmbedder(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.mlp = [
            nn.Linear(FREQUENCY_EMBEDDING_SIZE, hidden, bias=False),
            nn.SiLU(),
            nn.Linear(hidden, hidden, bias=False),
        ]

    def __call__(self, t: mx.array) -> mx.array:
        h = timestep_embedding(t)
        for layer in self.mlp:
            h = layer(h)
        return h


class HeadLayer(nn.Module):
    """adaLN-modulated SwiGLU: ``x + gate * ffn(norm(x) * (1 + scale) + shift)``."""

    def __init__(self, hidden: int, ffn_dim: int, eps: float) -> None:
        super().__init__()
        self.ffn = SwiGLU(hidden, ffn_dim)
        self.norm = RMSNorm(hidden, eps)
        self.adaLN_modulation = [nn.SiLU(), nn.Linear(hidden, 3 * hidden, bias=False)]

    def modulation(self, c: mx.array) -> mx.array:
        """(shift, scale, gate) concatenated, from the combined condition ``c``."""
        return self.adaLN_modulation[1](nn.silu(c))

    def __call__(self, x: mx.array, mod: mx.array) -> mx.array:
        shift, scale, gate = mx.split(mod, 3, axis=-1)
        return x + gate * self.ffn(self.norm(x) * (1 + scale) + shift)


class FinalLayer(nn.Module):
    def __init__(self, hidden: int, out: int, eps: float) -> None:
        super().__init__()
        self.norm_final = RMSNorm(hidden, eps, affine=False)
        self.linear = nn.Linear(hidden, out, bias=False)
        self.adaLN_modulation = [nn.SiLU(), nn.Linear(hidden, 2 * hidden, bias=False)]

    def modulation(self, c: mx.array) -> mx.array:
        return self.adaLN_modulation[1](nn.silu(c))

    def __call__(self, x: mx.array, mod: mx.array) -> mx.array:
        shift, scale = mx.split(mod, 2, axis=-1)
        return self.linear(self.norm_final(x) * (1 + scale) + shift)


class DiffusionHead(nn.Module):
    """``(noisy (B, latent), t (B,), condition (B, hidden)) -> v (B, latent)``."""

    def __init__(self, cfg: DiffusionHeadConfig) -> None:
        super().__init__()
        hidden = cfg.hidden_size
        self.noisy_images_proj = nn.Linear(cfg.latent_size, hidden, bias=False)
        self.cond_proj = nn.Linear(hidden, hidden, bias=False)
        self.t_embedder = TimestepEmbedder(hidden)
        self.layers = [
            HeadLayer(hidden, cfg.ffn_dim, cfg.rms_norm_eps) for _ in range(cfg.head_layers)
        ]
        self.final_layer = FinalLayer(hidden, cfg.latent_size, cfg.rms_norm_eps)

    def modulations(self, condition: mx.array, t_emb: mx.array) -> list[mx.array]:
        """adaLN modulations of every layer for every (timestep, condition) pair.

        ``condition`` (B, hidden) and ``t_emb`` (S, hidden) give ``c = cond_proj(condition)
        + t_emb``, shape (S, B, hidden); the result holds one (S, B, k * hidden) array per
        layer, the final layer last. They do not depend on the noisy sample, so a sampler
        computes them for all its steps at once (one pass over these weights per frame
        instead of one per step).
        """
        c = self.cond_proj(condition)[None] + t_emb[:, None]
        return [layer.modulation(c) for layer in self.layers] + [self.final_layer.modulation(c)]

    def denoise(self, noisy: mx.array, mods: list[mx.array]) -> mx.array:
        """The v-prediction for ``noisy`` (B, latent) given one step's ``mods`` (B, ...)."""
        x = self.noisy_images_proj(noisy)
        for layer, mod in zip(self.layers, mods[:-1], strict=True):
            x = layer(x, mod)
        return self.final_layer(x, mods[-1])

    def __call__(self, noisy: mx.array, t: mx.array, condition: mx.array) -> mx.array:
        """``(noisy (B, latent), t (B,), condition (B, hidden)) -> v (B, latent)``."""
        mods = self.modulations(condition, self.t_embedder(t))
        # (B, B, k * hidden): row i pairs timestep i with condition i.
        return self.denoise(noisy, [m[mx.arange(t.shape[0]), mx.arange(t.shape[0])] for m in mods])
