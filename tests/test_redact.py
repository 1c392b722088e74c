"""Secret masking, and the error tree whose text goes through it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from icr_async._redact import mask_token, redact_headers, redact_text
from icr_async.errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    ClientClosedError,
    ConfigurationError,
    ConflictError,
    DuplicateActionError,
    ICRError,
    InvalidArgumentError,
    NotFoundError,
    PaginationError,
    PermissionDeniedError,
    RateLimitedError,
    RequestTimeoutError,
    ResponseDecodeError,
    ServerError,
    TokenError,
    TransportError,
    UnprocessableEntityError,
    UnsupportedAPIVersionError,
    error_class_for_status,
)

TOKEN = "crs_" + "0f1e2d3c4b5a6978" * 3  # crs_ + 48 hex
JWT = (
    "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9"
    ".eyJpc3MiOiI2Nzg5MCIsImlhdCI6MTcwMDAwMDAwMCwiZXhwIjoxNzAwMDAwNjAwfQ"
    ".c2lnbmF0dXJlLWJ5dGVzLWhlcmUtbG9uZy1lbm91Z2g"
)
PEM = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----"


# --- mask_token ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "masked"),
    [
        (TOKEN, "crs_…6978"),
        ("crs_abcdef0123456789c5b", "crs_…9c5b"),
        ("opaque-token-value-1234", "…1234"),
        ("crs_short", "crs_…"),
        ("short", "…"),
        ("", "<empty>"),
    ],
)
def test_mask_token(token: str, masked: str) -> None:
    assert mask_token(token) == masked


@given(st.text(min_size=1))
def test_mask_token_never_shows_more_than_prefix_and_four(token: str) -> None:
    masked = mask_token(token)
    assert len(masked) <= len("crs_…") + 4
    if len(token) > 12:
        assert masked.endswith(token[-4:])


# --- redact_text -----------------------------------------------------------------------------


def test_redact_token_jwt_bearer_pem() -> None:
    text = f"token {TOKEN} jwt {JWT} key {PEM} done"
    out = redact_text(text)
    assert TOKEN not in out
    assert "crs_…6978" in out
    assert JWT not in out
    assert "<jwt redacted>" in out
    assert "MIIEvQ" not in out
    assert "<private key redacted>" in out
    assert out.startswith("token ")
    assert out.endswith(" done")


def test_redact_bearer_of_any_shape() -> None:
    assert redact_text("Authorization: Bearer abc.def") == "Authorization: Bearer <redacted>"
    assert redact_text("bearer   xyz") == "bearer   <redacted>"
    assert "opaque123" not in redact_text("sent BEARER opaque123 to server")


def test_redact_truncated_pem_to_the_end() -> None:
    out = redact_text("oops -----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA")
    assert "MIIEpA" not in out
    assert out == "oops <private key redacted>"


def test_redact_leaves_ordinary_text_alone() -> None:
    for text in ("", "Installation not found", "crs_ is a prefix", "eyJ alone", "a.b.c"):
        assert redact_text(text) == text


def test_redact_headers() -> None:
    out = redact_headers(
        {
            "Authorization": f"Bearer {TOKEN}",
            "proxy-authorization": "Basic dXNlcjpwdw==",
            "Cookie": "session=abc",
            "X-Debug": f"echo {TOKEN}",
            "Accept": "application/json",
        }
    )
    assert out == {
        "Authorization": "Bearer <redacted>",
        "proxy-authorization": "Basic <redacted>",
        "Cookie": "<redacted>",
        "X-Debug": "echo crs_…6978",
        "Accept": "application/json",
    }


@given(
    st.text(alphabet="0123456789abcdef", min_size=8, max_size=64),
    st.text(max_size=30),
    st.text(max_size=30),
)
def test_redact_never_lets_a_token_through(hexpart: str, before: str, after: str) -> None:
    token = "crs_" + hexpart
    out = redact_text(f"{before} {token} {after}")
    assert token not in out


# --- errors ----------------------------------------------------------------------------------


def test_tree() -> None:
    for cls in (
        ConfigurationError,
        InvalidArgumentError,
        ClientClosedError,
        TransportError,
        ResponseDecodeError,
        PaginationError,
        TokenError,
        DuplicateActionError,
        APIError,
    ):
        assert issubclass(cls, ICRError)
    assert issubclass(RequestTimeoutError, TransportError)
    assert issubclass(RequestTimeoutError, TimeoutError)
    assert issubclass(ConfigurationError, ValueError)
    assert issubclass(InvalidArgumentError, ValueError)
    assert issubclass(ClientClosedError, RuntimeError)
    assert issubclass(UnsupportedAPIVersionError, BadRequestError)
    for cls in (
        BadRequestError,
        AuthenticationError,
        PermissionDeniedError,
        NotFoundError,
        ConflictError,
        UnprocessableEntityError,
        RateLimitedError,
        ServerError,
    ):
        assert issubclass(cls, APIError)


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (403, PermissionDeniedError),
        (404, NotFoundError),
        (409, ConflictError),
        (422, UnprocessableEntityError),
        (429, RateLimitedError),
        (500, ServerError),
        (501, ServerError),
        (502, ServerError),
        (504, ServerError),
        (599, ServerError),
        (405, APIError),
        (410, APIError),
        (451, APIError),
    ],
)
def test_error_class_for_status(status: int, cls: type[APIError]) -> None:
    assert error_class_for_status(status) is cls


def test_api_error_message_carries_everything() -> None:
    err = NotFoundError(
        status=404,
        method="GET",
        path="/app/installations/abc",
        server_message="Installation abc not found",
        messages=("Installation abc not found",),
        error="Not Found",
        request_id="req-123",
        body={"statusCode": 404},
        headers={"X-Request-Id": "req-123"},
    )
    assert (
        str(err)
        == "404 Not Found on GET /app/installations/abc: Installation abc not found [request id req-123]"
    )
    assert err.message == str(err)
    assert err.status == 404
    assert err.headers == {"X-Request-Id": "req-123"}
    assert err.body == {"statusCode": 404}


def test_api_error_reason_fallbacks() -> None:
    assert (
        str(ServerError(status=503, method="POST", path="/p"))
        == "503 Service Unavailable on POST /p"
    )
    assert str(APIError(status=418, method="GET", path="/tea")) == "418 Error on GET /tea"


def test_api_error_redacts_secrets_in_the_server_message() -> None:
    err = AuthenticationError(
        status=401,
        method="DELETE",
        path="/app/installations/token",
        server_message=f"token {TOKEN} revoked; jwt {JWT} expired",
        messages=(f"token {TOKEN} revoked", f"jwt {JWT} expired"),
    )
    for text in (str(err), err.server_message, repr(err), *err.messages, *map(str, err.args)):
        assert TOKEN not in text
        assert JWT not in text
    assert "crs_…6978" in str(err)
    assert "<jwt redacted>" in err.messages[1]


def test_plain_error_messages_are_redacted_too() -> None:
    for err in (
        ICRError(f"bad {TOKEN}"),
        TokenError(f"jwt {JWT}"),
        TransportError(f"reset while sending Bearer {TOKEN}", method="GET", path="/x"),
        ResponseDecodeError(f"got {JWT}", status=200, method="GET", path="/x"),
        ConfigurationError(f"key {PEM}"),
    ):
        text = str(err)
        assert TOKEN not in text
        assert JWT not in text
        assert "MIIEvQ" not in text


def test_rate_limited_retry_after() -> None:
    err = RateLimitedError(retry_after=2.5, status=429, method="GET", path="/p")
    assert err.retry_after == 2.5
    assert "429 Too Many Requests on GET /p" in str(err)
    assert RateLimitedError(status=429, method="GET", path="/p").retry_after is None


def test_transport_and_decode_errors_say_where() -> None:
    err = RequestTimeoutError("read timeout after 30 s", method="GET", path="/app/installations")
    assert str(err) == "read timeout after 30 s (GET /app/installations)"
    assert err.retryable is True
    assert str(TransportError("refused")) == "refused"
    dec = ResponseDecodeError("not JSON", status=200, method="POST", path="/a", field="id")
    assert (dec.status, dec.method, dec.path, dec.field) == (200, "POST", "/a", "id")
    assert str(dec) == "not JSON (POST /a)"


def test_duplicate_action_key() -> None:
    err = DuplicateActionError("already sent", key="idem-1")
    assert err.key == "idem-1"
    assert str(err) == "already sent"


def test_api_error_attributes_are_redacted_too() -> None:
    """Error trackers (Sentry and the like) record exception attributes, not only the text."""
    token = "crs_" + "9f" * 24
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJhcHAifQ.c2lnbmF0dXJl"
    from icr_async._sansio import error_from_response

    body = (
        '{"statusCode": 401, "message": "bad token ' + token + '", "error": "Unauthorized",'
        ' "echo": {"token": "' + token + '", "accessToken": "opaque-secret", "headers":'
        ' ["Bearer ' + jwt + '"]}}'
    ).encode()
    error = error_from_response(
        401,
        {"Authorization": "Bearer " + token, "x-echo": jwt, "x-icr-request-id": "req-7"},
        body,
        method="GET",
        path="/organizations/o",
        now=0.0,
    )
    everything = repr(error.body) + repr(error.headers) + str(error) + repr(error.messages)
    assert token not in everything
    assert jwt not in everything
    assert "opaque-secret" not in everything
    assert error.body["echo"]["token"] == mask_token(token)
    assert error.headers["Authorization"] == "Bearer <redacted>"
    assert error.request_id == "req-7"


def test_redact_value_keeps_the_shape() -> None:
    from icr_async._redact import redact_value

    data = {"a": [1, 2.5, None, True, {"jwt": "x" * 40}], "b": "plain"}
    assert redact_value(data) == {"a": [1, 2.5, None, True, {"jwt": "<redacted>"}], "b": "plain"}
