"""Keep awake: the inhibitor is asked for while reading or exporting and released on
pause, quit and when done; where the system refuses it (no logind), it is silently off.
A stand-in ``systemd-inhibit`` on PATH records how it was started and runs until it is
released, as the real one does."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.fakes import FakeEngine
from vvreader.keep_awake import KeepAwake, inhibitor_command
from vvreader.narration.narrator import Narrator, State
from vvreader.player import NullPlayer
from vvreader.text.plan import build_plan
from vvreader.text.readers import load_document

STAND_IN = """#!/bin/sh
echo "$$ $*" >> "{log}"
{then}
"""


@pytest.fixture
def stand_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Puts a ``systemd-inhibit`` first on PATH; returns a function that writes it (by
    default one that logs its pid and arguments and waits on its input, like ``cat``)
    and the log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "inhibit.log"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

    def write(then: str = 'for last; do :; done; exec "$last"') -> Path:
        script = bin_dir / "systemd-inhibit"
        script.write_text(STAND_IN.format(log=log, then=then))
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
        return log

    return write


def running(log: Path) -> list[int]:
    """The stand-in's pids that still run."""
    if not log.exists():
        return []
    pids = [int(line.split()[0]) for line in log.read_text().splitlines()]
    alive = []
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        state = Path(f"/proc/{pid}/stat").read_text().split()[2] if sys.platform == "linux" else ""
        if state != "Z":
            alive.append(pid)
    return alive


def wait_for(cond, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


def test_the_command_for_each_platform() -> None:
    found = {"systemd-inhibit": "/usr/bin/systemd-inhibit", "cat": "/bin/cat"}
    linux = inhibitor_command("linux", found.get)
    assert linux is not None
    assert linux[0] == "/usr/bin/systemd-inhibit" and "--what=sleep:idle" in linux
    assert linux[-1] == "/bin/cat"
    mac = inhibitor_command("darwin", {"caffeinate": "/usr/bin/caffeinate"}.get, pid=42)
    assert mac == ["/usr/bin/caffeinate", "-i", "-w", "42"]
    assert inhibitor_command("linux", {}.get) is None
    assert inhibitor_command("win32", found.get) is None


def test_held_and_released(stand_in) -> None:
    log = stand_in()
    awake = KeepAwake()
    assert awake.command is not None and awake.command[0].endswith("bin/systemd-inhibit")
    awake.hold()
    wait_for(lambda: len(running(log)) == 1)
    assert "--what=sleep:idle --who=vvreader --why=vvreader is reading aloud" in log.read_text()
    awake.hold()  # already held: no second inhibitor
    assert awake.held
    awake.release()
    wait_for(lambda: not running(log))
    assert not awake.held
    with KeepAwake():
        wait_for(lambda: len(running(log)) == 1)
    wait_for(lambda: not running(log))


def test_refused_by_the_system_it_is_silently_off(stand_in) -> None:
    log = stand_in(then="echo 'Failed to connect to bus' >&2; exit 1")
    awake = KeepAwake()
    awake.hold()
    wait_for(lambda: log.exists())
    time.sleep(0.1)
    assert not awake.held
    awake.release()
    awake.hold()  # not asked again
    assert len(log.read_text().splitlines()) == 1


def test_the_narrator_holds_it_while_playing_only(stand_in, tmp_path: Path) -> None:
    log = stand_in()
    doc = tmp_path / "d.md"
    doc.write_text("One sentence here. Another one there. And a third one.\n")
    narrator = Narrator(build_plan(load_document(str(doc))), keep_awake=KeepAwake())
    try:
        narrator.start(FakeEngine(seconds_per_frame=0.001), NullPlayer)
        assert narrator.progress() is not None and not running(log)  # not playing yet
        narrator.play()
        wait_for(lambda: narrator.progress() and narrator.state is State.PLAYING)
        wait_for(lambda: len(running(log)) == 1)
        narrator.pause()
        wait_for(lambda: narrator.progress() and narrator.state is State.PAUSED)
        wait_for(lambda: not running(log))
        narrator.play()
        wait_for(lambda: narrator.progress() and len(running(log)) == 1)
        # Played to the end: released.
        wait_for(lambda: narrator.progress().status == "finished", timeout=30)
        wait_for(lambda: narrator.progress() and not running(log))
        narrator.go(0, play=True)
        wait_for(lambda: narrator.progress() and len(running(log)) == 1)
    finally:
        narrator.close()  # quit: released
    wait_for(lambda: not running(log))
    assert len(log.read_text().splitlines()) == 3


def test_export_keeps_the_machine_awake(stand_in, tmp_path: Path, tiny_model) -> None:
    log = stand_in()
    doc = tmp_path / "d.md"
    doc.write_text("A short text to export.\n")
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "vvreader",
            str(doc),
            "--export",
            str(tmp_path / "o.wav"),
            "--model",
            str(tiny_model),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert run.returncode == 0, run.stderr
    assert "--why=vvreader is exporting audio" in log.read_text()
    assert not running(log)
