"""Steady state: client CPU per request of icr-async against hand-written aiohttp and httpx.

Scenarios (each at concurrency 1, 64 and 256, contenders interleaved round by round):
- ``get_installation``: ``GET /app/installations/{id}`` with the cached app JWT, decoded into
  a model — against aiohttp + ``json.loads`` + a plain dataclass, and httpx doing the same.
- ``org_request``: ``GET /organizations/{id}`` with the cached installation token, returning
  the decoded JSON (``installation(id).request``) — against aiohttp + ``json.loads``.

Every table has a null row, ``aiohttp (null)``: the baseline's code with its own session,
timed as a separate contender, so its ratio to the baseline is the run's noise floor. Each
round runs one slice per contender, starting with a different one each round. Everything is
bounded: HTTP timeouts are generous (120 s; a loaded machine is slow, not broken), every slice
has an outer time limit, and each scenario stops at its time budget, kept as *partial* with
the rounds it completed. Then the SDK's own per-request work is timed in-process (no socket).

Run it alone with ``python -m benchmarks.bench_steady``.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from joserfc import jwt
from joserfc.jwk import RSAKey

from icr_async import AsyncICRClient, Response, Timeouts

from ._harness import (
    NULL_SUFFIX,
    EmulatorProcess,
    SliceFn,
    emulator_process,
    fmt_ratio,
    interleave,
    median,
    peak_rss_mib,
    pin,
    rounds_label,
    summarise,
    table,
)


@dataclass
class PlainOrganization:
    """What a hand-written client would keep of an organization."""

    id: str
    full_name: str | None
    country_code: str | None
    type: str | None


@dataclass
class PlainInstallation:
    """What a hand-written client would keep of an installation."""

    id: str
    app_id: str | None
    permissions: dict[str, str]
    organization: PlainOrganization | None


def plain_installation(data: dict[str, Any]) -> PlainInstallation:
    """The hand-written decoder: json.loads output into dataclasses."""
    org = data.get("organization")
    return PlainInstallation(
        id=data["id"],
        app_id=data.get("appId"),
        permissions=data.get("permissions") or {},
        organization=PlainOrganization(
            org["id"], org.get("fullName"), org.get("countryCode"), org.get("type")
        )
        if org
        else None,
    )


def sign_jwt(app_id: str, key_path: str) -> str:
    """A JWT the way a hand-written app would sign it (once, reused)."""
    with open(key_path, "rb") as fh:
        key = RSAKey.import_key(fh.read())
    now = int(time.time())
    return jwt.encode(
        {"alg": "RS256"},
        {"iss": app_id, "iat": now - 60, "exp": now + 540},
        key,
        algorithms=["RS256"],
    )


# Generous limits for every HTTP client: on a loaded machine a connect can take seconds (the
# first run of this suite died on httpx's default 5 s connect timeout). Each slice is also
# bounded from outside (``interleave``'s slice timeout), so nothing waits forever.
HTTP_TIMEOUT = 120.0
SDK_TIMEOUTS = Timeouts(connect=HTTP_TIMEOUT, read=HTTP_TIMEOUT, total=2 * HTTP_TIMEOUT)
BASELINE = "aiohttp"
# What a hand-written client sends on every request besides its credential.
HAND_HEADERS = {
    "Accept": "application/json",
    "x-icr-api-version": "2023-06-16",
    "User-Agent": "hand-written/1.0",
}
NULL = BASELINE + NULL_SUFFIX


def aiohttp_session(pool: int) -> aiohttp.ClientSession:
    """A hand-written client's session: one pool of ``pool`` connections, generous limits."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=pool),
        timeout=aiohttp.ClientTimeout(total=2 * HTTP_TIMEOUT, connect=HTTP_TIMEOUT),
    )


async def run_slice(
    fn: Callable[[], Awaitable[Any]], n: int, concurrency: int
) -> tuple[float, float, int]:
    """n calls spread over ``concurrency`` workers; returns (cpu s, wall s, calls)."""
    per = max(1, n // concurrency)

    async def worker() -> None:
        for _ in range(per):
            await fn()

    c0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.process_time() - c0, time.perf_counter() - t0, per * concurrency


def _httpx_client(pool: int) -> tuple[Any, str]:
    """httpx with limits as generous as the others', and a note if it runs handicapped."""
    import importlib.util

    import httpx

    client = httpx.AsyncClient(
        limits=httpx.Limits(max_connections=pool, max_keepalive_connections=pool),
        timeout=httpx.Timeout(HTTP_TIMEOUT),  # connect, read, write and pool alike
    )
    note = "" if importlib.util.find_spec("sniffio") else "httpx without sniffio (unfair to it)"
    return client, note


async def _bench(
    server: EmulatorProcess,
    *,
    rounds: int,
    per_slice: int,
    concurrencies: list[int],
    with_httpx: bool,
    budget_s: float,
    slice_timeout: float,
) -> dict[str, Any]:
    pin()  # the client on its own core(s), the server on another
    with open(server.key_path) as fh:  # noqa: ASYNC230  # once, before any timing
        pem = fh.read()
    pool = max(concurrencies)
    client = AsyncICRClient(
        server.app_id, pem, base_url=server.url, pool_size=pool, timeouts=SDK_TIMEOUTS, env=False
    )
    first = await client.list_installations(limit=1)
    inst = first.items[0]
    assert inst.organization is not None
    org_path = f"/organizations/{inst.organization.id}"
    scoped = client.installation(inst.id)
    token = (await scoped.get_token()).token
    app_jwt = sign_jwt(server.app_id, server.key_path)
    base_headers = HAND_HEADERS
    jwt_headers = {**base_headers, "Authorization": f"Bearer {app_jwt}"}
    tok_headers = {**base_headers, "Authorization": f"Bearer {token}"}
    # The baseline and the null contender: the same code, each with its own session.
    sessions = {BASELINE: aiohttp_session(pool), NULL: aiohttp_session(pool)}
    inst_url = f"{server.url}/app/installations/{inst.id}"
    org_url = server.url + org_path
    httpx_client: Any = None
    notes: list[str] = []
    if with_httpx:
        httpx_client, note = _httpx_client(pool)
        notes += [note] if note else []

    def raw_installation(session: aiohttp.ClientSession) -> Callable[[], Awaitable[Any]]:
        async def call() -> PlainInstallation:
            async with session.get(inst_url, headers=jwt_headers) as resp:
                body = await resp.read()
                if resp.status != 200:
                    raise RuntimeError(resp.status)
            return plain_installation(json.loads(body))

        return call

    def raw_org(session: aiohttp.ClientSession) -> Callable[[], Awaitable[Any]]:
        async def call() -> Any:
            async with session.get(org_url, headers=tok_headers) as resp:
                body = await resp.read()
                if resp.status != 200:
                    raise RuntimeError(resp.status)
            return json.loads(body)

        return call

    async def sdk_installation() -> Any:
        return await client.get_installation(inst.id)

    async def httpx_installation() -> PlainInstallation:
        resp = await httpx_client.get(inst_url, headers=jwt_headers)
        if resp.status_code != 200:
            raise RuntimeError(resp.status_code)
        return plain_installation(json.loads(resp.content))

    async def sdk_org() -> Any:
        return await scoped.request("GET", org_path)

    scenarios: dict[str, dict[str, Callable[[], Awaitable[Any]]]] = {
        "get_installation": {
            BASELINE: raw_installation(sessions[BASELINE]),
            NULL: raw_installation(sessions[NULL]),
            "icr-async": sdk_installation,
        },
        "org_request": {
            BASELINE: raw_org(sessions[BASELINE]),
            NULL: raw_org(sessions[NULL]),
            "icr-async": sdk_org,
        },
    }
    if with_httpx:
        scenarios["get_installation"]["httpx"] = httpx_installation
    results: dict[str, Any] = {"notes": notes}
    try:
        for name, contenders in scenarios.items():
            for conc in concurrencies:

                def slice_of(
                    cname: str, fn: Callable[[], Awaitable[Any]], conc: int = conc
                ) -> SliceFn:
                    # C=1 is ~3x slower per request: half the requests, the same rounds.
                    # httpx is ~30x slower at high concurrency: fewer requests, same time.
                    n = per_slice // 2 if conc == 1 else per_slice
                    if cname == "httpx" and conc > 1:
                        n = max(conc * 2, per_slice // 8)
                    return lambda: run_slice(fn, n, conc)

                for fn in contenders.values():  # warm every connection first (bounded too)
                    await asyncio.wait_for(
                        run_slice(fn, min(per_slice, conc * 4), conc), slice_timeout
                    )
                series, status = await interleave(
                    {c: slice_of(c, fn) for c, fn in contenders.items()},
                    rounds=rounds,
                    budget_s=budget_s,
                    slice_timeout=slice_timeout,
                )
                results[f"{name}@{conc}"] = {
                    "status": status.as_dict(),
                    "contenders": summarise(series, BASELINE, throughput=True),
                }
        results["jwt_signatures"] = client.jwt_signatures
        results["mints"] = client.stats.total_mints
    finally:
        await client.aclose()
        for session in sessions.values():
            await session.close()
        if httpx_client is not None:
            await httpx_client.aclose()
    results["peak_rss_mib"] = peak_rss_mib()
    return results


HAND = "hand-written"


class _Replay:
    """A ``Transport`` for the in-process measurement: answers every request with one
    recorded response, so only the client-side work is timed (no socket, no server). A POST
    (the one token mint, before any timing) gets ``mint_body``, recorded from the emulator."""

    def __init__(self, status: int, headers: Any, body: bytes, mint_body: bytes = b"") -> None:
        self.status, self.headers, self.body, self.mint_body = status, headers, body, mint_body

    async def send(self, request: Any, headers: Any, *, timeout: float | None) -> Response:
        # A new Response per request, as a real transport makes (its parsed JSON is cached).
        if request.method == "POST":
            return Response(self.status, self.headers, self.mint_body)
        return Response(self.status, self.headers, self.body)

    async def aclose(self) -> None:
        return None


async def _overhead(
    server: EmulatorProcess, *, repeat: int, rounds: int, budget_s: float, slice_timeout: float
) -> dict[str, Any]:
    """The SDK's own per-request work (credential, headers, pipeline, decoding into a model)
    against the hand-written equivalent (headers dict, ``json.loads``, dataclass), in-process.

    The end-to-end run cannot resolve a few per cent on these machines; this can, and the
    difference in µs is what the SDK adds to any round trip."""
    from multidict import CIMultiDict, CIMultiDictProxy

    with open(server.key_path) as fh:  # noqa: ASYNC230  # once, before any timing
        pem = fh.read()
    async with AsyncICRClient(server.app_id, pem, base_url=server.url, env=False) as live:
        inst = (await live.list_installations(limit=1)).items[0]
        assert inst.organization is not None
        body = json.dumps(await live.request("GET", f"/app/installations/{inst.id}")).encode()
        org_body = json.dumps(
            await live.installation(inst.id).request(
                "GET", f"/organizations/{inst.organization.id}"
            )
        ).encode()
        # A real mint's answer, replayed to the replaying client's one mint (not timed).
        mint_body = json.dumps(
            await live.request("POST", f"/app/installations/{inst.id}/accessTokens")
        ).encode()
        now = email.utils.formatdate(usegmt=True)  # a Date in step with expiresAt
        headers = CIMultiDictProxy(CIMultiDict({"Content-Type": "application/json", "Date": now}))
        client = AsyncICRClient(
            server.app_id,
            pem,
            base_url=server.url,
            env=False,
            transport=_Replay(200, headers, body),
        )
        org_client = AsyncICRClient(
            server.app_id,
            pem,
            base_url=server.url,
            env=False,
            transport=_Replay(200, headers, org_body, mint_body),
        )
        scoped = org_client.installation(inst.id)
        org_path = f"/organizations/{inst.organization.id}"
        jwt = sign_jwt(server.app_id, server.key_path)

        async def hand_written_model() -> Any:
            h = {
                "Accept": "application/json",
                "x-icr-api-version": "2023-06-16",
                "Authorization": "Bearer " + jwt,
            }
            assert h
            return plain_installation(json.loads(body))

        async def hand_written_json() -> Any:
            h = {
                "Accept": "application/json",
                "x-icr-api-version": "2023-06-16",
                "Authorization": "Bearer " + jwt,
            }
            assert h
            return json.loads(org_body)

        pairs = {
            "get_installation (model)": (
                hand_written_model,
                lambda: client.get_installation(inst.id),
            ),
            "org_request (JSON, installation token)": (
                hand_written_json,
                lambda: scoped.request("GET", org_path),
            ),
        }
        out: dict[str, Any] = {}
        for name, (base, sdk) in pairs.items():

            def timed(fn: Callable[[], Awaitable[Any]]) -> SliceFn:
                async def one_slice() -> tuple[float, float, int]:
                    c0, t0 = time.process_time(), time.perf_counter()
                    for _ in range(repeat):
                        await fn()
                    return time.process_time() - c0, time.perf_counter() - t0, repeat

                return one_slice

            contenders = {
                HAND: timed(base),
                HAND + NULL_SUFFIX: timed(base),
                "icr-async": timed(sdk),
            }
            for fn in contenders.values():
                await fn()  # warm
            series, status = await interleave(
                contenders, rounds=rounds, budget_s=budget_s, slice_timeout=slice_timeout
            )
            base_us = series[HAND].wall_us
            out[name] = {
                "status": status.as_dict(),
                "contenders": {
                    cname: {
                        "us": median(s.wall_us),
                        "added_us": median(
                            [a - b for a, b in zip(s.wall_us, base_us, strict=True)]
                        ),
                    }
                    for cname, s in series.items()
                },
            }
        await client.aclose()
        await org_client.aclose()
    return out


def run(
    *,
    rounds: int = 15,
    per_slice: int = 2000,
    concurrencies: tuple[int, ...] = (1, 64, 256),
    with_httpx: bool = True,
    budget_s: float = 120.0,
    slice_timeout: float = 60.0,
    overhead_repeat: int = 5000,
) -> dict[str, Any]:
    """Run the steady-state comparison and print its tables; returns the numbers.

    Bounded by count (``rounds`` slices of ``per_slice`` requests per contender) and by time:
    each scenario and concurrency stops after ``budget_s`` (marked partial, with the rounds
    done) and each slice after ``slice_timeout``."""
    with emulator_process(installations=20) as server:
        results = asyncio.run(
            _bench(
                server,
                rounds=rounds,
                per_slice=per_slice,
                concurrencies=list(concurrencies),
                with_httpx=with_httpx,
                budget_s=budget_s,
                slice_timeout=slice_timeout,
            )
        )
        overhead = asyncio.run(
            _overhead(
                server,
                repeat=overhead_repeat,
                rounds=rounds,
                budget_s=budget_s,
                slice_timeout=slice_timeout,
            )
        )
    results["overhead"] = overhead
    _print(results, concurrencies)
    return results


def _print(results: dict[str, Any], concurrencies: tuple[int, ...]) -> None:
    rows = []
    for key, entry in results.items():
        if not isinstance(entry, dict) or "contenders" not in entry:
            continue
        rounds = rounds_label(entry["status"])
        for cname, r in entry["contenders"].items():
            rows.append(
                [
                    key,
                    cname,
                    f"{r['cpu_us']:.0f}",
                    fmt_ratio(r["cpu_ratio"]),
                    fmt_ratio(r["rps_ratio"]),
                    rounds,
                ]
            )
    print(
        "\n### Steady state (client CPU per request; ratios to hand-written aiohttp, median "
        f"(min-max) of paired interleaved rounds; the {NULL} row is the noise floor)\n"
    )
    print(
        table(
            ["scenario@concurrency", "client", "CPU µs/req", "CPU ratio", "req/s ratio", "rounds"],
            rows,
        )
    )
    for note in results.get("notes", []):
        print(f"\nNote: {note}")
    print(
        f"\nJWT signatures: {results['jwt_signatures']}, token mints: {results['mints']}, peak RSS {results['peak_rss_mib']:.0f} MiB"
    )
    print(
        "\n### The SDK's own work per request, in-process (no socket; median of interleaved "
        f"rounds; added µs is paired with {HAND}, whose null row is the noise floor)\n"
    )
    orows = []
    for name, entry in results["overhead"].items():
        scenario = "get_installation" if name.startswith("get_installation") else "org_request"
        for cname, r in entry["contenders"].items():
            estimates = []
            for conc in concurrencies:
                base = results.get(f"{scenario}@{conc}", {}).get("contenders", {}).get(BASELINE)
                if base and base["cpu_us"] == base["cpu_us"]:  # not NaN
                    implied = (base["cpu_us"] + r["added_us"]) / base["cpu_us"]
                    estimates.append(f"{implied:.2f}x @{conc}")
            orows.append(
                [
                    name,
                    cname,
                    f"{r['us']:.1f}",
                    f"{r['added_us']:+.1f}",
                    ", ".join(estimates),
                    rounds_label(entry["status"]),
                ]
            )
    print(
        table(
            ["request", "contender", "µs", "added µs", "implied CPU ratio end to end", "rounds"],
            orows,
        )
    )


if __name__ == "__main__":
    run()
