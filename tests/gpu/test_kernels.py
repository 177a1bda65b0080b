"""The CUDA frame kernels (engine/cuda_kernels.cu) on a real NVIDIA GPU against the MLX
functions: full size and mid shapes, several kv groups, float32 and bfloat16 models (the
kernels' inputs in that dtype), the grid barrier giving up, and the compiled kernels and
self-check kept for the next start; and the tensor-core product (engine/cuda_gemm.cu).
Each check is a process of its own (tests/gpu/kernel_check.py) with a time limit: a fault
or a hang fails its check only."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.gpu import kernel_check

REPO = Path(__file__).resolve().parents[2]


def _check(gpu_env: dict[str, str], *args: str, timeout: float = 150) -> dict:
    r = kernel_check.run_child(*args, env=gpu_env, timeout=timeout)
    print(json.dumps(r))
    return r


def test_a_second_start_speaks_within_a_second_of_loading(gpu_env, tmp_path) -> None:
    """bench/gpu.py startup: the first start compiles and checks against MLX, the second
    finds both in the cache folder. First in this file: it runs on the session's kernel
    cache while that is empty, so the machine's one cold compile of MLX's own kernels is
    paid here and the later checks find them (on a fresh folder when the cache is not
    empty, as when run after the others)."""
    cache = Path(gpu_env["VVREADER_KERNEL_CACHE"])
    if any(cache.iterdir()):
        cache = tmp_path
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu.py"), "startup", "--cache", str(cache)],
        cwd=REPO, capture_output=True, text=True, timeout=300, env=gpu_env,
    )  # fmt: skip
    print(proc.stdout, proc.stderr[-3000:])
    result = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("{")][-1])
    first, second = result["first"], result["second"]
    assert set(first["compiled"].values()) == {"compiled"}, first
    assert first["checked_by"] == "mlx"
    assert set(second["compiled"].values()) == {"cached"}, second
    assert second["checked_by"] == "record"
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert second["speak_after_load_s"] <= 1.0


@pytest.mark.parametrize(
    ("case", "dtype"),
    [("mid-shapes", "float32"), ("full-davis", "float32"), ("full-davis", "bfloat16"),
     ("kv-groups", "float32")],
)  # fmt: skip
def test_kernels_generate_what_mlx_generates(gpu_env, case: str, dtype: str) -> None:
    """Chosen by the engine without a warning, self-check within its tolerance, and eight
    frames (two text windows) within 1e-2 of the MLX functions' on the float32 model."""
    r = _check(gpu_env, "case", case, dtype)
    assert r["ok"], r.get("why", r)
    assert r["backend"] == "cuda" and r["frames"] == kernel_check.FRAMES
    assert r["latent_err"] <= kernel_check.LATENT_TOLERANCE
    assert r["eos_err"] <= kernel_check.EOS_TOLERANCE


def test_a_barrier_that_gives_up_in_the_self_check_means_mlx_and_one_warning(gpu_env) -> None:
    """A grid of more blocks than can be resident: the waiting blocks give up after about
    a second, the self-check sees the error flag, the engine uses the MLX functions."""
    r = _check(gpu_env, "barrier", "mid-shapes", timeout=120)
    assert r["ok"], r
    assert r["backend"] == "mlx" and len(r["warnings"]) == 1


def test_a_barrier_that_gives_up_mid_synthesis_ends_it_with_one_clear_error(gpu_env) -> None:
    r = _check(gpu_env, "barrier-mid", "mid-shapes", timeout=120)
    assert r["ok"], r
    assert "synthesize again" in r["error"] and r["backend_after"] == "mlx"


def test_kernels_are_compiled_under_the_name_mlx_looks_for(gpu_env) -> None:
    """The source MLX generates (its verbose print) is the one the engine hashes, and the
    compiled kernels are in MLX's cache folder under that name."""
    r = _check(gpu_env, "source", "mid-shapes")
    assert r["ok"], r


def test_the_tensor_core_product_is_a_float32_product(gpu_env) -> None:
    """engine/cuda_gemm.py at every weight shape of the full-size model, against float64."""
    r = _check(gpu_env, "gemm", "full-davis")
    assert r["ok"], r
    assert r["error"] <= kernel_check.GEMM_TOLERANCE


def test_a_batch_on_the_tensor_cores_synthesises_what_mlx_s_products_do(gpu_env) -> None:
    """Chosen by the engine on the GPU; a batch of three utterances with every product on
    the tensor cores gives MLX's latents and audio within the kernels' tolerance."""
    r = _check(gpu_env, "tensor-cores", "full-davis", timeout=240)
    assert r["ok"], r
