"""Typed errors raised by the engine; every message says what to do about it."""

from __future__ import annotations


class EngineError(Exception):
    """Base class of every error the engine raises on purpose."""


class ConfigError(EngineError):
    """A model folder's config.json is missing, unreadable or inconsistent."""


class WeightsError(EngineError):
    """A weight file is missing, truncated, or has missing keys or wrong shapes."""


class VoiceError(EngineError):
    """A voice prompt file is missing, refused (unsafe) or does not fit the model."""


class TokenizerError(EngineError):
    """The tokenizer.json is missing, unreadable or made for another model."""


class RequestError(EngineError):
    """A synthesis request the model cannot take: a token id, a step count or a length
    out of the model's range."""


class DownloadError(EngineError):
    """A model, tokenizer or voice is neither on disk nor downloadable; the message says
    what is missing, what to run and how to use a local folder instead."""


class DownloadCancelled(DownloadError):
    """The download was stopped on purpose (the reader quit); nothing partial is kept."""


class BackendError(EngineError):
    """The GPU's frame kernels failed during a synthesis (a grid barrier gave up): the
    engine has gone back to the MLX functions, and the synthesis can be started again."""
