"""The real ``vvreader`` in tmux on an EPUB (a Standard Ebooks book): the contents screen lists
the book's chapters, choosing one reads from there (the status bar names it), and quitting
then reopening resumes there."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from tests.books import DATA, zip_folder
from tests.tui.test_tmux_reader import SGR, Tmux, highlighted, norm, position, reader_env
from tests.tui.test_tmux_reader import tmux as tmux  # noqa: F401 - the fixture

TITLE = "The Adventures of Sherlock Holmes"


def status(text: str) -> str:
    return next((ln for ln in text.splitlines() if "\u2502 voice " in ln), "")


def wide_start(t: Tmux, command: str, env: dict[str, str]) -> None:
    exports = " ".join(f"{k}={v}" for k, v in env.items())
    t.run("new-session", "-d", "-s", "main", "-x", "150", "-y", "36",
          f"env {exports} {command}; echo VVREADER-EXIT $?; sleep 600")  # fmt: skip


def test_epub_contents_choose_quit_resume(tmux: Tmux, tmp_path: Path, tiny_model: Path) -> None:
    book = zip_folder(DATA / "se-sherlock-holmes", tmp_path / "sherlock.epub")
    plan = [json.loads(x) for x in subprocess.run(
        [sys.executable, "-m", "vvreader", str(book), "--plan", "--json"],
        check=True, capture_output=True, text=True).stdout.splitlines()]  # fmt: skip
    league = next(u["index"] for u in plan if u["speak"] == "The Redheaded League.")
    # The test process may carry COLUMNS=80 and LINES=24 (pytest's), which the app would
    # take over the pane's real size.
    env = reader_env(tmp_path, COLUMNS="150", LINES="36")
    command = (
        f"{sys.executable} -m vvreader {book} --model {tiny_model} --audio-device null --paused"
    )
    wide_start(tmux, command, env)
    tmux.wait(
        lambda text, _: TITLE in text and "By Arthur Conan Doyle." in text, 60, "the first page"
    )
    tmux.wait(lambda text, _: "stopped" in status(text), 120, "the model")

    tmux.keys("t")
    screen = tmux.wait(lambda text, _: "Contents of" in text, 10, "the contents screen")
    text = SGR.sub("", screen)
    assert f"Contents of {TITLE} by Arthur Conan Doyle" in text
    listed = [ln.strip(" \u2502\u258a\u258e") for ln in text.splitlines()]
    for chapter in ("Titlepage", "Imprint", "A Scandal in Bohemia", "The Redheaded League"):
        assert any(chapter in ln for ln in listed), (chapter, text)
    for _ in range(6):  # Titlepage, Imprint, A Scandal in Bohemia, I, II, III, the League
        tmux.keys("Down")
    tmux.keys("Enter")
    screen = tmux.wait(
        lambda text, _: position(text) == league and "The Redheaded League" in status(text),
        10,
        "reading from the chosen chapter",
    )
    assert norm(highlighted(screen)) == "The Redheaded League"
    tmux.quit()
    tmux.kill()

    again = Tmux(tmp_path)
    try:
        wide_start(again, command, env)
        screen = again.wait(lambda text, _: "Resuming at sentence" in text, 120, "reopened")
        said = re.search(r"Resuming at sentence (\d+)\b", SGR.sub("", screen))
        assert said and int(said.group(1)) == league + 1
        screen = again.wait(
            lambda text, _: position(text) == league and "The Redheaded League" in status(text),
            30,
            "the status bar at the chapter",
        )
        again.quit()
    finally:
        again.kill()
