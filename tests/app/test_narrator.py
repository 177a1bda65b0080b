"""The narrator against a scripted engine: order, pauses, controls, settings, buffering."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from engine.api import SAMPLE_RATE, SynthesisRequest
from tests.fakes import FakeEngine, RecordingPlayer, fake_audio
from vvreader.narration.commands import VoiceSettings
from vvreader.narration.events import DeviceLost, DeviceUnavailable, Event
from vvreader.narration.narrator import Narrator, State
from vvreader.text.plan import build_plan
from vvreader.text.readers import load_document

DOC = (
    "# A title\n\nThe first sentence is here. And the second one follows it.\n\n"
    "- one item in a list\n- another item\n\nA closing paragraph with words.\n"
)


HOP_SECONDS = 3200 / SAMPLE_RATE


def wait_for(cond, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


@pytest.fixture
def plan(tmp_path: Path):
    f = tmp_path / "doc.md"
    f.write_text(DOC)
    return build_plan(load_document(str(f)))


def make(plan, engine, rate: float = 8.0, **kw) -> tuple[Narrator, RecordingPlayer]:
    players: list[RecordingPlayer] = []

    def output(ring, clock):
        players.append(RecordingPlayer(ring, clock, rate=rate))
        return players[0]

    n = Narrator(plan, **kw)
    n.start(engine, output)
    return n, players[0]


def expected(plan, first: int, voices: dict[int, str] | None = None, settings=None):
    settings = settings or VoiceSettings()
    parts = []
    for u in list(plan)[first:]:
        voice = (voices or {}).get(u.index, settings.voice)
        req = SynthesisRequest(
            text=u.speak, voice=voice, cfg_scale=settings.cfg_scale, steps=settings.steps
        )
        parts.append(fake_audio(req))
        if u.index < len(plan) - 1:
            parts.append(np.zeros(SAMPLE_RATE * u.pause_after // 1000, np.float32))
    return np.concatenate(parts)


def test_reads_every_utterance_in_order_with_the_planned_pauses(plan) -> None:
    n, player = make(plan, FakeEngine())
    n.play()
    wait_for(lambda: n.finished)
    assert n.state is State.STOPPED
    np.testing.assert_array_equal(player.recording(), expected(plan, 0))
    n.close()


def test_pause_holds_the_position_and_resume_goes_on(plan) -> None:
    n, player = make(plan, FakeEngine(), rate=2.0)
    n.play()
    wait_for(lambda: n.audible() == 1)
    n.pause()
    time.sleep(0.1)  # at most one block is in flight
    held = n.ring.read
    time.sleep(0.3)
    assert n.ring.read == held and n.state is State.PAUSED
    n.play()
    wait_for(lambda: n.ring.read > held)
    assert n.state in (State.PLAYING, State.BUFFERING)
    n.close()


def test_jump_reads_from_the_target_at_once(plan) -> None:
    n, player = make(plan, FakeEngine(), rate=2.0)
    n.play()
    wait_for(lambda: n.audible() == 0)
    n.jump(3)
    wait_for(lambda: n.audible() == 3, timeout=2.0)
    played_before = sum(len(p) for p in player.played)
    wait_for(lambda: n.finished, timeout=30)
    after = player.recording()
    tail = expected(plan, 3)
    # Everything after the jump is utterance 3 onwards, exactly.
    np.testing.assert_array_equal(after[-len(tail) :], tail)
    assert played_before < len(after)
    n.close()


def test_voice_change_applies_from_the_next_utterance(plan) -> None:
    engine = FakeEngine()
    n, player = make(plan, engine, rate=3.0, settings=VoiceSettings(voice="a"))
    n.play()
    wait_for(lambda: n.audible() == 1)
    assert n.ring.ready > 0  # look-ahead already made later utterances with voice "a"
    n.set_settings(VoiceSettings(voice="b"))
    wait_for(lambda: n.finished, timeout=30)
    voices = {i: ("a" if i <= 1 else "b") for i in range(len(plan))}
    want = expected(plan, 0, voices, VoiceSettings(voice="a"))
    np.testing.assert_array_equal(player.recording(), want)
    # Later utterances were made again with "b"; earlier ones were not touched.
    assert any(r.voice == "b" and r.text == plan[2].speak for r in engine.requests)
    assert not any(
        r.voice == "b" and r.text in (plan[0].speak, plan[1].speak) for r in engine.requests
    )
    n.close()


@pytest.mark.slow
def test_slow_engine_waits_at_utterance_boundaries_not_inside_words(plan) -> None:
    # Real-time playback (133 ms per frame); the engine takes 200 ms per frame (0.67x).
    n, player = make(plan, FakeEngine(seconds_per_frame=0.2), rate=1.0)
    n.play()
    wait_for(lambda: n.finished, timeout=60)
    np.testing.assert_array_equal(player.recording(), expected(plan, 0))
    starts = set(n.clock._starts)
    assert player.underruns_at, "the engine was slower than playback: it must have waited"
    for pos in player.underruns_at:
        assert pos in starts or pos == n.ring.written, pos
    n.close()


def test_going_back_uses_the_cache(plan) -> None:
    engine = FakeEngine()
    n, player = make(plan, engine)
    n.play()
    wait_for(lambda: n.finished)
    asked = len(engine.requests)
    n.play(0)
    wait_for(lambda: n.audible() == 0)
    wait_for(lambda: n.finished)
    assert len(engine.requests) == asked
    n.close()


class LosablePlayer(RecordingPlayer):
    """A recording output whose device can go away: it stops consuming and says why."""

    def __init__(self, ring, clock, rate: float = 8.0) -> None:
        super().__init__(ring, clock, rate=rate)
        self.why: str | None = None

    def lose(self, why: str) -> None:
        self.why = why
        self._stop.set()

    def lost(self) -> str | None:
        return self.why


def test_a_lost_device_stops_keeps_the_utterance_and_play_reads_on_from_it(plan) -> None:
    from vvreader.player import AudioDeviceError

    players: list[LosablePlayer] = []
    unavailable = [False]

    def output(ring, clock):
        if unavailable[0]:
            raise AudioDeviceError("no device here", reason="the audio output cannot be opened")
        players.append(LosablePlayer(ring, clock))
        return players[-1]

    events: list[Event] = []
    n = Narrator(plan, on_event=events.append)
    n.start(FakeEngine(0.0005), output)
    try:
        n.play(0)
        wait_for(lambda: n.audible() == 2)
        time.sleep(0.05)  # into utterance 2
        players[0].lose("its stream stopped")
        wait_for(lambda: events)
        assert events == [DeviceLost("its stream stopped", kept=2)]
        assert n.state is State.STOPPED and n.audible() == 2
        unavailable[0] = True  # still gone: said again, nothing else happens
        n.play()
        wait_for(lambda: len(events) == 2)
        assert events[1] == DeviceUnavailable("the audio output cannot be opened")
        assert n.state is State.STOPPED and len(players) == 1 and n.alive
        unavailable[0] = False
        n.play()  # back: a new output, from the start of the utterance that was cut
        wait_for(lambda: n.finished, 20)
        assert len(players) == 2 and len(events) == 2
        played = np.concatenate(players[1].played)
        assert np.array_equal(played, expected(plan, 2))
    finally:
        n.close()


def test_pause_is_silent_at_once_and_never_waits_for_the_device(plan) -> None:
    """pause() returns at once even if stopping the device's stream hangs (a hung sound
    server), and the output plays silence from its next block."""
    import threading

    hang = threading.Event()

    class HangingPlayer(RecordingPlayer):
        def pause(self) -> None:
            self.paused = True
            hang.wait(5)  # PortAudio's abort against a server that does not answer

    players: list[HangingPlayer] = []

    def output(ring, clock):
        players.append(HangingPlayer(ring, clock, rate=8.0))
        return players[-1]

    n = Narrator(plan)
    n.start(FakeEngine(0.0005), output)
    try:
        n.play(0)
        wait_for(lambda: n.audible() == 1)
        t0 = time.monotonic()
        n.pause()
        assert time.monotonic() - t0 < 0.05
        assert n.state is State.PAUSED and players[0].paused
        read = n.ring.read
        time.sleep(0.3)
        assert n.ring.read == read  # nothing more consumed: silence
    finally:
        hang.set()
        n.close()


def test_near_real_time_starts_before_the_sentence_is_made_and_never_stutters(plan) -> None:
    """At about 1.1x real time (below the streaming margin), the pre-roll adapts: the
    first sound comes while the first utterance is still being made, and the player never
    runs dry inside an utterance."""
    engine = FakeEngine(seconds_per_frame=HOP_SECONDS / 1.1)
    n, player = make(plan, engine, rate=1.0)
    last = len(plan) - 1
    first = max(range(last), key=lambda i: len(plan[i].speak))  # a long sentence
    n.play(last)  # the voice's pace is measured on the last sentence first
    wait_for(lambda: n.finished, timeout=30)
    played = len(player.played)
    n.play(first)
    wait_for(lambda: len(player.played) > played, timeout=20)
    assert n.synthesis.speaking == first and n.synthesis.next == first  # still being made
    wait_for(lambda: n.finished, timeout=60)
    np.testing.assert_array_equal(
        player.recording(), np.concatenate([expected(plan, last), expected(plan, first)])
    )
    starts = set(n.clock._starts)
    for pos in player.underruns_at:
        assert pos in starts or pos == n.ring.written, pos
    n.close()
