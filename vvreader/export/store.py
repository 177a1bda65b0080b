"""The work folder of an export: every utterance's audio, kept until the export is complete,
so that the same command run again continues where it stopped.

Each utterance's audio is one file named by the hash of everything that makes it (the
text, voice, CFG scale, diffusion steps, noise seed and the engine's identity: see
:func:`utterance_key`), so a changed setting or an edited sentence never reuses stale
audio, and an unchanged sentence is reused wherever it now is. The audio is kept as the
engine made it (before any change of speed, which is applied on the way out, so a new
speed reuses it too), as 16-bit PCM, the samples every exported file is made of
(``vvreader.export.pcm``), in half the room of the engine's floats; the export goes on
with the stored form of what it has just made too, so that a run that resumes makes the
same samples as one that never stopped.

A file is written beside its final name and renamed when complete (after ``fsync``); it
holds a header with its sample count and a CRC-32 of the samples, checked when it is read
back: a file cut short by a crash or a full disk is made again, never trusted. One export
at a time may use a work folder (a lock file); files of other keys are deleted when an
export opens it, and the whole folder when the export is complete.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import struct
import zlib
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

import numpy as np

from engine.api import SynthesisRequest
from vvreader.export.errors import ExportError
from vvreader.export.pcm import from_pcm16, to_pcm16

__all__ = ["UtteranceStore", "utterance_key", "write_failure"]

_MAGIC = b"VVUA"
_HEADER = struct.Struct("<4sIII")  # magic, version, samples, crc32 of the int16 samples
_VERSION = 2
_SUFFIX = ".audio"
_LOCK = "lock"


def utterance_key(request: SynthesisRequest, engine_identity: str) -> str:
    """The name of a request's audio: a hash of the request and the engine's identity (a
    voice given as a file adds that file's size and modification time)."""
    voice_file = ""
    if request.voice and ("/" in request.voice or request.voice.endswith((".pt", ".safetensors"))):
        try:
            st = Path(request.voice).expanduser().stat()
            voice_file = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            voice_file = "missing"
    fields = [
        _VERSION,
        request.text,
        request.token_ids,
        request.voice,
        voice_file,
        request.cfg_scale,
        request.steps,
        request.seed,
        request.max_frames,
        engine_identity,
    ]
    return hashlib.sha256(json.dumps(fields).encode()).hexdigest()[:40]


def write_failure(path: Path, err: OSError) -> str:
    """One line for a file that cannot be written: a full disk, no permission, or else."""
    if err.errno == errno.ENOSPC:
        why = "the disk is full"
    elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        why = "no permission to write there"
    else:
        why = err.strerror or str(err)
    return f"{path}: cannot write ({why})"


class UtteranceStore:
    """The audio of utterances, one file each, in ``folder`` (made when opened).

    Use as a context manager: it locks the folder while open.

    Raises:
        ExportError: the folder cannot be made or written, or another export holds it.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._lock_file: int | None = None

    def __enter__(self) -> UtteranceStore:
        try:
            self.folder.mkdir(exist_ok=True)
            fd = os.open(self.folder / _LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise ExportError(write_failure(self.folder, err)) from None
        if not _try_lock(fd):
            os.close(fd)
            raise ExportError(
                f"{self.folder}: another vvreader is exporting to this file; wait for it to end"
            )
        self._lock_file = fd
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        err: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Unlock the folder (its files stay)."""
        if self._lock_file is not None:
            os.close(self._lock_file)
            self._lock_file = None

    def _path(self, key: str) -> Path:
        return self.folder / f"{key}{_SUFFIX}"

    def keep_only(self, keys: Iterable[str]) -> None:
        """Delete the audio of every other key, and files left half-written."""
        wanted = {f"{k}{_SUFFIX}" for k in keys}
        for path in self.folder.iterdir():
            if path.name != _LOCK and path.name not in wanted and path.is_file():
                path.unlink(missing_ok=True)

    def has(self, key: str) -> bool:
        """Whether a file is stored for ``key`` (checked when it is read)."""
        return self._path(key).is_file()

    def get(self, key: str) -> np.ndarray | None:
        """The audio stored for ``key``, or None when there is none or its file is not
        whole (then it is deleted)."""
        path = self._path(key)
        try:
            data = path.read_bytes()
        except OSError:
            return None
        audio = _decode(data)
        if audio is None:
            path.unlink(missing_ok=True)
        return audio

    def put(self, key: str, audio: np.ndarray) -> np.ndarray:
        """Store ``audio`` for ``key`` (written beside and renamed: a crash leaves either
        the whole file or none); returns it as stored, as :meth:`get` will give it.

        Raises:
            ExportError: it cannot be written (a full disk: the message says so).
        """
        samples = to_pcm16(audio)
        header = _HEADER.pack(_MAGIC, _VERSION, len(samples) // 2, zlib.crc32(samples))
        path = self._path(key)
        temp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        try:
            with open(temp, "wb") as f:
                f.write(header)
                f.write(samples)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, path)
        except OSError as err:
            temp.unlink(missing_ok=True)
            raise ExportError(write_failure(self.folder, err)) from None
        return from_pcm16(samples)

    def count(self) -> int:
        """How many utterances' audio files the folder holds."""
        return sum(1 for p in self.folder.glob(f"*{_SUFFIX}"))

    def remove(self) -> None:
        """Delete the folder and everything in it (the export is complete)."""
        self.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def _decode(data: bytes) -> np.ndarray | None:
    if len(data) < _HEADER.size:
        return None
    magic, version, samples, crc = _HEADER.unpack_from(data)
    body = data[_HEADER.size :]
    if magic != _MAGIC or version != _VERSION or len(body) != 2 * samples:
        return None
    if zlib.crc32(body) != crc:
        return None
    return from_pcm16(body)


def _try_lock(fd: int) -> bool:
    """Take an exclusive lock on ``fd`` without waiting (released when it is closed)."""
    try:
        import fcntl
    except ImportError:  # no POSIX locks here: one export at a time is the user's care
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True
