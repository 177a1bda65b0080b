"""The reading view's layout: inline markup hidden and styled, source offsets kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from vvreader.text.readers import load_document
from vvreader.widgets.wrap import WrapModel, _visible


@pytest.mark.parametrize(
    "src, shown",
    [
        (
            "This is **bold**, _emph_, ~~gone~~ and `co*de*`.",
            [
                ("This is ", ""),
                ("bold", "strong"),
                (", ", ""),
                ("emph", "em"),
                (", ", ""),
                ("gone", "strike"),
                (" and ", ""),
                ("co*de*", "code"),
                (".", ""),
            ],
        ),
        (
            'a [link](http://x.com/a_(b) "T") and ![alt](i.png) <https://p.org>',
            [
                ("a ", ""),
                ("link", "link"),
                (" and ", ""),
                ("alt", "link"),
                (" ", ""),
                ("https://p.org", "link"),
            ],
        ),
        (
            "***both*** and **a *b* c**",
            [
                ("both", "strong em"),
                (" and ", ""),
                ("a ", "strong"),
                ("b", "strong em"),
                (" c", "strong"),
            ],
        ),
        (
            "snake_case_name, \\*not\\* and [^1] [open",
            [("snake_case_name, ", ""), ("*not", ""), ("* and [^1] [open", "")],
        ),
    ],
)
def test_inline_markup_is_hidden_and_styled(src: str, shown: list) -> None:
    assert [(src[a:b], m) for a, b, m in _visible(src, frozenset())] == shown


@pytest.mark.parametrize(
    "src, shown",
    [
        # a reference link is a link only where its label is defined
        (
            "[a][ref], [ref], [b][nope] and [c][]",
            [("a", "link"), (", ", ""), ("ref", "link"), (", [b][nope] and [c][]", "")],
        ),
        # a destination with a space is no link; an e-mail autolink is one
        ("[x](y z) <me@example.org>", [("[x](y z) ", ""), ("me@example.org", "link")]),
        # a backslash before a line end is a hard break, markup like any escape
        ("one\\\ntwo", [("one", ""), ("two", "")]),
        # a code span ends at a run of as many backticks; emphasis cannot cross it
        (
            "*a `b*` c* and `` x ` y ``",
            [("a ", "em"), ("b*", "em code"), (" c", "em"), (" and ", ""), (" x ` y ", "code")],
        ),
        # emphasis across a line break, around a link, intraword with * but not _
        (
            "*one\ntwo* [**l**](u) a*b*c d_e_f",
            [
                ("one", "em"),
                ("two", "em"),
                (" ", ""),
                ("l", "strong link"),
                (" a", ""),
                ("b", "em"),
                ("c d_e_f", ""),
            ],
        ),
        # the text of an image and of an inline footnote is parsed on its own
        (
            "![i *j*](k) x^[y *z*]",
            [("i ", "link"), ("j", "em link"), (" x^[y ", ""), ("z", "em"), ("]", "")],
        ),
    ],
)
def test_markdown_it_decides_what_is_markup(src: str, shown: list) -> None:
    assert [(src[a:b], m) for a, b, m in _visible(src, frozenset({"REF"}))] == shown


def test_plain_text_shows_every_character() -> None:
    src = "**not** _markup_ [here](x)\nnext"
    assert [(src[a:b], m) for a, b, m in _visible(src, None)] == [
        ("**not** _markup_ [here](x)", ""),
        ("next", ""),
    ]


def test_every_shown_character_maps_to_its_source(tmp_path: Path) -> None:
    doc_path = tmp_path / "d.md"
    doc_path.write_text(
        "---\ntitle: x\n---\n\n# The *Sample* heading\n\nSome **bold** text with a "
        "[link](http://example.com) that wraps over several lines because it is long enough "
        "to do so, and `code`.\n\n- item *one*\n- item two\n\n> quoted _words_\n"
    )
    doc = load_document(str(doc_path))
    model = WrapModel(doc, 30)
    shown = [ln.text for ln in model.lines]
    assert "title: x" not in "\n".join(shown)  # front matter is not reading matter
    assert shown[0] == "The Sample heading"
    assert not any("**" in t or "](" in t or "`" in t for t in shown)
    for ln in model.lines:
        for col, src, n in ln.runs:
            assert ln.text[col : col + n] == doc.text[src : src + n]
    # offsets of hidden markup map to the next shown character
    star = doc.text.index("**bold")
    line, col = model.offset_to_cell(star)
    assert model.lines[line].text[col:].startswith("bold")


def test_lazy_wrapping_matches_a_full_wrap_in_any_order(tmp_path: Path) -> None:
    import random

    para = "A paragraph with *some* words that wrap, and a [link](http://x.org). " * 5 + "\n\n"
    text = "".join(f"# Part {i}\n\n{para}- a\n- b\n\n```\ncode {i}\n```\n\n" for i in range(60))
    doc_path = tmp_path / "book.md"
    doc_path.write_text(text)
    doc = load_document(str(doc_path))
    full = WrapModel(doc, 50).lines
    lazy = WrapModel(doc, 50)
    assert not lazy.complete
    rng = random.Random(7)
    for _ in range(200):  # random access: each answer is right for the layout so far
        k = rng.randrange(len(lazy))
        line = lazy.line(k)
        if line.runs:
            off = line.runs[0][1]
            assert lazy.offset_to_cell(off)[0] == k
    while not lazy.settle(0.001):
        pass
    assert lazy.lines == full and len(lazy) == len(full)
    assert [lazy.line(i) for i in range(len(full))] == full


def test_reference_links_follow_the_documents_definitions(tmp_path: Path) -> None:
    doc_path = tmp_path / "d.md"
    doc_path.write_text("See [the site][web] and [nowhere][none].\n\n[web]: https://example.org\n")
    doc = load_document(str(doc_path))
    assert doc.link_labels == frozenset({"WEB"})
    (line,) = [ln for ln in WrapModel(doc, 80).lines if ln.text]
    assert line.text == "See the site and [nowhere][none]."
    assert [(line.text[a:b], mark) for a, b, mark in line.marks] == [("the site", "link")]
