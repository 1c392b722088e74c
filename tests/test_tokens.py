"""Installation tokens: minted once, refreshed before expiry, never served stale.

Every assertion about minting counts what the emulator saw, not what the client believes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import pytest

from icr_async import (
    AsyncICRClient,
    AuthenticationError,
    ICRError,
    ServerError,
    Token,
    TokenError,
)
from icr_async.testing import Fault, ICREmulator, ManualClock

pytestmark = pytest.mark.anyio

MINT_PATH = "/app/installations/*/accessTokens"


def _org_path(emulator: ICREmulator, app_id: str, index: int) -> tuple[str, str]:
    inst = emulator.installations(app_id)[index]
    return inst["id"], f"/organizations/{inst['organization']['id']}"


@pytest.mark.parametrize(
    ("installations", "calls"),
    [(20, 500), pytest.param(100, 10_000, marks=pytest.mark.slow)],
)
async def test_cold_storm_mints_once_per_installation(
    client: AsyncICRClient, emulator: ICREmulator, app_id: str, installations: int, calls: int
) -> None:
    for _ in range(installations - 25):
        emulator.add_installation(app_id)
    targets = [_org_path(emulator, app_id, i) for i in range(installations)]
    assert len({t[0] for t in targets}) == installations
    scoped = {inst: client.installation(inst) for inst, _ in targets}

    async def call(n: int) -> str:
        inst, path = targets[n % installations]
        data = await scoped[inst].request("GET", path)
        return str(data["id"])

    results = await asyncio.gather(*(call(n) for n in range(calls)))
    assert len(results) == calls
    assert sum(emulator.stats.mints.values()) == installations
    assert all(count == 1 for count in emulator.stats.mints.values())
    assert client.stats.total_mints == installations
    # Concurrent callers joined flights instead of minting.
    assert client.stats.waited >= installations
    assert client.jwt_signatures == 1


async def test_expiry_refreshes_exactly_once_per_installation(
    client: AsyncICRClient, emulator: ICREmulator, app_id: str, clock: ManualClock
) -> None:
    targets = [_org_path(emulator, app_id, i) for i in range(20)]

    async def round_of_calls() -> None:
        await asyncio.gather(
            *(client.installation(i).request("GET", p) for i, p in targets for _ in range(10))
        )

    await round_of_calls()
    assert sum(emulator.stats.mints.values()) == 20
    clock.advance(7200 - 200)  # inside the 300 s refresh margin: refresh before expiry
    await round_of_calls()
    assert sum(emulator.stats.mints.values()) == 40
    assert client.stats.refreshes == 20
    await round_of_calls()  # the new tokens are fresh: no more mints
    assert sum(emulator.stats.mints.values()) == 40


async def test_different_installations_mint_in_parallel(
    client: AsyncICRClient, emulator: ICREmulator, app_id: str
) -> None:
    ids = [i["id"] for i in emulator.installations(app_id)[:10]]
    # Each mint takes 0.2 s of real time; ten in series would take 2 s.
    emulator.faults.add(Fault(method="POST", path=MINT_PATH, action="delay", delay=0.2, times=None))
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.gather(*(client.installation(i).get_token() for i in ids))
    elapsed = loop.time() - started
    assert sum(emulator.stats.mints.values()) == 10
    # Not a timing assertion on speed: a proof of overlap (serial would be >= 2.0 s).
    assert elapsed < 1.5


async def test_cancelled_waiters_do_not_cancel_or_poison_the_mint(
    client: AsyncICRClient, emulator: ICREmulator, app_id: str
) -> None:
    inst = emulator.installations(app_id)[0]["id"]
    emulator.faults.add(Fault(method="POST", path=MINT_PATH, action="delay", delay=0.2))
    scoped = client.installation(inst)
    tasks = [asyncio.create_task(scoped.get_token()) for _ in range(200)]
    await asyncio.sleep(0.05)  # let every task join the flight
    for task in tasks[:150]:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    cancelled = [r for r in results if isinstance(r, asyncio.CancelledError)]
    tokens = {r.token for r in results if not isinstance(r, BaseException)}
    assert len(cancelled) == 150
    assert len(tokens) == 1
    assert emulator.stats.mints[inst] == 1
    # The token minted for the cancelled callers is cached for the next one.
    again = await scoped.get_token()
    assert again.token in tokens
    assert emulator.stats.mints[inst] == 1


async def test_every_caller_cancelled_still_caches_the_token(
    client: AsyncICRClient, emulator: ICREmulator, app_id: str
) -> None:
    inst = emulator.installations(app_id)[1]["id"]
    emulator.faults.add(Fault(method="POST", path=MINT_PATH, action="delay", delay=0.1))
    scoped = client.installation(inst)
    tasks = [asyncio.create_task(scoped.get_token()) for _ in range(20)]
    await asyncio.sleep(0.02)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    token = await scoped.get_token()  # joins or follows the surviving mint
    assert token.token
    assert emulator.stats.mints[inst] == 1


async def test_failed_mint_reaches_every_waiter_and_is_not_cached(
    no_retry_client: AsyncICRClient, emulator: ICREmulator, app_id: str
) -> None:
    client = no_retry_client
    inst = emulator.installations(app_id)[2]["id"]
    emulator.faults.add(Fault(method="POST", path=MINT_PATH, status=500, delay=0.05, times=1))
    scoped = client.installation(inst)
    results = await asyncio.gather(*(scoped.get_token() for _ in range(50)), return_exceptions=True)
    assert all(isinstance(r, ServerError) for r in results)
    assert emulator.stats.mints[inst] == 0
    assert emulator.stats.requests[("POST", "create_installation_token")] == 1  # one flight
    token = await scoped.get_token()  # the failure was not cached: this one tries again
    assert token.token.startswith("crs_")
    assert emulator.stats.mints[inst] == 1


async def test_soft_refresh_serves_the_valid_token_when_refresh_fails(
    no_retry_client: AsyncICRClient,
    emulator: ICREmulator,
    app_id: str,
    clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = no_retry_client
    inst = emulator.installations(app_id)[3]["id"]
    scoped = client.installation(inst)
    first = await scoped.get_token()
    clock.advance(7200 - 120)  # two minutes left: inside the margin, still valid
    emulator.faults.add(Fault(method="POST", path=MINT_PATH, status=503, times=1))
    caplog.set_level(logging.WARNING, logger="icr_async")
    served = await scoped.get_token()
    assert served.token == first.token
    assert client.stats.soft_refreshes == 1
    assert any("serving the cached one" in r.getMessage() for r in caplog.records)
    assert all(first.token not in r.getMessage() for r in caplog.records)
    fresh = await scoped.get_token()  # the next call refreshes for real
    assert fresh.token != first.token


async def test_no_soft_refresh_once_the_token_is_nearly_dead(
    no_retry_client: AsyncICRClient, emulator: ICREmulator, app_id: str, clock: ManualClock
) -> None:
    scoped = no_retry_client.installation(emulator.installations(app_id)[3]["id"])
    await scoped.get_token()
    clock.advance(7200 - 5)
    emulator.faults.add(Fault(method="POST", path=MINT_PATH, status=503, times=1))
    with pytest.raises(ServerError):
        await scoped.get_token()


async def test_token_revoked_behind_the_clients_back_is_replaced(
    client: AsyncICRClient, emulator: ICREmulator, app_id: str
) -> None:
    inst, path = _org_path(emulator, app_id, 4)
    scoped = client.installation(inst)
    await scoped.request("GET", path)
    emulator.revoke_tokens(inst)
    data = await scoped.request("GET", path)
    assert data["id"] == path.rsplit("/", 1)[1]
    assert emulator.stats.mints[inst] == 2
    assert client.stats.recoveries_401 == 1


async def test_force_expired_token_is_replaced(
    client: AsyncICRClient, emulator: ICREmulator, app_id: str
) -> None:
    inst, path = _org_path(emulator, app_id, 5)
    scoped = client.installation(inst)
    await scoped.request("GET", path)
    emulator.expire_tokens(inst)
    await scoped.request("GET", path)
    assert emulator.stats.mints[inst] == 2


async def test_persistent_401_is_raised_not_looped(
    client: AsyncICRClient, emulator: ICREmulator, app_id: str
) -> None:
    inst, path = _org_path(emulator, app_id, 6)
    scoped = client.installation(inst)
    await scoped.get_token()
    emulator.faults.add(Fault(method="GET", path=path, status=401, times=None))
    with pytest.raises(AuthenticationError):
        await scoped.request("GET", path)
    assert emulator.stats.mints[inst] <= 2


async def test_propagation_lag_gets_a_short_bounded_retry(
    client: AsyncICRClient, emulator: ICREmulator, app_id: str, fake_sleep: Any
) -> None:
    inst, path = _org_path(emulator, app_id, 7)
    emulator.propagation_lag = 1.0  # a fresh token is refused for one second
    data = await client.installation(inst).request("GET", path)
    assert data["id"]
    assert emulator.stats.mints[inst] == 1  # waited for the same token instead of re-minting
    assert 0 < sum(fake_sleep.calls) <= 2.0


async def test_revoke_drops_the_token(
    client: AsyncICRClient, emulator: ICREmulator, app_id: str
) -> None:
    inst, _ = _org_path(emulator, app_id, 8)
    scoped = client.installation(inst)
    assert await scoped.revoke() is False  # nothing cached yet
    token = await scoped.get_token()
    assert await scoped.revoke() is True
    assert emulator.stats.revocations == 1
    again = await scoped.get_token()
    assert again.token != token.token
    assert emulator.stats.mints[inst] == 2


async def test_get_token_min_ttl(
    client: AsyncICRClient, emulator: ICREmulator, app_id: str, clock: ManualClock
) -> None:
    scoped = client.installation(emulator.installations(app_id)[9]["id"])
    first = await scoped.get_token(min_ttl=3600)
    assert first.expires_at.timestamp() - clock() >= 3600
    clock.advance(3000)  # 4200 s left: enough for 3600
    assert (await scoped.get_token(min_ttl=3600)).token == first.token
    clock.advance(1000)  # 3200 s left: a new one is minted
    second = await scoped.get_token(min_ttl=3600)
    assert second.token != first.token
    assert second.expires_at.timestamp() - clock() >= 3600
    with pytest.raises(TokenError, match="less than"):
        await scoped.get_token(min_ttl=9000)


async def test_min_ttl_must_be_a_number(client: AsyncICRClient) -> None:
    from icr_async import InvalidArgumentError

    with pytest.raises(InvalidArgumentError):
        await client.installation("abc").get_token(min_ttl=-1)


@pytest.mark.parametrize("skew", [300.0, -300.0, 900.0, -900.0])
async def test_server_clock_skew_is_learned(
    make_client: Any, emulator: ICREmulator, app_id: str, skew: float
) -> None:
    client: AsyncICRClient = make_client()
    emulator.skew = skew
    inst, path = _org_path(emulator, app_id, 10)
    data = await client.installation(inst).request("GET", path)
    assert data["id"]
    assert sum(emulator.stats.jwt_rejections.values()) <= 1
    if sum(emulator.stats.jwt_rejections.values()):
        assert client.clock_offset == pytest.approx(skew, abs=2)
        assert client.stats.clock_skew_corrections == 1
    # Later JWTs are signed on the server's time: no more rejections.
    for i in range(11, 15):
        await client.get_installation(emulator.installations(app_id)[i]["id"])
    assert sum(emulator.stats.jwt_rejections.values()) <= 1


async def test_skew_makes_token_expiry_follow_the_server(
    make_client: Any, emulator: ICREmulator, app_id: str, clock: ManualClock
) -> None:
    client: AsyncICRClient = make_client()
    emulator.skew = 1800.0  # the server is half an hour ahead
    token = await client.installation(emulator.installations(app_id)[0]["id"]).get_token()
    # In local time the token lives the server's 7200 s from now, not 7200 - 1800.
    assert token.expires_at.timestamp() - clock() == pytest.approx(7200, abs=2)


async def test_lru_bound(make_client: Any, emulator: ICREmulator, app_id: str) -> None:
    client: AsyncICRClient = make_client(token_cache_size=10)
    ids = [i["id"] for i in emulator.installations(app_id)[:15]]
    for inst in ids:
        await client.installation(inst).get_token()
    assert len(client._tokens.memory) == 10
    assert client._tokens.memory.evictions == 5
    await client.installation(ids[-1]).get_token()  # most recent: still cached
    assert emulator.stats.mints[ids[-1]] == 1
    await client.installation(ids[0]).get_token()  # evicted: minted again
    assert emulator.stats.mints[ids[0]] == 2


async def test_app_token_client_is_cached(client: AsyncICRClient, emulator: ICREmulator) -> None:
    app = client.app_token_client()
    data = await app.request("GET", "/projects", params={"limit": 5, "page": 0})
    assert len(data["projects"]) == 5
    await app.request("GET", "/projects", params={"limit": 5, "page": 1})
    assert emulator.stats.app_token_mints == 1
    assert await app.revoke() is True
    await app.request("GET", "/projects")
    assert emulator.stats.app_token_mints == 2


async def test_stats_and_debug_logs_carry_no_secret(
    client: AsyncICRClient, emulator: ICREmulator, app_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="icr_async")
    inst, path = _org_path(emulator, app_id, 11)
    scoped = client.installation(inst)
    token = await scoped.get_token()
    await scoped.request("GET", path)
    emulator.revoke_tokens(inst)
    await scoped.request("GET", path)
    stats = client.stats.as_dict()
    assert stats["mints"][inst] == 2
    assert stats["cache_hits"] >= 1
    assert stats["recoveries_401"] == 1
    assert any("minted a token" in r.getMessage() for r in caplog.records)
    text = "\n".join(r.getMessage() for r in caplog.records) + repr(stats) + repr(client.stats)
    assert token.token not in text
    assert "crs_" + token.token[4:12] not in text


async def test_installation_client_organization_id(
    client: AsyncICRClient, emulator: ICREmulator, app_id: str
) -> None:
    raw = emulator.installations(app_id)[12]
    assert await client.installation(raw["id"]).organization_id() == raw["organization"]["id"]


async def test_request_raw_returns_bytes(
    client: AsyncICRClient, emulator: ICREmulator, app_id: str
) -> None:
    inst, path = _org_path(emulator, app_id, 13)
    body = await client.installation(inst).request_raw("GET", path)
    assert body.startswith(b"{")


async def test_credit_action_is_not_retried_on_503(
    client: AsyncICRClient, emulator: ICREmulator, app_id: str
) -> None:
    inst, path = _org_path(emulator, app_id, 14)
    action = path + "/inventory/requests/transfer"
    emulator.faults.add(Fault(method="POST", path=action, status=503, times=1))
    with pytest.raises(ServerError):
        await client.installation(inst).request(
            "POST", action, json={"creditId": "c1", "amount": 1}
        )
    assert client.stats.retries == 0
    assert client.stats.requests == 2  # the mint and the one action attempt, nothing more


async def test_a_token_revoked_elsewhere_right_after_its_mint_is_replaced_at_once(
    client: AsyncICRClient, emulator: ICREmulator, app_id: str, fake_sleep: Any
) -> None:
    """A 401 that says "revoked" is not replication lag: no grace retries, one re-mint."""
    inst, path = _org_path(emulator, app_id, 10)
    scoped = client.installation(inst)
    await scoped.get_token()
    emulator.revoke_tokens(inst)  # within the fresh-token window
    data = await scoped.request("GET", path)
    assert data["id"] == path.rsplit("/", 1)[1]
    assert fake_sleep.calls == []
    assert emulator.stats.mints[inst] == 2
    assert client.stats.recoveries_401 == 1


async def test_short_lived_tokens_are_served_for_half_their_life(
    client: AsyncICRClient, emulator: ICREmulator, app_id: str, clock: ManualClock
) -> None:
    """2-minute tokens with the default 5-minute margin: one mint per minute of use, not
    two mints per request."""
    emulator.installation_token_ttl = 120.0
    inst, path = _org_path(emulator, app_id, 11)
    scoped = client.installation(inst)
    for _ in range(20):
        await scoped.request("GET", path)
    assert emulator.stats.mints[inst] == 1
    clock.advance(59)  # 61 s left: more than half the life
    await scoped.request("GET", path)
    assert emulator.stats.mints[inst] == 1
    clock.advance(2)  # 59 s left: due
    await scoped.request("GET", path)
    assert emulator.stats.mints[inst] == 2
    assert client._tokens.margin_for(await scoped.get_token()) == 60.0


async def test_a_min_ttl_no_fresh_token_can_meet_is_an_error_after_one_mint(
    client: AsyncICRClient, emulator: ICREmulator, app_id: str
) -> None:
    emulator.installation_token_ttl = 120.0
    inst, _ = _org_path(emulator, app_id, 12)
    with pytest.raises(TokenError, match="120-second tokens"):
        await client.installation(inst).get_token(min_ttl=600)
    assert emulator.stats.mints[inst] == 1


class _FailingCache:
    """A shared ``TokenCache`` whose every call fails with ``error``."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.calls = 0

    async def get(self, key: str) -> Token | None:
        self.calls += 1
        raise self.error

    async def set(self, key: str, token: Token, *, ttl: float) -> None:
        raise self.error

    async def delete(self, key: str, *, token: str | None = None) -> None:
        raise self.error

    def lease(self, key: str, *, ttl: float) -> contextlib.AbstractAsyncContextManager[None]:
        return self

    async def __aenter__(self) -> None:
        raise self.error

    async def __aexit__(self, *exc_info: object) -> None:
        return None  # pragma: no cover - never entered


class _CacheDown(ICRError):
    """What a cache raises once it has reported an outage itself."""


@pytest.mark.parametrize(
    ("error", "client_warnings"),
    [(_CacheDown("down, and already said so"), 0), (RuntimeError("a bug"), 1)],
    ids=["reported-by-the-cache", "unreported"],
)
async def test_a_failing_shared_cache_falls_back_and_is_reported_once(
    make_client: Any,
    emulator: ICREmulator,
    app_id: str,
    caplog: pytest.LogCaptureFixture,
    error: Exception,
    client_warnings: int,
) -> None:
    cache = _FailingCache(error)
    client: AsyncICRClient = make_client(token_cache=cache)
    caplog.set_level(logging.DEBUG, logger="icr_async")
    for index in range(5):
        installation_id, path = _org_path(emulator, app_id, index)
        await client.installation(installation_id).request("GET", path)
    assert sum(emulator.stats.mints.values()) == 5  # minted locally, no request failed
    assert cache.calls == 5
    assert client.stats.shared_cache_errors == 5
    ours = [r for r in caplog.records if r.name == "icr_async"]
    warnings = [r.getMessage() for r in ours if r.levelno == logging.WARNING]
    assert len(warnings) == client_warnings, warnings
    assert all("shared token cache failed (RuntimeError)" in w for w in warnings)
    debug = [
        r for r in ours if r.levelno == logging.DEBUG and "shared token cache" in r.getMessage()
    ]
    assert len(debug) == 5 - client_warnings


async def test_a_warm_installation_keeps_no_key_or_dates_of_its_own(
    make_client: Any, emulator: ICREmulator, app_id: str
) -> None:
    """What a token cache of thousands of installations must not pay per installation: a
    key string beside the id the installation client holds, or its token's dates in the
    shared date memo (they never come back)."""
    from icr_async import MemoryTokenCache, _dates

    client: AsyncICRClient = make_client()
    inst_id = emulator.installations(app_id)[0]["id"]
    scoped = client.installation(inst_id)
    token = await scoped.get_token()
    # The client's own cache: keyed by the very id string the installation client holds.
    (key,) = list(client._tokens.memory._entries)
    assert key == inst_id
    assert key is scoped.installation_id
    assert token.created_at is not None
    assert all(dt is not token.created_at for dt in _dates._DATES.values())
    assert all(dt is not token.expires_at for dt in _dates._DATES.values())
    # A memory cache the caller passes may serve several clients: it sees the full key.
    mine = MemoryTokenCache()
    other: AsyncICRClient = make_client(token_cache=mine)
    await other.installation(inst_id).get_token()
    assert list(mine._entries) == [other._cache_key(inst_id)]
    assert (
        other._cache_key(inst_id)
        == f"{app_id}|{other._base_url}|{other._key.fingerprint}|{inst_id}"
    )
