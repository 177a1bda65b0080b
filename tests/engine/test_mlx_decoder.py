"""The MLX latent decoder (engine/decode.py) decodes several streams in one call: each
stream's audio and state are what it gets decoding alone, whatever streams come along,
in whatever order, with groups of different lengths and batches padded or not."""

from __future__ import annotations

import dataclasses

import mlx.core as mx
import numpy as np
import pytest

from engine.batch import BatchGenerator
from engine.decode import MLXLatentDecoder
from engine.generate import FrameKernels
from engine.switches import Switches
from engine.weights import load_model
from tests.conftest import parity_model_dir
from tests.engine.test_batch import STEPS, _alone, _assert_same_frames, _items


def _close(got: np.ndarray, want: np.ndarray, rtol: float = 1e-5) -> None:
    assert got.shape == want.shape
    err = float(np.max(np.abs(got - want))) / max(float(np.max(np.abs(want))), 1e-30)
    assert err <= rtol, f"{err:.2e} > {rtol:.0e}"


@pytest.fixture(scope="module")
def model():
    return load_model(parity_model_dir("mid-shapes"))


@pytest.mark.parametrize("pad_batches", [False, True])
def test_streams_decoded_together_are_what_they_are_alone(model, pad_batches: bool) -> None:
    decoder = MLXLatentDecoder(model, pad_batches=pad_batches)
    dim = model.config.acoustic_vae_dim
    rng = np.random.default_rng(3)
    streams = 5
    # Rounds of (stream, frames): groups of different lengths in one call, streams
    # missing from a round, and the order changing between rounds.
    rounds = [
        [(0, 1), (1, 1), (2, 1), (3, 1), (4, 1)],
        [(0, 2), (1, 2), (2, 2), (3, 2), (4, 2)],
        [(0, 4), (1, 4), (2, 4), (3, 4), (4, 4)],
        [(3, 4), (0, 2), (4, 4), (1, 3)],
        [(0, 4), (1, 4), (3, 1), (4, 4), (2, 4)],
    ]
    latents = [[] for _ in range(streams)]
    together = [[] for _ in range(streams)]
    states = [decoder.init_state() for _ in range(streams)]
    for calls in rounds:
        xs = [rng.standard_normal((t, dim), dtype=np.float32) for _, t in calls]
        # Host rows and device arrays alike.
        xs = [x if k % 2 else mx.array(x) for k, x in enumerate(xs)]
        audio, new = decoder.decode_many(xs, [states[s] for s, _ in calls])
        for (s, t), x, a, st in zip(calls, xs, audio, new, strict=True):
            assert a.shape == (t, model.model.acoustic_tokenizer.decoder.cfg.hop_length)
            latents[s].append(np.asarray(x))
            together[s].append(a)
            states[s] = st
    for s in range(streams):
        state = decoder.init_state()
        for x, want in zip(latents[s], together[s], strict=True):
            alone, state = decoder.decode(x, state)
            _close(want, alone)


def test_each_utterance_of_a_batch_is_what_it_is_alone_with_the_mlx_decoder(tiny_model):
    """engine/batch.py with the MLX decoder (padded batches, as on a GPU): the batch's
    groups are decoded together, and every utterance's frames are those it gets alone."""
    from engine.tokenizer import TextTokenizer
    from engine.voices import load_voice

    model = load_model(tiny_model)
    switches = dataclasses.replace(Switches.from_environ(), native_decoder=False)
    kernels = FrameKernels(model, STEPS, switches)
    assert isinstance(kernels.decoder, MLXLatentDecoder)
    kernels.decoder.pad_batches = True
    voices = {p.stem: load_voice(p) for p in sorted((tiny_model / "voices").glob("*.safetensors"))}
    setup = (model, voices, TextTokenizer(tiny_model / "tokenizer.json"), kernels)
    items = _items(setup)
    batch = BatchGenerator(model, STEPS, kernels)
    got: dict[int, list] = {item.key: [] for item in items}
    batch.add(items[0])
    batch.add(items[1])
    tick = 0
    while len(batch):
        if tick == 2:
            batch.add(items[2])
        for key, frame in batch.step():
            got[key].append(frame)
        tick += 1
    for item in items:
        _assert_same_frames(got[item.key], _alone(setup, item))
