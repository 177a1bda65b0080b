"""The listening speed's rules: its range and its steps (the stretching itself is
:mod:`vvreader.stretch`)."""

from __future__ import annotations

SPEED_RANGE = (0.5, 3.0)
SPEED_STEP = 0.1


def clamp_speed(speed: float) -> float:
    """``speed`` within :data:`SPEED_RANGE`, to two decimals."""
    return round(min(SPEED_RANGE[1], max(SPEED_RANGE[0], float(speed))), 2)


def step_speed(speed: float, direction: int) -> float:
    """One :data:`SPEED_STEP` faster (``direction`` 1) or slower (-1)."""
    return clamp_speed(speed + direction * SPEED_STEP)
