"""The ``ringflow`` command (also ``python -m engine``).

Commands: ``demo`` (an embedded engine, no network), ``serve`` (an engine
behind its ZeroMQ gateway, until SIGINT/SIGTERM), and the clients of a
running server: ``send``, ``query`` and ``stats``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from .config import WAIT_STRATEGIES
from .protocol import DEFAULT_HOST, DEFAULT_PORTS

#: Exit codes: 0 success; 1 a failure the command reports (nothing found,
#: malformed input, a refused query); 2 a usage error (argparse) or no
#: gateway answering within --timeout; 130 interrupted.
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_TIMEOUT, EXIT_INTERRUPTED = 0, 1, 2, 2, 130


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _checked(check, name: str):
    """An argparse ``type=`` from a validator of :mod:`engine.serve`, so that
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
        "unit": _checked(S.unit_float, "number in (0, 1]"),
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
  ewma_alpha = 0.1            # --ewma-alpha

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

An unknown section or key is an error that names it.  SIGINT (Ctrl-C),
SIGTERM and SIGHUP stop the gateway, drain what it read, print the final
counters ("final: ..." line) and exit 0; sent to the whole process group,
they reach only the server, which stops the workers itself.
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
exit codes: 0 found; 1 no such series (or entity); 2 usage error or no
gateway answering within --timeout.
"""


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
        help="run an engine on its defaults, feed it a synthetic fleet, query it",
        description="Start an engine, ingest synthetic server-health events for a few "
                    "seconds with a progress line, then print throughput, a few series "
                    "and the engine's counters.",
    )
    demo.add_argument("--workers", type=_positive_int, default=2,
                      help="worker processes (default: 2)")
    demo.add_argument("--seconds", type=_positive_float, default=5.0,
                      help="seconds of ingest (default: 5)")
    demo.add_argument("--hosts", type=_positive_int, default=2000,
                      help="hosts in the synthetic fleet, five metrics each (default: 2000)")
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
                    "('ringflow serving on ...'), then serve until SIGINT or SIGTERM, "
                    "drain, print the final counters and exit 0.",
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
    e.add_argument("--ewma-alpha", type=v["unit"], metavar="ALPHA",
                   help="weight of each reading in the EWMA, in (0, 1] (default: 0.1)")
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
        help="show one series, or every metric of an entity",
        description="Read the state of ENTITY's METRIC series (or of all its metrics) from a "
                    "running server: count, last value, mean, std, min, max, EWMA, times.",
    )
    query.add_argument("entity", metavar="ENTITY", help="entity (host) name, e.g. web-0001")
    query.add_argument("metric", metavar="METRIC", nargs="?",
                       help="metric name, e.g. cpu (default: every metric of ENTITY)")
    query.add_argument("--ids", action="store_true",
                       help="ENTITY and METRIC are numeric ids, not names")
    query.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _add_client_options(query, v)
    query.set_defaults(_parser=query)

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
    return parser


# --- helpers of the client commands ------------------------------------------

def _endpoints(args) -> dict:
    from .gateway import endpoint_urls

    ports = dict(DEFAULT_PORTS)
    if args.ports:
        ports.update(args.ports)
    for name in DEFAULT_PORTS:
        value = getattr(args, f"{name}_port", None)
        if value is not None:
            ports[name] = value
    return endpoint_urls(args.host or DEFAULT_HOST, ports)


def _connect(args):
    from .client import Client

    return Client(endpoints=_endpoints(args), timeout=args.timeout)


def _err_console():
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True, markup=False)


def _out_console():
    from rich.console import Console

    # Piped output gets room for whole tables (rich assumes 80 columns).
    return Console(highlight=False, width=None if sys.stdout.isatty() else 200)


def _no_gateway(args, what: str) -> int:
    url = _endpoints(args)[what]
    _err_console().print(
        f"ringflow {args.command}: error: no answer from the gateway at {url} within "
        f"{args.timeout:g} s; is `ringflow serve` running there?")
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
    from .errors import GatewayTimeout

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
    from .errors import GatewayTimeout, QueryError

    entity, metric = args.entity, args.metric
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
                rows = [] if row is None else [row]
            else:
                rows = client.entity(entity)
    except GatewayTimeout:
        return _no_gateway(args, "query")
    except QueryError as exc:
        _err_console().print(f"ringflow query: error: the gateway refused the query: {exc}")
        return EXIT_FAILED
    if not rows:
        what = f"series {args.entity} {args.metric}" if metric is not None else \
            f"entity {args.entity}"
        _err_console().print(f"ringflow query: no {what}: the engine has not seen it")
        if args.json:
            _print_json(None if metric is not None else [])
        return EXIT_FAILED
    if args.json:
        _print_json(rows[0] if metric is not None else rows)
        return EXIT_OK
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    now = time.time_ns()
    title = f"{args.entity}" + (f" {args.metric}" if metric is not None else "")
    table = Table(title=escape(title), title_justify="left", box=box.SIMPLE_HEAD,
                  pad_edge=False)
    cols = ("metric", "count", "last", "mean", "std", "min", "max", "ewma", "age", "late")
    for c in cols:
        table.add_column(c, justify="left" if c == "metric" else "right")
    for r in sorted(rows, key=lambda r: (r.get("metric") or "", r.get("metric_id", 0))):
        var = r.get("var")
        std = var ** 0.5 if isinstance(var, (int, float)) and var >= 0 else None
        table.add_row(escape(r.get("metric") or f"#{r.get('metric_id')}"), _num(r.get("count")),
                      *(_num(x, 4) for x in (r.get("last"), r.get("mean"), std, r.get("min"),
                                             r.get("max"), r.get("ewma"))),
                      _age(r.get("last_ts"), now), _num(r.get("stale")))
    _out_console().print(table)
    return EXIT_OK


def _cmd_stats(args) -> int:
    from .errors import GatewayTimeout, QueryError

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


_COMMANDS = {"serve": _cmd_serve, "send": _cmd_send, "query": _cmd_query, "stats": _cmd_stats}


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command; returns the exit code."""
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from .demo import run

        run(workers=args.workers, seconds=args.seconds, hosts=args.hosts, batch=args.batch,
            wait=args.wait)
        return 0
    import zmq

    from .errors import EngineError

    try:
        return _COMMANDS[args.command](args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except (EngineError, OSError, zmq.ZMQError) as exc:
        _err_console().print(f"ringflow {args.command}: error: {exc}")
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
