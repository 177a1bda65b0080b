"""Every binding of the reader, driven through Textual's pilot against a scripted engine."""

from __future__ import annotations

import json

from tests.pilot.conftest import Rig, until
from vvreader.config import Config, load_config
from vvreader.narration.narrator import State
from vvreader.screens.contents import TableOfContents
from vvreader.screens.help import HelpScreen
from vvreader.screens.reading import ReadingScreen
from vvreader.screens.search import SearchBar
from vvreader.screens.voices import VoicePicker
from vvreader.widgets.reading_view import ReadingView
from vvreader.widgets.status_bar import StatusBar

SIZE = (100, 30)


def spoken(rig: Rig) -> list[str]:
    return [r.text for r in rig.engine.requests]


async def started(pilot, app) -> ReadingScreen:
    await until(pilot, lambda: app.narrator.ready)
    await pilot.pause(0.05)  # the layout without the loading line
    return app.reading


async def test_space_plays_pauses_and_resumes(rig: Rig) -> None:
    app = rig.app(Config(autoplay=False))
    async with app.run_test(size=SIZE) as pilot:
        screen = await started(pilot, app)
        await pilot.pause(0.2)
        assert app.narrator.state is State.STOPPED and not rig.engine.requests
        await pilot.press("space")
        await until(pilot, lambda: app.narrator.state is State.PLAYING)
        assert app.query_one(StatusBar).state in ("playing", "buffering")
        await pilot.press("space")
        await until(pilot, lambda: app.narrator.state is State.PAUSED)
        heard = app.narrator.clock.position
        await pilot.pause(0.3)
        assert app.narrator.clock.position - heard <= 2 * 1024  # silent within a block
        await until(pilot, lambda: app.query_one(StatusBar).state == "paused")
        await pilot.press("space")
        await until(pilot, lambda: app.narrator.state is State.PLAYING)
        assert screen.position >= 0


async def test_sentence_paragraph_and_heading_moves(rig: Rig) -> None:
    app = rig.app(Config(autoplay=False))
    async with app.run_test(size=SIZE) as pilot:
        screen = await started(pilot, app)
        plan = app.plan
        view = app.query_one(ReadingView)
        moves = [
            ("l", plan.next_sentence),
            ("right", plan.next_sentence),
            ("h", plan.previous_sentence),
            ("left", plan.previous_sentence),
            ("right_square_bracket", plan.next_paragraph),
            ("left_square_bracket", plan.previous_paragraph),
            ("right_curly_bracket", plan.next_heading),
            ("right_curly_bracket", plan.next_heading),
            ("left_curly_bracket", plan.previous_heading),
        ]
        for key, step in moves:
            before = screen.position
            want = step(before)
            await pilot.press(key)
            await pilot.pause(0.05)
            assert want is not None, key
            assert screen.position == want, key
            assert view.audible == want, key
        # while playing, a move re-targets the narration at once
        await pilot.press("space")
        await until(pilot, lambda: app.narrator.state is State.PLAYING)
        target = plan.next_heading(screen.position)
        await pilot.press("right_curly_bracket")
        await until(pilot, lambda: app.narrator.audible() == target)
        assert plan[target].speak in spoken(rig)


async def test_cursor_moves_without_interrupting_and_enter_reads_from_it(rig: Rig) -> None:
    app = rig.app()
    async with app.run_test(size=SIZE) as pilot:
        screen = await started(pilot, app)
        await until(pilot, lambda: app.narrator.audible() == 0)
        view = app.query_one(ReadingView)
        for key in ("j", "down", "j", "k", "up", "down", "down"):
            await pilot.press(key)
        assert view.cursor == 3
        # the voice went on in order from the start: no request jumped to the cursor
        in_order = [u.speak for u in app.plan][: len(rig.engine.requests)]
        assert spoken(rig) == in_order
        await pilot.press("enter")
        await until(pilot, lambda: app.narrator.audible() == 3)
        assert screen.position == 3


async def test_click_reads_the_sentence_under_the_pointer(rig: Rig) -> None:
    app = rig.app(Config(autoplay=False))
    async with app.run_test(size=SIZE) as pilot:
        screen = await started(pilot, app)
        view = app.query_one(ReadingView)
        target = app.plan.at_offset(app.plan.document.text.index("It has two"))
        line, col = view.model.offset_to_cell(target.start)
        await pilot.click(ReadingView, offset=(col + 2, line - round(view.scroll_y)))
        await until(pilot, lambda: app.narrator.audible() == target.index)
        assert screen.position == target.index and view.cursor == target.index
        assert app.narrator.state in (State.PLAYING, State.BUFFERING)


async def test_cfg_and_steps_keys_change_the_settings_and_the_config(rig: Rig) -> None:
    app = rig.app(Config(autoplay=False))
    async with app.run_test(size=SIZE) as pilot:
        screen = await started(pilot, app)
        status = app.query_one(StatusBar)
        await pilot.press("plus", "plus", "equals_sign")
        assert screen.settings.cfg_scale == 1.8 and status.cfg == 1.8
        await pilot.press("minus")
        assert screen.settings.cfg_scale == 1.7
        await pilot.press("s", "s")
        assert screen.settings.steps == 7 and status.steps == 7
        await pilot.press("S")
        assert screen.settings.steps == 6
        await pilot.pause(0.1)
        assert app.narrator.settings.cfg_scale == 1.7 and app.narrator.settings.steps == 6
        saved, _ = load_config(rig.config_file)
        assert (saved.cfg_scale, saved.steps) == (1.7, 6)
        # the next utterance is made with the new settings
        await pilot.press("space")
        await until(pilot, lambda: rig.engine.requests)
        assert (rig.engine.requests[0].cfg_scale, rig.engine.requests[0].steps) == (1.7, 6)


async def test_cfg_and_steps_stay_in_range(rig: Rig) -> None:
    app = rig.app(Config(autoplay=False, cfg_scale=4.95, steps=2))
    async with app.run_test(size=SIZE) as pilot:
        screen = await started(pilot, app)
        await pilot.press("plus", "plus", "S", "S", "S")
        assert screen.settings.cfg_scale == 5.0 and screen.settings.steps == 1


async def test_next_voice_and_picker_preview_choose_and_cancel(rig: Rig) -> None:
    app = rig.app(Config(autoplay=False))
    async with app.run_test(size=SIZE) as pilot:
        screen = await started(pilot, app)
        assert screen.settings.voice == "a"
        await pilot.press("V")
        assert screen.settings.voice == "b" and app.query_one(StatusBar).voice == "b"
        await pilot.press("V")
        assert screen.settings.voice == "a"
        # picker: the highlighted voice previews the current sentence; escape undoes it
        await pilot.press("v")
        assert isinstance(app.screen, VoicePicker)
        here = screen.position
        await pilot.press("down")
        await until(pilot, lambda: any(r.voice == "b" for r in rig.engine.requests))
        assert screen.settings.voice == "b"
        preview = [r for r in rig.engine.requests if r.voice == "b"][0]
        assert preview.text == app.plan[here].speak
        await pilot.press("escape")
        assert not isinstance(app.screen, VoicePicker) and screen.settings.voice == "a"
        # enter keeps the choice, and it is saved
        await pilot.press("v", "down", "enter")
        assert screen.settings.voice == "b"
        assert load_config(rig.config_file)[0].voice == "b"


async def test_contents_reads_from_the_chosen_heading(rig: Rig) -> None:
    app = rig.app(Config(autoplay=False))
    async with app.run_test(size=SIZE) as pilot:
        screen = await started(pilot, app)
        await pilot.press("t")
        assert isinstance(app.screen, TableOfContents)
        await pilot.press("down", "down", "enter")
        third = [u.index for u in app.plan if u.kind == "heading"][2]
        assert screen.position == third
        await pilot.press("t", "escape")
        assert app.screen is screen and screen.position == third


async def test_search_and_search_next(rig: Rig) -> None:
    app = rig.app(Config(autoplay=False))
    async with app.run_test(size=SIZE) as pilot:
        screen = await started(pilot, app)
        view = app.query_one(ReadingView)
        text = app.plan.document.text
        await pilot.press("slash")
        assert isinstance(app.screen, SearchBar)
        await pilot.press(*"NEEDLE", "enter")
        first = app.plan.at_offset(text.index("needle")).index
        second = app.plan.at_offset(text.index("needle", text.index("needle") + 1)).index
        assert view.cursor == first and screen.position == 0  # the voice stays
        await pilot.press("n")
        assert view.cursor == second
        await pilot.press("n")
        assert view.cursor == first  # wraps around
        await pilot.press("slash", *"zzzz", "enter")
        assert view.cursor == first
        await pilot.press("slash", "escape")
        assert app.screen is screen


async def test_follow_and_back_to_the_narrator(rig: Rig) -> None:
    app = rig.app(Config(autoplay=False))
    async with app.run_test(size=(100, 12)) as pilot:
        screen = await started(pilot, app)
        view = app.query_one(ReadingView)
        assert view.follow
        await pilot.press("f")
        assert not view.follow
        await pilot.press("f")
        assert view.follow
        for _ in range(12):
            await pilot.press("j")
        assert not view.follow  # the cursor scrolled away from the voice
        await pilot.press("b")
        assert view.follow and view.cursor == screen.position
        await pilot.press("pagedown")
        assert not view.follow
        await pilot.press("escape")
        assert view.follow


async def test_help_lists_every_binding_and_closes(rig: Rig) -> None:
    app = rig.app(Config(autoplay=False))
    async with app.run_test(size=SIZE) as pilot:
        screen = await started(pilot, app)
        for key in ("question_mark", "f1"):
            await pilot.press(key)
            assert isinstance(app.screen, HelpScreen)
            ids = {i for _, _, i in app.screen.keys}
            for b in [*ReadingScreen.BINDINGS, *ReadingView.BINDINGS]:
                assert b.id in ids, b.id
            await pilot.press("escape")
            assert app.screen is screen


async def test_every_binding_is_in_the_command_palette(rig: Rig) -> None:
    app = rig.app(Config(autoplay=False))
    async with app.run_test(size=SIZE) as pilot:
        screen = await started(pilot, app)
        titles = {c.title for c in app.get_system_commands(screen)}
        for b in [*ReadingScreen.BINDINGS, *ReadingView.BINDINGS]:
            assert b.description in titles, b.id
        # and running one from the palette works
        await pilot.press("ctrl+p")
        await pilot.pause(0.2)
        await pilot.press(*"next heading")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await until(pilot, lambda: screen.position == app.plan.next_heading(0))


async def test_keymap_from_the_config_remaps_a_binding(rig: Rig) -> None:
    app = rig.app(Config(autoplay=False, keymap={"next-sentence": "x"}))
    async with app.run_test(size=SIZE) as pilot:
        screen = await started(pilot, app)
        await pilot.press("l")
        assert screen.position == 0
        await pilot.press("x")
        assert screen.position == app.plan.next_sentence(0)


async def test_q_and_ctrl_q_quit_and_the_position_is_kept(rig: Rig) -> None:
    for key in ("q", "ctrl+q"):
        app = rig.app(Config(autoplay=False))
        async with app.run_test(size=SIZE) as pilot:
            screen = await started(pilot, app)
            start = screen.position
            await pilot.press("right_square_bracket")
            moved = screen.position
            assert moved != start
            await pilot.press(key)
            await pilot.pause(0.1)
        assert not app.is_running
        app.shutdown()
        saved = json.loads(rig.positions_file.read_text())["documents"]
        (entry,) = saved.values()
        assert entry["offset"] == app.plan[moved].start
        again = rig.app(Config(autoplay=False))
        async with again.run_test(size=SIZE) as pilot:
            assert again.reading.position == moved
            await pilot.press("left_square_bracket", "left_square_bracket", "left_square_bracket")
            await pilot.press("q")
        again.shutdown()


async def test_r_says_the_current_sentence_again_with_a_new_seed(rig: Rig) -> None:
    app = rig.app(Config(autoplay=False))
    async with app.run_test(size=SIZE) as pilot:
        screen = await started(pilot, app)
        await pilot.press("l")
        here = screen.position
        await pilot.press("r")
        await until(pilot, lambda: any(r.seed == 1 for r in rig.engine.requests))
        again = [r for r in rig.engine.requests if r.seed == 1]
        assert again[0].text == app.plan[here].speak
        await until(pilot, lambda: app.narrator.audible() == here)
        await pilot.press("r")
        await until(pilot, lambda: any(r.seed == 2 for r in rig.engine.requests))
