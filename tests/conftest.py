"""Shared fixtures: where ../shared is, the tiny model, generated parity weights."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

# Before any test module imports mlx.core: on Linux engine.backend loads the BLAS shim that
# MLX must bind to, which works only before mlx.core is imported.
import engine.backend  # noqa: F401

import pytest

from tests.threads import leaked_threads, snapshot

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VVREADER_SHARED", REPO.parent / "shared")).resolve()
PARITY = SHARED / "parity"
CACHE = REPO / ".cache"


@pytest.fixture(autouse=True)
def no_thread_left_behind() -> Iterator[None]:
    """Fail a test that leaves one of our threads running (tests/threads.py says which
    threads are ours and which foreign ones may outlive a test).

    pytest sets up fixtures of a wider scope before this one, so an engine or server that a
    session- or module-scoped fixture starts is in the baseline, not a leak of the test
    that happens to run first; the test's own function-scoped fixtures are torn down before
    this check, so what they close is closed by then."""
    before = snapshot()
    yield
    leaked = leaked_threads(before, grace=2.0)
    if leaked:
        pytest.fail(
            "threads still running after the test (close what it opened): " + ", ".join(leaked),
            pytrace=False,
        )


@pytest.fixture(scope="session")
def shared() -> Path:
    assert SHARED.is_dir(), f"../shared not found at {SHARED} (set VVREADER_SHARED)"
    return SHARED


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model folder written by ``python -m engine.tiny`` (once per session)."""
    out = tmp_path_factory.mktemp("tiny") / "model"
    subprocess.run([sys.executable, "-m", "engine.tiny", str(out)], check=True, cwd=REPO)
    return out


def parity_model_dir(case: str) -> Path:
    """The case's model folder; weights that are not stored are generated once with the
    fixture's make_weights.py into .cache/parity/<case>/model (checked by digest)."""
    fixture = PARITY / case
    if (fixture / "model" / "model.safetensors").is_file():
        return fixture / "model"
    target = CACHE / "parity" / case / "model"
    stamp = target / "sha256"
    want = json.loads((fixture / "weights.json").read_text())["file_sha256"]
    if stamp.is_file() and stamp.read_text().strip() == want:
        return target
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(fixture / "model" / "config.json", target / "config.json")
    subprocess.run(
        [
            sys.executable,
            str(PARITY / "make_weights.py"),
            str(fixture),
            "--out",
            str(target / "model.safetensors"),
        ],
        check=True,
        capture_output=True,
    )
    stamp.write_text(want + "\n")
    return target
