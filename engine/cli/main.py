"""The ``ringflow`` command (also ``python -m engine``).

Commands: ``demo`` (an embedded engine, no network), ``serve`` (an engine
behind its ZeroMQ gateway, until SIGINT/SIGTERM; SIGHUP reloads its rules),
and the clients of a running server: ``send``, ``query``, ``status``,
``alerts``, ``reload`` and ``stats``; and ``bench``, the comparative suite.

Here are the commands; their parser is :mod:`engine.cli.parser`, what they
print is drawn by :mod:`engine.cli.render`.
"""

from __future__ import annotations

import json
import sys
import time

from ..net.protocol import DEFAULT_HOST, DEFAULT_PORTS
from . import render
from .parser import build_parser

__all__ = ["build_parser", "main"]

#: Exit codes: 0 success; 1 a failure the command reports (nothing found,
#: malformed input, a refused query); 2 a usage error (argparse) or no
#: gateway answering within --timeout; 130 interrupted.
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_TIMEOUT, EXIT_INTERRUPTED = 0, 1, 2, 2, 130


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


def _curve(args) -> dict:
    """The client's CURVE keyword arguments from --curve-secret/--curve-server."""
    return {"curve_secret": getattr(args, "curve_secret", None),
            "curve_server": getattr(args, "curve_server", None)}


def _connect(args):
    from ..net.client import Client

    return Client(endpoints=_endpoints(args), timeout=args.timeout, **_curve(args))


def _timed_out(args, query: str) -> int:
    """A query got no answer in time: say whether the gateway is down or
    only slow (it answers a ping), and how long the query waited."""
    from ..errors import GatewayTimeout
    from ..net.client import Client

    probe = min(2.0, args.timeout) if args.timeout else 2.0
    try:
        with Client(endpoints=_endpoints(args), timeout=probe, **_curve(args)) as client:
            rtt = client.ping()
    except GatewayTimeout:
        return _no_gateway(args, "query")
    url = _endpoints(args)["query"]
    render.err_console().print(
        f"ringflow {args.command}: error: the {query} query timed out after waiting "
        f"{args.timeout:g} s; the gateway at {url} is running (it answered a ping in "
        f"{rtt * 1e3:.1f} ms) but is slow to answer this query: try again, or give it "
        f"longer with --timeout", soft_wrap=True, markup=False)
    return EXIT_TIMEOUT


def _no_gateway(args, what: str, timeout: float | None = None) -> int:
    url = _endpoints(args)[what]
    timeout = args.timeout if timeout is None else timeout
    render.err_console().print(
        f"ringflow {args.command}: error: no answer from the gateway at {url} within "
        f"{timeout:g} s; is `ringflow serve` running there?"
        + (" (with CURVE, a key the server does not allow gets no answer at all)"
           if getattr(args, "curve_secret", None) else
           " If the server uses CURVE, give --curve-secret and --curve-server."))
    return EXIT_TIMEOUT



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
        render.err_console().print(f"ringflow serve: error: {exc}")
        return EXIT_FAILED


def _cmd_send(args) -> int:
    from .loadgen import SyntheticLoad, default_batch, read_chunks, send_lines, send_synthetic

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
    out, err = render.out_console(), render.err_console()
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
                    chunks = read_chunks(stream.fileno())
                except OSError:         # no descriptor (a wrapped stream): plain reads
                    chunks = read_chunks(stream=stream)
                result = send_lines(client, chunks, source=source, batch=batch,
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
        return _timed_out(args, "get" if metric is not None else "entity")
    except QueryError as exc:
        render.err_console().print(f"ringflow query: error: the gateway refused the query: {exc}")
        return EXIT_FAILED
    if not rows:
        what = f"series {args.entity} {shown_metric}" if metric is not None else \
            f"entity {args.entity}"
        render.err_console().print(f"ringflow query: no {what}: the engine has not seen it")
        if args.json:
            render.print_json(None)
        return EXIT_FAILED
    if args.json:
        render.print_json(rows[0] if metric is not None else summary)
        return EXIT_OK
    now = time.time_ns()
    if summary is not None:
        since = f" since {render.since(summary['since'], now)}" if summary.get("since") else ""
        head = f"{args.entity}: {summary['status']}{since}"
    else:
        r = rows[0]
        since = f" since {render.since(r['since'], now)}" if r.get("since") else ""
        head = f"{args.entity} {shown_metric}: {render.status_text(r)}{since}"
    render.show_series(render.out_console(), head, rows, now)
    return EXIT_OK


def _cmd_status(args) -> int:
    from ..errors import GatewayTimeout, QueryError

    min_status = "OK" if args.all else "WARN"
    try:
        with _connect(args) as client:
            # The server cuts the list: what is not shown is never built.
            reply = client.status(min_status, limit=args.limit)
    except GatewayTimeout:
        return _timed_out(args, "status")
    except QueryError as exc:
        render.err_console().print(f"ringflow status: error: the gateway refused the query: {exc}")
        return EXIT_FAILED
    if args.json:
        render.print_json(reply)
        return EXIT_OK
    render.show_status(render.out_console(), reply, args.all, time.time_ns())
    return EXIT_OK


def _cmd_alerts(args) -> int:
    from ..errors import GatewayTimeout
    from ..net.client import Client
    from ..net.subscriptions import ENGINE, MISSED

    # The alert endpoint is a PUB: connecting to it tells nothing, so the
    # query endpoint answers for the gateway.
    connect_timeout = min(5.0, args.timeout) if args.timeout else 5.0
    err = render.err_console()
    with Client(endpoints=_endpoints(args), timeout=connect_timeout, **_curve(args)) as client:
        try:
            client.ping()
        except GatewayTimeout:
            return _no_gateway(args, "query", connect_timeout)
        with client.alerts(args.status, timeout=args.timeout, since=args.since) as feed:
            if not feed.wait_connected(connect_timeout):
                return _no_gateway(args, "alerts", connect_timeout)
            which = ",".join(args.status) if args.status else "all statuses"
            err.print(f"following alerts on {feed.endpoint} ({which}); Ctrl-C to stop")
            shown = 0
            try:
                for msg in feed:
                    if msg.get("topic") == MISSED:
                        if args.json:
                            sys.stdout.write(json.dumps(msg) + "\n")
                            sys.stdout.flush()
                        else:
                            err.print(render.missed_line(msg))
                        continue
                    if msg.get("topic") == ENGINE and not args.json:
                        err.print(render.engine_alert_line(msg))
                        continue
                    line = json.dumps(msg) if args.json else render.alert_line(msg)
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
        render.err_console().print(f"ringflow reload: error: the gateway refused the rules: {exc}")
        return EXIT_FAILED
    source = f"from {args.rules}" if args.rules else "from the server's rules file"
    count = reply.get("count")
    out = render.out_console()
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
        render.err_console().print(f"ringflow stats: error: the gateway refused the query: {exc}")
        return EXIT_FAILED
    if isinstance(stats, dict) and "stats" in stats and "workers" not in stats:
        stats = stats["stats"]
    if args.json:
        render.print_json(stats)
        return EXIT_OK
    render.show_stats(render.out_console(), stats)
    return EXIT_OK


def _cmd_bench(args) -> int:
    from ..suite import INSTALL, missing_requirements

    missing = missing_requirements()
    if missing:
        render.err_console().print(
            f"ringflow bench: error: the comparative suite needs {', '.join(missing)} (the "
            f"[bench] extra), missing here; install it with: {INSTALL}")
        return EXIT_FAILED
    from ..suite.runner import run_suite

    results = run_suite(out_dir=args.out, quick=args.quick, only=args.only,
                        workers=args.workers, events=args.events, seed=args.seed,
                        progress=not args.no_progress)
    render.show_bench(render.out_console(), results)
    if results.get("errors"):
        err = render.err_console()
        for e in results["errors"]:
            err.print(f"ringflow bench: error: {e}")
        return EXIT_FAILED
    return EXIT_OK


def _cmd_repair(args) -> int:
    from pathlib import Path

    from ..journal.wal import JournalCorrupt, repair, scan

    root = Path(args.data_dir)
    if not root.is_dir():
        render.err_console().print(f"ringflow repair: error: no directory {root}")
        return EXIT_FAILED
    shards = sorted(p for p in root.glob("shard-*") if p.is_dir()) or [root]
    out = render.out_console()
    damaged = False
    lock = None
    if not args.check and (root / "LOCK").exists():
        # Never cut a journal an engine (or its workers) still writes.
        import fcntl
        import os

        lock = os.open(root / "LOCK", os.O_RDWR | os.O_CLOEXEC)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(lock)
            render.err_console().print(
                f"ringflow repair: error: {root} is in use by a running engine (its LOCK "
                f"is held); stop it first")
            return EXIT_FAILED
    for d in shards:
        if args.check:
            try:
                s = scan(d)
            except JournalCorrupt as exc:
                out.print(f"{d}: {exc}", soft_wrap=True)
                damaged = True
                continue
            torn = f"; torn tail of {s.torn[2]} bytes at {s.torn[0]}:{s.torn[1]}" \
                if s.torn else ""
            damaged |= s.torn is not None
            out.print(f"{d}: {s.frames:,} batches, {s.events:,} events, "
                      f"{len(s.segments)} segments{torn}")
            continue
        r = repair(d)
        if r["cut"] is None:
            out.print(f"{d}: whole: {r['frames']:,} batches, {r['events']:,} events")
        else:
            c = r["cut"]
            out.print(f"{d}: cut {c['path']} at byte {c['offset']} ({c['bytes']:,} bytes "
                      f"dropped), {len(r['removed'])} later segments removed; kept "
                      f"{r['frames']:,} batches, {r['events']:,} events", soft_wrap=True)
    return EXIT_FAILED if args.check and damaged else EXIT_OK


def _cmd_keys(args) -> int:
    from ..net.security import create_keys

    public, secret = create_keys(args.dir, args.name, force=args.force)
    render.out_console().print(
        f"wrote {public} (public key: copy it into a server's --curve-clients or "
        f"--curve-admins directory, or hand it to clients as --curve-server) and {secret} "
        "(secret key, mode 0600: keep it private)", soft_wrap=True, markup=False)
    return EXIT_OK


def _cmd_top(args) -> int:
    from .top import run_top

    with _connect(args) as client:
        return run_top(client, _endpoints(args)["query"], args.interval, args.once, args.limit)


def _cmd_ls(args) -> int:
    from .top import run_ls

    return run_ls(args.json)


_COMMANDS = {"keys": _cmd_keys, "serve": _cmd_serve, "send": _cmd_send, "query": _cmd_query,
             "status": _cmd_status, "alerts": _cmd_alerts, "reload": _cmd_reload,
             "stats": _cmd_stats, "bench": _cmd_bench, "repair": _cmd_repair}
_COMMANDS.update(top=_cmd_top, ls=_cmd_ls)  # issue 17 (engine/cli/top.py)


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command.

    Parameters
    ----------
    argv : list of str, optional
        The arguments after ``ringflow``; ``sys.argv[1:]`` by default.

    Returns
    -------
    int
        The exit code (``EXIT_*``).
    """
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from .demo import run

        result = run(workers=args.workers, seconds=args.seconds, hosts=args.hosts,
                     batch=args.batch, wait=args.wait, seed=args.seed)
        # The demo promises the script's alerts and no other (CI runs it).
        return EXIT_FAILED if result["unexpected"] or result["missing"] else 0
    import zmq

    from ..errors import EngineError

    try:
        return _COMMANDS[args.command](args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except (EngineError, OSError, zmq.ZMQError) as exc:
        render.err_console().print(f"ringflow {args.command}: error: {exc}")
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
