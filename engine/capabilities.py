"""Which of the engine's paths this installation and machine will use, without a model.

The engine has one MLX path that runs everywhere and optional faster ones that need a
platform, a built C library or a GPU: OpenBLAS with the BLAS shim (engine.backend), the C
decoder (engine.native_decoder), a frame's sampler and the LMs' steps in C (engine.native_lm),
the bfloat16 weight copies (engine.bf16_weights), the CUDA frame kernels (engine.cuda_frame)
and the tensor-core products (engine.cuda_gemm).
:func:`capabilities` asks each of them the question the engine asks when it loads a model
(their ``*_wanted`` and ``on_cuda_gpu`` functions), so the answer is the engine's own
choice; it imports MLX and loads the C libraries, but reads no weights. The CUDA kernels
are also checked against MLX when a model loads, which can still turn them off (with a
warning).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import engine.backend  # noqa: F401  (chooses MLX's BLAS before mlx.core is imported)

import mlx.core as mx

from engine.switches import Switches

__all__ = ["ActivePath", "Capabilities", "capabilities"]


@dataclass(frozen=True)
class ActivePath:
    """One optional path: whether the engine uses it here, and what or why not."""

    name: str
    active: bool
    detail: str

    def describe(self) -> str:
        return f"{self.name}: {'on' if self.active else 'off'} ({self.detail})"


@dataclass(frozen=True)
class Capabilities:
    """MLX, the device it computes on, and the optional paths in use."""

    mlx_version: str
    device: str
    """"cpu", "gpu (Metal)" or "gpu (CUDA)"."""
    paths: tuple[ActivePath, ...]

    def path(self, name: str) -> ActivePath:
        return next(p for p in self.paths if p.name == name)

    def lines(self) -> list[str]:
        return [f"MLX {self.mlx_version} on {self.device}"] + [p.describe() for p in self.paths]


def _device() -> str:
    if mx.default_device().type == mx.DeviceType.cpu:
        return "cpu"
    if mx.cuda.is_available():
        return "gpu (CUDA)"
    return "gpu (Metal)" if mx.metal.is_available() else "gpu"


def _blas(blas: str) -> ActivePath:
    name = "OpenBLAS and the BLAS shim"
    if blas == "openblas+shim":
        return ActivePath(name, True, "scipy-openblas32 does MLX's CPU matrix products")
    if blas == "system":
        return ActivePath(name, False, "not Linux: MLX's own BLAS")
    if blas == "bundled":
        return ActivePath(name, False, "MLX's own BLAS; VVREADER_BLAS=bundled")
    reason = blas.removeprefix("bundled (").removesuffix(")")
    return ActivePath(name, False, f"MLX's own BLAS; {reason}")


def _c_decoder(switches: Switches, on_cpu: bool) -> ActivePath:
    from engine import native_decoder

    name = "C decoder"
    if not switches.native_decoder:
        return ActivePath(name, False, "MLX decodes; VVREADER_NATIVE_DECODER is off")
    if not on_cpu:
        return ActivePath(name, False, "MLX computes on a GPU and decodes there")
    if native_decoder.native_decoder_wanted(switches):
        return ActivePath(name, True, "the acoustic decoder runs in C on the CPU")
    return ActivePath(name, False, f"MLX decodes; {native_decoder.unavailable_reason()}")


def _c_frames(switches: Switches, on_cpu: bool) -> ActivePath:
    from engine import native_lm

    name = "C speech frames"
    if not switches.native_frames:
        return ActivePath(name, False, "MLX runs the frames; VVREADER_NATIVE_FRAMES is off")
    if not on_cpu:
        return ActivePath(name, False, "MLX computes on a GPU")
    # The engine's models are float32 on the CPU (engine.weights).
    if native_lm.native_frames_wanted(switches, mx.float32):
        return ActivePath(name, True, "the sampler and the LMs' steps run in C on the CPU")
    return ActivePath(name, False, f"MLX runs the frames; {native_lm.unavailable_reason()}")


def _bf16_copies(switches: Switches, on_cpu: bool, blas: ActivePath) -> ActivePath:
    from engine import bf16_weights

    name = "bf16 weight copies"
    if not switches.bf16_weights:
        return ActivePath(name, False, "VVREADER_BF16_WEIGHTS is off")
    if not on_cpu:
        return ActivePath(name, False, "MLX computes on a GPU")
    if bf16_weights.bf16_weights_wanted(switches):
        return ActivePath(name, True, "the shim's few-row products read bfloat16 weights")
    if not blas.active:
        return ActivePath(name, False, "they need the BLAS shim")
    return ActivePath(name, False, "the BLAS shim has no bfloat16 registry")


def _cuda_path(name: str, on: bool, switch: str, source: Path, on_why: str) -> ActivePath:
    from engine import cuda_frame

    if not on:
        return ActivePath(name, False, f"{switch} is off")
    if not cuda_frame.on_cuda_gpu():
        return ActivePath(name, False, "MLX does not compute on a CUDA GPU")
    if not source.is_file():
        return ActivePath(name, False, f"{source.name} is missing from the install")
    return ActivePath(name, True, on_why)


def _cuda_kernels(switches: Switches) -> ActivePath:
    from engine import cuda_frame

    return _cuda_path("CUDA kernels", switches.cuda_kernels, "VVREADER_CUDA_KERNELS",
                      cuda_frame.SOURCE, "checked against MLX when the model loads")  # fmt: skip


def _tensor_cores(switches: Switches) -> ActivePath:
    from engine import cuda_gemm

    return _cuda_path(
        "tensor-core products", switches.tensor_cores, "VVREADER_TENSOR_CORES", cuda_gemm.SOURCE,
        "float32-exact, from 1,024 rows; checked when the model loads",
    )  # fmt: skip


def capabilities(switches: Switches | None = None) -> Capabilities:
    """What the engine will use here (``switches`` default: this process's environment)."""
    switches = switches or Switches.from_environ()
    on_cpu = mx.default_device().type == mx.DeviceType.cpu
    blas = _blas(engine.backend.blas_in_use())
    paths = (
        blas,
        _c_decoder(switches, on_cpu),
        _c_frames(switches, on_cpu),
        _bf16_copies(switches, on_cpu, blas),
        _cuda_kernels(switches),
        _tensor_cores(switches),
    )
    return Capabilities(mlx_version=mx.__version__, device=_device(), paths=paths)
