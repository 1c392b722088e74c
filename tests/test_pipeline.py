"""The request pipeline's seams: ``build_request``, the ``Transport`` protocol, the
``request`` trio with its per-call options, and ``RetryPolicy.next_delay``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp
import pytest

from icr_async import (
    AiohttpTransport,
    AsyncICRClient,
    ConfigurationError,
    InvalidArgumentError,
    MemoryTokenCache,
    NotFoundError,
    RateLimitedError,
    Request,
    RequestTimeoutError,
    Response,
    ResponseDecodeError,
    RetryPolicy,
    ServerError,
    Timeouts,
    Transport,
    TransportError,
)
from icr_async._request import build_call, build_request
from icr_async.testing import Fault, ICREmulator

pytestmark = pytest.mark.anyio

BASE = "https://api.example"


# -- build_request: pure --------------------------------------------------------------------


def test_build_request_checks_encodes_and_freezes() -> None:
    req = build_request(
        "get",
        "/app/installations",
        base_url=BASE,
        params={"limit": 5, "page": None, "active": True},
    )
    assert (req.method, req.url) == ("GET", BASE + "/app/installations")
    assert req.query == {"limit": "5", "active": "true"}
    assert req.body is None
    assert (req.safe, req.may_retry, req.timeout) == (True, True, None)
    with pytest.raises(AttributeError):
        req.path = "/elsewhere"  # type: ignore[misc]  # the point: it must refuse
    post = build_request("POST", "/x", base_url=BASE, json={"amount": 1}, timeout=2)
    assert post.body == b'{"amount":1}'
    assert (post.safe, post.may_retry) == (False, False)
    assert post.timeout == 2.0
    assert "amount" not in repr(post)  # a body may hold personal data
    assert build_request("POST", "/x", base_url=BASE, retry=True).may_retry
    assert not build_request("GET", "/x", base_url=BASE, retry=False).may_retry
    assert build_request("POST", "/x", base_url=BASE, json=None).body == b"null"


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"method": "TRACE", "path": "/x"}, "method"),
        ({"method": "GET", "path": "x"}, "absolute"),
        ({"method": "GET", "path": "/a/../b"}, "segments"),
        ({"method": "GET", "path": "/a b"}, "characters"),
        ({"method": "POST", "path": "/x", "json": {1j}}, "JSON"),
        ({"method": "POST", "path": "/x", "json": float("nan")}, "JSON"),
        ({"method": "GET", "path": "/x", "timeout": 0}, "timeout"),
        ({"method": "GET", "path": "/x", "timeout": True}, "timeout"),
        ({"method": "GET", "path": "/x", "retry": "yes"}, "retry"),
        ({"method": "GET", "path": "/x", "params": [("a", 1)]}, "params"),
    ],
)
def test_build_request_refuses_bad_input_by_name(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InvalidArgumentError, match=fragment):
        build_request(base_url=BASE, **kwargs)


@pytest.mark.parametrize("method", ["get", "HEAD", "post", "DELETE"])
def test_a_call_without_options_is_the_request_build_request_makes(method: str) -> None:
    # ``request(method, path)`` takes a shortcut past the options; it must build the same.
    fields = ("method", "path", "url", "query", "body", "safe", "may_retry", "timeout")
    short = build_call(method, "/organizations/o-1", base_url=BASE, options={})
    full = build_request(method, "/organizations/o-1", base_url=BASE)
    assert [getattr(short, f) for f in fields] == [getattr(full, f) for f in fields]
    for bad in ({"method": "TRACE", "path": "/x"}, {"method": "GET", "path": "/a/../b"}):
        with pytest.raises(InvalidArgumentError):
            build_call(bad["method"], bad["path"], base_url=BASE, options={})


# -- RetryPolicy.next_delay: the one retry decision -----------------------------------------


def _api_error(cls: type[Any], status: int, retry_after: float | None = None) -> Any:
    return cls(status=status, method="GET", path="/x", server_message="", retry_after=retry_after)


def test_next_delay_decides_every_kind_of_failure() -> None:
    policy = RetryPolicy(attempts=3, backoff_base=1.0, backoff_cap=1.0, max_retry_after=30)
    # Full jitter in [0, 1]: only bounds can be asserted, and None vs a number.
    assert 0 <= policy.next_delay(TransportError("reset"), 1) <= 1  # type: ignore[operator]
    assert policy.next_delay(TransportError("reset"), 3) is None  # attempts spent
    assert policy.next_delay(_api_error(RateLimitedError, 429, 12.0), 1) == 12.0
    assert policy.next_delay(_api_error(RateLimitedError, 429, 31.0), 1) is None  # too long
    assert policy.next_delay(_api_error(NotFoundError, 404), 1) is None
    assert policy.next_delay(_api_error(ServerError, 503), 2) is not None
    assert policy.next_delay(ResponseDecodeError("html", status=200), 1) is not None
    assert policy.next_delay(ValueError("a bug"), 1) is None
    tls = TransportError("bad certificate")
    tls.retryable = False
    assert policy.next_delay(tls, 1) is None
    strict = RetryPolicy(
        retry_on_timeout=False, retry_on_connection_error=False, retry_invalid_json=False
    )
    assert strict.next_delay(RequestTimeoutError("slow"), 1) is None
    assert strict.next_delay(TransportError("reset"), 1) is None
    assert strict.next_delay(ResponseDecodeError("html", status=200), 1) is None


# -- the Transport seam ---------------------------------------------------------------------


class Recorder:
    """A Transport that records what the pipeline hands it, then lets aiohttp send it."""

    def __init__(self) -> None:
        self.inner = AiohttpTransport(
            pool_size=4, pool_size_per_host=0, in_flight=4, timeouts=Timeouts()
        )
        self.sent: list[tuple[Request, dict[str, str], float | None]] = []
        self.closed = 0

    async def send(
        self, request: Request, headers: Mapping[str, str], *, timeout: float | None
    ) -> Response:
        self.sent.append((request, dict(headers), timeout))
        return await self.inner.send(request, headers, timeout=timeout)

    async def aclose(self) -> None:
        self.closed += 1
        await self.inner.aclose()


async def test_a_custom_transport_carries_every_request(
    make_client: Any, emulator: ICREmulator, app_id: str
) -> None:
    recorder = Recorder()
    assert isinstance(recorder, Transport)
    client: AsyncICRClient = make_client(transport=recorder)
    inst = emulator.installations(app_id)[0]
    org = await client.installation(inst["id"]).get_organization()
    assert org.id == inst["organization"]["id"]
    # A mint with the app JWT, then the organization with the installation token.
    paths = [(r.method, r.path) for r, _, _ in recorder.sent]
    assert paths == [
        ("POST", f"/app/installations/{inst['id']}/accessTokens"),
        ("GET", f"/organizations/{inst['organization']['id']}"),
    ]
    mint_headers, org_headers = recorder.sent[0][1], recorder.sent[1][1]
    assert mint_headers["Authorization"].startswith("Bearer ey")  # the JWT
    assert org_headers["Authorization"].startswith("Bearer crs_")  # the token
    assert org_headers["x-icr-api-version"] == client.config.api_version
    await client.aclose()
    await client.aclose()
    assert recorder.closed == 1


async def test_the_transport_seam_is_checked_at_construction(make_client: Any) -> None:
    with pytest.raises(ConfigurationError, match="Transport protocol"):
        make_client(transport=object())
    with pytest.raises(ConfigurationError, match="AiohttpTransport"):
        make_client(transport=Recorder(), trace_configs=[aiohttp.TraceConfig()])


# -- the request trio and per-call options ---------------------------------------------------


async def test_request_response_gives_status_headers_and_bytes(
    client: AsyncICRClient, emulator: ICREmulator, app_id: str
) -> None:
    inst = emulator.installations(app_id)[0]
    resp = await client.request_response("GET", f"/app/installations/{inst['id']}")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("application/json")
    assert resp.request_id is not None
    assert resp.json()["id"] == inst["id"]
    assert await client.request_raw("GET", f"/app/installations/{inst['id']}") == resp.content
    scoped = client.installation(inst["id"])
    org = await scoped.request_response("GET", f"/organizations/{inst['organization']['id']}")
    assert org.status == 200
    assert org.json()["id"] == inst["organization"]["id"]
    with pytest.raises(NotFoundError):
        await client.request_response("GET", "/app/installations/missing")


async def test_only_the_documented_options_are_taken(
    client: AsyncICRClient, emulator: ICREmulator
) -> None:
    # checked= / safe= are the SDK's own: a caller could otherwise skip the path checks.
    for options in ({"checked": True}, {"safe": True}, {"base_url": "https://elsewhere"}):
        with pytest.raises(InvalidArgumentError, match="unknown request option"):
            await client.request("GET", "/app/../secret", **options)
    assert emulator.stats.total_requests == 0


async def test_a_per_call_timeout_bounds_that_call_only(
    make_client: Any, emulator: ICREmulator
) -> None:
    client: AsyncICRClient = make_client(retry=RetryPolicy.disabled())
    emulator.faults.add(Fault(method="GET", path="/app/installations", action="delay", delay=0.5))
    with pytest.raises(RequestTimeoutError):
        await client.request("GET", "/app/installations", timeout=0.05)
    # The same slow answer fits in the client's default deadline.
    assert "installations" in await client.request("GET", "/app/installations")


async def test_an_empty_memory_cache_given_is_the_one_used(
    make_client: Any, emulator: ICREmulator, app_id: str
) -> None:
    # An empty MemoryTokenCache has len() 0: it once counted as "not given" and each client
    # quietly made its own, so two clients "sharing" it minted twice.
    cache = MemoryTokenCache()
    first: AsyncICRClient = make_client(token_cache=cache)
    second: AsyncICRClient = make_client(token_cache=cache)
    inst = emulator.installations(app_id)[0]["id"]
    await first.installation(inst).get_token()
    assert len(cache) == 1
    await second.installation(inst).get_token()
    assert emulator.stats.mints[inst] == 1
