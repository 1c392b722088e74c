"""RedisTokenCache against a real redis-server: sharing, single flight, failure, encryption.

Every count of mints is what the emulator saw. The fleet tests run real worker processes
(``tests/_redis_server.py`` as a script) against an emulator served by this test's loop and a
``redis-server`` this module starts and stops itself; without the binary they skip, unless
``ICR_REQUIRE_REDIS`` is set (CI), where they fail.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import redis.asyncio as aioredis
from _redis_server import Fleet, RedisServer, free_port, require_redis_server

from icr_async import AsyncICRClient, ConfigurationError, PrivateKey, Token
from icr_async.contrib.redis import RedisTokenCache, SharedCacheUnavailableError
from icr_async.testing import Fault, ICREmulator, ManualClock

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

MINT_PATH = "/app/installations/*/accessTokens"
KEY = bytes(range(32))
UTC = datetime.timezone.utc


def _in(seconds: float) -> datetime.datetime:
    """``seconds`` from now, as ``Token.expires_at`` takes it."""
    return datetime.datetime.fromtimestamp(time.time() + seconds, UTC)


@pytest.fixture(scope="module")
def redis_binary() -> str:
    """The redis-server binary, or a skip/fail with the reason."""
    return require_redis_server()


@pytest.fixture(scope="module")
def redis_server(redis_binary: str) -> Iterator[RedisServer]:
    """One redis-server for the module, stopped by PID at the end."""
    server = RedisServer(redis_binary)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def own_redis(redis_binary: str) -> Iterator[RedisServer]:
    """A redis-server for one test that kills or pauses it."""
    server = RedisServer(redis_binary)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def rds(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    """A raw client on the module's server, flushed before the test."""
    client = aioredis.Redis.from_url(redis_server.url)
    await client.flushall()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def make_cache(redis_server: RedisServer) -> AsyncIterator[Any]:
    """Build caches on the module's server (closed at the end)."""
    made: list[RedisTokenCache] = []

    def factory(url: str | None = None, **kwargs: Any) -> RedisTokenCache:
        if "derive_from" not in kwargs:
            kwargs.setdefault("encryption_key", KEY)
        # The emulator, every client and asyncio's debug mode share this loop: a generous
        # timeout keeps a busy loop from passing for an outage (outage tests set their own).
        kwargs.setdefault("op_timeout", 5.0)
        cache = RedisTokenCache(url or redis_server.url, **kwargs)
        made.append(cache)
        return cache

    yield factory
    for cache in made:
        await cache.aclose()


def _targets(emulator: ICREmulator, app_id: str) -> list[tuple[str, str]]:
    return [
        (inst["id"], f"/organizations/{inst['organization']['id']}")
        for inst in emulator.installations(app_id)
    ]


async def _sweep(client: AsyncICRClient, targets: list[tuple[str, str]]) -> None:
    async def one(installation_id: str, path: str) -> None:
        await client.installation(installation_id).request("GET", path)

    await asyncio.gather(*(one(i, p) for i, p in targets))


# --------------------------------------------------------------------- configuration


async def test_configuration_mistakes_raise_at_construction(
    redis_server: RedisServer, private_key_pem: str
) -> None:
    url = redis_server.url
    with pytest.raises(ConfigurationError, match="exactly one"):
        RedisTokenCache(url)
    with pytest.raises(ConfigurationError, match="exactly one"):
        RedisTokenCache(url, encryption_key=KEY, derive_from=private_key_pem)
    with pytest.raises(ConfigurationError, match="32 random bytes"):
        RedisTokenCache(url, encryption_key=b"short")
    with pytest.raises(ConfigurationError, match="namespace"):
        RedisTokenCache(url, encryption_key=KEY, namespace="has space")
    with pytest.raises(ConfigurationError, match="lease_ttl"):
        RedisTokenCache(url, encryption_key=KEY, lease_ttl=0)
    with pytest.raises(ConfigurationError, match="finite"):
        RedisTokenCache(url, encryption_key=KEY, op_timeout=float("inf"))
    with pytest.raises(ConfigurationError, match=r"redis\.asyncio\.Redis"):
        RedisTokenCache(object(), encryption_key=KEY)  # type: ignore[arg-type]
    decoding = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        with pytest.raises(ConfigurationError, match="decode_responses"):
            RedisTokenCache(decoding, encryption_key=KEY)
    finally:
        await decoding.aclose()


async def test_key_names_hash_everything_but_the_installation(make_cache: Any) -> None:
    cache: RedisTokenCache = make_cache(namespace="fleet")
    name = cache.redis_key("app-1|https://api.example|FP+/=|inst-42")
    prefix, scope, installation = name.rsplit(":", 2)
    assert prefix == "fleet:tok:v1"
    assert len(scope) == 16
    assert installation == "inst-42"
    assert "app-1" not in name
    assert "example" not in name
    assert "FP" not in name
    others = {
        cache.redis_key("app-2|https://api.example|FP+/=|inst-42"),
        cache.redis_key("app-1|https://sandbox.example|FP+/=|inst-42"),
        cache.redis_key("app-1|https://api.example|other|inst-42"),
    }
    assert name not in others
    assert len(others) == 3
    odd = cache.redis_key("app-1|https://api.example|FP+/=|a b\nc")
    assert odd.rsplit(":", 1)[1].startswith("#")
    assert "\n" not in odd
    assert "KEY" not in repr(cache)
    assert repr(cache).startswith("<RedisTokenCache")


# ------------------------------------------------------------------ sharing in one loop


async def test_a_warm_worker_does_not_ask_redis(
    make_client: Any, make_cache: Any, emulator: ICREmulator, app_id: str, rds: aioredis.Redis
) -> None:
    cache: RedisTokenCache = make_cache()
    client: AsyncICRClient = make_client(token_cache=cache)
    targets = _targets(emulator, app_id)
    await _sweep(client, targets)
    assert sum(emulator.stats.mints.values()) == len(targets)
    commands = cache.stats.commands
    before = (await rds.info("stats"))["total_commands_processed"]
    for _ in range(4):
        await _sweep(client, targets)
    after = (await rds.info("stats"))["total_commands_processed"]
    assert cache.stats.commands == commands
    assert after - before <= 1  # the first INFO itself
    assert sum(emulator.stats.mints.values()) == len(targets)


async def test_workers_with_separate_memories_share_one_mint(
    make_client: Any, make_cache: Any, emulator: ICREmulator, app_id: str, rds: aioredis.Redis
) -> None:
    # Four clients with their own in-process caches behave like four processes. Ten
    # installations show it; all 25 at once made the test sensitive to a busy machine.
    clients = [make_client(token_cache=make_cache()) for _ in range(4)]
    targets = _targets(emulator, app_id)[:10]
    await asyncio.gather(*(_sweep(c, targets) for c in clients))
    assert sum(emulator.stats.mints.values()) == len(targets)
    assert all(n == 1 for n in emulator.stats.mints.values())
    assert sum(c.stats.total_mints for c in clients) == len(targets)
    assert sum(c.stats.shared_cache_hits for c in clients) >= len(targets)
    assert all(c.stats.shared_cache_errors == 0 for c in clients)


async def test_refresh_after_expiry_mints_once_for_all_workers(
    make_client: Any,
    make_cache: Any,
    emulator: ICREmulator,
    app_id: str,
    clock: ManualClock,
    rds: aioredis.Redis,
) -> None:
    # Redis keeps the previous entries (its TTL runs on real time, the test's clock jumped):
    # waiters must tell a new token from the stale one they saw, or everyone would mint.
    clients = [make_client(token_cache=make_cache()) for _ in range(3)]
    targets = _targets(emulator, app_id)[:10]  # enough to show it, light on a busy machine
    await asyncio.gather(*(_sweep(c, targets) for c in clients))
    for period in range(1, 3):
        clock.advance(emulator.installation_token_ttl - clients[0].config.refresh_margin + 1)
        await asyncio.gather(*(_sweep(c, targets) for c in clients))
        assert sum(emulator.stats.mints.values()) == len(targets) * (period + 1)


async def test_a_refused_token_is_dropped_from_redis_and_replaced_once(
    make_client: Any,
    make_cache: Any,
    emulator: ICREmulator,
    app_id: str,
    clock: ManualClock,
    rds: aioredis.Redis,
) -> None:
    cache: RedisTokenCache = make_cache()
    clients = [make_client(token_cache=cache), make_client(token_cache=make_cache())]
    targets = _targets(emulator, app_id)[:3]
    await asyncio.gather(*(_sweep(c, targets) for c in clients))
    clock.advance(20)  # past the window where a 401 is taken for replication lag
    emulator.revoke_tokens(targets[0][0])
    await clients[0].installation(targets[0][0]).request("GET", targets[0][1])
    assert emulator.stats.mints[targets[0][0]] == 2
    key = clients[0]._cache_key(targets[0][0])
    stored = await cache.get(key)
    assert stored is not None
    assert emulator.token_record(stored.token) is not None
    assert not emulator.token_record(stored.token).revoked  # type: ignore[union-attr]


async def test_delete_drops_only_the_named_token(make_cache: Any, rds: aioredis.Redis) -> None:
    cache: RedisTokenCache = make_cache()
    token = Token(token="crs_" + "a" * 40, expires_at=_in(3600), installation_id="i1")
    await cache.set("app|url|fp|i1", token, ttl=60)
    await cache.set("app|url|fp|i0", token, ttl=0)  # nothing to keep
    assert await rds.exists(cache.redis_key("app|url|fp|i0")) == 0
    await cache.delete("app|url|fp|i1", token="crs_" + "b" * 40)
    assert await cache.get("app|url|fp|i1") == token
    await cache.delete("app|url|fp|i1", token=token.token)
    assert await cache.get("app|url|fp|i1") is None
    await cache.set("app|url|fp|i1", token, ttl=60)
    await cache.delete("app|url|fp|i1")
    assert await cache.get("app|url|fp|i1") is None


# ----------------------------------------------------------------- encryption at rest


async def test_tokens_are_unreadable_in_redis_without_the_key(
    make_client: Any,
    make_cache: Any,
    emulator: ICREmulator,
    app_id: str,
    rds: aioredis.Redis,
    private_key_pem: str,
    other_private_key_pem: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cache: RedisTokenCache = make_cache(derive_from=private_key_pem)
    client: AsyncICRClient = make_client(token_cache=cache)
    installation_id, _ = _targets(emulator, app_id)[0]
    token = await client.installation(installation_id).get_token()
    name = cache.redis_key(client._cache_key(installation_id))
    names = [cast(bytes, n).decode() for n in await rds.keys("*")]
    assert names == [name]
    assert app_id not in name
    assert client.key_fingerprint not in name
    raw = cast("bytes | None", await rds.get(name))
    assert raw is not None
    assert token.token.encode() not in raw
    assert b"crs_" not in raw
    assert token.organization_id is not None
    assert token.organization_id.encode() not in raw
    assert b"expires_at" not in raw
    # Sealed, not JSON: a format byte first (the next bytes are random: an HMAC tag, a nonce).
    assert raw[:1] == b"\x01"

    key = client._cache_key(installation_id)
    same_key = make_cache(derive_from=PrivateKey.from_pem(private_key_pem))
    assert await same_key.get(key) == token
    with caplog.at_level(logging.WARNING, logger="icr_async"):
        assert await make_cache(derive_from=other_private_key_pem).get(key) is None
        assert await make_cache(encryption_key=secrets.token_bytes(32)).get(key) is None
    assert "another encryption key" in caplog.text
    assert token.token not in caplog.text

    # The key name is authenticated: a ciphertext copied to another installation is refused.
    other_key = client._cache_key("someone-else")
    await rds.set(cache.redis_key(other_key), raw)
    assert await cache.get(other_key) is None
    tampered = raw[:5] + bytes([raw[5] ^ 1]) + raw[6:]
    await rds.set(name, tampered)
    assert await cache.get(key) is None
    await rds.set(name, b"\x02junk")
    assert await cache.get(key) is None
    assert cache.stats.undecryptable == 3


def _previous_reader(data: dict[str, Any]) -> tuple[str, float, Any, Any, float]:
    """What the release before one ``Token`` type read from an entry (its ``_open``)."""
    return (
        str(data["token"]),
        float(data["expires_at"]),
        data.get("installation_id"),
        data.get("organization_id"),
        float(data.get("minted_at") or 0.0),
    )


async def test_entries_stay_readable_across_a_rolling_deploy(
    make_client: Any, make_cache: Any, emulator: ICREmulator, app_id: str, rds: aioredis.Redis
) -> None:
    cache: RedisTokenCache = make_cache()
    client: AsyncICRClient = make_client(token_cache=cache)
    installation_id, _ = _targets(emulator, app_id)[0]
    token = await client.installation(installation_id).get_token()
    key = client._cache_key(installation_id)
    name = cache.redis_key(key)
    raw = cast(bytes, await rds.get(name))
    tag, nonce = raw[1:17], raw[17:29]
    aad = name.encode() + tag

    # Written now, read by the previous release: times are still POSIX seconds.
    data = json.loads(cache._aead.decrypt(nonce, raw[29:], aad))
    assert type(data["expires_at"]) is float
    assert type(data["minted_at"]) is float
    assert token.minted_at is not None
    assert _previous_reader(data) == (
        token.token,
        token.expires_at.timestamp(),
        installation_id,
        token.organization_id,
        token.minted_at.timestamp(),
    )
    # ... and read back now with everything ICR sent.
    again = await cache.get(key)
    assert again == token
    assert again is not None
    assert (again.id, again.app_id, again.created_at) == (token.id, app_id, token.created_at)
    assert again.permissions == token.permissions
    assert again.permissions

    # Written by the previous release (five keys, floats), read now.
    secret = "crs_" + "e" * 48
    old = {
        "token": secret,
        "expires_at": time.time() + 3600.25,
        "installation_id": installation_id,
        "organization_id": "org-1",
        "minted_at": 0.0,
    }
    sealed = cache._aead.encrypt(
        nonce := os.urandom(12),
        json.dumps(old).encode(),
        name.encode() + (tag := cache._tag(name, secret)),
    )
    await rds.set(name, b"\x01" + tag + nonce + sealed, px=60_000)
    read = await cache.get(key)
    assert read is not None
    assert read.token == secret
    assert read.expires_at.tzinfo is UTC
    assert read.expires_at.timestamp() == pytest.approx(old["expires_at"], abs=1e-6)
    assert (read.installation_id, read.organization_id) == (installation_id, "org-1")
    assert read.minted_at is None
    assert read.permissions == {}
    assert cache.stats.undecryptable == 0
    # The client serves it like any other (found in Redis, not minted).
    assert (await make_client(token_cache=cache).installation(installation_id).get_token()) == read


# ----------------------------------------------------------------------------- the lease


async def test_a_lease_is_released_only_by_its_owner_and_expires_alone(
    make_cache: Any, rds: aioredis.Redis
) -> None:
    cache: RedisTokenCache = make_cache(lease_ttl=2.0)
    lease_name = cache.redis_key("app|url|fp|i1") + ":lease"
    async with cache.lease("app|url|fp|i1", ttl=30.0):
        owner = await rds.get(lease_name)
        assert owner is not None
        assert len(owner) == 32
        assert 0 < await rds.pttl(lease_name) <= 2000
        await rds.set(lease_name, b"intruder", px=60_000)
    assert await rds.get(lease_name) == b"intruder"
    await rds.delete(lease_name)
    async with cache.lease("app|url|fp|i1", ttl=30.0):
        pass
    assert await rds.exists(lease_name) == 0


async def test_a_long_mint_keeps_its_lease(make_cache: Any, rds: aioredis.Redis) -> None:
    cache: RedisTokenCache = make_cache(lease_ttl=0.3)
    lease_name = cache.redis_key("app|url|fp|i1") + ":lease"
    async with cache.lease("app|url|fp|i1", ttl=30.0):
        await asyncio.sleep(0.8)  # well past lease_ttl: the renewer must have extended it
        assert await rds.exists(lease_name) == 1


async def test_a_waiter_gives_up_when_the_lease_is_never_freed(
    make_cache: Any, rds: aioredis.Redis
) -> None:
    cache: RedisTokenCache = make_cache()
    await rds.set(cache.redis_key("app|url|fp|i1") + ":lease", b"someone", px=60_000)
    with pytest.raises(SharedCacheUnavailableError, match="held the token lease"):
        async with cache.lease("app|url|fp|i1", ttl=0.3):
            pass
    assert cache.stats.lease_timeouts == 1
    assert cache.stats.lease_contended == 1
    assert cache.available  # a busy lease is not an outage


async def test_a_waiter_returns_without_minting_when_the_holder_stores(
    make_cache: Any, rds: aioredis.Redis
) -> None:
    holder: RedisTokenCache = make_cache()
    waiter: RedisTokenCache = make_cache()
    token = Token(token="crs_" + "c" * 40, expires_at=_in(3600))
    entered = asyncio.Event()

    async def hold() -> None:
        async with holder.lease("k|i", ttl=30.0):
            entered.set()
            await asyncio.sleep(0.2)
            await holder.set("k|i", token, ttl=60)

    task = asyncio.create_task(hold())
    await asyncio.wait_for(entered.wait(), 5)
    async with waiter.lease("k|i", ttl=30.0):
        assert await waiter.get("k|i") == token
    await task
    assert waiter.stats.woken == 1
    assert waiter.stats.leases == 0


# --------------------------------------------------------------------------- failure


async def test_redis_down_from_the_start_then_back(
    redis_binary: str,
    make_client: Any,
    make_cache: Any,
    emulator: ICREmulator,
    app_id: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()  # nothing listens here yet
    cache: RedisTokenCache = make_cache(f"redis://127.0.0.1:{port}/0", retry_after=0.2)
    client: AsyncICRClient = make_client(token_cache=cache)
    targets = _targets(emulator, app_id)
    with caplog.at_level(logging.WARNING, logger="icr_async"):
        await _sweep(client, targets)
    assert sum(emulator.stats.mints.values()) == len(targets)  # minted locally, none failed
    assert client.stats.shared_cache_errors == len(targets)
    assert not cache.available
    assert not await cache.ping()
    assert cache.stats.breaker_trips == 1
    warnings = [r for r in caplog.records if r.name == "icr_async" and r.levelno == logging.WARNING]
    # The cache's alone: the client counts the failures but leaves the warning to the cache.
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "Redis token cache unavailable (ConnectionError)" in warnings[0].getMessage()

    server = RedisServer(redis_binary, port)
    server.start()
    try:
        await asyncio.sleep(0.3)  # past retry_after: the next call probes Redis
        fresh: AsyncICRClient = make_client(token_cache=cache)
        await _sweep(fresh, targets[:5])
        assert cache.stats.recoveries == 1
        assert repr(cache).endswith(" available>")
        # While the one probing call was out, its concurrent neighbours minted locally.
        assert cache.stats.sets >= 1
        sets = cache.stats.sets
        again: AsyncICRClient = make_client(token_cache=cache)
        await _sweep(again, targets[5:10])
        assert cache.stats.sets == sets + 5
        assert again.stats.shared_cache_errors == 0
    finally:
        server.stop()


async def test_an_outage_mid_run_is_one_warning_per_interval(
    own_redis: RedisServer,
    make_client: Any,
    make_cache: Any,
    emulator: ICREmulator,
    app_id: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # retry_after is short so the outage is met twice (the first failures, then the probe
    # after retry_after); log_interval is the default minute, far longer than this test.
    cache: RedisTokenCache = make_cache(own_redis.url, retry_after=0.05)
    client: AsyncICRClient = make_client(token_cache=cache)
    targets = _targets(emulator, app_id)
    await _sweep(client, targets[:5])
    assert cache.stats.sets == 5  # shared while Redis was up
    own_redis.kill()
    with caplog.at_level(logging.DEBUG, logger="icr_async"):
        await _sweep(client, targets[5:10])  # five lookups at once meet the outage
        await asyncio.sleep(0.1)  # past retry_after: the next lookup probes Redis
        for installation_id, path in targets[10:15]:
            await client.installation(installation_id).request("GET", path)
    assert sum(emulator.stats.mints.values()) == 15  # every lookup minted locally, none failed
    assert client.stats.shared_cache_errors == 10
    assert cache.stats.errors >= 2  # the lookups at once, then the probe: the limit met twice
    ours = [r for r in caplog.records if r.name == "icr_async"]
    warnings = [r for r in ours if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "Redis token cache unavailable (ConnectionError)" in warnings[0].getMessage()
    assert "minting tokens locally" in warnings[0].getMessage()
    # The rest went to DEBUG: the cache's folded warnings and the client's fallbacks.
    folded = [r for r in ours if r.levelno == logging.DEBUG and "unavailable" in r.getMessage()]
    assert len(folded) >= cache.stats.errors - 1 + client.stats.shared_cache_errors


async def test_a_paused_redis_costs_one_timeout_not_one_per_request(
    own_redis: RedisServer, make_client: Any, make_cache: Any, emulator: ICREmulator, app_id: str
) -> None:
    cache: RedisTokenCache = make_cache(own_redis.url, op_timeout=0.2, retry_after=1.0)
    assert await cache.ping()
    client: AsyncICRClient = make_client(token_cache=cache)
    targets = _targets(emulator, app_id)
    own_redis.pause()
    try:
        for installation_id, path in targets:  # one after another: the breaker's case
            await client.installation(installation_id).request("GET", path)
    finally:
        own_redis.resume()
    assert sum(emulator.stats.mints.values()) == len(targets)
    assert client.stats.shared_cache_errors == len(targets)
    # Without the breaker every lookup would have waited op_timeout for a paused Redis.
    assert 1 <= cache.stats.errors < len(targets) // 2
    assert cache.stats.short_circuits > len(targets) // 2
    await asyncio.sleep(1.1)  # past retry_after
    other: AsyncICRClient = make_client(token_cache=cache)
    for installation_id, _ in targets[:3]:  # the first probes Redis and closes the breaker
        await other.installation(installation_id).get_token()
    assert cache.available
    assert cache.stats.sets == 3
    assert cache.stats.recoveries == 1


async def test_a_mint_failure_is_not_blamed_on_redis(
    make_client: Any, make_cache: Any, emulator: ICREmulator, app_id: str, rds: aioredis.Redis
) -> None:
    from icr_async import RetryPolicy, ServerError

    cache: RedisTokenCache = make_cache()
    client: AsyncICRClient = make_client(token_cache=cache, retry=RetryPolicy.disabled())
    installation_id, _ = _targets(emulator, app_id)[0]
    emulator.faults.add(Fault(method="POST", path=MINT_PATH, status=503, times=1))
    with pytest.raises(ServerError):
        await client.installation(installation_id).get_token()
    assert client.stats.shared_cache_errors == 0
    assert cache.available
    lease_names = await rds.keys("*:lease")
    assert lease_names == []  # released after the failed mint
    await client.installation(installation_id).get_token()


# ------------------------------------------------------------------- fleets of processes


@pytest.fixture
async def fleet_env(
    redis_server: RedisServer, private_key_pem: str, tmp_path: Path
) -> AsyncIterator[tuple[Fleet, ICREmulator, list[tuple[str, str]]]]:
    """A real-clock emulator with 200 installations, served on this loop, and a fleet."""
    emulator = ICREmulator(seed=11)
    app = emulator.create_app(200, private_key_pem=private_key_pem)
    key_path = tmp_path / "app.pem"
    key_path.write_text(private_key_pem)
    flush = aioredis.Redis.from_url(redis_server.url)
    await flush.flushall()
    await flush.aclose()
    async with emulator.serve() as server:
        fleet = Fleet(
            tmp_path,
            {
                "base_url": server.url,
                "app_id": app.app_id,
                "key_path": str(key_path),
                "redis_url": redis_server.url,
                "encryption_key": KEY.hex(),
                "targets": _targets(emulator, app.app_id),
                # Generous: eight processes on two loaded cores must not mistake slowness
                # for an outage (that would mint locally, which other tests cover).
                "op_timeout": 5.0,
            },
        )
        try:
            yield fleet, emulator, fleet.base["targets"]
        finally:
            fleet.kill_all()


def _assert_no_failures(results: list[dict[str, Any]]) -> None:
    for result in results:
        assert result["failed"] == 0, result["errors"]
        assert result["shared_cache_errors"] == 0, result


@pytest.mark.slow
async def test_eight_processes_cold_mint_once_per_installation(
    fleet_env: tuple[Fleet, ICREmulator, list[tuple[str, str]]],
) -> None:
    fleet, emulator, targets = fleet_env
    workers = [fleet.spawn(f"w{i}") for i in range(8)]
    results = await fleet.run(workers)
    _assert_no_failures(results)
    assert all(r["ok"] == len(targets) for r in results)
    assert len(emulator.stats.mints) == len(targets) == 200
    assert all(n == 1 for n in emulator.stats.mints.values())
    assert sum(r["mints"] for r in results) == 200
    # Every other flight found the token in Redis, at once or after waiting on the lease.
    assert sum(r["shared_cache_hits"] for r in results) == 7 * 200


@pytest.mark.slow
async def test_a_flushed_redis_costs_at_most_one_extra_mint_per_installation(
    fleet_env: tuple[Fleet, ICREmulator, list[tuple[str, str]]], redis_server: RedisServer
) -> None:
    fleet, emulator, targets = fleet_env
    first = await fleet.run([fleet.spawn(f"a{i}") for i in range(4)])
    _assert_no_failures(first)
    assert sum(emulator.stats.mints.values()) == 200
    flush = aioredis.Redis.from_url(redis_server.url)
    await flush.flushall()
    await flush.aclose()
    fleet.go.unlink()
    second = await fleet.run([fleet.spawn(f"b{i}") for i in range(4)])
    _assert_no_failures(second)
    assert all(1 <= emulator.stats.mints[i] <= 2 for i, _ in targets)
    assert sum(emulator.stats.mints.values()) <= 400


@pytest.mark.slow
async def test_a_killed_lease_holder_is_replaced_after_its_lease_expires(
    fleet_env: tuple[Fleet, ICREmulator, list[tuple[str, str]]],
    redis_server: RedisServer,
    private_key_pem: str,
) -> None:
    fleet, emulator, targets = fleet_env
    installation_id, _ = targets[0]
    slow = emulator.faults.add(
        Fault(method="POST", path=MINT_PATH, action="delay", delay=3.0, times=1)
    )
    rds = aioredis.Redis.from_url(redis_server.url)
    cache = RedisTokenCache(redis_server.url, encryption_key=KEY, lease_ttl=1.0)
    client = AsyncICRClient(
        fleet.base["app_id"],
        private_key_pem,
        base_url=fleet.base["base_url"],
        token_cache=cache,
        env=False,
    )
    try:
        fleet.go.touch()
        holder = fleet.spawn("holder", targets=[targets[0]], lease_ttl=1.0)
        lease_name = cache.redis_key(client._cache_key(installation_id)) + ":lease"

        async def holding() -> bool:
            return bool(await rds.exists(lease_name)) and emulator.faults.fired(slow) == 1

        deadline = time.monotonic() + 30
        while not await holding():
            assert time.monotonic() < deadline, "the holder never took the lease"
            assert holder.proc.poll() is None
            await asyncio.sleep(0.05)

        waiting = asyncio.create_task(client.installation(installation_id).get_token())
        deadline = time.monotonic() + 10
        while cache.stats.lease_contended == 0:
            assert time.monotonic() < deadline, "the second worker never met the lease"
            await asyncio.sleep(0.02)
        assert not waiting.done()
        holder.kill()  # mid-mint: its lease is neither released nor renewed any more

        token = await asyncio.wait_for(waiting, 20)
        assert client.stats.total_mints == 1
        assert client.stats.shared_cache_errors == 0  # it minted under the lease, not around it
        assert cache.stats.leases == 1
        assert emulator.stats.mints[installation_id] == 1  # the holder's mint never finished
        assert await cache.get(client._cache_key(installation_id)) == token
    finally:
        await client.aclose()
        await cache.aclose()
        await rds.aclose()


@pytest.mark.slow
async def test_killing_redis_mid_run_fails_no_request(
    own_redis: RedisServer, private_key_pem: str, tmp_path: Path
) -> None:
    emulator = ICREmulator(seed=12)
    app = emulator.create_app(100, private_key_pem=private_key_pem)
    key_path = tmp_path / "app.pem"
    key_path.write_text(private_key_pem)
    async with emulator.serve() as server:
        fleet = Fleet(
            tmp_path,
            {
                "base_url": server.url,
                "app_id": app.app_id,
                "key_path": str(key_path),
                "redis_url": own_redis.url,
                "encryption_key": KEY.hex(),
                "targets": _targets(emulator, app.app_id),
                # A memory of 8 tokens for 100 installations: every worker keeps asking
                # Redis, so the outage lands in the middle of real traffic.
                "l1_size": 8,
                "retry_after": 0.3,
                "stop_path": str(tmp_path / "stop"),
            },
        )
        try:
            workers = [fleet.spawn(f"w{i}") for i in range(4)]
            await fleet.wait(lambda: all(w.ready for w in workers), "workers to be ready")
            fleet.go.touch()

            def progress() -> list[dict[str, Any]]:
                return [w.progress() or {"rounds": 0} for w in workers]

            await fleet.wait(lambda: all(p["rounds"] >= 1 for p in progress()), "first rounds")
            own_redis.kill()
            await fleet.wait(
                lambda: all(p.get("shared_cache_errors", 0) > 0 for p in progress()),
                "every worker to notice the outage",
            )
            hits_before = [p["shared_cache_hits"] for p in progress()]
            own_redis.start()
            await fleet.wait(
                lambda: all(
                    p["shared_cache_hits"] > h and p["cache"]["recoveries"] >= 1
                    for p, h in zip(progress(), hits_before, strict=True)
                ),
                "every worker to share tokens again",
            )
            fleet.stop.touch()
            await fleet.wait(lambda: all(w.proc.poll() is not None for w in workers), "exit")
            results = [w.result() for w in workers]
        finally:
            fleet.kill_all()
    for result in results:
        assert result["failed"] == 0, result["errors"]
        assert result["ok"] == result["rounds"] * 100
