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
│   └── UnreadableActionResultError   a credit action accepted (2xx) whose answer cannot be read
├── PaginationError             a server that repeats pages or never ends
├── TokenError                  an installation or app token could not be had
├── SignerError                 the JWT signer (HSM, KMS, key) failed or gave a bad signature
├── DuplicateActionError        a credit action sent twice under the same idempotency key
│   └── ActionOutcomeUnknownError   the earlier attempt's outcome is unknown: reconcile, never resend
├── WebhookError                a webhook delivery that cannot be trusted (icr_async.webhooks)
│   ├── WebhookSignatureError   missing or wrong x-icr-signature-256
│   └── WebhookPayloadError     a body that is not the promised JSON
└── APIError                    the server answered 3xx/4xx/5xx
    ├── RedirectError           3xx: redirects are never followed; ``location`` says where
    ├── BadRequestError         400
    │   └── UnsupportedAPIVersionError   400 for an x-icr-api-version the server does not know
    ├── AuthenticationError     401
    ├── PermissionDeniedError   403
    ├── NotFoundError           404
    ├── ConflictError           409
    ├── UnprocessableEntityError 422
    ├── RateLimitedError        429, with ``retry_after`` seconds when the server said so
    │   └── BackoffPausedError  not sent: the scope is paused by a back-off learned earlier
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

from ._redact import redact_headers, redact_text, redact_value

__all__ = [
    "APIError",
    "ActionOutcomeUnknownError",
    "AuthenticationError",
    "BackoffPausedError",
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
    "RedirectError",
    "RequestTimeoutError",
    "ResponseDecodeError",
    "ServerError",
    "SignerError",
    "TokenError",
    "TransportError",
    "UnprocessableEntityError",
    "UnreadableActionResultError",
    "UnsupportedAPIVersionError",
    "WebhookError",
    "WebhookPayloadError",
    "WebhookSignatureError",
    "error_class_for_status",
]


class ICRError(Exception):
    """The root of every error raised by icr-async."""

    def __init__(self, message: str) -> None:
        self.message: str = redact_text(message)
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


class UnreadableActionResultError(ResponseDecodeError):
    """A credit action or reservation call the server *accepted* (it answered 2xx) whose answer
    could not be read as the promised model.

    ICR does not document these answers, so this can happen with a real server. The action
    has most likely been done: **do not send it again**. Reconcile instead: list the
    organization's credit requests (or reservations), or wait for the
    ``organizationTransaction`` / ``warehouseTransaction`` webhook.
    """


class PaginationError(ICRError):
    """A paginated listing that repeats a page or runs past every sane bound."""


class TokenError(ICRError):
    """A token could not be produced (for example ``min_ttl`` longer than a token lives)."""


class SignerError(ICRError):
    """The app JWT could not be signed: the signer failed, timed out or returned a signature
    that does not verify with its own public key.

    ``key_id`` names the signer (a PKCS#11 URI without its PIN, a KMS key name, ...) and
    ``fingerprint`` its public key (base64 SHA-256 of the DER SubjectPublicKeyInfo); the
    signer's own exception, if any, is the ``__cause__``. The message names the cause's type
    only, never its text: a signer's error text is not ours to vouch for.
    """

    def __init__(self, message: str, *, key_id: str = "", fingerprint: str = "") -> None:
        self.key_id: str = redact_text(key_id)
        self.fingerprint = fingerprint
        super().__init__(message)


class DuplicateActionError(ICRError):
    """A credit action refused because the same idempotency key was already used; nothing was
    sent this time.

    ``key`` is the idempotency key. ``state`` says what became of the earlier attempt:
    ``"done"`` (the server accepted it), ``"pending"`` (still in flight, on this worker or
    another), ``"rejected"`` (the server refused it with ``status``), ``"unknown"`` (see
    :class:`ActionOutcomeUnknownError`), or ``""`` when not known. ``same_action`` is true
    when the earlier attempt was the very same action (same installation, path and body).
    ``result`` is the model the server answered the earlier, identical attempt with (a
    ``CreditRequest`` or ``Reservation``) when the store recorded it, else ``None``: a retry
    of a finished action can carry on with it.
    """

    def __init__(
        self,
        message: str,
        *,
        key: str,
        state: str = "",
        same_action: bool = False,
        status: int | None = None,
        result: Any = None,
    ) -> None:
        self.key = key
        self.state = state
        self.same_action = same_action
        self.status = status
        self.result = result
        super().__init__(message)


class ActionOutcomeUnknownError(DuplicateActionError):
    """An earlier attempt under this idempotency key may or may not have been done, so this
    one is **not sent**.

    Raised when the earlier attempt's worker died while the request was in flight (its lease
    ran out while the record was still pending), or when the earlier attempt ended without an
    answer that settles it (a timeout, a dropped connection, a 5xx: the server may have acted).
    Never resend blindly: **reconcile**. List the organization's credit requests
    (``iter_credit_requests``) or reservations, or wait for the ``organizationTransaction`` /
    ``warehouseTransaction`` webhook. If the action did happen, record that in your own
    system; if it certainly did not, call ``forget_action(key)`` and try again.
    """


class APIError(ICRError):
    """The ICR server answered with an error status.

    Attributes: ``status``, ``method``, ``path`` (no query string), ``server_message`` (the
    server's own words, a string; list messages are joined with "; "), ``messages`` (the
    list form), ``error`` (the NestJS ``error`` label), ``request_id`` (from
    ``x-icr-request-id`` or a generic request-id header: quote it to ICR support),
    ``retry_after`` (seconds the server asked to wait, from ``Retry-After`` measured on the
    server's own clock, or ``None``), ``body`` (the parsed JSON body, or ``None``) and
    ``headers``. ``body`` and ``headers`` are redacted like the message: a credential the
    server echoed back never reaches an error tracker that records attributes.
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
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.method = method
        self.path = path
        self.server_message: str = redact_text(server_message)
        self.messages: tuple[str, ...] = tuple(redact_text(m) for m in messages)
        self.error = error
        self.request_id = request_id
        self.retry_after = retry_after
        self.body: Any = redact_value(body)
        self.headers: Mapping[str, str] = redact_headers(headers or {})
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


class BackoffPausedError(RateLimitedError):
    """The request was **not sent**: its scope (the app, or one installation) is paused by a
    back-off this process, or another worker sharing a ``BackoffStore``, learned from the
    server's ``429``/``503`` with ``Retry-After``, and the pause outlasts what this call may
    wait (its deadline, or ``RetryPolicy.max_retry_after``).

    ``status`` is 429 (the server's word that started the pause); ``retry_after`` is how many
    seconds the pause still runs. Safe to try again after that, even for a credit action.
    """


class RedirectError(APIError):
    """3xx: the server (or something in front of it) answered with a redirect.

    Redirects are never followed: a credit action's body re-sent to another host, or a
    foreign answer taken for ICR's, is worse than a clear error. ``location`` is the
    ``Location`` header (redacted), or ``None``.
    """

    @property
    def location(self) -> str | None:
        """Where the server pointed, from the ``Location`` header."""
        for name, value in self.headers.items():
            if name.lower() == "location":
                return value
        return None


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
    301: "Moved Permanently",
    302: "Found",
    303: "See Other",
    307: "Temporary Redirect",
    308: "Permanent Redirect",
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
    if 300 <= status < 400:
        return RedirectError
    if status >= 500:
        return ServerError
    return APIError


class WebhookError(ICRError):
    """A webhook delivery that cannot be trusted or read (raised by ``icr_async.webhooks``).

    ``message`` is safe to log and to send back to the caller: it never contains the webhook
    secret, the expected digest or the signature header's text.
    """


class WebhookSignatureError(WebhookError):
    """The ``x-icr-signature-256`` header is missing, malformed or does not match (answer 401)."""


class WebhookPayloadError(WebhookError):
    """The body is not the promised JSON: bad JSON, bad base64 or an unexpected payload shape
    (answer 400)."""
