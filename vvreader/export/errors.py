"""The errors of an export: what cannot be written or made, said in one line, and an
export stopped before its end."""

from __future__ import annotations

from pathlib import Path

__all__ = ["ExportError", "ExportStopped"]


class ExportError(Exception):
    """The output cannot be written, a format cannot be made here, or the engine failed;
    the message says what to do."""


class ExportStopped(Exception):
    """The export was stopped (Ctrl-C) before it was complete; what was made is kept."""

    def __init__(self, folder: Path, kept: int) -> None:
        super().__init__(f"stopped; {kept} utterances made are kept in {folder}")
        self.folder = folder
        """The work folder."""
        self.kept = kept
        """How many utterances' audio it holds."""
