"""A throwaway ``redis-server`` per test module, and the fleet worker the tests spawn.

Imported by ``test_redis_cache.py``: :class:`RedisServer` runs Debian's ``redis-server`` on
127.0.0.1 (a free port, no persistence, a temporary directory) and stops it by PID.
:func:`require_redis_server` skips when the binary is missing, unless ``ICR_REQUIRE_REDIS``
is set (CI sets it), in which case a missing binary fails the test.

Run as a script (``python tests/_redis_server.py CONFIG.json``) it is one worker of a fleet:
it builds an ``AsyncICRClient`` sharing tokens through ``RedisTokenCache`` and asks for one
token and one request per installation, once or in rounds until told to stop, writing what it
saw as JSON. With ``"mode"`` in its config it shares idempotency keys and back-off too:
``actions`` retires credits under idempotency keys, ``hammer`` sends GETs against a rate
limit, ``mixed`` does both at once (retrying keyed actions refused while Redis is down).
Every wait in it is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any


def require_redis_server() -> str:
    """The path of ``redis-server``; skip (or fail, under ``ICR_REQUIRE_REDIS``) without it."""
    import pytest

    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("ICR_REQUIRE_REDIS"):
            pytest.fail(
                "ICR_REQUIRE_REDIS is set but there is no redis-server binary on PATH "
                "(.ci/run installs Debian's redis-server package)"
            )
        pytest.skip(
            "no redis-server binary on PATH: install it (apt-get install redis-server) to run "
            "the shared token cache tests; CI runs them with ICR_REQUIRE_REDIS=1"
        )
    return binary


def free_port() -> int:
    """A port nothing listens on right now (redis-server cannot pick one itself)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pong(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """``redis-server`` on 127.0.0.1 in a temp dir, no persistence; stopped by PID.

    ``appendonly=True`` persists every write before answering it (``appendonly yes``,
    ``appendfsync always``) in the temp dir, which outlives :meth:`kill`: a restart after a
    crash then has every key back, as a Redis holding idempotency keys must.
    """

    def __init__(self, binary: str, port: int | None = None, *, appendonly: bool = False) -> None:
        self.binary = binary
        self.port = port if port is not None else free_port()
        self.appendonly = appendonly
        self._tmp = tempfile.TemporaryDirectory(prefix="icr-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 15.0) -> None:
        """Start (or restart, on the same port) and wait until it answers PING."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("redis-server is already running")
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes" if self.appendonly else "no",
                "--appendfsync",
                "always",
                "--dir",
                self._tmp.name,
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while not _pong(self.port):
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer on port {self.port}")
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL, as a crash would; waits for the process to go."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def pause(self) -> None:
        """SIGSTOP: Redis keeps its connections but answers nothing (a slow server)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """SIGTERM (SIGKILL after 10 s), then remove the temp dir. Idempotent."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGCONT)  # a paused server cannot act on SIGTERM
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self._tmp.cleanup()


class Worker:
    """One fleet worker subprocess (this file run as a script) and its files."""

    def __init__(self, directory: Path, name: str, config: dict[str, Any]) -> None:
        self.name = name
        self.result_path = directory / f"{name}.result.json"
        self.progress_path = directory / f"{name}.progress.json"
        self.ready_path = directory / f"{name}.ready"
        config = {
            **config,
            "result_path": str(self.result_path),
            "progress_path": str(self.progress_path),
            "ready_path": str(self.ready_path),
        }
        config_path = directory / f"{name}.config.json"
        config_path.write_text(json.dumps(config))
        with open(directory / f"{name}.stderr", "wb") as stderr:  # the child keeps its copy
            self.proc = subprocess.Popen(
                [sys.executable, __file__, str(config_path)],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )

    @property
    def ready(self) -> bool:
        """Whether the worker built its client and waits for the go signal."""
        return self.ready_path.exists()

    def progress(self) -> dict[str, Any] | None:
        """The last progress record of a looping worker."""
        try:
            data: dict[str, Any] = json.loads(self.progress_path.read_text())
        except (OSError, ValueError):
            return None
        return data

    def stderr(self) -> str:
        """The end of what the worker wrote to stderr."""
        return (self.result_path.parent / f"{self.name}.stderr").read_text()[-3000:]

    def result(self) -> dict[str, Any]:
        """What the worker saw; fails with its stderr when it wrote nothing."""
        if not self.result_path.exists():
            raise AssertionError(f"worker {self.name} wrote no result; stderr:\n{self.stderr()}")
        data: dict[str, Any] = json.loads(self.result_path.read_text())
        return data

    def kill(self) -> None:
        """SIGKILL and reap (idempotent)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


class Fleet:
    """Worker processes against one emulator and one Redis; all killed at the end."""

    def __init__(self, directory: Path, base: dict[str, Any]) -> None:
        self.directory = directory
        self.base = base
        self.workers: list[Worker] = []
        self.go = directory / "go"
        self.stop = directory / "stop"

    def spawn(self, name: str, **overrides: Any) -> Worker:
        config = {
            **self.base,
            "go_path": str(self.go),
            "seed": len(self.workers),
            **overrides,
        }
        worker = Worker(self.directory, name, config)
        self.workers.append(worker)
        return worker

    async def wait(self, predicate: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            dead = [w for w in self.workers if w.proc.poll() not in (None, 0)]
            if dead:
                raise AssertionError(
                    f"worker {dead[0].name} died while waiting for {what}:\n{dead[0].stderr()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            await asyncio.sleep(0.05)

    async def run(self, workers: list[Worker]) -> list[dict[str, Any]]:
        await self.wait(lambda: all(w.ready for w in workers), "workers to be ready")
        self.go.touch()
        await self.wait(lambda: all(w.proc.poll() is not None for w in workers), "workers")
        return [w.result() for w in workers]

    def kill_all(self) -> None:
        for worker in self.workers:
            worker.kill()


# ------------------------------------------------------------------------ worker side


# Signal files on a local disk: microseconds, so plain blocking calls are fine in the worker.
@contextlib.asynccontextmanager
async def serve_fleet(
    emulator: Any,
    private_key_pem: str,
    directory: Path,
    *,
    installations: int,
    redis_url: str,
    encryption_key: bytes,
    **config: Any,
) -> AsyncIterator[tuple[Fleet, str]]:
    """An app with ``installations`` on ``emulator``, served on the real clock, and a
    :class:`Fleet` of workers pointed at it and at ``redis_url`` (``config`` adds to their
    configuration); every worker is killed at the end. Yields the fleet and the app id."""
    app = emulator.create_app(installations, private_key_pem=private_key_pem)
    key_path = directory / "app.pem"
    key_path.write_text(private_key_pem)
    async with emulator.serve() as server:
        fleet = Fleet(
            directory,
            {
                "base_url": server.url,
                "app_id": app.app_id,
                "key_path": str(key_path),
                "redis_url": redis_url,
                "encryption_key": encryption_key.hex(),
                **config,
            },
        )
        try:
            yield fleet, app.app_id
        finally:
            fleet.kill_all()


def _touch(path: str) -> None:
    Path(path).touch()


def _exists(path: str) -> bool:
    return os.path.exists(path)


def _write_json(path: str, data: dict[str, Any]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(data, fh)
    os.replace(tmp, path)  # readers never see half a file


async def _worker(config: dict[str, Any]) -> None:
    import asyncio
    import random

    from icr_async import AsyncICRClient
    from icr_async.contrib.redis import RedisTokenCache

    cache = RedisTokenCache(
        config["redis_url"],
        encryption_key=bytes.fromhex(config["encryption_key"]),
        lease_ttl=config.get("lease_ttl", 5.0),
        op_timeout=config.get("op_timeout", 0.5),
        retry_after=config.get("retry_after", 5.0),
    )
    client = AsyncICRClient(
        config["app_id"],
        private_key_path=config["key_path"],
        base_url=config["base_url"],
        token_cache=cache,
        token_cache_size=config.get("l1_size", 10_000),
        env=False,
    )
    targets: list[list[str]] = config["targets"]
    rng = random.Random(config.get("seed", 0))
    limit = asyncio.Semaphore(config.get("concurrency", 64))
    failures: list[str] = []
    ok = 0

    async def one(installation_id: str, path: str) -> None:
        nonlocal ok
        async with limit:
            try:
                scoped = client.installation(installation_id)
                await scoped.get_token()
                await scoped.request("GET", path)
            except Exception as exc:
                failures.append(type(exc).__name__)
            else:
                ok += 1

    def snapshot(rounds: int) -> dict[str, Any]:
        return {
            "rounds": rounds,
            "ok": ok,
            "failed": len(failures),
            "errors": failures[:10],
            "mints": client.stats.total_mints,
            "shared_cache_hits": client.stats.shared_cache_hits,
            "shared_cache_errors": client.stats.shared_cache_errors,
            "cache": cache.stats.as_dict(),
        }

    deadline = time.monotonic() + float(config.get("max_seconds", 60.0))
    async with client:
        _touch(config["ready_path"])
        while not _exists(config["go_path"]):  # bounded by the deadline
            if time.monotonic() > deadline:
                raise RuntimeError("no go signal")
            await asyncio.sleep(0.01)
        rounds = 0
        stop: str | None = config.get("stop_path")
        while True:  # once, or in rounds until the stop file (bounded by the deadline)
            order = list(targets)
            rng.shuffle(order)
            await asyncio.gather(*(one(i, p) for i, p in order))
            rounds += 1
            if stop is None or _exists(stop) or time.monotonic() > deadline:
                break
            _write_json(config["progress_path"], snapshot(rounds))
            await asyncio.sleep(0.02)
        _write_json(config["result_path"], snapshot(rounds))
    await cache.aclose()


async def _go(config: dict[str, Any], deadline: float) -> None:
    import asyncio

    _touch(config["ready_path"])
    while not _exists(config["go_path"]):  # bounded by the deadline
        if time.monotonic() > deadline:
            raise RuntimeError("no go signal")
        await asyncio.sleep(0.01)


async def _fleet_worker(config: dict[str, Any]) -> None:
    """Modes ``actions`` (keyed retirements) and ``hammer`` (GETs against a rate limit)."""
    import asyncio
    import random
    from collections import Counter

    from icr_async import (
        ActionOutcomeUnknownError,
        AsyncICRClient,
        DuplicateActionError,
        RequestEvent,
        ResponseEvent,
        RetirementData,
        Timeouts,
    )
    from icr_async.contrib.redis import (
        RedisBackoffStore,
        RedisIdempotencyStore,
        RedisTokenCache,
        SharedCacheUnavailableError,
    )

    cache = RedisTokenCache(
        config["redis_url"],
        encryption_key=bytes.fromhex(config["encryption_key"]),
        op_timeout=config.get("op_timeout", 0.5),
        retry_after=config.get("retry_after", 5.0),
    )
    idem = RedisIdempotencyStore(cache, lease=config.get("lease"))
    backoff = (
        RedisBackoffStore(cache, **config.get("backoff_options", {}))
        if config.get("shared_backoff", True)
        else None
    )

    class Today:
        """No shared pauses at all: each request honours only its own Retry-After."""

        active = False

        async def wait_time(self, app: str, installation: str | None) -> float:
            return 0.0

        async def pause(self, app: str, installation: str | None, seconds: float) -> None:
            return None

    stall = config.get("stall_path")
    stall_before = config.get("stall_before_path")

    async def on_response(event: ResponseEvent) -> None:
        # The crash window: the server answered, the worker has not recorded it yet.
        if stall and "/inventory/requests/" in event.path and event.status is not None:
            _touch(stall)
            await asyncio.sleep(3600)

    async def on_request(event: RequestEvent) -> None:
        # The other crash window: the key is claimed, the action has not left yet.
        if stall_before and event.method == "POST" and "/inventory/requests/" in event.path:
            _touch(stall_before)
            await asyncio.sleep(3600)

    client = AsyncICRClient(
        config["app_id"],
        private_key_path=config["key_path"],
        base_url=config["base_url"],
        token_cache=cache,
        idempotency_store=idem,
        backoff=backoff if backoff is not None else Today(),
        timeouts=Timeouts(total=config.get("total_timeout", 30.0)),
        on_request=on_request if stall_before else None,
        on_response=on_response if stall else None,
        env=False,
    )
    rng = random.Random(config.get("seed", 0))
    outcomes: Counter[str] = Counter()
    deadline = time.monotonic() + float(config.get("max_seconds", 60.0))

    def snapshot() -> dict[str, Any]:
        return {
            "outcomes": dict(outcomes),
            "requests": client.stats.requests,
            "backoff": None if backoff is None else backoff.stats.as_dict(),
            "idempotency": idem.stats.as_dict(),
        }

    async def retire(order: list[Any]) -> None:
        installation, credit_id, key, comment = order
        await asyncio.sleep(rng.uniform(0, config.get("max_delay", 0.0)))
        tries = config.get("retry_refused", 0)
        if not tries:
            await attempt(installation, credit_id, key, comment)
            return
        # An attempt refused unsent (Redis down) is tried again a little later.
        for _ in range(tries):  # bounded, and by the deadline
            try:
                await attempt(installation, credit_id, key, comment)
            except SharedCacheUnavailableError:
                outcomes["refused"] += 1
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(rng.uniform(0.05, 0.25))
            else:
                return
        outcomes["gave_up"] += 1

    async def attempt(installation: str, credit_id: str, key: str, comment: str) -> None:
        """One keyed retirement; its outcome counted (a refusal raised with "retry_refused")."""
        try:
            await client.installation(installation).retire_credits(
                credit_id=credit_id,
                amount=1,
                retirement_data=RetirementData(
                    reason="fleet test", beneficiary_name="Fleet", comment=comment
                ),
                idempotency_key=key,
            )
        except SharedCacheUnavailableError:
            if not config.get("retry_refused"):
                outcomes["error_SharedCacheUnavailableError"] += 1
                return
            raise
        except ActionOutcomeUnknownError:
            outcomes["unknown"] += 1
        except DuplicateActionError as exc:
            outcomes[f"duplicate_{exc.state}"] += 1
            if exc.result is not None:
                outcomes["with_result"] += 1
        except Exception as exc:
            outcomes[f"error_{type(exc).__name__}"] += 1
        else:
            outcomes["done"] += 1

    async def hammer(
        installation: str, path: str, stop_at: float, until: asyncio.Event | None = None
    ) -> None:
        scoped = client.installation(installation)
        while time.monotonic() < stop_at:  # bounded by stop_at
            if until is not None and until.is_set():
                break
            try:
                await scoped.request("GET", path)
            except Exception as exc:
                outcomes[f"error_{type(exc).__name__}"] += 1
            else:
                outcomes["ok"] += 1
            # Think time: a worker that does other things between requests, as real ones do.
            await asyncio.sleep(rng.uniform(0, config.get("think", 0.0)))

    async def mixed() -> None:
        """Keyed retirements started over ``spread`` seconds, GETs all along until they are
        settled and the stop file exists; progress written every 0.1 s."""
        limit = asyncio.Semaphore(config.get("concurrency", 4))
        finished = asyncio.Event()
        settled: list[list[Any]] = []

        async def keyed(order: list[Any]) -> None:
            await asyncio.sleep(rng.uniform(0, config["spread"]))
            async with limit:
                await retire(order)
            settled.append(order)

        async def watch() -> None:
            while True:  # until cancelled; the last pass sets ``finished`` (bounded by it)
                _write_json(config["progress_path"], snapshot())
                if len(settled) == len(config["orders"]) and _exists(config["stop_path"]):
                    finished.set()
                await asyncio.sleep(0.1)

        watcher = asyncio.ensure_future(watch())
        installation, path = config["target"]
        gets = [hammer(installation, path, deadline, finished) for _ in range(config["gets"])]
        await asyncio.gather(*(keyed(o) for o in config["orders"]), *gets)
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher

    async with client:
        await _go(config, deadline)
        if config["mode"] == "actions":
            limit = asyncio.Semaphore(config.get("concurrency", 4))

            async def bounded(order: list[Any]) -> None:
                async with limit:
                    await retire(order)

            for _ in range(config.get("rounds", 1)):
                orders = list(config["orders"])
                rng.shuffle(orders)
                await asyncio.gather(*(bounded(o) for o in orders))
                _write_json(config["progress_path"], snapshot())
                if time.monotonic() > deadline:
                    break
        elif config["mode"] == "mixed":
            await mixed()
        else:
            stop_at = min(deadline, time.monotonic() + config["seconds"])
            installation, path = config["target"]
            await asyncio.gather(
                *(hammer(installation, path, stop_at) for _ in range(config["concurrency"]))
            )
        _write_json(config["result_path"], snapshot())
    if backoff is not None:
        await backoff.aclose()
    await cache.aclose()


if __name__ == "__main__":
    import asyncio

    run_config = json.loads(Path(sys.argv[1]).read_text())
    if run_config.get("mode"):
        asyncio.run(_fleet_worker(run_config))
    else:
        asyncio.run(_worker(run_config))
