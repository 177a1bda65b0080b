"""What ``vvreader --version`` says of the engine's paths (engine/capabilities.py): the
engine's own choice for this machine and these switches, without loading a model."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO
from vvreader.config import tomllib

LINUX = sys.platform.startswith("linux")


def version(env: dict[str, str] | None = None) -> list[str]:
    """``vvreader --version``'s lines, run from the checkout in a process of its own (the
    BLAS is chosen once a process)."""
    run = subprocess.run(
        [sys.executable, "-m", "vvreader", "--version"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    return run.stdout.splitlines()


def line(lines: list[str], name: str) -> str:
    return next(x for x in lines if x.startswith(f"{name}: "))


def test_the_version_is_the_distributions() -> None:
    from vvreader import __version__

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert "version" in project["dynamic"] and "version" not in project
    lines = version()
    assert lines[0].startswith(f"vvreader {__version__} (Python ")
    assert lines[1].startswith("MLX ")
    assert lines[1].endswith((" on cpu", " on gpu (CUDA)", " on gpu (Metal)"))
    names = [x.split(":")[0] for x in lines[2:]]
    assert names == [
        "OpenBLAS and the BLAS shim",
        "C decoder",
        "C speech frames",
        "bf16 weight copies",
        "CUDA kernels",
        "tensor-core products",
    ]


def on_cpu(lines: list[str]) -> bool:
    return lines[1].endswith(" on cpu")


@pytest.mark.skipif(not LINUX, reason="the C paths are built on Linux only")
def test_every_path_the_device_allows_is_on() -> None:
    lines = version()
    assert line(lines, "OpenBLAS and the BLAS shim").startswith("OpenBLAS and the BLAS shim: on")
    if on_cpu(lines):
        assert line(lines, "C decoder") == (
            "C decoder: on (the acoustic decoder runs in C on the CPU)"
        )
        assert line(lines, "C speech frames") == (
            "C speech frames: on (the sampler and the LMs' steps run in C on the CPU)"
        )
        assert line(lines, "bf16 weight copies").startswith("bf16 weight copies: on")
        assert line(lines, "CUDA kernels") == (
            "CUDA kernels: off (MLX does not compute on a CUDA GPU)"
        )
        assert line(lines, "tensor-core products") == (
            "tensor-core products: off (MLX does not compute on a CUDA GPU)"
        )
    else:  # an NVIDIA GPU: the C paths are the CPU's
        assert line(lines, "C decoder") == (
            "C decoder: off (MLX computes on a GPU and decodes there)"
        )
        assert line(lines, "C speech frames") == "C speech frames: off (MLX computes on a GPU)"
        assert line(lines, "bf16 weight copies") == (
            "bf16 weight copies: off (MLX computes on a GPU)"
        )
        assert line(lines, "CUDA kernels") == (
            "CUDA kernels: on (checked against MLX when the model loads)"
        )
        assert line(lines, "tensor-core products").startswith("tensor-core products: on")


@pytest.mark.skipif(not LINUX, reason="the C paths are built on Linux only")
def test_each_switch_turns_its_path_off_and_says_so() -> None:
    lines = version(
        {
            "VVREADER_NATIVE_DECODER": "0",
            "VVREADER_NATIVE_FRAMES": "false",
            "VVREADER_BF16_WEIGHTS": "off",
            "VVREADER_CUDA_KERNELS": "no",
            "VVREADER_TENSOR_CORES": "0",
        }
    )
    assert line(lines, "OpenBLAS and the BLAS shim").startswith("OpenBLAS and the BLAS shim: on")
    assert line(lines, "C decoder") == (
        "C decoder: off (MLX decodes; VVREADER_NATIVE_DECODER is off)"
    )
    assert line(lines, "C speech frames") == (
        "C speech frames: off (MLX runs the frames; VVREADER_NATIVE_FRAMES is off)"
    )
    assert line(lines, "bf16 weight copies") == (
        "bf16 weight copies: off (VVREADER_BF16_WEIGHTS is off)"
    )
    assert line(lines, "CUDA kernels") == "CUDA kernels: off (VVREADER_CUDA_KERNELS is off)"
    assert line(lines, "tensor-core products") == (
        "tensor-core products: off (VVREADER_TENSOR_CORES is off)"
    )


@pytest.mark.skipif(not LINUX, reason="the BLAS shim is Linux's")
def test_mlxs_own_blas_leaves_the_copies_without_their_shim() -> None:
    lines = version({"VVREADER_BLAS": "bundled"})
    assert line(lines, "OpenBLAS and the BLAS shim") == (
        "OpenBLAS and the BLAS shim: off (MLX's own BLAS; VVREADER_BLAS=bundled)"
    )
    if on_cpu(lines):
        assert line(lines, "bf16 weight copies") == (
            "bf16 weight copies: off (they need the BLAS shim)"
        )
        # The C decoder and the C step load the shim for their own products, whatever
        # MLX binds to.
        assert line(lines, "C decoder").startswith("C decoder: on")
        assert line(lines, "C speech frames").startswith("C speech frames: on")


def test_the_report_reads_no_model_and_no_vvreader() -> None:
    code = (
        "import sys; from engine.capabilities import capabilities; c = capabilities(); "
        "print(sorted(m for m in sys.modules if m.startswith(('vvreader', 'engine.model', "
        "'engine.weights', 'engine.generate', 'safetensors', 'huggingface_hub'))))"
    )
    run = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


def test_without_mlx_the_version_still_comes_and_says_what_is_wrong() -> None:
    code = (
        "import sys; sys.modules['mlx'] = None; from vvreader.cli import main; "
        "sys.exit(main(['--version']))"
    )
    run = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    first, second = run.stdout.splitlines()
    assert first.startswith("vvreader ")
    assert second.startswith("MLX cannot be loaded here: ")
