"""The encoding thread: an export's file work, done in order on a thread of its own while
the engine makes the next audio.

Every call to an encoder (open, write, finish, abort) and the renames that follow go
through :meth:`EncodingThread.submit`, so they run on this one thread in the order given.
The queue between the two is bounded (:data:`QUEUE_LENGTH` jobs, each an utterance's
audio at most), so the memory an export holds stays bounded when the encoder is slower
than the engine: ``submit`` then waits.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from types import TracebackType

from vvreader.export.errors import ExportError

__all__ = ["QUEUE_LENGTH", "EncodingThread"]

QUEUE_LENGTH = 32
"""Jobs waiting at most."""

_STOP = None


class EncodingThread:
    """Runs submitted jobs in order on a thread named ``vvreader-export-encoder``.

    The first job that raises ends the work: the jobs after it are skipped (except those
    submitted with ``always``: clean-ups), and ``submit`` and ``close`` raise its error (an
    :class:`ExportError` as it is; anything else as an ExportError saying what failed).
    """

    def __init__(self) -> None:
        self._jobs: queue.Queue[tuple[Callable[[], object], bool] | None] = queue.Queue(
            QUEUE_LENGTH
        )
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, name="vvreader-export-encoder", daemon=True
        )
        self._thread.start()

    def __enter__(self) -> EncodingThread:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        err: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self) -> None:
        while (job := self._jobs.get()) is not _STOP:
            work, always = job
            if self._error is not None and not always:
                continue
            try:
                work()
            except BaseException as err:  # noqa: BLE001 - handed to the submitting thread
                if self._error is None:
                    self._error = err

    def _raise(self) -> None:
        err = self._error
        if err is None:
            return
        if isinstance(err, ExportError):
            raise err
        raise ExportError(f"encoding failed: {err}") from err

    def submit(self, work: Callable[[], object], always: bool = False) -> None:
        """Run ``work`` after the jobs before it (waits while the queue is full).

        Raises:
            ExportError: an earlier job failed.
        """
        if not always:
            self._raise()
        while True:
            try:
                self._jobs.put((work, always), timeout=0.1)
                return
            except queue.Full:
                if not self._thread.is_alive():
                    raise ExportError("the encoding thread has stopped") from None
                if not always:
                    self._raise()

    def drain(self) -> None:
        """Discard the jobs not started yet (the export stops)."""
        while True:
            try:
                self._jobs.get_nowait()
            except queue.Empty:
                return

    def close(self) -> None:
        """Wait for every job submitted; raise the error of a job that failed.

        Raises:
            ExportError: a job failed.
        """
        self.stop()
        self._raise()

    def stop(self) -> None:
        """Wait for the jobs submitted, then end the thread (errors are kept)."""
        if self._thread.is_alive():
            self._jobs.put(_STOP)
            self._thread.join()
