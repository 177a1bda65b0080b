"""Snapshots of the main screens (SVG, compared by pytest-textual-snapshot).

Update after a deliberate change with ``pytest tests/pilot/test_snapshots.py
--snapshot-update`` and look at the SVGs before committing them."""

from __future__ import annotations

import time

from tests.pilot.conftest import Rig, until
from vvreader.config import Config
from vvreader.loader import LoadCancelled

SIZE = (100, 30)


def ready(app):
    async def wait(pilot) -> None:
        await until(pilot, lambda: app.narrator.ready)
        await pilot.pause(0.1)

    return wait


def test_reading_screen(rig: Rig, snap_compare) -> None:
    app = rig.app(Config(autoplay=False))
    assert snap_compare(app, press=["j", "j", "j"], terminal_size=SIZE, run_before=ready(app))


def test_help_screen(rig: Rig, snap_compare) -> None:
    app = rig.app(Config(autoplay=False))
    assert snap_compare(app, press=["question_mark"], terminal_size=SIZE, run_before=ready(app))


def test_voice_picker(rig: Rig, snap_compare) -> None:
    app = rig.app(Config(autoplay=False))
    assert snap_compare(app, press=["v"], terminal_size=SIZE, run_before=ready(app))


def held_until_cancelled(progress) -> None:
    """Hold the loading as a stalled download would, until the app cancels it (Textual
    cancels the app's workers when it exits, after the screenshot); then stop as the real
    loader does. The exit waits for this thread (the event loop joins its executor), so
    waiting on anything that is released only after the exit would hold it up."""
    deadline = time.monotonic() + 30  # a safety net: the app always cancels it first
    while not progress.cancelled and time.monotonic() < deadline:
        time.sleep(0.01)
    raise LoadCancelled


def test_loading_screen(rig: Rig, snap_compare) -> None:
    app = rig.app(Config(autoplay=False))
    app.loader.opener = held_until_cancelled
    assert snap_compare(app, terminal_size=SIZE)


def test_download_banner(rig: Rig, snap_compare) -> None:
    """The first start: the model downloading, with its progress in the banner."""
    from engine.api import Transfer
    from engine.hub import DEFAULT_MODEL

    app = rig.app(Config(autoplay=False))
    transfer = Transfer(
        DEFAULT_MODEL, "model.safetensors", 3, 4, 1_234_000_000, 2_016_000_000, 21_300_000.0
    )

    def downloading(progress):
        progress.stage("finding the model")
        progress.transfer(transfer)
        held_until_cancelled(progress)

    app.loader.opener = downloading

    async def shown(pilot) -> None:
        await until(pilot, lambda: "%" in str(app.reading.banner.render()))

    assert snap_compare(app, terminal_size=SIZE, run_before=shown)


def test_word_follow(rig: Rig, snap_compare) -> None:
    """Word follow: the sentence heard, and in it the word being spoken (half way through
    its audio by the clock, which the test holds there)."""
    from tests.pilot.test_listening import hear

    app = rig.app(Config(autoplay=False, word_follow=True))

    async def heard(pilot) -> None:
        await ready(app)(pilot)
        hear(app, 1, 24000)
        await until(pilot, lambda: app.reading.view.word is not None)
        await pilot.pause(0.1)

    assert snap_compare(app, terminal_size=SIZE, run_before=heard)
