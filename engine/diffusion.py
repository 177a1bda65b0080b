"""Diffusion head: predicts the v-target of a noisy latent given a condition and a timestep.

Mirrors ``VibeVoiceDiffusionHead`` in ``vibevoice/modular/modular_vibevoice_diffusion_head.py``.
No layer of the head has a bias.
"""

from __future__ import annotations

import math

import engine.backend  # noqa: F401  (chooses MLX's BLAS before mlx.core is imported)

import mlx.core as mx
import mlx.nn as nn

from engine.config import DiffusionHeadConfig
from engine.layers import Fused, RMSNorm, SwiGLU, fuse_linears, fused_or_none

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

    # Rows of hidden size in this layer's modulation: shift, scale, gate.
    MODULATIONS = 3

    def __init__(self, hidden: int, ffn_dim: int, eps: float) -> None:
        super().__init__()
        self.ffn = SwiGLU(hidden, ffn_dim)
        self.norm = RMSNorm(hidden, eps)
        self.adaLN_modulation = [nn.SiLU(), nn.Linear(hidden, 3 * hidden, bias=False)]

    def __call__(self, x: mx.array, shift: mx.array, scale: mx.array, gate: mx.array) -> mx.array:
        return x + gate * self.ffn(self.norm(x) * (1 + scale) + shift)


class FinalLayer(nn.Module):
    MODULATIONS = 2

    def __init__(self, hidden: int, out: int, eps: float) -> None:
        super().__init__()
        self.norm_final = RMSNorm(hidden, eps, affine=False)
        self.linear = nn.Linear(hidden, out, bias=False)
        self.adaLN_modulation = [nn.SiLU(), nn.Linear(hidden, 2 * hidden, bias=False)]

    def __call__(self, x: mx.array, shift: mx.array, scale: mx.array) -> mx.array:
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
        self.fused_modulation: Fused | None = None

    def fuse(self, ffn: bool = True) -> None:
        """One matmul for the adaLN modulations of all layers, one per FFN for gate/up."""
        blocks = [*self.layers, self.final_layer]
        self.fused_modulation = fuse_linears(
            [b.adaLN_modulation[1] for b in blocks], self.fused_modulation
        )
        if ffn:
            for layer in self.layers:
                layer.ffn.fuse()

    def modulations(self, condition: mx.array, t_emb: mx.array) -> list[list[mx.array]]:
        """adaLN modulations of every layer for every (timestep, condition) pair.

        ``condition`` (B, hidden) and ``t_emb`` (S, hidden) give ``c = cond_proj(condition)
        + t_emb``, shape (S, B, hidden). Returns, per timestep, the (B, hidden) pieces in
        layer order (shift, scale, gate of each layer, then shift, scale of the final
        layer). They do not depend on the noisy sample, so a sampler computes them for all
        its steps at once: one pass over these weights per frame, and one split instead
        of an index per step and layer.
        """
        c = nn.silu(self.cond_proj(condition)[None] + t_emb[:, None])
        if (fused := fused_or_none(self.fused_modulation)) is not None:
            m = fused(c)
        else:
            blocks = [*self.layers, self.final_layer]
            m = mx.concatenate([b.adaLN_modulation[1](c) for b in blocks], axis=-1)
        S, B, _ = m.shape
        hidden = c.shape[-1]
        n = m.shape[-1] // hidden
        # (S, B, n * hidden) -> (S * n * B, hidden): B consecutive rows per (step, piece).
        rows = m.reshape(S, B, n, hidden).transpose(0, 2, 1, 3).reshape(S * n * B, hidden)
        pieces = mx.split(rows, S * n)
        return [pieces[i * n : (i + 1) * n] for i in range(S)]

    def denoise(self, noisy: mx.array, mods: list[mx.array]) -> mx.array:
        """The v-prediction for ``noisy`` (B, latent) given one step's ``mods``
        (from :meth:`modulations`)."""
        x = self.noisy_images_proj(noisy)
        it = iter(mods)
        for layer in self.layers:
            x = layer(x, next(it), next(it), next(it))
        return self.final_layer(x, next(it), next(it))

    def __call__(self, noisy: mx.array, t: mx.array, condition: mx.array) -> mx.array:
        """``(noisy (B, latent), t (B,), condition (B, hidden)) -> v (B, latent)``."""
        out = []
        for i in range(t.shape[0]):
            # Row i pairs timestep i with condition i.
            mods = self.modulations(condition[i : i + 1], self.t_embedder(t[i : i + 1]))[0]
            out.append(self.denoise(noisy[i : i + 1], mods))
        return mx.concatenate(out)
