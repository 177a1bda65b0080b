"""The player: audio outputs (the sound card through sounddevice, and a null sink that keeps
time) and :class:`Player`, which owns the one in use, its device's loss and its recovery.

Outputs pull from an :class:`AudioRing` in blocks. Pausing is silent at once: the sound
card's stream is aborted (PortAudio drops what the device still held, through PulseAudio
too) and the ring steps back to the first sample not heard, so resuming goes on from
exactly there. The sound card's output notices when its device goes away while playing
(:meth:`SoundDevicePlayer.lost`); the :class:`Player` then closes it, keeps the utterance
that was being heard and opens a new output on the next start.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from engine.api import SAMPLE_RATE
from vvreader.playback import AudioRing, PlaybackClock
from vvreader.stretch import Stretcher

log = logging.getLogger("vvreader.player")

BLOCK = 1024  # samples per callback: 43 ms at 24 kHz
STALL = 5.0
"""Seconds without a callback, while the stream should be running, after which the device
counts as lost (a hung sound server). Not less: PulseAudio's null sink, with no client
asking for a low latency, renders up to 2 s at once, and the callbacks wait that long."""


class AudioDeviceError(Exception):
    """No usable audio output; the message says what to do."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message
        """What went wrong, in a few words (the message adds what to do)."""


class AudioOutput(Protocol):
    """What the narrator needs from an output."""

    paused: bool
    speed: float
    """Listening speed (1.0: as made), read by the output at each block."""
    volume: float
    """Gain (1.0: as made), read by the output at each block."""

    def start(self) -> None:
        """Begin playing (once)."""

    def pause(self) -> None:
        """Silence now; what was handed but not heard is played again on :meth:`resume`."""

    def resume(self) -> None:
        """Play on after :meth:`pause`."""

    def lost(self) -> str | None:
        """Why the device stopped playing by itself (None while it is fine)."""

    def close(self) -> None: ...


class _Pull:
    """The shared consumer side: fill a block from the ring unless paused, at the
    listening speed (the ring holds the voice as it was made; it is stretched here, as
    it is played, so a change of speed is heard from the next block)."""

    def __init__(self, ring: AudioRing, clock: PlaybackClock) -> None:
        self.ring, self.clock = ring, clock
        self.speed = 1.0
        """Listening speed (written by any thread, read by the callback)."""
        self.volume = 1.0
        """Gain on what is played (the sleep timer's fade; any thread writes it)."""
        self._stretcher = Stretcher(ring.read)
        self._stretched_to = -1
        """Where the stretcher left ``ring.read`` (elsewhere: the ring was rewound, or
        played as made since)."""
        self.paused = False
        self.underruns = 0
        """Blocks that found less audio than they needed while playing."""
        self.padded = 0
        """Frames of silence played because the ring was empty while playing (before the
        first audio, and wherever the narrator was buffering)."""

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    def lost(self) -> str | None:
        return None

    def fill(self, out: np.ndarray) -> int:
        """Returns how many frames of ``out`` are audio (the rest is silence)."""
        if self.paused:
            out[:] = 0.0
            return 0
        speed = self.speed
        if speed == 1.0 and not self._stretcher.pending:
            got = self.ring.read_into(out)  # as made; the stretcher starts afresh later
            self._stretched_to = -1
        else:
            got = self._stretch(out, speed)
        volume = self.volume
        if volume != 1.0:
            out[:got] *= volume
        if got < len(out):
            self.padded += len(out) - got
            if got > 0:
                self.underruns += 1
        return got

    def _stretch(self, out: np.ndarray, speed: float) -> int:
        ring = self.ring
        if self._stretched_to != ring.read:
            self._stretcher.reset(ring.read)
        audio, end = self._stretcher.read(ring, len(out), speed)
        got = len(audio)
        out[:got] = audio
        out[got:] = 0.0
        ring.read = max(ring.read, min(int(end), ring.written))
        self._stretched_to = ring.read
        return got


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
            got = self.fill(block)
            self.clock.stamp(frame, read, got, time.monotonic(), self.ring.read - read)
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
                finished_callback=self._finished,
            )
        except (sd.PortAudioError, ValueError) as e:
            raise AudioDeviceError(
                f"no usable audio output ({e}); see --list-devices, or use --audio-device "
                "null, or --export OUT.wav",
                reason="the audio output cannot be opened",
            ) from None
        self._nominal = float(self._stream.latency)
        self._frames = 0
        """Frames handed to the device so far (ring audio and padding)."""
        self.device_underflows = 0
        """Callbacks that PortAudio said came too late: the device ran dry and played
        silence that the ring never saw (the machine was too busy to run the callback)."""
        clock.latency = int(self._nominal * SAMPLE_RATE)
        self._running = False
        """The stream was started by us and not stopped by us."""
        self._closed = False
        self._lost: str | None = None
        self.lost_at: float | None = None
        """When the device was lost (``time.monotonic()``)."""
        self._last_callback = 0.0

    def _finished(self) -> None:
        # PortAudio calls this when the stream becomes inactive: after our abort (then
        # _running is already False), or by itself when the device failed. Through the
        # ALSA pulse plugin a killed server or an unloaded sink ends the stream this way
        # within a few ms (PortAudio's ALSA thread gets an error polling the device).
        if self._running:
            self.lost_at = time.monotonic()
            self._lost = "its stream stopped"
            self._running = False

    def _callback(self, outdata: np.ndarray, frames: int, time_info, status) -> None:
        now = time.monotonic()
        self._last_callback = now
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
        got = self.fill(outdata[:, 0])
        self.clock.stamp(self._frames, read, got, now + delay, self.ring.read - read)
        self.clock.latency = int(delay * SAMPLE_RATE)
        self._frames += frames

    def start(self) -> None:
        self._last_callback = time.monotonic()
        self._running = True
        try:
            self._stream.start()
        except self._sd.PortAudioError as e:
            self._running = False
            raise AudioDeviceError(
                f"the audio output did not start ({e})", reason="the audio output did not start"
            ) from None

    def pause(self) -> None:
        self.paused = True  # silence from the next callback, even if the abort fails
        if not self._running:
            return
        self._running = False
        try:
            self._stream.abort()  # drops what PortAudio and the device held
        except self._sd.PortAudioError:
            pass
        # The callback has returned for good: the consumer side is ours until resume().
        heard = self.clock.position_at(time.monotonic())
        self.ring.rewind(heard + 1)
        self.clock.restart()

    def resume(self) -> None:
        self.paused = False
        if not self._running and self._lost is None:
            self.start()

    def lost(self) -> str | None:
        if self._lost is None and self._running:
            idle = time.monotonic() - self._last_callback
            if idle > STALL:
                self.lost_at = self._last_callback
                self._lost = f"no audio callback for {idle:.0f} s"
        return self._lost

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._running = False
        try:
            self._stream.abort()
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


OutputFactory = Callable[[AudioRing, PlaybackClock], AudioOutput]
"""Opens an output on the ring and clock (may raise :class:`AudioDeviceError`)."""


@dataclass(frozen=True)
class DeviceLost:
    """The output's device went away (while playing, or when asked to start)."""

    reason: str
    """What went wrong, in a few words."""
    kept: int | None
    """The utterance that was being heard (None before the first), to be read again from
    its start once there is a device."""


@dataclass(frozen=True)
class DeviceUnavailable:
    """A new output could not be opened after the device was lost."""

    reason: str


class Player:
    """The output in use for one ring and clock: starts, pauses and resumes it; when its
    device goes away, closes it, steps the ring back to the first sample not heard and
    drops what came after; on the next start, opens a new one.

    The narrator thread calls :meth:`start`, :meth:`pause` and :meth:`check`; any thread
    may call :meth:`silence` and :meth:`close`. Never called by the audio callback.
    """

    def __init__(self, ring: AudioRing, clock: PlaybackClock, make_output: OutputFactory) -> None:
        self.ring, self.clock = ring, clock
        self._make_output = make_output
        self._device = threading.Lock()
        """Held while the output is paused, resumed, replaced or closed."""
        self.speed = 1.0
        """Listening speed, handed to every output opened."""
        self.volume = 1.0
        self.output = make_output(ring, clock)
        self._started = False
        self._lost = False
        """The output's device went away; the next start opens a new output."""

    @property
    def paused(self) -> bool:
        return self.output.paused

    def set_speed(self, speed: float) -> None:
        """Play at ``speed`` from the next audio block (any thread)."""
        self.speed = speed
        self.output.speed = speed

    def set_volume(self, volume: float) -> None:
        """Play at ``volume`` (0 to 1) from the next audio block (any thread)."""
        self.volume = volume
        self.output.volume = volume

    def silence(self) -> None:
        """Silence from the next audio block, without blocking the caller: a short-lived
        thread stops the stream (dropping what the device still held), which a hung sound
        server could make wait."""
        self.output.paused = True
        threading.Thread(target=self._stop_stream, name="vvreader-pause", daemon=True).start()

    def _stop_stream(self) -> None:
        with self._device:
            if self.output.paused:  # not resumed meanwhile
                self.output.pause()

    def pause(self) -> None:
        with self._device:
            self.output.pause()

    def start(self) -> DeviceLost | DeviceUnavailable | None:
        """Start or resume the output, opening a new one first if the device was lost.
        None when it plays; else why not (a :class:`DeviceLost` when it would not start,
        after which the ring holds only what was heard)."""
        if self._lost:
            try:
                output = self._make_output(self.ring, self.clock)
            except Exception as e:  # AudioDeviceError says what to do
                log.warning("audio device still unavailable: %s", e)
                return DeviceUnavailable(getattr(e, "reason", None) or str(e))
            output.speed, output.volume = self.speed, self.volume
            with self._device:
                self.output = output
                self._started = False
                self._lost = False
        try:
            with self._device:
                if not self._started:
                    self._started = True
                    self.output.paused = False
                    self.output.start()
                else:
                    self.output.resume()
            return None
        except Exception as e:  # AudioDeviceError, or a broken output
            return self._lose(getattr(e, "reason", None) or f"it did not start: {e}", started=False)

    def check(self) -> DeviceLost | None:
        """While playing: if the device stopped by itself, close the output and say so."""
        if self._lost:
            return None
        why = self.output.lost()
        return None if why is None else self._lose(why, started=True)

    def _lose(self, why: str, started: bool) -> DeviceLost:
        """Close the output; the ring keeps only what was heard (everything after the
        utterance being heard is made again on resume)."""
        with self._device:
            output = self.output
            at = getattr(output, "lost_at", None) or time.monotonic()
            heard = self.clock.position_at(at) if started else self.ring.read - 1
            _close_quietly(output)
            # The callback is gone: the ring is ours. What was handed but not heard is
            # dropped.
            self.ring.rewind(heard + 1)
            end = self.ring.truncate(self.ring.read)
            self.clock.drop_after(end)
            self.clock.restart()
            self._lost = True
            return DeviceLost(why, self.clock.utterance_at(max(0, heard)))

    def close(self) -> None:
        with self._device:
            _close_quietly(self.output)


def _close_quietly(output: AudioOutput, timeout: float = 1.0) -> None:
    """Close ``output`` without waiting more than ``timeout`` (a hung sound server can
    block PortAudio's abort) and without letting an error out."""

    def close() -> None:
        try:
            output.close()
        except Exception:
            log.exception("closing the audio output")

    t = threading.Thread(target=close, name="vvreader-output-close", daemon=True)
    t.start()
    t.join(timeout)
