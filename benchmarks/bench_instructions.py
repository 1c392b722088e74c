"""Client instructions per request, end to end, counted by callgrind: the exact figure that
wall-clock ratios cannot resolve on a shared machine.

Each contender runs in its own client process under ``valgrind --tool=callgrind`` against
an emulator in another process (not under valgrind), twice: with ``n`` and with ``3n``
requests at concurrency ``c``. The difference divided by ``2n`` is the client's
instructions per request, with start-up, imports and warm-up cancelled out. Instruction
counts do not drift with the machine's speed or load (the same contender twice differs by
~0.3 %: the null row), so a 1 % difference is real here where timed ratios swing by 5 to 15 %.
Instructions are not seconds (orjson's vector code does more per instruction than Python's
bytecode loop), so this explains the timed tables; it does not replace them.

Needs valgrind (Debian's package). About 2 minutes per contender on a quiet machine.
Run it with ``python -m benchmarks.bench_instructions``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from icr_async import AsyncICRClient

from ._harness import NULL_SUFFIX, emulator_process, table
from .bench_steady import HAND_HEADERS, SDK_TIMEOUTS, aiohttp_session, plain_installation, sign_jwt

BASELINE = "aiohttp"
# (table, contender, the child's kind) in the order they run.
CONTENDERS = (
    ("installation-token GET -> JSON", BASELINE, "hand_json"),
    ("installation-token GET -> JSON", BASELINE + NULL_SUFFIX, "hand_json"),
    ("installation-token GET -> JSON", "icr-async", "sdk_json"),
    ("get_installation -> model", BASELINE, "hand_model"),
    ("get_installation -> model", BASELINE + NULL_SUFFIX, "hand_model"),
    ("get_installation -> model", "icr-async", "sdk_model"),
)


async def _child(kind: str, n: int, c: int, url: str, app_id: str, key_path: str) -> None:
    """One contender: warm every connection, then ``n`` requests over ``c`` workers."""
    with open(key_path) as fh:  # noqa: ASYNC230  # once, before anything is counted
        pem = fh.read()
    client = AsyncICRClient(
        app_id, pem, base_url=url, pool_size=c, timeouts=SDK_TIMEOUTS, env=False
    )
    inst = (await client.list_installations(limit=1)).items[0]
    assert inst.organization is not None
    org_path = f"/organizations/{inst.organization.id}"
    scoped = client.installation(inst.id)
    base = HAND_HEADERS
    jwt_headers = {**base, "Authorization": f"Bearer {sign_jwt(app_id, key_path)}"}
    tok_headers = {**base, "Authorization": f"Bearer {(await scoped.get_token()).token}"}
    session = aiohttp_session(c)
    inst_url, org_url = f"{url}/app/installations/{inst.id}", url + org_path

    async def hand_model() -> Any:
        async with session.get(inst_url, headers=jwt_headers) as resp:
            body = await resp.read()
        return plain_installation(json.loads(body))

    async def hand_json() -> Any:
        async with session.get(org_url, headers=tok_headers) as resp:
            body = await resp.read()
        return json.loads(body)

    async def sdk_model() -> Any:
        return await client.get_installation(inst.id)

    async def sdk_json() -> Any:
        return await scoped.request("GET", org_path)

    kinds: dict[str, Callable[[], Awaitable[Any]]] = {
        "hand_json": hand_json,
        "hand_model": hand_model,
        "sdk_json": sdk_json,
        "sdk_model": sdk_model,
    }
    fn = kinds[kind]

    async def worker(count: int) -> None:
        for _ in range(count):
            await fn()

    try:
        await asyncio.gather(*(worker(4) for _ in range(c)))
        await asyncio.gather(*(worker(n // c) for _ in range(c)))
    finally:
        await client.aclose()
        await session.close()


def _count(kind: str, n: int, c: int, server: Any, timeout: float) -> int:
    """Instructions of one child process under callgrind."""
    child = ["--child", kind, str(n), str(c), server.url, server.app_id, server.key_path]
    valgrind = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
    out = subprocess.run(
        [*valgrind, sys.executable, "-m", "benchmarks.bench_instructions", *child],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    found = re.search(r"Collected : (\d+)", out.stderr)
    if out.returncode != 0 or found is None:
        raise RuntimeError(f"{kind} under callgrind failed: {out.stderr[-2000:]}")
    return int(found.group(1))


def run(*, requests: int = 640, concurrency: int = 64, timeout: float = 1200.0) -> dict[str, Any]:
    """Instructions per request of every contender, and each one's ratio to its table's
    baseline."""
    if shutil.which("valgrind") is None:
        return {"skipped": "valgrind is not installed (Debian: apt-get install valgrind)"}
    results: dict[str, Any] = {"requests": requests, "concurrency": concurrency, "tables": {}}
    with emulator_process(installations=10) as server:
        for name, contender, kind in CONTENDERS:
            low = _count(kind, requests, concurrency, server, timeout)
            high = _count(kind, 3 * requests, concurrency, server, timeout)
            per_request = (high - low) / (2 * requests)
            results["tables"].setdefault(name, {})[contender] = per_request
            print(f"  {name}: {contender}: {per_request:,.0f} instructions/request", flush=True)
    for contenders in results["tables"].values():
        base = contenders[BASELINE]
        for contender, value in list(contenders.items()):
            contenders[contender] = {"instructions": value, "ratio": value / base}
    return results


def _print(results: dict[str, Any]) -> None:
    if "skipped" in results:
        print(results["skipped"])
        return
    rows = [
        [name, contender, f"{v['instructions']:,.0f}", f"{v['ratio']:.3f}x"]
        for name, contenders in results["tables"].items()
        for contender, v in contenders.items()
    ]
    print(
        f"\nclient instructions per request, concurrency {results['concurrency']}"
        f" (callgrind, {results['requests']} vs {3 * results['requests']} requests)"
    )
    print(table(["path", "contender", "instructions", "ratio"], rows))


def main(argv: list[str] | None = None) -> None:
    """``python -m benchmarks.bench_instructions [--requests N] [--concurrency C]``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_instructions")
    parser.add_argument("--requests", type=int, default=640)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        kind, n, c, url, app_id, key_path = args.child
        asyncio.run(_child(kind, int(n), int(c), url, app_id, key_path))
        return
    _print(run(requests=args.requests, concurrency=args.concurrency))


if __name__ == "__main__":
    main()
