"""Documents: load and decode a file, parse it once into blocks with source ranges.

``Document.text`` is the file's decoded text (BOM removed, line endings kept as they are);
every offset in a ``Block`` (and in the speech plan built from it) indexes that string.
Markdown is parsed with markdown-it-py (CommonMark, tables, strikethrough, footnotes, front
matter); plain text is split into paragraphs at blank lines.
"""

from __future__ import annotations

import codecs
import gc
import re
import sys
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

__all__ = [
    "Block",
    "Document",
    "DocumentError",
    "decode",
    "line_starts_of",
    "load_document",
    "parse",
    "parse_text_blocks",
    "read_text",
]

MARKDOWN_SUFFIXES = frozenset({".md", ".markdown", ".mdown", ".mkd"})
TEXT_SUFFIXES = frozenset({".txt", ".text", ""})
#: Files above this size are refused (parsing is about 1.5 MB/s).
MAX_BYTES = 32 * 1024 * 1024


class DocumentError(Exception):
    """A document cannot be read; the message says what is wrong and what to do."""


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


_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_CONTROL = re.compile(rb"[\x00-\x08\x0e-\x1a\x1c-\x1f]")


def decode(data: bytes, name: str = "<text>", encoding: str | None = None) -> tuple[str, str]:
    """Decode file bytes to text.

    UTF-8 (with or without BOM) and BOM-marked UTF-16/32 are read directly. Other bytes are
    refused as binary when they hold NUL or many control bytes, else decoded with the
    encoding that charset-normalizer detects (when installed), else refused.

    Args:
        data: The raw bytes.
        name: Shown in error messages.
        encoding: Force this encoding instead of detecting one.

    Returns:
        ``(text, encoding)``.

    Raises:
        DocumentError: binary data, undecodable text or an unknown encoding.
    """
    if encoding:
        try:
            return data.decode(encoding), encoding
        except LookupError:
            raise DocumentError(f"{name}: unknown encoding {encoding!r}") from None
        except UnicodeDecodeError as err:
            raise DocumentError(
                f"{name}: not valid {encoding} (byte {err.start}); try another --encoding"
            ) from None
    for bom, enc in _BOMS:
        if data.startswith(bom):
            try:
                return data[len(bom) :].decode(enc), enc
            except UnicodeDecodeError as err:
                raise DocumentError(
                    f"{name}: starts with a {enc} byte-order mark but byte {err.start} is not "
                    f"valid {enc}; re-save the file as UTF-8"
                ) from None
    head = data[:65536]
    if b"\x00" in head or len(_CONTROL.findall(head)) > max(8, len(head) // 100):
        raise DocumentError(f"{name}: looks like a binary file, not text; open a .md or .txt file")
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError as err:
        bad = err.start
    guess = _detect(data)
    if guess is None:
        raise DocumentError(
            f"{name}: not valid UTF-8 (byte {bad}) and its encoding could not be detected; "
            "convert it to UTF-8 or pass --encoding"
        )
    return data.decode(guess, errors="replace"), guess


def _detect(data: bytes) -> str | None:
    """Guess a legacy encoding with charset-normalizer, if it is installed."""
    try:
        from charset_normalizer import from_bytes
    except ImportError:
        return None
    matches = from_bytes(data[: 1 << 20])
    best = matches.best()
    if best is None or best.encoding in ("utf_8", "ascii"):
        return None
    # Short samples fit several single-byte code pages; prefer Western European then.
    for match in matches:
        if match.encoding == "cp1252" and match.chaos <= best.chaos + 0.05:
            return "cp1252"
    return best.encoding


def _read(path: str) -> bytes:
    """Read a file or stdin (``-``), with clear errors and a size limit."""
    if path == "-":
        data = sys.stdin.buffer.read(MAX_BYTES + 1)
    else:
        p = Path(path)
        try:
            if p.is_dir():
                raise DocumentError(f"{path}: is a directory; give a .md or .txt file")
            size = p.stat().st_size
            if size > MAX_BYTES:
                raise DocumentError(
                    f"{path}: {size / 1e6:.1f} MB is larger than the "
                    f"{MAX_BYTES // (1024 * 1024)} MiB limit; split the document into parts"
                )
            data = p.read_bytes()
        except FileNotFoundError:
            raise DocumentError(f"{path}: no such file") from None
        except PermissionError:
            raise DocumentError(f"{path}: permission denied") from None
        except OSError as err:
            raise DocumentError(f"{path}: cannot read ({err.strerror})") from None
    if len(data) > MAX_BYTES:
        raise DocumentError(
            f"{path}: input is larger than the {MAX_BYTES // (1024 * 1024)} MiB limit; "
            "split the document into parts"
        )
    return data


def read_text(
    path: str, encoding: str | None = None, markdown: bool | None = None
) -> tuple[str, str, str, bool]:
    """Read and decode a document without parsing it.

    Args:
        path: A ``.md``/``.markdown``/``.txt`` file, or ``-`` for stdin.
        encoding: Force an encoding (default: detect).
        markdown: Force Markdown (True) or plain text (False); default by suffix
            (stdin and unknown suffixes are read as Markdown).

    Returns:
        ``(text, name, encoding, markdown)``.

    Raises:
        DocumentError: the file cannot be read, decoded or is not text.
    """
    name = "<stdin>" if path == "-" else path
    text, enc = decode(_read(path), name, encoding)
    if markdown is None:
        markdown = Path(path).suffix.lower() not in TEXT_SUFFIXES or path == "-"
    return text, name, enc, markdown


def load_document(
    path: str, encoding: str | None = None, markdown: bool | None = None
) -> Document:
    """Read, decode and parse a document.

    Args:
        path: A ``.md``/``.markdown``/``.txt`` file, or ``-`` for stdin.
        encoding: Force an encoding (default: detect).
        markdown: Force Markdown (True) or plain text (False); default by suffix
            (stdin and unknown suffixes are read as Markdown).

    Raises:
        DocumentError: the file cannot be read, decoded or is not text.
    """
    text, name, enc, markdown = read_text(path, encoding, markdown)
    return parse(text, name=name, encoding=enc, markdown=markdown)


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building many objects that make no cycles.

    Parsing and planning a book creates hundreds of thousands of tokens and utterances that
    all stay alive; the collector would scan them again and again (about 15% of the time)
    and find nothing. Reference counting still frees everything as usual.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def parse(
    text: str, name: str = "<text>", encoding: str = "utf-8", markdown: bool = True
) -> Document:
    """Parse decoded text into a ``Document``."""
    with gc_paused():
        line_starts = line_starts_of(text)
        if markdown:
            from vvreader.text.markdown import markdown_blocks

            blocks, refs = markdown_blocks(text, line_starts)
        else:
            blocks, refs = parse_text_blocks(text, line_starts), {}
        return Document(text, tuple(blocks), name, encoding, markdown, refs, tuple(line_starts))


_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def line_starts_of(text: str) -> list[int]:
    """Offsets of line starts, with CRLF, CR and LF all ending a line (as markdown-it does)."""
    return [0, *(m.end() for m in _LINE_BREAK.finditer(text))]


# Atomic groups: the CR and LF of one CRLF are one line end, not an empty line between two.
_BLANK_LINE = re.compile(r"(?>\r\n|\r|\n)[ \t]*+(?>\r\n|\r|\n)")


def parse_text_blocks(text: str, line_starts: Sequence[int]) -> list[Block]:
    """Plain text: one paragraph block per run of non-blank lines."""
    blocks: list[Block] = []
    pos = 0
    for gap in [*_BLANK_LINE.finditer(text), None]:
        stop = gap.start() if gap else len(text)
        s, e = pos, stop
        while s < e and text[s].isspace():
            s += 1
        while e > s and text[e - 1].isspace():
            e -= 1
        if s < e:
            first = bisect_right(line_starts, s) - 1
            last = bisect_right(line_starts, e - 1)
            blocks.append(Block(len(blocks), "paragraph", s, e, first, last, 0))
        pos = gap.end() if gap else len(text)
    return blocks
