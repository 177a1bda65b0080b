"""Preallocated key/value caches for the Qwen2 stacks, seeded from a voice prompt."""

from __future__ import annotations

import mlx.core as mx

# Capacity grows in steps of this many positions (as mlx-lm's KVCache does).
_STEP = 256


class KVCache:
    """Keys and values of one attention layer, (B, kv_heads, capacity, head_dim).

    ``offset`` positions are valid; new positions are written in place, so the hot loop
    never concatenates. Keys are stored after RoPE, like the official DynamicCache.
    """

    def __init__(self, keys: mx.array, values: mx.array, reserve: int = _STEP) -> None:
        B, H, L, D = keys.shape
        capacity = L + max(reserve, 1)
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


def make_caches(
    keys: list[mx.array], values: list[mx.array], dtype: mx.Dtype, reserve: int = _STEP
) -> list[KVCache]:
    """One cache per layer, each a copy of the prompt's keys/values cast to ``dtype``."""
    return [
        KVCache(k.astype(dtype), v.astype(dtype), reserve)
        for k, v in zip(keys, values, strict=True)
    ]
