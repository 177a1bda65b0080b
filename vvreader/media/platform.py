"""The media controls of this platform."""

from __future__ import annotations

import sys
from collections.abc import Callable

from vvreader.media.controls import CommandHandler, MediaControls, NoControls


def platform_controls(on_command: CommandHandler, rate: Callable[[float], None]) -> MediaControls:
    """This platform's media controls (MPRIS on Linux, Now Playing on macOS; none
    elsewhere)."""
    if sys.platform == "darwin":
        from vvreader.media.now_playing import NowPlayingControls

        return NowPlayingControls(on_command)
    if sys.platform.startswith("linux"):
        from vvreader.media.mpris import MprisPlayer

        return MprisPlayer(on_command, rate)
    return NoControls()
