"""Start-up on an NVIDIA GPU: time to first audio on a first and on a second start.

    python bench/gpu.py startup [--cache DIR]   # two starts, each a process of its own
    python bench/gpu.py start                   # one start (what startup runs twice)

A start loads the full-size model (random weights, bench/engine_paths.py) and the
reference voice, builds the frame kernels as the engine thread does (engine.generate.
FrameKernels: on a CUDA GPU the CUDA frame kernels, compiled, then self-checked) and
synthesises one utterance; ``speak_after_load_s`` is the time from the model loaded to
the first audio chunk. ``startup`` gives both starts one fresh kernel cache folder
(engine/kernel_cache.py: the first start fills it, the second finds its kernels and its
self-check there) and prints one JSON line; it exits 1, with a line saying why, when
either start did not use the kernels or the second one took more than a second to speak.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# bench/ first on sys.path would let bench/engine.py shadow the engine package.
sys.path[0] = str(REPO)
sys.path.append(str(REPO / "bench"))

SECOND_START_LIMIT_S = 1.0


def one_start() -> dict:
    """Load, build, speak: the times, the backend and what the kernel cache did."""
    import engine.backend  # noqa: F401  (before mlx.core)

    import mlx.core as mx
    from engine_paths import full_model_dir, reference_voice

    from engine.generate import FrameKernels, generate_frames, seeded_noise
    from engine.voices import load_voice
    from engine.weights import load_model

    model_dir = full_model_dir()  # generated before the clock starts, when missing
    t0 = time.perf_counter()
    model = load_model(model_dir)
    voice = load_voice(reference_voice())
    mx.eval(model.parameters())
    loaded = time.perf_counter()
    kernels = FrameKernels(model, 5)
    built = time.perf_counter()
    frames = generate_frames(model, voice, [9707, 11, 1879, 0, 1096, 374], steps=5,
                             noise=seeded_noise(0, 64), max_frames=8, stop_at_eos=False,
                             kernels=kernels)  # fmt: skip
    next(frames)
    first = time.perf_counter()
    rest = sum(1 for _ in frames)
    return {
        "load_s": round(loaded - t0, 3),
        "kernels_s": round(built - loaded, 3),
        "speak_after_load_s": round(first - loaded, 3),
        "frames": 1 + rest,
        "backend": kernels.frames.name,
        "compiled": getattr(kernels.frames, "compiled", {}),
        "checked_by": getattr(kernels.frames, "checked_by", ""),
        "device": str(mx.default_device()),
        "mlx_ptx_cache": os.environ.get("MLX_PTX_CACHE_DIR"),
    }


def startup(cache: Path) -> tuple[dict, list[str]]:
    """Two starts sharing the kernel cache ``cache``: their results and what failed."""
    env = {k: v for k, v in os.environ.items() if k != "MLX_PTX_CACHE_DIR"}
    env["VVREADER_KERNEL_CACHE"] = str(cache)
    result: dict = {"cache": str(cache)}
    failures = []
    for name in ("first", "second"):
        proc = subprocess.run([sys.executable, __file__, "start"], env=env, cwd=REPO,
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
            failures.append(f"{name} start failed: exit status {proc.returncode}: {tail}")
            return result, failures
        result[name] = json.loads(lines[-1])
        if result[name]["backend"] != "cuda":
            failures.append(f"{name} start used the {result[name]['backend']} frame backend")
    second = result["second"]["speak_after_load_s"]
    if second > SECOND_START_LIMIT_S:
        failures.append(f"second start spoke {second:.2f} s after the model was loaded "
                        f"(limit {SECOND_START_LIMIT_S} s)")  # fmt: skip
    return result, failures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("what", choices=["start", "startup"])
    ap.add_argument("--cache", type=Path, help="kernel cache folder (default: a fresh one)")
    a = ap.parse_args()
    if a.what == "start":
        print(json.dumps(one_start()), flush=True)
        return 0
    cache = a.cache or Path(tempfile.mkdtemp(prefix="vv-kernel-cache-"))
    result, failures = startup(cache)
    for name in ("first", "second"):
        if name in result:
            r = result[name]
            print(
                f"{name} start: model loaded in {r['load_s']:.2f} s, kernels ready"
                f" {r['kernels_s']:.2f} s later (checked by {r['checked_by'] or '-'}), first"
                f" audio {r['speak_after_load_s']:.2f} s after loading; backend {r['backend']}"
            )
    result["ok"] = not failures
    print(json.dumps(result), flush=True)
    for f in failures:
        print(f"FAIL: {f}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
