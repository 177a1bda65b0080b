"""The tensor-core product (engine/cuda_gemm.py, engine/cuda_gemm.cu) without a GPU: the
kernel's own code on the CPU (tests/engine/cuda_on_cpu.py: threads as fibers, the warp's
matrix instruction computed from every lane's fragments, each buffer its exact size under
AddressSanitizer) against float64, and the model with its products moved onto it (an MLX
stand-in for the kernel) against the model as it was. tests/gpu runs the kernel itself."""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from engine import cuda_frame, cuda_gemm
from engine.acoustic import FeedForward, gelu_erf
from engine.batch import BatchItem, generate_batch
from engine.cuda_gemm import (
    TensorCoreFeedForward,
    TensorCoreLinear,
    TensorCoreProduct,
    bf16_bits,
    check,
    use_tensor_cores,
)
from engine.generate import FrameKernels, seeded_noise
from engine.layers import Fused
from engine.mlx_frames import MLXFrames
from engine.switches import Switches
from engine.tokenizer import TextTokenizer
from engine.voices import load_voice
from engine.weights import load_model
from tests.engine.cuda_on_cpu import cpu_factory

STEPS = 3


def _bf16_valued(a: np.ndarray) -> np.ndarray:
    return (a.view(np.uint32) & 0xFFFF0000).view(np.float32)


@pytest.mark.parametrize("epilogue", sorted(cuda_gemm.EPILOGUES))
@pytest.mark.parametrize(("m", "n", "k"), [(150, 136, 96), (3, 8, 32), (129, 256, 64)])
def test_the_kernel_computes_a_float32_product(epilogue: str, m: int, n: int, k: int) -> None:
    """Rows and columns past whole tiles (150 and 136 of 128), fewer rows than a warp's
    tile, several steps of K, each epilogue: every output within float32 rounding of
    float64's, none written twice or left unwritten (the outputs start as NaN)."""
    product = TensorCoreProduct(cpu_factory(), min_rows=0)
    rng = np.random.default_rng(m)
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = _bf16_valued(rng.standard_normal((n, k)).astype(np.float32))
    b, gamma = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
    r = rng.standard_normal((m, n)).astype(np.float32)
    got = np.array(product(mx.array(x), bf16_bits(mx.array(w)), mx.array(b), epilogue,
                           mx.array(r), mx.array(gamma)))  # fmt: skip
    v = x.astype(np.float64) @ w.astype(np.float64).T + b
    want = {
        "bias": v,
        "gelu": 0.5 * v * (1.0 + np.vectorize(math.erf)(v / math.sqrt(2.0))),
        "residual": r + gamma.astype(np.float64) * v,
    }[epilogue]
    err = float(np.max(np.abs(got - want)) / np.max(np.abs(want)))
    assert err < 1e-6, err


def test_the_self_check_passes_the_kernel_and_refuses_a_wrong_one() -> None:
    assert check(TensorCoreProduct(cpu_factory(), min_rows=0)) is None

    def swapped_parts(spec, header):
        # The middle part counted twice and the low one dropped: off by ~2^-9.
        bad = header.replace("part[2] = __float_as_uint(r2) >> 16;", "part[2] = mid >> 16;")
        return cpu_factory()(spec, bad)

    reason = check(TensorCoreProduct(swapped_parts, min_rows=0))
    assert reason is not None and "against float64" in reason

    def no_scale(spec, header):
        return cpu_factory()(spec, header.replace("R[row * N + n] + gn * v", "R[row * N + n] + v"))

    reason = check(TensorCoreProduct(no_scale, min_rows=0))
    assert reason is not None and reason.startswith("residual")


def test_shapes_it_does_not_take_are_refused_before_launching() -> None:
    product = TensorCoreProduct(cpu_factory(), min_rows=0)
    bits = bf16_bits(mx.zeros((16, 40)))  # K not a multiple of 32
    with pytest.raises(ValueError):
        product(mx.zeros((4, 40)), bits)
    with pytest.raises(ValueError):
        product(mx.zeros((4, 32)), bf16_bits(mx.zeros((16, 64))))
    with pytest.raises(ValueError, match="not a bfloat16"):
        bf16_bits(mx.array([[1.0 + 2.0**-12] * 32] * 8))


class _StandIn:
    """The kernels' calls as MLX operations (a float32 product of the weight's bits, then
    the epilogue), so a model on them runs anywhere; counts the products per kernel."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}

    def __call__(self, spec, header):
        def run(*, inputs, output_shapes, output_dtypes, grid, threadgroup, **_):
            x, w, bias, r, gamma, dims = inputs
            M, K = x.shape
            N = w.shape[0]
            assert dims.tolist() == [M, N, K] and output_shapes == [(M, N)]
            assert grid == (-(-M // 128) * 256, -(-N // 128), 1) and threadgroup == (256, 1, 1)
            self.calls[spec.name] = self.calls.get(spec.name, 0) + 1
            weight = (w.astype(mx.uint32) << 16).view(mx.float32)
            v = mx.addmm(bias, x, weight.T)
            if spec.name == "vv_gemm_gelu":
                return [gelu_erf(v)]
            if spec.name == "vv_gemm_residual":
                return [r + gamma * v]
            return [v]

        return run


def _utterances(model, voices, tokenizer) -> list[BatchItem]:
    names = sorted(voices)
    texts = ["A longer sentence, with a comma, and more words.", "Hello there."]
    return [
        BatchItem(
            key=k, voice=voices[names[k % len(names)]], text_ids=tokenizer.encode(text),
            cfg_scale=1.3 + 0.4 * k, noise=seeded_noise(70 + k, model.config.acoustic_vae_dim),
            max_frames=(13, 9)[k], stop_at_eos=False,
        )
        for k, text in enumerate(texts)
    ]  # fmt: skip


def _gpu_fused(model) -> None:
    """The stacks a GPU makes (engine.model.fuse: gate/up too, not only q/k/v)."""
    m = model.model
    m.language_model.fuse(mlp=True)
    m.tts_language_model.fuse(mlp=True)
    m.prediction_head.fuse(ffn=True)


def test_a_model_on_tensor_cores_synthesises_what_it_did(tiny_model) -> None:
    """Every stacked projection and every other Linear the kernel takes, the decoder's
    included, runs through it; a batch of utterances (MLX's frames and decoder) gives the
    same audio within float32 rounding; the CUDA frame kernels still pack its weights."""
    plain, cores = load_model(tiny_model), load_model(tiny_model)
    for model in (plain, cores):
        _gpu_fused(model)
    stand_in = _StandIn()
    swapped = use_tensor_cores(cores, TensorCoreProduct(stand_in, min_rows=0))
    layers = [mod for _, mod in cores.named_modules() if isinstance(mod, nn.Linear)]
    on_cores = [mod for mod in layers if type(mod) is TensorCoreLinear]
    stacks = [
        v for _, mod in cores.named_modules() for v in vars(mod).values() if isinstance(v, Fused)
    ]
    assert stacks and all(f.product is not None for f in stacks)
    blocks = [b for stage in cores.model.acoustic_tokenizer.decoder.stages for b in stage]

    def both_taken(b) -> bool:
        return all(cuda_gemm.takes(*m.weight.shape) for m in (b.ffn.linear1, b.ffn.linear2))

    taken = [b for b in blocks if both_taken(b)]
    assert taken and all(type(b.ffn) is TensorCoreFeedForward for b in taken)
    assert all(type(m) is nn.Linear for b in taken for m in (b.ffn.linear1, b.ffn.linear2))
    assert on_cores and swapped == len(on_cores) + len(stacks) + 2 * len(taken)
    assert use_tensor_cores(cores, TensorCoreProduct(stand_in, min_rows=0)) == 0  # idempotent
    # The CUDA frame kernels read the same weights from either.
    for a, b in zip(cuda_frame.pack_model(plain), cuda_frame.pack_model(cores), strict=True):
        assert mx.array_equal(a, b).item()

    voices = {p.stem: load_voice(p) for p in sorted((tiny_model / "voices").glob("*.safetensors"))}
    tokenizer = TextTokenizer(tiny_model / "tokenizer.json")
    switches = Switches(native_frames=False, native_decoder=False)
    out = {}
    for name, model in (("plain", plain), ("cores", cores)):
        kernels = FrameKernels(model, STEPS, switches, frames=MLXFrames(model, STEPS))
        items = _utterances(model, voices, tokenizer)
        frames: dict[int, list] = {item.key: [] for item in items}
        for key, frame in generate_batch(model, items, steps=STEPS, kernels=kernels):
            frames[key].append(frame)
        out[name] = frames
    assert set(stand_in.calls) == {"vv_gemm", "vv_gemm_gelu", "vv_gemm_residual"}
    for key, want in out["plain"].items():
        got = out["cores"][key]
        assert [f.index for f in got] == [f.index for f in want]
        audio_got = np.concatenate([f.audio for f in got])
        audio_want = np.concatenate([f.audio for f in want])
        err = float(np.max(np.abs(audio_got - audio_want)) / np.max(np.abs(audio_want)))
        assert err < 1e-5, err


def test_weights_that_are_not_bfloat16_and_quantized_layers_keep_mlx_s_product(
    tiny_model,
) -> None:
    model = load_model(tiny_model)
    ffn = model.model.acoustic_tokenizer.decoder.stages[0][0].ffn
    ffn.linear1.weight = ffn.linear1.weight + 2.0**-20  # no longer bfloat16 values
    nn.quantize(model.model.prediction_head, 32, 8)
    use_tensor_cores(model, TensorCoreProduct(_StandIn(), min_rows=0))
    block = model.model.acoustic_tokenizer.decoder.stages[0][0]
    assert type(block.ffn) is FeedForward and type(ffn.linear1) is nn.Linear
    assert type(ffn.linear2) is TensorCoreLinear
    head_layers = [m for _, m in model.model.prediction_head.named_modules()]
    assert not any(isinstance(m, TensorCoreLinear) for m in head_layers)


def test_the_engine_leaves_products_to_mlx_off_a_cuda_gpu(tiny_model) -> None:
    model = load_model(tiny_model)
    kernels = FrameKernels(model, STEPS, Switches())
    assert kernels.tensor_cores == 0
    assert not any(isinstance(m, TensorCoreLinear) for _, m in model.named_modules())
