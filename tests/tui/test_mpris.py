"""Media keys on Linux: the real ``vvreader`` in tmux with the tiny model, on a private
session bus (``dbus-daemon --session``, Debian's ``dbus`` package, which .ci/setup
installs), driven over D-Bus as a headset button or a desktop widget would: MPRIS's
PlaybackStatus follows the reader, Pause holds the position and the status bar shows it
paused, Play reads on, Next moves to the next sentence, Metadata carries the title."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dbus_fast.aio import MessageBus

from tests.tui.test_tmux_reader import DOC, Tmux, position, reader_env, status_line

NAME = "org.mpris.MediaPlayer2.vvreader"
PATH = "/org/mpris/MediaPlayer2"


@pytest.fixture
def session_bus():
    """A private session bus: its address (the bus goes away after the test)."""
    daemon = shutil.which("dbus-daemon")
    assert daemon, "dbus-daemon is missing: .ci/setup installs it (apt install dbus)"
    proc = subprocess.Popen(
        [daemon, "--session", "--nofork", "--nopidfile", "--print-address=1"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    address = proc.stdout.readline().strip()
    assert address, "dbus-daemon printed no address"
    yield address
    proc.send_signal(signal.SIGTERM)
    proc.wait(5)


@pytest.fixture
def tmux(tmp_path: Path):
    assert shutil.which("tmux"), "tmux is missing: .ci/setup installs it (apt install tmux)"
    t = Tmux(tmp_path)
    yield t
    t.kill()


async def player(address: str, timeout: float = 120.0):
    """The reader's MPRIS player interface, once the reader has taken its name."""
    bus = await MessageBus(bus_address=address).connect()
    end = time.monotonic() + timeout
    while True:
        reply = await bus.introspect("org.freedesktop.DBus", "/org/freedesktop/DBus")
        dbus = bus.get_proxy_object("org.freedesktop.DBus", "/org/freedesktop/DBus", reply)
        names = await dbus.get_interface("org.freedesktop.DBus").call_list_names()
        if NAME in names:
            break
        assert time.monotonic() < end, f"{NAME} never appeared on the bus: {names}"
        await asyncio.sleep(0.2)
    obj = bus.get_proxy_object(NAME, PATH, await bus.introspect(NAME, PATH))
    return bus, obj.get_interface("org.mpris.MediaPlayer2.Player")


async def until(get, want, timeout: float = 10.0):
    end = time.monotonic() + timeout
    while (value := await get()) != want:
        assert time.monotonic() < end, f"{value!r}, expected {want!r}"
        await asyncio.sleep(0.05)
    return value


async def test_media_keys_over_mpris(
    session_bus: str, tmux: Tmux, tmp_path: Path, tiny_model
) -> None:
    doc = tmp_path / "book.md"
    doc.write_text(DOC)
    env = reader_env(tmp_path, DBUS_SESSION_BUS_ADDRESS=session_bus)
    command = f"{sys.executable} -m vvreader {doc} --model {tiny_model} --audio-device null"
    tmux.start(command, env)
    bus, mpris = await player(session_bus)
    try:
        tmux.wait(lambda text, _: "playing" in status_line(text), 120, "playing")
        assert await until(mpris.get_playback_status, "Playing") == "Playing"
        metadata = await mpris.get_metadata()
        assert metadata["xesam:title"].value == "A short book"
        assert metadata["xesam:album"].value == "book"

        # Pause: the status bar says paused, and the position holds.
        await mpris.call_pause()
        text = tmux.wait(lambda text, _: "paused" in status_line(text), 5, "paused")
        assert await until(mpris.get_playback_status, "Paused") == "Paused"
        held = position(text)
        time.sleep(1.5)
        assert position(tmux.text()) == held and "paused" in status_line(tmux.text())

        # Play reads on from there.
        await mpris.call_play()
        tmux.wait(lambda text, _: "playing" in status_line(text), 5, "playing again")
        assert await until(mpris.get_playback_status, "Playing") == "Playing"
        assert (position(tmux.text()) or 0) >= (held or 0)

        # Next: the next sentence.
        await mpris.call_pause()
        text = tmux.wait(lambda text, _: "paused" in status_line(text), 5, "paused")
        here = position(text)
        assert here is not None
        await mpris.call_next()
        tmux.wait(lambda text, _: position(text) == here + 1, 5, "the next sentence")
        await mpris.call_previous()
        tmux.wait(lambda text, _: position(text) == here, 5, "the sentence before")

        # PlayPause toggles, as a headset's one button does.
        await mpris.call_play_pause()
        assert await until(mpris.get_playback_status, "Playing") == "Playing"
        tmux.quit()
    finally:
        bus.disconnect()


def test_without_a_session_bus_it_is_silently_off(tmux: Tmux, tmp_path: Path, tiny_model) -> None:
    doc = tmp_path / "book.md"
    doc.write_text(DOC)
    env = reader_env(
        tmp_path,
        DBUS_SESSION_BUS_ADDRESS="unix:path=" + str(tmp_path / "no-bus"),
        XDG_RUNTIME_DIR=str(tmp_path),
    )
    command = f"{sys.executable} -m vvreader {doc} --model {tiny_model} --audio-device null"
    tmux.start(command, env)
    text = tmux.wait(lambda text, _: "playing" in status_line(text), 120, "playing")
    assert "Traceback" not in text and "bus" not in text.lower()
    tmux.quit()
