"""The real ``vvreader`` command in tmux with the tiny model: the highlight follows the voice,
a voice switch and a CFG change show in the status bar and apply from the next utterance,
and quitting then reopening resumes at the same sentence.

The app runs with ``VVREADER_LOG`` so the test can see what was synthesised (``speak``
lines, with voice and CFG) and what was heard (``audible`` lines), with times."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

TMUX = shutil.which("tmux")
HIGHLIGHT = (0x3B, 0x58, 0x78)  # reading-highlight of themes/dark.toml
SGR = re.compile(r"\x1b\[([0-9;]*)m")

DOC = (
    "# A short book\n\n"
    + "\n\n".join(
        " ".join(
            f"Sentence number {n} of paragraph {p} says a few plain words about the weather."
            for n in range(1, 3)
        )
        for p in range(1, 8)
    )
    + "\n"
)


def highlighted(screen: str, rgb: tuple[int, int, int] = HIGHLIGHT) -> str:
    """The characters drawn on the highlight background, lines joined by spaces."""
    want = ";".join(map(str, rgb))
    out: list[str] = []
    for line in screen.splitlines():
        bg = None
        pos = 0
        chunk = []
        for m in SGR.finditer(line + "\x1b[m"):
            text = line[pos : m.start()]
            if bg == want:
                chunk.append(text)
            pos = m.end()
            params = m.group(1).split(";") if m.group(1) else ["0"]
            i = 0
            while i < len(params):
                p = params[i]
                if p in ("0", ""):
                    bg = None
                elif p == "48" and i + 1 < len(params) and params[i + 1] == "2":
                    bg = ";".join(params[i + 2 : i + 5])
                    i += 4
                elif p == "48" and i + 1 < len(params) and params[i + 1] == "5":
                    bg = "idx" + params[i + 2]
                    i += 2
                elif p == "49":
                    bg = None
                elif p == "38" and i + 1 < len(params):
                    i += 4 if params[i + 1] == "2" else 2
                i += 1
        if chunk:
            out.append("".join(chunk).strip())
    return " ".join(x for x in out if x)


class Tmux:
    def __init__(self, tmp: Path) -> None:
        self.socket = f"vvtest-{os.getpid()}-{time.monotonic_ns()}"
        self.tmp = tmp

    def run(self, *args: str) -> str:
        return subprocess.run(
            [TMUX, "-L", self.socket, "-f", "/dev/null", *args],
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    def start(self, command: str, env: dict[str, str]) -> None:
        exports = " ".join(f"{k}={v}" for k, v in env.items())
        self.run(
            "new-session",
            "-d",
            "-s",
            "main",
            "-x",
            "110",
            "-y",
            "32",
            f"env {exports} {command}; echo VVREADER-EXIT $?; sleep 600",
        )

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", "main", *keys)

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-e", "-t", "main")

    def text(self) -> str:
        return SGR.sub("", self.screen())

    def wait(self, cond, timeout: float = 60.0, what: str = "") -> str:
        end = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if cond(SGR.sub("", screen), screen):
                return screen
            if time.monotonic() > end:
                raise AssertionError(f"timed out waiting for {what}:\n{SGR.sub('', screen)}")
            time.sleep(0.1)

    def quit(self) -> None:
        """q, and the command exits with status 0."""
        self.keys("q")
        self.wait(lambda text, _: "VVREADER-EXIT 0" in text, 15, "exit")

    def kill(self) -> None:
        subprocess.run([TMUX, "-L", self.socket, "kill-server"], capture_output=True)


def status_line(text: str) -> str:
    return next((ln for ln in text.splitlines() if "\u2502 voice " in ln), "")


def position(text: str) -> int | None:
    m = re.search(r"\u2502 (\d+)/(\d+) ", status_line(text))
    return int(m.group(1)) - 1 if m else None


def log_lines(path: Path) -> list[tuple[float, str, str]]:
    out = []
    for line in path.read_text().splitlines():
        t, name, msg = line.split(" ", 2)
        out.append((float(t), name, msg))
    return out


def spoken_with(log: list, index: int, before: float) -> str:
    """The 'speak' line of utterance ``index`` last logged before time ``before``."""
    hits = [m for t, _, m in log if t <= before and m.startswith(f"speak {index} ")]
    assert hits, f"utterance {index} was never synthesised before it was heard"
    return hits[-1]


@pytest.fixture
def tmux(tmp_path: Path):
    assert TMUX, "tmux is missing: .ci/setup installs it (apt install tmux)"
    t = Tmux(tmp_path)
    yield t
    t.kill()


def norm(s: str) -> str:
    return " ".join(s.split())


def reader_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a `vvreader` run in tmux: its own config and state folders."""
    return {
        "TERM": "xterm-256color",
        "COLORTERM": "truecolor",
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        **extra,
    }


def test_reader_in_tmux(tmux: Tmux, tmp_path: Path, tiny_model: Path) -> None:
    doc = tmp_path / "book.md"
    doc.write_text(DOC)
    plan = [
        json.loads(x)
        for x in subprocess.run(
            [sys.executable, "-m", "vvreader", str(doc), "--plan", "--json"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.splitlines()
    ]
    log = tmp_path / "vvreader.log"
    env = reader_env(tmp_path, VVREADER_LOG=str(log))
    command = f"{sys.executable} -m vvreader {doc} --model {tiny_model} --audio-device null"
    tmux.start(command, env)
    tmux.wait(lambda text, _: "playing" in status_line(text), 120, "playing")

    # 1. The highlight follows the voice: it moves through the plan in order, and what is
    #    highlighted is the utterance the status bar (and the clock) says is audible.
    seen: list[int] = []
    end = time.monotonic() + 20
    while time.monotonic() < end and len(seen) < 3:
        screen = tmux.screen()
        index = position(SGR.sub("", screen))
        lit = highlighted(screen)
        if index is not None and lit and (not seen or seen[-1] != index):
            if norm(lit) == norm(plan[index]["text"]):
                seen.append(index)
        time.sleep(0.05)
    assert len(seen) >= 3, f"highlight did not move through three utterances: {seen}"
    assert seen == sorted(seen)

    # 2. A voice switch shows at once and applies from the next utterance.
    assert "voice en-Carter_man" in status_line(tmux.text())
    switched_at = time.time()
    tmux.keys("V")
    tmux.wait(lambda text, _: "voice en-Davis_man" in status_line(text), 5, "the new voice")
    # 3. A CFG change likewise.
    tmux.keys("+")
    tmux.wait(lambda text, _: "CFG 1.6" in status_line(text), 5, "the new CFG")
    changed_at = time.time()
    first = position(tmux.text())
    tmux.wait(lambda text, _: (position(text) or 0) >= (first or 0) + 2, 30, "two more")

    lines = log_lines(log)
    heard = [(t, int(m.split()[1])) for t, _, m in lines if m.startswith("audible ")]
    at_switch = [i for t, i in heard if t <= switched_at][-1]
    after = [(t, i) for t, i in heard if t > changed_at and i > at_switch + 1]
    assert after, "nothing new was heard after the changes"
    for t, i in after[:2]:
        line = spoken_with(lines, i, t)
        assert "voice=en-Davis_man" in line and "cfg=1.6" in line, line
    before_switch = spoken_with(lines, at_switch, switched_at)
    assert "voice=en-Carter_man" in before_switch and "cfg=1.5" in before_switch

    # 4. Quit, reopen: the same sentence, highlighted.
    tmux.keys("space")
    tmux.wait(lambda text, _: "paused" in status_line(text), 5, "paused")
    screen = tmux.screen()
    stopped_at = position(SGR.sub("", screen))
    stopped_text = highlighted(screen)
    assert norm(stopped_text) == norm(plan[stopped_at]["text"])
    tmux.quit()
    tmux.kill()

    again = Tmux(tmp_path)
    try:
        again.start(command + " --paused", env)
        screen = again.wait(lambda text, _: "Resuming at sentence" in text, 120, "reopened")
        said = re.search(r"Resuming at sentence (\d+) of", SGR.sub("", screen))
        assert said and int(said.group(1)) - 1 == stopped_at
        # once the notice is gone, the status bar and the highlight agree
        screen = again.wait(
            lambda text, _: "stopped" in status_line(text) and position(text) is not None,
            30,
            "the status bar",
        )
        assert position(SGR.sub("", screen)) == stopped_at
        assert norm(highlighted(screen)) == norm(plan[stopped_at]["text"])
        again.quit()
    finally:
        again.kill()


def test_first_run_downloads_the_model_inside_the_reader(
    tmux: Tmux, tmp_path: Path, tiny_model: Path
) -> None:
    """`vvreader book.md` with nothing cached: the document shows at once, the download's
    progress moves in the banner (the terminal never freezes), then reading starts."""
    from tests.hub import official_hub

    hub = official_hub(tiny_model, tmp_path / "hub", bytes_per_second=1e6)
    try:
        doc = tmp_path / "book.md"
        doc.write_text(DOC)
        env = reader_env(
            tmp_path,
            XDG_CACHE_HOME=str(tmp_path / "cache"),
            HF_HUB_CACHE=str(tmp_path / "hf"),
            HF_ENDPOINT=hub.url,
            HF_HUB_OFFLINE="0",
        )
        tmux.start(f"{sys.executable} -m vvreader {doc} --audio-device null", env)
        percents: list[int] = []
        end = time.monotonic() + 120
        while time.monotonic() < end:
            text = tmux.text()
            if "playing" in status_line(text):
                break
            m = re.search(
                r"downloading microsoft/VibeVoice-Realtime-0\.5B\u2026 (\d+)% "
                r"\u00b7 model\.safetensors",
                text,
            )
            if m:
                assert "A short book" in text  # the document is there meanwhile
                if not percents or percents[-1] != int(m.group(1)):
                    percents.append(int(m.group(1)))
            time.sleep(0.1)
        assert "playing" in status_line(tmux.text()), tmux.text()
        assert len(percents) >= 3 and percents == sorted(percents), percents
        assert "downloading" not in tmux.text()
        tmux.quit()
    finally:
        hub.close()


def test_the_sound_server_dies_mid_sentence_and_comes_back(
    tmux: Tmux, tmp_path: Path, tiny_model: Path
) -> None:
    """Real `vvreader` on a private PulseAudio server that is killed while it plays: one
    message, the place kept, nothing of PortAudio's or ALSA's complaints on the screen;
    space while the server is down says so again; once it is back, space reads on from
    the start of the sentence that was cut. (The messages cover the right of the status
    bar: the sentence is read from the highlight.)"""
    from tests.audio_server import PulseServer

    server = PulseServer(tmp_path / "pulse").start()
    try:
        doc = tmp_path / "book.md"
        doc.write_text(DOC)
        plan = [
            norm(json.loads(x)["text"])
            for x in subprocess.run(
                [sys.executable, "-m", "vvreader", str(doc), "--plan", "--json"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.splitlines()
        ]

        def lit(screen: str) -> int | None:
            """The highlighted sentence (its start, where a message covers the rest)."""
            text = norm(highlighted(screen))
            hits = [i for i, u in enumerate(plan) if text and u.startswith(text)]
            return hits[0] if len(hits) == 1 else None

        log = tmp_path / "vvreader.log"
        env = reader_env(tmp_path, PULSE_SERVER=server.server, VVREADER_LOG=str(log))
        tmux.start(f"{sys.executable} -m vvreader {doc} --model {tiny_model}", env)
        tmux.wait(
            lambda text, _: "playing" in status_line(text) and (position(text) or 0) >= 2,
            120,
            "playing the third sentence",
        )
        server.crash()
        screen = tmux.wait(
            lambda text, _: "stopped" in status_line(text) and "Audio device" in text,
            10,
            "the message",
        )
        text = SGR.sub("", screen)
        lost_at = lit(screen)
        assert lost_at is not None and lost_at >= 2, text
        assert "The audio device went away" in text
        for noise in ("Expression", "ALSA lib", "PaErrorCode", "Traceback"):
            assert noise not in text, text
        assert "audio device lost" in log.read_text()

        tmux.keys("space")  # no server yet: said again, nothing moves
        end = time.monotonic() + 10
        while "still unavailable" not in log.read_text():
            assert time.monotonic() < end, "no second message"
            time.sleep(0.1)
        time.sleep(0.3)
        screen = tmux.screen()
        assert lit(screen) == lost_at and "stopped" in status_line(SGR.sub("", screen))

        server.start()
        time.sleep(0.5)
        back_at = time.time()
        tmux.keys("space")
        screen = tmux.wait(lambda text, _: "playing" in status_line(text), 15, "playing again")
        assert lit(screen) == lost_at
        tmux.wait(lambda _, screen: (lit(screen) or 0) > lost_at, 30, "the next sentence")
        # The cut sentence was put in the ring again, whole, after the server came back.
        again = [t for t, _, m in log_lines(log) if m.startswith(f"speak {lost_at} ")]
        assert len(again) >= 2 and again[-1] > back_at
        for noise in ("Expression", "ALSA lib", "PaErrorCode", "Traceback"):
            assert noise not in tmux.text()
        tmux.quit()
        diverted = (tmp_path / "state" / "vvreader" / "stderr.log").read_text()
        assert "ALSA lib" in diverted or "Expression" in diverted  # what was kept off screen
    finally:
        server.stop()


def test_offline_with_nothing_cached_says_what_to_do_before_opening(
    tmux: Tmux, tmp_path: Path
) -> None:
    doc = tmp_path / "book.md"
    doc.write_text(DOC)
    env = reader_env(tmp_path, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "hf"))
    tmux.start(f"{sys.executable} -m vvreader {doc}", env)
    text = tmux.wait(lambda text, _: "VVREADER-EXIT" in text, 60, "exit")
    assert "VVREADER-EXIT 2" in text and "Traceback" not in text
    said = norm(text.split("VVREADER-EXIT")[0])
    assert said.startswith(
        "vvreader: cannot get config.json and the weights of microsoft/VibeVoice-Realtime-0.5B"
    ), said
    assert "HF_HUB_OFFLINE" in said and "--model /path/to/folder" in said


def test_a_tokenizer_of_another_model_is_one_message_in_the_reader(
    tmux: Tmux, tmp_path: Path, tiny_model: Path
) -> None:
    from tokenizers import Tokenizer

    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.add_tokens([f"<extra_{i}>" for i in range(40)])
    tok.save(str(folder / "tokenizer.json"))
    vocab = json.loads((folder / "config.json").read_text())["decoder_config"]["vocab_size"]
    doc = tmp_path / "book.md"
    doc.write_text(DOC)
    tmux.start(
        f"{sys.executable} -m vvreader {doc} --model {folder} --audio-device null",
        reader_env(tmp_path),
    )
    tmux.wait(lambda text, _: "Cannot load the model" in text, 120, "the load error")
    text = tmux.text()
    # The notification is the right-hand column, after its border.
    said = norm(" ".join(ln.rsplit("\u258c", 1)[1] for ln in text.splitlines() if "\u258c" in ln))
    assert f"this tokenizer has {vocab + 40} tokens, the model {vocab}" in said, text
    assert "Traceback" not in text
    tmux.quit()
