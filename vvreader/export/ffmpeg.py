"""Audio files written by the ``ffmpeg`` program: AAC in MP4, MP3, Opus, Vorbis and FLAC.

The audio streams into one ffmpeg process as it is made (on its standard input, the 16-bit
samples a WAV export holds), which encodes it into a file beside the output, so that a book
of many hours is never held in memory and the encoding keeps pace with the synthesis on a
core of its own. The chapters are known only at the end: then a second, quick ffmpeg run
copies the encoded audio (``-c copy``, nothing re-encoded) into the output with the
chapters, the tags and the cover.

ffmpeg runs as a separate program, with a list of arguments and no shell. Nothing from the
document reaches its command line: titles, authors and chapter names go through a metadata
file (``-f ffmetadata``) with its special characters escaped, and every path is absolute and
given as ``file:``, so that neither a leading ``-`` nor a ``name:`` prefix is read as an option
or a protocol.
"""

from __future__ import annotations

import base64
import functools
import logging
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from engine.api import SAMPLE_RATE
from vvreader.export.cover import Cover, flac_picture, read_cover
from vvreader.export.errors import ExportError
from vvreader.export.files import create, remove
from vvreader.export.languages import iso639_2
from vvreader.export.metadata import (
    BookTags,
    Chapter,
    ChapterMark,
    chapter_marks,
    ffmetadata,
    tag_text,
    vorbis_chapter_comments,
)
from vvreader.export.pcm import to_pcm16

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "install it with `sudo apt install ffmpeg` (Debian, Ubuntu), "
    "`sudo dnf install ffmpeg-free` (Fedora) or `brew install ffmpeg` (macOS)"
)

GENRE = "Audiobook"


@dataclass(frozen=True)
class Recipe:
    """How one format is made with ffmpeg."""

    encoder: str
    """The ffmpeg encoder it needs."""
    codec_args: tuple[str, ...]
    muxer: str
    final_args: tuple[str, ...] = ()
    """Muxer options of the final file."""
    vorbis_comments: bool = False
    """Tags, chapters and cover go into Vorbis comments (Ogg, FLAC) rather than the muxer's
    own chapters (MP4, ID3)."""
    cover_stream: bool = True
    """The cover is an attached picture stream (MP4 ``covr``, ID3 ``APIC``, FLAC ``PICTURE``);
    otherwise a ``METADATA_BLOCK_PICTURE`` comment (Ogg)."""
    audiobook_atom: bool = False
    """MP4's media kind says Audiobook (``stik`` = 2), as iTunes files it."""


_AAC = ("-c:a", "aac", "-b:a", "64k")
# The index (moov) first, so that a player starts before it has read the whole file.
_MP4_FINAL = ("-movflags", "+faststart")

RECIPES: dict[str, Recipe] = {
    # Speech bitrates: AAC-LC and MP3 at 64 kb/s mono, Opus at 32 kb/s (its speech sweet
    # spot), Vorbis at quality 3 (about 45 kb/s mono at 24 kHz); FLAC is lossless 16-bit.
    "m4b": Recipe("aac", _AAC, "ipod", (*_MP4_FINAL, "-brand", "M4B "), audiobook_atom=True),
    "m4a": Recipe("aac", _AAC, "ipod", _MP4_FINAL),
    "mp3": Recipe(
        "libmp3lame", ("-c:a", "libmp3lame", "-b:a", "64k"), "mp3", ("-id3v2_version", "3")
    ),
    "opus": Recipe(
        "libopus",
        ("-c:a", "libopus", "-b:a", "32k"),
        "opus",
        vorbis_comments=True,
        cover_stream=False,
    ),
    "ogg": Recipe(
        "libvorbis",
        ("-c:a", "libvorbis", "-q:a", "3"),
        "ogg",
        vorbis_comments=True,
        cover_stream=False,
    ),
    "flac": Recipe("flac", ("-c:a", "flac", "-sample_fmt", "s16"), "flac", vorbis_comments=True),
}

MIN_FRAMES = SAMPLE_RATE // 20
"""The shortest audio a file holds (50 ms): MP4 and Ogg want a packet, and Vorbis below a
block's length gives a file whose length reads wrong."""

# -xerror: a failed write (a full disk) ends ffmpeg with an error; without it, ffmpeg reports
# a trailer it could not write and still exits with 0.
_QUIET = ("-hide_banner", "-nostdin", "-nostats", "-loglevel", "error", "-xerror")


def find_ffmpeg() -> str | None:
    """The ``ffmpeg`` program on the PATH, or None."""
    return shutil.which("ffmpeg")


@functools.lru_cache(maxsize=4)
def encoders(executable: str) -> frozenset[str]:
    """The audio encoders an ffmpeg program has (empty when it does not run)."""
    try:
        listing = subprocess.run(
            [executable, *_QUIET, "-encoders"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return frozenset()
    names = re.findall(r"^ A\S* (\S+)", listing, flags=re.MULTILINE)
    return frozenset(names)


def last_line(stderr: IO[bytes]) -> str:
    """ffmpeg's last message, one line (its messages name paths, which may be anything)."""
    stderr.seek(0)
    lines = [ln.strip() for ln in stderr.read().decode("utf-8", "replace").splitlines()]
    lines = [ln for ln in lines if ln]
    return tag_text(lines[-1]) if lines else "no message"


def file_url(path: Path) -> str:
    """``path`` as an ffmpeg input or output that cannot be taken for an option or a protocol."""
    return "file:" + str(path.absolute())


class FfmpegEncoder:
    """Streams audio into ffmpeg and completes the file with chapters, tags and cover."""

    def __init__(self, executable: str, name: str, path: Path) -> None:
        self._executable = executable
        self._name = name
        self._recipe = RECIPES[name]
        self._path = Path(path).absolute()
        self._stream = self._path.with_name(self._path.name + ".stream")
        self._frames = 0
        self._error = ""
        """The last failed ffmpeg run's message."""
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed by finish or abort
        self._process: subprocess.Popen[bytes] | None = None
        try:
            create(self._stream)
        except ExportError:
            self._stderr.close()
            raise
        try:
            self._process = subprocess.Popen(
                [
                    executable,
                    *_QUIET,
                    "-y",
                    "-f",
                    "s16le",
                    "-ar",
                    str(SAMPLE_RATE),
                    "-ac",
                    "1",
                    "-i",
                    "pipe:0",
                    *self._recipe.codec_args,
                    "-f",
                    self._recipe.muxer,
                    file_url(self._stream),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=self._stderr,
                # Ctrl-C reaches the caller, which decides: finish or abort.
                start_new_session=True,
            )
        except OSError as e:
            self.abort()
            raise ExportError(f"{self._path.parent}: cannot write ({e.strerror or e})") from None

    def write(self, audio: np.ndarray) -> None:
        if self._process is None or self._process.stdin is None:
            raise ExportError(f"{self._path}: the encoder is closed")
        samples = np.nan_to_num(np.asarray(audio, dtype=np.float32).ravel())
        try:
            self._process.stdin.write(to_pcm16(samples))
        except OSError:  # ffmpeg stopped: a full disk, or it failed
            self._fail("encoding")
        self._frames += samples.size

    def finish(self, chapters: Sequence[Chapter], tags: BookTags) -> None:
        process = self._process
        if process is None or process.stdin is None:
            raise ExportError(f"{self._path}: the encoder is closed")
        if self._frames < MIN_FRAMES:  # a part with (almost) nothing to read: made whole
            self.write(np.zeros(MIN_FRAMES - self._frames, np.float32))
        try:
            process.stdin.close()
        except OSError:
            self._fail("encoding")
        if process.wait() != 0:
            self._fail("encoding")
        self._process = None
        marks = chapter_marks(chapters, round(self._frames * 1000 / SAMPLE_RATE))
        cover = read_cover(tags.cover)
        if tags.cover and cover is None:
            log.warning("the cover is neither a PNG nor a JPEG; the file has none")
        written = self._remux(marks, tags, cover)
        if not written and cover is not None:
            # A cover ffmpeg cannot read must not cost the book.
            cover_error = self._error
            written = self._remux(marks, tags, None)
            if written:
                log.warning("ffmpeg could not take the cover (%s); the file has none", cover_error)
        if not written:
            self._fail("writing")
        remove(self._stream)
        self._stderr.close()

    def abort(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.kill()
            if process.stdin is not None:
                try:
                    process.stdin.close()
                except OSError:
                    pass
            process.wait()
        remove(self._stream)
        remove(self._path)
        self._stderr.close()

    def _fail(self, doing: str) -> None:
        process = self._process
        if process is not None:
            if process.stdin is not None:
                try:
                    process.stdin.close()
                except OSError:
                    pass
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        why = self._error or last_line(self._stderr)
        self.abort()
        raise ExportError(f"{self._path}: ffmpeg failed {doing} the {self._name}: {why}")

    def _tags(self, tags: BookTags, marks: Sequence[ChapterMark], cover: Cover | None) -> dict:
        title, author = tag_text(tags.title), tag_text(tags.author)
        fields = {
            "title": title,
            "artist": author,
            "album_artist": author,
            "album": tag_text(tags.album) or title,
            "genre": GENRE,
        }
        if tags.track > 0:
            fields["track"] = f"{tags.track}/{tags.tracks}" if tags.tracks else str(tags.track)
        if self._recipe.vorbis_comments:
            fields["LANGUAGE"] = re.sub(r"[^A-Za-z0-9-]", "", tags.language)[:35]
            fields.update(vorbis_chapter_comments(marks))
            if cover is not None and not self._recipe.cover_stream:
                picture = base64.b64encode(flac_picture(cover)).decode("ascii")
                fields["METADATA_BLOCK_PICTURE"] = picture
        elif self._recipe.muxer == "mp3":
            fields["language"] = iso639_2(tags.language)  # ID3 TLAN
        if self._recipe.audiobook_atom:
            fields["media_type"] = "2"
        return fields

    def _remux(self, marks: Sequence[ChapterMark], tags: BookTags, cover: Cover | None) -> bool:
        """Copy the encoded audio into the output with chapters, tags and cover; False (the
        reason in ``_error``) when ffmpeg fails."""
        self._error = ""
        try:
            return self._run_remux(marks, tags, cover)
        except OSError as e:  # the temporary folder
            self._error = f"{e.strerror or e}"
            remove(self._path)
            return False

    def _run_remux(self, marks: Sequence[ChapterMark], tags: BookTags, cover: Cover | None) -> bool:
        recipe = self._recipe
        with tempfile.TemporaryDirectory(prefix="vvreader-tags-") as folder:
            meta = Path(folder) / "tags.txt"
            chapters_in_muxer = not recipe.vorbis_comments
            meta.write_text(
                ffmetadata(self._tags(tags, marks, cover), marks if chapters_in_muxer else ()),
                encoding="utf-8",
            )
            argv = [self._executable, *_QUIET, "-y", "-i", file_url(self._stream)]
            argv += ["-f", "ffmetadata", "-i", file_url(meta)]
            maps = ["-map", "0:a"]
            if cover is not None and recipe.cover_stream:
                image = Path(folder) / f"cover{cover.suffix}"
                image.write_bytes(cover.data)
                argv += ["-i", file_url(image)]
                maps += ["-map", "2:v", "-disposition:v:0", "attached_pic"]
                # The picture type (ID3 APIC, FLAC PICTURE): front cover, not "other".
                maps += ["-metadata:s:v:0", "comment=Cover (front)"]
            argv += maps
            argv += ["-map_metadata", "1", "-map_chapters", "1" if chapters_in_muxer else "-1"]
            language = iso639_2(tags.language)
            if recipe.muxer == "ipod" and language:
                argv += ["-metadata:s:a:0", f"language={language}"]
            argv += ["-c", "copy", *recipe.final_args, "-f", recipe.muxer, file_url(self._path)]
            with tempfile.TemporaryFile() as stderr:
                code = subprocess.run(
                    argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr
                ).returncode
                if code != 0:
                    self._error = last_line(stderr)
                    remove(self._path)
        return code == 0
