"""Process-level MLX plumbing: the BLAS library MLX uses on Linux, and the MLX threads.

Importing this module chooses MLX's BLAS (:func:`configure_cpu_blas`), which works only
before ``mlx.core`` is imported: so every engine module that imports MLX imports this one
first (ruff's isort keeps it in a section of its own, above the third-party imports), and
a program that imports ``mlx.core`` itself imports ``engine.backend`` before it. Importing
the ``engine`` package or its light modules (``engine.api``, ``engine.errors``,
``engine.hub``, ``engine.voice_fetch``) loads neither MLX nor a BLAS.

A thread that has run MLX work must never exit while the interpreter may be shutting
down: its thread-local MLX state is torn down on exit, and when that races with
interpreter finalization the process aborts ("terminate called without an active
exception", seen with mlx 0.32 on Linux). So MLX threads are pooled daemon threads
that park between tasks and are reused; they die only with the process.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import queue
import sys
import threading
from collections.abc import Callable

from engine.switches import Switches

_blas = "not configured"


def configure_cpu_blas() -> str:
    """Give MLX an optimized BLAS on Linux; must run before ``mlx.core`` is imported.

    MLX's Linux CPU wheel bundles the reference (netlib) BLAS, far slower than OpenBLAS on
    this project's matmuls (../shared/notes/platform.md). We load scipy-openblas32 and our
    small shim (engine/_blas_shim.c: cblas_* symbols, GEMV for products of at most 4 rows)
    with RTLD_GLOBAL, so libmlx binds to them when it loads.
    ``VVREADER_BLAS=bundled`` keeps MLX's own BLAS (for baseline measurements).

    Returns:
        What MLX will use: "openblas+shim", "bundled", "system" (not Linux) or a reason.
    """
    global _blas
    if _blas != "not configured":
        return _blas
    # float32 must mean float32: MLX's CUDA backend runs float32 matmuls as TF32 unless
    # told otherwise, which moves the parity cases by 1e-2 (measured on an H100).
    # Faster precisions are chosen per part, explicitly, not by this switch.
    os.environ.setdefault("MLX_ENABLE_TF32", "0")
    _keep_compiled_kernels()
    if not sys.platform.startswith("linux"):
        _blas = "system"
    elif (switches := Switches.from_environ()).blas == "bundled":
        _blas = "bundled"
    elif "mlx.core" in sys.modules:
        _blas = "bundled (mlx.core was imported before engine.backend)"
    else:
        if switches.cpu_level == 3:
            # OpenBLAS's kernels of an AVX2 machine (read when it loads); the shim's and
            # the C decoder's are chosen after.
            os.environ.setdefault("OPENBLAS_CORETYPE", "Haswell")
        _blas = _load_shim(switches.cpu_level)
    return _blas


def _keep_compiled_kernels() -> None:
    """Have MLX keep the CUDA kernels it compiles in the engine's cache folder
    (engine.kernel_cache), unless ``MLX_PTX_CACHE_DIR`` names one: MLX's default is the
    temporary folder, which a restart of the machine empties. Read by MLX when it first
    compiles, so set here, before any MLX work."""
    if "MLX_PTX_CACHE_DIR" in os.environ or not sys.platform.startswith("linux"):
        return
    from importlib import metadata

    from engine.kernel_cache import default_mlx_ptx_dir

    try:
        version = metadata.version("mlx")
    except metadata.PackageNotFoundError:
        return
    os.environ["MLX_PTX_CACHE_DIR"] = str(default_mlx_ptx_dir(version))


_shim: ctypes.CDLL | None = None
_shim_lock = threading.Lock()


def _open_shim() -> ctypes.CDLL | str:
    """Load scipy-openblas32 and the shim (once) with RTLD_GLOBAL; the shim's handle, or
    why it could not be loaded."""
    global _shim
    with _shim_lock:
        if _shim is not None:
            return _shim
        shim = importlib.util.find_spec("engine._blas_shim")
        if shim is None or shim.origin is None:
            return "the BLAS shim was not built: reinstall with a C compiler"
        try:
            import scipy_openblas32
        except ImportError:
            return "scipy-openblas32 is not installed"
        lib = os.path.join(
            scipy_openblas32.get_lib_dir(), f"lib{scipy_openblas32.get_library()}.so"
        )
        # After each call OpenBLAS's worker threads busy-wait 2^28 cycles (~0.1 s) for the
        # next; on two cores that took one from the shim's helper thread and MLX's work
        # between the decoder's products. 2^4 cycles: first audio 184 against 219 ms,
        # 118 against 122 ms per frame (medians of 3 alternating runs, 2-core VM). Read
        # when OpenBLAS loads; a value set by the user is kept.
        os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
        try:
            ctypes.CDLL(lib, mode=ctypes.RTLD_GLOBAL)
            _shim = ctypes.CDLL(shim.origin, mode=ctypes.RTLD_GLOBAL)
        except OSError as e:
            return f"could not load OpenBLAS: {e}"
        return _shim


def _load_shim(cpu_level: int) -> str:
    shim = _open_shim()
    if isinstance(shim, str):
        return f"bundled ({shim})"
    # The C decoder (engine/native_decoder.py) runs at the shim's level too.
    shim.vvreader_cpu_level.argtypes = [ctypes.c_int]
    shim.vvreader_cpu_level(cpu_level)
    return "openblas+shim"


def blas_shim() -> ctypes.CDLL | str:
    """The BLAS shim's library handle (its ``cblas_sgemm`` for our own C code), loading it
    if MLX was set up without it; or why it cannot be loaded. Loading it late does not
    change the BLAS MLX already bound to."""
    if not sys.platform.startswith("linux"):
        return "not Linux"
    return _open_shim()


def open_c_library(name: str) -> tuple[ctypes.CDLL, ctypes.CDLL] | str:
    """One of the engine's own C libraries (``engine.<name>``, built by setup.py) opened
    with ctypes, with the BLAS shim its products go to (the shim's ``cblas_sgemm``:
    scipy-openblas32, 32-bit ints); or why it cannot be."""
    if not sys.platform.startswith("linux"):
        return "not Linux"
    spec = importlib.util.find_spec(f"engine.{name}")
    if spec is None or spec.origin is None:
        return f"engine.{name} was not built (reinstall with a C compiler)"
    if isinstance(shim := blas_shim(), str):
        return f"no BLAS for it: {shim}"
    try:
        return ctypes.CDLL(spec.origin), shim
    except OSError as e:
        return f"could not load engine.{name}: {e}"


class CLibrary:
    """One of the engine's C libraries (:func:`open_c_library`), opened and set up once,
    by whichever thread asks first: ``setup(lib, shim)`` declares its functions and hands
    it the shim's. :meth:`load` gives it, or None; :meth:`reason` says why not."""

    def __init__(self, name: str, setup: Callable[[ctypes.CDLL, ctypes.CDLL], None]) -> None:
        self._name, self._setup = name, setup
        self._lib: ctypes.CDLL | None = None
        self._error: str | None = None
        self._lock = threading.Lock()

    def load(self) -> ctypes.CDLL | None:
        with self._lock:
            if self._lib is None and self._error is None:
                opened = open_c_library(self._name)
                if isinstance(opened, str):
                    self._error = opened
                else:
                    self._setup(*opened)
                    self._lib = opened[0]
            return self._lib

    def reason(self) -> str | None:
        """Why :meth:`load` gives None (None when it loads)."""
        self.load()
        return self._error


def blas_in_use() -> str:
    return _blas


_LEVEL_NAMES = {5: "amx", 4: "avx512", 3: "avx2", 1: "baseline"}


def cpu_level_in_use() -> str | None:
    """The level the C kernels run at ("amx", "avx512", "avx2" or "baseline"; see
    engine/switches.py), or None where MLX does not use the shim."""
    if _blas != "openblas+shim":
        return None
    shim = blas_shim()
    if isinstance(shim, str):
        return None
    shim.vvreader_cpu_level.argtypes = [ctypes.c_int]
    shim.vvreader_cpu_level.restype = ctypes.c_int
    return _LEVEL_NAMES.get(shim.vvreader_cpu_level(0), "baseline")


configure_cpu_blas()

_idle: queue.SimpleQueue[_MLXThread] = queue.SimpleQueue()


IDLE_MLX_THREAD = "vvreader-mlx-idle"
"""The name of a pooled MLX thread waiting for its next task (it lives as long as the
process); while it runs a task it bears the name given to :func:`run_on_mlx_thread`."""


class _MLXThread(threading.Thread):
    def __init__(self, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.tasks: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()

    def run(self) -> None:
        while True:
            task = self.tasks.get()
            try:
                task()
            finally:
                self.name = IDLE_MLX_THREAD
                _idle.put(self)


def run_on_mlx_thread(task: Callable[[], None], name: str = "vvreader-mlx") -> None:
    """Run ``task`` on a pooled MLX thread (an idle one, or a new one) named ``name``
    until the task returns."""
    try:
        worker = _idle.get_nowait()
        worker.name = name
    except queue.Empty:
        worker = _MLXThread(name)
        worker.start()
    worker.tasks.put(task)
