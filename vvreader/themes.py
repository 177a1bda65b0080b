"""The app's Textual themes, read from ``themes/*.toml`` (and the user's config folder).

A theme file holds the fields of :class:`textual.theme.Theme` plus a ``[variables]`` table;
``reading-highlight`` and ``reading-cursor`` colour the spoken and the cursor's sentence.
"""

from __future__ import annotations

from pathlib import Path

from textual.theme import Theme

from vvreader.config import tomllib
from vvreader.paths import config_file

__all__ = ["bundled_theme_folder", "theme_folders", "load_themes", "DEFAULT_THEME"]

DEFAULT_THEME = "vvreader-dark"
_FIELDS = (
    "primary",
    "secondary",
    "accent",
    "foreground",
    "background",
    "surface",
    "panel",
    "success",
    "warning",
    "error",
    "boost",
)
_DEFAULT_VARIABLES = {"reading-highlight": "#3B5878", "reading-cursor": "#2F3542"}


def bundled_theme_folder() -> Path:
    """The themes that come with vvreader: ``vvreader/theme_files/`` in an installed copy
    (pyproject.toml maps the checkout's ``themes/`` there), ``themes/`` in a checkout."""
    here = Path(__file__).resolve().parent
    installed = here / "theme_files"
    return installed if installed.is_dir() else here.parent / "themes"


def theme_folders() -> list[Path]:
    """Folders searched, later ones overriding earlier ones."""
    return [bundled_theme_folder(), config_file().parent / "themes"]


def _theme(path: Path) -> Theme:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    variables = {
        **_DEFAULT_VARIABLES,
        **{str(k): str(v) for k, v in data.get("variables", {}).items()},
    }
    return Theme(
        name=str(data.get("name") or path.stem),
        dark=bool(data.get("dark", True)),
        variables=variables,
        **{k: str(data[k]) for k in _FIELDS if k in data},
    )


def load_themes() -> tuple[list[Theme], list[str]]:
    """Every theme found, and a warning for each file that could not be read."""
    found: dict[str, Theme] = {}
    warnings: list[str] = []
    for folder in theme_folders():
        for path in sorted(folder.glob("*.toml")) if folder.is_dir() else []:
            try:
                theme = _theme(path)
            except (
                OSError,
                UnicodeDecodeError,
                tomllib.TOMLDecodeError,
                TypeError,
                ValueError,
            ) as err:
                warnings.append(f"{path}: not a usable theme ({err})")
                continue
            found[theme.name] = theme
    return list(found.values()), warnings
