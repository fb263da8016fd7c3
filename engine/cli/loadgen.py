"""``ringflow send``: synthetic server-health load, or JSON lines from a file,
sent to a running gateway through :class:`engine.net.client.Client`.

The synthetic load is a fleet of servers (deterministic: the same
hosts, metrics and readings for the same ``seed``), paced to a rate when one
is asked for.  JSON lines are sent as the file's own bytes, cut into
messages at line ends: each message is checked here with the gateway's own
decoder (in C, :class:`engine.net.protocol.JsonLinesDecoder`), and only a
message that fails is checked line by line, so that a bad line is reported
with its number and skipped instead of getting its whole message rejected.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from ..core.records import EVENT_DTYPE, entity_id, metric_id

__all__ = [
    "METRICS",
    "SyntheticLoad",
    "SendResult",
    "check_record",
    "iter_json_lines",
    "read_lines",
    "read_chunks",
    "send_synthetic",
    "send_lines",
    "default_batch",
]

#: Metrics of the synthetic fleet, with their typical level and spread (the
#: demo plays its own fleet, :mod:`engine.cli.scenario`).
METRICS = {
    "cpu": (0.45, 0.15),
    "mem": (0.60, 0.10),
    "disk": (0.70, 0.05),
    "latency_ms": (12.0, 4.0),
    "errors": (0.5, 0.5),
}

#: Events per frame when neither --batch nor --rate says otherwise: large
#: enough that ZeroMQ carries tens of millions of events per second.
DEFAULT_BATCH = 4096
#: Lines per frame for JSON-lines input (4096: 1.29-1.40 M lines/s from a
#: file against 0.99-1.07 M with 1000, the gateway on the same 2 cores).
DEFAULT_JSON_BATCH = 4096
_JSON_FIELDS = {"entity", "metric", "value", "ts"}


def default_batch(rate: float | None, json_lines: bool = False) -> int:
    """Batch size when the user gave none: at a set rate, about 100 frames a
    second (so pacing stays smooth), never more than the default."""
    top = DEFAULT_JSON_BATCH if json_lines else DEFAULT_BATCH
    if rate is None:
        return top
    return max(1, min(top, int(rate // 100)))


class SyntheticLoad:
    """Paced batches of synthetic server-health events.

    The hosts, metrics and reading levels are those of the demo's
    :class:`engine.cli.demo.Fleet`.  Readings come from a pool generated once
    (producing load must cost far less than the engine spends applying it),
    laid out so that every (host, metric) series turns up once in each run
    of ``entities * 5`` consecutive events; 1% of the events arrive up to
    5 s late.

    Parameters
    ----------
    entities : int
        Hosts (``web-0000``, ``web-0001``, ...), five metrics each.
    batch : int
        Events per batch.
    seed : int
        Seed of the generator: the same seed gives the same readings.
    pool_events : int
        Upper bound of the pool's size, in events (at least four batches).
    """

    def __init__(self, entities: int, batch: int, seed: int = 0,
                 pool_events: int = 2_000_000) -> None:
        rng = np.random.default_rng(seed)
        self.entity_names = [f"web-{i:04d}" for i in range(entities)]
        self.metric_names = list(METRICS)
        self.batch = batch
        nm = len(self.metric_names)
        series = entities * nm
        # Whole batches, at least four, two rounds of every series if that fits.
        batches = max(4, min(-(-2 * series // batch), max(1, pool_events // batch)))
        total = batches * batch
        rounds = -(-total // series)
        order = np.concatenate([rng.permutation(series) for _ in range(rounds)])[:total]
        host, metric = order // nm, order % nm
        host_ids = np.array([entity_id(n) for n in self.entity_names], np.uint64)
        metric_ids = np.array([metric_id(n) for n in self.metric_names], np.uint32)
        level = np.array([METRICS[n][0] for n in self.metric_names])
        spread = np.array([METRICS[n][1] for n in self.metric_names])
        self.pool = np.zeros(total, EVENT_DTYPE)
        self.pool["key"] = host_ids[host]
        self.pool["metric"] = metric_ids[metric]
        self.pool["value"] = np.abs(rng.normal(level[metric], spread[metric]))
        self._late = np.zeros(total, np.int64)
        late = rng.random(total) < 0.01
        self._late[late] = rng.integers(0, 5 * 10**9, int(late.sum()))
        self._pos = 0
        # Event times: spread evenly between the previous batch and now, so
        # that they follow the wall clock at any send rate.
        self._frac = np.arange(batch, dtype=np.float64) / batch
        self._ts = np.empty(batch, np.int64)
        self._prev = time.time_ns() - 1_000_000

    def next(self, n: int | None = None) -> np.ndarray:
        """The next ``n`` events (default and at most: a batch), stamped
        with event times up to now.  The array is a view of the pool: send
        it before asking for more than a pool's worth of further events."""
        n = self.batch if n is None else min(n, self.batch)
        if self._pos + n > len(self.pool):
            self._pos = 0
        ev = self.pool[self._pos:self._pos + n]
        late = self._late[self._pos:self._pos + n]
        self._pos += n
        now = max(time.time_ns(), self._prev + 1)
        ts = self._ts[:n]
        np.multiply(self._frac[:n], now - self._prev, out=ts, casting="unsafe")
        ts += self._prev
        ts -= late
        ev["ts"] = ts
        self._prev = now
        return ev

    def batches(self, rate: float | None = None, seconds: float | None = None,
                events: int | None = None, clock: Callable[[], float] = time.perf_counter,
                sleep: Callable[[float], None] = time.sleep) -> Iterator[np.ndarray]:
        """Yield batches until ``seconds`` have passed or ``events`` were
        produced (or forever when both are ``None``), at most ``rate``
        events per second on average.

        A yielded array is a view of the generator's pool: send it (or
        copy it) before asking for the next.
        """
        t0 = clock()
        produced = 0
        while events is None or produced < events:
            now = clock()
            if seconds is not None and now - t0 >= seconds:
                return
            n = self.batch if events is None else min(self.batch, events - produced)
            if rate is not None:
                due = t0 + produced / rate
                if seconds is not None and due - t0 >= seconds:
                    return
                if due > now:
                    sleep(due - now)
            yield self.next(n)
            produced += n


def check_record(rec) -> str | None:
    """Why a decoded JSON line would be refused by the gateway, or ``None``.

    The rules of PROTOCOL.md: an object with ``entity`` (a name or a u64 id),
    ``metric`` (a name or a u32 id), ``value`` (a finite number) and
    optionally ``ts`` (nanoseconds since the epoch: an integer, or a finite
    number in the i64 range, which the gateway rounds), nothing else.
    """
    if not isinstance(rec, dict):
        return f"not a JSON object but {type(rec).__name__}"
    extra = set(rec) - _JSON_FIELDS
    if extra:
        return f"unknown field(s) {', '.join(sorted(extra))}"
    for need in ("entity", "metric", "value"):
        if need not in rec:
            return f"missing field {need!r}"
    for name, bits in (("entity", 64), ("metric", 32)):
        v = rec[name]
        if isinstance(v, str):
            if not v:
                return f"{name} is an empty name"
            try:
                v.encode()
            except UnicodeEncodeError:
                return f"{name} name is not valid Unicode (a lone surrogate)"
        elif isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**bits:
            return f"{name} must be a name or a u{bits} id, got {v!r}"
    value = rec["value"]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"value must be a number, got {value!r}"
    if not math.isfinite(value):
        return f"value must be finite, got {value!r}"
    if "ts" in rec:
        ts = rec["ts"]
        if isinstance(ts, float):
            if not (math.isfinite(ts) and -(2.0**63) <= ts < 2.0**63):
                return f"ts must be a finite number of nanoseconds in the i64 range, got {ts!r}"
        elif isinstance(ts, bool) or not isinstance(ts, int) or not -(2**63) <= ts < 2**63:
            return f"ts must be nanoseconds since the epoch (a number), got {ts!r}"
    return None


def read_lines(fd: int, idle: float = 0.2) -> Iterator[bytes | None]:
    """Lines (without the newline) read from a file descriptor as they come,
    and ``None`` whenever nothing arrived for ``idle`` seconds, so that a
    slow producer (``tail -f log | ringflow send -``) is not held back by
    the batching."""
    import os
    import select

    buf = b""
    while True:
        ready, _, _ = select.select([fd], [], [], idle)
        if not ready:
            yield None
            continue
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            if buf:
                yield buf
            return
        buf += chunk
        *lines, buf = buf.split(b"\n")
        yield from lines


def read_chunks(fd: int | None = None, stream=None, idle: float = 0.2,
                size: int = 1 << 20) -> Iterator[bytes | None]:
    """Runs of whole lines (each ending in ``\\n``, except perhaps the
    file's last) read from a file descriptor as they come, or from
    ``stream`` (a binary file without a descriptor), and ``None`` whenever
    nothing arrived on ``fd`` for ``idle`` seconds, so that a slow producer
    (``tail -f log | ringflow send -``) is not held back."""
    import os
    import select

    rest = b""
    while True:
        if fd is not None:
            ready, _, _ = select.select([fd], [], [], idle)
            if not ready:
                yield None
                continue
            chunk = os.read(fd, size)
        else:
            chunk = stream.read(size)
        if not chunk:
            if rest:
                yield rest
            return
        cut = chunk.rfind(b"\n")
        if cut < 0:
            rest += chunk
            continue
        yield rest + chunk[:cut + 1] if rest else chunk[:cut + 1]
        rest = chunk[cut + 1:]


def iter_json_lines(lines: Iterable[bytes | None]
                    ) -> Iterator[tuple[int, dict | None, str | None]]:
    """``(line_number, record, None)`` for each good line and
    ``(line_number, None, reason)`` for each bad one; blank lines are skipped.
    Line numbers start at 1.  A ``None`` among the lines (nothing to read
    for a while) comes out as ``(0, None, None)``."""
    number = 0
    for raw in lines:
        if raw is None:
            yield 0, None, None
            continue
        number += 1
        try:
            text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        except UnicodeDecodeError as exc:
            yield number, None, f"not UTF-8 ({exc.reason} at byte {exc.start})"
            continue
        if not text.strip():
            continue
        try:
            rec = json.loads(text)
        except ValueError as exc:
            yield number, None, f"not JSON ({exc})"
            continue
        reason = check_record(rec)
        if reason is None:
            yield number, rec, None
        else:
            yield number, None, reason


@dataclass
class SendResult:
    """What one ``ringflow send`` did."""

    events: int = 0
    messages: int = 0
    seconds: float = 0.0
    ack: bool = False
    accepted: int = 0                 # acked mode: records the gateway took
    rejected_records: int = 0         # acked mode: records it refused (NaN, time range)
    rejected_messages: Counter = field(default_factory=Counter)  # reason -> messages
    lines: int = 0                    # JSON lines read (blank ones included)
    bad_lines: int = 0
    interrupted: bool = False
    error: str | None = None          # why sending stopped early (timeout)
    timed_out: bool = False

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


def _send_one(client, send: Callable, payload, n: int, ack: bool, result: SendResult) -> None:
    from ..errors import Rejected

    try:
        accepted = send(payload, ack=ack)
    except Rejected as exc:
        # Records taken before the rejection (backpressure) will be applied.
        taken = int(getattr(exc, "accepted", 0) or 0)
        result.rejected_messages[getattr(exc, "reason", None) or "rejected"] += 1
        result.messages += 1
        result.events += n
        result.accepted += taken
        result.rejected_records += n - taken
        return
    result.messages += 1
    result.events += n
    if ack and accepted is not None:
        result.accepted += int(accepted)
        result.rejected_records += n - int(accepted)


def _progress(console, total: float | None, label: str):
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    columns = [TextColumn(label), TextColumn("{task.fields[sent]}"),
               TextColumn("{task.fields[rate]}")]
    if total is not None:
        columns.insert(1, BarColumn())
    columns.append(TimeElapsedColumn())
    progress = Progress(*columns, console=console, transient=False, refresh_per_second=8)
    task = progress.add_task(label, total=total, sent="0 events", rate="")
    return progress, task


def send_synthetic(client, load: SyntheticLoad, *, rate: float | None = None,
                   seconds: float | None = None, events: int | None = None, ack: bool = False,
                   console=None) -> SendResult:
    """Send synthetic load with a live progress line; Ctrl-C stops early
    (``interrupted``), a gateway timeout too (``timed_out``)."""
    from ..errors import GatewayTimeout

    result = SendResult(ack=ack)
    total = float(events) if events is not None else seconds
    progress, task = _progress(console, total, "send")
    t0 = time.perf_counter()
    last = 0.0
    try:
        with progress:
            try:
                for ev in load.batches(rate=rate, seconds=seconds, events=events):
                    _send_one(client, client.send, ev, len(ev), ack, result)
                    now = time.perf_counter() - t0
                    if now - last >= 0.1:
                        last = now
                        progress.update(
                            task, completed=result.events if events is not None else now,
                            sent=f"{result.events:,} events",
                            rate=f"{result.events / now:,.0f} events/s" if now else "")
            finally:
                result.seconds = time.perf_counter() - t0
                progress.update(
                    task, completed=result.events if events is not None else result.seconds,
                    sent=f"{result.events:,} events", rate=f"{result.rate:,.0f} events/s")
    except KeyboardInterrupt:
        result.interrupted = True
    except GatewayTimeout as exc:
        result.timed_out = True
        result.error = str(exc)
    return result


def send_lines(client, chunks: Iterable[bytes | None], *, source: str, batch: int,
               rate: float | None = None, ack: bool = False, report: Callable[[str], None],
               max_reports: int = 100) -> SendResult:
    """Send JSON lines, given as runs of whole lines (:func:`read_chunks`),
    in messages of at most ``batch`` lines.

    A message's bytes are sent as they were read, once the gateway's
    decoder (in C) has taken them; a message it refuses is checked line by
    line, each bad line is passed to ``report`` as ``"SOURCE:LINE: reason"``
    (the first ``max_reports`` of them, then one summary) and skipped, and
    the good lines are sent.
    """
    from ..errors import GatewayTimeout
    from ..net.protocol import JsonLinesDecoder, ProtocolError

    result = SendResult(ack=ack)
    # strict: empty names are refused here, as check_record does; names
    # are checked, not hashed (the gateway hashes them).
    decoder = JsonLinesDecoder(strict=True, check_only=True)
    t0 = time.perf_counter()

    def flush(body, count: int) -> None:
        if rate is not None:
            due = t0 + result.events / rate
            now = time.perf_counter()
            if due > now:
                time.sleep(due - now)
        _send_one(client, lambda b, ack: client.send_json_body(b, count, ack), body, count,
                  ack, result)

    def checked(body: bytes, first: int) -> tuple[bytes, int]:
        """The good lines of ``body`` (line ``first`` on) and their count;
        the bad ones are reported."""
        good = []
        for number, rec, reason in iter_json_lines(body.split(b"\n")):
            if rec is not None:
                good.append(number)
            elif number:
                result.bad_lines += 1
                if result.bad_lines <= max_reports:
                    report(f"{source}:{first + number - 1}: {reason}")
        lines = body.split(b"\n")
        return b"".join(lines[n - 1] + b"\n" for n in good), len(good)

    try:
        for chunk in chunks:
            if not chunk:
                continue
            ends = np.flatnonzero(np.frombuffer(chunk, np.uint8) == 10)[batch - 1::batch] + 1
            start = 0
            for end in [*ends.tolist(), len(chunk)]:
                if end <= start:
                    continue
                body = chunk[start:end]
                start = end
                first = result.lines + 1
                result.lines += body.count(b"\n") + (not body.endswith(b"\n"))
                try:
                    records = decoder.decode(body, now=0)
                    # A float ts out of range comes back as an invalid record.
                    clean = not np.isnan(records["value"]).any()
                except ProtocolError:
                    clean = False
                if clean:
                    count = len(records)
                else:
                    body, count = checked(body, first)
                if count:
                    flush(body, count)
    except KeyboardInterrupt:
        result.interrupted = True
    except GatewayTimeout as exc:
        result.timed_out = True
        result.error = str(exc)
    if result.bad_lines > max_reports:
        report(f"{source}: {result.bad_lines - max_reports} more malformed lines not shown")
    result.seconds = time.perf_counter() - t0
    return result
