"""Pace estimates and the streaming decision: plain numbers, no threads, no audio."""

from __future__ import annotations

import numpy as np

from vvreader.text.plan import SpeechPlan

SPEED_MARGIN = 1.15
"""The synthesis speed is taken as this much lower than measured when deciding to stream
(the machine's load varies)."""
LENGTH_MARGIN = 1.25
"""An utterance is taken as this much longer than its characters say at the voice's pace."""


class Pace:
    """The measured synthesis speed and the voice's pace (seconds of audio per character
    of speech text). The narrator thread records; any thread reads."""

    def __init__(self) -> None:
        self.speed: float | None = None
        """Seconds of audio made per second (None before any)."""
        self.chars = 0
        """Characters of speech text said so far (with :attr:`seconds`, the voice's pace)."""
        self.seconds = 0.0
        self._suffix_plan: SpeechPlan | None = None
        self._suffix: tuple[np.ndarray, np.ndarray] | None = None

    def synthesised(self, seconds: float, elapsed: float) -> None:
        """An utterance of ``seconds`` was made in ``elapsed`` seconds."""
        measured = seconds / max(elapsed, 1e-6)
        self.speed = measured if self.speed is None else 0.7 * self.speed + 0.3 * measured

    def said(self, chars: int, seconds: float) -> None:
        """An utterance of ``chars`` characters lasts ``seconds``."""
        self.chars += chars
        self.seconds += seconds

    def seconds_left(self, plan: SpeechPlan, index: int) -> float | None:
        """Listening time from utterance ``index`` to the end of ``plan`` at the voice's
        pace, with the pauses, read in turn: a book's notes not counted (None before anything
        was said)."""
        if not self.chars:
            return None
        if self._suffix is None or self._suffix_plan is not plan:
            chars = np.array([0 if u.note else len(u.speak) for u in plan], dtype=np.float64)
            pauses = np.array([0 if u.note else u.pause_after for u in plan], dtype=np.float64)
            pauses /= 1000
            self._suffix = (np.cumsum(chars[::-1])[::-1], np.cumsum(pauses[::-1])[::-1])
            self._suffix_plan = plan
        if not 0 <= index < len(plan):
            return 0.0
        chars, pauses = self._suffix
        return float(chars[index] * self.seconds / self.chars + pauses[index])

    def may_stream(self, chunks: int, made: float, speed: float, chars: int, ready: float) -> bool:
        """Whether the utterance being made can start playing now (its chunks committed as
        they come) without running dry before its end: the pre-roll adapts to the speed.

        With ``made`` seconds of it made at ``speed`` x real time and ``ready`` seconds of
        earlier audio still to play, a remainder of ``rest`` seconds made at speed ``s``
        is in time iff ``rest * (1 / s - 1) <= ready + made`` (its last sample is made
        ``rest / s`` from now and heard ``ready + made + rest`` from now). ``s`` is the
        measured speed less a margin, ``rest`` comes from the voice's measured seconds per
        character (the utterance has ``chars``), with a margin. Faster than real time with
        the margin this holds at once; between real time and the margin it holds after a
        short pre-roll; slower than real time only whole utterances are committed (a
        length misjudged there would stutter)."""
        if chunks < 2:
            return False
        measured = min(speed, self.speed or speed)
        s = measured / SPEED_MARGIN
        if s >= 1.0:
            return True
        # Below real time the rest's length decides, and the voice's pace per character is
        # only an estimate: there (and before any pace is measured) whole utterances only.
        if measured < 1.0 or not self.chars:
            return False
        expected = chars * self.seconds / self.chars * LENGTH_MARGIN
        rest = max(0.0, expected - made)
        return rest * (1.0 / max(s, 1e-3) - 1.0) <= ready + made
