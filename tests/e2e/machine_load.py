"""How busy the machine was while a recorded-audio test played: what decides whether a
disturbed recording is the machine's doing (played again) or ours (fails at once).

A sampler thread reads, every ``WINDOW`` seconds, the kernel's counters (Linux ``/proc``):
the CPU time of the whole machine (``/proc/stat``: busy time and the time the hypervisor
gave to other guests, *steal*), and that of this test's own processes (this process and
its descendants: the PulseAudio server and the ``parec`` recorder). The difference is the
CPU the *other* processes took; with steal, it is what could have kept our audio callback
from running in time.

The machine was **quiet** during a run when, in every window of it:

- other processes took at most ``OTHERS_LIMIT`` (0.5) of a core. A playthrough needs
  about one core (the engine thread synthesising ahead; the audio callback, the narrator,
  the sound server and the recorder take a few percent), so on the 2-core machines the
  suite runs on, a half-busy second core still leaves a full core free; the counters tick
  in 10 ms jiffies, so a 250 ms window measures to about 0.1 core, well below the limit;
- the hypervisor stole at most ``STEAL_LIMIT`` (0.08) of a core: 20 ms in a window, half a
  43 ms audio block, the least that can hold up one block's callback long enough to be
  heard.

A gap or glitch in a run on a quiet machine is ours (vvreader's, or the test's) and fails
at once; one on a busy machine proves nothing either way and the run is played again.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

WINDOW = 0.25
"""Seconds per sample."""
OTHERS_LIMIT = 0.5
"""Cores that other processes may take in a window of a quiet run (see the module doc)."""
STEAL_LIMIT = 0.08
"""Cores the hypervisor may steal in a window of a quiet run (see the module doc)."""
_TICK = os.sysconf("SC_CLK_TCK")


def _machine() -> tuple[int, int]:
    """Busy and stolen jiffies of all CPUs (``/proc/stat``'s first line)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return user + nice + system + irq + softirq, steal


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{p}/task/{task}/children") as f:
                    kids = [int(k) for k in f.read().split()]
            except OSError:
                continue
            out += kids
            todo += kids
    return out


def _process_jiffies(pid: int) -> int:
    """User and system jiffies of process ``pid`` (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return 0
    rest = stat[stat.rindex(")") + 2 :].split()  # the command name may hold spaces
    return int(rest[11]) + int(rest[12])  # utime, stime (fields 14 and 15)


def _ours() -> int:
    """Jiffies of this process and its descendants (a descendant that exited within the
    window is missed: a short-lived pactl at most)."""
    me = os.getpid()
    return sum(_process_jiffies(p) for p in [me, *_descendants(me)])


@dataclass
class LoadWindow:
    seconds: float
    others: float
    """Cores that other processes took."""
    steal: float
    """Cores the hypervisor stole."""


@dataclass
class MachineLoad:
    """Samples the machine while in its ``with`` block (see the module doc)."""

    windows: list[LoadWindow] = field(default_factory=list)
    loadavg: str = ""
    """``/proc/loadavg`` at the end (the 1, 5 and 15 minute averages, for the report)."""

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="vvreader-test-load-sampler", daemon=True
        )

    def __enter__(self) -> MachineLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        with open("/proc/loadavg") as f:
            self.loadavg = " ".join(f.read().split()[:3])

    def _run(self) -> None:
        t, (busy, steal), ours = time.monotonic(), _machine(), _ours()
        while True:
            stopping = self._stop.wait(WINDOW)
            t2, (busy2, steal2), ours2 = time.monotonic(), _machine(), _ours()
            span = t2 - t
            if span > 0.05:  # the last, short one measures nothing at 10 ms a tick
                others = max(0, (busy2 - busy) - (ours2 - ours)) / _TICK / span
                self.windows.append(LoadWindow(span, others, (steal2 - steal) / _TICK / span))
            t, busy, steal, ours = t2, busy2, steal2, ours2
            if stopping:
                return

    @property
    def quiet(self) -> bool:
        return bool(self.windows) and all(
            w.others <= OTHERS_LIMIT and w.steal <= STEAL_LIMIT for w in self.windows
        )

    def describe(self) -> str:
        if not self.windows:
            return "not measured"
        total = sum(w.seconds for w in self.windows)
        mean = sum(w.others * w.seconds for w in self.windows) / total
        busy = sum(w.others > OTHERS_LIMIT or w.steal > STEAL_LIMIT for w in self.windows)
        return (
            f"{'quiet' if self.quiet else 'busy'}: other processes took {mean:.2f} cores on "
            f"average, {max(w.others for w in self.windows):.2f} at most; steal at most "
            f"{max(w.steal for w in self.windows):.2f} cores; {busy} of "
            f"{len(self.windows)} windows of {WINDOW * 1000:.0f} ms over the limits "
            f"({OTHERS_LIMIT} cores of others, {STEAL_LIMIT} stolen); load average "
            f"{self.loadavg}"
        )
