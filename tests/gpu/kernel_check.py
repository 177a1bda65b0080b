"""What tests/gpu/test_kernels.py runs on the GPU, each check in a process of its own (a
kernel that faults the GPU, or hangs, fails its check, not the others): the CUDA frame
kernels (engine/cuda_kernels.cu) built and self-checked as the engine builds them, then
frames generated through them and through the MLX functions alone.

    VVREADER_SHARED=<folder with parity/> python3 tests/gpu/kernel_check.py CHECK ARGS...

prints one line ``RESULT {json}``. Checks: ``case CASE DTYPE`` (CASE: a parity case or
``kv-groups``, a random model with 4 kv heads of 2 query heads each; DTYPE: float32 or
bfloat16, the model's and so the kernels' inputs), ``barrier CASE`` (a grid too large to
be resident: the self-check's barrier gives up), ``barrier-mid CASE`` (the same in the
middle of a synthesis), ``source CASE`` (the source MLX generates for each kernel is the
one engine.kernel_cache names the compiled kernels by), ``gemm CASE`` (the tensor-core
product, engine/cuda_gemm.py, at each of the model's weight shapes against float64) and
``tensor-cores CASE`` (a batch of utterances with every product on the tensor cores
against one with MLX's products).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

STEPS = 5  # the engine's default solver steps
FRAMES = 8  # frames generated per case (two text windows and the frames between)
TEXT_IDS = list(range(100, 112))  # in every case's vocabulary
# Largest relative error of the generated latents and absolute error of the EOS
# probabilities: the kernels accumulate in another order than MLX's matrix products,
# and each frame's latent goes back into the caches.
LATENT_TOLERANCE = 1e-2
EOS_TOLERANCE = 1e-2
# The tensor-core product against float64, relative to its largest value: a float32
# product sums K values in float32 (MLX's measured 2e-6 at K = 8192).
GEMM_TOLERANCE = 1e-5
CHECK_TIMEOUT_S = 150
# Blocks per multiprocessor that cannot all be resident (2048 threads of 256 at most):
# a grid barrier then waits for blocks that never start, and gives up.
OVERSUBSCRIBED = 32

KV_GROUPS = {
    "acoustic_vae_dim": 64,
    "tts_backbone_num_hidden_layers": 2,
    "decoder_config": {"hidden_size": 512, "intermediate_size": 1536, "num_hidden_layers": 4,
                       "num_attention_heads": 8, "num_key_value_heads": 4, "vocab_size": 1024},
    "acoustic_tokenizer_config": {"vae_dim": 64},
    "diffusion_head_config": {"hidden_size": 512, "latent_size": 64, "speech_vae_dim": 64},
}  # fmt: skip


def kv_groups_model(folder: Path) -> tuple[Path, Path]:
    """A random model of 4 kv heads (groups of 2 query heads) at full head size, and a
    voice made by running it (engine.tiny's weights and voice, other shapes)."""
    import mlx.core as mx

    from engine.tiny import TINY_CONFIG, build_weights, make_voice
    from engine.weights import load_model

    model_dir, voice_file = folder / "model", folder / "voice.safetensors"
    if voice_file.is_file():
        return model_dir, voice_file
    config = json.loads(json.dumps(TINY_CONFIG))
    for key, value in KV_GROUPS.items():
        if isinstance(value, dict):
            config[key].update(value)
        else:
            config[key] = value
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.json").write_text(json.dumps(config, indent=2))
    weights = {k: mx.array(v).astype(mx.bfloat16) for k, v in build_weights(config, 3).items()}
    mx.save_safetensors(str(model_dir / "model.safetensors"), weights, metadata={"format": "pt"})
    voice = make_voice(load_model(model_dir), list(range(20, 40)), 1, 5)
    tmp = folder / "voice.tmp.safetensors"
    mx.save_safetensors(str(tmp), voice)
    os.replace(tmp, voice_file)
    return model_dir, voice_file


def model_and_voice(case: str) -> tuple[Path, Path]:
    from tests.conftest import CACHE, PARITY, parity_model_dir

    if case == "kv-groups":
        return kv_groups_model(CACHE / "gpu" / "kv-groups")
    return parity_model_dir(case), PARITY / case / "voice.safetensors"


def _generate(model, voice, kernels, frames: int = FRAMES):
    import numpy as np

    from engine.generate import generate_frames, seeded_noise

    out = list(
        generate_frames(
            model, voice, TEXT_IDS, steps=STEPS, noise=seeded_noise(4, 64),
            max_frames=frames, stop_at_eos=False, kernels=kernels,
        )
    )  # fmt: skip
    latents = np.stack([np.asarray(f.latent, dtype=np.float64) for f in out])
    return latents, np.array([f.eos_prob for f in out[1:]], dtype=np.float64)


def _errors(got, want) -> tuple[float, float]:
    import numpy as np

    if got[0].shape != want[0].shape:
        return float("inf"), float("inf")
    scale = max(float(np.max(np.abs(want[0]))), 1e-30)
    return (
        float(np.max(np.abs(got[0] - want[0]))) / scale,
        float(np.max(np.abs(got[1] - want[1]))),
    )


def _build(model, switches=None):
    """FrameKernels as the engine builds them, the warnings it gave, the seconds it took."""
    import warnings

    from engine.generate import FrameKernels
    from engine.switches import Switches

    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        kernels = FrameKernels(model, STEPS, switches or Switches(cuda_kernels=True))
    return kernels, [str(w.message) for w in caught], time.perf_counter() - t0


def check_case(case: str, dtype: str) -> dict:
    """Kernels chosen, self-check clean, generation as MLX's (float32) generates."""
    import mlx.core as mx

    from engine.switches import Switches
    from engine.voices import load_voice
    from engine.weights import load_model

    model_dir, voice_file = model_and_voice(case)
    model = load_model(model_dir, dtype=getattr(mx, dtype))
    voice = load_voice(voice_file)
    kernels, warned, build_s = _build(model)
    frames = kernels.frames
    out: dict = {"build_s": round(build_s, 1), "warnings": warned, "backend": frames.name,
                 "compiled": getattr(frames, "compiled", {}),
                 "checked_by": getattr(frames, "checked_by", "")}  # fmt: skip
    errors = getattr(frames, "check_errors", [])
    out["self_check"] = {name: float(f"{e:.3g}") for name, e in errors}
    out["self_check_max"] = max((e for _, e in errors), default=float("inf"))
    if frames.name != "cuda":
        return {
            **out,
            "ok": False,
            "why": "the engine did not choose the kernels: " + "; ".join(warned),
        }
    got = _generate(model, voice, kernels)
    # The reference: the MLX functions on the float32 model (the same bfloat16 values).
    reference = model if dtype == "float32" else load_model(model_dir, dtype=mx.float32)
    mlx_only, _, _ = _build(reference, Switches(cuda_kernels=False))
    want = _generate(reference, voice, mlx_only)
    out["frames"] = len(got[0])
    out["latent_err"], out["eos_err"] = _errors(got, want)
    if dtype != "float32":
        # For comparison, MLX's own functions in this dtype, whose activations are rounded
        # to it (the kernels accumulate in float32): their first frame's error is bfloat16's
        # rounding through the layers; the frames fed back on it drift apart further on a
        # random model, so the error of all eight frames is far larger (not a bound).
        mlx_dtype, _, _ = _build(model, Switches(cuda_kernels=False))
        in_dtype = _generate(model, voice, mlx_dtype)
        out["mlx_in_dtype_latent_err"] = _errors(in_dtype, want)[0]
        out["mlx_in_dtype_first_frame_err"] = _errors(
            (in_dtype[0][:1], in_dtype[1]), (want[0][:1], want[1])
        )[0]
        out["first_frame_latent_err"] = _errors((got[0][:1], got[1]), (want[0][:1], want[1]))[0]
    out["failed_barrier"] = frames.failed()
    out["ok"] = bool(
        len(got[0]) == FRAMES
        and out["latent_err"] <= LATENT_TOLERANCE
        and out["eos_err"] <= EOS_TOLERANCE
        and not out["failed_barrier"]
        and not warned
    )
    if not out["ok"]:
        out["why"] = "generation differs from MLX's, a barrier timed out, or a warning"
    return out


def _oversubscribe():
    """Make every kernel launch a grid of OVERSUBSCRIBED blocks per multiprocessor."""
    from engine import cuda_frame

    resident = cuda_frame._grid_blocks()
    cuda_frame._grid_blocks = lambda: resident * OVERSUBSCRIBED
    return resident


def check_barrier(case: str) -> dict:
    """The self-check's barrier gives up: one warning, the MLX functions, in seconds."""
    from engine.weights import load_model

    model_dir, _ = model_and_voice(case)
    model = load_model(model_dir)
    resident = _oversubscribe()
    kernels, warned, build_s = _build(model)
    out = {"resident_blocks": resident, "blocks": resident * OVERSUBSCRIBED,
           "backend": kernels.frames.name, "warnings": warned,
           "build_s": round(build_s, 1)}  # fmt: skip
    out["ok"] = (
        kernels.frames.name == "mlx"
        and len(warned) == 1
        and "grid barrier timed out; using MLX's" in warned[0]
    )
    return out


def check_barrier_mid(case: str) -> dict:
    """A barrier gives up in the middle of a synthesis: BackendError with a clear
    message, one warning, and the next synthesis on the MLX functions."""
    import warnings

    from engine.errors import BackendError
    from engine.voices import load_voice
    from engine.weights import load_model

    model_dir, voice_file = model_and_voice(case)
    model, voice = load_model(model_dir), load_voice(voice_file)
    kernels, warned, _ = _build(model)
    out: dict = {"backend": kernels.frames.name, "build_warnings": warned}
    if kernels.frames.name != "cuda":
        return {**out, "ok": False, "why": "the kernels were not chosen"}
    resident = kernels.frames.blocks
    kernels.frames.blocks = resident * OVERSUBSCRIBED
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            _generate(model, voice, kernels)
            out["error"] = None
        except BackendError as e:
            out["error"] = str(e)
    out["failed_after_s"] = round(time.perf_counter() - t0, 1)
    out["warnings"] = [str(w.message) for w in caught]
    out["backend_after"] = kernels.frames.name
    again = _generate(model, voice, kernels)
    out["frames_after"] = len(again[0])
    out["ok"] = bool(
        out["error"] is not None
        and "synthesize again" in out["error"]
        and len(out["warnings"]) == 1
        and out["backend_after"] == "mlx"
        and out["frames_after"] == FRAMES
    )
    return out


def check_source(case: str) -> dict:
    """MLX's generated source of each kernel (printed with verbose=True) is the one
    engine.kernel_cache builds, so the compiled kernels are found under its module name;
    and they are there, in MLX's PTX cache folder."""
    import mlx.core as mx

    from engine import cuda_frame, kernel_cache
    from engine.generate import FrameKernels
    from engine.weights import load_model

    model = load_model(model_and_voice(case)[0])
    kernels = FrameKernels(model, STEPS)
    cuda = kernels.frames
    if cuda.name != "cuda":
        return {"ok": False, "why": "the kernels were not chosen"}
    ptx_dir = kernel_cache.mlx_ptx_dir(mx.__version__)
    out: dict = {"ptx_dir": str(ptx_dir), "kernels": {}}
    for kernel, spec in cuda._kernels.values():
        inputs = cuda_frame._kernel_inputs(spec)
        want = kernel_cache.mlx_kernel_source(spec.name, cuda.source, spec.body, inputs,
                                              spec.outputs)  # fmt: skip
        printed = _mlx_printed_source(kernel, spec, inputs)
        module = kernel_cache.mlx_module_name(spec.name, want)
        out["kernels"][spec.name] = {
            "same_source": printed == want,
            "module": module,
            "cached": (ptx_dir / f"{module}.ptx").is_file(),
        }
        if printed != want:
            out["kernels"][spec.name]["printed_head"] = (printed or "")[:300]
    out["ok"] = all(k["same_source"] and k["cached"] for k in out["kernels"].values())
    return out


def _mlx_printed_source(kernel, spec, inputs) -> str | None:
    """The source MLX prints for ``kernel`` called with verbose=True (stdout captured at
    the file descriptor: MLX writes it from C++)."""
    import tempfile

    import mlx.core as mx

    dtypes = {"float32": mx.float32, "uint16": mx.uint16, "int64": mx.int64, "bool_": mx.bool_,
              "int32": mx.int32, "uint32": mx.uint32}  # fmt: skip
    args = [mx.zeros((8,), dtypes[t]) for _, t in inputs]
    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryFile() as f:
        os.dup2(f.fileno(), 1)
        try:  # never evaluated: MLX prints the source when the kernel is called
            kernel(inputs=args, output_shapes=[(1,)] * len(spec.outputs),
                   output_dtypes=[mx.float32] * len(spec.outputs), grid=(256, 1, 1),
                   threadgroup=(256, 1, 1), verbose=True)  # fmt: skip
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        f.seek(0)
        text = f.read().decode(errors="replace")
    start = text.find("```\n")
    end = text.rfind("\n```")
    return text[start + 4 : end] if 0 <= start < end else None


def run_child(
    *args: str, env: dict[str, str] | None = None, timeout: float = CHECK_TIMEOUT_S
) -> dict:
    """One check in a process of its own: its result, or what stopped it."""
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, __file__, *args], cwd=REPO, capture_output=True, text=True,
            timeout=timeout, env=env,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"ok": False, "why": f"no result within {timeout:.0f} s"}
    sys.stderr.write(proc.stderr[-4000:])
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"ok": False, "why": f"exit status {proc.returncode}: {tail[:300]}"}
    result = json.loads(lines[-1][len("RESULT ") :])
    result["total_s"] = round(time.perf_counter() - t0, 1)
    return result


def check_gemm(case: str) -> dict:
    """The tensor-core product at every weight shape of the model, 1,024 and 3 rows,
    against float64: its largest relative error, and MLX's float32 product's."""
    import mlx.core as mx
    import mlx.nn as nn
    import numpy as np

    from engine.cuda_gemm import TensorCoreProduct, bf16_bits, takes
    from engine.weights import load_model

    model = load_model(model_and_voice(case)[0])
    model.fuse()
    product = TensorCoreProduct(min_rows=0)
    shapes = sorted({tuple(m.weight.shape) for _, m in model.named_modules()
                     if type(m) is nn.Linear and takes(*m.weight.shape)})  # fmt: skip
    rng = np.random.default_rng(0)
    worst, worst_mlx = 0.0, 0.0
    for n, k in shapes:
        for rows in (1024, 3):
            x = rng.standard_normal((rows, k)).astype(np.float32)
            w = rng.standard_normal((n, k)).astype(np.float32).view(np.uint32) & 0xFFFF0000
            w = w.view(np.float32)
            want = x.astype(np.float64) @ w.astype(np.float64).T
            got = np.array(product(mx.array(x), bf16_bits(mx.array(w))))
            mlx = np.array(mx.array(x) @ mx.array(w).T)
            scale = float(np.max(np.abs(want)))
            worst = max(worst, float(np.max(np.abs(got - want))) / scale)
            worst_mlx = max(worst_mlx, float(np.max(np.abs(mlx - want))) / scale)
    return {"ok": worst <= GEMM_TOLERANCE, "shapes": len(shapes), "error": worst,
            "mlx_float32_error": worst_mlx}  # fmt: skip


def check_tensor_cores(case: str) -> dict:
    """Three utterances of other lengths and CFG scales in one batch, MLX's frames and
    decoder, every product on the tensor cores (the engine takes them from 1,024 rows
    only) against MLX's products: latents and audio."""
    import numpy as np

    from engine.batch import BatchItem, generate_batch
    from engine.cuda_gemm import TensorCoreProduct, use_tensor_cores
    from engine.generate import FrameKernels, seeded_noise
    from engine.switches import Switches
    from engine.voices import load_voice
    from engine.weights import load_model

    model_dir, voice_file = model_and_voice(case)
    voice = load_voice(voice_file)
    out = {}
    for name in ("mlx", "tensor cores"):
        model = load_model(model_dir)
        if name != "mlx":
            model.fuse()
            out["all_products"] = use_tensor_cores(model, TensorCoreProduct(min_rows=0))
        kernels = FrameKernels(model, STEPS, Switches(cuda_kernels=False, tensor_cores=False))
        items = [
            BatchItem(key=k, voice=voice, text_ids=TEXT_IDS[: 12 - 3 * k], cfg_scale=1.3 + 0.2 * k,
                      noise=seeded_noise(9 + k, 64), max_frames=FRAMES + 2 * k, stop_at_eos=False)
            for k in range(3)
        ]  # fmt: skip
        frames: dict[int, list] = {k: [] for k in range(3)}
        for key, frame in generate_batch(model, items, steps=STEPS, kernels=kernels):
            frames[key].append(frame)
        out[name] = frames
    lat_err = audio_err = 0.0
    for k in range(3):
        got, want = out["tensor cores"][k], out["mlx"][k]
        lg, lw = (np.stack([f.latent for f in fs]) for fs in (got, want))
        ag, aw = (np.concatenate([f.audio for f in fs]) for fs in (got, want))
        lat_err = max(lat_err, float(np.max(np.abs(lg - lw)) / np.max(np.abs(lw))))
        audio_err = max(audio_err, float(np.max(np.abs(ag - aw)) / np.max(np.abs(aw))))
    del out["mlx"], out["tensor cores"]
    out.update(latent_err=lat_err, audio_err=audio_err)
    out["ok"] = bool(out["all_products"] > 0
                     and lat_err <= LATENT_TOLERANCE and audio_err <= LATENT_TOLERANCE)  # fmt: skip
    return out


CHECKS = {"case": check_case, "barrier": check_barrier, "barrier-mid": check_barrier_mid,
          "source": check_source, "gemm": check_gemm,
          "tensor-cores": check_tensor_cores}  # fmt: skip


def main(argv: list[str]) -> int:
    import engine.backend  # noqa: F401  (before mlx.core)

    try:
        result = CHECKS[argv[0]](*argv[1:])
    except Exception as e:  # reported as the check's failure
        import traceback

        traceback.print_exc()
        result = {"ok": False, "why": f"{type(e).__name__}: {e}"[:300]}
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
