"""Markdown to leaf blocks: one markdown-it-py parse, each block with its character range."""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache
from typing import Any

from markdown_it import MarkdownIt

from vvreader.document import Block

__all__ = ["markdown_blocks", "parser"]


@lru_cache(maxsize=1)
def parser() -> MarkdownIt:
    """The shared parser: CommonMark + GFM tables and strikethrough, footnotes, front matter.

    Linkify is off: bare URLs stay text and the speech rules shorten them (it also costs
    about a third of the parse time on a book).
    """
    from mdit_py_plugins.footnote import footnote_plugin
    from mdit_py_plugins.front_matter import front_matter_plugin

    md = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
    return md.use(front_matter_plugin).use(footnote_plugin)


_LEAF = {
    "heading_open": "heading",
    "paragraph_open": "paragraph",
    "fence": "code",
    "code_block": "code",
    "html_block": "html",
    "front_matter": "front_matter",
    "hr": "rule",
    "table_open": "table",
}


def markdown_blocks(text: str, line_starts: list[int]) -> tuple[list[Block], dict[str, int]]:
    """Parse Markdown into leaf blocks.

    Args:
        text: The decoded document text.
        line_starts: Offsets of line starts in ``text``.

    Returns:
        The blocks in source order and, for each footnote label, the offset of the block
        with its first reference.
    """
    tokens = parser().parse(text)
    n_lines = len(line_starts)
    blocks: list[Block] = []
    refs: dict[str, int] = {}
    list_depth = quote_depth = 0
    items: list[tuple[int, int | None]] = []  # open list items: (serial, number)
    ordered: list[int | None] = []  # open lists: next number or None for bullets
    serial = 0
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
            end = _rstrip(text, start, end)
            start = _lstrip(text, start, end)
            level = int(tok.tag[1]) if kind == "heading" else 0
            payload: tuple[Any, ...] = tuple(tokens[i + 1 : close]) if close > i else (tok,)
            item, number = items[-1] if items else (None, None)
            blocks.append(
                Block(
                    index=len(blocks),
                    kind="footnote" if footnote is not None and kind == "paragraph" else kind,
                    start=start,
                    end=end,
                    line_start=first,
                    line_end=last,
                    section=0,
                    level=level,
                    list_depth=list_depth,
                    list_item=item,
                    list_number=number,
                    quote_depth=quote_depth,
                    footnote=footnote,
                    info=tok.info.strip() if t == "fence" else "",
                    tokens=payload,
                )
            )
            for inline in payload:
                for child in getattr(inline, "children", None) or ():
                    if child.type == "footnote_ref":
                        refs.setdefault(str(child.meta.get("label", "")), start)
            i = close
        i += 1
    return _in_source_order(blocks), refs


def _in_source_order(blocks: list[Block]) -> list[Block]:
    """Sort blocks by offset (footnote bodies come last from markdown-it) and number sections."""
    blocks.sort(key=lambda b: b.start)
    out: list[Block] = []
    section, heading = 0, None
    for i, b in enumerate(blocks):
        if b.kind == "heading":
            section, heading = section + 1, i
        out.append(replace(b, index=i, section=section, heading=heading))
    return out


def _closing(tokens: list[Any], i: int) -> int:
    """Index of the token that closes the block opened at ``i``."""
    depth = 0
    for j in range(i, len(tokens)):
        depth += tokens[j].nesting
        if depth == 0:
            return j
    return len(tokens) - 1


def _rstrip(text: str, start: int, end: int) -> int:
    """Move ``end`` back over trailing whitespace."""
    while end > start and text[end - 1] in " \t\r\n":
        end -= 1
    return end


def _lstrip(text: str, start: int, end: int) -> int:
    """Move ``start`` over leading whitespace."""
    while start < end and text[start] in " \t":
        start += 1
    return start
