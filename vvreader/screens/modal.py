"""A modal screen that closes once, however fast the keys come."""

from __future__ import annotations

from typing import Generic, TypeVar

from textual.screen import ModalScreen

ResultType = TypeVar("ResultType")

__all__ = ["OnceModal"]


class OnceModal(ModalScreen[ResultType], Generic[ResultType]):
    """``close(result)`` dismisses the screen the first time and ignores later calls (a
    second escape queued before the first one was handled would pop the screen below). A
    key that arrives while the screen is still being mounted (right after the key that
    opened it) is ignored rather than popping a half-built screen."""

    _dismissing = False

    def close(self, result: ResultType | None = None) -> None:
        if self._dismissing or not (self.is_active and self.is_mounted):
            return
        self._dismissing = True
        self.dismiss(result)
