"""tests/gpu runs on an NVIDIA GPU only: MLX's CUDA backend is the one component CI cannot
have. Every check runs in a process of its own, with a kernel cache folder of this
session's (not the user's)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.cuda_frame import on_cuda_gpu

NO_GPU = "needs MLX on an NVIDIA GPU (CUDA): the one component CI cannot have"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if on_cuda_gpu():
        return
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.skip(reason=NO_GPU))


@pytest.fixture(scope="session")
def gpu_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of the checks' processes: a kernel cache of this session."""
    cache = tmp_path_factory.mktemp("kernel-cache")
    env = {k: v for k, v in os.environ.items() if k != "MLX_PTX_CACHE_DIR"}
    return {**env, "VVREADER_KERNEL_CACHE": str(cache)}
