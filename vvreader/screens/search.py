"""SearchBar: a one-line prompt for text to find in the document."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Input

from vvreader.screens.modal import OnceModal

__all__ = ["SearchBar", "find"]


def find(haystack_lower: str, query: str, start: int) -> int | None:
    """Offset of the next case-insensitive match at or after ``start``, wrapping around."""
    q = query.lower()
    if not q:
        return None
    i = haystack_lower.find(q, start)
    if i < 0:
        i = haystack_lower.find(q, 0)
    return i if i >= 0 else None


class SearchBar(OnceModal[str | None]):
    """Dismisses with the query, or None when cancelled."""

    DEFAULT_CSS = """
    SearchBar { align: left bottom; background: transparent; }
    SearchBar Input { dock: bottom; width: 100%; border: tall $primary; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="search-cancel"),
    ]

    def __init__(self, last: str = "") -> None:
        super().__init__()
        self.last = last

    def compose(self) -> ComposeResult:
        yield Input(value=self.last, placeholder="Search the document (enter finds, escape "
                    "cancels)", select_on_focus=True)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.close(event.value or None)

    def action_cancel(self) -> None:
        self.close(None)
