"""The CUDA frame kernels kept between runs: their compiled code, and the self-checks
they passed.

``mx.fast.cuda_kernel`` compiles a kernel with NVRTC the first time it runs in a process
and keeps the result in memory only. Before compiling, MLX (0.32, CUDA) looks for
``<module>.ptx`` and ``<module>.txt`` in its PTX cache folder (``MLX_PTX_CACHE_DIR``),
where ``<module>`` is the kernel's name and the hexadecimal ``std::hash`` of the source
it generates (mlx/backend/cuda/custom_kernel.cpp, jit_module.cpp); it writes that folder
for its own fused kernels but never for custom ones. :func:`precompile` fills the gap:
it compiles each kernel with the same NVRTC and options MLX uses and writes the two files
under the name MLX will look for. Whatever goes wrong there (no NVRTC, another MLX
naming its modules otherwise) costs only the time MLX then spends compiling: a file is
used only under the exact name of the source it was compiled from.

:func:`engine_cache_dir` is the engine's folder for this (``$VVREADER_KERNEL_CACHE``,
else ``$XDG_CACHE_HOME/vvreader/cuda``); engine.backend points ``MLX_PTX_CACHE_DIR``
into it (unless set) before MLX starts, so MLX's own fused kernels are kept there too.

:class:`CheckRecord` keeps what the kernels gave in a self-check that agreed with the
MLX functions (engine/cuda_frame.py), keyed by everything that decides those results
(the kernels' source and launch shapes, the GPU, MLX's version, the model's norms and
biases): a later start runs the kernels' half of the self-check only and compares it
with the record, instead of compiling and running the MLX functions too.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import json
import os
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


# What mlx/backend/cuda/custom_kernel.cpp puts before the header and around the body.
MLX_DEFAULT_HEADER = (
    '\n#include "mlx/backend/cuda/device/utils.cuh"\n\n#include <cooperative_groups.h>\n\n'
)
MLX_NAMESPACE_OPEN = "namespace mlx::core::cu {\n\nnamespace cg = cooperative_groups;\n\n"
MLX_NAMESPACE_CLOSE = "\n}\n\n} // namespace mlx::core::cu\n"
# MLX's names of the element types (dtype_to_cuda_type).
CUDA_TYPES = {"bool_": "bool", "int32": "int32_t", "int64": "int64_t", "uint16": "uint16_t",
              "uint32": "uint32_t", "float32": "float"}  # fmt: skip
# What MLX's utils.cuh brings that the kernels use (it is built into MLX, not on disk):
# the fixed-width integer types, through the CUDA headers.
COMPILE_PRELUDE = """#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda/std/array>
#include <cuda/std/limits>
#include <cuda/std/tuple>
#include <cooperative_groups.h>
"""


def engine_cache_dir(environ: dict[str, str] | None = None) -> Path:
    """The engine's compiled-kernel cache: ``$VVREADER_KERNEL_CACHE``, else
    ``$XDG_CACHE_HOME/vvreader/cuda``, else ``~/.cache/vvreader/cuda``."""
    env = os.environ if environ is None else environ
    if explicit := env.get("VVREADER_KERNEL_CACHE"):
        return Path(explicit).expanduser()
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "vvreader" / "cuda"


def mlx_ptx_dir(mlx_version: str, environ: dict[str, str] | None = None) -> Path:
    """Where MLX reads and writes compiled kernels: ``MLX_PTX_CACHE_DIR``, else its default
    (the temporary folder's mlx/<version>/ptx)."""
    env = os.environ if environ is None else environ
    if explicit := env.get("MLX_PTX_CACHE_DIR"):
        return Path(explicit)
    return Path(tempfile.gettempdir()) / "mlx" / mlx_version / "ptx"


def default_mlx_ptx_dir(mlx_version: str, environ: dict[str, str] | None = None) -> Path:
    """The folder engine.backend gives MLX: one per MLX version (a fused kernel's name
    does not change with MLX's code) in :func:`engine_cache_dir`."""
    return engine_cache_dir(environ) / f"mlx-{mlx_version}" / "ptx"


def mlx_kernel_source(
    name: str, header: str, body: str, inputs: Sequence[tuple[str, str]], outputs: Sequence[str]
) -> str:
    """The source ``mx.fast.cuda_kernel`` generates for kernel ``name`` (no template
    arguments, no shape arguments): ``inputs`` as (name, MLX dtype name), float32
    ``outputs``."""
    lines = [f"    const {CUDA_TYPES[dtype]}* {n},\n" for n, dtype in inputs]
    lines += [f"    float* {n},\n" for n in outputs]
    lines[-1] = lines[-1][: -len(",\n")] + ") {\n"
    return (
        MLX_DEFAULT_HEADER + header + MLX_NAMESPACE_OPEN
        + f"__global__ void custom_kernel_{name}(\n" + "".join(lines) + body + MLX_NAMESPACE_CLOSE
    )  # fmt: skip


def std_hash(data: bytes) -> int | None:
    """``std::hash<std::string>`` of ``data`` as libstdc++ computes it (MLX's module
    names), or None where that library is not at hand."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        lib = ctypes.CDLL("libstdc++.so.6")
        fn = lib._ZSt11_Hash_bytesPKvmm  # std::_Hash_bytes(const void*, size_t, size_t)
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_size_t
    fn.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_size_t]
    return int(fn(data, len(data), 0xC70F6907))


def mlx_module_name(name: str, source: str) -> str | None:
    """The name of the module MLX compiles kernel ``name``'s ``source`` into."""
    h = std_hash(source.encode())
    return None if h is None else f"custom_kernel_{name}_{h:x}"


class Nvrtc:
    """NVIDIA's runtime compiler, the library MLX loads, through ctypes."""

    def __init__(self, lib: ctypes.CDLL, include_dirs: Sequence[Path]) -> None:
        self.lib = lib
        self.include_dirs = list(include_dirs)

    @classmethod
    def find(cls) -> Nvrtc | str:
        """NVRTC and the include folders MLX compiles with; or why they are not found."""
        spec = importlib.util.find_spec("mlx")
        if spec is None or not spec.submodule_search_locations:
            return "MLX is not installed"
        root = Path(next(iter(spec.submodule_search_locations)))
        cuda_include = root.parent / "nvidia" / "cu13" / "include"
        if not cuda_include.is_dir():
            home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or "/usr/local/cuda"
            cuda_include = Path(home) / "include"
        libs = [root.parent / "nvidia" / "cu13" / "lib" / "libnvrtc.so.13", Path("libnvrtc.so.13")]
        for path in libs:
            try:
                lib = ctypes.CDLL(str(path))
                break
            except OSError:
                continue
        else:
            return "NVRTC (libnvrtc.so.13) not found"
        # MLX's own order: its headers, its CCCL (else the CUDA packages'), CUDA's.
        cccl = root / "include" / "cccl"
        cccl = cccl if cccl.is_dir() else cuda_include / "cccl"
        includes = [root / "include", cccl, cuda_include]
        return cls(lib, [p for p in includes if p.is_dir()])

    def compile(self, source: str, name_expr: str, arch: str) -> tuple[bytes, str]:
        """(cubin, lowered name of ``name_expr``) of ``source`` for ``arch`` (sm_90a...);
        RuntimeError with NVRTC's log when it does not compile."""
        lib, prog = self.lib, ctypes.c_void_p()
        if lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), b"k.cu", 0, None, None):
            raise RuntimeError("nvrtcCreateProgram failed")
        try:
            if lib.nvrtcAddNameExpression(prog, name_expr.encode()):
                raise RuntimeError("nvrtcAddNameExpression failed")
            opts = [b"--device-as-default-execution-space", f"--gpu-architecture={arch}".encode()]
            opts += [f"--include-path={p}".encode() for p in self.include_dirs]
            rc = lib.nvrtcCompileProgram(prog, len(opts), (ctypes.c_char_p * len(opts))(*opts))
            if rc:
                size = ctypes.c_size_t()
                lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
                log = ctypes.create_string_buffer(size.value)
                lib.nvrtcGetProgramLog(prog, log)
                raise RuntimeError(f"NVRTC: {log.value.decode(errors='replace')[-2000:]}")
            lowered = ctypes.c_char_p()
            lib.nvrtcGetLoweredName(prog, name_expr.encode(), ctypes.byref(lowered))
            size = ctypes.c_size_t()
            lib.nvrtcGetCUBINSize(prog, ctypes.byref(size))
            cubin = ctypes.create_string_buffer(size.value)
            if lib.nvrtcGetCUBIN(prog, cubin):
                raise RuntimeError("nvrtcGetCUBIN failed")
            return cubin.raw, (lowered.value or b"").decode()
        finally:
            lib.nvrtcDestroyProgram(ctypes.byref(prog))


def gpu_arch(info: dict) -> str:
    """NVRTC's target for the GPU of ``mx.device_info()``, as MLX picks it (sm_XYa from
    compute capability 9 on)."""
    major = int(info.get("compute_capability_major", 0))
    minor = int(info.get("compute_capability_minor", 0))
    return f"sm_{major}{minor}{'a' if major >= 9 else ''}"


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def precompile(
    name: str,
    header: str,
    body: str,
    inputs: Sequence[tuple[str, str]],
    outputs: Sequence[str],
    ptx_dir: Path,
    arch: str,
    nvrtc: Nvrtc | str | None = None,
) -> str:
    """Make sure MLX finds kernel ``name`` compiled in ``ptx_dir``: "cached" when it was
    there, "compiled" when this wrote it, else why not (MLX then compiles it itself).
    ``nvrtc``: the compiler, or why there is none (default: :meth:`Nvrtc.find`)."""
    module = mlx_module_name(name, mlx_kernel_source(name, header, body, inputs, outputs))
    if module is None or len(module) > 245:
        return "no module name"
    cubin_path, names_path = ptx_dir / f"{module}.ptx", ptx_dir / f"{module}.txt"
    if cubin_path.is_file() and cubin_path.stat().st_size > 0 and names_path.is_file():
        return "cached"
    found = nvrtc if nvrtc is not None else Nvrtc.find()
    if isinstance(found, str):
        return found
    qualified = f"mlx::core::cu::custom_kernel_{name}"
    # The same header and body; the type names MLX's prelude gives come from CUDA's.
    params = [f"const {CUDA_TYPES[t]}* {n}" for n, t in inputs] + [f"float* {n}" for n in outputs]
    source = (
        COMPILE_PRELUDE + header + MLX_NAMESPACE_OPEN
        + f"__global__ void custom_kernel_{name}({', '.join(params)}) {{\n{body}"
        + MLX_NAMESPACE_CLOSE
    )  # fmt: skip
    try:
        cubin, lowered = found.compile(source, qualified, arch)
        ptx_dir.mkdir(parents=True, exist_ok=True)
        # MLX takes the module as found once the cubin is there, and its kernels' names
        # from the names file: so that file first, each renamed into place whole.
        _write_atomic(names_path, f"{qualified}\t{lowered}\n".encode())
        _write_atomic(cubin_path, cubin)
    except (OSError, RuntimeError) as e:
        return f"not compiled ({e})"
    return "compiled"


class CheckRecord:
    """The kernels' outputs in a self-check that agreed with MLX, in one file per key."""

    def __init__(self, folder: Path, key: str) -> None:
        self.path = folder / "checks" / f"{key}.npz"

    @staticmethod
    def key(parts: dict) -> str:
        """A file name for everything in ``parts`` (JSON-able values)."""
        blob = json.dumps(parts, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:32]

    def load(self) -> dict[str, np.ndarray] | None:
        """The recorded outputs, or None (none, or unreadable: checked again in full)."""
        import numpy as np

        try:
            with open(self.path, "rb") as fh, np.load(fh, allow_pickle=False) as f:
                return {k: f[k] for k in f.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile):
            return None

    def save(self, outputs: dict[str, np.ndarray]) -> None:
        """Keep ``outputs`` (a failure to write only means a full check next time)."""
        import numpy as np

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.stem}.{os.getpid()}.tmp.npz")
            np.savez(tmp, **outputs)
            os.replace(tmp, self.path)
        except OSError:
            pass

    def forget(self) -> None:
        try:
            self.path.unlink()
        except OSError:
            pass
