"""Display wrapping: a document's blocks as display lines, with offset <-> (line, col) maps.

Pure logic (no Textual). A ``Line`` is plain display text plus ``runs``: each run says that
``text[col:col + length]`` shows ``Document.text[src:src + length]`` character for character.
Characters outside runs (bullets, quote bars, joining spaces, table rules) map to no source.
Columns count characters of ``Line.text``; terminal cells are only used to decide breaks.
"""

from __future__ import annotations

import re
import time
from bisect import bisect_right
from dataclasses import dataclass

from rich.cells import cell_len

from vvreader.text.document import Block, Document
from vvreader.text.markdown import inline_markup
from vvreader.text.unsafe import safe_text

__all__ = ["Line", "WrapModel", "col_at_cell"]

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
    marks: tuple[tuple[int, int, str], ...] = ()
    """(col_start, col_end, mark) of inline styles: space-separated strong, em, code,
    strike, link."""


_BLANK = Line("", ())
"""The one blank line (separators; the view caches rendered lines by identity)."""


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


#: Inline styles in the order a line's mark names them.
_STYLES = ("strong", "em", "code", "strike", "link")


def _visible(text: str, link_labels: frozenset[str] | None) -> list[tuple[int, int, str]]:
    """The shown pieces of ``text`` (newlines excluded), each with its mark.

    ``text`` is Markdown inline text unless ``link_labels`` is None (plain text: shown as
    it is); markdown-it says which characters are markup (hidden) and what they style.
    """
    hidden: list[tuple[int, int]] = []
    marks: list[tuple[int, int, str]] = []
    if link_labels is not None:
        markup = inline_markup(text, link_labels)
        hidden, marks = markup.hidden, markup.marks
    cuts = {0, len(text)}
    for a, b in hidden:
        cuts.update((a, b))
    for a, b, _ in marks:
        cuts.update((a, b))
    k = text.find("\n")
    while k >= 0:
        cuts.update((k, k + 1))
        k = text.find("\n", k + 1)
    points = sorted(c for c in cuts if 0 <= c <= len(text))
    out: list[tuple[int, int, str]] = []
    for a, b in zip(points, points[1:], strict=False):
        if text[a] == "\n" or any(x <= a < y for x, y in hidden):
            continue
        names = {name for x, y, name in marks if x <= a < y}
        mark = " ".join(name for name in _STYLES if name in names)
        if out and out[-1][1] == a and out[-1][2] == mark:
            out[-1] = (out[-1][0], b, mark)
        else:
            out.append((a, b, mark))
    return out


class _Heights:
    """A Fenwick tree of block heights: prefix sums and lookup by line in O(log n)."""

    def __init__(self, heights: list[int]) -> None:
        self.n = len(heights)
        self.values = list(heights)
        tree = [0] * (self.n + 1)
        for i, h in enumerate(heights, 1):
            tree[i] += h
            j = i + (i & -i)
            if j <= self.n:
                tree[j] += tree[i]
        self.tree = tree
        self.total = sum(heights)

    def set(self, i: int, height: int) -> None:
        delta = height - self.values[i]
        if not delta:
            return
        self.values[i] = height
        self.total += delta
        i += 1
        while i <= self.n:
            self.tree[i] += delta
            i += i & -i

    def prefix(self, i: int) -> int:
        """Sum of the heights of blocks ``0 .. i-1``."""
        out = 0
        while i > 0:
            out += self.tree[i]
            i -= i & -i
        return out

    def find(self, line: int) -> int:
        """The block holding display line ``line`` (clamped to the last block)."""
        pos, rest = 0, line
        step = 1 << self.n.bit_length()
        while step:
            nxt = pos + step
            if nxt <= self.n and self.tree[nxt] <= rest:
                pos = nxt
                rest -= self.tree[nxt]
            step >>= 1
        return min(pos, self.n - 1)


class WrapModel:
    """A document wrapped to a width, with maps between source offsets and display cells.

    Blocks are wrapped lazily, when a line of theirs is asked for (so a book of several MB
    opens at once); blocks not wrapped yet count with an estimated height, which
    :meth:`settle` replaces by the real one a slice at a time. ``version`` changes whenever
    a height changes.
    """

    def __init__(self, document: Document, width: int, safe: str | None = None) -> None:
        self.document = document
        """The wrapped document."""
        self.width = max(8, width)
        """Width in cells that lines were wrapped to."""
        self.safe = safe if safe is not None else safe_text(document.text)
        """``document.text`` with unsafe characters replaced (same length)."""
        self.version = 0
        """Incremented whenever a block's height changes."""
        self._blocks = [b for b in document.blocks if b.kind != "front_matter"]
        self._starts = [b.start for b in self._blocks]
        self._sep = [
            0 if i == 0 or (self._blocks[i - 1].list_depth and b.list_depth) else 1
            for i, b in enumerate(self._blocks)
        ]
        self._wrapped: dict[int, list[Line]] = {}
        self._heights = _Heights(
            [self._sep[i] + self._estimate(b) for i, b in enumerate(self._blocks)]
        )
        self._settled = 0  # blocks before this one are all wrapped
        self._building: list[Line] = []

    def __len__(self) -> int:
        return self._heights.total

    def extend(self, document: Document) -> None:
        """Take ``document``, the same text with more blocks parsed (its first blocks are
        this one's): the new blocks are added, the wrapped ones kept."""
        old = len(self._blocks)
        shown = [b for b in document.blocks if b.kind != "front_matter"]
        if shown[:old] != self._blocks:
            raise ValueError("not an extension of the wrapped document")
        self.document = document
        for b in shown[old:]:
            i = len(self._blocks)
            self._sep.append(0 if i == 0 or (self._blocks[-1].list_depth and b.list_depth) else 1)
            self._blocks.append(b)
            self._starts.append(b.start)
        heights = self._heights.values + [
            self._sep[i] + self._estimate(self._blocks[i]) for i in range(old, len(self._blocks))
        ]
        self._heights = _Heights(heights)
        self.version += 1

    @property
    def settled(self) -> int:
        """Blocks before this index are all wrapped (heights exact)."""
        return self._settled

    def block_of_line(self, line: int) -> int:
        """Index (among shown blocks) of the block holding display line ``line``."""
        return self._heights.find(line) if self._blocks else 0

    @property
    def complete(self) -> bool:
        """Every block is wrapped (heights are exact)."""
        return self._settled >= len(self._blocks)

    @property
    def lines(self) -> list[Line]:
        """Every display line (wraps the whole document)."""
        out: list[Line] = []
        for i in range(len(self._blocks)):
            out += [_BLANK] * self._sep[i] + self._block_lines(i)
        return out

    def line(self, index: int) -> Line:
        """Display line ``index`` (blank past the end)."""
        if not self._blocks or not 0 <= index < len(self):
            return _BLANK
        for _ in range(8):  # wrapping a block may move the line into a neighbour
            i = self._heights.find(index)
            base = self._heights.prefix(i)
            lines = self._block_lines(i)
            local = index - base
            if local < 0:
                continue
            if local < self._sep[i]:
                return _BLANK
            if local - self._sep[i] < len(lines):
                return lines[local - self._sep[i]]
        return _BLANK

    def settle(self, budget: float = 0.02) -> bool:
        """Wrap not-yet-wrapped blocks in order for about ``budget`` seconds; True when
        the whole document is wrapped."""
        end = time.perf_counter() + budget
        n = len(self._blocks)
        while self._settled < n:
            self._block_lines(self._settled)
            self._settled += 1
            if not self._settled % 64 and time.perf_counter() > end:
                break
        return self.complete

    def _estimate(self, block: Block) -> int:
        if block.kind == "rule":
            return 1
        if block.kind in _VERBATIM or block.kind == "table":
            return max(1, block.line_end - block.line_start - (2 if block.kind == "code" else 0))
        room = max(8, self.width - 2 * (block.list_depth + block.quote_depth))
        return max(1, -(-(block.end - block.start) * 9 // 10 // room))

    def _block_lines(self, i: int) -> list[Line]:
        lines = self._wrapped.get(i)
        if lines is None:
            self._building = []
            self._block(self._blocks[i])
            lines = self._wrapped[i] = self._building
            self._building = []
            if self._heights.values[i] != self._sep[i] + len(lines):
                self._heights.set(i, self._sep[i] + len(lines))
                self.version += 1
        return lines

    def _block_at(self, offset: int) -> int:
        """The shown block holding ``offset``, or the next one (the last at the end)."""
        i = bisect_right(self._starts, offset) - 1
        if i < 0:
            return 0
        if offset >= self._blocks[i].end and i + 1 < len(self._blocks):
            return i + 1
        return i

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
            self._building.append(Line("\u2500" * min(self.width, 40), (), "rule"))
        elif block.kind in _VERBATIM:
            self._verbatim(block, self._source_lines(block))
        elif block.kind == "table":
            if not self._table(block):
                self._verbatim(block, self._source_lines(block))
        else:
            runs, marker = self._content(block)
            self._flow(runs, *self._prefixes(block, marker), self._style(block))

    def _flow(self, runs: list[tuple[int, int]], first: str, cont: str, style: str) -> None:
        """Word-wrap a flowing block; a line that ends with a hard break (a backslash, as in
        a poem's lines) ends a display line too."""
        text = self.document.text
        group: list[tuple[int, int]] = []
        prefix = first
        for i, (s, e) in enumerate(runs):
            tail = e
            while tail > s and text[tail - 1] == "\\":
                tail -= 1
            if i + 1 < len(runs) and self.document.markdown and (e - tail) % 2 == 1:
                group.append((s, e - 1))  # the backslash is markup
                self._flow_lines(group, prefix, cont, style)
                group, prefix = [], cont
            else:
                group.append((s, e))
        if group:
            self._flow_lines(group, prefix, cont, style)

    def _flow_lines(self, runs: list[tuple[int, int]], first: str, cont: str, style: str) -> None:
        """Join the source lines ``runs`` with spaces, hide inline markup, word-wrap."""
        safe = self.safe
        joined = "\n".join(safe[s:e] for s, e in runs)
        line_of = []  # (joined start, source start) of each source line
        pos = 0
        for s, e in runs:
            line_of.append((pos, s))
            pos += e - s + 1
        # pieces: (logical start, source start, length, mark)
        pieces: list[tuple[int, int, int, str]] = []
        parts: list[str] = []
        logical_len = 0
        line = 0
        labels = self.document.link_labels if self.document.markdown else None
        for a, b, mark in _visible(joined, labels):
            while line + 1 < len(line_of) and line_of[line + 1][0] <= a:
                line += 1
                if parts:
                    parts.append(" ")
                    logical_len += 1
            src = line_of[line][1] + a - line_of[line][0]
            pieces.append((logical_len, src, b - a, mark))
            parts.append(joined[a:b])
            logical_len += b - a
        logical = "".join(parts)
        k = 0
        for n, (a, b) in enumerate(_chunks(logical, self.width - cell_len(first), True)):
            prefix = first if n == 0 else cont
            runs_out, marks_out = [], []
            while k < len(pieces) and pieces[k][0] + pieces[k][2] <= a:
                k += 1
            j = k
            while j < len(pieces) and pieces[j][0] < b:
                at, src, length, mark = pieces[j]
                lo, hi = max(a, at), min(b, at + length)
                if hi > lo:
                    col = len(prefix) + lo - a
                    runs_out.append((col, src + lo - at, hi - lo))
                    if mark:
                        marks_out.append((col, col + hi - lo, mark))
                j += 1
            self._building.append(
                Line(prefix + logical[a:b], tuple(runs_out), style, len(prefix), tuple(marks_out))
            )

    def _verbatim(self, block: Block, lines: list[tuple[int, int]]) -> None:
        """Source lines as they are (fence lines dropped), hard-wrapped."""
        text = self.document.text
        bars = "\u2502 " * block.quote_depth
        if block.kind == "code" and lines and _FENCE.match(text, *lines[0]):
            lines = lines[1:]
            if lines and _FENCE.match(text, *lines[-1]):
                lines = lines[:-1]
        elif block.kind == "code":
            lines = [
                (min(s + len(text[s:e]) - len(text[s:e].lstrip(" ")), s + 4, e), e) if n else (s, e)
                for n, (s, e) in enumerate(lines)
            ]
        for s, e in lines:
            seg = self.safe[s:e]
            for a, b in _chunks(seg, self.width - len(bars), False):
                runs = ((len(bars), s + a, b - a),) if b > a else ()
                self._building.append(Line(bars + seg[a:b], runs, "code", len(bars)))

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
            self._building.append(Line("".join(parts).rstrip(), tuple(runs), "table", len(bars)))
            if n == 0 and len(rows) > 1:
                rule = "\u2500\u253c\u2500".join("\u2500" * w for w in widths)
                self._building.append(Line(bars + rule, (), "table", len(bars)))
        return True

    # -- mapping --------------------------------------------------------------------------

    def _first_line(self, i: int) -> int:
        """Display line of block ``i``'s first line (after its separator)."""
        self._block_lines(i)
        return self._heights.prefix(i) + self._sep[i]

    def offset_to_cell(self, offset: int) -> tuple[int, int]:
        """Display (line, col) of a source offset (hidden markup maps to the next shown char)."""
        if not self._blocks:
            return 0, 0
        i = self._block_at(offset)
        while i < len(self._blocks):
            lines = self._block_lines(i)
            base = self._first_line(i)
            for k, ln in enumerate(lines):
                for col, src, n in ln.runs:
                    if offset < src + n:
                        return base + k, col + max(0, offset - src)
            i += 1
        i = len(self._blocks) - 1
        lines = self._block_lines(i)
        last = self._first_line(i) + max(0, len(lines) - 1)
        mapped = [ln for ln in lines if ln.runs]
        if mapped:
            col, _src, n = mapped[-1].runs[-1]
            return last, col + n
        return last, 0

    def cell_to_offset(self, line: int, col: int) -> int | None:
        """Source offset shown at (line, col), or None for decoration and empty cells."""
        if not 0 <= line < len(self):
            return None
        for c, src, n in self.line(line).runs:
            if c <= col < c + n:
                return src + col - c
        return None

    def nearest_offset(self, line: int, col: int) -> int | None:
        """Like ``cell_to_offset`` but falls back to the nearest shown char on the line."""
        hit = self.cell_to_offset(line, col)
        if hit is not None or not 0 <= line < len(self):
            return hit
        runs = self.line(line).runs
        if not runs:
            return None
        for c, src, _n in runs:
            if col < c:
                return src
        c, src, n = runs[-1]
        return src + n - 1

    def span_cells(self, start: int, end: int) -> dict[int, tuple[int, int]]:
        """Lines showing any of ``[start, end)``, each with the (col_start, col_end) to mark."""
        out: dict[int, tuple[int, int]] = {}
        if end <= start or not self._blocks:
            return out
        i = self._block_at(start)
        while i < len(self._blocks) and self._blocks[i].start < end:
            lines = self._block_lines(i)
            base = self._first_line(i)
            for k, ln in enumerate(lines):
                for col, src, n in ln.runs:
                    lo, hi = max(start, src), min(end, src + n)
                    if hi > lo:
                        a, b = col + lo - src, col + hi - src
                        old = out.get(base + k)
                        out[base + k] = (min(a, old[0]), max(b, old[1])) if old else (a, b)
            i += 1
        return out
