"""MPRIS on the session bus (Linux): headset buttons, keyboard media keys and desktop widgets
drive the reader. dbus-fast (MIT) runs it in the app's asyncio loop; without a session bus
it is silently off.

No ``from __future__ import annotations`` here: dbus-fast reads the D-Bus signatures from
the annotations themselves (``-> "s"``)."""

import logging
import os

from dbus_fast import BusType, NameFlag, RequestNameReply, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.service import PropertyAccess, ServiceInterface, dbus_property, method

from vvreader.media.controls import CommandHandler, MediaCommand, NowPlaying
from vvreader.speed import SPEED_RANGE, clamp_speed

log = logging.getLogger("vvreader.mpris")

BUS_NAME = "org.mpris.MediaPlayer2.vvreader"
OBJECT_PATH = "/org/mpris/MediaPlayer2"


class _Root(ServiceInterface):
    """org.mpris.MediaPlayer2: who we are."""

    def __init__(self) -> None:
        super().__init__("org.mpris.MediaPlayer2")

    @method()
    def Raise(self) -> None:
        pass

    @method()
    def Quit(self) -> None:
        pass

    @dbus_property(access=PropertyAccess.READ)
    def CanQuit(self) -> "b":  # noqa: F821
        return False

    @dbus_property(access=PropertyAccess.READ)
    def CanRaise(self) -> "b":  # noqa: F821
        return False

    @dbus_property(access=PropertyAccess.READ)
    def HasTrackList(self) -> "b":  # noqa: F821
        return False

    @dbus_property(access=PropertyAccess.READ)
    def Identity(self) -> "s":  # noqa: F821
        return "vvreader"

    @dbus_property(access=PropertyAccess.READ)
    def SupportedUriSchemes(self) -> "as":  # noqa: F722
        return []

    @dbus_property(access=PropertyAccess.READ)
    def SupportedMimeTypes(self) -> "as":  # noqa: F722
        return []


class _Player(ServiceInterface):
    """org.mpris.MediaPlayer2.Player: the buttons and what is read. Next and Previous move
    by sentence."""

    def __init__(self, on_command: CommandHandler, on_rate) -> None:
        super().__init__("org.mpris.MediaPlayer2.Player")
        self._on_command, self._on_rate = on_command, on_rate
        self.now = NowPlaying("Stopped", "vvreader")

    def show(self, now: NowPlaying) -> None:
        old, self.now = self.now, now
        changed = {}
        if now.status != old.status:
            changed["PlaybackStatus"] = now.status
        if (now.title, now.album, now.artist, now.track) != (
            old.title,
            old.album,
            old.artist,
            old.track,
        ):
            changed["Metadata"] = self._metadata()
        if now.rate != old.rate:
            changed["Rate"] = now.rate
        if changed:
            self.emit_properties_changed(changed)

    def _metadata(self) -> dict:
        now = self.now
        data = {
            "mpris:trackid": Variant("o", f"/org/vvreader/section/{now.track}"),
            "xesam:title": Variant("s", now.title),
        }
        if now.album:
            data["xesam:album"] = Variant("s", now.album)
        if now.artist:
            data["xesam:artist"] = Variant("as", [now.artist])
        return data

    @method()
    def Play(self) -> None:
        self._on_command(MediaCommand.PLAY)

    @method()
    def Pause(self) -> None:
        self._on_command(MediaCommand.PAUSE)

    @method()
    def PlayPause(self) -> None:
        self._on_command(MediaCommand.PLAY_PAUSE)

    @method()
    def Stop(self) -> None:
        self._on_command(MediaCommand.STOP)

    @method()
    def Next(self) -> None:
        self._on_command(MediaCommand.NEXT)

    @method()
    def Previous(self) -> None:
        self._on_command(MediaCommand.PREVIOUS)

    @method()
    def Seek(self, offset: "x") -> None:  # noqa: F821
        pass

    @method()
    def SetPosition(self, track: "o", position: "x") -> None:  # noqa: F821
        pass

    @method()
    def OpenUri(self, uri: "s") -> None:  # noqa: F821
        pass

    @dbus_property(access=PropertyAccess.READ)
    def PlaybackStatus(self) -> "s":  # noqa: F821
        return self.now.status

    @dbus_property(access=PropertyAccess.READ)
    def Metadata(self) -> "a{sv}":  # noqa: F722
        return self._metadata()

    @dbus_property()
    def Rate(self) -> "d":  # noqa: F821
        return self.now.rate

    @Rate.setter
    def Rate(self, rate: "d") -> None:  # noqa: F821
        if rate > 0:
            self._on_rate(clamp_speed(rate))

    @dbus_property(access=PropertyAccess.READ)
    def MinimumRate(self) -> "d":  # noqa: F821
        return SPEED_RANGE[0]

    @dbus_property(access=PropertyAccess.READ)
    def MaximumRate(self) -> "d":  # noqa: F821
        return SPEED_RANGE[1]

    @dbus_property(access=PropertyAccess.READ)
    def Volume(self) -> "d":  # noqa: F821
        return 1.0

    @dbus_property(access=PropertyAccess.READ)
    def Position(self) -> "x":  # noqa: F821
        return 0

    @dbus_property(access=PropertyAccess.READ)
    def CanGoNext(self) -> "b":  # noqa: F821
        return True

    @dbus_property(access=PropertyAccess.READ)
    def CanGoPrevious(self) -> "b":  # noqa: F821
        return True

    @dbus_property(access=PropertyAccess.READ)
    def CanPlay(self) -> "b":  # noqa: F821
        return True

    @dbus_property(access=PropertyAccess.READ)
    def CanPause(self) -> "b":  # noqa: F821
        return True

    @dbus_property(access=PropertyAccess.READ)
    def CanSeek(self) -> "b":  # noqa: F821
        return False

    @dbus_property(access=PropertyAccess.READ)
    def CanControl(self) -> "b":  # noqa: F821
        return True


class MprisPlayer:
    """The reader on the session bus as ``org.mpris.MediaPlayer2.vvreader`` (or, when
    another reader has that name, ``...vvreader.instance<pid>``)."""

    def __init__(self, on_command: CommandHandler, on_rate) -> None:
        self._player = _Player(on_command, on_rate)
        self._bus: MessageBus | None = None
        self.name = ""
        """The bus name owned ("" while off)."""

    async def start(self) -> bool:
        if not os.environ.get("DBUS_SESSION_BUS_ADDRESS") and not os.environ.get("XDG_RUNTIME_DIR"):
            return False
        try:
            bus = await MessageBus(bus_type=BusType.SESSION).connect()
        except Exception as err:  # no session bus (a container, ssh): silently off
            log.info("no session bus, media keys off: %s", err)
            return False
        bus.export(OBJECT_PATH, _Root())
        bus.export(OBJECT_PATH, self._player)
        for name in (BUS_NAME, f"{BUS_NAME}.instance{os.getpid()}"):
            reply = await bus.request_name(name, NameFlag.DO_NOT_QUEUE)
            if reply in (RequestNameReply.PRIMARY_OWNER, RequestNameReply.ALREADY_OWNER):
                self._bus, self.name = bus, name
                log.info("MPRIS player %s", name)
                return True
        bus.disconnect()
        return False

    def show(self, now: NowPlaying) -> None:
        if self._bus is not None:
            self._player.show(now)
        else:
            self._player.now = now

    async def stop(self) -> None:
        bus, self._bus = self._bus, None
        if bus is not None:
            bus.disconnect()
            try:
                await bus.wait_for_disconnect()
            except Exception:  # it was going away anyway
                pass
