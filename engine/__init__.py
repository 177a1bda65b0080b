"""VibeVoice-Realtime-0.5B on MLX.

Importing the package, or its light modules (``engine.api``, ``engine.errors``,
``engine.hub``, ``engine.voice_fetch``), loads neither MLX nor a BLAS library: the app and
its tests use the engine's types without the model. MLX's BLAS is chosen when MLX is first
needed (see :mod:`engine.backend`).
"""
