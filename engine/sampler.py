"""One speech latent from the positive and negative conditions: CFG + DPM-Solver++.

Mirrors ``sample_speech_tokens`` in
``vibevoice/modular/modeling_vibevoice_streaming_inference.py``: the CFG pair runs as
one batch of two through the head; the solver state starts fresh for every frame.
"""

from __future__ import annotations

import engine.backend  # noqa: F401  (chooses MLX's BLAS before mlx.core is imported)

import mlx.core as mx

from engine.diffusion import DiffusionHead
from engine.dpm_solver import DPMSolverSchedule


def sample_latent(
    head: DiffusionHead,
    schedule: DPMSolverSchedule,
    noise: mx.array,
    pos_cond: mx.array,
    neg_cond: mx.array,
    cfg_scale: float | mx.array,
    trace: list[tuple[mx.array, mx.array]] | None = None,
    t_emb: mx.array | None = None,
) -> mx.array:
    """Denoise ``noise`` (B, latent) into latents (B, latent): B frames, each of its own
    utterance, as one batch.

    ``pos_cond``/``neg_cond`` are (B, hidden); ``cfg_scale`` a number or (B, 1). When
    ``trace`` is a list, each step appends (x fed to the head, raw head output (2B,
    latent): the B positive rows, then the B negative ones) for parity checks. ``t_emb``
    is the timestep embedding of the schedule, when already computed.
    """
    B = noise.shape[0]
    cond = mx.concatenate([pos_cond, neg_cond], axis=0).astype(mx.float32)
    if t_emb is None:
        t_emb = head.t_embedder(mx.array(schedule.timesteps, dtype=mx.float32))
    mods = head.modulations(cond, t_emb)  # per step, (2B, hidden) pieces
    x = noise.astype(mx.float32)
    x0_prev = None
    for i, step in enumerate(schedule.steps):
        # Upstream feeds x twice (one row per condition); one frame's single row
        # broadcasts against the two rows of modulations, which gives the same two
        # outputs. B frames' rows are repeated to meet their 2B modulations.
        v_both = head.denoise(x if B == 1 else mx.concatenate([x, x]), mods[i])
        if trace is not None:
            trace.append((x, v_both))
        v_c, v_u = v_both[:B], v_both[B:]
        v = v_u + cfg_scale * (v_c - v_u)
        x0 = step.alpha_s * x - step.sigma_s * v
        x_next = step.ratio * x + step.c0 * x0
        if step.c1 != 0.0 and x0_prev is not None:
            x_next = x_next + step.c1 * x0_prev
        x, x0_prev = x_next, x0
    return x


class CompiledSampler:
    """:func:`sample_latent` for one head and schedule, compiled once (``mx.compile``):
    one traced graph per frame instead of rebuilding ~100 ops in Python, and fused
    element-wise kernels on the GPU. ``cfg_scale`` is an input, so changing it does not
    recompile; the timestep embedding is computed once, here."""

    def __init__(self, head: DiffusionHead, schedule: DPMSolverSchedule) -> None:
        t_emb = head.t_embedder(mx.array(schedule.timesteps, dtype=mx.float32))
        mx.eval(t_emb)

        def run(noise: mx.array, pos: mx.array, neg: mx.array, cfg: mx.array) -> mx.array:
            return sample_latent(head, schedule, noise, pos, neg, cfg, t_emb=t_emb)

        self._fn = mx.compile(run)

    def __call__(
        self, noise: mx.array, pos_cond: mx.array, neg_cond: mx.array, cfg_scale: float
    ) -> mx.array:
        cfg = mx.array(cfg_scale, dtype=mx.float32)
        return self._fn(noise.astype(mx.float32), pos_cond, neg_cond, cfg)
