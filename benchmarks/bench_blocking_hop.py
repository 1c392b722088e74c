"""The blocking client's thread hop alone, on asyncio's loop and on uvloop (issue 14).

Every contender is called from this thread and runs a coroutine on a loop in another thread:

- ``bare bridge`` (the baseline): ``asyncio.run_coroutine_threadsafe(coro, loop).result()``
  onto a plain asyncio loop thread, the floor any thread-hopping blocking client starts from;
- ``bare bridge (null)``: the very same bridge, timed as a separate contender; its ratio to
  the baseline shows how far apart two identical contenders land in this run (the noise);
- ``ICRClient, asyncio loop``: the blocking client's own per-call path (a typed twin ->
  ``Handle.run`` -> the lock-based hand-over) onto its shared loop, a standard asyncio loop
  (``ICR_ASYNC_NO_UVLOOP=1``);
- ``ICRClient, uvloop``: the same on a uvloop loop (skipped where uvloop is not installed).

Two scenarios, so that the hop is measured once alone and once under a real public method:

- ``no-op coroutine``: the coroutine returns at once. The client's contenders run it through a
  twin made by ``_blocking``, exactly as every ``ICRClient`` method is made, sharing the
  client's handle; nothing else is timed but the hop;
- ``cached get_token()``: ``client.installation(id).get_token()`` with the token cached (no
  I/O); the bare bridge runs the same async client's coroutine, so the difference is the hop.

One process has one shared loop by design; to hold an asyncio one and a uvloop one at the
same time, the benchmark sets the first aside before starting the second (as the after-fork
hook does). Slices of ``calls`` calls are interleaved round by round, each round starting with
a different contender; ratios are the median (min-max) of the paired per-round ratios to the
baseline, on client CPU (``time.process_time``: all threads of this process) and wall time.

Run it alone with ``python -m benchmarks.bench_blocking_hop [--rounds N] [--calls N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from icr_async import AsyncICRClient, ICRClient, _background
from icr_async._twins import _blocking, _Bridge

from ._harness import (
    EmulatorProcess,
    Series,
    emulator_process,
    fmt_ratio,
    median,
    ratio_stats,
    table,
)

BASELINE = "bare bridge"
NULL = "bare bridge (null)"
HAVE_UVLOOP = importlib.util.find_spec("uvloop") is not None


class _Noop:
    """An async object whose one coroutine does nothing: only the hop is left to time."""

    async def noop(self) -> None:
        return None


class _NoopTwin(_Bridge):
    """A blocking twin of ``_Noop`` made as ``ICRClient``'s methods are, on a client's handle."""

    __slots__ = ()

    noop = _blocking(_Noop.noop)

    def __init__(self, client: ICRClient) -> None:
        self._core = _Noop()
        self._handle = client._handle


@contextlib.contextmanager
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


@contextlib.contextmanager
def _blocking_clients(server: EmulatorProcess, kinds: list[str]) -> Iterator[dict[str, ICRClient]]:
    """One warm ``ICRClient`` per loop kind, each attached to a shared loop of that kind."""
    saved = os.environ.get(_background.NO_UVLOOP_ENV)
    clients: dict[str, ICRClient] = {}
    try:
        for kind in kinds:
            if kind == "asyncio":
                os.environ[_background.NO_UVLOOP_ENV] = "1"
            else:
                os.environ.pop(_background.NO_UVLOOP_ENV, None)
            # Set the running shared loop aside (its client keeps its lease and its loop) so
            # that this client's first call starts a new one, of this kind.
            _background._shared = _background._SharedLoop()
            client = ICRClient(
                server.app_id, private_key_path=server.key_path, base_url=server.url, env=False
            )
            clients[kind] = client
            client.list_installations(limit=1)  # attaches now: the loop starts here
            loop_module = type(client._handle.loop).__module__
            assert loop_module.startswith("uvloop" if kind == "uvloop" else "asyncio"), loop_module
        yield clients
    finally:
        for client in clients.values():
            client.close()
        if saved is None:
            os.environ.pop(_background.NO_UVLOOP_ENV, None)
        else:
            os.environ[_background.NO_UVLOOP_ENV] = saved


def _slice(call: Callable[[], object], n: int, series: Series) -> None:
    # A few untimed calls first: the contender before this one used another loop thread, and
    # the first hops onto a loop that sat idle pay for waking it (caches, CPU idle state);
    # without them whichever contender follows a switch of loops looks slower.
    for _ in range(max(10, n // 20)):
        call()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for _ in range(n):
        call()
    series.add(time.process_time() - cpu0, time.perf_counter() - wall0, n)


def run(*, rounds: int = 20, calls: int = 2000) -> dict[str, Any]:
    """Run both scenarios, print a markdown table and return the numbers."""
    kinds = ["asyncio", "uvloop"] if HAVE_UVLOOP else ["asyncio"]
    with (
        emulator_process(installations=1) as server,
        _plain_loop_thread() as bare_loop,
        _blocking_clients(server, kinds) as clients,
    ):
        inst_id = clients["asyncio"].list_installations(limit=1).items[0].id
        bridged = AsyncICRClient(
            server.app_id, private_key_path=server.key_path, base_url=server.url, env=False
        )
        try:
            bare_core = _Noop()
            bridged_inst = bridged.installation(inst_id)

            def bare_noop() -> object:
                return asyncio.run_coroutine_threadsafe(bare_core.noop(), bare_loop).result()

            def bare_token() -> object:
                return asyncio.run_coroutine_threadsafe(
                    bridged_inst.get_token(), bare_loop
                ).result()

            scenarios: dict[str, dict[str, Callable[[], object]]] = {
                "no-op coroutine": {BASELINE: bare_noop, NULL: bare_noop},
                "cached get_token()": {BASELINE: bare_token, NULL: bare_token},
            }
            for kind, client in clients.items():
                name = f"ICRClient, {kind} loop" if kind == "asyncio" else f"ICRClient, {kind}"
                scenarios["no-op coroutine"][name] = _NoopTwin(client).noop
                scenarios["cached get_token()"][name] = client.installation(inst_id).get_token
            series = {
                scenario: {name: Series(name) for name in contenders}
                for scenario, contenders in scenarios.items()
            }
            # Warm every contender: loops, sessions, the app JWT, the cached token.
            for contenders in scenarios.values():
                for call in contenders.values():
                    for _ in range(200):
                        call()
            names = list(scenarios["no-op coroutine"])
            for r in range(rounds):
                order = names[r % len(names) :] + names[: r % len(names)]
                for name in order:
                    for scenario, contenders in scenarios.items():
                        _slice(contenders[name], calls, series[scenario][name])
        finally:
            asyncio.run_coroutine_threadsafe(bridged.aclose(), bare_loop).result(timeout=10)

    results: dict[str, Any] = {"rounds": rounds, "calls_per_slice": calls, "uvloop": HAVE_UVLOOP}
    rows: list[list[Any]] = []
    for scenario, by_name in series.items():
        base = by_name[BASELINE]
        results[scenario] = {}
        for name, s in by_name.items():
            entry: dict[str, Any] = {
                "cpu_us": median(s.cpu_us),
                "wall_us": median(s.wall_us),
                "cpu_ratio": ratio_stats(s.cpu_us, base.cpu_us),
                "wall_ratio": ratio_stats(s.wall_us, base.wall_us),
            }
            results[scenario][name] = entry
            rows.append(
                [
                    scenario,
                    name,
                    f"{entry['cpu_us']:.1f}",
                    f"{entry['wall_us']:.1f}",
                    fmt_ratio(entry["cpu_ratio"]),
                    fmt_ratio(entry["wall_ratio"]),
                ]
            )
    print(
        f"\n### The blocking hop: {rounds} interleaved rounds of {calls} calls per contender "
        f"(ratios to the bare run_coroutine_threadsafe bridge on asyncio: median (min-max) of "
        f"paired rounds){'' if HAVE_UVLOOP else '; uvloop is not installed'}\n"
    )
    print(
        table(
            ["scenario", "contender", "CPU µs/call", "wall µs/call", "CPU ratio", "wall ratio"],
            rows,
        )
    )
    return results


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m benchmarks.bench_blocking_hop``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args(argv)
    run(rounds=args.rounds, calls=args.calls)


if __name__ == "__main__":
    main()
