"""The pure request/response core: ids in paths, error bodies, JSON, pagination. No loop."""

from __future__ import annotations

import contextlib
import json
import os
import string
import subprocess
import sys
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from icr_async._sansio import (
    MAX_PAGE_LIMIT,
    PageTracker,
    check_page_args,
    decode_json,
    error_from_response,
    json_loader,
    parse_error_body,
    path_param,
    read_pagination,
    request_id,
)
from icr_async.errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    ICRError,
    InvalidArgumentError,
    NotFoundError,
    PaginationError,
    PermissionDeniedError,
    RateLimitedError,
    ResponseDecodeError,
    ServerError,
    UnsupportedAPIVersionError,
)
from icr_async.models import Pagination

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=25,
)
# Keys the pagination reader and models look at, so random objects hit the interesting paths.
interesting_keys = st.sampled_from(
    [
        "pagination",
        "installations",
        "total",
        "currentPage",
        "pageCount",
        "nextPage",
        "prevPage",
        "id",
    ]
)
json_objects = st.dictionaries(interesting_keys | st.text(max_size=8), json_values, max_size=6)


# --- path_param ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0b0c8e3c-1d2f-4a57-9a43-5d1c6c2f3e9b", "0b0c8e3c-1d2f-4a57-9a43-5d1c6c2f3e9b"),
        ("abc_DEF-123", "abc_DEF-123"),
        (67890, "67890"),
        (0, "0"),
        ("x" * 128, "x" * 128),
    ],
)
def test_path_param_accepts_ids(value: object, expected: str) -> None:
    assert path_param(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        "../token",
        "..",
        ".",
        "a/b",
        "/",
        "%2F",
        "%2e%2e",
        "a b",
        "a\tb",
        "abc\n",  # a trailing newline must not slip past a '$' anchor
        "\nabc",
        "abc\r\n",
        "caf\u00e9",
        "\u0661\u0662",  # Arabic-Indic digits: str.isdigit() says yes, the id rule says no
        "a?b",
        "a#b",
        "a;b",
        "x" * 129,
        -1,
        True,
        False,
        1.5,
        None,
        b"abc",
        ["a"],
    ],
)
def test_path_param_refuses_everything_else(value: object) -> None:
    with pytest.raises(InvalidArgumentError):
        path_param(value)


def test_path_param_error_is_also_a_value_error_and_names_the_argument() -> None:
    with pytest.raises(ValueError, match="organization_id") as info:
        path_param("../x", "organization_id")
    assert isinstance(info.value, ICRError)
    assert "'../x'" in str(info.value)


def test_path_param_shortens_a_huge_bad_id_in_the_message() -> None:
    with pytest.raises(InvalidArgumentError) as info:
        path_param("/" * 5000)
    assert len(str(info.value)) < 300


@given(st.one_of(st.text(), st.integers(), st.text(alphabet=string.printable)))
def test_path_param_never_returns_anything_that_could_change_the_path(value: object) -> None:
    try:
        out = path_param(value)
    except InvalidArgumentError:
        return
    assert "/" not in out
    assert ".." not in out
    assert "?" not in out
    assert "#" not in out
    # Any '%' must start a valid escape, and decoding gives back exactly the id.
    i = out.find("%")
    while i != -1:
        assert all(c in string.hexdigits for c in out[i + 1 : i + 3])
        i = out.find("%", i + 1)
    assert unquote(out) == str(value)
    assert set(unquote(out)) <= set(string.ascii_letters + string.digits + "-_")
    assert out.isascii()
    assert all(not c.isspace() for c in out)


# --- check_page_args -------------------------------------------------------------------------


def test_check_page_args_bounds() -> None:
    assert check_page_args(1, 0) == (1, 0)
    assert check_page_args(MAX_PAGE_LIMIT, 7) == (MAX_PAGE_LIMIT, 7)


@pytest.mark.parametrize(
    ("limit", "page", "match"),
    [
        (0, 0, "limit must be between"),
        (MAX_PAGE_LIMIT + 1, 0, "limit must be between"),
        (-5, 0, "limit"),
        (10, -1, "page must be >= 0"),
        (True, 0, "limit must be an integer"),
        (10, False, "page must be an integer"),
        (10.0, 0, "limit must be an integer"),
        ("10", 0, "limit must be an integer"),
        (10, None, "page must be an integer"),
    ],
)
def test_check_page_args_refuses(limit: object, page: object, match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        check_page_args(limit, page)


# --- request_id ------------------------------------------------------------------------------


def test_request_id_first_header_wins_and_is_case_insensitive() -> None:
    headers = CIMultiDict({"X-Correlation-Id": "corr", "X-Request-Id": "req-1"})
    assert request_id(headers) == "req-1"
    assert request_id(CIMultiDict({"X-Amzn-RequestId": "amz"})) == "amz"
    assert request_id({}) is None
    assert request_id({"x-request-id": ""}) is None


def test_request_id_is_capped() -> None:
    assert request_id({"x-request-id": "r" * 1000}) == "r" * 200


# --- parse_error_body ------------------------------------------------------------------------


def test_parse_error_body_nest_string_message() -> None:
    body = b'{"statusCode": 403, "message": "Missing permission", "error": "Forbidden"}'
    message, messages, label, data = parse_error_body(body)
    assert message == "Missing permission"
    assert messages == ("Missing permission",)
    assert label == "Forbidden"
    assert data == {"statusCode": 403, "message": "Missing permission", "error": "Forbidden"}


def test_parse_error_body_list_message_is_joined() -> None:
    body = json.dumps(
        {"statusCode": 400, "message": ["limit must be a number", "page must be >= 0"]}
    ).encode()
    message, messages, label, _ = parse_error_body(body)
    assert messages == ("limit must be a number", "page must be >= 0")
    assert message == "limit must be a number; page must be >= 0"
    assert label is None


def test_parse_error_body_falls_back_to_error_label() -> None:
    message, messages, label, _ = parse_error_body(b'{"statusCode": 401, "error": "Unauthorized"}')
    assert (message, messages, label) == ("Unauthorized", ("Unauthorized",), "Unauthorized")


def test_parse_error_body_non_json_gives_collapsed_raw_text() -> None:
    html = b"<html>\n  <body>502   Bad\tGateway</body>\n</html>\n"
    message, messages, label, data = parse_error_body(html)
    assert message == "<html> <body>502 Bad Gateway</body> </html>"
    assert messages == (message,)
    assert label is None
    assert data is None


def test_parse_error_body_empty_and_long_and_invalid_utf8() -> None:
    assert parse_error_body(b"") == ("", (), None, None)
    assert parse_error_body(b"   \n") == ("", (), None, None)
    message, _, _, _ = parse_error_body(b"x" * 10_000)
    assert len(message) == 300
    message, _, _, _ = parse_error_body(b"bad \xff\xfe bytes")
    assert message.startswith("bad ")


def test_parse_error_body_json_that_is_not_an_object() -> None:
    message, messages, label, data = parse_error_body(b'["a", "b"]')
    assert data == ["a", "b"]
    assert message == '["a", "b"]'
    assert label is None
    assert messages == (message,)


def test_parse_error_body_survives_absurd_nesting() -> None:
    body = b"[" * 100_000 + b"]" * 100_000
    message, _, _, data = parse_error_body(body)
    assert data is None
    assert message.startswith("[[[")


@given(st.binary(max_size=200))
def test_parse_error_body_never_raises_on_bytes(body: bytes) -> None:
    message, messages, label, _ = parse_error_body(body)
    assert isinstance(message, str)
    assert all(isinstance(m, str) for m in messages)
    assert label is None or isinstance(label, str)


@given(json_values)
def test_parse_error_body_never_raises_on_json(value: Any) -> None:
    message, messages, _, _ = parse_error_body(json.dumps(value).encode())
    assert isinstance(message, str)
    assert isinstance(messages, tuple)


# --- error_from_response ---------------------------------------------------------------------


def _error(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> APIError:
    return error_from_response(
        status,
        CIMultiDict(headers or {}),
        body,
        method="GET",
        path="/app/installations/42",
        now=1_700_000_000.0,
    )


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (403, PermissionDeniedError),
        (404, NotFoundError),
        (418, APIError),
        (500, ServerError),
        (503, ServerError),
        (599, ServerError),
    ],
)
def test_error_from_response_class(status: int, cls: type[APIError]) -> None:
    err = _error(status, b'{"message": "nope"}')
    assert type(err) is cls
    assert err.status == status


def test_error_from_response_carries_everything() -> None:
    err = _error(
        404,
        b'{"statusCode": 404, "message": "Installation not found", "error": "Not Found"}',
        {"X-Request-Id": "req-abc"},
    )
    assert isinstance(err, NotFoundError)
    assert err.method == "GET"
    assert err.path == "/app/installations/42"
    assert err.server_message == "Installation not found"
    assert err.error == "Not Found"
    assert err.request_id == "req-abc"
    assert err.body == {
        "statusCode": 404,
        "message": "Installation not found",
        "error": "Not Found",
    }
    text = str(err)
    for part in ("404", "GET", "/app/installations/42", "Installation not found", "req-abc"):
        assert part in text


def test_error_from_response_429_reads_retry_after() -> None:
    err = _error(429, b"", {"Retry-After": "7"})
    assert isinstance(err, RateLimitedError)
    assert err.retry_after == 7.0
    err = _error(429, b"", {"Retry-After": "Tue, 14 Nov 2023 22:13:50 GMT"})  # now + 30 s
    assert isinstance(err, RateLimitedError)
    assert err.retry_after == pytest.approx(30.0)
    err = _error(429)
    assert isinstance(err, RateLimitedError)
    assert err.retry_after is None


def test_error_from_response_unsupported_api_version() -> None:
    err = _error(400, b'{"statusCode": 400, "message": "Unsupported API version: 1999-01-01"}')
    assert isinstance(err, UnsupportedAPIVersionError)
    assert isinstance(err, BadRequestError)
    other = _error(400, b'{"statusCode": 400, "message": "limit must be a number"}')
    assert type(other) is BadRequestError


def test_error_from_response_redacts_a_token_echoed_by_the_server() -> None:
    token = "crs_" + "0123456789abcdef" * 3
    err = _error(401, json.dumps({"message": f"token {token} is revoked"}).encode())
    assert token not in str(err)
    assert token not in err.server_message
    assert "crs_…cdef" in str(err)


@given(st.integers(min_value=400, max_value=599), st.binary(max_size=100))
def test_error_from_response_always_gives_an_api_error(status: int, body: bytes) -> None:
    err = _error(status, body, {"Retry-After": "soon"})
    assert isinstance(err, APIError)
    assert err.status == status


# --- decode_json -----------------------------------------------------------------------------


def test_decode_json_parses_and_ignores_content_type() -> None:
    assert decode_json(
        200, {"Content-Type": "text/plain"}, b'{"a": 1}', method="GET", path="/p"
    ) == {"a": 1}
    assert decode_json(200, {}, b"true", method="DELETE", path="/p") is True
    assert decode_json(204, {}, b"", method="DELETE", path="/p") is None


@pytest.mark.parametrize(
    "body",
    [b"<html>oops</html>", b"{", b"\xff\xfe\x00", b"[" * 100_000 + b"]" * 100_000],
)
def test_decode_json_raises_decode_error(body: bytes) -> None:
    with pytest.raises(ResponseDecodeError) as info:
        decode_json(200, {"Content-Type": "text/html"}, body, method="GET", path="/app/x")
    err = info.value
    assert err.status == 200
    assert err.method == "GET"
    assert err.path == "/app/x"
    assert "text/html" in str(err)
    assert f"{len(body)} bytes" in str(err)
    assert err.__cause__ is not None


@given(st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
def test_decode_json_only_raises_decode_errors(body: bytes) -> None:
    # Anything but ResponseDecodeError propagates and fails the test.
    with contextlib.suppress(ResponseDecodeError):
        decode_json(200, {}, body, method="GET", path="/p")


# --- read_pagination -------------------------------------------------------------------------


def test_read_pagination_reads_items_and_block() -> None:
    data = {
        "pagination": {"total": 3, "currentPage": 1, "pageCount": 1, "nextPage": None},
        "installations": [{"id": "a"}],
    }
    items, pagination = read_pagination(data, "installations", method="GET", path="/p")
    assert items == [{"id": "a"}]
    assert pagination == Pagination(total=3, current_page=1, page_count=1, next_page=None)


def test_read_pagination_bare_list_and_differently_named_key() -> None:
    assert read_pagination([1, 2], "installations", method="GET", path="/p") == ([1, 2], None)
    items, pagination = read_pagination(
        {"items": [1], "pagination": {"total": 1}}, "installations", method="GET", path="/p"
    )
    assert items == [1]
    assert pagination is not None
    assert pagination.total == 1


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"a": [1], "b": [2]}, "installations"),
        ({"pagination": {}}, "installations"),
        ({"installations": {"not": "a list"}}, "installations"),
        ("text", None),
        (None, None),
        (5, None),
    ],
)
def test_read_pagination_refuses(data: Any, field: str | None) -> None:
    with pytest.raises(ResponseDecodeError) as info:
        read_pagination(data, "installations", method="GET", path="/app/installations")
    assert info.value.field == field
    assert "/app/installations" in str(info.value)


def test_read_pagination_bad_block_is_a_decode_error() -> None:
    with pytest.raises(ResponseDecodeError) as info:
        read_pagination(
            {"installations": [], "pagination": {"total": "many"}},
            "installations",
            method="GET",
            path="/p",
        )
    assert info.value.field == "total"


def test_read_pagination_ignores_a_non_object_block() -> None:
    assert read_pagination(
        {"installations": [], "pagination": "n/a"}, "installations", method="GET", path="/p"
    ) == ([], None)


@given(json_values | json_objects)
def test_read_pagination_only_raises_decode_errors(data: Any) -> None:
    try:
        items, pagination = read_pagination(data, "installations", method="GET", path="/p")
    except ResponseDecodeError:  # anything else propagates and fails the test
        return
    assert isinstance(items, list)
    assert pagination is None or isinstance(pagination, Pagination)


# --- PageTracker -----------------------------------------------------------------------------


def _items(start: int, n: int) -> list[Any]:
    return [{"id": f"i{k}"} for k in range(start, start + n)]


def test_tracker_stops_on_empty_page() -> None:
    tracker = PageTracker(limit=10)
    assert tracker.advance([], Pagination(next_page=1, current_page=0)) is False
    assert tracker.page == 0
    assert tracker.pages_seen == 1


def test_tracker_follows_next_page_until_null() -> None:
    tracker = PageTracker(limit=2)
    assert tracker.advance(_items(0, 2), Pagination(current_page=0, next_page=1)) is True
    assert tracker.page == 1
    assert tracker.advance(_items(2, 2), Pagination(current_page=1, next_page=2)) is True
    assert tracker.page == 2
    assert (
        tracker.advance(_items(4, 1), Pagination(current_page=2, next_page=None, prev_page=1))
        is False
    )
    assert tracker.page == 2
    assert tracker.seen_items == 5


def test_tracker_asks_for_the_page_the_server_names() -> None:
    """A 1-based server serves its first page for page=0 and names page 2 next: asking for
    page 1 (our own counter) would get the first page again."""
    tracker = PageTracker(limit=7)
    assert tracker.advance(_items(0, 7), Pagination(current_page=1, next_page=2)) is True
    assert tracker.page == 2
    assert tracker.advance(_items(7, 7), Pagination(current_page=2, next_page=3)) is True
    assert tracker.page == 3


def test_tracker_without_navigation_fields_asks_for_current_page_plus_one() -> None:
    tracker = PageTracker(limit=2)
    assert tracker.advance(_items(0, 2), Pagination(current_page=1, page_count=3)) is True
    assert tracker.page == 2
    assert tracker.advance(_items(2, 2), Pagination(current_page=2, page_count=3)) is True
    assert tracker.page == 3
    assert tracker.advance(_items(4, 1), Pagination(current_page=3, page_count=3)) is False


def test_tracker_refuses_a_next_page_already_fetched() -> None:
    tracker = PageTracker(limit=2)
    assert tracker.advance(_items(0, 2), Pagination(next_page=1)) is True
    with pytest.raises(PaginationError, match="page 0 as the next one"):
        tracker.advance(_items(2, 2), Pagination(next_page=0))
    tracker = PageTracker(limit=2)
    assert tracker.advance(_items(0, 2), Pagination(next_page=3)) is True
    assert tracker.advance(_items(2, 2), Pagination(next_page=5)) is True
    with pytest.raises(PaginationError, match="already fetched"):
        tracker.advance(_items(4, 2), Pagination(next_page=3))


def test_tracker_stops_on_a_negative_next_page() -> None:
    tracker = PageTracker(limit=2)
    assert tracker.advance(_items(0, 2), Pagination(next_page=-1)) is False


def test_tracker_stops_when_current_page_reaches_page_count() -> None:
    tracker = PageTracker(limit=2)
    assert (
        tracker.advance(_items(0, 2), Pagination(current_page=3, page_count=3, next_page=4))
        is False
    )


def test_tracker_stops_when_total_seen() -> None:
    tracker = PageTracker(limit=2)
    assert tracker.advance(_items(0, 2), Pagination(total=3, next_page=1)) is True
    assert tracker.advance(_items(2, 2), Pagination(total=3, next_page=2)) is False


def test_tracker_stops_when_next_page_does_not_move_forward() -> None:
    tracker = PageTracker(limit=2)
    assert tracker.advance(_items(0, 2), Pagination(current_page=4, next_page=4)) is False
    tracker = PageTracker(limit=2)
    assert tracker.advance(_items(0, 2), Pagination(current_page=4, next_page=1)) is False


def test_tracker_without_pagination_uses_page_fullness() -> None:
    tracker = PageTracker(limit=3, start_page=5)
    assert tracker.advance(_items(0, 3), None) is True
    assert tracker.page == 6
    assert tracker.advance(_items(3, 2), None) is False


def test_tracker_refuses_a_repeated_page() -> None:
    tracker = PageTracker(limit=2)
    page = _items(0, 2)
    assert tracker.advance(page, Pagination(current_page=0, next_page=1)) is True
    with pytest.raises(PaginationError, match="same page again"):
        tracker.advance(list(page), Pagination(current_page=1, next_page=2))


def test_tracker_caps_pages_but_not_a_listing_that_ends_exactly_there() -> None:
    tracker = PageTracker(limit=1, max_pages=3)
    assert tracker.advance(_items(0, 1), None) is True
    assert tracker.advance(_items(1, 1), None) is True
    # The third page is the last one: ending exactly at max_pages is not an error.
    assert tracker.advance(_items(2, 1), Pagination(next_page=None, prev_page=1)) is False

    tracker = PageTracker(limit=1, max_pages=3)
    tracker.advance(_items(0, 1), None)
    tracker.advance(_items(1, 1), None)
    with pytest.raises(PaginationError, match="more than 3 pages"):
        tracker.advance(_items(2, 1), None)


def test_tracker_idless_items_are_bounded_by_max_pages() -> None:
    tracker = PageTracker(limit=1, max_pages=50)
    with pytest.raises(PaginationError):  # noqa: PT012 - the loop is the subject
        for _ in range(51):
            assert tracker.advance(["same"], None)
    assert tracker.pages_seen == 50


pagination_st = st.none() | st.builds(
    Pagination,
    total=st.none() | st.integers(0, 50),
    current_page=st.none() | st.integers(-2, 20),
    page_count=st.none() | st.integers(0, 20),
    next_page=st.none() | st.integers(-2, 22),
    prev_page=st.none() | st.integers(-2, 20),
)
item_st = st.one_of(
    st.fixed_dictionaries({"id": st.integers(0, 5) | st.text(max_size=2)}),
    st.integers(),
    st.none(),
)
page_st = st.tuples(st.lists(item_st, max_size=4), pagination_st)


@settings(max_examples=200)
@given(
    st.integers(1, 4),
    st.integers(1, 30),
    st.lists(page_st, min_size=1, max_size=10),
)
def test_tracker_always_terminates_within_max_pages(
    limit: int, max_pages: int, pages: list[tuple[list[Any], Pagination | None]]
) -> None:
    """Replaying any page sequence forever ends (stop or PaginationError) within max_pages."""

    def forever() -> Iterator[tuple[list[Any], Pagination | None]]:
        while True:
            yield from pages

    tracker = PageTracker(limit=limit, max_pages=max_pages)
    asked = {tracker.page}
    for calls, (items, pagination) in enumerate(forever(), start=1):
        assert calls <= max_pages
        try:
            more = tracker.advance(items, pagination)
        except PaginationError:
            break
        if not more:
            break
        # Never the same page twice: a page asked for again is how a listing loops.
        assert tracker.page not in asked
        assert tracker.page >= 0
        asked.add(tracker.page)


# --- request ids and Retry-After on the server's clock ---------------------------------------


def test_icr_request_id_header_comes_first() -> None:
    headers = CIMultiDict({"X-Request-Id": "generic", "X-ICR-Request-Id": "icr-1"})
    assert request_id(headers) == "icr-1"
    assert request_id(CIMultiDict({"x-request-id": "generic"})) == "generic"


@pytest.mark.parametrize("server_offset", [-420.0, 0.0, 420.0])
def test_retry_after_http_date_is_measured_on_the_servers_clock(server_offset: float) -> None:
    """A server 7 minutes behind or ahead still gets waited for exactly what it asked."""
    import email.utils

    from icr_async._sansio import error_from_response, retry_after

    local_now = 1_780_000_000.0
    server_now = local_now + server_offset
    headers = {
        "Date": email.utils.formatdate(server_now, usegmt=True),
        "Retry-After": email.utils.formatdate(server_now + 30, usegmt=True),
    }
    assert retry_after(headers, local_now) == pytest.approx(30)
    error = error_from_response(429, headers, b"", method="GET", path="/x", now=local_now)
    assert error.retry_after == pytest.approx(30)
    # Without a Date header the caller's estimate of server time is used.
    no_date = {"Retry-After": headers["Retry-After"]}
    assert retry_after(no_date, server_now) == pytest.approx(30)
    assert retry_after({"Retry-After": "12"}, 0.0) == 12.0
    assert retry_after({}, 0.0) is None


def test_a_redirect_becomes_a_redirect_error_naming_the_location() -> None:
    from icr_async.errors import RedirectError

    error = error_from_response(
        307, {"Location": "https://elsewhere.example/x"}, b"", method="POST", path="/p", now=0.0
    )
    assert isinstance(error, RedirectError)
    assert error.location == "https://elsewhere.example/x"
    assert "elsewhere.example" in str(error)


# -- the JSON parser: orjson (speedups) and the standard library read answers alike --------

_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(_JSON)
def test_both_parsers_read_every_answer_alike(value: Any) -> None:
    pytest.importorskip("orjson")
    body = json.dumps(value).encode()
    assert json_loader(True)(body) == json_loader(False)(body) == json.loads(body)


def _outcome(loads: Any, body: bytes) -> str:
    try:
        return "value " + repr(loads(body))
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError alike
        return f"{type(exc).__name__}: {exc}"


@given(
    _JSON,
    st.sampled_from(["", " ", "\n", "\t ", "\ufeff"]),
    st.sampled_from(["", " ", "\r\n", "x", ",", "{}", "\x00"]),
    st.sampled_from(["utf-8", "utf-16", "utf-8-sig"]),
)
def test_the_standard_library_reader_is_json_loads(
    value: Any, before: str, after: str, encoding: str
) -> None:
    # The plain reader scans a body that is one JSON value directly; anything around it
    # (whitespace, a BOM, trailing data, another encoding) must read, or fail, exactly as
    # json.loads reads or fails.
    body = (before + json.dumps(value) + after).encode(encoding)
    assert _outcome(json_loader(False), body) == _outcome(json.loads, body)


@pytest.mark.parametrize(
    "body", [b"", b" ", b"{", b'{"a": ', b"[1,]", b"nul", b'"\\x"', b"\xff", b"01"]
)
def test_the_standard_library_reader_refuses_what_json_loads_refuses(body: bytes) -> None:
    plain = _outcome(json_loader(False), body)
    assert plain == _outcome(json.loads, body)
    assert not plain.startswith("value ")


@pytest.mark.parametrize(
    "number",
    [2**63 - 1, 2**63, 2**64 - 1, 2**64, 10**19, -(2**63), -(2**63) - 1, -(10**19) + 1, -(2**64)],
)
def test_integers_at_the_64_bit_edges_stay_exact_integers(number: int) -> None:
    # orjson reads -2**63 - 1 (19 digits) as a float; the body must go to json instead.
    pytest.importorskip("orjson")
    body = f'{{"amount": {number}, "items": [{number}]}}'.encode()
    decoded = json_loader(True)(body)
    assert decoded == {"amount": number, "items": [number]}
    assert type(decoded["amount"]) is int
    assert type(decoded["items"][0]) is int


def test_what_orjson_refuses_is_still_read_and_garbage_still_refused() -> None:
    pytest.importorskip("orjson")
    fast, plain = json_loader(True), json_loader(False)
    assert fast is not plain
    for body in (b"NaN", b'{"amount": 123456789012345678901234567890}', b"[Infinity]"):
        assert repr(fast(body)) == repr(plain(body))
    assert plain(b'\xef\xbb\xbf{"a": 1}') == {"a": 1}  # a UTF-8 BOM, as json.loads reads it
    assert plain('{"a": "é"}'.encode("utf-16")) == {"a": "é"}
    for garbage in (b"<html>", b'{"a": ', b"\xff"):
        with pytest.raises(ValueError, match=r"\w"):
            fast(garbage)
        with pytest.raises(ValueError, match=r"\w"):
            plain(garbage)


@pytest.mark.parametrize(("env", "expect_orjson"), [("", True), ("1", False)])
def test_the_parser_is_chosen_once_and_can_be_turned_off(env: str, expect_orjson: bool) -> None:
    pytest.importorskip("orjson")
    code = "from icr_async import _sansio; print(_sansio.loads_json is _sansio._plain_loads)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "ICR_ASYNC_NO_ORJSON": env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()
    assert out == str(not expect_orjson)
