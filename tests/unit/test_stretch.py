"""Listening speed: WSOLA keeps the pitch and changes the length; played from the ring it
keeps the clock in the utterances' own samples, across a change of speed."""

from __future__ import annotations

import numpy as np
import pytest

from engine.api import SAMPLE_RATE
from vvreader.playback import AudioRing, PlaybackClock
from vvreader.player import BLOCK, NullPlayer
from vvreader.speed import SPEED_RANGE, clamp_speed, step_speed
from vvreader.stretch import stretch


def voiced(seconds: float, seed: int = 0) -> np.ndarray:
    """A voice-like signal: a 130 Hz fundamental with vibrato, harmonics and a little
    noise."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    f0 = 130 + 3 * np.sin(2 * np.pi * 5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    x = sum(np.sin(k * phase) / k for k in range(1, 8))
    noise = np.random.default_rng(seed).normal(0, 0.005, len(t))
    return (0.2 * x + noise).astype(np.float32)


def fundamental(audio: np.ndarray) -> float:
    """The strongest frequency between 60 and 450 Hz."""
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    freqs = np.fft.rfftfreq(len(audio), 1 / SAMPLE_RATE)
    band = (freqs > 60) & (freqs < 450)
    return float(freqs[band][np.argmax(spectrum[band])])


def band_levels(audio: np.ndarray) -> np.ndarray:
    """The spectrum's shape: each of 24 log-spaced bands from 80 Hz to 8 kHz, in dB of
    the total."""
    power = np.abs(np.fft.rfft(audio * np.hanning(len(audio)))) ** 2
    freqs = np.fft.rfftfreq(len(audio), 1 / SAMPLE_RATE)
    edges = np.geomspace(80, 8000, 25)
    levels = np.array(
        [
            power[(freqs >= lo) & (freqs < hi)].mean()
            for lo, hi in zip(edges, edges[1:], strict=False)
        ]
    )
    return 10 * np.log10(levels / levels.sum())


def test_speed_range_and_steps() -> None:
    assert SPEED_RANGE == (0.5, 3.0)
    assert step_speed(1.0, 1) == 1.1 and step_speed(1.0, -1) == 0.9
    assert step_speed(3.0, 1) == 3.0 and step_speed(0.5, -1) == 0.5
    assert clamp_speed(7) == 3.0 and clamp_speed(0.1) == 0.5


def test_at_1x_the_audio_is_unchanged() -> None:
    x = voiced(1.0)
    assert np.array_equal(stretch(x, 1.0), x)


@pytest.mark.parametrize("speed", [0.5, 0.75, 1.5, 2.0, 3.0])
def test_length_scales_and_the_pitch_is_kept(speed: float) -> None:
    x = voiced(4.0)
    y = stretch(x, speed)
    assert abs(len(y) / (len(x) / speed) - 1) < 0.03
    # The fundamental stays where it was and the spectrum keeps its shape; resampling
    # (what a stretch that moved the pitch would do) moves the fundamental by ``speed``.
    resampled = np.interp(np.arange(0, len(x), speed), np.arange(len(x)), x)
    assert abs(fundamental(y) / fundamental(x) - 1) < 0.02
    assert abs(fundamental(resampled) / fundamental(x) - speed) < 0.02 * speed
    assert np.median(np.abs(band_levels(y) - band_levels(x))) < 2.0


def play(player: NullPlayer, speeds: list[float], heard: list[int | None] | None = None):
    """Fill one block per entry of ``speeds`` (at that speed), stamping the clock as the
    null output does, device frame 0 heard at time 0; ``heard`` gets the utterance the
    clock says is heard at every 8th output frame (read as they play, as the screen
    does)."""
    out = np.zeros(BLOCK, np.float32)
    blocks = []
    clock = player.clock
    for k, speed in enumerate(speeds):
        player.speed = speed
        read = player.ring.read
        got = player.fill(out)
        clock.stamp(k * BLOCK, read, got, k * BLOCK / SAMPLE_RATE, player.ring.read - read)
        blocks.append(out.copy())
        if heard is not None:
            for f in range(k * BLOCK, (k + 1) * BLOCK, 8):
                heard.append(clock.utterance_at(clock.position_at(f / SAMPLE_RATE)))
    return np.concatenate(blocks)


@pytest.mark.parametrize("speeds", [[1.5] * 60, [1.5] * 20 + [1.0] * 20 + [2.0] * 30, [0.75] * 100])
def test_the_clock_follows_the_stretched_audio(speeds: list[float]) -> None:
    """Utterances separated by exact silence, as the narrator writes them: the clock's
    utterance changes where the next utterance's sound begins in the output, within a few
    milliseconds, at any speed and across changes of speed."""
    ring = AudioRing(seconds=30)
    clock = PlaybackClock(ring)
    pause = np.zeros(SAMPLE_RATE // 4, np.float32)
    for u in range(4):
        clock.mark(ring.written, u)
        ring.write(voiced(0.5, seed=u))
        ring.write(pause)
    player = NullPlayer(ring, clock)
    heard: list[int | None] = []
    out = play(player, speeds, heard)
    loud = np.flatnonzero(np.abs(out) > 1e-6)
    onsets = [int(loud[0])] + [
        int(b) for a, b in zip(loud[:-1], loud[1:], strict=True) if b - a > 100
    ]
    assert len(onsets) == 4
    for u, onset in enumerate(onsets):
        changed = 8 * heard.index(u)
        assert abs(changed - onset) / SAMPLE_RATE < 0.010, (u, changed, onset)
    # Everything was played: the ring is empty and the output length matches the speeds.
    assert ring.ready == 0


def test_a_change_of_speed_is_heard_from_the_next_block() -> None:
    ring = AudioRing(seconds=30)
    clock = PlaybackClock(ring)
    ring.write(voiced(10.0))
    player = NullPlayer(ring, clock)
    play(player, [1.0] * 10)
    assert ring.read == 10 * BLOCK
    before = ring.read
    play(player, [2.0] * 10)
    assert abs((ring.read - before) / (10 * BLOCK) - 2.0) < 0.1
    before = ring.read
    play(player, [0.5] * 10)
    assert abs((ring.read - before) / (10 * BLOCK) - 0.5) < 0.1


def test_pause_rewinds_and_the_stretch_starts_again_from_there() -> None:
    ring = AudioRing(seconds=30)
    clock = PlaybackClock(ring)
    ring.write(voiced(5.0))
    player = NullPlayer(ring, clock)
    play(player, [1.5] * 10)
    heard = ring.read - 3000
    ring.rewind(heard)
    out = play(player, [1.5] * 4)
    # It goes on from the sample rewound to: the first output samples are those samples.
    assert np.allclose(out[:200], ring.peek(heard, 200), atol=1e-6)
