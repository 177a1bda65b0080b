"""Audio outputs: the sound card through sounddevice, and a null sink that keeps time.

Both pull from an :class:`AudioRing` in blocks; pausing outputs silence from the next
block on without consuming audio.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

import numpy as np

from engine.api import SAMPLE_RATE
from vvreader.playback import AudioRing, PlaybackClock

BLOCK = 1024  # samples per callback: 43 ms at 24 kHz


class AudioDeviceError(Exception):
    """No usable audio output; the message says what to do."""


class AudioOutput(Protocol):
    """What the narrator needs from an output."""

    paused: bool

    def start(self) -> None: ...

    def close(self) -> None: ...


class _Pull:
    """The shared consumer side: fill a block from the ring unless paused."""

    def __init__(self, ring: AudioRing, clock: PlaybackClock) -> None:
        self.ring, self.clock = ring, clock
        self.paused = False
        self.underruns = 0
        """Blocks that found less audio than they needed while playing."""
        self.padded = 0
        """Frames of silence played because the ring was empty while playing (before the
        first audio, and wherever the narrator was buffering)."""

    def fill(self, out: np.ndarray) -> None:
        if self.paused:
            out[:] = 0.0
            return
        got = self.ring.read_into(out)
        if got < len(out):
            self.padded += len(out) - got
            if got > 0:
                self.underruns += 1


class NullPlayer(_Pull):
    """Consumes audio in real time without sound (``--audio-device null``, tests)."""

    def __init__(self, ring: AudioRing, clock: PlaybackClock) -> None:
        super().__init__(ring, clock)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vvreader-null-audio", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        block = np.zeros(BLOCK, dtype=np.float32)
        t = time.monotonic()
        frame = 0
        while not self._stop.is_set():
            read = self.ring.read
            self.fill(block)
            self.clock.stamp(frame, read, self.ring.read - read, time.monotonic())
            frame += BLOCK
            t += BLOCK / SAMPLE_RATE
            delay = t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                t = time.monotonic()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(1)


class SoundDevicePlayer(_Pull):
    """The sound card. The callback only copies from the ring (no allocation, no lock) and
    tells the clock when the block will be heard."""

    def __init__(self, ring: AudioRing, clock: PlaybackClock, device: str | int | None = None):
        super().__init__(ring, clock)
        try:
            import sounddevice as sd
        except OSError:
            raise AudioDeviceError(
                "PortAudio is not installed (apt install libportaudio2); use "
                "--audio-device null to read silently, or --export OUT.wav"
            ) from None
        self._sd = sd
        try:
            self._stream = sd.OutputStream(
                samplerate=SAMPLE_RATE,
                channels=1,
                dtype="float32",
                blocksize=BLOCK,
                device=device,
                callback=self._callback,
            )
        except (sd.PortAudioError, ValueError) as e:
            raise AudioDeviceError(
                f"no usable audio output ({e}); see --list-devices, or use --audio-device "
                "null, or --export OUT.wav"
            ) from None
        self._nominal = float(self._stream.latency)
        self._frames = 0
        """Frames handed to the device so far (ring audio and padding)."""
        self.device_underflows = 0
        """Callbacks that PortAudio said came too late: the device ran dry and played
        silence that the ring never saw (the machine was too busy to run the callback)."""
        clock.latency = int(self._nominal * SAMPLE_RATE)

    def _callback(self, outdata: np.ndarray, frames: int, time_info, status) -> None:
        now = time.monotonic()
        if status.output_underflow:
            self.device_underflows += 1
        # When this block's first frame will be heard: PortAudio's estimate from the
        # device (for ALSA, the PCM delay, which through PulseAudio includes the server's
        # buffering and the sink's latency), else the stream's nominal latency.
        dac, current = time_info.outputBufferDacTime, time_info.currentTime
        delay = dac - current
        if (dac == 0.0 and current == 0.0) or not 0.0 <= delay < 10.0:
            delay = self._nominal
        read = self.ring.read
        self.fill(outdata[:, 0])
        self.clock.stamp(self._frames, read, self.ring.read - read, now + delay)
        self.clock.latency = int(delay * SAMPLE_RATE)
        self._frames += frames

    def start(self) -> None:
        self._stream.start()

    def close(self) -> None:
        try:
            self._stream.stop()
            self._stream.close()
        except self._sd.PortAudioError:
            pass


def list_devices() -> str:
    """The output devices, one a line (for ``--list-devices``)."""
    try:
        import sounddevice as sd
    except OSError:
        raise AudioDeviceError("PortAudio is not installed (apt install libportaudio2)") from None
    lines = []
    default = sd.default.device[1] if isinstance(sd.default.device, (list, tuple)) else None
    for i, d in enumerate(sd.query_devices()):
        if d["max_output_channels"] > 0:
            mark = "*" if i == default else " "
            lines.append(f"{mark} {i:3d}  {d['name']}")
    lines.append("  null  (no sound: keeps time, for tests and silent reading)")
    return "\n".join(lines)


def open_output(device: str | None, ring: AudioRing, clock: PlaybackClock) -> AudioOutput:
    """``null`` for the null sink; a number or a name (or None: the default) for a card."""
    if device == "null":
        return NullPlayer(ring, clock)
    chosen: str | int | None = int(device) if device and device.isdigit() else device
    return SoundDevicePlayer(ring, clock, chosen)
