"""VibeVoice-Realtime-0.5B on MLX. Importing the package does not import MLX."""

from engine.api import AudioChunk, SpeechEngine, SynthesisRequest, SynthesisStream

__all__ = ["AudioChunk", "SpeechEngine", "SynthesisRequest", "SynthesisStream"]
