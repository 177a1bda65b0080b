"""DPM-Solver++ (2M, midpoint) for v-prediction, as precomputed per-step coefficients.

Reproduces diffusers' ``DPMSolverMultistepScheduler`` as VibeVoice configures it
(``vibevoice/schedule/dpm_solver.py``): 1000 training steps, cosine betas
(``squaredcos_cap_v2``), ``algorithm_type="dpmsolver++"``, ``solver_order=2``,
``solver_type="midpoint"``, ``lower_order_final=True``, ``final_sigmas_type="zero"``,
linspace timesteps. Every frame starts a fresh solve, so the whole schedule reduces to
a handful of scalars per step, computed once per number of steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def cosine_alphas_cumprod(num_train_steps: int = 1000) -> np.ndarray:
    """``alpha_bar`` of the Glide cosine schedule, in float32 like the reference."""

    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = [
        min(1 - alpha_bar((i + 1) / num_train_steps) / alpha_bar(i / num_train_steps), 0.999)
        for i in range(num_train_steps)
    ]
    alphas = 1.0 - np.asarray(betas, dtype=np.float32)
    return np.cumprod(alphas, dtype=np.float32)


@dataclass(frozen=True)
class SolverStep:
    """One solver step: ``x0 = alpha_s * x - sigma_s * v`` (v-prediction to data), then
    ``x_next = ratio * x + c0 * x0 + c1 * x0_prev``."""

    timestep: int
    alpha_s: float
    sigma_s: float
    ratio: float
    c0: float
    c1: float


@dataclass(frozen=True)
class DPMSolverSchedule:
    steps: tuple[SolverStep, ...]

    @property
    def timesteps(self) -> list[int]:
        return [s.timestep for s in self.steps]


def _alpha_sigma(sigma: float) -> tuple[float, float]:
    alpha = 1.0 / math.sqrt(sigma * sigma + 1.0)
    return alpha, sigma * alpha


def make_schedule(num_steps: int, num_train_steps: int = 1000) -> DPMSolverSchedule:
    """Coefficients for 1 <= ``num_steps`` < ``num_train_steps`` inference steps (more
    would repeat a timestep: a step of length zero)."""
    if not 1 <= num_steps < num_train_steps:
        raise ValueError(f"the solver takes 1 to {num_train_steps - 1} steps, not {num_steps}")
    acp = cosine_alphas_cumprod(num_train_steps)
    sigmas_all = np.sqrt((1 - acp) / acp).astype(np.float32)
    timesteps = (
        np.linspace(0, num_train_steps - 1, num_steps + 1).round()[::-1][:-1].astype(np.int64)
    )
    # In range by construction: linspace from 0 to num_train_steps - 1.
    sigmas = np.concatenate([sigmas_all[timesteps], [0.0]]).astype(np.float32)
    lam = []
    for s in sigmas:
        a, sg = _alpha_sigma(float(s))
        lam.append(math.log(a) - math.log(sg) if sg > 0 else math.inf)

    out = []
    for i, t in enumerate(timesteps):
        alpha_s, sigma_s = _alpha_sigma(float(sigmas[i]))
        alpha_t, sigma_t = _alpha_sigma(float(sigmas[i + 1]))
        last = i == num_steps - 1
        if sigma_t == 0.0:
            # Final step to sigma 0: exp(-h) = 0, the update returns x0 exactly.
            out.append(SolverStep(int(t), alpha_s, sigma_s, 0.0, 1.0, 0.0))
            continue
        h = lam[i + 1] - lam[i]
        phi = alpha_t * (math.exp(-h) - 1.0)
        if i == 0 or last:
            # First order (no history yet, or lower_order_final).
            out.append(SolverStep(int(t), alpha_s, sigma_s, sigma_t / sigma_s, -phi, 0.0))
        else:
            # Second order, midpoint: D0 = m0, D1 = (m0 - m1) / r0, r0 = h0 / h.
            r0 = (lam[i] - lam[i - 1]) / h
            c_d1 = -0.5 * phi / r0
            out.append(SolverStep(int(t), alpha_s, sigma_s, sigma_t / sigma_s, -phi + c_d1, -c_d1))
    return DPMSolverSchedule(tuple(out))
