"""Which of the threads alive after a test were started by it and are still running our
work: the check behind the suite's thread-leak fixture (tests/conftest.py).

Ours are:

- the Python threads the project names ``vvreader-...``: the engine, the narrator, the
  players, the loaders, the planner, and the test helpers (the audio recorder and poller,
  the load sampler, the fake Hub's server);
- threads a C library started and called Python from (Python lists one as ``Dummy-N`` once
  it asks for its current thread, and never forgets it: the kernel says whether it runs);
- an open audio output: PortAudio's callback thread is invisible to Python, but through
  the ALSA pulse plugin every open stream also runs a PulseAudio client thread that the
  kernel names ``threaded-ml``, from the stream's opening to its closing.

Everything else is foreign and may outlive a test: Textual's own threads and the default
executor's ``asyncio_N`` threads that run thread workers (the event loop joins those when it
closes, at the end of the test), tqdm's ``tqdm_monitor`` (huggingface_hub's download bars
start it; it lives for the process), the thread pools of MLX and OpenBLAS (started once,
kept for the process), and ``MainThread``. A pooled MLX thread waiting for its next engine
(``engine.backend.IDLE_MLX_THREAD``) lives as long as the process by design: it is ours
again only once it runs an engine, under that engine's name.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

from engine.backend import IDLE_MLX_THREAD

PREFIX = "vvreader-"
AUDIO_CLIENT_THREAD = "threaded-ml"
"""The kernel's name of the PulseAudio client thread of an open output stream."""


def _os_thread_exists(native_id: int | None) -> bool:
    return native_id is not None and os.path.exists(f"/proc/self/task/{native_id}")


def _audio_client_threads() -> set[int]:
    """Thread ids of this process's PulseAudio client threads (open audio streams)."""
    out = set()
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                if f.read().strip() == AUDIO_CLIENT_THREAD:
                    out.add(int(tid))
        except OSError:  # it ended meanwhile
            pass
    return out


def is_ours(thread: threading.Thread) -> bool:
    """Python thread ``thread`` runs work of the project (see the module's doc) now."""
    if isinstance(thread, threading._DummyThread):  # started outside Python
        return _os_thread_exists(thread.native_id)
    if not thread.is_alive():
        return False
    return thread.name.startswith(PREFIX) and thread.name != IDLE_MLX_THREAD


@dataclass(frozen=True)
class Baseline:
    threads: dict[threading.Thread, str]
    """The live Python threads and their names."""
    audio_clients: set[int]
    """The audio client threads (open output streams)."""


def snapshot() -> Baseline:
    """The threads running now (the baseline of a test)."""
    return Baseline({t: t.name for t in threading.enumerate()}, _audio_client_threads())


def started_since(before: Baseline) -> list[str]:
    """Descriptions of our threads that run now and did not before: new ones, pooled MLX
    threads that were idle before and run an engine now, and new open audio streams."""
    old = before.threads
    out = [
        f"{t.name} (native id {t.native_id})"
        for t in threading.enumerate()
        if is_ours(t) and (t not in old or old[t] == IDLE_MLX_THREAD)
    ]
    out += [
        f"an open audio output ({AUDIO_CLIENT_THREAD}, native id {tid})"
        for tid in sorted(_audio_client_threads() - before.audio_clients)
    ]
    return out


def leaked_threads(before: Baseline, grace: float = 2.0) -> list[str]:
    """Our threads started since ``before`` that still run after ``grace`` seconds (a
    closed engine, narrator or output may need a moment to finish)."""
    deadline = time.monotonic() + grace
    while True:
        left = started_since(before)
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.02)
