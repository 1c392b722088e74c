"""HTTP plumbing of the emulator: NestJS error bodies, bearer parsing, loopback and TLS.

Pure helpers with no emulator state, the bottom of the emulator's modules: every other one
may import them (:class:`EmulatorHTTPError`, :func:`check_loopback`) without a cycle.
"""

from __future__ import annotations

import asyncio
import http
import ipaddress
import json
import re
import ssl
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from ._data import ORGANIZATION_TYPES
from ._faults import Fault

__all__ = [
    "JSON_CT",
    "EmulatorHTTPError",
    "abort",
    "bearer",
    "check_loopback",
    "dumps",
    "filter_handshake_errors",
    "make_tls",
    "nest_error_body",
    "status_fault_response",
    "validate_create_org",
]

JSON_CT = "application/json"
_LOOPBACK_NAMES = frozenset(("localhost",))


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON, as ICR sends it."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _error_phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def nest_error_body(status: int, message: str | list[str] | None = None) -> bytes:
    """The JSON error body NestJS (ICR's framework) sends for ``status``."""
    phrase = _error_phrase(status)
    if message is None:
        if status == 429:
            message = "ThrottlerException: Too Many Requests"
        elif status == 500:
            message = "Internal server error"
        else:
            message = phrase
    return dumps({"statusCode": status, "message": message, "error": phrase})


class EmulatorHTTPError(Exception):
    """Raised by route handlers; answered as ``{"statusCode", "message", "error"}``."""

    def __init__(
        self,
        status: int,
        message: str | list[str],
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})

    def to_response(self) -> web.Response:
        """The NestJS-style error response for this error."""
        return web.Response(
            status=self.status,
            body=nest_error_body(self.status, self.message),
            content_type=JSON_CT,
            charset="utf-8",
            headers=self.headers,
        )


def bearer(request: web.Request) -> str | None:
    """The credential of an ``Authorization: Bearer`` header, or ``None``."""
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, credential = header.partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential:
        return None
    return credential


def check_loopback(host: str) -> None:
    """Raise ``ValueError`` unless ``host`` is a loopback address or ``localhost``."""
    if host in _LOOPBACK_NAMES:
        return
    try:
        is_loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        is_loopback = False
    if not is_loopback:
        raise ValueError(f"the ICR emulator only listens on loopback addresses, not {host!r}")


def abort(request: web.Request) -> None:
    """Drop the request's connection without an answer."""
    transport = request.transport
    if transport is not None:
        transport.abort()


_INCOMING_CONNECTION_ERROR = "Error on transport creation for incoming connection"


def filter_handshake_errors(loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
    """Silence failed TLS handshakes of incoming connections while the server runs.

    In debug mode asyncio reports every failed server-side handshake to the loop's exception
    handler, and test runners (anyio's among them) turn that into a test error. A client
    that refuses the throwaway certificate is exactly what TLS tests check, so those
    reports are dropped; everything else reaches the previous handler. Returns the undo.
    """
    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        if context.get("message") == _INCOMING_CONNECTION_ERROR and isinstance(
            error, (ConnectionError, ssl.SSLError)
        ):
            return
        if previous is None:
            loop.default_exception_handler(context)
        else:
            previous(loop, context)

    loop.set_exception_handler(handler)

    def restore() -> None:
        # Only undo our own handler: someone may have replaced it since.
        if loop.get_exception_handler() is handler:
            loop.set_exception_handler(previous)

    return restore


def make_tls() -> tuple[ssl.SSLContext, str]:
    """A server SSL context for 127.0.0.1, ::1 and localhost, and its CA's PEM."""
    # Imported here: trustme is a test-only dependency, needed only with tls=True.
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "::1", "localhost")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    return context, str(ca.cert_pem.bytes().decode("ascii"))


def status_fault_response(fault: Fault, retry_after: str | None) -> web.Response:
    """The answer of a ``"status"`` fault; ``retry_after`` is the rendered header value."""
    status = fault.status
    headers: CIMultiDict[str] = CIMultiDict(fault.headers)
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    content_type = headers.pop("Content-Type", None)
    body: bytes
    if status in (204, 304):
        return web.Response(status=status, headers=headers)
    if fault.body is None:
        body = nest_error_body(status)
    elif isinstance(fault.body, dict):
        body = dumps(fault.body)
    elif isinstance(fault.body, str):
        body = fault.body.encode("utf-8")
    else:
        body = fault.body
    if content_type is None:
        try:
            json.loads(body)
        except ValueError:
            content_type = "text/plain"
        else:
            content_type = JSON_CT
    headers["Content-Type"] = content_type
    return web.Response(status=status, body=body, headers=headers)


_EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_COUNTRY_RE = re.compile(r"[A-Z]{2}")


def validate_create_org(body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Validate ``POST /app/create/user/organization`` like NestJS class-validator would."""
    errors: list[str] = []
    user = body.get("user")
    org = body.get("organization")
    user_out: dict[str, Any] = {}
    org_out: dict[str, Any] = {}
    if not isinstance(user, dict):
        errors.append("user must be an object")
    else:
        email = user.get("email")
        if not isinstance(email, str) or not _EMAIL_RE.fullmatch(email):
            errors.append("user.email must be an email")
        else:
            user_out["email"] = email
        for name in ("fullName", "profilePicture"):
            value = user.get(name)
            if value is not None and not isinstance(value, str):
                errors.append(f"user.{name} must be a string")
            elif value is not None:
                user_out[name] = value
    if not isinstance(org, dict):
        errors.append("organization must be an object")
    else:
        full_name = org.get("fullName")
        if not isinstance(full_name, str):
            errors.append("organization.fullName must be a string")
        elif not full_name.strip():
            errors.append("organization.fullName should not be empty")
        else:
            org_out["fullName"] = full_name
        org_type = org.get("type")
        if org_type not in ORGANIZATION_TYPES:
            errors.append(
                "organization.type must be one of the following values: "
                + ", ".join(ORGANIZATION_TYPES)
            )
        else:
            org_out["type"] = org_type
        country = org.get("countryCode")
        if country is not None:
            if not isinstance(country, str) or not _COUNTRY_RE.fullmatch(country):
                errors.append("organization.countryCode must be a valid ISO31661 Alpha2 code")
            else:
                org_out["countryCode"] = country
    if errors:
        raise EmulatorHTTPError(400, errors)
    return user_out, org_out
