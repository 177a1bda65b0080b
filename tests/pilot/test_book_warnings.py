"""What of a book could not be read as it should reaches the reader in the app: the warnings
found when it opens and those of chapters converted later, while the reader already reads,
each told once, many told as one."""

from __future__ import annotations

import zipfile
from pathlib import Path

from textual.widgets._toast import Toast

from tests.books import make_epub, xhtml, zip_files
from tests.fakes import FakeEngine, FakeLoader, RecordingPlayer
from tests.pilot.conftest import until
from vvreader.app import ReaderApp, ReaderOptions
from vvreader.config import Config
from vvreader.state import PositionStore
from vvreader.text.plan import ProgressivePlan

SOUP = '<html xmlns="http://www.w3.org/1999/xhtml"><body><p>Soup <b><i>two</b> three<p>Four</body>'
LONG = "<h1>First</h1>" + "<p>A sentence of the long first chapter, read at once.</p>" * 1500


def broken_book(tmp_path: Path, soups: int = 1) -> Path:
    """A long first chapter, then ``soups`` malformed chapters, one the spine names but the
    archive lacks, and a last good one."""
    chapters = [("c0.xhtml", xhtml(LONG))]
    chapters += [(f"soup{i}.xhtml", SOUP) for i in range(soups)]
    chapters += [("gone.xhtml", xhtml("<p>Never.</p>")), ("end.xhtml", xhtml("<p>The end.</p>"))]
    book = make_epub(tmp_path / "whole.epub", chapters, toc=[])
    with zipfile.ZipFile(book) as z:
        files = {n: z.read(n) for n in z.namelist() if n not in ("mimetype", "OEBPS/gone.xhtml")}
    return zip_files(tmp_path / "broken.epub", files)


def reader(path: Path, tmp_path: Path) -> ReaderApp:
    progress = ProgressivePlan.open(str(path))
    first = progress.advance(1)
    engine = FakeEngine(0.001)
    return ReaderApp(
        first,
        ReaderOptions(Config(autoplay=False), tmp_path / "c.toml", str(path)),
        FakeLoader(lambda _progress: engine),
        positions=PositionStore(tmp_path / "positions.json"),
        make_output=lambda device: lambda ring, clock: RecordingPlayer(ring, clock, 50.0),
        progress=progress,
    )


def shown(app: ReaderApp) -> list[str]:
    """The text of the notifications on the screen now."""
    return [str(toast.render()) for toast in app.screen.query(Toast)]


async def test_warnings_found_later_reach_the_reader_once(tmp_path: Path) -> None:
    app = reader(broken_book(tmp_path), tmp_path)
    first_page = app.plan
    assert not first_page.complete and "Soup" not in first_page.document.text
    try:
        async with app.run_test(size=(100, 30), notifications=True) as pilot:
            # Found when the book opened: the chapter the archive lacks.
            await until(pilot, lambda: any("gone.xhtml is missing" in s for s in shown(app)))
            await until(pilot, lambda: app.plan.complete, timeout=30)
            # Found once the rest was converted, while the first page was shown.
            await until(pilot, lambda: any("soup0.xhtml: not well-formed" in s for s in shown(app)))
            said = [str(n.message) for n in app._notifications]
            assert sum("gone.xhtml is missing" in s for s in said) == 1
            assert sum("read as tag soup" in s for s in said) == 1
            assert "Soup two three" in " ".join(u.speak for u in app.plan)
            await pilot.pause(1.0)  # nothing is said again
            assert [str(n.message) for n in app._notifications] == said
            await pilot.press("q")
    finally:
        app.shutdown()


async def test_many_warnings_are_told_as_one_with_a_count(tmp_path: Path) -> None:
    app = reader(broken_book(tmp_path, soups=8), tmp_path)
    try:
        async with app.run_test(size=(100, 30), notifications=True) as pilot:
            await until(pilot, lambda: app.plan.complete, timeout=30)
            await until(pilot, lambda: any("and 5 more" in s for s in shown(app)))
            later = [str(n.message) for n in app._notifications if "soup" in str(n.message)]
            assert len(later) == 1
            assert later[0].count("read as tag soup") == 3
            await pilot.press("q")
    finally:
        app.shutdown()
