"""Pace estimates, the streaming decision and the batching decision: plain numbers, no
threads, no audio."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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

    def expected_seconds(self, chars: int) -> float | None:
        """How long an utterance of ``chars`` characters may last, at the voice's measured
        pace with :data:`LENGTH_MARGIN` (None before anything was said)."""
        if not self.chars:
            return None
        return chars * self.seconds / self.chars * LENGTH_MARGIN

    def streams(
        self,
        most: int,
        ahead: float,
        upcoming: Sequence[int],
        listening: float,
        opening: bool = False,
    ) -> int:
        """How many of the ``upcoming`` utterances (their characters, in reading order) to
        synthesise together next, with ``ahead`` seconds of audio ready to be heard at
        ``listening`` x: one while one stream is comfortably ahead of the listener, else up
        to ``most`` (a batch makes more audio a second, each utterance of it later).

        The ``opening`` utterance (the first after a start or a move, nothing playing) is
        made alone: one stream makes it soonest, so the reading starts speaking at once;
        the batch for the ones after it is asked for next, while it plays.

        One stream is comfortably ahead when it makes audio at least as fast as it is
        heard (below the margin :meth:`may_stream`'s pre-roll keeps it whole), or when the
        audio ready lasts longer (with :data:`SPEED_MARGIN`) than making the next ``most``
        utterances one at a time would take, so that a batch still has time to catch up
        once it no longer does. Before the speed and the voice's pace are measured: one
        (the first audio comes soonest)."""
        upcoming = list(upcoming)[: max(1, most)]
        if opening or most <= 1 or len(upcoming) <= 1 or self.speed is None or not self.chars:
            return 1
        if self.speed >= listening:
            return 1
        making = sum(self.expected_seconds(c) or 0.0 for c in upcoming) / self.speed
        if ahead / listening >= SPEED_MARGIN * making:
            return 1
        return len(upcoming)


@dataclass(frozen=True)
class Pending:
    """An utterance of a batch, as far as it is made."""

    made: float
    """Seconds of its audio made."""
    rest: float
    """Seconds still to make (an estimate until it is made: 0 then)."""
    pause: float
    """Seconds of silence after it."""


def in_time(ahead: float, pending: Sequence[Pending], speed: float, listening: float) -> bool:
    """Whether audio may start playing now without a wait before any of the ``pending``
    utterances (in reading order, being made together at ``speed`` x real time each, each
    committed once made): ``ahead`` seconds of audio are ready before the first.

    An utterance whose last ``rest`` seconds are made at ``speed`` (less
    :data:`SPEED_MARGIN`) is made ``rest / speed`` from now, and heard once everything
    before it is: ``before / listening`` from now. It is in time iff the first is no
    later than the second."""
    s = max(speed / SPEED_MARGIN, 1e-6)
    before = ahead
    for p in pending:
        if p.rest > 0 and p.rest / s > before / listening:
            return False
        before += p.made + p.rest + p.pause
    return True
