"""TableOfContents: the document's headings; choosing one reads from it."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from vvreader.screens.modal import OnceModal
from vvreader.text.plan import SpeechPlan
from vvreader.text.unsafe import safe_text

__all__ = ["TableOfContents", "headings"]


def headings(plan: SpeechPlan) -> list[tuple[int, int, str]]:
    """(utterance index, level, title) of each heading's first utterance."""
    out = []
    seen: set[int] = set()
    blocks = plan.document.blocks
    for u in plan:
        if u.kind == "heading" and u.block not in seen:
            seen.add(u.block)
            title = " ".join(plan.document.text[u.start : blocks[u.block].end].split())
            out.append((u.index, max(1, blocks[u.block].level), title.lstrip("#").strip()))
    return out


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
        self.entries = headings(plan)
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static("Contents (enter reads from the heading, escape closes)", markup=False)
            if not self.entries:
                yield Static("This document has no headings.", markup=False)
            yield OptionList(*(
                Option(Text("  " * (level - 1) + safe_text(title)), id=str(index))
                for index, level, title in self.entries
            ))

    def on_mount(self) -> None:
        here = [i for i, (index, _, _) in enumerate(self.entries) if index <= self.current]
        if here:
            self.query_one(OptionList).highlighted = here[-1]

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.close(int(event.option.id or 0))

    def action_cancel(self) -> None:
        self.close(None)
