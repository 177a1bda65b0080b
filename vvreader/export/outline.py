"""What an export holds: the utterances read, the chapters they fall into and the book's
tags.

The utterances are those of ``first..last`` that are read in turn (a book's notes are read
only when asked for from the text, so an export leaves them out). The chapters come from
the contents (``vvreader.text.chapters``: a book's table of contents, else the headings),
their top two levels (parts and chapters, or a title and its chapters; deeper sections
would make an audiobook's chapter list a table of paragraphs). A chapter starts at the
first utterance read of its part; parts that start at the same utterance (a part and its
first chapter), or where the first says nothing but its heading, are one chapter, their
titles joined. The first chapter starts with the first utterance: the part before the
first entry of the contents (a title page, a preface without a heading) is a chapter
called "Opening", and an export from the middle of a part starts with that part's title.
A document without contents is one chapter, named by its title.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from vvreader.export.formats import BookTags
from vvreader.text.chapters import ContentsEntry, contents
from vvreader.text.plan import SpeechPlan, Utterance

__all__ = ["OPENING", "Outline", "Part", "outline"]

OPENING = "Opening"
"""The title of what comes before a document's first heading."""

_LEVELS = 2
"""How many levels of the contents become chapters."""


@dataclass(frozen=True)
class Part:
    """One chapter of an export, in utterances."""

    title: str
    first: int
    """Position in ``Outline.utterances`` of its first utterance."""


@dataclass(frozen=True)
class Outline:
    """The utterances of an export, its chapters and tags."""

    utterances: tuple[Utterance, ...]
    """In reading order; notes left out."""
    parts: tuple[Part, ...]
    """Chapters in order: the first starts at 0, each later one after the one before
    (none when there is no utterance)."""
    tags: BookTags

    @cached_property
    def _starts(self) -> list[int]:
        return [p.first for p in self.parts]

    def part_of(self, position: int) -> int:
        """Which part holds utterance ``position`` (0-based)."""
        return max(0, bisect_right(self._starts, position) - 1)

    def span(self, part: int) -> range:
        """The positions of part ``part``'s utterances."""
        end = self.parts[part + 1].first if part + 1 < len(self.parts) else len(self.utterances)
        return range(self.parts[part].first, end)


def book_tags(plan: SpeechPlan, name: str) -> BookTags:
    """The book's title, author, language and cover; the title is ``name``'s stem (a
    file name) when the document gives none."""
    book = plan.document.book
    fallback = Path(name).stem if name not in ("", "-", "<stdin>", "<text>") else ""
    if book is None:
        return BookTags(title=fallback)
    return BookTags(
        title=" ".join(book.title.split()) or fallback,
        author=" ".join(book.author.split()),
        language=book.language.strip(),
        cover=book.cover,
        cover_type=book.cover_type if book.cover is not None else "",
    )


def outline(plan: SpeechPlan, first: int = 0, last: int | None = None, name: str = "") -> Outline:
    """The outline of utterances ``first..last`` (inclusive, clamped to the plan) of
    ``plan``; ``name`` (the document's file name) titles a book that has no title."""
    last = len(plan) - 1 if last is None else min(last, len(plan) - 1)
    chosen = tuple(plan[i] for i in range(max(0, first), last + 1) if not plan[i].note)
    tags = book_tags(plan, name or plan.document.name)
    if not chosen:
        return Outline(chosen, (), tags)
    return Outline(chosen, _parts(contents(plan), chosen, tags.title), tags)


def _parts(
    entries: list[ContentsEntry], chosen: tuple[Utterance, ...], title: str
) -> tuple[Part, ...]:
    if entries:
        top = min(e.level for e in entries)
        entries = [e for e in entries if e.level < top + _LEVELS]
    indices = [u.index for u in chosen]
    # The first chapter: the entries in effect at the first utterance read.
    head = [e for e in entries if e.index <= indices[0]]
    if head:
        at = max(e.index for e in head)
        groups = {0: [e.title for e in head if e.index == at]}
    else:
        groups = {0: [OPENING if entries else title or OPENING]}
    for e in entries:
        if e.index > indices[0]:
            position = bisect_left(indices, e.index)
            if position < len(indices):
                groups.setdefault(position, []).append(e.title)
    # A part that says nothing but its heading (a part's title page) and the chapter after
    # it are one chapter.
    merged: list[tuple[int, list[str]]] = []
    for at in sorted(groups):
        if merged and _only_headings(chosen, merged[-1][0], at):
            merged[-1][1].extend(groups[at])
        else:
            merged.append((at, list(groups[at])))
    return tuple(Part(_joined(titles), at) for at, titles in merged)


def _only_headings(chosen: tuple[Utterance, ...], start: int, end: int) -> bool:
    return all(u.kind == "heading" for u in chosen[start:end])


def _joined(titles: list[str]) -> str:
    """Titles of parts that start together, each once, as one title."""
    kept: list[str] = []
    for t in titles:
        if t and t not in kept:
            kept.append(t)
    return ": ".join(kept) or OPENING
