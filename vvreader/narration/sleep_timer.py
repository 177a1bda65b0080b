"""The sleep timer: reading stops after some minutes, or where the current chapter or
section ends, fading out over its last :data:`FADE` seconds. Plain logic on a clock it is
given; the narrator asks it, at each tick, how loud to play and whether to stop."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from vvreader.text.plan import SpeechPlan

FADE = 5.0
"""Seconds of fading out before the stop."""
MINUTES = (5, 10, 15, 30, 45, 60, 90)
"""The durations offered (any number of minutes may be set)."""


@dataclass(frozen=True)
class SleepState:
    """What the timer says at one tick."""

    gain: float
    """How loud to play (1: as made; down to 0 over the fade)."""
    stop: bool
    """Stop now (the timer is then off)."""


def end_of(plan: SpeechPlan, index: int, unit: str) -> int:
    """The first utterance after ``index`` not to read when stopping at the end of the
    current ``unit`` ("chapter": the next heading of the document's top level; "section":
    the next heading of any level), or ``len(plan)`` (the end)."""
    headings = [u.index for u in plan if u.kind == "heading" and (u.part == 0 and u.index > index)]
    if unit == "chapter":
        blocks = plan.document.blocks
        levels = [blocks[u.block].level for u in plan if u.kind == "heading"]
        top = min((lv for lv in levels if lv > 0), default=1)
        headings = [i for i in headings if blocks[plan[i].block].level <= top]
    return headings[0] if headings else len(plan)


class SleepTimer:
    """Off, or set to stop at a time or before an utterance."""

    def __init__(self, now: Callable[[], float] = time.monotonic) -> None:
        self._now = now
        self.deadline: float | None = None
        """When to stop (the clock's seconds), for a timer in minutes."""
        self.stop_before: int | None = None
        """The utterance not to read, for a timer at the end of a chapter or section."""
        self.unit = ""
        """"chapter" or "section" for a timer at an end; "" for one in minutes."""

    @property
    def active(self) -> bool:
        return self.deadline is not None or self.stop_before is not None

    def after(self, minutes: float) -> None:
        """Stop ``minutes`` from now."""
        self.cancel()
        self.deadline = self._now() + 60.0 * minutes

    def before(self, index: int, unit: str) -> None:
        """Stop before utterance ``index`` is heard (the end of a ``unit``)."""
        self.cancel()
        self.stop_before, self.unit = index, unit

    def cancel(self) -> None:
        self.deadline = self.stop_before = None
        self.unit = ""

    def left(self, listening_left: float | None = None) -> float | None:
        """Seconds until the stop: by the clock, or for an end the listening time to it
        (``listening_left``, None while unknown)."""
        if self.deadline is not None:
            return max(0.0, self.deadline - self._now())
        return None if listening_left is None else max(0.0, listening_left)

    def tick(self, audible: int | None, listening_left: float | None) -> SleepState:
        """At a tick: ``audible`` is the utterance heard, ``listening_left`` the listening
        time until :attr:`stop_before` starts (None while it is not made yet)."""
        if not self.active:
            return SleepState(1.0, False)
        if self.stop_before is not None and audible is not None and audible >= self.stop_before:
            self.cancel()
            return SleepState(0.0, True)
        left = self.left(listening_left)
        if left is None:
            return SleepState(1.0, False)
        if left <= 0.0:
            self.cancel()
            return SleepState(0.0, True)
        return SleepState(min(1.0, left / FADE), False)
