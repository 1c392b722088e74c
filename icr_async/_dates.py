"""ISO-8601 date-times from ICR's answers, read into aware ``datetime`` objects and back.

An installation's dates come back the same on every answer, so each text is parsed once
(a bounded memo: ``datetime`` objects are immutable, so sharing one is safe).
"""

from __future__ import annotations

import datetime
import re
from typing import Any, NewType

__all__ = ["OneOffDatetime", "format_datetime", "parse_datetime", "parse_datetime_once"]

_FRACTION_RE = re.compile(r"\.(\d+)")
_DATES: dict[str, datetime.datetime] = {}
_DATES_MAX = 20_000

OneOffDatetime = NewType("OneOffDatetime", datetime.datetime)
"""A ``datetime`` field whose text is never seen twice (a token's ``expiresAt``): read with
:func:`parse_datetime_once`, so it does not fill the memo. Every token would otherwise leave
its dates' texts and ``datetime`` objects in it: ~400 bytes per cached token, for nothing."""


def parse_datetime_once(value: Any) -> datetime.datetime:
    """:func:`parse_datetime` without the memo, for texts that will not come back."""
    if type(value) is str:
        try:
            dt = datetime.datetime.fromisoformat(value)
        except ValueError:
            dt = _parse_datetime_slow(value)
        return dt if dt.tzinfo is not None else dt.replace(tzinfo=datetime.timezone.utc)
    return parse_datetime(value)


def parse_datetime(value: Any) -> datetime.datetime:
    """An aware ``datetime`` from ISO-8601 text (``Z``, offsets, 0-9 fraction digits) or epoch."""
    if type(value) is str:
        # An installation's dates come back the same on every answer: parse each text once
        # (datetimes are immutable, so sharing one is safe).
        dt = _DATES.get(value)
        if dt is not None:
            return dt
        # Python 3.11+ reads "Z" and any fraction digits itself.
        try:
            dt = datetime.datetime.fromisoformat(value)
        except ValueError:
            dt = _parse_datetime_slow(value)
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=datetime.timezone.utc)
        if len(_DATES) >= _DATES_MAX:
            _DATES.clear()  # bounded; refilled by the dates in use
        _DATES[value] = dt
        return dt
    if isinstance(value, datetime.datetime):
        dt = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        # Epoch milliseconds appear in some JS-built APIs; seconds are below ~1e11 until 5138.
        seconds = value / 1000 if abs(value) > 1e11 else value
        try:
            return datetime.datetime.fromtimestamp(seconds, tz=datetime.timezone.utc)
        except (OverflowError, OSError) as exc:  # NaN is a ValueError already
            raise ValueError(f"epoch time out of range: {value!r}") from exc
    elif isinstance(value, str):
        dt = _parse_datetime_slow(value)
    else:
        raise TypeError(f"expected an ISO-8601 date-time string, got {type(value).__name__}")
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.timezone.utc)
    return dt


def _parse_datetime_slow(value: str) -> datetime.datetime:
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    # Python 3.10's fromisoformat takes exactly 3 or 6 fraction digits: normalise to 6.
    text = _FRACTION_RE.sub(lambda m: "." + (m.group(1) + "000000")[:6], text, count=1)
    try:
        return datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not an ISO-8601 date-time: {value!r}") from None


def format_datetime(dt: datetime.datetime) -> str:
    """``dt`` as ISO-8601 text in UTC with a ``Z`` (the shape ICR sends)."""
    text = dt.astimezone(datetime.timezone.utc).isoformat()
    return text.replace("+00:00", "Z")
