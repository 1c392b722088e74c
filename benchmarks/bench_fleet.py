"""Fleet: token mints per refresh period for N worker processes, with and without Redis.

Two questions, one run (``python -m benchmarks.bench_fleet``, about a minute):

1. **Mints.** N worker processes (1, 4, 8) each ask for every one of 100 installations once
   per refresh period. The emulator runs in this process on a background thread; its clock
   and every worker's clock read one shared offset (``multiprocessing`` shared memory), so
   a "period" is a jump of the clock past the refresh margin, not an hour of waiting. Counted
   by the emulator: mints per installation, cold and per refresh, with each worker keeping
   its own in-memory cache (the default) and with ``RedisTokenCache`` shared by all.
2. **Warm cost.** Per-request time of a warm client on the in-memory cache against one on
   ``RedisTokenCache`` (interleaved slices, ratio of medians per round), and of one whose
   every request misses its in-process layer and is served from Redis; plus the raw cost of
   one ``get`` from each cache.

Needs a ``redis-server`` binary (Debian's package); it is started on 127.0.0.1 on a free
port without persistence and stopped by PID at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import multiprocessing
import os
import queue
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from multiprocessing.sharedctypes import Synchronized
from typing import Any

from icr_async import AsyncICRClient, MemoryTokenCache, Token
from icr_async.testing import EmulatorServer, ICREmulator, generate_private_key_pem

from ._harness import fmt_ratio, ratio_stats, table

REFRESH_MARGIN = 300.0
TOKEN_TTL = 7200.0
STEP_TIMEOUT = 60.0  # the longest any one step may take before the run is abandoned


# ------------------------------------------------------------------------ the pieces


class SharedClock:
    """``time.time()`` plus an offset every process reads from shared memory."""

    def __init__(self, offset: Synchronized[float]) -> None:
        self._offset = offset

    def __call__(self) -> float:
        return time.time() + self._offset.value

    def advance(self, seconds: float) -> None:
        """Move every process's clock forward."""
        self._offset.value += seconds


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pong(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextlib.contextmanager
def redis_server(binary: str) -> Iterator[str]:
    """``redis-server`` on a free loopback port, no persistence; killed by PID at the end."""
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="icr-bench-redis-") as tmp:
        proc = subprocess.Popen(
            [
                *(binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""),
                *("--appendonly", "no", "--dir", tmp, "--loglevel", "warning"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 15
            while not _pong(port):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start")
                time.sleep(0.02)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


class EmulatorThread:
    """The emulator served by an event loop on a background thread of this process."""

    def __init__(self, emulator: ICREmulator) -> None:
        self.emulator = emulator
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: EmulatorServer | None = None

    def __enter__(self) -> str:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self.emulator.start(), self._loop)
        self._server = future.result(timeout=STEP_TIMEOUT)
        return self._server.url

    def __exit__(self, *exc_info: object) -> None:
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(self._server.close(), self._loop).result(
                timeout=STEP_TIMEOUT
            )
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def total_mints(self) -> int:
        """Installation-token mints so far (read while the workers are idle)."""
        return sum(self.emulator.stats.mints.values())


def _flushall(url: str) -> None:
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"FLUSHALL\r\n")
        if not sock.recv(16).startswith(b"+OK"):
            raise RuntimeError("FLUSHALL failed")


# ------------------------------------------------------------------ worker processes


def _worker(
    worker_id: int,
    commands: multiprocessing.Queue[tuple[Any, ...]],
    replies: multiprocessing.Queue[tuple[Any, ...]],
    clock: SharedClock,
    config: dict[str, Any],
) -> None:
    """One worker process: builds clients and sweeps the installations when told to."""
    from icr_async.contrib.redis import RedisTokenCache

    loop = asyncio.new_event_loop()
    client: AsyncICRClient | None = None
    cache: RedisTokenCache | None = None
    targets: list[tuple[str, str]] = config["targets"]

    async def build(shared: bool) -> None:
        nonlocal client, cache
        cache = (
            RedisTokenCache(
                config["redis_url"],
                encryption_key=bytes.fromhex(config["encryption_key"]),
                op_timeout=config["op_timeout"],
            )
            if shared
            else None
        )
        client = AsyncICRClient(
            config["app_id"],
            config["private_key_pem"],
            base_url=config["base_url"],
            token_cache=cache,
            refresh_margin=REFRESH_MARGIN,
            clock=clock,
            env=False,
        )

    async def sweep() -> int:
        active = client
        assert active is not None
        limit = asyncio.Semaphore(50)

        async def one(installation_id: str, path: str) -> bool:
            async with limit:
                try:
                    await active.installation(installation_id).request("GET", path)
                except Exception:
                    return False
                return True

        results = await asyncio.gather(*(one(i, p) for i, p in targets))
        return results.count(False)

    async def close() -> None:
        nonlocal client, cache
        if client is not None:
            await client.aclose()
        if cache is not None:
            await cache.aclose()
        client = cache = None

    try:
        while True:  # bounded: every get times out, and the parent always ends with "exit"
            command = commands.get(timeout=STEP_TIMEOUT * 3)
            if command[0] == "start":
                loop.run_until_complete(build(command[1]))
                replies.put(("started", worker_id))
            elif command[0] == "sweep":
                failed = loop.run_until_complete(sweep())
                assert client is not None
                replies.put(("swept", worker_id, failed, client.stats.shared_cache_errors))
            elif command[0] == "close":
                loop.run_until_complete(close())
                replies.put(("closed", worker_id))
            else:
                break
    finally:
        loop.run_until_complete(close())
        loop.close()


class Pool:
    """Worker processes started once (spawn) and reused by every scenario."""

    def __init__(self, size: int, clock: SharedClock, config: dict[str, Any]) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.replies: multiprocessing.Queue[tuple[Any, ...]] = ctx.Queue()
        self.commands: list[multiprocessing.Queue[tuple[Any, ...]]] = [
            ctx.Queue() for _ in range(size)
        ]
        self.procs = [
            ctx.Process(
                target=_worker,
                args=(i, self.commands[i], self.replies, clock, config),
                daemon=True,
            )
            for i in range(size)
        ]
        for proc in self.procs:
            proc.start()

    def ask(self, n: int, *command: Any) -> list[tuple[Any, ...]]:
        """Send ``command`` to the first ``n`` workers and collect their ``n`` replies."""
        for q in self.commands[:n]:
            q.put(command)
        replies: list[tuple[Any, ...]] = []
        deadline = time.monotonic() + STEP_TIMEOUT
        while len(replies) < n:
            try:
                replies.append(self.replies.get(timeout=max(0.1, deadline - time.monotonic())))
            except queue.Empty:
                dead = [p.pid for p in self.procs if not p.is_alive()]
                raise RuntimeError(
                    f"workers did not answer {command[0]!r} (dead: {dead})"
                ) from None
        return replies

    def close(self) -> None:
        """Ask every worker to exit; kill by PID whoever does not."""
        for q in self.commands:
            with contextlib.suppress(Exception):
                q.put(("exit",))
        for proc in self.procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)


# ------------------------------------------------------------------------ scenarios


def _mints_scenario(
    pool: Pool,
    emulator: EmulatorThread,
    clock: SharedClock,
    *,
    workers: int,
    shared: bool,
    installations: int,
    periods: int,
    redis_url: str,
) -> dict[str, Any]:
    _flushall(redis_url)
    pool.ask(workers, "start", shared)
    per_period: list[float] = []
    failed = errors = 0
    for period in range(periods + 1):
        if period:
            # Past the refresh margin of every token minted last period.
            clock.advance(TOKEN_TTL - REFRESH_MARGIN + 5)
        before = emulator.total_mints()
        replies = pool.ask(workers, "sweep")
        per_period.append((emulator.total_mints() - before) / installations)
        failed += sum(r[2] for r in replies)
        errors = max(errors, sum(r[3] for r in replies))
    pool.ask(workers, "close")
    return {
        "workers": workers,
        "shared": shared,
        "cold": per_period[0],
        "refresh": statistics.mean(per_period[1:]) if periods else float("nan"),
        "per_period": per_period,
        "failed": failed,
        "shared_cache_errors": errors,
    }


async def _latency(
    base_url: str,
    app_id: str,
    pem: str,
    redis_url: str,
    targets: list[tuple[str, str]],
    clock: SharedClock,
    *,
    rounds: int,
    slice_requests: int,
) -> dict[str, Any]:
    import redis.asyncio as aioredis

    from icr_async.contrib.redis import RedisTokenCache

    _flushall(redis_url)
    key = secrets.token_bytes(32)
    caches = [RedisTokenCache(redis_url, encryption_key=key) for _ in range(2)]
    common: dict[str, Any] = {"base_url": base_url, "clock": clock, "env": False}
    contenders = {
        "in-memory cache (default)": AsyncICRClient(app_id, pem, **common),
        "RedisTokenCache, warm": AsyncICRClient(app_id, pem, token_cache=caches[0], **common),
        # A one-entry in-process layer: every request misses it and is served from Redis.
        "RedisTokenCache, every request from Redis": AsyncICRClient(
            app_id, pem, token_cache=caches[1], token_cache_size=1, **common
        ),
    }
    scoped = {
        name: [(client.installation(i), p) for i, p in targets]
        for name, client in contenders.items()
    }

    async def slice_(name: str, n: int) -> float:
        pairs = scoped[name]
        limit = asyncio.Semaphore(16)

        async def one(k: int) -> None:
            inst, path = pairs[k % len(pairs)]
            async with limit:
                await inst.request("GET", path)

        started = time.perf_counter()
        await asyncio.gather(*(one(k) for k in range(n)))
        return (time.perf_counter() - started) / n * 1e6

    try:
        for name in contenders:  # warm every cache and connection pool
            await slice_(name, len(targets))
        series: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in range(rounds):  # interleaved A B C A B C ...: the machine drifts
            for name in contenders:
                series[name].append(await slice_(name, slice_requests))

        token = Token(
            token="crs_" + "x" * 40,
            expires_at=datetime.datetime.fromtimestamp(time.time() + 3600, datetime.timezone.utc),
        )
        memory = MemoryTokenCache()
        await memory.set("bench|k", token, ttl=3600)
        await caches[0].set("bench|k", token, ttl=3600)
        raw = aioredis.Redis.from_url(redis_url)
        name = caches[0].redis_key("bench|k")
        getters: dict[str, Callable[[], Awaitable[Any]]] = {
            "MemoryTokenCache.get": functools.partial(memory.get, "bench|k"),
            "RedisTokenCache.get (round trip + decrypt)": functools.partial(
                caches[0].get, "bench|k"
            ),
            "redis-py GET alone (for reference)": functools.partial(raw.get, name),
        }
        lookups: dict[str, list[float]] = {label: [] for label in getters}
        try:
            for _ in range(rounds):  # interleaved too
                for label, get in getters.items():
                    started = time.perf_counter()
                    for _ in range(200):
                        await get()
                    lookups[label].append((time.perf_counter() - started) / 200 * 1e6)
        finally:
            await raw.aclose()
        get_us = {label: statistics.median(samples) for label, samples in lookups.items()}
    finally:
        for client in contenders.values():
            await client.aclose()
        for cache in caches:
            await cache.aclose()
    base = series["in-memory cache (default)"]
    return {
        "us_per_request": {name: statistics.median(s) for name, s in series.items()},
        "ratio": {name: ratio_stats(s, base) for name, s in series.items()},
        "get_us": get_us,
    }


# ------------------------------------------------------------------------------ run


def run(
    *,
    workers: tuple[int, ...] = (1, 4, 8),
    installations: int = 100,
    periods: int = 3,
    latency_rounds: int = 20,
    slice_requests: int = 400,
    op_timeout: float = 0.5,
) -> dict[str, Any]:
    """Run both parts, print markdown tables, return the numbers."""
    binary = shutil.which("redis-server")
    if binary is None:
        print("\n### Fleet: skipped (no redis-server binary; apt-get install redis-server)\n")
        return {"skipped": "no redis-server binary"}
    ctx = multiprocessing.get_context("spawn")
    offset: Synchronized[float] = ctx.Value("d", 0.0)
    clock = SharedClock(offset)
    emulator = ICREmulator(clock=clock, seed=3, installation_token_ttl=TOKEN_TTL)
    pem = generate_private_key_pem()
    app = emulator.create_app(installations, private_key_pem=pem)
    targets = [
        (inst["id"], f"/organizations/{inst['organization']['id']}")
        for inst in emulator.installations(app.app_id)
    ]
    started = time.monotonic()
    served = EmulatorThread(emulator)
    with redis_server(binary) as redis_url, served as base_url:
        config = {
            "base_url": base_url,
            "app_id": app.app_id,
            "private_key_pem": pem,
            "redis_url": redis_url,
            "encryption_key": secrets.token_hex(32),
            "targets": targets,
            "op_timeout": op_timeout,
        }
        pool = Pool(max(workers), clock, config)
        try:
            scenarios = [
                _mints_scenario(
                    pool,
                    served,
                    clock,
                    workers=n,
                    shared=shared,
                    installations=installations,
                    periods=periods,
                    redis_url=redis_url,
                )
                for n in workers
                for shared in (False, True)
            ]
        finally:
            pool.close()
        latency = asyncio.run(
            _latency(
                base_url,
                app.app_id,
                pem,
                redis_url,
                targets,
                clock,
                rounds=latency_rounds,
                slice_requests=slice_requests,
            )
        )
    elapsed = time.monotonic() - started

    by_key = {(s["workers"], s["shared"]): s for s in scenarios}
    rows = []
    for n in workers:
        alone, shared = by_key[(n, False)], by_key[(n, True)]
        rows.append(
            [
                n,
                installations,
                f"{alone['cold']:.2f}",
                f"{shared['cold']:.2f}",
                f"{alone['refresh']:.2f}",
                f"{shared['refresh']:.2f}",
                alone["failed"] + shared["failed"],
                shared["shared_cache_errors"],
            ]
        )
    print(f"\n### Fleet: mints per installation ({periods} refresh periods, emulator clock)\n")
    print(
        table(
            [
                "workers",
                "installations",
                "cold, in-memory only",
                "cold, RedisTokenCache",
                "per refresh, in-memory only",
                "per refresh, RedisTokenCache",
                "failed requests",
                "Redis errors",
            ],
            rows,
        )
    )
    print("\n### Warm per-request cost of the Redis layer (interleaved, in-process emulator)\n")
    base_name = "in-memory cache (default)"
    print(
        table(
            ["client", "µs / request (median)", f"ratio to {base_name}"],
            [
                [name, f"{us:.0f}", fmt_ratio(latency["ratio"][name])]
                for name, us in latency["us_per_request"].items()
                if name != base_name
            ]
            + [[base_name, f"{latency['us_per_request'][base_name]:.0f}", "1.00x"]],
        )
    )
    print()
    print(
        table(
            ["one cache lookup", "µs"],
            [[name, f"{us:.1f}"] for name, us in latency["get_us"].items()],
        )
    )
    print(f"\n(fleet benchmark took {elapsed:.0f} s)")
    return {"mints": scenarios, "latency": latency, "seconds": elapsed}


if __name__ == "__main__":
    run()
