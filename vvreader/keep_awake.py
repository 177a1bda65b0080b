"""Keep the machine awake while reading or exporting: a sleep inhibitor held as a child
process, one strategy per platform (``systemd-inhibit`` on Linux, asking logind;
``caffeinate`` on macOS). Where neither exists or the system refuses (a container without
logind), it is silently off."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable

log = logging.getLogger("vvreader.keep_awake")

WHY = "vvreader is reading aloud"


def inhibitor_command(
    platform: str = sys.platform,
    which: Callable[[str], str | None] = shutil.which,
    pid: int | None = None,
    why: str = WHY,
) -> list[str] | None:
    """The command that holds the machine awake while it runs, or None where there is
    none. The Linux one waits on its standard input (``cat``), so it also ends when this
    process dies and the pipe closes; the macOS one watches this process (``-w``)."""
    if platform.startswith("linux"):
        inhibit, cat = which("systemd-inhibit"), which("cat")
        if inhibit and cat:
            return [
                inhibit,
                "--what=sleep:idle",
                "--who=vvreader",
                f"--why={why}",
                "--mode=block",
                cat,
            ]
    elif platform == "darwin":
        caffeinate = which("caffeinate")
        if caffeinate:
            return [caffeinate, "-i", "-w", str(pid if pid is not None else os.getpid())]
    return None


class KeepAwake:
    """Holds the inhibitor between :meth:`hold` and :meth:`release` (both idempotent and
    quick: the inhibitor is started, never waited for). Usable as a context manager."""

    def __init__(self, command: list[str] | None = None, why: str = WHY) -> None:
        """``command``: the inhibitor (default: this platform's; ``[]``: none)."""
        self.command = command if command is not None else inhibitor_command(why=why)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def held(self) -> bool:
        """An inhibitor runs (False where none exists or the system refused it)."""
        return self._process is not None and self._process.poll() is None

    def want(self, awake: bool) -> None:
        """:meth:`hold` or :meth:`release`."""
        if awake:
            self.hold()
        else:
            self.release()

    def hold(self) -> None:
        if not self.command or self._process is not None:
            return
        try:
            self._process = subprocess.Popen(
                self.command,
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # a ctrl+c in the terminal is ours to handle
            )
        except OSError as err:
            log.info("cannot keep the machine awake: %s", err)
            self.command = None  # do not try again

    def release(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is not None and process.returncode:
            # It ended by itself: no logind here (a container). Do not try again.
            log.info("the sleep inhibitor is unavailable (exit %s)", process.returncode)
            self.command = None
        try:
            if process.stdin is not None:
                process.stdin.close()
            process.terminate()
            process.wait(1)
        except (OSError, subprocess.TimeoutExpired):
            process.kill()
            process.wait(1)

    def __enter__(self) -> KeepAwake:
        self.hold()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()
