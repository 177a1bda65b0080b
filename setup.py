"""Build hook for the optional C libraries (Linux only); everything else is in pyproject.toml."""

import sys

from setuptools import Extension, setup

# Plain C, no Python API: shared libraries that engine/ loads with ctypes. Both are optional:
# without a compiler the install still works, MLX keeps its bundled BLAS and the decoder
# runs on MLX.
ext_modules = []
if sys.platform.startswith("linux"):
    ext_modules.append(
        Extension(
            "engine._blas_shim",
            ["engine/_blas_shim.c"],
            depends=[
                "engine/_amx.h",
                "engine/_bf16.h",
                "engine/_bf16_rows.h",
                "engine/_cpu_level.h",
            ],
            optional=True,
        )
    )
    # The decoder's layers (engine/native_decoder.py); its matrix products go to the BLAS
    # shim's cblas_sgemm, whose address engine/native_decoder.py hands it at load time.
    # -z now: an unresolved symbol fails the load (an OSError: MLX decodes), not a call.
    ext_modules.append(
        Extension(
            "engine._cpu_decoder",
            ["engine/_cpu_decoder.c"],
            depends=["engine/_bf16.h", "engine/_cpu_level.h"],
            extra_compile_args=["-O3", "-std=gnu11"],
            extra_link_args=["-Wl,-z,now"],
            libraries=["m"],
            optional=True,
        )
    )

    # A speech frame's TTS-LM step and diffusion sampler (engine/native_lm.py,
    # engine/native_head.py); products likewise to the shim.
    ext_modules.append(
        Extension(
            "engine._cpu_frame",
            ["engine/_cpu_lm.c", "engine/_cpu_head.c"],
            depends=["engine/_cpu_frame.h", "engine/_cpu_level.h"],
            extra_compile_args=["-O3", "-std=gnu11"],
            extra_link_args=["-Wl,-z,now"],
            libraries=["m"],
            optional=True,
        )
    )

setup(ext_modules=ext_modules)
