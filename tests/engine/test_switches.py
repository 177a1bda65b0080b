"""The VVREADER_* switches (engine/switches.py): each variable's name and meaning, read from
one mapping, and importing them loads no MLX."""

from __future__ import annotations

import subprocess
import sys

import pytest

from engine.switches import Switches
from tests.conftest import REPO


def test_unset_means_every_part_the_machine_allows() -> None:
    s = Switches.from_environ({})
    assert s == Switches()
    assert (s.native_decoder, s.bf16_weights, s.cuda_kernels) == (True, True, True)
    assert (s.decode_stream, s.cuda_unroll, s.blas) == (False, 4, "auto")


PARTS = {
    "VVREADER_NATIVE_DECODER": "native_decoder",
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
