"""Fault injection: make the emulator fail on purpose, the way real networks and servers do."""

from __future__ import annotations

import fnmatch
import math
import random
from collections.abc import Mapping
from typing import Any, Literal

import attrs

__all__ = ["Fault", "FaultAction", "FaultInjector", "RateLimit", "RateLimitEvent", "RateLimiter"]

FaultAction = Literal[
    "status", "reset", "truncate", "nonjson", "wrong_content_type", "hang", "delay"
]
"""What a fault does to a request it matches."""

_ACTIONS = frozenset(
    ("status", "reset", "truncate", "nonjson", "wrong_content_type", "hang", "delay")
)


def _check_action(_instance: object, _attribute: object, value: str) -> None:
    if value not in _ACTIONS:
        raise ValueError(f"unknown fault action {value!r}; expected one of {sorted(_ACTIONS)}")


def _check_probability(_instance: object, _attribute: object, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError("probability must be between 0 and 1")


def _check_non_negative(_instance: object, attribute: Any, value: float | None) -> None:
    if value is not None and value < 0:
        raise ValueError(f"{attribute.name} must not be negative")


def _check_retry_after(_instance: object, _attribute: object, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (str, int, float, type(None))):
        raise ValueError(f"retry_after must be seconds or a header value, not {value!r}")
    if isinstance(value, (int, float)) and not 0 <= value < math.inf:
        raise ValueError("retry_after must be a finite, non-negative number of seconds")


@attrs.frozen(kw_only=True)
class Fault:
    """One planned failure, matched on method and path before authentication.

    ``path`` is an :func:`fnmatch.fnmatchcase` pattern on the request path (``"/app/*"``).
    ``action`` picks the failure:

    * ``"status"``: answer ``status`` with ``body`` (``None`` means ICR's NestJS error body),
      ``headers`` and ``retry_after``: seconds to wait (a number, or a string of digits),
      sent as ``Retry-After`` in the emulator's ``retry_after_style`` (the number, or the HTTP
      date that many seconds after the server's now); any other string is sent as it is;
    * ``"reset"``: run the real handler, send the response head, then abort the connection;
    * ``"truncate"``: run the real handler, declare its full ``Content-Length`` but send half
      the body, then close;
    * ``"nonjson"``: answer 200 with an HTML page, as a misconfigured proxy would;
    * ``"wrong_content_type"``: the real handler's JSON body labelled ``text/plain``;
    * ``"hang"``: answer nothing until the client gives up (at most 60 s, then 504);
    * ``"delay"``: only wait ``delay`` seconds, then answer normally (a slow server).

    ``delay`` seconds of real time pass before any action (for timeout tests). The fault
    affects ``times`` matching requests (``None``: all of them) after skipping the first
    ``after``, each with chance ``probability`` drawn from the emulator's seeded RNG.
    """

    method: str = "*"
    path: str = "*"
    status: int = 500
    # Excluded from hashing (dicts are unhashable) but still compared by equality.
    body: bytes | str | dict[str, Any] | None = attrs.field(default=None, hash=False)
    headers: Mapping[str, str] = attrs.field(factory=dict, hash=False)
    retry_after: str | float | None = attrs.field(default=None, validator=_check_retry_after)
    delay: float = attrs.field(default=0.0, validator=_check_non_negative)
    action: FaultAction = attrs.field(default="status", validator=_check_action)
    times: int | None = attrs.field(default=1, validator=_check_non_negative)
    probability: float = attrs.field(default=1.0, validator=_check_probability)
    after: int = attrs.field(default=0, validator=_check_non_negative)

    def matches(self, method: str, path: str) -> bool:
        """Whether a request with this method and path is one this fault targets."""
        if self.method != "*" and self.method.upper() != method:
            return False
        return self.path == "*" or fnmatch.fnmatchcase(path, self.path)


@attrs.define
class _FaultState:
    fault: Fault
    seen: int = 0
    fired: int = 0


class FaultInjector:
    """The emulator's list of active faults; the first eligible fault wins a request."""

    def __init__(self, seed: int = 0) -> None:
        self._states: list[_FaultState] = []
        # Faults are keyed by identity: two equal Fault values added twice are two faults.
        self._fired: dict[int, int] = {}
        self._rng = random.Random(f"faults-{seed}")

    def add(self, fault: Fault) -> Fault:
        """Activate ``fault`` and return it (keep it to ask :meth:`fired` later)."""
        self._states.append(_FaultState(fault))
        self._fired.setdefault(id(fault), 0)
        return fault

    def remove(self, fault: Fault) -> None:
        """Deactivate ``fault``; its fired count stays readable."""
        self._states = [state for state in self._states if state.fault is not fault]

    def clear(self) -> None:
        """Remove every fault and forget the fired counts."""
        self._states.clear()
        self._fired.clear()

    def fired(self, fault: Fault) -> int:
        """How many requests ``fault`` has affected so far."""
        return self._fired.get(id(fault), 0)

    @property
    def active(self) -> list[Fault]:
        """The faults currently installed, in the order they are tried."""
        return [state.fault for state in self._states]

    def __len__(self) -> int:
        return len(self._states)

    def select(self, method: str, path: str) -> Fault | None:
        """Pick the fault to apply to this request, counting it; ``None`` if none applies."""
        for state in self._states:
            fault = state.fault
            if not fault.matches(method, path):
                continue
            state.seen += 1
            if state.seen <= fault.after:
                continue
            if fault.times is not None and state.fired >= fault.times:
                continue
            if fault.probability < 1.0 and self._rng.random() >= fault.probability:
                continue
            state.fired += 1
            self._fired[id(fault)] = self._fired.get(id(fault), 0) + 1
            return fault
        return None


RateLimitScope = Literal["app", "installation"]


@attrs.frozen(kw_only=True)
class RateLimit:
    """A request limit the emulator enforces, as a plausible ICR might (none is documented).

    At most ``requests`` requests per fixed window of ``per`` seconds of server time, counted
    per app (``scope="app"``: every request the app makes, JWT and tokens alike) or per
    installation (``scope="installation"``: an installation token's requests; the app's own
    requests count for the app). A request over the limit gets 429 with ``Retry-After`` until
    the window ends (whole seconds, rounded up, in the emulator's ``retry_after_style``), and
    does not count. Requests with no credential the emulator knows are not limited.
    """

    requests: int = attrs.field()
    per: float = 1.0
    scope: RateLimitScope = "app"

    @requests.validator
    def _check_requests(self, _attribute: object, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError("requests must be a positive integer")

    def __attrs_post_init__(self) -> None:
        if not 0 < self.per < math.inf:
            raise ValueError("per must be a positive number of seconds")
        if self.scope not in ("app", "installation"):
            raise ValueError('scope must be "app" or "installation"')


@attrs.frozen
class RateLimitEvent:
    """One 429 the rate limit answered: server time, the limited scope, the window's end."""

    at: float
    scope: str
    until: float


class RateLimiter:
    """The emulator's rate limit (``emulator.rate_limiter``): set :attr:`limit` to a
    :class:`RateLimit` to turn it on (``None``, the default, is off); :attr:`events` records
    every 429 it answered and :meth:`periods` groups them by back-off period."""

    def __init__(self) -> None:
        self.limit: RateLimit | None = None
        self._windows: dict[str, tuple[float, int]] = {}
        self.events: list[RateLimitEvent] = []

    def check(self, limit: RateLimit, scope: str, now: float) -> float | None:
        """Count a request of ``scope`` at server time ``now``; the window's end if it is
        over the limit (then it is not counted), else ``None``."""
        start = math.floor(now / limit.per) * limit.per
        window, count = self._windows.get(scope, (start, 0))
        if window != start:
            window, count = start, 0
        if count >= limit.requests:
            until = window + limit.per
            self.events.append(RateLimitEvent(now, scope, until))
            return until
        self._windows[scope] = (window, count + 1)
        return None

    def periods(self) -> list[int]:
        """How many 429s each back-off period saw, per scope, in order: a period starts with
        a 429 answered after the previous period's ``Retry-After`` ran out."""
        counts: list[int] = []
        ends: dict[str, float] = {}
        index: dict[str, int] = {}
        for event in self.events:
            if event.scope in ends and event.at < ends[event.scope]:
                counts[index[event.scope]] += 1
                continue
            ends[event.scope] = math.ceil(event.until)
            index[event.scope] = len(counts)
            counts.append(1)
        return counts

    def reset(self) -> None:
        """Forget the windows and the events."""
        self._windows.clear()
        self.events.clear()
