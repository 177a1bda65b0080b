"""The first frame comes out before it is fed back (generate_frames' early_first): the same
audio and latents as the frame-then-feedback order, sooner, and an EOS right after it
ends the stream."""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np
import pytest

from engine.generate import FrameKernels, generate_frames, seeded_noise
from engine.tokenizer import TextTokenizer
from engine.voices import load_voice
from engine.weights import load_model


@pytest.fixture(scope="module")
def setup(tiny_model):
    model = load_model(tiny_model)
    voice = load_voice(tiny_model / "voices" / "en-Carter_man.safetensors")
    ids = TextTokenizer(tiny_model / "tokenizer.json").encode("The quick brown fox jumps.")
    return model, voice, ids, FrameKernels(model, 4)


def _frames(setup, early: bool, n: int = 9, **kw) -> list:
    model, voice, ids, kernels = setup
    return list(
        generate_frames(
            model, voice, ids, steps=4, noise=seeded_noise(11, 32), max_frames=n,
            stop_at_eos=False, kernels=kernels, early_first=early, **kw,
        )
    )  # fmt: skip


def test_same_frames_in_either_order(setup) -> None:
    early, late = _frames(setup, True), _frames(setup, False)
    assert [f.index for f in early] == [f.index for f in late] == list(range(9))
    for a, b in zip(early, late, strict=True):
        np.testing.assert_array_equal(a.latent, b.latent)
        np.testing.assert_array_equal(a.audio, b.audio)
    # Only the first frame's EOS is unknown when it is handed out; the rest agree.
    assert math.isnan(early[0].eos_prob) and not math.isnan(late[0].eos_prob)
    assert [f.eos_prob for f in early[1:]] == [f.eos_prob for f in late[1:]]
    assert early[-1].is_last and early[-1].stop_reason == "frame_limit"


def test_first_frame_is_handed_out_before_its_feedback(setup) -> None:
    model, voice, ids, kernels = setup
    fed: list[int] = []
    feed = kernels.frames.feed

    def counting_feed(*args, **kw):
        fed.append(1)
        return feed(*args, **kw)

    kernels.frames.feed = counting_feed
    try:
        gen = generate_frames(
            model, voice, ids, steps=4, noise=seeded_noise(11, 32), max_frames=5,
            stop_at_eos=False, kernels=kernels,
        )  # fmt: skip
        first = next(gen)
        assert first.index == 0 and fed == []  # not fed back yet
        rest = list(gen)
    finally:
        del kernels.frames.feed
    assert fed == [1] and [f.index for f in rest] == [1, 2, 3, 4]


def test_eos_right_after_the_first_frame_ends_the_stream(tiny_model) -> None:
    model = load_model(tiny_model)
    # EOS certain from the first feedback on.
    model.tts_eos_classifier.fc2.bias = mx.full((1,), 30.0)
    voice = load_voice(tiny_model / "voices" / "en-Carter_man.safetensors")
    ids = TextTokenizer(tiny_model / "tokenizer.json").encode("Hello there.")
    kernels = FrameKernels(model, 3)

    def run(early: bool) -> list:
        return list(
            generate_frames(
                model, voice, ids, steps=3, noise=seeded_noise(2, 32), kernels=kernels,
                early_first=early,
            )
        )  # fmt: skip

    early, late = run(True), run(False)
    assert len(early) == len(late) == 1
    np.testing.assert_array_equal(early[0].audio, late[0].audio)
    assert late[0].is_last and late[0].stop_reason == "eos"
    assert not early[0].is_last  # handed out before the EOS was read


def test_a_one_frame_limit_still_marks_the_frame_last(setup) -> None:
    (frame,) = _frames(setup, True, n=1)
    assert frame.is_last and frame.stop_reason == "frame_limit"
    assert not math.isnan(frame.eos_prob)
