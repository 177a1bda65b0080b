"""Test doubles: a scripted speech engine, an engine held to a modelled speed (one stream
and batches), a loader that opens an engine, and an output that records what it played."""

from __future__ import annotations

import queue
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from engine.api import (
    SAMPLE_RATE,
    AudioChunk,
    BatchSpeechEngine,
    SpeechEngine,
    SynthesisRequest,
    SynthesisStream,
)
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
        self.batches: list[list[SynthesisRequest]] = []

    max_batch = 4
    identity = "fake"

    def synthesize(self, request: SynthesisRequest) -> FakeStream:
        self.requests.append(request)
        return FakeStream(self, request)

    def synthesize_many(self, requests: Sequence[SynthesisRequest]) -> list[FakeStream]:
        """Each request's stream as ``synthesize`` gives it (made as it is read); the
        requests are kept in :attr:`batches` too."""
        self.batches.append(list(requests))
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


class _PacedStream:
    """One request's chunks as :class:`PacedEngine` releases them."""

    def __init__(self, inner: SynthesisStream) -> None:
        self.inner = inner
        self.chunks: queue.Queue[AudioChunk | BaseException | None] = queue.Queue()
        self.delivered = 0
        """Chunks made so far."""
        self.ended = False
        """All of it was made."""
        self._cancel = threading.Event()

    def cancel(self) -> None:
        self._cancel.set()
        self.inner.cancel()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def __iter__(self) -> Iterator[AudioChunk]:
        while not self._cancel.is_set():
            try:
                item = self.chunks.get(timeout=0.02)
            except queue.Empty:
                continue
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item


@dataclass
class _PacedJob:
    streams: list[_PacedStream]
    batch: bool
    """From ``synthesize_many`` (joins a running batch, as the engine's batches do)."""


class PacedEngine:
    """Another engine's audio at a modelled speed: ``speed`` x real time for one stream,
    and a frame of a batch of B utterances costing ``1 + row_cost * (B - 1)`` frames of
    one stream (the weights are read once per frame, each row more costs little: at
    ``row_cost`` 1/3 a batch of 4 makes twice the audio of one stream a second, each of its
    utterances at 0.5x the one-stream speed; at 1 a batch gains nothing).

    Requests are served as the MLX engine serves them: ``synthesize`` alone, in arrival
    order; ``synthesize_many`` as one batch, which later ``synthesize_many`` requests join
    between two frames, up to ``max_batch``. The inner engine makes the audio (faster than
    the model: its chunks are taken one frame of the model at a time); every utterance's
    audio is the inner engine's."""

    def __init__(
        self, inner: BatchSpeechEngine, speed: float, row_cost: float, max_batch: int = 8
    ) -> None:
        self.inner, self.speed, self.row_cost, self.max_batch = inner, speed, row_cost, max_batch
        self.sample_rate = inner.sample_rate
        self.identity = inner.identity
        self.batch_sizes: list[int] = []
        """Utterances of each frame stepped (for the tests' reports)."""
        self.batches: list[list[_PacedStream]] = []
        """The streams of each ``synthesize_many`` call."""
        self._jobs: queue.Queue[_PacedJob | None] = queue.Queue()
        self._thread = threading.Thread(
            target=self._run, name="vvreader-test-paced-engine", daemon=True
        )
        self._thread.start()

    def frame_cost(self, streams: int) -> float:
        """Seconds a frame of ``streams`` utterances takes."""
        return HOP / SAMPLE_RATE / self.speed * (1 + self.row_cost * (streams - 1))

    def synthesize(self, request: SynthesisRequest) -> _PacedStream:
        stream = _PacedStream(self.inner.synthesize(request))
        self._jobs.put(_PacedJob([stream], batch=False))
        return stream

    def synthesize_many(self, requests: Sequence[SynthesisRequest]) -> list[_PacedStream]:
        streams = [_PacedStream(s) for s in self.inner.synthesize_many(requests)]
        self.batches.append(streams)
        if streams:
            self._jobs.put(_PacedJob(streams, batch=True))
        return streams

    def voices(self) -> list[str]:
        return self.inner.voices()

    def close(self) -> None:
        """Stop pacing (the inner engine stays open: its owner closes it)."""
        self._jobs.put(None)
        self._thread.join(5)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            waiting = list(job.streams)
            live: list[tuple[_PacedStream, Iterator[AudioChunk]]] = []
            last = time.monotonic()
            while waiting or live:
                while waiting and len(live) < self.max_batch:
                    s = waiting.pop(0)
                    live.append((s, iter(s.inner)))
                live = [(s, it) for s, it in live if not s.cancelled]
                if not live:
                    continue
                deadline = last + self.frame_cost(len(live))
                time.sleep(max(0.0, deadline - time.monotonic()))
                last = max(deadline, time.monotonic() - 0.005)  # late: the model is late too
                self.batch_sizes.append(len(live))
                for s, it in list(live):
                    if s.cancelled:  # leaves the batch, unfinished
                        live.remove((s, it))
                        continue
                    try:
                        s.chunks.put(next(it))
                        s.delivered += 1
                    except StopIteration:
                        s.ended = not s.cancelled
                        s.chunks.put(None)
                        live.remove((s, it))
                    except Exception as e:  # the inner engine's error reaches the reader
                        s.chunks.put(e)
                        s.chunks.put(None)
                        live.remove((s, it))
                if job.batch:
                    waiting += self._joining()

    def _joining(self) -> list[_PacedStream]:
        """The streams of the ``synthesize_many`` job at the head of the queue (taken off
        it), if any: they join the running batch."""
        with self._jobs.mutex:
            head = self._jobs.queue[0] if self._jobs.queue else None
            if head is None or not head.batch:
                return []
            self._jobs.queue.popleft()
        return list(head.streams)
