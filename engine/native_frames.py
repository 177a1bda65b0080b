"""The frame backend of Linux CPUs: MLX's functions, with a speech frame's sampler and
every LM step in C.

A speech frame is the CFG sampler, the connector, both TTS-LM rows one position on and
the EOS logit (engine/mlx_frames.py); a text window runs its tokens through the text LM
and the positive TTS-LM row. On the CPU the sampler and the LMs are most of that, and
most of their time in MLX is element-wise work on one thread, which grows with the rows
of a batch. Here the sampler (engine/native_head.py) and every step of both LMs (a frame's
one position per row, a window's L per utterance: engine/native_lm.py) run in C; the
token embedding, the connector and the EOS head stay compiled MLX functions, and the new
keys and values are written into the MLX caches by compiled MLX functions; joins and
everything else are the MLX backend's. Same caches, same layouts: only the implementation
differs."""

from __future__ import annotations

import engine.backend  # noqa: F401  (chooses MLX's BLAS before mlx.core is imported)

import mlx.core as mx

from engine.cache import BatchPairCaches, CFGKVCache, KVCache, UtteranceCaches
from engine.mlx_frames import MLXFrames
from engine.model import VibeVoiceRealtime
from engine.native_head import NativeSampler
from engine.native_lm import NativeLMStep
from engine.steps import (
    TextBatch,
    batch_pair_inputs,
    commit_batch_pair_step,
    commit_pair_step,
    pair_inputs,
)


def _write_rows(
    keys: list[mx.array],
    values: list[mx.array],
    valid: mx.array,
    new_k: mx.array,
    new_v: mx.array,
    columns: mx.array,
) -> tuple[list[mx.array], list[mx.array], mx.array]:
    """Every row's new key and value (layers, rows, KV, D) into its own column (a speech
    frame: a CFG pair's two rows, or a batch's)."""
    at = columns[:, None, None, None]
    keys = [
        mx.put_along_axis(k, at, n[:, :, None], axis=2) for k, n in zip(keys, new_k, strict=True)
    ]
    values = [
        mx.put_along_axis(v, at, n[:, :, None], axis=2) for v, n in zip(values, new_v, strict=True)
    ]
    valid = mx.put_along_axis(valid, columns[:, None], mx.array(True), axis=1)
    return keys, values, valid


def write_windows(
    keys: list[mx.array],
    values: list[mx.array],
    valid: mx.array,
    new_k: mx.array,
    new_v: mx.array,
    rows: mx.array,
    columns: mx.array,
) -> tuple[list[mx.array], list[mx.array], mx.array]:
    """Text windows of L tokens into rows ``rows`` (n,) from columns ``columns`` (n,): their
    new keys and values (layers, n L, KV, D), window after window."""
    n = rows.shape[0]
    L = new_k.shape[1] // n
    written = columns[:, None] + mx.arange(L)[None]  # (n, L)
    at = written[:, None, :, None]
    put_rows = rows[:, None, None, None]

    def write(cache: mx.array, new: mx.array) -> mx.array:
        own = new.reshape(n, L, *new.shape[1:]).transpose(0, 2, 1, 3)  # (n, KV, L, D)
        own = mx.put_along_axis(cache[rows], at, own, axis=2)
        return mx.put_along_axis(cache, put_rows, own, axis=0)

    keys = [write(k, n_k) for k, n_k in zip(keys, new_k, strict=True)]
    values = [write(v, n_v) for v, n_v in zip(values, new_v, strict=True)]
    own_valid = mx.put_along_axis(valid[rows], written, mx.array(True), axis=1)
    return keys, values, mx.put_along_axis(valid, rows[:, None], own_valid, axis=0)


class NativeFrames(MLXFrames):
    """:class:`engine.mlx_frames.MLXFrames` with a frame's sampler and both LMs' steps in C
    (engine/native_head.py, engine/native_lm.py), which evaluate their inputs (the C reads
    evaluated arrays); the connector, the EOS logit and the cache writes stay lazy.

    Raises:
        ValueError: from :class:`engine.native_lm.NativeLMStep` or
            :class:`engine.native_head.NativeSampler`, when the C cannot take this model.
    """

    name = "native"

    def __init__(self, model: VibeVoiceRealtime, steps: int) -> None:
        super().__init__(model, steps)
        m = model.model
        self._tts_step = NativeLMStep(m.tts_language_model)
        self._text_step = NativeLMStep(m.language_model)
        self._text_windows = TextBatch(self.text_window_step)
        self._embed_tokens = mx.compile(m.language_model.embed_tokens)
        dtype = self.dtype
        type_speech = m.tts_input_types.weight[0]
        self._hidden = model.config.decoder.hidden_size

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
        self._write_rows = mx.compile(_write_rows)
        self._write_windows = mx.compile(write_windows)

    def _pair_step(
        self, emb: mx.array, caches: list[CFGKVCache]
    ) -> tuple[mx.array, mx.array, mx.array]:
        """Both rows of the CFG pair one position on, fed ``emb`` (1, hidden): (positive
        and negative conditions, EOS logit); the caches move one on."""
        keys, values, valid, _, _ = pair_inputs(caches)
        first = caches[0]
        columns = [first.column, first.column]
        out, new_k, new_v = self._tts_step(
            mx.broadcast_to(emb, (2, self._hidden)), keys, values, valid, columns,
            first.positions,
        )  # fmt: skip
        written = self._write_rows(keys, values, valid, new_k, new_v, mx.array(columns))
        commit_pair_step(caches, *written)
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

    def text_window_step(
        self, tokens: mx.array, keys: list[mx.array], values: list[mx.array], offsets: mx.array
    ) -> tuple[mx.array, list[mx.array], list[mx.array]]:
        """engine.steps.batch_text_window_step's function, in C: text windows ``tokens``
        (n, L) through the text LM over its caches stacked (n, KV, capacity, D) per layer,
        row i from column ``offsets[i]`` (its positions are its columns)."""
        n, L = tokens.shape
        at = offsets.tolist()
        valid = mx.arange(keys[0].shape[2])[None] < offsets[:, None]
        out, new_k, new_v = self._text_step(
            self._embed_tokens(tokens).reshape(n * L, self._hidden), keys, values, valid,
            [o + t for o in at for t in range(L)], [o + t for o in at for t in range(L)],
            rows=[i for i in range(n) for _ in range(L)],
        )  # fmt: skip
        keys, values, _ = self._write_windows(
            keys, values, valid, new_k, new_v, mx.arange(n), offsets
        )
        return out.reshape(n, L, self._hidden), keys, values

    def window(self, tokens: mx.array, caches: UtteranceCaches) -> tuple[mx.array, mx.array]:
        """As :meth:`MLXFrames.window`, both LMs in C."""
        L = tokens.shape[1]
        h_text = self._text_windows(tokens, [caches.text])
        pair, first = caches.pair, caches.pair[0]
        if first.column + L > first.keys.shape[2]:
            for c in pair:
                c.grow(first.column + L)
        column, position = first.column, first.positions[0]
        keys, values = [c.keys for c in pair], [c.values for c in pair]
        out, new_k, new_v = self._tts_step(
            (h_text + self._type_text)[0], keys, values, first.valid,
            [column + t for t in range(L)], [position + t for t in range(L)], rows=[0] * L,
        )  # fmt: skip
        keys, values, valid = self._write_windows(
            keys, values, first.valid, new_k, new_v, mx.array([0]), mx.array([column])
        )
        for c, k, v in zip(pair, keys, values, strict=True):
            c.keys, c.values, c.valid = k, v, valid
            c.column += L
            c.positions = [c.positions[0] + L, c.positions[1]]
        return h_text, out[None]

    def batch_windows(
        self,
        tokens: mx.array,
        texts: list[list[KVCache]],
        batch: BatchPairCaches,
        items: list[int],
    ) -> tuple[mx.array, mx.array]:
        """As :meth:`MLXFrames.batch_windows`, both LMs in C."""
        n, L = tokens.shape
        if len(set(items)) != len(items) or not all(0 <= i < len(batch) for i in items):
            raise IndexError(f"utterances {items} of a batch of {len(batch)}")
        h_text = self._text_windows(tokens, texts)
        for i in items:
            batch.reserve(L, i)
        rows = [2 * i for i in items]
        columns = [batch.columns[i] for i in items]
        positions = [batch.positions[2 * i] for i in items]
        out, new_k, new_v = self._tts_step(
            (h_text + self._type_text).reshape(n * L, self._hidden), batch.keys, batch.values,
            batch.valid, [c + t for c in columns for t in range(L)],
            [p + t for p in positions for t in range(L)], rows=[r for r in rows for _ in range(L)],
        )  # fmt: skip
        batch.keys, batch.values, batch.valid = self._write_windows(
            batch.keys, batch.values, batch.valid, new_k, new_v, mx.array(rows),
            mx.array(columns),
        )  # fmt: skip
        for i in items:
            batch.columns[i] += L
            batch.positions[2 * i] += L
        return h_text, out.reshape(n, L, self._hidden)

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
        commit_batch_pair_step(batch, *self._write_rows(keys, values, valid, new_k, new_v, columns))
        pos, neg = out[0::2], out[1::2]
        return latent, fed, pos, neg, self._eos(pos)
