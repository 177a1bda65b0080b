"""Primitives shared by several components."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn


class RMSNorm(nn.Module):
    """Root-mean-square norm over the last axis, computed in float32 (as upstream).

    With ``affine=False`` there is no weight (the diffusion head's final norm).
    """

    def __init__(self, dims: int, eps: float, affine: bool = True) -> None:
        super().__init__()
        self.eps = eps
        if affine:
            self.weight = mx.ones((dims,))

    def __call__(self, x: mx.array) -> mx.array:
        return mx.fast.rms_norm(x, self.get("weight"), self.eps)


class SwiGLU(nn.Module):
    """``down(silu(gate(x)) * up(x))`` without biases (Qwen2 MLP and the head's FFN)."""

    def __init__(self, dims: int, hidden: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(dims, hidden, bias=False)
        self.up_proj = nn.Linear(dims, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dims, bias=False)

    def __call__(self, x: mx.array) -> mx.array:
        return self.down_proj(nn.silu(self.gate_proj(x)) * self.up_proj(x))
