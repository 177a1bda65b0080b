"""Preallocated key/value caches for the Qwen2 stacks, seeded from a voice prompt."""

from __future__ import annotations

from collections.abc import Callable

import engine.backend  # noqa: F401  (chooses MLX's BLAS before mlx.core is imported)

import mlx.core as mx

# Capacity grows in steps of this many positions (as mlx-lm's KVCache does). Capacities
# are multiples of it, so compiled steps see few distinct shapes across utterances.
_STEP = 256


def _round_up(n: int) -> int:
    return -(-n // _STEP) * _STEP


class KVCache:
    """Keys and values of one attention layer, (B, kv_heads, capacity, head_dim).

    ``offset`` positions are valid; new positions are written in place, so the hot loop
    never concatenates. Keys are stored after RoPE, like the official DynamicCache.
    """

    def __init__(self, keys: mx.array, values: mx.array, reserve: int = _STEP) -> None:
        B, H, L, D = keys.shape
        capacity = _round_up(L + max(reserve, 1))
        self.keys = mx.zeros((B, H, capacity, D), dtype=keys.dtype)
        self.values = mx.zeros((B, H, capacity, D), dtype=values.dtype)
        self.keys[:, :, :L, :] = keys
        self.values[:, :, :L, :] = values
        self.offset = L

    def _grow(self, needed: int) -> None:
        B, H, capacity, D = self.keys.shape
        extra = ((needed - capacity) // _STEP + 1) * _STEP
        pad = mx.zeros((B, H, extra, D), dtype=self.keys.dtype)
        self.keys = mx.concatenate([self.keys, pad], axis=2)
        self.values = mx.concatenate([self.values, pad], axis=2)

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        """Write ``keys``/``values`` (B, kv_heads, L, D) at ``offset``; return all valid ones."""
        L = keys.shape[2]
        end = self.offset + L
        if end > self.keys.shape[2]:
            self._grow(end)
        self.keys[:, :, self.offset : end, :] = keys
        self.values[:, :, self.offset : end, :] = values
        self.offset = end
        return self.keys[:, :, :end, :], self.values[:, :, :end, :]

    @property
    def state(self) -> list[mx.array]:
        return [self.keys, self.values]

    def rope_offset(self) -> int:
        """Position of the next query (positions continue after the cached prompt)."""
        return self.offset

    def attention_mask(self, L: int) -> str | None:
        """Mask for the call just written: "causal" aligns the L new queries with the last
        L keys."""
        return "causal" if L > 1 else None


class CFGKVCache:
    """The positive and the negative TTS-LM caches of one layer as rows 0 and 1 of one
    array, so that a speech frame runs both CFG branches as a batch of two.

    The rows fill different positions: the negative branch never sees text. Both rows
    write a frame into the same column; a text window is written to row 0 only and the
    same columns of row 1 are masked out (as are row 1's columns beyond its shorter
    prompt). Keys are stored after RoPE with each row's own positions, so the unused
    columns change nothing: masked softmax weights are exactly zero.
    """

    def __init__(
        self, pos: tuple[mx.array, mx.array], neg: tuple[mx.array, mx.array], reserve: int
    ) -> None:
        (kp, vp), (kn, vn) = pos, neg
        _, H, Lp, D = kp.shape
        Ln = kn.shape[2]
        self.column = max(Lp, Ln)
        capacity = _round_up(self.column + max(reserve, 1))
        self.keys = mx.zeros((2, H, capacity, D), dtype=kp.dtype)
        self.values = mx.zeros((2, H, capacity, D), dtype=vp.dtype)
        self.keys[0:1, :, :Lp, :] = kp
        self.values[0:1, :, :Lp, :] = vp
        self.keys[1:2, :, :Ln, :] = kn
        self.values[1:2, :, :Ln, :] = vn
        valid = mx.zeros((2, capacity), dtype=mx.bool_)
        valid[0, :Lp] = True
        valid[1, :Ln] = True
        self.valid = valid
        self.positions = [Lp, Ln]
        self._positive_only = False

    @property
    def offset(self) -> int:
        """Position of the positive branch's next token (the 8192-position cap counts it)."""
        return self.positions[0]

    def positive(self) -> CFGKVCache:
        """The next call writes row 0 only (a text window); returns self for chaining."""
        self._positive_only = True
        return self

    def _grow(self, needed: int) -> None:
        B, H, capacity, D = self.keys.shape
        extra = ((needed - capacity) // _STEP + 1) * _STEP
        pad = mx.zeros((B, H, extra, D), dtype=self.keys.dtype)
        self.keys = mx.concatenate([self.keys, pad], axis=2)
        self.values = mx.concatenate([self.values, pad], axis=2)
        self.valid = mx.concatenate([self.valid, mx.zeros((2, extra), dtype=mx.bool_)], axis=1)

    def rope_offset(self) -> int | mx.array:
        if self._positive_only:
            return self.positions[0]
        return mx.array(self.positions)

    def attention_mask(self, L: int) -> str | mx.array | None:
        """Mask for the call just written (call after update_and_fetch); ends a
        positive-only call."""
        if self._positive_only:
            self._positive_only = False
            return "causal" if L > 1 else None
        # (2, 1, 1, columns): each row attends to its own valid columns.
        return self.valid[:, None, None, : self.column]

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        L = keys.shape[2]
        start, end = self.column, self.column + L
        if end > self.keys.shape[2]:
            self._grow(end)
        if self._positive_only:
            self.keys[0:1, :, start:end, :] = keys
            self.values[0:1, :, start:end, :] = values
            self.valid[0, start:end] = True
            self.positions[0] += L
            self.column = end
            return self.keys[0:1, :, :end, :], self.values[0:1, :, :end, :]
        self.keys[:, :, start:end, :] = keys
        self.values[:, :, start:end, :] = values
        self.valid[:, start:end] = True
        self.positions[0] += L
        self.positions[1] += L
        self.column = end
        return self.keys[:, :, :end, :], self.values[:, :, :end, :]


def make_cfg_caches(
    pos_keys: list[mx.array],
    pos_values: list[mx.array],
    neg_keys: list[mx.array],
    neg_values: list[mx.array],
    dtype: mx.Dtype,
    reserve: int = _STEP,
) -> list[CFGKVCache]:
    """One paired (positive, negative) cache per layer, copies of the prompt's caches."""
    return [
        CFGKVCache(
            (kp.astype(dtype), vp.astype(dtype)), (kn.astype(dtype), vn.astype(dtype)), reserve
        )
        for kp, vp, kn, vn in zip(pos_keys, pos_values, neg_keys, neg_values, strict=True)
    ]


def make_caches(
    keys: list[mx.array], values: list[mx.array], dtype: mx.Dtype, reserve: int = _STEP
) -> list[KVCache]:
    """One cache per layer, each a copy of the prompt's keys/values cast to ``dtype``."""
    return [
        KVCache(k.astype(dtype), v.astype(dtype), reserve)
        for k, v in zip(keys, values, strict=True)
    ]


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


def compile_pair_step(stack: Callable[[mx.array, list], mx.array]) -> Callable[..., tuple]:
    """:func:`pair_step`, compiled."""
    return mx.compile(pair_step(stack))


def pair_inputs(
    caches: list[CFGKVCache],
) -> tuple[list[mx.array], list[mx.array], mx.array, mx.array, mx.array]:
    """The cache arguments of a :func:`pair_step` function for the next frame (keys,
    values, valid, column, positions), growing the caches first when they are full."""
    first = caches[0]
    if first.column + 1 > first.keys.shape[2]:
        for c in caches:
            c._grow(first.column + 1)
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
    """Apply a :func:`compile_pair_step` function to ``caches`` (one frame, both rows)."""
    out, keys, values, valid = step(x, *pair_inputs(caches))
    commit_pair_step(caches, keys, values, valid)
    return out


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
            c._grow(lm0.offset + L)
    if first.column + L > first.keys.shape[2]:
        for c in caches:
            c._grow(first.column + L)
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
