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
to the ``progress`` callbacks.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import urllib.error
import urllib.request
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


class DownloadError(EngineError):
    """A model, tokenizer or voice is neither on disk nor downloadable; the message says
    what is missing, what to run and how to use a local folder instead."""


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
    progress: bool = False,
    tokenizer: bool = True,
) -> ModelSource:
    """Find (downloading if needed) the model ``spec`` and its tokenizer.

    Args:
        spec: a model folder or a Hugging Face repository id; None for DEFAULT_MODEL.
        offline: never use the network (default: ``HF_HUB_OFFLINE``).
        cache_dir: the huggingface_hub cache (default: its own, ``HF_HUB_CACHE``).
        endpoint: the Hub's address (default: ``HF_ENDPOINT`` or huggingface.co).
        progress: show huggingface_hub's progress bars (on stderr).
        tokenizer: also find the tokenizer (False: ``tokenizer`` is where it would be in
            the model folder, present or not).

    Raises:
        DownloadError: the files are not on disk and cannot be downloaded, or the
            repository does not exist.
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
        self, offline: bool, cache_dir: str | Path | None, endpoint: str | None, progress: bool
    ) -> None:
        self.options: dict[str, object] = {
            "cache_dir": str(cache_dir) if cache_dir is not None else None,
            "local_files_only": offline,
            "endpoint": endpoint,
        }
        if not progress:
            self.options["tqdm_class"] = _silent_tqdm()
        self.offline = offline

    def _call(self, fn: Callable[..., str], *args: object, **extra: object) -> Path:
        # Pass only the options this huggingface_hub version knows (tqdm_class is recent).
        known = inspect.signature(fn).parameters
        return Path(fn(*args, **{k: v for k, v in {**self.options, **extra}.items() if k in known}))

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
            folder = self._call(snapshot_download, repo_id, allow_patterns=list(MODEL_FILES))
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

    def file(self, repo_id: str, filename: str, wanted_by: str) -> Path:
        from huggingface_hub import hf_hub_download

        try:
            return self._call(hf_hub_download, repo_id, filename)
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
