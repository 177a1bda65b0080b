"""Synthesised utterances kept for going back."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from vvreader.narration.commands import VoiceSettings

CacheKey = tuple[str, str, float, int, int, str]


def cache_key(text: str, settings: VoiceSettings, seed: int, model_id: str) -> CacheKey:
    """Everything the audio of ``text`` depends on."""
    return (text, settings.voice, settings.cfg_scale, settings.steps, seed, model_id)


class AudioCache:
    """Synthesised utterances by :func:`cache_key`, least recently used first out, bounded
    in bytes, so going back is instant."""

    def __init__(self, max_bytes: int = 256 << 20) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[CacheKey, np.ndarray] = OrderedDict()
        self._bytes = 0

    def get(self, key: CacheKey) -> np.ndarray | None:
        audio = self._items.get(key)
        if audio is not None:
            self._items.move_to_end(key)
        return audio

    def put(self, key: CacheKey, audio: np.ndarray) -> None:
        if key in self._items:
            return
        self._items[key] = audio
        self._bytes += audio.nbytes
        while self._bytes > self.max_bytes and len(self._items) > 1:
            _, old = self._items.popitem(last=False)
            self._bytes -= old.nbytes
