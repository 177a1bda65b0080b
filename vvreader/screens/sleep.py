"""SleepPicker: when the sleep timer stops the reading."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from vvreader.narration.sleep_timer import FADE, MINUTES
from vvreader.screens.modal import OnceModal

__all__ = ["SleepPicker"]


class SleepPicker(OnceModal[str | None]):
    """Dismisses with ``"off"``, ``"chapter"``, ``"section"`` or a number of minutes (as
    text), or None when cancelled."""

    DEFAULT_CSS = """
    SleepPicker { align: center middle; }
    SleepPicker > Vertical {
        width: 44; height: auto; max-height: 80%;
        border: round $primary; background: $surface; padding: 0 1;
    }
    SleepPicker Static { color: $foreground-muted; }
    SleepPicker OptionList { height: auto; max-height: 16; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="sleep-cancel"),
    ]

    def __init__(self, active: bool) -> None:
        super().__init__()
        self.active = active

    def compose(self) -> ComposeResult:
        options = [Option(f"after {m} minutes", id=str(m)) for m in MINUTES]
        options += [
            Option("at the end of this section", id="section"),
            Option("at the end of this chapter", id="chapter"),
        ]
        if self.active:
            options.insert(0, Option("off (keep reading)", id="off"))
        with Vertical():
            yield Static(f"Sleep timer: stop reading (fading over {FADE:g} s)", markup=False)
            yield OptionList(*options)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.close(event.option.id)

    def action_cancel(self) -> None:
        self.close(None)
