"""Opening the speech engine for the app: the one place that builds the real engine."""

from __future__ import annotations

from pathlib import Path

from engine.api import SpeechEngine


class EngineUnavailable(Exception):
    """No usable model; the message says what to do."""


def open_engine(model: str | None, timeout: float = 600.0) -> SpeechEngine:
    """Load the model folder ``model`` on an engine thread and wait until it is ready.

    Raises:
        EngineUnavailable: no folder given, or the folder is not a usable model.
    """
    if not model:
        raise EngineUnavailable(
            "no model given: pass --model DIR, a VibeVoice-Realtime model folder "
            "(`python -m engine.tiny DIR` writes a small random one for trying things out)"
        )
    folder = Path(model).expanduser()
    if not folder.is_dir():
        raise EngineUnavailable(f"{folder}: no such model folder")
    from engine.errors import EngineError
    from engine.stream import MLXEngine

    engine = MLXEngine(folder)
    try:
        engine.wait_ready(timeout)
    except (EngineError, TimeoutError) as err:
        engine.close()
        raise EngineUnavailable(str(err)) from None
    return engine
