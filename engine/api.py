"""What crosses the engine boundary: requests, audio chunks, the engine protocol and
download progress.

Imports neither MLX nor anything heavy, so the app and its tests can use these types
without loading a model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

SAMPLE_RATE = 24_000


@dataclass(frozen=True)
class SynthesisRequest:
    """One utterance to synthesise."""

    text: str | None = None
    """Text to speak (tokenised by the engine); or give ``token_ids``."""
    token_ids: tuple[int, ...] | None = None
    """Token ids to speak, bypassing the tokenizer."""
    voice: str = ""
    """A voice name known to the engine, or a path to a .safetensors/.pt voice file."""
    cfg_scale: float = 1.5
    """Classifier-free guidance scale (1.3-3.0 is the useful range)."""
    steps: int = 5
    """Diffusion steps per frame (>= 1)."""
    seed: int = 0
    """Noise seed: the same request with the same seed gives the same audio."""
    max_frames: int | None = None
    """Frame limit (runaway guard); None derives it from the token count."""


@dataclass(frozen=True)
class AudioChunk:
    """One decoded speech frame (3200 samples for the real model)."""

    audio: npt.NDArray[np.float32]
    """Mono float32 samples at ``SAMPLE_RATE``."""
    frame_index: int
    tokens_consumed: int
    """Text tokens the model had read when this frame was made."""
    total_tokens: int
    is_last: bool = False
    stop_reason: str | None = None
    """On the last chunk: "eos", "frame_limit" or "context"."""


@runtime_checkable
class SynthesisStream(Protocol):
    """Iterating yields chunks as they are decoded; ``cancel`` stops it promptly."""

    def __iter__(self) -> Iterator[AudioChunk]: ...

    def cancel(self) -> None: ...

    @property
    def cancelled(self) -> bool: ...


@runtime_checkable
class SpeechEngine(Protocol):
    """A streaming TTS engine. Implementations must be safe to call from any thread."""

    sample_rate: int

    def synthesize(self, request: SynthesisRequest) -> SynthesisStream: ...

    def voices(self) -> list[str]: ...

    def close(self) -> None: ...


@runtime_checkable
class BatchSpeechEngine(SpeechEngine, Protocol):
    """An engine that also generates several requests together, as one batch."""

    max_batch: int
    """The most requests generated together; more wait for room."""

    def synthesize_many(self, requests: Sequence[SynthesisRequest]) -> list[SynthesisStream]:
        """One stream per request, each its own request's audio (the same as
        ``synthesize`` gives, within float32 rounding)."""
        ...

    @property
    def identity(self) -> str:
        """What, besides a request, makes the audio: the model's files and how they are
        loaded. Equal identities give equal audio for equal requests."""
        ...


@dataclass(frozen=True)
class Transfer:
    """Where a download stands (numbers only: the app words them)."""

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


TransferReport = Callable[[Transfer], None]
"""Called (on the downloading thread) with the state of a download at every chunk; may
raise :class:`engine.errors.DownloadCancelled` to stop it."""
