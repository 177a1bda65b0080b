"""The MLX step functions of the generation loop, of fixed shapes so that one
``mx.compile`` trace serves every call: a speech frame of the CFG pair through the TTS LM
(:func:`pair_step`) and a text window through both LMs (:func:`window_step`), each with
the function that applies it to the caches of engine/cache.py.

Inside a step, each layer's cache is a slot of the whole capacity: the write column and
the rows' positions are arrays, and unwritten columns are masked out, so neither the
column nor the positions change the trace.
"""

from __future__ import annotations

from collections.abc import Callable

import engine.backend  # noqa: F401  (chooses MLX's BLAS before mlx.core is imported)

import mlx.core as mx

from engine.cache import BatchPairCaches, CFGKVCache, KVCache


class _PairSlot:
    """One layer of a :class:`CFGKVCache` inside a compiled step: fixed capacity, the
    write column and the two rows' positions as arrays (so one trace serves every frame)."""

    def __init__(
        self,
        keys: mx.array,
        values: mx.array,
        mask: mx.array,
        column: mx.array,
        positions: mx.array,
    ) -> None:
        self.keys, self.values, self.mask = keys, values, mask
        self.column, self.positions = column, positions

    def rope_offset(self) -> mx.array:
        return self.positions

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        self.keys = mx.slice_update(self.keys, keys, self.column, axes=(2,))
        self.values = mx.slice_update(self.values, values, self.column, axes=(2,))
        return self.keys, self.values

    def attention_mask(self, L: int) -> mx.array:
        # Attends over the whole capacity; unwritten columns are masked out.
        return self.mask


def pair_step(stack: Callable[[mx.array, list], mx.array]) -> Callable[..., tuple]:
    """One speech frame of the CFG pair through ``stack`` as a function of
    (x (2, hidden), keys, values, valid, column, positions) returning (out (2, hidden),
    keys, values, valid); fixed shapes, so one ``mx.compile`` trace serves every frame."""

    def step(
        x: mx.array,
        keys: list[mx.array],
        values: list[mx.array],
        valid: mx.array,
        column: mx.array,
        positions: mx.array,
    ) -> tuple[mx.array, list[mx.array], list[mx.array], mx.array]:
        valid = mx.slice_update(valid, mx.ones((2, 1), dtype=mx.bool_), column, axes=(1,))
        mask = valid[:, None, None, :]
        slots = [
            _PairSlot(k, v, mask, column, positions) for k, v in zip(keys, values, strict=True)
        ]
        out = stack(x, slots)
        return out, [s.keys for s in slots], [s.values for s in slots], valid

    return step


def pair_inputs(
    caches: list[CFGKVCache],
) -> tuple[list[mx.array], list[mx.array], mx.array, mx.array, mx.array]:
    """The cache arguments of a :func:`pair_step` function for the next frame (keys,
    values, valid, column, positions), growing the caches first when they are full."""
    first = caches[0]
    if first.column + 1 > first.keys.shape[2]:
        for c in caches:
            c.grow(first.column + 1)
    return (
        [c.keys for c in caches],
        [c.values for c in caches],
        first.valid,
        mx.array([first.column], dtype=mx.int32),
        mx.array(first.positions, dtype=mx.int32),
    )


def commit_pair_step(
    caches: list[CFGKVCache], keys: list[mx.array], values: list[mx.array], valid: mx.array
) -> None:
    """Take a :func:`pair_step` function's new cache arrays: one more column in both rows."""
    for c, k, v in zip(caches, keys, values, strict=True):
        c.keys, c.values, c.valid = k, v, valid
        c.column += 1
        c.positions = [c.positions[0] + 1, c.positions[1] + 1]


def run_pair_step(step: Callable[..., tuple], x: mx.array, caches: list[CFGKVCache]) -> mx.array:
    """Apply a compiled :func:`pair_step` to ``caches`` (one frame, both rows)."""
    out, keys, values, valid = step(x, *pair_inputs(caches))
    commit_pair_step(caches, keys, values, valid)
    return out


class _BatchPairSlot(_PairSlot):
    """One layer of a :class:`BatchPairCaches` inside a compiled step: like
    :class:`_PairSlot`, but each row writes its own column (``column`` is (rows,))."""

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        at = self.column[:, None, None, None]
        self.keys = mx.put_along_axis(self.keys, at, keys, axis=2)
        self.values = mx.put_along_axis(self.values, at, values, axis=2)
        return self.keys, self.values


def batch_pair_step(stack: Callable[[mx.array, list], mx.array]) -> Callable[..., tuple]:
    """:func:`pair_step` for the CFG pairs of several utterances: a function of (x (2B,
    hidden), keys, values, valid, columns (2B,), positions (2B,)) where each row writes its
    own column; one ``mx.compile`` trace per batch size serves every frame."""

    def step(
        x: mx.array,
        keys: list[mx.array],
        values: list[mx.array],
        valid: mx.array,
        columns: mx.array,
        positions: mx.array,
    ) -> tuple[mx.array, list[mx.array], list[mx.array], mx.array]:
        valid = mx.put_along_axis(valid, columns[:, None], mx.array(True), axis=1)
        mask = valid[:, None, None, :]
        slots = [
            _BatchPairSlot(k, v, mask, columns, positions)
            for k, v in zip(keys, values, strict=True)
        ]
        out = stack(x, slots)
        return out, [s.keys for s in slots], [s.values for s in slots], valid

    return step


def batch_pair_inputs(
    caches: BatchPairCaches,
) -> tuple[list[mx.array], list[mx.array], mx.array, mx.array, mx.array]:
    """The cache arguments of a :func:`batch_pair_step` function for the next frame of
    every utterance (keys, values, valid, columns, positions), growing the caches first
    when the utterance furthest on has no free column."""
    caches.reserve(1)
    columns = [c for c in caches.columns for _ in range(2)]
    return (
        caches.keys,
        caches.values,
        caches.valid,
        mx.array(columns, dtype=mx.int32),
        mx.array(caches.positions, dtype=mx.int32),
    )


def commit_batch_pair_step(
    caches: BatchPairCaches, keys: list[mx.array], values: list[mx.array], valid: mx.array
) -> None:
    """Take a :func:`batch_pair_step` function's new cache arrays: one more column in
    every row."""
    caches.keys, caches.values, caches.valid = keys, values, valid
    caches.columns = [c + 1 for c in caches.columns]
    caches.positions = [p + 1 for p in caches.positions]


class _WindowSlot:
    """One layer's cache inside a compiled text-window step: fixed capacity; writes row 0
    (the text LM's only row, the positive row of a CFG pair) from ``column`` on and
    attends over the whole capacity through ``mask``."""

    def __init__(
        self,
        keys: mx.array,
        values: mx.array,
        column: mx.array,
        position: mx.array,
        mask: mx.array,
    ) -> None:
        self.keys, self.values, self.mask = keys, values, mask
        self.column, self.position = column, position

    def rope_offset(self) -> mx.array:
        return self.position

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        self.keys = mx.slice_update(self.keys, keys, self.column, axes=(2,))
        self.values = mx.slice_update(self.values, values, self.column, axes=(2,))
        return self.keys[0:1], self.values[0:1]

    def attention_mask(self, L: int) -> mx.array:
        return self.mask


def _window_mask(valid: mx.array, column: mx.array, L: int) -> mx.array:
    """(L, capacity): query i sees the valid columns up to its own, ``column + i``."""
    cols = mx.arange(valid.shape[-1])
    return valid[None] & (cols[None] <= (column + mx.arange(L))[:, None])


def window_step(
    lm: Callable[[mx.array, list], mx.array],
    tts: Callable[[mx.array, list], mx.array],
    embed: Callable[[mx.array], mx.array],
    text_type: mx.array,
) -> Callable[..., tuple]:
    """One text window through the text LM (``lm`` over ``embed(tokens)``) and the positive
    row of the TTS LM (``tts`` over the result plus ``text_type``), as a function of fixed
    shapes: (tokens (1, L), lm keys, lm values, lm offset, tts keys, tts values, valid,
    column, position) -> (text LM out, TTS LM out, the new cache arrays)."""

    def step(
        tokens: mx.array,
        lm_keys: list[mx.array],
        lm_values: list[mx.array],
        lm_offset: mx.array,
        keys: list[mx.array],
        values: list[mx.array],
        valid: mx.array,
        column: mx.array,
        position: mx.array,
    ) -> tuple:
        L = tokens.shape[1]
        lm_valid = mx.arange(lm_keys[0].shape[2]) < lm_offset + L
        lm_mask = _window_mask(lm_valid, lm_offset, L)
        lm_slots = [
            _WindowSlot(k, v, lm_offset, lm_offset, lm_mask)
            for k, v in zip(lm_keys, lm_values, strict=True)
        ]
        h_text = lm(embed(tokens), lm_slots)
        valid = mx.slice_update(valid, mx.ones((1, L), dtype=mx.bool_), column, axes=(1,))
        mask = _window_mask(valid[0], column, L)
        slots = [
            _WindowSlot(k, v, column, position, mask) for k, v in zip(keys, values, strict=True)
        ]
        h_tts = tts(h_text + text_type, slots)
        return (
            h_text,
            h_tts,
            [s.keys for s in lm_slots],
            [s.values for s in lm_slots],
            [s.keys for s in slots],
            [s.values for s in slots],
            valid,
        )

    return step


def run_window_step(
    step: Callable[..., tuple],
    tokens: mx.array,
    lm_caches: list[KVCache],
    caches: list[CFGKVCache],
) -> tuple[mx.array, mx.array]:
    """Apply a compiled :func:`window_step` to the text-LM caches and the positive row of
    the CFG-pair caches; returns (text LM out, TTS LM out), both (1, L, hidden)."""
    L = tokens.shape[1]
    lm0, first = lm_caches[0], caches[0]
    if lm0.offset + L > lm0.keys.shape[2]:
        for c in lm_caches:
            c.grow(lm0.offset + L)
    if first.column + L > first.keys.shape[2]:
        for c in caches:
            c.grow(first.column + L)
    h_text, h_tts, lm_keys, lm_values, keys, values, valid = step(
        tokens,
        [c.keys for c in lm_caches],
        [c.values for c in lm_caches],
        mx.array([lm0.offset], dtype=mx.int32),
        [c.keys for c in caches],
        [c.values for c in caches],
        first.valid,
        mx.array([first.column], dtype=mx.int32),
        mx.array([first.positions[0]], dtype=mx.int32),
    )
    for c, k, v in zip(lm_caches, lm_keys, lm_values, strict=True):
        c.keys, c.values = k, v
        c.offset += L
    for c, k, v in zip(caches, keys, values, strict=True):
        c.keys, c.values, c.valid = k, v, valid
        c.column += L
        c.positions = [c.positions[0] + L, c.positions[1]]
    return h_text, h_tts


class _BatchWindowSlot:
    """One layer of a :class:`BatchPairCaches` inside a compiled batched text window: the
    positive rows ``rows`` (n,) of some utterances, row i writing L columns from
    ``columns[i]`` at positions from ``positions[i]``; the other rows are unchanged."""

    def __init__(
        self,
        keys: mx.array,
        values: mx.array,
        rows: mx.array,
        columns: mx.array,
        positions: mx.array,
        mask: mx.array,
    ) -> None:
        self.keys, self.values, self.mask = keys, values, mask
        self.rows, self.columns, self.positions = rows, columns, positions

    def rope_offset(self) -> mx.array:
        return self.positions

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        L = keys.shape[2]
        at = (self.columns[:, None] + mx.arange(L)[None])[:, None, :, None]  # (n, 1, L, 1)
        own_keys = mx.put_along_axis(self.keys[self.rows], at, keys, axis=2)
        own_values = mx.put_along_axis(self.values[self.rows], at, values, axis=2)
        rows = self.rows[:, None, None, None]
        self.keys = mx.put_along_axis(self.keys, rows, own_keys, axis=0)
        self.values = mx.put_along_axis(self.values, rows, own_values, axis=0)
        return own_keys, own_values

    def attention_mask(self, L: int) -> mx.array:
        return self.mask


def batch_window_step(tts: Callable[[mx.array, list], mx.array]) -> Callable[..., tuple]:
    """The TTS-LM half of :func:`window_step` for n utterances of a
    :class:`BatchPairCaches` at once (text windows of the same length L): a function of
    (x (n, L, hidden): text LM out plus the text type, keys, values, valid, rows (n,),
    columns (n,), positions (n,)) -> (TTS LM out (n, L, hidden), the new cache arrays).
    One ``mx.compile`` trace per (n, L) and capacity."""

    def step(
        x: mx.array,
        keys: list[mx.array],
        values: list[mx.array],
        valid: mx.array,
        rows: mx.array,
        columns: mx.array,
        positions: mx.array,
    ) -> tuple:
        L = x.shape[1]
        written = columns[:, None] + mx.arange(L)[None]  # (n, L)
        own_valid = mx.put_along_axis(valid[rows], written, mx.array(True), axis=1)
        valid = mx.put_along_axis(valid, rows[:, None], own_valid, axis=0)
        # Query j of row i sees that row's valid columns up to its own, columns[i] + j.
        cols = mx.arange(valid.shape[1])
        mask = (own_valid[:, None, :] & (cols[None, None, :] <= written[:, :, None]))[:, None]
        slots = [
            _BatchWindowSlot(k, v, rows, columns, positions, mask)
            for k, v in zip(keys, values, strict=True)
        ]
        h_tts = tts(x, slots)
        return h_tts, [s.keys for s in slots], [s.values for s in slots], valid

    return step


def run_batch_window_step(
    step: Callable[..., tuple], x: mx.array, caches: BatchPairCaches, items: list[int]
) -> mx.array:
    """Apply a compiled :func:`batch_window_step` to the positive rows of utterances
    ``items`` (distinct, in range) of ``caches``; returns the TTS LM out (n, L, hidden)."""
    L = x.shape[1]
    if len(set(items)) != len(items) or not all(0 <= i < len(caches) for i in items):
        raise IndexError(f"utterances {items} of a batch of {len(caches)}")
    for i in items:
        caches.reserve(L, i)
    h_tts, keys, values, valid = step(
        x,
        caches.keys,
        caches.values,
        caches.valid,
        mx.array([2 * i for i in items], dtype=mx.int32),
        mx.array([caches.columns[i] for i in items], dtype=mx.int32),
        mx.array([caches.positions[2 * i] for i in items], dtype=mx.int32),
    )
    caches.keys, caches.values, caches.valid = keys, values, valid
    for i in items:
        caches.columns[i] += L
        caches.positions[2 * i] += L
    return h_tts


class _BatchTextSlot:
    """One layer of several utterances' text-LM caches stacked (n, kv heads, capacity,
    head dim) inside a compiled text window: row i writes L columns from ``offsets[i]``
    (its positions are its columns) and attends over them and its columns before."""

    def __init__(self, keys: mx.array, values: mx.array, offsets: mx.array, mask: mx.array):
        self.keys, self.values, self.offsets, self.mask = keys, values, offsets, mask

    def rope_offset(self) -> mx.array:
        return self.offsets

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        L = keys.shape[2]
        at = (self.offsets[:, None] + mx.arange(L)[None])[:, None, :, None]  # (n, 1, L, 1)
        self.keys = mx.put_along_axis(self.keys, at, keys, axis=2)
        self.values = mx.put_along_axis(self.values, at, values, axis=2)
        return self.keys, self.values

    def attention_mask(self, L: int) -> mx.array:
        return self.mask


def batch_text_window_step(
    lm: Callable[[mx.array, list], mx.array], embed: Callable[[mx.array], mx.array]
) -> Callable[..., tuple]:
    """The text-LM half of :func:`window_step` for n utterances at once (windows of the
    same length L): (tokens (n, L), keys, values (n, kv heads, capacity, head dim) per
    layer, offsets (n,)) -> (text LM out (n, L, hidden), the new cache arrays). One
    ``mx.compile`` trace per (n, L) and capacity."""

    def step(
        tokens: mx.array, keys: list[mx.array], values: list[mx.array], offsets: mx.array
    ) -> tuple:
        L = tokens.shape[1]
        cols = mx.arange(keys[0].shape[2])
        # Query j of row i sees the columns up to its own, offsets[i] + j.
        written = offsets[:, None] + mx.arange(L)[None]  # (n, L)
        mask = (cols[None, None, :] <= written[:, :, None])[:, None]
        slots = [_BatchTextSlot(k, v, offsets, mask) for k, v in zip(keys, values, strict=True)]
        h_text = lm(embed(tokens), slots)
        return h_text, [s.keys for s in slots], [s.values for s in slots]

    return step


class TextBatch:
    """Applies a compiled :func:`batch_text_window_step` to the text-LM caches of several
    utterances: their arrays stacked (padded to the largest capacity) for the call, and
    each utterance's caches made its rows of the result. When the same utterances come
    back in the same order with the rows of the last call, those are taken as they are
    (the steady state of a batch whose utterances window together)."""

    def __init__(self, step: Callable[..., tuple]) -> None:
        self.step = step
        self._last: tuple[list[int], list[mx.array], list[mx.array], list[list[mx.array]]] | None
        self._last = None

    def _stacked(self, texts: list[list[KVCache]]) -> tuple[list[mx.array], list[mx.array]]:
        last = self._last
        if last is not None and last[0] == [id(t) for t in texts]:
            _, keys, values, rows = last
            same = zip(texts, rows, strict=True)
            if all(c.keys is r for t, rs in same for c, r in zip(t, rs, strict=True)):
                return keys, values
        capacity = max(t[0].keys.shape[2] for t in texts)

        def padded(a: mx.array) -> mx.array:
            B, H, cap, D = a.shape
            if cap == capacity:
                return a
            return mx.concatenate([a, mx.zeros((B, H, capacity - cap, D), dtype=a.dtype)], axis=2)

        layers = range(len(texts[0]))
        keys = [mx.concatenate([padded(t[layer].keys) for t in texts]) for layer in layers]
        values = [mx.concatenate([padded(t[layer].values) for t in texts]) for layer in layers]
        return keys, values

    def __call__(self, tokens: mx.array, texts: list[list[KVCache]]) -> mx.array:
        """Text windows ``tokens`` (n, L) of utterances with text-LM caches ``texts``: the
        text LM out (n, L, hidden); every cache moves L on."""
        L = tokens.shape[1]
        for text in texts:
            first = text[0]
            if first.offset + L > first.keys.shape[2]:
                for c in text:
                    c.grow(first.offset + L)
        keys, values = self._stacked(texts)
        offsets = mx.array([t[0].offset for t in texts], dtype=mx.int32)
        h_text, keys, values = self.step(tokens, keys, values, offsets)
        rows: list[list[mx.array]] = []
        for i, text in enumerate(texts):
            own = []
            for c, k, v in zip(text, keys, values, strict=True):
                c.keys, c.values = k[i : i + 1], v[i : i + 1]
                c.offset += L
                own.append(c.keys)
            rows.append(own)
        self._last = ([id(t) for t in texts], keys, values, rows)
        return h_text
