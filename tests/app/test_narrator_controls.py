"""The narrator's reader-facing controls: a note read out of turn and the way back, media
buttons, and the sleep picker's choice."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.books import make_epub, xhtml
from tests.fakes import FakeEngine, RecordingPlayer
from vvreader.media.controls import MediaCommand
from vvreader.narration.narrator import Narrator, State
from vvreader.text.plan import build_plan
from vvreader.text.readers import load_document, parse


def noted_plan(tmp_path: Path):
    """A book citing two notes, which are read after its text."""
    body = (
        '<p>First one. One claim<a epub:type="noteref" href="notes.xhtml#e1">1</a>. '
        "Another sentence.</p>"
        '<p>More text<a epub:type="noteref" href="notes.xhtml#e2">2</a>.</p>'
    )
    notes = xhtml(
        '<aside epub:type="endnote" id="e1"><p>The note body.</p></aside>'
        '<aside epub:type="endnote" id="e2"><p>Another note.</p></aside>'
    )
    files = [("a.xhtml", xhtml(body)), ("notes.xhtml", notes)]
    return build_plan(load_document(str(make_epub(tmp_path / "b.epub", files, toc=[]))))


def wait_for(cond, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


def started(plan, rate: float = 4.0, seconds_per_frame: float = 0.0) -> Narrator:
    n = Narrator(plan)
    n.start(FakeEngine(seconds_per_frame), lambda ring, clock: RecordingPlayer(ring, clock, rate))
    return n


def test_a_note_is_read_then_reading_comes_back_after_the_citing_sentence(tmp_path: Path) -> None:
    plan = noted_plan(tmp_path)
    speak = [u.speak for u in plan]
    claim = speak.index("One claim.")
    note = next(u.index for u in plan if u.kind == "footnote")
    assert note > claim + 2 and note < len(plan) - 1  # text between, another note after
    n = started(plan)
    try:
        n.go(claim)
        assert n.read_note() is None and n.reading_note
        assert n.position == note
        seen: list[int] = []
        end = time.monotonic() + 20
        while True:
            assert time.monotonic() < end, f"never came back; positions seen: {sorted(set(seen))}"
            progress = n.progress()
            assert progress is not None
            seen.append(progress.position)
            if progress.back_from_note:
                break
            time.sleep(0.005)
        assert note in seen
        assert progress.position == n.position == claim + 1
        assert not n.reading_note
        assert n.state in (State.PLAYING, State.BUFFERING)  # reading goes on
    finally:
        n.close()


def positions_until(n: Narrator, done, timeout: float = 20.0) -> list[int]:
    """The positions :meth:`Narrator.progress` says until ``done(progress)``."""
    seen: list[int] = []
    end = time.monotonic() + timeout
    while True:
        assert time.monotonic() < end, f"timed out; positions seen: {sorted(set(seen))}"
        progress = n.progress()
        assert progress is not None
        seen.append(progress.position)
        if done(progress):
            return seen
        time.sleep(0.005)


def test_a_note_read_with_the_key_has_nothing_after_it_synthesised(tmp_path: Path) -> None:
    plan = noted_plan(tmp_path)
    speak = [u.speak for u in plan]
    claim = speak.index("One claim.")
    first, second = (u.index for u in plan if u.note)
    n = started(plan)
    try:
        n.go(claim)
        assert n.read_note() is None and n.position == first
        seen = positions_until(n, lambda p: p.back_from_note)
        assert first in seen and n.position == claim + 1
        wait_for(lambda: n.finished, timeout=20)
        assert n.synthesis is not None
        made = set(n.synthesis.lengths)
        # The look-ahead went from the note's end to the text after the citing sentence, as
        # reading did: the note after it was never made.
        assert first in made and claim + 1 in made and second not in made
    finally:
        n.close()


def test_reading_on_from_a_note_come_to_by_hand_goes_back_after_its_citing_sentence(
    tmp_path: Path,
) -> None:
    plan = noted_plan(tmp_path)
    speak = [u.speak for u in plan]
    claim = speak.index("One claim.")
    first, second = (u.index for u in plan if u.note)
    n = started(plan)
    try:
        n.go(first, play=True)  # a click on the note: no note trip
        assert not n.reading_note
        seen = positions_until(n, lambda p: p.position == claim + 1)
        assert first in seen and second not in seen
        wait_for(lambda: n.finished, timeout=20)
        assert n.synthesis is not None and second not in n.synthesis.lengths
    finally:
        n.close()


def test_leaving_a_note_at_once_goes_back_to_the_citing_sentence(tmp_path: Path) -> None:
    plan = noted_plan(tmp_path)
    speak = [u.speak for u in plan]
    claim = speak.index("One claim.")
    n = started(plan, rate=0.5, seconds_per_frame=0.01)
    try:
        n.go(claim)
        assert n.read_note() is None and n.position != claim
        assert n.read_note() is None  # again: back at once
        assert n.position == claim and not n.reading_note
        assert not n.leave_note()  # no note: nothing to leave
        assert n.read_note() is None and n.reading_note
        assert n.leave_note() and n.position == claim and not n.reading_note
        n.go(speak.index("Another sentence."))
        assert n.read_note() == "This sentence cites no note."
        assert not n.reading_note and n.position == speak.index("Another sentence.")
    finally:
        n.close()


def test_media_buttons_do_what_the_keys_do() -> None:
    plan = build_plan(parse("# T\n\nOne. Two. Three.\n"))
    speak = [u.speak for u in plan]
    n = started(plan, rate=0.5, seconds_per_frame=0.01)
    try:
        assert not n.media(MediaCommand.PAUSE) and n.state is State.STOPPED  # nothing to pause
        n.go(speak.index("One."))
        assert n.media(MediaCommand.NEXT) and n.position == speak.index("Two.")
        assert n.media(MediaCommand.PREVIOUS) and n.position == speak.index("One.")
        assert not n.media(MediaCommand.PLAY)
        wait_for(lambda: n.state in (State.PLAYING, State.BUFFERING))
        n.media(MediaCommand.PLAY)  # already playing: stays so
        assert n.state in (State.PLAYING, State.BUFFERING)
        n.media(MediaCommand.PAUSE)
        wait_for(lambda: n.state is State.PAUSED)
        n.media(MediaCommand.PAUSE)  # already paused: stays so
        n.media(MediaCommand.STOP)
        assert n.state is State.PAUSED
        n.media(MediaCommand.PLAY_PAUSE)
        wait_for(lambda: n.state in (State.PLAYING, State.BUFFERING))
        n.media(MediaCommand.STOP)
        wait_for(lambda: n.state is State.PAUSED)
    finally:
        n.close()


def test_media_play_before_the_model_is_ready_asks_to_play_once_it_is() -> None:
    n = Narrator(build_plan(parse("# T\n\nOne. Two.\n")))
    assert not n.media(MediaCommand.PLAY) and n._want_play
    assert not n.media(MediaCommand.PLAY_PAUSE) and not n._want_play


@pytest.mark.parametrize(
    ("choice", "said", "unit", "left"),
    [
        ("15", "Reading stops in 15 minutes.", "", 900.0),
        ("chapter", "Reading stops at the end of this chapter.", "chapter", None),
        ("section", "Reading stops at the end of this section.", "section", None),
    ],
)
def test_the_sleep_choice_sets_the_timer_and_says_so(
    tmp_path: Path, choice: str, said: str, unit: str, left: float | None
) -> None:
    doc = tmp_path / "d.md"
    doc.write_text("# One\n\nFirst. Second.\n\n## One a\n\nThird.\n\n# Two\n\nFourth.\n")
    now = [100.0]
    n = Narrator(build_plan(load_document(str(doc))), now=lambda: now[0])
    assert n.sleep_choose(choice) == said
    assert n.sleep.active and n.sleep.unit == unit
    if left is not None:
        assert n.sleep.left() == left
    else:
        ends = {"chapter": "Two.", "section": "One a."}[choice]  # the next heading
        assert n.plan[n.sleep.stop_before].speak == ends
    assert n.sleep_choose("off") == "Sleep timer off." and not n.sleep.active


def test_reading_a_book_straight_through_never_reads_a_note(tmp_path: Path) -> None:
    plan = noted_plan(tmp_path)
    notes = [u.speak for u in plan if u.note]
    assert len(notes) == 2
    engine = FakeEngine()
    n = Narrator(plan)
    n.start(engine, lambda ring, clock: RecordingPlayer(ring, clock, 8.0))
    try:
        n.play()
        wait_for(lambda: n.finished)
        said = [r.text for r in engine.requests]
        assert said == [u.speak for u in plan if not u.note]
    finally:
        n.close()


def test_a_note_cited_last_is_read_then_reading_waits_at_the_citing_sentence(
    tmp_path: Path,
) -> None:
    plan = noted_plan(tmp_path)
    speak = [u.speak for u in plan]
    more = speak.index("More text.")
    assert plan.following(more) == len(plan)  # only notes after it
    n = started(plan)
    try:
        n.go(more)
        assert n.read_note() is None and n.reading_note
        note = n.position
        assert plan[note].note and "Another note." in plan[note].speak
        seen: list[int] = []
        end = time.monotonic() + 20
        while True:
            assert time.monotonic() < end, f"never came back; positions seen: {sorted(set(seen))}"
            progress = n.progress()
            assert progress is not None
            seen.append(progress.position)
            if progress.back_from_note:
                break
            time.sleep(0.005)
        assert note in seen
        assert n.position == more and not n.reading_note
        wait_for(lambda: n.state is State.PAUSED)
    finally:
        n.close()


def two_sentence_note_plan(tmp_path: Path):
    """A book whose first note has two sentences, cited from the middle of a paragraph."""
    body = (
        '<h1>Start</h1><p>Before it. The claim<a epub:type="noteref" href="#n1">1</a>. '
        "After it.</p>"
        '<aside epub:type="footnote" id="n1"><p>Note begins. Note ends.</p></aside>'
        "<p>Closing.</p>"
    )
    files = [("a.xhtml", xhtml(body)), ("b.xhtml", xhtml("<h1>End</h1><p>Last.</p>"))]
    return build_plan(load_document(str(make_epub(tmp_path / "b.epub", files, toc=[]))))


def test_sentence_moves_and_media_buttons_pass_over_notes(tmp_path: Path) -> None:
    plan = two_sentence_note_plan(tmp_path)
    speak = [u.speak for u in plan]
    closing, end = speak.index("Closing."), speak.index("End.")
    assert any(plan[i].note for i in range(closing + 1, end))  # the note lies between
    n = Narrator(plan)
    n.go(closing)
    assert n.step("next_sentence") and n.position == end
    assert n.media(MediaCommand.PREVIOUS) and n.position == closing
    assert n.media(MediaCommand.NEXT) and n.position == end
    assert n.step("previous_paragraph") and n.position == closing
    assert n.step("next_paragraph") and n.position == end
    assert n.step("previous_heading") and n.position == speak.index("Start.")
    assert not n.step("previous_heading") and n.position == speak.index("Start.")


def test_moves_in_a_note_being_read_stay_in_it_then_lead_back(tmp_path: Path) -> None:
    plan = two_sentence_note_plan(tmp_path)
    speak = [u.speak for u in plan]
    claim, after = speak.index("The claim."), speak.index("After it.")
    begins, ends = speak.index("Footnote 1: Note begins."), speak.index("Note ends.")
    n = Narrator(plan)
    # Keys (the screen's moves) and media buttons alike.
    for forward, back in (
        (lambda: n.step("next_sentence"), lambda: n.step("previous_sentence")),
        (lambda: n.media(MediaCommand.NEXT), lambda: n.media(MediaCommand.PREVIOUS)),
    ):
        n.go(claim)
        assert n.read_note() is None and n.reading_note and n.position == begins
        assert forward() and n.position == ends and n.reading_note
        assert back() and n.position == begins and n.reading_note
        assert forward() and forward()  # out of its end: the text after the citing sentence
        assert n.position == after and not n.reading_note
        n.go(claim)
        assert n.read_note() is None and n.position == begins
        assert back() and n.position == claim and not n.reading_note  # out of its start
    # Moving elsewhere (a heading) leaves the note; nothing pulls reading back later.
    n.go(claim)
    assert n.read_note() is None and n.reading_note
    assert n.step("next_heading") and n.position == speak.index("End.")
    assert not n.reading_note


def test_a_move_out_of_a_note_while_reading_it_is_not_undone(tmp_path: Path) -> None:
    plan = two_sentence_note_plan(tmp_path)
    speak = [u.speak for u in plan]
    claim, end = speak.index("The claim."), speak.index("End.")
    n = started(plan, rate=0.5, seconds_per_frame=0.01)
    try:
        n.go(claim)
        assert n.read_note() is None and n.reading_note
        wait_for(lambda: n.state in (State.PLAYING, State.BUFFERING))
        progress = n.progress()  # the voice is at the note
        assert progress is not None and plan[progress.position].note
        assert n.step("next_heading") and not n.reading_note
        for _ in range(20):
            progress = n.progress()
            assert progress is not None and not progress.back_from_note
            assert progress.position >= end
            time.sleep(0.01)
    finally:
        n.close()
