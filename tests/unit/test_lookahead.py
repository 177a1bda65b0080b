"""Pace estimates, the streaming decision and the batching decision, with numbers."""

from __future__ import annotations

import pytest

from tests.books import make_epub, xhtml
from vvreader.narration.lookahead import LENGTH_MARGIN, SPEED_MARGIN, Pace, Pending, in_time
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


# ------------------------------------------------------------ synthesising together


def test_one_stream_before_anything_is_measured() -> None:
    assert Pace().streams(4, 0.0, [30, 30, 30, 30], 1.0) == 1
    unpaced = Pace()
    unpaced.speed = 0.5  # the speed without the voice's pace
    assert unpaced.streams(4, 0.0, [30, 30, 30, 30], 1.0) == 1


def test_one_stream_when_it_keeps_up_with_the_listener() -> None:
    assert paced(speed=1.0).streams(4, 0.0, [30, 30, 30, 30], 1.0) == 1
    # ...but not with a listener twice as fast.
    assert paced(speed=1.0).streams(4, 0.0, [30, 30, 30, 30], 2.0) == 4


def test_below_the_listener_the_next_ones_together_up_to_the_most() -> None:
    pace = paced(speed=0.7)
    assert pace.streams(4, 0.0, [30, 30, 30, 30, 30, 30], 1.0) == 4
    assert pace.streams(3, 0.0, [30, 30, 30, 30], 1.0) == 3
    assert pace.streams(4, 0.0, [30, 30], 1.0) == 2  # all that is left
    assert pace.streams(4, 0.0, [30], 1.0) == 1
    assert pace.streams(1, 0.0, [30, 30, 30, 30], 1.0) == 1  # batching off


def test_the_opening_utterance_is_made_alone_even_below_the_listener() -> None:
    pace = paced(speed=0.7)
    upcoming = [30, 30, 30, 30, 30]
    assert pace.streams(4, 0.0, upcoming, 1.0) == 4
    # The first after a start or a move: one stream makes it soonest.
    assert pace.streams(4, 0.0, upcoming, 1.0, opening=True) == 1
    # The ones after it are batched as before.
    assert pace.streams(4, 1.0, upcoming[1:], 1.0, opening=False) == 4


def test_one_stream_while_the_audio_ready_outlasts_making_the_next_ones_alone() -> None:
    pace = paced(speed=0.5)  # 0.1 s a character
    upcoming = [20, 20, 20, 20]  # 2.5 s each with the length margin, 5 s to make each alone
    making = 4 * 20 * 0.1 * LENGTH_MARGIN / 0.5
    assert pace.streams(4, SPEED_MARGIN * making + 0.01, upcoming, 1.0) == 1
    assert pace.streams(4, SPEED_MARGIN * making - 0.01, upcoming, 1.0) == 4
    # The same audio lasts half as long for a listener at twice the speed.
    assert pace.streams(4, SPEED_MARGIN * making + 0.01, upcoming, 2.0) == 4


def test_in_time_when_each_is_made_before_what_comes_before_it_is_heard() -> None:
    s = 0.5 * SPEED_MARGIN  # 0.5x with the margin
    # 2 s to make at 0.5x: 4 s from now; 4 s of audio ahead of it.
    assert in_time(4.0, [Pending(made=1.0, rest=2.0, pause=0.3)], s, 1.0)
    assert not in_time(3.99, [Pending(made=1.0, rest=2.0, pause=0.3)], s, 1.0)
    # At twice the listening speed those 4 s last 2 s.
    assert not in_time(4.0, [Pending(made=1.0, rest=2.0, pause=0.3)], s, 2.0)
    # The next one waits for the first (all of it, made or not) and its pause: 4 + 3 + 0.3 s.
    first = Pending(made=1.0, rest=2.0, pause=0.3)
    assert in_time(4.0, [first, Pending(made=0.5, rest=3.65, pause=0.0)], s, 1.0)
    assert not in_time(4.0, [first, Pending(made=0.5, rest=3.66, pause=0.0)], s, 1.0)
    # Those made already are in time whatever comes before them.
    assert in_time(0.0, [Pending(made=3.0, rest=0.0, pause=0.3)], s, 1.0)
    assert in_time(0.0, [], s, 1.0)


def test_the_expected_length_is_the_voice_pace_with_the_margin() -> None:
    assert Pace().expected_seconds(10) is None
    assert paced().expected_seconds(10) == pytest.approx(10 * 0.1 * LENGTH_MARGIN)
