"""``python -m benchmarks``: every comparison, one after another, with a table each.

Each scenario starts its own emulator process on 127.0.0.1 and stops it; results are also
written as JSON (default ``benchmarks/results/latest.json``). ``--quick`` shrinks every
scenario for a smoke run; the defaults are the published numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

SCENARIOS = ("steady", "cold", "memory", "blocking", "soak", "fleet", "fleet_actions")


def _machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "system": platform.platform(),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the chosen scenarios and return 0."""
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
    results: dict[str, Any] = {
        "machine": _machine(),
        "quick": quick,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    print(
        f"# icr-async benchmarks ({'quick' if quick else 'full'}) on {results['machine']['system']}, {results['machine']['cpus']} CPUs, Python {results['machine']['python']}"
    )
    started = time.perf_counter()
    for name in chosen:
        t0 = time.perf_counter()
        if name == "steady":
            from . import bench_steady

            results[name] = bench_steady.run(
                rounds=3 if quick else 12, per_slice=500 if quick else 1200
            )
        elif name == "cold":
            from . import bench_cold

            results[name] = bench_cold.run(
                calls=2000 if quick else 10_000, listing_rounds=2 if quick else 5
            )
        elif name == "memory":
            from . import bench_memory

            results[name] = bench_memory.run()
        elif name == "soak":
            from . import bench_soak

            results[name] = bench_soak.run(requests=10_000 if quick else 100_000)
        elif name == "blocking":
            from . import bench_blocking

            results[name] = bench_blocking.run(
                rounds=3 if quick else 6,
                calls=500 if quick else 2000,
                thread_calls=1600 if quick else 6400,
            )
        elif name == "fleet_actions":
            from . import bench_fleet_actions

            results[name] = bench_fleet_actions.run(
                workers=(1, 4) if quick else (1, 4, 8),
                seconds=2.0 if quick else 4.0,
                orders=10 if quick else 50,
                rounds=4 if quick else 20,
                per_slice=300 if quick else 1000,
            )
        else:
            from . import bench_fleet

            results[name] = bench_fleet.run(workers=(1, 4) if quick else (1, 4, 8))
        print(f"\n({name}: {time.perf_counter() - t0:.0f} s)")
    results["total_seconds"] = time.perf_counter() - started
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str))
    print(f"\nall done in {results['total_seconds']:.0f} s; results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
