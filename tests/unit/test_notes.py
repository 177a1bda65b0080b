"""Which note a sentence cites, in a Markdown document and in an EPUB."""

from __future__ import annotations

from pathlib import Path

from tests.books import make_epub, xhtml
from vvreader.text.notes import cited_note
from vvreader.text.plan import build_plan
from vvreader.text.readers import load_document, parse


def test_markdown_footnote_is_found_for_its_sentence() -> None:
    plan = build_plan(parse("# T\n\nOne claim[^a]. Another sentence.\n\n[^a]: The note body.\n"))
    speak = [u.speak for u in plan]
    note = cited_note(plan, speak.index("One claim."))
    assert note is not None and [plan[i].kind for i in note] == ["footnote"]
    assert "The note body." in plan[note.start].speak
    assert cited_note(plan, speak.index("Another sentence.")) is None
    assert cited_note(plan, -1) is None and cited_note(plan, len(plan)) is None


def test_epub_endnote_in_a_nonlinear_file(tmp_path: Path) -> None:
    body = '<p>See this<a epub:type="noteref" href="notes.xhtml#e1">1</a>.</p><p>After.</p>'
    notes = xhtml('<aside epub:type="endnote" id="e1"><p>Far away note.</p></aside>')
    book = make_epub(
        tmp_path / "b.epub",
        [("a.xhtml", xhtml(body)), ("notes.xhtml", notes)],
        toc=[],
        nonlinear=("notes.xhtml",),
    )
    plan = build_plan(load_document(str(book)))
    speak = [u.speak for u in plan]
    note = cited_note(plan, speak.index("See this."))
    assert note is not None and "Far away note." in plan[note.start].speak
