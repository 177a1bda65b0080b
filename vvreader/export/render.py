"""Render a speech plan to a WAV file with WebVTT subtitles, as fast as the engine goes."""

from __future__ import annotations

import time
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.api import SAMPLE_RATE, SpeechEngine, SynthesisRequest
from vvreader.export.errors import ExportError
from vvreader.export.pcm import to_pcm16
from vvreader.stretch import stretch
from vvreader.text.plan import SpeechPlan


@dataclass(frozen=True)
class Cue:
    """Where one utterance sits in the rendered audio."""

    index: int
    """The utterance's index in the plan."""
    start: float
    """Seconds from the start of the file to its first sample."""
    end: float
    """Seconds to just past its last sample (its pause follows)."""
    text: str
    """What was spoken."""


@dataclass(frozen=True)
class Progress:
    """Reported after each utterance."""

    done: int
    total: int
    audio_seconds: float
    elapsed: float

    @property
    def speed(self) -> float:
        """Seconds of audio made per second of wall time."""
        return self.audio_seconds / self.elapsed if self.elapsed > 0 else 0.0


def vtt_time(seconds: float) -> str:
    ms = int(round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}.{ms:03d}"


def write_vtt(cues: list[Cue], path: Path) -> None:
    lines = ["WEBVTT", ""]
    for n, cue in enumerate(cues, 1):
        text = cue.text.replace("-->", "->").strip() or "…"
        lines += [str(n), f"{vtt_time(cue.start)} --> {vtt_time(cue.end)}", text, ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def export(
    plan: SpeechPlan,
    engine: SpeechEngine,
    out: Path,
    *,
    voice: str = "",
    cfg_scale: float = 1.5,
    steps: int = 5,
    first: int = 0,
    last: int | None = None,
    speed: float = 1.0,
    on_progress: Callable[[Progress], None] | None = None,
) -> list[Cue]:
    """Synthesise utterances ``first..last`` (inclusive) into ``out`` (16-bit mono WAV at
    24 kHz), each followed by its planned pause, and write ``out`` with a ``.vtt``
    suffix beside it. Returns the cues. At a ``speed`` other than 1 each utterance is
    stretched with its pitch kept, and its pause scaled with it, as the reader plays it.

    Raises:
        ExportError: the file cannot be written (the message names it).
    """
    last = len(plan) - 1 if last is None else min(last, len(plan) - 1)
    # A book's notes are read only when asked for from the text, so an export leaves them out.
    chosen = [plan[i] for i in range(max(0, first), last + 1) if not plan[i].note]
    out = Path(out)
    try:
        raw = open(out, "wb")  # noqa: SIM115 - closed with the wave writer below
    except OSError as e:
        raise ExportError(f"{out}: cannot write ({e.strerror or e})") from None
    cues: list[Cue] = []
    written = 0
    t0 = time.perf_counter()
    with raw, wave.open(raw, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(SAMPLE_RATE)
        for n, u in enumerate(chosen, 1):
            start = written
            request = SynthesisRequest(text=u.speak, voice=voice, cfg_scale=cfg_scale, steps=steps)
            if speed == 1.0:
                for chunk in engine.synthesize(request):
                    wav.writeframes(to_pcm16(chunk.audio))
                    written += len(chunk.audio)
            else:
                chunks = [chunk.audio for chunk in engine.synthesize(request)]
                audio = stretch(np.concatenate(chunks) if chunks else np.zeros(0), speed)
                wav.writeframes(to_pcm16(audio))
                written += len(audio)
            cues.append(Cue(u.index, start / SAMPLE_RATE, written / SAMPLE_RATE, u.speak))
            if n < len(chosen):
                silence = int(round(SAMPLE_RATE * u.pause_after / 1000 / speed))
                wav.writeframes(b"\x00\x00" * silence)
                written += silence
            if on_progress is not None:
                on_progress(
                    Progress(n, len(chosen), written / SAMPLE_RATE, time.perf_counter() - t0)
                )
    write_vtt(cues, out.with_suffix(".vtt"))
    return cues
