"""Where the model, its tokenizer and the preset voices come from.

A model is a local folder or a Hugging Face repository id (default
:data:`DEFAULT_MODEL`). Repositories are fetched with ``huggingface_hub`` into its cache
(``HF_HOME`` / ``HF_HUB_CACHE``), only the files the engine reads, with its progress bars;
later runs use the cache and work offline. ``HF_HUB_OFFLINE=1`` forbids any download. The
official repository ships no tokenizer: ``tokenizer.json`` then comes from the repository
named in ``preprocessor_config.json`` (``Qwen/Qwen2.5-0.5B``).

Preset voices (``voices/catalogue.toml``) are downloaded from the official GitHub
repository on first use, checked by their git blob id, read by the safe ``.pt`` loader and
kept as ``.safetensors`` in :func:`voice_cache_dir`.

Nothing here prints: progress goes to ``huggingface_hub``'s tqdm bars (when asked for) and
to the ``progress`` callbacks. A :data:`TransferReport` callback (the reader's loading
banner) gets a :class:`Transfer` (file, bytes done and in all, rate) at every chunk of
:data:`DOWNLOAD_CHUNK_BYTES`; raising :class:`DownloadCancelled` from it stops the download
(huggingface_hub deletes its partial file).
"""

from __future__ import annotations

import errno
import hashlib
import inspect
import json
import os
import re
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from engine.errors import EngineError

DEFAULT_MODEL = "microsoft/VibeVoice-Realtime-0.5B"
# preprocessor_config.json "language_model_pretrained_name" of the official repository.
TOKENIZER_REPO = "Qwen/Qwen2.5-0.5B"
# What the engine reads from a model repository; anything else (README, figures) stays.
MODEL_FILES = (
    "config.json",
    "preprocessor_config.json",
    "model.safetensors",
    "model-*.safetensors",
    "model.safetensors.index.json",
    "tokenizer.json",
    "voices/*.safetensors",
)
_SIZES = {DEFAULT_MODEL: "about 2 GB"}
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

Progress = Callable[[int, int | None], None]
"""Called with (bytes done, bytes in all or None) while a voice downloads."""

DOWNLOAD_CHUNK_BYTES = 1 << 20
"""With a :data:`TransferReport`, huggingface_hub reads (and reports) this much at a time
(its default, 10 MB, would leave the display still for seconds on a slow line)."""
STALE_PARTIAL_SECONDS = 3600.0
"""A partial download (``*.incomplete`` in the Hub cache) untouched this long is left over
from a killed process and is deleted before the next download of that repository
(huggingface_hub names partial files per download and never resumes them; it deletes its
own when a download fails, not those of a process that was killed)."""


class DownloadError(EngineError):
    """A model, tokenizer or voice is neither on disk nor downloadable; the message says
    what is missing, what to run and how to use a local folder instead."""


class DownloadCancelled(DownloadError):
    """The download was stopped on purpose (the reader quit); nothing partial is kept."""


@dataclass(frozen=True)
class Transfer:
    """Where a download stands."""

    name: str
    """What is downloaded: a repository id, or ``voice NAME``."""
    file: str
    """The file being downloaded now ("" when not known)."""
    index: int
    """Its number, from 1."""
    files: int
    """How many files are downloaded (0 when not known)."""
    done: int
    """Bytes done, all files together."""
    total: int | None
    """Bytes in all (None until known)."""
    rate: float | None
    """Bytes a second over the last few seconds (None until measured)."""

    @property
    def fraction(self) -> float | None:
        """Done, from 0 to 1 (None when the total is unknown)."""
        if not self.total:
            return None
        return min(1.0, self.done / self.total)

    @property
    def seconds_left(self) -> float | None:
        """At the current rate (None until measured)."""
        if not self.total or not self.rate:
            return None
        return max(0.0, (self.total - self.done) / self.rate)

    def describe(self) -> str:
        """``25% · model.safetensors (2 of 4) · 512.0 MB of 2.0 GB · 21.3 MB/s · 1m18s left``
        (most telling first: a narrow line cuts the end)."""
        parts = []
        if self.total:
            parts.append(f"{100 * (self.fraction or 0):.0f}%")
        head = self.file
        if head and self.files > 1:
            head += f" ({self.index} of {self.files})"
        if head:
            parts.append(head)
        parts.append(_size(self.done) + (f" of {_size(self.total)}" if self.total else ""))
        if self.rate:
            parts.append(f"{_size(self.rate)}/s")
        left = self.seconds_left
        if left is not None and self.done < (self.total or 0):
            parts.append(f"{_duration(left)} left")
        return " \u00b7 ".join(parts)


TransferReport = Callable[[Transfer], None]
"""Called (on the downloading thread) with the state of a download at every chunk."""


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError  # unreachable


def _duration(seconds: float) -> str:
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


class _Tracker:
    """Sums the progress bars huggingface_hub opens (one or two a file) into
    :class:`Transfer` reports."""

    def __init__(self, name: str, report: TransferReport, sizes: list[int | None]) -> None:
        self.name = name
        self.report = report
        self.files = len(sizes)
        self.total = sum(s for s in sizes if s) if sizes and all(sizes) else None
        self.index = 0
        self.file = ""
        self.base = 0  # bytes of the files finished
        self.bars: dict[int, tuple[int, int | None]] = {}
        self.samples: deque[tuple[float, int]] = deque()

    def start_file(self, name: str) -> None:
        self.index += 1
        self.file = name
        self.bars.clear()

    def end_file(self, size: int | None) -> None:
        self.base += size if size is not None else self._current()
        self.bars.clear()

    def _current(self) -> int:
        return max((n for n, _ in self.bars.values()), default=0)

    def moved(self, bar: object, n: int, total: int | None) -> None:
        self.bars[id(bar)] = (n, total)
        self.bytes(self.base + self._current(), None)

    def bytes(self, done: int, total: int | None) -> None:
        """Report ``done`` bytes (of ``total``, when the tracker does not know it)."""
        if self.total is None:
            known = [t for _, t in self.bars.values() if t]
            total = total or (self.base + max(known) if known else None)
        now = time.monotonic()
        self.samples.append((now, done))
        while len(self.samples) > 2 and now - self.samples[0][0] > 5.0:
            self.samples.popleft()
        t0, d0 = self.samples[0]
        rate = (done - d0) / (now - t0) if now - t0 >= 0.5 and done > d0 else None
        self.report(Transfer(self.name, self.file, max(1, self.index), self.files, done,
                             self.total or total, rate))


def _forwarding_tqdm(tracker: _Tracker) -> type:
    """A tqdm class that draws nothing and forwards its byte counts to ``tracker``."""
    import io

    from tqdm.auto import tqdm

    class Forward(tqdm):  # type: ignore[misc,valid-type]
        monitor_interval = 0  # no monitor thread

        def __init__(self, *args: object, **kwargs: object) -> None:
            kwargs.pop("name", None)  # huggingface_hub's own tqdm option
            kwargs["disable"] = False  # count even without a terminal
            kwargs["file"] = io.StringIO()
            kwargs["mininterval"] = 3600.0
            self._bytes = kwargs.get("unit") == "B"
            super().__init__(*args, **kwargs)

        def update(self, n: float | None = 1) -> bool | None:
            shown = super().update(n)
            if self._bytes:
                try:
                    tracker.moved(self, int(self.n), int(self.total) if self.total else None)
                except DownloadCancelled:
                    _abort_xet()  # a Xet download runs in Rust: stop it there too
                    raise
            return shown

        def display(self, *args: object, **kwargs: object) -> None:
            pass

    return Forward


def _abort_xet() -> None:
    try:
        from huggingface_hub.utils._xet import abort_xet_session

        abort_xet_session()
    except Exception:  # no hf_xet, or another huggingface_hub: nothing to stop
        pass


@dataclass(frozen=True)
class ModelSource:
    """A resolved model: a folder with config.json and weights, and a tokenizer.json."""

    name: str
    """What the user asked for (a repository id or a folder)."""
    folder: Path
    tokenizer: Path
    repo_id: str | None = None

    @property
    def voices(self) -> dict[str, Path]:
        """Voices shipped in the model folder (``voices/*.safetensors``), by name."""
        return {p.stem: p for p in sorted((self.folder / "voices").glob("*.safetensors"))}


def offline_mode() -> bool:
    """``HF_HUB_OFFLINE`` (read now, not at import) asks for no network access."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def is_repo_id(spec: str) -> bool:
    """``owner/name`` that is not an existing path."""
    return bool(_REPO_ID.match(spec)) and ".." not in spec and not Path(spec).exists()


def resolve_model(
    spec: str | None = None,
    *,
    offline: bool | None = None,
    cache_dir: str | Path | None = None,
    endpoint: str | None = None,
    progress: bool | TransferReport = False,
    tokenizer: bool = True,
) -> ModelSource:
    """Find (downloading if needed) the model ``spec`` and its tokenizer.

    Args:
        spec: a model folder or a Hugging Face repository id; None for DEFAULT_MODEL.
        offline: never use the network (default: ``HF_HUB_OFFLINE``).
        cache_dir: the huggingface_hub cache (default: its own, ``HF_HUB_CACHE``).
        endpoint: the Hub's address (default: ``HF_ENDPOINT`` or huggingface.co).
        progress: True: huggingface_hub's progress bars (on stderr); a
            :data:`TransferReport`: called at every chunk downloaded (files one after
            the other, so that each report names its file), and may raise
            :class:`DownloadCancelled` to stop.
        tokenizer: also find the tokenizer (False: ``tokenizer`` is where it would be in
            the model folder, present or not).

    Raises:
        DownloadError: the files are not on disk and cannot be downloaded, or the
            repository does not exist.
        DownloadCancelled: the ``progress`` callback stopped the download.
        EngineError: ``spec`` is neither a folder nor a repository id.
    """
    spec = spec or DEFAULT_MODEL
    offline = offline_mode() if offline is None else offline
    hub = _Hub(offline, cache_dir, endpoint, progress)
    folder = Path(spec).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise EngineError(
                f"{folder}: no config.json; is this a VibeVoice-Realtime model folder?"
            )
        return ModelSource(spec, folder, _tokenizer(folder, hub, spec, tokenizer))
    if not is_repo_id(spec):
        raise EngineError(
            f"{spec}: no such model folder (and not a Hugging Face repository id, owner/name)"
        )
    folder = hub.snapshot(spec)
    return ModelSource(spec, folder, _tokenizer(folder, hub, spec, tokenizer), repo_id=spec)


def _tokenizer(folder: Path, hub: _Hub, spec: str, wanted: bool) -> Path:
    if not wanted or (folder / "tokenizer.json").is_file():
        return folder / "tokenizer.json"
    repo = TOKENIZER_REPO
    try:
        pre = json.loads((folder / "preprocessor_config.json").read_text(encoding="utf-8"))
        repo = str(pre.get("language_model_pretrained_name") or repo)
    except (OSError, ValueError, AttributeError):
        pass
    return hub.file(repo, "tokenizer.json", wanted_by=spec)


class _Hub:
    """huggingface_hub calls with our options and our error messages."""

    def __init__(
        self,
        offline: bool,
        cache_dir: str | Path | None,
        endpoint: str | None,
        progress: bool | TransferReport,
    ) -> None:
        self.options: dict[str, object] = {
            "cache_dir": str(cache_dir) if cache_dir is not None else None,
            "local_files_only": offline,
            "endpoint": endpoint,
        }
        self.report: TransferReport | None = None
        if callable(progress):
            self.report = progress
            from huggingface_hub import constants

            constants.DOWNLOAD_CHUNK_SIZE = DOWNLOAD_CHUNK_BYTES
        if progress is not True:
            self.options["tqdm_class"] = _silent_tqdm()
        self.offline = offline

    def _call(self, fn: Callable[..., str], *args: object, **extra: object) -> Path:
        return Path(self._call_raw(fn, *args, **extra))

    def _call_raw(self, fn: Callable[..., object], *args: object, **extra: object) -> object:
        # Pass only the options this huggingface_hub version knows (tqdm_class is recent).
        known = inspect.signature(fn).parameters
        return fn(*args, **{k: v for k, v in {**self.options, **extra}.items() if k in known})

    def where(self) -> str:
        if self.options["cache_dir"]:
            return str(self.options["cache_dir"])
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)

    def cached(self, repo_id: str, filename: str) -> bool:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, filename, cache_dir=self.options["cache_dir"])
        return isinstance(found, str)

    def snapshot(self, repo_id: str) -> Path:
        from huggingface_hub import snapshot_download

        try:
            if self.report is not None and not self.offline:
                self._fetch_each(repo_id)
            folder = self._call(snapshot_download, repo_id, allow_patterns=list(MODEL_FILES))
        except DownloadCancelled:
            raise
        except Exception as e:  # huggingface_hub's many error types, sorted out in _error
            missing = f"config.json and the weights of {repo_id}"
            if repo_id in _SIZES:
                missing += f" ({_SIZES[repo_id]})"
            if repo_id == DEFAULT_MODEL and not self.cached(TOKENIZER_REPO, "tokenizer.json"):
                missing += f", and tokenizer.json from {TOKENIZER_REPO}"
            raise self._error(repo_id, e, missing) from None
        if not (folder / "config.json").is_file() or not _has_weights(folder):
            raise DownloadError(
                f"{repo_id}: the downloaded snapshot ({folder}) has no config.json or no "
                "model*.safetensors; it is not a VibeVoice-Realtime model repository (use "
                f"{DEFAULT_MODEL} or one of its MLX conversions, or pass a local folder)"
            )
        return folder

    def _fetch_each(self, repo_id: str) -> None:
        """Download the files a snapshot lacks one by one, reporting each (a snapshot
        download reports only its sum). Needs huggingface_hub's ``dry_run``; without it
        the snapshot download that follows fetches the files, reporting nothing."""
        from huggingface_hub import hf_hub_download, snapshot_download

        assert self.report is not None
        if "dry_run" not in inspect.signature(snapshot_download).parameters:
            return
        self._remove_stale_partials(repo_id)
        listing = self._call_raw(
            snapshot_download, repo_id, allow_patterns=list(MODEL_FILES), dry_run=True
        )
        assert isinstance(listing, list)
        todo = [f for f in listing if getattr(f, "will_download", False)]  # type: ignore[attr-defined]
        tracker = _Tracker(repo_id, self.report, [f.file_size for f in todo])
        tqdm_class = _forwarding_tqdm(tracker)
        for f in todo:
            tracker.start_file(f.filename)
            tracker.bytes(tracker.base, None)
            self._call(hf_hub_download, repo_id, f.filename, revision=f.commit_hash,
                       tqdm_class=tqdm_class)
            tracker.end_file(f.file_size)
        if todo:
            tracker.bytes(tracker.base, None)

    def _remove_stale_partials(self, repo_id: str) -> None:
        blobs = Path(self.where()) / f"models--{repo_id.replace('/', '--')}" / "blobs"
        now = time.time()
        for part in blobs.glob("*.incomplete"):
            try:
                if now - part.stat().st_mtime > STALE_PARTIAL_SECONDS:
                    part.unlink()
            except OSError:
                pass

    def file(self, repo_id: str, filename: str, wanted_by: str) -> Path:
        from huggingface_hub import hf_hub_download

        extra: dict[str, object] = {}
        if self.report is not None and not self.offline:
            tracker = _Tracker(repo_id, self.report, [None])
            tracker.start_file(filename)
            extra["tqdm_class"] = _forwarding_tqdm(tracker)
        try:
            return self._call(hf_hub_download, repo_id, filename, **extra)
        except DownloadCancelled:
            raise
        except Exception as e:
            raise self._error(repo_id, e, f"{filename} from {repo_id} (for {wanted_by})") from None

    def _error(self, repo_id: str, error: Exception, missing: str) -> DownloadError:
        kind = type(error).__name__
        status = getattr(getattr(error, "response", None), "status_code", 0)
        if kind in ("RepositoryNotFoundError", "GatedRepoError") or status in (401, 403, 404):
            return DownloadError(
                f"{repo_id}: no such model repository on the Hugging Face Hub, or it needs a "
                "login (`hf auth login`); check the name, or pass a local model folder with "
                "--model /path/to/folder."
            )
        if kind == "RevisionNotFoundError":
            return DownloadError(f"{repo_id}: the requested revision does not exist")
        cause = error.__cause__ or error
        if getattr(cause, "errno", None) == errno.ENOSPC or getattr(error, "errno", None) == (
            errno.ENOSPC
        ):
            return DownloadError(
                f"cannot get {missing}: the disk is full (the Hugging Face cache is "
                f"{self.where()}). Free some space there and run again (the files already "
                "downloaded are kept), or point HF_HOME at a disk "
                "with room; or pass a local model folder with --model /path/to/folder."
            )
        if self.offline:
            reason = "downloads are off (HF_HUB_OFFLINE=1)"
            fix = "run once with network access (HF_HUB_OFFLINE unset)"
        else:
            cause = error.__cause__ or error
            detail = " ".join(str(cause).split())[:160]
            reason = f"the download failed ({type(cause).__name__}: {detail})"
            fix = "check the network connection and run again"
        if missing.startswith("tokenizer.json"):
            commands = [f"hf download {repo_id} tokenizer.json"]
        else:
            commands = [f"hf download {repo_id} --include '*.json' --include 'model*.safetensors'"]
            if "tokenizer.json from" in missing:
                commands.append(f"hf download {TOKENIZER_REPO} tokenizer.json")
        run = " and ".join(f"`{c}`" for c in commands)
        return DownloadError(
            f"cannot get {missing}: not in the Hugging Face cache ({self.where()}), and "
            f"{reason}. To fix it, {fix}; or, on a machine with network access, run "
            f"{run} and copy that Hugging Face cache here (or point HF_HOME at a copy); or put "
            "config.json, the model*.safetensors weights and tokenizer.json in one folder "
            "and pass it with --model /path/to/folder."
        )


def _has_weights(folder: Path) -> bool:
    return any(folder.glob("model*.safetensors"))


def _silent_tqdm() -> type:
    from tqdm.auto import tqdm

    class Silent(tqdm):  # type: ignore[misc,valid-type]
        def __init__(self, *args: object, **kwargs: object) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return Silent


# ---------------------------------------------------------------------------- voices


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
    from engine.errors import VoiceError
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
    tracker = _Tracker(name, report, [None])
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
