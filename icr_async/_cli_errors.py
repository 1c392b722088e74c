"""How ``icr-async`` reports a failure: one line on stderr, ``icr-async: error: WHAT (HINT)``.

The hint says what to do in shell terms (a flag or an environment variable, never a Python
argument); ``--debug`` adds the traceback and the SDK's log. Everything printed passes through
the SDK's secret redaction first.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import re
import sys
import traceback
from collections.abc import Iterator

from ._cli_common import PROG
from ._redact import redact_text
from .errors import (
    APIError,
    AuthenticationError,
    ConfigurationError,
    NotFoundError,
    PaginationError,
    PermissionDeniedError,
    RateLimitedError,
    RequestTimeoutError,
    ResponseDecodeError,
    ServerError,
    TokenError,
    TransportError,
    UnsupportedAPIVersionError,
)

__all__ = ["hint_for", "in_shell_terms", "print_traceback", "report", "sdk_logging"]

_KEY_HINT = "check ICR_APP_ID and the private key; is the key registered for this app?"


def hint_for(exc: BaseException, args: argparse.Namespace | None) -> str | None:
    """What to do about ``exc``, in a few words."""
    base_url = getattr(args, "resolved_base_url", None)
    if isinstance(exc, AuthenticationError):
        if exc.path == "/app/installations/token":
            return "the token is not valid: already revoked, expired or mistyped"
        if exc.path.startswith("/app/"):
            return _KEY_HINT
        return "the access token was refused; rerun with --debug to see the requests"
    if isinstance(exc, NotFoundError):
        if exc.path.startswith("/app/installations/"):
            return "no installation with that id for this app; see 'icr-async installations list'"
        return "check the path and the ids in it"
    if isinstance(exc, PermissionDeniedError):
        return (
            "the credential does not reach this resource: check the ids in the path and the "
            "permissions the installation granted"
        )
    if isinstance(exc, RateLimitedError):
        if exc.retry_after is not None:
            return f"try again in {exc.retry_after:.0f} s"
        return "try again later"
    if isinstance(exc, UnsupportedAPIVersionError):
        return "set --api-version or ICR_API_VERSION to a supported date (default 2023-06-16)"
    if isinstance(exc, ServerError):
        return "the ICR server failed; try again later"
    if isinstance(exc, APIError) and exc.status == 400:
        return "the server refused the request as malformed; check --data, --param and the flags"
    if isinstance(exc, RequestTimeoutError):
        return f"the server did not answer in time; is the base URL {base_url} right?"
    if isinstance(exc, TransportError):
        return (
            f"is the base URL {base_url} right? Set ICR_BASE_URL or --base-url; "
            "for a local emulator run 'icr-async emulator'"
        )
    if isinstance(exc, ResponseDecodeError):
        return "the answer is not the JSON this endpoint promises; rerun with --debug"
    if isinstance(exc, PaginationError):
        if getattr(args, "command", None) == "request":
            return "the server's pagination is inconsistent; try another --param limit=N"
        return "the server's pagination is inconsistent; try another --page-size"
    if isinstance(exc, TokenError):
        return "an installation token lives 2 hours; ask for a shorter --min-ttl"
    if isinstance(exc, ConfigurationError):
        text = exc.message.lower()
        for words, hint in (
            (("base_url",), "check --base-url or ICR_BASE_URL"),
            (("api_version",), "check --api-version or ICR_API_VERSION"),
            (("app_id", "app id"), "check --app-id or ICR_APP_ID"),
            (
                ("key",),
                "check --private-key-path, ICR_PRIVATE_KEY_PATH or ICR_PRIVATE_KEY",
            ),
        ):
            if any(word in text for word in words):
                return hint
    return None


# The SDK's messages name Python arguments; a shell user needs the flag or variable. Where the
# SDK already gives both ("x=True in Python, --x on the command line") the shell half is kept.
_SHELL_TERMS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b[a-z_]+=\S+ in Python, (--[a-z-]+) on the command line"), r"\1"),
    (
        re.compile(r"\bpass either base_url or sandbox=True\b"),
        "pass either --base-url or --sandbox",
    ),
    (
        re.compile(r"\bpass private_key_password=$"),
        "decrypt it first (openssl pkey -in KEY -out PLAIN); the command line takes no password",
    ),
    (re.compile(r"\bpass app_id= or\b"), "pass --app-id or"),
    (
        re.compile(r"\bpass private_key= \(PEM\) or private_key_path=,"),
        "pass --private-key-path,",
    ),
    (re.compile(r"\bprivate_key_path="), "--private-key-path"),
    (re.compile(r"\bbase_url\b"), "the base URL"),
    (re.compile(r"\bapi_version\b"), "the API version"),
    (re.compile(r"\bapp_id\b"), "the app id"),
)


def in_shell_terms(message: str) -> str:
    """``message`` with Python argument names replaced by what a shell user types."""
    for pattern, replacement in _SHELL_TERMS:
        message = pattern.sub(replacement, message)
    return message


def report(message: str, hint: str | None) -> None:
    # One line, whatever the message holds: scripts grep it, people read the first line.
    text = " ".join(redact_text(message).split())
    if hint:
        text += f" ({hint})"
    sys.stderr.write(f"{PROG}: error: {text}\n")
    sys.stderr.flush()


def print_traceback(exc: BaseException) -> None:
    # Exception texts are redacted already; redacting the whole traceback again costs
    # nothing and also covers messages of third-party exceptions in the chain.
    sys.stderr.write(redact_text("".join(traceback.format_exception(exc))))


class _RedactingFormatter(logging.Formatter):
    """Formats a record, then masks anything that looks like a token, JWT or key."""

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record))


@contextlib.contextmanager
def sdk_logging(debug: bool) -> Iterator[None]:
    logger = logging.getLogger("icr_async")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        _RedactingFormatter(
            "icr-async: %(levelname)s %(name)s: %(message)s"
            if debug
            else "icr-async: %(levelname)s: %(message)s"
        )
    )
    saved = (logger.level, logger.propagate)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if debug else logging.WARNING)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
