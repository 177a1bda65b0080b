"""The one error of an export: what cannot be written or made, said in one line."""

from __future__ import annotations

__all__ = ["ExportError"]


class ExportError(Exception):
    """The output cannot be written, a format cannot be made here, or the engine failed;
    the message says what to do."""
