"""The CUDA frame kernels kept between runs (engine/kernel_cache.py) without a GPU: the
module names MLX looks for, the kernels compiled by NVRTC where MLX finds them, and the
self-check's record that spares the MLX functions on a later start."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from engine import cuda_frame, kernel_cache
from engine.cuda_frame import CudaFrames, check_against_mlx, self_check_record
from engine.mlx_frames import MLXFrames
from engine.weights import load_model
from tests.conftest import parity_model_dir
from tests.engine.cuda_emulator import factory

REPO = Path(__file__).resolve().parents[2]
STEPS = 3
linux_x86 = pytest.mark.skipif(
    sys.platform != "linux" or platform.machine() != "x86_64",
    reason="libstdc++'s hash and NVIDIA's NVRTC wheels: Linux x86-64",
)


@linux_x86
def test_std_hash_is_the_one_cpp_computes(tmp_path) -> None:
    """MLX names a kernel's module by std::hash<std::string> of its source."""
    texts = [b"", b"a", b"custom_kernel_vv_frame_5", bytes(range(256)) * 41]
    prog = tmp_path / "h.cpp"
    prog.write_text(
        "#include <cstdio>\n#include <functional>\n#include <iostream>\n#include <iterator>\n"
        "#include <string>\nint main() {\n  std::istreambuf_iterator<char> in(std::cin), end;\n"
        '  std::string s(in, end);\n  std::printf("%zx", std::hash<std::string>{}(s));\n}\n'
    )
    exe = tmp_path / "h"
    subprocess.run(["g++", "-O1", "-o", str(exe), str(prog)], check=True)
    for t in texts:
        want = subprocess.run([str(exe)], input=t, capture_output=True, check=True).stdout
        assert f"{kernel_cache.std_hash(t):x}" == want.decode()


def test_mlx_source_has_the_kernel_signature_mlx_generates() -> None:
    src = kernel_cache.mlx_kernel_source(
        "k", "// header\n", "  out[0] = a[0];", [("a", "float32"), ("ix", "int32")], ["out"]
    )
    assert src == (
        '\n#include "mlx/backend/cuda/device/utils.cuh"\n\n#include <cooperative_groups.h>\n\n'
        "// header\nnamespace mlx::core::cu {\n\nnamespace cg = cooperative_groups;\n\n"
        "__global__ void custom_kernel_k(\n    const float* a,\n    const int32_t* ix,\n"
        "    float* out) {\n  out[0] = a[0];\n}\n\n} // namespace mlx::core::cu\n"
    )


@pytest.fixture(scope="module")
def mid():
    model = load_model(parity_model_dir("mid-shapes"))
    return model, MLXFrames(model, STEPS)


@linux_x86
@pytest.mark.slow
def test_kernels_compiled_where_mlx_looks_then_found_there(mid, tmp_path) -> None:
    """Each kernel's cubin and the mangled name of its entry, under the module name of
    the source MLX generates; a second start finds them without compiling."""
    model, mlx_frames = mid
    cuda = CudaFrames(model, mlx_frames.schedule, mlx_frames.t_emb,
                      kernel_factory=factory(model.config))  # fmt: skip
    found = kernel_cache.Nvrtc.find()
    assert not isinstance(found, str), found
    spec = cuda._kernels[f"vv_frame_{STEPS}"][1]
    inputs = cuda_frame._kernel_inputs(spec)
    status = kernel_cache.precompile(spec.name, cuda.source, spec.body, inputs, spec.outputs,
                                     tmp_path, "sm_90a", found)  # fmt: skip
    assert status == "compiled"
    source = kernel_cache.mlx_kernel_source(spec.name, cuda.source, spec.body, inputs,
                                            spec.outputs)  # fmt: skip
    module = kernel_cache.mlx_module_name(spec.name, source)
    cubin = (tmp_path / f"{module}.ptx").read_bytes()
    assert cubin[:4] == b"\x7fELF"  # a cubin for the GPU, not PTX text
    name, mangled = (tmp_path / f"{module}.txt").read_text().rstrip("\n").split("\t")
    assert name == f"mlx::core::cu::custom_kernel_{spec.name}"
    assert mangled.encode() in cubin and mangled.startswith("_ZN3mlx4core2cu")
    # Found again without a compiler; another body is another module.
    again = kernel_cache.precompile(spec.name, cuda.source, spec.body, inputs, spec.outputs,
                                    tmp_path, "sm_90a", "no compiler here")  # fmt: skip
    assert again == "cached"
    other = kernel_cache.precompile(spec.name, cuda.source, spec.body + " ", inputs,
                                    spec.outputs, tmp_path, "sm_90a", "none")  # fmt: skip
    assert other == "none"
    assert not list(tmp_path.glob(".*.tmp"))


class CountingFrames:
    """The MLX frame functions, counting the text windows they run."""

    def __init__(self, frames: MLXFrames) -> None:
        self.frames, self.windows = frames, 0

    def __getattr__(self, name: str):
        return getattr(self.frames, name)

    def window(self, tokens, caches):
        self.windows += 1
        return self.frames.window(tokens, caches)


def test_a_passed_self_check_is_recorded_and_spares_mlx_next_time(mid, tmp_path) -> None:
    model, mlx_frames = mid

    def kernels(**kw) -> CudaFrames:
        return CudaFrames(model, mlx_frames.schedule, mlx_frames.t_emb,
                          kernel_factory=factory(model.config, **kw))  # fmt: skip

    counting = CountingFrames(mlx_frames)
    first = kernels()
    record = self_check_record(first, tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        assert check_against_mlx(first, counting, record=record)
        assert first.checked_by == "mlx" and counting.windows == 1
        assert record.path.is_file()
        second = kernels()
        assert self_check_record(second, tmp_path).path == record.path
        assert check_against_mlx(second, counting, record=self_check_record(second, tmp_path))
    assert second.checked_by == "record" and counting.windows == 1
    assert second.check_errors == first.check_errors
    # Kernels whose results differ from the record are checked against MLX again: a
    # wrong one fails that check, and the record goes.
    wrong = kernels(rope_sign=-1.0)
    with pytest.warns(UserWarning, match="disagree with MLX"):
        assert not check_against_mlx(wrong, counting, record=record)
    assert counting.windows == 2 and not record.path.exists()


def test_a_damaged_record_means_a_full_check(mid, tmp_path) -> None:
    model, mlx_frames = mid
    cuda = CudaFrames(model, mlx_frames.schedule, mlx_frames.t_emb,
                      kernel_factory=factory(model.config))  # fmt: skip
    record = self_check_record(cuda, tmp_path)
    record.path.parent.mkdir(parents=True)
    record.path.write_bytes(b"PK\x03\x04 not a whole archive")
    assert check_against_mlx(cuda, mlx_frames, record=record)
    assert cuda.checked_by == "mlx"
    saved = record.load()
    assert saved is not None and np.all(np.isfinite(saved["frame latent"]))


def test_a_record_belongs_to_its_kernels_grid_and_model(mid, tmp_path) -> None:
    model, mlx_frames = mid
    cuda = CudaFrames(model, mlx_frames.schedule, mlx_frames.t_emb,
                      kernel_factory=factory(model.config))  # fmt: skip
    key = self_check_record(cuda, tmp_path).path
    cuda.blocks += 1
    assert self_check_record(cuda, tmp_path).path != key
    cuda.blocks -= 1
    cuda.source += "\n// another kernel"
    assert self_check_record(cuda, tmp_path).path != key


def _backend_env(**env: str) -> str:
    base = {k: v for k, v in os.environ.items() if k != "MLX_PTX_CACHE_DIR"}
    code = "import engine.backend, os; print(os.environ.get('MLX_PTX_CACHE_DIR'))"
    out = subprocess.run([sys.executable, "-c", code], env={**base, **env}, cwd=REPO,
                         capture_output=True, text=True, check=True)  # fmt: skip
    return out.stdout.strip()


@pytest.mark.skipif(sys.platform != "linux", reason="MLX compiles CUDA kernels on Linux")
def test_mlx_keeps_its_compiled_kernels_in_the_engine_cache(tmp_path) -> None:
    import mlx.core as mx

    got = _backend_env(XDG_CACHE_HOME=str(tmp_path))
    assert got == str(tmp_path / "vvreader" / "cuda" / f"mlx-{mx.__version__}" / "ptx")
    assert _backend_env(VVREADER_KERNEL_CACHE=str(tmp_path / "k")).startswith(str(tmp_path / "k"))
    assert _backend_env(MLX_PTX_CACHE_DIR="/elsewhere") == "/elsewhere"
