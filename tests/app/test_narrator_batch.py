"""The narrator synthesising several utterances together when one stream falls behind the
listener (an engine held to a modelled speed: tests/fakes.PacedEngine): read in order,
the first utterance after a start or a move made alone and played at once, never running
dry after the first utterance, and every move, setting and note handled as when it makes
them one at a time."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from engine.api import SynthesisRequest
from tests.app.test_narrator import LosablePlayer, expected, wait_for
from tests.app.test_narrator_controls import noted_plan
from tests.fakes import FakeEngine, PacedEngine, RecordingPlayer, fake_audio
from vvreader.narration.commands import VoiceSettings
from vvreader.narration.events import DeviceLost, Event
from vvreader.narration.narrator import Narrator
from vvreader.text.plan import build_plan
from vvreader.text.readers import parse

SENTENCES = (
    "The first sentence is here now. A second one follows it here. The third one is "
    "rather short. Then a fourth sentence comes. A fifth is nearly the last. And a sixth "
    "one to end it.\n"
)


SHORT = "One here. Two here. Three now. Four now. Five then. Six then.\n"
"""Utterances of two frames each."""


@pytest.fixture
def plan():
    return build_plan(parse(SENTENCES))


@pytest.fixture
def short_plan():
    return build_plan(parse(SHORT))


def reading(plan, paced: PacedEngine, rate: float, **kw) -> tuple[Narrator, RecordingPlayer]:
    players: list[RecordingPlayer] = []

    def output(ring, clock):
        players.append(RecordingPlayer(ring, clock, rate=rate))
        return players[0]

    n = Narrator(plan, **kw)
    n.start(paced, output)
    return n, players[0]


@pytest.fixture
def engines():
    """A FakeEngine and, around it, engines held to modelled speeds (closed after)."""
    made: list[PacedEngine] = []
    fake = FakeEngine()

    def paced(speed: float, row_cost: float) -> PacedEngine:
        made.append(PacedEngine(fake, speed, row_cost))
        return made[-1]

    yield fake, paced
    for p in made:
        p.close()


def batches_asked(n: Narrator, paced: PacedEngine) -> list[tuple[list[str], list[int]]]:
    """From now on, each ``synthesize_many`` call's texts with the utterances whose audio
    was in the ring (marked on its clock) when it was made."""
    asked: list[tuple[list[str], list[int]]] = []
    synthesize_many = paced.synthesize_many

    def recorded(requests):
        marked = [i for i in range(len(n.plan)) if n.clock.start_of(i) is not None]
        asked.append(([r.text for r in requests], marked))
        return synthesize_many(requests)

    paced.synthesize_many = recorded  # type: ignore[method-assign]
    return asked


def alone(fake: FakeEngine) -> list[str]:
    """The texts asked for one at a time (``synthesize``, not in a batch)."""
    together = {id(r) for b in fake.batches for r in b}
    return [r.text for r in fake.requests if id(r) not in together]


def in_batch(n: Narrator, paced: PacedEngine) -> bool:
    """A batch is being taken, with utterances of it not made yet."""
    return bool(paced.batches) and any(not s.ended for s in paced.batches[-1])


@pytest.mark.slow
def test_below_real_time_for_one_stream_it_speaks_at_once_and_runs_dry_only_after_the_first(
    plan, engines
) -> None:
    fake, paced = engines
    # 0.7x real time for one stream, a batch of 4 at 1.4x in all (0.35x each).
    engine = paced(0.7, 1 / 3)
    n, player = reading(plan, engine, rate=1.0)
    asked = batches_asked(n, engine)
    try:
        n.play()
        wait_for(lambda: n.finished, timeout=60)
        np.testing.assert_array_equal(player.recording(), expected(plan, 0))
        assert max(engine.batch_sizes) > 1
        # The first utterance was made alone and put in the ring before the batch of the
        # next ones was asked for: it plays as soon as one stream makes it.
        assert alone(fake)[0] == plan[0].speak
        texts, marked = asked[0]
        assert texts[0] == plan[1].speak and marked == [0]
        # The player ran short only at the end of the first utterance (the batch gives its
        # first later than one stream would) and once everything was played.
        first_end = len(expected(plan, 0)) - len(expected(plan, 1))
        assert set(player.underruns_at) <= {first_end, n.ring.written}, player.underruns_at
    finally:
        n.close()


def test_after_a_jump_the_first_utterance_is_made_alone_and_plays_before_the_batch(
    engines,
) -> None:
    plan = build_plan(parse(SENTENCES + "\n" + SHORT))
    fake, paced = engines
    engine = paced(0.9, 0.1)
    n, player = reading(plan, engine, rate=4.0)
    asked = batches_asked(n, engine)
    try:
        n.play()
        wait_for(lambda: in_batch(n, engine), timeout=30)
        before = len(asked)
        target = 7
        n.jump(target)
        wait_for(lambda: n.finished, timeout=60)
        # The speed is known and below the listener's, yet the utterance jumped to is asked
        # for alone and is in the ring when the batch after it is asked for.
        assert alone(fake)[-1] == plan[target].speak
        texts, marked = asked[before]
        assert texts[0] == plan[target + 1].speak
        assert target in marked
        tail = expected(plan, target)
        np.testing.assert_array_equal(player.recording()[-len(tail) :], tail)
    finally:
        n.close()


def test_a_jump_during_a_batch_cancels_the_rest_of_it_and_plays_nothing_stale(
    plan, engines
) -> None:
    fake, paced = engines
    engine = paced(0.9, 0.1)
    n, player = reading(plan, engine, rate=4.0)
    try:
        n.play()
        wait_for(lambda: in_batch(n, engine), timeout=30)
        batch = engine.batches[-1]
        last = len(plan) - 1
        n.jump(last)
        wait_for(lambda: n.finished, timeout=30)
        cut = [s for s in batch if not s.ended]
        assert cut and all(s.cancelled for s in cut)
        made = [s.delivered for s in cut]
        time.sleep(0.5)
        assert [s.delivered for s in cut] == made  # no longer made
        tail = expected(plan, last)
        np.testing.assert_array_equal(player.recording()[-len(tail) :], tail)
    finally:
        n.close()


def test_new_settings_during_a_batch_make_the_rest_of_it_again(short_plan, engines) -> None:
    plan = short_plan
    fake, paced = engines
    engine = paced(0.9, 0.1)
    n, player = reading(plan, engine, rate=2.0, settings=VoiceSettings(voice="a"))
    try:
        n.play()
        wait_for(lambda: in_batch(n, engine), timeout=30)
        n.set_settings(VoiceSettings(voice="b"))
        wait_for(lambda: n.finished, timeout=60)
        heard = player.recording()
        # Voice "a" up to the utterance heard when the voice changed (none: -1), "b" after.
        splits = [
            c
            for c in range(-1, len(plan))
            if np.array_equal(
                heard,
                expected(plan, 0, {i: "a" if i <= c else "b" for i in range(len(plan))}),
            )
        ]
        assert splits and splits[0] < len(plan) - 1, "nothing was read with the new voice"
        assert any(r.voice == "b" for r in fake.batches[-1] + fake.requests[-1:])
    finally:
        n.close()


def test_a_book_read_in_batches_passes_over_its_notes(tmp_path: Path, engines) -> None:
    plan = noted_plan(tmp_path)
    fake, paced = engines
    engine = paced(0.9, 0.1)
    n, player = reading(plan, engine, rate=4.0)
    try:
        n.play()
        wait_for(lambda: n.finished, timeout=60)
        assert max(engine.batch_sizes) > 1
        assert [r.text for r in fake.requests] == [u.speak for u in plan if not u.note]
        in_turn = [u for u in plan if not u.note]
        want = np.concatenate(
            [
                np.concatenate(
                    [
                        fake_audio(SynthesisRequest(text=u.speak)),
                        np.zeros(24 * u.pause_after if u.index < len(plan) - 1 else 0),
                    ]
                )
                for u in in_turn
            ]
        ).astype(np.float32)
        np.testing.assert_array_equal(player.recording(), want)
    finally:
        n.close()


def test_going_back_over_a_batch_takes_it_from_the_cache(short_plan, engines) -> None:
    plan = short_plan
    fake, paced = engines
    engine = paced(0.9, 0.1)
    n, player = reading(plan, engine, rate=8.0)
    try:
        n.play()
        wait_for(lambda: n.finished, timeout=60)
        assert max(engine.batch_sizes) > 1
        asked = len(fake.requests)
        n.play(0)
        wait_for(lambda: n.audible() == 0)
        wait_for(lambda: n.finished, timeout=30)
        assert len(fake.requests) == asked
    finally:
        n.close()


def test_batching_off_makes_one_utterance_at_a_time(short_plan, engines) -> None:
    plan = short_plan
    fake, paced = engines
    engine = paced(0.9, 0.1)
    n, player = reading(plan, engine, rate=8.0, batch=1)
    try:
        n.play()
        wait_for(lambda: n.finished, timeout=60)
        assert not fake.batches and set(engine.batch_sizes) == {1}
        np.testing.assert_array_equal(player.recording(), expected(plan, 0))
    finally:
        n.close()


class _OneAtATime:
    """An engine that cannot batch (no ``synthesize_many``)."""

    def __init__(self, engine: PacedEngine) -> None:
        self.engine, self.sample_rate = engine, engine.sample_rate

    def synthesize(self, request: SynthesisRequest):
        return self.engine.synthesize(request)

    def voices(self) -> list[str]:
        return self.engine.voices()

    def close(self) -> None:
        pass


def test_an_engine_that_cannot_batch_is_asked_one_utterance_at_a_time(short_plan, engines) -> None:
    fake, paced = engines
    engine = paced(0.9, 0.1)
    players: list[RecordingPlayer] = []
    n = Narrator(short_plan)

    def output(ring, clock):
        players.append(RecordingPlayer(ring, clock, rate=8.0))
        return players[0]

    n.start(_OneAtATime(engine), output)
    try:
        n.play()
        wait_for(lambda: n.finished, timeout=60)
        assert n.synthesis.batch == 1 and not fake.batches
        np.testing.assert_array_equal(players[0].recording(), expected(short_plan, 0))
    finally:
        n.close()


def test_a_device_lost_during_a_batch_cancels_it_and_play_reads_on_from_the_kept_one(
    plan, engines
) -> None:
    fake, paced = engines
    engine = paced(0.9, 0.1)
    players: list[LosablePlayer] = []
    events: list[Event] = []

    def output(ring, clock):
        players.append(LosablePlayer(ring, clock, rate=4.0))
        return players[-1]

    n = Narrator(plan, on_event=events.append)
    n.start(engine, output)
    try:
        n.play()
        wait_for(lambda: in_batch(n, engine) and n.audible() is not None, timeout=30)
        batch = engine.batches[-1]
        players[0].lose("its stream stopped")
        wait_for(lambda: events)
        assert isinstance(events[0], DeviceLost)
        kept = events[0].kept if events[0].kept is not None else 0
        wait_for(lambda: all(s.ended or s.cancelled for s in batch))
        n.play()
        wait_for(lambda: n.finished, timeout=60)
        np.testing.assert_array_equal(np.concatenate(players[1].played), expected(plan, kept))
    finally:
        n.close()
