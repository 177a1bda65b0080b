"""The CUDA frame path without a GPU: the weight packing, the stacked caches and the
generation loop around the kernels, with the kernels' contract emulated in numpy
(tests/engine/cuda_emulator.py); and the self-check that keeps a wrong kernel out."""

from __future__ import annotations

import warnings
from dataclasses import replace

import mlx.core as mx
import numpy as np
import pytest

from engine import cuda_frame
from engine.config import VibeVoiceConfig
from engine.cuda_frame import CudaFrames, StackedCaches, check_against_mlx, item_indices
from engine.generate import FrameKernels, generate_frames, seeded_noise
from engine.mlx_frames import MLXFrames
from engine.parity import TeacherForcing
from engine.switches import Switches
from engine.voices import load_voice
from engine.weights import load_model
from tests.conftest import PARITY, parity_model_dir
from tests.engine.cuda_emulator import factory

STEPS = 3


@pytest.fixture(scope="module")
def mid():
    """The mid-shapes parity model (heads of 64, as the kernels want) and its voice."""
    model = load_model(parity_model_dir("mid-shapes"))
    voice = load_voice(PARITY / "mid-shapes" / "voice.safetensors")
    return model, voice


MLX_ONLY = Switches(cuda_kernels=False)


def _cuda(model, **kw) -> tuple[CudaFrames, MLXFrames]:
    """CUDA frames with emulated kernels, and the MLX frames they are checked against."""
    mlx_frames = MLXFrames(model, STEPS)
    cuda = CudaFrames(model, mlx_frames.schedule, mlx_frames.t_emb,
                      kernel_factory=factory(model.config, **kw))  # fmt: skip
    return cuda, mlx_frames


def _kernels(model, **kw) -> FrameKernels:
    return FrameKernels(model, STEPS, MLX_ONLY, frames=_cuda(model, **kw)[0])


def test_every_packed_item_is_the_module_weight(mid) -> None:
    model, _ = mid
    wh, wf, offs = (np.array(a) for a in cuda_frame.pack_model(model))
    m, cfg = model.model, model.config
    idx = item_indices(cfg)

    def mat(i: int, shape: tuple[int, int]) -> np.ndarray:
        o = int(offs[i])
        bits = wh[o : o + shape[0] * shape[1]].astype(np.uint32) << 16
        return bits.view(np.float32).reshape(shape)

    layer = m.tts_language_model.layers[1]
    base = (cfg.lm_layers + 1) * cuda_frame.LAYER_ITEMS
    np.testing.assert_array_equal(mat(base + 1, layer.self_attn.o_proj.weight.shape),
                                  np.array(layer.self_attn.o_proj.weight))  # fmt: skip
    down = m.prediction_head.layers[2].ffn.down_proj.weight
    np.testing.assert_array_equal(mat(idx["HEAD_DOWN"] + 2, down.shape), np.array(down))
    o = int(offs[idx["TYPE_TEXT"]])
    np.testing.assert_array_equal(wf[o : o + cfg.decoder.hidden_size],
                                  np.array(m.tts_input_types.weight[1]))  # fmt: skip
    assert all(int(x) % 8 == 0 for x in offs)  # 16-byte loads


def test_a_weight_off_the_bfloat16_grid_keeps_the_mlx_path(mid) -> None:
    model, _ = load_model(parity_model_dir("mid-shapes")), None
    w = np.array(model.model.acoustic_connector.fc2.weight)
    w.flat[3] = np.nextafter(w.flat[3], np.float32(np.inf))
    model.model.acoustic_connector.fc2.weight = mx.array(w)
    mlx_frames = MLXFrames(model, STEPS)
    with pytest.raises(ValueError):
        CudaFrames(model, mlx_frames.schedule, mlx_frames.t_emb,
                   kernel_factory=factory(model.config))  # fmt: skip
    assert cuda_frame.build(model, mlx_frames) is None


def test_stacked_caches_hold_the_prompt_like_the_per_layer_ones(mid) -> None:
    model, voice = mid
    c = StackedCaches(voice, 8, 20)
    assert c.column == max(voice.tts_length, voice.neg_length)
    assert c.positions == [voice.tts_length, voice.neg_length] and c.offset == voice.tts_length
    kv = np.array(c.kv)
    np.testing.assert_array_equal(kv[2, 0, 1, :, : voice.neg_length],
                                  np.array(voice.neg_keys[2][0].astype(mx.float32)))  # fmt: skip
    np.testing.assert_array_equal(kv[0, 1, 0, :, : voice.tts_length],
                                  np.array(voice.tts_values[0][0].astype(mx.float32)))  # fmt: skip
    assert kv.shape[4] % 256 == 0 and kv.shape[4] >= c.column + 20
    valid = np.array(c.valid)
    assert valid[0].sum() == voice.tts_length and valid[1].sum() == voice.neg_length
    cap = kv.shape[4]
    c.reserve(0, cap)  # grows to whole 256s, keeps what it had
    assert c.kv.shape[4] > cap and np.array(c.valid)[0].sum() == voice.tts_length


def test_generation_through_the_kernel_contract_matches_mlx(mid) -> None:
    """Windows, frames, the first frame before its feedback, and the caches between them,
    through the CUDA path's code with emulated kernels: the MLX path's frames."""
    model, voice = mid
    ids = list(range(100, 112))  # three text windows (5, 5, 2 tokens)

    def run(kernels: FrameKernels) -> list:
        return list(
            generate_frames(
                model, voice, ids, steps=STEPS, noise=seeded_noise(4, 64), max_frames=14,
                stop_at_eos=False, kernels=kernels,
            )
        )  # fmt: skip

    want = run(FrameKernels(model, STEPS, MLX_ONLY))
    got = run(_kernels(model))
    assert [f.index for f in got] == [f.index for f in want] == list(range(14))
    lat_g, lat_w = np.stack([f.latent for f in got]), np.stack([f.latent for f in want])
    assert np.max(np.abs(lat_g - lat_w)) / np.max(np.abs(lat_w)) < 1e-4
    eos_g = np.array([f.eos_prob for f in got[1:]])
    eos_w = np.array([f.eos_prob for f in want[1:]])
    np.testing.assert_allclose(eos_g, eos_w, atol=1e-4)


def test_teacher_latents_are_fed_back(mid) -> None:
    model, voice = mid
    teacher = np.random.default_rng(1).standard_normal((6, 64)).astype(np.float32)

    def run(kernels: FrameKernels) -> np.ndarray:
        frames = generate_frames(
            model, voice, [5, 6, 7], steps=STEPS, noise=seeded_noise(4, 64), max_frames=6,
            stop_at_eos=False, kernels=kernels, hooks=TeacherForcing(teacher),
        )  # fmt: skip
        return np.concatenate([f.audio for f in frames])

    want, got = run(FrameKernels(model, STEPS, MLX_ONLY)), run(_kernels(model))
    assert np.max(np.abs(got - want)) <= 1e-4 * np.max(np.abs(want))


def test_self_check_passes_a_faithful_kernel_and_stops_a_wrong_one(mid) -> None:
    model, _ = mid
    good, mlx_frames = _cuda(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        assert check_against_mlx(good, mlx_frames)
    assert max(e for _, e in good.check_errors) < 1e-4
    bad, _ = _cuda(model, rope_sign=-1.0)  # keys and queries rotated the wrong way
    with pytest.warns(UserWarning, match="disagree with MLX"):
        assert not check_against_mlx(bad, mlx_frames)


def _config(case: str) -> VibeVoiceConfig:
    return VibeVoiceConfig.from_file(PARITY / case / "model" / "config.json")


def _reshaped(cfg: VibeVoiceConfig, diffusion: dict | None = None, **decoder) -> VibeVoiceConfig:
    return replace(cfg, decoder=replace(cfg.decoder, **decoder),
                   diffusion=replace(cfg.diffusion, **(diffusion or {})))  # fmt: skip


def test_only_shapes_the_kernels_are_written_for(tiny_model) -> None:
    full, mid = _config("full-davis"), _config("mid-shapes")
    assert cuda_frame.unsupported(full) is None and cuda_frame.supported(full)
    # Narrower than its diffusion head's hidden layer (1344 > 1024), one kv head, 7 heads.
    assert cuda_frame.unsupported(mid) is None
    assert "head dim 16" in cuda_frame.unsupported(
        VibeVoiceConfig.from_file(tiny_model / "config.json")
    )
    narrow = _reshaped(mid, hidden_size=128, num_attention_heads=2, intermediate_size=128,
                       diffusion={"hidden_size": 128})  # fmt: skip
    refused = {
        "head dim 32": _reshaped(full, num_attention_heads=28, num_key_value_heads=2),
        "14 query heads in 4 kv heads": _reshaped(full, num_key_value_heads=4),
        "do not make the hidden size 1024": _reshaped(full, hidden_size=1024, head_dim=64),
        "not all multiples of 8": _reshaped(mid, intermediate_size=1020),
        "diffusion head width 448, not 896": _reshaped(full, diffusion={"hidden_size": 448}),
        "diffusion latent 32, not 64": _reshaped(mid, diffusion={"latent_size": 32}),
        "shared memory of a block over 227 KB": _reshaped(full, intermediate_size=12288),
        "too small for attention": narrow,
    }
    for reason, cfg in refused.items():
        got = cuda_frame.unsupported(cfg)
        assert got is not None and reason in got, (reason, got)
        assert not cuda_frame.supported(cfg)
    latent = replace(mid, acoustic_vae_dim=512)
    latent = replace(latent, diffusion=replace(latent.diffusion, latent_size=512))
    assert "latent size 512 over 256 threads" in cuda_frame.unsupported(latent)


def test_a_model_the_kernels_cannot_take_gets_mlx_with_a_reason(tiny_model, monkeypatch) -> None:
    """build() refuses it before compiling or launching anything, with a one-line warning."""

    def no_kernel(*args, **kwargs):
        raise AssertionError("a kernel was made for shapes it is not written for")

    monkeypatch.setattr(cuda_frame, "cuda_kernel", no_kernel)
    model = load_model(tiny_model)
    mlx_frames = MLXFrames(model, STEPS)
    with pytest.warns(UserWarning, match=r"not written for this model \(head dim 16, not 64\)"):
        assert cuda_frame.build(model, mlx_frames) is None
    with pytest.raises(ValueError, match="head dim 16"):
        CudaFrames(model, mlx_frames.schedule, mlx_frames.t_emb,
                   kernel_factory=factory(model.config))  # fmt: skip


def test_shared_memory_holds_every_staged_row() -> None:
    """The frame kernel stages rows of H, I and the diffusion head's HF (1344 in the
    mid-shapes model, wider than its intermediate size): its shared memory holds two of
    the widest, plus the 8 norms and 3 latents after them."""
    for case in ("mid-shapes", "full-davis"):
        cfg = _config(case)
        dec = cfg.decoder
        widest = max(dec.hidden_size, dec.intermediate_size, cfg.diffusion.ffn_dim)
        assert cuda_frame.frame_shared_bytes(cfg) == (2 * widest + 8 + 3 * 64) * 4
        widest_lm = max(dec.hidden_size, dec.intermediate_size)
        assert cuda_frame.window_shared_bytes(cfg) == (cuda_frame.LMAX * widest_lm + 8) * 4
        header = cuda_frame.header(cfg)
        assert f"constexpr int ROW_FRAME = {widest};" in header
        assert f"constexpr int ROW_LM = {widest_lm};" in header


def test_kernels_failing_mid_synthesis_end_it_with_one_error_then_mlx_takes_over(mid) -> None:
    """A grid barrier that gives up marks the kernels' outputs NaN and raises the error
    flag (engine/cuda_kernels.cu): the synthesis ends with one clear error and one warning,
    and the next one runs on the MLX functions."""
    from engine.errors import BackendError

    model, voice = mid
    kernels = _kernels(model)
    cuda = kernels.frames
    launches = 0
    real_frame = cuda.frame

    def frame_failing_from_the_third(*args, **kwargs):
        nonlocal launches
        launches += 1
        if launches == 3:  # what the kernel leaves when a barrier gives up
            cuda.state = mx.array(np.array([0, 0, 1, 0], np.uint32))
        latent, fed, pos, neg, eos = real_frame(*args, **kwargs)
        return latent, fed, pos, neg, eos * float("nan") if launches >= 3 else eos

    cuda.frame = frame_failing_from_the_third

    def run() -> list:
        return list(generate_frames(model, voice, list(range(100, 112)), steps=STEPS,
                                    noise=seeded_noise(4, 64), max_frames=10,
                                    stop_at_eos=False, kernels=kernels))  # fmt: skip

    with pytest.warns(UserWarning, match="grid barrier gave up.*using MLX's") as caught:
        with pytest.raises(BackendError, match="synthesize again"):
            run()
    assert len([w for w in caught if issubclass(w.category, UserWarning)]) == 1
    assert kernels.frames.name == "mlx"
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        assert len(run()) == 10


def test_self_check_of_a_bfloat16_model_allows_for_its_rounding_only() -> None:
    """Against MLX functions computing in bfloat16 the kernels (float32 arithmetic) differ
    by the reference's rounding, ~1e-2: accepted; a wrong kernel still is not."""
    model = load_model(parity_model_dir("mid-shapes"), dtype=mx.bfloat16)
    mlx_frames = MLXFrames(model, STEPS)

    def kernels(**kw) -> CudaFrames:
        return CudaFrames(model, mlx_frames.schedule, mlx_frames.t_emb,
                          kernel_factory=factory(model.config, **kw))  # fmt: skip

    good = kernels()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        assert check_against_mlx(good, mlx_frames)
    worst = max(e for _, e in good.check_errors)
    assert 1e-3 < worst < cuda_frame.self_check_tolerance(mx.bfloat16) / 2
    with pytest.warns(UserWarning, match="disagree with MLX"):
        assert not check_against_mlx(kernels(rope_sign=-1.0), mlx_frames)
