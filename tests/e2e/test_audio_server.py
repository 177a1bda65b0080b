"""The recording chain the audio tests trust (tests.audio_server): a stream that begins
with sound in its very first block is recorded whole (the null sink takes no rewinds, so
no start of a stream is lost to one), and a stream that runs dry inside the server is
counted in the recording, so that a test can tell that loss from vvreader's."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from tests.audio_server import RATE, MonitorRecorder, PulseServer, disturbances
from tests.e2e.machine_load import MachineLoad
from vvreader.playback import AudioRing, PlaybackClock
from vvreader.player import SoundDevicePlayer

FRAME = 3200
ATTEMPTS = 3


def frames(n: int) -> np.ndarray:
    """``n`` frames, each a different nonzero constant: a lost or repeated sample shows as a
    frame's length."""
    return np.concatenate([np.full(FRAME, 0.2 + k * 1e-3, dtype=np.float32) for k in range(n)])


def play(server: PulseServer, audio: np.ndarray, stall_block: int = 0, stall_s: float = 0.0):
    """Play ``audio`` from the first block on, the ``stall_block``-th callback (from 1)
    held ``stall_s`` seconds; returns the recording's sound (zeros left out), PortAudio's
    late callbacks and the server's underruns."""
    ring = AudioRing()
    ring.write(audio)
    player = SoundDevicePlayer(ring, PlaybackClock(ring))
    fill, calls = player.fill, [0]

    def held_fill(out: np.ndarray) -> int:
        calls[0] += 1
        if calls[0] == stall_block:
            time.sleep(stall_s)
        return fill(out)

    player.fill = held_fill  # type: ignore[method-assign]
    recorder = MonitorRecorder(server).start()
    try:
        player.start()
        time.sleep(len(audio) / RATE + stall_s + 0.4)
    finally:
        player.close()
        rec = recorder.stop()
    return rec.samples[rec.samples != 0.0], player.device_underflows, rec.server_underruns


def test_a_stream_that_starts_with_sound_is_recorded_whole(
    pulse_server: PulseServer, audio_retries: Callable[[str], None]
) -> None:
    audio = frames(6)
    for attempt in range(1, ATTEMPTS + 1):
        with MachineLoad() as load:
            heard, late, dry = play(pulse_server, audio)
        if marks := disturbances(late, dry):
            cause = (
                f"attempt {attempt} of {ATTEMPTS}: {'; '.join(marks)}; machine {load.describe()}"
            )
            assert not load.quiet, f"{cause}: the machine was quiet"
            audio_retries(cause)
            continue
        assert len(heard) == len(audio) and np.array_equal(heard, audio), (
            f"heard {len(heard)} samples of {len(audio)}"
        )
        return
    raise AssertionError("every attempt was disturbed by a busy machine (see the warnings)")


def test_a_stream_run_dry_is_counted_by_the_recording(pulse_server: PulseServer) -> None:
    # Held 300 ms, longer than the server's buffer of the stream (about 130 ms).
    heard, late, dry = play(pulse_server, frames(6), stall_block=4, stall_s=0.3)
    assert dry >= 1, "the server's underrun was not seen in its log"
    assert late >= 1
    assert len(heard) < 6 * FRAME  # what the stall cost, which the count explains
