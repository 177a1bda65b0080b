"""Latents to audio: the acoustic decoder as a strategy of the generation loop.

The loop hands a decoder the latents of a few frames at a time (normalised, as the LM
makes them) with the streaming state of the call before, and gets one row of samples per
frame back; several streams' latents may be decoded in one call (engine.batch).
:class:`MLXLatentDecoder` runs the MLX decoder (engine/acoustic.py) as one
compiled graph per batch and group size, several streams in one call;
:class:`NativeLatentDecoder` runs the same model in C
(engine/native_decoder.py) on Linux CPUs. :func:`choose_latent_decoder` picks one.
"""

from __future__ import annotations

from typing import Any, Protocol

import engine.backend  # noqa: F401  (chooses MLX's BLAS before mlx.core is imported)

import mlx.core as mx
import numpy as np

from engine.model import VibeVoiceRealtime
from engine.native_decoder import NativeDecoder, native_decoder_wanted, shared_native_decoder
from engine.switches import Switches

LatentRows = mx.array | np.ndarray
"""(T, latent dim) latents of one stream, as the LM made them, on the device or the host."""


class LatentDecoder(Protocol):
    name: str
    """"mlx" or "native"."""

    def init_state(self) -> Any:
        """The streaming state before an utterance's first frame."""
        ...

    def decode(self, latents: LatentRows, state: Any) -> tuple[np.ndarray, Any]:
        """(T, latent dim) latents continuing from ``state``: (T, hop) float32 audio, one
        row per frame, and the state to pass next."""
        ...

    def decode_many(
        self, latents: list[LatentRows], states: list[Any]
    ) -> tuple[list[np.ndarray], list[Any]]:
        """:meth:`decode` for several streams (distinct states) at once: their audio and
        next states, in order."""
        ...


class MLXLatentDecoder:
    """The MLX decoder, compiled (one graph per batch and group size), optionally on a
    stream of its own.

    A stream's state is one (1, state size) row: the decoder's per-conv states packed
    side by side (:meth:`init_state`). Several streams' groups of the same length are
    decoded as one batch: their rows stacked, one compiled call, one read of the audio
    (on a GPU the work of a call is its launches, whatever the batch). With
    ``pad_batches`` a batch is padded with zero rows to a power of two, so that
    continuous batching finds a traced graph for every batch it makes (the default on a
    GPU; on a CPU the padding would be work).
    """

    name = "mlx"

    def __init__(
        self,
        model: VibeVoiceRealtime,
        stream: mx.Stream | None = None,
        pad_batches: bool | None = None,
    ) -> None:
        decoder = self._decoder = model.model.acoustic_tokenizer.decoder

        def decode(latents: mx.array, state: list[mx.array]) -> tuple[mx.array, list[mx.array]]:
            # (B, T, latent) -> (B, T * hop, 1).
            return decoder(model.latent_to_decoder_input(latents), state)

        self.compiled = mx.compile(decode)
        """(B, T, latent), per-conv state -> (B, T * hop, 1) audio, state; lazy."""
        self._shapes = [s.shape[1:] for s in decoder.init_state(1, mx.float32)]
        sizes = [int(np.prod(shape)) for shape in self._shapes]
        self._offsets = np.concatenate([[0], np.cumsum(sizes)]).tolist()

        def decode_rows(latents: mx.array, rows: mx.array) -> tuple[mx.array, mx.array]:
            # (B, T, latent), (B, state size) -> (B, T * hop) audio, (B, state size).
            B = rows.shape[0]
            o = self._offsets
            state = [
                rows[:, o[i] : o[i + 1]].reshape(B, *shape) for i, shape in enumerate(self._shapes)
            ]
            audio, state = decode(latents, state)
            packed = mx.concatenate([s.reshape(B, -1) for s in state], axis=1)
            return audio[..., 0], packed

        self._decode_rows = mx.compile(decode_rows)
        self.stream = stream
        self.pad_batches = (
            pad_batches
            if pad_batches is not None
            else mx.default_device().type == mx.DeviceType.gpu
        )

    def init_state(self) -> StateRow:
        return StateRow(mx.zeros((1, self._offsets[-1]), dtype=mx.float32), 0)

    def decode(self, latents: LatentRows, state: StateRow) -> tuple[np.ndarray, StateRow]:
        audio, states = self.decode_many([latents], [state])
        return audio[0], states[0]

    def decode_many(
        self, latents: list[LatentRows], states: list[StateRow]
    ) -> tuple[list[np.ndarray], list[StateRow]]:
        # One call per group length (the groups of a batch step are mostly of one).
        audio: list[np.ndarray] = [_NO_ROWS] * len(latents)
        new_states = list(states)
        by_length: dict[int, list[int]] = {}
        for i, x in enumerate(latents):
            by_length.setdefault(int(x.shape[0]), []).append(i)
        for T, items in by_length.items():
            if self.stream is None:
                chunks, rows = self._call([latents[i] for i in items], [states[i] for i in items])
            else:
                with mx.stream(self.stream):
                    chunks, rows = self._call(
                        [latents[i] for i in items], [states[i] for i in items]
                    )
            for row, i in enumerate(items):
                audio[i] = chunks[row].reshape(T, -1)
                new_states[i] = StateRow(rows, row)
        return audio, new_states

    def _call(
        self, latents: list[LatentRows], states: list[StateRow]
    ) -> tuple[np.ndarray, mx.array]:
        """Same-length groups of n streams as one batch: their audio (n, T * hop) on the
        host and their next state rows (n, state size)."""
        n = len(latents)
        size = 1 << (n - 1).bit_length() if self.pad_batches else n
        if all(isinstance(x, np.ndarray) for x in latents):
            x = np.stack(latents).astype(np.float32, copy=False)
            if size > n:
                x = np.concatenate([x, np.zeros((size - n, *x.shape[1:]), np.float32)])
            x = mx.array(x)
        else:
            x = mx.stack([mx.array(v) if isinstance(v, np.ndarray) else v for v in latents])
            if size > n:
                x = mx.concatenate([x, mx.zeros((size - n, *x.shape[1:]), dtype=x.dtype)])
        rows = _stacked(states)
        if size > n:
            rows = mx.concatenate([rows, mx.zeros((size - n, rows.shape[1]), dtype=rows.dtype)])
        audio, rows = self._decode_rows(x.astype(mx.float32), rows)
        mx.eval(audio, rows)
        return np.array(audio[:n]), rows[:n]


_NO_ROWS = np.zeros((0, 0), np.float32)


class StateRow:
    """One stream's MLX decoder state: row ``index`` of ``rows`` (the rows of the call
    that made it, shared with the streams decoded alongside)."""

    __slots__ = ("rows", "index")

    def __init__(self, rows: mx.array, index: int) -> None:
        self.rows, self.index = rows, index


def _stacked(states: list[StateRow]) -> mx.array:
    """The rows of ``states`` as one (n, state size) array: the rows of the last call as
    they are when the same streams come back in the same order (the steady state of a
    batch), else one gather per call they come from."""
    first = states[0].rows
    if all(s.rows is first for s in states) and [s.index for s in states] == list(
        range(first.shape[0])
    ):
        return first
    parts: list[mx.array] = []
    run: list[StateRow] = []
    for s in [*states, None]:
        if run and (s is None or s.rows is not run[0].rows):
            base = run[0].rows
            parts.append(base[mx.array([r.index for r in run], dtype=mx.int32)])
            run = []
        if s is not None:
            run.append(s)
    return parts[0] if len(parts) == 1 else mx.concatenate(parts)


class NativeLatentDecoder:
    """The C decoder; its state is updated in place."""

    name = "native"

    def __init__(self, model: VibeVoiceRealtime, native: NativeDecoder) -> None:
        m = model.model
        self.native = native
        # latent_to_decoder_input's affine map, for the C decoder's numpy input.
        self._scale = np.float32(m.speech_scaling_factor.astype(mx.float32).item())
        self._bias = np.float32(m.speech_bias_factor.astype(mx.float32).item())

    def init_state(self) -> Any:
        return self.native.init_state()

    def decode(self, latents: LatentRows, state: Any) -> tuple[np.ndarray, Any]:
        T = latents.shape[0]
        # latent / speech_scaling_factor - speech_bias_factor, in float32 as on MLX.
        x = _host_f32(latents) / self._scale - self._bias
        # The frame launched meanwhile finishes first, as it would before an MLX decode
        # queued behind it: run side by side, each with its BLAS threads on the same
        # cores, the two were slower than one after the other.
        mx.synchronize()
        audio, state = self.native(x, state)
        return audio[:, 0].reshape(T, -1), state

    def decode_many(
        self, latents: list[LatentRows], states: list[Any]
    ) -> tuple[list[np.ndarray], list[Any]]:
        # Every stream's frames through the layers together: one pass over the weights.
        xs = [_host_f32(x) / self._scale - self._bias for x in latents]
        mx.synchronize()  # as in decode
        audio = self.native.decode_many(xs, states)
        return [a[:, 0].reshape(x.shape[0], -1) for a, x in zip(audio, xs, strict=True)], states


def _host_f32(x: LatentRows) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x.astype(np.float32, copy=False)
    return np.asarray(x.astype(mx.float32))


def choose_latent_decoder(
    model: VibeVoiceRealtime, switches: Switches, own_stream: bool = False
) -> LatentDecoder:
    """The C decoder where the switch allows it, MLX computes on the CPU, the library
    loads and it implements the decoder's layers (not quantized ones); else the MLX
    decoder, on a GPU stream of its own when ``own_stream``."""
    if native_decoder_wanted(switches):
        try:
            native = shared_native_decoder(model.model.acoustic_tokenizer.decoder)
        except TypeError:
            pass  # layers the C does not implement (quantized): MLX decodes
        else:
            return NativeLatentDecoder(model, native)
    return MLXLatentDecoder(model, mx.new_stream(mx.gpu) if own_stream else None)
