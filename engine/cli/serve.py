"""``ringflow serve``: an engine and its ZeroMQ gateway as a long-running
server, configured from a TOML file and command-line flags.

Settings come from three layers, each overriding the one before: the
defaults, the ``--config`` file, then the flags.  The file has the sections
and keys of :data:`SCHEMA` (the flag ``--ring-capacity`` is the key
``ring_capacity`` of ``[engine]``)::

    [engine]
    workers = 4
    ring_capacity = 65536
    table_capacity = 262144
    wait = "block"            # block | sleep | yield | spin
    window = "60s"            # durations: seconds, or "250ms", "30s", "5m", "1h", "1d"
    lateness = "10s"          # default: 10 s, or the window if shorter
    half_life = "10s"
    views = [1, 5, 15]        # horizons of the sliding views, in windows
    alert_capacity = 16384
    alert_log = 262144
    tick = "250ms"

    [health]
    rules = "rules.toml"      # relative to this file's directory

    [gateway]
    host = "tcp://127.0.0.1"
    ports = 7710              # base port (ports 7710-7713), or [7710, 7711, 7712, 7713]
    ingest_port = 7710        # each of these wins over ``ports``
    acked_port = 7711
    query_port = 7712
    alerts_port = 7713
    max_message_bytes = 67108864
    ack_timeout = 5.0
    hwm = 1000
    curve_secret = "keys/server.key_secret"   # CURVE (README, "Security")
    curve_clients = "clients"                  # public keys allowed to connect
    curve_admins = "admins"                    # ... and to change the server
    insecure = false          # allow binds beyond loopback without CURVE
    max_queued_bytes = 268435456  # per connection: the hwm is lowered to fit

    [serve]
    quiet = false
    status_interval = 5.0

The rules file (docs/health.md) is read at start-up; a bad one is a usage
error.  SIGHUP re-reads it and hands it to :meth:`engine.Engine.reload_rules`:
the server prints one line saying what it did, and keeps the old rules when
the new file is invalid.  A client can ask for the same through the gateway
(op ``reload``, ``ringflow reload``).

The server runs until SIGINT or SIGTERM.  Either one stops the gateway from
reading, drains what it read into the state tables, prints the final
counters and stops the workers; the exit code is then 0.

A gateway thread that fails is reported on one line and restarted after a
back-off; once its restarts are exhausted (``GatewayConfig.max_restarts``
within its window) the server stops and exits 1 with the cause on stderr:
it never keeps running with a gateway thread down.

A worker that dies, is killed or hangs past ``--worker-timeout`` is replaced
on its shard by the engine's supervisor, and the server prints each step
(the ENGINE alerts of docs/faults.md); it never exits for a worker.  A shard
whose worker keeps dying at start is left degraded (reads of the others go
on), and the stop that follows exits 1 since its events could not be
applied.

Workers start with SIGTERM and SIGHUP blocked (the signal mask survives fork
and exec), and they ignore SIGINT themselves: a signal sent to the whole
process group (Ctrl-C in a terminal, ``kill -- -PGID``, systemd's default
stop or reload) reaches only the server, which drains and stops the workers
itself, or reloads the rules.  A worker whose server dies notices within
100 ms and exits on its own.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..core.config import FSYNC_POLICIES, WAIT_STRATEGIES, EngineConfig
from ..core.durations import format_duration, parse_duration
from ..errors import ConfigError, EngineError, GatewayDown, ServeError, SettingsError, WorkerDied
from ..health.alerts import EngineAlert
from ..net.protocol import DEFAULT_HOST, DEFAULT_PORTS

__all__ = [
    "SCHEMA",
    "ServeError",
    "SettingsError",
    "Settings",
    "load_toml",
    "resolve_settings",
    "parse_ports",
    "normalize_host",
    "run",
]

PORT_NAMES = tuple(DEFAULT_PORTS)  # ingest, acked, query, alerts


# --- validators: shared by argparse (type=) and the TOML loader ------------

def positive_int(value) -> int:
    """An integer >= 1 (from a flag's text or a TOML value)."""
    if isinstance(value, bool):
        raise SettingsError(f"must be a positive integer, got {value!r}")
    if isinstance(value, str):
        try:
            value = int(value.replace("_", ""), 0)
        except ValueError:
            raise SettingsError(f"must be a positive integer, got {value!r}") from None
    if not isinstance(value, int) or value < 1:
        raise SettingsError(f"must be a positive integer, got {value!r}")
    return value


def positive_float(value) -> float:
    """A finite number > 0."""
    if isinstance(value, bool):
        raise SettingsError(f"must be a positive number, got {value!r}")
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise SettingsError(f"must be a positive number, got {value!r}") from None
    if not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise SettingsError(f"must be a positive number, got {value!r}")
    return float(value)


def duration(value) -> str:
    """A duration: a number of seconds (``>= 0``) or a string such as
    ``"250ms"``, ``"30s"``, ``"5m"``; returned in its shortest exact
    spelling (``60`` -> ``"1m"``), which :class:`EngineConfig` reads back
    exactly."""
    if isinstance(value, str):
        # A flag's text: "90" means seconds here, as a number in TOML does
        # (parse_duration wants a unit in a string).
        try:
            value = float(value) if value.strip() else value
        except ValueError:
            pass
    try:
        return format_duration(parse_duration(value, "duration"))
    except ConfigError as exc:
        text = str(exc)
        if text.startswith("duration: "):
            text = "must be a duration: " + text.removeprefix("duration: ")
        raise SettingsError(text.removeprefix("duration ")) from None


def view_horizons(value) -> tuple:
    """Three positive integers, the horizons of the sliding views in windows
    (a TOML list, or ``"1,5,15"``)."""
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",")]
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise SettingsError(f"must be 3 positive integers such as [1, 5, 15], got {value!r}")
    try:
        out = tuple(positive_int(v) for v in value)
    except SettingsError:
        raise SettingsError(
            f"must be 3 positive integers such as [1, 5, 15], got {value!r}") from None
    if len(set(out)) != 3:
        raise SettingsError(f"must be 3 different horizons, got {value!r}")
    return out


def rules_file(value) -> str:
    """An existing file, as an absolute path: SIGHUP re-reads it, whatever
    the working directory is by then.  Its content is checked when the
    engine starts (a bad file is then a usage error too)."""
    if not isinstance(value, str) or not value.strip():
        raise SettingsError(f"must be the path of a rules TOML file, got {value!r}")
    path = os.path.abspath(os.path.expanduser(value))
    if not os.path.isfile(path):
        raise SettingsError(f"rules file not found: {value}")
    return path


def port(value) -> int:
    """A TCP port, 1..65535."""
    try:
        p = positive_int(value)
    except SettingsError:
        raise SettingsError(f"must be a TCP port in 1..65535, got {value!r}") from None
    if p > 65535:
        raise SettingsError(f"must be a TCP port in 1..65535, got {value!r}")
    return p


def wait_strategy(value) -> str:
    if value not in WAIT_STRATEGIES:
        raise SettingsError(f"must be one of {', '.join(WAIT_STRATEGIES)}, got {value!r}")
    return value


#: ``ringflow serve``'s data dir when none is given (as Prometheus' ./data).
DEFAULT_DATA_DIR = "ringflow-data"


def data_dir(value) -> str:
    """A data dir: an absolute path, or ``"none"`` (in memory, nothing
    journaled; a string, since a flag's None means "not given")."""
    if not isinstance(value, str) or not value.strip():
        raise SettingsError(f"must be a directory or 'none', got {value!r}")
    if value.strip().lower() == "none":
        return "none"
    return os.path.abspath(os.path.expanduser(value))


def fsync_policy(value) -> str:
    if value not in FSYNC_POLICIES:
        raise SettingsError(f"must be one of {', '.join(FSYNC_POLICIES)}, got {value!r}")
    return value


def boolean(value) -> bool:
    if not isinstance(value, bool):
        raise SettingsError(f"must be true or false, got {value!r}")
    return value


_HOST_RE = re.compile(r"^tcp://(\[[0-9A-Fa-f:.]+\]|[^\s:/\[\]]+)$")


def normalize_host(value) -> str:
    """``tcp://HOST`` (a bare host name or address gets ``tcp://``); ports are
    given separately, so ``tcp://host:7710`` is refused."""
    if not isinstance(value, str) or not value.strip():
        raise SettingsError(f"must be a host such as tcp://127.0.0.1, got {value!r}")
    text = value.strip()
    if "://" not in text:
        text = "tcp://" + text
    if not _HOST_RE.match(text):
        if re.match(r"^tcp://[^\[\]]*:\d+$", text):
            raise SettingsError(f"{value!r} carries a port; give ports with --ports or "
                                "--ingest-port/--acked-port/--query-port/--alerts-port")
        raise SettingsError(f"must be tcp://HOST (an address, a name or *), got {value!r}")
    return text


def parse_ports(value) -> dict:
    """Ports of the four endpoints from a base port (``7710`` means
    7710-7713) or four ports in the order ingest, acked, query, alerts
    (``"7710,7711,7712,7713"`` on the command line, a list in TOML)."""
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",")]
        value = parts[0] if len(parts) == 1 else parts
    if isinstance(value, (list, tuple)):
        if len(value) != len(PORT_NAMES):
            raise SettingsError(
                f"must be one base port or {len(PORT_NAMES)} ports "
                f"({','.join(PORT_NAMES)}), got {len(value)} values")
        return {name: port(v) for name, v in zip(PORT_NAMES, value)}
    base = port(value)
    if base + len(PORT_NAMES) - 1 > 65535:
        raise SettingsError(f"base port {base} leaves no room for {len(PORT_NAMES)} ports")
    return {name: base + i for i, name in enumerate(PORT_NAMES)}


def key_path(value) -> str:
    """A CURVE key file or key directory (checked when the server starts)."""
    if not isinstance(value, str) or not value:
        raise SettingsError(f"must be a path, got {value!r}")
    return os.path.abspath(os.path.expanduser(value))


#: Sections and keys of the TOML file, each with its validator and default.
SCHEMA: dict[str, dict[str, tuple]] = {
    "engine": {
        "workers": (positive_int, EngineConfig.workers),
        "ring_capacity": (positive_int, EngineConfig.ring_capacity),
        "table_capacity": (positive_int, EngineConfig.table_capacity),
        "wait": (wait_strategy, EngineConfig.wait),
        "window": (duration, EngineConfig.window),
        "lateness": (duration, EngineConfig.lateness),
        "half_life": (duration, EngineConfig.half_life),
        "views": (view_horizons, EngineConfig.views),
        "alert_capacity": (positive_int, EngineConfig.alert_capacity),
        "alert_log": (positive_int, EngineConfig.alert_log),
        "tick": (duration, EngineConfig.tick),
        "worker_timeout": (duration, EngineConfig.worker_timeout),
        "max_restarts": (positive_int, EngineConfig.max_restarts),
        "data_dir": (data_dir, DEFAULT_DATA_DIR),
        "fsync": (fsync_policy, EngineConfig.fsync),
    },
    "health": {
        "rules": (rules_file, None),
    },
    "gateway": {
        "host": (normalize_host, DEFAULT_HOST),
        "ports": (parse_ports, None),
        **{f"{name}_port": (port, p) for name, p in DEFAULT_PORTS.items()},
        "max_message_bytes": (positive_int, 64 << 20),
        "ack_timeout": (positive_float, 5.0),
        "hwm": (positive_int, 1000),
        # CURVE (README, "Security"); paths relative to the config file.
        "curve_secret": (key_path, None),
        "curve_clients": (key_path, None),
        "curve_admins": (key_path, None),
        "insecure": (boolean, False),
        "max_queued_bytes": (positive_int, 256 << 20),
    },
    "serve": {
        "quiet": (boolean, False),
        "status_interval": (positive_float, 5.0),
    },
}


@dataclass
class Settings:
    """Everything ``ringflow serve`` needs, after merging file and flags."""

    workers: int = EngineConfig.workers
    ring_capacity: int = EngineConfig.ring_capacity
    table_capacity: int = EngineConfig.table_capacity
    wait: str = EngineConfig.wait
    window: str = EngineConfig.window
    #: None: the engine's default (10 s, or the window if shorter).
    lateness: str | None = EngineConfig.lateness
    half_life: str = EngineConfig.half_life
    views: tuple = EngineConfig.views
    alert_capacity: int = EngineConfig.alert_capacity
    alert_log: int = EngineConfig.alert_log
    tick: str = EngineConfig.tick
    worker_timeout: str = EngineConfig.worker_timeout
    max_restarts: int = EngineConfig.max_restarts
    #: Absolute path of the data dir, or "none" (in memory).
    data_dir: str = os.path.abspath(DEFAULT_DATA_DIR)
    fsync: str = EngineConfig.fsync
    #: Absolute path of the rules file, or None (no rules).
    rules: str | None = None
    host: str = DEFAULT_HOST
    ports: dict = field(default_factory=lambda: dict(DEFAULT_PORTS))
    max_message_bytes: int = 64 << 20
    ack_timeout: float = 5.0
    hwm: int = 1000
    #: CURVE: the server's secret key file, the client and admin key dirs.
    curve_secret: str | None = None
    curve_clients: str | None = None
    curve_admins: str | None = None
    insecure: bool = False
    max_queued_bytes: int = 256 << 20
    quiet: bool = False
    status_interval: float = 5.0
    #: Prometheus endpoint (docs/metrics.md): None is off.
    metrics_port: int | None = None
    #: --log-format (None: rich on a terminal, else logfmt) and --log-level.
    log_format: str | None = None
    log_level: str = "info"
    metrics_host: str = "127.0.0.1"
    #: Where each setting came from: "default", the file's path, or "flag".
    origin: dict = field(default_factory=dict)

    @property
    def endpoints(self) -> dict:
        return {name: f"{self.host}:{p}" for name, p in self.ports.items()}

    def engine_config(self) -> EngineConfig:
        # The rules go as a Path: a str is also taken for TOML text.
        return EngineConfig(workers=self.workers, ring_capacity=self.ring_capacity,
                            table_capacity=self.table_capacity, wait=self.wait,
                            window=self.window, lateness=self.lateness,
                            half_life=self.half_life, views=self.views,
                            alert_capacity=self.alert_capacity,
                            alert_log=self.alert_log, tick=self.tick,
                            worker_timeout=self.worker_timeout,
                            max_restarts=self.max_restarts,
                            data_dir=None if self.data_dir == "none" else self.data_dir,
                            fsync=self.fsync,
                            rules=None if self.rules is None else Path(self.rules))


def _toml_module():
    if sys.version_info >= (3, 11):
        import tomllib
        return tomllib
    try:
        import tomli
    except ImportError:  # pragma: no cover - a dependency on 3.10
        raise SettingsError("reading a TOML config on Python 3.10 needs the tomli package "
                            "(pip install tomli)") from None
    return tomli


def load_toml(path: str) -> dict:
    """Read and check a config file; returns ``{(section, key): value}``.

    Raises
    ------
    SettingsError
        The file is missing or unreadable, is not TOML, or has an unknown
        section or key, or a value of the wrong type; the message names the
        file and the key.
    """
    toml = _toml_module()
    try:
        with open(path, "rb") as fh:
            data = toml.load(fh)
    except OSError as exc:
        raise SettingsError(f"cannot read config file {path}: {exc.strerror}") from None
    except toml.TOMLDecodeError as exc:
        raise SettingsError(f"config file {path} is not valid TOML: {exc}") from None
    out = {}
    for section, body in data.items():
        if section not in SCHEMA:
            what = "key" if not isinstance(body, dict) else "section"
            raise SettingsError(
                f"{path}: unknown {what} {section!r} (sections: "
                f"{', '.join(f'[{s}]' for s in SCHEMA)})")
        if not isinstance(body, dict):
            raise SettingsError(f"{path}: {section!r} must be a [{section}] section")
        known = SCHEMA[section]
        for key, value in body.items():
            if key not in known:
                raise SettingsError(
                    f"{path}: unknown key {key!r} in [{section}] (known keys: "
                    f"{', '.join(known)})")
            check = known[key][0]
            if ((section, key) == ("health", "rules") or key.startswith("curve_")) \
                    and isinstance(value, str):
                # Relative to the config file, so that the two can move together.
                value = os.path.join(os.path.dirname(os.path.abspath(path)),
                                     os.path.expanduser(value))
            try:
                out[(section, key)] = check(value)
            except SettingsError as exc:
                raise SettingsError(f"{path}: [{section}] {key} {exc}") from None
    return out


#: argparse destination of each flag -> (section, key) in the file.
FLAG_KEYS = {
    "workers": ("engine", "workers"),
    "ring_capacity": ("engine", "ring_capacity"),
    "table_capacity": ("engine", "table_capacity"),
    "wait": ("engine", "wait"),
    "window": ("engine", "window"),
    "lateness": ("engine", "lateness"),
    "half_life": ("engine", "half_life"),
    "views": ("engine", "views"),
    "alert_capacity": ("engine", "alert_capacity"),
    "alert_log": ("engine", "alert_log"),
    "tick": ("engine", "tick"),
    "worker_timeout": ("engine", "worker_timeout"),
    "max_restarts": ("engine", "max_restarts"),
    "data_dir": ("engine", "data_dir"),
    "fsync": ("engine", "fsync"),
    "rules": ("health", "rules"),
    "host": ("gateway", "host"),
    "ports": ("gateway", "ports"),
    "ingest_port": ("gateway", "ingest_port"),
    "acked_port": ("gateway", "acked_port"),
    "query_port": ("gateway", "query_port"),
    "alerts_port": ("gateway", "alerts_port"),
    "max_message_bytes": ("gateway", "max_message_bytes"),
    "ack_timeout": ("gateway", "ack_timeout"),
    "hwm": ("gateway", "hwm"),
    "curve_secret": ("gateway", "curve_secret"),
    "curve_clients": ("gateway", "curve_clients"),
    "curve_admins": ("gateway", "curve_admins"),
    "insecure": ("gateway", "insecure"),
    "max_queued_bytes": ("gateway", "max_queued_bytes"),
    "quiet": ("serve", "quiet"),
    "status_interval": ("serve", "status_interval"),
}


def resolve_settings(args: argparse.Namespace) -> Settings:
    """Merge defaults, ``args.config`` and the flags (a flag left at ``None``
    was not given).  Ports: the file's ``ports``, then its ``*_port`` keys,
    then ``--ports``, then the ``--*-port`` flags."""
    file_values = load_toml(args.config) if getattr(args, "config", None) else {}
    s = Settings()
    for layer, origin in ((file_values, getattr(args, "config", None)), (None, "flag")):
        for dest, (section, key) in FLAG_KEYS.items():
            if layer is not None:
                if (section, key) not in layer:
                    continue
                value = layer[(section, key)]
            else:
                value = getattr(args, dest, None)
                if value is None:
                    continue
            if key == "ports":
                s.ports.update(value)
                for name in PORT_NAMES:
                    s.origin[f"{name}_port"] = origin
            elif key.endswith("_port"):
                s.ports[key[:-5]] = value
                s.origin[key] = origin
            else:
                setattr(s, key, value)
                s.origin[key] = origin
    if len(set(s.ports.values())) != len(s.ports):
        raise SettingsError(f"the four endpoints need four different ports, got {s.ports}")
    try:
        s.engine_config()
    except ConfigError as exc:
        raise SettingsError(str(exc)) from None
    _metrics_settings(s, args)
    return s


def _metrics_settings(s: Settings, args: argparse.Namespace) -> None:
    """The metrics flags (flags only, not in the TOML file), checked now so
    that a refused bind is a usage error before anything starts."""
    from ..observe.metrics import MetricsError, check_bind

    s.metrics_port = getattr(args, "metrics_port", None)
    s.metrics_host = getattr(args, "metrics_host", None) or s.metrics_host
    s.log_format = getattr(args, "log_format", None)
    s.log_level = getattr(args, "log_level", None) or s.log_level
    if s.metrics_port is not None:
        if not 0 <= s.metrics_port <= 65535:
            raise SettingsError(f"--metrics-port {s.metrics_port} is not a port (0..65535)")
        try:
            check_bind(s.metrics_host, s.insecure)
        except MetricsError as exc:
            raise SettingsError(str(exc)) from None


# --- running --------------------------------------------------------------

_SOCKETS = {"ingest": "PULL", "acked": "ROUTER", "query": "ROUTER", "alerts": "PUB"}
#: Each one stops the server cleanly (drain, final counters, exit 0).
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: Re-reads the rules file.
_RELOAD_SIGNAL = signal.SIGHUP
#: Blocked in the workers for their whole life (they ignore SIGINT already).
_BLOCKED_IN_WORKERS = {signal.SIGTERM, signal.SIGHUP}


def journal_summary(eng) -> str:
    """One line on the data dir and what the start recovered from it."""
    cfg, rec = eng.config, eng.recovery
    if rec is None:
        return "none: the state lives in memory only (serve --data-dir DIR keeps it)"
    text = f"{cfg.data_dir}, fsync={cfg.fsync}: "
    parts = []
    if rec.snapshot is not None:
        taken = time.localtime(rec.snapshot["created_ns"] / 1e9)
        parts.append(f"{rec.snapshot['series']:,} series from the snapshot of "
                     f"{time.strftime('%H:%M:%S', taken)}")
    if rec.frames:
        parts.append(f"{rec.events:,} journaled events ({rec.frames:,} batches)")
    if parts:
        text += f"recovered {' + '.join(parts)} in {rec.seconds:.2f}s"
    else:
        text += "nothing to recover"
    if rec.torn_tails:
        cut = sum(s.torn["bytes"] for s in rec.shards if s.torn)
        text += f"; cut {rec.torn_tails} torn tail(s), {cut:,} bytes"
    return text


def _rules_summary(rules) -> str:
    n = len(rules.rules)
    return f"{n} rule{'s' if n != 1 else ''}, {rules.describe().splitlines()[0]}"


class _Reloader:
    """Rule reloads, from SIGHUP (main thread) and from the gateway's
    ``reload`` op (its query thread, through ``Gateway.reload_hook``).

    One at a time: :meth:`engine.Engine.reload_rules` rewrites one shared
    segment under one generation word, so two concurrent reloads could
    leave the workers a mix of both rule sets."""

    def __init__(self, engine, path: str | None, say, warn=None) -> None:
        self.engine = engine
        self.path = path
        self._say = say
        # Refused and failed reloads: a warning when serve logs (--log-level).
        self._warn = warn or say
        self._lock = threading.Lock()

    def _reload(self, rules):
        with self._lock:
            return self.engine.reload_rules(rules)

    def __call__(self, rules=None):
        """The gateway's hook: ``None`` re-reads the rules file, anything
        else is rules sent inline.  Raises what ``reload_rules`` raises,
        which the gateway turns into an error reply."""
        if rules is None and self.path is None:
            raise ConfigError("this gateway has no rules file (serve without --rules); "
                              "send rules inline")
        what = f"from {self.path}" if rules is None else "sent inline"
        try:
            new = self._reload(Path(self.path) if rules is None else rules)
        except ConfigError as exc:
            self._warn(f"a client's rules reload ({what}) refused, keeping the old rules: {exc}")
            raise
        except EngineError as exc:
            self._warn(f"a client's rules reload ({what}) failed: {exc}")
            raise
        if rules is None:
            self._say(f"rules reloaded from {self.path} at a client's request: "
                      f"{_rules_summary(new)}")
        else:
            again = f"; SIGHUP re-reads {self.path}" if self.path else ""
            self._say(f"rules replaced by a client (sent inline{again}): {_rules_summary(new)}")
        return new

    def on_sighup(self) -> None:
        """Re-read the rules file; print what happened, keep the old rules
        if the new ones are invalid.  A dead worker is raised (the server
        then stops)."""
        if self.path is None:
            self._say("received SIGHUP: no rules file to re-read (serve --rules FILE); "
                      "still serving")
            return
        try:
            new = self._reload(Path(self.path))
        except WorkerDied:
            raise
        except ConfigError as exc:
            self._warn(f"received SIGHUP: rules file {self.path} not reloaded, keeping the old "
                      f"rules: {exc}")
            return
        except EngineError as exc:
            self._warn(f"received SIGHUP: rules reload failed: {exc}")
            return
        self._say(f"received SIGHUP: rules reloaded from {self.path}: {_rules_summary(new)}")


def _curve_server(settings: Settings):
    """The CURVE server of the settings (None without --curve-secret), after
    the bind check: a usage problem becomes a :class:`ServeError`."""
    from ..net import security

    try:
        curve = None
        if settings.curve_secret is not None:
            curve = security.CurveServer.from_files(
                settings.curve_secret, settings.curve_clients, settings.curve_admins)
        elif settings.curve_clients or settings.curve_admins:
            raise EngineError("--curve-clients/--curve-admins need --curve-secret "
                              "(the server's secret key)")
        security.check_exposure(settings.endpoints, curve, settings.insecure)
    except EngineError as exc:
        raise ServeError(str(exc)) from None
    return curve
def _start_metrics(eng, gateway, settings: Settings):
    from ..observe.metrics import MetricsError, MetricsServer

    try:
        return MetricsServer(eng, gateway, port=settings.metrics_port,
                             host=settings.metrics_host, insecure=settings.insecure)
    except MetricsError as exc:
        raise ServeError(str(exc)) from None


def run(settings: Settings, console=None) -> int:
    """Serve until SIGINT or SIGTERM, reloading the rules on SIGHUP; returns
    the exit code.

    Raises
    ------
    ServeError
        The engine or the gateway could not start; nothing is left behind.
    """
    from rich.console import Console

    from ..core.engine import Engine
    from .render import (
        counter_legend,
        final_line,
        serve_counters,
        serve_status_line,
        workers_table,
    )

    console = console or Console()
    # Events (status, faults, reloads, signals) are log lines on stderr
    # (engine/observe/logs.py); the banner, the ready line, the workers
    # table and the final line stay plain text on stdout for scripts.
    from ..observe import logs

    log = logs.setup(settings.log_format, settings.log_level)

    def say(text: str = "", markup: bool = False) -> None:
        console.print(text, soft_wrap=True, highlight=False, markup=markup)
        console.file.flush()

    stop = threading.Event()
    reload_wanted = threading.Event()
    # Wakes the main loop at once for either: the handlers only set flags,
    # the work is done by the loop (a handler may interrupt any code of
    # the main thread, a reload or a status line half done).
    wake = threading.Event()
    received: list[str] = []

    def on_signal(signum, _frame) -> None:
        if signum == _RELOAD_SIGNAL:
            reload_wanted.set()
        elif not stop.is_set():
            received.append(signal.Signals(signum).name)
            stop.set()
        wake.set()

    old_handlers = {s: signal.signal(s, on_signal) for s in (*_STOP_SIGNALS, _RELOAD_SIGNAL)}
    # Workers inherit the signal mask: with SIGTERM and SIGHUP blocked while
    # they start, such a signal sent to the whole process group reaches only
    # this process (they ignore SIGINT themselves).  Here it stays pending
    # until the engine is up, then runs on_signal.  The resource tracker
    # starts first: starting it unblocks SIGTERM.
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()
    signal.pthread_sigmask(signal.SIG_BLOCK, _BLOCKED_IN_WORKERS)
    eng = None
    metrics = None
    try:
        # Keys and binds are checked before any worker starts.
        curve = _curve_server(settings)
        try:
            eng = Engine(config=settings.engine_config())
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _BLOCKED_IN_WORKERS)
        try:
            gateway = eng.serve(settings.endpoints, max_message_bytes=settings.max_message_bytes,
                                ack_timeout=settings.ack_timeout, hwm=settings.hwm,
                                curve=curve, insecure=settings.insecure,
                                max_queued_bytes=settings.max_queued_bytes)
        except EngineError as exc:
            raise ServeError(str(exc)) from None
        reloader = _Reloader(eng, settings.rules, log.info, log.warning)
        gateway.reload_hook = reloader

        def on_fault(thread: str, cause: str, restarting: bool) -> None:
            # From the failed gateway thread: report now; a thread that
            # stays down wakes the main loop, which then stops the server.
            if restarting:
                log.warning(cause, extra={"fields": {"thread": thread, "restarting": True}})
            wake.set()

        gateway.fault_hook = on_fault

        def on_engine_alert(alert) -> None:
            # A worker's death, hang, replacement and return (docs/faults.md):
            # serve goes on through all of them, and says so.
            if isinstance(alert, EngineAlert):
                log.warning(str(alert))

        eng.on_alert(on_engine_alert)
        cfg = eng.config
        say(f"[bold]ringflow serve[/]: {cfg.workers} workers (pids "
            f"{', '.join(map(str, eng.pids))}), wait={cfg.wait}, rings of "
            f"{cfg.ring_slots:,} records, {cfg.table_capacity:,} series per worker",
            markup=True)
        say(f"  windows of {format_duration(cfg.window_ns)} (lateness "
            f"{format_duration(cfg.effective_lateness_ns)}), EWMA half-life "
            f"{format_duration(cfg.half_life_ns)}, views {list(cfg.views)} windows")
        if settings.rules is None:
            say("  rules   none: every series stays OK or STALE (serve --rules FILE)")
        else:
            say(f"  rules   {settings.rules}: {_rules_summary(eng.rules)}; SIGHUP re-reads it")
        say("  journal " + journal_summary(eng))
        if curve is not None:
            say(f"  security CURVE on every endpoint: {len(curve.allowed)} keys allowed, "
                f"{len(curve.admins)} of them admin")
        elif settings.insecure and gateway.config.exposed:
            say("  security WARNING: --insecure: endpoints beyond loopback without CURVE; "
                "anyone who reaches them can change the rules")
        else:
            say("  security none: loopback only (serve --curve-secret to authenticate)")
        if not settings.quiet:
            # Once, for the status lines that follow.
            say("  counters " + counter_legend())
        for name, url in gateway.endpoints.items():
            say(f"  {name:<7} {_SOCKETS[name]:<7} {url}")
        if settings.metrics_port is not None:
            metrics = _start_metrics(eng, gateway, settings)
            say(f"  metrics HTTP    {metrics.url}")
        ready = " ".join(f"{name}={url}" for name, url in gateway.endpoints.items())
        say(f"ringflow serving on {ready} (pid {os.getpid()}); Ctrl-C or SIGTERM to stop, "
            "SIGHUP to reload the rules")

        prev = None
        t_prev = time.monotonic()
        next_status = t_prev + settings.status_interval
        while not stop.is_set():
            wake.wait(min(1.0, settings.status_interval))
            # Cleared before the flags are read: a signal from here on sets
            # its flag before wake, so it is seen now or on the next turn.
            wake.clear()
            if stop.is_set():
                break
            if reload_wanted.is_set():
                reload_wanted.clear()
                reloader.on_sighup()
            # A dead or hung worker is replaced by the engine's supervisor
            # (announced by on_engine_alert); only the gateway stops serve.
            stats = eng.stats()
            if gateway.down is not None:
                raise gateway.down
            now = time.monotonic()
            if not settings.quiet and now >= next_status:
                counters = serve_counters(stats, gateway.stats())
                # The line without its leading clock time (the log's ts),
                # and its counters as fields.
                line = serve_status_line(counters, prev, now - t_prev).split(" ", 1)[1]
                log.info(line, extra={"fields": {"event": "status", **counters}})
                prev, t_prev = counters, now
                next_status = now + settings.status_interval

        log.info(f"received {received[0] if received else 'stop'}: stopping the gateway, "
                 "draining the rings")
        gateway.close()                 # stop reading; what was read is submitted
        eng.flush(30.0)                 # everything accepted is applied
        stats = eng.stats()
        counters = serve_counters(stats, gateway.stats())
        console.print(workers_table(stats))
        eng.close()
        say(final_line(counters))
        say("ringflow stopped cleanly")
        return 0
    except (WorkerDied, GatewayDown) as exc:
        raise ServeError(f"{exc}; stopping") from None
    finally:
        if metrics is not None:
            metrics.close()
        if eng is not None:
            eng.close()
        for s, h in old_handlers.items():
            signal.signal(s, h)
        # Last: what closing says is still logged in serve's format.
        logs.teardown()
