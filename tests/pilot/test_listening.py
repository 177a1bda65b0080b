"""Listening controls in the reader: the speed keys (and, below, the sleep timer and word
follow), through Textual's pilot against a scripted engine."""

from __future__ import annotations

from tests.pilot.conftest import Rig, until
from vvreader.config import Config, load_config
from vvreader.screens.reading import ReadingScreen
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
