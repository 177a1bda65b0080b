"""VibeVoice-Realtime-0.5B on MLX. Importing the package does not import MLX.

It does choose MLX's BLAS on Linux (engine.backend.configure_cpu_blas), which has to
happen before MLX is imported.
"""

from engine.backend import configure_cpu_blas

configure_cpu_blas()

from engine.api import AudioChunk, SpeechEngine, SynthesisRequest, SynthesisStream  # noqa: E402

__all__ = [
    "configure_cpu_blas",
    "AudioChunk",
    "SpeechEngine",
    "SynthesisRequest",
    "SynthesisStream",
]
