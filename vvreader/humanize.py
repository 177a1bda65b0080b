"""Numbers in words for the user: durations, byte counts, a download's progress."""

from __future__ import annotations

from engine.api import Transfer

__all__ = ["format_duration", "format_size", "describe_transfer"]


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
