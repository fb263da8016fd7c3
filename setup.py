"""Build the Cython extensions in ext/ into the private modules engine._*.

Before cythonizing, the shared-memory layout is generated: engine/core/layout.py
(imported from this tree; it needs no compiled module, and ``import engine``
imports nothing until a name is used) is the one
source of every record struct, block offset and code, and its
``cython_declarations()`` is written to build/gen/layout.pxd, which the ext/
sources cimport.  The file is rewritten only when its text changes (so an
unchanged layout does not force a rebuild) and is never committed.  A record
that C would pad differently from its packed numpy dtype fails the build
here, with the field named.

Set RINGFLOW_DEBUG=1 to build with bounds and wrap-around checks on and
without optimisation, for chasing a kernel bug."""

import importlib
import os
import sys

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("RINGFLOW_DEBUG", "") not in ("", "0")
MODULES = ["_ring", "_control", "_table", "_query", "_router", "_worker", "_wire", "_jsonl"]
HERE = os.path.dirname(os.path.abspath(__file__))
GENERATED = os.path.join("build", "gen")


def generate_layout() -> None:
    """Write build/gen/layout.pxd from engine/core/layout.py, or stop the build."""
    sys.path.insert(0, HERE)  # this tree's engine, not an installed one
    try:
        layout = importlib.import_module("engine.core.layout")
    finally:
        sys.path.remove(HERE)
    try:
        text = layout.cython_declarations()
    except layout.LayoutError as exc:
        sys.exit(f"engine/core/layout.py: {exc}")
    path = os.path.join(HERE, GENERATED, "layout.pxd")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        with open(path) as f:
            if f.read() == text:
                return
    except FileNotFoundError:
        pass
    with open(path, "w") as f:
        f.write(text)


generate_layout()

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
        include_path=["ext", GENERATED],
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
