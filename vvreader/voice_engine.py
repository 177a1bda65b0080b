"""Opening the speech engine for the app: the one place that builds the real engine.

The model is a local folder or a Hugging Face repository id (default
``microsoft/VibeVoice-Realtime-0.5B``), fetched once into the Hugging Face cache; preset
voices are fetched on first use into vvreader's voice cache (see ``engine.sources``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from engine.api import SpeechEngine
from engine.errors import EngineError
from engine.sources import DEFAULT_MODEL, ModelSource

if TYPE_CHECKING:
    from engine.config import VibeVoiceConfig
    from engine.voices import VoiceCatalogue


class EngineUnavailable(Exception):
    """No usable model; the message says what to do."""


def prepare_model(
    model: str | None, voice: str | None = None, progress: bool = False
) -> ModelSource:
    """Find the model (downloading it if needed) and the voice the reader starts with.

    Args:
        model: a model folder or a Hugging Face repository id; None or "" for the default.
        voice: the voice that will be used first: when it is a preset voice (or unset, and
            the model ships no voices of its own) and not cached yet, it is fetched now.
        progress: show download progress bars on stderr.

    Raises:
        EngineUnavailable: the model or the voice is missing and cannot be downloaded
            (one paragraph: what is missing, what to run, how to use a local folder).
    """
    from engine.sources import resolve_model

    try:
        source = resolve_model(model or None, progress=progress)
        if not voice or not Path(voice).expanduser().is_file():
            _prefetch_voice(source, voice, progress)
    except EngineError as err:
        raise EngineUnavailable(str(err)) from None
    return source


def _prefetch_voice(source: ModelSource, voice: str | None, progress: bool) -> None:
    from engine.config import VibeVoiceConfig
    from engine.sources import fetch_voice

    if (voice and voice in source.voices) or (not voice and source.voices):
        return  # the model's own voice
    catalogue = _catalogue_for(VibeVoiceConfig.from_file(source.folder / "config.json"))
    if catalogue is None:
        return
    name = voice or catalogue.default
    if catalogue.get(name) is not None:
        fetch_voice(name, progress=_progress_bar(f"voice {name}") if progress else None)


def _catalogue_for(cfg: VibeVoiceConfig) -> VoiceCatalogue | None:
    """The preset catalogue if its voices fit a model of config ``cfg``."""
    from engine.voices import load_catalogue

    catalogue = load_catalogue()
    dec = cfg.decoder
    shape = (dec.hidden_size, cfg.lm_layers, cfg.tts_layers, dec.kv_heads, dec.dim_per_head)
    return catalogue if catalogue.fits(*shape) else None


def _progress_bar(label: str) -> Callable[[int, int | None], None]:
    """A tqdm bar on stderr fed by (bytes done, bytes in all)."""
    from tqdm.auto import tqdm

    bar = tqdm(desc=label, unit="B", unit_scale=True, file=sys.stderr, leave=False)

    def update(done: int, total: int | None) -> None:
        if total is not None and bar.total != total:
            bar.total = total
        bar.update(done - bar.n)
        if total is not None and done >= total:
            bar.close()

    return update


def open_engine(
    model: str | ModelSource | None,
    timeout: float = 600.0,
    quantize: int | None = None,
    progress: bool = False,
) -> SpeechEngine:
    """Load the model on an engine thread and wait until it is ready.

    Args:
        model: a model folder, a Hugging Face repository id, a resolved
            :class:`ModelSource`, or None/"" for the default model.
        timeout: seconds to wait for the model to load.
        quantize: 8 or 4 to quantize the language model on load.
        progress: show download progress bars on stderr (not inside the reader UI).

    Raises:
        EngineUnavailable: the model cannot be found, downloaded or loaded.
    """
    source = model if isinstance(model, ModelSource) else prepare_model(model, progress=progress)
    from engine.stream import MLXEngine

    engine = MLXEngine(source, quantize=quantize)
    try:
        engine.wait_ready(timeout)
    except (EngineError, TimeoutError) as err:
        engine.close()
        raise EngineUnavailable(str(err)) from None
    return engine


def list_voices(model: str | None) -> str:
    """What ``--list-voices`` prints: the voices on disk and those that can be fetched.

    Never downloads anything.
    """
    from engine.config import VibeVoiceConfig
    from engine.sources import DownloadError, cached_voices, resolve_model, voice_cache_dir

    name = model or DEFAULT_MODEL
    lines = [f"voices for {name}:"]
    try:
        source: ModelSource | None = resolve_model(model or None, offline=True, tokenizer=False)
    except DownloadError:
        source = None
        lines.append("  (the model is not downloaded yet; it is fetched on the first run)")
    except EngineError as err:
        raise EngineUnavailable(str(err)) from None
    catalogue: VoiceCatalogue | None = None
    if source is None and name == DEFAULT_MODEL:
        from engine.voices import load_catalogue

        catalogue = load_catalogue()
    if source is not None:
        for voice, path in source.voices.items():
            lines.append(f"  {'local':<7} {voice:<16} in the model folder ({path.parent})")
        try:
            catalogue = _catalogue_for(VibeVoiceConfig.from_file(source.folder / "config.json"))
        except EngineError as err:
            lines.append(f"  (cannot read the model's config.json: {err})")
    if catalogue is not None:
        cached = cached_voices()
        lines.append(
            f"  preset voices from github.com/{catalogue.repository} (MIT); 'fetch' ones are "
            f"downloaded on first use into {voice_cache_dir()}:"
        )
        for v in sorted(catalogue.voices, key=lambda v: (v.experimental, v.id)):
            status = "local" if v.id in cached else "fetch"
            note = "  experimental" if v.experimental else ""
            default = "  (default)" if v.id == catalogue.default else ""
            line = f"  {status:<7} {v.id:<16} {v.language_name:<16} {v.gender:<6}{note}{default}"
            lines.append(line.rstrip())
    elif source is not None:
        lines.append("  (the official preset voices do not fit this model's shape)")
    lines.append("  or any voice prompt file: --voice PATH.pt|PATH.safetensors")
    return "\n".join(lines)


def run_list_voices(args: argparse.Namespace) -> int:
    """``vvreader --list-voices``: print :func:`list_voices` for ``--model`` (or the
    config file's model)."""
    from vvreader.cli import settings

    config, _, _ = settings(args)
    try:
        print(list_voices(config.model or None))
    except EngineUnavailable as err:
        print(f"vvreader: {err}", file=sys.stderr)
        return 2
    return 0
