"""Which word is being spoken, approximately: VibeVoice gives no word timings, so each
utterance's audio is spread over its words by their length in syllables, calibrated by how
far the engine had read into the text when it made each stretch of audio.

The engine reads text a window ahead of the speech it makes: the text spoken by a frame is
about what it had read, less what it had read before its first frame (that first window).
So the fraction of the text spoken by sample ``s`` of the utterance is taken as
``(consumed(s) - consumed(first frame)) / total`` up to the frame where it has read all
the text, and from there straight on to the whole text at the last sample."""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass

import numpy as np

_WORD = re.compile(r"[^\W_]+(?:['\u2019-][^\W_]+)*")
_VOWELS = re.compile(r"[aeiouy\u00e0-\u00ff]+")


@dataclass(frozen=True)
class TokenMark:
    """How far the engine had read when it made the audio up to :attr:`samples`."""

    samples: int
    """Samples of the utterance made so far (the end of this chunk)."""
    consumed: int
    """Text tokens read."""
    total: int
    """Text tokens of the utterance."""


def syllables(word: str) -> int:
    """A word's syllables by its vowel groups (a silent final e dropped); digits count
    one and a half each (numbers are read out)."""
    digits = sum(ch.isdigit() for ch in word)
    if digits:
        return max(1, round(1.5 * digits))
    w = word.lower()
    n = len(_VOWELS.findall(w))
    if n > 1 and w.endswith("e") and not w.endswith(("le", "ee")):
        n -= 1
    return max(1, n)


def words(text: str, offset: int = 0) -> list[tuple[int, int, int]]:
    """(start, end, syllables) of each word of ``text``, offsets shifted by ``offset``."""
    return [
        (m.start() + offset, m.end() + offset, syllables(m.group())) for m in _WORD.finditer(text)
    ]


def spoken_fraction(into: int, length: int, marks: list[TokenMark]) -> float:
    """How much of the utterance's text has been spoken ``into`` samples of its
    ``length``: from the engine's marks where there are some, else in proportion."""
    if length <= 0:
        return 1.0
    usable = [m for m in marks if m.total > 0]
    if not usable:
        return min(1.0, max(0.0, into / length))
    lead = usable[0].consumed
    xs, ys = [0.0], [0.0]
    for m in usable:
        if m.samples >= length:
            break
        xs.append(float(m.samples))
        ys.append(max(ys[-1], min(1.0, (m.consumed - lead) / m.total)))
        if m.consumed >= m.total:
            break  # all read: the rest is spoken by the end
    xs.append(float(length))
    ys.append(1.0)
    return float(np.interp(into, xs, ys))


def word_at(spans: list[tuple[int, int, int]], fraction: float) -> tuple[int, int] | None:
    """The word being spoken when ``fraction`` of the text (by syllables) has been."""
    if not spans:
        return None
    ends = np.cumsum([w for _, _, w in spans], dtype=np.float64)
    k = bisect_right(ends.tolist(), fraction * ends[-1])
    a, b, _ = spans[min(k, len(spans) - 1)]
    return a, b
