"""StatusBar: playback state, voice, synthesis settings, position and look-ahead."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from vvreader.humanize import format_duration
from vvreader.narration.commands import VoiceSettings
from vvreader.narration.narrator import Progress
from vvreader.text.unsafe import safe_text

__all__ = ["CHAPTER_CELLS", "StatusBar"]

#: Widest the chapter title gets in the status bar (longer ones end with an ellipsis).
CHAPTER_CELLS = 24


def _shorten(text: str, cells: int) -> str:
    return text if len(text) <= cells else text[: cells - 1].rstrip() + "\u2026"


def sleep_text(left: float | None, unit: str) -> str:
    """The sleep timer as shown: ``12:30``, ``end of chapter`` or ``end of chapter 0:42``
    (the time once it is known), "" when off."""
    if unit:
        return f"end of {unit}" + (f" {_clock(left)}" if left is not None else "")
    return _clock(left) if left is not None else ""


def _clock(seconds: float) -> str:
    """``m:ss``, or ``h:mm:ss`` from an hour, rounded up (0:00 only at the stop)."""
    s = int(seconds + 0.999)
    if s >= 3600:
        return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
    return f"{s // 60}:{s % 60:02d}"


class StatusBar(Widget):
    """One line: ``state [listening speed] │ voice │ CFG │ steps │ i/N p% left │ ahead │
    synthesis speed``, with the chapter after the position when the document has one."""

    DEFAULT_CSS = """
    StatusBar {
        height: 1;
        background: $panel;
        color: $foreground;
        padding: 0 1;
    }
    StatusBar > .status-bar--state { text-style: bold; color: $accent; }
    """
    COMPONENT_CLASSES = {"status-bar--state"}

    state: reactive[str] = reactive("loading")
    """loading, buffering, playing, paused, stopped, finished or an error word."""
    voice: reactive[str] = reactive("")
    """Name of the voice."""
    cfg: reactive[float] = reactive(1.5)
    """Classifier-free guidance scale."""
    steps: reactive[int] = reactive(5)
    """Diffusion steps."""
    position: reactive[int] = reactive(0)
    """Index of the audible (or selected) utterance."""
    total: reactive[int] = reactive(0)
    """Number of utterances."""
    left: reactive[float | None] = reactive[float | None](None)
    """Listening time to the end at the current pace (None until measured)."""
    ahead: reactive[float] = reactive(0.0)
    """Seconds of audio ready ahead of the voice."""
    speed: reactive[float | None] = reactive[float | None](None)
    """Synthesis speed in x real time (None until measured)."""
    listening_speed: reactive[float] = reactive(1.0)
    """How fast the voice is played (shown when not 1)."""
    sleep: reactive[str] = reactive("")
    """The sleep timer: time left, or where it stops ("" when off)."""
    chapter: reactive[str] = reactive("")
    """Title of the chapter (contents entry) being read; empty when there is none."""

    def show_settings(self, settings: VoiceSettings) -> None:
        """The voice, CFG scale and steps read with."""
        self.voice, self.cfg, self.steps = settings.voice, settings.cfg_scale, settings.steps

    def show_progress(self, progress: Progress) -> None:
        """Where reading stands, how much audio is ready and how fast it is made."""
        self.state, self.position, self.left = progress.status, progress.position, progress.left
        self.ahead, self.speed = progress.ahead, progress.speed
        self.listening_speed = progress.listening_speed
        self.sleep = sleep_text(progress.sleep_left, progress.sleep_unit)

    def position_text(self) -> str:
        """``i/N p%`` with ``i`` counted from 1."""
        if self.total <= 0:
            return "0/0"
        i = min(self.position + 1, self.total)
        return f"{i}/{self.total} {100 * i // self.total}%"

    def render(self) -> Text:
        parts = [
            f"voice {safe_text(self.voice) or '-'}",
            f"CFG {self.cfg:.1f}",
            f"steps {self.steps}",
            self.position_text()
            + (f" {format_duration(self.left)} left" if self.left is not None else ""),
            f"ahead {self.ahead:.1f}s",
            f"{self.speed:.2f}x" if self.speed is not None else "-x",
        ]
        if self.chapter:
            # After the position (where in the book), before the engine's numbers.
            parts.insert(4, _shorten(safe_text(self.chapter), CHAPTER_CELLS))
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(self.state, self.get_component_rich_style("status-bar--state"))
        if self.listening_speed != 1.0:
            text.append(f" {self.listening_speed:g}\u00d7")
        if self.sleep:
            text.append(f" \u263e {self.sleep}")
        text.append(" \u2502 " + " \u2502 ".join(parts))
        return text
