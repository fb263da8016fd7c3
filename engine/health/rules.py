"""Health rules: parsing, validation and the byte image the kernels read.

The contract is ``docs/health.md``.  Rules are given as a TOML file, a TOML
string or a dict; :meth:`Rules.load` turns any of them into an immutable
:class:`Rules`, :meth:`Rules.compile` into one :data:`RULE_DTYPE` record per
rule, and :meth:`Rules.encode` into the rules segment that the engine copies
into shared memory under its generation seqlock.  Every error is a
:class:`engine.errors.ConfigError` that names the rule (by its 1-based
number, the value the state row's ``rule`` field holds for it) and its metric.
"""

from __future__ import annotations

import math
import numbers
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.durations import format_duration, parse_duration
from ..core.layout import (
    MAX_RULES,
    RULE_FALLING,
    RULE_HAS_CRIT,
    RULE_HAS_WARN,
    RULE_WILDCARD,
    RULES_HEADER_BYTES,
    STAT_NAMES,
    STAT_TTL,
    STATUS_NAMES,
    numpy_dtype,
)
from ..core.records import metric_id
from ..errors import ConfigError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the tomli backport (a dependency there)
    import tomli as tomllib

__all__ = [
    "STATUS_NAMES",
    "STAT_NAMES",
    "STAT_TTL",
    "stat_name",
    "stat_code",
    "MAX_RULES",
    "RULE_DTYPE",
    "RULE_WILDCARD",
    "RULE_HAS_WARN",
    "RULE_HAS_CRIT",
    "RULE_FALLING",
    "RULES_HEADER_DTYPE",
    "RULES_HEADER_BYTES",
    "RULES_SEGMENT_BYTES",
    "DEFAULT_VIEWS",
    "Rule",
    "Rules",
]

_I64_MAX = 2**63 - 1

# --------------------------------------------------------------------------
# Status and stat codes (the codes themselves are in engine.core.layout,
# shared with the kernels; re-exported here)

#: Default horizons, in windows, of the three sliding views.
DEFAULT_VIEWS = (1, 5, 15)

_VIEW_BASE = STAT_NAMES.index("view0")
_BASE_STATS = STAT_NAMES[:_VIEW_BASE]


def _view_names(views: Sequence[int]) -> tuple[str, str, str]:
    try:
        horizons = tuple(views)
    except TypeError:
        horizons = ()
    ok = len(horizons) == 3 and all(
        isinstance(n, numbers.Integral) and not isinstance(n, (bool, np.bool_)) and n >= 1
        for n in horizons
    )
    # Two equal horizons would give two stat codes the same name.
    if not ok or len(set(horizons)) != 3:
        raise ConfigError(f"views must be three distinct positive integers, got {views!r}")
    return tuple(f"view{int(n)}" for n in horizons)  # type: ignore[return-value]


def stat_name(code: int, views: Sequence[int] = DEFAULT_VIEWS) -> str:
    """Name of a stat code, as rules and alerts spell it.

    Parameters
    ----------
    code : int
        ``0 .. 17`` or :data:`STAT_TTL`.
    views : sequence of 3 int
        The engine's view horizons: codes 15..17 are named after them
        (``"view1"``, ``"view5"``, ``"view15"`` by default).

    Returns
    -------
    str

    Raises
    ------
    ValueError
        An unknown code.
    ConfigError
        Bad ``views``.
    """
    names = _view_names(views)
    if code == STAT_TTL:
        return "ttl"
    if isinstance(code, (bool, np.bool_)) or not isinstance(code, numbers.Integral):
        raise ValueError(f"stat code must be an integer, got {code!r}")
    if 0 <= code < _VIEW_BASE:
        return STAT_NAMES[code]
    if _VIEW_BASE <= code < len(STAT_NAMES):
        return names[code - _VIEW_BASE]
    raise ValueError(f"unknown stat code {code!r}")


def stat_code(name: str, views: Sequence[int] = DEFAULT_VIEWS) -> int:
    """Stat code of a stat name; the inverse of :func:`stat_name`.

    Parameters
    ----------
    name : str
        A name of :data:`STAT_NAMES` other than the placeholders
        ``view0..view2``, one of the view names derived from ``views``, or
        ``"ttl"``.
    views : sequence of 3 int
        The engine's view horizons.

    Returns
    -------
    int

    Raises
    ------
    ConfigError
        An unknown name (the message lists the valid ones), or bad ``views``.
    """
    names = _view_names(views)
    if name in _BASE_STATS:
        return _BASE_STATS.index(name)
    if name in names:
        return _VIEW_BASE + names.index(name)
    if name == "ttl":
        return STAT_TTL
    valid = ", ".join((*_BASE_STATS, *names, "ttl"))
    raise ConfigError(f"unknown stat {name!r}; valid stats: {valid}")


# --------------------------------------------------------------------------
# The compiled form

#: One compiled rule, 64 bytes (one cache line), as the kernels read it.
#: Thresholds of a falling rule are stored negated (the kernels evaluate it
#: as a rising rule over ``-v``); a missing warn is stored as the crit level
#: and a missing crit as ``+inf`` (in either direction: it never fires).
RULE_DTYPE = numpy_dtype("Rule")

#: Header of the rules segment; the engine owns ``generation`` (its seqlock).
RULES_HEADER_DTYPE = numpy_dtype("RulesHeader")
#: Bytes of the shared rules segment: the header and room for MAX_RULES rules.
RULES_SEGMENT_BYTES = RULES_HEADER_BYTES + MAX_RULES * RULE_DTYPE.itemsize


# --------------------------------------------------------------------------
# Rules

_DIRECTIONS = ("rising", "falling")
_RULE_KEYS = ("metric", "stat", "warn", "crit", "clear", "for", "ttl", "direction")
_DEFAULT_KEYS = ("ttl", "lateness")
_TOP_KEYS = ("defaults", "rule", "rules")
_VIEW_NAME_RE = re.compile(r"view[1-9][0-9]*")


def _threshold(value: Any, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{what} must be a number, got {value!r}")
    f = float(value)
    if not math.isfinite(f):
        raise ConfigError(f"{what} must be finite, got {value!r}")
    return f


def _nanoseconds(value: Any, what: str, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if (isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral)
            or not 0 <= value <= _I64_MAX):
        raise ConfigError(f"{what} must be an integer number of nanoseconds >= 0, got {value!r}")
    return int(value)


def _fmt(x: float) -> str:
    return f"{x:.15g}"


@dataclass(frozen=True)
class Rule:
    """One rule: the thresholds of one metric's stat.

    Normally built by :meth:`Rules.load`; building one directly validates the
    same way (without the rule number in messages).

    Parameters
    ----------
    metric : str
        A metric name, or ``"*"`` for every metric without its own rule.
    stat : str
        The stat watched (:data:`STAT_NAMES`, with views named after their
        horizons, e.g. ``"view5"``); default ``"last"``.
    warn, crit : float or None
        Levels; at least one.  ``warn < crit``: rising; ``warn > crit``:
        falling (e.g. free disk space).
    clear : float or None
        Hysteresis level: an alerting series goes back to OK only once the
        stat is below ``clear`` (rising; above it when falling).  ``None``:
        the warn level, or the crit level when there is no warn.
    for_ns : int
        How long (event time, ns) a worse level must hold before it is
        committed.
    ttl_ns : int or None
        Silence (ns) after which the series is STALE; 0: never; ``None``:
        the defaults' ttl.
    direction : {"rising", "falling"} or None
        Stated direction.  ``None`` infers it: from the thresholds when both
        are given, else rising.  After construction it is always set.

    Raises
    ------
    ConfigError
        Any inconsistency.
    """

    metric: str
    stat: str = "last"
    warn: float | None = None
    crit: float | None = None
    clear: float | None = None
    for_ns: int = 0
    ttl_ns: int | None = None
    direction: str | None = None

    def __post_init__(self) -> None:
        put = object.__setattr__
        if not isinstance(self.metric, str) or not self.metric:
            raise ConfigError(
                f"metric must be a non-empty string (a metric name or '*'), got {self.metric!r}"
            )
        # The views' names depend on the engine's horizons, which a rule does
        # not know: Rules.load and Rules.compile check them against the views.
        if not isinstance(self.stat, str) or not (
            self.stat in _BASE_STATS or _VIEW_NAME_RE.fullmatch(self.stat)
        ):
            valid = ", ".join((*_BASE_STATS, *_view_names(DEFAULT_VIEWS)))
            raise ConfigError(f"unknown stat {self.stat!r}; a rule can watch: {valid}")
        warn = _threshold(self.warn, "warn")
        crit = _threshold(self.crit, "crit")
        clear = _threshold(self.clear, "clear")
        if warn is None and crit is None:
            raise ConfigError("a rule needs warn or crit (or both)")
        direction = self.direction
        if direction is not None and direction not in _DIRECTIONS:
            raise ConfigError(f"direction must be 'rising' or 'falling', got {direction!r}")
        if warn is not None and crit is not None:
            if warn == crit:
                raise ConfigError(
                    f"warn and crit are equal ({_fmt(warn)}): warn < crit for a rising rule, "
                    "warn > crit for a falling one, or give only one of them"
                )
            implied = "rising" if warn < crit else "falling"
            if direction is not None and direction != implied:
                rel = "<" if implied == "rising" else ">"
                raise ConfigError(
                    f"direction is {direction!r} but warn ({_fmt(warn)}) {rel} crit "
                    f"({_fmt(crit)}) makes the rule {implied}"
                )
            direction = implied
        elif direction is None:
            direction = "rising"
        if clear is not None:
            level, level_name = (warn, "warn") if warn is not None else (crit, "crit")
            if direction == "rising" and clear > level:
                raise ConfigError(
                    f"clear ({_fmt(clear)}) must be <= {level_name} ({_fmt(level)}) "
                    "for a rising rule"
                )
            if direction == "falling" and clear < level:
                raise ConfigError(
                    f"clear ({_fmt(clear)}) must be >= {level_name} ({_fmt(level)}) "
                    "for a falling rule"
                )
        put(self, "warn", warn)
        put(self, "crit", crit)
        put(self, "clear", clear)
        put(self, "direction", direction)
        put(self, "for_ns", _nanoseconds(self.for_ns, "for"))
        put(self, "ttl_ns", _nanoseconds(self.ttl_ns, "ttl", optional=True))

    @property
    def falling(self) -> bool:
        """True for a falling rule (``warn > crit``, or stated so)."""
        return self.direction == "falling"

    @property
    def wildcard(self) -> bool:
        """True for the ``"*"`` rule."""
        return self.metric == "*"

    @property
    def effective_clear(self) -> float:
        """The clear level in force: ``clear``, else warn, else crit."""
        if self.clear is not None:
            return self.clear
        return self.warn if self.warn is not None else self.crit  # type: ignore[return-value]

    def to_dict(self) -> dict[str, Any]:
        """The rule as a ``[[rule]]`` table: only set keys, durations as strings.

        Returns
        -------
        dict
            Accepted back by :meth:`Rules.load` (inside ``{"rule": [...]}``).
        """
        d: dict[str, Any] = {"metric": self.metric, "stat": self.stat}
        for key in ("warn", "crit", "clear"):
            if getattr(self, key) is not None:
                d[key] = getattr(self, key)
        d["direction"] = self.direction
        if self.for_ns:
            d["for"] = format_duration(self.for_ns)
        if self.ttl_ns is not None:
            d["ttl"] = format_duration(self.ttl_ns)
        return d

    def describe(self, default_ttl_ns: int | None = None) -> str:
        """One line: what makes the rule fire and clear.

        Parameters
        ----------
        default_ttl_ns : int or None
            The defaults' ttl, shown when the rule has none of its own.

        Returns
        -------
        str
        """
        cmp, back = (">=", "below") if not self.falling else ("<=", "above")
        parts = []
        if self.warn is not None:
            parts.append(f"WARN {cmp} {_fmt(self.warn)}")
        if self.crit is not None:
            parts.append(f"CRIT {cmp} {_fmt(self.crit)}")
        parts.append(f"OK {back} {_fmt(self.effective_clear)}")
        if self.for_ns:
            parts.append(f"for {format_duration(self.for_ns)}")
        ttl = self.ttl_ns if self.ttl_ns is not None else default_ttl_ns
        if ttl is not None:
            shown = "never" if ttl == 0 else format_duration(ttl)
            parts.append(f"ttl {shown}" + (" (default)" if self.ttl_ns is None else ""))
        return f"{self.metric} {self.stat} ({self.direction}): " + ", ".join(parts)


def _rule_stat_names(views: Sequence[int]) -> tuple[str, ...]:
    return (*_BASE_STATS, *_view_names(views))


def _parse_rule(raw: Any, number: int, views: Sequence[int]) -> Rule:
    metric = raw.get("metric") if isinstance(raw, Mapping) else None
    where = f"rule {number}" + (f" (metric {metric!r})" if isinstance(metric, str) else "")
    try:
        if not isinstance(raw, Mapping):
            raise ConfigError(f"must be a table of settings, got {type(raw).__name__} {raw!r}")
        unknown = [k for k in raw if k not in _RULE_KEYS]
        if unknown:
            raise ConfigError(
                f"unknown key(s) {', '.join(map(repr, unknown))}; "
                f"valid keys: {', '.join(_RULE_KEYS)}"
            )
        if "metric" not in raw:
            raise ConfigError("no metric (a metric name, or '*' for every metric)")
        stat = raw.get("stat", "last")
        if stat not in _rule_stat_names(views):
            raise ConfigError(
                f"unknown stat {stat!r}; a rule can watch: {', '.join(_rule_stat_names(views))}"
            )
        ttl = raw.get("ttl")
        return Rule(
            metric=metric,  # type: ignore[arg-type]
            stat=stat,
            warn=raw.get("warn"),
            crit=raw.get("crit"),
            clear=raw.get("clear"),
            for_ns=parse_duration(raw.get("for", 0), "for"),
            ttl_ns=None if ttl is None else parse_duration(ttl, "ttl"),
            direction=raw.get("direction"),
        )
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _read_toml(text: str, origin: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"rules {origin} is not valid TOML: {exc}") from None


def _source_dict(source: Any) -> dict[str, Any]:
    if isinstance(source, Mapping):
        return dict(source)
    if isinstance(source, os.PathLike):
        return _read_file(os.fspath(source))
    if isinstance(source, str):
        # A newline cannot be in a path anyone means, and testing it first
        # keeps a long TOML string away from the file system.
        if "\n" in source:
            return _read_toml(source, "string")
        if os.path.isfile(source):
            return _read_file(source)
        if source.strip().endswith(".toml"):
            raise ConfigError(f"rules file not found: {source!r}")
        if "=" in source or "[" in source:
            return _read_toml(source, "string")
        raise ConfigError(f"rules {source!r} is neither an existing file nor a TOML string")
    raise ConfigError(
        "rules must be a TOML file path, a TOML string or a dict, "
        f"got {type(source).__name__}"
    )


def _read_file(path: str | bytes) -> dict[str, Any]:
    path = os.fsdecode(path)
    if not os.path.exists(path):
        raise ConfigError(f"rules file not found: {path!r}")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read rules file {path!r}: {exc}") from None
    return _read_toml(text, f"file {path!r}")


@dataclass(frozen=True, repr=False)
class Rules:
    """A validated, immutable set of health rules (``docs/health.md``).

    Build it with :meth:`load`.  Constructing it directly checks what spans
    rules (count, one rule per metric); each :class:`Rule` checks itself.

    Parameters
    ----------
    ttl_ns : int
        Default silence (ns) after which a series is STALE; 0: never.
    lateness_ns : int or None
        How long (ns of event time) a window stays open for late events
        after its end; see :meth:`check_window`.  ``None``: not set here,
        the engine's own ``lateness`` applies.
    rules : tuple of Rule
        In order; rule ``i`` is number ``i + 1`` in messages and in the
        state row's ``rule`` field.

    Raises
    ------
    ConfigError
        Too many rules, two rules for one metric, two metric names with the
        same id, or bad durations.
    """

    ttl_ns: int = 0
    lateness_ns: int | None = None
    rules: tuple[Rule, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "ttl_ns", _nanoseconds(self.ttl_ns, "defaults.ttl"))
        if self.lateness_ns is not None:
            object.__setattr__(
                self, "lateness_ns", _nanoseconds(self.lateness_ns, "defaults.lateness")
            )
        rules = tuple(self.rules)
        object.__setattr__(self, "rules", rules)
        if len(rules) > MAX_RULES:
            raise ConfigError(f"{len(rules)} rules; at most {MAX_RULES} are allowed")
        by_metric: dict[str, int] = {}
        by_id: dict[int, str] = {}
        for number, rule in enumerate(rules, 1):
            if not isinstance(rule, Rule):
                raise ConfigError(f"rule {number} is a {type(rule).__name__}, not a Rule")
            m = rule.metric
            if m in by_metric:
                raise ConfigError(
                    f"rule {number} (metric {m!r}): metric {m!r} already has rule "
                    f"{by_metric[m]}; one rule per metric"
                )
            by_metric[m] = number
            if rule.wildcard:
                continue
            # The kernels know metrics by their 32-bit id only: two names
            # with one id would silently share a rule.
            mid = metric_id(m)
            if mid in by_id:
                raise ConfigError(
                    f"rule {number} (metric {m!r}): metrics {by_id[mid]!r} and {m!r} "
                    f"have the same id {mid}; rename one"
                )
            by_id[mid] = m

    @classmethod
    def load(cls, source: Any, *, views: Sequence[int] = DEFAULT_VIEWS) -> Rules:
        """Parse and validate rules.

        Parameters
        ----------
        source : None, Rules, dict, str or os.PathLike
            ``None``: no rules.  A :class:`Rules` is returned as is.  A dict
            ``{"defaults": {"ttl": ..., "lateness": ...}, "rule": [{...}, ...]}``
            (``"rules"`` is accepted for ``"rule"``).  A path to a TOML file
            of that shape, or the TOML text itself (a string that is not an
            existing file and has a newline, ``=`` or ``[`` in it).
        views : sequence of 3 int
            The engine's view horizons, which name the view stats.

        Returns
        -------
        Rules

        Raises
        ------
        ConfigError
            A missing file, bad TOML, or any invalid setting; the message
            names the rule (1-based) and its metric.
        """
        if source is None:
            return cls()
        if isinstance(source, Rules):
            return source
        _view_names(views)
        data = _source_dict(source)
        unknown = [k for k in data if k not in _TOP_KEYS]
        if unknown:
            raise ConfigError(
                f"rules: unknown key(s) {', '.join(map(repr, unknown))}; "
                "valid keys: defaults, rule"
            )
        if "rule" in data and "rules" in data:
            raise ConfigError("rules: give either 'rule' or 'rules', not both")
        defaults = data.get("defaults", {})
        if not isinstance(defaults, Mapping):
            raise ConfigError(f"rules: defaults must be a table, got {defaults!r}")
        unknown = [k for k in defaults if k not in _DEFAULT_KEYS]
        if unknown:
            raise ConfigError(
                f"defaults: unknown key(s) {', '.join(map(repr, unknown))}; "
                f"valid keys: {', '.join(_DEFAULT_KEYS)}"
            )
        raw_rules = data.get("rule", data.get("rules", []))
        if isinstance(raw_rules, Mapping) or not isinstance(raw_rules, (list, tuple)):
            raise ConfigError(
                "rules: 'rule' must be a list of tables ([[rule]] in TOML), "
                f"got {type(raw_rules).__name__}"
            )
        # Checked before parsing so that a huge list fails fast and clearly.
        if len(raw_rules) > MAX_RULES:
            raise ConfigError(f"{len(raw_rules)} rules; at most {MAX_RULES} are allowed")
        return cls(
            ttl_ns=parse_duration(defaults.get("ttl", 0), "defaults.ttl"),
            lateness_ns=(parse_duration(defaults["lateness"], "defaults.lateness")
                         if "lateness" in defaults else None),
            rules=tuple(_parse_rule(r, i, views) for i, r in enumerate(raw_rules, 1)),
        )

    def check_window(self, window_ns: int) -> None:
        """Check the lateness against the engine's window (``lateness <= window``).

        Parameters
        ----------
        window_ns : int
            Window width in nanoseconds.

        Raises
        ------
        ConfigError
            ``lateness_ns > window_ns``: a window would have to stay open
            after the next one closed.
        """
        if self.lateness_ns is not None and self.lateness_ns > window_ns:
            raise ConfigError(
                f"defaults.lateness ({format_duration(self.lateness_ns)}) must not exceed "
                f"the window ({format_duration(window_ns)})"
            )

    def compile(self, views: Sequence[int] = DEFAULT_VIEWS) -> np.ndarray:
        """One :data:`RULE_DTYPE` record per rule, in order.

        Parameters
        ----------
        views : sequence of 3 int
            The engine's view horizons, which give the view stats their codes.

        Returns
        -------
        numpy.ndarray
            ``len(self.rules)`` records.  Falling rules have their thresholds
            negated; a missing warn holds the crit level, a missing crit
            ``+inf``; ``ttl_ns`` is the rule's or else the defaults'.

        Raises
        ------
        ConfigError
            A rule watches a view that ``views`` does not have.
        """
        names = _rule_stat_names(views)
        out = np.zeros(len(self.rules), dtype=RULE_DTYPE)
        for i, r in enumerate(self.rules):
            if r.stat not in names:
                raise ConfigError(
                    f"rule {i + 1} (metric {r.metric!r}): unknown stat {r.stat!r}; "
                    f"a rule can watch: {', '.join(names)}"
                )
            sign = -1.0 if r.falling else 1.0
            flags = (
                (RULE_WILDCARD if r.wildcard else 0)
                | (RULE_HAS_WARN if r.warn is not None else 0)
                | (RULE_HAS_CRIT if r.crit is not None else 0)
                | (RULE_FALLING if r.falling else 0)
            )
            level = r.warn if r.warn is not None else r.crit
            rec = out[i]
            rec["metric"] = 0 if r.wildcard else metric_id(r.metric)
            rec["stat"] = stat_code(r.stat, views)
            rec["flags"] = flags
            rec["warn"] = sign * level  # type: ignore[operator]
            # +inf in the stored (possibly negated) space: never reached.
            rec["crit"] = sign * r.crit if r.crit is not None else math.inf
            rec["clear"] = sign * r.effective_clear
            rec["for_ns"] = r.for_ns
            rec["ttl_ns"] = r.ttl_ns if r.ttl_ns is not None else self.ttl_ns
        return out

    def encode(self, views: Sequence[int] = DEFAULT_VIEWS) -> bytes:
        """The rules segment image, generation word 0.

        Parameters
        ----------
        views : sequence of 3 int
            As for :meth:`compile`.

        Returns
        -------
        bytes
            A :data:`RULES_HEADER_DTYPE` header (generation 0, count, default
            ttl_ns, lateness_ns, zero padding) followed by :meth:`compile`'s
            records: ``RULES_HEADER_BYTES + RULE_BYTES * count`` bytes.  The engine
            copies it into shared memory and bumps the generation around it.
        """
        body = self.compile(views).tobytes()
        # -1: no lateness here, the workers keep the engine's.
        lateness = -1 if self.lateness_ns is None else self.lateness_ns
        header = np.zeros(1, RULES_HEADER_DTYPE)  # generation 0: the engine owns it
        header["count"] = len(self.rules)
        header["ttl_ns"] = self.ttl_ns
        header["lateness_ns"] = lateness
        return header.tobytes() + body

    def metric_names(self) -> dict[int, str]:
        """Metric id -> name for the rules' metrics (not ``"*"``).

        Returns
        -------
        dict of int to str
        """
        return {metric_id(r.metric): r.metric for r in self.rules if not r.wildcard}

    def to_dict(self) -> dict[str, Any]:
        """The rules as a dict (TOML-ready: no None, durations as strings).

        Returns
        -------
        dict
            ``{"defaults": {"ttl": ..., "lateness": ...}, "rule": [...]}``;
            ``Rules.load(rules.to_dict()) == rules``.
        """
        defaults = {"ttl": format_duration(self.ttl_ns)}
        if self.lateness_ns is not None:
            defaults["lateness"] = format_duration(self.lateness_ns)
        return {"defaults": defaults, "rule": [r.to_dict() for r in self.rules]}

    def describe(self) -> str:
        """The defaults and then the rules, one per line (for the CLI).

        Returns
        -------
        str
        """
        ttl = "never" if self.ttl_ns == 0 else format_duration(self.ttl_ns)
        late = "engine's" if self.lateness_ns is None else format_duration(self.lateness_ns)
        lines = [f"defaults: ttl {ttl}, lateness {late}"]
        if not self.rules:
            lines.append("no rules")
        for number, rule in enumerate(self.rules, 1):
            lines.append(f"rule {number}: {rule.describe(self.ttl_ns)}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.describe()

    def __repr__(self) -> str:
        metrics = ", ".join(r.metric for r in self.rules)
        late = None if self.lateness_ns is None else format_duration(self.lateness_ns)
        return (
            f"Rules(ttl={format_duration(self.ttl_ns)!r}, "
            f"lateness={late!r}, "
            f"{len(self.rules)} rule{'s' if len(self.rules) != 1 else ''}"
            + (f": {metrics})" if metrics else ")")
        )
