"""The diffusion sampler of a speech frame in C, for Linux CPUs (engine/_cpu_head.c).

Same sampler as engine/sampler.py's ``sample_latent`` (which stays the reference): the
diffusion head over every utterance's CFG pair for each step of the DPM-Solver schedule.
On the CPU, MLX runs its element-wise work (the SiLU of every FFN, the adaLN norms with
their scale and shift) one value at a time on one thread, and that work grows with the
utterances of a batch; the C runs it in vector loops and hands the products to the BLAS
shim with MLX's own weight buffers. Used by engine/native_frames.py.
"""

from __future__ import annotations

import engine.backend  # noqa: F401  (chooses MLX's BLAS before mlx.core is imported)

import mlx.core as mx
import numpy as np

from engine.diffusion import DiffusionHead
from engine.dpm_solver import DPMSolverSchedule
from engine.layers import fused_or_none
from engine.native_lm import as_numpy, load_library, pointers, unavailable_reason


class NativeSampler:
    """``sample_latent(head, schedule, ...)`` for B frames at once, in C.

    Args:
        head: the loaded (fused) diffusion head; its weights are read in place.
        schedule: the DPM-Solver schedule of the step count.
        t_emb: the schedule's timestep embeddings (steps, hidden), as MLXFrames has them.

    Raises:
        ValueError: the library is not loaded, the head's adaLN weights are not stacked
            (``fuse()``), its weights are not float32, or its sizes are not ones the C
            loops take.
    """

    def __init__(self, head: DiffusionHead, schedule: DPMSolverSchedule, t_emb: mx.array) -> None:
        lib = load_library()
        if lib is None:
            raise ValueError(f"the C sampler is unavailable: {unavailable_reason()}")
        mod = fused_or_none(head.fused_modulation)
        if mod is None:
            raise ValueError("the head's adaLN modulations are not stacked (model.fuse())")
        norms, gates, ups, downs = [], [], [], []
        for layer in head.layers:
            ffn = layer.ffn
            stacked = fused_or_none(ffn.fused)
            norms.append(as_numpy(layer.norm.weight))
            gates.append(as_numpy(stacked.weight if stacked else ffn.gate_proj.weight))
            ups.append(None if stacked else as_numpy(ffn.up_proj.weight))
            downs.append(as_numpy(ffn.down_proj.weight))
        arrays = {
            "noisy_proj": head.noisy_images_proj.weight,
            "cond_proj": head.cond_proj.weight,
            "mod": mod.weight,
            "final_linear": head.final_layer.linear.weight,
            "t_emb": t_emb,
        }
        if any(a.dtype != mx.float32 for a in [*arrays.values(), head.layers[0].norm.weight]):
            raise ValueError("the C sampler takes float32 weights")
        views = {k: as_numpy(a) for k, a in arrays.items()}
        coef = np.array(
            [[s.alpha_s, s.sigma_s, s.ratio, s.c0, s.c1] for s in schedule.steps], np.float32
        )
        hidden, latent = views["noisy_proj"].shape
        handle = lib.vh_new(
            hidden, latent, downs[0].shape[1], len(head.layers), len(schedule.steps),
            head.layers[0].norm.eps,
            *(views[k].ctypes.data for k in ("noisy_proj", "cond_proj", "mod", "final_linear")),
            views["t_emb"].ctypes.data, *(pointers(a) for a in (norms, gates, ups, downs)),
            coef.ctypes.data,
        )  # fmt: skip
        if not handle:
            raise ValueError("the C sampler does not take this head's sizes")
        # Referenced while the sampler lives: the C keeps their addresses.
        self._keep = (views, norms, gates, ups, downs)
        self._lib, self._handle = lib, handle
        self.latent = latent

    def __del__(self) -> None:
        if getattr(self, "_handle", None):
            self._lib.vh_free(self._handle)
            self._handle = None

    def __call__(
        self,
        noise: mx.array,
        pos_cond: mx.array,
        neg_cond: mx.array,
        cfg_scales: float | mx.array,
    ) -> mx.array:
        """The latents (B, latent) of B frames: ``noise`` (B, latent), conditions (B,
        hidden), ``cfg_scales`` a number, (B,) or (B, 1). Evaluates its inputs."""
        B = noise.shape[0]
        cfg = cfg_scales if isinstance(cfg_scales, mx.array) else mx.array(cfg_scales)
        cfg = mx.broadcast_to(cfg.astype(mx.float32).reshape(-1), (B,))
        inputs = [as_numpy(a) for a in (noise, pos_cond, neg_cond, cfg)]
        out = np.empty((B, self.latent), np.float32)
        if self._lib.vh_sample(self._handle, B, *(a.ctypes.data for a in inputs), out.ctypes.data):
            raise MemoryError("no memory for the diffusion sampler's workspace")
        return mx.array(out)
