"""The playback clock from the audio callback's stamps, without a device: interpolation
between callbacks, the device latency, padding and late callbacks. (Beside the real-audio
test that checks it against a recording.)"""

from __future__ import annotations

import numpy as np

from engine.api import SAMPLE_RATE
from vvreader.playback import AudioRing, PlaybackClock

B = 1024
LATENCY = 0.09


def clock_with(ready: int) -> PlaybackClock:
    ring = AudioRing(seconds=10)
    ring.write(np.ones(ready, np.float32))
    clock = PlaybackClock(ring)
    clock.mark(0, 0)
    clock.mark(SAMPLE_RATE, 1)  # utterance 1 starts at 1 s
    return clock


def play_blocks(
    clock: PlaybackClock, n: int, t0: float, frame0: int = 0, late: dict[int, float] | None = None
) -> float:
    """``n`` callbacks of a device that plays frame 0 at ``t0 + LATENCY``. A callback
    ``late`` by some seconds reads the time that much after PortAudio measured the delay
    (CPU load, the GIL), so its estimate of when the block is heard is that much late."""
    out = np.zeros(B, np.float32)
    for k in range(n):
        frame = frame0 + k * B
        read = clock.ring.read
        got = clock.ring.read_into(out)
        heard = t0 + frame / SAMPLE_RATE + LATENCY
        clock.stamp(frame, read, got, heard + (late or {}).get(k, 0.0))
    return t0 + (frame0 + n * B) / SAMPLE_RATE


def test_nothing_is_audible_until_the_latency_has_passed() -> None:
    clock = clock_with(2 * SAMPLE_RATE)
    assert clock.audible() is None  # nothing handed yet
    play_blocks(clock, 3, t0=100.0)
    assert clock.position_at(100.0) == -1
    assert clock.utterance_at(clock.position_at(100.0 + LATENCY - 0.001)) is None
    assert clock.position_at(100.0 + LATENCY + 0.001) == int(0.001 * SAMPLE_RATE)


def test_the_position_moves_between_callbacks_sample_by_sample() -> None:
    clock = clock_with(2 * SAMPLE_RATE)
    play_blocks(clock, 30, t0=0.0)
    for t in np.linspace(0.2, 0.9, 50):
        assert abs(clock.position_at(t + LATENCY) - t * SAMPLE_RATE) <= 1
    # Utterance 1 becomes audible within a sample of 1 s + latency, not a block later.
    play_blocks(clock, 20, t0=0.0, frame0=30 * B)
    assert clock.utterance_at(clock.position_at(1.0 + LATENCY - 1e-4)) == 0
    assert clock.utterance_at(clock.position_at(1.0 + LATENCY + 1e-4)) == 1


def test_padding_holds_the_position_at_the_last_real_sample() -> None:
    clock = clock_with(B + 100)  # the ring runs dry in the second block
    play_blocks(clock, 5, t0=0.0)
    assert abs(clock.position_at(LATENCY + (B + 50) / SAMPLE_RATE) - (B + 50)) <= 1
    for t in (0.1, 0.15, 0.2):
        assert clock.position_at(LATENCY + t) == B + 99


def test_late_callbacks_do_not_hold_the_clock_back() -> None:
    clock = clock_with(2 * SAMPLE_RATE)
    end = play_blocks(clock, 12, t0=0.0, late={9: 0.03, 10: 0.02, 11: 0.01})
    t = end - 0.01 + LATENCY
    assert abs(clock.position_at(t) - (t - LATENCY) * SAMPLE_RATE) <= 1


def test_a_delay_reported_too_short_once_does_not_move_the_clock() -> None:
    clock = clock_with(2 * SAMPLE_RATE)
    end = play_blocks(clock, 12, t0=0.0, late={10: -0.04})
    t = end - 0.01 + LATENCY
    assert abs(clock.position_at(t) - (t - LATENCY) * SAMPLE_RATE) <= 1


def test_a_lasting_change_of_latency_is_followed() -> None:
    clock = clock_with(2 * SAMPLE_RATE)
    # From block 4 on the device is 50 ms later (it ran dry and caught up later).
    end = play_blocks(clock, 20, t0=0.0, late={k: 0.05 for k in range(4, 20)})
    t = end + LATENCY + 0.05 - 0.01
    assert abs(clock.position_at(t) - (t - LATENCY - 0.05) * SAMPLE_RATE) <= 1


def test_without_stamps_it_counts_what_was_handed_minus_the_latency() -> None:
    clock = clock_with(SAMPLE_RATE)
    clock.latency = 100
    assert clock.position == -1 and clock.audible() is None
    clock.ring.read_into(np.zeros(B, np.float32))
    assert clock.position == B - 100 - 1
    assert clock.audible() == 0
