"""TableOfContents: the book's contents or the document's headings; choosing one reads from it."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from vvreader.screens.modal import OnceModal
from vvreader.text.chapters import contents
from vvreader.text.plan import SpeechPlan
from vvreader.text.unsafe import safe_text

__all__ = ["TableOfContents"]


class TableOfContents(OnceModal[int | None]):
    """Dismisses with the utterance index of the chosen heading, or None."""

    DEFAULT_CSS = """
    TableOfContents { align: center middle; }
    TableOfContents > Vertical {
        width: 80; max-width: 100%; height: 80%;
        border: round $primary; background: $surface; padding: 0 1;
    }
    TableOfContents Static { color: $foreground-muted; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="contents-cancel"),
    ]

    def __init__(self, plan: SpeechPlan, current: int) -> None:
        super().__init__()
        self.entries = [(e.index, e.level, e.title) for e in contents(plan)]
        self.current = current
        book = plan.document.book
        byline = " by ".join(x for x in (book.title, book.author) if x) if book else ""
        self.heading = f"Contents of {byline}" if byline else "Contents"

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(
                safe_text(self.heading) + " (enter reads from there, escape closes)", markup=False
            )
            if not self.entries:
                yield Static("This document has no headings.", markup=False)
            yield OptionList(
                *(
                    Option(Text("  " * (level - 1) + safe_text(title)), id=str(index))
                    for index, level, title in self.entries
                )
            )

    def on_mount(self) -> None:
        here = [i for i, (index, _, _) in enumerate(self.entries) if index <= self.current]
        if here:
            self.query_one(OptionList).highlighted = here[-1]

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.close(int(event.option.id or 0))

    def action_cancel(self) -> None:
        self.close(None)
