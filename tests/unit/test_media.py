"""Media controls without a platform: what is shown for a place in the plan, and macOS's
Now Playing against stand-ins for its frameworks (it cannot run on Linux)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

from vvreader.media.controls import MediaCommand, NowPlaying, now_playing, playback_status
from vvreader.media.now_playing import COMMANDS, NowPlayingControls
from vvreader.text.plan import build_plan
from vvreader.text.readers import load_document


def test_what_is_shown_for_a_place(tmp_path: Path) -> None:
    doc = tmp_path / "my book.md"
    doc.write_text("Before any heading.\n\n# Chapter *one*\n\nText here.\n")
    plan = build_plan(load_document(str(doc)))
    first = now_playing(plan, 0, "playing", 1.5)
    assert first == NowPlaying("Playing", "my book", "my book", "", 0, 1.5)
    later = now_playing(plan, len(plan) - 1, "paused", 1.0)
    assert later.title == "Chapter *one*" and later.status == "Paused" and later.track == 1
    assert [playback_status(s) for s in ("buffering", "stopped", "finished", "loading")] == [
        "Playing",
        "Stopped",
        "Stopped",
        "Stopped",
    ]


class Target:
    def __init__(self) -> None:
        self.handlers: list = []
        self.enabled = False

    def setEnabled_(self, on: bool) -> None:  # noqa: N802 - Objective-C names
        self.enabled = on

    def addTargetWithHandler_(self, handler) -> None:  # noqa: N802
        self.handlers.append(handler)

    def removeTarget_(self, _target) -> None:  # noqa: N802
        self.handlers.clear()


class InfoCenter:
    def __init__(self) -> None:
        self.info: dict | None = None
        self.state: int | None = None

    def setNowPlayingInfo_(self, info) -> None:  # noqa: N802
        self.info = info

    def setPlaybackState_(self, state: int) -> None:  # noqa: N802
        self.state = state


def frameworks():
    targets = {name: Target() for name, _ in COMMANDS}
    center = SimpleNamespace(**{name: (lambda t=t: t) for name, t in targets.items()})
    info = InfoCenter()
    app = SimpleNamespace(policy=None)
    app.setActivationPolicy_ = lambda p: setattr(app, "policy", p)
    turned = []
    run_loop = SimpleNamespace(runUntilDate_=turned.append)
    fw = SimpleNamespace(
        MediaPlayer=SimpleNamespace(
            MPRemoteCommandCenter=SimpleNamespace(sharedCommandCenter=lambda: center),
            MPNowPlayingInfoCenter=SimpleNamespace(defaultCenter=lambda: info),
            MPMediaItemPropertyTitle="title",
            MPMediaItemPropertyAlbumTitle="album",
            MPMediaItemPropertyArtist="artist",
            MPNowPlayingInfoPropertyPlaybackRate="rate",
        ),
        AppKit=SimpleNamespace(
            NSApplication=SimpleNamespace(sharedApplication=lambda: app),
            NSApplicationActivationPolicyProhibited=2,
        ),
        Foundation=SimpleNamespace(
            NSRunLoop=SimpleNamespace(currentRunLoop=lambda: run_loop),
            NSDate=SimpleNamespace(dateWithTimeIntervalSinceNow_=lambda s: s),
        ),
    )
    return fw, targets, info, app, turned


def test_now_playing_buttons_and_what_it_shows() -> None:
    fw, targets, info, app, turned = frameworks()
    got: list[MediaCommand] = []
    controls = NowPlayingControls(got.append, fw)
    assert asyncio.run(controls.start())
    assert app.policy == 2  # never shows itself
    for name, command in COMMANDS:
        (handler,) = targets[name].handlers
        assert targets[name].enabled and handler(None) == 0
        assert got[-1] is command
    assert [c for c in got] == [c for _, c in COMMANDS]
    controls.show(NowPlaying("Playing", "Chapter 2", "Book", "Ann Author", 2, 1.5))
    assert info.info == {"title": "Chapter 2", "rate": 1.5, "album": "Book", "artist": "Ann Author"}
    assert info.state == 1 and turned == [0.0]  # the run loop was turned over
    controls.show(NowPlaying("Paused", "Chapter 2", "Book", "", 2, 1.5))
    assert info.state == 2 and info.info["rate"] == 0.0 and "artist" not in info.info
    asyncio.run(controls.stop())
    assert info.info is None and not targets["playCommand"].handlers


def test_without_pyobjc_now_playing_is_off() -> None:
    controls = NowPlayingControls(lambda _c: None)  # pyobjc is not installed here
    assert asyncio.run(controls.start()) is False
    controls.show(NowPlaying("Playing", "t"))  # nothing to do, no error
