"""The engine thread serving several requests as one batch (MLXEngine.synthesize_many)."""

from __future__ import annotations

import numpy as np
import pytest

from engine.api import SynthesisRequest
from engine.errors import RequestError, VoiceError
from engine.stream import MLXEngine


@pytest.fixture(scope="module")
def engine(tiny_model):
    # Two at a time: a third request waits for room, then joins the running batch.
    e = MLXEngine(tiny_model, max_batch=2)
    e.wait_ready(60)
    yield e
    e.close()


def _requests() -> list[SynthesisRequest]:
    return [
        SynthesisRequest(text="Read me a story.", voice="en-Emma_woman", seed=1, max_frames=9),
        SynthesisRequest(
            text="A longer sentence, with several more words to read.",
            voice="en-Davis_man",
            cfg_scale=2.2,
            seed=2,
            max_frames=14,
        ),
        SynthesisRequest(text="Hello.", voice="en-Carter_man", seed=3, max_frames=5),
    ]


def _close(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    err = float(np.max(np.abs(got - want))) / max(float(np.max(np.abs(want))), 1e-30)
    assert err <= 1e-4, err


def test_each_request_of_a_batch_gets_its_own_audio(engine) -> None:
    requests = _requests()
    handles = engine.synthesize_many(requests)
    assert len(handles) == 3
    chunks = [list(h) for h in handles]
    for req, got in zip(requests, chunks, strict=True):
        assert [c.frame_index for c in got] == list(range(req.max_frames))
        assert got[-1].is_last and got[-1].stop_reason == "frame_limit"
        alone = list(engine.synthesize(req))
        assert got[-1].total_tokens == alone[-1].total_tokens
        assert [c.tokens_consumed for c in got] == [c.tokens_consumed for c in alone]
        _close(np.concatenate([c.audio for c in got]), np.concatenate([c.audio for c in alone]))


def test_a_bad_request_gets_its_error_and_the_others_their_audio(engine) -> None:
    good, _, short = _requests()
    handles = engine.synthesize_many(
        [good, SynthesisRequest(text="x", voice="no-such-voice"), short,
         SynthesisRequest(token_ids=(1, 10**9), max_frames=3)]
    )  # fmt: skip
    assert len(list(handles[0])) == good.max_frames
    with pytest.raises(VoiceError):
        list(handles[1])
    assert len(list(handles[2])) == short.max_frames
    with pytest.raises(RequestError):
        list(handles[3])


def test_a_cancelled_request_leaves_the_batch(engine) -> None:
    first, second, _ = _requests()
    long_ = SynthesisRequest(text=first.text, voice=first.voice, seed=1, max_frames=200)
    handles = engine.synthesize_many([long_, second])
    got = []
    for chunk in handles[0]:
        got.append(chunk)
        if len(got) == 3:
            handles[0].cancel()
    assert len(got) < 200 and not any(c.is_last for c in got)
    assert len(list(handles[1])) == second.max_frames


def test_requests_of_other_step_counts_are_served_too(engine) -> None:
    a, b, _ = _requests()
    other = SynthesisRequest(text=b.text, voice=b.voice, seed=2, max_frames=6, steps=3)
    handles = engine.synthesize_many([a, other])
    assert len(list(handles[0])) == a.max_frames
    got = np.concatenate([c.audio for c in handles[1]])
    _close(got, np.concatenate([c.audio for c in engine.synthesize(other)]))


def test_a_second_batch_joins_and_every_request_completes(engine) -> None:
    first = engine.synthesize_many(_requests()[:2])
    second = engine.synthesize_many(_requests()[2:])
    assert [len(list(h)) for h in first + second] == [9, 14, 5]


def test_an_empty_batch_gives_no_handles(engine) -> None:
    assert engine.synthesize_many([]) == []


def test_the_default_batch_is_eight_here_and_what_a_cuda_gpu_holds(tiny_model) -> None:
    """Not told a batch size, the engine settles it when its model has loaded: 8 on this
    CPU; on a CUDA GPU as many streams as its memory holds beside the model, up to 64."""
    from engine.stream import CUDA_BATCH, DEFAULT_BATCH, default_max_batch

    e = MLXEngine(tiny_model)
    try:
        e.wait_ready(60)
        assert e.max_batch == DEFAULT_BATCH == 8
    finally:
        e.close()
    gib = 2**30
    assert default_max_batch(False, 80 * gib) == 8  # a CPU's memory is not the GPU's
    assert default_max_batch(True, 80 * gib) == CUDA_BATCH == 64
    assert default_max_batch(True, 16 * gib) == 40  # (16 - 6) GB at 0.25 GB a stream
    assert default_max_batch(True, 6 * gib) == 8  # never below the CPU's
    assert default_max_batch(True, None) == 8  # memory unknown
