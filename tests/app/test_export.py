"""--export to WAV: the file holds the utterances and their pauses; the VTT says where;
the chapters tile it; a range, a speed and a book's notes."""

from __future__ import annotations

import json
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


def _plan(tmp_path: Path, text: str = DOC):
    doc = tmp_path / "doc.md"
    doc.write_text(text)
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
        got = w.readframes(w.getnframes())
    # The engine's batches make each utterance's audio within float32 rounding of what it
    # makes alone: a sample moved across a 16-bit step is one step off.
    assert len(got) == len(expected)
    diff = np.abs(np.frombuffer(got, "<i2").astype(np.int32) - np.frombuffer(expected, "<i2"))
    assert diff.max() <= 2 and np.count_nonzero(diff) <= 0.01 * len(diff)
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


# ---------------------------------------------------------------- chapters, formats, split

BOOK = (
    "Words before any heading.\n\n# Title\n\nFirst sentence here. Second one!\n\n"
    "## Part two\n\n- a list item\n- another\n"
)


def _probe(path: Path) -> dict:
    run = subprocess.run(
        ["ffprobe", "-v", "error", "-show_format", "-show_streams", "-show_chapters"]
        + ["-of", "json", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(run.stdout)


def _tags(info: dict) -> dict[str, str]:
    tags = {k.lower(): v for k, v in info["format"].get("tags", {}).items()}
    for stream in info["streams"]:
        tags.update({k.lower(): v for k, v in stream.get("tags", {}).items()})
    return tags


def _decoded(path: Path) -> np.ndarray:
    run = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-f", "s16le", "-ac", "1"]
        + ["-ar", str(SAMPLE_RATE), "pipe:1"],
        capture_output=True,
        check=True,
    )
    return np.frombuffer(run.stdout, dtype="<i2")


def test_chapters_tile_the_file_and_a_player_finds_them(tmp_path, engine) -> None:
    plan = _plan(tmp_path, BOOK)
    result = export(plan, engine, tmp_path / "book.m4b", voice="en-Grace_woman", name="b.md")
    assert [c.title for c in result.chapters] == ["Opening", "Title", "Part two"]
    assert result.chapters[0].start == 0 and result.chapters[-1].end == result.seconds
    for a, b in zip(result.chapters, result.chapters[1:], strict=False):
        assert a.end == b.start
    # Each chapter starts with the first utterance of its part.
    starts = {c.start for c in result.cues}
    assert all(c.start in starts for c in result.chapters)
    assert [c.text for c in result.cues if c.start == result.chapters[2].start] == ["Part two."]
    info = _probe(tmp_path / "book.m4b")
    assert [c["tags"]["title"] for c in info["chapters"]] == ["Opening", "Title", "Part two"]
    for mark, chapter in zip(info["chapters"], result.chapters, strict=True):
        assert float(mark["start_time"]) == pytest.approx(chapter.start, abs=0.002)
        assert float(mark["end_time"]) == pytest.approx(chapter.end, abs=0.002)
    assert float(info["format"]["duration"]) == pytest.approx(result.seconds, rel=0.01)
    assert _tags(info)["title"] == "b"  # a Markdown file: titled by its name
    # No subtitles unless asked for, except with WAV; no work folder left.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["book.m4b", "doc.md"]


def test_split_chapters_are_the_one_file_cut_at_its_chapters(tmp_path, engine) -> None:
    plan = _plan(tmp_path, BOOK.replace("# Title", "# A/B: the \x1b[1mstart"))
    whole = export(plan, engine, tmp_path / "whole.wav", voice="en-Grace_woman")
    split = export(
        plan,
        engine,
        tmp_path / "book.mp3",
        voice="en-Grace_woman",
        split_chapters=True,
        subtitles=True,
        name="My Book.md",
    )
    folder = tmp_path / "book"
    names = ["01 - Opening", "02 - A B the [1mstart", "03 - Part two"]
    assert split.files == tuple(folder / f"{n}.mp3" for n in names)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f"{n}.mp3" for n in names] + [f"{n}.vtt" for n in names]
    )
    assert not (tmp_path / ".book.mp3.vvreader-export").exists()
    assert [c.title for c in split.chapters] == [c.title for c in whole.chapters]
    titles = ["Opening", "A/B: the [1mstart", "Part two"]  # control characters: spaces
    assert [c.title.replace("\x1b", "") for c in split.chapters] == titles
    for n, (path, chapter) in enumerate(zip(split.files, split.chapters, strict=True), 1):
        info = _probe(path)
        tags = _tags(info)
        assert tags["title"] == titles[n - 1]
        assert (tags["album"], tags["track"]) == ("My Book", f"{n}/3")
        length = chapter.end - chapter.start
        assert float(info["format"]["duration"]) == pytest.approx(length, rel=0.01, abs=0.06)
        # Its subtitles count from its own start.
        times = _vtt_times(path.with_suffix(".vtt"))
        assert times[0][0] == 0 and times[-1][1] <= length + 0.001
    # The same audio as the one file, cut: the WAV's samples against the decoded MP3s.
    pcm = _wav(tmp_path / "whole.wav")
    decoded = np.concatenate([_decoded(p) for p in split.files]).astype(np.float32) / 32767
    assert abs(len(decoded) - len(pcm)) < 0.03 * SAMPLE_RATE * len(split.files)
    level = lambda a: float(np.sqrt(np.mean(a**2)))  # noqa: E731
    assert level(decoded) == pytest.approx(level(pcm), rel=0.1)


def test_the_progress_line_on_a_terminal_and_elsewhere() -> None:
    import io

    from vvreader.cli import ExportProgressLine
    from vvreader.export import Progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    def progress(done: int, chapter: int) -> Progress:
        return Progress(
            done=done,
            total=4,
            made=done,
            chars_done=10 * done,
            chars_total=40,
            chars_made=10 * done,
            audio_seconds=3.0 * done,
            made_seconds=3.0 * done,
            elapsed=1.0 * done,
            chapter=f"Part {chapter}",
            chapter_number=chapter,
            chapters=2,
        )

    screen = Terminal()
    line = ExportProgressLine(screen)
    line.REDRAW_EVERY = 0
    for done, chapter in [(1, 1), (2, 1), (3, 2), (4, 2)]:
        line.update(progress(done, chapter))
    line.end()
    drawn = screen.getvalue()
    assert drawn.count("\r") == 4 and drawn.endswith("\n") and drawn.count("\n") == 1
    assert "] 100% · 2/2 Part 2 · 12s of audio · 3.0x real time\x1b[K\n" in drawn
    # Not a terminal: a line when a chapter starts and at the end.
    plain = io.StringIO()
    line = ExportProgressLine(plain)
    for done, chapter in [(1, 1), (2, 1), (3, 2), (4, 2)]:
        line.update(progress(done, chapter))
    line.end()
    assert plain.getvalue().splitlines() == [
        "vvreader: export 25% · 1/2 Part 1 · 3s of audio · 3.0x real time",
        "vvreader: export 75% · 2/2 Part 2 · 9s of audio · 3.0x real time",
        "vvreader: export 100% · 2/2 Part 2 · 12s of audio · 3.0x real time",
    ]
    quiet = Terminal()
    line = ExportProgressLine(quiet, quiet=True)
    line.update(progress(4, 2))
    line.end()
    assert quiet.getvalue() == ""


def test_a_stopped_export_keeps_its_work_for_any_speed(tmp_path) -> None:
    from vvreader.export import ExportStopped

    plan = _plan(tmp_path, BOOK)
    out = tmp_path / "book.wav"

    def stop_after_three(p) -> None:
        if p.done == 3:
            raise KeyboardInterrupt

    with pytest.raises(ExportStopped) as stopped:
        export(plan, FakeEngine(), out, speed=1.5, on_progress=stop_after_three)
    assert (
        stopped.value.kept == 3 and stopped.value.folder == tmp_path / ".book.wav.vvreader-export"
    )
    assert not out.exists() and not out.with_suffix(".vtt").exists()
    # Another speed: the three made are stretched anew, not made again.
    engine = FakeEngine()
    result = export(plan, engine, out, speed=1.0)
    assert result.resumed == 3
    assert [r.text for r in engine.requests] == [u.speak for u in plan][3:]
    # The same audio as an export never stopped.
    export(plan, FakeEngine(), tmp_path / "whole.wav")
    assert out.read_bytes() == (tmp_path / "whole.wav").read_bytes()
    # A changed setting makes everything again.
    engine = FakeEngine()
    export(plan, engine, out, cfg_scale=2.0)
    assert len(engine.requests) == len(plan)
