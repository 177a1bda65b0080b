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
    _shim.vvreader_sgemm.argtypes = [_I, _I, _I, _P, _I, _P, _I, _P, _I]
    _shim.vvreader_sgemm.restype = None
    _shim.vvreader_cpu_level.argtypes = [_I]
    _shim.vvreader_cpu_level.restype = _I
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


# (M, N, K): OpenBLAS's products, cut into chunks of rows of A (M > N), of columns of W
# (M <= N), or sgemv row by row for at most 4 rows; each large enough to be split.
LARGE = [(300, 70, 130), (700, 48, 33), (20, 1000, 300), (3, 5000, 200), (1, 3001, 97)]


@pytest.mark.parametrize("ta", [NoTrans, Trans], ids=["A", "At"])
@pytest.mark.parametrize("tb", [NoTrans, Trans], ids=["B", "Bt"])
def test_larger_products_split_over_two_threads(ta: int, tb: int) -> None:
    lib, rng = _lib(), np.random.default_rng(ta * 7 + tb)
    for m, n, k in LARGE:
        a = rng.standard_normal((m, k), dtype=np.float32)
        w = rng.standard_normal((n, k), dtype=np.float32)
        a_st = np.ascontiguousarray(a.T) if ta == Trans else a  # as stored
        b_st = w if tb == Trans else np.ascontiguousarray(w.T)
        c0 = rng.standard_normal((m, n), dtype=np.float32)
        for alpha, beta in ((1.0, 0.0), (0.5, 2.0)):
            c = c0.copy()
            lib.cblas_sgemm(RowMajor, ta, tb, m, n, k, alpha, a_st.ctypes.data, a_st.shape[1],
                            b_st.ctypes.data, b_st.shape[1], beta, c.ctypes.data, n)  # fmt: skip
            a64, w64 = a.astype(np.float64), w.astype(np.float64)
            ref = alpha * (a64 @ w64.T) + beta * c0
            scale = alpha * (np.abs(a64) @ np.abs(w64).T) + beta * np.abs(c0)
            assert _err(c, ref, scale) < 1e-6, (m, n, k, ta, tb, alpha, beta)
    # The C decoder's entry point: C = A W^T.
    m, n, k = 160, 512, 128
    a = rng.standard_normal((m, k), dtype=np.float32)
    w = rng.standard_normal((n, k), dtype=np.float32)
    c = np.full((m, n), np.nan, np.float32)
    lib.vvreader_sgemm(m, n, k, a.ctypes.data, k, w.ctypes.data, k, c.ctypes.data, n)
    a64, w64 = a.astype(np.float64), w.astype(np.float64)
    assert _err(c, a64 @ w64.T, np.abs(a64) @ np.abs(w64).T) < 1e-6


@pytest.mark.parametrize("level", [5, 4, 3, 1], ids=["amx", "avx512", "avx2", "baseline"])
def test_every_cpu_level_gives_the_products(level: int) -> None:
    """The few-row kernels compiled for each x86-64 level (VVREADER_CPU_LEVEL picks the
    highest allowed), float32 and bfloat16 weights, against float64 numpy (level 5: the
    bfloat16 products of 5 and more rows on AMX tiles)."""
    lib, rng = _lib(), np.random.default_rng(level)
    previous = lib.vvreader_cpu_level(0)
    try:
        if lib.vvreader_cpu_level(level) != level:
            # Hardware, like a GPU, is the one thing a test machine cannot install.
            pytest.skip(f"this CPU lacks x86-64 level {level}")
        for m in (2, 3, 5, 7, 16):
            for n, k in ((67, 896), (300, 33), (1000, 130)):
                a = rng.standard_normal((m, k), dtype=np.float32)
                w32 = rng.standard_normal((n, k), dtype=np.float32)
                wh = (w32.view(np.uint32) >> 16).astype(np.uint16)
                w = (wh.astype(np.uint32) << 16).view(np.float32)
                a64, w64 = a.astype(np.float64), w.astype(np.float64)
                ref, scale = a64 @ w64.T, np.abs(a64) @ np.abs(w64).T
                c = np.full((m, n), np.nan, np.float32)
                lib.cblas_sgemm(RowMajor, NoTrans, Trans, m, n, k, 1.0, a.ctypes.data, k,
                                w.ctypes.data, k, 0.0, c.ctypes.data, n)  # fmt: skip
                assert _err(c, ref, scale) < 1e-6, (level, "float32", m, n, k)
                c = np.full((m, n), np.nan, np.float32)
                lib.vvreader_sgemm_bf16w(m, n, k, a.ctypes.data, k, wh.ctypes.data, k,
                                         c.ctypes.data, n)  # fmt: skip
                assert _err(c, ref, scale) < 1e-6, (level, "bfloat16", m, n, k)
    finally:
        lib.vvreader_cpu_level(previous)


def test_parallel_chunks_cover_the_range_once() -> None:
    """vvreader_parallel (the C decoder's row ranges): every chunk runs once, on worker 0
    (the caller) or 1 (the helper thread), and the call returns only when all are done."""
    lib = _lib()
    chunk_fn = ctypes.CFUNCTYPE(None, _P, _I, _I, _I)
    lib.vvreader_parallel.argtypes = [chunk_fn, _P, _I, _I]
    lib.vvreader_parallel.restype = None
    seen: list[tuple[int, int, int]] = []

    @chunk_fn
    def record(arg: int, lo: int, hi: int, worker: int) -> None:
        seen.append((lo, hi, worker))

    for total, chunk in ((1000, 7), (64, 64), (5, 100), (0, 3)):
        seen.clear()
        lib.vvreader_parallel(record, None, total, chunk)
        covered = sorted(i for lo, hi, _ in seen for i in range(lo, hi))
        assert covered == list(range(total)), (total, chunk)
        assert {w for _, _, w in seen} <= {0, 1}


def _amx_lib() -> ctypes.CDLL:
    lib = _lib()
    lib.vvreader_amx.restype = _I
    lib.vvreader_amx_calls.restype = ctypes.c_long
    lib.vvreader_amx_layout.argtypes = [_I, _I, _P, _I, _P]
    lib.vvreader_amx_layout.restype = _I
    lib.vvreader_sgemm_tiles.argtypes = [_I, _I, _I, _P, _I, _P, _P, _I]
    lib.vvreader_sgemm_tiles.restype = None
    lib.vvreader_register_bf16.argtypes = [_P, _I, _I, _P]
    lib.vvreader_register_bf16.restype = _I
    lib.vvreader_unregister_bf16.argtypes = [_P]
    lib.vvreader_unregister_bf16.restype = _I
    return lib


def _bf16_matrix(rng: np.random.Generator, n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """A random (n, k) float32 matrix of bfloat16 values, and its bfloat16 bits."""
    wh = (rng.standard_normal((n, k), dtype=np.float32).view(np.uint32) >> 16).astype(np.uint16)
    return (wh.astype(np.uint32) << 16).view(np.float32), wh


# A split into three bfloat16 parts carries it to 2^-26 of itself (engine/_amx.h), so the
# AMX products meet the float32 kernels' bound; two parts (2^-17 off) would not.
AMX_RTOL = 1e-6


def test_amx_level_or_its_absence() -> None:
    """Level 5 (AMX tiles) is in use exactly where the CPU and Linux allow the tiles; on
    any other CPU asking for it gives level 4 or lower, and the tile layout is refused."""
    lib = _amx_lib()
    previous = lib.vvreader_cpu_level(0)
    try:
        got = lib.vvreader_cpu_level(5)
        wh = np.zeros((32, 32), np.uint16)
        out = np.zeros(32 * 32, np.uint16)
        laid_out = lib.vvreader_amx_layout(32, 32, wh.ctypes.data, 32, out.ctypes.data)
        if lib.vvreader_amx():
            assert got == 5 and laid_out == 1
            # Shapes it cannot lay out are refused, not read out of range.
            assert lib.vvreader_amx_layout(48, 32, wh.ctypes.data, 32, out.ctypes.data) == 0
            assert lib.vvreader_amx_layout(32, 16, wh.ctypes.data, 16, out.ctypes.data) == 0
        else:
            assert got <= 4 and laid_out == 0
    finally:
        lib.vvreader_cpu_level(previous)


def test_amx_products_against_weights_read_in_place() -> None:
    """Few rows against a bfloat16 W read where it lies (the language models' products,
    through the registry, with alpha and beta; the decoder's first stage, through
    vvreader_sgemm_bf16w): on AMX from 5 or 8 rows, with tails of tiles of W's rows and of
    A's rows, against float64 numpy."""
    lib, rng = _amx_lib(), np.random.default_rng(5)
    previous = lib.vvreader_cpu_level(0)
    try:
        amx = lib.vvreader_cpu_level(5) == 5
        for m in (5, 8, 13, 16, 17, 40, 70):
            for n, k in ((67, 896), (300, 64), (1000, 2048), (33, 4864), (16, 32)):
                w, wh = _bf16_matrix(rng, n, k)
                a = rng.standard_normal((m, k), dtype=np.float32)
                a64, w64 = a.astype(np.float64), w.astype(np.float64)
                ref, scale = a64 @ w64.T, np.abs(a64) @ np.abs(w64).T
                before = lib.vvreader_amx_calls()
                c = np.full((m, n), np.nan, np.float32)
                lib.vvreader_sgemm_bf16w(m, n, k, a.ctypes.data, k, wh.ctypes.data, k,
                                         c.ctypes.data, n)  # fmt: skip
                assert _err(c, ref, scale) < AMX_RTOL, ("bf16w", m, n, k)
                c0 = rng.standard_normal((m, n), dtype=np.float32)
                c = c0.copy()
                assert lib.vvreader_register_bf16(w.ctypes.data, n, k, wh.ctypes.data) == 1
                try:
                    lib.cblas_sgemm(RowMajor, NoTrans, Trans, m, n, k, 0.5, a.ctypes.data, k,
                                    w.ctypes.data, k, 2.0, c.ctypes.data, n)  # fmt: skip
                finally:
                    lib.vvreader_unregister_bf16(w.ctypes.data)
                assert _err(c, 0.5 * ref + 2.0 * c0, 0.5 * scale + 2.0 * np.abs(c0)) < AMX_RTOL
                on_amx = amx and (m >= 8 or k <= 2048)
                assert lib.vvreader_amx_calls() - before == (2 if on_amx else 0), (m, n, k)
    finally:
        lib.vvreader_cpu_level(previous)


def test_amx_products_against_weights_laid_out_for_the_tiles() -> None:
    """Many rows against W laid out once for the tiles (the decoder's later stages), with
    partial tiles of A's rows (1 to 300 rows, split over both threads) and rows of C wider
    than the product, against float64 numpy."""
    lib, rng = _amx_lib(), np.random.default_rng(6)
    if not lib.vvreader_amx():
        assert lib.vvreader_amx_layout(32, 32, None, 32, None) == 0
        return
    for n, k in ((32, 32), (64, 128), (512, 128), (128, 2048)):
        w, wh = _bf16_matrix(rng, n, k)
        wt = np.zeros(n * k, np.uint16)
        assert lib.vvreader_amx_layout(n, k, wh.ctypes.data, k, wt.ctypes.data) == 1
        for m in (1, 4, 15, 16, 17, 31, 32, 33, 100, 300):
            a = rng.standard_normal((m, k), dtype=np.float32)
            a64, w64 = a.astype(np.float64), w.astype(np.float64)
            ldc = n + 8
            c = np.full((m, ldc), np.nan, np.float32)
            before = lib.vvreader_amx_calls()
            lib.vvreader_sgemm_tiles(m, n, k, a.ctypes.data, k, wt.ctypes.data, c.ctypes.data,
                                     ldc)  # fmt: skip
            assert lib.vvreader_amx_calls() == before + 1
            assert _err(c[:, :n], a64 @ w64.T, np.abs(a64) @ np.abs(w64).T) < AMX_RTOL, (m, n, k)
            assert np.isnan(c[:, n:]).all(), "wrote past the product's columns"
