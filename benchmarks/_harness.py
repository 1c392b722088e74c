"""Shared plumbing: an emulator in its own process, interleaved rounds, ratio statistics.

The machine's speed drifts by up to 2x within a minute (see shared/docs/benchmarking.md), so
absolute numbers are reported only for context: every verdict is a ratio between contenders
measured in short interleaved slices (A B A B ...) inside one run, summarised as the median
of the per-round ratios with its min-max.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class EmulatorProcess:
    """An emulator running in a child process on 127.0.0.1."""

    url: str
    app_id: str
    key_path: str
    pid: int


@contextlib.contextmanager
def emulator_process(
    *, installations: int = 100, token_ttl: float = 7200.0, seed: int = 0, timeout: float = 120.0
) -> Iterator[EmulatorProcess]:
    """Start ``python -m icr_async.testing`` on a free loopback port; kill it by PID at the end.

    ``timeout`` is generous on purpose: on a loaded machine the emulator (10,000 generated
    installations take ~2 s on a quiet one) may start many times slower."""
    with tempfile.TemporaryDirectory(prefix="icr-bench-") as tmp:
        ready = Path(tmp) / "ready"
        key = Path(tmp) / "key.pem"
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "icr_async.testing",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--installations",
                str(installations),
                "--seed",
                str(seed),
                "--token-ttl",
                str(token_ttl),
                "--ready-file",
                str(ready),
                "--key-out",
                str(key),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            pin(proc.pid, server=True)
            deadline = time.monotonic() + timeout
            while not ready.exists():
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"emulator exited early: {proc.stderr.read() if proc.stderr else ''}"
                    )
                if time.monotonic() > deadline:
                    raise RuntimeError("emulator did not start in time")
                time.sleep(0.05)
            url = ready.read_text().strip()
            app_id = ""
            assert proc.stdout is not None
            for _ in range(50):  # bounded: the banner is a dozen lines
                line = proc.stdout.readline()
                if not line:
                    break
                match = re.match(r"app id: (\S+)", line)
                if match:
                    app_id = match.group(1)
                    break
            if not app_id:
                raise RuntimeError("could not read the app id from the emulator's banner")
            yield EmulatorProcess(url=url, app_id=app_id, key_path=str(key), pid=proc.pid)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()


def pin(pid: int = 0, *, server: bool = False) -> None:
    """Pin the server to the last core and the client to the others, when there are two or
    more: a process that migrates between cores mid-slice is most of the noise here."""
    if not hasattr(os, "sched_setaffinity"):
        return
    cores = list(range(os.cpu_count() or 1))
    if len(cores) < 2:
        return
    with contextlib.suppress(OSError):
        os.sched_setaffinity(pid, {cores[-1]} if server else set(cores[:-1]))


def cpu() -> float:
    """CPU seconds (user + system) of this process so far."""
    return time.process_time()


def peak_rss_mib() -> float:
    """Peak resident set size of this process, MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class Series:
    """Per-round measurements of one contender in one scenario."""

    name: str
    cpu_us: list[float] = field(default_factory=list)
    wall_us: list[float] = field(default_factory=list)

    def add(self, cpu_s: float, wall_s: float, n: int) -> None:
        """Record one slice of ``n`` operations."""
        self.cpu_us.append(cpu_s / n * 1e6)
        self.wall_us.append(wall_s / n * 1e6)


def ratio_stats(num: list[float], den: list[float]) -> dict[str, float]:
    """Median and min-max of the paired per-round ratios num[i] / den[i]."""
    ratios = [a / b for a, b in zip(num, den, strict=True) if b > 0]
    if not ratios:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan")}
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}


def fmt_ratio(stats: dict[str, float]) -> str:
    """``1.05x (0.98-1.12)``."""
    return f"{stats['median']:.2f}x ({stats['min']:.2f}-{stats['max']:.2f})"


def median(values: list[float]) -> float:
    """The median, or NaN for no values."""
    return statistics.median(values) if values else float("nan")


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
    return ordered[index]


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """A markdown table."""
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


# -- bounded, interleaved rounds ------------------------------------------------------------

NULL_SUFFIX = " (null)"
"""The null contender is the baseline timed again as a separate contender, named
``<baseline> (null)``: its ratio to the baseline is the noise floor of that table."""

SliceFn = Callable[[], Awaitable[tuple[float, float, int]]]
"""One slice of one contender: runs it and returns (CPU s, wall s, operations)."""


@dataclass
class RunStatus:
    """How far a bounded run got: complete rounds, and why it stopped early if it did."""

    rounds_planned: int
    rounds_done: int = 0
    partial: bool = False
    reason: str = ""
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {
            "rounds_planned": self.rounds_planned,
            "rounds_done": self.rounds_done,
            "partial": self.partial,
            "reason": self.reason,
            "seconds": round(self.seconds, 1),
        }


def rounds_label(status: dict[str, Any]) -> str:
    """``15``, or ``7 of 15 (partial: time budget)``, from ``RunStatus.as_dict()``."""
    if not status["partial"]:
        return str(status["rounds_done"])
    return f"{status['rounds_done']} of {status['rounds_planned']} (partial: {status['reason']})"


async def interleave(
    contenders: dict[str, SliceFn],
    *,
    rounds: int,
    budget_s: float,
    slice_timeout: float,
) -> tuple[dict[str, Series], RunStatus]:
    """Up to ``rounds`` rounds of one slice per contender (A B C, B C A, ...), bounded in time.

    Each slice is cut off after ``slice_timeout`` s (or what is left of the budget plus a
    little, if less); the run stops before a round that would start past ``budget_s``. Only
    complete rounds are kept, so every ratio stays paired. The caller warms the contenders.
    """
    names = list(contenders)
    series = {name: Series(name) for name in names}
    status = RunStatus(rounds_planned=rounds)
    started = time.monotonic()
    deadline = started + budget_s
    try:
        for r in range(rounds):
            if time.monotonic() >= deadline:
                status.partial, status.reason = True, "time budget"
                break
            shift = r % len(names)
            done: dict[str, tuple[float, float, int]] = {}
            for name in names[shift:] + names[:shift]:
                left = deadline - time.monotonic()
                limit = max(1.0, min(slice_timeout, left + slice_timeout / 4))
                try:
                    done[name] = await asyncio.wait_for(contenders[name](), limit)
                except asyncio.TimeoutError:  # not TimeoutError before 3.11
                    status.partial, status.reason = True, f"{name} slice over {limit:.0f} s"
                    break
            if len(done) < len(names):
                break
            for name, (cpu_s, wall_s, n) in done.items():
                series[name].add(cpu_s, wall_s, n)
            status.rounds_done += 1
    finally:
        status.seconds = time.monotonic() - started
    return series, status


def summarise(
    series: dict[str, Series], baseline: str, *, throughput: bool = False
) -> dict[str, dict[str, Any]]:
    """Median µs per operation and the paired ratios to ``baseline``, per contender.

    ``throughput`` adds ``rps_ratio`` (baseline wall / contender wall: above 1 is faster)."""
    base = series[baseline]
    out: dict[str, dict[str, Any]] = {}
    for name, s in series.items():
        entry: dict[str, Any] = {
            "cpu_us": median(s.cpu_us),
            "wall_us": median(s.wall_us),
            "cpu_ratio": ratio_stats(s.cpu_us, base.cpu_us),
            "wall_ratio": ratio_stats(s.wall_us, base.wall_us),
        }
        if throughput:
            entry["rps_ratio"] = ratio_stats(base.wall_us, s.wall_us)
        out[name] = entry
    return out


def current_rss_mib() -> float:
    """Resident set size of this process now, MiB (``VmRSS``; the peak where unavailable)."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return peak_rss_mib()
