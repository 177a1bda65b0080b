"""The streaming acoustic decoder in C, for Linux CPUs (engine/_cpu_decoder.c).

Same model, same streaming semantics as :class:`engine.acoustic.AcousticDecoder` (which
stays the reference): one causal-conv history per conv and one transposed-conv spill per
upsampler, zeros at the start, so decoding frame by frame equals decoding at once. On the
CPU, MLX runs the decoder's element-wise work (norms, the depthwise conv, the GELU of the
4x FFN over up to 3,200 positions per frame) on one thread, value by value; the C layers
do it in vectorised passes and hand the matrix products to the same BLAS MLX uses.

The weights are taken from the loaded MLX decoder once: float32 arrays that are already
contiguous are shared with MLX (numpy views of its buffers), the others are copied into
the layouts the C expects. Every buffer is preallocated for ``max_frames`` frames per
pass; longer inputs are decoded in pieces (exact, the decoder being causal), and a call
allocates only the audio it returns. Several streams (each with its own state) can be
decoded in one pass (:meth:`NativeDecoder.decode_many`): their rows go through every
product together, so the weights are read once for all of them.

Used by engine.decode on Linux when MLX's default device is the CPU and the library and
the BLAS shim are built (setup.py); ``VVREADER_NATIVE_DECODER=0`` turns it off
(engine/switches.py).
"""

from __future__ import annotations

import ctypes
import threading
import weakref
from dataclasses import dataclass

import engine.backend  # noqa: F401  (chooses MLX's BLAS before mlx.core is imported)

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten

from engine.acoustic import KERNEL_SIZE, AcousticDecoder, Block1D, CausalConv1d
from engine.switches import Switches

# FFN rows per tile: the (rows, 4C) hidden activation of one tile stays this many floats
# (1 MB), so it is still in L2 when the GELU and the second product read it (smaller
# tiles, more and smaller products, were slower here: 126 against 114 ms for two frames).
DEFAULT_TILE_FLOATS = 1 << 18

_I, _F, _P = ctypes.c_int, ctypes.c_float, ctypes.c_void_p


def _setup(lib: ctypes.CDLL, shim: ctypes.CDLL) -> None:
    lib.vv_set_sgemm.argtypes = [_P, _P, _I, _P, _P]
    # The shim's cblas_sgemm up to 8 rows, then its vvreader_sgemm (OpenBLAS's
    # sgemm, split over two threads): at 16 rows (the second stage of two
    # frames) OpenBLAS was 20% faster here, at 8 rows 15% slower.
    few = shim.cblas_sgemm
    plain = shim.vvreader_sgemm
    bf16w = getattr(shim, "vvreader_sgemm_bf16w", None)
    lib.bf16 = bf16w is not None
    lib.vv_set_sgemm(
        ctypes.cast(few, _P),
        ctypes.cast(plain, _P),
        8,
        None if bf16w is None else ctypes.cast(bf16w, _P),
        # A block's rows shared out over the shim's two threads.
        ctypes.cast(shim.vvreader_parallel, _P),
    )
    # Where the CPU has AMX tiles, products against weights laid out for them
    # go to the shim's vvreader_sgemm_tiles (engine/_amx.h), at level 5.
    lib.amx = bool(getattr(shim, "vvreader_amx", lambda: 0)())
    lib.vv_set_tiles.argtypes = [_P]
    lib.vv_set_tiles.restype = None
    if lib.amx:
        shim.vvreader_amx_layout.argtypes = [_I, _I, _P, _I, _P]
        shim.vvreader_amx_layout.restype = _I
        lib.amx_layout = shim.vvreader_amx_layout
        lib.vv_set_tiles(ctypes.cast(shim.vvreader_sgemm_tiles, _P))
    # The layers run at the level the shim's kernels run at (engine.backend
    # sets it from engine/switches.py).
    lib.vv_cpu_level.argtypes = [_I]
    shim.vvreader_cpu_level.argtypes = [_I]
    lib.vv_cpu_level(shim.vvreader_cpu_level(0))
    # (segments, their rows, their states) first: see _cpu_decoder.c.
    lib.vv_block.argtypes = [_I, _P, _P, _I, _I, _I, _F] + [_P] * 18
    lib.vv_upsample.argtypes = [_I, _P, _P, _I, _I, _I] + [_P] * 7
    lib.vv_conv.argtypes = [_I, _P, _P, _I, _I, _I] + [_P] * 6
    lib.vv_to_bf16.argtypes = [ctypes.c_long, _P, _P]
    lib.vv_to_bf16.restype = _I
    for fn in (lib.vv_set_sgemm, lib.vv_block, lib.vv_upsample, lib.vv_conv):
        fn.restype = None


_LIBRARY = engine.backend.CLibrary("_cpu_decoder", _setup)


def load_library() -> ctypes.CDLL | None:
    """The C library, loaded once; None (see :func:`unavailable_reason`) when it cannot be."""
    return _LIBRARY.load()


def unavailable_reason() -> str | None:
    """Why :func:`load_library` gives None (None when it loads)."""
    return _LIBRARY.reason()


def native_decoder_wanted(switches: Switches) -> bool:
    """The engine's choice: the native decoder when the switch allows it, MLX computes on
    the CPU and the library loads."""
    if not switches.native_decoder:
        return False
    if mx.default_device().type != mx.DeviceType.cpu:
        return False
    return load_library() is not None


def _f32(a: mx.array) -> np.ndarray:
    """A C-contiguous float32 numpy array of ``a``: a view of MLX's buffer when it already
    is one (the view keeps the MLX array alive), else a copy."""
    if a.dtype != mx.float32:
        a = a.astype(mx.float32)
    mx.eval(a)
    return np.ascontiguousarray(np.asarray(a))


def _ptr(a: np.ndarray | None) -> int | None:
    return None if a is None else a.ctypes.data


def _as_tiles(w: np.ndarray) -> np.ndarray | None:
    """``w`` (N, K), all bfloat16 values, laid out for the AMX tile products (engine/_amx.h:
    amx_layout) when the CPU has AMX and N and K are multiples of 32; else None."""
    lib = load_library()
    if lib is None or not getattr(lib, "amx", False) or w.ndim != 2:
        return None
    n, k = w.shape
    if n % 32 or k % 32 or (wh := _as_bf16(w)) is None:
        return None
    out = np.empty(n * k, np.uint16)
    return out if lib.amx_layout(n, k, _ptr(wh), k, _ptr(out)) else None


def _as_bf16(w: np.ndarray) -> np.ndarray | None:
    """``w`` as bfloat16 bits (uint16) when every value is a bfloat16 (the low 16 bits of
    its float32 are zero, as for weights loaded from a bfloat16 checkpoint); else None.
    One pass in C (numpy took seconds for the 0.6 G values of the full model)."""
    lib = load_library()
    if lib is None or w.dtype != np.float32 or not w.flags.c_contiguous:
        raise ValueError("a C-contiguous float32 array, with the library loaded")
    out = np.empty(w.shape, np.uint16)
    return out if lib.vv_to_bf16(w.size, _ptr(w), _ptr(out)) else None


@dataclass
class NativeDecoderState:
    """Streaming state of :class:`NativeDecoder`: one float32 array per conv, in the order
    they run (stem conv, then per stage its upsampler's spill (s, cout) from stage 1 on
    and each block's (K - 1, C) history of normed inputs, then the head conv's history).
    Calls update it in place."""

    arrays: list[np.ndarray]

    def copy(self) -> NativeDecoderState:
        return NativeDecoderState([a.copy() for a in self.arrays])

    def reset(self) -> None:
        for a in self.arrays:
            a.fill(0.0)


class NativeDecoder:
    """``AcousticDecoder`` in C: (T, vae_dim) decoder inputs to (T * hop, channels) audio.

    Args:
        decoder: the loaded MLX decoder (its weights are read once, here).
        max_frames: frames per C pass; buffers are sized for it. Calls with more frames
            are split into passes of at most this many.
        tile_floats: the FFN's hidden activation is computed ``tile_floats // (4C)`` rows
            at a time (0: all rows at once).
        bf16_weights: give the first stage (its blocks and the upsampler after it, which
            are bound by reading their weights) a bfloat16 copy of the weights when they
            are all bfloat16 values (as loaded from the bfloat16 checkpoint: nothing is
            rounded). Half the bytes to read. Memory on top of the MLX model, full
            size: 0.6 GB with it, 0.17 GB without (the re-laid-out conv weights; the
            linear weights are MLX's own buffers). Where the CPU has AMX tiles, the later
            stages (bound by arithmetic) also get a bfloat16 copy, laid out for the
            tiles: 0.14 GB more.

    Raises:
        RuntimeError: the library is not available (:func:`unavailable_reason`).
        TypeError: the decoder has layers the C does not implement (quantized linears).
    """

    def __init__(
        self,
        decoder: AcousticDecoder,
        max_frames: int = 4,
        tile_floats: int = DEFAULT_TILE_FLOATS,
        bf16_weights: bool = True,
    ) -> None:
        lib = load_library()
        if lib is None:
            raise RuntimeError(f"native decoder unavailable: {unavailable_reason()}")
        self._lib = lib
        cfg = decoder.cfg
        self.cfg = cfg
        self.max_frames = max(1, int(max_frames))
        self.hop = cfg.hop_length
        self.channels = cfg.channels
        self._lock = threading.Lock()
        K = KERNEL_SIZE
        ratios = cfg.ratios
        nstages = len(cfg.depths)
        if len(ratios) != nstages - 1:
            raise TypeError(f"{len(ratios)} upsampling ratios for {nstages} stages")

        # ---- weights, in the C layouts -------------------------------------------------
        def conv_weights(conv: CausalConv1d) -> tuple[np.ndarray, np.ndarray | None]:
            w = _f32(conv.weight)  # (cout, K, cin): row t of the output is w . xp[t:t+K]
            return w.reshape(w.shape[0], -1), _f32(conv.bias) if "bias" in conv else None

        bf16 = bf16_weights and bool(getattr(lib, "bf16", False))
        self._stem = conv_weights(decoder.upsample_layers[0][0])
        self._ups: list[tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]] = []
        for i in range(1, nstages):
            up = decoder.upsample_layers[i][0]
            w = _f32(up.weight)  # (cout, 2s, cin) -> (2s, cout, cin): see vv_upsample
            w = np.ascontiguousarray(w.transpose(1, 0, 2))
            # The first upsampler (one row per frame) reads only the bfloat16 copy if any.
            wh = _as_bf16(w) if bf16 and i == 1 else None
            wt = _as_tiles(w.reshape(-1, w.shape[-1])) if bf16 and i > 1 else None
            self._ups.append(
                (None if wh is not None else w, wh, wt, _f32(up.bias) if "bias" in up else None)
            )
        self._blocks: list[list[tuple]] = []
        for i, stage in enumerate(decoder.stages):
            self._blocks.append(
                [self._block_weights(b, bf16 and i == 0, bf16 and i > 0) for b in stage]
            )
        self.bf16_layers = sum(u[1] is not None for u in self._ups) + sum(
            b[-3] is not None for stage in self._blocks for b in stage
        )
        self.tile_layers = sum(u[2] is not None for u in self._ups) + sum(
            b[-1] is not None for stage in self._blocks for b in stage
        )
        """Layers whose products run on AMX tiles (engine/_amx.h) at level 5."""
        self._head = conv_weights(decoder.head)
        if self.channels >= 16:
            raise TypeError(f"{self.channels} audio channels (the head conv handles < 16)")
        # Which state arrays are upsampler spills (the others are conv histories).
        self._spills = [False]
        for i, stage in enumerate(decoder.stages):
            self._spills += [True] * (i > 0) + [False] * len(stage)
        self._spills.append(False)
        self._eps = [[float(b.norm.eps) for b in stage] for stage in decoder.stages]
        for stage in decoder.stages:
            for b in stage:
                if b.norm.eps != b.ffn_norm.eps:
                    raise TypeError("Block1D norms with different eps")

        # ---- shapes per stage for max_frames, and the buffers --------------------------
        T = self.max_frames
        rows = [T]
        for r in ratios:
            rows.append(rows[-1] * r)
        chans = [cfg.stage_channels(i) for i in range(nstages)]
        act = max(r * c for r, c in zip(rows, chans, strict=True))
        # A block's xp holds each segment's history and rows (at most T segments).
        xp = max(
            [(K - 1 + T) * cfg.vae_dim, (K - 1 + rows[-1]) * cfg.decoder_n_filters]
            + [((K - 1) * T + r) * c for r, c in zip(rows, chans, strict=True)]
        )
        taps = max([rows[i - 1] * 2 * ratios[i - 1] * chans[i] for i in range(1, nstages)] or [1])
        self._tiles = [self._tile(tile_floats, r, c) for r, c in zip(rows, chans, strict=True)]
        # Two tiles' hidden activations: one per thread (vv_block).
        u = 2 * max(t * 4 * c for t, c in zip(self._tiles, chans, strict=True))
        self._rows_per_frame = [r // T for r in rows]
        self._chans = chans
        self._tile_floats = tile_floats
        self._x_in = np.zeros((T, cfg.vae_dim), np.float32)
        self._act = (np.zeros(act, np.float32), np.zeros(act, np.float32))
        self._xp = np.zeros(xp, np.float32)
        self._h = np.zeros(act, np.float32)
        self._u = np.zeros(u, np.float32)
        self._taps = np.zeros(taps, np.float32)
        self._cols = np.zeros(T * K * cfg.vae_dim, np.float32)
        self._y = np.zeros((T * self.hop, self.channels), np.float32)
        self._plans: dict[tuple, tuple] = {}
        self._state_shapes = [a.shape for a in self.init_state().arrays]

    @staticmethod
    def _block_weights(b: Block1D, bf16: bool, tiles: bool) -> tuple:
        for lin in (b.ffn.linear1, b.ffn.linear2):
            if type(lin) is not nn.Linear:
                raise TypeError(f"decoder FFN layer of type {type(lin).__name__}")
        C = b.mixer.weight.shape[0]
        # Depthwise kernel (C, K, 1) -> (K, C): tap j of every channel in one row.
        dw = np.ascontiguousarray(_f32(b.mixer.weight).reshape(C, KERNEL_SIZE).T)

        def opt(m: nn.Module, name: str) -> np.ndarray | None:
            return _f32(m[name]) if name in m else None

        w1, w2 = _f32(b.ffn.linear1.weight), _f32(b.ffn.linear2.weight)
        w1h = w2h = None
        if bf16 and (w1h := _as_bf16(w1)) is not None:
            w2h = _as_bf16(w2)
        if w2h is None:
            w1h = None
        w1t = w2t = None
        if tiles and (w1t := _as_tiles(w1)) is not None:
            w2t = _as_tiles(w2)
        if w2t is None:
            w1t = None
        # In vv_block's argument order (the bfloat16 copies last: NULL when absent).
        return (
            _f32(b.norm.weight),
            dw,
            opt(b.mixer, "bias"),
            _f32(b.gamma),
            _f32(b.ffn_norm.weight),
            w1,
            opt(b.ffn.linear1, "bias"),
            w2,
            opt(b.ffn.linear2, "bias"),
            _f32(b.ffn_gamma),
            w1h,
            w2h,
            w1t,
            w2t,
        )

    @staticmethod
    def _tile(tile_floats: int, rows: int, channels: int) -> int:
        if tile_floats <= 0:
            return rows
        return max(1, min(rows, tile_floats // (4 * channels)))

    def init_state(self) -> NativeDecoderState:
        """Zero streaming state (the start of an utterance)."""
        cfg, K = self.cfg, KERNEL_SIZE
        arrays = [np.zeros((K - 1, cfg.vae_dim), np.float32)]
        for i, blocks in enumerate(self._blocks):
            c = self._chans[i]
            if i > 0:
                arrays.append(np.zeros((cfg.ratios[i - 1], c), np.float32))
            arrays.extend(np.zeros((K - 1, c), np.float32) for _ in blocks)
        arrays.append(np.zeros((K - 1, cfg.decoder_n_filters), np.float32))
        return NativeDecoderState(arrays)

    def mlx_layout(self, state: NativeDecoderState) -> list[np.ndarray]:
        """``state`` in the shapes of ``AcousticDecoder.init_state(1)`` (for comparisons):
        conv histories (1, K - 1, C), upsampler spills (1, 1, cout, s)."""
        return [
            a.T[None, None] if spill else a[None]
            for a, spill in zip(state.arrays, self._spills, strict=True)
        ]

    def _plan(self, frames: tuple[int, ...], states: list[NativeDecoderState]) -> list[tuple]:
        """The C calls of one pass over segments of ``frames[g]`` frames continuing
        ``states[g]``, built once per (frames, states) and reused: the pointers never
        change."""
        key = (frames, tuple(id(st) for st in states))
        plan = self._plans.get(key)
        if (
            plan is not None
            and all(a is b for a, b in zip(plan[0], states, strict=True))
            and all(
                a is b
                for held, st in zip(plan[2], states, strict=True)
                for a, b in zip(held, st.arrays, strict=True)
            )
        ):
            return plan[1]
        lib, cfg, K = self._lib, self.cfg, KERNEL_SIZE
        T, n = sum(frames), len(frames)
        keep: list = []  # the ctypes arrays the calls point into

        def segments(per_frame: int) -> tuple[int, int]:
            rows = (_I * n)(*(f * per_frame for f in frames))
            keep.append(rows)
            return n, ctypes.addressof(rows)

        layers = list(zip(*(st.arrays for st in states), strict=True))  # per layer, per segment

        def layer_states(i: int) -> int:
            ptrs = (_P * n)(*(_ptr(a) for a in layers[i]))
            keep.append(ptrs)
            return ctypes.addressof(ptrs)

        st = iter(range(len(layers)))
        a, b = self._act
        calls: list[tuple] = []
        w, bias = self._stem
        calls.append(
            (
                lib.vv_conv,
                (*segments(1), layer_states(next(st)), cfg.vae_dim, self._chans[0], K,
                 _ptr(self._x_in), _ptr(w), _ptr(bias), _ptr(self._xp), _ptr(self._cols),
                 _ptr(a)),
            )
        )  # fmt: skip
        for i, blocks in enumerate(self._blocks):
            rows, c = T * self._rows_per_frame[i], self._chans[i]
            if i > 0:
                w, wh, wt, bias = self._ups[i - 1]
                cin, s = self._chans[i - 1], cfg.ratios[i - 1]
                calls.append(
                    (
                        lib.vv_upsample,
                        (*segments(self._rows_per_frame[i - 1]), layer_states(next(st)), cin,
                         c, s, _ptr(a), _ptr(w), _ptr(wh), _ptr(wt), _ptr(bias), _ptr(self._taps),
                         _ptr(b)),
                    )
                )  # fmt: skip
                a, b = b, a
            tile = self._tile(self._tile_floats, rows, c)
            for eps, wts in zip(self._eps[i], blocks, strict=True):
                calls.append(
                    (
                        lib.vv_block,
                        (*segments(self._rows_per_frame[i]), layer_states(next(st)), c, K, tile,
                         eps, _ptr(a), *(_ptr(x) for x in wts), _ptr(self._xp), _ptr(self._h),
                         _ptr(self._u)),
                    )
                )  # fmt: skip
        w, bias = self._head
        calls.append(
            (
                lib.vv_conv,
                (*segments(self.hop), layer_states(next(st)), cfg.decoder_n_filters,
                 self.channels, K, _ptr(a), _ptr(w), _ptr(bias), _ptr(self._xp),
                 _ptr(self._cols), _ptr(self._y)),
            )
        )  # fmt: skip
        if len(self._plans) > 64:
            self._plans.clear()
        self._plans[key] = (list(states), calls, [list(st.arrays) for st in states], keep)
        return calls

    def check_state(self, state: NativeDecoderState) -> None:
        """ValueError unless ``state`` has the arrays :meth:`init_state` makes (count,
        shapes, contiguous float32): the C reads and writes each at the size it expects."""
        arrays = state.arrays
        if len(arrays) != len(self._state_shapes) or not all(
            a.shape == shape and a.dtype == np.float32 and a.flags.c_contiguous
            and a.flags.writeable
            for a, shape in zip(arrays, self._state_shapes, strict=False)
        ):  # fmt: skip
            raise ValueError("a decoder state that init_state of this decoder did not make")

    def __call__(
        self, x: np.ndarray, state: NativeDecoderState
    ) -> tuple[np.ndarray, NativeDecoderState]:
        """Decode ``x`` ((T, vae_dim) or (1, T, vae_dim) float32 decoder inputs, i.e.
        latents already mapped by ``latent_to_decoder_input``) continuing from ``state``.

        Returns:
            The audio, a new (T * hop, channels) float32 array, and ``state`` (updated in
            place, returned for symmetry with the MLX decoder).
        """
        x = np.asarray(x, dtype=np.float32)
        if x.ndim == 3:
            if x.shape[0] != 1:
                raise ValueError("the native decoder decodes one stream (batch 1)")
            x = x[0]
        return self.decode_many([x], [state])[0], state

    def decode_many(
        self, xs: list[np.ndarray], states: list[NativeDecoderState]
    ) -> list[np.ndarray]:
        """Decode several streams at once: ``xs[i]`` ((T_i, vae_dim) decoder inputs)
        continuing from ``states[i]`` (distinct states, each updated in place). Their
        frames go through the layers together, in passes of at most ``max_frames`` frames
        (each stream's in order), so each pass reads the weights once for all of them.

        Returns:
            The audio of each stream, a new (T_i * hop, channels) float32 array each.
        """
        if len(xs) != len(states):
            raise ValueError(f"{len(xs)} inputs for {len(states)} decoder states")
        if len({id(st) for st in states}) != len(states):
            raise ValueError("one decoder state given for two streams")
        inputs = [np.asarray(x, dtype=np.float32) for x in xs]
        for x in inputs:
            if x.ndim != 2 or x.shape[1] != self.cfg.vae_dim:
                raise ValueError(f"expected (T, {self.cfg.vae_dim}) latents, got {x.shape}")
        for st in states:
            self.check_state(st)
        outs = [np.empty((x.shape[0] * self.hop, self.channels), np.float32) for x in inputs]
        # Passes: each stream's next piece of at most max_frames frames joins the pass
        # while it fits and holds no piece of that stream yet.
        done = [0] * len(inputs)
        with self._lock:
            while True:
                batch: list[tuple[int, int, int]] = []  # (stream, first frame, frames)
                room = self.max_frames
                for i, x in enumerate(inputs):
                    n = min(x.shape[0] - done[i], room)
                    if n > 0:
                        batch.append((i, done[i], n))
                        room -= n
                if not batch:
                    return outs
                row = 0
                for i, start, n in batch:
                    self._x_in[row : row + n] = inputs[i][start : start + n]
                    row += n
                plan = self._plan(tuple(n for _, _, n in batch), [states[i] for i, _, _ in batch])
                for fn, args in plan:
                    fn(*args)
                row = 0
                for i, start, n in batch:
                    outs[i][start * self.hop : (start + n) * self.hop] = self._y[
                        row * self.hop : (row + n) * self.hop
                    ]
                    row += n
                    done[i] += n


@dataclass
class _Shared:
    decoder: weakref.ref
    weights: list[mx.array]
    """The MLX parameters the native decoder was made from (compared by identity)."""
    native: NativeDecoder


_shared: dict[int, _Shared] = {}
_shared_lock = threading.Lock()


def shared_native_decoder(decoder: AcousticDecoder, max_frames: int = 16) -> NativeDecoder:
    """One :class:`NativeDecoder` per MLX decoder (its weights are held once), made on
    first use, with passes of up to ``max_frames`` frames (16: four utterances' groups of
    four in one pass, engine.batch); reused while ``decoder`` lives and holds the same
    parameter arrays (a decoder whose weights were replaced gets a new one). Raises as
    :class:`NativeDecoder` does."""
    weights = [w for _, w in tree_flatten(decoder.parameters())]
    with _shared_lock:
        for key in [k for k, e in _shared.items() if e.decoder() is None]:
            del _shared[key]
        e = _shared.get(id(decoder))
        if (
            e is not None
            and e.decoder() is decoder
            and e.native.max_frames >= max_frames
            and len(e.weights) == len(weights)
            and all(a is b for a, b in zip(e.weights, weights, strict=True))
        ):
            return e.native
        _shared.pop(id(decoder), None)  # release the stale copy before making a new one
        native = NativeDecoder(decoder, max_frames)
        _shared[id(decoder)] = _Shared(weakref.ref(decoder), weights, native)
        return native
