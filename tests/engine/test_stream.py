"""The engine thread: streaming, cancellation, errors, determinism, thread safety."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from engine.api import AudioChunk, SpeechEngine, SynthesisRequest
from engine.errors import EngineError, VoiceError
from engine.stream import MLXEngine

HOP = 3200


@pytest.fixture(scope="module")
def engine(tiny_model):
    e = MLXEngine(tiny_model)
    e.wait_ready(60)
    yield e
    e.close()


def test_engine_meets_the_protocol(engine) -> None:
    assert isinstance(engine, SpeechEngine)
    assert engine.voices() == ["en-Carter_man", "en-Davis_man", "en-Emma_woman", "en-Grace_woman"]


def test_chunks_stream_with_token_progress(engine) -> None:
    chunks = list(engine.synthesize(SynthesisRequest(text="Hello there. " * 3, max_frames=20)))
    assert all(isinstance(c, AudioChunk) for c in chunks)
    assert len(chunks) == 20
    assert all(c.audio.dtype == np.float32 and c.audio.shape == (HOP,) for c in chunks)
    assert [c.frame_index for c in chunks] == list(range(20))
    consumed = [c.tokens_consumed for c in chunks]
    assert consumed == sorted(consumed) and consumed[-1] == chunks[0].total_tokens > 5
    assert consumed[0] == 5  # the first window is 5 tokens
    assert chunks[-1].is_last and chunks[-1].stop_reason == "frame_limit"
    assert not any(c.is_last for c in chunks[:-1])
    assert all(np.isfinite(c.audio).all() for c in chunks)


def test_same_seed_same_audio_other_seed_other_audio(engine) -> None:
    def audio(seed: int, voice: str = "en-Emma_woman") -> np.ndarray:
        req = SynthesisRequest(text="Read me a story.", voice=voice, seed=seed, max_frames=8)
        return np.concatenate([c.audio for c in engine.synthesize(req)])

    a = audio(1)
    np.testing.assert_array_equal(a, audio(1))
    assert not np.allclose(a, audio(2))
    assert not np.allclose(a, audio(1, "en-Davis_man"))


def test_cfg_scale_and_steps_change_the_audio(engine) -> None:
    def audio(**kw) -> np.ndarray:
        req = SynthesisRequest(text="Read me a story.", max_frames=6, **kw)
        return np.concatenate([c.audio for c in engine.synthesize(req)])

    base = audio(cfg_scale=1.5, steps=5)
    assert not np.allclose(base, audio(cfg_scale=2.5, steps=5))
    assert not np.allclose(base, audio(cfg_scale=1.5, steps=2))
    assert len(audio(steps=1)) == 6 * HOP


def test_cancel_mid_way_frees_the_worker(engine) -> None:
    handle = engine.synthesize(SynthesisRequest(text="word " * 200, max_frames=2000))
    it = iter(handle)
    first = next(it)
    assert first.frame_index == 0
    handle.cancel()
    assert list(it) == []
    t0 = time.monotonic()
    chunks = list(engine.synthesize(SynthesisRequest(text="Next one.", max_frames=3)))
    elapsed = time.monotonic() - t0
    assert len(chunks) == 3
    # The cancelled request stopped within a frame or two; 2000 frames would take >20 s.
    assert elapsed < 5.0


def test_request_cancelled_before_it_starts_is_skipped(engine) -> None:
    blocker = engine.synthesize(SynthesisRequest(text="one two three", max_frames=10))
    skipped = engine.synthesize(SynthesisRequest(text="never", max_frames=10))
    skipped.cancel()
    assert len(list(blocker)) == 10
    assert list(skipped) == []


def test_unknown_voice_is_a_clear_error_and_the_engine_goes_on(engine) -> None:
    with pytest.raises(VoiceError, match="unknown voice 'nobody'.*en-Carter_man"):
        list(engine.synthesize(SynthesisRequest(text="hi", voice="nobody")))
    assert len(list(engine.synthesize(SynthesisRequest(text="hi", max_frames=2)))) == 2


def test_voice_by_path(engine, tiny_model) -> None:
    path = str(tiny_model / "voices" / "en-Grace_woman.safetensors")
    by_path = list(engine.synthesize(SynthesisRequest(text="hi", voice=path, max_frames=2)))
    by_name = list(
        engine.synthesize(SynthesisRequest(text="hi", voice="en-Grace_woman", max_frames=2))
    )
    np.testing.assert_array_equal(by_path[1].audio, by_name[1].audio)


def test_token_ids_bypass_the_tokenizer(engine) -> None:
    chunks = list(engine.synthesize(SynthesisRequest(token_ids=(40, 41, 42), max_frames=2)))
    assert chunks[0].total_tokens == 3


def test_requests_from_several_threads(engine) -> None:
    results: dict[int, int] = {}

    def worker(i: int) -> None:
        req = SynthesisRequest(text=f"Thread {i} speaking.", max_frames=4 + i)
        results[i] = len(list(engine.synthesize(req)))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == {0: 4, 1: 5, 2: 6}


def test_bad_model_folder_fails_at_wait_ready(tmp_path) -> None:
    e = MLXEngine(tmp_path)
    with pytest.raises(EngineError, match="config.json"):
        e.wait_ready(30)
    with pytest.raises(EngineError, match="config.json"):
        list(e.synthesize(SynthesisRequest(text="hi")))
    e.close()
    assert e.closed


def test_runaway_guard_is_configurable(tiny_model) -> None:
    e = MLXEngine(tiny_model, frames_per_token=0.5, extra_frames=2)
    e.wait_ready(60)
    chunks = list(e.synthesize(SynthesisRequest(text="word " * 20)))
    e.close()
    assert chunks[-1].stop_reason == "frame_limit"
    assert len(chunks) == int(0.5 * chunks[-1].total_tokens) + 2
