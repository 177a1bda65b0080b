"""The audio file formats an export writes, picked by the output's extension.

M4B/M4A (AAC in MP4), MP3, Opus, Ogg Vorbis and FLAC are written by the ``ffmpeg`` program
(``export.ffmpeg``): chapters, tags and the cover included. WAV is written by libsndfile
(``export.sndfile``), with its tags; where ffmpeg is missing libsndfile also writes FLAC, Ogg
Vorbis, Opus and MP3, without chapters, tags or cover, and ``check_ready`` says so in one line
before the export starts. M4B and M4A need ffmpeg.

An encoder receives float32 mono audio at the engine's sample rate in order, from one
thread, and streams it into the file: nothing holds the book in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

import vvreader.export.ffmpeg as ffmpeg
import vvreader.export.sndfile as sndfile
from vvreader.export.errors import ExportError
from vvreader.export.metadata import BookTags, Chapter

__all__ = [
    "AudioFormat",
    "BookTags",
    "Chapter",
    "Encoder",
    "FORMATS",
    "check_ready",
    "format_for",
    "open_encoder",
]


@dataclass(frozen=True)
class AudioFormat:
    name: str
    """"m4b", "m4a", "mp3", "opus", "ogg", "flac" or "wav"."""
    suffix: str
    """The extension that picks it, with its dot."""
    needs_ffmpeg: bool
    """No file at all without ffmpeg (the others fall back to libsndfile, or need no ffmpeg)."""


FORMATS: dict[str, AudioFormat] = {
    f.suffix: f
    for f in (
        AudioFormat("m4b", ".m4b", True),
        AudioFormat("m4a", ".m4a", True),
        AudioFormat("mp3", ".mp3", False),
        AudioFormat("opus", ".opus", False),
        AudioFormat("ogg", ".ogg", False),
        AudioFormat("flac", ".flac", False),
        AudioFormat("wav", ".wav", False),
    )
}


class Encoder(Protocol):
    def write(self, audio: np.ndarray) -> None:
        """Append float32 mono samples at ``engine.api.SAMPLE_RATE``."""

    def finish(self, chapters: Sequence[Chapter], tags: BookTags) -> None:
        """Complete the file at the path given to ``open_encoder``."""

    def abort(self) -> None:
        """Stop, and remove everything written (temporary files included)."""


def format_for(path: Path) -> AudioFormat:
    """The format that ``path``'s extension picks.

    Raises:
        ExportError: the extension is none of ``FORMATS``.
    """
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        known = ", ".join(FORMATS)
        raise ExportError(f"{Path(path).name}: the extension picks the format; use one of {known}")
    return fmt


def _ffmpeg_for(fmt: AudioFormat) -> str | None:
    """The ffmpeg program that writes ``fmt`` (None: none here, or WAV, which libsndfile
    writes with its tags)."""
    executable = ffmpeg.find_ffmpeg()
    if fmt.name not in ffmpeg.RECIPES or executable is None:
        return None
    return executable if ffmpeg.RECIPES[fmt.name].encoder in ffmpeg.encoders(executable) else None


def check_ready(fmt: AudioFormat) -> str | None:
    """Whether ``fmt`` can be written here; call it before the synthesis starts.

    Returns:
        None when the file will be complete, else one line for the user saying what it will
        lack and how to get it (FLAC, Ogg, Opus and MP3 without ffmpeg).

    Raises:
        ExportError: the format cannot be written on this machine (the line says what to
            install).
    """
    if fmt.name == "wav":
        if not sndfile.can_write("wav"):
            raise ExportError(
                f"writing {fmt.suffix} files needs libsndfile: {sndfile.INSTALL_HINT}"
            )
        return None
    if _ffmpeg_for(fmt) is not None:
        return None
    executable = ffmpeg.find_ffmpeg()
    if executable is None:
        missing = "ffmpeg was not found"
    elif not ffmpeg.encoders(executable):
        missing = f"{executable} does not run"
    else:
        missing = f"this ffmpeg has no {ffmpeg.RECIPES[fmt.name].encoder} encoder"
    if not fmt.needs_ffmpeg and sndfile.can_write(fmt.name):
        return (
            f"{missing}, so the {fmt.suffix} file will have no chapters, tags or cover; "
            f"to have them, {ffmpeg.INSTALL_HINT}"
        )
    raise ExportError(
        f"writing {fmt.suffix} files needs ffmpeg, but {missing}: {ffmpeg.INSTALL_HINT}"
    )


def open_encoder(fmt: AudioFormat, path: Path) -> Encoder:
    """An encoder that writes exactly ``path`` (the caller renames it when ``finish`` returns).

    Raises:
        ExportError: the folder cannot be written, or the format not here (see ``check_ready``).
    """
    executable = _ffmpeg_for(fmt)
    if executable is not None:
        return ffmpeg.FfmpegEncoder(executable, fmt.name, Path(path))
    if not fmt.needs_ffmpeg and sndfile.can_write(fmt.name):
        return sndfile.SoundfileEncoder(fmt.name, Path(path))
    check_ready(fmt)  # raises, saying what to install
    raise ExportError(f"cannot write {fmt.suffix} files here")
