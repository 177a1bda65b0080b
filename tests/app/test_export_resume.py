"""An export stopped (Ctrl-C) or killed (SIGKILL) leaves no file at the output path, keeps
the utterances made in its work folder, and the same command run again ends with the same
file as an export never stopped; the work folder is gone once the file is complete.

"The same": the same length, subtitles and tags, and samples within the engine's batching
tolerance. The engine makes an utterance's audio alone or in a batch the same within float32
rounding, and which utterances share a batch differs between a run that resumes and one
that never stopped; a sample that rounding moves across a 16-bit step differs by one. The
pipeline itself adds nothing to that: with a deterministic engine a resumed file is the
same byte for byte (tests/app/test_export.py)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO

# Three chapters of short sentences: long enough to be stopped in the middle.
DOC = "\n\n".join(
    f"# Chapter {c}\n\n" + " ".join(f"Sentence {c}.{i} of the book is read." for i in range(1, 7))
    for c in range(1, 4)
)


def _env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "XDG_CONFIG_HOME": str(tmp_path / "cfg"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }


def _command(doc: Path, out: Path, model: Path, *extra: str) -> list[str]:
    return [
        *(sys.executable, "-m", "vvreader", str(doc), "--export", str(out)),
        *("--model", str(model), "--voice", "en-Grace_woman", *extra),
    ]


def _run(doc: Path, out: Path, model: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _command(doc, out, model, *extra),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env=_env(doc.parent),
    )


def _assert_same_wav(got: bytes, want: bytes) -> None:
    """The same WAV but for samples one or two 16-bit steps apart (see above)."""
    assert len(got) == len(want)
    a, b = (np.frombuffer(x[44 : len(x) - (len(x) - 44) % 2], "<i2") for x in (got, want))
    diff = np.abs(a.astype(np.int32) - b)
    assert diff.max() <= 2, diff.max()
    assert np.count_nonzero(diff) <= 0.01 * len(a)


def _work(out: Path) -> Path:
    return out.with_name(f".{out.name}.vvreader-export")


def _stored(out: Path) -> list[Path]:
    return sorted(_work(out).glob("*.audio")) if _work(out).is_dir() else []


@pytest.fixture(scope="module")
def reference(tiny_model, tmp_path_factory) -> tuple[bytes, str, str]:
    """The WAV, VTT and stderr of an export never stopped."""
    folder = tmp_path_factory.mktemp("reference")
    doc = folder / "book.md"
    doc.write_text(DOC)
    done = _run(doc, folder / "book.wav", tiny_model)
    assert done.returncode == 0, done.stderr
    return (folder / "book.wav").read_bytes(), (folder / "book.vtt").read_text(), done.stderr


def _stop_midway(doc: Path, out: Path, model: Path, sig: signal.Signals) -> subprocess.Popen:
    """Start the export and send ``sig`` once the work folder holds three utterances."""
    proc = subprocess.Popen(
        _command(doc, out, model, "-q"),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(doc.parent),
    )
    deadline = time.monotonic() + 300
    while len(_stored(out)) < 3:
        assert proc.poll() is None, f"ended before it could be stopped: {proc.stderr.read()}"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(sig)
    proc.wait(60)
    return proc


def test_progress_lines_and_the_summary(reference) -> None:
    *_, stderr = reference
    lines = stderr.strip().splitlines()
    # Not a terminal: a plain line at each chapter and at the end, then what was written.
    progress = [line for line in lines if line.startswith("vvreader: export ")]
    assert len(progress) >= 4 and progress[0].startswith("vvreader: export ")
    assert [p.split(" · ")[1].split()[0] for p in progress[:3]] == ["1/3", "2/3", "3/3"]
    assert progress[-1].startswith("vvreader: export 100% · 3/3 Chapter 3 · ")
    assert "x real time" in progress[-1]
    assert lines[-1].startswith("wrote ") and "book.wav (" in lines[-1]
    assert lines[-1].endswith("3 chapters) and " + lines[-1].split(" and ")[-1])


def test_ctrl_c_keeps_the_work_and_the_same_command_finishes_it(
    tmp_path, tiny_model, reference
) -> None:
    wav, vtt, _ = reference
    doc, out = tmp_path / "book.md", tmp_path / "book.wav"
    doc.write_text(DOC)
    proc = _stop_midway(doc, out, tiny_model, signal.SIGINT)
    stderr = proc.stderr.read()
    assert proc.returncode == 130, stderr
    kept = _stored(out)
    assert 3 <= len(kept) < 18
    assert stderr.strip().splitlines() == [
        f"vvreader: export stopped; {len(kept)} utterances made are kept in {_work(out)}: "
        "run the same command again to continue"
    ]
    assert not out.exists() and not out.with_suffix(".vtt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".book.wav.vvreader-export", "book.md"]

    again = _run(doc, out, tiny_model)
    assert again.returncode == 0, again.stderr
    assert f"{len(kept)} utterances came from the stopped run" in again.stderr
    _assert_same_wav(out.read_bytes(), wav)
    assert out.with_suffix(".vtt").read_text() == vtt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["book.md", "book.vtt", "book.wav"]


def test_a_killed_export_leaves_no_partial_file_and_resumes_to_the_same_audio(
    tmp_path, tiny_model, reference
) -> None:
    wav, vtt, _ = reference
    doc, out = tmp_path / "book.md", tmp_path / "book.wav"
    doc.write_text(DOC)
    proc = _stop_midway(doc, out, tiny_model, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists() and not out.with_suffix(".vtt").exists()
    kept = _stored(out)
    assert len(kept) >= 3
    # A file cut short (as by a crash while the disk wrote it) is made again, not trusted.
    kept[0].write_bytes(kept[0].read_bytes()[:1000])

    again = _run(doc, out, tiny_model, "-q")
    assert again.returncode == 0, again.stderr
    assert again.stderr == ""  # -q: nothing but errors
    _assert_same_wav(out.read_bytes(), wav)
    assert out.with_suffix(".vtt").read_text() == vtt
    assert not _work(out).exists()


def test_a_changed_setting_does_not_reuse_the_work(tmp_path, tiny_model, reference) -> None:
    wav, *_ = reference
    doc, out = tmp_path / "book.md", tmp_path / "book.wav"
    doc.write_text(DOC)
    proc = _stop_midway(doc, out, tiny_model, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    again = _run(doc, out, tiny_model, "--cfg-scale", "2.5")
    assert again.returncode == 0, again.stderr
    assert "came from the stopped run" not in again.stderr
    assert out.read_bytes() != wav and len(out.read_bytes()) > 44


# In a mount namespace of its own (a user namespace too: no root needed), the export writes
# onto a tmpfs too small for it: a real full disk. Then the disk grows, and the same command
# finishes the export from the utterances kept.
ON_A_SMALL_DISK = """
set -u
mount -t tmpfs -o size=600k tmpfs "$DISK"
export_() { "$PY" -m vvreader "$DOC" --export "$DISK/book.wav" --model "$MODEL" \
    --voice en-Grace_woman -q; }
export_ 2> "$OUT/first.err"; echo $? > "$OUT/first.rc"
ls -A "$DISK" > "$OUT/first.ls"
ls "$DISK/.book.wav.vvreader-export" > "$OUT/kept.ls"
mount -o remount,size=64m "$DISK"
export_ 2> "$OUT/second.err"; echo $? > "$OUT/second.rc"
ls -A "$DISK" > "$OUT/second.ls"
cp "$DISK/book.wav" "$DISK/book.vtt" "$OUT/"
"""


def test_a_full_disk_is_one_line_and_the_work_made_is_kept(tmp_path, tiny_model, reference) -> None:
    wav, vtt, _ = reference
    doc = tmp_path / "book.md"
    doc.write_text(DOC)
    (tmp_path / "disk").mkdir()
    (tmp_path / "out").mkdir()
    env = {
        **_env(tmp_path),
        "PYTHONPATH": str(REPO),
        "DISK": str(tmp_path / "disk"),
        "OUT": str(tmp_path / "out"),
        "PY": sys.executable,
        "DOC": str(doc),
        "MODEL": str(tiny_model),
    }
    run = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", ON_A_SMALL_DISK],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert run.returncode == 0, run.stderr
    out = tmp_path / "out"
    first = (out / "first.err").read_text()
    assert (out / "first.rc").read_text().strip() == "2", first
    kept = [name for name in (out / "kept.ls").read_text().split() if name.endswith(".audio")]
    assert len(kept) >= 1
    assert first.splitlines() == [first.strip()], first  # one line
    assert "Traceback" not in first and "cannot write" in first
    # Whichever filled the disk, the work folder or the file being encoded, says so.
    assert re.search(r"the disk is full|no space left on (the )?device", first, re.IGNORECASE)
    assert first.strip().endswith(
        f"the {len(kept)} utterances made are kept in {tmp_path}/disk/.book.wav.vvreader-export: "
        "run the same command again to continue"
    )
    # Nothing at the output path but the work folder.
    assert (out / "first.ls").read_text().split() == [".book.wav.vvreader-export"]

    assert (out / "second.rc").read_text().strip() == "0", (out / "second.err").read_text()
    assert (out / "second.ls").read_text().split() == ["book.vtt", "book.wav"]
    _assert_same_wav((out / "book.wav").read_bytes(), wav)
    assert (out / "book.vtt").read_text() == vtt


def _probe(path: Path) -> dict:
    run = subprocess.run(
        ["ffprobe", "-v", "error", "-show_format", "-show_chapters", "-of", "json", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(run.stdout)


def _decoded(path: Path) -> np.ndarray:
    run = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-f", "f32le", "-ac", "1", "pipe:1"],
        capture_output=True,
        check=True,
    )
    return np.frombuffer(run.stdout, dtype="<f4")


def test_a_killed_m4b_export_resumes_to_the_same_book(tmp_path, tiny_model) -> None:
    doc = tmp_path / "book.md"
    doc.write_text(DOC)
    whole = _run(doc, tmp_path / "whole.m4b", tiny_model, "-q")
    assert whole.returncode == 0, whole.stderr
    out = tmp_path / "book.m4b"
    proc = _stop_midway(doc, out, tiny_model, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists() and len(_stored(out)) >= 3
    again = _run(doc, out, tiny_model, "-q")
    assert again.returncode == 0, again.stderr
    assert not _work(out).exists()
    # An independent reader finds the same book: duration, chapters, and the decoded audio.
    want, got = _probe(tmp_path / "whole.m4b"), _probe(out)
    assert float(got["format"]["duration"]) == pytest.approx(
        float(want["format"]["duration"]), rel=0.01
    )
    assert [(c["tags"]["title"], c["start_time"]) for c in got["chapters"]] == [
        (c["tags"]["title"], c["start_time"]) for c in want["chapters"]
    ]
    assert [c["tags"]["title"] for c in got["chapters"]] == ["Chapter 1", "Chapter 2", "Chapter 3"]
    a, b = _decoded(tmp_path / "whole.m4b"), _decoded(out)
    assert abs(len(a) - len(b)) <= 2048
    n = min(len(a), len(b))
    a, b = a[:n].astype(np.float64), b[:n].astype(np.float64)
    # The same audio, through a lossy encoder: sentences made in other batches may differ
    # by a 16-bit step in a few samples (the WAV test above holds the samples to that), and
    # AAC's choices then differ: 50 samples of 20 s one step apart decode 6% (RMS) apart at
    # 64 kb/s. So the decoded books are compared as signals: the same sentences in the same
    # places correlate above 0.99 (one sentence out of place or missing falls far below).
    assert float(a @ b) / float(np.sqrt((a @ a) * (b @ b))) >= 0.99
    assert float(np.sqrt(np.mean(b**2))) == pytest.approx(float(np.sqrt(np.mean(a**2))), rel=0.02)
