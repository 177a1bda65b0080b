"""The one table of unsafe characters, as each use applies it."""

from __future__ import annotations

from vvreader.cli import escape_terminal
from vvreader.text.normalize import normalize, strip_controls
from vvreader.text.unsafe import SPEECH_UNSAFE, TERMINAL_UNSAFE, safe_text

TEXT = "a\tb\nc\x1b[31md\x07e\u202ef\u2066g\u2028h\u200bi\x85j\x7fk"


def test_screen_text_keeps_every_offset_and_shows_nothing_unsafe() -> None:
    shown = safe_text(TEXT)
    assert len(shown) == len(TEXT)
    assert shown == "a b\ufffdc\ufffd[31md\ufffde\ufffdf\ufffdg\ufffdh\u200bi\ufffdj\ufffdk"
    assert TERMINAL_UNSAFE.search(shown) is None


def test_the_command_line_escapes_what_the_terminal_would_act_on() -> None:
    assert escape_terminal(TEXT) == (
        "a\tb\nc\\x1b[31md\\x07e\\u202ef\\u2066g\\u2028h\u200bi\\x85j\\x7fk"
    )


def test_the_voice_gets_no_control_bidi_or_invisible_character() -> None:
    assert strip_controls(TEXT) == "a\tb\ncde" + "fg\u2028hijk"
    assert SPEECH_UNSAFE.search(normalize(TEXT)) is None
    assert normalize("x\u2028y") == "x y"  # a line separator is a space to the voice
