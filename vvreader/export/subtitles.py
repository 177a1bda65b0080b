"""WebVTT subtitles of an export: one cue per utterance, where it is in the audio."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Cue", "vtt_text", "vtt_time"]


@dataclass(frozen=True)
class Cue:
    """Where one utterance sits in an audio file."""

    index: int
    """The utterance's index in the plan."""
    start: float
    """Seconds from the start of the file to its first sample."""
    end: float
    """Seconds to just past its last sample (its pause follows)."""
    text: str
    """What was spoken."""


def vtt_time(seconds: float) -> str:
    """``hh:mm:ss.mmm``."""
    ms = int(round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}.{ms:03d}"


def vtt_text(cues: Sequence[Cue]) -> str:
    """The WebVTT file of ``cues`` (a cue's text never holds ``-->`` nor a blank line,
    which would end it)."""
    lines = ["WEBVTT", ""]
    for n, cue in enumerate(cues, 1):
        text = " ".join(cue.text.replace("-->", "->").split()) or "…"
        lines += [str(n), f"{vtt_time(cue.start)} --> {vtt_time(cue.end)}", text, ""]
    return "\n".join(lines)
