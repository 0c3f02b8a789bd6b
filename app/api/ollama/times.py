"""Ollama's wire times: RFC3339 timestamps (created_at, modified_at, expires_at) and Go durations (keep_alive)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from app.errors import InvalidRequest

# Go's time.Duration tops out at ~292 years; Ollama's expires_at for keep_alive < 0 is now + that.
_FOREVER = timedelta(days=292 * 365)


def _fraction(nanos: int) -> str:
    # RFC3339Nano as Go prints it: trailing zeros trimmed, no dot when whole.
    return f".{nanos:09d}".rstrip("0") if nanos else ""


def utc_timestamp(ns: int) -> str:
    """`created_at`: RFC3339Nano in UTC ("2024-07-22T20:47:51.147561Z") from epoch nanoseconds."""
    secs, nanos = divmod(int(ns), 1_000_000_000)
    return datetime.fromtimestamp(secs, UTC).strftime("%Y-%m-%dT%H:%M:%S") + _fraction(nanos) + "Z"


def _local(dt: datetime) -> str:
    text = dt.strftime("%Y-%m-%dT%H:%M:%S") + _fraction(dt.microsecond * 1000)
    # Always "+hh:mm" (also for UTC, where Go writes "Z"): Open WebUI parses these with datetime.fromisoformat,
    # which rejects "Z" before Python 3.11.
    offset = dt.utcoffset() or timedelta(0)
    sign = "-" if offset < timedelta(0) else "+"
    minutes = abs(int(offset.total_seconds())) // 60
    return f"{text}{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def local_timestamp(epoch_s: float, tz: tzinfo | None = None) -> str:
    """`modified_at` / `expires_at`: local time with its offset ("2025-05-10T08:06:48.639712-07:00")."""
    micros = round(float(epoch_s) * 1_000_000)
    dt = datetime.fromtimestamp(0, UTC) + timedelta(microseconds=micros)
    return _local(dt.astimezone(tz) if tz is not None else dt.astimezone())


def far_future(now_s: float, tz: tzinfo | None = None) -> str:
    """`expires_at` of a model kept forever (Ollama: now + the largest Go duration)."""
    dt = datetime.fromtimestamp(float(now_s), UTC) + _FOREVER
    return _local(dt.astimezone(tz) if tz is not None else dt.astimezone())


_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_GO_NUMBER = re.compile(r"(\d*)(?:\.(\d*))?")
_GO_UNIT = re.compile(r"[^\d.]*")


def parse_go_duration(text: str) -> float:
    """Seconds from a Go `time.ParseDuration` string ("5m", "1h30m", "-1m", "0", ".5s"), with Go's error texts."""
    quoted = json.dumps(text, ensure_ascii=False)
    s = text
    negative = False
    if s[:1] in ("-", "+"):
        negative = s[0] == "-"
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise ValueError(f"time: invalid duration {quoted}")
    total = 0.0
    while s:
        number = _GO_NUMBER.match(s)
        assert number is not None  # the pattern matches the empty string
        whole, frac = number.group(1), number.group(2)
        if not whole and not frac:
            raise ValueError(f"time: invalid duration {quoted}")
        s = s[number.end() :]
        unit_match = _GO_UNIT.match(s)
        unit = unit_match.group(0) if unit_match else ""
        if not unit:
            raise ValueError(f"time: missing unit in duration {quoted}")
        if unit not in _GO_UNITS:
            raise ValueError(f"time: unknown unit {json.dumps(unit, ensure_ascii=False)} in duration {quoted}")
        s = s[len(unit) :]
        total += float(f"{whole or '0'}.{frac or '0'}") * _GO_UNITS[unit]
    return -total if negative else total


def _go_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, list):
        return "[]interface {}"
    if isinstance(value, dict):
        return "map[string]interface {}"
    return type(value).__name__


def parse_keep_alive(value: Any) -> float | None:
    """`keep_alive` -> seconds (None = server/alias default, negative = forever, 0 = unload when done).

    Numbers are seconds; strings are Go durations (a unitless "300" is an error, as in Ollama).
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidRequest(f"Unsupported type: '{_go_type(value)}'", param="keep_alive")
    if isinstance(value, str):
        try:
            seconds = parse_go_duration(value)
        except ValueError as e:
            raise InvalidRequest(str(e), param="keep_alive") from None
    else:
        seconds = float(value)
        if seconds != seconds or seconds in (float("inf"), float("-inf")):
            raise InvalidRequest("keep_alive must be a finite number", param="keep_alive")
    return -1.0 if seconds < 0 else seconds
