"""Start-up inside the app: the model downloads (from a fake Hub on 127.0.0.1, slowed down)
with a progress bar in the banner while the document can be read and moved through; then
the weights load, the engine warms up and reading starts. Quitting during the download
exits at once and keeps the place; the next start goes on from the cache. A preset voice
chosen while reading is downloaded with progress and used from the next sentence."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from engine.hub import DEFAULT_MODEL
from engine.voice_fetch import transfer_progress
from tests.fakes import FakeEngine, RecordingPlayer
from tests.hub import official_hub
from tests.pilot.conftest import DOC, Rig, until
from vvreader.app import ReaderApp, ReaderOptions
from vvreader.config import Config
from vvreader.loader import EngineLoader
from vvreader.narration.narrator import State
from vvreader.state import PositionStore
from vvreader.text.plan import build_plan
from vvreader.text.readers import load_document
from vvreader.widgets.loading_banner import LoadingBanner, progress_bar
from vvreader.widgets.status_bar import StatusBar

RATE = 1.5e6  # bytes a second: the tiny model's 4.5 MB take about 3 s


@pytest.fixture
def hub(tiny_model: Path, tmp_path: Path):
    fake = official_hub(tiny_model, tmp_path / "hub", bytes_per_second=RATE)
    yield fake
    fake.stop_sending.clear()
    fake.close()


def make_app(
    tmp: Path, loader, players: list[RecordingPlayer], config: Config | None = None
) -> ReaderApp:
    doc = tmp / "book.md"
    if not doc.exists():
        doc.write_text(DOC)

    def output(device: str):
        def make(ring, clock):
            player = RecordingPlayer(ring, clock, rate=4.0)
            players.append(player)
            return player

        return make

    options = ReaderOptions(
        config=config or Config(),
        config_file=tmp / "config.toml",
        document_path=str(doc),
        model_id="",
    )
    return ReaderApp(
        build_plan(load_document(str(doc))),
        options,
        loader,
        positions=PositionStore(tmp / "positions.json"),
        make_output=output,
    )


def record_loading(app: ReaderApp) -> list[tuple[str, str, float | None]]:
    """Every (stage, detail, fraction) the reading screen is asked to show."""
    seen: list[tuple[str, str, float | None]] = []
    original = app.reading.show_loading

    def spy(what: str, detail: str = "", fraction: float | None = None) -> None:
        seen.append((what, detail, fraction))
        original(what, detail, fraction)

    app.reading.show_loading = spy  # type: ignore[method-assign]
    return seen


def banner_text(app: ReaderApp) -> str:
    banner = app.reading.query_one(LoadingBanner)
    return "" if banner.has_class("-hidden") else banner.render().plain


async def test_the_model_downloads_inside_the_app_with_progress(hub, tmp_path) -> None:
    loader = EngineLoader(None, "", cache_dir=tmp_path / "hf", endpoint=hub.url)
    players: list[RecordingPlayer] = []
    app = make_app(tmp_path, loader, players)
    seen = record_loading(app)
    shown: list[str] = []
    try:
        async with app.run_test(size=(110, 30)) as pilot:
            await until(pilot, lambda: any(f and 0 < f < 1 for _, _, f in seen), timeout=30)
            # The document works while the model downloads.
            cursor = app.reading.view.cursor
            await pilot.press("j")
            assert app.reading.view.cursor == cursor + 1
            assert app.query_one(StatusBar).state == "loading"
            while not app.narrator.ready:
                text = banner_text(app)
                if text and (not shown or shown[-1] != text):
                    shown.append(text)
                await pilot.pause(0.05)
                assert len(shown) < 10_000
            await until(pilot, lambda: app.narrator.state is State.PLAYING, timeout=30)
            await until(pilot, lambda: sum(len(p) for p in players[0].played) > 24_000)
            assert banner_text(app) == ""
            await pilot.press("q")
    finally:
        app.shutdown()
    stages = [w for w, _, _ in seen]
    order = [
        "finding the model",
        f"downloading {DEFAULT_MODEL}",
        "loading the weights",
        "warming up",
    ]
    firsts = [stages.index(s) for s in order]
    assert firsts == sorted(firsts), stages
    fractions = [f for w, _, f in seen if w == f"downloading {DEFAULT_MODEL}" and f is not None]
    weights = [f for w, d, f in seen if "\u00b7 model.safetensors" in d and f is not None]
    assert len({round(f, 2) for f in weights if 0 < f < 1}) >= 3, weights
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    details = " ".join(d for _, d, _ in seen)
    assert "MB of" in details and "MB/s" in details and "left" in details
    assert any(progress_bar(0.5)[:5] in t and "model.safetensors" in t for t in shown), shown
    assert set(loader.timings) == {"find", "weights", "warm-up"}
    # What the app downloaded: only the files the engine needs, and now it is cached.
    assert hub.downloaded() >= {"config.json", "model.safetensors", "tokenizer.json"}
    assert not list((tmp_path / "hf").rglob("*.incomplete"))


async def test_quitting_during_the_download_exits_at_once_and_keeps_the_place(
    hub, tmp_path
) -> None:
    loader = EngineLoader(None, "", cache_dir=tmp_path / "hf", endpoint=hub.url)
    app = make_app(tmp_path, loader, [])
    seen = record_loading(app)
    async with app.run_test(size=(110, 30)) as pilot:
        await until(pilot, lambda: any(f and f > 0.2 for _, _, f in seen), timeout=30)
        hub.stop_sending.set()  # the line goes silent in the middle of the weights
        await pilot.press("l", "l")  # move on two sentences while waiting
        assert app.reading.position == 2
        t0 = time.monotonic()
        await pilot.press("q")
    quit_took = time.monotonic() - t0
    app.shutdown()
    assert quit_took < 5.0, quit_took
    assert app.engine is None and not app.narrator.ready
    saved = json.loads((tmp_path / "positions.json").read_text())["documents"]
    assert [d["index"] for d in saved.values()] == [2]

    # The next start finishes the download and reads from the saved sentence.
    hub.stop_sending.clear()
    loader = EngineLoader(None, "", cache_dir=tmp_path / "hf", endpoint=hub.url)
    players: list[RecordingPlayer] = []
    again = make_app(tmp_path, loader, players)
    try:
        async with again.run_test(size=(110, 30)) as pilot:
            assert again.reading.position == 2
            await until(pilot, lambda: again.narrator.ready, timeout=60)
            await until(pilot, lambda: again.narrator.audible() == 2, timeout=30)
            await pilot.press("q")
    finally:
        again.shutdown()


class PresetLoader:
    """A loader whose engine is ready at once and that downloads one preset voice
    (``xx-New_woman``) in ten steps, reporting like the real one. With ``gate``, it waits
    after reporting 0% until the gate is set (a test that must see the banner sets it
    once it has: a busy machine could otherwise end the whole download first)."""

    NEW = "xx-New_woman"

    def __init__(self, engine: FakeEngine, fail: bool = False, gate: bool = False) -> None:
        self.engine = engine
        self.first_voice = "a"
        self.fail = fail
        self.gate = threading.Event()
        if not gate:
            self.gate.set()
        self.fetched: list[str] = []
        self.started = threading.Event()

    def open(self, progress) -> FakeEngine:
        return self.engine

    def voice_missing(self, name: str) -> bool:
        return name == self.NEW and name not in self.fetched

    def fetch_voice(self, name: str, progress) -> None:
        self.started.set()
        report = transfer_progress(f"voice {name}", f"{name}.pt", progress.transfer)
        for i in range(11):
            report(i * 100_000, 1_000_000)
            if i == 0:
                self.gate.wait(timeout=60)
            time.sleep(0.1)
            if self.fail and i == 5:
                raise RuntimeError("cannot download voice xx-New_woman: the line dropped")
        self.fetched.append(name)


class PresetEngine(FakeEngine):
    def voices(self) -> list[str]:
        return ["a", "b", PresetLoader.NEW]


async def test_a_preset_voice_downloads_with_progress_then_reads_on(rig: Rig) -> None:
    engine = PresetEngine(0.002)
    loader = PresetLoader(engine, gate=True)
    players: list[RecordingPlayer] = []
    app = make_app(rig.tmp, loader, players)
    try:
        async with app.run_test(size=(110, 30)) as pilot:
            await until(pilot, lambda: app.narrator.ready and app.narrator.state is State.PLAYING)
            assert app.reading.voices.missing == {PresetLoader.NEW}
            await pilot.press("V")  # b: cached, applies at once
            assert app.reading.settings.voice == "b"
            await pilot.press("V")  # the preset: downloaded first, b reads on
            await until(pilot, lambda: "downloading voice xx-New_woman" in banner_text(app))
            loader.gate.set()
            assert app.reading.settings.voice == "b"
            shown = set()
            while not loader.fetched:
                text = banner_text(app)
                if "%" in text:
                    shown.add(text.split("%")[0].rsplit(" ", 1)[-1])
                await pilot.pause(0.03)
            assert len(shown) >= 3, shown  # the percentage moved
            await until(pilot, lambda: app.reading.settings.voice == PresetLoader.NEW)
            await until(pilot, lambda: banner_text(app) == "")
            await until(pilot, lambda: any(r.voice == PresetLoader.NEW for r in engine.requests))
            assert app.narrator.state is State.PLAYING
            assert app.reading.voices.missing == set()
            await pilot.press("q")
    finally:
        app.shutdown()
    assert app.config.voice == PresetLoader.NEW


async def test_a_preset_voice_that_cannot_download_is_a_message(rig: Rig) -> None:
    engine = PresetEngine(0.002)
    app = make_app(rig.tmp, PresetLoader(engine, fail=True), [])
    try:
        async with app.run_test(size=(110, 30)) as pilot:
            await until(pilot, lambda: app.narrator.ready)
            await pilot.press("V", "V")
            await until(
                pilot,
                lambda: any("the line dropped" in str(n.message) for n in app._notifications),
                timeout=10,
            )
            assert app.reading.settings.voice == "b" and banner_text(app) == ""
            assert app.reading.voices.missing == {PresetLoader.NEW}
            await pilot.press("q")
    finally:
        app.shutdown()
