"""Every installation's inventory, spread over worker processes by a job queue on Redis.

A fetch that outgrows one process: this script enqueues one task per installation on a
taskiq queue (``taskiq`` + ``taskiq-redis``, maintained job-queue libraries; the SDK ships
no scheduler of its own), starts worker processes that consume the queue, prints progress,
and sums the results. Every worker shares, through the same Redis:

* installation tokens (``RedisTokenCache``): one mint per installation, whichever worker
  gets there first;
* idempotency keys (``RedisIdempotencyStore``): a credit action a job retries on another
  worker is never sent twice (this job only reads, but the same workers may act);
* back-off (``RedisBackoffStore``): one 429 pauses every worker until ICR's Retry-After.

Run it (``pip install 'icr-async[redis]' taskiq taskiq-redis``, then)::

    export ICR_APP_ID=... ICR_PRIVATE_KEY_PATH=app.pem ICR_REDIS_URL=redis://127.0.0.1:6379/0
    python examples/fleet_inventory_job.py --workers 4

``ICR_REDIS_KEY`` (64 hex characters) is the key that encrypts tokens at rest; without it the
key is derived from the app's private key. Workers are this file run with ``--worker``; the
producer stops them by PID when the job is done. In production run the workers under your
process manager (``taskiq worker fleet_inventory_job:broker``) and the producer from cron.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from typing import Any

import redis.asyncio as aioredis
from taskiq import TaskiqEvents, TaskiqState
from taskiq.api import run_receiver_task
from taskiq_redis import ListQueueBroker, RedisAsyncResultBackend

from icr_async import AsyncICRClient, PrivateKey
from icr_async.contrib.redis import RedisBackoffStore, RedisIdempotencyStore, RedisTokenCache

REDIS_URL = os.environ.get("ICR_REDIS_URL", "redis://127.0.0.1:6379/0")
QUEUE = "icr-example-inventory"
JOB_TIMEOUT = 120.0  # the most the whole job may take before the producer gives up

# socket_timeout=None: a worker blocks on the queue (BRPOP) longer than redis-py's default
# 5 s read timeout when the queue is idle.
broker = ListQueueBroker(REDIS_URL, queue_name=QUEUE, socket_timeout=None).with_result_backend(
    RedisAsyncResultBackend(REDIS_URL, result_ex_time=3600)
)


def _stores() -> tuple[RedisTokenCache, RedisIdempotencyStore, RedisBackoffStore]:
    hex_key = os.environ.get("ICR_REDIS_KEY")
    if hex_key:
        cache = RedisTokenCache(REDIS_URL, encryption_key=bytes.fromhex(hex_key))
    else:
        path = os.environ.get("ICR_PRIVATE_KEY_PATH")
        key = (
            PrivateKey.from_path(path)
            if path
            else PrivateKey.from_pem(os.environ.get("ICR_PRIVATE_KEY", ""))
        )
        cache = RedisTokenCache(REDIS_URL, derive_from=key)
    return cache, RedisIdempotencyStore(cache), RedisBackoffStore(cache)


@broker.on_event(TaskiqEvents.WORKER_STARTUP)
async def _startup(state: TaskiqState) -> None:
    """One client per worker process, sharing everything through Redis."""
    cache, idempotency, backoff = _stores()
    state.stores = (cache, idempotency, backoff)
    state.client = AsyncICRClient(token_cache=cache, idempotency_store=idempotency, backoff=backoff)
    state.redis = aioredis.Redis.from_url(REDIS_URL)


@broker.on_event(TaskiqEvents.WORKER_SHUTDOWN)
async def _shutdown(state: TaskiqState) -> None:
    await state.client.aclose()
    cache, _, backoff = state.stores
    await backoff.aclose()
    await cache.aclose()
    await state.redis.aclose()


@broker.task(task_name="icr_example.fetch_inventory")
async def fetch_inventory(job: str, installation_id: str) -> dict[str, Any]:
    """Fetch one installation's inventory; count it in the job's progress."""
    state = broker.state
    inventory = await state.client.installation(installation_id).get_inventory()
    await state.redis.incr(f"{QUEUE}:{job}:done")
    return {
        "installation": installation_id,
        "credits": len(inventory.credits),
        "amount": float(sum(credit.amount for credit in inventory.credits)),
    }


async def _worker() -> None:
    """Consume the queue until SIGTERM."""
    broker.is_worker_process = True  # so startup() runs the WORKER_STARTUP handlers
    await broker.startup()
    receiver = asyncio.create_task(run_receiver_task(broker, run_startup=False))
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, receiver.cancel)
    try:
        await receiver
    except asyncio.CancelledError:
        pass
    finally:
        await broker.shutdown()


async def _produce(workers: int) -> None:
    async with AsyncICRClient() as client:
        ids = [installation.id async for installation in client.iter_installations()]
    job = secrets.token_hex(4)
    progress = aioredis.Redis.from_url(REDIS_URL)
    await broker.startup()
    # Started once, before the wait: a blocking Popen for a moment is fine in a producer.
    procs = [
        subprocess.Popen(  # noqa: ASYNC220, S603 - our own script, no user input
            [sys.executable, __file__, "--worker"], stdin=subprocess.DEVNULL
        )
        for _ in range(workers)
    ]
    try:
        tasks = [await fetch_inventory.kiq(job, installation_id) for installation_id in ids]
        deadline = time.monotonic() + JOB_TIMEOUT
        shown = -1
        while shown < len(ids):  # bounded by the deadline
            done = int(await progress.get(f"{QUEUE}:{job}:done") or 0)
            if done != shown:
                shown = done
                print(f"progress: {done}/{len(ids)}", flush=True)
            if time.monotonic() > deadline:
                raise SystemExit(f"gave up after {JOB_TIMEOUT:.0f} s at {done}/{len(ids)}")
            if any(p.poll() is not None for p in procs):
                raise SystemExit("a worker exited early")
            await asyncio.sleep(0.1)
        results = [(await t.wait_result(timeout=JOB_TIMEOUT)).return_value for t in tasks]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        await progress.delete(f"{QUEUE}:{job}:done")
        await progress.aclose()
        await broker.shutdown()
    credits = sum(r["credits"] for r in results)
    amount = sum(r["amount"] for r in results)
    print(f"fetched {len(results)} inventories with {workers} workers")
    print(f"{credits} credit lines, {amount:g} credits in all")


def main() -> None:
    """``--worker``: consume the queue; otherwise run the whole job with ``--workers`` N."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--workers", type=int, default=2, help="worker processes to start")
    parser.add_argument("--worker", action="store_true", help="run as one worker")
    args = parser.parse_args()
    asyncio.run(_worker() if args.worker else _produce(max(1, args.workers)))


if __name__ == "__main__":
    main()
