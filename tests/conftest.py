"""Shared fixtures: every async test runs on asyncio in debug mode against the real emulator.

The emulator and the client share one ``ManualClock``, and the client's ``sleep`` advances
that clock instead of waiting, so tests about expiry, backoff and propagation lag run in
milliseconds and never depend on the wall clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, settings

from icr_async import AsyncICRClient, PrivateKey, RetryPolicy
from icr_async.testing import EmulatorServer, ICREmulator, ManualClock, generate_private_key_pem

if TYPE_CHECKING:
    from _redis_server import RedisServer

# How fast Hypothesis draws inputs says nothing about the code under test: on a loaded CI
# machine one draw took 30 s and failed the too_slow health check. Every property test gets
# this default; a test's own @settings still sets its example count.
settings.register_profile("icr", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("icr")

START = 1_780_000_000.0  # a fixed instant, so expiry maths in tests is reproducible


@pytest.fixture(scope="session")
def anyio_backend() -> tuple[str, dict[str, Any]]:
    """Run anyio tests on asyncio only, with the loop's debug checks on."""
    return ("asyncio", {"debug": True})


@pytest.fixture(scope="session")
def private_key_pem() -> str:
    """One 2048-bit app key for the whole run (generating one costs ~100 ms)."""
    return generate_private_key_pem()


@pytest.fixture(scope="session")
def app_private_key(private_key_pem: str) -> PrivateKey:
    """That key loaded once: parsing and validating a PEM costs ~90 ms, and hundreds of
    tests build clients."""
    return PrivateKey.from_pem(private_key_pem)


@pytest.fixture(scope="session")
def other_private_key_pem() -> str:
    """A second key the emulator does not know."""
    return generate_private_key_pem()


class FakeSleep:
    """A ``sleep`` for the client that advances the shared clock instead of waiting."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.calls: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.calls.append(delay)
        self.clock.advance(delay)
        await asyncio.sleep(0)


@pytest.fixture
def clock() -> ManualClock:
    """The clock shared by the emulator and the client."""
    return ManualClock(START)


@pytest.fixture
def fake_sleep(clock: ManualClock) -> FakeSleep:
    """The client's sleep: records delays and moves the clock."""
    return FakeSleep(clock)


@pytest.fixture
def emulator(clock: ManualClock) -> ICREmulator:
    """A fresh emulator on the shared clock."""
    return ICREmulator(clock=clock, seed=7)


@pytest.fixture(scope="session")
def app_public_key_pem(app_private_key: PrivateKey) -> bytes:
    """The app key's public half, made once (loading the private PEM costs ~90 ms)."""
    from cryptography.hazmat.primitives import serialization

    return app_private_key.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture
def app_id(emulator: ICREmulator, app_public_key_pem: bytes) -> str:
    """The app registered with the emulator, with 25 installations."""
    return emulator.add_app(app_public_key_pem, installations=25)


@pytest.fixture
async def server(emulator: ICREmulator) -> AsyncIterator[EmulatorServer]:
    """The emulator served on 127.0.0.1 for the duration of one test."""
    async with emulator.serve() as srv:
        yield srv


@pytest.fixture
async def make_client(
    server: EmulatorServer,
    app_id: str,
    app_private_key: PrivateKey,
    clock: ManualClock,
    fake_sleep: FakeSleep,
) -> AsyncIterator[Any]:
    """Build clients pointed at the emulator; every one is closed at the end of the test."""
    made: list[AsyncICRClient] = []

    def factory(**kwargs: Any) -> AsyncICRClient:
        kwargs.setdefault("app_id", app_id)
        if "signer" not in kwargs and "private_key_path" not in kwargs:
            kwargs.setdefault("private_key", app_private_key)
        kwargs.setdefault("base_url", server.url)
        kwargs.setdefault("clock", clock)
        kwargs.setdefault("sleep", fake_sleep)
        kwargs.setdefault("env", False)
        client = AsyncICRClient(**kwargs)
        made.append(client)
        return client

    yield factory
    for client in made:
        await client.aclose()


@pytest.fixture
async def client(make_client: Any) -> AsyncIterator[AsyncICRClient]:
    """A client on the emulator, closed after the test."""
    c: AsyncICRClient = make_client()
    async with c:
        yield c


@pytest.fixture
async def no_retry_client(make_client: Any) -> AsyncIterator[AsyncICRClient]:
    """A client that never retries, for tests about single failures."""
    c: AsyncICRClient = make_client(retry=RetryPolicy.disabled())
    async with c:
        yield c


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server per test module that asks for it, stopped by PID at the end (a
    module that kills or pauses its server starts its own instead)."""
    from _redis_server import RedisServer, require_redis_server

    server = RedisServer(require_redis_server())
    server.start()
    try:
        yield server
    finally:
        server.stop()
