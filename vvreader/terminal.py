"""The terminal while the full-screen app runs.

C libraries print their diagnostics straight to file descriptor 2: PortAudio's ALSA host
writes ``Expression '...' failed`` lines and ALSA ``ALSA lib pulse.c: ... Unable to
connect`` when a sound server goes away, from its own threads. On the terminal those would
draw over the app. :func:`native_stderr_to` points descriptor 2 at a log file for as long
as the app runs, and hands Textual (which draws on ``sys.__stderr__``) a duplicate of the
terminal instead.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["native_stderr_to"]


@contextmanager
def native_stderr_to(path: Path) -> Iterator[Path | None]:
    """While inside: what is written to descriptor 2 goes to ``path`` (truncated; None is
    yielded, and nothing changes, when stderr is not a terminal or ``path`` cannot be
    written); ``sys.__stderr__`` and ``sys.stderr`` write to the terminal. Enter it before
    the Textual app is made (the app remembers ``sys.__stderr__``)."""
    original = sys.__stderr__
    try:
        if original is None or not os.isatty(original.fileno()):
            yield None
            return
    except (OSError, ValueError):  # no real descriptor (a test harness's stream)
        yield None
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        log = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError:
        yield None
        return
    original.flush()
    sys.stderr.flush()
    terminal = os.fdopen(os.dup(2), "w", encoding=original.encoding, errors=original.errors)
    before = sys.stderr
    sys.__stderr__ = sys.stderr = terminal
    os.dup2(log, 2)
    os.close(log)
    try:
        yield path
    finally:
        terminal.flush()
        os.dup2(terminal.fileno(), 2)
        sys.__stderr__ = original
        sys.stderr = before
        terminal.close()
