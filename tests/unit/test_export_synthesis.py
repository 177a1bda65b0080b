"""The export's synthesis: in the plan's order whatever order the engine ends utterances
in, a bounded window of requests in flight, the work folder's audio never asked for again,
the requests in flight cancelled when the export stops."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

import numpy as np

from engine.api import AudioChunk, SynthesisRequest
from vvreader.export.store import UtteranceStore
from vvreader.export.synthesis import audio_in_order


class _Stream:
    def __init__(self, n: int) -> None:
        self.n = n
        self.done = threading.Event()
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def __iter__(self) -> Iterator[AudioChunk]:
        assert self.done.wait(10)
        yield AudioChunk(np.full(100, self.n / 100, np.float32), 0, 0, 0, is_last=True)


class OutOfOrderEngine:
    """Each batch's utterances end last first (the engine thread is a timer here)."""

    sample_rate = 24_000
    identity = "out-of-order"

    def __init__(self, max_batch: int) -> None:
        self.max_batch = max_batch
        self.asked: list[list[int]] = []
        self.streams: dict[int, _Stream] = {}

    def synthesize_many(self, requests: Sequence[SynthesisRequest]) -> list[_Stream]:
        ns = [int(r.text or "") for r in requests]
        self.asked.append(ns)
        streams = [_Stream(n) for n in ns]
        self.streams.update(zip(ns, streams, strict=True))
        for delay, stream in enumerate(reversed(streams)):
            threading.Timer(0.01 * delay, stream.done.set).start()
        return streams

    def synthesize(self, request: SynthesisRequest) -> _Stream:
        return self.synthesize_many([request])[0]

    def voices(self) -> list[str]:
        return []

    def close(self) -> None:
        pass


def _requests(n: int) -> tuple[list[SynthesisRequest], list[str]]:
    return [SynthesisRequest(text=str(i)) for i in range(n)], [f"k{i}" for i in range(n)]


def test_audio_comes_in_order_with_a_bounded_window(tmp_path) -> None:
    engine = OutOfOrderEngine(max_batch=2)
    requests, keys = _requests(20)
    with UtteranceStore(tmp_path / "work") as store:
        got = []
        for made in audio_in_order(engine, requests, keys, store, window=5):
            got.append(made.position)
            assert made.fresh
            assert abs(made.audio[0] - made.position / 100) <= 0.5 / 32767  # as stored
            # Asked for at most 5 beyond what has been handed out.
            assert sum(len(a) for a in engine.asked) <= made.position + 1 + 5
        assert got == list(range(20))
        assert engine.asked[0] == [0, 1, 2, 3, 4]  # the first window, as one batch
        assert sorted(sum(engine.asked, [])) == list(range(20))
        assert store.count() == 20


def test_the_work_folders_audio_is_not_made_again(tmp_path) -> None:
    engine = OutOfOrderEngine(max_batch=4)
    requests, keys = _requests(6)
    with UtteranceStore(tmp_path / "work") as store:
        for i in (0, 2, 3):
            store.put(keys[i], np.full(50, 0.5, np.float32))
        made = list(audio_in_order(engine, requests, keys, store))
    assert [m.position for m in made] == list(range(6))
    assert [m.fresh for m in made] == [False, True, False, False, True, True]
    assert engine.asked == [[1, 4, 5]]
    assert len(made[0].audio) == 50 and len(made[1].audio) == 100


def test_stopping_cancels_the_requests_in_flight(tmp_path) -> None:
    engine = OutOfOrderEngine(max_batch=2)
    requests, keys = _requests(10)
    with UtteranceStore(tmp_path / "work") as store:
        made = audio_in_order(engine, requests, keys, store, window=4)
        assert next(made).position == 0
        made.close()  # the export stops (Ctrl-C, an error)
    assert sorted(engine.streams) == [0, 1, 2, 3]  # one window
    assert [engine.streams[n].cancelled for n in range(4)] == [False, True, True, True]


def test_the_window_follows_the_engines_batch_once_it_is_settled(tmp_path) -> None:
    """An engine settles its batch size when its model has loaded (engine/stream.py): the
    window grows with it."""
    engine = OutOfOrderEngine(max_batch=1)
    requests, keys = _requests(30)
    with UtteranceStore(tmp_path / "work") as store:
        made = audio_in_order(engine, requests, keys, store)
        assert next(made).position == 0
        assert engine.asked == [[0, 1, 2, 3]]  # 4 x 1
        engine.max_batch = 4
        assert next(made).position == 1
        assert engine.asked[1] == list(range(4, 17))  # topped up to 4 x 4 in flight
        assert [m.position for m in made] == list(range(2, 30))
