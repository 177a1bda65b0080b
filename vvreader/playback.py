"""Audio ready to play and the clock that says what is audible: a ring of samples with
utterance markers, shared by one producer (the narrator thread) and one consumer (the
audio callback). No locks: each side moves only its own counter."""

from __future__ import annotations

from bisect import bisect_right

import numpy as np

from engine.api import SAMPLE_RATE


class AudioRing:
    """A preallocated float32 ring. ``written`` and ``read`` count samples since the start
    (they never wrap); the producer owns ``written``, the consumer owns ``read``."""

    def __init__(self, seconds: float = 120.0) -> None:
        self.capacity = int(seconds * SAMPLE_RATE)
        self._buf = np.zeros(self.capacity, dtype=np.float32)
        self.written = 0
        """Samples handed to the ring so far (producer side)."""
        self.read = 0
        """Samples taken by the consumer so far."""

    @property
    def ready(self) -> int:
        """Samples written and not yet played."""
        return self.written - self.read

    @property
    def space(self) -> int:
        return self.capacity - self.ready

    def write(self, audio: np.ndarray) -> None:
        """Append ``audio`` (the caller checks ``space`` first)."""
        n = len(audio)
        start = self.written % self.capacity
        first = min(n, self.capacity - start)
        self._buf[start : start + first] = audio[:first]
        if first < n:
            self._buf[: n - first] = audio[first:]
        self.written += n

    def write_silence(self, n: int) -> None:
        start = self.written % self.capacity
        first = min(n, self.capacity - start)
        self._buf[start : start + first] = 0.0
        if first < n:
            self._buf[: n - first] = 0.0
        self.written += n

    def read_into(self, out: np.ndarray) -> int:
        """Copy up to ``len(out)`` ready samples into ``out`` and zero the rest (no
        allocation); returns how many were real samples."""
        n = min(len(out), self.written - self.read)
        start = self.read % self.capacity
        first = min(n, self.capacity - start)
        out[:first] = self._buf[start : start + first]
        if first < n:
            out[first:n] = self._buf[: n - first]
        out[n:] = 0.0
        self.read += n
        return n

    def truncate(self, position: int, margin: int = 0) -> int:
        """Forget what was written after ``position`` (never before ``read + margin``, which
        the consumer may be copying). Returns the new ``written``."""
        self.written = min(self.written, max(self.read + margin, position))
        return self.written


class PlaybackClock:
    """Which utterance is audible: utterance start markers (sample positions in the ring's
    count) against the samples handed to the device minus the device latency."""

    def __init__(self, ring: AudioRing) -> None:
        self.ring = ring
        self.latency = 0
        """Samples between handing audio to the device and hearing it."""
        self._starts: list[int] = []
        self._utterances: list[int] = []

    def mark(self, position: int, utterance: int) -> None:
        """Utterance ``utterance`` starts at sample ``position`` (producer side)."""
        self._starts.append(position)
        self._utterances.append(utterance)

    def drop_after(self, position: int) -> None:
        """Forget markers at or after ``position`` (their audio was truncated)."""
        k = bisect_right(self._starts, position - 1)
        del self._starts[k:], self._utterances[k:]

    @property
    def position(self) -> int:
        """The sample being heard now."""
        return max(0, self.ring.read - self.latency)

    def utterance_at(self, position: int) -> int | None:
        k = bisect_right(self._starts, position) - 1
        return self._utterances[k] if k >= 0 else None

    def audible(self) -> int | None:
        """The utterance being heard now (None before the first one)."""
        return self.utterance_at(self.position)

    def start_of(self, utterance: int) -> int | None:
        """Sample position where ``utterance`` starts, if marked."""
        for s, u in zip(reversed(self._starts), reversed(self._utterances), strict=True):
            if u == utterance:
                return s
        return None

    def next_start_after(self, position: int) -> int | None:
        k = bisect_right(self._starts, position)
        return self._starts[k] if k < len(self._starts) else None
