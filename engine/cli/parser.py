"""The ``ringflow`` argument parser: sub-commands, their help and epilogs,
and the argparse types that check values as they are parsed (those of
``serve`` are the validators of :mod:`engine.cli.serve`, so that flags and
the TOML file accept exactly the same values)."""

from __future__ import annotations

import argparse

from ..core.config import FSYNC_POLICIES, WAIT_STRATEGIES
from ..net.protocol import DEFAULT_HOST, DEFAULT_PORTS

__all__ = ["build_parser"]


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
    return value


def _listed(text: str, allowed, what: str, case=str.upper) -> list[str]:
    """A comma-separated list of names among ``allowed`` (compared after
    ``case``), at least one; else an argparse error naming them."""
    names = [case(t.strip()) for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in allowed]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"{what} are a comma-separated list of {', '.join(allowed)}, got {text!r}")
    return names


def _statuses(text: str) -> list[str]:
    from ..health.rules import STATUS_NAMES

    return _listed(text, STATUS_NAMES, "statuses")


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _checked(check, name: str):
    """An argparse ``type=`` from a validator of :mod:`engine.cli.serve`, so that
    flags and the TOML file accept exactly the same values."""

    def convert(text: str):
        from .serve import SettingsError

        try:
            return check(text)
        except SettingsError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = name
    return convert


def _validators():
    from . import serve as S

    return {
        "int": _checked(S.positive_int, "positive integer"),
        "float": _checked(S.positive_float, "positive number"),
        "duration": _checked(S.duration, "duration"),
        "rules": _checked(S.rules_file, "rules file"),
        "port": _checked(S.port, "port"),
        "ports": _checked(S.parse_ports, "ports"),
        "host": _checked(S.normalize_host, "host"),
        "data_dir": _checked(S.data_dir, "data dir"),
    }


class _Formatter(argparse.HelpFormatter):
    """Wraps one-paragraph descriptions; keeps multi-line epilogs (the TOML
    example) as written."""

    def _fill_text(self, text, width, indent):
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def _add_endpoint_options(p: argparse.ArgumentParser, v: dict, *, serve: bool) -> None:
    g = p.add_argument_group("endpoints")
    verb = "bind" if serve else "connect to"
    g.add_argument("--host", type=v["host"], default=None, metavar="tcp://HOST",
                   help=f"host to {verb}, without a port (default: {DEFAULT_HOST}"
                        + ("; tcp://* binds every interface)" if serve else ")"))
    g.add_argument("--ports", type=v["ports"], default=None, metavar="BASE|I,A,Q,P",
                   help="a base port for the four endpoints (7710 means 7710-7713) or four "
                        "comma-separated ports: ingest, acked, query, alerts "
                        f"(default: {','.join(map(str, DEFAULT_PORTS.values()))})")
    for name, port in DEFAULT_PORTS.items():
        what = {"ingest": "fire-and-forget ingest (PULL)", "acked": "acked ingest (ROUTER)",
                "query": "queries (ROUTER)", "alerts": "alerts (PUB)"}[name]
        g.add_argument(f"--{name}-port", type=v["port"], default=None, metavar="PORT",
                       help=f"port of {what}; wins over --ports (default: {port})")
    _add_curve_options(p, serve=serve)


def _add_curve_options(p: argparse.ArgumentParser, *, serve: bool) -> None:
    """CURVE keys (README, "Security"): files from ``ringflow keys``."""
    g = p.add_argument_group("security (CURVE; keys from `ringflow keys`)")
    if serve:
        g.add_argument("--curve-secret", metavar="FILE", default=None,
                       help="the server's secret key (NAME.key_secret): CURVE on every endpoint")
        g.add_argument("--curve-clients", metavar="DIR", default=None,
                       help="public keys (*.key) allowed to connect")
        g.add_argument("--curve-admins", metavar="DIR", default=None,
                       help="public keys (*.key) allowed to connect and to change the server "
                            "(ops reload, names)")
        g.add_argument("--insecure", action="store_true", default=None,
                       help="without CURVE, allow binding beyond loopback (logged as a "
                            "warning at every start)")
    else:
        g.add_argument("--curve-secret", metavar="FILE", default=None,
                       help="this client's secret key (NAME.key_secret)")
        g.add_argument("--curve-server", metavar="FILE", default=None,
                       help="the server's public key (its NAME.key)")


def _add_client_options(p: argparse.ArgumentParser, v: dict, json: str | None = None) -> None:
    """The options of every client of a running server: ``--json`` (printing
    JSON instead of ``json``) when given, the endpoints and ``--timeout``."""
    if json is not None:
        p.add_argument("--json", action="store_true", help=f"print JSON instead of {json}")
    _add_endpoint_options(p, v, serve=False)
    p.add_argument("--timeout", type=v["float"], default=5.0, metavar="SECONDS",
                   help="seconds to wait for the gateway before giving up with exit code 2 "
                        "(default: 5)")


SERVE_EPILOG = """\
config file (TOML); every key is optional, flags win over the file:

  [engine]
  workers = 4                 # --workers
  ring_capacity = 65536       # --ring-capacity (records per ring)
  table_capacity = 262144     # --table-capacity (series per worker)
  wait = "block"              # --wait: block | sleep | yield | spin
  window = "60s"              # --window: width of the tumbling windows
  lateness = "10s"            # --lateness (default: 10s, or the window if shorter)
  half_life = "10s"           # --half-life of the EWMA
  views = [1, 5, 15]          # horizons of the sliding views, in windows
  alert_capacity = 16384      # alerts each worker's alert ring holds (full: it waits)
  alert_log = 262144          # numbered alerts kept for subscribers that ask (op alerts)
  tick = "250ms"              # how often workers check TTLs
  worker_timeout = "2s"       # --worker-timeout: a worker silent this long is replaced
  max_restarts = 5            # --max-restarts: failed starts in a row before degraded
  data_dir = "ringflow-data"  # --data-dir: the journal; "none" keeps everything in memory
  fsync = "interval"          # --fsync: interval | always | never

  [health]
  rules = "rules.toml"        # --rules; relative to this file's directory

  [gateway]
  host = "tcp://127.0.0.1"    # --host
  ports = 7710                # --ports: base port, or [7710, 7711, 7712, 7713]
  ingest_port = 7710          # --ingest-port (and acked_port, query_port,
                              #   alerts_port); each wins over ports
  max_message_bytes = 67108864  # --max-message-bytes
  ack_timeout = 5.0           # --ack-timeout (seconds)
  hwm = 1000                  # --hwm (messages)
  max_queued_bytes = 268435456  # bytes one connection may queue (lowers hwm)
  curve_secret = "keys/server.key_secret"  # --curve-secret (paths relative
  curve_clients = "clients"   # --curve-clients          to this file)
  curve_admins = "admins"     # --curve-admins
  insecure = false            # --insecure

  [serve]
  quiet = false               # --quiet
  status_interval = 5.0       # --status-interval (seconds)

Durations are seconds (60, 0.25) or strings: "250ms", "30s", "5m", "1h".
An unknown section or key is an error that names it; so is a rules file
that is missing or invalid (format: docs/health.md).

signals: SIGINT (Ctrl-C) and SIGTERM stop the gateway, drain what it read,
print the final counters ("final: ..." line) and exit 0.  SIGHUP re-reads
the rules file and prints one line saying what happened; invalid rules are
reported and the old ones kept.  Sent to the whole process group, these
signals reach only the server, never its workers.

examples:
  ringflow serve --rules rules.toml --window 30s
  ringflow serve --config ringflow.toml --workers 8
  kill -HUP $(pgrep -f 'ringflow serve')     # reload the rules
"""

SEND_EPILOG = """\
JSON lines (FILE, or - for stdin): one object per line,
  {"entity": "web-01", "metric": "cpu", "value": 0.93, "ts": 1732300000000000000}
with ts optional (nanoseconds since the epoch, an integer or a number such as
1.5e18; the gateway's clock if absent).  The file's bytes are sent as they
are, in messages of --batch lines; malformed lines are reported with their
line numbers and skipped, the other lines of their message are sent.

exit codes: 0 all sent; 1 malformed lines, or records or messages refused by
the gateway (--ack); 2 usage error or no gateway answering; 130 interrupted.
"""

QUERY_EPILOG = """\
For each metric: status and since when (event time), last value, EWMA,
lifetime count/mean/std/min/max, the current window's count/mean/min/max
and p50/p95/p99, the sliding views (view1, view5, view15 with the default
views), the age of the last event and how many came stale or late.

examples:
  ringflow query web-17                  # every metric of web-17
  ringflow query web-17 --metric disk
  ringflow query web-17 --json

exit codes: 0 found; 1 no such series (or entity); 2 usage error or no
gateway answering within --timeout.
"""

STATUS_EPILOG = """\
Entities are listed worst first (CRIT, STALE, WARN, then OK with --all),
the longest-standing first within a status; under each, its series at that
level or worse with status, since when (event time, and how long ago),
last value, EWMA and p95 of the current window.

examples:
  ringflow status
  ringflow status --all --limit 20
  ringflow status --json | jq '.entities[].entity'

exit codes: 0 success (whatever the statuses); 1 the gateway refused the
query; 2 usage error or no gateway answering within --timeout.
"""

ALERTS_EPILOG = """\
One line per alert, event time in local time:
  2026-11-22 12:04:31.123 web-17 disk OK -> CRIT (last = 0.97)
With --json, the JSON the gateway publishes, plus "topic" (the new status):
  {"topic": "CRIT", "entity": "web-17", "metric": "disk", "entity_id": ...,
   "metric_id": ..., "old": "OK", "new": "CRIT", "stat": "last",
   "value": 0.97, "ts": 1795345471123000000, "worker": 1}
Every alert has a number ("seq" in --json).  An alert that did not reach
this subscriber (a burst past ZeroMQ's queue, a subscription not yet live,
a broken connection) is fetched from the server's alert log and printed
in order; one the log no longer holds is reported by a "missed N alerts"
line on stderr (with --json a {"topic": "MISSED", "missed": N, ...} line).
--since N prints the alerts after number N first (what a consumer that
stopped asks for when it comes back), then follows.  When a worker
dies, hangs or is replaced, an ENGINE line says so on stderr (with --json a
{"topic": "ENGINE", "worker": 1, "old": "ok", "new": "down", "cause": ...}
line); its series read at least STALE until "recovering -> ok".  Without
--since, only alerts that happen while following are shown.

examples:
  ringflow alerts                            # follow until Ctrl-C
  ringflow alerts --status CRIT,STALE
  ringflow alerts --count 1 --timeout 60 --json
  ringflow alerts --since 1200 --timeout 5   # what came after alert 1200

exit codes: 0 done (--count reached, --timeout passed without --count, or
Ctrl-C without --count); 1 fewer than --count alerts before --timeout; 2
usage error or no gateway answering; 130 interrupted with --count.
"""

RELOAD_EPILOG = """\
Without --rules the server re-reads the rules file it was started with
(`ringflow serve --rules FILE`; SIGHUP to the server does the same).  With
--rules, FILE is read here and its rules are sent to the server; the
server's own file is unchanged, so its next SIGHUP reads that file again.
Invalid rules are refused and the old ones stay in force.  Windows,
statistics and status history are kept; every series is re-evaluated
against its new rule at once.

examples:
  ringflow reload
  ringflow reload --rules /etc/ringflow/rules.toml

exit codes: 0 reloaded; 1 refused (invalid rules, or no rules file on the
server); 2 usage error or no gateway answering within --timeout.
"""


BENCH_EPILOG = """\
examples:
  ringflow bench                                  the whole suite (minutes)
  ringflow bench --quick                          a smaller run, under a minute
  ringflow bench --only scaling --workers 1,2,4,8,16
  ringflow bench --only contenders --events 1000000 --out /tmp/bench

exit codes: 0 every run completed (WRONG contenders are findings); 1 a
contender crashed, raised or timed out (recorded in results.json); 2 usage
error.
"""


def _bench_sections(text: str) -> list[str]:
    from ..suite.runner import SECTIONS

    return _listed(text, SECTIONS, "sections", str.lower)


def _int_list(text: str) -> list[int]:
    try:
        values = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        values = []
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(
            f"a comma-separated list of positive integers, got {text!r}")
    return values


def _command(sub, name: str, *, help: str, description: str,
             epilog: str | None = None) -> argparse.ArgumentParser:
    """One sub-command's parser; ``args._parser`` is it, so that a command
    reports a usage error found after parsing under its own usage line."""
    p = sub.add_parser(name, formatter_class=_Formatter, epilog=epilog, help=help,
                       description=description)
    p.set_defaults(_parser=p)
    return p


def _version() -> str:
    """The installed distribution's version (pyproject.toml is its one
    source); ``engine.__version__`` when run from a source tree that was
    never installed."""
    from importlib import metadata

    try:
        return metadata.version("ringflow")
    except metadata.PackageNotFoundError:
        from .. import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    """The ``ringflow`` argument parser: one sub-command per command.

    Returns
    -------
    argparse.ArgumentParser
        Parsed arguments carry ``command`` and ``_parser`` (the
        sub-command's parser, for usage errors found later).
    """
    v = _validators()
    parser = argparse.ArgumentParser(
        prog="ringflow",
        description="ringflow: a multi-process event engine with a Cython core.",
    )
    parser.add_argument("--version", action="version", version=f"ringflow {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    demo = _command(
        sub, "demo",
        help="run an engine with health rules on a synthetic fleet going through incidents",
        description="Start an engine with health rules and ingest a synthetic fleet at "
                    "full speed while four hosts go through scripted incidents (cpu "
                    "hysteresis, a disk filling up, a p99 latency spike, a host going "
                    "silent and coming back); print each alert as it happens, then the "
                    "entities not OK and the workers' counters.  Exits 1 when the alerts "
                    "are not exactly the script's up to the step reached.",
    )
    demo.add_argument("--workers", type=_positive_int, default=2,
                      help="worker processes (default: 2)")
    demo.add_argument("--seconds", type=_positive_float, default=5.0,
                      help="seconds of ingest (default: 5)")
    demo.add_argument("--hosts", type=_positive_int, default=2000,
                      help="hosts in the synthetic fleet, five metrics each, at least 5 "
                           "(default: 2000)")
    demo.add_argument("--batch", type=_positive_int, default=16384,
                      help="events per submitted batch (default: 16384)")
    demo.add_argument("--wait", choices=WAIT_STRATEGIES, default="block",
                      help="wait strategy of workers and producers (default: block)")
    demo.add_argument("--seed", type=_non_negative_int, default=0,
                      help="seed of the calm hosts' readings (default: 0)")

    # --- serve ---
    serve = _command(
        sub, "serve", epilog=SERVE_EPILOG,
        help="run an engine behind its ZeroMQ gateway until SIGINT or SIGTERM",
        description="Start the engine's workers and its ZeroMQ gateway (ingest, acked "
                    "ingest, queries, alerts), print the endpoints and a readiness line "
                    "('ringflow serving on ...'), then serve until SIGINT or SIGTERM "
                    "(SIGHUP re-reads the rules file), drain, print the final counters "
                    "and exit 0.",
    )
    serve.add_argument("--config", metavar="FILE.toml",
                       help="TOML settings file (format below); flags win over it")
    e = serve.add_argument_group("engine")
    e.add_argument("--workers", type=v["int"], metavar="N",
                   help="worker processes, one shard each (default: 2)")
    e.add_argument("--ring-capacity", type=v["int"], metavar="RECORDS",
                   help="records per ring, rounded up to a power of two (default: 65536)")
    e.add_argument("--table-capacity", type=v["int"], metavar="SERIES",
                   help="series each worker can hold (default: 262144)")
    e.add_argument("--wait", choices=WAIT_STRATEGIES, default=None,
                   help="what idle workers and producers facing full rings do "
                        "(default: block, near 0%% CPU when idle)")
    e.add_argument("--window", type=v["duration"], metavar="DURATION",
                   help="width of the tumbling windows, in event time (default: 60s)")
    e.add_argument("--lateness", type=v["duration"], metavar="DURATION",
                   help="how long after its end a window still takes late events, at most "
                        "the window (default: 10s, or the window if shorter; a rules file's "
                        "[defaults] lateness wins)")
    e.add_argument("--half-life", type=v["duration"], metavar="DURATION",
                   help="half-life of the EWMA, in event time (default: 10s)")
    e.add_argument("--worker-timeout", type=v["duration"], metavar="DURATION",
                   help="a worker whose loop has not turned for this long is declared hung, "
                        "killed and replaced; must exceed the tick (default: 2s)")
    e.add_argument("--max-restarts", type=v["int"], metavar="N",
                   help="failed starts of a shard's worker in a row before the shard is "
                        "left degraded (default: 5; a worker killed after serving is "
                        "always replaced)")
    d = serve.add_argument_group("durability (docs/journal.md)")
    d.add_argument("--data-dir", type=v["data_dir"], metavar="DIR",
                   help="where the journal lives: every batch is journaled before it is "
                        "applied or acknowledged, and a restart on the same dir recovers "
                        "the state; 'none' keeps everything in memory "
                        "(default: ./ringflow-data)")
    d.add_argument("--fsync", choices=FSYNC_POLICIES, default=None,
                   help="when the journal reaches the disk, as Redis' appendfsync: "
                        "'always' before each batch is applied, 'interval' once a second "
                        "(up to 1 s lost if the machine crashes), 'never' when the OS "
                        "decides; under every policy a crash of ringflow itself loses "
                        "nothing acknowledged (default: interval)")
    h = serve.add_argument_group("health")
    h.add_argument("--rules", type=v["rules"], metavar="FILE",
                   help="health rules (TOML, docs/health.md); SIGHUP re-reads the file "
                        "(default: no rules, every series OK or STALE)")
    _add_endpoint_options(serve, v, serve=True)
    g = serve.add_argument_group("gateway")
    g.add_argument("--max-message-bytes", type=v["int"], metavar="BYTES",
                   help="larger ingest messages are rejected (default: 67108864)")
    g.add_argument("--ack-timeout", type=v["float"], metavar="SECONDS",
                   help="how long an acked message may wait for room in the rings before "
                        "it is answered 'backpressure' (default: 5)")
    g.add_argument("--hwm", type=v["int"], metavar="MESSAGES",
                   help="ZeroMQ receive high-water mark of the ingest sockets (default: 1000)")
    o = serve.add_argument_group("output")
    o.add_argument("--quiet", action=argparse.BooleanOptionalAction, default=None,
                   help="no periodic status line (--no-quiet overrides quiet = true in "
                        "the file)")
    o.add_argument("--status-interval", type=v["float"], metavar="SECONDS",
                   help="seconds between status lines (default: 5)")
    m = serve.add_argument_group("metrics (docs/metrics.md)")
    m.add_argument("--metrics-port", type=int, metavar="PORT",
                   help="serve Prometheus metrics on http://HOST:PORT/metrics "
                        "(default: off; 0 picks a free port)")
    m.add_argument("--metrics-host", default="127.0.0.1", metavar="HOST",
                   help="address of the metrics endpoint (default: 127.0.0.1; "
                        "non-loopback needs --insecure: /metrics has no authentication)")
    lg = serve.add_argument_group("logs")
    lg.add_argument("--log-format", choices=("logfmt", "json", "rich"),
                    help="events (status, faults, reloads) on stderr, one per line "
                         "(default: rich on a terminal, else logfmt)")
    lg.add_argument("--log-level", choices=("debug", "info", "warning", "error"),
                    help="least level logged (default: info)")

    # --- send ---
    send = _command(
        sub, "send", epilog=SEND_EPILOG,
        help="send synthetic server-health load, or JSON lines, to a running server",
        description="Without FILE, send synthetic server-health events (hosts web-0000... "
                    "with cpu, mem, disk, latency_ms, errors) as fast as possible or at "
                    "--rate, with a live progress line, until --seconds or --events (or "
                    "Ctrl-C).  With FILE or - (stdin), send its JSON lines in batches.",
    )
    send.add_argument("source", nargs="?", metavar="FILE|-",
                      help="JSON-lines file to send, or - for stdin (default: synthetic load)")
    send.add_argument("--rate", type=v["float"], metavar="EV_PER_S",
                      help="events (or lines) per second (default: as fast as possible)")
    send.add_argument("--entities", type=v["int"], metavar="N",
                      help="synthetic hosts, five metrics each (default: 1000)")
    limit = send.add_mutually_exclusive_group()
    limit.add_argument("--seconds", type=v["float"], metavar="S",
                       help="stop synthetic load after S seconds")
    limit.add_argument("--events", type=v["int"], metavar="N",
                       help="stop synthetic load after N events")
    send.add_argument("--batch", type=v["int"], metavar="N",
                      help="events (or JSON lines) per message (default: 4096; "
                           "with --rate, about rate/100)")
    send.add_argument("--ack", action="store_true",
                      help="use the acked endpoint: wait for each message's reply and "
                           "count what the gateway accepted; a message that gets no reply is "
                           "sent again under the same producer sequence, so a server restart "
                           "never applies it twice (PROTOCOL.md)")
    send.add_argument("--seed", type=int, metavar="N",
                      help="seed of the synthetic generator (default: 0)")
    _add_client_options(send, v)

    # --- query ---
    query = _command(
        sub, "query", epilog=QUERY_EPILOG,
        help="show one series, or every metric of an entity, with its health",
        description="Read the state of ENTITY's METRIC series (or of all its metrics) from a "
                    "running server: status, statistics, windows, quantiles, views.",
    )
    query.add_argument("entity", metavar="ENTITY", help="entity (host) name, e.g. web-0001")
    query.add_argument("metric", metavar="METRIC", nargs="?",
                       help="metric name, e.g. cpu (default: every metric of ENTITY); "
                            "the same as --metric")
    query.add_argument("--metric", dest="metric_option", metavar="METRIC",
                       help="show this metric only")
    query.add_argument("--ids", action="store_true",
                       help="ENTITY and METRIC are numeric ids, not names")
    _add_client_options(query, v, json="a table")

    # --- status ---
    status = _command(
        sub, "status", epilog=STATUS_EPILOG,
        help="list the entities that are not OK, worst first",
        description="List the entities with a series at WARN or worse (every entity with "
                    "--all), worst first, with since when, and each such series under it.",
    )
    status.add_argument("--all", action="store_true",
                        help="every entity, OK ones too")
    status.add_argument("--limit", type=v["int"], default=100, metavar="N",
                        help="entities to list, at most 100000; the server cuts the list, and "
                             "0 shows only the counts (default: 100)")
    _add_client_options(status, v, json="a table")

    # --- alerts ---
    alerts = _command(
        sub, "alerts", epilog=ALERTS_EPILOG,
        help="follow status changes (alerts) live",
        description="Subscribe to the server's alert endpoint and print each status change "
                    "as it happens, until Ctrl-C, --count alerts or --timeout.",
    )
    alerts.add_argument("--status", type=_statuses, metavar="S1,S2",
                        help="only changes to these statuses, e.g. CRIT,WARN "
                             "(of OK, WARN, STALE, CRIT; default: all)")
    alerts.add_argument("--json", action="store_true",
                        help="print each alert as one JSON line")
    alerts.add_argument("--count", type=v["int"], metavar="N",
                        help="stop after N alerts")
    alerts.add_argument("--since", type=v["int"], metavar="SEQ",
                        help="first print the alerts after number SEQ from the server's "
                             "alert log, then follow")
    alerts.add_argument("--timeout", type=v["float"], metavar="SECONDS",
                        help="stop after SECONDS without an alert (default: follow until "
                             "Ctrl-C); also the longest wait, up to 5 s, for the gateway to "
                             "answer at start")
    _add_endpoint_options(alerts, v, serve=False)

    # --- reload ---
    reload = _command(
        sub, "reload", epilog=RELOAD_EPILOG,
        help="reload the server's health rules",
        description="Ask a running server to re-read its rules file, or send it the rules "
                    "of FILE; print the rules now in force.",
    )
    reload.add_argument("--rules", metavar="FILE",
                        help="send the rules of this local TOML file instead")
    _add_client_options(reload, v)

    # --- stats ---
    stats = _command(
        sub, "stats",
        help="show the engine's counters per worker and the gateway's counters",
        description="Print the counters of a running server: per worker (applied; stale: "
                    "older than their series' newest event; late: the stale ones whose "
                    "window had closed; invalid; full: refused for want of room in the "
                    "table; series; alerts written and dropped; table fill, ring backlog), "
                    "of the gateway (messages, records accepted, rejections by reason, "
                    "queries) and the engine's totals with the alerts delivered.",
    )
    _add_client_options(stats, v, json="tables")

    # --- top, ls (issue 17) ---
    top = _command(sub, "top", help="a live view of a running server",
                   description="Refresh, every --interval seconds, the ingest and query "
                               "rates, the workers' counters, table and ring fill, restarts, "
                               "alert counters and the worst entities; q or Ctrl-C quits.")
    top.add_argument("--interval", type=v["float"], default=1.0, metavar="SECONDS",
                     help="seconds between frames (default: 1)")
    top.add_argument("--once", action="store_true", help="print one frame and exit")
    top.add_argument("--limit", type=_positive_int, default=10, metavar="N",
                     help="worst entities shown (default: 10)")
    _add_client_options(top, v)
    ls = _command(sub, "ls", help="list the engines running on this host",
                  description="List the ringflow engines running on this host (from the "
                              "record each publishes in shared memory): pid, name, state, "
                              "workers, uptime, data dir and endpoints.")
    ls.add_argument("--json", action="store_true", help="print JSON instead of a table")

    # --- repair ---
    repair = _command(
        sub, "repair",
        help="check a journal and cut it after its last valid batch",
        description="Check every frame of a ringflow journal (a data directory holding "
                    "shard-NNN/ directories, or one shard's directory) and, where one is "
                    "damaged, cut the journal there as redis-check-aof --fix does: the "
                    "damaged segment is truncated at the bad frame and every later segment "
                    "removed. What follows the cut is lost; it says how much. Without "
                    "damage it changes nothing. Exit 0 when the journal is (now) whole, 1 "
                    "on an error.",
    )
    repair.add_argument("data_dir", metavar="DATA_DIR",
                        help="the data directory (or one shard's directory)")
    repair.add_argument("--check", action="store_true",
                        help="only check and report; cut nothing (exit 1 if damaged)")

    # --- bench ---
    bench = _command(
        sub, "bench", epilog=BENCH_EPILOG,
        help="run the comparative benchmark suite on this host (issue #5)",
        description="Run every contender (a dict behind a lock, thread pools, asyncio "
                    "actors, worker processes, ringflow embedded and behind its gateway) on "
                    "the same seeded workload, check each final state against the oracle, "
                    "then push producers until p99 passes 10 ms, then scale ringflow's "
                    "workers. Writes results.json, report.md and PNG plots into "
                    "bench-results/<UTC timestamp>/ (or --out). A contender with a wrong "
                    "result is a finding reported as WRONG, not a failure of the command.",
    )
    bench.add_argument("--quick", action="store_true",
                       help="a ~20k-event workload, producers 1 and 4, workers 1 and 2: "
                            "under a minute")
    bench.add_argument("--only", type=_bench_sections, default=None, metavar="SECTIONS",
                       help="comma-separated sections to run among contenders, producers, "
                            "scaling (default: all)")
    bench.add_argument("--workers", type=_int_list, default=None, metavar="1,2,4",
                       help="worker counts of the scaling section (default: 1, 2, 4, ... up "
                            "to this host's cores)")
    bench.add_argument("--events", type=_positive_int, default=None, metavar="N",
                       help="events in the workload (default: 20000 with --quick, else "
                            "8000000; designs under 2 M events/s in a pilot run a 400000-event "
                            "prefix of it)")
    bench.add_argument("--out", default=None, metavar="DIR",
                       help="directory for the results (default: "
                            "bench-results/<UTC timestamp>/)")
    bench.add_argument("--seed", type=int, default=0, help="workload seed (default: 0)")
    bench.add_argument("--no-progress", action="store_true",
                       help="no progress bar (it goes to stderr)")
    keys = _command(
        sub, "keys", help="write a CURVE certificate pair (NAME.key, NAME.key_secret)",
        description="Write a ZeroMQ CURVE certificate pair with zmq.auth.create_certificates: "
                    "DIR/NAME.key (the public key: copy it into the server's --curve-clients "
                    "or --curve-admins directory, or give a server's to clients as "
                    "--curve-server) and DIR/NAME.key_secret (keep it private; mode 0600).")
    keys.add_argument("dir", metavar="DIR", help="directory to write into (created if missing)")
    keys.add_argument("--name", required=True, help="base name of the two files")
    keys.add_argument("--force", action="store_true", help="overwrite an existing pair")
    return parser
