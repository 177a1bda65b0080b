"""Export file formats, read back by ffprobe (an independent reader): codec, duration,
chapters, tags, cover; hostile titles; full and read-only disks; ffmpeg missing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from engine.api import SAMPLE_RATE
from tests.conftest import REPO
from vvreader.export import ExportError, sndfile
from vvreader.export.formats import (
    FORMATS,
    BookTags,
    Chapter,
    check_ready,
    format_for,
    open_encoder,
)
from vvreader.export.metadata import tag_text
from vvreader.export.pcm import to_pcm16

FFMPEG = shutil.which("ffmpeg")
FFPROBE = shutil.which("ffprobe")
assert FFMPEG and FFPROBE, "ffmpeg and ffprobe are needed: .ci/setup installs them"

# codec as ffprobe names it, and the rate it decodes at (Opus always decodes at 48 kHz)
CODECS = {
    "m4b": ("aac", 24000),
    "m4a": ("aac", 24000),
    "mp3": ("mp3", 24000),
    "opus": ("opus", 48000),
    "ogg": ("vorbis", 24000),
    "flac": ("flac", 24000),
    "wav": ("pcm_s16le", 24000),
}
LOSSY = {"m4b", "m4a", "mp3", "opus", "ogg"}
SECONDS = 12.0
CHAPTERS = [Chapter("Prologue", 0.0, 3.25), Chapter("Ünïcode — 第一章", 3.25, 7.9)]
CHAPTERS.append(Chapter("The End", 7.9, SECONDS))


def voice_like(seconds: float, seed: int = 0) -> np.ndarray:
    """A voiced sound with a moving pitch and syllable-rate loudness, and a little noise."""
    n = int(round(seconds * SAMPLE_RATE))
    t = np.arange(n) / SAMPLE_RATE
    phase = 2 * np.pi * np.cumsum(140 + 30 * np.sin(2 * np.pi * 0.7 * t)) / SAMPLE_RATE
    voiced = sum(np.sin(k * phase) / k for k in range(1, 8))
    audio = 0.2 * voiced * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)) ** 2
    audio += 0.005 * np.random.default_rng(seed).standard_normal(n)
    return audio.astype(np.float32)


def image(tmp: Path, suffix: str) -> bytes:
    """A small real picture written by ffmpeg."""
    out = tmp / f"cover{suffix}"
    subprocess.run(
        [FFMPEG, "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=96x64", "-frames:v", "1"]
        + [str(out)],
        check=True,
    )
    return out.read_bytes()


@pytest.fixture(scope="module")
def covers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    tmp = tmp_path_factory.mktemp("covers")
    return {"image/jpeg": image(tmp, ".jpg"), "image/png": image(tmp, ".png")}


def write(path: Path, audio: np.ndarray, chapters: list[Chapter], tags: BookTags) -> None:
    """Through the encoder in uneven pieces, as synthesis hands them over."""
    encoder = open_encoder(format_for(path), path)
    pieces = [1, 3001, 17000, 24000 * 2 + 7]
    at, n = 0, 0
    while at < len(audio):
        size = pieces[n % len(pieces)]
        encoder.write(audio[at : at + size])
        at, n = at + size, n + 1
    encoder.finish(chapters, tags)


def probe(path: Path) -> dict:
    run = subprocess.run(
        [FFPROBE, "-v", "error", "-show_format", "-show_streams", "-show_chapters"]
        + ["-of", "json", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(run.stdout)


def tags_of(info: dict) -> dict[str, str]:
    """Format and audio stream tags together (Ogg keeps them on the stream), keys lowered."""
    tags = {k.lower(): v for k, v in info["format"].get("tags", {}).items()}
    for stream in info["streams"]:
        if stream["codec_type"] == "audio":
            tags.update({k.lower(): v for k, v in stream.get("tags", {}).items()})
    return tags


def decode(path: Path) -> np.ndarray:
    run = subprocess.run(
        [FFMPEG, "-v", "error", "-i", str(path), "-map", "0:a", "-f", "f32le", "-ac", "1"]
        + ["-ar", str(SAMPLE_RATE), "pipe:1"],
        capture_output=True,
        check=True,
    )
    return np.frombuffer(run.stdout, dtype="<f4")


def rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))


@pytest.mark.parametrize("name", sorted(CODECS))
def test_a_file_reads_back_with_its_chapters_tags_and_cover(tmp_path, covers, name) -> None:
    assert check_ready(FORMATS[f".{name}"]) is None
    audio = voice_like(SECONDS)
    cover = covers["image/png" if name in ("flac", "ogg") else "image/jpeg"]
    mime = "image/png" if name in ("flac", "ogg") else "image/jpeg"
    tags = BookTags("A Book: Part One — Ünï", "Ann Äuthor", "en-GB", cover, mime)
    out = tmp_path / f"book.{name}"
    write(out, audio, CHAPTERS, tags)
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # nothing else left

    info = probe(out)
    audio_streams = [s for s in info["streams"] if s["codec_type"] == "audio"]
    assert len(audio_streams) == 1
    codec, rate = CODECS[name]
    assert audio_streams[0]["codec_name"] == codec
    assert int(audio_streams[0]["sample_rate"]) == rate
    assert audio_streams[0]["channels"] == 1
    duration = float(info["format"]["duration"])
    assert duration == pytest.approx(SECONDS, rel=0.01)

    found = tags_of(info)
    assert found["title"] == "A Book: Part One — Ünï"
    assert found["artist"] == "Ann Äuthor"
    assert found["album"] == "A Book: Part One — Ünï"
    assert found["genre"] == "Audiobook"
    if name in ("m4b", "m4a"):
        assert audio_streams[0]["tags"]["language"] == "eng"
    elif name == "mp3":
        assert found["language"] == "eng"
    elif name != "wav":
        assert found["language"] == "en-GB"

    if name == "wav":  # WAV keeps no chapters or pictures (its VTT says where things are)
        return
    chapters = info["chapters"]
    assert [c["tags"]["title"] for c in chapters] == [c.title for c in CHAPTERS]
    starts = [float(c["start_time"]) for c in chapters]
    ends = [float(c["end_time"]) for c in chapters]
    assert starts == pytest.approx([c.start for c in CHAPTERS], abs=0.002)
    assert starts[0] == 0.0
    assert ends[:-1] == pytest.approx(starts[1:], abs=0.002)  # tiling
    assert ends[-1] == pytest.approx(duration, rel=0.01)

    pictures = [s for s in info["streams"] if s["disposition"].get("attached_pic")]
    assert len(pictures) == 1
    assert (pictures[0]["width"], pictures[0]["height"]) == (96, 64)
    picture = tmp_path / "picture.bin"
    subprocess.run(
        [FFMPEG, "-v", "error", "-i", str(out), "-map", f"0:{pictures[0]['index']}"]
        + ["-c", "copy", "-f", "image2", str(picture)],
        check=True,
    )
    assert picture.read_bytes() == cover


@pytest.mark.parametrize("name", sorted(CODECS))
def test_the_audio_is_what_was_written(tmp_path, name) -> None:
    audio = voice_like(SECONDS, seed=1)
    out = tmp_path / f"book.{name}"
    write(out, audio, [], BookTags())
    decoded = decode(out)
    if name == "wav":  # 16-bit PCM as the export always wrote it
        with wave.open(str(out)) as wav:
            assert (wav.getframerate(), wav.getsampwidth(), wav.getnchannels()) == (
                SAMPLE_RATE,
                2,
                1,
            )
            assert wav.readframes(wav.getnframes()) == to_pcm16(audio)
    elif name == "flac":  # lossless: within a step of 16 bits
        assert len(decoded) == len(audio)
        assert np.max(np.abs(decoded - audio)) <= 2 / 32768
    else:  # lossy: as loud, and no shorter or longer than the encoder's padding
        assert len(decoded) == pytest.approx(len(audio), rel=0.01)
        assert rms(decoded) == pytest.approx(rms(audio), rel=0.15)


def test_speech_bitrates(tmp_path) -> None:
    """Compressed formats at speech rates: small files, not music-sized ones."""
    audio = voice_like(30.0, seed=2)
    rates = {}
    for name in ("m4b", "mp3", "opus", "ogg"):
        out = tmp_path / f"book.{name}"
        write(out, audio, [], BookTags())
        rates[name] = out.stat().st_size * 8 / 30.0 / 1000
    assert 48 < rates["m4b"] < 80, rates
    assert 48 < rates["mp3"] < 80, rates
    assert 24 < rates["opus"] < 48, rates
    assert 24 < rates["ogg"] < 80, rates


@pytest.mark.parametrize("name", sorted(CODECS))
def test_a_chapter_file_names_its_book_and_number(tmp_path, name) -> None:
    """--split-chapters: each file is a track of the book's album."""
    out = tmp_path / f"02 Chapter Two.{name}"
    tags = BookTags("Chapter Two", "Ann Author", "en", album="The Book", track=2, tracks=5)
    write(out, voice_like(3.0), [], tags)
    found = tags_of(probe(out))
    assert (found["title"], found["album"]) == ("Chapter Two", "The Book")
    track = found.get("track") or found.get("tracknumber")
    assert track == ("2" if name == "wav" else "2/5")


HOSTILE_TAGS = BookTags(
    title="-i /etc/passwd\n[CHAPTER]\nTIMEBASE=1/1\nSTART=0\nEND=1\ntitle=evil",
    author="a=b;c#d\\e\x1b[31m\r\nCHAPTER009=00:00:01.000",
    language="en\nfoo=bar",
)
HOSTILE_CHAPTERS = [
    Chapter("-map 0 -f null", 0.0, 4.0),
    Chapter("x\nCHAPTER002=00:00:09.000\nCHAPTER002NAME=evil ; # = \\", 4.0, 8.0),
    Chapter("\u2028\t\x00", 8.0, SECONDS),
]


@pytest.mark.parametrize("name", ["m4b", "mp3", "opus", "flac"])
def test_hostile_titles_are_text_in_their_tags(tmp_path, name) -> None:
    out = tmp_path / f"-book.{name}"
    write(out, voice_like(SECONDS), HOSTILE_CHAPTERS, HOSTILE_TAGS)
    info = probe(out)
    found = tags_of(info)
    assert found["title"] == tag_text(HOSTILE_TAGS.title)
    assert found["title"].startswith("-i /etc/passwd [CHAPTER] TIMEBASE=1/1")
    assert found["artist"] == "a=b;c#d\\e [31m CHAPTER009=00:00:01.000"
    assert "evil" not in found and "foo" not in found
    titles = [c["tags"]["title"] for c in info["chapters"]]
    assert titles == [
        "-map 0 -f null",
        # a space after a final backslash: ffmpeg's metadata reader would take it for a
        # line continuation and make the next line part of this title
        "x CHAPTER002=00:00:09.000 CHAPTER002NAME=evil ; # = \\ ",
        "Chapter 3",  # nothing printable: called by its number
    ]
    assert [float(c["start_time"]) for c in info["chapters"]] == pytest.approx([0, 4, 8])


def test_chapters_tile_whatever_the_seconds_say(tmp_path) -> None:
    """Starts a little off, past the end, out of order: the file's chapters still tile."""
    out = tmp_path / "book.m4b"
    odd = [
        Chapter("a", 0.0004, 5),
        Chapter("b", 6.0, 5.5),
        Chapter("c", 5.5, 99),
        Chapter("d", 99, 100),
    ]
    write(out, voice_like(SECONDS), odd, BookTags("t"))
    chapters = probe(out)["chapters"]
    assert [(float(c["start_time"]), float(c["end_time"])) for c in chapters] == pytest.approx(
        [(0, 6), (6, 6), (6, SECONDS), (SECONDS, SECONDS)], abs=0.002
    )


def test_a_cover_that_is_no_image_is_left_out(tmp_path, caplog) -> None:
    out = tmp_path / "book.m4b"
    write(
        out, voice_like(SECONDS), CHAPTERS, BookTags("t", cover=b"<svg/>", cover_type="image/png")
    )
    info = probe(out)
    assert not [s for s in info["streams"] if s["disposition"].get("attached_pic")]
    assert len(info["chapters"]) == 3
    assert "cover" in caplog.text


@pytest.mark.parametrize("name", ["m4b", "opus", "wav"])
def test_abort_removes_everything(tmp_path, name) -> None:
    out = tmp_path / f"book.{name}"
    encoder = open_encoder(format_for(out), out)
    encoder.write(voice_like(2.0))
    encoder.abort()
    encoder.abort()  # twice is harmless
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", sorted(CODECS))
def test_no_audio_still_makes_a_file(tmp_path, name) -> None:
    """A part with nothing to read (a chapter of notes) is a file, not a failed export."""
    out = tmp_path / f"book.{name}"
    encoder = open_encoder(format_for(out), out)
    encoder.finish([Chapter("Notes", 0.0, 0.0)], BookTags("t"))
    info = probe(out)
    assert float(info["format"].get("duration", 0)) < 0.2
    audio = [s["codec_name"] for s in info["streams"] if s["codec_type"] == "audio"]
    assert audio == [CODECS[name][0]]


def test_a_wav_too_long_says_which_format_to_use(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(sndfile, "WAV_MAX_FRAMES", SAMPLE_RATE * 3)
    out = tmp_path / "book.wav"
    encoder = open_encoder(format_for(out), out)
    encoder.write(voice_like(2.0))
    with pytest.raises(ExportError) as err:
        encoder.write(voice_like(2.0))
    assert "at most 3s" in str(err.value) and ".flac" in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_the_extension_picks_the_format() -> None:
    assert format_for(Path("x/Book.M4B")).name == "m4b"
    assert format_for(Path("b.opus")) == FORMATS[".opus"]
    with pytest.raises(ExportError) as err:
        format_for(Path("book.aiff"))
    assert ".m4b" in str(err.value) and ".wav" in str(err.value) and "\n" not in str(err.value)


# A child process in a mount namespace of its own (user namespace too, so no root is
# needed) writes onto a tiny tmpfs: a real full disk, and a real read-only folder.
CHILD = """
import json, sys
from pathlib import Path
import numpy as np
from vvreader.export import ExportError, sndfile
from vvreader.export.formats import BookTags, Chapter, format_for, open_encoder
out, seconds = Path(sys.argv[1]), float(sys.argv[2])
noise = (0.3 * np.random.default_rng(0).standard_normal(24000)).astype(np.float32)
try:
    encoder = open_encoder(format_for(out), out)
    for _ in range(int(seconds)):
        encoder.write(noise)
    encoder.finish([Chapter("one", 0.0, seconds)], BookTags("t"))
    error = None
except ExportError as e:
    error = str(e)
print(json.dumps({"error": error, "left": sorted(p.name for p in out.parent.iterdir())}))
"""


def on_tiny_disk(tmp_path: Path, file: str, seconds: float, options: str) -> dict:
    folder = tmp_path / "disk"
    folder.mkdir()
    script = 'mount -t tmpfs -o "$1" tmpfs "$2" && exec "$3" -c "$4" "$2/$5" "$6"'
    run = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, "sh", options]
        + [str(folder), sys.executable, CHILD, file, str(seconds)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


@pytest.mark.parametrize(
    ("file", "seconds", "size"),
    [
        ("book.m4b", 20, "64k"),  # full while encoding
        ("book.m4b", 20, "200k"),  # full while adding chapters and tags
        ("book.opus", 30, "64k"),
        ("book.wav", 5, "64k"),
    ],
)
def test_a_full_disk_is_one_line(tmp_path, file, seconds, size) -> None:
    result = on_tiny_disk(tmp_path, file, seconds, f"size={size}")
    error = result["error"]
    assert error is not None and "\n" not in error
    assert "No space left on device" in error or "no space left on the device" in error
    assert "Traceback" not in error
    assert result["left"] == []


@pytest.mark.parametrize("file", ["book.m4b", "book.flac", "book.wav"])
def test_a_read_only_folder_is_one_line(tmp_path, file) -> None:
    result = on_tiny_disk(tmp_path, file, 1, "ro,size=64k")
    assert result["error"] is not None and "\n" not in result["error"]
    assert "cannot write" in result["error"] and "Read-only file system" in result["error"]


def test_a_missing_folder_is_one_line(tmp_path) -> None:
    out = tmp_path / "no such folder" / "book.m4b"
    with pytest.raises(ExportError) as err:
        open_encoder(format_for(out), out)
    assert "No such file or directory" in str(err.value) and "\n" not in str(err.value)


def test_without_ffmpeg_m4b_says_what_to_install_and_the_others_still_work(
    tmp_path, monkeypatch
) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    m4b = FORMATS[".m4b"]
    with pytest.raises(ExportError) as err:
        check_ready(m4b)
    message = str(err.value)
    assert "\n" not in message
    assert "ffmpeg" in message and "sudo apt install ffmpeg" in message
    assert "brew install ffmpeg" in message and "dnf" in message
    with pytest.raises(ExportError):
        open_encoder(m4b, tmp_path / "book.m4b")

    assert check_ready(FORMATS[".wav"]) is None
    audio = voice_like(SECONDS)
    for name in ("mp3", "opus", "ogg", "flac", "wav"):
        note = check_ready(FORMATS[f".{name}"])
        if name != "wav":
            assert note is not None and "\n" not in note and "no chapters" in note
        out = tmp_path / f"book.{name}"
        write(out, audio, CHAPTERS, BookTags("T", "A"))
        info = probe(out)
        stream = next(s for s in info["streams"] if s["codec_type"] == "audio")
        assert stream["codec_name"] == CODECS[name][0]
        assert float(info["format"]["duration"]) == pytest.approx(SECONDS, rel=0.01)
        if name in LOSSY:
            assert rms(decode(out)) == pytest.approx(rms(audio), rel=0.15)
            kbps = out.stat().st_size * 8 / SECONDS / 1000
            assert 24 < kbps < 80, (name, kbps)  # speech rates, as ffmpeg's


def test_an_ffmpeg_without_an_encoder_leaves_that_format_to_libsndfile(
    tmp_path, monkeypatch
) -> None:
    """An ffmpeg built without LAME: MP3 falls back and says so; M4B still uses ffmpeg."""
    folder = tmp_path / "bin"
    folder.mkdir()
    stub = folder / "ffmpeg"
    stub.write_text(
        "#!/bin/sh\n"
        'case " $* " in *" -encoders "*) printf " A..... aac  AAC\\n A..... flac  FLAC\\n";;\n'
        f'*) exec {FFMPEG} "$@";; esac\n'
    )
    stub.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    note = check_ready(FORMATS[".mp3"])
    assert note is not None and "no libmp3lame encoder" in note
    assert check_ready(FORMATS[".m4b"]) is None
    for name in ("mp3", "m4b"):
        out = tmp_path / f"book.{name}"
        write(out, voice_like(SECONDS), CHAPTERS, BookTags("T"))
        assert len(probe(out)["chapters"]) == (0 if name == "mp3" else 3)

    broken = tmp_path / "broken"
    broken.mkdir()
    stub = broken / "ffmpeg"
    stub.write_text("#!/bin/sh\nexit 1\n")
    stub.chmod(0o755)
    monkeypatch.setenv("PATH", str(broken))
    with pytest.raises(ExportError) as err:
        check_ready(FORMATS[".m4b"])
    assert f"{stub} does not run" in str(err.value)
