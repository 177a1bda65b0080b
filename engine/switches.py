"""The engine's ``VVREADER_*`` switches, read from the environment in one place.

Each field is one variable; its default is what the engine does when the variable is
unset. :meth:`Switches.from_environ` is the only reader: whoever builds the engine's
parts reads them once and passes the result down (engine.generate.FrameKernels, the
engine thread, engine.backend before MLX is imported). Importing this module imports
nothing but the standard library.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

_OFF = ("0", "false", "no", "off")


def _on_unless_off(value: str | None) -> bool:
    return value is None or value.strip().lower() not in _OFF


_CPU_LEVELS = {"auto": 5, "amx": 5, "avx512": 4, "avx2": 3, "baseline": 1}


def _cpu_level(value: str | None) -> int:
    return _CPU_LEVELS.get((value or "auto").strip().lower(), 5)


def _unroll(value: str | None) -> int:
    try:
        return max(1, min(8, int(value if value is not None else "4")))
    except ValueError:
        return 4


@dataclass(frozen=True)
class Switches:
    """What the engine may use, where the machine allows it."""

    blas: str = "auto"
    """``VVREADER_BLAS``: "bundled" keeps the BLAS in MLX's Linux wheel instead of
    OpenBLAS and the shim (engine.backend; for baseline measurements)."""
    native_decoder: bool = True
    """``VVREADER_NATIVE_DECODER``: the C decoder on Linux CPUs (engine/native_decoder.py);
    0, false, no or off decode on MLX."""
    native_frames: bool = True
    """``VVREADER_NATIVE_FRAMES``: a speech frame's sampler and the LMs' steps (a frame's and
    a text window's) in C on Linux CPUs (engine/native_frames.py); 0, false, no or off keep
    MLX's compiled functions."""
    bf16_weights: bool = True
    """``VVREADER_BF16_WEIGHTS``: bfloat16 copies of the weights for the BLAS shim's few-row
    products on Linux CPUs (engine/bf16_weights.py); 0, false, no or off turn them off."""
    cuda_kernels: bool = True
    """``VVREADER_CUDA_KERNELS``: a frame and a text window as one CUDA kernel each on an
    NVIDIA GPU (engine/cuda_frame.py); 0, false, no or off keep MLX's graphs."""
    tensor_cores: bool = True
    """``VVREADER_TENSOR_CORES``: the products with the model's weights on an NVIDIA GPU's
    tensor cores, as accurate as float32 (engine/cuda_gemm.py); 0, false, no or off keep
    MLX's float32 products."""
    cuda_unroll: int = 4
    """``VVREADER_CUDA_UNROLL``: 16-byte weight loads a lane of those kernels has in flight
    per row, 1 to 8 (for comparisons)."""
    cpu_level: int = 5
    """``VVREADER_CPU_LEVEL``: the highest x86-64 level the C kernels (the BLAS shim's
    few-row products, the C decoder's layers) may use: "auto" or "amx" (5: the best the CPU
    has; AMX tiles for the products against bfloat16 weights where the CPU and Linux allow
    them), "avx512" (4: AVX-512, no AMX), "avx2" (3: AVX2 and FMA, as on an AMD Zen 3;
    OpenBLAS is then told OPENBLAS_CORETYPE=Haswell unless that is set) or "baseline" (1:
    plain x86-64). For measuring and testing the lower levels' code on a machine that has
    the higher ones."""
    decode_stream: bool = False
    """``VVREADER_DECODE_STREAM``: 1 puts the MLX decoder on a GPU stream of its own next
    to the CUDA frame kernels, so that its launches can overlap them."""

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Switches:
        """The switches set in ``environ`` (default: this process's environment)."""
        env = os.environ if environ is None else environ
        return cls(
            blas=env.get("VVREADER_BLAS", "auto"),
            native_decoder=_on_unless_off(env.get("VVREADER_NATIVE_DECODER")),
            native_frames=_on_unless_off(env.get("VVREADER_NATIVE_FRAMES")),
            bf16_weights=_on_unless_off(env.get("VVREADER_BF16_WEIGHTS")),
            cuda_kernels=_on_unless_off(env.get("VVREADER_CUDA_KERNELS")),
            tensor_cores=_on_unless_off(env.get("VVREADER_TENSOR_CORES")),
            cuda_unroll=_unroll(env.get("VVREADER_CUDA_UNROLL")),
            cpu_level=_cpu_level(env.get("VVREADER_CPU_LEVEL")),
            decode_stream=env.get("VVREADER_DECODE_STREAM", "0") == "1",
        )
