"""Pause and resume through real audio (PortAudio -> ALSA pulse plugin -> PulseAudio null
sink, its monitor recorded): the sound stops within one audio block of ``pause()``, and
resuming goes on from the sample last heard, so that the recording, its silences taken
out, is the utterances' audio: exactly, but for at most SPLICE_MS lost or said twice where
the pause cut in (what the device held is dropped, and the playback clock's estimate of the
sample at the speaker is good to a few milliseconds, not to the sample).

The scripted engine's audio is a different constant in every frame (see tests.fakes), so a
sample dropped or repeated at the pause changes a frame's length, which the comparison
sees. The chain is bit-exact (float32 mono 24 kHz sink at unit volume) while no stream runs
dry inside the sound server; a run in which one did, or in which PortAudio reported a late
callback, proves nothing on a busy machine and is played again (and counted), and fails
on a quiet one."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.api import SynthesisRequest
from tests.audio_server import RATE, MonitorRecorder, PulseServer, disturbances
from tests.e2e.machine_load import MachineLoad
from tests.fakes import FakeEngine, fake_audio
from vvreader.narration.events import Event
from vvreader.narration.narrator import Narrator, State
from vvreader.player import BLOCK, SoundDevicePlayer
from vvreader.text.plan import build_plan
from vvreader.text.readers import load_document

DOC = "Sentence one is short. Sentence two says a little more than that.\n"
BLOCK_MS = 1000 * BLOCK / RATE  # 42.7 ms
ATTEMPTS = 3
SPLICE_MS = 20.0


def runs(audio: np.ndarray) -> list[tuple[float, int]]:
    """``audio`` as (value, length) runs of equal samples: the scripted engine's frames."""
    starts = np.concatenate([[0], np.flatnonzero(np.diff(audio) != 0) + 1])
    ends = np.append(starts[1:], len(audio))
    return [(float(audio[a]), int(b - a)) for a, b in zip(starts, ends, strict=True)]


def splice(heard: np.ndarray, want: np.ndarray) -> float:
    """How many ms of ``want`` are missing from ``heard`` (negative: heard twice), if
    ``heard`` is ``want`` with one such cut; raises, naming the frames that differ, if it
    is not."""
    n = min(len(heard), len(want))
    diff = np.flatnonzero(heard[:n] != want[:n])
    prefix = int(diff[0]) if len(diff) else n
    tail = np.flatnonzero(heard[::-1][:n] != want[::-1][:n])
    suffix = int(tail[0]) if len(tail) else n
    if prefix + suffix < n:
        got, expected = runs(heard), runs(want)
        differ = [
            f"frame {k}: {g[1]} samples of {g[0]:.4f}, want {e[1]} of {e[0]:.4f}"
            for k, (g, e) in enumerate(zip(got, expected, strict=False))
            if g != e
        ]
        raise AssertionError(
            f"not one cut: heard {len(heard)} samples, want {len(want)}, same for the first "
            f"{prefix} and the last {suffix}; {len(got)} frames heard, {len(expected)} "
            f"wanted; {'; '.join(differ[:6])}"
        )
    return 1000 * (len(want) - len(heard)) / RATE


@dataclass
class PauseRun:
    samples: np.ndarray
    """The recording."""
    t_pause: float
    """When pause() was called (``time.monotonic()``, the recording's clock)."""
    stopped: float
    """When the last sound before the pause's silence was heard."""
    resumed: float
    """When the first sound after it was heard."""
    device_underflows: int
    """Callbacks PortAudio reported late."""
    server_underruns: int
    """Times a stream ran dry inside the sound server (the recording may have lost a few
    ms there: see tests.audio_server)."""

    def disturbances(self) -> list[str]:
        """The machine's marks on this run: what makes its recording prove nothing."""
        return disturbances(self.device_underflows, self.server_underruns)


def run_once(plan, server: PulseServer) -> PauseRun:
    """Play, pause in the middle of the second utterance for a second, resume, finish."""
    players: list[SoundDevicePlayer] = []

    def output(ring, clock):
        players.append(SoundDevicePlayer(ring, clock))
        return players[-1]

    recorder = MonitorRecorder(server).start()
    events: list[Event] = []
    n = Narrator(plan, on_event=events.append)
    n.start(FakeEngine(0.0005), output)
    try:
        time.sleep(0.2)
        n.play(0)
        end = time.monotonic() + 20
        while n.audible() != 1:
            assert time.monotonic() < end and not events, events
            time.sleep(0.002)
        time.sleep(0.35)
        t_pause = time.monotonic()
        n.pause()
        assert n.state is State.PAUSED
        time.sleep(1.0)
        n.play()
        while not n.finished:
            assert time.monotonic() < end + 20 and not events, events
            time.sleep(0.02)
        time.sleep(0.5)
    finally:
        n.close()
        rec = recorder.stop()
    sound = np.flatnonzero(rec.samples != 0.0)
    gaps = np.diff(sound)
    longest = int(np.argmax(gaps))
    last_before = rec.time_of(sound[longest] + 1)
    return PauseRun(
        rec.samples,
        t_pause,
        last_before,
        rec.time_of(sound[longest + 1]),
        players[0].device_underflows,
        rec.server_underruns,
    )


def test_pause_is_silent_within_a_block_and_resume_loses_nothing(
    pulse_server, tmp_path: Path, audio_retries
) -> None:
    doc = tmp_path / "d.md"
    doc.write_text(DOC)
    plan = build_plan(load_document(str(doc)))
    want = np.concatenate([fake_audio(SynthesisRequest(text=u.speak)) for u in plan])
    results = []
    for attempt in range(1, ATTEMPTS + 1):
        with MachineLoad() as load:
            run = run_once(plan, pulse_server)
        heard = run.samples[run.samples != 0.0]
        results.append((run.stopped - run.t_pause) * 1000)
        disturbed = run.disturbances()
        print(
            f"pause: sound stopped {results[-1]:.1f} ms after pause(); silence "
            f"{(run.resumed - run.stopped) * 1000:.0f} ms; {'; '.join(disturbed) or 'clean'}"
        )
        if disturbed:  # the audio callback ran late: the machine's doing if it was busy
            cause = (
                f"attempt {attempt} of {ATTEMPTS}: {'; '.join(disturbed)}; "
                f"machine {load.describe()}"
            )
            assert not load.quiet, f"{cause}: the machine was quiet, so they are ours"
            audio_retries(cause)
            continue
        cut = splice(heard, want)
        print(f"resume: {cut:+.1f} ms of audio lost (negative: heard twice) at the pause")
        assert abs(cut) <= SPLICE_MS
        assert (run.resumed - run.stopped) > 0.9  # it stayed paused
        assert results[-1] <= BLOCK_MS, f"sound went on {results[-1]:.1f} ms after pause()"
        return
    raise AssertionError(
        f"every attempt was disturbed by a busy machine (see the warnings): {results}"
    )
