"""Building the reader app around a scripted engine and a recording output."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.fakes import FakeEngine, FakeLoader, RecordingPlayer
from vvreader.app import ReaderApp, ReaderOptions
from vvreader.config import Config
from vvreader.state import PositionStore
from vvreader.text.plan import SpeechPlan, build_plan
from vvreader.text.readers import load_document

DOC = """# Chapter one

The first sentence is here. And the second one follows it.

A second paragraph starts. It has two sentences.

## Section two

- one item in a list
- another item

A closing paragraph with words. The searchable needle sits here.

# Chapter two

Last words of the book. The needle again.
"""


@dataclass
class Rig:
    """One app under test and what it talks to."""

    tmp: Path
    doc: Path
    engine: FakeEngine
    players: list[RecordingPlayer] = field(default_factory=list)
    apps: list[ReaderApp] = field(default_factory=list)
    """The apps made here: the fixture shuts them down (narrator, output, engine) after
    the test, as the reader's main does after its app exits."""

    @property
    def config_file(self) -> Path:
        return self.tmp / "config.toml"

    @property
    def positions_file(self) -> Path:
        return self.tmp / "positions.json"

    def plan(self) -> SpeechPlan:
        return build_plan(load_document(str(self.doc)))

    def app(
        self, config: Config | None = None, rate: float = 1.0, engine_delay: float = 0.0
    ) -> ReaderApp:
        def output(device: str):
            def make(ring, clock):
                player = RecordingPlayer(ring, clock, rate=rate)
                self.players.append(player)
                return player

            return make

        def open_engine(_progress: object) -> FakeEngine:
            time.sleep(engine_delay)
            return self.engine

        options = ReaderOptions(
            config=config or Config(),
            config_file=self.config_file,
            document_path=str(self.doc),
            model_id="fake",
        )
        app = ReaderApp(
            self.plan(),
            options,
            FakeLoader(open_engine),
            positions=PositionStore(self.positions_file),
            make_output=output,
        )
        self.apps.append(app)
        return app


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    doc = tmp_path / "book.md"
    doc.write_text(DOC)
    rig = Rig(tmp_path, doc, FakeEngine(seconds_per_frame=0.002))
    yield rig
    for app in rig.apps:
        app.shutdown()


async def until(pilot, cond, timeout: float = 10.0) -> None:
    """Let the app run until ``cond()`` holds."""
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        await pilot.pause(0.02)
