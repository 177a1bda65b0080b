"""Float samples as the 16-bit PCM that every exported file is made from."""

from __future__ import annotations

import numpy as np


def to_pcm16(audio: np.ndarray) -> bytes:
    """Float samples (clipped to [-1, 1]) as little-endian 16-bit PCM."""
    return (np.clip(audio, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()


def from_pcm16(data: bytes) -> np.ndarray:
    """Little-endian 16-bit PCM as float32 samples; ``to_pcm16`` of them gives ``data``
    back."""
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / np.float32(32767.0)
