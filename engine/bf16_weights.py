"""bfloat16 copies of the float32 weights, for the BLAS shim's few-row products (Linux CPU).

The checkpoint is bfloat16 and loads as float32, so every weight value is exactly a
bfloat16. Token-by-token steps (the CFG pair's TTS-LM step, the diffusion head's batch
of two, a text window) are products of a few rows against big weight matrices, bound by
reading the weights. engine/_blas_shim.c keeps a registry: float32 buffer address (what
MLX passes to cblas_sgemm as B for ``x @ W.T``), shape, and a bfloat16 copy in the same
layout; a product of at most 16 rows against a registered matrix reads the copy (half
the bytes, the same values; float32 arithmetic as before).

:func:`register_model` registers the matrices the language models, the diffusion head,
the connector and the EOS head actually multiply with: the stacked arrays of fused
projections (engine/layers.py ``Fused``, made by ``model.fuse()``) and the weights of
the plain ``nn.Linear`` layers outside them. A matrix with any value that is not a
bfloat16 is left out. The copies cost half the float32 size of those weights (766 MiB for
the full model) and live as long as the model.

Used by engine.generate on Linux when MLX computes on the CPU through the shim;
``VVREADER_BF16_WEIGHTS=0`` turns it off (engine/switches.py).
"""

from __future__ import annotations

import ctypes
import mmap
import sys
import threading
import weakref

import engine.backend  # noqa: F401  (chooses MLX's BLAS before mlx.core is imported)

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from engine.layers import Fused, fused_or_none
from engine.switches import Switches

_P, _I = ctypes.c_void_p, ctypes.c_int
_lock = threading.Lock()
# Address of a registered float32 matrix -> (numpy view of it, its bfloat16 copy). The
# view keeps MLX's buffer alive (so its address is not reused while registered) and the
# copy is what the shim reads.
_entries: dict[int, tuple[np.ndarray, np.ndarray]] = {}
# id(model) -> addresses registered for it (released when the model is collected).
_owners: dict[int, set[int]] = {}


def _shim() -> ctypes.CDLL | None:
    """The BLAS shim with the registry's functions typed, when MLX uses it."""
    from engine.backend import blas_in_use, blas_shim

    if not sys.platform.startswith("linux") or blas_in_use() != "openblas+shim":
        return None
    lib = blas_shim()
    if isinstance(lib, str) or not hasattr(lib, "vvreader_register_bf16"):
        return None
    if not getattr(lib, "_vv_bf16_typed", False):
        lib.vvreader_register_bf16.argtypes = [_P, _I, _I, _P]
        lib.vvreader_register_bf16.restype = _I
        lib.vvreader_unregister_bf16.argtypes = [_P]
        lib.vvreader_unregister_bf16.restype = _I
        lib.vvreader_bf16_weights.argtypes = [_I]
        lib.vvreader_bf16_weights.restype = _I
        lib.vvreader_bf16_calls.argtypes = []
        lib.vvreader_bf16_calls.restype = ctypes.c_long
        lib.vvreader_to_bf16.argtypes = [ctypes.c_long, _P, _P]
        lib.vvreader_to_bf16.restype = _I
        lib._vv_bf16_typed = True
    return lib


def bf16_weights_wanted(switches: Switches) -> bool:
    """The engine's choice: registered copies when the switch allows it, MLX computes on
    the CPU and its matmuls go through the shim."""
    if not switches.bf16_weights:
        return False
    if mx.default_device().type != mx.DeviceType.cpu:
        return False
    return _shim() is not None


def weight_matrices(model: nn.Module) -> list[mx.array]:
    """The 2-D float32 matrices the LM stacks, the diffusion head, the connector and the
    EOS head multiply with (``x @ W.T``): each current ``Fused`` stack, and the weight
    of every plain ``nn.Linear`` that is not part of one (those are views of a stack)."""
    m = model.model
    parts = [
        m.language_model,
        m.tts_language_model,
        m.prediction_head,
        m.acoustic_connector,
        model.tts_eos_classifier,
    ]
    stacks: list[mx.array] = []
    in_stack: set[int] = set()
    linears: list[nn.Linear] = []
    for part in parts:
        for _, module in part.named_modules():
            for value in vars(module).values():
                if isinstance(value, Fused) and (f := fused_or_none(value)) is not None:
                    stacks.append(f.weight)
                    in_stack.update(id(layer) for layer in f.layers)
            if type(module) is nn.Linear:
                linears.append(module)
    mats = stacks + [lin.weight for lin in linears if id(lin) not in in_stack]
    return [w for w in mats if w.ndim == 2 and w.dtype == mx.float32]


def _arena(values: int) -> np.ndarray:
    """A zeroed uint16 buffer for ``values`` values, its pages mapped up front. Not
    np.empty: numpy asks for transparent huge pages, and with the model loaded the
    kernel compacts memory for them (defrag=madvise) while the copies are written,
    which takes many times longer than writing them."""
    nbytes = max(2 * values, 1)
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_POPULATE", 0)
    try:
        buf = mmap.mmap(-1, nbytes, flags=flags)
    except (OSError, AttributeError, ValueError):
        return np.empty(values, np.uint16)
    # The array keeps the mapping alive; it is unmapped when the last copy goes.
    return np.frombuffer(buf, np.uint16, count=values)


def _bf16_copies(lib: ctypes.CDLL, views: list[np.ndarray]) -> list[np.ndarray | None]:
    """Each view's bfloat16 bits (uint16, the top half of each float32; one pass in C),
    or None for a view with any value that is not a bfloat16. The copies are slices of
    one arena, each starting on a 128-byte boundary."""
    align = 64  # values: 128 bytes
    starts, end = [], 0
    for v in views:
        starts.append(end)
        end += -(-v.size // align) * align
    arena = _arena(end)
    out: list[np.ndarray | None] = []
    for v, start in zip(views, starts, strict=True):
        copy = arena[start : start + v.size].reshape(v.shape)
        ok = lib.vvreader_to_bf16(v.size, v.ctypes.data, copy.ctypes.data)
        out.append(copy if ok else None)
    return out


def _release(addresses: set[int]) -> None:
    """Unregister and drop the copies of ``addresses`` that no live model still uses."""
    lib = _shim()
    with _lock:
        kept = set().union(*_owners.values()) if _owners else set()
        for addr in addresses - kept:
            if lib is not None:
                lib.vvreader_unregister_bf16(addr)
            _entries.pop(addr, None)


def register_model(model: nn.Module, switches: Switches | None = None) -> int:
    """Register the bfloat16 copies of ``model``'s weight matrices (:func:`weight_matrices`)
    with the shim; call after ``model.fuse()``, before computing. Idempotent: matrices
    already registered are kept, ones the model no longer uses (a re-fused stack) are
    released. Returns how many matrices are registered for the model; 0 when
    :func:`bf16_weights_wanted` is False (``switches`` default: every switch on)."""
    if not bf16_weights_wanted(switches or Switches()):
        return 0
    lib = _shim()
    assert lib is not None
    mx.eval(weight_matrices(model))
    current: set[int] = set()
    with _lock:
        new: dict[int, np.ndarray] = {}
        for w in weight_matrices(model):
            # A zero-copy view of MLX's buffer: its address is the B that MLX hands
            # cblas_sgemm for x @ w.T (tests/engine/test_bf16_weights.py checks that the
            # registered copies are the ones read).
            view = np.asarray(w)
            if not view.flags.c_contiguous or view.dtype != np.float32:
                continue
            addr = view.ctypes.data
            if addr in _entries:
                current.add(addr)
            else:
                new[addr] = view
        for (addr, view), copy in zip(
            new.items(), _bf16_copies(lib, list(new.values())), strict=True
        ):
            if copy is None:
                continue  # some value is not a bfloat16: the float32 path stays exact
            if lib.vvreader_register_bf16(addr, view.shape[0], view.shape[1], copy.ctypes.data):
                _entries[addr] = (view, copy)
                current.add(addr)
        key = id(model)
        stale = _owners.get(key, set()) - current
        first = key not in _owners
        _owners[key] = current
    if stale:
        _release(stale)
    if first:
        weakref.finalize(model, _forget, key)
    return len(current)


def _forget(key: int) -> None:
    with _lock:
        addresses = _owners.pop(key, set())
    _release(addresses)


def set_enabled(on: bool) -> bool:
    """Use the registered copies (True, the default) or the float32 weights (False) from
    now on, process-wide; returns the previous setting. For measurements and tests."""
    lib = _shim()
    return bool(lib.vvreader_bf16_weights(int(on))) if lib is not None else False


def bf16_calls() -> int:
    """Products that have read a registered copy in this process (0 without the shim)."""
    lib = _shim()
    return int(lib.vvreader_bf16_calls()) if lib is not None else 0


def registered_count() -> int:
    """Matrices registered in this process."""
    with _lock:
        return len(_entries)
