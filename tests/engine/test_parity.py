"""Every case of ../shared/parity reproduced within its tolerances (float32)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from engine.parity import compare, run_case
from tests.conftest import PARITY, REPO, parity_model_dir


def _assert_all_ok(checks) -> None:
    bad = [f"{c.name}: {c.error:.3e} > {c.rtol:.0e}" for c in checks if not c.ok]
    assert not bad, "; ".join(bad)
    # Guard against a comparison that silently compared nothing.
    names = {c.name.split(" ")[0] for c in checks}
    assert {"latents", "audio", "eos_probs", "cond_pos", "cond_neg"} <= names


@pytest.mark.parametrize("case", ["tiny-run", "tiny-eos", "mid-shapes"])
def test_free_running(case: str, tmp_path) -> None:
    result = run_case(PARITY / case, tmp_path, parity_model_dir(case))
    expected = json.loads((PARITY / case / "expected" / "result.json").read_text())
    assert result["n_frames"] == expected["n_frames"]
    assert result["stopped_by_eos"] == expected["stopped_by_eos"]
    _assert_all_ok(compare(PARITY / case, tmp_path))


@pytest.mark.parametrize("case", ["tiny-run", "mid-shapes"])
def test_teacher_forced(case: str, tmp_path) -> None:
    run_case(PARITY / case, tmp_path, parity_model_dir(case), teacher_force=True)
    _assert_all_ok(compare(PARITY / case, tmp_path, teacher_force=True))


@pytest.mark.parametrize("case", ["tiny-run", "tiny-eos", "mid-shapes"])
def test_free_running_in_a_batch(case: str, tmp_path) -> None:
    """The case's utterance generated in a batch of three (engine.parity.batch_companions:
    other lengths, voices, CFG scales and seeds; one companion leaves before it, one
    joins after it) meets the same tolerances."""
    result = run_case(PARITY / case, tmp_path, parity_model_dir(case), batch=3)
    expected = json.loads((PARITY / case / "expected" / "result.json").read_text())
    assert result["batch"] == 3
    assert result["n_frames"] == expected["n_frames"]
    assert result["stopped_by_eos"] == expected["stopped_by_eos"]
    _assert_all_ok(compare(PARITY / case, tmp_path))


@pytest.mark.parametrize("case", ["tiny-run", "mid-shapes"])
def test_teacher_forced_in_a_batch(case: str, tmp_path) -> None:
    run_case(PARITY / case, tmp_path, parity_model_dir(case), teacher_force=True, batch=3)
    _assert_all_ok(compare(PARITY / case, tmp_path, teacher_force=True))


@pytest.mark.slow
def test_full_davis_teacher_forced_and_free_in_a_batch(tmp_path) -> None:
    """The real configuration with the official en-Davis_man prompt, generated in a batch
    of three with other official voices (in place of a run alone: the batch's frames are
    the same work on more rows): teacher-forced at 1e-4 on every array, free running
    within the per-frame tolerances."""
    model = parity_model_dir("full-davis")
    fixture = PARITY / "full-davis"
    run_case(fixture, tmp_path / "tf", model, teacher_force=True, batch=3)
    _assert_all_ok(compare(fixture, tmp_path / "tf", teacher_force=True))
    run_case(fixture, tmp_path / "free", model, batch=3)
    _assert_all_ok(compare(fixture, tmp_path / "free"))


def test_voice_pt_and_safetensors_give_the_same_run(tmp_path) -> None:
    case = PARITY / "tiny-run"
    run_case(case, tmp_path / "st", voice_path=case / "voice.safetensors")
    run_case(case, tmp_path / "pt", voice_path=case / "voice.pt")
    for name in ("latents", "audio", "eos_probs"):
        np.testing.assert_array_equal(
            np.load(tmp_path / "st" / f"{name}.npy"), np.load(tmp_path / "pt" / f"{name}.npy")
        )


def test_cli_writes_the_documented_files(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "engine.parity", str(PARITY / "tiny-eos"), "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in ("latents.npy", "audio.npy", "eos_probs.npy", "result.json"):
        assert (tmp_path / name).is_file()
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["n_frames"] == 23 and result["stopped_by_eos"] is True
    assert np.load(tmp_path / "audio.npy").shape == (23 * 8,)


def test_cli_runs_a_case_in_a_batch(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "engine.parity", str(PARITY / "tiny-eos"), "--out", str(tmp_path),
         "--batch", "4"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["batch"] == 4 and result["n_frames"] == 23 and result["stopped_by_eos"]


def test_cli_refuses_an_empty_batch(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "engine.parity", str(PARITY / "tiny-eos"), "--out", str(tmp_path),
         "--batch", "0"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "--batch" in proc.stderr


def test_cli_fails_cleanly_without_weights(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "engine.parity", str(PARITY / "mid-shapes"), "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "make_weights.py" in proc.stderr
