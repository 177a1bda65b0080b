"""Play a plan through vvreader's real playback stack into the test PulseAudio server and
take the recording apart: where each utterance starts, the silence between them, and when
the narrator's clock said each one became audible. Shared by the end-to-end test and
bench/playback.py.

Finding the utterances: in the ring, pauses are digital silence (exact zeros) and the
chain to the monitor is bit-exact (float32 sink at 24 kHz, unit volumes), while speech,
even the tiny random model's noise-like speech, never has a 10 ms window quieter than
-30 dBFS. So 10 ms windows with RMS above ``SILENCE_RMS`` (-80 dBFS) are speech, and runs
of them should be the utterances, one run each (:func:`speech_runs`; the test counts
them). Each utterance's exact first sample is where the start of its own audio (captured
from the engine) matches the recording, searched after the previous one's onset
(:func:`find`); then the whole utterance is compared with the recording there.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from engine.api import SAMPLE_RATE, AudioChunk, BatchSpeechEngine, SpeechEngine, SynthesisRequest
from tests.audio_server import MonitorRecorder, PulseServer, Recording, disturbances
from vvreader.narration.commands import VoiceSettings
from vvreader.narration.events import Event
from vvreader.narration.narrator import Narrator, State
from vvreader.playback import AudioRing, PlaybackClock
from vvreader.player import AudioOutput, open_output
from vvreader.text.plan import SpeechPlan

WINDOW = SAMPLE_RATE // 100  # 10 ms
SILENCE_RMS = 1e-4
"""-80 dBFS: far below any speech window (the tiny model's quietest is about 0.035) and
far above the exact zeros of a pause."""
POLL = 0.005


class _CapturingStream:
    def __init__(self, owner: CapturingEngine, request: SynthesisRequest, inner) -> None:
        self.owner, self.request, self.inner = owner, request, inner

    def __iter__(self) -> Iterator[AudioChunk]:
        chunks = []
        for chunk in self.inner:
            chunks.append(chunk.audio)
            yield chunk
        if not self.inner.cancelled:
            audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
            self.owner.said.append((self.request, audio))

    def cancel(self) -> None:
        self.inner.cancel()

    @property
    def cancelled(self) -> bool:
        return self.inner.cancelled


class CapturingEngine:
    """A SpeechEngine that passes requests on and keeps the audio of each one that ran to
    its end, in the order they were read to their ends (the narrator reads them in reading
    order, those of a batch too)."""

    def __init__(self, engine: SpeechEngine) -> None:
        self.engine = engine
        self.sample_rate = engine.sample_rate
        # An engine that cannot batch is passed on as one that batches one at a time.
        self.max_batch: int = getattr(engine, "max_batch", 1)
        self.identity: str = getattr(engine, "identity", "")
        self.said: list[tuple[SynthesisRequest, np.ndarray]] = []

    def synthesize(self, request: SynthesisRequest) -> _CapturingStream:
        return _CapturingStream(self, request, self.engine.synthesize(request))

    def synthesize_many(self, requests: Sequence[SynthesisRequest]) -> list[_CapturingStream]:
        assert isinstance(self.engine, BatchSpeechEngine)
        streams = self.engine.synthesize_many(requests)
        return [_CapturingStream(self, r, s) for r, s in zip(requests, streams, strict=True)]

    def voices(self) -> list[str]:
        return self.engine.voices()

    def close(self) -> None:
        self.engine.close()


class Poller:
    """Samples ``narrator.audible()`` and ``narrator.state`` every 5 ms, keeping the
    changes with their ``time.monotonic()``.

    Each audible change is kept as (time, utterance, padded frames so far, time polled).
    The poll time is when the poller saw the change, late by up to its period, and by
    however long a busy machine kept it from running; the first value narrows that down
    to the moment the clock itself says the utterance began: the clock is a function of
    time (``PlaybackClock.position_at``), bisected between the previous poll and this one.
    """

    def __init__(self, narrator: Narrator) -> None:
        self.narrator = narrator
        self.audible: list[tuple[float, int | None, int, float]] = []
        self.states: list[tuple[float, State]] = []
        self.first_handed: float | None = None
        """When the output had first taken audio from the ring."""
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="vvreader-test-audible-poller", daemon=True
        )

    def start(self) -> Poller:
        self._thread.start()
        return self

    def _when(self, u: int | None, lo: float, hi: float) -> float:
        """The earliest time in (lo, hi] at which the clock says ``u``."""
        clock = self.narrator.clock
        for _ in range(16):
            mid = (lo + hi) / 2
            if clock.utterance_at(clock.position_at(mid)) == u:
                hi = mid
            else:
                lo = mid
        return hi

    def _run(self) -> None:
        last_u: object = object()
        last_s: object = object()
        prev = time.monotonic()
        while not self._stop.is_set():
            before = time.monotonic()
            u, s = self.narrator.audible(), self.narrator.state
            now = time.monotonic()
            if self.first_handed is None and self.narrator.ring.read > 0:
                self.first_handed = now
            if u != last_u:
                padded = getattr(self.narrator.output, "padded", 0)
                self.audible.append((self._when(u, prev, now), u, padded, now))
                last_u = u
            prev = before
            if s != last_s:
                self.states.append((now, s))
                last_s = s
            time.sleep(POLL)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)


@dataclass
class Playthrough:
    recording: Recording
    t_play: float
    """``time.monotonic()`` just before ``narrator.play()``."""
    audible: list[tuple[float, int | None, int, float]]
    states: list[tuple[float, State]]
    said: list[tuple[SynthesisRequest, np.ndarray]]
    output: AudioOutput
    latency_ms: float
    """The device latency the clock last measured."""
    speed: float | None
    """The narrator's measured synthesis speed (x real time)."""
    first_handed: float | None
    """When the output first took audio from the ring (by the 5 ms poller)."""
    device_underflows: int
    """Callbacks PortAudio reported late (the device played silence the ring never saw)."""


def play_and_record(
    plan: SpeechPlan,
    engine: SpeechEngine,
    server: PulseServer,
    settings: VoiceSettings | None = None,
    lookahead: float = 20.0,
    timeout: float = 120.0,
    device: str | None = None,
    speed: float = 1.0,
    during: Callable[[Narrator], None] | None = None,
    batch: int = 4,
) -> Playthrough:
    """Read ``plan`` with a Narrator on ``open_output(device)`` (the default: the test
    server's null sink) at listening ``speed`` while its monitor is recorded; returns once
    all is played. ``during`` is called with the narrator every 20 ms while it reads;
    ``batch`` is the narrator's (the most utterances synthesised together)."""
    capture = CapturingEngine(engine)
    outputs: list[AudioOutput] = []

    def make_output(ring: AudioRing, clock: PlaybackClock) -> AudioOutput:
        outputs.append(open_output(device, ring, clock))
        return outputs[-1]

    recorder = MonitorRecorder(server).start()
    narrator: Narrator | None = None
    poller: Poller | None = None
    events: list[Event] = []
    try:
        time.sleep(0.2)  # some silence before: the first onset is clearly inside
        narrator = Narrator(
            plan,
            settings=settings,
            lookahead=lookahead,
            on_event=events.append,
            speed=speed,
            batch=batch,
        )
        narrator.start(capture, make_output)
        poller = Poller(narrator).start()
        time.sleep(0.05)
        t_play = time.monotonic()
        narrator.play()
        end = t_play + timeout
        while not narrator.finished:
            if time.monotonic() > end:
                raise TimeoutError(
                    f"not finished after {timeout:.0f} s (state {narrator.state}, events {events})"
                )
            if events:
                raise RuntimeError(f"narration failed: {events}")
            if during is not None:
                during(narrator)
            time.sleep(0.02)
        time.sleep(0.5)  # what the device still holds plays out
    finally:
        if poller is not None:
            poller.stop()
        if narrator is not None:
            narrator.close()
        recording = recorder.stop()
    assert narrator is not None and poller is not None
    return Playthrough(
        recording,
        t_play,
        poller.audible,
        poller.states,
        capture.said,
        outputs[0],
        narrator.clock.latency * 1000 / SAMPLE_RATE,
        narrator.speed,
        poller.first_handed,
        getattr(outputs[0], "device_underflows", 0),
    )


def blas_threads(n: int | None = None) -> int | None:
    """OpenBLAS's thread count when the engine uses scipy-openblas32 (None otherwise);
    with ``n``, set it first. OpenBLAS starts one thread per core, which busy-wait
    between calls: on a 2-core machine they starve the audio callback while the engine
    synthesizes (see bench/playback.py --blas-threads)."""
    from engine.backend import blas_in_use

    if not blas_in_use().startswith("openblas"):
        return None
    import ctypes
    import os

    import scipy_openblas32

    lib = ctypes.CDLL(
        os.path.join(scipy_openblas32.get_lib_dir(), f"lib{scipy_openblas32.get_library()}.so")
    )
    if n is not None:
        lib.scipy_openblas_set_num_threads(int(n))
    return int(lib.scipy_openblas_get_num_threads())


def speech_runs(samples: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) samples of the runs of 10 ms windows louder than ``SILENCE_RMS``."""
    n = len(samples) // WINDOW
    rms = np.sqrt(np.mean(samples[: n * WINDOW].reshape(n, WINDOW).astype(np.float64) ** 2, axis=1))
    loud = np.concatenate([[False], rms > SILENCE_RMS, [False]])
    edges = np.flatnonzero(np.diff(loud.astype(np.int8)))
    return [
        (int(a) * WINDOW, int(b) * WINDOW) for a, b in zip(edges[::2], edges[1::2], strict=True)
    ]


def _best(samples: np.ndarray, probe: np.ndarray, start: int) -> tuple[int, float]:
    """Where ``probe`` differs least from ``samples[start:]`` (sum of squared differences,
    through FFT correlation), and that difference relative to the probe's energy."""
    probe = probe.astype(np.float64)
    seg = samples[start:].astype(np.float64)
    m = len(seg) - len(probe) + 1
    energy = float(probe @ probe)
    if m <= 0 or not energy:
        return start, float("inf")
    size = 1 << int(np.ceil(np.log2(len(seg) + len(probe))))
    corr = np.fft.irfft(np.fft.rfft(seg, size) * np.conj(np.fft.rfft(probe, size)), size)[:m]
    power = np.concatenate([[0.0], np.cumsum(seg * seg)])
    ssd = power[len(probe) : len(probe) + m] - power[:m] - 2 * corr + energy
    k = int(np.argmin(ssd))
    return start + k, max(float(ssd[k]), 0.0) / energy


def find(samples: np.ndarray, audio: np.ndarray, start: int) -> int:
    """Where ``audio`` begins in ``samples`` at or after ``start``. The chain is bit-exact,
    so a 100 ms stretch of the utterance appears unchanged in the recording: its start,
    or if silence was inserted there (a disturbed run), its middle or its end (then the
    onset found is off by that silence, and the utterance is reported not whole)."""
    probe = SAMPLE_RATE // 10
    offsets = [0, max(0, len(audio) // 2 - probe // 2), max(0, len(audio) - probe)]
    found = []
    for off in offsets:
        at, err = _best(samples, audio[off : off + probe], start + off)
        if err < 1e-9:
            return max(start, at - off)
        found.append((err, max(start, at - off)))
    return min(found)[1]


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Normalised correlation of two equal-length signals (1.0: identical up to scale)."""
    if len(a) != len(b) or not len(a):
        return 0.0
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    den = float(np.sqrt(np.dot(a64, a64) * np.dot(b64, b64)))
    return float(np.dot(a64, b64) / den) if den else 0.0


@dataclass
class Analysis:
    runs: list[tuple[int, int]]
    """Speech runs found in the recording."""
    onsets: list[int] = field(default_factory=list)
    """Exact first sample of each utterance in the recording (in plan order)."""
    lengths: list[int] = field(default_factory=list)
    similarity: list[float] = field(default_factory=list)
    """Each utterance's audio against the recording at its onset."""
    max_abs_diff: list[float] = field(default_factory=list)
    gaps_ms: list[float] = field(default_factory=list)
    """Silence from each utterance's end to the next one's start."""
    planned_ms: list[int] = field(default_factory=list)
    """The plan's pause after each utterance (but the last)."""
    padded_ms: list[float] = field(default_factory=list)
    """Silence the player padded (the ring ran dry: the narrator was buffering) between
    each utterance's start and the next one's, by the output's own count."""
    events: list[int | None] = field(default_factory=list)
    """The distinct values audible() took, in order."""
    event_error_ms: list[float] = field(default_factory=list)
    """For each utterance: when the clock began to say it (audible()) minus when it began
    in the recording."""
    event_error_polled_ms: list[float] = field(default_factory=list)
    """The same with the time the poller saw the change (later by the poller's delay)."""
    first_sound_ms: float = float("nan")
    """play() to the first sample of speech in the recording."""
    first_handed_ms: float = float("nan")
    """play() to the output's first taking audio from the ring (synthesis of the first
    chunks and the stream's start; the rest of first_sound_ms is the device's latency)."""
    buffering_ms: list[float] = field(default_factory=list)
    """Stretches the narrator spent in BUFFERING after the first sound."""
    content_ok: bool = False
    """The recording's sound, silence left out, is exactly the utterances' sound in order
    (nothing missing, repeated, reordered or altered, wherever silence was inserted)."""
    content_detail: str = ""
    """What differs, when not ``content_ok``."""
    sound_outside: int = 0
    """Nonzero samples in the recording outside the utterances found."""
    device_underflows: int = 0
    server_underruns: int = 0
    """Times a stream ran dry inside the sound server (see tests.audio_server)."""

    @property
    def extra_gap_ms(self) -> list[float]:
        """Silence between utterances beyond the planned pause."""
        return [g - p for g, p in zip(self.gaps_ms, self.planned_ms, strict=True)]

    @property
    def unexplained_gap_ms(self) -> list[float]:
        """Extra silence that is neither the plan's pause nor the player's padding."""
        return [e - p for e, p in zip(self.extra_gap_ms, self.padded_ms, strict=True)]

    def disturbances(self, tolerance_ms: float = 5.0) -> list[str]:
        """What in this run looks like the machine rather than vvreader's logic: late
        audio callbacks, silence inside an utterance (the device, or the engine stalling
        after the narrator began streaming the utterance), silence between utterances that
        the player did not produce, sound where there should be none (the audio path
        playing something twice), samples lost or changed without any of those. Empty for a
        clean run; a fault of vvreader's that shows here shows in every run."""
        out = disturbances(self.device_underflows, self.server_underruns)
        out += [
            f"utterance {k} is not whole in the recording (silence inside it?)"
            for k, m in enumerate(self.similarity)
            if m < 0.999
        ]
        out += [
            f"{u:.1f} ms of silence after utterance {k} not padded by the player"
            for k, u in enumerate(self.unexplained_gap_ms)
            if u > tolerance_ms
        ]
        if self.sound_outside:
            out.append(f"{self.sound_outside} samples of sound outside the utterances")
        if not self.content_ok and not out:
            # Samples lost or changed where every utterance still matches its audio and
            # no gap shows: a callback or the recorder falling behind for a moment.
            out.append(f"samples lost or changed: {self.content_detail}")
        return out


def analyse(pt: Playthrough, plan: SpeechPlan) -> Analysis:
    rec = pt.recording
    x = rec.samples
    runs = speech_runs(x)
    out = Analysis(runs)
    audios = [a for _, a in pt.said]
    for k, audio in enumerate(audios):
        onset = find(x, audio, out.onsets[-1] + 1 if k else 0)
        seg = x[onset : onset + len(audio)]
        out.onsets.append(onset)
        out.lengths.append(len(audio))
        out.similarity.append(similarity(seg, audio) if len(seg) == len(audio) else 0.0)
        out.max_abs_diff.append(
            float(np.max(np.abs(seg - audio))) if len(seg) == len(audio) else float("inf")
        )
    for k in range(len(audios) - 1):
        end = out.onsets[k] + out.lengths[k]
        out.gaps_ms.append((out.onsets[k + 1] - end) * 1000 / SAMPLE_RATE)
        out.planned_ms.append(plan[k].pause_after)
    seen: dict[int, float] = {}
    polled: dict[int, float] = {}
    padded: dict[int, int] = {}
    for t, u, pad, t_polled in pt.audible:
        if not out.events or out.events[-1] != u:
            out.events.append(u)
        if u is not None and u not in seen:
            seen[u], padded[u], polled[u] = t, pad, t_polled
    for k in range(len(audios) - 1):
        if k in padded and k + 1 in padded:
            out.padded_ms.append((padded[k + 1] - padded[k]) * 1000 / SAMPLE_RATE)
        else:
            out.padded_ms.append(float("nan"))
    for k, onset in enumerate(out.onsets):
        t, tp = seen.get(k), polled.get(k)
        out.event_error_ms.append(
            (t - rec.time_of(onset)) * 1000 if t is not None else float("nan")
        )
        out.event_error_polled_ms.append(
            (tp - rec.time_of(onset)) * 1000 if tp is not None else float("nan")
        )
    out.device_underflows = pt.device_underflows
    out.server_underruns = rec.server_underruns
    if audios:
        heard = x[out.onsets[0] : out.onsets[-1] + len(audios[-1]) + SAMPLE_RATE]
        said = np.concatenate(audios)
        heard, said = heard[heard != 0], said[said != 0]
        out.content_ok = len(heard) == len(said) and bool(np.all(heard == said))
        rest = x.copy()
        for o, n in zip(out.onsets, out.lengths, strict=True):
            rest[o : o + n] = 0
        extra = np.flatnonzero(rest)
        out.sound_outside = len(extra)
        if not out.content_ok:
            out.content_detail = (
                f"{len(heard)} nonzero samples heard, {len(said)} said; "
                f"{len(extra)} nonzero outside the utterances"
                + (
                    f" (first at {extra[0] / SAMPLE_RATE:.3f} s, last at "
                    f"{extra[-1] / SAMPLE_RATE:.3f} s, max {np.abs(rest).max():.3g})"
                    if len(extra)
                    else ""
                )
            )
    if out.onsets:
        first = rec.time_of(out.onsets[0])
        out.first_sound_ms = (first - pt.t_play) * 1000
        if pt.first_handed is not None:
            out.first_handed_ms = (pt.first_handed - pt.t_play) * 1000
        since: float | None = None
        for t, s in pt.states:
            if since is not None:
                out.buffering_ms.append((t - since) * 1000)
                since = None
            if s is State.BUFFERING and t > first:
                since = t
    return out


def table(rows: list[tuple[str, ...]]) -> str:
    """Left-aligned columns."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def describe(a: Analysis, plan: SpeechPlan, text: Callable[[int], str] | None = None) -> str:
    """One line per utterance: onset, length, gap against the plan, event error."""
    rows = [
        (
            "#",
            "onset s",
            "length s",
            "gap ms",
            "planned",
            "padded",
            "event err ms",
            "(polled)",
            "match",
            "text",
        )
    ]
    for k, onset in enumerate(a.onsets):
        last = k >= len(a.gaps_ms)
        rows.append(
            (
                str(k),
                f"{onset / SAMPLE_RATE:.3f}",
                f"{a.lengths[k] / SAMPLE_RATE:.2f}",
                "-" if last else f"{a.gaps_ms[k]:.1f}",
                "-" if last else str(a.planned_ms[k]),
                "-" if last else f"{a.padded_ms[k]:.1f}",
                f"{a.event_error_ms[k]:+.1f}",
                f"{a.event_error_polled_ms[k]:+.1f}",
                f"{a.similarity[k]:.4f}",
                (text(k) if text else plan[k].speak)[:40],
            )
        )
    return table(rows)
