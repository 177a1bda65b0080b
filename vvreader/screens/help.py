"""HelpScreen: every key of the reading screen, as currently mapped."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.dom import DOMNode
from textual.keys import format_key
from textual.screen import Screen
from textual.widgets import DataTable, Static

from vvreader.screens.modal import OnceModal

__all__ = ["HelpScreen", "KeyHelp", "key_help"]

KeyHelp = tuple[str, str, str]
"""(keys as shown, description, binding id)."""


def key_help(screen: Screen, nodes: tuple[DOMNode, ...]) -> list[KeyHelp]:
    """Each binding of ``nodes`` active on ``screen``, with the keys it has now, in the
    order the nodes declare them."""
    keys: dict[str, list[str]] = {}
    described: dict[str, str] = {}
    for key, active in screen.active_bindings.items():
        b = active.binding
        if b.id and active.node in nodes:
            keys.setdefault(b.id, []).append(format_key(key))
            described[b.id] = b.description
    order = [
        b.id
        for node in nodes
        for b in getattr(node, "BINDINGS", [])
        if isinstance(b, Binding) and b.id
    ]
    seen: list[str] = []
    for i in order:
        if i in keys and i not in seen:
            seen.append(i)
    return [(", ".join(keys[i]), described[i], i) for i in seen]


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
