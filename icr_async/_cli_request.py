"""``icr-async request METHOD PATH``: any endpoint, with the right credential.

The answer is printed as JSON when it is JSON; otherwise its bytes go out unchanged (to
``--output FILE``, or to stdout when stdout is a file or a pipe), so a retirement
certificate arrives as the PDF the server sent. ``--include`` shows the status line and the
headers first, credentials masked; ``--paginate`` follows the server's pages with the SDK's
own :class:`~icr_async._sansio.PageTracker`, as ``gh api --paginate`` does.
"""

from __future__ import annotations

import argparse
import http
import json
import sys
from collections.abc import Mapping, Sequence
from typing import IO, Any

from ._cli_common import (
    EXIT_OK,
    UsageError,
    _print_json,
    _print_line,
    _run_with_client,
    atomic_output,
    write_stdout_bytes,
)
from ._redact import redact_headers
from ._request import RequestOptions
from ._sansio import PageTracker, check_page_args, decode_json, read_pagination
from ._scoped import Caller
from ._transport import Response
from .client import AsyncICRClient
from .errors import InvalidArgumentError

__all__ = ["DEFAULT_PAGE_LIMIT", "cmd_request", "is_binary"]

DEFAULT_PAGE_LIMIT = 100
"""``limit`` for ``--paginate`` unless ``--param limit=N`` says otherwise (as the SDK's
iterators use)."""

_NO_DATA = object()  # --data not given: send no body at all (not even "null")

# Media types that are text even though they are not text/*.
_TEXT_TYPES = frozenset(
    {
        "application/json",
        "application/xml",
        "application/javascript",
        "application/x-www-form-urlencoded",
        "application/problem+json",
    }
)


# -- reading the command line -----------------------------------------------------------


def _read_data(spec: str) -> Any:
    """The JSON body ``--data`` names: the text itself, ``@FILE``, or ``-`` for stdin."""
    if spec == "-":
        text, source = sys.stdin.read(), "stdin"
    elif spec.startswith("@"):
        source = spec[1:]
        try:
            with open(source, encoding="utf-8") as handle:
                text = handle.read()
        except OSError as exc:
            raise UsageError(
                f"cannot read --data file {source}: {exc.strerror}", "check the path after '@'"
            ) from None
    else:
        text, source = spec, "--data"
    try:
        return json.loads(text)
    except ValueError as exc:
        raise UsageError(
            f"{source} is not valid JSON: {exc}",
            "--data takes JSON text, @FILE, or - for stdin",
        ) from None


def _read_params(pairs: Sequence[str]) -> dict[str, str]:
    """The ``--param KEY=VALUE`` pairs as a query mapping (a later KEY wins)."""
    params: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--param {pair!r} is not KEY=VALUE", "e.g. --param limit=10")
        params[key] = value
    return params


def _page_args(params: dict[str, str]) -> tuple[int, int]:
    """``limit`` and the first ``page`` for ``--paginate`` (taken out of ``params``)."""
    try:
        limit = int(params.pop("limit", DEFAULT_PAGE_LIMIT))
        page = int(params.pop("page", 0))
    except ValueError:
        raise UsageError(
            "--paginate needs whole numbers in --param limit= and page=",
            "e.g. --param limit=50",
        ) from None
    try:
        return check_page_args(limit, page)
    except InvalidArgumentError as exc:
        raise UsageError(exc.message, "see 'icr-async request --help'") from None


# -- the answer -----------------------------------------------------------------------


def is_binary(content_type: str | None, body: bytes) -> bool:
    """Whether ``body`` would garble a terminal: a non-text media type, or bytes that are
    not UTF-8 text. The label decides first (a PDF can be mostly ASCII), the bytes second."""
    mime = (content_type or "").split(";", 1)[0].strip().lower()
    textual_label = (
        mime.startswith("text/") or mime in _TEXT_TYPES or mime.endswith(("+json", "+xml"))
    )
    if mime and not textual_label:
        return True
    if b"\x00" in body:
        return True
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def _write_head(resp: Response, out: IO[str]) -> None:
    """The status line and every header, as curl -i and gh api -i show them, credentials
    masked (a ``Set-Cookie`` or an echoed token is nobody's business in a terminal log)."""
    try:
        reason = http.HTTPStatus(resp.status).phrase
    except ValueError:
        reason = ""
    # aiohttp's client speaks HTTP/1.1 only, so the version is known.
    out.write(f"HTTP/1.1 {resp.status} {reason}".rstrip() + "\n")
    for name, value in resp.headers.items():
        # One pair at a time: a header sent twice (Set-Cookie) is shown twice.
        for shown_name, shown_value in redact_headers({name: value}).items():
            out.write(f"{shown_name}: {shown_value}\n")
    out.write("\n")
    out.flush()


def _emit(args: argparse.Namespace, resp: Response) -> None:
    """Print one answer: JSON pretty-printed, anything else as its raw bytes."""
    if args.output is not None:
        # The bytes as the server sent them, JSON or not, like curl --output.
        with atomic_output(args.output, binary=True) as out:
            out.write(resp.content)
        return
    try:
        data = json.loads(resp.content) if resp.content else None
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        pass
    else:
        if args.raw_output and isinstance(data, str):
            _print_line(data)
        else:
            _print_json(data)
        return
    content_type = resp.headers.get("Content-Type")
    if sys.stdout.isatty() and is_binary(content_type, resp.content):
        raise UsageError(
            f"the answer is binary ({content_type or 'no content type'}, {len(resp.content)} bytes) "
            "and stdout is a terminal; nothing printed",
            "pass --output FILE, or redirect stdout to a file",
        )
    write_stdout_bytes(resp.content)


# -- sending ------------------------------------------------------------------------------


async def _send(
    args: argparse.Namespace, client: AsyncICRClient, params: Mapping[str, Any] | None
) -> Response:
    """One request with the credential the path needs; a 2xx answer, undecoded.

    ``request_response`` gives the status, the headers and bytes that need not be JSON,
    through the pipeline every SDK call uses (auth recovery, retries of safe methods, typed
    errors).
    """
    caller: Caller
    if args.installation is not None:
        caller = client.installation(args.installation)
    elif args.path.startswith("/app/"):
        caller = client
    else:
        caller = client.app_token_client()
    options: RequestOptions = {"params": params or None}
    if args.body is not _NO_DATA:
        options["json"] = args.body
    return await caller.request_response(args.method, args.path, **options)


def _list_key(data: Any, path: str) -> str:
    """The key of the one list in a page (``installations``, ``creditRequests``, ...).

    Found in the first answer rather than asked for: like ``gh api --paginate``, the command
    works on any list endpoint without knowing its key.
    """
    if isinstance(data, list):
        return ""  # a bare list: read_pagination takes it whole
    lists = (
        [k for k, v in data.items() if isinstance(v, list) and k != "pagination"]
        if isinstance(data, dict)
        else []
    )
    if len(lists) != 1:
        found = f"{len(lists)} lists ({', '.join(lists)})" if lists else "no list"
        raise UsageError(
            f"cannot --paginate GET {path}: the answer holds {found}, not one list of items",
            "--paginate reads lists such as /app/installations; leave it out here",
        )
    key: str = lists[0]
    return key


async def _paginate(args: argparse.Namespace, client: AsyncICRClient) -> int:
    """Every page of a list, following ``nextPage`` with the SDK's PageTracker."""
    params = dict(args.params)
    limit, first = _page_args(params)
    tracker = PageTracker(limit=limit, start_page=first)
    collected: list[Any] = []
    key: str | None = None
    with atomic_output(args.output) as out:
        while True:
            resp = await _send(args, client, {**params, "limit": limit, "page": tracker.page})
            if args.include:
                _write_head(resp, sys.stdout)
            data = decode_json(
                resp.status, resp.headers, resp.content, method="GET", path=args.path
            )
            if key is None:
                key = _list_key(data, args.path)
            items, pagination = read_pagination(data, key, method="GET", path=args.path)
            more = tracker.advance(items, pagination)
            if args.lines:
                # Written as they come: `| head` or a failure on page 40 keeps what arrived.
                for item in items:
                    out.write(json.dumps(item, ensure_ascii=False, separators=(",", ":")) + "\n")
                out.flush()
            else:
                collected.extend(items)
            if not more:
                break
        if not args.lines:
            _print_json(collected, out)
    return EXIT_OK


async def _request(args: argparse.Namespace, client: AsyncICRClient) -> int:
    """Send the request (every page of it with ``--paginate``) and print the answer."""
    if args.paginate:
        return await _paginate(args, client)
    resp = await _send(args, client, args.params)
    if args.include:
        _write_head(resp, sys.stdout)
    _emit(args, resp)
    return EXIT_OK


def cmd_request(args: argparse.Namespace) -> int:
    """The ``request`` subcommand: check the input, then send with a client."""
    if args.paginate:
        method = args.method.upper()
        if method != "GET":
            raise UsageError(f"--paginate reads lists: it needs GET, not {method}")
        if args.data is not None:
            raise UsageError("--paginate sends no body", "leave out --data")
    elif args.lines:
        raise UsageError("--lines goes with --paginate", "add --paginate")
    # Read and check the body and parameters before any credential is touched.
    args.body = _NO_DATA if args.data is None else _read_data(args.data)
    args.params = _read_params(args.param)
    return _run_with_client(args, _request)
