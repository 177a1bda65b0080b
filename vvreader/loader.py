"""Opening the speech engine: the one place in vvreader that builds the real engine.

The model is a local folder or a Hugging Face repository id (default
``microsoft/VibeVoice-Realtime-0.5B``), fetched once into the Hugging Face cache; preset
voices are fetched on first use into the engine's voice cache (``engine.voice_fetch``).

The reader app calls a :class:`Loader` (the real one is :class:`EngineLoader`) on worker
threads: it reports each stage (download with bytes and rate, weights, warm-up) to a
:class:`LoadProgress` and stops soon after that says the reader is quitting. ``--export``
uses :func:`open_engine`, whose download progress the command line draws.

Nothing here draws or prints: the app and the command line say it to the user.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

from engine.api import BatchSpeechEngine, SpeechEngine, SynthesisRequest, Transfer, TransferReport
from engine.errors import DownloadCancelled, DownloadError, EngineError
from engine.hub import ModelSource, offline_mode, resolve_model
from engine.voice_fetch import Progress, cached_voices, fetch_voice, transfer_progress

if TYPE_CHECKING:
    from engine.voices import VoiceCatalogue

__all__ = [
    "EngineLoader",
    "EngineUnavailable",
    "LoadCancelled",
    "LoadProgress",
    "Loader",
    "check_model",
    "open_engine",
    "prepare_model",
    "preset_catalogue",
]

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
    """What a :class:`Loader` reports to; called on the loading thread."""

    def stage(self, what: str) -> None:
        """A new stage: "finding the model", "loading the weights", "warming up"."""

    def transfer(self, transfer: Transfer) -> None:
        """A download moved on."""

    @property
    def cancelled(self) -> bool:
        """The reader is quitting: stop as soon as possible."""


class Loader(Protocol):
    """What the reader app asks of whatever opens its engine (from worker threads)."""

    @property
    def first_voice(self) -> str:
        """The voice reading starts with when none is set (known once :meth:`open` has
        returned; "" when the engine has none to offer)."""

    def open(self, progress: LoadProgress) -> SpeechEngine:
        """Open the engine, ready to speak.

        Raises:
            EngineUnavailable: no usable model (the message says what to do).
            LoadCancelled: ``progress.cancelled`` became true.
        """

    def voice_missing(self, name: str) -> bool:
        """``name`` must be downloaded (:meth:`fetch_voice`) before it can speak."""

    def fetch_voice(self, name: str, progress: LoadProgress) -> None:
        """Download voice ``name``, reporting to ``progress``.

        Raises:
            EngineUnavailable: it cannot be downloaded (the message says what to do).
            LoadCancelled: ``progress.cancelled`` became true.
        """


def check_model(model: str | None) -> None:
    """Fail now, without downloading, if ``model`` cannot work: not a model folder nor a
    repository id, or not downloaded while downloads are off (``HF_HUB_OFFLINE``).

    Raises:
        EngineUnavailable: what is wrong and what to do.
    """
    try:
        resolve_model(model or None, offline=True, tokenizer=False)
    except DownloadError as err:
        if offline_mode():
            raise EngineUnavailable(str(err)) from None
    except EngineError as err:
        raise EngineUnavailable(str(err)) from None


def preset_catalogue(source: ModelSource) -> VoiceCatalogue | None:
    """The preset voices' catalogue if they fit the model of ``source``.

    Raises:
        EngineError: the model's config.json or the catalogue cannot be read.
    """
    from engine.config import VibeVoiceConfig
    from engine.voices import fitting_catalogue

    return fitting_catalogue(VibeVoiceConfig.from_file(source.folder / "config.json"))


def prepare_model(
    model: str | None,
    voice: str | None = None,
    progress_bar: Callable[[str], Progress] | None = None,
) -> ModelSource:
    """Find the model (downloading it if needed) and the voice the reader starts with.

    Args:
        model: a model folder or a Hugging Face repository id; None or "" for the default.
        voice: the voice that will be used first: when it is a preset voice (or unset, and
            the model ships no voices of its own) and not cached yet, it is fetched now.
        progress_bar: makes the progress callback of a download, given its label; when
            given, the Hub's downloads show huggingface_hub's own bars (on stderr).

    Raises:
        EngineUnavailable: the model or the voice is missing and cannot be downloaded
            (one paragraph: what is missing, what to run, how to use a local folder).
    """
    try:
        source = resolve_model(model or None, progress=progress_bar is not None)
        if not voice or not Path(voice).expanduser().is_file():
            _prefetch_voice(source, voice or "", progress_bar)
    except EngineError as err:
        raise EngineUnavailable(str(err)) from None
    return source


def _prefetch_voice(
    source: ModelSource, voice: str, progress_bar: Callable[[str], Progress] | None
) -> None:
    from engine.voices import default_voice

    if (voice or default_voice(source.voices, None)) in source.voices:
        return  # the model's own voice
    catalogue = preset_catalogue(source)
    name = voice or default_voice(source.voices, catalogue)
    if catalogue is not None and catalogue.get(name) is not None:
        fetch_voice(name, progress=progress_bar(f"voice {name}") if progress_bar else None)


def open_engine(
    model: str | ModelSource | None,
    timeout: float = 600.0,
    quantize: int | None = None,
    progress_bar: Callable[[str], Progress] | None = None,
) -> BatchSpeechEngine:
    """Load the model on an engine thread and wait until it is ready.

    Args:
        model: a model folder, a Hugging Face repository id, a resolved
            :class:`ModelSource`, or None/"" for the default model.
        timeout: seconds to wait for the model to load.
        quantize: 8 or 4 to quantize the language model on load.
        progress_bar: as for :func:`prepare_model` (downloads of a model not resolved yet).

    Raises:
        EngineUnavailable: the model cannot be found, downloaded or loaded.
    """
    if isinstance(model, ModelSource):
        source = model
    else:
        source = prepare_model(model, progress_bar=progress_bar)
    from engine.stream import MLXEngine

    engine = MLXEngine(source, quantize=quantize)
    try:
        engine.wait_ready(timeout)
    except (EngineError, TimeoutError) as err:
        engine.close()
        raise EngineUnavailable(str(err)) from None
    return engine


class EngineLoader:
    """The reader's :class:`Loader`: finds the model (downloading what is missing),
    fetches the first voice if it is a preset not cached yet, loads the weights and warms
    up with one short synthesis.

    Args:
        model: a model folder or Hugging Face repository id ("" or None: the default).
        voice: the voice reading starts with ("": the engine's default voice).
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
        self.first_voice = voice
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

    def open(self, progress: LoadProgress) -> SpeechEngine:
        """Open the engine (on a worker thread; blocks until it is warm).

        Raises:
            EngineUnavailable: the model or the first voice cannot be had (the message
                says what to do).
            LoadCancelled: ``progress.cancelled`` became true.
        """
        t0 = time.monotonic()
        progress.stage("finding the model")
        self.source = _run_cancellable(lambda: self._resolve(progress), progress)
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
        from engine.voices import default_voice

        try:
            source = resolve_model(
                self.model,
                cache_dir=self.cache_dir,
                endpoint=self.endpoint,
                progress=_reporter(progress),
            )
        except DownloadCancelled:
            raise LoadCancelled from None
        except EngineError as err:
            raise EngineUnavailable(str(err)) from None
        self.source = source
        try:
            self._catalogue = preset_catalogue(source)
        except EngineError:  # the engine says what is wrong with config.json when it loads
            self._catalogue = None
        self.first_voice = self.first_voice or default_voice(source.voices, self._catalogue)
        if self.voice_missing(self.first_voice):
            self._fetch_voice(self.first_voice, progress)
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
                        f"the model did not load in {self.timeout:.0f} s"
                    ) from None
            except EngineError as err:
                engine.close()
                raise EngineUnavailable(str(err)) from None

    def _warm_up(self, engine: SpeechEngine, progress: LoadProgress) -> None:
        request = SynthesisRequest(
            text=WARM_UP_TEXT,
            voice=self.first_voice,
            cfg_scale=self.cfg_scale,
            steps=self.steps,
            max_frames=WARM_UP_FRAMES,
        )
        stream = engine.synthesize(request)

        def run() -> None:
            for _ in stream:
                pass

        try:
            _run_cancellable(run, progress, on_cancel=stream.cancel)
        except LoadCancelled:
            engine.close()
            raise
        except Exception as err:  # the first sentence will say it again, as a notification
            log.info("warm-up failed: %s", err)

    # ------------------------------------------------------------------ preset voices
    def voice_missing(self, name: str) -> bool:
        """``name`` is a preset voice that fits the model and is not downloaded yet."""
        if not name or self.source is None or name in self.source.voices:
            return False
        if self._catalogue is None or self._catalogue.get(name) is None:
            return False
        return name not in cached_voices()

    def fetch_voice(self, name: str, progress: LoadProgress) -> None:
        """Download preset voice ``name``, reporting to ``progress``; returns soon after
        ``progress.cancelled`` becomes true.

        Raises:
            EngineUnavailable: it cannot be downloaded (the message says what to do).
            LoadCancelled: ``progress.cancelled`` became true.
        """
        _run_cancellable(lambda: self._fetch_voice(name, progress), progress)

    def _fetch_voice(self, name: str, progress: LoadProgress) -> None:
        report = transfer_progress(f"voice {name}", f"{name}.pt", _reporter(progress))
        try:
            fetch_voice(name, progress=report)
        except DownloadCancelled:
            raise LoadCancelled from None
        except EngineError as err:
            raise EngineUnavailable(str(err)) from None


def _reporter(progress: LoadProgress) -> TransferReport:
    """Forwards a download's reports to ``progress``, and stops the download (at its next
    chunk) once ``progress.cancelled``."""

    def report(transfer: Transfer) -> None:
        if progress.cancelled:
            raise DownloadCancelled("the reader quit")
        progress.transfer(transfer)

    return report


def _run_cancellable(
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
