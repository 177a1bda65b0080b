"""The official preset voices, fetched on first use.

Preset voices (``voices/catalogue.toml``, read by :mod:`engine.voices`) are downloaded from
the official GitHub repository on first use, checked by their git blob id, read by the safe
``.pt`` loader and kept as ``.safetensors`` in :func:`voice_cache_dir`. ``HF_HUB_OFFLINE=1``
forbids the download here too.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from engine.api import TransferReport
from engine.errors import DownloadError, VoiceError
from engine.hub import TransferTracker, offline_mode

Progress = Callable[[int, int | None], None]
"""Called with (bytes done, bytes in all or None) while a voice downloads."""


def voice_cache_dir() -> Path:
    """Converted preset voices: ``$VVREADER_VOICE_CACHE``, else
    ``$XDG_CACHE_HOME/vvreader/voices``, else ``~/.cache/vvreader/voices``."""
    explicit = os.environ.get("VVREADER_VOICE_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "vvreader" / "voices"


def cached_voices(cache_dir: Path | None = None) -> dict[str, Path]:
    """Preset voices already fetched and converted, by name."""
    folder = cache_dir or voice_cache_dir()
    return {p.stem: p for p in sorted(folder.glob("*.safetensors"))}


def git_blob_id(data: bytes) -> str:
    """The id git gives a file with this content (``git hash-object``)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def fetch_voice(
    name: str,
    *,
    cache_dir: Path | None = None,
    offline: bool | None = None,
    url: str | None = None,
    progress: Progress | None = None,
) -> Path:
    """The converted ``.safetensors`` of preset voice ``name``, downloading and converting
    it on first use.

    Args:
        name: a voice id of the catalogue (``en-Carter_man``).
        cache_dir: where converted voices live (default :func:`voice_cache_dir`).
        offline: never download (default: ``HF_HUB_OFFLINE``).
        url: download from here instead of the catalogue's address (a mirror, or a
            ``file://`` URL of a local copy); ``$VVREADER_VOICE_URL`` (with ``{path}``,
            ``{name}`` placeholders) does the same for every voice.
        progress: called with (bytes done, bytes in all or None) while downloading.

    Raises:
        VoiceError: ``name`` is not in the catalogue, or the file is not the published
            one (wrong git blob id) or not a voice prompt.
        DownloadError: not cached, and the download is off or failed.
    """
    from engine.voices import load_catalogue, load_voice_arrays, save_voice

    catalogue = load_catalogue()
    voice = catalogue.get(name)
    if voice is None:
        raise VoiceError(f"{name!r} is not a preset voice (see vvreader --list-voices)")
    folder = cache_dir or voice_cache_dir()
    dest = folder / f"{name}.safetensors"
    if dest.is_file():
        return dest
    offline = offline_mode() if offline is None else offline
    template = os.environ.get("VVREADER_VOICE_URL")
    source = url or (
        template.format(path=voice.path, name=name) if template else catalogue.url(voice)
    )
    if offline:
        raise DownloadError(
            f"cannot get voice {name}: it is not in the voice cache ({folder}) and downloads "
            f"are off (HF_HUB_OFFLINE=1). Run once with network access, or download {source} "
            f"yourself and convert it with `python -m engine.voices convert {name}.pt "
            f"{dest}`, or pass any .pt/.safetensors voice file with --voice PATH."
        )
    data = _download(source, name, progress)
    if git_blob_id(data) != voice.git_blob:
        raise VoiceError(
            f"{source}: the downloaded file is not the published {name} (git blob "
            f"{git_blob_id(data)[:12]}, expected {voice.git_blob[:12]}); not used"
        )
    folder.mkdir(parents=True, exist_ok=True)
    part = folder / f".{name}.{os.getpid()}.pt"
    try:
        part.write_bytes(data)
        save_voice(load_voice_arrays(part), dest)
    except OSError as e:
        raise VoiceError(f"{dest}: cannot write the voice cache ({e.strerror})") from None
    finally:
        part.unlink(missing_ok=True)
    return dest


def transfer_progress(name: str, file: str, report: TransferReport) -> Progress:
    """A ``progress`` callback for :func:`fetch_voice` that reports :class:`Transfer`
    objects (named ``name``, one file ``file``) to ``report``."""
    tracker = TransferTracker(name, report, [None])
    tracker.start_file(file)
    return tracker.bytes


def _download(url: str, name: str, progress: Progress | None) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            total = response.headers.get("Content-Length")
            size = int(total) if total and total.isdigit() else None
            chunks, done = [], 0
            while chunk := response.read(1 << 16):
                chunks.append(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, size)
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or getattr(e, "strerror", None) or e
        raise DownloadError(
            f"cannot download voice {name} from {url} ({reason}). Check the network "
            "connection and run again, or pass any .pt/.safetensors voice file with "
            "--voice PATH."
        ) from None
    return b"".join(chunks)
