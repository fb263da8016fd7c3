"""The comparative benchmark suite (issue #5): one workload, one oracle, the
designs that fail under contention and ringflow's, side by side.

``ringflow bench`` runs it; :mod:`engine.suite.base` defines what every
contender implements.  The runtime never imports this package, and the
suite needs the ``[bench]`` extra (:func:`missing_requirements`)."""

from __future__ import annotations

import importlib

__all__ = ["INSTALL", "REQUIRED", "missing_requirements"]

#: Modules of the ``[bench]`` extra the suite cannot run without, and the
#: distribution that provides each.  matplotlib, also in the extra, only
#: draws the plots, which are skipped without it.
REQUIRED = {"psutil": "psutil", "hdrh": "hdrhistogram"}

#: How to get them.
INSTALL = 'pip install -e ".[bench]"'


def missing_requirements() -> list[str]:
    """The distributions of :data:`REQUIRED` that do not import here.

    Returns
    -------
    list of str
        Empty when the suite can run; else what to install (see
        :data:`INSTALL`).
    """
    missing = []
    for module, distribution in REQUIRED.items():
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(distribution)
    return missing
