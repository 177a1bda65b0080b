"""What the narrator tells the app: frozen values handed to its ``on_event`` callback, on
the narrator's thread or the caller's. The app turns them into messages for the user."""

from __future__ import annotations

from dataclasses import dataclass

from vvreader.player import DeviceLost, DeviceUnavailable

__all__ = [
    "DeviceLost",
    "DeviceUnavailable",
    "EngineFailed",
    "Event",
    "PlayWhenReady",
    "SleepEnded",
]


@dataclass(frozen=True)
class EngineFailed:
    """The engine failed on an utterance; reading stopped there."""

    reason: str


@dataclass(frozen=True)
class PlayWhenReady:
    """Play was asked for (or taken back) before the model is ready."""

    play: bool
    """Whether reading starts once it is."""


@dataclass(frozen=True)
class SleepEnded:
    """The sleep timer stopped the reading (faded out and paused there)."""

    position: int
    """The utterance where reading stopped (read on from it)."""


Event = EngineFailed | DeviceLost | DeviceUnavailable | PlayWhenReady | SleepEnded
