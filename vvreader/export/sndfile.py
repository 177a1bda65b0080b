"""Audio files written by libsndfile (through soundfile): WAV always, and FLAC, Ogg Vorbis,
Opus and MP3 where ffmpeg is missing.

libsndfile encodes in-process as the audio arrives, file headers first: a WAV's tags
(``LIST/INFO``) go at its end and are written by ``finish``, but the other formats' tags would
have to precede the audio, and libsndfile writes no chapters, so those files carry the audio
alone (``formats.check_ready`` says so before the export starts).
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from engine.api import SAMPLE_RATE
from vvreader.export.errors import ExportError
from vvreader.export.files import create, remove
from vvreader.export.metadata import BookTags, Chapter, tag_text
from vvreader.export.pcm import to_pcm16
from vvreader.humanize import format_duration

# format name -> libsndfile's major format, subtype, compression level (0 best .. 1 smallest)
# and bitrate mode. Speech rates, as ffmpeg's: MP3 at a constant 64 kb/s, Opus about 32 kb/s,
# Vorbis about 45 kb/s, mono at 24 kHz.
SNDFILE_FORMATS: dict[str, tuple[str, str, float | None, str | None]] = {
    "wav": ("WAV", "PCM_16", None, None),
    "flac": ("FLAC", "PCM_16", None, None),
    "ogg": ("OGG", "VORBIS", 0.7, None),
    "opus": ("OGG", "OPUS", 0.9, None),
    "mp3": ("MP3", "MPEG_LAYER_III", 0.6, "CONSTANT"),
}

WAV_MAX_FRAMES = (2**32 - 2**20) // 2
"""A WAV's sizes are 32-bit: 16-bit samples up to 4 GiB, less room for the header and tags
(24h50m at 24 kHz)."""

INSTALL_HINT = "install soundfile with `pip install soundfile`"


def can_write(name: str) -> bool:
    """Whether libsndfile, as installed, writes format ``name``."""
    if name not in SNDFILE_FORMATS:
        return False
    try:
        import soundfile
    except (ImportError, OSError):  # OSError: the package without its library
        return False
    major, subtype, _, _ = SNDFILE_FORMATS[name]
    return soundfile.check_format(major, subtype)


def _why(path: Path, error: Exception) -> str:
    """A failed write in one line: libsndfile says only "System error", so a full disk is
    recognised by the space left on it."""
    try:
        full = shutil.disk_usage(path.parent).free < (1 << 20)
    except OSError:
        full = False
    if full:
        return f"{path}: cannot write: no space left on the device"
    return f"{path}: cannot write ({tag_text(str(error)) or 'system error'})"


class SoundfileEncoder:
    """Writes the audio with libsndfile as it arrives."""

    def __init__(self, name: str, path: Path) -> None:
        import soundfile

        self._soundfile = soundfile
        self._name = name
        self._path = Path(path).absolute()
        major, subtype, level, bitrate_mode = SNDFILE_FORMATS[name]
        create(self._path)
        try:
            self._file: soundfile.SoundFile | None = soundfile.SoundFile(
                self._path,
                "w",
                samplerate=SAMPLE_RATE,
                channels=1,
                format=major,
                subtype=subtype,
                compression_level=level,
                bitrate_mode=bitrate_mode,
            )
        except (soundfile.LibsndfileError, OSError) as e:
            remove(self._path)
            raise ExportError(_why(self._path, e)) from None
        self._frames = 0

    def write(self, audio: np.ndarray) -> None:
        if self._file is None:
            raise ExportError(f"{self._path}: the encoder is closed")
        samples = np.nan_to_num(np.asarray(audio, dtype=np.float32).ravel())
        if self._name == "wav" and self._frames + samples.size > WAV_MAX_FRAMES:
            self.abort()
            most = format_duration(WAV_MAX_FRAMES / SAMPLE_RATE)
            raise ExportError(
                f"{self._path}: a WAV file holds at most {most} of audio; "
                "export a book this long to .flac (lossless) or .m4b"
            )
        try:
            self._file.buffer_write(to_pcm16(samples), dtype="int16")
        except (self._soundfile.LibsndfileError, OSError) as e:
            why = _why(self._path, e)
            self.abort()
            raise ExportError(why) from None
        self._frames += samples.size

    def finish(self, chapters: Sequence[Chapter], tags: BookTags) -> None:
        file, self._file = self._file, None
        if file is None:
            raise ExportError(f"{self._path}: the encoder is closed")
        try:
            if self._name == "wav":  # LIST/INFO, written after the audio
                title, author = tag_text(tags.title), tag_text(tags.author)
                for key, value in (
                    ("title", title),
                    ("artist", author),
                    ("album", tag_text(tags.album) or title),
                    ("tracknumber", str(tags.track) if tags.track > 0 else ""),
                    ("genre", "Audiobook"),
                ):
                    if value:
                        setattr(file, key, value)
            file.close()
        except (self._soundfile.LibsndfileError, OSError) as e:
            why = _why(self._path, e)
            remove(self._path)
            raise ExportError(why) from None

    def abort(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            try:
                file.close()
            except Exception:  # noqa: BLE001 - the file is being thrown away
                pass
        remove(self._path)
