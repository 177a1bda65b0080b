"""Names of the files an export writes: chapter files, the work folder, the file being
written.

A chapter's title comes from the document, which is untrusted: its file name keeps no
path separator, control, bidi or invisible character (``vvreader.text.unsafe``), no
leading or trailing dot or space, and at most :data:`MAX_NAME_BYTES` bytes of UTF-8, so it
is always one plain name inside the folder it is written to.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path

from vvreader.text.unsafe import FILE_NAME_UNSAFE

__all__ = [
    "MAX_NAME_BYTES",
    "chapter_file_name",
    "chapters_folder",
    "partial_path",
    "safe_name",
    "work_folder",
]

MAX_NAME_BYTES = 120
"""The longest chapter file name, in bytes of UTF-8 (file systems allow 255)."""


def safe_name(text: str, limit: int) -> str:
    """``text`` as one file-name component of at most ``limit`` bytes of UTF-8 ("" when
    nothing of it is left)."""
    text = unicodedata.normalize("NFC", text)
    text = " ".join(FILE_NAME_UNSAFE.sub(" ", text).split())
    text = text.strip(" .")
    while len(text.encode("utf-8")) > limit:
        text = text[:-1].rstrip(" .")
    return text


def chapter_file_name(number: int, count: int, title: str, suffix: str) -> str:
    """``01 - Title.m4b``: the chapter's number (as many digits as ``count`` needs, at least
    two, so that names sort in order) and its title made safe."""
    digits = max(2, len(str(count)))
    head = f"{number:0{digits}d}"
    room = MAX_NAME_BYTES - len(head.encode()) - len(b" - ") - len(suffix.encode())
    title = safe_name(title, max(0, room))
    return f"{head} - {title}{suffix}" if title else f"{head}{suffix}"


def chapters_folder(out: Path) -> Path:
    """Where ``--split-chapters`` writes: ``OUT`` without its extension."""
    return out.with_suffix("")


def work_folder(out: Path) -> Path:
    """The work folder of an export to ``out``: ``.OUT.vvreader-export`` beside it."""
    return out.with_name(f".{out.name}.vvreader-export")


def partial_path(folder: Path, name: str) -> Path:
    """Where the file ``name`` is written before it is complete: in the work folder, with
    its extension (which names the format to the encoder), so that a file at the output
    path is always complete."""
    return folder / f"partial-{name}"
