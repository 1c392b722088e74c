"""Frozen client settings, validated once when the client is built.

Every mistake a user can make in configuration (a URL without a scheme, plain HTTP to a
remote host, an API version that is not a date, a negative timeout) raises a
``ConfigurationError`` here, at construction, instead of on the first request.
"""

from __future__ import annotations

import ipaddress
import math
import re
import ssl
from typing import Any, Final
from urllib.parse import urlsplit

import attrs

from ._retry import RetryPolicy
from ._version import __version__
from .errors import ConfigurationError

__all__ = [
    "DEFAULT_API_VERSION",
    "PRODUCTION_URL",
    "SANDBOX_URL",
    "ClientConfig",
    "Timeouts",
    "coerce_retry",
    "coerce_timeouts",
    "normalize_base_url",
]

PRODUCTION_URL: Final[str] = "https://api.carbonregistry.com"
"""The ICR Apps API in production (the default ``base_url``)."""
SANDBOX_URL: Final[str] = "https://sandbox-api.carbonregistry.com"
"""The ICR sandbox, for trying an app against test data."""
DEFAULT_API_VERSION: Final[str] = "2023-06-16"
"""The API version (a release date) sent when none is configured."""
USER_AGENT = f"icr-async/{__version__}"

_VERSION_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _timeout(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigurationError(
            f"timeout {attribute.name} must be a positive number, got {value!r}"
        )
    if math.isinf(value):
        raise ConfigurationError(f"timeout {attribute.name} must be finite; use None for no limit")


@attrs.frozen(kw_only=True)
class Timeouts:
    """Time limits in seconds.

    ``connect``: opening a connection. ``read``: one attempt, from sending the request to
    the last byte of its answer (ICR answers are small JSON documents read whole, so this is
    the bound that catches a server that hangs). ``total``: one call from start to end,
    *across all its retries and the waits between them*. ``None`` means no limit.

    Each attempt runs under a single timer, ``min(read, what is left of total)``: a
    per-chunk read timer would be re-armed on every packet, which costs measurable CPU at
    high request rates and buys nothing for bodies this size.
    """

    connect: float | None = attrs.field(default=10.0, validator=_timeout)
    read: float | None = attrs.field(default=30.0, validator=_timeout)
    total: float | None = attrs.field(default=120.0, validator=_timeout)


def coerce_timeouts(value: object) -> Timeouts:
    """``Timeouts`` as given, ``None`` for the defaults, or a number for every limit at once.

    ``timeouts=30`` means ``Timeouts(connect=30, read=30, total=30)``, as ``httpx.Timeout(30)``
    does; anything else is a ``ConfigurationError`` now rather than an ``AttributeError`` on
    the first request.
    """
    if value is None:
        return Timeouts()
    if isinstance(value, Timeouts):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return Timeouts(connect=value, read=value, total=value)
    raise ConfigurationError(
        f"timeouts must be a Timeouts(...) or a number of seconds, got {type(value).__name__}"
    )


def coerce_retry(value: object) -> RetryPolicy:
    """``RetryPolicy`` as given, or the default for ``None``; anything else is refused."""
    if value is None:
        return RetryPolicy()
    if isinstance(value, RetryPolicy):
        return value
    hint = f" (e.g. RetryPolicy(attempts={value}))" if isinstance(value, int) else ""
    raise ConfigurationError(
        f"retry must be a RetryPolicy{hint} or None, got {type(value).__name__}"
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# One DNS label (underscores allowed: container and test host names use them).
_LABEL_RE = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")
_DOT_SEGMENT_RE = re.compile(r"(?:^|/)(?:\.|%2e){1,2}(?:/|$)", re.IGNORECASE)


def normalize_base_url(url: str, *, allow_insecure_http: bool = False) -> str:
    """Check a base URL and return it without a trailing slash.

    Everything that would only fail later is refused here: an empty URL (it does not mean
    "production"), a missing or unknown scheme, a host with spaces or other characters no
    host name has, a port that is not a number in 1..65535, ``.``/``..`` path segments (also
    percent-encoded), a query, a fragment or credentials. Plain ``http://`` is refused except
    to loopback (the emulator) unless ``allow_insecure_http`` is set: tokens sent in clear
    text are tokens given away.
    """
    if not isinstance(url, str) or not url.strip():
        raise ConfigurationError(
            "base_url must be a non-empty string like 'https://api.carbonregistry.com' "
            "(leave it out, or pass None, for production)"
        )
    url = url.strip()
    if any(c.isspace() or ord(c) < 0x20 or c in "\\\x7f" for c in url):
        raise ConfigurationError(f"base_url {url!r} must not contain spaces or control characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ConfigurationError(
            f"base_url {url!r} needs an http:// or https:// scheme, e.g. 'https://api.carbonregistry.com'"
        )
    if not parts.hostname:
        raise ConfigurationError(f"base_url {url!r} has no host")
    if parts.username or parts.password or "@" in parts.netloc:
        raise ConfigurationError("base_url must not carry user:password credentials")
    host = parts.netloc.rsplit(":", 1)[0] if not parts.netloc.endswith("]") else parts.netloc
    if not _is_ip(host) and not all(_LABEL_RE.fullmatch(x) for x in host.rstrip(".").split(".")):
        raise ConfigurationError(f"base_url {url!r} has an invalid host {host!r}")
    try:
        port = parts.port
    except ValueError:
        port_text = parts.netloc.rsplit(":", 1)[-1]
        raise ConfigurationError(
            f"base_url {url!r} has an invalid port {port_text!r}: it must be a number 1..65535"
        ) from None
    if port == 0 or (parts.netloc.endswith(":")):
        raise ConfigurationError(
            f"base_url {url!r} has an invalid port: it must be a number 1..65535"
        )
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise ConfigurationError(f"base_url {url!r} must not have a query or fragment")
    if _DOT_SEGMENT_RE.search(parts.path):
        raise ConfigurationError(f"base_url {url!r} must not contain '.' or '..' path segments")
    if parts.scheme == "http" and not allow_insecure_http and not _is_loopback(parts.hostname):
        raise ConfigurationError(
            f"base_url {url!r} is plain http to a non-loopback host; tokens would travel in clear "
            "text. Use https, or allow insecure http explicitly (allow_insecure_http=True in "
            "Python, --allow-insecure-http on the command line) if you really mean it"
        )
    return url.rstrip("/")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _api_version(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not _VERSION_RE.fullmatch(value):
        raise ConfigurationError(
            f"api_version must be a release date like '2023-06-16', got {value!r}"
        )


def _positive_int(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{attribute.name} must be a positive integer, got {value!r}")


def _non_negative_int(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigurationError(f"{attribute.name} must be an integer >= 0, got {value!r}")


# ICR's documented installation-token life. A margin at least this long could never be met:
# every token would be "due for refresh" the moment it was minted.
DOCUMENTED_TOKEN_LIFETIME = 7200.0


def _refresh_margin(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ConfigurationError(f"refresh_margin must be a number of seconds >= 0, got {value!r}")
    if value >= DOCUMENTED_TOKEN_LIFETIME:
        raise ConfigurationError(
            f"refresh_margin {value!r} s is not shorter than the 2-hour life of an ICR token: "
            "every token would be refreshed as soon as it was minted"
        )


@attrs.frozen(kw_only=True)
class ClientConfig:
    """Everything that shapes a client's behaviour, fixed for its lifetime."""

    base_url: str = PRODUCTION_URL
    api_version: str = attrs.field(default=DEFAULT_API_VERSION, validator=_api_version)
    timeouts: Timeouts = attrs.field(factory=Timeouts, converter=coerce_timeouts)
    retry: RetryPolicy = attrs.field(factory=RetryPolicy, converter=coerce_retry)
    pool_size: int = attrs.field(default=100, validator=_positive_int)
    pool_size_per_host: int = attrs.field(default=0, validator=_non_negative_int)
    max_in_flight: int | None = None
    refresh_margin: float = attrs.field(default=300.0, validator=_refresh_margin)
    """Seconds before expiry at which a token is refreshed; for tokens that live less than
    twice this, half their life is used instead (see ``TokenManager``)."""
    token_cache_size: int = attrs.field(default=10_000, validator=_positive_int)
    user_agent: str = USER_AGENT
    allow_insecure_http: bool = False
    ssl: ssl.SSLContext | bool | None = attrs.field(default=None, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(
            self,
            "base_url",
            normalize_base_url(self.base_url, allow_insecure_http=self.allow_insecure_http),
        )
        if self.max_in_flight is not None:
            _positive_int(self, attrs.fields(ClientConfig).max_in_flight, self.max_in_flight)  # type: ignore[arg-type]

    @property
    def in_flight_limit(self) -> int:
        """How many requests may be under way at once (defaults to the pool size)."""
        return self.max_in_flight if self.max_in_flight is not None else self.pool_size
