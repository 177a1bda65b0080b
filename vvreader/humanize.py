"""Numbers in words for the user: durations, byte counts, a download's progress, an
export's progress."""

from __future__ import annotations

import unicodedata
from typing import Protocol

from engine.api import Transfer
from vvreader.text.unsafe import TERMINAL_UNSAFE

__all__ = [
    "ExportProgress",
    "describe_export",
    "describe_transfer",
    "export_bar",
    "format_duration",
    "format_size",
]


def format_duration(seconds: float) -> str:
    """``1h02m``, ``12m05s`` or ``42s``."""
    s = max(0, round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def format_size(n: float) -> str:
    """``512 B``, ``21.3 MB``, ``2.0 GB`` (powers of 1000)."""
    for unit in ("B", "kB", "MB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def describe_transfer(t: Transfer) -> str:
    """``25% · model.safetensors (2 of 4) · 512.0 MB of 2.0 GB · 21.3 MB/s · 1m18s left``
    (most telling first: a narrow line cuts the end)."""
    parts = []
    if t.total:
        parts.append(f"{100 * (t.fraction or 0):.0f}%")
    head = t.file
    if head and t.files > 1:
        head += f" ({t.index} of {t.files})"
    if head:
        parts.append(head)
    parts.append(format_size(t.done) + (f" of {format_size(t.total)}" if t.total else ""))
    if t.rate:
        parts.append(f"{format_size(t.rate)}/s")
    left = t.seconds_left
    if left is not None and t.done < (t.total or 0):
        parts.append(f"{format_duration(left)} left")
    return " \u00b7 ".join(parts)


class ExportProgress(Protocol):
    """What :func:`describe_export` reads of an export's progress
    (``vvreader.export.Progress``)."""

    @property
    def fraction(self) -> float: ...

    @property
    def speed(self) -> float: ...

    @property
    def seconds_left(self) -> float | None: ...

    audio_seconds: float
    chapter: str
    chapter_number: int
    chapters: int


_SEPARATOR = " \u00b7 "


def _cells(text: str) -> int:
    """Terminal columns of ``text`` (wide East Asian characters take two)."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _cut(text: str, cells: int) -> str:
    """``text`` in at most ``cells`` columns, with an ellipsis where it was cut."""
    if _cells(text) <= cells:
        return text
    out = ""
    for c in text:
        if _cells(out + c) > cells - 1:
            break
        out += c
    return out + "\u2026" if cells > 0 else ""


def _export_parts(p: ExportProgress, title_cells: int | None) -> list[str]:
    title = " ".join(TERMINAL_UNSAFE.sub(" ", p.chapter).split())
    chapter = f"{p.chapter_number}/{p.chapters}"
    if title and title_cells is None:
        chapter += f" {title}"
    elif title and title_cells > 1:
        chapter += f" {_cut(title, title_cells)}"
    parts = [f"{100 * p.fraction:.0f}%", chapter, f"{format_duration(p.audio_seconds)} of audio"]
    if p.speed > 0:
        parts.append(f"{p.speed:.1f}x real time")
    left = p.seconds_left
    if left is not None and p.fraction < 1:
        parts.append(f"{format_duration(left)} left")
    return parts


def describe_export(p: ExportProgress) -> str:
    """``42% · 3/12 The Storm · 1h02m of audio · 2.3x real time · 12m05s left``: done,
    the chapter being written (its number of all and its title), the audio written, its
    pace and the time left at that pace (pace and time left once the engine has made
    audio in this run). Control characters of the title are spaces."""
    return _SEPARATOR.join(_export_parts(p, None))


def export_bar(p: ExportProgress, width: int) -> str:
    """:func:`describe_export` after a bar, in at most ``width`` columns: the chapter's
    title is cut to fit, and the bar is left out on a narrow line."""
    bar_cells = max(10, min(30, width // 6))
    filled = int(bar_cells * min(1.0, max(0.0, p.fraction)))
    bar = "[" + "#" * filled + "-" * (bar_cells - filled) + "] "
    plain = _SEPARATOR.join(_export_parts(p, 0))
    if _cells(bar + plain) > width:
        bar = ""
    room = width - _cells(bar + plain) - 1
    text = _SEPARATOR.join(_export_parts(p, room)) if room > 1 else plain
    return _cut(bar + text, width)
