"""Durations: seconds or strings like ``"250ms"``, read into integer
nanoseconds and written back in their shortest exact spelling.

Every setting that is a span of time goes through :func:`parse_duration`:
engine settings, rules, ``ringflow serve`` flags."""

from __future__ import annotations

import math
import numbers
import re
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any

import numpy as np

from ..errors import ConfigError

__all__ = ["parse_duration", "format_duration"]

_I64_MAX = 2**63 - 1

_NS_PER_UNIT = {
    "ns": 1,
    "us": 10**3,
    "µs": 10**3,  # micro sign
    "μs": 10**3,  # Greek mu, which keyboards often give instead
    "ms": 10**6,
    "s": 10**9,
    "m": 60 * 10**9,
    "h": 3600 * 10**9,
    "d": 86400 * 10**9,
}
# Largest first, so that format_duration picks the shortest exact spelling.
_FORMAT_UNITS = ("d", "h", "m", "s", "ms", "us", "ns")
# [0-9] rather than \d: \d also matches other scripts' digits.
_DURATION_RE = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([a-zµμ]*)\s*")
_DURATION_HINT = "seconds as a number, or a string like '250ms', '30s', '5m', '1h', '1d'"


def parse_duration(value: Any, what: str = "duration") -> int:
    """Integer nanoseconds of a duration.

    Parameters
    ----------
    value : int, float or str
        A number of seconds (``>= 0``), or a number with a unit: ``ns``,
        ``us`` (or ``µs``), ``ms``, ``s``, ``m``, ``h`` or ``d``, e.g.
        ``"250ms"``, ``"1.5s"``, ``" 5 m "``.  A string without a unit is
        accepted only for zero (``"0"``), whose unit does not matter.
    what : str
        How error messages name the setting.

    Returns
    -------
    int
        Nanoseconds, in ``0 .. 2**63 - 1``.  A float number of seconds is
        rounded to the nearest nanosecond; a string must name a whole number
        of nanoseconds (it is exact decimal text, so a fraction is a typo).

    Raises
    ------
    ConfigError
        A negative, non-finite, malformed or out-of-range value, or a bool.
    """
    if isinstance(value, (bool, np.bool_)):
        raise ConfigError(f"{what} must be a duration ({_DURATION_HINT}), got {value!r}")
    if isinstance(value, numbers.Real):
        if isinstance(value, numbers.Rational):
            # Through int: a NumPy integer would make the result a NumPy one.
            seconds = Fraction(int(value.numerator), int(value.denominator))
        else:
            f = float(value)
            if not math.isfinite(f):
                raise ConfigError(f"{what} must be a finite duration, got {value!r}")
            seconds = Fraction(f)
        if seconds < 0:
            raise ConfigError(f"{what} must not be negative, got {value!r}")
        ns = round(seconds * 10**9)
    elif isinstance(value, str):
        m = _DURATION_RE.fullmatch(value)
        if m is None:
            if value.strip().startswith("-"):
                raise ConfigError(f"{what} must not be negative, got {value!r}")
            raise ConfigError(f"{what} must be a duration ({_DURATION_HINT}), got {value!r}")
        number, unit = m.groups()
        try:
            amount = Decimal(number)
        except InvalidOperation:  # pragma: no cover - the pattern admits only decimals
            raise ConfigError(f"{what}: bad number in {value!r}") from None
        if not unit:
            if amount != 0:
                raise ConfigError(
                    f"{what} {value!r} needs a unit (ns, us, ms, s, m, h, d), e.g. '{number}s'"
                )
            unit = "s"
        if unit not in _NS_PER_UNIT:
            raise ConfigError(
                f"{what}: unknown unit {unit!r} in {value!r}; use ns, us, ms, s, m, h or d"
            )
        exact = amount * _NS_PER_UNIT[unit]
        if exact != exact.to_integral_value():
            raise ConfigError(f"{what} {value!r} is not a whole number of nanoseconds")
        ns = int(exact)
    else:
        raise ConfigError(
            f"{what} must be a duration ({_DURATION_HINT}), got {type(value).__name__} {value!r}"
        )
    if ns > _I64_MAX:
        raise ConfigError(f"{what} {value!r} is too long (at most about 292 years)")
    return ns


def format_duration(ns: int) -> str:
    """The shortest exact string for a duration; :func:`parse_duration` reads it back.

    Parameters
    ----------
    ns : int
        Nanoseconds, ``>= 0``.

    Returns
    -------
    str
        E.g. ``"0s"``, ``"1m"``, ``"90s"``, ``"1500ms"``.
    """
    ns = int(ns)
    if ns < 0:
        raise ValueError(f"durations are not negative, got {ns}")
    if ns == 0:
        return "0s"
    for unit in _FORMAT_UNITS:
        size = _NS_PER_UNIT[unit]
        if ns % size == 0:
            return f"{ns // size}{unit}"
    raise AssertionError("unreachable: every integer is a whole number of ns")
