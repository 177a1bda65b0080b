"""engine/cuda_kernels.cu's own code on the CPU (tests/engine/cuda_on_cpu.py: threads as
fibers, every buffer its exact size under AddressSanitizer): every index of every kernel
in range for the mid-shapes model, and its results those of the MLX functions."""

from __future__ import annotations

import warnings

import mlx.core as mx
import pytest

from engine import cuda_frame
from engine.cuda_frame import CudaFrames, check_against_mlx
from engine.mlx_frames import MLXFrames
from engine.weights import load_model
from tests.conftest import parity_model_dir
from tests.engine.cuda_on_cpu import KernelError, cpu_factory

STEPS = 3
BLOCKS = 3  # any grid size works; 3 blocks give uneven shares of rows and heads


@pytest.fixture(scope="module")
def mid():
    """The mid-shapes parity model: its diffusion head (1344) is wider than its
    intermediate size (1024), one kv head for 7 query heads."""
    model = load_model(parity_model_dir("mid-shapes"))
    return model, MLXFrames(model, STEPS)


@pytest.mark.slow
def test_every_kernel_indexes_in_range_and_agrees_with_mlx(mid) -> None:
    """The self-check the engine runs on a GPU (a text window, frames, a sample, a fed
    frame, a second frame on the caches they left), through the kernels' code."""
    model, mlx_frames = mid
    cuda = CudaFrames(model, mlx_frames.schedule, mlx_frames.t_emb, kernel_factory=cpu_factory())
    cuda.blocks = BLOCKS
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        assert check_against_mlx(cuda, mlx_frames)
    assert len(cuda.check_errors) == 14
    assert max(e for _, e in cuda.check_errors) < 1e-4
    assert not cuda.failed()


@pytest.mark.slow
def test_shared_memory_sized_for_intermediate_rows_overflows(mid, monkeypatch) -> None:
    """The layout the frame kernel had, staged rows of I (1024) while the diffusion head
    stages 2 x HF (2 x 1344): its head stage writes past the block's shared memory."""
    model, mlx_frames = mid
    cfg = model.config
    header = cuda_frame.header

    def rows_of_intermediate_size(c, unroll=4):
        src = header(c, unroll)
        src = src.replace("constexpr int ROW_FRAME = 1344;", "constexpr int ROW_FRAME = 1024;")
        return src.replace("ROW_FRAME >= ROW_LM && ROW_FRAME >= HF", "ROW_FRAME >= ROW_LM")

    monkeypatch.setattr(cuda_frame, "header", rows_of_intermediate_size)
    old_bytes = (2 * cfg.decoder.intermediate_size + 8 + 3 * cfg.acoustic_vae_dim) * 4
    cuda = CudaFrames(model, mlx_frames.schedule, mlx_frames.t_emb,
                      kernel_factory=cpu_factory({f"vv_sample_{STEPS}": old_bytes}))  # fmt: skip
    cuda.blocks = BLOCKS
    h = cfg.decoder.hidden_size
    with pytest.raises(KernelError, match=r"heap-buffer-overflow(.|\n)*WRITE(.|\n)*stage_rows"):
        mx.eval(cuda.sample(mx.ones((1, 64)), mx.ones((1, h)), mx.ones((1, h)), 1.5))
