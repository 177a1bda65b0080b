"""Opening the speech engine for the app: the one place that builds the real engine.

The model is a local folder or a Hugging Face repository id (default
``microsoft/VibeVoice-Realtime-0.5B``), fetched once into the Hugging Face cache; preset
voices are fetched on first use into vvreader's voice cache (see ``engine.sources``).

The reader opens it with an :class:`EngineLoader` on a worker thread, which reports each
stage (download with bytes and rate, weights, warm-up) to a :class:`LoadProgress` and stops
when the reader quits; ``--export`` uses :func:`open_engine` with progress bars on stderr.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

from engine.api import SpeechEngine, SynthesisRequest
from engine.errors import EngineError
from engine.sources import DEFAULT_MODEL, DownloadCancelled, ModelSource, Transfer

if TYPE_CHECKING:
    from engine.config import VibeVoiceConfig
    from engine.voices import VoiceCatalogue

log = logging.getLogger("vvreader.loader")

T = TypeVar("T")

WARM_UP_TEXT = "Hello."
WARM_UP_FRAMES = 3
"""The warm-up synthesis: a few frames trace the compiled functions of a frame (the text
window, the language models, the diffusion head, the decoder) before the first sentence."""
CANCEL_GRACE_SECONDS = 2.0
"""After a cancel, how long to wait for a download to stop (it stops at its next chunk and
deletes its partial file) before the reader exits anyway."""


class EngineUnavailable(Exception):
    """No usable model; the message says what to do."""


class LoadCancelled(Exception):
    """The reader quit while the engine was loading."""


class LoadProgress(Protocol):
    """What an :class:`EngineLoader` reports to; called on the loading thread."""

    def stage(self, what: str) -> None:
        """A new stage: "finding the model", "loading the weights", "warming up"."""

    def transfer(self, transfer: Transfer) -> None:
        """A download moved on; raises ``DownloadCancelled`` when it should stop."""

    @property
    def cancelled(self) -> bool:
        """The reader is quitting: stop as soon as possible."""


def check_model(model: str | None) -> None:
    """Fail now, without downloading, if ``model`` cannot work: not a model folder nor a
    repository id, or not downloaded while downloads are off (``HF_HUB_OFFLINE``).

    Raises:
        EngineUnavailable: what is wrong and what to do.
    """
    from engine.sources import DownloadError, offline_mode, resolve_model

    try:
        resolve_model(model or None, offline=True, tokenizer=False)
    except DownloadError as err:
        if offline_mode():
            raise EngineUnavailable(str(err)) from None
    except EngineError as err:
        raise EngineUnavailable(str(err)) from None


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


class EngineLoader:
    """Opens the engine for the reader, reporting to a :class:`LoadProgress`: finds the
    model (downloading what is missing), fetches the first voice if it is a preset not
    cached yet, loads the weights and warms up with one short synthesis.

    Args:
        model: a model folder or Hugging Face repository id ("" or None: the default).
        voice: the voice reading starts with ("": the model's first voice, else the
            preset catalogue's default).
        quantize, cfg_scale, steps: as the reader will use them (the warm-up uses the same
            steps, so that the compiled functions it traces are the ones used).
        cache_dir, endpoint: the Hugging Face cache and Hub address (default: theirs).
        timeout: seconds the weights may take to load.
        warm_up: run the warm-up synthesis.
    """

    def __init__(
        self,
        model: str | None,
        voice: str = "",
        *,
        quantize: int | None = None,
        cfg_scale: float = 1.5,
        steps: int = 5,
        cache_dir: str | Path | None = None,
        endpoint: str | None = None,
        timeout: float = 600.0,
        warm_up: bool = True,
    ) -> None:
        self.model = model or None
        self.voice = voice
        """The voice reading starts with (settled once the model is found)."""
        self.quantize = quantize
        self.cfg_scale = cfg_scale
        self.steps = steps
        self.cache_dir = cache_dir
        self.endpoint = endpoint
        self.timeout = timeout
        self.warm_up = warm_up
        self.source: ModelSource | None = None
        self.timings: dict[str, float] = {}
        """Seconds each stage took (for logs and measurements)."""
        self._catalogue: VoiceCatalogue | None = None

    def __call__(self, progress: LoadProgress) -> SpeechEngine:
        """Open the engine (on a worker thread; blocks until it is warm).

        Raises:
            EngineUnavailable: the model or the first voice cannot be had (the message
                says what to do).
            LoadCancelled: ``progress.cancelled`` became true.
        """
        t0 = time.monotonic()
        progress.stage("finding the model")
        self.source = run_cancellable(lambda: self._resolve(progress), progress)
        t1 = time.monotonic()
        self.timings["find"] = t1 - t0
        progress.stage("loading the weights")
        engine = self._load(self.source, progress)
        t2 = time.monotonic()
        self.timings["weights"] = t2 - t1
        if self.warm_up:
            progress.stage("warming up")
            self._warm_up(engine, progress)
            self.timings["warm-up"] = time.monotonic() - t2
        log.info("engine ready: %s", ", ".join(f"{k} {v:.2f} s" for k, v in self.timings.items()))
        return engine

    # ------------------------------------------------------------------ stages
    def _resolve(self, progress: LoadProgress) -> ModelSource:
        from engine.config import VibeVoiceConfig
        from engine.sources import resolve_model

        try:
            source = resolve_model(self.model, cache_dir=self.cache_dir, endpoint=self.endpoint,
                                   progress=progress.transfer)
        except DownloadCancelled:
            raise LoadCancelled from None
        except EngineError as err:
            raise EngineUnavailable(str(err)) from None
        self.source = source
        try:
            self._catalogue = _catalogue_for(
                VibeVoiceConfig.from_file(source.folder / "config.json"))
        except EngineError:  # the engine says what is wrong with config.json when it loads
            self._catalogue = None
        if not self.voice:
            if source.voices:
                self.voice = min(source.voices)
            elif self._catalogue is not None:
                self.voice = self._catalogue.default
        if self.voice_missing(self.voice):
            self.fetch_voice(self.voice, progress)
        return source

    def _load(self, source: ModelSource, progress: LoadProgress) -> SpeechEngine:
        from engine.stream import MLXEngine

        engine = MLXEngine(source, quantize=self.quantize)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                engine.wait_ready(0.1)
                return engine
            except TimeoutError:
                if progress.cancelled:
                    engine.close(timeout=0)
                    raise LoadCancelled from None
                if time.monotonic() > deadline:
                    engine.close(timeout=0)
                    raise EngineUnavailable(
                        f"the model did not load in {self.timeout:.0f} s") from None
            except EngineError as err:
                engine.close()
                raise EngineUnavailable(str(err)) from None

    def _warm_up(self, engine: SpeechEngine, progress: LoadProgress) -> None:
        request = SynthesisRequest(text=WARM_UP_TEXT, voice=self.voice,
                                   cfg_scale=self.cfg_scale, steps=self.steps,
                                   max_frames=WARM_UP_FRAMES)
        stream = engine.synthesize(request)

        def run() -> None:
            for _ in stream:
                pass

        try:
            run_cancellable(run, progress, on_cancel=stream.cancel)
        except LoadCancelled:
            engine.close()
            raise
        except Exception as err:  # the first sentence will say it again, as a notification
            log.info("warm-up failed: %s", err)

    # ------------------------------------------------------------------ preset voices
    def voice_missing(self, name: str) -> bool:
        """``name`` is a preset voice that fits the model and is not downloaded yet."""
        from engine.sources import cached_voices

        if not name or self.source is None or name in self.source.voices:
            return False
        if self._catalogue is None or self._catalogue.get(name) is None:
            return False
        return name not in cached_voices()

    def fetch_voice(self, name: str, progress: LoadProgress) -> None:
        """Download preset voice ``name`` (reporting to ``progress``).

        Raises:
            EngineUnavailable: it cannot be downloaded (the message says what to do).
            LoadCancelled: ``progress.cancelled`` became true.
        """
        from engine.sources import fetch_voice, transfer_progress

        report = transfer_progress(f"voice {name}", f"{name}.pt", progress.transfer)
        try:
            fetch_voice(name, progress=report)
        except DownloadCancelled:
            raise LoadCancelled from None
        except EngineError as err:
            raise EngineUnavailable(str(err)) from None


def run_cancellable(
    work: Callable[[], T], progress: LoadProgress, on_cancel: Callable[[], None] | None = None
) -> T:
    """Run ``work`` on a daemon thread and wait for it, returning soon after
    ``progress.cancelled`` becomes true (a stalled network read cannot hold up the exit)."""
    result: list[T] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            result.append(work())
        except BaseException as e:
            error.append(e)

    thread = threading.Thread(target=run, name="vvreader-load", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.1)
        if progress.cancelled and thread.is_alive():
            if on_cancel is not None:
                on_cancel()
            thread.join(CANCEL_GRACE_SECONDS)
            raise LoadCancelled
    if error:
        if isinstance(error[0], DownloadCancelled):
            raise LoadCancelled from None
        raise error[0]
    return result[0]


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
