"""Plain text: one paragraph block per run of non-blank lines; chapter lines are headings.

A block of one line that names a part of a book the way Gutenberg-style texts do
(``CHAPTER IV``, ``Chapter 4.``, ``PART TWO``, ``BOOK I. The Return``) is a heading, and so
is a roman numeral alone between blank lines once the text has both ``I`` and ``II`` that
way. A line inside a paragraph is never one, so a lone "I" in prose stays prose.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import replace

from vvreader.text.document import Block

__all__ = ["TextParts", "chapter_level", "text_blocks"]

# Atomic groups: the CR and LF of one CRLF are one line end, not an empty line between two.
_BLANK_LINE = re.compile(r"(?>\r\n|\r|\n)[ \t]*+(?>\r\n|\r|\n)")


_NUMBER_WORDS = (
    "one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|"
    "fifteen|sixteen|seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|first|second|"
    "third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|last"
)
_PART = re.compile(
    r"(?i:(part|book|volume|act)|(chapter|canto|stave|section|letter|scene))\s+"
    rf"(?i:[ivxlcdm]+|\d{{1,4}}|(?:{_NUMBER_WORDS})(?:[- ](?:{_NUMBER_WORDS}))?)"
    r"(?:\s*[.:\u2014\u2013-].*|\.)?"
)
_NUMERAL = re.compile(r"([IVXLCDM]{1,8})\.?")
_ROMAN = {"I": 1, "V": 5, "X": 10, "L": 50, "C": 100, "D": 500, "M": 1000}


def _roman(numeral: str) -> int:
    total = 0
    for a, b in zip(numeral, [*numeral[1:], ""], strict=True):
        v = _ROMAN[a]
        total += -v if b and _ROMAN[b] > v else v
    return total


def chapter_level(line: str) -> int:
    """1 for a part, book, volume or act line, 2 for a chapter line, 0 for anything else."""
    if len(line) > 80:
        return 0
    m = _PART.fullmatch(line)
    if m is None:
        return 0
    return 1 if m.group(1) else 2


def _headings(text: str, blocks: list[Block]) -> list[Block]:
    """The blocks with chapter lines made headings (levels, sections and heading links)."""
    levels: dict[int, int] = {}
    numerals: dict[int, int] = {}
    for b in blocks:
        if b.line_end - b.line_start != 1:
            continue
        line = text[b.start : b.end]
        if level := chapter_level(line):
            levels[b.index] = level
        elif m := _NUMERAL.fullmatch(line):
            numerals[b.index] = _roman(m.group(1))
    if {1, 2} <= set(numerals.values()):
        for i in numerals:
            levels[i] = 2
    if not levels:
        return blocks
    top = min(levels.values())
    out = []
    section, heading = 0, None
    for b in blocks:
        level = levels.get(b.index, 0)
        if level:
            section, heading = section + 1, b.index
            out.append(
                replace(b, kind="heading", level=level - top + 1, section=section, heading=heading)
            )
        else:
            out.append(replace(b, section=section, heading=heading))
    return out


def text_blocks(text: str, line_starts: Sequence[int]) -> list[Block]:
    """Plain text: one paragraph block per run of non-blank lines, chapter lines headings."""
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
    return _headings(text, blocks)


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
