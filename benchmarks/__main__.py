"""``python -m benchmarks``: every comparison, one after another, with a table each.

Each scenario starts its own emulator process on 127.0.0.1 and stops it; results are also
written as JSON (default ``benchmarks/results/latest.json``) after each scenario, so an
interrupted run keeps what it measured. ``--quick`` shrinks every scenario for a smoke run;
the defaults are the published numbers. Each comparison table carries a null row (the
baseline timed again as a separate contender): its ratio is that table's noise floor.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

SCENARIOS = (
    "steady",
    "listing",
    "cold",
    "memory",
    "blocking",
    "blocking_hop",
    "soak",
    "fleet",
    "fleet_actions",
)


def _machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "system": platform.platform(),
    }


def _scenario(name: str, quick: bool) -> Callable[[], dict[str, Any]]:
    """The scenario's ``run`` with its sizes: ``quick`` for a smoke run, else the published."""
    if name == "steady":
        from . import bench_steady

        return functools.partial(
            bench_steady.run,
            rounds=3 if quick else 15,
            per_slice=300 if quick else 1000,
            budget_s=15.0 if quick else 120.0,
            slice_timeout=30.0 if quick else 60.0,
            overhead_repeat=500 if quick else 5000,
        )
    if name == "listing":
        from . import bench_listing

        return functools.partial(
            bench_listing.run,
            installations=2000 if quick else 10_000,
            rounds=3 if quick else 15,
            budget_s=30.0 if quick else 240.0,
        )
    if name == "cold":
        from . import bench_cold

        return functools.partial(
            bench_cold.run, calls=2000 if quick else 10_000, listing_rounds=2 if quick else 5
        )
    if name == "memory":
        from . import bench_memory

        return functools.partial(
            bench_memory.run,
            installations=1000 if quick else 10_000,
            rounds=1 if quick else 3,
            tokens=20_000 if quick else 100_000,
            budget_s=60.0 if quick else 600.0,
        )
    if name == "soak":
        from . import bench_soak

        return functools.partial(bench_soak.run, requests=10_000 if quick else 100_000)
    if name == "blocking":
        from . import bench_blocking

        return functools.partial(
            bench_blocking.run,
            rounds=3 if quick else 6,
            calls=500 if quick else 2000,
            thread_calls=1600 if quick else 6400,
        )
    if name == "blocking_hop":
        from . import bench_blocking_hop

        return functools.partial(
            bench_blocking_hop.run, rounds=3 if quick else 20, calls=300 if quick else 2000
        )
    if name == "fleet_actions":
        from . import bench_fleet_actions

        return functools.partial(
            bench_fleet_actions.run,
            workers=(1, 4) if quick else (1, 4, 8),
            seconds=2.0 if quick else 4.0,
            orders=10 if quick else 50,
            rounds=4 if quick else 20,
            per_slice=300 if quick else 1000,
        )
    from . import bench_fleet

    return functools.partial(bench_fleet.run, workers=(1, 4) if quick else (1, 4, 8))


def _write(out: Path, results: dict[str, Any]) -> None:
    """Write the results so far (to a temporary file first: a kill mid-write keeps the last)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=2, default=str))
    tmp.replace(out)


def main(
    argv: list[str] | None = None,
    *,
    scenario: Callable[[str, bool], Callable[[], dict[str, Any]]] = _scenario,
) -> int:
    """Run the chosen scenarios; 0 when all ran, 1 if any raised, 130 on Ctrl-C.

    ``scenario(name, quick)`` makes each scenario's run (a test passes its own). The results file is rewritten after every scenario, so a crash, a kill or a Ctrl-C keeps
    what was measured; a scenario that raises is recorded as ``{"error": ...}`` and the rest
    still run."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "--only",
        default=",".join(SCENARIOS),
        help=f"comma-separated subset of {', '.join(SCENARIOS)}",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument(
        "--json", default="benchmarks/results/latest.json", help="where to write the results"
    )
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    quick = args.quick
    out = Path(args.json)
    results: dict[str, Any] = {
        "machine": _machine(),
        "quick": quick,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "complete": False,
        "seconds": {},
    }
    print(
        f"# icr-async benchmarks ({'quick' if quick else 'full'}) on {results['machine']['system']}, {results['machine']['cpus']} CPUs, Python {results['machine']['python']}"
    )
    started = time.perf_counter()
    failed = False
    code = 0
    try:
        for name in chosen:
            t0 = time.perf_counter()
            try:
                results[name] = scenario(name, quick)()
            except Exception as exc:  # one scenario's failure must not lose the others
                failed = True
                results[name] = {"error": f"{type(exc).__name__}: {exc}"}
                traceback.print_exc()
                print(f"\n({name} failed: {type(exc).__name__}: {exc}; going on)")
            results["seconds"][name] = round(time.perf_counter() - t0, 1)
            results["total_seconds"] = time.perf_counter() - started
            _write(out, results)
            print(f"\n({name}: {time.perf_counter() - t0:.0f} s; results so far in {out})")
        results["complete"] = True
    except KeyboardInterrupt:
        print("\ninterrupted: keeping the scenarios measured so far")
        code = 130
    results["total_seconds"] = time.perf_counter() - started
    _write(out, results)
    print(f"\nall done in {results['total_seconds']:.0f} s; results in {out}")
    return code or (1 if failed else 0)


if __name__ == "__main__":
    sys.exit(main())
