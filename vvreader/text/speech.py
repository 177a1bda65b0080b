"""What each block says aloud: markup removed, with a map from every spoken character to the source.

``block_speech`` turns one ``Block`` into ``Speech`` units. A unit's ``text`` is what a reader
would read (no markup, links as their text, bare URLs as their host, table cells after their
header); ``source_span`` maps any range of it back to offsets in ``Document.text``.
"""

from __future__ import annotations

import html
import re
from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Any

from vvreader.text.document import Block, Document
from vvreader.text.settings import PlanSettings

__all__ = ["Speech", "block_speech"]

_URL = re.compile(r"(?:https?://|ftp://|www\.)[^\s<>\"'`]+", re.IGNORECASE)
_URL_TAIL = ".,;:!?)]}'\""
_ENTITY = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")
_TERMINAL = tuple(".!?:;\u2026")
_LINE = re.compile(r"[^\r\n]+")


@dataclass
class Speech:
    """Speakable text of (part of) a block and its map back to the source."""

    kind: str
    """Utterance kind: heading, paragraph, list_item, quote, table, code, footnote."""
    whole: bool = False
    """Speak as one sentence (headings, table rows) instead of segmenting."""
    text: str = ""
    """The speakable text (built by appending pieces)."""
    _t: list[int] = field(default_factory=list, repr=False)
    _src: list[int] = field(default_factory=list, repr=False)
    _src_end: list[int] = field(default_factory=list, repr=False)
    _literal: list[bool] = field(default_factory=list, repr=False)
    _parts: list[str] = field(default_factory=list, repr=False)
    _len: int = 0

    def literal(self, piece: str, pos: int) -> None:
        """Append ``piece``, which is ``source[pos:pos + len(piece)]``."""
        if not piece:
            return
        if self._literal and self._literal[-1] and self._src_end[-1] == pos:
            self._src_end[-1] = pos + len(piece)
        else:
            self._push(pos, pos + len(piece), True)
        self._parts.append(piece)
        self._len += len(piece)

    def synthetic(self, piece: str, start: int, end: int) -> None:
        """Append ``piece``, which stands for ``source[start:end]`` as a whole."""
        if not piece:
            return
        self._push(start, end, False)
        self._parts.append(piece)
        self._len += len(piece)

    def _push(self, start: int, end: int, literal: bool) -> None:
        self._t.append(self._len)
        self._src.append(start)
        self._src_end.append(end)
        self._literal.append(literal)

    def finish(self) -> Speech:
        """Join the appended pieces into ``text``."""
        self.text = "".join(self._parts)
        return self

    def ends_with_stop(self) -> bool:
        """Whether the text ends in terminal punctuation (ignoring closing quotes)."""
        return "".join(self._parts[-3:]).rstrip().rstrip("\"'\u201d\u2019)").endswith(_TERMINAL)

    def source_span(self, start: int, end: int) -> tuple[int, int]:
        """Source offsets of ``text[start:end]`` (a non-empty range)."""
        k = bisect_right(self._t, start) - 1
        s = self._src[k] + (start - self._t[k]) if self._literal[k] else self._src[k]
        k = bisect_right(self._t, end - 1) - 1
        e = self._src[k] + (end - self._t[k]) if self._literal[k] else self._src_end[k]
        return s, max(s, e)


def _host(url: str) -> str:
    """Spoken host of a URL: ``https://www.example.org/x`` -> ``example dot org``."""
    host = re.sub(r"^[a-z]+://", "", url, flags=re.IGNORECASE).split("/")[0].split("?")[0]
    host = host.rsplit("@", 1)[-1].split(":")[0]
    if host.lower().startswith("www."):
        host = host[4:]
    return " dot ".join(p for p in host.split(".") if p)


class _Walker:
    """Walks inline tokens, finding each piece of text in the source in order."""

    def __init__(self, src: str, out: Speech, policy: PlanSettings, book: bool = False) -> None:
        self.src = src
        self.out = out
        self.policy = policy
        self.images = policy.book_images if book else policy.images
        """The image rule: books (EPUB, HTML) have their own (``book_images``)."""

    def locate(self, piece: str, pos: int, limit: int) -> int:
        """Append ``piece`` mapped to where it occurs at or after ``pos``; return the new pos."""
        src = self.src
        i = src.find(piece, pos, limit)
        if i >= 0 and src.find("\\", pos, i) < 0 and src.find("&", pos, i) < 0:
            self.out.literal(piece, i)
            return i + len(piece)
        k = 0
        while k < len(piece):
            ch = piece[k]
            if pos < limit and (src[pos] == ch or (ch == " " and src[pos] in "\t\r\n")):
                self.out.literal(ch, pos)
                pos += 1
            elif pos + 1 < limit and src[pos] == "\\" and src[pos + 1] == ch:
                self.out.literal(ch, pos + 1)
                pos += 2
            elif pos < limit and src[pos] == "&" and (m := _ENTITY.match(src, pos, limit)):
                decoded = html.unescape(m.group())
                if piece.startswith(decoded, k) and decoded:
                    self.out.synthetic(decoded, pos, m.end())
                    k += len(decoded)
                    pos = m.end()
                    continue
                self.out.synthetic(ch, pos, pos)
            else:
                j = src.find(ch, pos, min(limit, pos + 64))
                if j >= 0:
                    self.out.literal(ch, j)
                    pos = j + 1
                else:
                    self.out.synthetic(ch, pos, pos)
            k += 1
        return pos

    def text(self, content: str, pos: int, limit: int) -> int:
        """A text token: literal text, with bare URLs spoken by policy."""
        if "://" not in content and "w." not in content and "W." not in content:
            return self.locate(content, pos, limit)  # no URL can start here ("www.")
        last = 0
        for m in _URL.finditer(content):
            url = m.group().rstrip(_URL_TAIL)
            pos = self.locate(content[last : m.start()], pos, limit)
            at = self.src.find(url, pos, limit)
            if at < 0:
                pos = self.locate(url, pos, limit)
            else:
                self.url(url, at, at + len(url))
                pos = at + len(url)
            last = m.start() + len(url)
        return self.locate(content[last:], pos, limit)

    def url(self, url: str, start: int, end: int) -> None:
        """A bare URL or autolink (``mailto:`` links are spoken as the address)."""
        if url.lower().startswith("mailto:"):
            user, _, host = url[7:].partition("@")
            self.out.synthetic(f"{user} at {_host(host)}", start, end)
        elif self.policy.urls == "domain":
            self.out.synthetic(_host(url), start, end)

    def inline(self, children: list[Any], pos: int, limit: int) -> int:
        """Speak a run of inline tokens starting at source offset ``pos``."""
        src = self.src
        skip_until_close = False
        for tok in children:
            t = tok.type
            if skip_until_close:
                if t == "link_close":
                    skip_until_close = False
                continue
            if t == "text":
                pos = self.text(tok.content, pos, limit)
            elif t == "code_inline":
                pos = self.locate(tok.content, pos, limit)
                tick = src.find(tok.markup, pos, limit) if tok.markup else -1
                pos = tick + len(tok.markup) if tick >= 0 else pos
            elif t in ("softbreak", "hardbreak"):
                self.out.synthetic(" ", pos, pos)
                nl = src.find("\n", pos, limit)
                pos = nl + 1 if nl >= 0 else pos
            elif t == "link_open" and tok.markup in ("autolink", "linkify"):
                lt = src.find("<", pos, limit)
                gt = src.find(">", lt, limit) if lt >= 0 else -1
                if lt >= 0 and gt >= 0:
                    self.url(tok.attrGet("href") or "", lt, gt + 1)
                    pos = gt + 1
                skip_until_close = True
            elif t == "link_close":
                pos = _skip_destination(src, pos, limit)
            elif t == "image":
                if self.images == "alt":
                    pos = self.inline(tok.children or [], pos, limit)
                pos = _skip_destination(src, pos, limit)
            elif t == "html_inline":
                at = src.find(tok.content, pos, limit)
                pos = at + len(tok.content) if at >= 0 else pos
            elif t == "footnote_ref":
                close = src.find("]", pos, limit)
                pos = close + 1 if close >= 0 else pos
        return pos


def _skip_destination(src: str, pos: int, limit: int) -> int:
    """After link text: skip ``](dest "title")`` or ``][ref]`` if the source has one there."""
    close = src.find("]", pos, limit)
    if close < 0 or src[pos:close].strip():
        return pos
    nxt = close + 1
    if src.startswith("(", nxt):
        depth, j = 0, nxt
        while j < limit:
            if src[j] == "(":
                depth += 1
            elif src[j] == ")":
                depth -= 1
                if depth == 0:
                    return j + 1
            j += 1
        return nxt
    if src.startswith("[", nxt):
        end = src.find("]", nxt, limit)
        return end + 1 if end >= 0 else nxt
    return nxt


def _kind(block: Block) -> str:
    """Utterance kind for a text block."""
    if block.kind != "paragraph":
        return block.kind
    if block.list_item is not None:
        return "list_item"
    return "quote" if block.quote_depth else "paragraph"


def block_speech(doc: Document, block: Block, policy: PlanSettings) -> list[Speech]:
    """The speech units of one block (empty when the block is not read).

    Args:
        doc: The document (for its text).
        block: The block to speak.
        policy: The plan settings.

    Returns:
        Units in reading order; ``whole`` units are one sentence each.
    """
    src = doc.text
    kind = block.kind
    if kind in ("html", "front_matter", "rule"):
        return []
    if not doc.markdown:
        out = Speech(kind, whole=True) if kind == "heading" else Speech("paragraph")
        first = True
        for m in _LINE.finditer(src, block.start, block.end):
            line = m.group().strip()
            if not line:
                continue
            if not first:
                out.synthetic(" ", m.start(), m.start())
            out.literal(line, m.start() + m.group().index(line))
            first = False
        if kind == "heading" and policy.heading_period and out._parts and not out.ends_with_stop():
            out.synthetic(".", block.end, block.end)
        return [out.finish()]
    if kind == "code":
        return _code(doc, block, policy)
    if kind == "table":
        return _table(doc, block, policy) if policy.tables == "rows" else []
    if kind == "footnote" and policy.footnotes == "skip":
        return []
    out = Speech(_kind(block), whole=kind == "heading")
    inline = block.tokens[0] if block.tokens else None
    if inline is None or inline.type != "inline":
        return []
    if kind == "footnote" and src.startswith("[^", block.start):
        label_end = src.find("]:", block.start, block.end)
        out.synthetic(f"Footnote {block.footnote}: ", block.start, max(block.start, label_end))
    walker = _Walker(src, out, policy, doc.book is not None)
    walker.inline(inline.children or [], block.start, block.end)
    needs_stop = kind == "heading" or block.list_item is not None
    if policy.heading_period and needs_stop and out._parts and not out.ends_with_stop():
        out.synthetic(".", block.end, block.end)
    return [out.finish()]


def _code(doc: Document, block: Block, policy: PlanSettings) -> list[Speech]:
    """A fenced or indented code block: announced, skipped or read."""
    if policy.code == "skip":
        return []
    content = block.tokens[0].content if block.tokens else ""
    if policy.code == "read":
        out = Speech("code")
        _Walker(doc.text, out, policy).locate(content.strip(), block.start, block.end)
        return [out.finish()]
    lines = content.count("\n") or 1
    lang = block.info.split()[0] if block.info else ""
    words = f"Code block, {lang}, " if lang else "Code block, "
    out = Speech("code", whole=True)
    out.synthetic(f"{words}{lines} line{'s' if lines != 1 else ''}.", block.start, block.end)
    return [out.finish()]


def _cells(tokens: tuple[Any, ...]) -> list[list[Any]]:
    """Rows of a table as lists of inline tokens (header row first)."""
    rows: list[list[Any]] = []
    for tok in tokens:
        if tok.type == "tr_open":
            rows.append([])
        elif tok.type == "inline" and rows:
            rows[-1].append(tok)
    return rows


def _table(doc: Document, block: Block, policy: PlanSettings) -> list[Speech]:
    """Read a table row by row; body cells are preceded by their header."""
    src = doc.text
    rows = _cells(block.tokens)
    units: list[Speech] = []
    headers: list[str] = []
    for r, row in enumerate(rows):
        if not row:
            continue
        line = row[0].map[0] if row[0].map else block.line_start
        pos = doc.line_starts[line] if line < len(doc.line_starts) else block.start
        nl = src.find("\n", pos, block.end)
        limit = nl if nl >= 0 else block.end
        out = Speech("table", whole=True)
        if r == 0:
            out.synthetic("Table: ", pos, pos)
        said = False
        for c, cell in enumerate(row):
            cell_out = Speech("table")
            walker = _Walker(src, cell_out, policy, doc.book is not None)
            pos = walker.inline(cell.children or [], pos, limit)
            cell_out.finish()
            if r == 0:
                headers.append(cell_out.text.strip())
            if not cell_out.text.strip():
                continue
            first = cell_out._src[0] if cell_out._src else pos
            if said:
                out.synthetic(", " if r == 0 else "; ", first, first)
            if r > 0 and c < len(headers) and headers[c]:
                out.synthetic(f"{headers[c]}: ", first, first)
            _append(out, cell_out)
            said = True
        if said:
            out.synthetic(".", limit, limit)
            units.append(out.finish())
    return units


def _append(out: Speech, part: Speech) -> None:
    """Append another unit's pieces with their mapping."""
    ends = [*part._t[1:], len(part.text)]
    for k, t0 in enumerate(part._t):
        piece = part.text[t0 : ends[k]]
        if part._literal[k]:
            out.literal(piece, part._src[k])
        else:
            out.synthetic(piece, part._src[k], part._src_end[k])
