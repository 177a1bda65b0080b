"""``python -m vvreader FILE --plan [--json]`` in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SAMPLE = Path(__file__).parents[1] / "fixtures" / "sample.md"
ROOT = Path(__file__).parents[2]
KEYS = {"index", "sentence", "kind", "start", "end", "text", "speak"}


def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "vvreader", *args],
        input=stdin,
        capture_output=True,
        cwd=ROOT,
        timeout=60,
    )


def test_json_plan_round_trips():
    res = run(str(SAMPLE), "--plan", "--json")
    assert res.returncode == 0, res.stderr
    text = SAMPLE.read_bytes().decode("utf-8-sig")
    rows = [json.loads(line) for line in res.stdout.decode("utf-8").splitlines()]
    assert len(rows) > 15
    for i, row in enumerate(rows):
        assert KEYS <= row.keys()
        assert row["index"] == i
        assert text[row["start"] : row["end"]] == row["text"]
        assert row["speak"].strip()
    assert [r["sentence"] for r in rows] == sorted(r["sentence"] for r in rows)


def test_plain_plan_and_stdin():
    res = run("-", "--plan", stdin=b"# Hi\n\nOne. Two.\n")
    assert res.returncode == 0
    lines = res.stdout.decode().splitlines()
    assert len(lines) == 3 and lines[0].split()[1] == "heading" and lines[-1].endswith("Two.")


def test_escape_sequences_never_reach_the_terminal(tmp_path):
    path = tmp_path / "esc.md"
    path.write_bytes("Boom \x1b[2J\x1b]0;pwned\x07 \u009b31m [bold red]x[/] \u202eok.\n".encode())
    for extra in ((), ("--json",)):
        res = run(str(path), "--plan", *extra)
        assert res.returncode == 0
        out = res.stdout.decode("utf-8")
        for bad in ("\x1b", "\x07", "\x9b", "\u202e"):
            assert bad not in out
    row = json.loads(res.stdout.decode().splitlines()[0])
    assert "\x1b[2J" in row["text"]  # the source text is kept, escaped in JSON
    assert "[bold red]x[/]" in row["text"] and "\x1b" not in row["speak"]


def test_bad_input_exits_2_with_one_line(tmp_path):
    binary = tmp_path / "b.md"
    binary.write_bytes(bytes(range(256)) * 4)
    for args in ((str(binary), "--plan"), (str(tmp_path / "missing.md"), "--plan")):
        res = run(*args)
        assert res.returncode == 2
        err = res.stderr.decode().strip()
        assert len(err.splitlines()) == 1 and err.startswith("vvreader: ")
        assert "Traceback" not in err


def test_empty_file_prints_nothing(tmp_path):
    path = tmp_path / "e.txt"
    path.write_bytes(b"")
    res = run(str(path), "--plan", "--json")
    assert res.returncode == 0 and res.stdout == b""


def test_reader_without_a_terminal_says_what_to_do():
    res = run(str(SAMPLE))
    assert res.returncode == 2 and b"needs a terminal" in res.stderr
    assert b"--plan" in res.stderr and b"Traceback" not in res.stderr


def test_a_speed_out_of_range_says_the_range(tmp_path):
    res = run(str(SAMPLE), "--export", str(tmp_path / "o.wav"), "--speed", "4")
    err = res.stderr.decode().strip()
    assert res.returncode == 2 and err == "vvreader: --speed 4: give a value from 0.5 to 3.0"
