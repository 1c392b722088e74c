"""The blocking client's hop: what ``ICRClient`` costs per call over the async client.

Contenders, each with its own warm ``AsyncICRClient`` against one emulator process, doing
``GET /app/installations/{id}`` for one installation:

- ``async``: the async client awaited on a loop in this thread (no thread hop at all);
- ``ICRClient``: the blocking client called from this thread;
- ``bare bridge``: ``asyncio.run_coroutine_threadsafe(coro, loop).result()`` onto a plain loop
  thread, the floor any thread-hopping blocking client starts from;
- ``anyio portal``: anyio's ``BlockingPortal.call`` (for reference).

A second scenario isolates the hop: ``installation(id).get_token()`` with the token cached
does no I/O, so what remains is the thread hop plus a dictionary lookup.

Slices of ``calls`` requests are interleaved round by round, starting each round with a
different contender. The verdict is the paired per-round ratio ``ICRClient / bare bridge``
(target <= 1.1x), on client CPU (``time.process_time``: every thread of this process, the
server runs in its own) and on wall time. Then 32 threads share one ``ICRClient`` against 32
threads sharing the bare bridge.

Run it alone with ``python -m benchmarks.bench_blocking [--rounds N] [--calls N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import anyio.from_thread

from icr_async import AsyncICRClient, ICRClient

from ._harness import (
    EmulatorProcess,
    Series,
    emulator_process,
    fmt_ratio,
    median,
    ratio_stats,
    table,
)

Call = Callable[[], object]


def _async_client(server: EmulatorProcess) -> AsyncICRClient:
    return AsyncICRClient(
        server.app_id, private_key_path=server.key_path, base_url=server.url, env=False
    )


@contextmanager
def _plain_loop_thread() -> Iterator[asyncio.AbstractEventLoop]:
    """A bare asyncio loop running forever in a daemon thread: the bridge's other side."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="bench-bare-loop", daemon=True)
    thread.start()
    try:
        yield loop
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def _timed(fn: Callable[[], None], n: int, series: Series) -> None:
    cpu0, wall0 = time.process_time(), time.perf_counter()
    fn()
    series.add(time.process_time() - cpu0, time.perf_counter() - wall0, n)


def _sequential(call: Call, n: int) -> Callable[[], None]:
    def go() -> None:
        for _ in range(n):
            call()

    return go


def _threaded(pool: ThreadPoolExecutor, call: Call, n: int, threads: int) -> Callable[[], None]:
    per_thread = n // threads

    def work() -> None:
        for _ in range(per_thread):
            call()

    def go() -> None:
        for future in [pool.submit(work) for _ in range(threads)]:
            future.result()

    return go


def run(
    *, rounds: int = 6, calls: int = 2000, threads: int = 32, thread_calls: int = 6400
) -> dict[str, Any]:
    """Run the comparison, print a markdown table and return the numbers.

    ``rounds`` interleaved rounds of ``calls`` sequential calls per contender, then ``rounds``
    rounds of ``thread_calls`` calls spread over ``threads`` threads for the two bridges.
    """
    with emulator_process(installations=10) as server, _plain_loop_thread() as bare_loop:
        # One installation id, from any client.
        probe = ICRClient(
            server.app_id, private_key_path=server.key_path, base_url=server.url, env=False
        )
        inst_id = probe.list_installations(limit=1).items[0].id
        probe.close()

        main_loop = asyncio.new_event_loop()
        direct = _async_client(server)
        bridged = _async_client(server)
        via_portal = _async_client(server)
        blocking = ICRClient(
            server.app_id, private_key_path=server.key_path, base_url=server.url, env=False
        )
        portal_cm = anyio.from_thread.start_blocking_portal("asyncio", name="bench-anyio-portal")
        portal = portal_cm.__enter__()
        try:

            async def async_slice(n: int) -> None:
                for _ in range(n):
                    await direct.get_installation(inst_id)

            def bare() -> object:
                return asyncio.run_coroutine_threadsafe(
                    bridged.get_installation(inst_id), bare_loop
                ).result()

            def anyio_call() -> object:
                return portal.call(via_portal.get_installation, inst_id)

            def blocking_call() -> object:
                return blocking.get_installation(inst_id)

            # No-I/O scenario: a cached installation token.
            direct_inst = direct.installation(inst_id)
            bridged_inst = bridged.installation(inst_id)
            portal_inst = via_portal.installation(inst_id)
            blocking_inst = blocking.installation(inst_id)

            async def async_token_slice(n: int) -> None:
                for _ in range(n):
                    await direct_inst.get_token()

            def bare_token() -> object:
                return asyncio.run_coroutine_threadsafe(
                    bridged_inst.get_token(), bare_loop
                ).result()

            def anyio_token() -> object:
                return portal.call(portal_inst.get_token)

            hop_only: dict[str, tuple[Callable[[], None], Series]] = {
                "async (no hop)": (
                    lambda: main_loop.run_until_complete(async_token_slice(calls)),
                    Series("async"),
                ),
                "ICRClient": (_sequential(blocking_inst.get_token, calls), Series("ICRClient")),
                "bare bridge": (_sequential(bare_token, calls), Series("bare")),
                "anyio portal": (_sequential(anyio_token, calls), Series("anyio")),
            }

            sequential: dict[str, tuple[Callable[[], None], Series]] = {
                "async (no hop)": (
                    lambda: main_loop.run_until_complete(async_slice(calls)),
                    Series("async"),
                ),
                "ICRClient": (_sequential(blocking_call, calls), Series("ICRClient")),
                "bare bridge": (_sequential(bare, calls), Series("bare")),
                "anyio portal": (_sequential(anyio_call, calls), Series("anyio")),
            }
            # Warm every contender: loops, sessions, JWTs, connection pools.
            main_loop.run_until_complete(async_slice(200))
            main_loop.run_until_complete(async_token_slice(200))
            for fn in (
                blocking_call,
                bare,
                anyio_call,
                blocking_inst.get_token,
                bare_token,
                anyio_token,
            ):
                for _ in range(200):
                    fn()

            names = list(sequential)
            for r in range(rounds):
                order = names[r % len(names) :] + names[: r % len(names)]
                for name in order:
                    for scenario in (sequential, hop_only):
                        fn, series = scenario[name]
                        _timed(fn, calls, series)

            threaded: dict[str, tuple[Callable[[], None], Series]] = {}
            with ThreadPoolExecutor(threads, thread_name_prefix="bench-caller") as pool:
                threaded = {
                    "ICRClient": (
                        _threaded(pool, blocking_call, thread_calls, threads),
                        Series("ICRClient"),
                    ),
                    "bare bridge": (_threaded(pool, bare, thread_calls, threads), Series("bare")),
                }
                _threaded(pool, blocking_call, threads * 20, threads)()
                _threaded(pool, bare, threads * 20, threads)()
                n_threaded = thread_calls // threads * threads
                for r in range(rounds):
                    order = list(threaded) if r % 2 == 0 else list(reversed(threaded))
                    for name in order:
                        fn, series = threaded[name]
                        _timed(fn, n_threaded, series)
        finally:
            blocking.close()
            main_loop.run_until_complete(direct.aclose())
            main_loop.close()
            asyncio.run_coroutine_threadsafe(bridged.aclose(), bare_loop).result(timeout=10)
            portal.call(via_portal.aclose)
            portal_cm.__exit__(None, None, None)

    seq = {name: series for name, (_, series) in sequential.items()}
    hop_series = {name: series for name, (_, series) in hop_only.items()}
    thr = {name: series for name, (_, series) in threaded.items()}

    def summary(group: dict[str, Series]) -> dict[str, dict[str, Any]]:
        base = group["bare bridge"]
        return {
            name: {
                "cpu_us": median(s.cpu_us),
                "wall_us": median(s.wall_us),
                "cpu_ratio_to_bare": ratio_stats(s.cpu_us, base.cpu_us),
                "wall_ratio_to_bare": ratio_stats(s.wall_us, base.wall_us),
            }
            for name, s in group.items()
        }

    results: dict[str, Any] = {
        "rounds": rounds,
        "calls_per_slice": calls,
        "sequential": summary(seq),
        "hop_only": summary(hop_series),
        "threads": threads,
        "threaded": {
            name: {
                "cpu_us": median(s.cpu_us),
                "wall_us": median(s.wall_us),
                "calls_per_s": 1e6 / median(s.wall_us),
                "cpu_ratio_to_bare": ratio_stats(s.cpu_us, thr["bare bridge"].cpu_us),
                "wall_ratio_to_bare": ratio_stats(s.wall_us, thr["bare bridge"].wall_us),
            }
            for name, s in thr.items()
        },
    }
    # The per-call cost of the hop itself: what each bridge adds over awaiting directly.
    hop = {
        name: median(
            [b - a for a, b in zip(seq["async (no hop)"].wall_us, seq[name].wall_us, strict=True)]
        )
        for name in ("ICRClient", "bare bridge", "anyio portal")
    }
    results["hop_wall_us"] = hop

    rows = [
        [
            "sequential",
            name,
            f"{r['cpu_us']:.0f}",
            f"{r['wall_us']:.0f}",
            fmt_ratio(r["cpu_ratio_to_bare"]),
            fmt_ratio(r["wall_ratio_to_bare"]),
        ]
        for name, r in results["sequential"].items()
    ]
    rows += [
        [
            "hop only (cached token)",
            name,
            f"{r['cpu_us']:.0f}",
            f"{r['wall_us']:.0f}",
            fmt_ratio(r["cpu_ratio_to_bare"]),
            fmt_ratio(r["wall_ratio_to_bare"]),
        ]
        for name, r in results["hop_only"].items()
    ]
    rows += [
        [
            f"{threads} threads",
            name,
            f"{r['cpu_us']:.0f}",
            f"{r['wall_us']:.0f}",
            fmt_ratio(r["cpu_ratio_to_bare"]),
            fmt_ratio(r["wall_ratio_to_bare"]),
        ]
        for name, r in results["threaded"].items()
    ]
    print(
        f"\n### Blocking client: GET /app/installations/{{id}}, {rounds} interleaved rounds of {calls} calls "
        "(ratios to the bare run_coroutine_threadsafe bridge: median (min-max) of paired rounds)\n"
    )
    print(
        table(
            ["scenario", "client", "CPU µs/call", "wall µs/call", "CPU ratio", "wall ratio"], rows
        )
    )
    print(
        "\nWall µs each bridge adds over awaiting directly (median of per-round differences): "
        + ", ".join(f"{name} {value:.0f}" for name, value in hop.items())
    )
    return results


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m benchmarks.bench_blocking``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--thread-calls", type=int, default=6400)
    args = parser.parse_args(argv)
    run(rounds=args.rounds, calls=args.calls, threads=args.threads, thread_calls=args.thread_calls)


if __name__ == "__main__":
    main()
