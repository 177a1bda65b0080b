"""VoicePicker: the voices with language and gender; the highlighted one previews."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from vvreader.screens.modal import OnceModal
from vvreader.text.unsafe import safe_text

__all__ = ["VoicePicker", "describe_voice"]

_LANGUAGES = {
    "en": "English",
    "in": "English (India)",
    "de": "German",
    "fr": "French",
    "it": "Italian",
    "jp": "Japanese",
    "kr": "Korean",
    "nl": "Dutch",
    "pl": "Polish",
    "pt": "Portuguese",
    "sp": "Spanish",
    "es": "Spanish",
    "zh": "Chinese",
}


def describe_voice(name: str) -> tuple[str, str]:
    """(language, gender) read from a preset name like ``en-Emma_woman``."""
    stem = name.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    lang, _, rest = stem.partition("-")
    language = _LANGUAGES.get(lang.lower(), "") if rest else ""
    gender = ""
    low = stem.lower()
    if low.endswith("_woman") or low.endswith("_female"):
        gender = "female"
    elif low.endswith("_man") or low.endswith("_male"):
        gender = "male"
    return language or "-", gender or "-"


class VoicePicker(OnceModal[str | None]):
    """Choose a voice; ``on_preview`` is called with each highlighted voice.

    Dismisses with the chosen name, or None when cancelled.
    """

    DEFAULT_CSS = """
    VoicePicker { align: center middle; }
    VoicePicker > Vertical {
        width: 64; max-width: 100%; height: auto; max-height: 80%;
        border: round $primary; background: $surface; padding: 0 1;
    }
    VoicePicker Static { color: $foreground-muted; }
    VoicePicker OptionList { height: auto; max-height: 24; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="voice-cancel"),
    ]

    def __init__(
        self,
        voices: list[str],
        current: str,
        on_preview: Callable[[str], None] | None = None,
        missing: set[str] | None = None,
    ) -> None:
        super().__init__()
        self.voices = voices
        self.current = current
        self.on_preview = on_preview
        self.missing = missing or set()
        """Voices downloaded when chosen (marked; highlighting them previews nothing)."""
        self._ready = False

    def compose(self) -> ComposeResult:
        with Vertical():
            hint = (
                "Voice (enter chooses, escape cancels; the highlighted voice reads "
                "the current sentence)"
            )
            if self.missing:
                hint += "; \u2913 voices are downloaded when chosen (a few MB)"
            yield Static(hint, markup=False)
            options = []
            width = max((len(v) for v in self.voices), default=8)
            for name in self.voices:
                language, gender = describe_voice(name)
                label = Text(f"{safe_text(name):<{width}}  ")
                if name in self.missing:
                    label.append(f"{language:<16} {gender:<6} \u2913", style="dim")
                else:
                    label.append(f"{language:<16} {gender}", style="dim")
                options.append(Option(label, id=name))
            yield OptionList(*options)

    def on_mount(self) -> None:
        options = self.query_one(OptionList)
        if self.current in self.voices:
            options.highlighted = self.voices.index(self.current)
        self._ready = True

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        if self._ready and self.on_preview is not None and event.option.id is not None:
            self.on_preview(event.option.id)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.close(event.option.id)

    def action_cancel(self) -> None:
        self.close(None)
