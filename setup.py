"""Build the Cython extensions in ext/ into the private modules engine._*.

Set RINGFLOW_DEBUG=1 to build with bounds and wrap-around checks on and
without optimisation, for chasing a kernel bug."""

import os

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("RINGFLOW_DEBUG", "") not in ("", "0")
MODULES = ["_ring", "_table", "_router", "_worker", "_wire"]

compile_args = ["-O0", "-g"] if DEBUG else ["-O3"]
extensions = [
    Extension(
        f"engine.{name}",
        [f"ext/{name}.pyx"],
        include_dirs=["ext", numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=compile_args,
    )
    for name in MODULES
]

setup(
    ext_modules=cythonize(
        extensions,
        include_path=["ext"],
        compiler_directives={
            "language_level": 3,
            "boundscheck": DEBUG,
            "wraparound": DEBUG,
            "initializedcheck": DEBUG,
            "cdivision": not DEBUG,
            "embedsignature": True,
        },
        build_dir="build/cython",
    ),
)
