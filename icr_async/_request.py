"""The request side of the sans-I/O core: one frozen ``Request`` built by a pure function.

Every call the SDK makes — a typed endpoint, ``request()``, a mint — becomes a ``Request``
here, before any credential or socket is involved: the method and path are checked, the
query encoded, the JSON body serialised, and the per-call options (``RequestOptions``)
applied. The pipeline then sends that one object, attempt after attempt; the transport
turns it into bytes on the wire. A new per-call option is a field of ``RequestOptions`` and
of ``Request`` and one line in ``build_request``; nothing else changes.
"""

from __future__ import annotations

import json as jsonlib
import math
import re
from collections.abc import Mapping
from typing import Any, Final, NamedTuple, TypedDict

from .errors import InvalidArgumentError

__all__ = [
    "NO_BODY",
    "OPTION_NAMES",
    "SAFE_METHODS",
    "Request",
    "RequestOptions",
    "build_call",
    "build_request",
    "check_method",
    "check_path",
    "encode_params",
]

SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"})


class _NoBody:
    """The "no ``json=`` given" marker (``None`` is a JSON body: ``null``)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NO_BODY"


NO_BODY: Final[Any] = _NoBody()

# One scan for everything a caller-supplied path must not contain: a scheme or authority
# ("://", a leading "//"), backslashes, whitespace or control characters, "." / ".." segments
# (also percent-encoded: yarl would decode and resolve "%2e%2e").
_GOOD_PATHS: set[str] = set()
_GOOD_PATHS_MAX = 20_000
_BAD_PATH_RE = re.compile(r"://|\\|[\x00-\x20\x7f]|/(?:\.|%2e){1,2}(?:/|$)", re.IGNORECASE)


class RequestOptions(TypedDict, total=False):
    """The per-call options every ``request``-like method accepts as keyword arguments.

    ``params``: the query (``None`` values are left out, booleans become ``true``/``false``).
    ``json``: a body to send as JSON. ``retry``: ``True`` to let a non-idempotent request be
    retried like a GET, ``False`` to never retry this call; default: retry only what is safe
    to repeat. ``timeout``: seconds for the whole call, retries included (default: the
    client's ``Timeouts.total``).
    """

    params: Mapping[str, Any] | None
    json: Any
    retry: bool | None
    timeout: float | None


OPTION_NAMES: Final = frozenset(RequestOptions.__annotations__)


def build_call(method: str, path: str, *, base_url: str, options: Mapping[str, Any]) -> Request:
    """``build_request`` for a caller's ``request(method, path, **options)``: only the
    ``RequestOptions`` keys are taken (``safe``/``checked`` are the SDK's own, never a
    caller's: a path that skipped its checks could leave the API)."""
    if not options:
        # The common call, ``request("GET", path)``: no option to read or check, and a
        # method and a path seen before need no check either.
        if type(method) is not str or method not in _METHODS:
            method = check_method(method)
        if type(path) is not str or path not in _GOOD_PATHS:
            path = check_path(path)
        safe = method in SAFE_METHODS
        return Request(method, path, base_url + path, None, None, safe, safe, None)
    unknown = options.keys() - OPTION_NAMES
    if unknown:
        raise InvalidArgumentError(
            f"unknown request option(s) {', '.join(sorted(map(repr, unknown)))}; "
            f"the options are {', '.join(sorted(OPTION_NAMES))}"
        )
    return build_request(method, path, base_url=base_url, **options)


class Request(NamedTuple):
    """One API call, checked and encoded; immutable, sent as is by every attempt.

    ``url`` is the base URL plus ``path``. ``safe``: whether the request may be repeated
    (the method is idempotent, or the SDK knows the endpoint is, like minting a token).
    ``may_retry`` folds in the caller's ``retry=`` choice. ``query`` is ``None`` or the
    encoded parameters; ``body`` the JSON bytes or ``None``.
    """

    # A named tuple: immutable without a guarded __setattr__, and made in one step (a slotted
    # class set its eight fields with eight object.__setattr__ calls on every request).
    method: str
    path: str
    url: str
    query: Mapping[str, str] | None
    body: bytes | None
    safe: bool
    may_retry: bool
    timeout: float | None

    def __repr__(self) -> str:
        # Never the body: it may carry personal data (an e-mail, a beneficiary).
        body = f", {len(self.body)} body bytes" if self.body is not None else ""
        return f"<Request {self.method} {self.path}{body}>"


def check_path(path: object) -> str:
    """``path`` if it is an absolute API path that cannot leave the API's base URL."""
    if type(path) is str and path in _GOOD_PATHS:
        return path  # checked before: a set lookup instead of a scan per request()
    if not isinstance(path, str) or not path.startswith("/") or path.startswith("//"):
        raise InvalidArgumentError(
            f"path must be an absolute API path like '/organizations/ID', got {path!r}"
        )
    bad = _BAD_PATH_RE.search(path)
    if bad is not None:
        if bad.group(0).startswith("/"):
            raise InvalidArgumentError(f"path {path!r} must not contain '.' or '..' segments")
        raise InvalidArgumentError(
            f"path {path!r} contains characters that are not allowed in a path"
        )
    if len(_GOOD_PATHS) >= _GOOD_PATHS_MAX:
        _GOOD_PATHS.clear()  # bounded; refilled by the paths in use
    _GOOD_PATHS.add(path)
    return path


def check_method(method: object) -> str:
    """The upper-cased HTTP method, or ``InvalidArgumentError`` for one ICR does not use."""
    upper = method.upper() if isinstance(method, str) else ""
    if upper not in _METHODS:
        raise InvalidArgumentError(f"unsupported HTTP method {method!r}")
    return upper


def encode_params(params: Mapping[str, Any] | None) -> dict[str, str] | None:
    """Query parameters as strings: ``None`` values dropped, booleans as ``true``/``false``."""
    if not params:
        return None
    if not isinstance(params, Mapping):
        raise InvalidArgumentError(f"params must be a mapping, got {type(params).__name__}")
    out: dict[str, str] = {}
    for key, value in params.items():
        if value is None:
            continue
        if isinstance(value, bool):
            out[str(key)] = "true" if value else "false"
        else:
            out[str(key)] = str(value)
    return out or None


def _check_timeout(timeout: object) -> float | None:
    if timeout is None:
        return None
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or not math.isfinite(timeout)
        or timeout <= 0
    ):
        raise InvalidArgumentError(f"timeout must be a number of seconds > 0, got {timeout!r}")
    return float(timeout)


def build_request(
    method: str,
    path: str,
    *,
    base_url: str,
    params: Mapping[str, Any] | None = None,
    json: Any = NO_BODY,
    retry: bool | None = None,
    timeout: float | None = None,
    safe: bool | None = None,
    checked: bool = False,
) -> Request:
    """Check and encode one call. Pure: the same arguments give an equal request.

    ``safe`` overrides the method's own idempotency (the SDK knows that minting and revoking
    a token may be repeated); ``checked`` skips the method and path checks for paths the
    SDK built itself from checked ids (the hot path of every typed call).
    """
    if not checked:
        method = check_method(method)
        path = check_path(path)
    if retry is not None and not isinstance(retry, bool):
        raise InvalidArgumentError(f"retry must be True, False or None, got {retry!r}")
    if json is NO_BODY:
        body = None
    else:
        try:
            body = jsonlib.dumps(json, separators=(",", ":"), allow_nan=False).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise InvalidArgumentError(
                f"the request body for {method} {path} is not JSON-serialisable: {exc}"
            ) from None
    if safe is None:
        safe = method in SAFE_METHODS
    return Request(
        method,
        path,
        base_url + path,
        encode_params(params),
        body,
        safe,
        safe if retry is None else retry,
        _check_timeout(timeout),
    )
