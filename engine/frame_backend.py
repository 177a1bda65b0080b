"""What the generation loop asks of a frame backend, and the choice of one.

A frame backend runs the model's per-token work of one utterance: a text window through
both LMs, and a speech frame (the CFG sampler, the connector, both TTS-LM rows and the
EOS head). Three implement it: :class:`engine.mlx_frames.MLXFrames` (compiled MLX
functions, every device), :class:`engine.native_frames.NativeFrames` (those, with a
frame's sampler and the LMs' steps in C, on Linux CPUs) and
:class:`engine.cuda_frame.CudaFrames` (one CUDA kernel per frame and per window, on
NVIDIA GPUs). The loop (engine.generate) sees only this
protocol; :func:`choose_frame_backend` picks one once, when the kernels are built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import engine.backend  # noqa: F401  (chooses MLX's BLAS before mlx.core is imported)

import mlx.core as mx

from engine.cache import BatchPairCaches, KVCache
from engine.mlx_frames import MLXFrames
from engine.model import VibeVoiceRealtime
from engine.native_frames import NativeFrames
from engine.native_lm import native_frames_wanted
from engine.switches import Switches

if TYPE_CHECKING:
    from engine.voices import VoicePrompt


class FrameCaches(Protocol):
    """The caches of both LMs for one utterance, in the backend's own layout."""

    @property
    def offset(self) -> int:
        """Position of the positive TTS-LM row's next token (the position cap counts it)."""
        ...


class FrameBackend(Protocol):
    """A text window and a speech frame of one model and step count. Results are lazy
    MLX arrays; each call moves ``caches`` on as the model does."""

    name: str
    """"mlx", "native" or "cuda"."""
    decode_group: int
    """Frames the decoder takes at a time after the first ones (engine.generate)."""

    def new_caches(self, voice: VoicePrompt, lm_reserve: int, tts_reserve: int) -> FrameCaches:
        """Fresh caches seeded from ``voice``, with room for ``lm_reserve`` text tokens
        and ``tts_reserve`` more TTS-LM positions."""
        ...

    def window(self, tokens: mx.array, caches: FrameCaches) -> tuple[mx.array, mx.array]:
        """Token ids (1, L) through the text LM and the positive TTS-LM row: their
        outputs, (1, L, hidden) each."""
        ...

    def sample(
        self, noise: mx.array, pos_cond: mx.array, neg_cond: mx.array, cfg_scale: float
    ) -> mx.array:
        """One frame's latent (1, latent dim) from its noise and the two conditions."""
        ...

    def frame(
        self,
        noise: mx.array,
        pos_cond: mx.array,
        neg_cond: mx.array,
        cfg_scale: float,
        caches: FrameCaches,
        teacher: mx.array | None = None,
    ) -> tuple[mx.array, mx.array, mx.array, mx.array, mx.array]:
        """:meth:`sample`, then the latent (or ``teacher``) fed back through both TTS-LM
        rows: (latent, fed latent, next positive and negative conditions, EOS logit)."""
        ...

    def feed(self, fed: mx.array, caches: FrameCaches) -> tuple[mx.array, mx.array, mx.array]:
        """The second half of :meth:`frame` for a given latent (1, latent dim): (next
        positive and negative conditions, EOS logit)."""
        ...

    def failed(self) -> bool:
        """Whether the backend's results can no longer be trusted (read when a result is
        not a number: a CUDA kernel whose grid barrier gave up marks its outputs so)."""
        ...


class BatchFrameBackend(Protocol):
    """Speech frames of several utterances as one batch (engine.batch runs its loop):
    each utterance has its own prompt, text-LM caches, rows of the batch's TTS-LM caches,
    conditions and CFG scale, and joins and leaves the batch on its own."""

    def new_batch(self) -> BatchPairCaches:
        """Caches of a batch with no utterance yet."""
        ...

    def join(
        self, voice: VoicePrompt, batch: BatchPairCaches, lm_reserve: int, tts_reserve: int
    ) -> tuple[list[KVCache], int]:
        """A new utterance seeded from ``voice``: its text-LM caches and its index."""
        ...

    def batch_windows(
        self,
        tokens: mx.array,
        texts: list[list[KVCache]],
        batch: BatchPairCaches,
        items: list[int],
    ) -> tuple[mx.array, mx.array]:
        """A text window (n, L) of each of utterances ``items`` (their text-LM caches
        ``texts``): (text LM out, TTS LM out), (n, L, hidden) each."""
        ...

    def batch_frame(
        self,
        noise: mx.array,
        pos_cond: mx.array,
        neg_cond: mx.array,
        cfg_scales: mx.array,
        batch: BatchPairCaches,
        teacher: mx.array,
        use_teacher: mx.array,
    ) -> tuple[mx.array, mx.array, mx.array, mx.array, mx.array]:
        """One frame of every utterance: (latents, fed latents, next positive and
        negative conditions, EOS logits), B rows each."""
        ...


def choose_frame_backend(model: VibeVoiceRealtime, steps: int, switches: Switches) -> FrameBackend:
    """The CUDA kernels where MLX runs on a CUDA GPU, the switch allows them, they can
    take the model and they agree with the MLX functions; on a Linux CPU, the MLX
    functions with a frame's sampler and the LMs' steps in C where the switch allows it and
    the library loads; the MLX functions otherwise."""
    if switches.cuda_kernels:
        from engine import cuda_frame

        if cuda_frame.on_cuda_gpu():
            mlx_frames = MLXFrames(model, steps)
            cuda = cuda_frame.build(model, mlx_frames, switches.cuda_unroll)
            return cuda if cuda is not None else mlx_frames
    if native_frames_wanted(switches, model.model.tts_input_types.weight.dtype):
        try:
            return NativeFrames(model, steps)
        except ValueError:
            pass  # a model the C step does not take (MLX's step computes it)
    return MLXFrames(model, steps)
