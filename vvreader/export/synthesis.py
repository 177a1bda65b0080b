"""The audio of an export's utterances, in their order, made as fast as the engine goes.

Utterances whose audio the work folder holds are read from it; the others are sent to the
engine in batches (``synthesize_many``), a window of up to ``window`` requests ahead of
the one being handed out, so that the engine always has a batch to run while the
utterance the export waits for is finished. The audio comes out in the utterances'
order whatever order the engine ends them in; each utterance is stored in the work folder
as soon as it is made. At most ``window`` utterances' audio is held in memory.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from engine.api import BatchSpeechEngine, SynthesisRequest, SynthesisStream
from vvreader.export.store import UtteranceStore

__all__ = ["Made", "audio_in_order"]


@dataclass(frozen=True)
class Made:
    """One utterance's audio, as the engine made it and the work folder keeps it."""

    position: int
    """Its place among the requests."""
    audio: np.ndarray
    fresh: bool
    """Made by the engine now (False: read from the work folder)."""


def _collect(stream: SynthesisStream) -> np.ndarray:
    chunks = [chunk.audio for chunk in stream]
    return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)


def audio_in_order(
    engine: BatchSpeechEngine,
    requests: Sequence[SynthesisRequest],
    keys: Sequence[str],
    store: UtteranceStore,
    window: int | None = None,
) -> Iterator[Made]:
    """The audio of ``requests`` in order (``keys[i]`` names request ``i``'s audio in
    ``store``). Closing the iterator early cancels the requests in flight.

    Raises:
        engine.errors.EngineError: a request failed (the others are cancelled).
        ExportError: the work folder cannot be written.
    """
    missing = iter([i for i, key in enumerate(keys) if not store.has(key)])
    in_flight: dict[int, SynthesisStream] = {}

    def top_up() -> None:
        # Read each time: an engine settles its batch size when its model has loaded.
        limit = max(1, window or 4 * engine.max_batch)
        batch = []
        while len(in_flight) + len(batch) < limit:
            position = next(missing, None)
            if position is None:
                break
            batch.append(position)
        if batch:
            streams = engine.synthesize_many([requests[p] for p in batch])
            in_flight.update(zip(batch, streams, strict=True))

    try:
        for position, key in enumerate(keys):
            top_up()
            stream = in_flight.pop(position, None)
            if stream is None:
                audio = store.get(key)
                if audio is not None:
                    yield Made(position, audio, fresh=False)
                    continue
                # Its file was not whole: made again now.
                stream = engine.synthesize_many([requests[position]])[0]
            yield Made(position, store.put(key, _collect(stream)), fresh=True)
    finally:
        for stream in in_flight.values():
            stream.cancel()
