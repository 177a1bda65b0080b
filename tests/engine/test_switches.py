"""The VVREADER_* switches (engine/switches.py): each variable's name and meaning, read from
one mapping, and importing them loads no MLX."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from engine.switches import Switches
from tests.conftest import REPO


def test_unset_means_every_part_the_machine_allows() -> None:
    s = Switches.from_environ({})
    assert s == Switches()
    assert (s.native_decoder, s.native_frames, s.bf16_weights, s.cuda_kernels) == (True,) * 4
    assert (s.decode_stream, s.cuda_unroll, s.blas) == (False, 4, "auto")


PARTS = {
    "VVREADER_NATIVE_DECODER": "native_decoder",
    "VVREADER_NATIVE_FRAMES": "native_frames",
    "VVREADER_BF16_WEIGHTS": "bf16_weights",
    "VVREADER_CUDA_KERNELS": "cuda_kernels",
}


@pytest.mark.parametrize("off", ["0", "false", "No", " OFF "])
def test_each_part_turns_off_alone(off: str) -> None:
    for name, field in PARTS.items():
        s = Switches.from_environ({name: off})
        assert getattr(s, field) is False
        assert all(getattr(s, other) for other in PARTS.values() if other != field)
    assert Switches.from_environ({"VVREADER_CUDA_KERNELS": "1"}).cuda_kernels


def test_the_decode_stream_takes_exactly_one() -> None:
    assert Switches.from_environ({"VVREADER_DECODE_STREAM": "1"}).decode_stream
    for value in ("0", "true", "yes", ""):
        assert not Switches.from_environ({"VVREADER_DECODE_STREAM": value}).decode_stream


@pytest.mark.parametrize(("value", "unroll"), [("2", 2), ("8", 8), ("0", 1), ("99", 8), ("x", 4)])
def test_the_unroll_is_clamped_to_one_to_eight(value: str, unroll: int) -> None:
    assert Switches.from_environ({"VVREADER_CUDA_UNROLL": value}).cuda_unroll == unroll


def test_blas_and_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Switches.from_environ({"VVREADER_BLAS": "bundled"}).blas == "bundled"
    monkeypatch.setenv("VVREADER_BF16_WEIGHTS", "off")
    assert not Switches.from_environ().bf16_weights


def test_reading_them_loads_no_mlx() -> None:
    code = "import sys, engine.switches; print('mlx.core' in sys.modules)"
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("value", "level"),
    [
        (None, 5),
        ("auto", 5),
        ("AMX", 5),
        ("AVX512", 4),
        ("avx2", 3),
        (" baseline ", 1),
        ("sse9", 5),
    ],
)
def test_the_cpu_level_names(value: str | None, level: int) -> None:
    env = {} if value is None else {"VVREADER_CPU_LEVEL": value}
    assert Switches.from_environ(env).cpu_level == level


def test_an_avx2_process_runs_every_c_kernel_at_that_level() -> None:
    """VVREADER_CPU_LEVEL=avx2 on any x86-64 CPU with AVX2: the shim's kernels, the C
    decoder's layers, the C frames' loops and OpenBLAS's (told it is a Haswell) are those
    of an AVX2 machine."""
    code = (
        "import os, engine.backend as b\n"
        "from engine import native_decoder, native_lm\n"
        "lib = native_decoder.load_library()\n"
        "frames = native_lm.load_library()\n"
        "print(b.blas_in_use(), b.blas_shim().vvreader_cpu_level(0), lib.vv_cpu_level(0),"
        " frames.vl_cpu_level(0), frames.vh_cpu_level(0), os.environ.get('OPENBLAS_CORETYPE'),"
        " b.cpu_level_in_use())\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    env["VVREADER_CPU_LEVEL"] = "avx2"
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, env=env
    )
    assert run.returncode == 0, run.stderr
    if not sys.platform.startswith("linux") or platform.machine() != "x86_64":
        pytest.skip("the C kernels' x86-64 levels exist on x86-64 Linux only")
    assert run.stdout.split() == ["openblas+shim", "3", "3", "3", "3", "Haswell", "avx2"]
