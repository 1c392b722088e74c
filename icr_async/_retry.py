"""The retry policy: which failures to repeat and how long to wait. Pure, no I/O.

Carbon credits are money, so the rule that matters most is *what may be repeated at all*:
only requests that are safe to send twice (GET, token minting, token revocation). A credit
action is never retried unless the caller asks for it on that call. Waits use exponential
backoff with "full jitter" (a uniform draw in ``[0, min(cap, base * 2**n)]``), which spreads
a fleet's retries out instead of making them arrive in waves, and a server's
``Retry-After`` overrides the backoff.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable

import attrs

from ._clock import parse_http_date
from .errors import (
    APIError,
    ConfigurationError,
    RequestTimeoutError,
    ResponseDecodeError,
    TransportError,
)

__all__ = ["SAFE_RETRY_STATUSES", "RetryPolicy", "parse_retry_after"]

# Answers worth repeating for a request that is safe to repeat. 500 is here too: ICR's
# NestJS stack answers 500 for transient faults, and octokit, Google's and AWS's SDKs all
# retry it on safe methods.
SAFE_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


def _positive(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:  # NaN too
        raise ConfigurationError(f"RetryPolicy.{attribute.name} must be >= 0, got {value!r}")


def _attempts(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 20:
        raise ConfigurationError(f"RetryPolicy.attempts must be an integer 1..20, got {value!r}")


def _to_statuses(value: Iterable[int]) -> frozenset[int]:
    return frozenset(value)


def _statuses(
    instance: object, attribute: attrs.Attribute[frozenset[int]], value: frozenset[int]
) -> None:
    for status in value:
        if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
            raise ConfigurationError(
                f"RetryPolicy.statuses must hold HTTP error statuses (400..599), got {status!r}"
            )


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """When and how the client repeats a failed request.

    Two sets of requests:

    * **safe to repeat** — GET, HEAD, OPTIONS, minting a token, revoking a token: retried on
      connection errors, timeouts, the ``statuses`` (default 429, 500, 502, 503, 504:
      ``SAFE_RETRY_STATUSES``) and, once, on a 2xx whose body is not the promised JSON
      (``retry_invalid_json``; a gateway's HTML page is a classic transient answer);
    * **unsafe** — credit actions, reservations, creating an organization, any other POST,
      PUT, PATCH or DELETE: **never** repeated automatically, whatever this policy says,
      unless the caller passes ``retry=True`` on that one call (then these same rules apply).

    Narrow or widen the safe set with ``statuses`` (e.g.
    ``RetryPolicy(statuses={429, 503})``). ``attempts`` counts the first try (1 disables
    retries). A ``Retry-After`` (seconds, or an HTTP date measured on the server's clock) is
    honoured on any retried status (429, 500, 503, ...); one longer than
    ``max_retry_after`` seconds is not waited for: the error is raised at once with
    ``retry_after`` set, so the caller decides.
    """

    attempts: int = attrs.field(default=3, validator=_attempts)
    backoff_base: float = attrs.field(default=0.5, validator=_positive)
    backoff_cap: float = attrs.field(default=8.0, validator=_positive)
    max_retry_after: float = attrs.field(default=60.0, validator=_positive)
    statuses: frozenset[int] = attrs.field(
        default=SAFE_RETRY_STATUSES, converter=_to_statuses, validator=_statuses
    )
    retry_on_timeout: bool = True
    retry_on_connection_error: bool = True
    retry_invalid_json: bool = True

    @classmethod
    def disabled(cls) -> RetryPolicy:
        """A policy that never retries."""
        return cls(attempts=1)

    def backoff(self, retry_number: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait before retry number ``retry_number`` (1 for the first retry)."""
        # Float power, exponent capped: a huge retry_number must give the cap, not OverflowError.
        ceiling = min(
            self.backoff_cap, self.backoff_base * 2.0 ** min(max(0, retry_number - 1), 1000)
        )
        return float(ceiling * rand())

    def retries_status(self, status: int) -> bool:
        """Whether an answer with this status is worth repeating."""
        return status in self.statuses

    def next_delay(self, failure: Exception, attempt: int) -> float | None:
        """Seconds to wait before repeating a request that may be repeated, after
        ``failure`` ended its attempt number ``attempt`` (1 for the first); ``None``: give up.

        The one place that decides: attempts left, the kind of failure (no answer, a
        timeout, an error status, a 2xx that is not JSON), ``Retry-After`` over backoff,
        and a ``Retry-After`` too long to wait for. Whether the request may be repeated at
        all (safe, or ``retry=True``) is the caller's question, asked first.
        """
        if attempt >= self.attempts:
            return None
        if isinstance(failure, APIError):
            if failure.status not in self.statuses:
                return None
            wait = failure.retry_after
            if wait is not None:
                return wait if wait <= self.max_retry_after else None
        elif isinstance(failure, RequestTimeoutError):
            if not self.retry_on_timeout:
                return None
        elif isinstance(failure, TransportError):
            if not (failure.retryable and self.retry_on_connection_error):
                return None
        elif isinstance(failure, ResponseDecodeError):
            if not self.retry_invalid_json:
                return None
        else:
            return None
        return self.backoff(attempt)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta seconds or an HTTP date).

    Returns ``None`` for a missing or unreadable value and never a negative number.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        when = parse_http_date(value)
        return None if when is None else max(0.0, when - now)
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        return None
    return max(0.0, seconds)
