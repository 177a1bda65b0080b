"""The contents of a planned document: a book's table of contents, else its headings.

Each entry is an utterance to read from, a level and a title; the contents screen lists
them and the status bar names the one being read (``chapter_at``).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass

from vvreader.text.plan import SpeechPlan

__all__ = ["ChapterIndex", "ContentsEntry", "chapter_at", "contents"]


@dataclass(frozen=True, slots=True)
class ContentsEntry:
    """One line of the contents."""

    index: int
    """The first utterance of the part."""
    level: int
    """Nesting level, 1 for the top."""
    title: str
    """What the contents call it."""


def contents(plan: SpeechPlan) -> list[ContentsEntry]:
    """A book's table of contents (entries planned so far), else the document's headings."""
    book = plan.document.book
    if book is not None and book.toc:
        starts = [u.start for u in plan]
        out = []
        for entry in book.toc:
            i = bisect_left(starts, entry.offset)
            if i < len(starts):
                out.append(ContentsEntry(i, max(1, entry.level), entry.title))
        return out
    return _headings(plan)


def _headings(plan: SpeechPlan) -> list[ContentsEntry]:
    out = []
    seen: set[int] = set()
    blocks = plan.document.blocks
    for u in plan:
        if u.kind == "heading" and u.block not in seen:
            seen.add(u.block)
            title = " ".join(plan.document.text[u.start : blocks[u.block].end].split())
            level = max(1, blocks[u.block].level)
            out.append(ContentsEntry(u.index, level, title.lstrip("#").strip()))
    return out


def chapter_at(entries: list[ContentsEntry], index: int) -> str:
    """Title of the entry whose part holds utterance ``index`` ("" before the first)."""
    i = bisect_right([e.index for e in entries], index) - 1
    return entries[i].title if i >= 0 else ""


class ChapterIndex:
    """The title of the part being read, for a plan that grows as more of a book is
    planned: the contents are built again only when the plan has grown."""

    def __init__(self) -> None:
        self._planned = -1
        self._entries: list[ContentsEntry] = []

    def at(self, plan: SpeechPlan, index: int) -> str:
        """Title of the part of ``plan`` holding utterance ``index`` ("" before the first)."""
        if self._planned != len(plan):
            self._planned, self._entries = len(plan), contents(plan)
        return chapter_at(self._entries, index)
