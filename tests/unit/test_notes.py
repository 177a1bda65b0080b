"""Which note a sentence cites, in a Markdown document and in an EPUB."""

from __future__ import annotations

from pathlib import Path

from tests.books import make_epub, xhtml
from vvreader.text.notes import cited_note
from vvreader.text.plan import build_plan
from vvreader.text.readers import load_document, parse
from vvreader.text.settings import PlanSettings


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


def in_turn(plan) -> list[int]:
    """The utterances read straight through from the first one."""
    order, i = [], 0
    while i < len(plan):
        order.append(i)
        i = plan.following(i)
    return order


def test_book_notes_are_in_the_plan_but_not_read_in_turn(tmp_path: Path) -> None:
    body = (
        '<h1>One</h1><p>A claim<a epub:type="noteref" href="#n1">1</a> here. '
        'Far<a epub:type="noteref" href="notes.xhtml#e1">2</a> off.</p>'
        '<aside epub:type="footnote" id="n1"><p>The aside note.</p></aside>'
        "<p>Closing words.</p>"
    )
    notes = xhtml('<aside epub:type="endnote" id="e1"><p>The endnote.</p></aside>')
    book = make_epub(
        tmp_path / "b.epub",
        [("a.xhtml", xhtml(body)), ("b.xhtml", xhtml("<h1>Two</h1><p>Last.</p>"))]
        + [("notes.xhtml", notes)],
        toc=[],
        nonlinear=("notes.xhtml",),
    )
    plan = build_plan(load_document(str(book)))
    speak = [u.speak for u in plan]
    notes_at = [u.index for u in plan if u.note]
    assert [speak[i] for i in notes_at] == [
        "Footnote 1: The aside note.",
        "Footnote 2: The endnote.",
    ]
    assert all(plan[i].kind == "footnote" for i in notes_at)
    # Straight through: every utterance but the notes, in order, to the end.
    assert [speak[i] for i in in_turn(plan)] == [
        "One.", "A claim here.", "Far off.", "Closing words.", "Two.", "Last.",
    ]  # fmt: skip
    # The last sentence before the notes pauses as at a section's end (what follows in turn).
    closing = plan[speak.index("Closing words.")]
    assert closing.pause_after == PlanSettings().pause_section_ms
    # A note reads on from itself; each citing sentence finds its note.
    assert plan.following(notes_at[0]) == notes_at[1]
    aside = cited_note(plan, speak.index("A claim here."))
    endnote = cited_note(plan, speak.index("Far off."))
    assert aside is not None and [speak[i] for i in aside] == [speak[notes_at[0]]]
    assert endnote is not None and [speak[i] for i in endnote] == [speak[notes_at[1]]]
    # --plan --json marks the notes, and only them.
    assert [u.as_dict().get("note") for u in plan] == [True if u.note else None for u in plan]
    assert plan[notes_at[0]].as_dict()["note"] is True


def test_markdown_footnotes_stay_read_in_turn() -> None:
    plan = build_plan(parse("# T\n\nOne claim[^a].\n\n# U\n\nMore.\n\n[^a]: The note body.\n"))
    assert not any(u.note for u in plan)
    assert in_turn(plan) == list(range(len(plan)))
    assert "note" not in plan[0].as_dict()
    assert [u.kind for u in plan].count("footnote") == 1
