"""The thread-leak check (tests/threads.py) and the suite's fixture that uses it: a thread
of ours left running is reported, a foreign one, one that ends in the grace period, or an
idle pooled MLX thread is not."""

from __future__ import annotations

import _thread
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from engine.backend import IDLE_MLX_THREAD

from tests.threads import leaked_threads, snapshot

REPO = Path(__file__).resolve().parents[2]


def start(name: str, target) -> threading.Thread:
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread


def test_a_thread_of_ours_left_running_is_reported_until_it_ends() -> None:
    before = snapshot()
    stop = threading.Event()
    thread = start("vvreader-narrator", stop.wait)
    t0 = time.monotonic()
    leaked = leaked_threads(before, grace=0.3)
    assert time.monotonic() - t0 >= 0.3  # it was given the grace period
    assert leaked == [f"vvreader-narrator (native id {thread.native_id})"]
    stop.set()
    thread.join(5)
    assert leaked_threads(before, grace=0.3) == []


def test_threads_that_end_in_the_grace_period_or_are_foreign_are_not_reported() -> None:
    before = snapshot()
    stop = threading.Event()
    start("vvreader-engine", lambda: time.sleep(0.2))
    foreign = start("asyncio_7", stop.wait)
    try:
        assert leaked_threads(before, grace=2.0) == []
    finally:
        stop.set()
        foreign.join(5)


def test_a_pooled_mlx_thread_is_ours_only_while_it_runs_an_engine() -> None:
    stop = threading.Event()
    pooled = start(IDLE_MLX_THREAD, stop.wait)
    try:
        before = snapshot()
        assert leaked_threads(before, grace=0.1) == []
        pooled.name = "vvreader-engine"  # what run_on_mlx_thread does when it hands it work
        assert leaked_threads(before, grace=0.1) == [
            f"vvreader-engine (native id {pooled.native_id})"
        ]
        pooled.name = IDLE_MLX_THREAD  # the engine closed: back in the pool
        assert leaked_threads(before, grace=0.1) == []
    finally:
        stop.set()
        pooled.join(5)


def test_a_thread_started_outside_python_is_reported_while_it_runs() -> None:
    """PortAudio's callback thread is not started by Python: Python lists it (``Dummy-N``)
    once it calls in and never forgets it, so only the kernel knows whether it still runs.
    ``_thread.start_new_thread`` makes such a thread (threading does not register it)."""
    before = snapshot()
    seen: list[threading.Thread] = []
    entered, stop, ended = threading.Event(), threading.Event(), threading.Event()

    def callback_thread() -> None:
        seen.append(threading.current_thread())  # registers a _DummyThread
        entered.set()
        stop.wait()
        ended.set()

    _thread.start_new_thread(callback_thread, ())
    assert entered.wait(5)
    dummy = seen[0]
    assert isinstance(dummy, threading._DummyThread)
    assert leaked_threads(before, grace=0.1) == [f"{dummy.name} (native id {dummy.native_id})"]
    stop.set()
    assert ended.wait(5)
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/self/task/{dummy.native_id}"):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert leaked_threads(before, grace=0.1) == []


LEAKY_TESTS = """
import threading

stop = threading.Event()


def test_leaves_a_narrator_running():
    threading.Thread(target=stop.wait, name="vvreader-narrator", daemon=True).start()


def test_joins_its_thread():
    t = threading.Thread(target=stop.wait, args=(0.1,), name="vvreader-narrator")
    t.start()
"""


def test_the_suite_fixture_fails_a_test_that_leaves_a_thread(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(
        "from tests.conftest import no_thread_left_behind  # noqa: F401\n"
    )
    (tmp_path / "test_leaky.py").write_text(LEAKY_TESTS)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rE", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = run.stdout + run.stderr
    assert run.returncode == 1, out
    assert "2 passed, 1 error" in out, out
    assert "ERROR at teardown of test_leaves_a_narrator_running" in out, out
    assert "threads still running after the test" in out and "vvreader-narrator" in out, out
