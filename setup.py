"""Build hook for the optional BLAS shim (Linux only); everything else is in pyproject.toml."""

import sys

from setuptools import Extension, setup

# Plain C, no Python API: a shared library that engine/backend.py loads with ctypes. It is
# optional: without a compiler the install still works and MLX keeps its bundled BLAS.
ext_modules = []
if sys.platform.startswith("linux"):
    ext_modules.append(Extension("engine._blas_shim", ["engine/_blas_shim.c"], optional=True))

setup(ext_modules=ext_modules)
