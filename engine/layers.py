"""Primitives shared by several components."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import engine.backend  # noqa: F401  (chooses MLX's BLAS before mlx.core is imported)

import mlx.core as mx
import mlx.nn as nn


@dataclass
class Fused:
    """Several projections of one input stacked into one matrix (rows of the outputs one
    after the other), so a step runs one matmul where the checkpoint has several.

    The modules keep their own ``weight``/``bias`` as row views of these arrays (no
    second copy). Held as a plain object, so it is never a parameter."""

    weight: mx.array
    bias: mx.array | None
    splits: list[int]
    """Output offsets where the next projection starts (for ``mx.split``)."""
    layers: list[nn.Module]
    views: list[tuple[mx.array, mx.array | None]]
    """What each layer held right after fusing."""
    product: Callable[[mx.array], mx.array] | None = None
    """What computes ``x @ weight.T + bias`` instead of MLX's matmul (the tensor cores'
    product on a CUDA GPU: engine/cuda_gemm.py), or None."""

    def __call__(self, x: mx.array) -> mx.array:
        """``x @ weight.T + bias``: every stacked projection's outputs, one after the other."""
        if self.product is not None:
            return self.product(x)
        if self.bias is None:
            return x @ self.weight.T
        return mx.addmm(self.bias, x, self.weight.T)

    def current(self) -> bool:
        """False once any layer's weight or bias was replaced (the stack is stale)."""
        return all(
            layer.weight is w and layer.get("bias") is b
            for layer, (w, b) in zip(self.layers, self.views, strict=True)
        )


def fused_or_none(fused: Fused | None) -> Fused | None:
    """``fused`` while it still holds the layers' weights, else None."""
    return fused if fused is not None and fused.current() else None


def fuse_linears(layers: list[nn.Module], fused: Fused | None = None) -> Fused | None:
    """Stack the weights (and biases) of plain ``nn.Linear`` layers that read the same
    input; re-point each layer at its rows of the stacked arrays. Returns ``fused`` when
    it is still current, and None (changing nothing) for quantized or mixed layers."""
    if fused_or_none(fused) is not None:
        return fused
    if not all(type(layer) is nn.Linear for layer in layers):
        return None
    has_bias = ["bias" in layer for layer in layers]
    if any(has_bias) and not all(has_bias):
        return None
    weight = mx.concatenate([layer.weight for layer in layers])
    bias = mx.concatenate([layer.bias for layer in layers]) if all(has_bias) else None
    mx.eval(weight, bias)
    start, splits = 0, []
    for layer in layers:
        rows = layer.weight.shape[0]
        layer.weight = weight[start : start + rows]
        if bias is not None:
            layer.bias = bias[start : start + rows]
        start += rows
        splits.append(start)
    mx.eval([layer.parameters() for layer in layers])
    views = [(layer.weight, layer.get("bias")) for layer in layers]
    return Fused(weight, bias, splits[:-1], layers, views)


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
        self.fused: Fused | None = None

    def fuse(self) -> None:
        """Gate and up as one matmul (see :func:`fuse_linears`); idempotent."""
        self.fused = fuse_linears([self.gate_proj, self.up_proj], self.fused)

    def __call__(self, x: mx.array) -> mx.array:
        if (fused := fused_or_none(self.fused)) is not None:
            gate, up = mx.split(fused(x), fused.splits, axis=-1)
        else:
            gate, up = self.gate_proj(x), self.up_proj(x)
        return self.down_proj(nn.silu(gate) * up)
