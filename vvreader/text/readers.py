"""Readers: the one place where a file's type picks the reader that makes its blocks.

A reader turns decoded text into ``Block`` values a part at a time (``BlockReader``); the
speech plan drives it (``vvreader.text.plan``) and ``parse`` runs it to the end. Markdown
(``vvreader.text.markdown``) and plain text (``vvreader.text.plain``) are the block readers.
Books (EPUB, HTML) are read into Markdown text first (``vvreader.text.epub``), so they get
the Markdown reader's blocks, speech rules and positions, plus a ``BookInfo`` (title,
author, cover, table of contents) that ``read_source`` hands on to the ``Document``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from vvreader.text.document import Block, BookInfo, Document, gc_paused, line_starts_of
from vvreader.text.epub import EpubReading, HtmlReading
from vvreader.text.files import read_file
from vvreader.text.markdown import MarkdownParts
from vvreader.text.plain import TextParts

__all__ = [
    "BOOK_SUFFIXES",
    "BlockReader",
    "Source",
    "is_markdown",
    "load_document",
    "open_reader",
    "parse",
    "read_source",
]

#: Suffixes read as plain text; any other file (and stdin) is read as Markdown.
TEXT_SUFFIXES = frozenset({".txt", ".text", ""})
#: Suffixes read as books: EPUB archives and HTML pages.
BOOK_SUFFIXES = frozenset({".epub", ".html", ".htm", ".xhtml"})


class BlockReader(Protocol):
    """Blocks of a text as they become final; ``blocks`` only ever grows."""

    blocks: list[Block] | tuple[Block, ...]
    """Final blocks, in document order (the same values the whole document gets)."""
    footnotes_settled: bool
    """Whether the footnote lookups below are final."""
    footnote_refs: dict[str, int]
    """Footnote label to the offset of the block with its first reference."""
    footnote_labels: frozenset[str]
    """Labels that have footnote blocks."""
    link_labels: frozenset[str]
    """Labels of the link reference definitions (final once ``footnotes_settled``)."""

    @property
    def done(self) -> bool:
        """Whether every block is final."""
        ...

    def step(self) -> bool:
        """Do one unit of work; False when there was nothing left to do."""
        ...

    def finish(self) -> None:
        """Read everything (blocks and their inline tokens)."""
        ...

    def parse_inline(self, block: Block) -> bool:
        """Make the block's inline tokens final; False while that has to wait."""
        ...

    def footnote_blocks(self, label: str) -> list[Block] | None:
        """The footnote blocks of ``label`` (None while not built yet)."""
        ...

    def section_at(self, offset: int) -> int | None:
        """Section of the built block that holds ``offset``."""
        ...


def is_markdown(path: str) -> bool:
    """Whether ``path`` (``-``: stdin) is read as Markdown when no format is forced."""
    return path == "-" or Path(path).suffix.lower() not in TEXT_SUFFIXES


def open_reader(
    text: str,
    line_starts: Sequence[int],
    markdown: bool,
    first_chars: int = 32_000,
    part_chars: int = 256_000,
) -> BlockReader:
    """The block reader for ``text``.

    Args:
        text: The decoded document text.
        line_starts: Offsets of its line starts.
        markdown: Read it as Markdown (else as plain text).
        first_chars: Size of the first part read (later parts grow to ``part_chars``).
        part_chars: Largest part read in one step.
    """
    if markdown:
        return MarkdownParts(text, line_starts, first_chars, part_chars)
    return TextParts(text, line_starts)


@dataclass(frozen=True)
class Source:
    """A document's decoded text, before parsing."""

    text: str
    """The text the blocks are read from (Markdown for books)."""
    name: str
    """Where it came from (a path or ``<stdin>``)."""
    encoding: str
    """The encoding the file was decoded from (``epub`` for an EPUB)."""
    markdown: bool
    """Whether the text is read as Markdown."""
    book: BookInfo | None = None
    """Title, author, cover, contents and warnings of an EPUB or HTML book."""
    rest: Callable[[], tuple[str, BookInfo]] | None = None
    """For a big book read in parts: gives the whole text (which starts with ``text``) and
    its ``BookInfo``; None when ``text`` is the whole."""


def read_source(path: str, encoding: str | None = None, markdown: bool | None = None) -> Source:
    """Read and decode a document without parsing it.

    Args:
        path: A Markdown, text, EPUB or HTML file, or ``-`` for stdin (Markdown).
        encoding: Force an encoding (default: detect; an EPUB declares its own).
        markdown: Force Markdown (True) or plain text (False) for a text file; default by
            suffix (``is_markdown``). Books are always read as Markdown.

    Raises:
        DocumentError: the file cannot be read, decoded or is not text (one line).
    """
    suffix = Path(path).suffix.lower() if path != "-" else ""
    if suffix == ".epub":
        reading = EpubReading(path)
        text, book = reading.first()
        return Source(text, path, "epub", True, book, None if reading.complete else reading.whole)
    if suffix in BOOK_SUFFIXES:
        page = HtmlReading(path, encoding)
        text, book = page.first()
        return Source(
            text, path, encoding or "utf-8", True, book, None if page.complete else page.whole
        )
    text, name, enc = read_file(path, encoding)
    return Source(text, name, enc, is_markdown(path) if markdown is None else markdown)


def parse(
    text: str,
    name: str = "<text>",
    encoding: str = "utf-8",
    markdown: bool = True,
    book: BookInfo | None = None,
) -> Document:
    """Read decoded text into a ``Document`` (all blocks, inline tokens parsed)."""
    with gc_paused():
        line_starts = line_starts_of(text)
        reader = open_reader(text, line_starts, markdown, 1 << 20, 1 << 20)
        reader.finish()
        return Document(
            text,
            tuple(reader.blocks),
            name,
            encoding,
            markdown,
            dict(reader.footnote_refs),
            tuple(line_starts),
            reader.link_labels,
            book,
        )


def load_document(path: str, encoding: str | None = None, markdown: bool | None = None) -> Document:
    """Read, decode and parse a document.

    Args:
        path: A Markdown, text, EPUB or HTML file, or ``-`` for stdin.
        encoding: Force an encoding (default: detect).
        markdown: Force Markdown (True) or plain text (False); default by suffix.

    Raises:
        DocumentError: the file cannot be read, decoded or is not text.
    """
    src = read_source(path, encoding, markdown)
    text, book = src.rest() if src.rest is not None else (src.text, src.book)
    return parse(text, src.name, src.encoding, src.markdown, book)
