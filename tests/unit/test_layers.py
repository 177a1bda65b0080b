"""The module layers: the import contracts of pyproject.toml ([tool.importlinter]: the
engine imports nothing of vvreader, textual or sounddevice; no import circles; the command
line over the app over the screens and widgets over the UI-free modules), and the engine's
light modules loading neither MLX nor a BLAS until MLX is needed."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    """Run a Python command on this checkout (not an installed copy)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )


def test_the_import_contracts_are_kept() -> None:
    run = _run(
        "-c", "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports())"
    )
    report = run.stdout + run.stderr
    assert run.returncode == 0, report
    assert "Contracts: 3 kept, 0 broken." in report, report


LIGHT = (
    "engine, engine.api, engine.errors, engine.hub, engine.voice_fetch, vvreader.app, vvreader.cli"
)

_PROBE = f"""
import sys
import {LIGHT}
maps = open("/proc/self/maps").read() if sys.platform.startswith("linux") else ""
print(sorted(m for m in sys.modules if m == "mlx" or m.startswith("mlx.")))
print(sorted({{line.split()[-1] for line in maps.splitlines()
              if "scipy_openblas32" in line or "_blas_shim" in line}}))
import engine.voices
from engine.backend import blas_in_use
print(blas_in_use())
"""


def test_the_engine_types_load_without_mlx_or_blas_until_mlx_is_needed() -> None:
    run = _run("-c", _PROBE)
    assert run.returncode == 0, run.stderr
    mlx_modules, blas_libraries, blas = run.stdout.splitlines()
    assert mlx_modules == "[]", f"importing {LIGHT} imported {mlx_modules}"
    assert blas_libraries == "[]", f"importing {LIGHT} loaded {blas_libraries}"
    # The first module that needs MLX chose its BLAS before importing it.
    assert blas == ("openblas+shim" if sys.platform.startswith("linux") else "system")


def _imports_before_mlx(path: Path) -> tuple[bool, bool]:
    """(imports mlx, imports engine.backend before its first mlx import), in import order
    of the file's text (module level and inside functions)."""
    backend_seen = False
    for node in sorted(
        ast.walk(ast.parse(path.read_text())),
        key=lambda n: (getattr(n, "lineno", 0), getattr(n, "col_offset", 0)),
    ):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        if any(n == "engine.backend" for n in names):
            backend_seen = True
        if any(n == "mlx" or n.startswith("mlx.") for n in names):
            return True, backend_seen
    return False, backend_seen


def test_every_engine_module_that_imports_mlx_chooses_the_blas_first() -> None:
    """engine.backend chooses MLX's BLAS on import, which works only before mlx.core is
    imported: any engine module may be the first to import MLX."""
    late = []
    users = 0
    for path in sorted((REPO / "engine").glob("*.py")):
        uses_mlx, backend_first = _imports_before_mlx(path)
        users += uses_mlx
        if uses_mlx and not backend_first and path.name != "backend.py":
            late.append(path.name)
    assert users > 10 and late == [], f"import engine.backend before mlx in: {late}"
