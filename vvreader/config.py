"""The user's settings: a TOML file under the config directory.

``$VVREADER_CONFIG`` names the file; otherwise ``$XDG_CONFIG_HOME/vvreader/config.toml``
(``~/.config/vvreader/config.toml``). Example::

    voice = "en-Emma_woman"
    cfg_scale = 1.5
    steps = 5
    theme = "vvreader-dark"
    autoplay = true
    lookahead = 20.0
    speed = 1.0
    image_alt = false   # in EPUB and HTML books, say each image's alt text

    [keymap]            # binding id = keys (see the help screen, ? or F1)
    play-pause = "space,p"
    next-sentence = "l,right"

A file that does not parse is renamed ``config.toml.corrupt-<time>`` and the defaults are
used, with a warning; a key with a wrong type is ignored with a warning. Writes are atomic
(a temporary file renamed over the old one), so a crash never leaves half a file.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from vvreader.paths import config_file
from vvreader.speed import SPEED_RANGE

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["Config", "load_config", "save_config", "atomic_write", "set_aside"]


@dataclass(frozen=True)
class Config:
    """Settings that persist between runs."""

    voice: str = ""
    """Voice name or file ("" for the model's first voice)."""
    cfg_scale: float = 1.5
    """Classifier-free guidance scale."""
    steps: int = 5
    """Diffusion steps per frame."""
    theme: str = "vvreader-dark"
    """Textual theme name."""
    model: str = ""
    """Model folder or Hugging Face repo id ("" for the default)."""
    audio_device: str = ""
    """Output device name or number, "null" for none, "" for the default."""
    autoplay: bool = True
    """Start reading as soon as the model is ready."""
    lookahead: float = 20.0
    """Seconds of audio kept ready ahead of the voice."""
    speed: float = 1.0
    """Listening speed, 0.5 to 3.0 (the voice's pitch is kept)."""
    word_follow: bool = False
    """Underline the word being spoken (approximate: the engine gives no word timings)."""
    media_keys: bool = True
    """Answer the platform's media keys (MPRIS on Linux, Now Playing on macOS)."""
    image_alt: bool = False
    """In EPUB and HTML books, say each image's alt text (else images are silent)."""
    keymap: dict[str, str] = field(default_factory=dict)
    """Binding id -> comma-separated keys."""


_TYPES: dict[str, tuple[type, ...]] = {
    "voice": (str,),
    "cfg_scale": (float, int),
    "steps": (int,),
    "theme": (str,),
    "model": (str,),
    "audio_device": (str,),
    "autoplay": (bool,),
    "lookahead": (float, int),
    "speed": (float, int),
    "media_keys": (bool,),
    "word_follow": (bool,),
    "image_alt": (bool,),
    "keymap": (dict,),
}


def set_aside(path: Path) -> Path:
    """Rename a broken file out of the way; returns its new name."""
    target = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
    os.replace(path, target)
    return target


def load_config(path: Path | None = None) -> tuple[Config, list[str]]:
    """The config at ``path`` (default :func:`~vvreader.paths.config_file`) and warnings
    for the user."""
    path = path or config_file()
    warnings: list[str] = []
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return Config(), warnings
    except OSError as err:
        return Config(), [f"{path}: cannot read the config ({err.strerror}); using defaults"]
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        try:
            moved = set_aside(path)
        except OSError:
            moved = path
        return Config(), [f"{path}: not valid TOML ({err}); moved to {moved.name}, using defaults"]
    values: dict[str, object] = {}
    for key, value in data.items():
        kinds = _TYPES.get(key)
        if kinds is None:
            warnings.append(f"{path}: unknown setting {key!r} ignored")
        elif isinstance(value, bool) and bool not in kinds:
            warnings.append(f"{path}: {key} should be a {kinds[0].__name__}; ignored")
        elif not isinstance(value, kinds):
            warnings.append(f"{path}: {key} should be a {kinds[0].__name__}; ignored")
        elif key == "speed" and not SPEED_RANGE[0] <= value <= SPEED_RANGE[1]:
            warnings.append(f"{path}: speed should be from 0.5 to 3.0; ignored")
        elif key == "keymap":
            keymap = {str(k): v for k, v in value.items() if isinstance(v, str)}
            if len(keymap) != len(value):
                warnings.append(f'{path}: keymap values must be strings like "space,p"')
            values[key] = keymap
        else:
            values[key] = float(value) if float in kinds else value
    return replace(Config(), **values), warnings


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    # JSON string escapes are valid TOML basic-string escapes (json never writes "\/").
    return json.dumps(str(value))


def dumps(config: Config) -> str:
    """``config`` as TOML text."""
    lines = ["# vvreader settings (written by vvreader; comments are not kept)"]
    keymap: dict[str, str] = {}
    for f in fields(config):
        value = getattr(config, f.name)
        if f.name == "keymap":
            keymap = value
        else:
            lines.append(f"{f.name} = {_toml_value(value)}")
    if keymap:
        lines += ["", "[keymap]"]
        lines += [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in sorted(keymap.items())]
    return "\n".join(lines) + "\n"


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def save_config(config: Config, path: Path | None = None) -> None:
    """Write ``config`` atomically (raises OSError if the folder is not writable)."""
    atomic_write(path or config_file(), dumps(config))
