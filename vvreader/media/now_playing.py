"""Now Playing on macOS: MPRemoteCommandCenter's buttons drive the reader and
MPNowPlayingInfoCenter shows what is read (pyobjc-framework-MediaPlayer, the ``macos``
extra). Without it, silently off.

A terminal process has no Cocoa run loop of its own: it becomes an NSApplication that
never shows itself (the Prohibited activation policy), and the run loop is turned over on
every :meth:`NowPlayingControls.show` (four times a second), so the buttons' handlers run
on the app's thread. Written against Apple's documentation; it cannot run on the Linux
machines the tests run on, so its logic is tested with stand-ins for the frameworks."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

from vvreader.media.controls import CommandHandler, MediaCommand, NowPlaying

log = logging.getLogger("vvreader.now_playing")

COMMANDS = (
    ("playCommand", MediaCommand.PLAY),
    ("pauseCommand", MediaCommand.PAUSE),
    ("togglePlayPauseCommand", MediaCommand.PLAY_PAUSE),
    ("stopCommand", MediaCommand.STOP),
    ("nextTrackCommand", MediaCommand.NEXT),
    ("previousTrackCommand", MediaCommand.PREVIOUS),
)
"""MPRemoteCommandCenter's commands and what they mean here."""
STATES = {"Playing": 1, "Paused": 2, "Stopped": 3}
"""MPNowPlayingPlaybackState values."""
COMMAND_HANDLED = 0
"""MPRemoteCommandHandlerStatusSuccess."""


def load_frameworks() -> Any | None:
    """MediaPlayer, AppKit and Foundation through pyobjc, or None when not installed."""
    try:
        import AppKit
        import Foundation
        import MediaPlayer
    except ImportError:
        return None
    return SimpleNamespace(MediaPlayer=MediaPlayer, AppKit=AppKit, Foundation=Foundation)


def now_playing_info(now: NowPlaying, mp: Any) -> dict[Any, Any]:
    """The MPNowPlayingInfoCenter dictionary for ``now``."""
    info: dict[Any, Any] = {
        mp.MPMediaItemPropertyTitle: now.title,
        mp.MPNowPlayingInfoPropertyPlaybackRate: now.rate if now.status == "Playing" else 0.0,
    }
    if now.album:
        info[mp.MPMediaItemPropertyAlbumTitle] = now.album
    if now.artist:
        info[mp.MPMediaItemPropertyArtist] = now.artist
    return info


class NowPlayingControls:
    """The reader in macOS's Now Playing."""

    def __init__(self, on_command: CommandHandler, frameworks: Any | None = None) -> None:
        self._on_command = on_command
        self._frameworks = frameworks
        self._live: Any | None = None
        self._shown: NowPlaying | None = None

    async def start(self) -> bool:
        fw = self._frameworks or load_frameworks()
        if fw is None:
            log.info("pyobjc-framework-MediaPlayer is not installed: media keys off")
            return False
        app = fw.AppKit.NSApplication.sharedApplication()
        app.setActivationPolicy_(fw.AppKit.NSApplicationActivationPolicyProhibited)
        center = fw.MediaPlayer.MPRemoteCommandCenter.sharedCommandCenter()
        for name, command in COMMANDS:
            target = getattr(center, name)()
            target.setEnabled_(True)
            target.addTargetWithHandler_(self._handler(command))
        self._live = fw
        return True

    def _handler(self, command: MediaCommand):  # noqa: ANN202 - an Objective-C block
        def handle(_event: object) -> int:
            self._on_command(command)
            return COMMAND_HANDLED

        return handle

    def show(self, now: NowPlaying) -> None:
        fw = self._live
        if fw is None:
            return
        if now != self._shown:
            self._shown = now
            center = fw.MediaPlayer.MPNowPlayingInfoCenter.defaultCenter()
            center.setNowPlayingInfo_(now_playing_info(now, fw.MediaPlayer))
            center.setPlaybackState_(STATES.get(now.status, 3))
        run_loop = fw.Foundation.NSRunLoop.currentRunLoop()
        run_loop.runUntilDate_(fw.Foundation.NSDate.dateWithTimeIntervalSinceNow_(0.0))

    async def stop(self) -> None:
        fw, self._live = self._live, None
        if fw is not None:
            center = fw.MediaPlayer.MPRemoteCommandCenter.sharedCommandCenter()
            for name, _ in COMMANDS:
                getattr(center, name)().removeTarget_(None)
            fw.MediaPlayer.MPNowPlayingInfoCenter.defaultCenter().setNowPlayingInfo_(None)
