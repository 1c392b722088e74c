"""Shared back-off: one 429 pauses its scope for every request sharing the store.

The in-process store runs on the shared ``ManualClock`` (no real waiting); the Redis store
runs against a real ``redis-server`` this module starts, and an emulator on the real clock
with its own rate limit. Counts are what the emulator saw.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from _redis_server import RedisServer, require_redis_server

from icr_async import (
    AsyncICRClient,
    BackoffPausedError,
    BackoffStore,
    ConfigurationError,
    MemoryBackoffStore,
    RateLimitedError,
    RetryPolicy,
    ServerError,
)
from icr_async.testing import Fault, ICREmulator, ManualClock
from icr_async.testing._faults import RateLimit

pytestmark = pytest.mark.anyio

LIST = "/app/installations"
KEY = bytes(range(32))


def _org_path(emulator: ICREmulator, app_id: str, index: int = 0) -> tuple[str, str]:
    inst = emulator.installations(app_id)[index]
    return inst["id"], f"/organizations/{inst['organization']['id']}"


# ------------------------------------------------------------------ in one process


async def test_a_429_pauses_every_request_of_the_app_not_only_its_retry(
    make_client: Any, emulator: ICREmulator, app_id: str, fake_sleep: Any
) -> None:
    client: AsyncICRClient = make_client()
    first, first_path = _org_path(emulator, app_id, 0)
    second, second_path = _org_path(emulator, app_id, 1)
    await client.installation(first).get_token()
    await client.installation(second).get_token()
    emulator.faults.add(Fault(method="GET", path=first_path, status=429, retry_after=9))
    await client.installation(first).request("GET", first_path)
    assert fake_sleep.calls == [9.0]  # the retry waited, as before
    # The pause is over for the app now: another installation goes at once.
    await client.installation(second).request("GET", second_path)
    assert fake_sleep.calls == [9.0]

    strict: AsyncICRClient = make_client(retry=RetryPolicy.disabled())
    await strict.installation(first).get_token()
    await strict.installation(second).get_token()
    emulator.faults.add(Fault(method="GET", path=first_path, status=429, retry_after=9))
    before = emulator.stats.total_requests
    with pytest.raises(RateLimitedError):
        await strict.installation(first).request("GET", first_path)
    # Another installation of the same app waits out the server's Retry-After first.
    await strict.installation(second).request("GET", second_path)
    assert fake_sleep.calls == [9.0, 9.0]
    assert emulator.stats.total_requests == before + 2


async def test_a_pause_longer_than_the_call_may_wait_raises_without_sending(
    make_client: Any, emulator: ICREmulator, app_id: str, fake_sleep: Any
) -> None:
    client: AsyncICRClient = make_client(retry=RetryPolicy(max_retry_after=30))
    installation, path = _org_path(emulator, app_id)
    await client.installation(installation).get_token()
    emulator.faults.add(Fault(method="GET", path=path, status=503, retry_after=600, times=1))
    with pytest.raises(ServerError):
        await client.installation(installation).request("GET", path)
    before = emulator.stats.total_requests
    with pytest.raises(BackoffPausedError) as caught:
        await client.list_installations()  # the app's own requests are paused too
    assert caught.value.status == 429
    assert caught.value.retry_after == pytest.approx(600, abs=1)
    assert "not sent" in str(caught.value)
    assert emulator.stats.total_requests == before
    assert fake_sleep.calls == []


async def test_an_installation_scope_pauses_only_that_installation(
    make_client: Any, emulator: ICREmulator, app_id: str, fake_sleep: Any, clock: Any
) -> None:
    store = MemoryBackoffStore(clock=clock, scope="installation")
    client: AsyncICRClient = make_client(backoff=store, retry=RetryPolicy.disabled())
    first, first_path = _org_path(emulator, app_id, 0)
    second, second_path = _org_path(emulator, app_id, 1)
    emulator.faults.add(Fault(method="GET", path=first_path, status=429, retry_after=5))
    with pytest.raises(RateLimitedError):
        await client.installation(first).request("GET", first_path)
    await client.installation(second).request("GET", second_path)
    assert fake_sleep.calls == []
    assert store.remaining(client._app_scope, first) == pytest.approx(5)


async def test_a_429_without_retry_after_pauses_nothing(
    client: AsyncICRClient, emulator: ICREmulator, fake_sleep: Any
) -> None:
    emulator.faults.add(Fault(method="GET", path=LIST, status=429, times=1))
    await client.list_installations()
    assert len(fake_sleep.calls) == 1  # the usual backoff, for this request only
    assert not client._backoff.active


def test_configuration_mistakes(private_key_pem: str) -> None:
    with pytest.raises(ConfigurationError, match="scope"):
        MemoryBackoffStore(scope="org")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="BackoffStore"):
        AsyncICRClient(
            "app",
            private_key_pem,
            backoff=object(),  # type: ignore[arg-type]
            env=False,
        )
    assert isinstance(MemoryBackoffStore(), BackoffStore)


# ---------------------------------------------------------------- the emulator's limit


async def test_the_emulator_rate_limit_answers_429_until_the_window_ends(
    make_client: Any, emulator: ICREmulator, clock: Any
) -> None:
    client: AsyncICRClient = make_client(retry=RetryPolicy.disabled())
    emulator.rate_limiter.limit = RateLimit(requests=3, per=10.0)
    clock.set(1_780_000_000.0)  # the start of a 10-second window
    for _ in range(3):
        await client.list_installations()
    with pytest.raises(RateLimitedError) as caught:
        await client.list_installations()
    assert caught.value.retry_after == 10
    assert emulator.stats.rate_limited == 1
    assert emulator.rate_limiter.periods() == [1]
    clock.advance(10)
    await client.list_installations()  # a new window


# ---------------------------------------------------------------------- across Redis


@pytest.fixture
async def live(private_key_pem: str) -> AsyncIterator[tuple[ICREmulator, str, str]]:
    """An emulator on the real clock with 4 installations: (emulator, app id, url)."""
    emulator = ICREmulator(seed=21)
    app = emulator.create_app(4, private_key_pem=private_key_pem)
    async with emulator.serve() as server:
        yield emulator, app.app_id, server.url


@pytest.fixture
async def fleet_clients(
    redis_server: RedisServer, live: tuple[ICREmulator, str, str], private_key_pem: str
) -> AsyncIterator[Any]:
    """Build clients, each with its own RedisBackoffStore on the module's server."""
    from icr_async.contrib.redis import RedisBackoffStore

    _, app_id, url = live
    made: list[tuple[AsyncICRClient, RedisBackoffStore]] = []

    def factory(**store_kwargs: Any) -> tuple[AsyncICRClient, RedisBackoffStore]:
        store_kwargs.setdefault("op_timeout", 5.0)
        store = RedisBackoffStore(redis_server.url, **store_kwargs)
        client = AsyncICRClient(
            app_id,
            private_key_pem,
            base_url=url,
            backoff=store,
            retry=RetryPolicy(max_retry_after=0.2),
            env=False,
        )
        made.append((client, store))
        return client, store

    yield factory
    for client, store in made:
        await client.aclose()
        await store.aclose()


async def _until(predicate: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


@pytest.mark.redis
async def test_one_workers_429_pauses_another_worker_before_it_sends(
    fleet_clients: Any, live: tuple[ICREmulator, str, str]
) -> None:
    emulator, app_id, _ = live
    first, _ = fleet_clients()
    second, second_store = fleet_clients()
    installation, path = _org_path(emulator, app_id)
    await first.installation(installation).request("GET", path)
    await second.installation(installation).request("GET", path)  # starts its listener
    emulator.faults.add(Fault(method="GET", path=path, status=429, retry_after=30, times=1))
    with pytest.raises(RateLimitedError):
        await first.installation(installation).request("GET", path)
    await _until(lambda: second_store.stats.heard >= 1, "the pause to reach the other worker")
    assert second_store.paused(second._app_scope) == pytest.approx(30, abs=2)
    before = emulator.stats.total_requests
    with pytest.raises(BackoffPausedError):
        await second.installation(installation).request("GET", path)
    with pytest.raises(BackoffPausedError):
        await second.list_installations()  # the whole app, JWT requests included
    assert emulator.stats.total_requests == before
    # A worker that starts during the pause (a restart, a deploy) waits from its first call.
    third, third_store = fleet_clients()
    with pytest.raises(BackoffPausedError):
        await third.list_installations()
    assert third_store.paused(third._app_scope) == pytest.approx(30, abs=2)
    assert emulator.stats.total_requests == before


@pytest.mark.redis
async def test_a_fleet_rate_keeps_the_fleet_under_the_servers_limit(
    fleet_clients: Any, live: tuple[ICREmulator, str, str]
) -> None:
    emulator, app_id, _ = live
    clients = [fleet_clients(rate=(20, 1.0))[0] for _ in range(2)]
    installation, path = _org_path(emulator, app_id)
    for client in clients:
        await client.installation(installation).get_token()
    emulator.rate_limiter.limit = RateLimit(requests=25, per=1.0)

    async def burst(client: AsyncICRClient) -> None:
        for _ in range(15):
            await client.installation(installation).request("GET", path)

    await asyncio.gather(*(burst(c) for c in clients))
    assert emulator.stats.rate_limited == 0


@pytest.mark.redis
async def test_redis_down_keeps_pauses_per_process_and_fails_nothing(
    live: tuple[ICREmulator, str, str], private_key_pem: str
) -> None:
    from icr_async.contrib.redis import RedisBackoffStore

    emulator, app_id, url = live
    server = RedisServer(require_redis_server())
    server.start()
    store = RedisBackoffStore(server.url, retry_after=0.2, op_timeout=0.5)
    client = AsyncICRClient(
        app_id,
        private_key_pem,
        base_url=url,
        backoff=store,
        retry=RetryPolicy(max_retry_after=2),
        env=False,
    )
    try:
        installation, path = _org_path(emulator, app_id)
        await client.installation(installation).request("GET", path)
        server.kill()
        emulator.faults.add(Fault(method="GET", path=path, status=429, retry_after=1, times=1))
        for _ in range(5):
            await client.installation(installation).request("GET", path)
        assert store.stats.pauses == 1
        assert store.stats.errors >= 1
    finally:
        await client.aclose()
        await store.aclose()
        server.stop()


# ------------------------------------------------------------- the adaptive fleet rate


APP = "app-1@https://icr.test"


async def _429(store: Any, seconds: float = 1.0, installation: str | None = None) -> None:
    """A 429 with ``Retry-After: seconds``, then its echo on the channel: the echo restarts
    the local pause from the clock's now, so the manual clock moves only after it."""
    if not store.stats.reconnects:  # the first check starts the listener
        await store.wait_time(APP, None)
        await _until(lambda: store.stats.reconnects > 0, "the listener")
    heard = store.stats.heard
    await store.pause(APP, installation, seconds)
    await _until(lambda: store.stats.heard > heard, "the pause's echo")


@pytest.fixture
async def adaptive(redis_server: RedisServer) -> AsyncIterator[tuple[Any, ManualClock]]:
    """Stores on a flushed Redis whose scripts and local tables run on one ManualClock."""
    from icr_async.contrib.redis import RedisBackoffStore

    flush = aioredis.Redis.from_url(redis_server.url)
    await flush.flushall()
    await flush.aclose()
    clock = ManualClock(1_780_000_000.0)
    made: list[RedisBackoffStore] = []

    def factory(**kwargs: Any) -> RedisBackoffStore:
        store = RedisBackoffStore(
            redis_server.url, clock=clock, script_clock=clock, op_timeout=5.0, **kwargs
        )
        made.append(store)
        return store

    yield factory, clock
    for store in made:
        await store.aclose()


async def _send(
    store: Any, clock: ManualClock, count: int, installation: str | None = None
) -> None:
    """``count`` requests as the client sends them: wait for the slot, then go."""
    for _ in range(count):
        for _ in range(10):  # a slot is taken on the second check at the latest
            wait = await store.wait_time(APP, installation)
            if wait <= 0:
                break
            clock.advance(wait)
        else:
            raise AssertionError("no slot after 10 checks")


@pytest.mark.redis
async def test_a_limited_scope_learns_the_rate_the_server_allowed(adaptive: Any) -> None:
    from icr_async.contrib._redis_adaptive import START_RATE

    factory, clock = adaptive
    store = factory()
    assert await store.wait_time(APP, None) == 0
    assert not store.active  # never limited: the client does not even ask the store
    await _429(store)  # the first 429: the scope is limited now
    assert store.active
    assert await store.learned_rate(APP) == START_RATE
    clock.advance(1.0)
    # Spaced at the start rate (10 ms apart), 20 requests pass and the 21st gets a 429
    # 200 ms after the pause ended, with Retry-After 1 s: 20 requests in 1.2 s.
    await _send(store, clock, 21)
    await _429(store)
    assert await store.learned_rate(APP) == pytest.approx(20 / 1.2, rel=0.01)
    # A 429 that was in flight in the same period teaches nothing more.
    await store.pause(APP, None, 0.5)
    assert await store.learned_rate(APP) == pytest.approx(20 / 1.2, rel=0.01)


@pytest.mark.redis
async def test_a_used_rate_is_raised_and_a_failed_probe_backs_off(adaptive: Any) -> None:
    factory, clock = adaptive
    store = factory()
    await _429(store)
    clock.advance(1.0)
    await _send(store, clock, 21)
    await _429(store)
    learned = await store.learned_rate(APP)
    assert learned is not None
    clock.advance(1.0)
    # A stretch (2 s: twice Retry-After) the fleet barely uses: the rate stays.
    await _send(store, clock, 2)
    clock.advance(2.0)
    await _send(store, clock, 1)
    assert await store.learned_rate(APP) == pytest.approx(learned)
    # A stretch the fleet uses fully without a 429: raised by 15%.
    await _send(store, clock, int(2.0 * learned) + 2)
    raised = await store.learned_rate(APP)
    assert raised == pytest.approx(learned * 1.15, rel=0.01)
    # The probe draws a 429: back to the rate that held.
    await _send(store, clock, 3)
    await _429(store)
    assert await store.learned_rate(APP) == pytest.approx(learned)
    # A 429 at a rate that had held (the limit fell): down by a quarter.
    clock.advance(1.0)
    await _send(store, clock, 3)
    await _429(store)
    assert await store.learned_rate(APP) == pytest.approx(learned * 0.75, rel=0.01)


@pytest.mark.redis
async def test_scopes_never_limited_never_ask_redis(adaptive: Any) -> None:
    factory, clock = adaptive
    store = factory(scope="installation")
    await store.wait_time(APP, "inst-b")  # the once-per-app read
    await _429(store, installation="inst-a")
    clock.advance(1.0)
    before = store.stats.commands
    for _ in range(50):
        assert await store.wait_time(APP, "inst-b") == 0
    assert store.stats.commands == before
    await _send(store, clock, 3, "inst-a")  # the limited one does
    assert store.stats.commands > before
    assert store.stats.limited >= 1


@pytest.mark.redis
async def test_a_limited_scope_is_forgotten_after_the_hold(adaptive: Any) -> None:
    factory, clock = adaptive
    store = factory(adaptive_hold=5.0)
    await store.wait_time(APP, None)
    await _429(store)
    clock.advance(1.0)
    await _send(store, clock, 2)
    assert store.active
    clock.advance(6.0)  # no 429 and no request held back for longer than the hold
    assert await store.wait_time(APP, None) == 0
    assert not store.active
    # Another worker arriving now finds nothing limited either.
    late = factory(adaptive_hold=5.0)
    assert await late.wait_time(APP, None) == 0
    assert not late.active


@pytest.mark.redis
async def test_a_worker_starting_while_the_app_is_limited_takes_slots(adaptive: Any) -> None:
    factory, clock = adaptive
    first = factory()
    await _429(first)
    clock.advance(1.0)
    late = factory()
    assert await late.wait_time(APP, None) == 0  # reads the pause and the limit once
    assert late.active
    assert await late.wait_time(APP, None) > 0  # 10 ms after the first slot


def test_adaptive_configuration_mistakes() -> None:
    from icr_async.contrib.redis import RedisBackoffStore

    url = "redis://127.0.0.1:1/0"
    with pytest.raises(ConfigurationError, match="adaptive"):
        RedisBackoffStore(url, adaptive=True, rate=(10, 1.0))
    with pytest.raises(ConfigurationError, match="adaptive_hold"):
        RedisBackoffStore(url, adaptive_hold=0)
    with pytest.raises(ConfigurationError, match="adaptive"):
        RedisBackoffStore(url, adaptive="yes")  # type: ignore[arg-type]
    assert RedisBackoffStore(url).adaptive
    assert not RedisBackoffStore(url, rate=(10, 1.0)).adaptive
