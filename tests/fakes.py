"""Test doubles: a scripted speech engine, a loader that opens it, and an output that
records what it played."""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from engine.api import SAMPLE_RATE, AudioChunk, SpeechEngine, SynthesisRequest
from vvreader.player import NullPlayer

HOP = 3200


def fake_audio(request: SynthesisRequest) -> np.ndarray:
    """What FakeEngine says for ``request``: one frame per 4 characters (at least 2), every
    sample a nonzero value derived from (text, voice, cfg, steps) and the frame number."""
    frames = max(2, len(request.text or "") // 4)
    tag = zlib.crc32(f"{request.text}|{request.voice}|{request.cfg_scale}|{request.steps}".encode())
    base = 0.1 + (tag % 1000) / 2000.0
    return np.concatenate([np.full(HOP, base + i * 1e-4, dtype=np.float32) for i in range(frames)])


class FakeStream:
    def __init__(self, engine: FakeEngine, request: SynthesisRequest) -> None:
        self.engine, self.request = engine, request
        self._cancel = threading.Event()

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def __iter__(self) -> Iterator[AudioChunk]:
        audio = fake_audio(self.request)
        n = len(audio) // HOP
        for i in range(n):
            if self._cancel.is_set():
                return
            time.sleep(self.engine.seconds_per_frame)
            yield AudioChunk(audio[i * HOP : (i + 1) * HOP], i, 0, 0, is_last=i == n - 1)


class FakeEngine:
    """Implements engine.api.BatchSpeechEngine; ``seconds_per_frame`` sets its speed (a frame
    is 3200 samples, 133 ms of audio)."""

    sample_rate = SAMPLE_RATE

    def __init__(self, seconds_per_frame: float = 0.0) -> None:
        self.seconds_per_frame = seconds_per_frame
        self.requests: list[SynthesisRequest] = []

    max_batch = 4
    identity = "fake"

    def synthesize(self, request: SynthesisRequest) -> FakeStream:
        self.requests.append(request)
        return FakeStream(self, request)

    def synthesize_many(self, requests: Sequence[SynthesisRequest]) -> list[FakeStream]:
        return [self.synthesize(r) for r in requests]

    def voices(self) -> list[str]:
        return ["a", "b"]

    def close(self) -> None:
        pass


class FakeLoader:
    """Implements ``vvreader.loader.Loader``: :meth:`open` returns what ``opener`` (given
    the LoadProgress) returns; no voice needs downloading. Its first voice is the engine's
    first, as the real loader's is the model's first voice."""

    def __init__(self, opener: Callable[[object], SpeechEngine]) -> None:
        self.opener = opener
        self.first_voice = ""

    def open(self, progress: object) -> SpeechEngine:
        engine = self.opener(progress)
        self.first_voice = next(iter(engine.voices()), "")
        return engine

    def voice_missing(self, name: str) -> bool:
        return False

    def fetch_voice(self, name: str, progress: object) -> None:
        raise AssertionError(f"{name}: FakeLoader has no voice to download")


class RecordingPlayer(NullPlayer):
    """A null sink that keeps every block it played (speed: ``rate`` x real time)."""

    def __init__(self, ring, clock, rate: float = 1.0) -> None:
        super().__init__(ring, clock)
        self.rate = rate
        self.played: list[np.ndarray] = []
        """The real samples played (underrun padding left out)."""
        self.underruns_at: list[int] = []
        """Ring positions where a block ran short while playing."""

    def fill(self, out: np.ndarray) -> None:
        before = self.ring.read
        was_paused = self.paused
        super().fill(out)
        got = self.ring.read - before
        if got:
            self.played.append(out[:got].copy())
        if not was_paused and got < len(out) and self.ring.read > 0:
            self.underruns_at.append(self.ring.read)

    def _run(self) -> None:  # faster than real time when rate > 1
        block = np.zeros(1024, dtype=np.float32)
        while not self._stop.is_set():
            self.fill(block)
            time.sleep(1024 / SAMPLE_RATE / self.rate)

    def recording(self) -> np.ndarray:
        return np.concatenate(self.played) if self.played else np.zeros(0, np.float32)
