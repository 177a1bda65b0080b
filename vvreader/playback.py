"""Audio ready to play and the clock that says what is audible: a ring of samples with
utterance markers, shared by one producer (the narrator thread) and one consumer (the
audio callback). No locks: each side moves only its own counter."""

from __future__ import annotations

import threading
import time
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
        self._write_lock = threading.Lock()
        """Between the producer's writes and :meth:`rewind` (never taken by the consumer)."""

    @property
    def ready(self) -> int:
        """Samples written and not yet played."""
        return self.written - self.read

    @property
    def space(self) -> int:
        return self.capacity - self.ready

    def try_write(self, audio: np.ndarray) -> bool:
        """Append ``audio`` if there is space for it (checked and written atomically with
        respect to :meth:`rewind`); False if there is not."""
        with self._write_lock:
            if self.space < len(audio):
                return False
            self.write(audio)
            return True

    def try_write_silence(self, n: int) -> bool:
        with self._write_lock:
            if self.space < n:
                return False
            self.write_silence(n)
            return True

    def rewind(self, position: int) -> int:
        """Consumer side, while the consumer is stopped: the samples from ``position`` on
        were not heard (the device dropped them), so read them again. Never further back
        than the oldest sample still in the ring, nor forward. Returns the new ``read``."""
        with self._write_lock:
            self.read = min(self.read, max(position, self.written - self.capacity, 0))
            return self.read

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

    def peek(self, start: int, n: int) -> np.ndarray:
        """A copy of samples ``start .. start + n`` (written, and not yet overwritten)."""
        i = start % self.capacity
        first = min(n, self.capacity - i)
        if first == n:
            return self._buf[i : i + n].copy()
        return np.concatenate((self._buf[i:], self._buf[: n - first]))

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
    count) against what the device is playing now.

    Outputs that know their timing call :meth:`stamp` once per block from the audio
    callback: which ring samples the block carries, and when its first frame will be heard
    (the callback time plus the device's reported delay). The clock then interpolates the
    playhead between callbacks, so it is exact to a few milliseconds instead of to a
    block, follows the latency the device actually has, and stands still during pauses
    and underruns (the padding is silence, not ring audio). Outputs that do not stamp get
    ``ring.read - latency``. When the audio is played faster or slower than it was made
    (:mod:`vvreader.stretch`), a block carries more or fewer ring samples than it has
    frames, and the position moves through them at that rate: the clock counts in the
    utterances' own samples.
    """

    HISTORY = 64
    """Blocks remembered (readers look at the last :data:`_LOOK` only, so the writer can
    never be rewriting a row that a reader uses)."""
    _LOOK = 48
    _ORIGIN_BLOCKS = 8
    """The time origin is the median over this many recent blocks: a callback that ran late
    (CPU load, the GIL) or a stale delay from the device moves only its own estimate, and
    a lasting change of the device's latency is followed within half of them."""

    def __init__(self, ring: AudioRing) -> None:
        self.ring = ring
        self.latency = 0
        """Samples between handing audio to the device and hearing it (the latest one
        measured, or the device's nominal latency)."""
        self._starts: list[int] = []
        self._utterances: list[int] = []
        # Per block, written by the audio callback only (preallocated: no allocation,
        # no lock): the device frame it starts at, the ring position and number of ring
        # samples it carries, and the time device frame 0 is heard by its estimate.
        self._frame = np.zeros(self.HISTORY, dtype=np.float64)
        self._read = np.zeros(self.HISTORY, dtype=np.float64)
        self._got = np.zeros(self.HISTORY, dtype=np.float64)
        self._rate = np.ones(self.HISTORY, dtype=np.float64)
        self._origin = np.zeros(self.HISTORY, dtype=np.float64)
        self._stamps = 0
        self._floor = -1
        """The position never goes back before this (the last sample heard before the
        output was stopped and started again)."""

    def restart(self) -> None:
        """The output stopped its stream and dropped what the device held (the ring's
        ``read`` was stepped back to the first sample not heard); it will start a new one.
        The old stamps are forgotten, and until the new stream's first sample is heard the
        position stands at the last sample heard. Call only while no callback runs."""
        self._floor = self.ring.read - 1
        self._stamps = 0

    def mark(self, position: int, utterance: int) -> None:
        """Utterance ``utterance`` starts at sample ``position`` (producer side)."""
        self._starts.append(position)
        self._utterances.append(utterance)

    def drop_after(self, position: int) -> None:
        """Forget markers at or after ``position`` (their audio was truncated)."""
        k = bisect_right(self._starts, position - 1)
        del self._starts[k:], self._utterances[k:]

    def stamp(
        self, frame: int, read: int, got: int, heard_at: float, carried: int | None = None
    ) -> None:
        """Audio callback side: the block starting at device frame ``frame`` plays ``got``
        frames of audio (then silence) made from ring samples ``read .. read + carried``
        (``carried`` is ``got`` at normal speed), and its first frame will be heard at
        ``heard_at`` (``time.monotonic()`` seconds)."""
        i = self._stamps % self.HISTORY
        self._frame[i] = frame
        self._read[i] = read
        self._got[i] = got
        self._rate[i] = 1.0 if carried is None or got == 0 else carried / got
        self._origin[i] = heard_at - frame / SAMPLE_RATE
        self._stamps += 1  # publishes the row

    @property
    def position(self) -> int:
        """The ring sample being heard now (-1 before the first one)."""
        return self.position_at(time.monotonic())

    def position_at(self, now: float) -> int:
        """The ring sample heard at ``now`` (``time.monotonic()``; -1 before the first)."""
        count = self._stamps
        if count == 0:
            return max(self._floor, self.ring.read - self.latency - 1)
        rows = [(count - 1 - j) % self.HISTORY for j in range(min(count, self._LOOK))]
        origin = float(np.median([self._origin[i] for i in rows[: self._ORIGIN_BLOCKS]]))
        frame = (now - origin) * SAMPLE_RATE  # device frames heard so far
        for i in rows:
            if self._frame[i] <= frame:
                into = frame - self._frame[i]
                rate = self._rate[i]
                if into < self._got[i]:
                    return int(self._read[i] + into * rate)
                return int(self._read[i] + self._got[i] * rate) - 1  # in the padding after it
        i = rows[-1]  # before the oldest block remembered: the start, or a stale clock
        return max(self._floor, int(self._read[i] - (self._frame[i] - frame)) - 1)

    def utterance_at(self, position: int) -> int | None:
        k = bisect_right(self._starts, position) - 1
        return self._utterances[k] if k >= 0 else None

    def audible(self) -> int | None:
        """The utterance being heard now (None before the first sound)."""
        return self.utterance_at(self.position)

    def current(self) -> int | None:
        """The utterance being heard, or before the first sound the first one queued."""
        return self.utterance_at(max(0, self.position))

    def start_of(self, utterance: int) -> int | None:
        """Sample position where ``utterance`` starts, if marked."""
        for s, u in zip(reversed(self._starts), reversed(self._utterances), strict=True):
            if u == utterance:
                return s
        return None
