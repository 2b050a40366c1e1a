"""Parsing the times users type: ISO 8601, epoch seconds, or "15m ago" style durations."""

from __future__ import annotations

import math
import re
import time
from datetime import UTC, datetime

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_REL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*(?:ago)?\s*$", re.I)


class TimeParseError(ValueError):
    pass


_MAX_NS = 2**63 - 1  # what a BIGINT column holds


def parse_time_ns(value: str | int | float, *, now_ns: int | None = None) -> int:
    """Nanoseconds since the epoch for ``value``.

    Accepts ``2026-11-21T10:00:00Z`` (ISO 8601; naive means UTC), ``1763719200`` (epoch
    seconds; values above 1e15 are taken as nanoseconds), and ``15m``/``2h``/``7d``/``1w``
    meaning that long before now. A time before 1970 or past what a 64-bit nanosecond count
    holds (infinity, NaN, 1e309…) raises TimeParseError like any unreadable one.
    """
    ns = _parse_time_ns(value, now_ns)
    if not 0 <= ns <= _MAX_NS:
        raise TimeParseError(f"time {value!r} is out of range (1970 to 2262)")
    return ns


def _parse_time_ns(value: str | int | float, now_ns: int | None) -> int:
    now_ns = time.time_ns() if now_ns is None else now_ns
    if isinstance(value, float) and not math.isfinite(value):
        raise TimeParseError(f"time {value!r} is not a finite number")
    if isinstance(value, int | float):
        return int(value) if value > 1e15 else int(value * 1e9)
    text = value.strip()
    if m := _REL.match(text):
        ago = float(m.group(1)) * _UNITS[m.group(2).lower()] * 1e9
        if not math.isfinite(ago):
            raise TimeParseError(f"time {value!r} is out of range")
        return now_ns - int(ago)
    if text.isdigit() and int(text) > 10**15:  # nanoseconds: exact (a float would round them)
        return int(text)
    try:
        num = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(num):
            raise TimeParseError(f"time {value!r} is not a finite number")
        return int(num) if num > 1e15 else int(num * 1e9)
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise TimeParseError(
            f"cannot read time {value!r}: use ISO 8601 (2026-11-21T10:00:00Z), epoch seconds, or 15m/2h/7d"
        ) from exc
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1e9)  # before 1970: negative, refused by the caller


def format_ns(ns: int | None) -> str | None:
    if ns is None:
        return None
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$", re.IGNORECASE)


def parse_duration_s(value: str | int | float) -> float:
    """``"90s"``, ``"5m"``, ``"1h"``, ``"250ms"`` or a number of seconds -> seconds. Raises ValueError."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"a duration cannot be negative: {value!r}")
        return float(value)
    m = _DURATION.match(str(value))
    if m is None:
        raise ValueError(f"not a duration: {value!r} (expected e.g. 30s, 5m, 1h, 250ms)")
    unit = (m.group(2) or "s").lower()
    return float(m.group(1)) * (0.001 if unit == "ms" else _UNITS[unit])
