"""What an audiobook file says about itself: chapters and tags, and their text forms.

Titles and authors come from the document, which is untrusted: every string that goes into a
file's tags passes ``tag_text`` (one line, no control characters), and the metadata file that
FFmpeg reads escapes its special characters, so a title can neither add a key nor end a
section. Chapter times are whole milliseconds that tile the audio exactly, whatever rounding
the caller's seconds carry.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from vvreader.text.unsafe import TAG_UNSAFE

TAG_MAX_CHARS = 1000
"""A tag longer than this (a heading that is a paragraph) is cut, with an ellipsis."""


@dataclass(frozen=True)
class Chapter:
    """A stretch of the audio a player can jump to."""

    title: str
    start: float
    """Seconds from the start of the file."""
    end: float
    """Seconds; chapters tile the audio: each end is the next start, the last end the duration."""


@dataclass(frozen=True)
class BookTags:
    """What the file says about the book."""

    title: str = ""
    author: str = ""
    language: str = ""
    """BCP 47, as in the EPUB ("en", "en-GB")."""
    cover: bytes | None = None
    """The cover image's bytes (JPEG or PNG)."""
    cover_type: str = ""
    """Its media type, "image/jpeg" or "image/png"."""
    album: str = ""
    """The book, when the file is one of its chapters (empty: the file is the book, and
    its title is the album's)."""
    track: int = 0
    """The file's number among the book's files, from 1 (0: none)."""
    tracks: int = 0
    """How many files the book is (0: not said)."""


@dataclass(frozen=True)
class ChapterMark:
    """A chapter in whole milliseconds, as the file stores it."""

    title: str
    start_ms: int
    end_ms: int


def tag_text(text: str) -> str:
    """``text`` as one line fit for a tag: control characters and line breaks become spaces,
    runs of spaces one, and a very long text is cut."""
    line = re.sub(r"\s+", " ", TAG_UNSAFE.sub(" ", text)).strip()
    if len(line) > TAG_MAX_CHARS:
        line = line[: TAG_MAX_CHARS - 1].rstrip() + "…"
    return line


def chapter_marks(chapters: Sequence[Chapter], duration_ms: int) -> list[ChapterMark]:
    """The chapters in milliseconds, tiling ``[0, duration_ms]``: the first starts at 0, each
    ends where the next starts, the last at the duration. Starts are kept in order and inside
    the audio (a start past the end becomes the end), so the marks tile whatever the seconds
    said; a chapter without a title is called by its number."""
    if not chapters:
        return []
    starts: list[int] = []
    for chapter in chapters:
        ms = min(max(int(round(chapter.start * 1000)), 0), duration_ms)
        starts.append(max(ms, starts[-1]) if starts else 0)
    ends = starts[1:] + [duration_ms]
    return [
        ChapterMark(tag_text(c.title) or f"Chapter {n}", start, end)
        for n, (c, start, end) in enumerate(zip(chapters, starts, ends, strict=True), 1)
    ]


def vorbis_time(ms: int) -> str:
    """``HH:MM:SS.mmm``, the time form of Vorbis chapter comments."""
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}.{ms:03d}"


def vorbis_chapter_comments(marks: Sequence[ChapterMark]) -> dict[str, str]:
    """Chapters as Vorbis comments (the chapter extension): ``CHAPTER001=00:00:00.000`` and
    ``CHAPTER001NAME=title``, numbered from 1."""
    comments: dict[str, str] = {}
    for n, mark in enumerate(marks, 1):
        comments[f"CHAPTER{n:03d}"] = vorbis_time(mark.start_ms)
        comments[f"CHAPTER{n:03d}NAME"] = mark.title
    return comments


_FFMETADATA_SPECIAL = re.compile(r"([=;#\\\n])")


def ffmetadata_escape(text: str) -> str:
    """``text`` with FFmpeg's metadata-file specials (``= ; # \\`` and line feed) escaped.

    A text ending in a backslash gets a space after it: FFmpeg's reader takes an escaped
    backslash at the end of a line for an escaped line break, and would join the next line
    (the next key) to this value."""
    escaped = _FFMETADATA_SPECIAL.sub(r"\\\1", text)
    return escaped + " " if text.endswith("\\") else escaped


def ffmetadata(tags: dict[str, str], marks: Sequence[ChapterMark] = ()) -> str:
    """An FFmpeg metadata file (``-f ffmetadata``) holding ``tags`` and the chapters."""
    lines = [";FFMETADATA1"]
    lines += [f"{ffmetadata_escape(k)}={ffmetadata_escape(v)}" for k, v in tags.items() if v]
    for mark in marks:
        lines += [
            "[CHAPTER]",
            "TIMEBASE=1/1000",
            f"START={mark.start_ms}",
            f"END={mark.end_ms}",
            f"title={ffmetadata_escape(mark.title)}",
        ]
    return "\n".join(lines) + "\n"
