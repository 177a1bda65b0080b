"""The sleep timer on a clock the test moves: the fade, the stop, and where chapters and
sections end."""

from __future__ import annotations

from pathlib import Path

from vvreader.narration.sleep_timer import FADE, SleepTimer, end_of
from vvreader.text.plan import build_plan
from vvreader.text.readers import load_document

DOC = """# One

First. Second.

## One a

Third.

# Two

Fourth.
"""


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_after_minutes_fades_over_the_last_seconds_and_stops() -> None:
    clock = Clock()
    timer = SleepTimer(clock)
    assert not timer.active and timer.tick(3, None).gain == 1.0
    timer.after(2)
    assert timer.left() == 120.0
    clock.t += 120 - FADE - 1
    assert timer.tick(3, None).gain == 1.0
    clock.t += 1 + FADE / 2
    state = timer.tick(3, None)
    assert abs(state.gain - 0.5) < 1e-9 and not state.stop
    clock.t += FADE / 2
    assert timer.tick(3, None).stop and not timer.active
    assert timer.tick(3, None).gain == 1.0  # off again


def test_before_an_utterance_fades_on_the_listening_time_and_stops_when_it_is_heard() -> None:
    timer = SleepTimer(Clock())
    timer.before(7, "chapter")
    assert timer.tick(5, None).gain == 1.0
    assert abs(timer.tick(6, FADE / 4).gain - 0.25) < 1e-9
    assert timer.active
    state = timer.tick(7, None)
    assert state.stop and not timer.active


def test_the_ends_of_chapters_and_sections(tmp_path: Path) -> None:
    f = tmp_path / "d.md"
    f.write_text(DOC)
    plan = build_plan(load_document(str(f)))
    speak = [u.speak for u in plan]
    one_a, two = speak.index("One a."), speak.index("Two.")
    first = speak.index("First.")
    assert end_of(plan, first, "section") == one_a
    assert end_of(plan, first, "chapter") == two
    assert end_of(plan, one_a, "chapter") == two
    assert end_of(plan, two, "chapter") == len(plan)  # the last chapter ends with the book
