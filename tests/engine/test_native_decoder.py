"""The C decoder (engine/native_decoder.py) against the MLX decoder it replaces on Linux CPUs:
streamed in groups of 1, 2, 4 and mixed frames, offline, its carried state, and in the
generation loop."""

from __future__ import annotations

import contextlib
import ctypes
import sys
from collections.abc import Iterator
from pathlib import Path

from engine.backend import blas_shim

import mlx.core as mx
import numpy as np
import pytest

from engine.acoustic import AcousticDecoder
from engine.generate import FrameKernels, generate_frames, seeded_noise
from engine.native_decoder import (
    NativeDecoder,
    load_library,
    native_decoder_wanted,
    shared_native_decoder,
    unavailable_reason,
)
from engine.switches import Switches
from engine.voices import load_voice
from engine.weights import load_model
from tests.conftest import parity_model_dir

ENV_SWITCH = "VVREADER_NATIVE_DECODER"

RTOL = 1e-5  # max |native - mlx| / max |mlx|: float32 sums in another order

needs_native = pytest.mark.skipif(
    load_library() is None, reason=f"native decoder unavailable: {unavailable_reason()}"
)

GROUPS = {
    "ones": [1] * 6,
    "twos": [2] * 4,
    "fours": [4] * 3,
    # 3 and 5 are not sizes the loop uses; 5 exceeds max_frames (decoded in two passes).
    "mixed": [1, 2, 4, 1, 3, 2, 5, 1],
}


@pytest.fixture(scope="module", params=["tiny", "mid-shapes"])
def decoder(request: pytest.FixtureRequest) -> AcousticDecoder:
    path = request.getfixturevalue("tiny_model") if request.param == "tiny" else None
    model = load_model(path or parity_model_dir(request.param))
    return model.model.acoustic_tokenizer.decoder


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


@contextlib.contextmanager
def cpu_level(level: int) -> Iterator[None]:
    """The C layers at x86-64 ``level`` meanwhile (the test is skipped where the CPU lacks
    it), the level before restored after."""
    lib = load_library()
    assert lib is not None
    previous = lib.vv_cpu_level(0)
    try:
        if lib.vv_cpu_level(level) != level:
            # Hardware, like a GPU, is the one thing a test machine cannot install.
            pytest.skip(f"this CPU lacks x86-64 level {level}")
        yield
    finally:
        lib.vv_cpu_level(previous)


def _latents(decoder: AcousticDecoder, frames: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((frames, decoder.cfg.vae_dim), dtype=np.float32)


def test_library_loads_on_linux() -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("the native decoder is built on Linux only")
    assert load_library() is not None, unavailable_reason()


@needs_native
@pytest.mark.parametrize("bf16", [True, False], ids=["bf16-copy", "float32"])
@pytest.mark.parametrize("groups", list(GROUPS), ids=list(GROUPS))
def test_streaming_equals_mlx_streaming_and_offline(decoder, groups: str, bf16: bool) -> None:
    sizes = GROUPS[groups]
    x = _latents(decoder, sum(sizes))
    native = NativeDecoder(decoder, max_frames=4, bf16_weights=bf16)
    # The fixtures' weights are bfloat16 values: the first stage reads them as such.
    assert (native.bf16_layers > 0) == bf16
    hop = decoder.cfg.hop_length
    state, mstate = native.init_state(), decoder.init_state()
    start = 0
    for n in sizes:
        y, state = native(x[start : start + n], state)
        assert y.shape == (n * hop, 1) and y.dtype == np.float32
        ym, mstate = decoder(mx.array(x[None, start : start + n]), mstate)
        ym = np.array(ym[0])
        # Every call on its own, not only the concatenation: the state is carried right.
        assert _rel(y, ym) <= RTOL, (n, start)
        start += n
    for got, want in zip(native.mlx_layout(state), mstate, strict=True):
        want = np.array(want)
        assert got.shape == want.shape
        assert _rel(got, want) <= RTOL
    offline, _ = decoder(mx.array(x[None]), decoder.init_state())
    streamed, _ = NativeDecoder(decoder, max_frames=4)(x, native.init_state())
    assert _rel(streamed, np.array(offline[0])) <= RTOL


@needs_native
def test_state_is_carried_and_copied(decoder) -> None:
    x = _latents(decoder, 6, seed=1)
    native = NativeDecoder(decoder, max_frames=2)
    whole, _ = native(x, native.init_state())
    state = native.init_state()
    head, state = native(x[:3], state)
    fork = state.copy()
    tail, _ = native(x[3:], state)
    # Other pass sizes (2+1, 2+1 against 2+2+2) sum in another order: not bit-equal.
    assert _rel(np.concatenate([head, tail]), whole) <= RTOL
    # The copy was not touched by continuing the original; it continues the same way.
    again, _ = native(x[3:], fork)
    np.testing.assert_array_equal(again, tail)
    state.reset()
    first, _ = native(x[:3], state)
    np.testing.assert_array_equal(first, head)


@needs_native
def test_bfloat16_weights_are_decoded_in_float32(tiny_model: Path) -> None:
    dec = load_model(tiny_model, dtype=mx.bfloat16).model.acoustic_tokenizer.decoder
    x = _latents(dec, 5, seed=2)
    want, _ = dec(mx.array(x[None]), dec.init_state())
    native = NativeDecoder(dec)
    got, _ = native(x, native.init_state())
    assert _rel(got, np.array(want[0].astype(mx.float32))) <= RTOL


@needs_native
def test_rejects_batches_and_wrong_widths(tiny_model: Path) -> None:
    dec = load_model(tiny_model).model.acoustic_tokenizer.decoder
    native = NativeDecoder(dec)
    with pytest.raises(ValueError):
        native(np.zeros((2, 1, dec.cfg.vae_dim), np.float32), native.init_state())
    with pytest.raises(ValueError):
        native(np.zeros((1, dec.cfg.vae_dim + 1), np.float32), native.init_state())


@needs_native
def test_shared_decoder_follows_replaced_weights(tiny_model: Path) -> None:
    dec = load_model(tiny_model).model.acoustic_tokenizer.decoder
    first = shared_native_decoder(dec)
    assert shared_native_decoder(dec) is first
    dec.head.bias = dec.head.bias + 1.0  # e.g. weights swapped for dequantized ones
    second = shared_native_decoder(dec)
    assert second is not first
    x = _latents(dec, 2, seed=4)
    want, _ = dec(mx.array(x[None]), dec.init_state())
    got, _ = second(x, second.init_state())
    assert _rel(got, np.array(want[0])) <= RTOL


def test_switch_turns_it_off(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_SWITCH, "0")
    assert not native_decoder_wanted(Switches.from_environ())
    assert FrameKernels(load_model(tiny_model), 2).decoder.name == "mlx"


@needs_native
@pytest.mark.parametrize("decode_group", [1, 2, 4])
def test_generation_loop_uses_it_with_the_same_audio(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch, decode_group: int
) -> None:
    model = load_model(tiny_model)
    voice = load_voice(tiny_model / "voices" / "en-Emma_woman.safetensors")

    def run(kernels: FrameKernels) -> np.ndarray:
        frames = generate_frames(
            model,
            voice,
            list(range(20, 33)),
            noise=seeded_noise(3, model.config.acoustic_vae_dim),
            max_frames=11,
            stop_at_eos=False,
            kernels=kernels,
            decode_group=decode_group,
        )
        chunks = [f.audio for f in frames]
        assert len(chunks) == 11 and all(c.shape == (model.hop_length,) for c in chunks)
        return np.concatenate(chunks)

    assert mx.default_device().type == mx.DeviceType.cpu
    monkeypatch.delenv(ENV_SWITCH, raising=False)
    native = FrameKernels(model, 2)
    assert native.decoder.name == "native"
    monkeypatch.setenv(ENV_SWITCH, "0")
    reference = FrameKernels(model, 2)
    assert reference.decoder.name == "mlx"
    assert _rel(run(native), run(reference)) <= RTOL


@pytest.mark.parametrize(
    ("decode_group", "sizes"),
    [(None, [1, 2, 4, 4]), (4, [1, 2, 4, 4]), (3, [1, 2, 3, 3, 2]), (2, [1] + [2] * 5),
     (1, [1] * 11)],
)  # fmt: skip
def test_decode_groups_ramp_up(
    tiny_model: Path, decode_group: int | None, sizes: list[int]
) -> None:
    """The first frame alone, then two, then decode_group at a time (the last group is
    what is left: 11 frames)."""
    model = load_model(tiny_model)
    voice = load_voice(tiny_model / "voices" / "en-Emma_woman.safetensors")
    kernels = FrameKernels(model, 2)
    calls: list[int] = []
    decode = kernels.decoder.decode

    def recording(latents: mx.array, state):  # noqa: ANN001, ANN202
        calls.append(latents.shape[0])
        return decode(latents, state)

    kernels.decoder.decode = recording  # type: ignore[method-assign]
    frames = list(
        generate_frames(
            model,
            voice,
            list(range(20, 33)),
            steps=2,
            noise=seeded_noise(3, model.config.acoustic_vae_dim),
            max_frames=11,
            stop_at_eos=False,
            kernels=kernels,
            decode_group=decode_group,
        )
    )
    assert [f.index for f in frames] == list(range(11))
    assert calls == sizes


@needs_native
@pytest.mark.parametrize("level", [5, 4, 3, 1], ids=["amx", "avx512", "avx2", "baseline"])
def test_every_cpu_level_decodes_as_mlx(decoder, level: int) -> None:
    """The layers compiled for each x86-64 level (VVREADER_CPU_LEVEL picks the highest
    allowed) give the MLX decoder's audio, frame group by frame group; at level 5 the
    later stages' products run on AMX tiles (engine/_amx.h), where the shapes allow."""
    with cpu_level(level):
        sizes = GROUPS["mixed"]
        x = _latents(decoder, sum(sizes), seed=level)
        native = NativeDecoder(decoder, max_frames=4)
        shim = blas_shim()
        assert not isinstance(shim, str)
        shim.vvreader_amx_calls.restype = ctypes.c_long
        before = shim.vvreader_amx_calls()
        state, mstate = native.init_state(), decoder.init_state()
        start = 0
        for n in sizes:
            y, state = native(x[start : start + n], state)
            ym, mstate = decoder(mx.array(x[None, start : start + n]), mstate)
            assert _rel(y, np.array(ym[0])) <= RTOL, (level, n, start)
            start += n
        on_tiles = shim.vvreader_amx_calls() - before
        if level < 5:
            assert on_tiles == 0, (level, on_tiles)
        elif native.tile_layers > 0:
            assert on_tiles > 0, "no product ran on the tiles"


@needs_native
def test_streams_decoded_together_are_each_what_they_are_alone(decoder) -> None:
    """decode_many: streams of different lengths and states in shared passes (one longer
    than a pass), each equal to its own decoding; a state given twice is refused."""
    native = NativeDecoder(decoder, max_frames=4)
    lengths = [2, 1, 5, 3]
    xs = [_latents(decoder, n, seed=10 + i) for i, n in enumerate(lengths)]
    alone_states = [native.init_state() for _ in xs]
    together_states = [native.init_state() for _ in xs]
    for step in range(2):  # the second call continues every stream's state
        alone = [native(x, st)[0] for x, st in zip(xs, alone_states, strict=True)]
        together = native.decode_many(xs, together_states)
        for i, (a, t) in enumerate(zip(alone, together, strict=True)):
            assert t.shape == (lengths[i] * decoder.cfg.hop_length, 1)
            assert _rel(t, a) <= RTOL, (step, i)
    for a, t in zip(alone_states, together_states, strict=True):
        for x, y in zip(a.arrays, t.arrays, strict=True):
            assert _rel(y, x) <= RTOL
    with pytest.raises(ValueError, match="two streams"):
        native.decode_many(xs[:2], [together_states[0]] * 2)


@needs_native
@pytest.mark.parametrize("level", [4, 3, 1], ids=["avx512", "avx2", "baseline"])
def test_layers_of_any_width_decode_as_mlx(level: int) -> None:
    """Widths that are not a multiple of the kernels' 16-value vectors (FFNs of 12, 24 and
    48 values: the GELU's vector loop and its one-value tail) give the MLX decoder's audio
    at every x86-64 level."""
    from mlx.utils import tree_flatten, tree_unflatten

    from engine.config import AcousticDecoderConfig

    cfg = AcousticDecoderConfig(
        vae_dim=8, decoder_n_filters=3, decoder_ratios=(2, 2), decoder_depths=(1, 1, 1)
    )
    decoder = AcousticDecoder(cfg)
    rng = np.random.default_rng(7)
    decoder.update(
        tree_unflatten(
            [
                (k, mx.array(rng.standard_normal(v.shape, dtype=np.float32) * 0.3))
                for k, v in tree_flatten(decoder.parameters())
            ]
        )
    )
    with cpu_level(level):
        x = _latents(decoder, 6, seed=level)
        native = NativeDecoder(decoder, max_frames=4)
        state, mstate = native.init_state(), decoder.init_state()
        for start, n in ((0, 1), (1, 2), (3, 3)):
            y, state = native(x[start : start + n], state)
            ym, mstate = decoder(mx.array(x[None, start : start + n]), mstate)
            assert _rel(y, np.array(ym[0])) <= RTOL, (level, n, start)
