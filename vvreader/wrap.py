"""Display wrapping: a document's blocks as display lines, with offset <-> (line, col) maps.

Pure logic (no Textual). A ``Line`` is plain display text plus ``runs``: each run says that
``text[col:col + length]`` shows ``Document.text[src:src + length]`` character for character.
Characters outside runs (bullets, quote bars, joining spaces, table rules) map to no source.
Columns count characters of ``Line.text``; terminal cells are only used to decide breaks.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass

from rich.cells import cell_len

from vvreader.document import Block, Document

__all__ = ["Line", "WrapModel", "col_at_cell", "safe_text"]

_SAFE = {c: "\ufffd" for c in (*range(0x20), *range(0x7F, 0xA0))}
_SAFE.update(
    {c: "\ufffd" for c in (0x2028, 0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A))}
)
_SAFE[0x09] = " "
_WORD = re.compile(r"\S+")
_MARKER = re.compile(r"(?:[-+*]|\d{1,9}[.)])(?:[ \t]+|$)")
_FOOTNOTE = re.compile(r"\[\^[^\]]+\]:[ \t]*")
_ATX = re.compile(r"#{1,6}(?:[ \t]+|$)")
_ATX_TAIL = re.compile(r"(?:^|[ \t]+)#+[ \t]*$")
_SETEXT = re.compile(r"[ \t]*(?:=+|-+)[ \t]*$")
_FENCE = re.compile(r"[ \t]*(?:`{3,}|~{3,})")
_DELIMITER_ROW = re.compile(r"[ \t]*\|?[ \t]*:?-+:?[ \t]*(?:\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*$")
_PIPE = re.compile(r"(?<!\\)\|")
_VERBATIM = {"code", "html", "front_matter"}


def safe_text(text: str) -> str:
    """``text`` with control, line-separator and bidi characters replaced one for one."""
    return text.translate(_SAFE)


def col_at_cell(text: str, x: int) -> int:
    """The character column of ``text`` drawn at terminal cell ``x``."""
    if text.isascii():
        return x
    cells = 0
    for i, ch in enumerate(text):
        cells += cell_len(ch)
        if cells > x:
            return i
    return len(text) + (x - cells)


@dataclass(frozen=True, slots=True)
class Line:
    """One display line."""

    text: str
    """Display text (safe: no control characters)."""
    runs: tuple[tuple[int, int, int], ...]
    """(col, src, length) triples in column order; source offsets increase with col."""
    style: str = ""
    """heading, code, quote, table, rule, or "" for plain text."""
    prefix: int = 0
    """Number of leading decoration characters (bullets, bars, indent)."""


def _chunks(text: str, width: int, words: bool) -> list[tuple[int, int]]:
    """Greedy line ranges of ``text`` at most ``width`` cells wide (by words or by cells)."""
    width = max(1, width)
    ascii_ = text.isascii()
    if not words:
        if ascii_:
            return [(a, min(a + width, len(text))) for a in range(0, max(len(text), 1), width)]
        out, a, w = [], 0, 0
        for i, ch in enumerate(text):
            cw = cell_len(ch)
            if w + cw > width and i > a:
                out.append((a, i))
                a, w = i, 0
            w += cw
        out.append((a, len(text)))
        return out
    out = []
    a = b = -1
    w = 0
    for m in _WORD.finditer(text):
        s, e = m.span()
        ww = e - s if ascii_ else cell_len(text[s:e])
        if a >= 0 and w + (s - b) + ww <= width:
            w += (s - b) + ww
            b = e
            continue
        if a >= 0:
            out.append((a, b))
        if ww > width:
            pieces = _chunks(text[s:e], width, False)
            out.extend((s + x, s + y) for x, y in pieces[:-1])
            s = s + pieces[-1][0]
            ww = cell_len(text[s:e])
        a, b, w = s, e, ww
    if a >= 0:
        out.append((a, b))
    return out


class WrapModel:
    """A document wrapped to a width, with maps between source offsets and display cells."""

    def __init__(self, document: Document, width: int, safe: str | None = None) -> None:
        self.document = document
        """The wrapped document."""
        self.width = max(8, width)
        """Width in cells that lines were wrapped to."""
        self.safe = safe if safe is not None else safe_text(document.text)
        """``document.text`` with unsafe characters replaced (same length)."""
        self.lines: list[Line] = []
        """The display lines."""
        self.block_lines: dict[int, int] = {}
        """First display line of each shown block."""
        prev: Block | None = None
        for block in document.blocks:
            if prev is not None and not (prev.list_depth and block.list_depth):
                self.lines.append(Line("", ()))
            self.block_lines[block.index] = len(self.lines)
            self._block(block)
            prev = block
        self._mapped = [i for i, ln in enumerate(self.lines) if ln.runs]
        self._lo = [self.lines[i].runs[0][1] for i in self._mapped]

    def __len__(self) -> int:
        return len(self.lines)

    # -- building -------------------------------------------------------------------------

    def _source_lines(self, block: Block) -> list[tuple[int, int]]:
        """(start, end) of each source line of ``block``, clipped to it, newline excluded."""
        starts = self.document.line_starts
        text = self.document.text
        out = []
        for n in range(block.line_start, min(block.line_end, len(starts))):
            s = max(starts[n], block.start)
            e = min(starts[n + 1] if n + 1 < len(starts) else len(text), block.end)
            while e > s and text[e - 1] in "\r\n":
                e -= 1
            if s <= e and s < block.end:
                out.append((s, e))
        return out

    def _content(self, block: Block) -> tuple[list[tuple[int, int]], bool]:
        """Source runs of a flowing block with container and block markup skipped."""
        text = self.document.text
        runs: list[tuple[int, int]] = []
        marker = False
        lines = self._source_lines(block)
        for k, (s, e) in enumerate(lines):
            while s < e and text[s] in " \t":
                s += 1
            for _ in range(block.quote_depth):
                if s < e and text[s] == ">":
                    s += 1
                    while s < e and text[s] in " \t":
                        s += 1
            if k == 0 and block.list_depth and (m := _MARKER.match(text, s, e)):
                s, marker = m.end(), True
            if k == 0 and block.kind == "footnote" and (m := _FOOTNOTE.match(text, s, e)):
                s = m.end()
            if block.kind == "heading":
                if k == 0 and (m := _ATX.match(text, s, e)):
                    s = m.end()
                    if t := _ATX_TAIL.search(text, s, e):
                        e = t.start()
                elif k == len(lines) - 1 and k > 0 and _SETEXT.match(text, s, e):
                    continue
            while e > s and text[e - 1] in " \t":
                e -= 1
            if s < e:
                runs.append((s, e))
        return runs, marker

    def _prefixes(self, block: Block, marker: bool) -> tuple[str, str]:
        """Decoration of the first and the following lines of a block."""
        bars = "\u2502 " * block.quote_depth
        if not block.list_depth:
            return bars, bars
        indent = "  " * (block.list_depth - 1)
        bullet = f"{block.list_number}. " if block.list_number is not None else "\u2022 "
        cont = bars + indent + " " * len(bullet)
        return (bars + indent + bullet if marker else cont), cont

    def _style(self, block: Block) -> str:
        if block.kind in ("heading", "table", "rule") or block.kind in _VERBATIM:
            return "code" if block.kind in _VERBATIM else block.kind
        return "quote" if block.quote_depth else ""

    def _block(self, block: Block) -> None:
        if block.kind == "rule":
            self.lines.append(Line("\u2500" * min(self.width, 40), (), "rule"))
        elif block.kind in _VERBATIM:
            self._verbatim(block, self._source_lines(block))
        elif block.kind == "table":
            if not self._table(block):
                self._verbatim(block, self._source_lines(block))
        else:
            runs, marker = self._content(block)
            self._flow(runs, *self._prefixes(block, marker), self._style(block))

    def _flow(self, runs: list[tuple[int, int]], first: str, cont: str, style: str) -> None:
        """Join runs with spaces and word-wrap them."""
        safe = self.safe
        logical = " ".join(safe[s:e] for s, e in runs)
        starts, pos = [], 0
        for s, e in runs:
            starts.append(pos)
            pos += e - s + 1
        k = 0
        for n, (a, b) in enumerate(_chunks(logical, self.width - cell_len(first), True)):
            prefix = first if n == 0 else cont
            out = []
            while k < len(runs) and starts[k] + runs[k][1] - runs[k][0] <= a:
                k += 1
            j = k
            while j < len(runs) and starts[j] < b:
                lo = max(a, starts[j])
                hi = min(b, starts[j] + runs[j][1] - runs[j][0])
                if hi > lo:
                    out.append((len(prefix) + lo - a, runs[j][0] + lo - starts[j], hi - lo))
                j += 1
            self.lines.append(Line(prefix + logical[a:b], tuple(out), style, len(prefix)))

    def _verbatim(self, block: Block, lines: list[tuple[int, int]]) -> None:
        """Source lines as they are (fence lines dropped), hard-wrapped."""
        text = self.document.text
        bars = "\u2502 " * block.quote_depth
        if block.kind == "code" and lines and _FENCE.match(text, *lines[0]):
            lines = lines[1:]
            if lines and _FENCE.match(text, *lines[-1]):
                lines = lines[:-1]
        elif block.kind == "code":
            lines = [(min(s + len(text[s:e]) - len(text[s:e].lstrip(" ")), s + 4, e), e)
                     if n else (s, e) for n, (s, e) in enumerate(lines)]
        for s, e in lines:
            seg = self.safe[s:e]
            for a, b in _chunks(seg, self.width - len(bars), False):
                runs = ((len(bars), s + a, b - a),) if b > a else ()
                self.lines.append(Line(bars + seg[a:b], runs, "code", len(bars)))

    def _table(self, block: Block) -> bool:
        """Aligned rows; False if the table is too wide (then shown verbatim)."""
        text = self.document.text
        rows: list[list[tuple[int, int]]] = []
        for n, (s, e) in enumerate(self._source_lines(block)):
            if n == 1 and _DELIMITER_ROW.match(text, s, e):
                continue
            cuts = [s - 1, *(m.start() for m in _PIPE.finditer(text, s, e)), e]
            cells = []
            for k in range(len(cuts) - 1):
                a, b = cuts[k] + 1, cuts[k + 1]
                while a < b and text[a] in " \t":
                    a += 1
                while b > a and text[b - 1] in " \t":
                    b -= 1
                cells.append((a, b))
            if len(cells) > 1 and cells[0][0] == cells[0][1]:
                cells.pop(0)
            if len(cells) > 1 and cells[-1][0] == cells[-1][1]:
                cells.pop()
            rows.append(cells)
        ncols = max((len(r) for r in rows), default=0)
        widths = [0] * ncols
        for r in rows:
            for c, (a, b) in enumerate(r):
                widths[c] = max(widths[c], cell_len(self.safe[a:b]))
        bars = "\u2502 " * block.quote_depth
        if not rows or sum(widths) + 3 * (ncols - 1) + len(bars) > self.width:
            return False
        for n, r in enumerate(rows):
            parts, runs, col = [bars], [], len(bars)
            for c, (a, b) in enumerate(r):
                cell = self.safe[a:b]
                if b > a:
                    runs.append((col, a, b - a))
                last = c == len(r) - 1
                gap = " " * (widths[c] - cell_len(cell)) + ("" if last else " \u2502 ")
                parts.append(cell + gap)
                col += len(cell) + len(gap)
            self.lines.append(Line("".join(parts).rstrip(), tuple(runs), "table", len(bars)))
            if n == 0 and len(rows) > 1:
                rule = "\u2500\u253c\u2500".join("\u2500" * w for w in widths)
                self.lines.append(Line(bars + rule, (), "table", len(bars)))
        return True

    # -- mapping --------------------------------------------------------------------------

    def offset_to_cell(self, offset: int) -> tuple[int, int]:
        """Display (line, col) of a source offset (hidden markup maps to the next shown char)."""
        k = max(0, bisect_right(self._lo, offset) - 1)
        if not self._mapped:
            return 0, 0
        for mk in (k, k + 1):
            if mk >= len(self._mapped):
                break
            line = self._mapped[mk]
            for col, src, n in self.lines[line].runs:
                if offset < src + n:
                    return line, col + max(0, offset - src)
        last = self._mapped[-1]
        col, src, n = self.lines[last].runs[-1]
        return last, col + n

    def cell_to_offset(self, line: int, col: int) -> int | None:
        """Source offset shown at (line, col), or None for decoration and empty cells."""
        if not 0 <= line < len(self.lines):
            return None
        for c, src, n in self.lines[line].runs:
            if c <= col < c + n:
                return src + col - c
        return None

    def nearest_offset(self, line: int, col: int) -> int | None:
        """Like ``cell_to_offset`` but falls back to the nearest shown char on the line."""
        hit = self.cell_to_offset(line, col)
        if hit is not None or not 0 <= line < len(self.lines) or not self.lines[line].runs:
            return hit
        runs = self.lines[line].runs
        for c, src, _n in runs:
            if col < c:
                return src
        c, src, n = runs[-1]
        return src + n - 1

    def span_cells(self, start: int, end: int) -> dict[int, tuple[int, int]]:
        """Lines showing any of ``[start, end)``, each with the (col_start, col_end) to mark."""
        out: dict[int, tuple[int, int]] = {}
        if end <= start or not self._mapped:
            return out
        k = max(0, bisect_right(self._lo, start) - 1)
        while k < len(self._mapped) and self._lo[k] < end:
            line = self._mapped[k]
            for col, src, n in self.lines[line].runs:
                lo, hi = max(start, src), min(end, src + n)
                if hi > lo:
                    a, b = col + lo - src, col + hi - src
                    old = out.get(line)
                    out[line] = (min(a, old[0]), max(b, old[1])) if old else (a, b)
            k += 1
        return out
