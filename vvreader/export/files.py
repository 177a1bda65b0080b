"""The files an encoder makes: created with a plain message when the folder refuses, and
removed quietly when thrown away."""

from __future__ import annotations

from pathlib import Path

from vvreader.export.errors import ExportError


def create(path: Path) -> None:
    """Create ``path`` empty, so that an unwritable folder says so before any encoding.

    Raises:
        ExportError: it cannot be created (no such folder, no permission, a read-only disk).
    """
    try:
        path.open("wb").close()
    except OSError as e:
        raise ExportError(f"{path}: cannot write ({e.strerror or e})") from None


def remove(path: Path) -> None:
    """Remove ``path`` if it is there and can be (a read-only disk has nothing to remove)."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass
