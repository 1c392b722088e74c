"""Clocks: the SDK and the emulator both take a ``Clock`` so tests can move time by hand.

A clock is any zero-argument callable returning POSIX seconds as a float (``time.time`` is
one). Expiry maths everywhere in the package goes through an injected clock, never through
``time.time()`` directly, so a test can advance time without sleeping.
"""

from __future__ import annotations

import datetime
import email.utils
import threading
import time
from typing import Protocol


class Clock(Protocol):
    """Any zero-argument callable returning the current POSIX time in seconds.

    ``time.time`` is one; so is ``ManualClock``. A protocol rather than a ``Callable`` alias so
    that it is a real, documented object on every supported Python.
    """

    def __call__(self) -> float:
        """The current time, POSIX seconds."""
        ...


system_clock: Clock = time.time
"""The real wall clock."""


def parse_http_date(value: str | None) -> float | None:
    """POSIX seconds from an HTTP date (``Date``, ``Retry-After``), or ``None`` if unreadable.

    HTTP dates are UTC; ``-0000`` ones parse naive and are read as UTC too, never local time.
    """
    if not value:
        return None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return when.timestamp()


class ManualClock:
    """A clock that only moves when told to; share one between the emulator and the client.

    >>> clock = ManualClock(1_700_000_000.0)
    >>> clock.advance(60)
    >>> clock()
    1700000060.0
    """

    __slots__ = ("_lock", "_now")

    def __init__(self, start: float | None = None) -> None:
        self._now = float(time.time() if start is None else start)
        # Blocking-client tests move the clock from another thread than the loop's.
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward (or back, with a negative number) by ``seconds``."""
        with self._lock:
            self._now += float(seconds)

    def set(self, now: float) -> None:
        """Jump to an absolute POSIX time."""
        with self._lock:
            self._now = float(now)

    def __repr__(self) -> str:
        return f"ManualClock({self._now!r})"
