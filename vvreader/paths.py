"""The user's folders: where settings, reading state and logs live.

Each follows the XDG base directory variables, read when asked (not at import), with
vvreader's own variables taking precedence:

* settings: ``$VVREADER_CONFIG`` (the file itself), else
  ``$XDG_CONFIG_HOME/vvreader/config.toml`` (``~/.config/vvreader/config.toml``);
* reading positions and logs: ``$VVREADER_STATE_DIR``, else ``$XDG_STATE_HOME/vvreader``
  (``~/.local/state/vvreader``).

The converted preset voices are the engine's cache, which it places itself (see
``engine.voice_fetch.voice_cache_dir``).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["config_dir", "config_file", "pronunciations_file", "state_dir"]


def config_dir() -> Path:
    """``$XDG_CONFIG_HOME/vvreader`` (``~/.config/vvreader``)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "vvreader"


def config_file() -> Path:
    """The settings file: ``$VVREADER_CONFIG``, else ``config.toml`` in :func:`config_dir`."""
    if explicit := os.environ.get("VVREADER_CONFIG"):
        return Path(explicit).expanduser()
    return config_dir() / "config.toml"


def pronunciations_file() -> Path:
    """The global pronunciation dictionary (used when it exists)."""
    return config_dir() / "pronunciations.txt"


def state_dir() -> Path:
    """Reading positions and logs: ``$VVREADER_STATE_DIR``, else
    ``$XDG_STATE_HOME/vvreader`` (``~/.local/state/vvreader``)."""
    if explicit := os.environ.get("VVREADER_STATE_DIR"):
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "vvreader"
