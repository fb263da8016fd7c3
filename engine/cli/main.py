"""The ``ringflow`` command (also ``python -m engine``).

Commands: ``demo`` (an embedded engine, no network), ``serve`` (an engine
behind its ZeroMQ gateway, until SIGINT/SIGTERM; SIGHUP reloads its rules),
and the clients of a running server: ``send``, ``query``, ``status``,
``alerts``, ``reload`` and ``stats``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from ..core.config import WAIT_STRATEGIES
from ..net.protocol import DEFAULT_HOST, DEFAULT_PORTS

#: Exit codes: 0 success; 1 a failure the command reports (nothing found,
#: malformed input, a refused query); 2 a usage error (argparse) or no
#: gateway answering within --timeout; 130 interrupted.
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_TIMEOUT, EXIT_INTERRUPTED = 0, 1, 2, 2, 130


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _statuses(text: str) -> list[str]:
    from ..health.rules import STATUS_NAMES

    names = [t.strip().upper() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in STATUS_NAMES]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"statuses are a comma-separated list of {', '.join(STATUS_NAMES)}, got {text!r}")
    return names


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


def _add_client_options(p: argparse.ArgumentParser, v: dict) -> None:
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
  alert_capacity = 4096       # alerts each worker's alert ring holds
  tick = "250ms"              # how often workers check TTLs

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
with ts optional (nanoseconds since the epoch; the gateway's clock if absent).
Malformed lines are reported with their line numbers and skipped.

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
When workers dropped alerts (full alert rings) a DROPPED notice comes
instead (on stderr; with --json a {"topic": "DROPPED", ...} line): the
statuses are still right, `ringflow status` shows them.  Only alerts that
happen while following are shown.

examples:
  ringflow alerts                            # follow until Ctrl-C
  ringflow alerts --status CRIT,STALE
  ringflow alerts --count 1 --timeout 60 --json

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

    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in SECTIONS]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"sections are a comma-separated list of {', '.join(SECTIONS)}, got {text!r}")
    return names


def _int_list(text: str) -> list[int]:
    try:
        values = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        values = []
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(
            f"a comma-separated list of positive integers, got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    v = _validators()
    parser = argparse.ArgumentParser(
        prog="ringflow",
        description="ringflow: a multi-process event engine with a Cython core.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    demo = sub.add_parser(
        "demo",
        help="run an engine with health rules on a synthetic fleet going through incidents",
        description="Start an engine with health rules and ingest a synthetic fleet at "
                    "full speed while four hosts go through scripted incidents (cpu "
                    "hysteresis, a disk filling up, a p99 latency spike, a host going "
                    "silent and coming back); print each alert as it happens, then the "
                    "entities not OK and the workers' counters.",
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
    demo.set_defaults(_parser=demo)

    # --- serve ---
    serve = sub.add_parser(
        "serve", formatter_class=_Formatter, epilog=SERVE_EPILOG,
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
    serve.set_defaults(_parser=serve)

    # --- send ---
    send = sub.add_parser(
        "send", formatter_class=_Formatter, epilog=SEND_EPILOG,
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
                      help="events per message (default: 4096 synthetic, 1000 JSON lines; "
                           "with --rate, about rate/100)")
    send.add_argument("--ack", action="store_true",
                      help="use the acked endpoint: wait for each message's reply and "
                           "count what the gateway accepted")
    send.add_argument("--seed", type=int, metavar="N",
                      help="seed of the synthetic generator (default: 0)")
    _add_client_options(send, v)
    send.set_defaults(_parser=send)

    # --- query ---
    query = sub.add_parser(
        "query", formatter_class=_Formatter, epilog=QUERY_EPILOG,
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
    query.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _add_client_options(query, v)
    query.set_defaults(_parser=query)

    # --- status ---
    status = sub.add_parser(
        "status", formatter_class=_Formatter, epilog=STATUS_EPILOG,
        help="list the entities that are not OK, worst first",
        description="List the entities with a series at WARN or worse (every entity with "
                    "--all), worst first, with since when, and each such series under it.",
    )
    status.add_argument("--all", action="store_true",
                        help="every entity, OK ones too")
    status.add_argument("--limit", type=v["int"], default=100, metavar="N",
                        help="entities to list, at most 100000 (default: 100)")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _add_client_options(status, v)
    status.set_defaults(_parser=status)

    # --- alerts ---
    alerts = sub.add_parser(
        "alerts", formatter_class=_Formatter, epilog=ALERTS_EPILOG,
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
    alerts.add_argument("--timeout", type=v["float"], metavar="SECONDS",
                        help="stop after SECONDS without an alert (default: follow until "
                             "Ctrl-C); also the longest wait, up to 5 s, for the gateway to "
                             "answer at start")
    _add_endpoint_options(alerts, v, serve=False)
    alerts.set_defaults(_parser=alerts)

    # --- reload ---
    reload = sub.add_parser(
        "reload", formatter_class=_Formatter, epilog=RELOAD_EPILOG,
        help="reload the server's health rules",
        description="Ask a running server to re-read its rules file, or send it the rules "
                    "of FILE; print the rules now in force.",
    )
    reload.add_argument("--rules", metavar="FILE",
                        help="send the rules of this local TOML file instead")
    _add_client_options(reload, v)
    reload.set_defaults(_parser=reload)

    # --- stats ---
    stats = sub.add_parser(
        "stats", formatter_class=_Formatter,
        help="show the engine's counters per worker and the gateway's counters",
        description="Print the counters of a running server: per worker (applied, late, "
                    "invalid, table full, series, ring backlog) and of the gateway "
                    "(messages, records accepted, rejections by reason, queries).",
    )
    stats.add_argument("--json", action="store_true", help="print JSON instead of tables")
    _add_client_options(stats, v)
    stats.set_defaults(_parser=stats)

    # --- bench ---
    bench = sub.add_parser(
        "bench", formatter_class=_Formatter, epilog=BENCH_EPILOG,
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
    bench.set_defaults(_parser=bench)
    return parser


# --- helpers of the client commands ------------------------------------------

def _endpoints(args) -> dict:
    from ..net.gateway import endpoint_urls

    ports = dict(DEFAULT_PORTS)
    if args.ports:
        ports.update(args.ports)
    for name in DEFAULT_PORTS:
        value = getattr(args, f"{name}_port", None)
        if value is not None:
            ports[name] = value
    return endpoint_urls(args.host or DEFAULT_HOST, ports)


def _connect(args):
    from ..net.client import Client

    return Client(endpoints=_endpoints(args), timeout=args.timeout)


def _err_console():
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True, markup=False)


def _out_console():
    from rich.console import Console

    # Piped output gets room for whole tables (rich assumes 80 columns).
    return Console(highlight=False, width=None if sys.stdout.isatty() else 200)


def _no_gateway(args, what: str, timeout: float | None = None) -> int:
    url = _endpoints(args)[what]
    timeout = args.timeout if timeout is None else timeout
    _err_console().print(
        f"ringflow {args.command}: error: no answer from the gateway at {url} within "
        f"{timeout:g} s; is `ringflow serve` running there?")
    return EXIT_TIMEOUT


def _num(v, digits: int = 6) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def _age(ts_ns, now_ns: int) -> str:
    """How long ago an event time was: ``850ms``, ``12.5s``, ``3.2m``, ``1.1h``, ``4.0d``."""
    if not ts_ns:
        return "-"
    s = (now_ns - ts_ns) / 1e9
    sign, s = ("-", -s) if s < 0 else ("", s)
    if s < 1:
        return f"{sign}{s * 1000:.0f}ms"
    for unit, size in (("s", 1), ("m", 60), ("h", 3600)):
        if s < 120 * size:
            return f"{sign}{s / size:.3g}{unit}"
    return f"{sign}{s / 86400:.1f}d"


def _local_time(ts_ns, ms: bool = True) -> str:
    """An event time (ns since the epoch) in local time, to the millisecond."""
    if ts_ns is None:
        return "-"
    secs, ns = divmod(int(ts_ns), 10**9)
    text = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(secs))
    return f"{text}.{ns // 10**6:03d}" if ms else text


def _ago(ts_ns, now_ns: int) -> str:
    """``3.2m ago``; event times come from the senders' clocks, which may be
    ahead of this one: ``in 2s``."""
    if not ts_ns:
        return "-"
    age = _age(ts_ns, now_ns)
    return f"in {age[1:]}" if age.startswith("-") else f"{age} ago"


def _since(ts_ns, now_ns: int) -> str:
    if ts_ns is None:
        return "-"
    return f"{_local_time(ts_ns, ms=False)} ({_ago(ts_ns, now_ns)})"


def _status_text(series: dict) -> str:
    status = series.get("status") or "-"
    if series.get("pending"):
        status += f" ({series['pending']} pending)"
    return status


def _print_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")
    sys.stdout.flush()


# --- commands -------------------------------------------------------------------

def _cmd_serve(args) -> int:
    from .serve import ServeError, SettingsError, resolve_settings, run

    try:
        settings = resolve_settings(args)
    except SettingsError as exc:
        args._parser.error(str(exc))
    try:
        return run(settings)
    except ServeError as exc:
        _err_console().print(f"ringflow serve: error: {exc}")
        return EXIT_FAILED


def _cmd_send(args) -> int:
    from .loadgen import SyntheticLoad, default_batch, read_lines, send_lines, send_synthetic

    synthetic = args.source is None
    if not synthetic:
        for flag in ("entities", "seconds", "events", "seed"):
            if getattr(args, flag) is not None:
                args._parser.error(f"--{flag} applies to synthetic load only, not to FILE")
    batch = args.batch or default_batch(args.rate, json_lines=not synthetic)
    stream = None
    if not synthetic:
        if args.source == "-":
            stream = sys.stdin.buffer
        else:
            try:
                stream = open(args.source, "rb")  # closed below
            except OSError as exc:
                args._parser.error(f"cannot open {args.source}: {exc.strerror}")
    out, err = _out_console(), _err_console()
    from ..errors import GatewayTimeout

    try:
        with _connect(args) as client:
            try:
                client.ping()
            except GatewayTimeout:
                return _no_gateway(args, "query")
            if synthetic:
                load = SyntheticLoad(args.entities or 1000, batch, seed=args.seed or 0)
                # The gateway learns the names, so that queries show them.
                for i in range(0, len(load.entity_names), 10_000):
                    client.register_names(entities=load.entity_names[i:i + 10_000],
                                          metrics=load.metric_names if i == 0 else ())
                limits = (f"{args.seconds:g} s" if args.seconds else
                          f"{args.events:,} events" if args.events else "until Ctrl-C")
                rate = f"{args.rate:,.0f} events/s" if args.rate else "as fast as possible"
                out.print(f"sending synthetic load: {len(load.entity_names):,} hosts x "
                          f"{len(load.metric_names)} metrics, batches of {batch:,}, {rate}, "
                          f"{limits}{', acked' if args.ack else ''}", soft_wrap=True)
                result = send_synthetic(client, load, rate=args.rate, seconds=args.seconds,
                                        events=args.events, ack=args.ack, console=out)
            else:
                source = "<stdin>" if args.source == "-" else args.source
                try:
                    lines = read_lines(stream.fileno())
                except OSError:         # no descriptor (a wrapped stream): plain reads
                    lines = (line.rstrip(b"\n") for line in stream)
                result = send_lines(client, lines, source=source, batch=batch,
                                    rate=args.rate, ack=args.ack,
                                    report=lambda m: err.print(f"ringflow send: {m}"))
    finally:
        if stream is not None and stream is not sys.stdin.buffer:
            stream.close()

    line = (f"sent {result.events:,} events in {result.messages:,} messages in "
            f"{result.seconds:.2f} s ({result.rate:,.0f} events/s)")
    if args.ack:
        line += (f"; gateway accepted {result.accepted:,}, refused "
                 f"{result.rejected_records:,} records")
    rejected = sum(result.rejected_messages.values())
    if rejected:
        reasons = ", ".join(f"{k}: {n}" for k, n in sorted(result.rejected_messages.items()))
        line += f"; {rejected:,} messages rejected ({reasons})"
    if not synthetic:
        line += f"; {result.lines:,} lines read, {result.bad_lines:,} malformed (skipped)"
    out.print(line, soft_wrap=True)
    if result.timed_out:
        return _no_gateway(args, "acked" if args.ack else "ingest")
    if result.interrupted:
        out.print("interrupted")
        unbounded = synthetic and not args.seconds and not args.events
        return EXIT_OK if unbounded else EXIT_INTERRUPTED
    if result.bad_lines or rejected or result.rejected_records:
        return EXIT_FAILED
    return EXIT_OK


def _cmd_query(args) -> int:
    from ..errors import GatewayTimeout, QueryError

    if args.metric is not None and args.metric_option is not None \
            and args.metric != args.metric_option:
        args._parser.error("give the metric once: as METRIC or as --metric")
    entity, metric = args.entity, args.metric if args.metric is not None else args.metric_option
    shown_metric = metric
    if args.ids:
        try:
            entity = int(entity, 0)
            metric = None if metric is None else int(metric, 0)
        except ValueError:
            args._parser.error("with --ids, ENTITY and METRIC must be integers")
    try:
        with _connect(args) as client:
            if metric is not None:
                row = client.get(entity, metric)
                summary = None
                rows = [] if row is None else [row]
            else:
                summary = client.entity(entity, summary=True)
                rows = summary["series"]
    except GatewayTimeout:
        return _no_gateway(args, "query")
    except QueryError as exc:
        _err_console().print(f"ringflow query: error: the gateway refused the query: {exc}")
        return EXIT_FAILED
    if not rows:
        what = f"series {args.entity} {shown_metric}" if metric is not None else \
            f"entity {args.entity}"
        _err_console().print(f"ringflow query: no {what}: the engine has not seen it")
        if args.json:
            _print_json(None)
        return EXIT_FAILED
    if args.json:
        _print_json(rows[0] if metric is not None else summary)
        return EXIT_OK
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    now = time.time_ns()
    if summary is not None:
        since = f" since {_since(summary['since'], now)}" if summary.get("since") else ""
        head = f"{args.entity}: {summary['status']}{since}"
    else:
        r = rows[0]
        since = f" since {_since(r['since'], now)}" if r.get("since") else ""
        head = f"{args.entity} {shown_metric}: {_status_text(r)}{since}"
    # One column per metric, one row per figure: a dozen figures fit the
    # height of a terminal better than its width.
    rows = sorted(rows, key=lambda r: (r.get("metric") or "", r.get("metric_id", 0)))
    out = _out_console()
    # Above the table rather than its title: a title wraps at the table's width.
    out.print(head, soft_wrap=True, markup=False)
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("")
    for r in rows:
        table.add_column(escape(r.get("metric") or f"#{r.get('metric_id')}"), justify="right")

    def add(label: str, cell) -> None:
        table.add_row(label, *(escape(cell(r)) for r in rows))

    def std(r):
        var = r.get("var")
        return var ** 0.5 if isinstance(var, (int, float)) and var >= 0 else None

    def win(r, key):
        return (r.get("window") or {}).get(key)

    add("status", _status_text)
    add("since", lambda r: _since(r.get("since"), now))
    for name in ("last", "ewma"):
        add(name, lambda r, name=name: _num(r.get(name), 4))
    add("count", lambda r: _num(r.get("count")))
    add("mean", lambda r: _num(r.get("mean"), 4))
    add("std", lambda r: _num(std(r), 4))
    add("min", lambda r: _num(r.get("min"), 4))
    add("max", lambda r: _num(r.get("max"), 4))
    add("window", lambda r: f"from {_local_time(win(r, 'start'), ms=False)[11:]}"
        if win(r, "start") is not None else "-")
    add("win count", lambda r: _num(win(r, "count")))
    for key in ("mean", "min", "max"):
        add(f"win {key}", lambda r, key=key: _num(win(r, key), 4))
    for q in ("p50", "p95", "p99"):
        add(q, lambda r, q=q: _num((r.get("quantiles") or {}).get(q), 4))
    view_names = list(dict.fromkeys(k for r in rows for k in (r.get("views") or {})))
    for name in view_names:
        add(name, lambda r, name=name: _num((r.get("views") or {}).get(name), 4))
    add("age", lambda r: _ago(r.get("last_ts"), now))          # of the last event
    add("stale/late", lambda r: f"{_num(r.get('stale'))}/{_num(r.get('late'))}")
    out.print(table)
    return EXIT_OK


def _cmd_status(args) -> int:
    from ..errors import GatewayTimeout, QueryError

    min_status = "OK" if args.all else "WARN"
    try:
        with _connect(args) as client:
            reply = client.status(min_status, limit=args.limit)
    except GatewayTimeout:
        return _no_gateway(args, "query")
    except QueryError as exc:
        _err_console().print(f"ringflow status: error: the gateway refused the query: {exc}")
        return EXIT_FAILED
    if args.json:
        _print_json(reply)
        return EXIT_OK
    entities, total = reply["entities"], reply["total"]
    out = _out_console()
    if not entities:
        out.print("no entity at all yet" if args.all else
                  "no entity at WARN or worse: every series is OK", soft_wrap=True)
        return EXIT_OK
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    what = "entities" if total != 1 else "entity"
    head = f"{total} {what}" + ("" if args.all else " at WARN or worse") + \
        (f", the {len(entities)} worst shown (--limit)" if len(entities) < total else "")
    now = time.time_ns()
    out.print(head, soft_wrap=True, markup=False)
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for c in ("entity / metric", "status", "since", "last", "ewma", "p95"):
        table.add_column(c, justify="left" if c in ("entity / metric", "status", "since")
                         else "right")
    for e in entities:
        name = e.get("entity") or f"{e['entity_id']:#x}"
        table.add_row(escape(name), e["status"], _since(e.get("since"), now), "", "", "")
        for r in e.get("series", []):
            metric = r.get("metric") or f"#{r.get('metric_id')}"
            table.add_row(escape(f"  {metric}"), escape(_status_text(r)),
                          _since(r.get("since"), now), _num(r.get("last"), 4),
                          _num(r.get("ewma"), 4),
                          _num((r.get("quantiles") or {}).get("p95"), 4))
    out.print(table)
    return EXIT_OK


def _alert_line(alert: dict) -> str:
    """``2026-11-22 12:04:31.123 web-17 disk OK -> CRIT (last = 0.97)``"""
    who = alert.get("entity")
    if who is None:
        who = f"{alert.get('entity_id', 0):#x}"
    what = alert.get("metric")
    if what is None:
        what = f"{alert.get('metric_id', 0):#x}"
    value = alert.get("value")
    shown = f"{value:g}" if isinstance(value, (int, float)) else "-"
    return (f"{_local_time(alert.get('ts'))} {who} {what} {alert.get('old')} -> "
            f"{alert.get('new')} ({alert.get('stat')} = {shown})")


def _cmd_alerts(args) -> int:
    from ..errors import GatewayTimeout
    from ..net.client import Client
    from ..net.subscriptions import DROPPED

    # The alert endpoint is a PUB: connecting to it tells nothing, so the
    # query endpoint answers for the gateway.
    connect_timeout = min(5.0, args.timeout) if args.timeout else 5.0
    err = _err_console()
    with Client(endpoints=_endpoints(args), timeout=connect_timeout) as client:
        try:
            client.ping()
        except GatewayTimeout:
            return _no_gateway(args, "query", connect_timeout)
        with client.alerts(args.status, timeout=args.timeout) as feed:
            if not feed.wait_connected(connect_timeout):
                return _no_gateway(args, "alerts", connect_timeout)
            which = ",".join(args.status) if args.status else "all statuses"
            err.print(f"following alerts on {feed.endpoint} ({which}); Ctrl-C to stop")
            shown = 0
            try:
                for msg in feed:
                    if msg.get("topic") == DROPPED:
                        if args.json:
                            sys.stdout.write(json.dumps(msg) + "\n")
                            sys.stdout.flush()
                        else:
                            err.print(f"ringflow alerts: the workers dropped "
                                      f"{msg.get('dropped')} alerts (full alert rings; "
                                      f"{msg.get('total')} in all): statuses are still "
                                      "right, `ringflow status` shows them")
                        continue
                    line = json.dumps(msg) if args.json else _alert_line(msg)
                    sys.stdout.write(line + "\n")
                    sys.stdout.flush()
                    shown += 1
                    if args.count and shown >= args.count:
                        return EXIT_OK
            except KeyboardInterrupt:
                # Following until Ctrl-C is the normal end without --count.
                return EXIT_INTERRUPTED if args.count else EXIT_OK
    if args.count:
        err.print(f"ringflow alerts: {shown} of {args.count} alerts within {args.timeout:g} s "
                  "of silence")
        return EXIT_FAILED
    return EXIT_OK


def _cmd_reload(args) -> int:
    from ..errors import GatewayTimeout, QueryError

    rules = None
    if args.rules is not None:
        try:
            with open(args.rules, encoding="utf-8") as f:
                rules = f.read()
        except (OSError, UnicodeDecodeError) as exc:
            args._parser.error(f"cannot read {args.rules}: "
                               f"{getattr(exc, 'strerror', None) or exc}")
    try:
        with _connect(args) as client:
            reply = client.reload(rules)
    except GatewayTimeout:
        return _no_gateway(args, "query")
    except QueryError as exc:
        _err_console().print(f"ringflow reload: error: the gateway refused the rules: {exc}")
        return EXIT_FAILED
    source = f"from {args.rules}" if args.rules else "from the server's rules file"
    count = reply.get("count")
    out = _out_console()
    out.print(f"rules reloaded {source}: {count} rule{'s' if count != 1 else ''}",
              soft_wrap=True, markup=False)
    out.print(reply.get("rules", ""), soft_wrap=True, markup=False)
    return EXIT_OK


def _cmd_stats(args) -> int:
    from ..errors import GatewayTimeout, QueryError

    try:
        with _connect(args) as client:
            stats = client.stats()
    except GatewayTimeout:
        return _no_gateway(args, "query")
    except QueryError as exc:
        _err_console().print(f"ringflow stats: error: the gateway refused the query: {exc}")
        return EXIT_FAILED
    if isinstance(stats, dict) and "stats" in stats and "workers" not in stats:
        stats = stats["stats"]
    if args.json:
        _print_json(stats)
        return EXIT_OK
    from rich import box
    from rich.table import Table

    out = _out_console()
    wt = Table(title="workers", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    cols = ("worker", "pid", "alive", "applied", "late", "invalid", "full", "series",
            "table fill", "ring backlog", "batches")
    for c in cols:
        wt.add_column(c, justify="right")
    for w in stats.get("workers", []):
        wt.add_row(str(w.get("worker")), str(w.get("pid")), "yes" if w.get("alive") else "NO",
                   _num(w.get("applied")), _num(w.get("stale")), _num(w.get("invalid")),
                   _num(w.get("full")), _num(w.get("series")),
                   f"{100 * w.get('table_fill', 0):.1f}%", _num(w.get("ring_pending")),
                   _num(w.get("batches")))
    out.print(wt)
    gw = stats.get("gateway") or {}
    if gw:
        gt = Table(title="gateway", title_justify="left", box=box.SIMPLE_HEAD,
                   pad_edge=False)
        gt.add_column("counter")
        gt.add_column("value", justify="right")
        for k, val in gw.items():
            if isinstance(val, dict):
                for reason, n in val.items():
                    if n:
                        gt.add_row(f"{k}: {reason}", _num(n))
            else:
                gt.add_row(k, _num(val))
        out.print(gt)
    totals = ("accepted", "applied", "rejected_invalid", "rejected_table_full", "stale",
              "series")
    out.print("  ".join(f"{k} {_num(stats.get(k))}" for k in totals if k in stats),
              soft_wrap=True)
    return EXIT_OK


_COMMANDS = {"serve": _cmd_serve, "send": _cmd_send, "query": _cmd_query,
             "status": _cmd_status, "alerts": _cmd_alerts, "reload": _cmd_reload,
             "stats": _cmd_stats}


def _cmd_bench(args) -> int:
    from rich import box
    from rich.table import Table

    from ..suite.report import CONTENDER_HEAD, summary_rows, target_rows
    from ..suite.runner import run_suite

    results = run_suite(out_dir=args.out, quick=args.quick, only=args.only,
                        workers=args.workers, events=args.events, seed=args.seed,
                        progress=not args.no_progress)
    out = _out_console()

    def table(title, head, rows):
        t = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
        for i, c in enumerate(head):
            t.add_column(c, justify="left" if i in (0, len(head) - 1) else "right")
        for row in rows:
            t.add_row(*[c.replace("**", "") for c in row])
        out.print(t)

    c = results.get("contenders")
    if c is not None:
        table("contenders, 1 producer", CONTENDER_HEAD, summary_rows(results))
        if c.get("contended"):
            table(f"contenders, {c.get('contended_producers')} producers", CONTENDER_HEAD,
                  summary_rows(results, "contended"))
        if target_rows(results):
            table("targets (issue #5)", ["target", "measured", "verdict"],
                  target_rows(results))
    prod = (results.get("producers") or {}).get("results") or {}
    if prod:
        out.print("max producers with p99 <= 10 ms: " + ", ".join(
            f"{n} {v.get('max_producers') or 'none'}" for n, v in prod.items()),
            soft_wrap=True, markup=False)
    scaling = (results.get("scaling") or {}).get("results") or {}
    for name, rows in scaling.items():
        out.print(f"scaling {name}: " + ", ".join(
            f"{r['workers']}w " + (f"{r['events_per_s']:,.0f}/s" if "error" not in r
                                   else "ERROR") for r in rows), soft_wrap=True, markup=False)
    for note in results.get("notes", []):
        out.print(f"note: {note}", soft_wrap=True, markup=False)
    out.print(f"results in {results['out_dir']}/ (results.json, report.md"
              + (", plots" if any(str(f).endswith(".png") for f in results.get("files", []))
                 else "") + ")", soft_wrap=True, markup=False)
    if results.get("errors"):
        err = _err_console()
        for e in results["errors"]:
            err.print(f"ringflow bench: error: {e}")
        return EXIT_FAILED
    return EXIT_OK


_COMMANDS["bench"] = _cmd_bench


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command; returns the exit code."""
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from .demo import run

        run(workers=args.workers, seconds=args.seconds, hosts=args.hosts, batch=args.batch,
            wait=args.wait)
        return 0
    import zmq

    from ..errors import EngineError

    try:
        return _COMMANDS[args.command](args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except (EngineError, OSError, zmq.ZMQError) as exc:
        _err_console().print(f"ringflow {args.command}: error: {exc}")
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
