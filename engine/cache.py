"""Preallocated key/value caches for the Qwen2 stacks, seeded from a voice prompt."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import engine.backend  # noqa: F401  (chooses MLX's BLAS before mlx.core is imported)

import mlx.core as mx

if TYPE_CHECKING:
    from engine.voices import VoicePrompt

# Capacity grows in steps of this many positions (as mlx-lm's KVCache does). A compiled
# step attends over the whole capacity (unwritten columns masked), so room made before it
# is needed costs work in every frame: on a 2-core CPU each 64 columns cost a batch of
# four about 7 ms a frame. Capacities are multiples of the step, so compiled steps see few
# distinct shapes (each new one is traced once: 20-45 ms on a 2-core CPU).
_STEP = 64


def _round_up(n: int) -> int:
    return -(-n // _STEP) * _STEP


def _pad_columns(a: mx.array, capacity: int) -> mx.array:
    """``a`` with masked zero columns up to ``capacity``: keys or values (rows, kv heads,
    columns, head dim), or valid flags (rows, columns)."""
    axis = 2 if a.ndim == 4 else 1
    extra = capacity - a.shape[axis]
    if extra == 0:
        return a
    shape = list(a.shape)
    shape[axis] = extra
    return mx.concatenate([a, mx.zeros(shape, dtype=a.dtype)], axis=axis)


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

    def grow(self, needed: int) -> None:
        """Room for ``needed`` columns, in whole steps of the capacity."""
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
            self.grow(end)
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

    def grow(self, needed: int) -> None:
        """Room for ``needed`` columns, in whole steps of the capacity."""
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
            self.grow(end)
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


@dataclass
class UtteranceCaches:
    """The caches of one utterance on the MLX frame backend: the text LM's, one per layer,
    and the TTS LM's CFG pair, one per layer."""

    text: list[KVCache]
    pair: list[CFGKVCache]

    @classmethod
    def from_voice(
        cls, voice: VoicePrompt, dtype: mx.Dtype, lm_reserve: int, tts_reserve: int
    ) -> UtteranceCaches:
        """Copies of ``voice``'s caches in ``dtype``, with room for ``lm_reserve`` text
        tokens and ``tts_reserve`` more TTS-LM positions (they grow beyond)."""
        text = make_caches(voice.lm_keys, voice.lm_values, dtype, lm_reserve)
        pair = make_cfg_caches(
            voice.tts_keys, voice.tts_values, voice.neg_keys, voice.neg_values, dtype,
            tts_reserve,
        )  # fmt: skip
        return cls(text, pair)

    @property
    def offset(self) -> int:
        """Position of the positive TTS-LM row's next token (the position cap counts it)."""
        return self.pair[0].offset


class BatchPairCaches:
    """The CFG-pair caches of several utterances as rows of one array per layer, so that a
    speech frame of B utterances runs as one batch of 2B rows: utterance i's positive and
    negative rows are 2i and 2i + 1.

    Each utterance keeps the layout of its :class:`CFGKVCache` (its two rows share a write
    column; a text window writes its positive row only; each row has its own positions),
    but the utterances' columns differ: an utterance joins with its own prompt length and
    windows at its own pace. Columns beyond an utterance's own are masked out, so a row
    attends to exactly what it would attend to alone. Capacity is the batch's: it grows
    for the utterance furthest on and shrinks back when utterances leave.

    Utterances that join between two uses of the arrays (a batch's start, or several
    joining at once) are appended to them together, at the next use, in one copy of the
    batch rather than one each. (Arrays set meanwhile are the joined utterances' rows; the
    joining ones still come after them.)
    """

    def __init__(self, keys: list[mx.array], values: list[mx.array], valid: mx.array) -> None:
        self._keys, self._values, self._valid = keys, values, valid
        self._joining: list[tuple[list[mx.array], list[mx.array], mx.array]] = []
        """The arrays (keys and values per layer, valid) of the utterances added since the
        batch's arrays were last used."""
        self.columns: list[int] = []
        """Per utterance, the next column of its rows."""
        self.positions: list[int] = []
        """Per row (2 per utterance), the position of its next token."""

    @classmethod
    def empty(cls, layers: int, kv_heads: int, head_dim: int, dtype: mx.Dtype) -> BatchPairCaches:
        """No utterance yet."""
        shape = (0, kv_heads, _STEP, head_dim)
        keys = [mx.zeros(shape, dtype=dtype) for _ in range(layers)]
        values = [mx.zeros(shape, dtype=dtype) for _ in range(layers)]
        return cls(keys, values, mx.zeros((0, _STEP), dtype=mx.bool_))

    def __len__(self) -> int:
        return len(self.columns)

    @property
    def keys(self) -> list[mx.array]:
        """Per layer, (2B, kv heads, capacity, head dim)."""
        self._join()
        return self._keys

    @keys.setter
    def keys(self, keys: list[mx.array]) -> None:
        self._keys = keys

    @property
    def values(self) -> list[mx.array]:
        self._join()
        return self._values

    @values.setter
    def values(self, values: list[mx.array]) -> None:
        self._values = values

    @property
    def valid(self) -> mx.array:
        """(2B, capacity): which columns of each row hold a token."""
        self._join()
        return self._valid

    @valid.setter
    def valid(self, valid: mx.array) -> None:
        self._valid = valid

    @property
    def capacity(self) -> int:
        return int(self.keys[0].shape[2])

    def _join(self) -> None:
        """Append the rows of the utterances added since the last use, in one copy."""
        if not self._joining:
            return
        joining, self._joining = self._joining, []
        capacity = max(int(self._keys[0].shape[2]), *(k[0].shape[2] for k, _, _ in joining))
        self._resize(capacity)

        def padded(a: mx.array) -> mx.array:
            return _pad_columns(a, capacity)

        layers = range(len(self._keys))
        self._keys = [
            mx.concatenate([self._keys[i], *(padded(k[i]) for k, _, _ in joining)]) for i in layers
        ]
        self._values = [
            mx.concatenate([self._values[i], *(padded(v[i]) for _, v, _ in joining)])
            for i in layers
        ]
        self._valid = mx.concatenate([self._valid, *(padded(ok) for _, _, ok in joining)])

    def offset(self, item: int) -> int:
        """Position of utterance ``item``'s positive row's next token."""
        return self.positions[2 * item]

    def _resize(self, capacity: int) -> None:
        """Pad (zeros, masked) or cut every array of the utterances joined so far to
        ``capacity`` columns."""
        now = int(self._keys[0].shape[2])
        if capacity == now:
            return
        if capacity < now:
            self._keys = [k[:, :, :capacity] for k in self._keys]
            self._values = [v[:, :, :capacity] for v in self._values]
            self._valid = self._valid[:, :capacity]
            return
        self._keys = [_pad_columns(k, capacity) for k in self._keys]
        self._values = [_pad_columns(v, capacity) for v in self._values]
        self._valid = _pad_columns(self._valid, capacity)

    def reserve(self, columns: int, item: int | None = None) -> None:
        """Room for ``columns`` more columns of utterance ``item`` (all when None)."""
        ends = self.columns if item is None else [self.columns[item]]
        needed = max(ends, default=0) + columns
        if needed > self.capacity:
            self._resize(_round_up(needed))

    def add(self, pair: list[CFGKVCache]) -> int:
        """Append the rows of one utterance's caches (copies); returns its index."""
        if len(pair) != len(self._keys):
            raise ValueError(f"{len(pair)} layers of caches for a batch of {len(self._keys)}")
        first = pair[0]
        self._joining.append(([c.keys for c in pair], [c.values for c in pair], first.valid))
        self.columns.append(first.column)
        self.positions.extend(first.positions)
        return len(self.columns) - 1

    def remove(self, items: list[int]) -> None:
        """Drop the rows of utterances ``items``; the others keep their order (an index
        after a removed one moves down)."""
        gone = set(items)
        if not gone:
            return
        if not gone <= set(range(len(self.columns))):
            raise IndexError(f"utterances {sorted(gone)} of a batch of {len(self.columns)}")
        keep = [i for i in range(len(self.columns)) if i not in gone]
        rows = mx.array([r for i in keep for r in (2 * i, 2 * i + 1)], dtype=mx.int32)
        self.keys = [k[rows] for k in self.keys]
        self.values = [v[rows] for v in self.values]
        self.valid = self.valid[rows]
        self.columns = [self.columns[i] for i in keep]
        self.positions = [p for i in keep for p in self.positions[2 * i : 2 * i + 2]]
        # Back to the room the utterance furthest on needs.
        self._resize(_round_up(max(self.columns, default=0) + 1))
