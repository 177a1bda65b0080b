"""The one table of unsafe characters: what may not reach a terminal or a voice as it is.

A document is untrusted: it may hold control characters (ESC starts a terminal escape
sequence), characters that reorder or break lines in a terminal (bidi embeddings,
overrides and isolates, the line and paragraph separators) and invisible ones (zero-width
spaces and joiners, direction marks). Each use below picks its classes from this table:

- ``safe_text``: text drawn on screen (the reading view, titles, the status bar).
- ``TERMINAL_UNSAFE``: text printed by the command line (shown as escapes there).
- ``SPEECH_UNSAFE``: text sent to the voice (removed).
- ``TAG_UNSAFE``: text written into an audio file's tags (a tag is one line; they become spaces).
- ``FILE_NAME_UNSAFE``: text made into a file name (replaced).
"""

from __future__ import annotations

import re

__all__ = [
    "FILE_NAME_UNSAFE",
    "SPEECH_UNSAFE",
    "TAG_UNSAFE",
    "TERMINAL_UNSAFE",
    "safe_text",
]

#: C0 and C1 control characters and DEL, without tab and line feed (regex class body).
CONTROLS = "\x00-\x08\x0b-\x1f\x7f-\x9f"
#: Line and paragraph separators: they break a line where a terminal does not expect it.
LINE_SEPARATORS = "\u2028\u2029"
#: Bidi embeddings, overrides and isolates: they reorder what follows them.
BIDI_CONTROLS = "\u202a-\u202e\u2066-\u2069"
#: Zero-width space, non-joiner and joiner, left-to-right and right-to-left marks.
INVISIBLE = "\u200b-\u200f"

#: What must not reach a terminal as it is.
TERMINAL_UNSAFE = re.compile(f"[{CONTROLS}{LINE_SEPARATORS}{BIDI_CONTROLS}]")
#: What the voice is never given (line separators are whitespace to it).
SPEECH_UNSAFE = re.compile(f"[{CONTROLS}{INVISIBLE}{BIDI_CONTROLS}]")
#: What an audio file's tag may not hold: every control character and line break (a player
#: shows a title on one line; bidi controls stay, a right-to-left title needs them).
TAG_UNSAFE = re.compile(f"[\t\n{CONTROLS}{LINE_SEPARATORS}]")
#: What a file name made from a document may not hold: every control character (tab and
#: line feed too), the separators, bidi and invisible characters, and what one of the
#: common file systems forbids or a shell treats specially (path separators, ``:*?"<>|``).
FILE_NAME_UNSAFE = re.compile(
    f'[\t\n{CONTROLS}{LINE_SEPARATORS}{BIDI_CONTROLS}{INVISIBLE}/\\\\:*?"<>|]'
)


def _code_points(*classes: str) -> list[int]:
    """The code points of regex class bodies made of single characters and ``a-b`` ranges."""
    out: list[int] = []
    for body in classes:
        i = 0
        while i < len(body):
            if i + 2 < len(body) and body[i + 1] == "-":
                out.extend(range(ord(body[i]), ord(body[i + 2]) + 1))
                i += 3
            else:
                out.append(ord(body[i]))
                i += 1
    return out


# On screen: tab becomes a space, line feed and every terminal-unsafe character U+FFFD
# (one for one, so that offsets into the text stay valid).
_SCREEN = dict.fromkeys(_code_points("\n", CONTROLS, LINE_SEPARATORS, BIDI_CONTROLS), "\ufffd")
_SCREEN[0x09] = " "


def safe_text(text: str) -> str:
    """``text`` with control, line-separator and bidi characters replaced one for one."""
    return text.translate(_SCREEN)
