"""Plain text: one paragraph block per run of non-blank lines."""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Sequence

from vvreader.text.document import Block

__all__ = ["TextParts", "text_blocks"]

# Atomic groups: the CR and LF of one CRLF are one line end, not an empty line between two.
_BLANK_LINE = re.compile(r"(?>\r\n|\r|\n)[ \t]*+(?>\r\n|\r|\n)")


def text_blocks(text: str, line_starts: Sequence[int]) -> list[Block]:
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


class TextParts:
    """A plain-text document as a block reader: its blocks come in one step, nothing to
    wait for (no definitions, no footnotes)."""

    footnotes_settled = True
    footnote_labels: frozenset[str] = frozenset()
    link_labels: frozenset[str] = frozenset()

    def __init__(self, text: str, line_starts: Sequence[int]) -> None:
        self.text = text
        self.line_starts = line_starts
        self.blocks: list[Block] = []
        self.footnote_refs: dict[str, int] = {}
        self.done = False

    def step(self) -> bool:
        if self.done:
            return False
        self.blocks = text_blocks(self.text, self.line_starts)
        self.done = True
        return True

    def finish(self) -> None:
        self.step()

    def parse_inline(self, block: Block) -> bool:
        return True

    def footnote_blocks(self, label: str) -> list[Block] | None:
        return []

    def section_at(self, offset: int) -> int | None:
        return None
