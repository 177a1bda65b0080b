"""HelpScreen: every key of the reading screen, as currently mapped."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from vvreader.screens.modal import OnceModal

__all__ = ["HelpScreen", "KeyHelp"]

KeyHelp = tuple[str, str, str]
"""(keys as shown, description, binding id)."""


class HelpScreen(OnceModal[None]):
    """A table of keys; any of escape, q, ? or F1 closes it."""

    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > Vertical {
        width: 84; max-width: 100%; height: auto; max-height: 90%;
        border: round $primary; background: $surface; padding: 0 1;
    }
    HelpScreen Static { color: $foreground-muted; padding: 0 0 1 0; }
    HelpScreen DataTable { height: auto; max-height: 30; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark,f1", "close", "Close", id="help-close"),
    ]

    def __init__(self, keys: list[KeyHelp]) -> None:
        super().__init__()
        self.keys = keys

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(
                "Keys of the reading view. Remap any of them in the [keymap] table of the "
                "config file (binding id = keys); ctrl+p opens the command palette.",
                markup=False,
            )
            table: DataTable[Text] = DataTable(cursor_type="row", zebra_stripes=True)
            table.add_columns("Keys", "Action", "Id")
            for keys, description, binding_id in self.keys:
                table.add_row(Text(keys, style="bold"), Text(description), Text(binding_id))
            yield table

    def action_close(self) -> None:
        self.close(None)
