"""Where the model and its tokenizer come from: a local folder or the Hugging Face Hub.

A model is a local folder or a Hugging Face repository id (default
:data:`DEFAULT_MODEL`). Repositories are fetched with ``huggingface_hub`` into its cache
(``HF_HOME`` / ``HF_HUB_CACHE``), only the files the engine reads, with its progress bars;
later runs use the cache and work offline. ``HF_HUB_OFFLINE=1`` forbids any download. The
official repository ships no tokenizer: ``tokenizer.json`` then comes from the repository
named in ``preprocessor_config.json`` (``Qwen/Qwen2.5-0.5B``).

Nothing here prints: progress goes to ``huggingface_hub``'s tqdm bars (when asked for) or
to a :data:`~engine.api.TransferReport` callback, which gets a :class:`~engine.api.Transfer`
(file, bytes done and in all, rate) at every chunk of :data:`DOWNLOAD_CHUNK_BYTES`; raising
:class:`~engine.errors.DownloadCancelled` from it stops the download (huggingface_hub
deletes its partial file).
"""

from __future__ import annotations

import errno
import inspect
import json
import os
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from engine.api import Transfer, TransferReport
from engine.errors import DownloadCancelled, DownloadError, EngineError

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

DOWNLOAD_CHUNK_BYTES = 1 << 20
"""With a :data:`TransferReport`, huggingface_hub reads (and reports) this much at a time
(its default, 10 MB, would leave the display still for seconds on a slow line)."""
STALE_PARTIAL_SECONDS = 3600.0
"""A partial download (``*.incomplete`` in the Hub cache) untouched this long is left over
from a killed process and is deleted before the next download of that repository
(huggingface_hub names partial files per download and never resumes them; it deletes its
own when a download fails, not those of a process that was killed)."""


class TransferTracker:
    """Sums the byte counts of one download's files (huggingface_hub's progress bars, one
    or two a file, or :meth:`bytes` called directly) into :class:`Transfer` reports."""

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
        self.report(
            Transfer(
                name=self.name,
                file=self.file,
                index=max(1, self.index),
                files=self.files,
                done=done,
                total=self.total or total,
                rate=rate,
            )
        )


def _forwarding_tqdm(tracker: TransferTracker) -> type:
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
        tracker = TransferTracker(repo_id, self.report, [f.file_size for f in todo])
        tqdm_class = _forwarding_tqdm(tracker)
        for f in todo:
            tracker.start_file(f.filename)
            tracker.bytes(tracker.base, None)
            self._call(
                hf_hub_download, repo_id, f.filename, revision=f.commit_hash, tqdm_class=tqdm_class
            )
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
            tracker = TransferTracker(repo_id, self.report, [None])
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
