"""Sigma-VAE acoustic decoder: latent frames to 24 kHz audio, causal and streamable.

Mirrors ``TokenizerDecoder`` in ``vibevoice/modular/modular_vibevoice_tokenizer.py``:
stem causal conv, then per stage a causal transposed-conv upsampler and Block1D blocks
(depthwise-conv mixer + GELU FFN, each with a layer scale), then a head conv.

Every conv carries an explicit streaming state, so decoding frame by frame equals
decoding the whole sequence at once. Activations are channels-last (B, T, C).
"""

from __future__ import annotations

import engine.backend  # noqa: F401  (chooses MLX's BLAS before mlx.core is imported)

import mlx.core as mx
import mlx.nn as nn

from engine.config import AcousticDecoderConfig
from engine.layers import RMSNorm

KERNEL_SIZE = 7

# erf(x) ~= x * P(x^2) / Q(x^2) on [-4, 4] (Eigen's float32 rational approximation; beyond
# 4, erf is +-1 in float32). Max error 4.4e-7 against exact erf, as accurate as mx.erf.
_ERF_P = (
    -2.72614225801306e-10,
    2.77068142495902e-08,
    -2.10102402082508e-06,
    -5.69250639462346e-05,
    -7.34990630326855e-04,
    -2.95459980854025e-03,
    -1.60960333262415e-02,
)
_ERF_Q = (
    -1.45660718464996e-05,
    -2.13374055278905e-04,
    -1.68282697438203e-03,
    -7.37332916720468e-03,
    -1.42647390514189e-02,
)


def gelu_erf(x: mx.array) -> mx.array:
    """Exact (erf) GELU, ``x / 2 * (1 + erf(x / sqrt 2))``, as ACT2FN["gelu"] upstream."""
    if _on_gpu():
        # One fused kernel with the device's erf.
        return 0.5 * x * (1.0 + mx.erf(x * 0.7071067811865476))
    # Deviation from nn.gelu: erf as a rational polynomial. On the CPU mx.erf is a scalar
    # loop (26 ns per value) while multiply-adds vectorise; this is 7x faster, and the GELU
    # is the decoder's largest cost (4.5 M values per frame).
    v = mx.clip(x * 0.7071067811865476, -4.0, 4.0)
    v2 = v * v
    p = v2 * _ERF_P[0] + _ERF_P[1]
    for c in _ERF_P[2:]:
        p = p * v2 + c
    q = v2 * _ERF_Q[0] + _ERF_Q[1]
    for c in _ERF_Q[2:]:
        q = q * v2 + c
    return 0.5 * x * (1.0 + v * p / q)


def _on_gpu() -> bool:
    return mx.default_device().type == mx.DeviceType.gpu


class CausalConv1d(nn.Module):
    """``SConv1d`` (causal, stride 1). Weight in MLX layout (out, kernel, in / groups).

    State: the last ``kernel - 1`` input frames (zeros at the start, which is exactly the
    upstream left padding).
    """

    def __init__(self, cin: int, cout: int, kernel: int, groups: int = 1, bias: bool = True):
        super().__init__()
        self.kernel = kernel
        self.depthwise = groups > 1
        self.weight = mx.zeros((cout, kernel, cin // groups))
        if bias:
            self.bias = mx.zeros((cout,))

    def init_state(self, batch: int, channels: int, dtype: mx.Dtype) -> mx.array:
        return mx.zeros((batch, self.kernel - 1, channels), dtype=dtype)

    def __call__(self, x: mx.array, state: mx.array) -> tuple[mx.array, mx.array]:
        T = x.shape[1]
        xp = mx.concatenate([state, x], axis=1)
        new_state = xp[:, -(self.kernel - 1) :]
        if self.depthwise and _on_gpu():
            y = mx.conv1d(xp, self.weight, groups=self.weight.shape[0])
        elif self.depthwise:
            # Depthwise: out[t, c] = sum_j x[t - (K-1) + j, c] * w[c, j]; K shifted
            # multiply-adds beat one grouped conv (a GEMM per channel on CPU). The taps are
            # (1, C) slices of a (K, C) view, never integer indexing (a gather per tap).
            w = self.weight.reshape(-1, self.kernel).T  # (K, C)
            y = xp[:, 0:T] * w[0:1]
            for j in range(1, self.kernel):
                y = y + xp[:, j : j + T] * w[j : j + 1]
        else:
            y = mx.conv1d(xp, self.weight)
        if "bias" in self:
            y = y + self.bias
        return y, new_state


class CausalConvTranspose1d(nn.Module):
    """``SConvTranspose1d`` with kernel = 2 * stride, trimmed on the right (causal).

    Weight in MLX layout (out, kernel, in). With kernel 2s, input frame t writes output
    block t (kernel taps 0..s-1) and block t+1 (taps s..2s-1); after the right trim the
    output block t is ``x[t] @ W[:s] + x[t-1] @ W[s:]``. This overlap-add form needs
    one matmul per frame and keeps as state only the spill of the last input frame
    (upstream recomputes over the last kernel-1 inputs; the result is the same).
    """

    def __init__(self, cin: int, cout: int, stride: int, bias: bool = True) -> None:
        super().__init__()
        self.stride = stride
        self.cout = cout
        self.weight = mx.zeros((cout, 2 * stride, cin))
        if bias:
            self.bias = mx.zeros((cout,))

    def init_state(self, batch: int, dtype: mx.Dtype) -> mx.array:
        return mx.zeros((batch, 1, self.cout, self.stride), dtype=dtype)

    def __call__(self, x: mx.array, state: mx.array) -> tuple[mx.array, mx.array]:
        B, T, cin = x.shape
        s = self.stride
        # (B, T, cout * 2s) -> (B, T, cout, 2s): taps of every input frame.
        taps = (x @ self.weight.reshape(-1, cin).T).reshape(B, T, self.cout, 2 * s)
        head, spill = taps[..., :s], taps[..., s:]
        carried = mx.concatenate([state, spill[:, :-1]], axis=1)
        y = (head + carried).transpose(0, 1, 3, 2).reshape(B, T * s, self.cout)
        if "bias" in self:
            y = y + self.bias
        return y, spill[:, -1:]


class FeedForward(nn.Module):
    def __init__(self, dims: int, hidden: int, bias: bool) -> None:
        super().__init__()
        self.linear1 = nn.Linear(dims, hidden, bias=bias)
        self.linear2 = nn.Linear(hidden, dims, bias=bias)

    def __call__(self, x: mx.array) -> mx.array:
        return self.linear2(gelu_erf(self.linear1(x)))

    def add_to(self, x: mx.array, h: mx.array, gamma: mx.array) -> mx.array:
        """``x + gamma * self(h)``: the block's residual add (one pass over it where the
        product can do it: engine/cuda_gemm.py)."""
        return x + gamma * self(h)


class Block1D(nn.Module):
    """``Block1D`` with the depthwise-conv mixer and layer scales ``gamma``/``ffn_gamma``."""

    def __init__(self, dims: int, eps: float, bias: bool) -> None:
        super().__init__()
        self.norm = RMSNorm(dims, eps)
        self.mixer = CausalConv1d(dims, dims, KERNEL_SIZE, groups=dims, bias=bias)
        self.gamma = mx.ones((dims,))
        self.ffn_norm = RMSNorm(dims, eps)
        self.ffn = FeedForward(dims, 4 * dims, bias)
        self.ffn_gamma = mx.ones((dims,))

    def __call__(self, x: mx.array, state: mx.array) -> tuple[mx.array, mx.array]:
        h, state = self.mixer(self.norm(x), state)
        x = x + self.gamma * h
        x = self.ffn.add_to(x, self.ffn_norm(x), self.ffn_gamma)
        return x, state


class AcousticDecoder(nn.Module):
    """``TokenizerDecoder``: (B, T, vae_dim) latents to (B, T * hop, channels) audio."""

    def __init__(self, cfg: AcousticDecoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        eps, bias = cfg.layernorm_eps, cfg.conv_bias
        c0 = cfg.stage_channels(0)
        self.upsample_layers: list[list[nn.Module]] = [
            [CausalConv1d(cfg.vae_dim, c0, KERNEL_SIZE, bias=bias)]
        ]
        for i, ratio in enumerate(cfg.ratios):
            cin, cout = cfg.stage_channels(i), cfg.stage_channels(i + 1)
            self.upsample_layers.append([CausalConvTranspose1d(cin, cout, ratio, bias=bias)])
        self.stages = [
            [Block1D(cfg.stage_channels(i), eps, bias) for _ in range(depth)]
            for i, depth in enumerate(cfg.depths)
        ]
        # disable_last_norm: no norm before the head.
        self.head = CausalConv1d(cfg.decoder_n_filters, cfg.channels, KERNEL_SIZE, bias=bias)

    def init_state(self, batch: int = 1, dtype: mx.Dtype = mx.float32) -> list[mx.array]:
        """Zero streaming state: one array per conv, in the order they run."""
        cfg = self.cfg
        state = [self.upsample_layers[0][0].init_state(batch, cfg.vae_dim, dtype)]
        for i in range(len(cfg.depths)):
            if i > 0:
                state.append(self.upsample_layers[i][0].init_state(batch, dtype))
            c = cfg.stage_channels(i)
            state.extend(blk.mixer.init_state(batch, c, dtype) for blk in self.stages[i])
        state.append(self.head.init_state(batch, cfg.decoder_n_filters, dtype))
        return state

    def __call__(self, x: mx.array, state: list[mx.array]) -> tuple[mx.array, list[mx.array]]:
        """Decode ``x`` (B, T, vae_dim) continuing from ``state``; returns audio and new state."""
        new_state: list[mx.array] = []
        it = iter(state)
        for i, stage in enumerate(self.stages):
            x, s = self.upsample_layers[i][0](x, next(it))
            new_state.append(s)
            for block in stage:
                x, s = block(x, next(it))
                new_state.append(s)
        x, s = self.head(x, next(it))
        new_state.append(s)
        return x, new_state


class AcousticTokenizer(nn.Module):
    """Holds the decoder under the checkpoint name ``acoustic_tokenizer.decoder``."""

    def __init__(self, cfg: AcousticDecoderConfig) -> None:
        super().__init__()
        self.decoder = AcousticDecoder(cfg)
