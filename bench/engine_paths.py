"""Where the benchmarks find the full-size random weights and the reference voice."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VVREADER_SHARED", REPO.parent / "shared"))
CASE = SHARED / "parity" / "full-davis"


def full_model_dir() -> Path:
    """The full-size model with the full-davis case's random weights (EOS disabled),
    generated once into .cache/ by the fixture's make_weights.py."""
    target = REPO / ".cache" / "parity" / "full-davis" / "model"
    want = json.loads((CASE / "weights.json").read_text())["file_sha256"]
    stamp = target / "sha256"
    if not (stamp.is_file() and stamp.read_text().strip() == want):
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(CASE / "model" / "config.json", target / "config.json")
        print("generating the full-size random weights (2 GB, about a minute)...", flush=True)
        subprocess.run(
            [
                sys.executable,
                str(SHARED / "parity" / "make_weights.py"),
                str(CASE),
                "--out",
                str(target / "model.safetensors"),
            ],
            check=True,
        )
        stamp.write_text(want + "\n")
    return target


def reference_voice() -> Path:
    return SHARED / "reference-voices" / "en-Davis_man.pt"
