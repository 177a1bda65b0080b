"""The reader on an EPUB, through Textual's pilot: a note is not read in turn, the note key
reads a sentence's note and comes back, the status bar names the chapter, the contents list
the book's entries."""

from __future__ import annotations

from pathlib import Path

from tests.books import make_epub, xhtml
from tests.fakes import FakeEngine
from tests.pilot.conftest import Rig, until
from vvreader.app import ReaderApp
from vvreader.config import Config
from vvreader.media.controls import MediaCommand
from vvreader.screens.contents import TableOfContents
from vvreader.widgets.status_bar import StatusBar

SIZE = (120, 30)

BODY = (
    "<h1>The Start</h1>"
    '<p>A claim with a note<a epub:type="noteref" href="#n1">1</a> in it. The next sentence.</p>'
    '<aside epub:type="footnote" id="n1"><p>The note says why.</p></aside>'
    "<p>A later paragraph.</p>"
)


def book_rig(tmp_path: Path) -> Rig:
    book = make_epub(
        tmp_path / "book.epub",
        [("a.xhtml", xhtml(BODY)), ("b.xhtml", xhtml("<h1>The End</h1><p>Last words.</p>"))],
        toc=[("a.xhtml", "The Start", 1), ("b.xhtml", "The End", 1)],
        title="Noted",
        author="Ann Author",
    )
    return Rig(tmp_path, book, FakeEngine(seconds_per_frame=0.002))


async def test_note_key_reads_the_note_then_comes_back(tmp_path: Path) -> None:
    rig = book_rig(tmp_path)
    try:
        app = rig.app(Config(autoplay=False))
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.narrator.ready)
            plan = app.plan
            speak = [u.speak for u in plan]
            claim = speak.index("A claim with a note in it.")
            note = next(u.index for u in plan if u.kind == "footnote")
            assert plan[note].note and "The note says why." in plan[note].speak
            screen = app.reading
            screen._go(claim, cursor=True)
            await pilot.press("o")
            await until(pilot, lambda: screen.position == note)
            await until(pilot, lambda: screen.position == claim + 1, timeout=20)
            said = [r.text for r in rig.engine.requests]
            assert any("The note says why." in s for s in said)
            await until(pilot, lambda: app.query_one(StatusBar).chapter == "The Start")
            await pilot.press("space")  # pause
            await pilot.press("o")  # the next sentence cites no note: nothing moves
            await pilot.pause(0.2)
            assert not app.narrator.reading_note
    finally:
        for app in rig.apps:
            app.shutdown()


async def test_reading_straight_through_passes_the_note_by(tmp_path: Path) -> None:
    rig = book_rig(tmp_path)
    try:
        app = rig.app(Config(autoplay=False))
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.narrator.ready)
            await pilot.press("space")
            await until(pilot, lambda: app.narrator.finished, timeout=20)
            said = [r.text for r in rig.engine.requests]
            assert said == [u.speak for u in app.plan if not u.note]
            assert "Last words." in said
            assert not any("The note says why." in s for s in said)
            assert any("The note says why." in u.speak for u in app.plan)  # still there for o
    finally:
        for app in rig.apps:
            app.shutdown()


async def test_contents_list_the_book_with_its_title(tmp_path: Path) -> None:
    rig = book_rig(tmp_path)
    try:
        app = rig.app(Config(autoplay=False))
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.narrator.ready)
            await pilot.press("t")
            await until(pilot, lambda: isinstance(app.screen, TableOfContents))
            contents = app.screen
            assert isinstance(contents, TableOfContents)
            assert contents.heading == "Contents of Noted by Ann Author"
            assert [title for _, _, title in contents.entries] == ["The Start", "The End"]
            await pilot.press("down", "enter")
            end = [u.speak for u in app.plan].index("The End.")
            await until(pilot, lambda: app.reading.position == end)
            assert app.title == "Noted" and app.sub_title == "Ann Author"
    finally:
        for app in rig.apps:
            app.shutdown()


async def test_sentence_keys_and_media_buttons_pass_over_a_note_and_keep_to_one_read(
    tmp_path: Path,
) -> None:
    rig = book_rig(tmp_path)
    try:
        app = rig.app(Config(autoplay=False))
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.narrator.ready)
            plan = app.plan
            speak = [u.speak for u in plan]
            later, end = speak.index("A later paragraph."), speak.index("The End.")
            note = next(u.index for u in plan if u.note)
            assert later < note < end
            screen = app.reading
            screen._go(later, cursor=True)
            await pilot.press("l")
            await until(pilot, lambda: screen.position == end)
            await pilot.press("h")
            await until(pilot, lambda: screen.position == later)
            await pilot.press("right_square_bracket")
            await until(pilot, lambda: screen.position == end)
            await pilot.press("left_square_bracket")
            await until(pilot, lambda: screen.position == later)
            for media, at in ((MediaCommand.NEXT, end), (MediaCommand.PREVIOUS, later)):
                app.post_message(ReaderApp.MediaKey(media))
                await until(pilot, lambda at=at: screen.position == at)
            # A note being read: the next sentence key leaves it for the sentence after the
            # one citing it; the previous one goes back to the citing sentence.
            claim = speak.index("A claim with a note in it.")
            for key, back_to in (("l", claim + 1), ("h", claim)):
                screen._go(claim, cursor=True)
                await pilot.press("o")
                await until(pilot, lambda: screen.position == note)
                await pilot.press(key)
                await until(pilot, lambda back_to=back_to: screen.position == back_to)
                assert not app.narrator.reading_note
    finally:
        for app in rig.apps:
            app.shutdown()
