"""What the narrator thread is told, through one queue: small frozen values."""

from __future__ import annotations

from dataclasses import dataclass

from vvreader.text.plan import SpeechPlan

CFG_RANGE = (1.0, 5.0)
CFG_STEP = 0.1
STEPS_RANGE = (1, 50)


@dataclass(frozen=True)
class VoiceSettings:
    voice: str = ""
    """Voice name or file ("" for the engine's first voice)."""
    cfg_scale: float = 1.5
    steps: int = 5


def step_cfg(cfg_scale: float, direction: int) -> float:
    """One :data:`CFG_STEP` up (``direction`` 1) or down (-1), not past :data:`CFG_RANGE`."""
    cfg = cfg_scale + direction * CFG_STEP
    return round(min(CFG_RANGE[1], cfg) if direction > 0 else max(CFG_RANGE[0], cfg), 2)


def step_steps(steps: int, direction: int) -> int:
    """One diffusion step more (``direction`` 1) or fewer (-1), not past :data:`STEPS_RANGE`."""
    steps += direction
    return min(STEPS_RANGE[1], steps) if direction > 0 else max(STEPS_RANGE[0], steps)


@dataclass(frozen=True)
class Play:
    """Start (from ``index``, or where reading stands), or resume after a pause."""

    index: int | None = None


@dataclass(frozen=True)
class Pause:
    """Stop the output's stream (the output is already silent)."""


@dataclass(frozen=True)
class Jump:
    """Read from utterance ``index`` now (what was ready is dropped)."""

    index: int


@dataclass(frozen=True)
class SayAgain:
    """Synthesise utterance ``index`` again with a new noise seed and read from it."""

    index: int


@dataclass(frozen=True)
class SetSettings:
    """Read with ``settings`` from the utterance after the one being heard."""

    settings: VoiceSettings


@dataclass(frozen=True)
class SetPlan:
    """A longer version of the plan (the same utterances first, more after)."""

    plan: SpeechPlan


@dataclass(frozen=True)
class Close:
    """End the thread."""


Command = Play | Pause | Jump | SayAgain | SetSettings | SetPlan | Close
