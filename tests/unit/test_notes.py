"""Which note a sentence cites, in a Markdown document and in an EPUB."""

from __future__ import annotations

from pathlib import Path

from tests.books import make_epub, xhtml
from vvreader.text.notes import cited_note
from vvreader.text.plan import ProgressivePlan, build_plan
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
    # Read on from a note (however it was come to): to its end, then the text after the
    # sentence citing it, never the notes after it.
    assert plan.following(notes_at[0]) == speak.index("Far off.")
    assert plan.following(notes_at[1]) == speak.index("Closing words.")
    assert plan.citing(notes_at[0]) == speak.index("A claim here.")
    assert plan.citing(speak.index("A claim here.")) is None  # not a note
    # Each citing sentence finds its note.
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


def noted_book(tmp_path: Path) -> Path:
    """A chapter citing a note of two paragraphs and another note, then a second chapter."""
    body = (
        '<h1>One</h1><p>A claim<a epub:type="noteref" href="#n1">1</a> here. '
        'Far<a epub:type="noteref" href="notes.xhtml#e1">2</a> off.</p>'
        '<aside epub:type="footnote" id="n1"><p>Note one begins. It goes on.</p>'
        "<p>Its second paragraph.</p></aside>"
        "<p>Closing words.</p>"
    )
    notes = xhtml('<aside epub:type="endnote" id="e1"><p>The endnote.</p></aside>')
    return make_epub(
        tmp_path / "b.epub",
        [("a.xhtml", xhtml(body)), ("b.xhtml", xhtml("<h1>Two</h1><p>Last. Very last.</p>"))]
        + [("notes.xhtml", notes)],
        toc=[],
        nonlinear=("notes.xhtml",),
    )


def walk(plan, index: int, move: str, cited_at: int | None = None) -> list[str]:
    """What ``move`` visits from ``index``, repeated until it goes nowhere."""
    seen = []
    while (index := getattr(plan, move)(index, cited_at)) is not None:
        seen.append(plan[index].speak)
        if len(seen) > len(plan):
            raise AssertionError(f"{move} goes round: {seen}")
    return seen


def test_moves_in_the_text_pass_over_a_books_notes(tmp_path: Path) -> None:
    plan = build_plan(load_document(str(noted_book(tmp_path))))
    speak = [u.speak for u in plan]
    assert [u.speak for u in plan if u.note] == [
        "Footnote 1: Note one begins.", "It goes on.", "Its second paragraph.",
        "Footnote 2: The endnote.",
    ]  # fmt: skip
    text = [s for s in speak if not plan[speak.index(s)].note]
    assert walk(plan, 0, "next_sentence") == text[1:]
    assert walk(plan, len(plan) - 1, "previous_sentence") == text[-2::-1]
    assert walk(plan, 0, "next_paragraph") == ["A claim here.", "Closing words.", "Two.", "Last."]
    assert walk(plan, speak.index("Two."), "previous_paragraph") == [
        "Closing words.", "A claim here.", "One.",
    ]  # fmt: skip
    assert walk(plan, 0, "next_heading") == ["Two."]


def test_moves_in_a_note_stay_in_it_and_lead_back_after_the_citing_sentence(
    tmp_path: Path,
) -> None:
    plan = build_plan(load_document(str(noted_book(tmp_path))))
    speak = [u.speak for u in plan]
    claim = speak.index("A claim here.")
    note = cited_note(plan, claim)
    assert note is not None and plan.note_at(note.start) == note == plan.note_at(note.stop - 1)
    assert plan.note_at(claim) is None
    start, second = note.start, speak.index("Its second paragraph.")
    # Read from the citing sentence: within the note, then back to the text after it.
    assert plan.next_sentence(start, claim) == start + 1
    assert plan.next_sentence(start + 1, claim) == second
    assert plan.next_sentence(second, claim) == speak.index("Far off.")
    assert plan.next_paragraph(start, claim) == second
    assert plan.next_paragraph(second, claim) == speak.index("Far off.")
    assert plan.previous_sentence(second, claim) == start + 1
    assert plan.previous_paragraph(second, claim) == start
    assert plan.previous_sentence(start, claim) == claim  # out of its start: the citing one
    # The endnote, read from the sentence citing it, leads on to the sentence after that.
    far = speak.index("Far off.")
    endnote = cited_note(plan, far)
    assert endnote is not None
    closing = speak.index("Closing words.")
    assert plan.next_sentence(endnote.start, far) == closing
    # A note come to by hand (clicked): moves keep to it, out of its end to the text after
    # the sentence citing it (as reading on), out of its start into the text before it.
    assert plan.next_sentence(start + 1) == second
    assert plan.next_sentence(second) == far
    assert plan.previous_sentence(start) == closing
    assert plan.next_sentence(endnote.start) == closing
    assert plan.previous_paragraph(endnote.start) == closing
    # Reading on does the same, whether the note was read from its citing sentence or not.
    assert plan.following(second) == far == plan.following(second, claim)
    assert plan.following(start) == start + 1
    assert plan.following(endnote.start) == closing == plan.following(endnote.start, far)


def test_the_note_cited_is_found_while_the_plan_grows() -> None:
    """A footnote defined at the end of a long document is planned at the end of the
    section citing it, before its definition's block is in the partial plan's document."""
    text = (
        "# A\n\nOne claim[^a]. Two.\n\n# B\n\n"
        + "".join(f"Paragraph {i} has words.\n\n" for i in range(3000))
        + "[^a]: The note.\n"
    )
    progress = ProgressivePlan(text, first_chars=2_000, part_chars=8_000)
    plan = progress.advance(1)
    while not any(u.kind == "footnote" for u in plan):
        assert progress.step()
        plan = progress.plan
    assert not plan.complete
    note = next(u.index for u in plan if u.kind == "footnote")
    assert plan[note].block >= len(plan.document.blocks)  # not in the document yet
    assert plan.footnote(note) == "a"
    assert cited_note(plan, 1) == range(note, note + 1)
