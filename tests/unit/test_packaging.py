"""What the wheel is made of (pyproject.toml): every package of the checkout and every file
the program reads at run time. .ci/smoke builds and installs the real wheel; these checks
say the same of the configuration in a second, so that a new package is listed when it is
added, not when CI installs a wheel without it."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import REPO
from vvreader.config import tomllib

SETUPTOOLS = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"][
    "setuptools"
]


def source_folder(package: str) -> Path:
    """Where setuptools takes ``package`` from: its package-dir entry, else its dotted path."""
    mapped = SETUPTOOLS.get("package-dir", {})
    return REPO / mapped.get(package, package.replace(".", "/"))


def test_every_package_of_the_checkout_is_in_the_wheel() -> None:
    on_disk = {
        ".".join(init.parent.relative_to(REPO).parts)
        for top in ("engine", "vvreader")
        for init in (REPO / top).rglob("__init__.py")
    }
    listed = set(SETUPTOOLS["packages"])
    assert on_disk - listed == set(), "add these to [tool.setuptools] packages"
    for package in listed:
        assert source_folder(package).is_dir(), package


def test_the_files_read_at_run_time_are_package_data() -> None:
    data = SETUPTOOLS["package-data"]
    # The themes (vvreader.themes), the voice catalogue (engine.voices) and the CUDA
    # kernels' source (engine.cuda_frame): each found by a package's data patterns.
    wanted = {
        "vvreader.theme_files": ["dark.toml", "light.toml", "high-contrast.toml"],
        "engine.voice_catalogue": ["catalogue.toml"],
        "engine": ["cuda_kernels.cu"],
    }
    for package, names in wanted.items():
        folder = source_folder(package)
        matched = {p.name for pattern in data[package] for p in folder.glob(pattern)}
        assert set(names) <= matched, (package, matched)
