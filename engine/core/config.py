"""Engine settings: what a user chooses, checked once, with the sizes derived from it."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import ConfigError
from ..health.rules import Rules, stat_name
from .durations import parse_duration
from .layout import (
    INDEX_ENTRY_BYTES,
    PRODUCER_MARK_BYTES,
    PRODUCER_MARK_SLOTS,
    ROW_BYTES,
    TABLE_HEADER_BYTES,
    WAIT_STRATEGIES,
)
from .records import DEFAULT_TS_MAX, DEFAULT_TS_MIN

__all__ = ["EngineConfig", "FSYNC_POLICIES", "WAIT_STRATEGIES"]

#: When the journal is synced to the disk (Redis' appendfsync).
FSYNC_POLICIES = ("interval", "always", "never")

_WAIT_CODES = {name: code for code, name in enumerate(WAIT_STRATEGIES)}

def _pow2_at_least(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


@dataclass(frozen=True)
class EngineConfig:
    """Settings of an :class:`engine.Engine`.

    Parameters
    ----------
    workers : int
        Worker processes, each owning one shard of the series.
    producers : int
        Producer slots: one ring per (producer, worker) pair keeps every ring
        single-producer.  Slot 0 is the embedding process's ``submit``; the
        others are handed out by :meth:`engine.Engine.producer` (the network
        gateway takes two: one for PULL ingest, one for acked ingest).
    ring_capacity : int
        Records per ring, rounded up to a power of two.
    table_capacity : int
        Series each worker can hold; a new series past it is refused and
        counted (never a silent drop, never a resize under readers).
    wait : {"block", "sleep", "yield", "spin"}
        What an idle worker and a producer facing a full ring do.  ``block``
        (the default) parks on a futex and costs nothing while idle.
    window : float or str
        Width of the tumbling windows in event time: seconds, or a string
        such as ``"60s"`` or ``"5m"`` (docs/health.md).
    lateness : float or str, optional
        How long after its end a window still takes late events; at most
        ``window``.  Default: 10 s, or the window if that is shorter.  A
        rules file's ``[defaults] lateness`` overrides it.
    half_life : float or str
        Half-life of the EWMA, in event time.
    views : tuple of 3 numbers
        Horizons of the sliding views, in windows (1m/5m/15m with 60 s
        windows).
    rules : str, dict, engine.health.rules.Rules or None
        Health rules: a TOML file path, a TOML string or a dict.
    alert_capacity : int
        Alerts each worker's alert ring holds (rounded up to a power of
        two).  A worker whose ring is full waits for the engine's alert
        thread to take them: no status change is dropped.
    alert_log : int
        Status changes the engine keeps, numbered, for subscribers that
        fell behind or joined late (:meth:`engine.Engine.alerts_since`,
        the ``alerts`` query op); with a ``data_dir`` they are also kept
        on disk across restarts.
    tick : float or str
        How often each worker checks its series' TTLs.
    ts_min, ts_max : int
        Sane range of event times (ns since the epoch); events outside it are
        rejected and counted.
    start_timeout : float
        Seconds to wait for the workers to come up.
    worker_timeout : float or str
        A worker whose drain loop has not turned for this long (it wakes at
        least every ``tick``, so this must exceed it) is declared hung,
        killed and replaced (docs/faults.md).
    max_restarts : int
        Failed starts of one shard's worker in a row after which the engine
        stops replacing it and reports the shard ``degraded``.  A start
        failed when the worker died before it served, or within
        ``stable_after`` of starting to; one that served longer is replaced
        at once, however often.
    stable_after : float or str
        How long a worker must serve for its start to count as good.
    restart_backoff : float or str
        Wait before the restart after the first failed start; it doubles
        with each further one (a restart after a good start is immediate).
    data_dir : str or Path, optional
        Where the journal lives (docs/journal.md).  ``None`` (the default
        for an embedded engine) keeps everything in memory.  Given, every
        batch a worker applies is first appended to its shard's journal
        there, and a start on an existing data dir replays it: the state
        comes back as it was for every journaled event.
    fsync : {"interval", "always", "never"}
        When the journal reaches the disk, as Redis' ``appendfsync``.  Under
        every policy an applied (hence acknowledged or flushed) event has
        been written to the OS, so a crash of the engine's processes loses
        nothing; against a crash of the machine, ``always`` syncs every
        batch before applying it, ``interval`` once a second (up to a second
        lost), ``never`` when the OS decides.
    segment_bytes : int
        A journal segment file is closed, and the next one started, once it
        holds this many bytes.
    snapshot_interval : float, str or None
        With a ``data_dir``: how often the state is snapshotted (and once
        more on a clean close), so that a start replays only the journal
        after the snapshot and the journal's older segments are deleted.
        ``None`` snapshots on close only.
    max_names : int
        Entity and metric names the engine remembers (to show names rather
        than ids); past it new names are counted, not kept, so that no
        sender can grow its memory without bound.  Events are taken either
        way.
    max_name_bytes : int
        Longest name remembered, in UTF-8 bytes.
    """

    workers: int = 2
    producers: int = 3
    ring_capacity: int = 1 << 16
    table_capacity: int = 1 << 18
    wait: str = "block"
    window: float | str = "60s"
    lateness: float | str | None = None
    half_life: float | str = "10s"
    views: tuple = (1, 5, 15)
    rules: object = None
    alert_capacity: int = 16384
    alert_log: int = 1 << 18
    tick: float | str = "250ms"
    ts_min: int = DEFAULT_TS_MIN
    ts_max: int = DEFAULT_TS_MAX
    start_timeout: float = 60.0
    worker_timeout: float | str = "2s"
    max_restarts: int = 5
    stable_after: float | str = "1s"
    restart_backoff: float | str = "100ms"
    data_dir: object = None
    fsync: str = "interval"
    segment_bytes: int = 64 << 20
    snapshot_interval: float | str | None = "1m"
    max_names: int = 1_000_000
    max_name_bytes: int = 256

    def __post_init__(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ConfigError(message)

        need(isinstance(self.workers, int) and 1 <= self.workers <= 256,
             f"workers must be an integer in 1..256, got {self.workers!r}")
        need(isinstance(self.producers, int) and 1 <= self.producers <= 64,
             f"producers must be an integer in 1..64, got {self.producers!r}")
        need(isinstance(self.ring_capacity, int) and 16 <= self.ring_capacity <= 1 << 26,
             f"ring_capacity must be in 16..2**26 records, got {self.ring_capacity!r}")
        need(isinstance(self.table_capacity, int) and 1 <= self.table_capacity <= 1 << 28,
             f"table_capacity must be in 1..2**28 series, got {self.table_capacity!r}")
        need(self.wait in _WAIT_CODES,
             f"wait must be one of {', '.join(WAIT_STRATEGIES)}; got {self.wait!r}")
        need(self.window_ns > 0, f"window must be positive, got {self.window!r}")
        need(self.half_life_ns > 0, f"half_life must be positive, got {self.half_life!r}")
        need(self.tick_ns >= 1_000_000, f"tick must be at least 1ms, got {self.tick!r}")
        need(isinstance(self.views, (tuple, list)) and len(self.views) == 3
             and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
                     for v in self.views),
             f"views must be 3 positive horizons in windows, got {self.views!r}")
        need(isinstance(self.alert_capacity, int) and 16 <= self.alert_capacity <= 1 << 24,
             f"alert_capacity must be in 16..2**24, got {self.alert_capacity!r}")
        need(isinstance(self.alert_log, int) and 16 <= self.alert_log <= 1 << 26,
             f"alert_log must be in 16..2**26, got {self.alert_log!r}")
        need(int(self.ts_min) >= 0, "ts_min must not be negative")
        object.__setattr__(self, "views", tuple(self.views))
        # The views name rule statistics (view1, view5, ...): the rules
        # module says which horizons can.
        stat_name(0, self.views)
        rules = self.health_rules
        rules.check_window(self.window_ns)
        need(self.lateness_ns <= self.window_ns,
             f"lateness ({self.lateness!r}) must not exceed the window ({self.window!r})")
        need(int(self.ts_min) < int(self.ts_max), "ts_min must be below ts_max")
        need(self.start_timeout > 0, "start_timeout must be positive")
        need(self.worker_timeout_ns > self.tick_ns,
             f"worker_timeout ({self.worker_timeout!r}) must exceed the tick "
             f"({self.tick!r}): an idle worker shows it is alive once a tick")
        need(isinstance(self.max_restarts, int) and self.max_restarts >= 0,
             f"max_restarts must be a non-negative integer, got {self.max_restarts!r}")
        need(self.stable_after_ns >= 0, "stable_after must not be negative")
        need(self.restart_backoff_ns >= 0, "restart_backoff must not be negative")
        need(self.fsync in FSYNC_POLICIES,
             f"fsync must be one of {', '.join(FSYNC_POLICIES)}; got {self.fsync!r}")
        need(isinstance(self.segment_bytes, int) and 1 << 16 <= self.segment_bytes <= 1 << 40,
             f"segment_bytes must be in 2**16..2**40, got {self.segment_bytes!r}")
        need(self.snapshot_interval is None or self.snapshot_interval_ns >= 100_000_000,
             f"snapshot_interval must be at least 100ms (or None), "
             f"got {self.snapshot_interval!r}")
        need(isinstance(self.max_names, int) and 0 <= self.max_names <= 1 << 32,
             f"max_names must be an integer in 0..2**32, got {self.max_names!r}")
        need(isinstance(self.max_name_bytes, int) and 1 <= self.max_name_bytes <= 1 << 16,
             f"max_name_bytes must be in 1..65536, got {self.max_name_bytes!r}")
        need(self.data_dir is None or isinstance(self.data_dir, (str, os.PathLike)),
             f"data_dir must be a path or None, got {self.data_dir!r}")

    @property
    def window_ns(self) -> int:
        return parse_duration(self.window, "window")

    @property
    def lateness_ns(self) -> int:
        if self.lateness is None:
            return min(10_000_000_000, self.window_ns)
        return parse_duration(self.lateness, "lateness")

    @property
    def half_life_ns(self) -> int:
        return parse_duration(self.half_life, "half_life")

    @property
    def tick_ns(self) -> int:
        return parse_duration(self.tick, "tick")

    @property
    def worker_timeout_ns(self) -> int:
        return parse_duration(self.worker_timeout, "worker_timeout")

    @property
    def snapshot_interval_ns(self) -> int | None:
        if self.snapshot_interval is None:
            return None
        return parse_duration(self.snapshot_interval, "snapshot_interval")

    @property
    def stable_after_ns(self) -> int:
        return parse_duration(self.stable_after, "stable_after")

    @property
    def restart_backoff_ns(self) -> int:
        return parse_duration(self.restart_backoff, "restart_backoff")

    @property
    def health_rules(self) -> Rules:
        """The rules, parsed and validated (:class:`engine.health.rules.Rules`)."""
        cached = self.__dict__.get("_rules")
        if cached is None:
            cached = Rules.load(self.rules, views=self.views)
            object.__setattr__(self, "_rules", cached)
        return cached

    @property
    def effective_lateness_ns(self) -> int:
        """The lateness the workers use: the rules' when they set one."""
        rules = self.health_rules
        return self.lateness_ns if rules.lateness_ns is None else rules.lateness_ns

    @property
    def alert_slots(self) -> int:
        return _pow2_at_least(self.alert_capacity)

    @property
    def wait_code(self) -> int:
        return _WAIT_CODES[self.wait]

    @property
    def ring_slots(self) -> int:
        return _pow2_at_least(self.ring_capacity)

    @property
    def table_slots(self) -> int:
        """Index entries per table: at most a quarter full, so that nearly
        every lookup ends at its home slot (a second probe is a branch the
        CPU cannot predict; bench/kernel.py measured 85 -> 116 M events/s
        at 1k series going from half to a quarter full)."""
        return _pow2_at_least(4 * self.table_capacity)

    def table_bytes(self) -> int:
        return (TABLE_HEADER_BYTES + self.table_slots * INDEX_ENTRY_BYTES
                + self.table_capacity * ROW_BYTES + PRODUCER_MARK_SLOTS * PRODUCER_MARK_BYTES)
