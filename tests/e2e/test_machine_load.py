"""The load measurement that tells a busy machine from a quiet one in the recorded-audio
tests: CPU that another process takes counts against quiet; this process's and its
children's are subtracted as ours."""

from __future__ import annotations

import subprocess
import sys
import time

from tests.e2e.machine_load import _TICK, OTHERS_LIMIT, MachineLoad, _ours

SPIN = "import time\nend = time.monotonic() + {s}\nwhile time.monotonic() < end: pass\n"


def test_another_process_spinning_makes_the_machine_busy() -> None:
    # The spinner is orphaned at once (its shell exits), so it is not one of ours.
    subprocess.run(
        ["sh", "-c", f'"{sys.executable}" -c "$0" >/dev/null 2>&1 &', SPIN.format(s=1.5)],
        check=True,
    )
    with MachineLoad() as load:
        time.sleep(1.0)
    assert not load.quiet, load.describe()
    busy = [w for w in load.windows if w.others > OTHERS_LIMIT]
    assert len(busy) >= len(load.windows) - 1, load.describe()


def test_this_process_and_its_children_are_ours() -> None:
    """What is subtracted from the machine's busy time: this process's CPU and its
    children's (the sound server, the recorder), read while they run."""
    child_cpu = (
        "import time\n"
        "while time.process_time() < 0.3: pass\n"
        "print('spun', flush=True)\n"
        "time.sleep(30)\n"
    )
    before = _ours()
    child = subprocess.Popen([sys.executable, "-c", child_cpu], stdout=subprocess.PIPE, text=True)
    try:
        own = time.process_time()
        while time.process_time() - own < 0.3:
            pass
        assert child.stdout is not None and child.stdout.readline() == "spun\n"
        grew = (_ours() - before) / _TICK
    finally:
        child.kill()
        child.wait()
    assert grew >= 0.6 - 0.05, grew  # 0.3 s each, to a few 10 ms ticks
