"""The reading screen's keys: one table, with the tooltips that help and the palette show.

Each binding's id is what the keymap in the settings names, so ids never change.
"""

from __future__ import annotations

from textual.binding import Binding, BindingType

__all__ = ["READING_BINDINGS"]

_PLAY_PAUSE = "Start, pause or resume the narration."
_RESAY = "Synthesise the current sentence again (a new take) and read on."
_SLEEP = "Stop reading after some minutes or at the end of this chapter or section."
_WORDS = "Underline the word being spoken (approximate: spread by syllables)."
_SPEED = "Listening speed, 0.5x to 3.0x in steps of 0.1; the voice's pitch is kept."
_NOTE = (
    "Read the note cited by this sentence (a footnote, or an EPUB book's note), then come "
    "back; again, or b, comes back at once."
)


def _hidden(keys: str, action: str, description: str, id: str, tooltip: str = "") -> Binding:
    """A binding left out of the footer (help and the command palette list it)."""
    return Binding(keys, action, description, id=id, show=False, tooltip=tooltip)


READING_BINDINGS: list[BindingType] = [
    Binding("space", "play_pause", "Play/pause", id="play-pause", tooltip=_PLAY_PAUSE),
    _hidden("l,right", "go('next_sentence')", "Next sentence", "next-sentence"),
    _hidden("h,left", "go('previous_sentence')", "Previous sentence", "previous-sentence"),
    _hidden("right_square_bracket", "go('next_paragraph')", "Next paragraph", "next-paragraph"),
    _hidden(
        "left_square_bracket",
        "go('previous_paragraph')",
        "Previous paragraph",
        "previous-paragraph",
    ),
    _hidden("right_curly_bracket", "go('next_heading')", "Next heading", "next-heading"),
    _hidden("left_curly_bracket", "go('previous_heading')", "Previous heading", "previous-heading"),
    _hidden("enter", "read_from_cursor", "Read from cursor", "read-from-cursor"),
    _hidden("r", "resay", "Say it again", "resay", tooltip=_RESAY),
    Binding("v", "pick_voice", "Voice", id="pick-voice"),
    _hidden("V", "next_voice", "Next voice", "next-voice"),
    _hidden("plus,equals_sign", "cfg(1)", "CFG up", "cfg-up"),
    _hidden("minus", "cfg(-1)", "CFG down", "cfg-down"),
    _hidden("s", "steps(1)", "More diffusion steps", "steps-up"),
    _hidden("S", "steps(-1)", "Fewer diffusion steps", "steps-down"),
    _hidden("greater_than_sign,full_stop", "speed(1)", "Faster", "speed-up", _SPEED),
    _hidden("less_than_sign,comma", "speed(-1)", "Slower", "speed-down", _SPEED),
    _hidden("z", "sleep_timer", "Sleep timer", "sleep-timer", _SLEEP),
    Binding("t", "contents", "Contents", id="contents"),
    _hidden("o", "read_note", "Read the note", "read-note", _NOTE),
    Binding("slash", "search", "Search", id="search"),
    _hidden("n", "search_next", "Next match", "search-next"),
    _hidden("f", "toggle_follow", "Follow on/off", "toggle-follow"),
    _hidden("w", "toggle_word_follow", "Word follow on/off", "word-follow", _WORDS),
    _hidden("b,escape", "back_to_narrator", "Back to the voice", "back-to-narrator"),
    Binding("question_mark,f1", "help", "Help", id="help"),
]
"""The reading screen's bindings, in the order help lists them."""
