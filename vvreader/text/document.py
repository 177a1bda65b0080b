"""The document types: decoded text and its leaf blocks, each with its source range.

``Document.text`` is the file's decoded text (BOM removed, line endings kept as they are);
every offset in a ``Block`` (and in the speech plan built from it) indexes that string.
Readers (``vvreader.text.readers``) make documents; this module parses nothing.
"""

from __future__ import annotations

import gc
import re
from bisect import bisect_right
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

__all__ = ["Block", "BookInfo", "Document", "TocEntry", "gc_paused", "line_starts_of"]


@dataclass(frozen=True, slots=True)
class Block:
    """One leaf block of a document: the unit the view shows and the plan reads."""

    index: int
    """Position in ``Document.blocks``."""
    kind: str
    """heading, paragraph, table, code, html, front_matter, rule or footnote."""
    start: int
    """Offset of the block's first character in ``Document.text``."""
    end: int
    """Offset just past the block's last character (trailing newline excluded)."""
    line_start: int
    """First source line (0-based)."""
    line_end: int
    """Line just past the block."""
    section: int
    """Section number: 0 before the first heading, then +1 at every heading."""
    heading: int | None = None
    """Block index of the heading that opens this block's section."""
    level: int = 0
    """Heading level (1-6); 0 for other blocks."""
    list_depth: int = 0
    """How many lists this block is nested in."""
    list_item: int | None = None
    """Serial number of the list item that contains the block (None outside lists)."""
    list_number: int | None = None
    """The number of an ordered list item (None for bullets and outside lists)."""
    quote_depth: int = 0
    """How many block quotes contain the block."""
    footnote: str | None = None
    """Label of the footnote whose body this block belongs to."""
    info: str = ""
    """Fence info (language) for code blocks."""
    tokens: tuple[Any, ...] = field(default=(), repr=False, compare=False)
    """markdown-it tokens of the block (inline tokens for text, the rows for tables)."""


@dataclass(frozen=True, slots=True)
class TocEntry:
    """One entry of a book's table of contents."""

    title: str
    """The entry's label."""
    level: int
    """Nesting depth, 1 for the top level."""
    offset: int
    """Offset in ``Document.text`` where the entry's part starts (a heading)."""


@dataclass(frozen=True)
class BookInfo:
    """What a book (EPUB or HTML) says about itself, beside its text."""

    title: str = ""
    """``dc:title`` (EPUB) or ``<title>`` (HTML); empty when it has none."""
    author: str = ""
    """``dc:creator``s joined with commas; empty when it has none."""
    language: str = ""
    """``dc:language`` or the ``lang`` of the root element."""
    cover: bytes | None = field(default=None, repr=False)
    """The cover image's bytes (None when there is none)."""
    cover_type: str = ""
    """The cover image's media type."""
    toc: tuple[TocEntry, ...] = ()
    """The table of contents, in reading order (its entries point at headings)."""
    warnings: tuple[str, ...] = ()
    """What could not be read as it should, as it was found (the first ones: see
    ``unlisted_warnings``); a book read in parts adds the later chapters' at the end."""
    format: str = "epub"
    """``epub`` or ``html``."""
    unlisted_warnings: int = 0
    """How many more warnings there were than are listed in ``warnings``."""

    @property
    def warning_count(self) -> int:
        """How many warnings there were in all."""
        return len(self.warnings) + self.unlisted_warnings

    def describe_warnings(self, shown: int = 0, listed: int = 3) -> str | None:
        """The warnings after the first ``shown`` in a few lines for the reader: at most
        ``listed`` of them, then how many more (None when there are none)."""
        listing = self.warnings[shown : shown + listed]
        more = self.warning_count - shown - len(listing)
        if not listing and more <= 0:
            return None
        lines = [f"- {w}" for w in listing]
        if more > 0:
            lines.append(f"and {more} more (vvreader --plan lists them)")
        return "\n".join(lines)


@dataclass(frozen=True)
class Document:
    """A decoded, parsed document."""

    text: str
    """The decoded text; all offsets index it."""
    blocks: tuple[Block, ...]
    """Leaf blocks in source order (footnote bodies where they are defined)."""
    name: str = "<text>"
    """Where it came from (a path or ``<stdin>``)."""
    encoding: str = "utf-8"
    """The encoding it was decoded from."""
    markdown: bool = True
    """Whether it was parsed as Markdown."""
    footnote_refs: dict[str, int] = field(default_factory=dict, repr=False)
    """Footnote label to the offset of its first reference."""
    line_starts: tuple[int, ...] = field(default=(0,), repr=False)
    """Offset of every line start (for line to offset conversions)."""
    link_labels: frozenset[str] = field(default=frozenset(), repr=False)
    """Normalised labels of the link reference definitions (Markdown), so that a block's
    inline text can be parsed again on its own (the reading view does)."""
    book: BookInfo | None = field(default=None, repr=False)
    """Title, author, cover and table of contents of an EPUB or HTML book (None for
    Markdown and plain text)."""

    def line_of(self, offset: int) -> int:
        """The 0-based line that holds ``offset``."""
        return bisect_right(self.line_starts, offset) - 1

    @cached_property
    def _block_starts(self) -> list[int]:
        return [b.start for b in self.blocks]

    def block_at(self, offset: int) -> Block | None:
        """The block whose range holds ``offset`` (None between blocks)."""
        i = bisect_right(self._block_starts, offset) - 1
        if i >= 0 and self.blocks[i].start <= offset < max(self.blocks[i].end, offset + 1):
            return self.blocks[i] if offset < self.blocks[i].end else None
        return None


_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def line_starts_of(text: str) -> list[int]:
    """Offsets of line starts, with CRLF, CR and LF all ending a line (as markdown-it does)."""
    return [0, *(m.end() for m in _LINE_BREAK.finditer(text))]


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building many objects that make no cycles.

    Parsing and planning a book creates hundreds of thousands of tokens and utterances that
    all stay alive; the collector would scan them again and again and find nothing.
    Reference counting still frees everything as usual.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
