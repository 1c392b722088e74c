"""The benchmark harness's bounds, without running a benchmark: rounds stay paired, a time
budget or a stuck slice stops a scenario as *partial*, and ``python -m benchmarks`` keeps
every scenario measured so far (the results file is rewritten after each, and a scenario
that raises is recorded as an error while the others still run). No timing is asserted."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from benchmarks import __main__ as bench_main
from benchmarks._harness import NULL_SUFFIX, interleave, rounds_label, summarise


def _slice(cpu: float, *, sleep: float = 0.0) -> Any:
    async def one() -> tuple[float, float, int]:
        if sleep:
            await asyncio.sleep(sleep)
        return cpu, cpu, 1

    return one


def test_interleave_keeps_only_complete_rounds_and_a_null_row() -> None:
    contenders = {"base": _slice(1.0), "base" + NULL_SUFFIX: _slice(1.0), "sdk": _slice(2.0)}
    series, status = asyncio.run(
        interleave(contenders, rounds=4, budget_s=60.0, slice_timeout=10.0)
    )
    assert status.rounds_done == 4
    assert not status.partial
    summary = summarise(series, "base", throughput=True)
    assert summary["base" + NULL_SUFFIX]["cpu_ratio"]["median"] == 1.0
    assert summary["sdk"]["cpu_ratio"]["median"] == 2.0
    assert summary["sdk"]["rps_ratio"]["median"] == 0.5
    assert rounds_label(status.as_dict()) == "4"


def test_interleave_stops_at_its_budget_as_partial() -> None:
    series, status = asyncio.run(
        interleave({"a": _slice(1.0), "b": _slice(1.0)}, rounds=5, budget_s=0.0, slice_timeout=1.0)
    )
    assert status.partial
    assert status.reason == "time budget"
    assert status.rounds_done == 0
    assert series["a"].cpu_us == []
    assert "partial: time budget" in rounds_label(status.as_dict())


def test_a_stuck_slice_ends_the_scenario_and_drops_its_round() -> None:
    contenders = {"a": _slice(1.0), "stuck": _slice(1.0, sleep=30.0)}
    series, status = asyncio.run(interleave(contenders, rounds=3, budget_s=60.0, slice_timeout=1.0))
    assert status.partial
    assert status.reason.startswith("stuck slice over")
    assert status.rounds_done == 0
    assert series["a"].cpu_us == []  # the round that did not finish is not kept


def test_main_keeps_results_after_each_scenario_and_records_errors(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    seen: list[str] = []

    def fake(name: str, quick: bool) -> Any:
        def run() -> dict[str, Any]:
            seen.append(name)
            if name == "listing":
                # The first scenario's results are already on disk when the second runs.
                assert "steady" in json.loads(out.read_text())
                raise RuntimeError("boom")
            return {"ok": name, "quick": quick}

        return run

    argv = ["--only", "steady,listing,memory", "--quick", "--json", str(out)]
    code = bench_main.main(argv, scenario=fake)
    assert code == 1
    assert seen == ["steady", "listing", "memory"]
    results = json.loads(out.read_text())
    assert results["steady"] == {"ok": "steady", "quick": True}
    assert results["listing"] == {"error": "RuntimeError: boom"}
    assert results["memory"]["ok"] == "memory"
    assert results["complete"] is True
    assert set(results["seconds"]) == {"steady", "listing", "memory"}


def test_every_scenario_has_quick_sizes() -> None:
    for name in bench_main.SCENARIOS:
        assert callable(bench_main._scenario(name, True))
