"""Real audio at 1.5x: vvreader's Narrator and SoundDevicePlayer read a short document
with the tiny model into the PulseAudio null sink, faster than it was made, and change to
2x in the middle of an utterance. The recording must hold one run of speech per
utterance, in order, each as long as the utterance's audio divided by the speed it was
played at; the narrator's clock (which maps the stretched device time back to the
utterances' own samples) must say each utterance when it starts in the recording, within
50 ms, before and after the change.

Utterances are found as in tests/e2e/test_audio_playback.py: the pauses are exact zeros
(the stretcher keeps them so), the speech never is. A run the machine disturbed (late
audio callbacks, a run of speech split or merged) is played again only if the machine was
busy (tests/e2e/machine_load.py); on a quiet machine it fails at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import pytest

from engine.api import SAMPLE_RATE
from tests.audio_server import PulseServer, disturbances
from tests.e2e.machine_load import MachineLoad
from tests.e2e.playthrough import WINDOW, Playthrough, play_and_record, speech_runs
from tests.e2e.test_audio_playback import engine, plan  # noqa: F401 - fixtures
from vvreader.narration.commands import VoiceSettings
from vvreader.narration.narrator import Narrator
from vvreader.player import SoundDevicePlayer

EVENT_TOLERANCE_MS = 50.0
ATTEMPTS = 4
CHANGED = 2
"""The utterance during which the speed goes from 1.5x to 2x."""


class SpeedChange:
    """Sets 2x once utterance :data:`CHANGED` has been audible for 0.3 s; keeps when."""

    def __init__(self) -> None:
        self.seen: float | None = None
        self.at: float | None = None

    def __call__(self, narrator: Narrator) -> None:
        if self.at is not None or narrator.audible() != CHANGED:
            return
        now = time.monotonic()
        if self.seen is None:
            self.seen = now
        elif now - self.seen >= 0.3:
            narrator.set_speed(2.0)
            self.at = now


def onsets(x: np.ndarray, runs: list[tuple[int, int]]) -> list[int]:
    """Each run's first nonzero sample."""
    out = []
    for a, _ in runs:
        lo = max(0, a - WINDOW)
        out.append(lo + int(np.flatnonzero(x[lo : a + WINDOW])[0]))
    return out


def check(pt: Playthrough, change: SpeedChange, n: int) -> tuple[list[str], list[float], str]:
    """What went wrong (empty: nothing), the clock's error per utterance (ms), a report."""
    x = pt.recording.samples
    runs = speech_runs(x)
    problems = disturbances(pt.device_underflows, pt.recording.server_underruns)
    if len(runs) != n:
        problems.append(f"{len(runs)} runs of speech for {n} utterances")
        return problems, [], ""
    starts = onsets(x, runs)
    first_seen: dict[int, float] = {}
    for t, u, _pad, _polled in pt.audible:
        if u is not None and u not in first_seen:
            first_seen[u] = t
    errors = [
        (first_seen[k] - pt.recording.time_of(s)) * 1000 if k in first_seen else float("nan")
        for k, s in enumerate(starts)
    ]
    lines = ["utt  onset_s  run_ms  made_ms  ratio  clock_err_ms"]
    for k, ((a, b), (_, audio)) in enumerate(zip(runs, pt.said, strict=True)):
        made = len(audio) / SAMPLE_RATE * 1000
        run = (b - a) / SAMPLE_RATE * 1000
        lines.append(
            f"{k:>3}  {starts[k] / SAMPLE_RATE:7.3f}  {run:6.0f}  {made:7.0f}  "
            f"{made / run:5.2f}  {errors[k]:12.1f}"
        )
    if change.at is not None:
        into = pt.recording.time_of(starts[CHANGED])
        lines.append(f"speed set to 2x {1000 * (change.at - into):.0f} ms into utterance {CHANGED}")
    return problems, errors, "\n".join(lines)


@pytest.mark.slow
def test_at_1_5x_the_recording_is_the_utterances_faster_and_the_clock_follows_it(
    pulse_server: PulseServer,
    engine,  # noqa: F811
    plan,  # noqa: F811
    audio_retries: Callable[[str], None],
) -> None:
    for attempt in range(1, ATTEMPTS + 1):
        change = SpeedChange()
        with MachineLoad() as load:
            pt = play_and_record(
                plan,
                engine,
                pulse_server,
                settings=VoiceSettings(voice="en-Emma_woman"),
                timeout=90,
                speed=1.5,
                during=change,
            )
        problems, errors, report = check(pt, change, len(plan))
        print(report)
        if not problems:
            break
        cause = f"attempt {attempt} of {ATTEMPTS} disturbed: {'; '.join(problems)}; machine "
        if load.quiet:
            pytest.fail(f"{cause}{load.describe()}: the disturbance is ours\n{report}")
        audio_retries(cause + load.describe())
    else:
        pytest.fail(f"every one of {ATTEMPTS} runs was disturbed by a busy machine")

    assert isinstance(pt.output, SoundDevicePlayer)
    assert [r.text for r, _ in pt.said] == [u.speak for u in plan]
    assert change.at is not None, "utterance 2 was never audible for 0.3 s"
    runs = speech_runs(pt.recording.samples)
    for k, ((a, b), (_, audio)) in enumerate(zip(runs, pt.said, strict=True)):
        ratio = len(audio) / (b - a)
        # Each utterance is as long as it was made, over the speed (the run's ends are
        # found to a 10 ms window); the one during which the speed changed is between.
        if k < CHANGED:
            assert abs(ratio - 1.5) < 0.05 * 1.5 + 0.02 * ratio, (k, ratio, report)
        elif k > CHANGED:
            assert abs(ratio - 2.0) < 0.05 * 2.0 + 0.02 * ratio, (k, ratio, report)
        else:
            assert 1.5 * 0.97 < ratio < 2.0 * 1.03, (k, ratio, report)
    # The clock said each utterance within 50 ms of its start in the recording.
    assert all(abs(e) <= EVENT_TOLERANCE_MS for e in errors), report
