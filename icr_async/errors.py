"""Every exception icr-async raises, under one root.

```
ICRError
├── ConfigurationError          bad settings or credentials, raised at construction
├── InvalidArgumentError        a bad argument to a call (also a ValueError), before any I/O
├── ClientClosedError           the client was closed
├── BlockingCallError          a blocking-client call made on its own event-loop thread
├── TransportError              the request never got an HTTP answer (DNS, refused, reset, TLS)
│   └── RequestTimeoutError     connect, read or total deadline passed (also a TimeoutError)
├── ResponseDecodeError         an answer that is not the JSON the endpoint promises
├── PaginationError             a server that repeats pages or never ends
├── TokenError                  an installation or app token could not be had
├── DuplicateActionError        a credit action sent twice under the same idempotency key
├── WebhookError                a webhook delivery that cannot be trusted (icr_async.webhooks)
│   ├── WebhookSignatureError   missing or wrong x-icr-signature-256
│   └── WebhookPayloadError     a body that is not the promised JSON
└── APIError                    the server answered 4xx/5xx
    ├── BadRequestError         400
    │   └── UnsupportedAPIVersionError   400 for an x-icr-api-version the server does not know
    ├── AuthenticationError     401
    ├── PermissionDeniedError   403
    ├── NotFoundError           404
    ├── ConflictError           409
    ├── UnprocessableEntityError 422
    ├── RateLimitedError        429, with ``retry_after`` seconds when the server said so
    └── ServerError             5xx
```

Each ``APIError`` carries the status, method, URL path, the server's message (the NestJS
``message`` field, a string or a list), and the request id when a response header has one.
No secret (private key, JWT, token) ever appears in an error's text: messages pass through
the same redaction as log records.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._redact import redact_text

__all__ = [
    "APIError",
    "AuthenticationError",
    "BadRequestError",
    "BlockingCallError",
    "ClientClosedError",
    "ConfigurationError",
    "ConflictError",
    "DuplicateActionError",
    "ICRError",
    "InvalidArgumentError",
    "NotFoundError",
    "PaginationError",
    "PermissionDeniedError",
    "RateLimitedError",
    "RequestTimeoutError",
    "ResponseDecodeError",
    "ServerError",
    "TokenError",
    "TransportError",
    "UnprocessableEntityError",
    "UnsupportedAPIVersionError",
    "error_class_for_status",
]


class ICRError(Exception):
    """The root of every error raised by icr-async."""

    def __init__(self, message: str) -> None:
        self.message = redact_text(message)
        super().__init__(self.message)


class ConfigurationError(ICRError, ValueError):
    """Settings or credentials that cannot work: raised when the client is built."""


class InvalidArgumentError(ICRError, ValueError):
    """An argument to a call that can never be valid, caught before any request is sent."""


class ClientClosedError(ICRError, RuntimeError):
    """A call on a client that has been closed."""


class BlockingCallError(ICRError, RuntimeError):
    """A blocking call made on the blocking client's own event-loop thread (for example from a
    request hook or a custom ``sleep``): it would wait for itself forever. Use the async
    client there."""


class TransportError(ICRError):
    """The request got no HTTP answer: connection refused or reset, DNS, TLS, a cut body.

    ``method`` and ``path`` say which request failed; the original aiohttp or OS error is
    the ``__cause__``.
    """

    retryable: bool = True
    """Whether repeating the request could help (not for a TLS certificate failure)."""

    def __init__(self, message: str, *, method: str = "", path: str = "") -> None:
        self.method = method
        self.path = path
        where = f" ({method} {path})" if method else ""
        super().__init__(f"{message}{where}")


class RequestTimeoutError(TransportError, TimeoutError):
    """A connect, read or total deadline passed before the answer arrived."""


class ResponseDecodeError(ICRError):
    """A response body that is not what the endpoint promises (not JSON, a field missing).

    ``field`` names the offending field when one is known; the cattrs or JSON error is the
    ``__cause__``.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        method: str = "",
        path: str = "",
        field: str | None = None,
    ) -> None:
        self.status = status
        self.method = method
        self.path = path
        self.field = field
        where = f" ({method} {path})" if method else ""
        super().__init__(f"{message}{where}")


class PaginationError(ICRError):
    """A paginated listing that repeats a page or runs past every sane bound."""


class TokenError(ICRError):
    """A token could not be produced (for example ``min_ttl`` longer than a token lives)."""


class DuplicateActionError(ICRError):
    """A credit action refused because the same idempotency key was already sent."""

    def __init__(self, message: str, *, key: str) -> None:
        self.key = key
        super().__init__(message)


class APIError(ICRError):
    """The ICR server answered with an error status.

    Attributes: ``status``, ``method``, ``path`` (no query string), ``server_message`` (the
    server's own words, a string; list messages are joined with "; "), ``messages`` (the
    list form), ``error`` (the NestJS ``error`` label), ``request_id`` and ``body`` (the
    parsed JSON body, or ``None``).
    """

    def __init__(
        self,
        *,
        status: int,
        method: str,
        path: str,
        server_message: str = "",
        messages: tuple[str, ...] = (),
        error: str | None = None,
        request_id: str | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.status = status
        self.method = method
        self.path = path
        self.server_message = redact_text(server_message)
        self.messages = tuple(redact_text(m) for m in messages)
        self.error = error
        self.request_id = request_id
        self.body = body
        self.headers: Mapping[str, str] = dict(headers or {})
        text = f"{status} {error or _reason(status)} on {method} {path}"
        if self.server_message:
            text += f": {self.server_message}"
        if request_id:
            text += f" [request id {request_id}]"
        super().__init__(text)


class BadRequestError(APIError):
    """400: the server refused the request as malformed."""


class UnsupportedAPIVersionError(BadRequestError):
    """400 because the ``x-icr-api-version`` header names a version the server lacks."""


class AuthenticationError(APIError):
    """401: the JWT or token was refused (bad signature, expired, revoked, unknown app)."""


class PermissionDeniedError(APIError):
    """403: the installation lacks the permission this call needs."""


class NotFoundError(APIError):
    """404: no such installation, organization or resource (or not visible to this app)."""


class ConflictError(APIError):
    """409: the request conflicts with the resource's current state."""


class UnprocessableEntityError(APIError):
    """422: the server understood the body but refused its values."""


class RateLimitedError(APIError):
    """429: too many requests. ``retry_after`` is the wait in seconds the server asked for."""

    def __init__(self, *, retry_after: float | None = None, **kwargs: Any) -> None:
        self.retry_after = retry_after
        super().__init__(**kwargs)


class ServerError(APIError):
    """5xx: the server failed."""


_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: UnprocessableEntityError,
    429: RateLimitedError,
}

_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def _reason(status: int) -> str:
    return _REASONS.get(status, "Error")


def error_class_for_status(status: int) -> type[APIError]:
    """The ``APIError`` subclass that stands for an HTTP status."""
    cls = _BY_STATUS.get(status)
    if cls is not None:
        return cls
    if status >= 500:
        return ServerError
    return APIError
