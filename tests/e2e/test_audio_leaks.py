"""The thread-leak check sees an audio output left open (through the test's PulseAudio
server, as the reader's outputs are), and no longer once it is closed."""

from __future__ import annotations

import numpy as np

from tests.audio_server import PulseServer
from tests.threads import leaked_threads, snapshot


def test_an_audio_output_left_open_is_reported_until_it_is_closed(
    pulse_server: PulseServer,
) -> None:
    import sounddevice as sd

    def silence(out: np.ndarray, frames: int, time_info, status) -> None:
        out[:] = 0.0

    before = snapshot()
    stream = sd.OutputStream(samplerate=24_000, channels=1, dtype="float32", callback=silence)
    try:
        stream.start()
        leaked = leaked_threads(before, grace=0.2)
        assert len(leaked) == 1 and leaked[0].startswith("an open audio output"), leaked
    finally:
        stream.close()
    assert leaked_threads(before, grace=2.0) == []
