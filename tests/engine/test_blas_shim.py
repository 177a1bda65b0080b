"""The BLAS shim's own kernels (engine/_blas_shim.c) against float64 numpy: the float32
few-row kernel (2 to 16 rows, prefetching the next rows of the weight) behind
cblas_sgemm, OpenBLAS's sgemv for one row, and the bfloat16-weight kernel
(vvreader_sgemm_bf16w) for 1 to 16 rows, at widths that leave tails of every block size."""

from __future__ import annotations

import ctypes

from engine.backend import blas_shim

import numpy as np
import pytest

_shim = blas_shim()
pytestmark = pytest.mark.skipif(isinstance(_shim, str), reason=f"no BLAS shim: {_shim}")

_P, _I, _F = ctypes.c_void_p, ctypes.c_int, ctypes.c_float
RowMajor, NoTrans, Trans = 101, 111, 112
SHAPES = [(n, k) for n in (1, 7, 13, 40, 67, 300) for k in (1, 9, 33, 130, 896)]


def _lib() -> ctypes.CDLL:
    assert not isinstance(_shim, str)
    _shim.cblas_sgemm.argtypes = [_I] * 6 + [_F, _P, _I, _P, _I, _F, _P, _I]
    _shim.cblas_sgemm.restype = None
    _shim.vvreader_sgemm_bf16w.argtypes = [_I, _I, _I, _P, _I, _P, _I, _P, _I]
    _shim.vvreader_sgemm_bf16w.restype = None
    _shim.vvreader_blas_threads.argtypes = [_I]
    _shim.vvreader_blas_threads.restype = _I
    return _shim


def _err(c: np.ndarray, ref: np.ndarray, scale: np.ndarray) -> float:
    """Largest error relative to the sum of the terms' magnitudes (float32 rounding of
    a sum grows with that, not with the result, which may cancel)."""
    return float(np.max(np.abs(c - ref) / np.maximum(scale, 1e-30)))


@pytest.mark.parametrize("m", [1, 2, 3, 5, 8, 16])
def test_few_row_float32_products(m: int) -> None:
    lib, rng = _lib(), np.random.default_rng(m)
    for n, k in SHAPES:
        a = rng.standard_normal((m, k), dtype=np.float32)
        w = rng.standard_normal((n, k), dtype=np.float32)
        c0 = rng.standard_normal((m, n), dtype=np.float32)
        for alpha, beta in ((1.0, 0.0), (0.5, 2.0)):
            c = c0.copy()
            lib.cblas_sgemm(RowMajor, NoTrans, Trans, m, n, k, alpha, a.ctypes.data, k,
                            w.ctypes.data, k, beta, c.ctypes.data, n)  # fmt: skip
            a64, w64 = a.astype(np.float64), w.astype(np.float64)
            ref = alpha * (a64 @ w64.T) + beta * c0
            scale = alpha * (np.abs(a64) @ np.abs(w64).T) + beta * np.abs(c0)
            assert _err(c, ref, scale) < 1e-6, (m, n, k, alpha, beta)


@pytest.mark.parametrize("m", [1, 2, 3, 4, 5, 6, 7, 9, 12, 16])
def test_bfloat16_weight_products(m: int) -> None:
    lib, rng = _lib(), np.random.default_rng(100 + m)
    for n, k in SHAPES:
        a = rng.standard_normal((m, k), dtype=np.float32)
        wh = (rng.standard_normal((n, k), dtype=np.float32).view(np.uint32) >> 16).astype(np.uint16)
        w = (wh.astype(np.uint32) << 16).view(np.float32)  # the same values in float32
        c = np.full((m, n), np.nan, np.float32)
        lib.vvreader_sgemm_bf16w(m, n, k, a.ctypes.data, k, wh.ctypes.data, k, c.ctypes.data, n)
        a64, w64 = a.astype(np.float64), w.astype(np.float64)
        ref = a64 @ w64.T
        assert _err(c, ref, np.abs(a64) @ np.abs(w64).T) < 1e-6, (m, n, k)


@pytest.mark.parametrize("m", [1, 2, 5])
def test_one_thread_or_two_give_the_same_products(m: int) -> None:
    """The helper thread takes half of W's rows; each output is the same sum either way."""
    lib, rng = _lib(), np.random.default_rng(7)
    n, k = 1000, 896  # large enough to be split between the threads
    a = rng.standard_normal((m, k), dtype=np.float32)
    wh = (rng.standard_normal((n, k), dtype=np.float32).view(np.uint32) >> 16).astype(np.uint16)
    out = {}
    previous = lib.vvreader_blas_threads(-1)
    try:
        for two in (0, 1):
            assert lib.vvreader_blas_threads(two) in (0, 1)
            c = np.full((m, n), np.nan, np.float32)
            lib.vvreader_sgemm_bf16w(m, n, k, a.ctypes.data, k, wh.ctypes.data, k,
                                     c.ctypes.data, n)  # fmt: skip
            out[two] = c
    finally:
        lib.vvreader_blas_threads(previous)
    assert np.isfinite(out[0]).all()
    np.testing.assert_array_equal(out[0], out[1])
