"""LoadingBanner: one line over the document saying what is being loaded or downloaded.

While the model loads it shows the stage ("finding the model", "downloading …", "loading
the weights", "warming up") with a bar for downloads and the seconds spent; once reading,
it shows a voice download in progress, and is hidden the rest of the time.
"""

from __future__ import annotations

import time

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from vvreader.text.unsafe import safe_text

__all__ = ["LoadingBanner", "progress_bar"]

BAR_CELLS = 16


def progress_bar(fraction: float, cells: int = BAR_CELLS) -> str:
    """``████████▌···········`` for ``fraction`` (0 to 1), with eighths of a cell."""
    fraction = min(1.0, max(0.0, fraction))
    eighths = round(fraction * cells * 8)
    full, part = divmod(eighths, 8)
    bar = "\u2588" * full
    if part and full < cells:
        bar += " \u258f\u258e\u258d\u258c\u258b\u258a\u2589"[part]
    return bar + "\u00b7" * (cells - len(bar))


class LoadingBanner(Widget):
    """``what… detail  12 s  [bar]`` (hidden while ``what`` is empty)."""

    DEFAULT_CSS = """
    LoadingBanner {
        dock: top; width: 100%; height: 1; padding: 0 1;
        background: $boost; color: $text-muted;
    }
    LoadingBanner.-hidden { display: none; }
    LoadingBanner > .loading-banner--bar { color: $accent; }
    """
    COMPONENT_CLASSES = {"loading-banner--bar"}

    what: reactive[str] = reactive("", layout=False)
    """The stage ("" hides the banner)."""
    detail: reactive[str] = reactive("")
    """More about it: a download's file, bytes, rate and time left."""
    fraction: reactive[float | None] = reactive[float | None](None)
    """How much of a download is done (None: no bar)."""
    elapsed: reactive[int] = reactive(0)
    """Whole seconds since the stage began (shown from 2 s on)."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._since = time.monotonic()

    def on_mount(self) -> None:
        self.set_class(not self.what, "-hidden")
        self.set_interval(0.5, self._count)

    def show(self, what: str, detail: str = "", fraction: float | None = None) -> None:
        """Show a stage (a new ``what`` restarts the seconds); ``""`` hides the banner."""
        if what != self.what:
            self._since = time.monotonic()
            self.elapsed = 0
        self.what = what
        self.detail = detail
        self.fraction = fraction

    def watch_what(self, what: str) -> None:
        self.set_class(not what, "-hidden")

    def _count(self) -> None:
        if self.what:
            self.elapsed = int(time.monotonic() - self._since)

    def render(self) -> Text:
        # What matters most first: a narrow terminal cuts the end of the line.
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(f"{safe_text(self.what)}\u2026")
        if self.detail:
            text.append(f" {safe_text(self.detail)}")
        if self.elapsed >= 2:
            text.append(f"  {self.elapsed} s")
        if self.fraction is not None:
            text.append("  ")
            text.append(
                progress_bar(self.fraction), self.get_component_rich_style("loading-banner--bar")
            )
        return text
