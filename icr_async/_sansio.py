"""Pure request/response logic: no sockets, no event loop, tested without either.

In the spirit of gidgethub's sans-I/O core: building headers and paths, turning a status and
body into a value or a typed error, and reading pagination all live here, so the transport
stays a thin shell and every rule can be tested with plain function calls.
"""

from __future__ import annotations

import importlib
import json
import json.scanner
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

from ._clock import parse_http_date
from ._retry import parse_retry_after
from .errors import (
    APIError,
    InvalidArgumentError,
    PaginationError,
    ResponseDecodeError,
    UnsupportedAPIVersionError,
    error_class_for_status,
)
from .models import Pagination

__all__ = [
    "REQUEST_ID_HEADERS",
    "PageTracker",
    "check_page_args",
    "decode_json",
    "error_from_response",
    "parse_error_body",
    "path_param",
    "request_id",
    "retry_after",
    "server_time",
]

# ICR's own header first, then the generic ones proxies and gateways add.
REQUEST_ID_HEADERS = (
    "x-icr-request-id",
    "x-request-id",
    "x-amzn-requestid",
    "x-amz-cf-id",
    "request-id",
    "x-correlation-id",
)

# Real ids are UUIDs; docs examples use numbers. Letters, digits, '-' and '_' cover both and
# nothing that could change the meaning of a URL path.
_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")

MAX_PAGE_LIMIT = 1000

# Ids already checked (a set lookup instead of a regular expression per typed call). Sized
# for the ids in steady use, not for every installation a sweep touches once: at 20,000
# a 10,000-installation job kept ~65 bytes per installation here; a miss costs one regular
# expression (~0.3 us).
_GOOD_IDS: set[str] = set()
_GOOD_IDS_MAX = 4_096

Loads = Callable[[bytes], Any]
# orjson reads integers in [-2**63, 2**64 - 1] and makes any other a float; every such
# integer has at least 19 digits (-9223372036854775809 has 19), so a run of 19 digits sends a
# body to ``json``. Found as every digit mapped to "0" and anything else to " ", then a plain
# substring search (~2 µs on an installation; a regular expression takes ~12x as long).
_DIGITS_AS_ZERO = bytes(0x30 if 0x30 <= i <= 0x39 else 0x20 for i in range(256))
_LONG_NUMBER = b"0" * 19


def json_loader(use_orjson: bool) -> Loads:
    """The JSON parser for response bodies: orjson's (3-4x faster on an installation) when
    asked for and installed (the ``speedups`` extra), else the standard library's.

    orjson refuses a little that ``json`` reads (``NaN``) and turns integers past 64 bits
    into floats; such bodies go to ``json`` (a refused one is parsed again, one with a run of
    19 digits never reaches orjson), so the choice never changes what an answer decodes to.
    """
    if use_orjson:
        try:
            orjson = importlib.import_module("orjson")
        except ImportError:
            pass
        else:
            fast: Loads = orjson.loads
            refused: type[Exception] = orjson.JSONDecodeError

            def loads(data: bytes) -> Any:
                if _LONG_NUMBER in data.translate(_DIGITS_AS_ZERO):
                    return _plain_loads(data)
                try:
                    return fast(data)
                except refused:
                    return _plain_loads(data)

            return loads
    return _plain_loads


_DECODER = json.JSONDecoder()
# The decoder's own scanner (the C one where CPython has it): what JSONDecoder.decode calls
# after two whitespace regexes and two Python frames, which cost more than the scan of a
# small answer.
_SCAN_ONCE: Callable[[str, int], tuple[Any, int]] = json.scanner.make_scanner(_DECODER)  # type: ignore[arg-type]  # typeshed types the class, not its argument


def _plain_loads(data: bytes) -> Any:
    # What json.loads(bytes) does, minus its encoding sniffing (JSON on the wire is UTF-8)
    # and, for a body that is one JSON value with nothing around it (ICR's answers), its
    # whitespace handling. Anything else (a BOM, UTF-16, whitespace, trailing data, bad
    # JSON) gets json.loads's own reading and errors.
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return json.loads(data)
    try:
        value, end = _SCAN_ONCE(text, 0)
    except StopIteration:
        return json.loads(data)
    if end != len(text):
        return json.loads(data)
    return value


# Chosen once, at import; ICR_ASYNC_NO_ORJSON=1 keeps the standard library's parser.
loads_json: Loads = json_loader(os.environ.get("ICR_ASYNC_NO_ORJSON", "") in ("", "0"))


def path_param(value: object, what: str = "installation_id") -> str:
    """Check an id that goes into a URL path and return it percent-encoded.

    ``'../token'``, ``'a/b'``, ``'%2F'``, whitespace, non-ASCII and empty ids are refused
    with ``InvalidArgumentError`` so no id can ever reach a different endpoint. The allowed
    alphabet (letters, digits, ``-``, ``_``) is exactly the one that needs no
    percent-encoding, so an accepted id is already encoded.
    """
    if type(value) is str and value in _GOOD_IDS:
        return value  # checked before: the hot path of every typed call on a known id
    if isinstance(value, bool):
        raise InvalidArgumentError(f"{what} must be a string or integer id, got a boolean")
    if isinstance(value, int):
        if value < 0:
            raise InvalidArgumentError(f"{what} must not be negative, got {value}")
        value = str(value)
    if not isinstance(value, str):
        raise InvalidArgumentError(f"{what} must be a string id, got {type(value).__name__}")
    if not _ID_RE.fullmatch(value):
        if not value:
            raise InvalidArgumentError(f"{what} must not be empty")
        if not value.strip():
            raise InvalidArgumentError(f"{what} must not be blank")
        shown = value if len(value) <= 60 else value[:57] + "..."
        raise InvalidArgumentError(
            f"{what} {shown!r} is not a valid id: only letters, digits, '-' and '_' are allowed "
            "(no '/', '.', '%', spaces or non-ASCII)"
        )
    # Every character the pattern admits is URL-safe as it stands: nothing to encode.
    if len(_GOOD_IDS) >= _GOOD_IDS_MAX:
        _GOOD_IDS.clear()  # bounded; refilled by the ids in use
    _GOOD_IDS.add(value)
    return value


def check_page_args(limit: object, page: object) -> tuple[int, int]:
    """Validate ``limit`` (1..1000) and ``page`` (>= 0) for a paginated listing."""
    for name, value in (("limit", limit), ("page", page)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidArgumentError(f"{name} must be an integer, got {value!r}")
    assert isinstance(limit, int)
    assert isinstance(page, int)
    if not 1 <= limit <= MAX_PAGE_LIMIT:
        raise InvalidArgumentError(f"limit must be between 1 and {MAX_PAGE_LIMIT}, got {limit}")
    if page < 0:
        raise InvalidArgumentError(f"page must be >= 0, got {page}")
    return limit, page


def request_id(headers: Mapping[str, str]) -> str | None:
    """The request id from the first response header that carries one."""
    for name in REQUEST_ID_HEADERS:
        value = headers.get(name)
        if value:
            return value[:200]
    return None


def parse_error_body(body: bytes) -> tuple[str, tuple[str, ...], str | None, Any]:
    """Read a NestJS-style error body: ``(message, messages, error label, parsed JSON)``.

    ``message`` may be a string or a list; anything that is not JSON falls back to the raw
    text (trimmed), so even an HTML error page from a proxy yields a readable message.
    """
    text = body.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text) if text else None
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        data = None
    if isinstance(data, dict):
        raw = data.get("message")
        if isinstance(raw, list):
            messages = tuple(str(m) for m in raw)
        elif raw is not None:
            messages = (str(raw),)
        else:
            messages = ()
        err = data.get("error")
        label = str(err) if isinstance(err, (str, int)) else None
        if not messages and label:
            messages = (label,)
        return "; ".join(messages), messages, label, data
    snippet = " ".join(text.split())[:300]
    return snippet, ((snippet,) if snippet else ()), None, data


def server_time(headers: Mapping[str, str], fallback: float) -> float:
    """The server's clock at the moment it answered: its ``Date`` header, else ``fallback``
    (the local clock plus the learned offset)."""
    when = parse_http_date(headers.get("Date"))
    return fallback if when is None else when


def retry_after(headers: Mapping[str, str], fallback_now: float) -> float | None:
    """Seconds to wait from ``Retry-After``, an HTTP date being measured on the *server's*
    clock (its ``Date`` header): a server whose clock is minutes off still gets waited for
    exactly as long as it asked."""
    value = headers.get("Retry-After")
    if value is None:
        return None
    return parse_retry_after(value, server_time(headers, fallback_now))


def error_from_response(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    method: str,
    path: str,
    now: float,
) -> APIError:
    """The typed ``APIError`` for an error answer (or a redirect, which is never followed).

    ``now`` is the local estimate of the server's time, used only when the answer has no
    ``Date`` header to measure an HTTP-date ``Retry-After`` against.
    """
    message, messages, label, data = parse_error_body(body)
    if 300 <= status < 400:
        location = headers.get("Location")
        message = (
            f"redirected to {location!r}; icr-async never follows redirects"
            if location
            else "redirected without a Location; icr-async never follows redirects"
        )
        messages, label = (message,), None
    kwargs: dict[str, Any] = {
        "status": status,
        "method": method,
        "path": path,
        "server_message": message,
        "messages": messages,
        "error": label,
        "request_id": request_id(headers),
        "body": data,
        "headers": headers,
        "retry_after": retry_after(headers, now),
    }
    if status == 400 and "version" in message.lower() and "api" in message.lower():
        return UnsupportedAPIVersionError(**kwargs)
    return error_class_for_status(status)(**kwargs)


def decode_json(
    status: int, headers: Mapping[str, str], body: bytes, *, method: str, path: str
) -> Any:
    """Parse a success body as JSON, or raise ``ResponseDecodeError`` (never a bare ValueError).

    The content type is not trusted either way: some proxies label JSON ``text/plain``; what
    matters is whether the bytes parse. An empty body is ``None``.
    """
    if not body:
        return None
    try:
        return loads_json(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        ctype = headers.get("Content-Type", "unknown content type")
        raise ResponseDecodeError(
            f"the server answered {status} with a body that is not JSON ({ctype}, {len(body)} bytes)",
            status=status,
            method=method,
            path=path,
        ) from exc


def read_pagination(
    data: Any, key: str, *, method: str, path: str
) -> tuple[list[Any], Pagination | None]:
    """Split a list answer into its items under ``key`` and its ``pagination`` block.

    A bare JSON list is accepted as items with no pagination.
    """
    from ._converters import structure  # local: _converters imports models, keep sansio light

    if isinstance(data, list):
        return data, None
    if not isinstance(data, dict):
        raise ResponseDecodeError(
            f"expected a JSON object with {key!r}, got {type(data).__name__}",
            method=method,
            path=path,
        )
    items = data.get(key)
    if items is None:
        # Tolerate a differently named list key if exactly one list is present.
        lists = [v for k, v in data.items() if isinstance(v, list) and k != "pagination"]
        if len(lists) != 1:
            raise ResponseDecodeError(
                f"the response has no {key!r} list", method=method, path=path, field=key
            )
        items = lists[0]
    if not isinstance(items, list):
        raise ResponseDecodeError(f"{key!r} is not a list", method=method, path=path, field=key)
    raw_pagination = data.get("pagination")
    pagination = (
        structure(raw_pagination, Pagination, method=method, path=path)
        if isinstance(raw_pagination, dict)
        else None
    )
    return items, pagination


class PageTracker:
    """Decides which page to ask for next, following the server, and refuses to loop.

    ICR's docs leave the page base open (requests say ``page=0``, responses say
    ``currentPage: 1``), and a 1-based server may serve its first page for both ``page=0`` and
    ``page=1``. So the next page is the one the server names: ``nextPage``; failing that
    ``currentPage + 1`` (a server that sends no navigation fields); and only when the answer
    has no ``pagination`` at all, this tracker's own counter.

    Stops on any end signal: an empty page, ``nextPage`` null or absent (when the server
    sends navigation fields at all), a ``nextPage`` that does not move forward,
    ``currentPage >= pageCount``, a short page without pagination, or all ``total`` items
    seen. Raises ``PaginationError`` when the server hands back a page it already served
    (same first and last ids), points back at a page already fetched, or runs past
    ``max_pages``.
    """

    __slots__ = (
        "_fingerprints",
        "_requested",
        "limit",
        "max_pages",
        "page",
        "pages_seen",
        "seen_items",
    )

    def __init__(self, *, limit: int, start_page: int = 0, max_pages: int = 1_000_000) -> None:
        self.limit = limit
        self.page = start_page
        """The page to ask for next."""
        self.max_pages = max_pages
        self.pages_seen = 0
        self.seen_items = 0
        self._fingerprints: set[tuple[Any, Any, int]] = set()
        self._requested: set[int] = set()

    def advance(self, items: list[Any], pagination: Pagination | None) -> bool:
        """Record the page just fetched (``self.page``); return ``True`` if there is another.

        On ``True``, ``self.page`` is the page to ask for next.
        """
        self.pages_seen += 1
        self.seen_items += len(items)
        self._requested.add(self.page)
        if not items:
            return False
        fingerprint = (_item_id(items[0]), _item_id(items[-1]), len(items))
        if fingerprint[0] is not None and fingerprint in self._fingerprints:
            raise PaginationError(
                f"the server returned the same page again (asked for page {self.page}); stopping "
                "instead of looping forever"
            )
        self._fingerprints.add(fingerprint)
        next_page = self._next_page(items, pagination)
        if next_page is None:
            return False
        if next_page in self._requested:
            raise PaginationError(
                f"the server named page {next_page} as the next one, which was already fetched; "
                "stopping instead of looping forever"
            )
        if self.pages_seen >= self.max_pages:
            raise PaginationError(f"more than {self.max_pages} pages; stopping")
        self.page = next_page
        return True

    def _next_page(self, items: list[Any], pagination: Pagination | None) -> int | None:
        """The page to fetch next, or ``None`` at the end of the listing."""
        if pagination is None:
            # Nothing from the server: a full page suggests there may be more.
            return self.page + 1 if len(items) >= self.limit else None
        current = pagination.current_page
        if pagination.total is not None and self.seen_items >= pagination.total:
            return None
        if (
            pagination.page_count is not None
            and current is not None
            and current >= pagination.page_count
        ):
            return None
        nxt = pagination.next_page
        if nxt is not None:
            # A nextPage that does not move forward is the start of a loop, not a page.
            if nxt < 0 or (current is not None and nxt <= current):
                return None
            return nxt
        if pagination.prev_page is not None:
            # The server sends navigation fields, and nextPage is null or absent: the end.
            return None
        if current is not None and current >= 0:
            # No navigation fields at all: the page after the one the server says it served.
            return current + 1
        return self.page + 1 if len(items) >= self.limit else None


def _item_id(item: Any) -> Any:
    if isinstance(item, dict):
        value = item.get("id")
        return value if isinstance(value, (str, int)) else None
    return None
