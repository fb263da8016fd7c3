"""ringflow: a multi-process event engine with a Cython core.

Events (32-byte records) are routed by key into single-producer rings in
shared memory; one worker process per shard folds them into per-series
state that any process reads without a lock.

>>> import engine
>>> with engine.Engine(workers=2) as eng:                       # doctest: +SKIP
...     eng.submit(engine.make_events(["web-01"], "cpu", None, [0.93]))
...     eng.flush()
...     eng.get("web-01", "cpu")["last"]
"""

from . import errors
from .alerts import AlertStream
from .client import AsyncClient, Client
from .config import WAIT_STRATEGIES, EngineConfig
from .core import Engine, Producer
from .gateway import Gateway
from .health import STATUS_NAMES, Alert
from .records import (
    ALERT_DTYPE,
    DEFAULT_TS_MAX,
    DEFAULT_TS_MIN,
    EVENT_DTYPE,
    STATE_DTYPE,
    entity_id,
    make_events,
    metric_id,
)
from .rules import Rules, parse_duration
from .shm import list_segments

__version__ = "0.1.0"

__all__ = [
    "ALERT_DTYPE",
    "Alert",
    "AlertStream",
    "AsyncClient",
    "Client",
    "DEFAULT_TS_MAX",
    "DEFAULT_TS_MIN",
    "EVENT_DTYPE",
    "STATE_DTYPE",
    "WAIT_STRATEGIES",
    "Engine",
    "EngineConfig",
    "Producer",
    "Gateway",
    "Rules",
    "STATUS_NAMES",
    "entity_id",
    "errors",
    "list_segments",
    "make_events",
    "metric_id",
    "parse_duration",
    "__version__",
]
