"""EPUB 2 and 3 and HTML books: reading order, contents, metadata, what is and is not spoken;
plain-text chapter headings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.books import DATA, make_epub, xhtml, zip_folder
from vvreader.text import epub
from vvreader.text.chapters import chapter_at, contents
from vvreader.text.document import BookInfo
from vvreader.text.plan import ProgressivePlan, build_plan
from vvreader.text.readers import load_document
from vvreader.text.settings import PlanSettings
from vvreader.widgets.wrap import WrapModel

ROOT = Path(__file__).resolve().parents[2]


def spoken(path: Path, **settings: object) -> list[tuple[str, str]]:
    """(kind, speak) of every utterance of the book's plan."""
    plan = build_plan(load_document(str(path)), PlanSettings(**settings))  # type: ignore[arg-type]
    return [(u.kind, u.speak) for u in plan]


def said(path: Path, **settings: object) -> str:
    return " ".join(s for _, s in spoken(path, **settings))


# ---------------------------------------------------------------- books made here


def test_epub3_spine_order_nav_contents_and_metadata(tmp_path: Path) -> None:
    book = make_epub(
        tmp_path / "b.epub",
        [
            ("one.xhtml", xhtml("<h1>The Start</h1><p>First words.</p>")),
            ("two.xhtml", xhtml('<section id="s2"><p>No heading here.</p></section>')),
            ("three.xhtml", xhtml("<h1>The End</h1><p>Last words.</p>")),
        ],
        toc=[
            ("one.xhtml", "The Start", 1),
            ("two.xhtml#s2", "Middle", 2),
            ("three.xhtml", "The End", 1),
        ],
        title="Tale",
        author="Jo Smith",
    )
    doc = load_document(str(book))
    assert doc.book is not None
    assert (doc.book.title, doc.book.author, doc.book.language) == ("Tale", "Jo Smith", "en")
    plan = build_plan(doc)
    assert [(u.kind, u.speak) for u in plan] == [
        ("heading", "The Start."),
        ("paragraph", "First words."),
        ("heading", "Middle."),  # the contents entry's target became a heading
        ("paragraph", "No heading here."),
        ("heading", "The End."),
        ("paragraph", "Last words."),
    ]
    entries = contents(plan)
    assert [(e.level, e.title, plan[e.index].speak) for e in entries] == [
        (1, "The Start", "The Start."),
        (2, "Middle", "Middle."),
        (1, "The End", "The End."),
    ]
    assert chapter_at(entries, 3) == "Middle"
    assert plan.next_heading(0) == 2  # heading keys follow the contents


def test_epub2_ncx_contents_and_nonlinear_items_not_in_the_flow(tmp_path: Path) -> None:
    book = make_epub(
        tmp_path / "b.epub",
        [
            ("a.xhtml", xhtml("<p>Chapter text.</p>")),
            ("notes.xhtml", xhtml("<p>Out of the flow.</p>")),
            ("b.xhtml", xhtml("<p>More text.</p>")),
        ],
        version=2,
        toc=[("a.xhtml", "Alpha", 1), ("b.xhtml", "Beta", 1)],
        nonlinear=("notes.xhtml",),
    )
    text = said(book)
    assert text == "Alpha. Chapter text. Beta. More text."
    plan = build_plan(load_document(str(book)))
    assert [e.title for e in contents(plan)] == ["Alpha", "Beta"]


def test_noterefs_silent_and_notes_reachable(tmp_path: Path) -> None:
    body = (
        '<p>A claim<a epub:type="noteref" href="#n1">1</a> and another'
        '<a epub:type="noteref" href="notes.xhtml#n2">2</a> here.</p>'
        '<aside epub:type="footnote" id="n1"><p>The first note.</p></aside>'
    )
    notes = xhtml(
        '<ol><li id="n2" epub:type="endnote"><p>The endnote. '
        '<a epub:type="backlink" href="a.xhtml">back</a></p></li></ol>'
    )
    book = make_epub(
        tmp_path / "b.epub",
        [("a.xhtml", xhtml(body)), ("notes.xhtml", notes)],
        toc=[("a.xhtml", "Text", 1)],
        nonlinear=("notes.xhtml",),
    )
    doc = load_document(str(book))
    plan = build_plan(doc, PlanSettings(footnotes="skip"))
    flow = [u.speak for u in plan]
    assert flow == ["Text.", "A claim and another here."]  # no numbers, no note in the flow
    assert set(doc.footnote_refs) == {"1", "2"}
    bodies = [b for b in doc.blocks if b.kind == "footnote"]
    assert [doc.text[b.start : b.end].split(":", 1)[1].strip() for b in bodies] == [
        "The first note.",
        "The endnote.",
    ]


def test_poetry_tables_lists_quotes_pre_emphasis(tmp_path: Path) -> None:
    body = (
        "<h2>Poems</h2>"
        "<p>Roses are <em>red</em>,<br/>violets are <strong>blue</strong>.</p>"
        "<blockquote><p>Quoted words.</p></blockquote>"
        "<ul><li>One item</li><li>Two <i>items</i></li></ul>"
        '<ol start="3"><li>Third</li></ol>'
        "<table><thead><tr><th>Name</th><th>Age</th></tr></thead>"
        "<tbody><tr><td>Ann</td><td>7</td></tr></tbody></table>"
        '<figure><img src="x.png" alt="A rose"/><figcaption>Figure 1. A rose.</figcaption></figure>'
        "<pre>line one\n  line two</pre>"
        "<p>*not emphasis* and [not a link](x) # not a heading</p>"
    )
    book = make_epub(tmp_path / "b.epub", [("a.xhtml", xhtml(body))], toc=[("a.xhtml", "Poems", 1)])
    got = spoken(book)
    assert got[:2] == [("heading", "Poems."), ("paragraph", "Roses are red, violets are blue.")]
    kinds = [k for k, _ in got]
    assert "quote" in kinds and "list_item" in kinds and "table" in kinds and "code" in kinds
    text = " ".join(s for _, s in got)
    assert "Quoted words." in text and "Two items." in text and "Third." in text
    assert "Figure 1. A rose." in text
    assert "A rose" not in text.replace("Figure 1. A rose.", "")  # image alt is silent
    assert "A rose" in said(book, book_images="alt").replace("Figure 1. A rose.", "")
    assert any("Ann" in s and "7" in s for k, s in got if k == "table")
    assert "not emphasis" in text and "asterisk" not in text.lower()
    doc = load_document(str(book))
    poem = next(b for b in doc.blocks if "Roses" in doc.text[b.start : b.end])
    assert poem.line_end - poem.line_start == 2  # the line break is kept for the view
    shown = [line.text for line in WrapModel(doc, 60).lines]
    assert shown[2:4] == ["Roses are red,", "violets are blue."]


def test_hidden_scripts_pagebreaks_and_mathml(tmp_path: Path) -> None:
    body = (
        '<p>Visible.<span epub:type="pagebreak" id="p7" title="7"/> Still visible.</p>'
        "<script>var x = 'never';</script><style>p { color: red }</style>"
        '<p hidden="">Hidden words.</p><p style="display: none">More hidden.</p>'
        '<p>Sum: <math alttext="a plus b"><mi>a</mi><mo>+</mo><mi>b</mi></math>.</p>'
    )
    book = make_epub(tmp_path / "b.epub", [("a.xhtml", xhtml(body))], toc=[])
    text = said(book)
    assert text == "Visible. Still visible. Sum: a plus b."


def test_declared_encoding_is_honoured(tmp_path: Path) -> None:
    page = xhtml("<p>Caf\xe9 \x93quoted\x94.</p>").replace("utf-8", "windows-1252")
    book = make_epub(
        tmp_path / "b.epub",
        [("a.xhtml", page.encode("latin-1"))],  # type: ignore[list-item]
        toc=[],
    )
    assert said(book) == 'Caf\xe9 "quoted".'
    assert "Caf\xe9 \u201cquoted\u201d." in load_document(str(book)).text


def test_html_page(tmp_path: Path) -> None:
    page = tmp_path / "page.html"
    page.write_bytes(
        b"<!DOCTYPE html><html lang=fr><head><meta charset=windows-1252><title>Page</title>"
        b"<script>x()</script></head><body><h1>Titre</h1>"
        b"<p>Un caf\xe9<sup><a href='#f1'>1</a></sup>."
        b"<p>Unclosed <b>bold<div>tag soup</div></body><footer id=f1>Note.</footer>"
    )
    doc = load_document(str(page))
    assert doc.book is not None and doc.book.title == "Page" and doc.book.language == "fr"
    plan = build_plan(doc, PlanSettings(footnotes="skip"))
    assert [u.speak for u in plan][:2] == ["Titre.", "Un caf\xe9."]
    assert "tag soup" in " ".join(u.speak for u in plan)


# ---------------------------------------------------------------- public books


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        (
            "pkg-spine-order",
            ["first", "second", "third", "last"],
        ),
        ("pkg-spine-nonlinear-activation", ["clicking this link"]),
        ("pkg-version-backward", ["Test passes if the EPUB opens."]),
        ("cnt-mathml-support", ["x equals (open parentheses) a plus b"]),
        ("pub-xml-external-id", ["Test passes unless a failure statement follows"]),
    ],
)
def test_w3c_epub_tests(tmp_path: Path, case: str, expected: list[str]) -> None:
    book = zip_folder(DATA / "w3c-epub" / case, tmp_path / f"{case}.epub")
    text = said(book)
    at = [text.find(e) for e in expected]
    assert all(a >= 0 for a in at) and at == sorted(at), text
    assert "&" not in text and "<" not in text and "xxe" not in text


def test_w3c_nonlinear_item_is_not_read(tmp_path: Path) -> None:
    case = DATA / "w3c-epub" / "pkg-spine-nonlinear-activation"
    book = zip_folder(case, tmp_path / "b.epub")
    second = (case / "EPUB" / "content_002.xhtml").read_text()
    assert "non-linear" in second or "<p>" in second
    text = said(book)
    import re

    words = re.sub(r"<[^>]+>", " ", second.split("<body>")[1])
    assert " ".join(words.split()) not in text


def test_standard_ebooks_book(tmp_path: Path) -> None:
    book = zip_folder(DATA / "se-sherlock-holmes", tmp_path / "sherlock.epub")
    doc = load_document(str(book))
    assert doc.book is not None
    assert doc.book.title == "The Adventures of Sherlock Holmes"
    assert doc.book.author == "Arthur Conan Doyle"
    assert doc.book.warnings == ()
    plan = build_plan(doc)
    entries = contents(plan)
    assert [e.title for e in entries] == [
        "Titlepage", "Imprint", "A Scandal in Bohemia", "I", "II", "III",
        "The Redheaded League", "Colophon", "Uncopyright",
    ]  # fmt: skip
    assert [plan[e.index].speak for e in entries[2:7]] == [
        "A Scandal in Bohemia.", "I.", "II.", "III.", "The Redheaded League.",
    ]  # fmt: skip
    text = " ".join(u.speak for u in plan)
    # Text completeness: every paragraph of the source is spoken, in order.
    import re

    source = (DATA / "se-sherlock-holmes/epub/text/a-scandal-in-bohemia.xhtml").read_text()
    paragraphs = re.findall(r"<p>(.*?)</p>", source, re.DOTALL)
    assert len(paragraphs) > 100
    read = " ".join(u.text for u in plan)  # the source spans (speak has Mrs. as Missus)
    pos = 0
    for p in paragraphs:
        words = re.findall(r"[A-Za-z]{3,}", re.sub(r"<[^>]+>", "", p))
        for word in words[:3]:
            at = read.find(word, pos)
            assert at >= 0, (word, p)
            pos = at
    assert text.startswith("The Adventures of Sherlock Holmes. By Arthur Conan Doyle.")
    assert "To Sherlock Holmes she is always the woman." in text
    for junk in ("<", ">", "epub:", "xhtml", "\\", "*", "{", "logo"):
        assert junk not in text, junk


def test_big_book_is_planned_progressively(tmp_path: Path) -> None:
    para = "<p>Words of a long chapter, read one after the other.</p>"
    chapters = [(f"c{i}.xhtml", xhtml(f"<h1>Part {i}</h1>" + para * 800)) for i in range(12)]
    book = make_epub(tmp_path / "big.epub", chapters)
    progress = ProgressivePlan.open(str(book))
    first = progress.advance(5)
    assert first.document.book is not None and not first.complete
    assert len(first.document.text) < 200_000  # only the first chapters so far
    whole = progress.result()
    assert whole.complete and whole.document.book is not None
    assert whole.document.text.startswith(first.document.text)
    assert [(u.start, u.speak) for u in whole][: len(first) - 1] == [
        (u.start, u.speak) for u in first
    ][:-1]
    assert [e.title for e in contents(whole)] == [f"Chapter {i + 1}" for i in range(12)]
    assert whole.document.book.toc[-1].offset > len(first.document.text)


def long_chapter(sections: int = 6, paragraphs: int = 200) -> str:
    """A chapter of several sections, with lists, quotes, a table, anchors the contents
    point at, notes cited all along (asides at its end, endnotes in another file)."""
    body = []
    for s in range(sections):
        body.append(f'<h2 id="s{s}">Section {s}</h2>')
        for p in range(paragraphs):
            ref = ""
            if p % 7 == 0:
                ref = f'<a epub:type="noteref" href="#a{s}-{p}">{p}</a>'
            elif p % 11 == 0:
                ref = f'<a epub:type="noteref" href="notes.xhtml#e{s}">{p}</a>'
            body.append(
                f"<p id='p{s}-{p}'>Paragraph {p} of section {s}, with <em>some</em> words{ref} "
                "to read, and a second sentence after the first one.</p>"
            )
            if p % 13 == 5:
                body.append(f"<ol start='{p}'><li>An item {p}.</li><li>Another one.</li></ol>")
            if p % 13 == 9:
                body.append(f"<blockquote><p>A quote {p}.</p><p>Its end.</p></blockquote>")
        body.append(f"<table><tr><th>Cell</th></tr><tr><td>Value {s}</td></tr></table>")
    for s in range(sections):
        for p in range(0, paragraphs, 7):
            body.append(f'<aside epub:type="footnote" id="a{s}-{p}"><p>Aside {s}-{p}.</p></aside>')
    return "<h1>The Long One</h1><div>" + "".join(body) + "</div>"


def long_book(tmp_path: Path) -> Path:
    notes = "".join(
        f'<aside epub:type="endnote" id="e{s}"><p>Endnote {s}.</p></aside>' for s in range(6)
    )
    return make_epub(
        tmp_path / "long.epub",
        [
            ("long.xhtml", xhtml(long_chapter())),
            ("next.xhtml", xhtml("<h1>Next</h1><p>After the long one.</p>")),
            ("notes.xhtml", xhtml(notes)),
        ],
        toc=[("long.xhtml", "The Long One", 1)]
        + [(f"long.xhtml#s{s}", f"Section {s}", 2) for s in range(6)]
        + [("next.xhtml", "Next", 1)],
        nonlinear=("notes.xhtml",),
    )


def test_a_long_chapter_is_read_in_parts_as_if_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chapter longer than a part is converted a part at a time, each part followed by
    the notes it cites first: the first page comes from its first part, and the plan ends
    byte for byte as the one planned from the whole book at once."""
    monkeypatch.setattr(epub, "PART_CHARS", 4_000)
    book = long_book(tmp_path)
    whole_doc = load_document(str(book))
    whole = build_plan(whole_doc)
    text = whole_doc.text
    assert whole_doc.book is not None and whole_doc.book.warnings == ()
    # Notes come after each part, before the chapter's end.
    chapter_end = text.index("# Next")
    definitions = [i for i in range(len(text)) if text.startswith("\n[^", i)]
    assert len(definitions) > 5 and definitions[0] < chapter_end // 2
    # Every note is defined once and read only when asked for; the text is all there.
    spoken_notes = [u.speak for u in whole if u.note]
    assert len(spoken_notes) == len(set(spoken_notes)) == 6 * len(range(0, 200, 7)) + 6
    read = [u.speak for u in whole if not u.note]
    assert sum(s.startswith("Paragraph ") for s in read) == 6 * 200
    assert read[-2:] == ["Next.", "After the long one."]
    assert [(e.title, text[e.offset :].split("\n")[0]) for e in whole_doc.book.toc] == [
        ("The Long One", "# The Long One"),
        *((f"Section {s}", f"## Section {s}") for s in range(6)),
        ("Next", "# Next"),
    ]
    # Converted in parts (first page first) or at once: the same text, whatever the stops.
    for stop in (1, 5_000, 64_000):
        reading = epub.EpubReading(str(book))
        first_text, _ = reading.first(stop)
        assert not reading.complete and text.startswith(first_text)
        assert reading.whole()[0] == text
    # Planned progressively: what is shown first is the whole plan's beginning, and the
    # whole plan is the same, field for field.
    progress = ProgressivePlan.open(str(book))
    first = progress.advance(1)
    assert not first.complete and len(first.document.text) < chapter_end // 2
    assert [u.as_dict() for u in first] == [u.as_dict() for u in whole][: len(first)]
    done = progress.result()
    assert done.document.text == text
    assert [u.as_dict() for u in done] == [u.as_dict() for u in whole]
    assert done.document.book == whole_doc.book
    assert done.document.blocks == whole_doc.blocks


def test_plan_json_cli_on_an_epub(tmp_path: Path) -> None:
    book = zip_folder(DATA / "w3c-epub" / "pkg-spine-order", tmp_path / "b.epub")
    run = subprocess.run(
        [sys.executable, "-m", "vvreader", str(book), "--plan", "--json"],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    rows = [json.loads(line) for line in run.stdout.splitlines()]
    assert rows[0]["kind"] == "heading" and rows[0]["speak"] == "Link to main page."
    assert run.stderr == ""


def test_a_long_html_page_is_read_in_parts_as_if_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(epub, "PART_CHARS", 4_000)
    page = tmp_path / "long.xhtml"
    page.write_text(xhtml(long_chapter(), title="A Long Page"))
    whole_doc = load_document(str(page))
    whole = build_plan(whole_doc)
    assert whole_doc.book is not None and whole_doc.book.title == "A Long Page"
    # The notes of the page's own asides come after each part; a link to another page's
    # fragment is not a note of this one.
    assert whole_doc.book.warnings == ()
    assert len([u for u in whole if u.note]) == 6 * len(range(0, 200, 7))
    assert whole_doc.text.index("\n[^") < len(whole_doc.text) // 2
    progress = ProgressivePlan.open(str(page))
    first = progress.advance(1)
    assert not first.complete and len(first.document.text) < len(whole_doc.text) // 2
    assert [u.as_dict() for u in first] == [u.as_dict() for u in whole][: len(first)]
    done = progress.result()
    assert done.document.text == whole_doc.text
    assert [u.as_dict() for u in done] == [u.as_dict() for u in whole]
    assert done.document.book == whole_doc.book


@pytest.mark.parametrize("suffix", [".html", ".htm", ".xhtml"])
def test_plan_json_cli_on_a_page(tmp_path: Path, suffix: str) -> None:
    page = tmp_path / f"page{suffix}"
    page.write_text(
        xhtml("<h1>A Title</h1><p>Some <em>words</em> here.</p><ul><li>An item</li></ul>")
    )
    run = subprocess.run(
        [sys.executable, "-m", "vvreader", str(page), "--plan", "--json"],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert run.returncode == 0 and run.stderr == "", run.stderr
    rows = [json.loads(line) for line in run.stdout.splitlines()]
    assert [(r["kind"], r["speak"]) for r in rows] == [
        ("heading", "A Title."), ("paragraph", "Some words here."), ("list_item", "An item."),
    ]  # fmt: skip


def test_image_alt_text_from_the_option_or_the_settings(tmp_path: Path) -> None:
    body = '<p>Before.</p><p><img src="x.png" alt="A red rose"/></p><p>After.</p>'
    book = make_epub(tmp_path / "b.epub", [("a.xhtml", xhtml(body))], toc=[])
    config = tmp_path / "config.toml"

    def said_by_cli(*options: str) -> str:
        run = subprocess.run(
            [sys.executable, "-m", "vvreader", str(book), "--plan", "--json", *options],
            capture_output=True, text=True, cwd=ROOT, timeout=60,
            env={**os.environ, "VVREADER_CONFIG": str(config)},
        )  # fmt: skip
        assert run.returncode == 0 and run.stderr == "", run.stderr
        return " ".join(json.loads(line)["speak"] for line in run.stdout.splitlines())

    assert said_by_cli() == "Before. After."
    assert said_by_cli("--image-alt") == "Before. A red rose After."
    config.write_text("image_alt = true\n")
    assert said_by_cli() == "Before. A red rose After."


def test_plan_cli_marks_a_books_notes(tmp_path: Path) -> None:
    body = (
        '<p>A claim<a epub:type="noteref" href="#n1">1</a> here.</p>'
        '<aside epub:type="footnote" id="n1"><p>The aside note.</p></aside><p>After.</p>'
    )
    book = make_epub(tmp_path / "b.epub", [("a.xhtml", xhtml(body))], toc=[])

    def plan(*extra: str) -> str:
        run = subprocess.run(
            [sys.executable, "-m", "vvreader", str(book), "--plan", *extra],
            capture_output=True, text=True, cwd=ROOT, timeout=60,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        return run.stdout

    rows = [json.loads(line) for line in plan("--json").splitlines()]
    assert [(r["speak"], r.get("note")) for r in rows] == [
        ("A claim here.", None), ("After.", None), ("Footnote 1: The aside note.", True),
    ]  # fmt: skip
    assert rows[2]["kind"] == "footnote"
    lines = plan().splitlines()
    assert [line.split()[1] for line in lines] == ["paragraph", "paragraph", "note"]


# ---------------------------------------------------------------- plain-text chapters


def test_plain_text_chapter_lines_become_headings(tmp_path: Path) -> None:
    novel = tmp_path / "novel.txt"
    novel.write_text(
        "MOBY DICK\n\nCHAPTER I. Loomings\n\nCall me Ishmael. Some years ago\nI\n"
        "went to sea.\n\nChapter 2.\n\nText.\n\nPART TWO\n\nCHAPTER XLII\n\n"
        "Part two of the plan was simple.\n\nThe End.\n"
    )
    doc = load_document(str(novel))
    plan = build_plan(doc)
    heads = [(e.level, e.title) for e in contents(plan)]
    assert heads == [
        (2, "CHAPTER I. Loomings"),
        (2, "Chapter 2."),
        (1, "PART TWO"),
        (2, "CHAPTER XLII"),
    ]
    assert ("paragraph", "Call me Ishmael.") in [(u.kind, u.speak) for u in plan]


def test_plain_text_lone_roman_numerals(tmp_path: Path) -> None:
    story = tmp_path / "story.txt"
    story.write_text("I\n\nIt began.\n\nII\n\nIt went on.\n\nIII\n\nIt ended.\n")
    plan = build_plan(load_document(str(story)))
    assert [(u.kind, u.speak) for u in plan if u.kind == "heading"] == [
        ("heading", "I."), ("heading", "II."), ("heading", "III."),
    ]  # fmt: skip
    prose = tmp_path / "prose.txt"
    prose.write_text("I\n\nsaid nothing at all.\n\nThen we left.\n")
    assert all(u.kind != "heading" for u in build_plan(load_document(str(prose))))


def test_book_warnings_described_once_each_with_a_count() -> None:
    book = BookInfo(warnings=("a", "b", "c", "d"), unlisted_warnings=2)
    assert book.warning_count == 6
    assert book.describe_warnings() == "- a\n- b\n- c\nand 3 more (vvreader --plan lists them)"
    assert book.describe_warnings(3) == "- d\nand 2 more (vvreader --plan lists them)"
    assert book.describe_warnings(5) == "and 1 more (vvreader --plan lists them)"
    assert book.describe_warnings(6) is None
    assert BookInfo(warnings=("a",)).describe_warnings() == "- a"
    assert BookInfo().describe_warnings() is None


def test_a_note_with_a_heading_table_and_verse_is_one_note(tmp_path: Path) -> None:
    """Whatever a note holds (a heading, a table, preformatted text, verse) stays in the note:
    read only when asked for, as plain sentences."""
    body = (
        '<h1>One</h1><p>A claim<a epub:type="noteref" href="#n1">1</a> here.</p>'
        '<aside epub:type="footnote" id="n1"><h3>Note head</h3><p>The note says.</p>'
        "<table><tr><th>Year</th><th>Event</th></tr><tr><td>1851</td><td>Sailed</td></tr>"
        "</table><pre>kept\n  as is</pre><p>A line,<br/>another line.</p></aside>"
        "<p>Closing.</p>"
    )
    plan = build_plan(
        load_document(str(make_epub(tmp_path / "b.epub", [("a.xhtml", xhtml(body))], toc=[])))
    )
    assert [u.speak for u in plan if not u.note] == ["One.", "A claim here.", "Closing."]
    notes = [u.speak for u in plan if u.note]
    assert notes == [
        "Footnote 1: Note head", "The note says.", "Year, Event", "1851, Sailed",
        "kept as is", "A line, another line.",
    ]  # fmt: skip
    for junk in ("|", "---", "\\", "#", "`"):
        assert not any(junk in u.text for u in plan if u.note), junk
