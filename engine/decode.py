"""Latents to audio: the acoustic decoder as a strategy of the generation loop.

The loop hands a decoder the latents of a few frames at a time (normalised, as the LM
makes them) with the streaming state of the call before, and gets one row of samples per
frame back; several streams' latents may be decoded in one call (engine.batch).
:class:`MLXLatentDecoder` runs the MLX decoder (engine/acoustic.py) as one
compiled graph per group size; :class:`NativeLatentDecoder` runs the same model in C
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


class LatentDecoder(Protocol):
    name: str
    """"mlx" or "native"."""

    def init_state(self) -> Any:
        """The streaming state before an utterance's first frame."""
        ...

    def decode(self, latents: mx.array, state: Any) -> tuple[np.ndarray, Any]:
        """(T, latent dim) latents continuing from ``state``: (T, hop) float32 audio, one
        row per frame, and the state to pass next."""
        ...

    def decode_many(
        self, latents: list[mx.array], states: list[Any]
    ) -> tuple[list[np.ndarray], list[Any]]:
        """:meth:`decode` for several streams (distinct states) at once: their audio and
        next states, in order."""
        ...


class MLXLatentDecoder:
    """The MLX decoder, compiled (one graph per number of frames), optionally on a
    stream of its own."""

    name = "mlx"

    def __init__(self, model: VibeVoiceRealtime, stream: mx.Stream | None = None) -> None:
        decoder = self._decoder = model.model.acoustic_tokenizer.decoder

        def decode(latents: mx.array, state: list[mx.array]) -> tuple[mx.array, list[mx.array]]:
            # (1, T, latent) -> (1, T * hop, 1).
            return decoder(model.latent_to_decoder_input(latents), state)

        self.compiled = mx.compile(decode)
        """(1, T, latent), state -> (1, T * hop, 1) audio, state; lazy."""
        self.stream = stream

    def init_state(self) -> list[mx.array]:
        return self._decoder.init_state(1, mx.float32)

    def decode(self, latents: mx.array, state: list[mx.array]) -> tuple[np.ndarray, list[mx.array]]:
        T = latents.shape[0]
        if self.stream is None:
            audio, state = self.compiled(latents[None], state)
        else:
            with mx.stream(self.stream):
                audio, state = self.compiled(latents[None], state)
        mx.eval(audio, state)
        return np.array(audio[0, :, 0].astype(mx.float32)).reshape(T, -1), state

    def decode_many(
        self, latents: list[mx.array], states: list[list[mx.array]]
    ) -> tuple[list[np.ndarray], list[list[mx.array]]]:
        # One stream at a time: on a GPU each is a compiled graph of its own shapes.
        done = [self.decode(x, st) for x, st in zip(latents, states, strict=True)]
        return [a for a, _ in done], [st for _, st in done]


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

    def decode(self, latents: mx.array, state: Any) -> tuple[np.ndarray, Any]:
        T = latents.shape[0]
        # latent / speech_scaling_factor - speech_bias_factor, in float32 as on MLX.
        x = np.asarray(latents.astype(mx.float32)) / self._scale - self._bias
        # The frame launched meanwhile finishes first, as it would before an MLX decode
        # queued behind it: run side by side, each with its BLAS threads on the same
        # cores, the two were slower than one after the other.
        mx.synchronize()
        audio, state = self.native(x, state)
        return audio[:, 0].reshape(T, -1), state

    def decode_many(
        self, latents: list[mx.array], states: list[Any]
    ) -> tuple[list[np.ndarray], list[Any]]:
        # Every stream's frames through the layers together: one pass over the weights.
        xs = [np.asarray(x.astype(mx.float32)) / self._scale - self._bias for x in latents]
        mx.synchronize()  # as in decode
        audio = self.native.decode_many(xs, states)
        return [a[:, 0].reshape(x.shape[0], -1) for a, x in zip(audio, xs, strict=True)], states


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
