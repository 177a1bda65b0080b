"""Errors become notifications (never a traceback), and the theme is remembered."""

from __future__ import annotations

from tests.fakes import FakeEngine
from tests.pilot.conftest import Rig, until
from vvreader.config import Config, load_config
from vvreader.loader import EngineUnavailable
from vvreader.widgets.reading_view import ReadingView
from vvreader.widgets.status_bar import StatusBar


class BrokenEngine(FakeEngine):
    def synthesize(self, request):
        raise RuntimeError("the synthesis exploded: out of memory")


def messages(app) -> list[str]:
    return [str(n.message) for n in app._notifications]


async def test_a_model_that_cannot_load_is_a_notification_and_reading_view_works(
    rig: Rig,
) -> None:
    app = rig.app(Config(autoplay=True))

    def fail(_progress):
        raise EngineUnavailable("/nowhere: no such model folder")

    app.loader.opener = fail
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: any("no such model folder" in m for m in messages(app)))
        assert app.query_one(StatusBar).state == "loading"
        await pilot.press("j", "j", "space", "right_square_bracket")
        assert app.query_one(ReadingView).cursor == 2
        assert app.reading.position == app.plan.next_paragraph(0)
        await pilot.press("q")
    assert app.return_code in (0, None)


async def test_engine_errors_while_reading_are_notifications(rig: Rig) -> None:
    rig.engine = BrokenEngine()
    app = rig.app(Config(autoplay=True))
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: any("exploded" in m for m in messages(app)))
        assert app.is_running
        await pilot.press("l", "space")
        await pilot.press("q")


async def test_no_audio_device_reads_on_silently_with_a_message(rig: Rig) -> None:
    from vvreader.player import AudioDeviceError

    app = rig.app(Config(autoplay=True))

    def no_device(device: str):
        def make(ring, clock):
            raise AudioDeviceError("no usable audio output (no device); see --list-devices")

        return make

    app._make_output = no_device
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: any("no usable audio output" in m for m in messages(app)))
        await until(pilot, lambda: app.narrator.ready and app.narrator.audible() == 0)
        await pilot.press("q")


async def test_the_chosen_theme_is_remembered(rig: Rig) -> None:
    app = rig.app(Config(autoplay=False))
    async with app.run_test(size=(100, 30)) as pilot:
        assert app.theme == "vvreader-dark"
        app.theme = "vvreader-high-contrast"
        await pilot.pause(0.1)
        await pilot.press("q")
    assert load_config(rig.config_file)[0].theme == "vvreader-high-contrast"
    again = rig.app(load_config(rig.config_file)[0])
    async with again.run_test(size=(100, 30)) as pilot:
        assert again.theme == "vvreader-high-contrast"
        await pilot.press("q")
