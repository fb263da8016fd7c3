"""ringflow: a multi-process event engine with a Cython core.

Events (32-byte records) are routed by key into single-producer rings in
shared memory; one worker process per shard folds them into per-series
state that any process reads without a lock.

>>> import engine
>>> with engine.Engine(workers=2) as eng:                       # doctest: +SKIP
...     eng.submit(engine.make_events(["web-01"], "cpu", None, [0.93]))
...     eng.flush()
...     eng.get("web-01", "cpu")["last"]

Every public name is imported on first use (PEP 562): ``import engine`` costs
no NumPy, ZeroMQ or asyncio, and a worker process, which imports only
``engine.core``, never loads the network or health-reading code.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# Public name -> the module that defines it (relative to this package).
_PUBLIC = {
    "ALERT_DTYPE": ".core.records",
    "DEFAULT_TS_MAX": ".core.records",
    "DEFAULT_TS_MIN": ".core.records",
    "EVENT_DTYPE": ".core.records",
    "STATE_DTYPE": ".core.records",
    "entity_id": ".core.records",
    "make_events": ".core.records",
    "metric_id": ".core.records",
    "EngineConfig": ".core.config",
    "WAIT_STRATEGIES": ".core.config",
    "Engine": ".core.engine",
    "Producer": ".core.engine",
    "list_segments": ".core.shm",
    "parse_duration": ".core.durations",
    "Alert": ".health.alerts",
    "AlertStream": ".health.alerts",
    "Rules": ".health.rules",
    "STATUS_NAMES": ".health.rules",
    "AsyncClient": ".net.aio",
    "Client": ".net.client",
    "Gateway": ".net.gateway",
    "attach": ".query.attach",
}

__all__ = [
    "ALERT_DTYPE",
    "Alert",
    "AlertStream",
    "AsyncClient",
    "Client",
    "DEFAULT_TS_MAX",
    "DEFAULT_TS_MIN",
    "EVENT_DTYPE",
    "Engine",
    "EngineConfig",
    "Gateway",
    "Producer",
    "Rules",
    "STATE_DTYPE",
    "STATUS_NAMES",
    "WAIT_STRATEGIES",
    "__version__",
    "attach",
    "entity_id",
    "errors",
    "list_segments",
    "make_events",
    "metric_id",
    "parse_duration",
]


def __getattr__(name: str):
    if name == "errors":
        return importlib.import_module(".errors", __name__)
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # what type checkers and IDEs see; nothing runs here
    from . import errors
    from .core.config import WAIT_STRATEGIES, EngineConfig
    from .core.durations import parse_duration
    from .core.engine import Engine, Producer
    from .core.records import (
        ALERT_DTYPE,
        DEFAULT_TS_MAX,
        DEFAULT_TS_MIN,
        EVENT_DTYPE,
        STATE_DTYPE,
        entity_id,
        make_events,
        metric_id,
    )
    from .core.shm import list_segments
    from .health.alerts import Alert, AlertStream
    from .health.rules import STATUS_NAMES, Rules
    from .net.aio import AsyncClient
    from .net.client import Client
    from .net.gateway import Gateway
    from .query.attach import attach
