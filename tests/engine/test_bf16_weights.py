"""bfloat16 copies of the weights for the BLAS shim's few-row products (engine/bf16_weights.py):
the CFG-pair TTS-LM step, the diffusion head and the generation loop give the float32
results with them, they are really read, weights that are not bfloat16 are never
registered, and the switch turns them off."""

from __future__ import annotations

import gc
import sys
from pathlib import Path

import engine.backend  # noqa: F401  (binds MLX to the BLAS shim: before mlx.core is imported)

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from engine import bf16_weights as bw
from engine.cache import make_cfg_caches
from engine.generate import FrameKernels, generate_frames, seeded_noise
from engine.model import VibeVoiceRealtime
from engine.native_lm import NativeLMStep
from engine.steps import run_pair_step
from engine.switches import Switches
from engine.voices import VoicePrompt, load_voice
from engine.weights import load_model
from tests.conftest import PARITY, parity_model_dir

RTOL = 1e-5  # max |bf16 copies - float32| / max |float32|: float32 sums in another order

# The shim is built and loaded on Linux (setup.py, engine/backend.py; tests/conftest.py
# imports engine.backend before anything imports mlx.core); elsewhere MLX has its own BLAS.
pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the BLAS shim is Linux-only")


def test_mlx_uses_the_blas_shim() -> None:
    assert bw._shim() is not None, (
        "MLX does not use the BLAS shim: engine._blas_shim was not built (a C compiler is "
        "needed: pip install -e .) or mlx.core was imported before engine.backend"
    )


@pytest.fixture(scope="module", params=["tiny", "mid-shapes"])
def case(request: pytest.FixtureRequest) -> tuple[VibeVoiceRealtime, VoicePrompt, FrameKernels]:
    if request.param == "tiny":
        path: Path = request.getfixturevalue("tiny_model")
        voice = load_voice(path / "voices" / "en-Emma_woman.safetensors")
    else:
        path = parity_model_dir("mid-shapes")
        voice = load_voice(PARITY / "mid-shapes" / "voice.safetensors")
    model = load_model(path)
    kernels = FrameKernels(model, 3)
    assert kernels.bf16_weights == len(bw.weight_matrices(model)) > 0
    return model, voice, kernels


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def _on_and_off(fn) -> tuple[np.ndarray, np.ndarray, int]:
    """``fn()`` reading the copies, then the float32 weights; and how many products read
    a copy in the first call."""
    before = bw.bf16_calls()
    on = fn()
    calls = bw.bf16_calls() - before
    previous = bw.set_enabled(False)
    try:
        off = fn()
    finally:
        bw.set_enabled(previous)
    return on, off, calls


def test_pair_step(case) -> None:
    model, voice, kernels = case
    hidden = model.config.decoder.hidden_size
    x = mx.array(np.random.default_rng(1).standard_normal((2, hidden), dtype=np.float32))

    def step() -> np.ndarray:
        caches = make_cfg_caches(
            voice.tts_keys, voice.tts_values, voice.neg_keys, voice.neg_values, mx.float32, 16
        )
        return np.array(run_pair_step(kernels.frames.pair_step, x, caches))

    on, off, calls = _on_and_off(step)
    # q/k/v (stacked), o, gate, up and down of every TTS-LM layer read their copies.
    assert calls >= 5 * len(model.model.tts_language_model.layers)
    assert _rel(on, off) <= RTOL


def test_the_c_lm_step(case) -> None:
    """The C step (engine/native_lm.py) hands MLX's own weight buffers to the shim, so its
    products read the copies as MLX's do."""
    model, voice, kernels = case
    assert kernels.frames.name == "native"
    hidden = model.config.decoder.hidden_size
    x = mx.array(np.random.default_rng(1).standard_normal((2, hidden), dtype=np.float32))
    step = NativeLMStep(model.model.tts_language_model)

    def run() -> np.ndarray:
        caches = make_cfg_caches(
            voice.tts_keys, voice.tts_values, voice.neg_keys, voice.neg_values, mx.float32, 16
        )
        first = caches[0]
        out, _, _ = step(
            x, [c.keys for c in caches], [c.values for c in caches], first.valid,
            [first.column] * 2, first.positions,
        )  # fmt: skip
        return np.array(out)

    on, off, calls = _on_and_off(run)
    assert calls >= 5 * len(model.model.tts_language_model.layers)
    assert _rel(on, off) <= RTOL


def test_diffusion_head(case) -> None:
    model, voice, kernels = case
    noise = seeded_noise(5, model.config.acoustic_vae_dim)(0)
    pos, neg = voice.tts_hidden[:, -1], voice.neg_hidden[:, -1]
    on, off, calls = _on_and_off(lambda: np.array(kernels.frames.sample(noise, pos, neg, 1.5)))
    assert calls >= 3 * len(model.model.prediction_head.layers)
    assert _rel(on, off) <= RTOL


def test_batched_modulations(case) -> None:
    """A batch of 8 frames' head modulations (steps * 16 rows, more than the few-row
    kernel's float32 limit) read the copies too, and give the float32 results."""
    model, voice, kernels = case
    head = model.model.prediction_head
    hidden = model.config.decoder.hidden_size
    cond = mx.array(np.random.default_rng(2).standard_normal((16, hidden), dtype=np.float32))
    t_emb = kernels.batch.t_emb

    def mods() -> np.ndarray:
        return np.concatenate([np.array(p) for step in head.modulations(cond, t_emb) for p in step])

    on, off, calls = _on_and_off(mods)
    # cond_proj (16 rows) and the stacked modulations (steps * 16 rows).
    assert t_emb.shape[0] * 16 > 16 and calls >= 2
    assert _rel(on, off) <= RTOL


def test_generation_loop(case) -> None:
    model, voice, kernels = case

    def run() -> np.ndarray:
        frames = list(
            generate_frames(
                model,
                voice,
                list(range(20, 33)),
                steps=3,
                noise=seeded_noise(3, model.config.acoustic_vae_dim),
                max_frames=7,
                stop_at_eos=False,
                kernels=kernels,
            )
        )
        assert len(frames) == 7
        return np.concatenate([np.concatenate([f.latent, f.audio]) for f in frames])

    on, off, calls = _on_and_off(run)
    assert calls > 0
    assert _rel(on, off) <= RTOL


def test_a_weight_that_is_not_bf16_is_never_registered(tiny_model: Path) -> None:
    model = load_model(tiny_model)
    fc1 = model.tts_eos_classifier.fc1
    w = np.array(fc1.weight)
    # One value off the bfloat16 grid (its low 16 bits no longer zero).
    w.flat[7] = np.nextafter(w.flat[7], np.float32(np.inf))
    fc1.weight = mx.array(w)
    kernels = FrameKernels(model, 2)
    mats = bw.weight_matrices(model)
    assert kernels.bf16_weights == len(mats) - 1
    addr = np.asarray(fc1.weight).ctypes.data
    assert addr not in bw._entries
    x = mx.array(np.random.default_rng(2).standard_normal((2, w.shape[1]), dtype=np.float32))
    before = bw.bf16_calls()
    got = np.array(fc1(x))
    assert bw.bf16_calls() == before  # the float32 path: exact
    want = np.array(x) @ w.T + np.array(fc1.bias)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_copies_are_released_with_the_model(tiny_model: Path) -> None:
    gc.collect()
    before = bw.registered_count()
    model = load_model(tiny_model)
    n = FrameKernels(model, 2).bf16_weights
    assert n > 0 and bw.registered_count() == before + n
    del model
    gc.collect()
    assert bw.registered_count() == before


def test_a_stale_stack_is_released(tiny_model: Path) -> None:
    model = load_model(tiny_model)
    model.fuse()
    n = bw.register_model(model)
    attn = model.model.tts_language_model.layers[0].self_attn
    old = np.asarray(attn.fused.weight).ctypes.data
    assert old in bw._entries
    # Replacing a projection makes its stack stale; fusing again builds a new one.
    attn.q_proj.weight = mx.array(np.array(attn.q_proj.weight))
    model.fuse()
    assert bw.register_model(model) == n
    assert old not in bw._entries
    assert np.asarray(attn.fused.weight).ctypes.data in bw._entries


def test_switch_turns_it_off(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VVREADER_BF16_WEIGHTS", "0")
    assert not bw.bf16_weights_wanted(Switches.from_environ())
    model = load_model(tiny_model)
    assert FrameKernels(model, 2).bf16_weights == 0
    assert not any(np.asarray(w).ctypes.data in bw._entries for w in bw.weight_matrices(model))
    monkeypatch.setenv("VVREADER_BF16_WEIGHTS", "1")
    assert bw.bf16_weights_wanted(Switches.from_environ())


def test_only_plain_linear_weights(tiny_model: Path) -> None:
    model = load_model(tiny_model)
    model.fuse()
    mats = {id(w) for w in bw.weight_matrices(model)}
    attn = model.model.language_model.layers[0].self_attn
    assert id(attn.fused.weight) in mats
    assert id(attn.q_proj.weight) not in mats  # a view of the stack
    decoder = model.model.acoustic_tokenizer.decoder
    assert not any(id(p) in mats for _, p in tree_flatten(decoder.parameters()))
