"""Engine speed: full-size VibeVoice-Realtime (random weights), a real voice, fixed text.

    python bench/engine.py [--frames N] [--runs R] [--baseline] [--dtype float32] [--decoders]
                           [--bf16-weights] [--decode-groups 4,2] [--batch B[,B...]]
                           [--require-kernels] [--json-out FILE] [--baseline-timeout S]

Reports first-audio latency (text given -> first 3200-sample chunk decoded), steady ms
per frame, x real time and peak memory: medians over R runs after one warm-up run.
With --baseline, mlx-audio 0.6.2's VibeVoice runs in the same invocation (in its own
virtualenv, same weights, voice and token ids, same BLAS) and our speed is printed as a
ratio to it. The last line is one JSON object. Weights come from
../shared/parity/make_weights.py (the full-davis case: EOS disabled), the voice is the
official en-Davis_man.pt. With --decoders, runs with the C decoder (engine/native_decoder.py)
and with the MLX one alternate in this process, and both are reported. With --bf16-weights,
runs reading the bfloat16 copies of the LM and diffusion-head weights (engine/bf16_weights.py)
and runs reading the float32 weights alternate likewise. With --decode-groups 4,2, runs
with each decode_group (generate_frames) alternate likewise. With --batch B, runs of B
streams generated together (engine/batch.py: the same text, each stream its own seed)
alternate with the one-stream runs, and the JSON line adds ``batch`` and
``batch_x_realtime``: seconds of audio per second of wall time, all streams together, from
the start of the batch to its last chunk (with several sizes, ``batches`` has each one's,
and ``batch`` is the best), and ``batch_steady_x_realtime`` (``batches_steady``): the same
without the batch's start, measured as the one-stream rate is (from when every stream's
frames 1 and 2 are out to the last chunk). With --require-kernels (on an NVIDIA GPU), the
run fails (exit status 2, a line saying why) unless the CUDA frame kernels make the
one-stream frames.

The parts run in turn: the one-stream runs, mlx-audio's, then each batch size (its own
warm-up, then its runs). A line on stderr says when each starts; with --json-out the JSON
object so far is written to FILE after each part (``"complete": false`` until the end),
so a run stopped by a time limit still leaves the parts it finished.
"""

from __future__ import annotations

import os

# These machines set OPENBLAS_CORETYPE=Haswell (AVX2 kernels on an AVX-512 CPU) and
# OPENBLAS_L2_SIZE; both halve OpenBLAS's throughput here. The benchmark unsets them for
# its own process (tests and CI keep them) and says so below.
_UNSET = [k for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if os.environ.pop(k, None)]

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# The script's folder comes first on sys.path, and bench/engine.py would shadow the
# engine package: put the repository there instead, and bench/ last (for engine_paths).
sys.path[0] = str(REPO)
sys.path.append(str(REPO / "bench"))

# isort: off
import engine.backend  # noqa: E402,F401  (chooses MLX's BLAS before mlx.core is imported)
import mlx.core as mx  # noqa: E402
# isort: on

from engine.backend import blas_in_use, cpu_level_in_use  # noqa: E402

from engine_paths import full_model_dir, reference_voice  # noqa: E402

from engine.batch import BatchItem, generate_batch  # noqa: E402
from engine.generate import FrameKernels, generate_frames, seeded_noise  # noqa: E402
from engine.switches import Switches  # noqa: E402
from engine.voices import load_voice, save_voice  # noqa: E402
from engine.weights import load_model  # noqa: E402

# "Hello, world! This is a test." and more, as Qwen2.5 ids (fixed: no tokenizer needed).
TEXT_IDS = [9707, 11, 1879, 0, 1096, 374, 264, 1273, 13, 198] * 4
BASELINE_VENV = REPO / ".cache" / "bench-mlx-audio-venv"
FRAME_SECONDS = 3200 / 24000


def measure(
    model, voice, frames: int, kernels: FrameKernels, decode_group: int | None = None
) -> tuple[float, float]:
    t0 = time.perf_counter()
    stamps = []
    for _ in generate_frames(
        model,
        voice,
        TEXT_IDS,
        cfg_scale=1.5,
        steps=5,
        noise=seeded_noise(0, 64),
        max_frames=frames,
        stop_at_eos=False,
        kernels=kernels,
        decode_group=decode_group,
    ):
        stamps.append(time.perf_counter())
    # Steady rate: from the third chunk to the last. Frames are decoded in groups of 1, 2,
    # then 4, and a group's chunks arrive together: chunks 1 and 2 come at once, when frame
    # 2 is done, so the frames made between stamps[2] and stamps[-1] are frames 3 to the
    # last.
    steady = (stamps[-1] - stamps[2]) / (len(stamps) - 3)
    return (stamps[0] - t0) * 1000, steady * 1000


def measure_batch(
    model, voice, frames: int, kernels: FrameKernels, batch: int
) -> tuple[float, float]:
    """Seconds of audio per second of wall time of ``batch`` streams of ``frames`` frames
    generated together: from the start of the batch, and steady (as :func:`measure`: the
    streams run in step, so chunk 3 * batch is when every stream's frames 1 and 2 are out,
    and the frames made from then to the last chunk are the rest)."""
    items = [
        BatchItem(
            key=i,
            voice=voice,
            text_ids=TEXT_IDS,
            noise=seeded_noise(i, 64),
            max_frames=frames,
            stop_at_eos=False,
        )
        for i in range(batch)
    ]
    t0 = time.perf_counter()
    stamps = [time.perf_counter() for _ in generate_batch(model, items, steps=5, kernels=kernels)]
    start = 3 * batch - 1
    steady = (len(stamps) - 1 - start) * FRAME_SECONDS / (stamps[-1] - stamps[start])
    return len(stamps) * FRAME_SECONDS / (stamps[-1] - t0), steady


def require_kernels(kernels: FrameKernels) -> None:
    """Exit with status 2 and a line saying why unless the CUDA frame kernels make the
    frames and none of their barriers gave up."""
    frames = kernels.frames
    if frames.name == "cuda" and not frames.failed():
        return
    why = (
        f"the {frames.name} frame backend is in use on {mx.default_device()}"
        if frames.name != "cuda"
        else "a grid barrier of the CUDA frame kernels gave up"
    )
    print(f"FAIL: the CUDA frame kernels are not in use: {why}", file=sys.stderr, flush=True)
    sys.exit(2)


START = time.perf_counter()


def peak_mb() -> float:
    """The most memory this process has held so far, MLX's or the host's."""
    return round(
        max(
            mx.get_peak_memory() / 2**20, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        ),
        1,
    )


def progress(what: str) -> None:
    """One line on stderr: seconds since the start, and the part starting."""
    print(f"[{time.perf_counter() - START:7.1f} s] {what}", file=sys.stderr, flush=True)


def run_baseline(
    model_dir: Path,
    voice_file: Path,
    frames: int,
    runs: int,
    dtype: str,
    python: str | None,
    timeout: float | None = None,
) -> dict:
    py = Path(python) if python else BASELINE_VENV / "bin" / "python"
    if python is None and not py.exists():
        print(f"creating {BASELINE_VENV} with mlx-audio 0.6.2...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(BASELINE_VENV)], check=True)
        # On Linux MLX's library comes with its CPU (or CUDA) extra; plain `mlx` lacks it.
        extra = [f"mlx[cpu]=={mx.__version__}"] if sys.platform.startswith("linux") else []
        subprocess.run(
            [str(py), "-m", "pip", "install", "-q", "mlx-audio==0.6.2", *extra], check=True
        )
    import ctypes.util  # noqa: F401
    import importlib.util

    blas = []
    if blas_in_use() == "openblas+shim":
        import scipy_openblas32 as so

        blas = [
            str(Path(so.get_lib_dir()) / f"lib{so.get_library()}.so"),
            importlib.util.find_spec("engine._blas_shim").origin,
        ]
    cmd = [
        str(py),
        str(REPO / "bench" / "mlx_audio_runner.py"),
        "--model",
        str(model_dir),
        "--voice",
        str(voice_file),
        "--ids",
        ",".join(map(str, TEXT_IDS)),
        "--frames",
        str(frames),
        "--runs",
        str(runs),
        "--dtype",
        dtype,
        "--blas",
        *blas,
    ]
    # The child inherits MLX_PTX_CACHE_DIR (engine.backend set it): the MLX kernels both
    # processes generate are compiled once.
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=timeout).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--baseline", action="store_true", help="also run mlx-audio 0.6.2")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--model", type=Path, help="model folder (default: full-size random)")
    ap.add_argument(
        "--baseline-python",
        help="a python that imports mlx_audio 0.6.2 (default: a virtualenv made under .cache/)",
    )
    ap.add_argument(
        "--decoders",
        action="store_true",
        help="alternate runs with the native and the MLX decoder; report both",
    )
    ap.add_argument(
        "--bf16-weights",
        action="store_true",
        help="alternate runs with and without the bf16 weight copies; report both",
    )
    ap.add_argument(
        "--decode-groups",
        help="comma-separated decode_group values (generate_frames) to alternate and report;"
        " the first is the one reported as the engine's",
    )
    ap.add_argument(
        "--batch",
        default="0",
        help="also run B streams as one batch (alternating with the one-stream runs); several"
        " comma-separated sizes are each run",
    )
    ap.add_argument(
        "--require-kernels",
        action="store_true",
        help="fail unless the CUDA frame kernels are in use (NVIDIA GPU)",
    )
    ap.add_argument("--json-out", type=Path, help="write the JSON object after each part")
    ap.add_argument(
        "--baseline-timeout",
        type=float,
        help="seconds mlx-audio's run may take (past them: baseline_error, the rest goes on)",
    )
    a = ap.parse_args()
    from engine import bf16_weights

    model_dir = a.model or full_model_dir()
    progress(f"loading the model ({a.dtype})")
    model = load_model(model_dir, dtype=getattr(mx, a.dtype))
    voice = load_voice(reference_voice())
    switches = Switches.from_environ()
    progress("building the frame kernels")
    kernels = FrameKernels(model, 5, switches)
    if a.require_kernels:
        require_kernels(kernels)
    progress(f"one-stream warm-up ({kernels.frames.name} frames)")
    measure(model, voice, 8, kernels)  # warm-up (and compilation)
    variants = {kernels.decoder.name: kernels}
    if a.decoders and kernels.decoder.name == "native":
        # The same frame functions, decoding on MLX.
        mlx_kernels = FrameKernels(model, 5, dataclasses.replace(switches, native_decoder=False))
        measure(model, voice, 8, mlx_kernels)
        variants["mlx"] = mlx_kernels
    # name -> whether the run reads the bf16 weight copies (the same kernels otherwise).
    bf16_on = {name: True for name in variants}
    if a.bf16_weights and kernels.bf16_weights:
        variants["f32 weights"] = kernels
        bf16_on["f32 weights"] = False
    # name -> decode_group (None: generate_frames' default).
    groups: dict[str, int | None] = {name: None for name in variants}
    if a.decode_groups:
        first, *others = (int(g) for g in a.decode_groups.split(","))
        groups[next(iter(variants))] = first
        for g in others:
            variants[f"decode group {g}"] = kernels
            bf16_on[f"decode group {g}"] = True
            groups[f"decode group {g}"] = g
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    batch_sizes = [int(b) for b in a.batch.split(",") if int(b) > 0]
    batch_rates: dict[int, list[float]] = {}
    steady_rates: dict[int, list[float]] = {}
    progress(f"one stream: {a.runs} runs of {a.frames} frames")
    for _ in range(a.runs):
        for name, k in variants.items():
            bf16_weights.set_enabled(bf16_on[name])
            runs[name].append(measure(model, voice, a.frames, k, groups[name]))
    bf16_weights.set_enabled(True)
    if a.require_kernels:
        require_kernels(kernels)
    firsts, steadies = zip(*runs[next(iter(variants))], strict=True)
    result = {
        "first_audio_ms": round(float(np.median(firsts)), 1),
        "ms_per_frame": round(float(np.median(steadies)), 2),
        "x_realtime": round(FRAME_SECONDS * 1000 / float(np.median(steadies)), 3),
        "peak_mb": peak_mb(),
        "device": str(mx.default_device()),
        "dtype": a.dtype,
        "frames": a.frames,
        "runs": a.runs,
        "blas": blas_in_use(),
        "cpu_level": cpu_level_in_use(),
        "decoder": next(iter(variants)),
        "bf16_weights": kernels.bf16_weights,
        "tensor_cores": kernels.tensor_cores,
        "unset_env": _UNSET,
    }
    rows = [("vvreader engine", result["first_audio_ms"], result["ms_per_frame"])]
    if "f32 weights" in runs:
        f_32, s_32 = zip(*runs["f32 weights"], strict=True)
        result["f32_weights_first_audio_ms"] = round(float(np.median(f_32)), 1)
        result["f32_weights_ms_per_frame"] = round(float(np.median(s_32)), 2)
        result["bf16_weights_speedup"] = round(
            result["f32_weights_ms_per_frame"] / result["ms_per_frame"], 3
        )
        rows.append(("engine, f32 weights", float(np.median(f_32)), float(np.median(s_32))))
    if "mlx" in runs and len(runs) > 1:
        f_mlx, s_mlx = zip(*runs["mlx"], strict=True)
        result["mlx_decoder_first_audio_ms"] = round(float(np.median(f_mlx)), 1)
        result["mlx_decoder_ms_per_frame"] = round(float(np.median(s_mlx)), 2)
        result["native_decoder_speedup"] = round(
            result["mlx_decoder_ms_per_frame"] / result["ms_per_frame"], 2
        )
        rows[0] = ("engine, C decoder", result["first_audio_ms"], result["ms_per_frame"])
        rows.append(("engine, MLX dec.", float(np.median(f_mlx)), float(np.median(s_mlx))))
    for name, g in groups.items():
        if name.startswith("decode group "):
            f_g, s_g = zip(*runs[name], strict=True)
            result[f"decode_group_{g}_first_audio_ms"] = round(float(np.median(f_g)), 1)
            result[f"decode_group_{g}_ms_per_frame"] = round(float(np.median(s_g)), 2)
            rows.append((name, float(np.median(f_g)), float(np.median(s_g))))
    result["frame_backend"] = kernels.frames.name
    if groups[next(iter(variants))] is not None:
        result["decode_group"] = groups[next(iter(variants))]
    result["complete"] = False

    def write_partial() -> None:
        result["peak_mb"] = peak_mb()
        if a.json_out:
            a.json_out.write_text(json.dumps(result) + "\n")

    write_partial()
    progress(
        f"one stream: {result['ms_per_frame']} ms/frame, first audio {result['first_audio_ms']} ms"
    )
    if a.baseline:
        progress("mlx-audio 0.6.2, in its own process")
        voice_file = Path(REPO / ".cache" / "bench-voice-en-Davis_man.safetensors")
        save_voice(voice, voice_file)
        try:
            base = run_baseline(
                model_dir,
                voice_file,
                a.frames,
                a.runs,
                a.dtype,
                a.baseline_python,
                a.baseline_timeout,
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
            tail = (getattr(e, "stderr", None) or "").strip().splitlines()[-1:]
            result["baseline_error"] = f"{type(e).__name__}: {e} {' '.join(tail)}"[:500]
            progress(f"mlx-audio failed: {result['baseline_error']}")
        else:
            result["baseline_first_audio_ms"] = round(base["first_audio_ms"], 1)
            result["baseline_ms_per_frame"] = round(base["ms_per_frame"], 2)
            result["speedup"] = round(base["ms_per_frame"] / result["ms_per_frame"], 2)
            rows.append(("mlx-audio 0.6.2", base["first_audio_ms"], base["ms_per_frame"]))
            progress(f"mlx-audio: {result['baseline_ms_per_frame']} ms/frame")
        write_partial()
    for b in batch_sizes:
        progress(f"{b} streams: warm-up")
        measure_batch(model, voice, 8, kernels, b)  # warm-up (and compilation)
        progress(f"{b} streams: {a.runs} runs of {a.frames} frames")
        runs_b = [measure_batch(model, voice, a.frames, kernels, b) for _ in range(a.runs)]
        batch_rates[b] = [r for r, _ in runs_b]
        steady_rates[b] = [s for _, s in runs_b]
        rates = {n: round(float(np.median(r)), 3) for n, r in batch_rates.items()}
        steady = {n: round(float(np.median(r)), 3) for n, r in steady_rates.items()}
        best = max(rates, key=rates.get)
        result["batch"] = best
        result["batch_x_realtime"] = rates[best]
        result["batch_speedup"] = round(result["batch_x_realtime"] / result["x_realtime"], 2)
        result["batches"] = rates
        result["batch_steady_x_realtime"] = steady[best]
        result["batch_steady_speedup"] = round(steady[best] / result["x_realtime"], 2)
        result["batches_steady"] = steady
        # The wall time of one frame of all the streams (the batch's own decoding in it).
        result["batch_ms_per_step"] = {
            n: round(n * FRAME_SECONDS * 1000 / r, 2) for n, r in rates.items()
        }
        result["batch_backend"] = type(kernels.batch).__name__
        result["batch_decoder"] = kernels.decoder.name
        write_partial()
        progress(
            f"{b} streams: {rates[b]}x real time together,"
            f" {result['batch_ms_per_step'][b]} ms per frame of all of them"
        )
    if a.require_kernels:
        require_kernels(kernels)
    result["complete"] = True
    write_partial()
    print(
        f"device {result['device']}, {a.dtype}, BLAS: {result['blas']}"
        + (f"; unset for this run: {', '.join(_UNSET)}" if _UNSET else "")
    )
    print(f"{'':18s} {'first audio ms':>15s} {'ms/frame':>10s} {'x real time':>12s}")
    for name, first, per in rows:
        print(f"{name:18s} {first:15.1f} {per:10.2f} {FRAME_SECONDS * 1000 / per:12.2f}")
    for b in batch_sizes:
        rate, steady_rate = float(np.median(batch_rates[b])), float(np.median(steady_rates[b]))
        print(
            f"{b} streams in one batch: {rate:.2f}x real time together"
            f" ({rate / result['x_realtime']:.2f}x one stream's); after the batch's start"
            f" {steady_rate:.2f}x ({steady_rate / result['x_realtime']:.2f}x)"
        )
    if "speedup" in result:
        print(f"speedup over mlx-audio: {result['speedup']}x")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
