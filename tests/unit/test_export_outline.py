"""What an export holds: the utterances read, their chapters (from the contents), the tags;
the names of the files it writes."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from tests.books import make_epub, xhtml
from vvreader.export.naming import MAX_NAME_BYTES, chapter_file_name, safe_name
from vvreader.export.outline import OPENING, outline
from vvreader.text.document import BookInfo
from vvreader.text.plan import build_plan
from vvreader.text.readers import load_document

DOC = """Before any heading.

# The Book

A first line.

## One

Alpha. Beta.

### A section

Gamma.

## Two

Delta.
"""


def _plan(tmp_path: Path, text: str = DOC, name: str = "my book.md"):
    path = tmp_path / name
    path.write_text(text)
    return build_plan(load_document(str(path)))


def _said(book, part: int) -> list[str]:
    return [book.utterances[i].speak for i in book.span(part)]


def test_chapters_are_the_top_two_levels_of_the_headings_and_tile_the_utterances(
    tmp_path,
) -> None:
    plan = _plan(tmp_path)
    book = outline(plan)
    assert [p.title for p in book.parts] == [OPENING, "The Book", "One", "Two"]
    assert _said(book, 0) == ["Before any heading."]
    assert _said(book, 1) == ["The Book.", "A first line."]
    # The third level stays inside its chapter.
    assert _said(book, 2) == ["One.", "Alpha.", "Beta.", "A section.", "Gamma."]
    assert _said(book, 3) == ["Two.", "Delta."]
    # Tiled: every utterance in exactly one part, in order.
    spans = [list(book.span(k)) for k in range(len(book.parts))]
    assert sum(spans, []) == list(range(len(book.utterances))) == list(range(len(plan)))
    assert [book.part_of(i) for i in range(len(plan))] == [
        k for k, span in enumerate(spans) for _ in span
    ]


def test_a_range_starts_with_the_chapter_it_is_in(tmp_path) -> None:
    plan = _plan(tmp_path)
    alpha = next(u.index for u in plan if u.speak == "Alpha.")
    book = outline(plan, alpha, alpha + 3)
    assert [(p.title, p.first) for p in book.parts] == [("One", 0)]
    assert [u.speak for u in book.utterances] == ["Alpha.", "Beta.", "A section.", "Gamma."]
    two = next(u.index for u in plan if u.speak == "Two.")
    book = outline(plan, alpha, two)
    assert [(p.title, p.first) for p in book.parts] == [("One", 0), ("Two", 4)]
    # Past the end: nothing, no chapters.
    assert outline(plan, len(plan) + 3).parts == ()


def test_parts_that_start_together_are_one_chapter(tmp_path) -> None:
    plan = _plan(tmp_path, "# Part One\n\n## Chapter 1\n\nText.\n\n## Chapter 2\n\nMore.\n")
    book = outline(plan)
    assert [(p.title, p.first) for p in book.parts] == [
        ("Part One: Chapter 1", 0),
        ("Chapter 2", 3),
    ]


def test_a_document_without_headings_is_one_chapter_named_by_its_file(tmp_path) -> None:
    plan = _plan(tmp_path, "Just text. Nothing else.\n", name="a story.txt")
    book = outline(plan)
    assert [(p.title, p.first) for p in book.parts] == [("a story", 0)]
    assert book.tags.title == "a story" and book.tags.author == ""


def test_a_books_table_of_contents_and_tags(tmp_path) -> None:
    epub = make_epub(
        tmp_path / "b.epub",
        [
            ("one.xhtml", xhtml("<h1>Start</h1><p>First words.</p>")),
            ("two.xhtml", xhtml("<h1>Middle</h1><p>More words.</p>")),
        ],
        toc=[("one.xhtml", "The Start", 1), ("two.xhtml", "The Middle", 1)],
        title="A  Test\nBook",
        author="Ann Author",
    )
    plan = build_plan(load_document(str(epub)))
    book = outline(plan)
    assert [p.title for p in book.parts] == ["The Start", "The Middle"]
    assert book.parts[0].first == 0
    assert (book.tags.title, book.tags.author, book.tags.language) == (
        "A Test Book",
        "Ann Author",
        "en",
    )
    doc = replace(
        plan.document,
        book=BookInfo(title="T", cover=b"\x89PNG...", cover_type="image/png", language="fr"),
    )
    tags = outline(build_plan(doc)).tags
    assert (tags.cover, tags.cover_type, tags.language) == (b"\x89PNG...", "image/png", "fr")


def test_a_books_notes_are_left_out(tmp_path) -> None:
    body = (
        '<p>A claim<a epub:type="noteref" href="#n1">1</a> here.</p>'
        '<aside epub:type="footnote" id="n1"><p>The aside note.</p></aside><p>After.</p>'
    )
    epub = make_epub(tmp_path / "b.epub", [("a.xhtml", xhtml(body))], toc=[])
    book = outline(build_plan(load_document(str(epub))))
    assert [u.speak for u in book.utterances] == ["A claim here.", "After."]


@pytest.mark.parametrize(
    ("title", "name"),
    [
        ("The Storm", "03 - The Storm.m4b"),
        ("../../etc/passwd", "03 - etc passwd.m4b"),
        ("..", "03.m4b"),
        ("a\x00b\x1b[31mc\td\ne\u202ef\u200bg", "03 - a b [31mc d e f g.m4b"),
        ('What? "Yes": <no> | a*b\\c', "03 - What Yes no a b c.m4b"),
        ("  .hidden. ", "03 - hidden.m4b"),
        ("", "03.m4b"),
    ],
)
def test_chapter_file_names_are_one_safe_name(title: str, name: str) -> None:
    assert chapter_file_name(3, 12, title, ".m4b") == name


def test_chapter_file_names_are_bounded_and_sort_in_order() -> None:
    long = chapter_file_name(7, 9, "é" * 500, ".opus")
    assert len(long.encode()) <= MAX_NAME_BYTES and long.startswith("07 - éé")
    assert long.endswith("é.opus")
    assert chapter_file_name(7, 150, "x", ".mp3") == "007 - x.mp3"
    names = [chapter_file_name(n, 120, "t", ".mp3") for n in range(1, 121)]
    assert sorted(names) == names
    assert safe_name("a/" * 100, 10) == "a a a a a"
