"""The frame backend on MLX: a frame and a text window as compiled MLX functions.

``frame`` is a whole speech frame but its decoding, as one compiled function of fixed
shapes: the CFG sampler, the connector, both TTS-LM rows one position on, and the EOS
logit. On a GPU a frame is bound by the host launching its primitives, so one traced
graph (no Python between the parts, element-wise work fused across them) is what makes
it fast; on a CPU it saves rebuilding the graph every frame. The caches are the per-layer
ones of engine/cache.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import engine.backend  # noqa: F401  (chooses MLX's BLAS before mlx.core is imported)

import mlx.core as mx

from engine.cache import (
    BatchPairCaches,
    KVCache,
    UtteranceCaches,
    make_caches,
    make_cfg_caches,
)
from engine.dpm_solver import make_schedule
from engine.model import VibeVoiceRealtime
from engine.sampler import CompiledSampler, sample_latent
from engine.steps import (
    TextBatch,
    batch_pair_inputs,
    batch_pair_step,
    batch_text_window_step,
    batch_window_step,
    commit_batch_pair_step,
    commit_pair_step,
    pair_inputs,
    pair_step,
    run_batch_window_step,
    run_window_step,
    window_step,
)

if TYPE_CHECKING:
    from engine.voices import VoicePrompt


class MLXFrames:
    """The frame backend (engine.frame_backend.FrameBackend) of one model and step count
    on MLX, compiled once and reusable across utterances; also the batched one
    (engine.frame_backend.BatchFrameBackend): B utterances' frames as one batch of 2B
    TTS-LM rows (engine/cache.py's BatchPairCaches)."""

    name = "mlx"
    decode_group = 4
    """Frames decoded together: on the CPU the decoder is bound by reading its weights,
    which a group of four shares."""

    def __init__(self, model: VibeVoiceRealtime, steps: int) -> None:
        m = model.model
        self.model = model
        self.steps = steps
        self.schedule = schedule = make_schedule(steps, model.config.diffusion.ddpm_num_steps)
        self.dtype = dtype = m.tts_input_types.weight.dtype
        hidden = model.config.decoder.hidden_size
        t_emb = m.prediction_head.t_embedder(mx.array(schedule.timesteps, dtype=mx.float32))
        type_speech, type_text = m.tts_input_types.weight[0], m.tts_input_types.weight[1]
        mx.eval(t_emb, type_speech, type_text)
        self.t_emb = t_emb
        self._sample = CompiledSampler(m.prediction_head, schedule)
        step = pair_step(m.tts_language_model)
        self.pair_step = mx.compile(step)
        """One CFG-pair position of the TTS LM (engine.steps.run_pair_step applies it)."""
        # One compiled text window per window length (5, and the last one's).
        self._window = mx.compile(
            window_step(
                m.language_model, m.tts_language_model, m.language_model.embed_tokens, type_text
            )
        )

        def feed(fed: mx.array, *cache: mx.array | list[mx.array]) -> tuple[mx.array, ...]:
            emb = m.acoustic_connector(fed.astype(dtype)) + type_speech
            out, keys, values, valid = step(mx.broadcast_to(emb, (2, hidden)), *cache)
            pos, neg = out[0:1], out[1:2]
            return pos, neg, model.tts_eos_classifier(pos)[0, 0], keys, values, valid

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
            return latent, fed, *feed(fed, *cache)

        self._frame = mx.compile(frame)
        self._feed = mx.compile(feed)
        b_step = batch_pair_step(m.tts_language_model)

        def batch_frame(
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
            # Utterance i's positive and negative rows are 2i and 2i + 1.
            out, keys, values, valid = b_step(mx.repeat(emb, 2, axis=0), *cache)
            pos, neg = out[0::2], out[1::2]
            eos = model.tts_eos_classifier(pos)[:, 0]
            return latent, fed, pos, neg, eos, keys, values, valid

        self._batch_frame = mx.compile(batch_frame)
        self._text_windows = TextBatch(
            mx.compile(batch_text_window_step(m.language_model, m.language_model.embed_tokens))
        )
        self._batch_window = mx.compile(batch_window_step(m.tts_language_model))
        self._type_text = type_text
        cfg = model.config.decoder
        self._pair_shape = (model.config.tts_layers, cfg.kv_heads, cfg.dim_per_head)
        self._no_teacher = (mx.zeros((1, model.config.acoustic_vae_dim)), mx.array(False))

    def new_caches(self, voice: VoicePrompt, lm_reserve: int, tts_reserve: int) -> UtteranceCaches:
        """Fresh caches of both LMs seeded from ``voice``, with room for ``lm_reserve``
        text tokens and ``tts_reserve`` more TTS-LM positions (they grow beyond)."""
        return UtteranceCaches.from_voice(voice, self.dtype, lm_reserve, tts_reserve)

    def failed(self) -> bool:
        """Never: MLX's own kernels report their errors."""
        return False

    def window(self, tokens: mx.array, caches: UtteranceCaches) -> tuple[mx.array, mx.array]:
        """One text window (1, L) through the text LM and the positive TTS-LM row:
        (text LM out, TTS LM out), (1, L, hidden) each; the caches move L on."""
        return run_window_step(self._window, tokens, caches.text, caches.pair)

    def sample(
        self, noise: mx.array, pos_cond: mx.array, neg_cond: mx.array, cfg_scale: float
    ) -> mx.array:
        """The latent (1, latent dim) of one frame from its noise and conditions, lazy."""
        return self._sample(noise, pos_cond, neg_cond, cfg_scale)

    def frame(
        self,
        noise: mx.array,
        pos_cond: mx.array,
        neg_cond: mx.array,
        cfg_scale: float,
        caches: UtteranceCaches,
        teacher: mx.array | None = None,
    ) -> tuple[mx.array, mx.array, mx.array, mx.array, mx.array]:
        """Sample one frame and feed it back (``teacher`` instead, when given): (latent,
        fed latent, next positive and negative conditions, EOS logit), all lazy; the
        caches move one position on."""
        forced = self._no_teacher if teacher is None else (teacher, mx.array(True))
        cfg = mx.array(cfg_scale, dtype=mx.float32)
        latent, fed, pos, neg, eos, keys, values, valid = self._frame(
            noise.astype(mx.float32), pos_cond, neg_cond, cfg, *forced, *pair_inputs(caches.pair)
        )
        commit_pair_step(caches.pair, keys, values, valid)
        return latent, fed, pos, neg, eos

    def feed(self, fed: mx.array, caches: UtteranceCaches) -> tuple[mx.array, mx.array, mx.array]:
        """Feed ``fed`` (1, latent) back, as :meth:`frame` does after sampling: (next
        positive and negative conditions, EOS logit), lazy; the caches move one on."""
        pos, neg, eos, keys, values, valid = self._feed(fed, *pair_inputs(caches.pair))
        commit_pair_step(caches.pair, keys, values, valid)
        return pos, neg, eos

    # ---------------------------------------------------------------- batched frames
    def new_batch(self) -> BatchPairCaches:
        """Caches of a batch with no utterance yet."""
        return BatchPairCaches.empty(*self._pair_shape, self.dtype)

    def join(
        self, voice: VoicePrompt, batch: BatchPairCaches, lm_reserve: int, tts_reserve: int
    ) -> tuple[list[KVCache], int]:
        """Seed a new utterance of ``batch`` from ``voice``: its text-LM caches (its own,
        with room for ``lm_reserve`` tokens) and its index in ``batch`` (its CFG-pair rows,
        copies of the prompt's, with room for ``tts_reserve`` more positions)."""
        text = make_caches(voice.lm_keys, voice.lm_values, self.dtype, lm_reserve)
        pair = make_cfg_caches(
            voice.tts_keys, voice.tts_values, voice.neg_keys, voice.neg_values, self.dtype,
            tts_reserve,
        )  # fmt: skip
        return text, batch.add(pair)

    def batch_windows(
        self,
        tokens: mx.array,
        texts: list[list[KVCache]],
        batch: BatchPairCaches,
        items: list[int],
    ) -> tuple[mx.array, mx.array]:
        """:meth:`window` for utterances ``items`` of ``batch`` at once, one window (n, L)
        of tokens each (``texts``: their text-LM caches): both LMs for all of them as one
        batch. Returns (text LM out, TTS LM out), (n, L, hidden) each."""
        h_text = self._text_windows(tokens, texts)
        h_tts = run_batch_window_step(self._batch_window, h_text + self._type_text, batch, items)
        return h_text, h_tts

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
        """:meth:`frame` for every utterance of ``batch`` at once: ``noise`` (B, latent),
        conditions (B, hidden), ``cfg_scales`` (B, 1), ``teacher`` (B, latent) fed back
        where ``use_teacher`` (B, 1) is true. Returns (latents, fed latents, next positive
        and negative conditions, EOS logits (B,)), lazy; every utterance moves one on."""
        latent, fed, pos, neg, eos, keys, values, valid = self._batch_frame(
            noise.astype(mx.float32), pos_cond, neg_cond, cfg_scales, teacher, use_teacher,
            *batch_pair_inputs(batch),
        )  # fmt: skip
        commit_batch_pair_step(batch, keys, values, valid)
        return latent, fed, pos, neg, eos
