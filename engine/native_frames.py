"""The frame backend of Linux CPUs: MLX's functions, with a speech frame's sampler and
TTS-LM step in C.

A speech frame is the CFG sampler, the connector, both TTS-LM rows one position on and
the EOS logit (engine/mlx_frames.py). On the CPU the sampler and the TTS-LM step are most
of it, and most of their time in MLX is element-wise work on one thread, which grows with
the rows of a batch. Here both run in C (engine/native_head.py, engine/native_lm.py), the
connector and the EOS head stay compiled MLX functions, and the new keys and values are
written into the MLX caches by one compiled MLX function; text windows, joins and
everything else are the MLX backend's. Same caches, same layouts: only the frame's
implementation differs."""

from __future__ import annotations

import engine.backend  # noqa: F401  (chooses MLX's BLAS before mlx.core is imported)

import mlx.core as mx

from engine.cache import BatchPairCaches, CFGKVCache, UtteranceCaches
from engine.mlx_frames import MLXFrames
from engine.model import VibeVoiceRealtime
from engine.native_head import NativeSampler
from engine.native_lm import NativeTTSStep
from engine.steps import (
    batch_pair_inputs,
    commit_batch_pair_step,
    commit_pair_step,
    pair_inputs,
)


def _write_pair(
    keys: list[mx.array],
    values: list[mx.array],
    valid: mx.array,
    new_k: mx.array,
    new_v: mx.array,
    column: mx.array,
) -> tuple[list[mx.array], list[mx.array], mx.array]:
    """The CFG pair's new keys and values (layers, 2, KV, 1, D) into column ``column``."""
    keys = [mx.slice_update(k, n, column, axes=(2,)) for k, n in zip(keys, new_k, strict=True)]
    values = [mx.slice_update(v, n, column, axes=(2,)) for v, n in zip(values, new_v, strict=True)]
    valid = mx.slice_update(valid, mx.ones((2, 1), dtype=mx.bool_), column, axes=(1,))
    return keys, values, valid


def _write_batch(
    keys: list[mx.array],
    values: list[mx.array],
    valid: mx.array,
    new_k: mx.array,
    new_v: mx.array,
    columns: mx.array,
) -> tuple[list[mx.array], list[mx.array], mx.array]:
    """Every row's new key and value (layers, rows, KV, 1, D) into its own column."""
    at = columns[:, None, None, None]
    keys = [mx.put_along_axis(k, at, n, axis=2) for k, n in zip(keys, new_k, strict=True)]
    values = [mx.put_along_axis(v, at, n, axis=2) for v, n in zip(values, new_v, strict=True)]
    valid = mx.put_along_axis(valid, columns[:, None], mx.array(True), axis=1)
    return keys, values, valid


class NativeFrames(MLXFrames):
    """:class:`engine.mlx_frames.MLXFrames` with a frame's sampler and TTS-LM step in C
    (engine/native_head.py, engine/native_lm.py), which evaluate their inputs (the C reads
    evaluated arrays); the connector, the EOS logit and the cache writes stay lazy.

    Raises:
        ValueError: from :class:`engine.native_lm.NativeTTSStep` or
            :class:`engine.native_head.NativeSampler`, when the C cannot take this model.
    """

    name = "native"

    def __init__(self, model: VibeVoiceRealtime, steps: int) -> None:
        super().__init__(model, steps)
        m = model.model
        self._tts_step = NativeTTSStep(m.tts_language_model)
        dtype = self.dtype
        type_speech = m.tts_input_types.weight[0]
        hidden = model.config.decoder.hidden_size

        def embed(fed: mx.array) -> mx.array:
            return m.acoustic_connector(fed.astype(dtype)) + type_speech

        def fed_embed(
            latent: mx.array, teacher: mx.array, use_teacher: mx.array
        ) -> tuple[mx.array, mx.array]:
            fed = mx.where(use_teacher, teacher, latent)
            return fed, embed(fed)

        self._sampler = NativeSampler(m.prediction_head, self.schedule, self.t_emb)
        self._fed_embed = mx.compile(fed_embed)
        self._embed = mx.compile(embed)
        self._eos = mx.compile(lambda pos: model.tts_eos_classifier(pos)[:, 0])
        self._write_pair = mx.compile(_write_pair)
        self._write_batch = mx.compile(_write_batch)
        self._hidden = hidden

    def _pair_step(
        self, emb: mx.array, caches: list[CFGKVCache]
    ) -> tuple[mx.array, mx.array, mx.array]:
        """Both rows of the CFG pair one position on, fed ``emb`` (1, hidden): (positive
        and negative conditions, EOS logit); the caches move one on."""
        keys, values, valid, column, _ = pair_inputs(caches)
        first = caches[0]
        out, new_k, new_v = self._tts_step(
            mx.broadcast_to(emb, (2, self._hidden)), keys, values, valid,
            [first.column, first.column], first.positions,
        )  # fmt: skip
        commit_pair_step(caches, *self._write_pair(keys, values, valid, new_k, new_v, column))
        pos, neg = out[0:1], out[1:2]
        return pos, neg, self._eos(pos)[0]

    def frame(
        self,
        noise: mx.array,
        pos_cond: mx.array,
        neg_cond: mx.array,
        cfg_scale: float,
        caches: UtteranceCaches,
        teacher: mx.array | None = None,
    ) -> tuple[mx.array, mx.array, mx.array, mx.array, mx.array]:
        """As :meth:`MLXFrames.frame`, with the sampler in C."""
        forced = self._no_teacher if teacher is None else (teacher, mx.array(True))
        latent = self._sampler(noise, pos_cond, neg_cond, cfg_scale)
        fed, emb = self._fed_embed(latent, *forced)
        return latent, fed, *self._pair_step(emb, caches.pair)

    def sample(
        self, noise: mx.array, pos_cond: mx.array, neg_cond: mx.array, cfg_scale: float
    ) -> mx.array:
        """As :meth:`MLXFrames.sample`, in C (evaluated)."""
        return self._sampler(noise, pos_cond, neg_cond, cfg_scale)

    def feed(self, fed: mx.array, caches: UtteranceCaches) -> tuple[mx.array, mx.array, mx.array]:
        """As :meth:`MLXFrames.feed`."""
        return self._pair_step(self._embed(fed), caches.pair)

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
        """As :meth:`MLXFrames.batch_frame`, with the sampler in C."""
        latent = self._sampler(noise, pos_cond, neg_cond, cfg_scales)
        fed, emb = self._fed_embed(latent, teacher, use_teacher)
        keys, values, valid, columns, _ = batch_pair_inputs(batch)
        # Utterance i's positive and negative rows are 2i and 2i + 1.
        out, new_k, new_v = self._tts_step(
            mx.repeat(emb, 2, axis=0), keys, values, valid,
            [c for c in batch.columns for _ in range(2)], list(batch.positions),
        )  # fmt: skip
        commit_batch_pair_step(
            batch, *self._write_batch(keys, values, valid, new_k, new_v, columns)
        )
        pos, neg = out[0::2], out[1::2]
        return latent, fed, pos, neg, self._eos(pos)
