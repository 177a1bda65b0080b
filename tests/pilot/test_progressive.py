"""A big book is shown and read at once while the rest is planned in the background."""

from __future__ import annotations

import time
from pathlib import Path

from tests.fakes import FakeEngine, FakeLoader, RecordingPlayer
from tests.pilot.conftest import until
from vvreader.app import ReaderApp, ReaderOptions
from vvreader.config import Config
from vvreader.state import Position, PositionStore
from vvreader.text.plan import ProgressivePlan, build_plan
from vvreader.text.readers import load_document
from vvreader.widgets.reading_view import ReadingView

CHAPTER = "# Chapter {n}\n\n" + ("Words of a sentence in chapter {n}. " * 6 + "\n\n") * 8


def book(tmp_path: Path) -> Path:
    path = tmp_path / "big.md"
    path.write_text("".join(CHAPTER.format(n=n) for n in range(40)))
    return path


def make(path: Path, tmp_path: Path, config: Config) -> tuple[ReaderApp, ProgressivePlan]:
    progress = ProgressivePlan(path.read_text(), first_chars=2_000, part_chars=8_000)
    first = progress.advance(1)
    engine = FakeEngine(0.001)
    app = ReaderApp(
        first,
        ReaderOptions(config=config, config_file=tmp_path / "c.toml", document_path=str(path)),
        FakeLoader(lambda _progress: engine),
        positions=PositionStore(tmp_path / "positions.json"),
        make_output=lambda device: lambda ring, clock: RecordingPlayer(ring, clock, 50.0),
        progress=progress,
    )
    return app, progress


async def test_first_part_at_once_then_the_whole_book(tmp_path: Path) -> None:
    path = book(tmp_path)
    whole = build_plan(load_document(str(path)))
    app, progress = make(path, tmp_path, Config(autoplay=True))
    assert 0 < len(app.plan) < len(whole)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: app.plan.complete, timeout=30)
        assert [u.speak for u in app.plan] == [u.speak for u in whole]
        view = app.query_one(ReadingView)
        assert view.plan is app.plan and app.narrator.plan is app.plan
        # reading went on past the first part without a stop
        await until(pilot, lambda: (app.narrator.audible() or 0) > 40, timeout=30)
        await pilot.press("end", "q")
    app.shutdown()


async def test_resume_beyond_the_first_part(tmp_path: Path) -> None:
    path = book(tmp_path)
    text = path.read_text()
    whole = build_plan(load_document(str(path)))
    target = whole[len(whole) - 20]
    store = PositionStore(tmp_path / "positions.json")
    store.put(path, Position.at(text, target.start, target.end, target.index))
    store.save()
    app, _ = make(path, tmp_path, Config(autoplay=False))
    assert target.index >= len(app.plan)  # not planned when the app starts
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: app.reading.position == target.index, timeout=30)
        await until(pilot, lambda: app.query_one(ReadingView).cursor == target.index)
        start = time.monotonic()
        await pilot.press("q")
        assert time.monotonic() - start < 5
    app.shutdown()
    assert PositionStore(tmp_path / "positions.json").get(path, text).offset == target.start
