"""SearchBar: a one-line prompt for text to find in the document."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Input

from vvreader.screens.modal import OnceModal
from vvreader.text.plan import SpeechPlan

__all__ = ["DocumentSearch", "SearchBar", "find"]


def find(haystack_lower: str, query: str, start: int) -> int | None:
    """Offset of the next case-insensitive match at or after ``start``, wrapping around."""
    q = query.lower()
    if not q:
        return None
    i = haystack_lower.find(q, start)
    if i < 0:
        i = haystack_lower.find(q, 0)
    return i if i >= 0 else None


class DocumentSearch:
    """The last query, and the utterance of its next match in a plan's document."""

    def __init__(self) -> None:
        self.query = ""
        self._text: str | None = None
        self._lower = ""

    def next(self, plan: SpeechPlan, start: int) -> int | None:
        """The utterance of the next match at or after offset ``start``, wrapping around."""
        text = plan.document.text
        if text is not self._text:
            self._text, self._lower = text, text.lower()
        hit = find(self._lower, self.query, start)
        if hit is None:
            return None
        u = plan.at_offset(hit)
        if u is None:
            u = next((x for x in plan if x.end > hit), None)
        return None if u is None else u.index

    def from_cursor(self, plan: SpeechPlan, cursor: int, again: bool = False) -> int | None:
        """The utterance of the next match from utterance ``cursor``: from its start for a
        new query, from its end to find the query ``again``."""
        if not len(plan):
            return None if again else self.next(plan, 0)
        utterance = plan[cursor]
        return self.next(plan, utterance.end if again else utterance.start)


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
        yield Input(
            value=self.last,
            placeholder="Search the document (enter finds, escape cancels)",
            select_on_focus=True,
        )

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.close(event.value or None)

    def action_cancel(self) -> None:
        self.close(None)
