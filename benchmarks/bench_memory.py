"""Memory: RSS per warm installation, bytes per cached token, JWT signatures over an hour.

- **Warm installations** (issue 14): RSS of a client process per installation kept warm (a
  token cached and, for icr-async, an ``installation(id)`` client made and kept), at 10,000
  installations of an emulator running in its own process, and how many per-installation
  entries ``client.stats`` holds afterwards (``stats.mints``: it must stay bounded). Each
  contender runs in a fresh child process (so one cannot reuse what another freed), and the
  contenders take turns round by round:

  - ``aiohttp + dict`` (the baseline): a hand-written client minting with aiohttp and keeping
    a small dataclass per installation in a dict;
  - ``aiohttp + dict (null)``: the same, in another fresh process: the noise floor;
  - ``icr-async``: ``client.installation(id)`` kept in a list, ``await get_token()`` on each;
  - ``icr-async, token_cache_size=n/10``: the same with a cache a tenth the size, to show the
    cache and ``stats`` stay within their bound when installations outnumber it.

- **Cached tokens**: bytes per entry of ``MemoryTokenCache`` at 100,000 tokens (tracemalloc),
  with a null row: the same loop keeping nothing (what tracemalloc shows for no retention).
- **JWT signatures** over a simulated hour of requests.

Run it alone with ``python -m benchmarks.bench_memory [--installations N] [--rounds N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import gc
import itertools
import json
import secrets
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from icr_async import MemoryTokenCache, Token
from icr_async._jwt import AppJWT, ClockSync
from icr_async._keys import PrivateKey
from icr_async.testing import ManualClock, generate_private_key_pem

from ._harness import NULL_SUFFIX, current_rss_mib, emulator_process, pin, table


def token_memory(n: int = 100_000, *, keep: bool = True) -> dict[str, Any]:
    """Bytes per entry of the token cache, keys and values included, measured by tracemalloc.

    ``keep=False`` is the null: the same tokens made and dropped, nothing retained."""
    clock = ManualClock(1_780_000_000.0)
    prefix = f"{uuid.uuid4()}|https://api.carbonregistry.com|{'A' * 43}=|"
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    cache = MemoryTokenCache(max_entries=n, clock=clock)
    for _ in range(n):
        installation = str(uuid.uuid4())
        (cache.put if keep else _drop)(
            prefix + installation,
            Token(
                token="crs_" + secrets.token_hex(24),
                expires_at=datetime.datetime.fromtimestamp(clock() + 7200, datetime.timezone.utc),
                installation_id=installation,
                organization_id=str(uuid.uuid4()),
                minted_at=datetime.datetime.fromtimestamp(clock(), datetime.timezone.utc),
            ),
        )
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(cache) == (n if keep else 0)
    return {"tokens": n, "kept": keep, "bytes_per_token": (after - before) / n}


def _drop(key: str, token: Token) -> None:
    """The null's ``put``: keeps nothing."""


def jwt_rate(hours: float = 1.0, step: float = 5.0) -> dict[str, Any]:
    """Sign-on-demand over simulated time: a request every ``step`` seconds for ``hours``."""
    clock = ManualClock(1_780_000_000.0)
    signer = AppJWT("app", PrivateKey.from_pem(generate_private_key_pem()), ClockSync(clock))
    requests = int(hours * 3600 / step)
    signed_at: list[float] = []
    for _ in range(requests):
        before = signer.signatures
        signer.peek()  # signs inline with a local key when the cached JWT is due
        if signer.signatures != before:
            signed_at.append(clock())
        clock.advance(step)
    gaps = [b - a for a, b in itertools.pairwise(signed_at)]
    return {
        "requests": requests,
        "signatures": signer.signatures,
        "minutes_per_signature": min(gaps) / 60 if gaps else float("inf"),
    }


# -- warm installations, one fresh child process per contender and round --------------------

BASELINE = "aiohttp + dict"
NULL = BASELINE + NULL_SUFFIX
SDK = "icr-async"
SDK_BOUNDED = "icr-async, token_cache_size=n/10"
KINDS = (BASELINE, NULL, SDK, SDK_BOUNDED)
WORKERS = 32  # concurrent warm-ups in a child


@dataclass
class PlainToken:
    """What a hand-written client keeps per installation."""

    token: str
    expires_at: float
    installation_id: str
    organization_id: str | None


async def _warm_child(
    kind: str, url: str, app_id: str, key_path: str, ids: list[str]
) -> dict[str, Any]:
    """In the child: warm one installation (pools, JWT, imports), measure RSS, warm the rest,
    measure RSS again; returns the numbers."""
    import aiohttp

    from icr_async import AsyncICRClient

    from .bench_steady import SDK_TIMEOUTS, aiohttp_session, sign_jwt

    pin()
    n = len(ids)
    kept: list[Any] = []
    out: dict[str, Any] = {"kind": kind, "installations": n}
    client: AsyncICRClient | None = None
    session: aiohttp.ClientSession | None = None
    if kind in (SDK, SDK_BOUNDED):
        client = AsyncICRClient(
            app_id,
            private_key_path=key_path,
            base_url=url,
            timeouts=SDK_TIMEOUTS,
            token_cache_size=max(1, n // 10) if kind == SDK_BOUNDED else max(10_000, n),
            env=False,
        )
        sdk = client

        async def warm(inst_id: str) -> None:
            scoped = sdk.installation(inst_id)
            await scoped.get_token()
            kept.append(scoped)

    else:
        session = aiohttp_session(WORKERS)
        headers = {
            "Accept": "application/json",
            "x-icr-api-version": "2023-06-16",
            "Authorization": f"Bearer {sign_jwt(app_id, key_path)}",
        }
        tokens: dict[str, PlainToken] = {}
        kept.append(tokens)
        http = session

        async def warm(inst_id: str) -> None:
            mint_url = f"{url}/app/installations/{inst_id}/accessTokens"
            async with http.post(mint_url, headers=headers) as resp:
                body = await resp.read()
                if resp.status not in (200, 201):
                    raise RuntimeError(f"mint: HTTP {resp.status}")
            data = json.loads(body)
            expires = datetime.datetime.fromisoformat(data["expiresAt"].replace("Z", "+00:00"))
            tokens[inst_id] = PlainToken(
                data["token"], expires.timestamp(), inst_id, data.get("organizationId")
            )

    try:
        await warm(ids[0])  # pools, the app JWT, imports: paid once, not per installation
        gc.collect()
        rss0 = current_rss_mib()
        t0 = time.perf_counter()
        queue = iter(ids[1:])

        async def worker() -> None:
            for inst_id in queue:
                await warm(inst_id)

        await asyncio.gather(*(worker() for _ in range(WORKERS)))
        out["warm_seconds"] = time.perf_counter() - t0
        gc.collect()
        rss1 = current_rss_mib()
        out["rss_before_mib"], out["rss_after_mib"] = rss0, rss1
        out["bytes_per_installation"] = (rss1 - rss0) * 1024 * 1024 / max(1, n - 1)
        if client is not None:
            mints = client.stats.mints
            out["stats_mints_entries"] = len(mints)
            out["stats_mints_bound"] = getattr(mints, "max_entries", None)
            out["total_mints"] = client.stats.total_mints
    finally:
        if client is not None:
            await client.aclose()
        if session is not None:
            await session.close()
    return out


def _child_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--app-id", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--ids", required=True)
    args = parser.parse_args(argv)
    ids = json.loads(Path(args.ids).read_text())
    result = asyncio.run(_warm_child(args.child, args.url, args.app_id, args.key, ids))
    print("RESULT " + json.dumps(result))  # the parent reads this line


def warm_installations(
    n: int = 10_000, *, rounds: int = 2, budget_s: float = 600.0, child_timeout: float = 300.0
) -> dict[str, Any]:
    """RSS per warm installation per contender (median over rounds), bounded in time."""
    from icr_async import AsyncICRClient

    root = Path(__file__).resolve().parent.parent
    runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
    status: dict[str, Any] = {"rounds_planned": rounds, "rounds_done": 0, "partial": False}
    status["reason"] = ""
    started = time.monotonic()
    with emulator_process(installations=n) as server, tempfile.TemporaryDirectory() as tmp:

        async def list_ids() -> list[str]:
            async with AsyncICRClient(
                server.app_id, private_key_path=server.key_path, base_url=server.url, env=False
            ) as client:
                return [inst.id async for inst in client.iter_installations(page_size=100)]

        ids_path = Path(tmp) / "ids.json"
        ids_path.write_text(json.dumps(asyncio.run(list_ids())))
        for r in range(rounds):
            if time.monotonic() - started > budget_s:
                status["partial"], status["reason"] = True, "time budget"
                break
            shift = r % len(KINDS)
            done: dict[str, dict[str, Any]] = {}
            for kind in KINDS[shift:] + KINDS[:shift]:
                cmd = [sys.executable, "-m", "benchmarks.bench_memory", "--child", kind]
                cmd += ["--url", server.url, "--app-id", server.app_id]
                cmd += ["--key", server.key_path, "--ids", str(ids_path)]
                try:
                    proc = subprocess.run(
                        cmd, cwd=root, capture_output=True, text=True, timeout=child_timeout
                    )
                except subprocess.TimeoutExpired:
                    status["partial"], status["reason"] = True, f"{kind} over {child_timeout:.0f} s"
                    break
                line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
                if proc.returncode != 0 or not line:
                    raise RuntimeError(f"{kind} child failed: {proc.stderr[-2000:]}")
                done[kind] = json.loads(line[-1][len("RESULT ") :])
            if len(done) < len(KINDS):
                break
            for kind, result in done.items():
                runs[kind].append(result)
            status["rounds_done"] += 1
    status["seconds"] = round(time.monotonic() - started, 1)
    summary: dict[str, Any] = {}
    for kind, results in runs.items():
        if not results:
            continue
        per = sorted(x["bytes_per_installation"] for x in results)
        base = sorted(x["bytes_per_installation"] for x in runs[BASELINE])
        entry: dict[str, Any] = {
            "bytes_per_installation": per[len(per) // 2],
            "min": per[0],
            "max": per[-1],
            "ratio_to_baseline": per[len(per) // 2] / base[len(base) // 2],
            "warm_seconds": sorted(x["warm_seconds"] for x in results)[len(results) // 2],
        }
        for key in ("stats_mints_entries", "stats_mints_bound", "total_mints"):
            if key in results[-1]:
                entry[key] = results[-1][key]
        summary[kind] = entry
    return {"installations": n, "status": status, "contenders": summary, "runs": runs}


def run(
    *, installations: int = 10_000, rounds: int = 2, tokens: int = 100_000, budget_s: float = 600.0
) -> dict[str, Any]:
    """Print the three measurements; returns the numbers."""
    warm = warm_installations(installations, rounds=rounds, budget_s=budget_s)
    rows = []
    for kind, r in warm["contenders"].items():
        bound = r.get("stats_mints_bound")
        rows.append(
            [
                kind,
                f"{r['bytes_per_installation']:.0f} ({r['min']:.0f}-{r['max']:.0f})",
                f"{r['ratio_to_baseline']:.2f}x",
                ""
                if "stats_mints_entries" not in r
                else f"{r['stats_mints_entries']} (bound {bound})",
                f"{r['warm_seconds']:.1f}",
            ]
        )
    st = warm["status"]
    rounds_text = (
        str(st["rounds_done"])
        if not st["partial"]
        else (f"{st['rounds_done']} of {st['rounds_planned']} (partial: {st['reason']})")
    )
    print(
        f"\n### RSS per warm installation at {installations:,} installations (fresh process per "
        f"contender and round, median (min-max) over {rounds_text} rounds; the null row is the "
        "noise floor)\n"
    )
    print(
        table(
            [
                "contender",
                "RSS bytes per installation",
                "ratio",
                "stats.mints entries",
                "warm-up s",
            ],
            rows,
        )
    )
    mem = token_memory(tokens)
    null = token_memory(tokens, keep=False)
    rate = jwt_rate()
    print("\n### Memory and signing\n")
    print(
        table(
            [
                "token cache",
                "bytes per token",
                "simulated requests (1 h)",
                "JWT signatures",
                "shortest gap between signatures, min",
            ],
            [
                [
                    f"{mem['tokens']:,} tokens kept",
                    f"{mem['bytes_per_token']:.0f}",
                    rate["requests"],
                    rate["signatures"],
                    f"{rate['minutes_per_signature']:.1f}",
                ],
                [
                    f"null: {null['tokens']:,} made, none kept",
                    f"{null['bytes_per_token']:.0f}",
                    "",
                    "",
                    "",
                ],
            ],
        )
    )
    return {"warm_installations": warm, "memory": mem, "memory_null": null, "jwt": rate}


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m benchmarks.bench_memory``."""
    args_in = sys.argv[1:] if argv is None else argv
    if "--child" in args_in:
        _child_main(args_in)
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--installations", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=100_000)
    args = parser.parse_args(args_in)
    run(installations=args.installations, rounds=args.rounds, tokens=args.tokens)


if __name__ == "__main__":
    main()
