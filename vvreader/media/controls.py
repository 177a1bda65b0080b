"""What every platform's media controls share: the commands they send, what they show, and
the choice of one for this platform."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Protocol

from vvreader.text.plan import SpeechPlan


class MediaCommand(str, Enum):
    """A media button, as the reader understands it."""

    PLAY = "play"
    PAUSE = "pause"
    PLAY_PAUSE = "play_pause"
    STOP = "stop"
    NEXT = "next"
    PREVIOUS = "previous"


@dataclass(frozen=True)
class NowPlaying:
    """What the controls show."""

    status: str
    """"Playing", "Paused" or "Stopped" (MPRIS's words)."""
    title: str
    """The chapter or section being read, else the document."""
    album: str = ""
    """The document."""
    artist: str = ""
    """The author, where known."""
    track: int = 0
    """The section (changes when the title does)."""
    rate: float = 1.0
    """Listening speed."""


def playback_status(status: str) -> str:
    """The narrator's status word as MPRIS's PlaybackStatus."""
    if status in ("playing", "buffering"):
        return "Playing"
    if status == "paused":
        return "Paused"
    return "Stopped"


class MediaControls(Protocol):
    """A platform's media controls, run in the app's event loop."""

    async def start(self) -> bool:
        """Appear to the platform; False (silently) where it cannot."""
        ...

    def show(self, now: NowPlaying) -> None:
        """What is read and whether it plays (cheap when nothing changed)."""
        ...

    async def stop(self) -> None: ...


CommandHandler = Callable[[MediaCommand], None]


class NoControls:
    """Media controls where the platform has none."""

    async def start(self) -> bool:
        return False

    def show(self, now: NowPlaying) -> None:
        pass

    async def stop(self) -> None:
        pass


def now_playing(plan: SpeechPlan, position: int, status: str, rate: float) -> NowPlaying:
    """What to show for utterance ``position`` of ``plan``: the title of its section (the
    document's name before the first heading), the document, and its author if known."""
    doc = plan.document
    name = getattr(doc, "title", "") or Path(doc.name).stem or doc.name
    title, section = name, 0
    if len(plan):
        u = plan[max(0, min(position, len(plan) - 1))]
        section = u.section
        if u.heading is not None:
            block = doc.blocks[u.heading]
            title = " ".join(doc.text[block.start : block.end].split()).lstrip("#").strip()
    artist = getattr(doc, "author", "") or ""
    return NowPlaying(playback_status(status), title or name, name, artist, section, rate)
