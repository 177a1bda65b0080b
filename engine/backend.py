"""Process-level MLX plumbing: the threads that run MLX work.

A thread that has run MLX work must never exit while the interpreter may be shutting
down: its thread-local MLX state is torn down on exit, and when that races with
interpreter finalization the process aborts ("terminate called without an active
exception", seen with mlx 0.32 on Linux). So MLX threads are pooled daemon threads
that park between tasks and are reused; they die only with the process.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

_idle: queue.SimpleQueue[_MLXThread] = queue.SimpleQueue()


class _MLXThread(threading.Thread):
    def __init__(self) -> None:
        super().__init__(name="vvreader-mlx", daemon=True)
        self.tasks: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()

    def run(self) -> None:
        while True:
            task = self.tasks.get()
            try:
                task()
            finally:
                _idle.put(self)


def run_on_mlx_thread(task: Callable[[], None]) -> None:
    """Run ``task`` on a pooled MLX thread (an idle one, or a new one)."""
    try:
        worker = _idle.get_nowait()
    except queue.Empty:
        worker = _MLXThread()
        worker.start()
    worker.tasks.put(task)
