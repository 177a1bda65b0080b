"""Pace estimates and the streaming decision, with numbers."""

from __future__ import annotations

import pytest

from tests.books import make_epub, xhtml
from vvreader.narration.lookahead import LENGTH_MARGIN, SPEED_MARGIN, Pace
from vvreader.text.plan import build_plan
from vvreader.text.readers import load_document, parse


def paced(chars: int = 100, seconds: float = 10.0, speed: float | None = None) -> Pace:
    """A pace of ``seconds / chars`` seconds per character (0.1 s by default)."""
    pace = Pace()
    pace.said(chars, seconds)
    pace.speed = speed
    return pace


def test_time_left_in_a_book_leaves_its_notes_out(tmp_path) -> None:
    body = (
        '<p>A claim<a epub:type="noteref" href="#n1">1</a> here.</p>'
        '<aside epub:type="footnote" id="n1"><p>A rather long note to leave out.</p></aside>'
    )
    plan = build_plan(
        load_document(str(make_epub(tmp_path / "b.epub", [("a.xhtml", xhtml(body))], toc=[])))
    )
    assert [u.note for u in plan] == [False, True]
    pace = paced(chars=10, seconds=1.0)
    claim = plan[0]
    assert pace.seconds_left(plan, 0) == pytest.approx(
        0.1 * len(claim.speak) + claim.pause_after / 1000
    )
    assert pace.seconds_left(plan, 1) == 0.0


def test_the_speed_is_the_first_measure_then_a_moving_average() -> None:
    pace = Pace()
    pace.synthesised(seconds=4.0, elapsed=2.0)
    assert pace.speed == 2.0
    pace.synthesised(seconds=1.0, elapsed=1.0)
    assert pace.speed == pytest.approx(0.7 * 2.0 + 0.3 * 1.0)


def test_time_left_is_the_characters_at_the_voice_pace_plus_the_pauses() -> None:
    plan = build_plan(parse("First one here. Second one.\n\nA new paragraph.\n"))
    pace = Pace()
    assert pace.seconds_left(plan, 0) is None  # nothing said yet
    pace.said(20, 4.0)  # 0.2 s a character
    for i in range(len(plan)):
        chars = sum(len(u.speak) for u in list(plan)[i:])
        pauses = sum(u.pause_after for u in list(plan)[i:]) / 1000
        assert pace.seconds_left(plan, i) == pytest.approx(chars * 0.2 + pauses)
    assert pace.seconds_left(plan, len(plan)) == 0.0
    longer = build_plan(parse("First one here. Second one.\n\nA new paragraph. More.\n"))
    assert pace.seconds_left(longer, 0) > pace.seconds_left(plan, 0)  # not the old sums


def test_too_few_chunks_never_stream() -> None:
    assert not paced(speed=10.0).may_stream(1, 0.1, 10.0, 50, ready=30.0)


def test_faster_than_real_time_with_the_margin_streams_at_once() -> None:
    speed = SPEED_MARGIN * 1.01
    assert paced(speed=speed).may_stream(2, 0.2, speed, 500, ready=0.0)


def test_slower_than_real_time_waits_for_the_whole_utterance() -> None:
    assert not paced(speed=0.9).may_stream(50, 5.0, 0.9, 10, ready=60.0)


def test_the_slowest_of_this_and_the_measured_speed_counts() -> None:
    assert not paced(speed=0.5).may_stream(2, 0.2, 5.0, 10, ready=60.0)


def test_near_real_time_streams_once_the_pre_roll_covers_the_rest() -> None:
    speed = 1.1  # between real time and the margin
    s = speed / SPEED_MARGIN
    expected = 50 * 0.1 * LENGTH_MARGIN  # 50 characters at 0.1 s each, with the margin
    # made + ready must reach what the rest loses: rest * (1 / s - 1)
    made = 1.0
    need = (expected - made) * (1 / s - 1)
    pace = paced(speed=speed)
    assert pace.may_stream(8, made, speed, 50, ready=need - made + 0.01)
    assert not pace.may_stream(8, made, speed, 50, ready=need - made - 0.01)
    assert not Pace().may_stream(8, made, speed, 50, ready=60.0)  # no pace measured yet
