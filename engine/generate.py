"""The streaming generation loop: text windows in, one audio chunk per speech frame out.

Mirrors ``generate`` in ``vibevoice/modular/modeling_vibevoice_streaming_inference.py``:
text is fed 5 tokens at a time (lower LM, then the positive TTS LM), each window is
followed by 6 speech frames; every frame is sampled with CFG from the positive and the
negative TTS-LM states, decoded to 3200 samples, and fed back to both TTS LMs; EOS is
checked on the positive state after each frame.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import engine.backend  # noqa: F401  (chooses MLX's BLAS before mlx.core is imported)

import mlx.core as mx
import numpy as np

from engine.bf16_weights import register_model
from engine.cache import (
    CFGKVCache,
    KVCache,
    commit_pair_step,
    compile_pair_step,
    make_caches,
    make_cfg_caches,
    pair_inputs,
    pair_step,
    run_pair_step,
    run_window_step,
    window_step,
)
from engine.config import TTS_SPEECH_WINDOW_SIZE, TTS_TEXT_WINDOW_SIZE
from engine.cuda_frame import CudaFrame, StackedCaches, cuda_kernels_wanted
from engine.cuda_frame import build as build_cuda_frame
from engine.dpm_solver import make_schedule
from engine.errors import RequestError
from engine.model import VibeVoiceRealtime
from engine.native_decoder import (
    NativeDecoder,
    NativeDecoderState,
    native_decoder_wanted,
    shared_native_decoder,
)
from engine.sampler import CompiledSampler, sample_latent
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


class PairCaches(list):
    """The CFG pair's per-layer caches (engine.cache.CFGKVCache), with the positive row's
    next position as ``offset`` (as StackedCaches has it)."""

    @property
    def offset(self) -> int:
        return self[0].offset


class FrameKernels:
    """The per-frame functions of one model and step count, compiled once and reusable
    across utterances (the engine thread keeps one per step count).

    ``frame`` is a whole speech frame but its decoding, as one compiled function of fixed
    shapes: the CFG sampler, the connector, both TTS-LM rows one position on, and the EOS
    logit. On a GPU a frame is bound by the host launching its primitives, so one traced
    graph (no Python between the parts, element-wise work fused across them) is what
    makes it fast.
    """

    def __init__(self, model: VibeVoiceRealtime, steps: int, cuda: bool = True) -> None:
        check_steps(steps, model.config.diffusion.ddpm_num_steps)
        m = model.model
        model.fuse()
        self.model = model
        # On Linux CPUs the few-row products read bfloat16 copies of the (bfloat16-valued)
        # float32 weights (engine/bf16_weights.py: same values, half the bytes).
        self.bf16_weights = register_model(model)
        self.steps = steps
        self.schedule = make_schedule(steps, model.config.diffusion.ddpm_num_steps)
        self._sample = CompiledSampler(m.prediction_head, self.schedule)
        decoder = self._decoder = m.acoustic_tokenizer.decoder

        def decode(latents: mx.array, state: list[mx.array]) -> tuple[mx.array, list[mx.array]]:
            # (1, T, latent) -> (1, T * hop, 1); one compiled graph per T.
            return decoder(model.latent_to_decoder_input(latents), state)

        self.decode = mx.compile(decode)
        # On Linux CPUs the decoder runs in C (engine/native_decoder.py: same numbers, a
        # fraction of the time); self.decode stays the MLX reference.
        self.native: NativeDecoder | None = None
        if native_decoder_wanted():
            try:
                self.native = shared_native_decoder(decoder)
            except TypeError:
                pass  # layers the C does not implement (quantized): MLX decodes
        # latent_to_decoder_input's affine map, for the native decoder's numpy input.
        self._latent_scale = np.float32(m.speech_scaling_factor.astype(mx.float32).item())
        self._latent_bias = np.float32(m.speech_bias_factor.astype(mx.float32).item())
        self.tts_pair = compile_pair_step(m.tts_language_model)
        step = pair_step(m.tts_language_model)
        dtype = m.tts_input_types.weight.dtype
        hidden = model.config.decoder.hidden_size
        schedule = self.schedule
        t_emb = m.prediction_head.t_embedder(mx.array(schedule.timesteps, dtype=mx.float32))
        type_speech, type_text = m.tts_input_types.weight[0], m.tts_input_types.weight[1]
        mx.eval(t_emb, type_speech, type_text)
        self.t_emb = t_emb
        # One compiled text window per window length (5, and the last one's).
        self.window = mx.compile(
            window_step(
                m.language_model, m.tts_language_model, m.language_model.embed_tokens, type_text
            )
        )

        def frame(
            noise: mx.array,
            pos: mx.array,
            neg: mx.array,
            cfg: mx.array,
            teacher: mx.array,
            use_teacher: mx.array,
            *cache: mx.array | list[mx.array],
        ) -> tuple[mx.array, ...]:
            latent = sample_latent(m.prediction_head, schedule, noise, pos, neg, cfg, t_emb=t_emb)
            fed = mx.where(use_teacher, teacher, latent)
            emb = m.acoustic_connector(fed.astype(dtype)) + type_speech
            out, keys, values, valid = step(mx.broadcast_to(emb, (2, hidden)), *cache)
            pos, neg = out[0:1], out[1:2]
            eos_logit = model.tts_eos_classifier(pos)[0, 0]
            return latent, fed, pos, neg, eos_logit, keys, values, valid

        def feed(fed: mx.array, *cache: mx.array | list[mx.array]) -> tuple[mx.array, ...]:
            # The second half of `frame`: a sampled (or forced) latent fed back.
            emb = m.acoustic_connector(fed.astype(dtype)) + type_speech
            out, keys, values, valid = step(mx.broadcast_to(emb, (2, hidden)), *cache)
            pos, neg = out[0:1], out[1:2]
            return pos, neg, model.tts_eos_classifier(pos)[0, 0], keys, values, valid

        self._frame = mx.compile(frame)
        self._feed = mx.compile(feed)
        self._no_teacher = (mx.zeros((1, model.config.acoustic_vae_dim)), mx.array(False))
        self._embed = m.language_model.embed_tokens
        # On a CUDA GPU a frame and a text window are one kernel each (engine/cuda_frame.py),
        # used once they agree with the MLX functions above.
        self.cuda: CudaFrame | None = None
        if cuda and cuda_kernels_wanted():
            self.cuda = build_cuda_frame(model, schedule, t_emb)
            if self.cuda is not None and not self._cuda_agrees():
                self.cuda = None
        # With the CUDA frame kernels the decoder's ~500 launches are what is left: in
        # groups of 8 frames they share one pass (5.7 ms for 8 frames against 5.1 ms for
        # 4 and for 1, H200). VVREADER_DECODE_STREAM=1 puts the decoder on a stream of
        # its own, so that its launches could overlap the frame kernels (which leave room
        # on every multiprocessor); not measured yet, so off by default.
        self.decode_stream = None
        self.decode_group = 4
        if self.cuda is not None:
            self.decode_group = 8
            if os.environ.get("VVREADER_DECODE_STREAM", "0") == "1":
                self.decode_stream = mx.new_stream(mx.gpu)

    def _cuda_agrees(self) -> bool:
        """The CUDA kernels against the MLX functions on one synthetic window and frame
        (this also compiles them, before any utterance)."""
        from engine.cuda_frame import check_against_mlx

        return check_against_mlx(self)

    def new_caches(
        self, voice: VoicePrompt, lm_reserve: int, tts_reserve: int
    ) -> tuple[list[KVCache], PairCaches] | tuple[StackedCaches, StackedCaches]:
        """Fresh caches of both LMs seeded from ``voice``, with room for ``lm_reserve``
        text tokens and ``tts_reserve`` more TTS-LM positions (they grow beyond)."""
        if self.cuda is not None:
            stacked = StackedCaches(voice, lm_reserve, tts_reserve)
            return stacked, stacked
        dtype = self.model.model.tts_input_types.weight.dtype
        lm = make_caches(voice.lm_keys, voice.lm_values, dtype, lm_reserve)
        tts = PairCaches(
            make_cfg_caches(
                voice.tts_keys, voice.tts_values, voice.neg_keys, voice.neg_values, dtype,
                tts_reserve,
            )
        )  # fmt: skip
        return lm, tts

    def run_window(
        self, tokens: mx.array, lm_cache: list[KVCache] | StackedCaches,
        tts_cache: PairCaches | StackedCaches,
    ) -> tuple[mx.array, mx.array]:  # fmt: skip
        """One text window (1, L) through the text LM and the positive TTS-LM row:
        (text LM out, TTS LM out), (1, L, hidden) each; the caches move L on."""
        if self.cuda is not None:
            return self.cuda.window(self._embed(tokens)[0], tts_cache)
        return run_window_step(self.window, tokens, lm_cache, tts_cache)

    def sample(
        self, noise: mx.array, pos_cond: mx.array, neg_cond: mx.array, cfg_scale: float
    ) -> mx.array:
        """The latent (1, latent dim) of one frame from its noise and conditions, lazy."""
        if self.cuda is not None:
            return self.cuda.sample(noise, pos_cond, neg_cond, cfg_scale)
        return self._sample(noise, pos_cond, neg_cond, cfg_scale)

    def decoder_state(self) -> list[mx.array] | NativeDecoderState:
        """Zero streaming state of the decoder :meth:`decode_audio` uses."""
        if self.native is not None:
            return self.native.init_state()
        return self._decoder.init_state(1, mx.float32)

    def decode_audio(
        self, latents: mx.array, state: list[mx.array] | NativeDecoderState
    ) -> tuple[np.ndarray, list[mx.array] | NativeDecoderState]:
        """Decode (T, latent) normalised latents continuing from ``state`` (from
        :meth:`decoder_state`): (T, hop) float32 audio, one row per frame, and the state
        to pass next (the native decoder's is updated in place)."""
        T = latents.shape[0]
        if self.native is not None:
            # latent / speech_scaling_factor - speech_bias_factor, in float32 as on MLX.
            x = np.asarray(latents.astype(mx.float32)) / self._latent_scale - self._latent_bias
            # Let the frame launched meanwhile finish first, as it would before an MLX
            # decode queued behind it: run side by side, both with their BLAS threads on
            # two cores, the pair was slower than one after the other (508 against 415 ms
            # per frame end to end, measured here).
            mx.synchronize()
            audio, state = self.native(x, state)
            return audio[:, 0].reshape(T, -1), state
        if self.decode_stream is None:
            audio, state = self.decode(latents[None], state)
        else:
            with mx.stream(self.decode_stream):
                audio, state = self.decode(latents[None], state)
        mx.eval(audio, state)
        return np.array(audio[0, :, 0].astype(mx.float32)).reshape(T, -1), state

    def frame(
        self,
        noise: mx.array,
        pos_cond: mx.array,
        neg_cond: mx.array,
        cfg_scale: float,
        caches: list[CFGKVCache],
        teacher: mx.array | None = None,
    ) -> tuple[mx.array, mx.array, mx.array, mx.array, mx.array]:
        """Sample one frame and feed it back: (latent, fed latent, next positive and
        negative conditions, EOS logit), all lazy; ``caches`` move one position on."""
        if self.cuda is not None:
            return self.cuda.frame(noise, pos_cond, neg_cond, cfg_scale, caches, teacher)
        return self.mlx_frame(noise, pos_cond, neg_cond, cfg_scale, caches, teacher)

    def mlx_frame(
        self,
        noise: mx.array,
        pos_cond: mx.array,
        neg_cond: mx.array,
        cfg_scale: float,
        caches: list[CFGKVCache],
        teacher: mx.array | None = None,
    ) -> tuple[mx.array, mx.array, mx.array, mx.array, mx.array]:
        """:meth:`frame` by the MLX functions (per-layer caches)."""
        forced = self._no_teacher if teacher is None else (teacher, mx.array(True))
        cfg = mx.array(cfg_scale, dtype=mx.float32)
        latent, fed, pos, neg, eos, keys, values, valid = self._frame(
            noise.astype(mx.float32), pos_cond, neg_cond, cfg, *forced, *pair_inputs(caches)
        )
        commit_pair_step(caches, keys, values, valid)
        return latent, fed, pos, neg, eos

    def feed(
        self, fed: mx.array, caches: list[CFGKVCache]
    ) -> tuple[mx.array, mx.array, mx.array]:
        """Feed ``fed`` (1, latent) back, as :meth:`frame` does after sampling: (next
        positive and negative conditions, EOS logit), lazy; ``caches`` move one on."""
        if self.cuda is not None:
            return self.cuda.feed(fed, caches)
        return self.mlx_feed(fed, caches)

    def mlx_feed(
        self, fed: mx.array, caches: list[CFGKVCache]
    ) -> tuple[mx.array, mx.array, mx.array]:
        """:meth:`feed` by the MLX functions (per-layer caches)."""
        pos, neg, eos, keys, values, valid = self._feed(fed, *pair_inputs(caches))
        commit_pair_step(caches, keys, values, valid)
        return pos, neg, eos


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


@dataclass
class _Sampled:
    """A frame whose latent is launched but whose EOS has not been read yet."""

    index: int
    latent: mx.array
    fed: mx.array
    eos_logit: mx.array
    consumed: int
    forced_stop: str | None
    eos_prob: float = 0.0
    stop: str | None = None


@dataclass
class Trace:
    """Intermediates recorded for parity checks."""

    cond_pos: list[np.ndarray] = field(default_factory=list)
    cond_neg: list[np.ndarray] = field(default_factory=list)
    eos_logits: list[float] = field(default_factory=list)
    lm_window0: np.ndarray | None = None
    tts_window0: np.ndarray | None = None
    frame0_steps: list[tuple[mx.array, mx.array]] = field(default_factory=list)


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
    teacher_latents: np.ndarray | None = None,
    trace: Trace | None = None,
    cancel: threading.Event | None = None,
    kernels: FrameKernels | None = None,
    decode_group: int | None = None,
    early_first: bool | None = None,
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
        teacher_latents: feed these latents back (decoder and TTS LMs) instead of the
            sampled ones (parity checks of chaotic full-size cases).
        trace: record intermediates into this object.
        cancel: checked between frames; when set the generator returns.
        kernels: compiled per-frame functions to reuse (built here when None).
        decode_group: frames decoded together after the first (the decoder is bound by
            reading its weights, on the CPU, or by kernel launches, on a GPU: two frames
            cost little more than one). Each frame is still its own chunk; a frame's
            audio comes at most ``decode_group - 1`` frames later. The groups ramp up
            to it: the first frame alone (first audio as soon as possible), then two,
            then ``decode_group`` (so the second chunk comes no later than with groups
            of two). Default: the kernels' ``decode_group``: 4 (on the 2-core CPU with
            the C decoder, four frames took 190 against 2 x 118 ms for two pairs), 8
            with the CUDA frame kernels (the decoder's launches are then most of a
            frame's host time; 8 frames cost 5.7 ms against 5.1 ms for 1, H200).
        early_first: yield the first frame as soon as it is sampled and decoded, before
            it is fed back to the TTS LM (which is what its EOS is read from): first
            audio sooner by one TTS-LM step, as upstream streams a chunk before its EOS
            check. Its ``eos_prob`` is then NaN, and an EOS right after it ends the
            stream without a frame marked last. Default: on unless ``trace`` is given.
    """
    cfg = model.config
    max_positions = cfg.decoder.max_position_embeddings
    # Checked before anything is built or gathered: the embedding reads row ids[i].
    ids = checked_token_ids(text_ids, cfg.decoder.vocab_size)
    check_steps(steps, cfg.diffusion.ddpm_num_steps)
    voice.check_positions(max_positions)
    if early_first is None:
        early_first = trace is None
    decodes = 0  # decoder calls so far: group k (from 0) holds min(2**k, decode_group)
    m = model.model
    dtype = m.tts_input_types.weight.dtype
    if kernels is None or kernels.steps != steps:
        kernels = FrameKernels(model, steps)
    if trace is not None and kernels.cuda is not None:
        kernels = FrameKernels(model, steps, cuda=False)  # the traced parts are MLX's
    if decode_group is None:
        decode_group = kernels.decode_group
    decode_group = max(1, decode_group)
    schedule = kernels.schedule
    noise = noise or seeded_noise(0, cfg.acoustic_vae_dim)
    limit = max_frames if max_frames is not None else default_frame_limit(len(ids))

    # Positive and negative TTS LM in one batch of two (rows 0 and 1).
    lm_cache, tts_cache = kernels.new_caches(voice, len(ids) + 8, len(ids) + limit + 8)
    dec_state = kernels.decoder_state()
    type_speech = m.tts_input_types.weight[0]

    pos_cond = voice.tts_hidden[:, -1].astype(dtype)
    neg_cond = voice.neg_hidden[:, -1].astype(dtype)
    pending: list[_Sampled] = []

    def settle(s: _Sampled, final: bool = False) -> Generator[Frame, None, str | None]:
        """Read frame ``s``'s EOS (waiting for that frame only), then decode and yield the
        pending frames when it is the first, the last, or completes a decode group."""
        nonlocal dec_state, decodes
        logit = float(s.eos_logit)
        prob = float(1.0 / (1.0 + np.exp(-logit)))
        if trace is not None:
            trace.eos_logits.append(logit)
        stop = "eos" if stop_at_eos and prob > 0.5 else s.forced_stop
        s.eos_prob, s.stop = prob, stop
        pending.append(s)
        # The first frame is decoded alone (first audio as soon as possible); later ones
        # in groups, which share one pass over the decoder's weights.
        group = min(decode_group, 1 << min(decodes, 30))
        if stop is not None or final or s.index == 0 or len(pending) >= group:
            decodes += 1
            chunks, dec_state = kernels.decode_audio(
                mx.concatenate([p.fed for p in pending]), dec_state
            )
            for p, chunk in zip(pending, chunks, strict=True):
                yield Frame(
                    index=p.index,
                    latent=np.array(p.latent[0].astype(mx.float32)),
                    audio=chunk,
                    eos_prob=p.eos_prob,
                    tokens_consumed=p.consumed,
                    is_last=p.stop is not None,
                    stop_reason=p.stop,
                )
            pending.clear()
        return stop

    consumed = 0
    frame = 0
    window = 0
    previous: _Sampled | None = None
    while True:
        cur = ids[window * TTS_TEXT_WINDOW_SIZE : (window + 1) * TTS_TEXT_WINDOW_SIZE]
        if cur:
            # Both LMs' positions stay below max_positions (the text LM's, its prompt plus
            # the text so far, trails the TTS LM's only for a prompt of that shape).
            lm_end = voice.lm_length + consumed + len(cur)
            if max(tts_cache.offset + len(cur), lm_end) > max_positions:
                if previous is not None:
                    previous.forced_stop = "context"
                    yield from settle(previous, final=True)
                return
            h_text, h_tts = kernels.run_window(mx.array([cur]), lm_cache, tts_cache)
            pos_cond = h_tts[:, -1]
            consumed += len(cur)
            if trace is not None and window == 0:
                trace.lm_window0 = np.array(h_text[0].astype(mx.float32))
                trace.tts_window0 = np.array(h_tts[0].astype(mx.float32))
        for _ in range(TTS_SPEECH_WINDOW_SIZE):
            if cancel is not None and cancel.is_set():
                return
            if trace is not None:
                trace.cond_pos.append(np.array(pos_cond[0].astype(mx.float32)))
                trace.cond_neg.append(np.array(neg_cond[0].astype(mx.float32)))
            # numpy checks this index (IndexError past the teacher's frames).
            teacher = None if teacher_latents is None else mx.array(teacher_latents[frame][None])
            if early_first and frame == 0 and limit > 1 and trace is None:
                # The first chunk before the first feedback (see early_first).
                latent = kernels.sample(noise(frame), pos_cond, neg_cond, cfg_scale)
                fed = latent if teacher is None else teacher
                mx.eval(latent, fed)
                chunks, dec_state = kernels.decode_audio(fed, dec_state)
                decodes += 1
                yield Frame(
                    index=0,
                    latent=np.array(latent[0].astype(mx.float32)),
                    audio=chunks[0],
                    eos_prob=float("nan"),
                    tokens_consumed=consumed,
                )
                pos_cond, neg_cond, eos_logit = kernels.feed(fed, tts_cache)
                logit = float(eos_logit)
                if tts_cache.offset + 1 > max_positions or (
                    stop_at_eos and 1.0 / (1.0 + np.exp(-logit)) > 0.5
                ):
                    return
                frame += 1
                continue
            if trace is not None and frame == 0:
                # The parts one by one, recording the solver's steps.
                latent = sample_latent(
                    m.prediction_head,
                    schedule,
                    noise(frame),
                    pos_cond,
                    neg_cond,
                    cfg_scale,
                    trace.frame0_steps,
                )
                fed = latent if teacher is None else teacher
                emb = m.acoustic_connector(fed.astype(dtype)) + type_speech
                out = run_pair_step(
                    kernels.tts_pair, mx.broadcast_to(emb, (2, emb.shape[-1])), tts_cache
                )
                pos_cond, neg_cond = out[0:1], out[1:2]
                eos_logit = model.tts_eos_classifier(pos_cond)[0, 0]
            else:
                latent, fed, pos_cond, neg_cond, eos_logit = kernels.frame(
                    noise(frame), pos_cond, neg_cond, cfg_scale, tts_cache, teacher
                )
            forced = None
            if frame + 1 >= limit:
                forced = "frame_limit"
            elif tts_cache.offset + 1 > max_positions:
                forced = "context"
            # Launch this frame and settle the previous one meanwhile: EOS is read one
            # frame late, so building and running the next frame overlap with the wait.
            mx.async_eval(latent, eos_logit, pos_cond, neg_cond)
            current = _Sampled(frame, latent, fed, eos_logit, consumed, forced)
            if previous is not None and (yield from settle(previous)) is not None:
                return  # the frame just launched is discarded (upstream does the same)
            previous = current
            if forced is not None or frame == 0:
                # The first frame is settled at once (first audio as soon as possible).
                if (yield from settle(current, final=forced is not None)) is not None:
                    return
                previous = None
            frame += 1
        window += 1
