"""A speech frame in C (engine/native_frames.py: the sampler of engine/native_head.py, the
TTS-LM step of engine/native_lm.py) against the MLX functions it replaces on Linux CPUs:
one step over caches of rows at different columns and positions, its boundary checks, the
sampler over frames of different CFG scales, whole utterances alone and in a batch, and
the switch."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from engine.batch import BatchItem, generate_batch
from engine.frame_backend import choose_frame_backend
from engine.generate import FrameKernels, generate_frames, seeded_noise
from engine.mlx_frames import MLXFrames
from engine.native_frames import NativeFrames, write_windows
from engine.native_head import NativeSampler
from engine.native_lm import NativeLMStep, load_library, unavailable_reason
from engine.sampler import sample_latent
from engine.steps import batch_pair_step, batch_text_window_step, batch_window_step
from engine.switches import Switches
from engine.tokenizer import TextTokenizer
from engine.voices import load_voice
from engine.weights import load_model
from tests.conftest import parity_model_dir

STEPS = 4


def _close(got: np.ndarray, want: np.ndarray, rtol: float) -> None:
    """max |got - want| <= rtol * max |want| (float32 sums in another order)."""
    assert got.shape == want.shape
    err = float(np.max(np.abs(got - want))) / max(float(np.max(np.abs(want))), 1e-30)
    assert err <= rtol, f"{err:.2e} > {rtol:.0e}"


@pytest.fixture(scope="module")
def tiny(tiny_model):
    model = load_model(tiny_model)
    model.fuse()
    voices = {p.stem: load_voice(p) for p in sorted((tiny_model / "voices").glob("*.safetensors"))}
    return model, voices, TextTokenizer(tiny_model / "tokenizer.json")


def test_the_library_loads_on_this_linux_cpu() -> None:
    """CI builds it (setup.py); everything below runs the C, never skips it."""
    assert load_library() is not None, unavailable_reason()


def _random_caches(model, rows: int, cap: int, seed: int):
    cfg = model.config.decoder
    rng = np.random.default_rng(seed)
    shape = (rows, cfg.kv_heads, cap, cfg.dim_per_head)
    keys = [
        mx.array(rng.standard_normal(shape, np.float32)) for _ in range(model.config.tts_layers)
    ]
    values = [mx.array(rng.standard_normal(shape, np.float32)) for _ in keys]
    # Each row its own history: a prefix of valid columns, a few holes (the masked columns
    # of a shorter prompt padded in a batch), its own write column and position.
    valid = np.zeros((rows, cap), bool)
    columns, positions = [], []
    for r in range(rows):
        used = int(rng.integers(1, cap - 1))
        valid[r, :used] = True
        valid[r, rng.integers(0, used, size=max(1, used // 5))] = False
        columns.append(used)
        positions.append(int(rng.integers(used, used + 40)))
    x = mx.array(rng.standard_normal((rows, cfg.hidden_size), np.float32))
    return x, keys, values, mx.array(valid), columns, positions


@pytest.mark.parametrize("case", ["tiny", "mid-shapes"])
@pytest.mark.parametrize("rows", [2, 6])
def test_one_step_in_c_is_mlx_s_step(case: str, rows: int, tiny) -> None:
    model = tiny[0] if case == "tiny" else load_model(parity_model_dir(case))
    model.fuse()
    stack = model.model.tts_language_model
    x, keys, values, valid, columns, positions = _random_caches(model, rows, 96, seed=rows)
    out, new_keys, new_values, new_valid = mx.compile(batch_pair_step(stack))(
        x, keys, values, valid, mx.array(columns, dtype=mx.int32),
        mx.array(positions, dtype=mx.int32),
    )  # fmt: skip
    got, k, v = NativeLMStep(stack)(x, keys, values, valid, columns, positions)
    _close(np.array(got), np.array(out), 1e-5)
    for layer in range(len(keys)):
        for r, c in enumerate(columns):
            _close(np.array(k[layer, r]), np.array(new_keys[layer][r, :, c]), 1e-5)
            _close(np.array(v[layer, r]), np.array(new_values[layer][r, :, c]), 1e-5)
    assert np.array(new_valid)[np.arange(rows), columns].all()


@pytest.mark.parametrize("case", ["tiny", "mid-shapes"])
def test_text_windows_in_c_are_mlx_s(case: str, tiny) -> None:
    """Windows of 5 tokens of utterances 0 and 2 of a batch of three (rows 0 and 4): each
    token attends to its row's cache and to the window's tokens up to its own."""
    model = tiny[0] if case == "tiny" else load_model(parity_model_dir(case))
    model.fuse()
    stack = model.model.tts_language_model
    _, keys, values, valid, columns, positions = _random_caches(model, 6, 80, seed=7)
    items, L = [0, 2], 5
    rows = [2 * i for i in items]
    x = mx.array(
        np.random.default_rng(3).standard_normal(
            (2, L, model.config.decoder.hidden_size), np.float32
        )
    )
    at = [columns[r] for r in rows]
    want, want_keys, want_values, want_valid = mx.compile(batch_window_step(stack))(
        x, keys, values, valid, mx.array(rows), mx.array(at), mx.array([positions[r] for r in rows])
    )
    got, new_k, new_v = NativeLMStep(stack)(
        x.reshape(2 * L, -1), keys, values, valid, [c + t for c in at for t in range(L)],
        [positions[r] + t for r in rows for t in range(L)],
        rows=[r for r in rows for _ in range(L)],
    )  # fmt: skip
    _close(np.array(got).reshape(2, L, -1), np.array(want), 1e-5)
    got_keys, got_values, got_valid = write_windows(
        keys, values, valid, new_k, new_v, mx.array(rows), mx.array(at)
    )
    for layer in range(len(keys)):
        _close(np.array(got_keys[layer]), np.array(want_keys[layer]), 1e-5)
        _close(np.array(got_values[layer]), np.array(want_values[layer]), 1e-5)
    assert (np.array(got_valid) == np.array(want_valid)).all()


@pytest.mark.parametrize("case", ["tiny", "mid-shapes"])
def test_the_text_lm_in_c_is_mlx_s(case: str, tiny) -> None:
    """Windows of 5 tokens of two utterances through the text LM (no final norm), their
    caches stacked, at different offsets: the outputs and the caches as MLX writes them."""
    model = tiny[0] if case == "tiny" else load_model(parity_model_dir(case))
    model.fuse()
    lm = model.model.language_model
    cfg = model.config.decoder
    rng = np.random.default_rng(11)
    shape = (2, cfg.kv_heads, 48, cfg.dim_per_head)
    keys = [mx.array(rng.standard_normal(shape, np.float32)) for _ in lm.layers]
    values = [mx.array(rng.standard_normal(shape, np.float32)) for _ in lm.layers]
    tokens = mx.array(rng.integers(0, cfg.vocab_size, size=(2, 5)), dtype=mx.int32)
    offsets = mx.array([9, 30], dtype=mx.int32)
    want, want_keys, want_values = mx.compile(batch_text_window_step(lm, lm.embed_tokens))(
        tokens, keys, values, offsets
    )
    frames = NativeFrames(model, STEPS)
    got, got_keys, got_values = frames.text_window_step(tokens, keys, values, offsets)
    _close(np.array(got), np.array(want), 1e-5)
    for layer in range(len(keys)):
        _close(np.array(got_keys[layer]), np.array(want_keys[layer]), 1e-5)
        _close(np.array(got_values[layer]), np.array(want_values[layer]), 1e-5)


def test_a_windows_queries_must_be_consecutive(tiny) -> None:
    model = tiny[0]
    step = NativeLMStep(model.model.tts_language_model)
    x, keys, values, valid, columns, _ = _random_caches(model, 2, 32, seed=2)
    x3 = mx.concatenate([x, x[:1]])
    c = columns[0]
    for rows, cols in (
        ([0, 1, 0], [c, columns[1], c + 1]),  # row 0 comes back after row 1
        ([0, 0, 1], [c, c + 2, columns[1]]),  # a gap in row 0's columns
        ([0, 0, 2], [c, c + 1, columns[1]]),  # no row 2
    ):
        with pytest.raises(IndexError):
            step(x3, keys, values, valid, cols, [5, 6, 7], rows=rows)
    good, _, _ = step(x3, keys, values, valid, [c, c + 1, columns[1]], [5, 6, 7], rows=[0, 0, 1])
    assert np.isfinite(np.array(good)).all()


@pytest.mark.parametrize("case", ["tiny", "mid-shapes"])
@pytest.mark.parametrize("frames", [1, 3])
def test_the_sampler_in_c_is_mlx_s(case: str, frames: int, tiny) -> None:
    model = tiny[0] if case == "tiny" else load_model(parity_model_dir(case))
    model.fuse()
    head = model.model.prediction_head
    mlx_frames = MLXFrames(model, STEPS)
    rng = np.random.default_rng(frames)
    hidden, latent = model.config.decoder.hidden_size, model.config.acoustic_vae_dim
    noise = mx.array(rng.standard_normal((frames, latent), np.float32))
    pos = mx.array(rng.standard_normal((frames, hidden), np.float32))
    neg = mx.array(rng.standard_normal((frames, hidden), np.float32))
    cfg = mx.array([[1.0 + 0.5 * i] for i in range(frames)], dtype=mx.float32)
    want = sample_latent(head, mlx_frames.schedule, noise, pos, neg, cfg, t_emb=mlx_frames.t_emb)
    got = NativeSampler(head, mlx_frames.schedule, mlx_frames.t_emb)(noise, pos, neg, cfg)
    _close(np.array(got), np.array(want), 1e-5)
    if frames == 1:  # a plain number as the scale
        alone = NativeSampler(head, mlx_frames.schedule, mlx_frames.t_emb)(noise, pos, neg, 1.0)
        _close(np.array(alone), np.array(got), 1e-6)


def test_columns_outside_the_caches_are_refused(tiny) -> None:
    model = tiny[0]
    step = NativeLMStep(model.model.tts_language_model)
    x, keys, values, valid, columns, positions = _random_caches(model, 2, 32, seed=1)
    for bad_columns, bad_positions in (
        ([0, 32], positions),
        ([-1, 0], positions),
        (columns, [3, -1]),
    ):
        with pytest.raises(IndexError):
            step(x, keys, values, valid, bad_columns, bad_positions)
    with pytest.raises(ValueError):
        step(x, keys, values, valid, columns[:1], positions[:1])


def test_the_switch_chooses_the_step(tiny) -> None:
    model = tiny[0]
    assert choose_frame_backend(model, STEPS, Switches()).name == "native"
    assert choose_frame_backend(model, STEPS, Switches(native_frames=False)).name == "mlx"


def _utterances(tiny) -> list[BatchItem]:
    model, voices, tokenizer = tiny
    names = sorted(voices)
    texts = ["A longer sentence, with a comma, and several more words.", "Hello there.", "Yes."]
    return [
        BatchItem(
            key=k, voice=voices[names[k % len(names)]], text_ids=tokenizer.encode(text),
            cfg_scale=1.2 + 0.4 * k, noise=seeded_noise(40 + k, model.config.acoustic_vae_dim),
            max_frames=(23, 14, 9)[k], stop_at_eos=False,
        )
        for k, text in enumerate(texts)
    ]  # fmt: skip


def _frames_alone(model, item: BatchItem, kernels: FrameKernels) -> list:
    return list(
        generate_frames(
            model, item.voice, item.text_ids, cfg_scale=item.cfg_scale, steps=STEPS,
            noise=item.noise, max_frames=item.max_frames, stop_at_eos=False, kernels=kernels,
        )
    )  # fmt: skip


def _assert_same(got: list, want: list) -> None:
    assert [f.index for f in got] == [f.index for f in want]
    _close(np.stack([f.latent for f in got]), np.stack([f.latent for f in want]), 1e-4)
    _close(np.concatenate([f.audio for f in got]), np.concatenate([f.audio for f in want]), 1e-4)
    # (A frame whose EOS was not computed has NaN, the same ones in both.)
    eos_got, eos_want = np.array([f.eos_prob for f in got]), np.array([f.eos_prob for f in want])
    assert (np.isnan(eos_got) == np.isnan(eos_want)).all()
    _close(eos_got[~np.isnan(eos_want)], eos_want[~np.isnan(eos_want)], 1e-4)


def test_utterances_in_c_are_mlx_s_alone_and_in_a_batch(tiny) -> None:
    model = tiny[0]
    native = FrameKernels(model, STEPS, frames=NativeFrames(model, STEPS))
    mlx_only = FrameKernels(model, STEPS, frames=MLXFrames(model, STEPS))
    assert native.batch.name == "native" and mlx_only.batch.name == "mlx"
    items = _utterances(tiny)
    for item in items:
        _assert_same(_frames_alone(model, item, native), _frames_alone(model, item, mlx_only))
    got: dict[int, list] = {item.key: [] for item in items}
    want: dict[int, list] = {item.key: [] for item in items}
    for kernels, frames in ((native, got), (mlx_only, want)):
        for key, frame in generate_batch(model, items, steps=STEPS, kernels=kernels):
            frames[key].append(frame)
    for item in items:
        _assert_same(got[item.key], want[item.key])
