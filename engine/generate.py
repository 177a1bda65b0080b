"""The streaming generation loop: text windows in, one audio chunk per speech frame out.

Mirrors ``generate`` in ``vibevoice/modular/modeling_vibevoice_streaming_inference.py``:
text is fed 5 tokens at a time (lower LM, then the positive TTS LM), each window is
followed by 6 speech frames; every frame is sampled with CFG from the positive and the
negative TTS-LM states, decoded to 3200 samples, and fed back to both TTS LMs; EOS is
checked on the positive state after each frame.

The model's work runs through two strategies chosen once per model and step count
(:class:`FrameKernels`): a frame backend (engine/frame_backend.py: MLX functions or CUDA
kernels) and a latent decoder (engine/decode.py: MLX or C). Two product features shape
the loop around upstream's: frames are decoded in groups (:class:`FrameOutput`), and
the first frame is handed out before it is fed back (``early_first``). Callers watch or
steer the loop through :class:`FrameHooks` (engine/parity.py records and teacher-forces
with them).
"""

from __future__ import annotations

import itertools
import math
import threading
import warnings
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import engine.backend  # noqa: F401  (chooses MLX's BLAS before mlx.core is imported)

import mlx.core as mx
import numpy as np

from engine.bf16_weights import register_model
from engine.config import TTS_SPEECH_WINDOW_SIZE, TTS_TEXT_WINDOW_SIZE
from engine.cuda_gemm import tensor_cores_for
from engine.decode import LatentDecoder, choose_latent_decoder
from engine.errors import BackendError, RequestError
from engine.frame_backend import BatchFrameBackend, FrameBackend, choose_frame_backend
from engine.mlx_frames import MLXFrames
from engine.model import VibeVoiceRealtime
from engine.switches import Switches
from engine.tokenizer import checked_token_ids

if TYPE_CHECKING:
    from engine.voices import VoicePrompt

NoiseSource = Callable[[int], mx.array]


def seeded_noise(seed: int, latent_dim: int) -> NoiseSource:
    """x_T of frame i from a numpy generator seeded with (seed, i): re-synthesising the
    same text with the same seed gives the same audio on every platform."""

    def noise(i: int) -> mx.array:
        rng = np.random.default_rng([seed, i])
        return mx.array(rng.standard_normal((1, latent_dim), dtype=np.float32))

    return noise


def check_steps(steps: int, ddpm_num_steps: int) -> None:
    """RequestError unless the solver can take ``steps``: its schedule picks that many
    distinct timesteps (and one more, zero) of the model's ``ddpm_num_steps``."""
    if not 1 <= steps < ddpm_num_steps:
        top = ddpm_num_steps - 1
        raise RequestError(f"diffusion steps must be between 1 and {top}, not {steps}")


def default_frame_limit(
    num_tokens: int, frames_per_token: float = 4.0, extra_frames: int = 24
) -> int:
    """Runaway guard: a sampled model can fail to stop. Speech rarely needs more than
    about 4 frames (0.53 s) per text token; allow 3 s on top for short texts."""
    return int(frames_per_token * num_tokens) + extra_frames


class FrameKernels:
    """The frame backend and the latent decoder of one model and step count, chosen once
    from ``switches`` (default: read from the environment) and reusable across
    utterances (the engine thread keeps one per step count).

    On Linux CPUs the few-row products read bfloat16 copies of the (bfloat16-valued)
    float32 weights (engine/bf16_weights.py: same values, half the bytes); on a CUDA GPU
    the CUDA frame kernels run when they agree with the MLX functions; on a CPU the C
    decoder decodes. ``frames`` replaces the chosen frame backend (the tests give one
    with emulated CUDA kernels).
    """

    def __init__(
        self,
        model: VibeVoiceRealtime,
        steps: int,
        switches: Switches | None = None,
        frames: FrameBackend | None = None,
    ) -> None:
        check_steps(steps, model.config.diffusion.ddpm_num_steps)
        switches = switches if switches is not None else Switches.from_environ()
        model.fuse()
        self.bf16_weights = register_model(model, switches)
        """How many weight matrices the BLAS shim reads as bfloat16 copies."""
        self.tensor_cores = tensor_cores_for(model, switches)
        """How many products run on a CUDA GPU's tensor cores (engine/cuda_gemm.py)."""
        self.steps = steps
        self.frames = frames or choose_frame_backend(model, steps, switches)
        # A decoder stream of its own only lets its launches overlap the CUDA kernels'.
        own_stream = switches.decode_stream and self.frames.name == "cuda"
        self.decoder: LatentDecoder = choose_latent_decoder(model, switches, own_stream)
        self._model = model
        self._batch: BatchFrameBackend | None = None

    def fall_back(self, reason: str) -> None:
        """Go on with the MLX functions (after the frame backend failed), with one warning."""
        if not isinstance(self.frames, MLXFrames):
            warnings.warn(f"{reason}; using MLX's frame functions from now on", stacklevel=2)
            self.frames = self.batch

    @property
    def batch(self) -> BatchFrameBackend:
        """The batched frame backend (engine.batch): the MLX functions (the CUDA kernels
        run one utterance), made on first use when the frame backend is not MLX's."""
        if self._batch is None:
            frames = self.frames
            self._batch = (
                frames if isinstance(frames, MLXFrames) else MLXFrames(self._model, self.steps)
            )
        return self._batch


class FrameHooks:
    """Named points of the loop where a caller watches or steers it (engine/parity.py
    records intermediates and feeds expected latents back). These defaults do nothing."""

    def window(self, index: int, h_text: mx.array, h_tts: mx.array) -> None:
        """Text window ``index`` went through the text LM (``h_text``) and the positive
        TTS-LM row (``h_tts``), (1, L, hidden) each."""

    def conditions(self, frame: int, pos: mx.array, neg: mx.array) -> None:
        """Frame ``frame`` is sampled from these positive and negative conditions."""

    def teacher(self, frame: int) -> mx.array | None:
        """A latent (1, latent dim) to feed back after frame ``frame`` instead of the
        sampled one (decoded instead of it too), or None."""
        return None

    def eos(self, frame: int, logit: float) -> None:
        """The EOS logit read after frame ``frame`` was fed back."""


@dataclass
class Frame:
    """One generated speech frame, evaluated (safe to hand to another thread)."""

    index: int
    latent: np.ndarray
    """(latent_dim,) float32, in the normalised latent space."""
    audio: np.ndarray
    """(hop,) float32 samples at 24 kHz."""
    eos_prob: float
    """P(EOS) read after this frame was fed back; NaN for a first frame yielded before
    that (``early_first``)."""
    tokens_consumed: int
    """Text tokens fed to the model when this frame was sampled."""
    is_last: bool = False
    stop_reason: str | None = None
    """"eos", "frame_limit" or "context" on the last frame. With ``early_first``, an EOS
    read right after the first frame ends the stream after that frame, which was
    yielded unmarked."""


class HostRows:
    """The latents, fed latents and EOS logits of a batch's frame (B rows each), read to
    the host together the first time any row is read: one wait for the device per
    batched frame, not three per utterance. ``arrays`` are to be launched with the frame
    (so that reading them later waits for that frame only)."""

    def __init__(self, latent: mx.array, fed: mx.array, eos_logit: mx.array) -> None:
        self.arrays = [
            a if a.dtype == mx.float32 else a.astype(mx.float32) for a in (latent, fed, eos_logit)
        ]
        self._host: tuple[np.ndarray, ...] = ()

    def read(self) -> tuple[np.ndarray, ...]:
        """(latents (B, latent dim), fed latents (B, latent dim), EOS logits (B,)),
        float32."""
        if not self._host:
            self._host = tuple(np.array(a) for a in self.arrays)
            self.arrays = []
        return self._host


@dataclass
class Launched:
    """A frame whose work is launched but whose EOS has not been read yet. With ``host``
    (a batch's frame), ``latent``, ``fed`` and ``eos_logit`` are row ``row`` of it."""

    index: int
    latent: mx.array
    fed: mx.array
    eos_logit: mx.array
    consumed: int
    forced_stop: str | None
    eos_prob: float = 0.0
    stop: str | None = None
    host: HostRows | None = None
    row: int = 0

    def latent_on_host(self) -> np.ndarray:
        """(latent dim,) float32."""
        if self.host is not None:
            return self.host.read()[0][self.row].copy()
        return np.array(self.latent[0].astype(mx.float32))

    def fed_rows(self) -> mx.array | np.ndarray:
        """(1, latent dim): the fed latent, where it is."""
        if self.host is not None:
            return self.host.read()[1][self.row : self.row + 1]
        return self.fed

    def logit(self) -> float:
        if self.host is not None:
            return float(self.host.read()[2][self.row])
        return float(self.eos_logit)


def _eos_probability(logit: float) -> float:
    return float(1.0 / (1.0 + np.exp(-logit)))


_NO_AUDIO = np.zeros(0, np.float32)


@dataclass
class DecodeRequest:
    """A group of settled frames whose audio is still to be decoded (engine.batch decodes
    the requests of all its utterances together: :func:`decode_requests`)."""

    output: FrameOutput
    fed: mx.array | np.ndarray
    """(T, latent dim): the frames' fed latents."""
    frames: list[Frame]
    """Their frames, whose ``audio`` the decoding fills in."""


def decode_requests(decoder: LatentDecoder, requests: list[DecodeRequest]) -> None:
    """Decode ``requests`` (in the order they were made), as few calls as can be: one per
    round in which no utterance has two requests (its second continues the state the
    first leaves). Fills in every frame's audio and moves each output's state on."""
    while requests:
        now: list[DecodeRequest] = []
        later: list[DecodeRequest] = []
        in_now: set[int] = set()
        for r in requests:
            if id(r.output) in in_now:
                later.append(r)
            else:
                in_now.add(id(r.output))
                now.append(r)
        audio, states = decoder.decode_many([r.fed for r in now], [r.output.state for r in now])
        for r, chunks, state in zip(now, audio, states, strict=True):
            r.output.state = state
            for frame, chunk in zip(r.frames, chunks, strict=True):
                frame.audio = chunk
        requests = later


class FrameOutput:
    """Launched frames on their way out: each one's EOS is read one frame late (so that
    building and running the next frame overlap the wait), and the fed latents are
    decoded in groups that ramp up: the first frame alone (first audio as soon as
    possible), then two, then ``decode_group`` at a time (a group shares one pass over
    the decoder's weights, or its launches on a GPU). With ``requests``, a group's frames
    are yielded with their audio still to decode, and the group is added there instead
    (:class:`DecodeRequest`)."""

    def __init__(
        self,
        decoder: LatentDecoder,
        decode_group: int,
        stop_at_eos: bool,
        hooks: FrameHooks,
        kernels: FrameKernels | None = None,
        requests: list[DecodeRequest] | None = None,
    ) -> None:
        """``kernels``: whose frame backend made the frames (it falls back to MLX's when
        it failed)."""
        self.kernels = kernels
        self.decoder, self.state = decoder, decoder.init_state()
        self.decode_group, self.stop_at_eos, self.hooks = decode_group, stop_at_eos, hooks
        self.requests = requests
        self.decodes = 0  # decoder calls so far: group k (from 0) holds min(2**k, group)
        self.pending: list[Launched] = []  # settled, waiting for their group
        self.previous: Launched | None = None  # launched, EOS not read yet

    def decode(self, fed: mx.array | np.ndarray) -> np.ndarray:
        """Audio rows of ``fed`` (T, latent dim), continuing the stream."""
        self.decodes += 1
        audio, self.state = self.decoder.decode(fed, self.state)
        return audio

    def first(self, latent: mx.array, fed: mx.array, consumed: int) -> Frame:
        """Frame 0, decoded before its EOS is known (``early_first``)."""
        mx.eval(latent, fed)
        return Frame(0, np.array(latent[0].astype(mx.float32)), self.decode(fed)[0],
                     float("nan"), consumed)  # fmt: skip

    def _logit(self, logit: float) -> float:
        """The EOS logit, checked: BackendError when the frame backend failed."""
        if not math.isfinite(logit) and self.kernels is not None and self.kernels.frames.failed():
            reason = f"the {self.kernels.frames.name} frame kernels failed (a grid barrier gave up)"
            self.kernels.fall_back(reason)
            raise BackendError(f"{reason}; the engine now uses MLX's: synthesize again")
        return logit

    def eos_fires(self, frame: int, eos_logit: mx.array) -> bool:
        logit = self._logit(float(eos_logit))
        self.hooks.eos(frame, logit)
        return self.stop_at_eos and _eos_probability(logit) > 0.5

    def launched(self, frame: Launched) -> Generator[Frame, None, str | None]:
        """Take a frame just launched: settle the one before it, and this one at once if
        it is the first or the last. Returns the stop reason when the stream ends (a frame
        launched after the last one is dropped, as upstream does)."""
        previous, self.previous = self.previous, frame
        if previous is not None and (stop := (yield from self._settle(previous))) is not None:
            return stop
        if frame.forced_stop is not None or frame.index == 0:
            self.previous = None
            return (yield from self._settle(frame, final=frame.forced_stop is not None))
        return None

    def finish(self, reason: str) -> Generator[Frame, None, None]:
        """End the stream for ``reason`` after the frame launched last."""
        if self.previous is not None:
            self.previous.forced_stop = reason
            yield from self._settle(self.previous, final=True)
            self.previous = None

    def _settle(self, s: Launched, final: bool = False) -> Generator[Frame, None, str | None]:
        """Read frame ``s``'s EOS (waiting for that frame only), then decode and yield the
        pending frames when it is the first, the last, or completes a decode group."""
        logit = self._logit(s.logit())
        self.hooks.eos(s.index, logit)
        s.eos_prob = _eos_probability(logit)
        s.stop = "eos" if self.stop_at_eos and s.eos_prob > 0.5 else s.forced_stop
        self.pending.append(s)
        group = min(self.decode_group, 1 << min(self.decodes, 30))
        if s.stop is not None or final or s.index == 0 or len(self.pending) >= group:
            rows = [p.fed_rows() for p in self.pending]
            if all(isinstance(r, np.ndarray) for r in rows):
                fed: mx.array | np.ndarray = np.concatenate(rows)
            else:
                fed = mx.concatenate(
                    [mx.array(r) if isinstance(r, np.ndarray) else r for r in rows]
                )
            frames = [
                Frame(
                    index=p.index,
                    latent=p.latent_on_host(),
                    audio=_NO_AUDIO,
                    eos_prob=p.eos_prob,
                    tokens_consumed=p.consumed,
                    is_last=p.stop is not None,
                    stop_reason=p.stop,
                )
                for p in self.pending
            ]
            self.pending.clear()
            if self.requests is not None:
                self.decodes += 1
                self.requests.append(DecodeRequest(self, fed, frames))
            else:
                for frame, chunk in zip(frames, self.decode(fed), strict=True):
                    frame.audio = chunk
            yield from frames
        return s.stop


def generate_frames(
    model: VibeVoiceRealtime,
    voice: VoicePrompt,
    text_ids: Sequence[int],
    *,
    cfg_scale: float = 1.5,
    steps: int = 5,
    noise: NoiseSource | None = None,
    max_frames: int | None = None,
    stop_at_eos: bool = True,
    cancel: threading.Event | None = None,
    kernels: FrameKernels | None = None,
    decode_group: int | None = None,
    early_first: bool = True,
    hooks: FrameHooks | None = None,
) -> Iterator[Frame]:
    """Yield the frames of one utterance as they are generated.

    Args:
        model: a loaded model.
        voice: the voice prompt (its caches are copied, never modified).
        text_ids: token ids of the text (already tokenised).
        cfg_scale: classifier-free guidance scale.
        steps: diffusion solver steps per frame (>= 1).
        noise: x_T per frame; defaults to ``seeded_noise(0, ...)``.
        max_frames: frame limit; defaults to :func:`default_frame_limit`.
        stop_at_eos: stop after the frame whose feedback makes the EOS head fire.
        cancel: checked between frames; when set the generator returns.
        kernels: the frame backend and decoder to use (built here when None).
        decode_group: frames decoded together after the first ones (the decoder is bound
            by reading its weights, on the CPU, or by kernel launches, on a GPU: a few
            frames cost little more than one). Each frame is still its own chunk; a
            frame's audio comes at most ``decode_group - 1`` frames later. The groups
            ramp up: the first frame alone, then two, then ``decode_group`` (so the
            second chunk comes no later than with groups of two). Default: the frame
            backend's (README, "The model and the voices", has the measurements).
        early_first: yield the first frame as soon as it is sampled and decoded, before
            it is fed back to the TTS LM (which is what its EOS is read from): first
            audio sooner by one TTS-LM step, as upstream streams a chunk before its EOS
            check. Its ``eos_prob`` is then NaN, and an EOS right after it ends the
            stream without a frame marked last.
        hooks: watch or steer the loop (:class:`FrameHooks`).
    """
    cfg = model.config
    max_positions = cfg.decoder.max_position_embeddings
    # Checked before anything is built or gathered: the embedding reads row ids[i].
    ids = checked_token_ids(text_ids, cfg.decoder.vocab_size)
    check_steps(steps, cfg.diffusion.ddpm_num_steps)
    voice.check_positions(max_positions)
    if kernels is None or kernels.steps != steps:
        kernels = FrameKernels(model, steps)
    frames = kernels.frames
    hooks = hooks or FrameHooks()
    noise = noise or seeded_noise(0, cfg.acoustic_vae_dim)
    limit = max_frames if max_frames is not None else default_frame_limit(len(ids))
    group = max(1, decode_group if decode_group is not None else frames.decode_group)
    out = FrameOutput(kernels.decoder, group, stop_at_eos, hooks, kernels)

    # Both TTS-LM rows (positive, negative) advance together; the text LM only with text.
    # Room for the text now; the frames' columns are made as they come (engine/cache.py).
    caches = frames.new_caches(voice, len(ids) + 8, len(ids) + 8)
    dtype = model.model.tts_input_types.weight.dtype
    pos = voice.tts_hidden[:, -1].astype(dtype)
    neg = voice.neg_hidden[:, -1].astype(dtype)
    consumed = 0
    index = 0
    for window in itertools.count():
        tokens = ids[window * TTS_TEXT_WINDOW_SIZE : (window + 1) * TTS_TEXT_WINDOW_SIZE]
        if tokens:
            # Both LMs' positions stay below max_positions (the text LM's, its prompt plus
            # the text so far, trails the TTS LM's only for a prompt of that shape).
            lm_end = voice.lm_length + consumed + len(tokens)
            if max(caches.offset + len(tokens), lm_end) > max_positions:
                yield from out.finish("context")
                return
            h_text, h_tts = frames.window(mx.array([tokens]), caches)
            hooks.window(window, h_text, h_tts)
            pos = h_tts[:, -1]
            consumed += len(tokens)
        for _ in range(TTS_SPEECH_WINDOW_SIZE):
            if cancel is not None and cancel.is_set():
                return
            hooks.conditions(index, pos, neg)
            teacher = hooks.teacher(index)
            if index == 0 and early_first and limit > 1:
                # The first chunk before the first feedback (see early_first).
                latent = frames.sample(noise(index), pos, neg, cfg_scale)
                fed = latent if teacher is None else teacher
                yield out.first(latent, fed, consumed)
                pos, neg, eos_logit = frames.feed(fed, caches)
                if caches.offset + 1 > max_positions or out.eos_fires(index, eos_logit):
                    return
            else:
                latent, fed, pos, neg, eos_logit = frames.frame(
                    noise(index), pos, neg, cfg_scale, caches, teacher
                )
                forced = None
                if index + 1 >= limit:
                    forced = "frame_limit"
                elif caches.offset + 1 > max_positions:
                    forced = "context"
                # Launched now; its EOS is read while the next frame is built and runs.
                mx.async_eval(latent, eos_logit, pos, neg)
                launched = Launched(index, latent, fed, eos_logit, consumed, forced)
                if (yield from out.launched(launched)) is not None:
                    return
            index += 1
