"""Listening controls in the reader: the speed keys (and, below, the sleep timer and word
follow), through Textual's pilot against a scripted engine."""

from __future__ import annotations

import json
import time

from textual.widgets import OptionList

from tests.pilot.conftest import Rig, until
from vvreader.config import Config, load_config
from vvreader.media.controls import MediaCommand
from vvreader.narration.narrator import State
from vvreader.narration.sleep_timer import SleepTimer
from vvreader.screens.reading import ReadingScreen
from vvreader.screens.sleep import SleepPicker
from vvreader.widgets.reading_view import ReadingView
from vvreader.widgets.status_bar import StatusBar

SIZE = (100, 30)


async def started(pilot, app) -> ReadingScreen:
    await until(pilot, lambda: app.narrator.ready)
    await pilot.pause(0.05)
    return app.reading


async def test_speed_keys_change_the_output_the_status_bar_and_the_config(rig: Rig) -> None:
    app = rig.app(Config(autoplay=False, speed=1.5))
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, app)
        status = app.query_one(StatusBar)
        assert rig.players[-1].speed == 1.5
        await until(pilot, lambda: status.listening_speed == 1.5)
        assert "1.5\u00d7" in str(status.render())
        await pilot.press("greater_than_sign", "full_stop")
        assert app.narrator.listening_speed == 1.7 and rig.players[-1].speed == 1.7
        await pilot.press(*["less_than_sign"] * 20)
        assert app.narrator.listening_speed == 0.5
        await until(pilot, lambda: status.listening_speed == 0.5)
        await pilot.press(*["comma"] * 2, *["full_stop"] * 5)
        assert rig.players[-1].speed == 1.0
        await until(pilot, lambda: status.listening_speed == 1.0)
        assert "\u00d7" not in str(status.render())  # 1x is not shown
        await pilot.pause(0.1)
        assert load_config(rig.config_file)[0].speed == 1.0
        await pilot.press("q")


class Clock:
    """The sleep timer's clock, moved by the test."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def with_clock(app) -> Clock:
    clock = Clock()
    app.narrator.sleep = SleepTimer(clock)
    return clock


async def choose_sleep(pilot, choice: str) -> None:
    await pilot.press("z")
    await until(pilot, lambda: isinstance(pilot.app.screen, SleepPicker))
    options = pilot.app.screen.query_one(OptionList)
    index = next(
        i for i in range(options.option_count) if options.get_option_at_index(i).id == choice
    )
    options.highlighted = index
    await pilot.press("enter")
    await until(pilot, lambda: not isinstance(pilot.app.screen, SleepPicker))


async def test_sleep_after_minutes_fades_stops_and_saves_the_place(rig: Rig) -> None:
    app = rig.app(Config(autoplay=True))
    clock = with_clock(app)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, app)
        status = app.query_one(StatusBar)
        await until(pilot, lambda: app.narrator.state is State.PLAYING)
        await choose_sleep(pilot, "5")
        await until(pilot, lambda: status.sleep == "5:00")
        assert "\u263e 5:00" in str(status.render())
        clock.t = 297.5  # 2.5 s left: half way through the fade
        await until(pilot, lambda: status.sleep == "0:03")
        assert abs(rig.players[-1].volume - 0.5) < 0.05
        assert app.narrator.state is State.PLAYING
        clock.t = 300.0
        await until(pilot, lambda: app.narrator.state is State.PAUSED)
        assert status.sleep == "" and rig.players[-1].volume == 1.0
        await until(pilot, lambda: any("Sleep timer" in str(n.message) for n in app._notifications))
        saved = json.loads(rig.positions_file.read_text())["documents"]
        (entry,) = saved.values()
        assert entry["offset"] == app.plan[app.narrator.position].start
        # Space reads on from there.
        await pilot.press("space")
        await until(pilot, lambda: app.narrator.state is State.PLAYING)
        await pilot.press("q")


async def test_sleep_at_the_end_of_the_section_stops_before_the_next_heading(rig: Rig) -> None:
    app = rig.app(Config(autoplay=False), rate=8.0)
    with_clock(app)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, app)
        status = app.query_one(StatusBar)
        plan = app.plan
        section_two = next(u.index for u in plan if u.speak.startswith("Section two"))
        await choose_sleep(pilot, "section")
        await until(pilot, lambda: status.sleep.startswith("end of section"))
        await pilot.press("space")
        await until(pilot, lambda: app.narrator.state is State.PAUSED, timeout=20)
        # Everything before the heading was heard, the heading was not: reading waits
        # there, and the timer is off.
        heard = [r.text for r in rig.engine.requests]
        assert heard[:section_two] == [u.speak for u in plan][:section_two]
        assert app.narrator.position == section_two
        await until(pilot, lambda: status.sleep == "")
        played = rig.players[-1].recording()
        assert len(played) > 0
        await pilot.press("q")


async def test_the_sleep_timer_can_be_turned_off(rig: Rig) -> None:
    app = rig.app(Config(autoplay=False))
    with_clock(app)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, app)
        await choose_sleep(pilot, "chapter")
        assert app.narrator.sleep.active and app.narrator.sleep.unit == "chapter"
        await choose_sleep(pilot, "off")
        assert not app.narrator.sleep.active
        await pilot.press("q")


async def test_media_buttons_are_the_reader_keys(rig: Rig) -> None:
    app = rig.app(Config(autoplay=False, media_keys=False))
    async with app.run_test(size=SIZE) as pilot:
        screen = await started(pilot, app)
        app.post_message(app.MediaKey(MediaCommand.PAUSE))  # not playing: nothing
        await pilot.pause(0.1)
        assert app.narrator.state is not State.PLAYING
        app.post_message(app.MediaKey(MediaCommand.PLAY))
        await until(pilot, lambda: app.narrator.state is State.PLAYING)
        app.post_message(app.MediaKey(MediaCommand.PLAY))  # playing: still playing
        app.post_message(app.MediaKey(MediaCommand.STOP))
        await until(pilot, lambda: app.narrator.state is State.PAUSED)
        here = screen.position
        app.post_message(app.MediaKey(MediaCommand.NEXT))
        await until(pilot, lambda: screen.position == here + 1)
        app.post_message(app.MediaKey(MediaCommand.PREVIOUS))
        await until(pilot, lambda: screen.position == here)
        app.post_message(app.MediaKey(MediaCommand.PLAY_PAUSE))
        await until(pilot, lambda: app.narrator.state is State.PLAYING)
        app.post_message(app.MediaRate(2.0))
        await until(pilot, lambda: rig.players[-1].speed == 2.0)
        await pilot.press("q")


def hear(app, utterance: int, into: int, length: int = 48000) -> None:
    """Make the narrator's clock say that sample ``into`` of ``utterance`` (``length``
    samples long) is heard, and stay there: one block stamped long ago, silence since."""
    n = app.narrator
    n.synthesis.lengths[utterance] = length
    n.clock.drop_after(0)
    n.clock.mark(0, utterance)
    n.clock.stamp(0, 0, into + 1, time.monotonic() - 100.0)


async def test_word_follow_moves_through_the_words_of_the_sentence(rig: Rig) -> None:
    app = rig.app(Config(autoplay=False, word_follow=True))
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot, app)
        view = app.query_one(ReadingView)
        u = app.plan[1]
        text = app.plan.document.text
        seen = []
        for into in range(0, 48000, 2000):
            hear(app, 1, into)
            await until(pilot, lambda: view.audible == 1 and view.word is not None)
            await pilot.pause(0.06)
            a, b = view.word
            assert u.start <= a < b <= u.end
            if not seen or seen[-1] != text[a:b]:
                seen.append(text[a:b])
        assert seen == ["The", "first", "sentence", "is", "here"]
        await pilot.press("w")
        await until(pilot, lambda: view.word is None)
        await pilot.pause(0.1)
        assert load_config(rig.config_file)[0].word_follow is False
        await pilot.press("q")
