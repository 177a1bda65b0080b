"""Fixtures of the end-to-end audio tests: a private PulseAudio server with a null sink,
started once per session (installed first if missing) and made this process's default
output."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.audio_server import PulseServer, use_server


@pytest.fixture(scope="session")
def pulse_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PulseServer]:
    """The running server; PULSE_SERVER points at it (for this process and its children)
    and PortAudio's default output is its null sink until the session ends."""
    server = PulseServer(tmp_path_factory.mktemp("pulse"))
    with server, use_server(server):
        yield server
