"""Fixtures of the end-to-end audio tests: a private PulseAudio server with a null sink,
started once per session (installed first if missing) and made this process's default
output; and the record of recorded-audio runs played again because the machine disturbed
them (each one a warning with its cause, and their count in the session's summary)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator

import pytest

from tests.audio_server import PulseServer, use_server


class AudioRetryWarning(UserWarning):
    """A recorded-audio run was played again: the machine disturbed it (the message says
    what was heard and how busy the machine was)."""


_RETRIES = pytest.StashKey[list[tuple[str, str]]]()
_RUNS = pytest.StashKey[list[str]]()


@pytest.fixture(scope="session")
def pulse_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PulseServer]:
    """The running server; PULSE_SERVER points at it (for this process and its children)
    and PortAudio's default output is its null sink until the session ends."""
    server = PulseServer(tmp_path_factory.mktemp("pulse"))
    with server, use_server(server):
        yield server


@pytest.fixture
def audio_retries(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Call with the cause of each run played again: it is printed, warned
    (AudioRetryWarning, in the warnings summary) and counted in the session summary."""
    request.config.stash.setdefault(_RUNS, []).append(request.node.nodeid)

    def retried(cause: str) -> None:
        request.config.stash.setdefault(_RETRIES, []).append((request.node.nodeid, cause))
        print(cause)
        warnings.warn(AudioRetryWarning(cause), stacklevel=2)

    return retried


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    tests = config.stash.get(_RUNS, [])
    if not tests:
        return
    retries = config.stash.get(_RETRIES, [])
    terminalreporter.section("recorded-audio runs played again")
    terminalreporter.write_line(
        f"{len(retries)} run(s) played again because the machine disturbed them, in "
        f"{len({t for t, _ in retries})} of {len(tests)} recorded-audio tests"
    )
    for test, cause in retries:
        terminalreporter.write_line(f"{test}: {cause}")
