"""Markdown parsed a part at a time gives the blocks of one markdown-it parse of the whole."""

from __future__ import annotations

import random
from dataclasses import astuple, replace
from pathlib import Path
from typing import Any

import pytest

from vvreader.text.document import Block, line_starts_of
from vvreader.text.markdown import _LEAF, MarkdownParts, _closing, _plain, markdown_blocks, parser
from vvreader.text.readers import parse

SAMPLE = Path(__file__).parents[1] / "fixtures" / "sample.md"

# Constructs that run on over blank lines, definitions used before they are made, footnotes
# referenced, unreferenced, redefined, nested and with lists, line endings of all kinds.
PIECES = [
    "```python\nx = 1\n\n# a comment, not a heading\n\ny = 2\n```\n",
    "```\nunclosed fence\n\n# H\n\nText\n",
    "~~~\n# in a tilde fence\n\n~~~~\n",
    "<pre>\nraw\n\n# not a heading\n\nWord\n</pre>\n",
    "<!--\na comment\n\nAlso\n-->\n",
    "<div>\nx\n\nY ends the div\n",
    "<script>\nunclosed script\n\n# H\n",
    "Text with a note[^a], a [link][r1] and a shortcut [r2].\n",
    "[^a]: The note a.\n\n    More of a.\n",
    "[^b]: Note b cites [^a].\n",
    "[^a]: A definition made again.\n",
    "[^c]:\n    - a list in a note\n    - two\n",
    "[^u]: Never cited.\n",
    "Cites b[^b] and c[^c] and u? no.\n",
    "[r1]: http://x.org\n",
    "[r2]: <http://y.org> 'T'\n",
    "- item[^b]\n- item two\n\n  continued\n",
    "1. one\n\n2. two\n\nAfter\n",
    "3) three\n4) four\n",
    "> quote[^c]\n>\n> more\n\nLazy\n",
    "> - nested\n>   list\n",
    "^[an inline note with [^a]]\n",
    "Para\n===\n",
    "    indented\n\n    code\n",
    "| a | b |\n|---|---|\n| [^b] | x |\n",
    "Word *emph\n\nWord* end\n",
    "&amp; entity \\*escaped\\* `code`\n",
    "Hard  \nbreak and soft\nbreak\n",
    "# Heading[^a]\n",
    "Plain words only.\n",
    "#\n",
    "***\n",
    "Word <span>html</span> <http://auto.link/x> www.bare.org\n",
]
FRONT = [
    "---\ntitle: x\n\n# a comment\n---\n\n",
    "---\nno close\n\n# x\n\n",
    "---\n\n# H\n\n---\n",
    "",
]
SEPARATORS = [
    "\n\n# H\n\n",
    "\n\n",
    "\n",
    "\n\nWord\n\n",
    "\n\n#\n\n",
    "\n\n\n",
    "\n  \n",
    "\n\n## S\n",
]


def _reference_blocks(text: str) -> tuple[list[Block], dict[str, int]]:
    """The blocks as one markdown-it parse of the whole text gives them (the old walker)."""
    tokens = parser().parse(text)
    line_starts = line_starts_of(text)
    n_lines = len(line_starts)
    blocks: list[Block] = []
    refs: dict[str, int] = {}
    list_depth = quote_depth = serial = 0
    items: list[tuple[int, int | None]] = []
    ordered: list[int | None] = []
    footnote: str | None = None
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        t = tok.type
        if t in ("bullet_list_open", "ordered_list_open"):
            list_depth += 1
            start = tok.attrGet("start")
            ordered.append((int(start) if start is not None else 1) if t[0] == "o" else None)
        elif t in ("bullet_list_close", "ordered_list_close"):
            list_depth -= 1
            ordered.pop()
        elif t == "list_item_open":
            serial += 1
            number = ordered[-1] if ordered else None
            if number is not None:
                ordered[-1] = number + 1
            items.append((serial, number))
        elif t == "list_item_close":
            items.pop()
        elif t == "blockquote_open":
            quote_depth += 1
        elif t == "blockquote_close":
            quote_depth -= 1
        elif t == "footnote_open":
            footnote = str(tok.meta.get("label", tok.meta.get("id")))
        elif t == "footnote_close":
            footnote = None
        elif t in _LEAF and tok.map is not None:
            kind = _LEAF[t]
            close = _closing(tokens, i) if tok.nesting == 1 else i
            first, last = tok.map
            start = line_starts[first] if first < n_lines else len(text)
            end = line_starts[last] if last < n_lines else len(text)
            while end > start and text[end - 1] in " \t\r\n":
                end -= 1
            while start < end and text[start] in " \t":
                start += 1
            payload: tuple[Any, ...] = tuple(tokens[i + 1 : close]) if close > i else (tok,)
            item, number = items[-1] if items else (None, None)
            blocks.append(
                Block(
                    len(blocks),
                    "footnote" if footnote and kind == "paragraph" else kind,
                    start,
                    end,
                    first,
                    last,
                    0,
                    None,
                    int(tok.tag[1]) if kind == "heading" else 0,
                    list_depth,
                    item,
                    number,
                    quote_depth,
                    footnote,
                    tok.info.strip() if t == "fence" else "",
                    payload,
                )
            )
            for inline in payload:
                for child in getattr(inline, "children", None) or ():
                    if child.type == "footnote_ref":
                        refs.setdefault(str(child.meta.get("label", "")), start)
            i = close
        i += 1
    blocks.sort(key=lambda b: b.start)
    out, section, heading = [], 0, None
    for k, b in enumerate(blocks):
        if b.kind == "heading":
            section, heading = section + 1, k
        out.append(replace(b, index=k, section=section, heading=heading))
    return out, refs


def _inline_shape(block: Block) -> list[list[tuple[str, str]]]:
    return [
        [(c.type, c.content) for c in tok.children or ()]
        for tok in block.tokens
        if tok.type == "inline"
    ]


def _documents() -> list[str]:
    rng = random.Random(4)
    docs = [SAMPLE.read_text("utf-8"), *PIECES]
    for _ in range(150):
        parts = [rng.choice(FRONT)]
        for _ in range(rng.randint(1, 25)):
            parts += [rng.choice(PIECES), rng.choice(SEPARATORS)]
        text = "".join(parts)
        docs.append(rng.choice([text, text.replace("\n", "\r\n"), text.replace("\n", "\r")]))
    return docs


@pytest.mark.parametrize("part_chars", [1, 23, 150, 1 << 20])
def test_parts_give_the_blocks_of_one_parse(part_chars):
    for text in _documents():
        want, want_refs = _reference_blocks(text)
        got, refs = markdown_blocks(text, line_starts_of(text), part_chars=part_chars)
        assert [astuple(b)[:-1] for b in got] == [astuple(b)[:-1] for b in want], text
        assert refs == want_refs, text
        assert [_inline_shape(b) for b in got] == [_inline_shape(b) for b in want], text


def test_first_part_is_final_before_the_rest_is_parsed():
    chapter = "# Chapter\n\nSome *text* here. More text.\n\n```\ncode\n\n# no heading\n```\n\n"
    text = chapter * 2000
    whole = parse(text)
    parts = MarkdownParts(text, line_starts_of(text), first_chars=1000, part_chars=4000)
    parts.step()
    assert 0 < len(parts.blocks) and parts.parsed_to < len(text) // 50 and not parts.done
    assert parts.blocks == list(whole.blocks[: len(parts.blocks)])
    assert all(parts.parse_inline(b) for b in parts.blocks)
    while parts.step():
        pass
    assert parts.done and parts.blocks == list(whole.blocks)


def test_text_with_a_bracket_waits_for_later_definitions():
    text = (
        "# One\n\nSee [the docs][d].\n\n"
        + "# More\n\nPlain words.\n\n" * 500
        + "[d]: http://d.org\n"
    )
    parts = MarkdownParts(text, line_starts_of(text), first_chars=100, part_chars=100)
    parts.step()
    heading, paragraph = parts.blocks[:2]
    assert parts.parse_inline(heading)
    assert not parts.parse_inline(paragraph) and not parts.footnotes_settled
    while not parts.done:
        parts.step()
    assert parts.parse_inline(paragraph)
    assert [c.type for c in paragraph.tokens[0].children][:2] == ["text", "link_open"]


@pytest.mark.parametrize("seed", range(5))
def test_plain_inline_path_matches_markdown_it(seed):
    rng = random.Random(seed)
    alphabet = "ab Z9.,:;!?#$%+-=>@]{}^'\"()/|\t\n  \u00e9\u4e2d\U0001f600"
    md = parser()
    for _ in range(2000):
        content = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30))).strip()
        tokens: list[Any] = []
        md.inline.parse(content, md, {}, tokens)
        want = [(t.type, t.content, t.level) for t in tokens]
        assert [(t.type, t.content, t.level) for t in _plain(content)] == want, repr(content)
