"""The LMs' steps in C, for Linux CPUs (engine/_cpu_lm.c), and the loading of the library
they are part of (engine._cpu_frame, with engine/_cpu_head.c's sampler).

A speech frame moves every TTS-LM row one position on; a text window moves one row of each
LM L positions on. On the CPU, MLX runs a step's element-wise work (the MLP's SiLU, the
attention's softmax, RoPE, the norms) one value at a time on one thread; it is what grows
with the rows of a batch, the products being bound by reading the weights. The C step does
that work in vector loops on both threads and hands the products to the same BLAS MLX uses
(the shim's ``cblas_sgemm``, with MLX's own weight buffers, so they are the very products
MLX computes).

:class:`NativeLMStep` is that step of one Qwen2 stack over MLX caches: it reads a layer's
keys and values (evaluated MLX arrays, through their buffers) and returns the queries'
outputs and their new keys and values; the caller writes those into its caches with MLX
(engine/native_frames.py), so MLX stays the only owner of every cache array. Used by
engine/native_frames.py, which engine.frame_backend chooses on Linux when MLX computes on
the CPU, its arrays are float32 and the library and the BLAS shim load;
``VVREADER_NATIVE_FRAMES=0`` turns it off (engine/switches.py)."""

from __future__ import annotations

import ctypes

import engine.backend  # noqa: F401  (chooses MLX's BLAS before mlx.core is imported)

import mlx.core as mx
import numpy as np

from engine.layers import fused_or_none
from engine.qwen2 import Qwen2Stack
from engine.switches import Switches

_I, _F, _P = ctypes.c_int, ctypes.c_float, ctypes.c_void_p


def _setup(lib: ctypes.CDLL, shim: ctypes.CDLL) -> None:
    # The step's and the sampler's products go to the shim, and their loops run at the
    # level the shim's kernels run at (engine.backend sets it from engine/switches.py).
    shim.vvreader_cpu_level.argtypes = [_I]
    shim.vvreader_cpu_level.restype = _I
    level = min(4, shim.vvreader_cpu_level(0))
    blas = (ctypes.cast(shim.cblas_sgemm, _P), ctypes.cast(shim.vvreader_parallel, _P))
    for part in ("vl", "vh"):
        set_blas, cpu_level = getattr(lib, f"{part}_set_blas"), getattr(lib, f"{part}_cpu_level")
        set_blas.argtypes, set_blas.restype = [_P, _P], None
        cpu_level.argtypes, cpu_level.restype = [_I], _I
        set_blas(*blas)
        cpu_level(level)
    lib.vl_new.argtypes = [_I] * 6 + [_F, _F] + [_P] * 9
    lib.vl_new.restype = _P
    lib.vl_free.argtypes = [_P]
    lib.vl_free.restype = None
    lib.vl_step.argtypes = [_P, _I, _P, _P, _P, _P, _I, _I] + [_P] * 6
    lib.vl_step.restype = _I
    lib.vh_new.argtypes = [_I] * 5 + [_F] + [_P] * 10
    lib.vh_new.restype = _P
    lib.vh_free.argtypes = [_P]
    lib.vh_free.restype = None
    lib.vh_sample.argtypes = [_P, _I] + [_P] * 5
    lib.vh_sample.restype = _I


_LIBRARY = engine.backend.CLibrary("_cpu_frame", _setup)


def load_library() -> ctypes.CDLL | None:
    """The C library, loaded once; None (see :func:`unavailable_reason`) when it cannot be."""
    return _LIBRARY.load()


def unavailable_reason() -> str | None:
    """Why :func:`load_library` gives None (None when it loads)."""
    return _LIBRARY.reason()


def native_frames_wanted(switches: Switches, dtype: mx.Dtype) -> bool:
    """The engine's choice of engine/native_frames.py (this step and engine/native_head.py's
    sampler): when the switch allows it, MLX computes on the CPU in float32 and the library
    loads."""
    if not switches.native_frames or dtype != mx.float32:
        return False
    if mx.default_device().type != mx.DeviceType.cpu:
        return False
    return load_library() is not None


def as_numpy(a: mx.array, dtype: type = np.float32) -> np.ndarray:
    """``a`` (evaluated here) as a C-contiguous numpy array of ``dtype`` (np.float32 or
    np.bool_) for the C: a view of MLX's buffer when it already is one (the view keeps the
    MLX array alive), else a copy."""
    want = mx.float32 if dtype is np.float32 else mx.bool_
    if a.dtype != want:
        a = a.astype(want)
    mx.eval(a)
    return np.ascontiguousarray(np.asarray(a), dtype=dtype)


def pointers(arrays: list[np.ndarray | None]) -> ctypes.Array:
    """The arrays' data addresses as a C array of pointers (NULL for None)."""
    return (_P * len(arrays))(*[None if a is None else a.ctypes.data for a in arrays])


class NativeLMStep:
    """Positions of cache rows through a fused Qwen2 stack (engine/qwen2.py's Qwen2Stack
    after ``fuse()``: the TTS LM, or the text LM, which has no final norm), in C.

    Raises:
        ValueError: the stack is not fused, not float32, or of sizes the C loops do not
            take (multiples of 16), or the library is not loaded.
    """

    def __init__(self, stack: Qwen2Stack) -> None:
        lib = load_library()
        if lib is None:
            raise ValueError(f"the C step is unavailable: {unavailable_reason()}")
        layers = stack.layers
        attn0 = layers[0].self_attn
        weights: dict[str, list[np.ndarray]] = {
            k: [] for k in ("in_norm", "post_norm", "qkv", "qkv_bias", "o", "gate", "up", "down")
        }
        stacked_mlp = False
        for layer in layers:
            qkv, gate_up = fused_or_none(layer.self_attn.fused), fused_or_none(layer.mlp.fused)
            if qkv is None or qkv.bias is None:
                raise ValueError("the TTS LM's q, k and v are not fused (model.fuse())")
            # Gate and up as MLX multiplies them: stacked (a GPU's choice), or two products.
            stacked_mlp = gate_up is not None
            mlp = (
                {"gate": gate_up.weight}
                if gate_up is not None
                else {"gate": layer.mlp.gate_proj.weight, "up": layer.mlp.up_proj.weight}
            )
            parts = {
                "in_norm": layer.input_layernorm.weight,
                "post_norm": layer.post_attention_layernorm.weight,
                "qkv": qkv.weight,
                "qkv_bias": qkv.bias,
                "o": layer.self_attn.o_proj.weight,
                **mlp,
                "down": layer.mlp.down_proj.weight,
            }
            for name, a in parts.items():
                if a.dtype != mx.float32:
                    raise ValueError("the C step takes float32 weights")
                weights[name].append(as_numpy(a, np.float32))
        norm = stack.get("norm")
        self._final = None if norm is None else as_numpy(norm.weight, np.float32)
        # The arrays stay referenced here: the C step keeps their addresses. The products'
        # weights are MLX's own buffers, the ones the BLAS shim knows bfloat16 copies of.
        self._weights = weights
        self.layers = len(layers)
        self.hidden = weights["o"][0].shape[0]
        self.kv_heads, self.head_dim = attn0.n_kv, attn0.head_dim
        eps = layers[0].input_layernorm.eps
        inter = weights["down"][0].shape[1]
        handle = lib.vl_new(
            self.layers, self.hidden, attn0.n_heads, self.kv_heads, self.head_dim, inter,
            eps, attn0.rope_theta,
            *(pointers(weights[k]) for k in ("in_norm", "post_norm", "qkv", "qkv_bias", "o")),
            pointers(weights["gate"]),
            (_P * self.layers)() if stacked_mlp else pointers(weights["up"]),
            pointers(weights["down"]),
            None if self._final is None else self._final.ctypes.data,
        )  # fmt: skip
        if not handle:
            raise ValueError("the C step does not take this model's sizes")
        self._lib, self._handle = lib, handle

    def __del__(self) -> None:
        if getattr(self, "_handle", None):
            self._lib.vl_free(self._handle)
            self._handle = None

    def __call__(
        self,
        x: mx.array,
        keys: list[mx.array],
        values: list[mx.array],
        valid: mx.array,
        columns: list[int],
        positions: list[int],
        rows: list[int] | None = None,
    ) -> tuple[mx.array, mx.array, mx.array]:
        """Queries ``x`` (Q, hidden) one position on, over the caches ``keys``/``values``
        (per layer, (R, KV, capacity, head dim)) and ``valid`` (R, capacity). Query q is a
        position of cache row ``rows[q]`` (default: row q; a speech frame has one per row,
        a text window L consecutive ones in a row, at consecutive columns): its new key and
        value go to column ``columns[q]`` (attended to as if written already, by it and
        the row's later queries) at RoPE position ``positions[q]``. Evaluates its inputs.
        Returns (outputs (Q, hidden), new keys, new values (layers, Q, KV, head dim)),
        for the caller to write.

        Raises:
            IndexError: a row, a column or a position out of range, or a row's queries
                not consecutive.
        """
        queries, (n_rows, _, cap, _) = x.shape[0], keys[0].shape
        if len(columns) != queries or len(positions) != queries or valid.shape != (n_rows, cap):
            raise ValueError("one column and one position per query, and a valid mask per row")
        if rows is not None and len(rows) != queries:
            raise ValueError("one cache row per query")
        mx.eval(x, keys, values, valid)
        xs = as_numpy(x, np.float32)
        ks = [as_numpy(k, np.float32) for k in keys]
        vs = [as_numpy(v, np.float32) for v in values]
        ok = as_numpy(valid, np.bool_)
        ints = [None if a is None else np.asarray(a, np.int32) for a in (rows, columns, positions)]
        out = np.empty((queries, self.hidden), np.float32)
        shape = (self.layers, queries, self.kv_heads, self.head_dim)
        new_k, new_v = np.empty(shape, np.float32), np.empty(shape, np.float32)
        err = self._lib.vl_step(
            self._handle, queries, xs.ctypes.data, out.ctypes.data, pointers(ks), pointers(vs),
            n_rows, cap, ok.ctypes.data, *(None if a is None else a.ctypes.data for a in ints),
            new_k.ctypes.data, new_v.ctypes.data,
        )  # fmt: skip
        if err == -1:
            raise IndexError(
                f"a cache row outside 0..{n_rows - 1}, a column outside 0..{cap - 1}, a "
                "negative position, or a row's queries not consecutive"
            )
        if err:
            raise MemoryError("no memory for the TTS-LM step's workspace")
        return mx.array(out), mx.array(new_k), mx.array(new_v)
