"""Listening speed: time-scale modification of the voice's audio with the pitch kept (WSOLA,
waveform-similarity overlap-add, tuned for speech), streaming from a ring or whole.

Frames of :data:`FRAME` samples (30 ms: at least two periods of a low voice) are laid
:data:`HOP` apart in the output with a Hann window (which sums to one at 50 % overlap) and
taken ``speed * HOP`` apart in the input, each shifted by up to :data:`TOLERANCE` so that
it continues the waveform of the frame before it (the best cross-correlation with that
frame's natural continuation). At speed 1 a step lays down the natural continuation,
which equals the input sample for sample, so 1x is the input exactly, and moving between
1x and another speed needs no crossfade of its own.

Why not a library: python-stretch (MIT, Signalsmith Stretch) has wheels for Linux x86-64
and macOS arm64 only (none for Linux aarch64 nor macOS x86-64, where it would need a C++
build), and it hands back whole buffers without saying which input sample each output
sample came from; here every step knows it, which is what keeps the highlight exact.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from engine.api import SAMPLE_RATE

FRAME = int(0.030 * SAMPLE_RATE)
HOP = FRAME // 2
TOLERANCE = int(0.0075 * SAMPLE_RATE)
"""How far (each way) a frame may move from its nominal place: half a period of a 67 Hz
voice, so the search always finds a matching phase."""
_SILENT = 1e-8
"""A frame with less energy than this is silence."""
_WINDOW = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(FRAME) / FRAME)).astype(np.float32)
_RISE, _FALL = _WINDOW[:HOP], _WINDOW[HOP:]


class Source(Protocol):
    """Samples counted from the start of the stream (an :class:`~vvreader.playback.AudioRing`
    or :class:`ArraySource`)."""

    written: int

    def peek(self, start: int, n: int) -> np.ndarray:
        """A copy of samples ``start .. start + n`` (all written)."""
        ...


class ArraySource:
    """A whole signal as a :class:`Source`."""

    def __init__(self, audio: np.ndarray) -> None:
        self.audio = np.asarray(audio, dtype=np.float32)
        self.written = len(self.audio)

    def peek(self, start: int, n: int) -> np.ndarray:
        return self.audio[start : start + n].copy()


class Stretcher:
    """Streaming WSOLA over a :class:`Source`.

    The state is where the last frame was taken (``_prev``) and where it should have been
    (``_nominal``); what is owed to the output is always the falling half of that frame,
    which is the input from ``_prev + HOP`` faded out, so :attr:`position` (the input
    sample the next output sample comes from) is ``_prev + HOP``.
    """

    def __init__(self, position: int = 0) -> None:
        self.reset(position)

    def reset(self, position: int) -> None:
        """Go on from input sample ``position``, as if everything before it was played."""
        self._prev = position - HOP
        self._nominal = float(self._prev)
        self._pending = np.zeros(0, np.float32)
        self._pending_from = float(position)
        self._pending_to = float(position)

    @property
    def pending(self) -> int:
        """Output samples made and not yet read."""
        return len(self._pending)

    @property
    def position(self) -> float:
        """The input sample the next output sample comes from."""
        if len(self._pending):
            return self._pending_from
        return float(self._prev + HOP)

    def _step(self, source: Source, speed: float) -> tuple[np.ndarray, float, float]:
        """One hop of output, with the input positions it spans; an empty array when the
        source has nothing more."""
        start = self._prev + HOP
        available = source.written - start
        if available <= 0:
            return np.zeros(0, np.float32), start, start
        nominal = self._nominal + HOP * speed
        lo = int(nominal) - TOLERANCE
        end = max(lo + 2 * TOLERANCE + FRAME, start + FRAME)
        if speed == 1.0 or lo < 0 or end > source.written:
            # The natural continuation: exact at 1x; and at the end of what is written
            # (the voice is still being made, or the reading ends), played as it is.
            n = min(HOP, available)
            out = source.peek(start, n)
            self._prev += n
            self._nominal = float(self._prev)
            return out, start, start + n
        template = source.peek(start, FRAME)
        region = source.peek(lo, FRAME + 2 * TOLERANCE)
        scores = np.correlate(region, template, mode="valid")
        energy = np.convolve(region * region, np.ones(FRAME, np.float32), mode="valid")
        if float(np.dot(template, template)) < _SILENT:
            # Nothing to match (a pause): the quietest candidate, so that a pause is not
            # broken by a frame taken back from the sound before it.
            best = int(np.argmin(energy))
        else:
            best = int(np.argmax(scores / np.sqrt(energy + 1e-9)))
        chosen = lo + best
        frame = region[best : best + FRAME]
        out = template[:HOP] * _FALL + frame[:HOP] * _RISE
        self._prev, self._nominal = chosen, nominal
        return out, start, chosen + HOP

    def read(self, source: Source, n: int, speed: float) -> tuple[np.ndarray, float]:
        """Up to ``n`` output samples at ``speed`` (fewer when the source runs out), and
        the input position after the last of them."""
        parts = [self._pending]
        have = len(self._pending)
        spans = [(self._pending_from, self._pending_to, have)]
        while have < n:
            out, a, b = self._step(source, speed)
            if not len(out):
                break
            parts.append(out)
            spans.append((a, b, len(out)))
            have += len(out)
        audio = np.concatenate(parts) if len(parts) > 1 else parts[0]
        used = min(n, len(audio))
        # The input position after output sample ``used``: linear within its step.
        end, seen = float(self.position), 0
        for a, b, k in spans:
            if k and seen + k >= used:
                end = a + (b - a) * (used - seen) / k
                self._pending = audio[used:].copy()
                self._pending_from, self._pending_to = end, spans[-1][1]
                break
            seen += k
        else:
            self._pending = np.zeros(0, np.float32)
        if not len(self._pending):
            end = float(self._prev + HOP)
            self._pending_from = self._pending_to = end
        return audio[:used], end


def stretch(audio: np.ndarray, speed: float) -> np.ndarray:
    """``audio`` played at ``speed`` with its pitch kept: ``len(audio) / speed`` samples
    (the end is padded with silence while stretching, so the last frames are stretched
    like the others)."""
    if speed == 1.0 or not len(audio):
        return np.asarray(audio, dtype=np.float32)
    pad = np.zeros(2 * (FRAME + 2 * TOLERANCE), np.float32)
    source = ArraySource(np.concatenate((np.asarray(audio, np.float32), pad)))
    n = int(round(len(audio) / speed))
    out, _ = Stretcher().read(source, n, speed)
    return out
