"""engine/cuda_kernels.cu compiles for the H100/H200 (sm_90a) with NVRTC, wrapped as
mx.fast.cuda_kernel wraps it, and fits one block per multiprocessor with room to spare.
No GPU needed: NVRTC and the CUDA headers come from NVIDIA's pip packages (dev extra)."""

from __future__ import annotations

import ctypes
import platform
import re
import sys
from pathlib import Path

import pytest

from engine import cuda_frame
from engine.config import VibeVoiceConfig
from tests.conftest import PARITY

pytestmark = pytest.mark.skipif(
    sys.platform != "linux" or platform.machine() != "x86_64",
    reason="NVIDIA publishes NVRTC on PyPI for Linux x86-64",
)


def _cu13() -> Path:
    import nvidia  # the dev extra's nvidia-cuda-nvrtc, -runtime and -cccl

    return Path(next(iter(nvidia.__path__))) / "cu13"


# The start of mx.fast.cuda_kernel's source (mlx/backend/cuda/custom_kernel.cpp, whose
# utils.cuh includes these), then the header, then the generated signature and body.
PRELUDE = """#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda/std/array>
#include <cuda/std/limits>
#include <cuda/std/tuple>
#include <cooperative_groups.h>
#define inf cuda::std::numeric_limits<float>::infinity()
"""
# mx dtypes of the kernels' inputs, as dtype_to_cuda_type names them.
TYPES = {"wh": "uint16_t", "offs": "int64_t", "valid": "bool", "info": "int32_t",
         "state": "uint32_t"}  # fmt: skip


def _source(spec: cuda_frame.KernelSpec, header: str) -> str:
    params = [f"const {TYPES.get(n, 'float')}* {n}" for n in spec.inputs]
    params += [f"float* {n}" for n in spec.outputs]
    return (
        PRELUDE + header + "\nnamespace mlx::core::cu {\nnamespace cg = cooperative_groups;\n"
        f"__global__ void {spec.name}({', '.join(params)}) {{\n{spec.body}\n}}\n}}\n"
    )


def _compile(source: str) -> tuple[int, str]:
    cu13 = _cu13()
    lib = ctypes.CDLL(str(cu13 / "lib" / "libnvrtc.so.13"))
    prog = ctypes.c_void_p()
    assert lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), b"k.cu", 0, None, None) == 0
    opts = [b"--gpu-architecture=sm_90a", b"--device-as-default-execution-space",
            f"--include-path={cu13 / 'include'}".encode(),
            f"--include-path={cu13 / 'include' / 'cccl'}".encode(), b"-Xptxas", b"-v"]  # fmt: skip
    rc = lib.nvrtcCompileProgram(prog, len(opts), (ctypes.c_char_p * len(opts))(*opts))
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(prog, log)
    lib.nvrtcDestroyProgram(ctypes.byref(prog))
    return rc, log.value.decode(errors="replace")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["frame", "sample", "feed", "window"])
@pytest.mark.parametrize("case", ["full-davis", "mid-shapes"])
def test_kernels_compile_and_fit_a_multiprocessor(case: str, kind: str) -> None:
    """Both shapes: the kernels are compiled per model, its sizes baked in as constants
    (the source's static_asserts check the shared-memory layout against them)."""
    cfg = VibeVoiceConfig.from_file(PARITY / case / "model" / "config.json")
    assert cuda_frame.unsupported(cfg) is None
    if kind == "window":
        spec = cuda_frame.window_spec(cfg)
    else:
        spec = cuda_frame.frame_spec(cfg, 5, kind != "feed", kind != "sample")
    rc, log = _compile(_source(spec, cuda_frame.header(cfg)))
    assert rc == 0, log[-4000:]
    assert "error" not in log.lower(), log[-4000:]
    regs = int(re.search(r"Used (\d+) registers", log).group(1))
    spills = re.search(r"(\d+) bytes spill stores", log)
    assert spills is not None and int(spills.group(1)) == 0, log[-2000:]
    # One block per multiprocessor must be resident (grid_sync): registers and shared
    # memory of a block within an sm_90 multiprocessor's 64K registers and 227 KB.
    assert regs * cuda_frame.THREADS <= 65536
    assert spec.shared_bytes <= cuda_frame.MAX_SHARED_BYTES


def test_a_layout_too_small_for_its_rows_does_not_compile() -> None:
    """The static_asserts hold the shared-memory layout to the sizes: a frame kernel whose
    staged rows are narrower than the diffusion head's hidden layer is refused by NVRTC."""
    cfg = VibeVoiceConfig.from_file(PARITY / "mid-shapes" / "model" / "config.json")
    header = cuda_frame.header(cfg).replace("constexpr int ROW_FRAME = 1344;",
                                            "constexpr int ROW_FRAME = 1024;")  # fmt: skip
    assert "ROW_FRAME = 1024;" in header
    rc, log = _compile(_source(cuda_frame.frame_spec(cfg, 5, True, True), header))
    assert rc != 0 and "the frame stages rows of HF too" in log, log[-2000:]
