"""The CUDA frame kernels (engine/cuda_kernels.cu) on a real NVIDIA GPU, per parity model:
built and self-checked against the MLX functions as the engine builds them
(engine.frame_backend picks engine.cuda_frame.build), then a few frames generated through
them and through the MLX functions alone. Prints PASS or FAIL per case with the largest
errors; exits 1 on a FAIL, 0 with a note where MLX has no CUDA GPU.

Not a pytest module (it needs a GPU, and pytest collects only test_*.py). Each case runs
in a process of its own, so a kernel that faults the GPU fails its case, not the others.

    VVREADER_SHARED=<folder with parity/> python3 tests/gpu/check_kernels.py [CASE ...]
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

CASES = ["mid-shapes", "full-davis"]
STEPS = 5  # the engine's default solver steps
FRAMES = 8  # frames generated per case (two text windows and the frames between)
TEXT_IDS = list(range(100, 112))  # in every case's vocabulary
# Largest relative error of the generated latents and absolute error of the EOS
# probabilities: the kernels accumulate in another order than MLX's matrix products,
# and each frame's latent goes back into the caches.
LATENT_TOLERANCE = 1e-2
EOS_TOLERANCE = 1e-2
CASE_TIMEOUT_S = 120


def check_case(case: str) -> dict:
    """Build, self-check and generate for one case; the numbers for the report."""
    import warnings

    import engine.backend  # noqa: F401  (before mlx.core)

    import numpy as np

    from engine.generate import FrameKernels, generate_frames, seeded_noise
    from engine.switches import Switches
    from engine.voices import load_voice
    from engine.weights import load_model
    from tests.conftest import PARITY, parity_model_dir

    t0 = time.perf_counter()
    model = load_model(parity_model_dir(case))
    voice = load_voice(PARITY / case / "voice.safetensors")
    out: dict = {"load_s": round(time.perf_counter() - t0, 1)}
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        kernels = FrameKernels(model, STEPS, Switches(cuda_kernels=True))
    out["build_s"] = round(time.perf_counter() - t0, 1)
    out["warnings"] = [str(w.message) for w in caught]
    out["backend"] = kernels.frames.name
    errors = getattr(kernels.frames, "check_errors", [])
    out["self_check"] = {name: float(f"{e:.3g}") for name, e in errors}
    out["self_check_max"] = max((e for _, e in errors), default=float("inf"))
    if kernels.frames.name != "cuda":
        out["ok"] = False
        out["why"] = "the engine did not choose the kernels: " + "; ".join(out["warnings"])
        return out

    def run(k: FrameKernels) -> tuple[np.ndarray, np.ndarray]:
        frames = list(
            generate_frames(
                model, voice, TEXT_IDS, steps=STEPS, noise=seeded_noise(4, 64),
                max_frames=FRAMES, stop_at_eos=False, kernels=k,
            )
        )  # fmt: skip
        latents = np.stack([np.asarray(f.latent, dtype=np.float64) for f in frames])
        return latents, np.array([f.eos_prob for f in frames[1:]], dtype=np.float64)

    t0 = time.perf_counter()
    got_lat, got_eos = run(kernels)
    want_lat, want_eos = run(FrameKernels(model, STEPS, Switches(cuda_kernels=False)))
    out["generate_s"] = round(time.perf_counter() - t0, 1)
    out["frames"] = len(got_lat)
    same = got_lat.shape == want_lat.shape
    scale = max(float(np.max(np.abs(want_lat))), 1e-30)
    lat_err = float(np.max(np.abs(got_lat - want_lat))) / scale if same else float("inf")
    eos_err = float(np.max(np.abs(got_eos - want_eos))) if same else float("inf")
    out["latent_err"], out["eos_err"] = lat_err, eos_err
    out["failed_barrier"] = kernels.frames.failed()
    out["ok"] = bool(
        len(got_lat) == FRAMES
        and lat_err <= LATENT_TOLERANCE
        and eos_err <= EOS_TOLERANCE
        and not out["failed_barrier"]
    )
    if not out["ok"]:
        out["why"] = "generation differs from MLX's (or a barrier timed out)"
    return out


def run_child(case: str) -> dict:
    """check_case in a process of its own: its result, or what killed it."""
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, __file__, "--child", case], cwd=REPO, capture_output=True,
            text=True, timeout=CASE_TIMEOUT_S,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"ok": False, "why": f"no result within {CASE_TIMEOUT_S} s"}
    sys.stderr.write(proc.stderr[-6000:])
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"ok": False, "why": f"exit status {proc.returncode}: {tail[:300]}"}
    result = json.loads(lines[-1][len("RESULT ") :])
    result["total_s"] = round(time.perf_counter() - t0, 1)
    return result


def summary(case: str, r: dict) -> str:
    """One line: PASS or FAIL, the case, the backend used and the largest errors."""
    nan = float("nan")
    line = (
        f"{'PASS' if r['ok'] else 'FAIL'} {case}: backend {r.get('backend', '?')}, "
        f"self-check max err {r.get('self_check_max', nan):.2e}, {r.get('frames', 0)} frames: "
        f"latent max rel err {r.get('latent_err', nan):.2e}, "
        f"EOS max abs err {r.get('eos_err', nan):.2e}"
    )
    return line if r["ok"] else f"{line} -- {r.get('why', '')}"


def main(argv: list[str]) -> int:
    if argv[:1] == ["--child"]:
        try:
            result = check_case(argv[1])
        except Exception as e:  # reported as the case's FAIL
            import traceback

            traceback.print_exc()
            result = {"ok": False, "why": f"{type(e).__name__}: {e}"[:300]}
        print("RESULT " + json.dumps(result), flush=True)
        return 0
    import engine.backend  # noqa: F401  (before mlx.core)

    from engine.cuda_frame import on_cuda_gpu

    if not on_cuda_gpu():
        print("SKIP: MLX has no CUDA GPU here; the kernels are checked on one")
        return 0
    failed = 0
    for case in argv or CASES:
        r = run_child(case)
        failed += not r["ok"]
        print(summary(case, r), flush=True)
        print("  " + json.dumps(r), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
