"""--export to WAV: the file holds the utterances and their pauses; the VTT says where;
the chapters tile it; a range, a speed and a book's notes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from engine.api import SAMPLE_RATE, AudioChunk, SynthesisRequest
from engine.stream import MLXEngine
from tests.books import make_epub, xhtml
from tests.conftest import REPO
from tests.fakes import FakeEngine
from vvreader.export import export
from vvreader.text.plan import build_plan
from vvreader.text.readers import load_document

DOC = "# Title\n\nFirst sentence here. Second one!\n\n- a list item\n- another\n"


@pytest.fixture(scope="module")
def engine(tiny_model):
    e = MLXEngine(tiny_model)
    e.wait_ready(60)
    yield e
    e.close()


def _plan(tmp_path: Path):
    doc = tmp_path / "doc.md"
    doc.write_text(DOC)
    return build_plan(load_document(str(doc)))


def to_pcm16(audio: np.ndarray) -> bytes:
    """What a 16-bit WAV holds for float samples (an independent rendering of the rule)."""
    return (np.clip(audio, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()


def _vtt_times(path: Path) -> list[tuple[float, float]]:
    def sec(t: str) -> float:
        h, m, s = t.split(":")
        return int(h) * 3600 + int(m) * 60 + float(s)

    return [(sec(a), sec(b)) for a, b in re.findall(r"(\S+) --> (\S+)", path.read_text())]


def test_wav_is_the_utterances_and_their_pauses(tmp_path, engine) -> None:
    plan = _plan(tmp_path)
    assert len(plan) == 5
    out = tmp_path / "out.wav"
    progress = []
    result = export(
        plan,
        engine,
        out,
        voice="en-Grace_woman",
        cfg_scale=2.0,
        steps=3,
        on_progress=progress.append,
    )
    cues = result.cues
    expected = b""
    for i, u in enumerate(plan):
        req = SynthesisRequest(text=u.speak, voice="en-Grace_woman", cfg_scale=2.0, steps=3)
        audio = np.concatenate([c.audio for c in engine.synthesize(req)])
        expected += to_pcm16(audio)
        if i < len(plan) - 1:
            expected += b"\x00\x00" * (SAMPLE_RATE * u.pause_after // 1000)
    with wave.open(str(out)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, SAMPLE_RATE)
        assert w.readframes(w.getnframes()) == expected
    # The subtitles: one cue per utterance, at the right places, with what was said.
    times = _vtt_times(out.with_suffix(".vtt"))
    assert len(times) == len(cues)
    assert np.allclose(times, [(c.start, c.end) for c in cues], atol=0.0006)
    assert cues[0].start == 0 and cues[-1].end == pytest.approx(len(expected) / 2 / SAMPLE_RATE)
    for prev, cue, u in zip(cues, cues[1:], plan, strict=False):
        assert cue.start - prev.end == pytest.approx(u.pause_after / 1000, abs=1 / SAMPLE_RATE)
    assert [c.text for c in cues] == [u.speak for u in plan]
    assert [p.done for p in progress] == [1, 2, 3, 4, 5] and progress[-1].speed > 0
    assert progress[-1].fraction == 1 and progress[-1].audio_seconds == cues[-1].end
    # One chapter, the heading's, from the start to the end; the work folder is gone.
    assert [(c.title, c.start, c.end) for c in result.chapters] == [("Title", 0, cues[-1].end)]
    assert result.files == (out,) and result.subtitles == (out.with_suffix(".vtt"),)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["doc.md", "out.vtt", "out.wav"]


def test_a_range_renders_only_those_utterances(tmp_path, engine) -> None:
    plan = _plan(tmp_path)
    result = export(plan, engine, tmp_path / "part.wav", first=1, last=2)
    assert [c.index for c in result.cues] == [1, 2]
    with wave.open(str(tmp_path / "part.wav")) as w:
        assert w.getnframes() / SAMPLE_RATE == pytest.approx(result.cues[-1].end, abs=1e-4)


def test_a_books_notes_are_left_out(tmp_path) -> None:
    body = (
        '<p>A claim<a epub:type="noteref" href="#n1">1</a> here.</p>'
        '<aside epub:type="footnote" id="n1"><p>The aside note.</p></aside><p>After.</p>'
    )
    book = make_epub(tmp_path / "b.epub", [("a.xhtml", xhtml(body))], toc=[])
    plan = build_plan(load_document(str(book)))
    assert any(u.note for u in plan)
    engine = FakeEngine()
    cues = export(plan, engine, tmp_path / "book.wav").cues
    assert [c.text for c in cues] == ["A claim here.", "After."]
    assert [r.text for r in engine.requests] == ["A claim here.", "After."]


def test_cli_export_and_its_errors(tmp_path, tiny_model) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(DOC)
    # The default model is a Hugging Face repo: offline with an empty cache it cannot come.
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_CACHE": str(tmp_path / "hf"),
        "XDG_CONFIG_HOME": str(tmp_path / "cfg"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }
    run = lambda *a: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "vvreader", str(doc), *a],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    ok = run("--export", str(tmp_path / "o.wav"), "--model", str(tiny_model))
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "o.wav").stat().st_size > 44 and (tmp_path / "o.vtt").is_file()
    for args, message in [
        (
            ("--export", str(tmp_path / "x.wav")),
            "cannot get config.json and the weights of microsoft/VibeVoice-Realtime-0.5B",
        ),
        (("--export", "/nonexistent/x.wav", "--model", str(tiny_model)), "cannot write"),
        (("--export", str(tmp_path / "x.wav"), "--model", str(tmp_path)), "config.json"),
        (
            ("--export", str(tmp_path / "x.wav"), "--model", str(tiny_model), "--voice", "nobody"),
            "unknown voice",
        ),
    ]:
        bad = run(*args)
        assert bad.returncode == 2, (args, bad.stderr)
        assert message in bad.stderr and "Traceback" not in bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr


def _wav(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32767


def _fundamental(audio: np.ndarray) -> float:
    """The strongest frequency between 60 and 450 Hz."""
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    freqs = np.fft.rfftfreq(len(audio), 1 / SAMPLE_RATE)
    band = (freqs > 60) & (freqs < 450)
    return float(freqs[band][np.argmax(spectrum[band])])


class VoicedEngine:
    """Speaks every request as a 140 Hz voice with harmonics (the tiny model's sound is
    noise-like, whose spectrum a resampler barely changes), 20 ms a character."""

    sample_rate = SAMPLE_RATE
    max_batch = 1
    identity = "voiced"

    def synthesize_many(self, requests):
        return [self.synthesize(r) for r in requests]

    def synthesize(self, request: SynthesisRequest):
        t = np.arange(int(0.02 * len(request.text) * SAMPLE_RATE)) / SAMPLE_RATE
        phase = 2 * np.pi * np.cumsum(140 + 3 * np.sin(2 * np.pi * 5 * t)) / SAMPLE_RATE
        audio = (0.1 * sum(np.sin(k * phase) / k for k in range(1, 8))).astype(np.float32)
        return [
            AudioChunk(audio[i : i + 3200], i // 3200, 0, 0) for i in range(0, len(audio), 3200)
        ]

    def voices(self) -> list[str]:
        return [""]

    def close(self) -> None:
        pass


def _band_levels(audio: np.ndarray) -> np.ndarray:
    """Each of 24 log-spaced bands from 80 Hz to 8 kHz, in dB of the total."""
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


def test_export_at_a_speed_is_shorter_or_longer_with_the_spectrum_kept(tmp_path, engine) -> None:
    plan = _plan(tmp_path)
    export(plan, engine, tmp_path / "1x.wav", voice="en-Grace_woman")
    normal = _wav(tmp_path / "1x.wav")
    normal_times = _vtt_times(tmp_path / "1x.vtt")
    for speed in (1.5, 0.75):
        out = tmp_path / f"{speed}x.wav"
        export(plan, engine, out, voice="en-Grace_woman", speed=speed)
        audio = _wav(out)
        # The whole file and every subtitle's time: 1 / speed as long (the pauses too).
        assert abs(len(audio) / (len(normal) / speed) - 1) < 0.03, speed
        times = _vtt_times(out.with_suffix(".vtt"))
        assert len(times) == len(normal_times)
        for (a, b), (a1, b1) in zip(times, normal_times, strict=True):
            assert abs(a - a1 / speed) < 0.03 * a1 / speed + 0.01, (speed, a, a1)
            assert abs(b - b1 / speed) < 0.03 * b1 / speed + 0.01, (speed, b, b1)
        # The spectrum keeps its shape.
        assert np.median(np.abs(_band_levels(audio) - _band_levels(normal))) < 1.5, speed


def test_export_at_a_speed_keeps_the_pitch(tmp_path) -> None:
    plan = _plan(tmp_path)
    export(plan, VoicedEngine(), tmp_path / "1x.wav")
    normal = _wav(tmp_path / "1x.wav")
    assert abs(_fundamental(normal) - 140) < 3
    for speed in (1.5, 0.75):
        export(plan, VoicedEngine(), tmp_path / "s.wav", speed=speed)
        audio = _wav(tmp_path / "s.wav")
        assert abs(len(audio) / (len(normal) / speed) - 1) < 0.03, speed
        assert abs(_fundamental(audio) - 140) < 3, speed
        assert np.median(np.abs(_band_levels(audio) - _band_levels(normal))) < 2.0, speed
        # What a resampler would have made: the pitch moved by ``speed``.
        resampled = np.interp(np.arange(0, len(normal), speed), np.arange(len(normal)), normal)
        assert abs(_fundamental(resampled) - 140 * speed) < 3 * speed
