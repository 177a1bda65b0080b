"""Which of the threads alive after a test were started by it and are still running our
work: the check behind the suite's thread-leak fixture (tests/conftest.py).

Ours are the threads the project names ``vvreader-...`` (the engine, the narrator, the
players, the loaders, the planner, and the test helpers: the audio recorder and poller, the
load sampler, the fake Hub's server), and the
threads a C library started and called Python from (PortAudio's audio callback thread of an
output stream: Python lists it as ``Dummy-N``; it is alive while the stream is open).

Everything else is foreign and may outlive a test: Textual's own threads and the default
executor's ``asyncio_N`` threads that run thread workers (the event loop joins those when it
closes, at the end of the test), tqdm's ``tqdm_monitor`` (huggingface_hub's download bars
start it; it lives for the process), and ``MainThread``. A pooled MLX thread waiting for its
next engine (``engine.backend.IDLE_MLX_THREAD``) lives as long as the process by design: it
is ours again only once it runs an engine, under that engine's name.
"""

from __future__ import annotations

import os
import threading
import time

from engine.backend import IDLE_MLX_THREAD

PREFIX = "vvreader-"


def _os_thread_exists(native_id: int | None) -> bool:
    return native_id is not None and os.path.exists(f"/proc/self/task/{native_id}")


def is_ours(thread: threading.Thread) -> bool:
    """``thread`` runs work of the project (see the module's doc) right now."""
    if isinstance(thread, threading._DummyThread):  # started outside Python
        # Python never forgets a foreign thread: ask the kernel whether it still runs.
        return _os_thread_exists(thread.native_id)
    if not thread.is_alive():
        return False
    return thread.name.startswith(PREFIX) and thread.name != IDLE_MLX_THREAD


def snapshot() -> dict[threading.Thread, str]:
    """The live threads and their names now (the baseline of a test)."""
    return {t: t.name for t in threading.enumerate()}


def started_since(before: dict[threading.Thread, str]) -> list[threading.Thread]:
    """Our threads that run now and did not before: new ones, and pooled MLX threads that
    were idle in ``before`` and run an engine now."""
    return [
        t
        for t in threading.enumerate()
        if is_ours(t) and (t not in before or before[t] == IDLE_MLX_THREAD)
    ]


def leaked_threads(before: dict[threading.Thread, str], grace: float = 2.0) -> list[str]:
    """Descriptions of our threads started since ``before`` that are still running after
    ``grace`` seconds (a closed engine or narrator may need a moment to finish)."""
    deadline = time.monotonic() + grace
    while True:
        left = started_since(before)
        if not left or time.monotonic() >= deadline:
            break
        for t in left:
            if not isinstance(t, threading._DummyThread) and t.name != IDLE_MLX_THREAD:
                t.join(min(0.05, max(0.0, deadline - time.monotonic())))
        time.sleep(0.01)
    return [f"{t.name} (native id {t.native_id})" for t in left]
