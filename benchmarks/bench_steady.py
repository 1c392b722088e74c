"""Steady state: client CPU per request of icr-async against hand-written aiohttp and httpx.

Scenarios (each at concurrency 1, 64 and 256, contenders interleaved round by round):
- ``get_installation``: ``GET /app/installations/{id}`` with the cached app JWT, decoded into
  a model — against aiohttp + ``json.loads`` + a plain dataclass, and httpx doing the same.
- ``org_request``: ``GET /organizations/{id}`` with the cached installation token, returning
  the decoded JSON — against aiohttp + ``json.loads``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from joserfc import jwt
from joserfc.jwk import RSAKey

from icr_async import AsyncICRClient

from ._harness import (
    EmulatorProcess,
    Series,
    emulator_process,
    fmt_ratio,
    median,
    peak_rss_mib,
    pin,
    ratio_stats,
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


async def _bench(
    server: EmulatorProcess,
    *,
    rounds: int,
    per_slice: int,
    concurrencies: list[int],
    with_httpx: bool,
) -> dict[str, Any]:
    pin()  # the client on its own core(s), the server on another
    with open(server.key_path) as fh:  # noqa: ASYNC230  # once, before any timing
        pem = fh.read()
    pool = max(concurrencies)
    client = AsyncICRClient(server.app_id, pem, base_url=server.url, pool_size=pool, env=False)
    first = await client.list_installations(limit=1)
    inst = first.items[0]
    assert inst.organization is not None
    org_path = f"/organizations/{inst.organization.id}"
    scoped = client.installation(inst.id)
    token = (await scoped.get_token()).token
    app_jwt = sign_jwt(server.app_id, server.key_path)
    base_headers = {
        "Accept": "application/json",
        "x-icr-api-version": "2023-06-16",
        "User-Agent": "hand-written/1.0",
    }
    jwt_headers = {**base_headers, "Authorization": f"Bearer {app_jwt}"}
    tok_headers = {**base_headers, "Authorization": f"Bearer {token}"}
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=pool))
    inst_url = f"{server.url}/app/installations/{inst.id}"
    org_url = server.url + org_path
    httpx_client: Any = None
    if with_httpx:
        import httpx

        httpx_client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=pool, max_keepalive_connections=pool)
        )

    async def raw_installation() -> PlainInstallation:
        async with session.get(inst_url, headers=jwt_headers) as resp:
            body = await resp.read()
            if resp.status != 200:
                raise RuntimeError(resp.status)
        return plain_installation(json.loads(body))

    async def sdk_installation() -> Any:
        return await client.get_installation(inst.id)

    async def httpx_installation() -> PlainInstallation:
        resp = await httpx_client.get(inst_url, headers=jwt_headers)
        if resp.status_code != 200:
            raise RuntimeError(resp.status_code)
        return plain_installation(json.loads(resp.content))

    async def raw_org() -> Any:
        async with session.get(org_url, headers=tok_headers) as resp:
            body = await resp.read()
            if resp.status != 200:
                raise RuntimeError(resp.status)
        return json.loads(body)

    async def sdk_org() -> Any:
        return await scoped.request("GET", org_path)

    scenarios: dict[str, dict[str, Callable[[], Awaitable[Any]]]] = {
        "get_installation": {"aiohttp": raw_installation, "icr-async": sdk_installation},
        "org_request": {"aiohttp": raw_org, "icr-async": sdk_org},
    }
    if with_httpx:
        scenarios["get_installation"]["httpx"] = httpx_installation
    results: dict[str, Any] = {}
    try:
        for name, contenders in scenarios.items():
            for conc in concurrencies:
                series = {c: Series(c) for c in contenders}
                for fn in contenders.values():  # warm every connection first
                    await run_slice(fn, min(per_slice, conc * 4), conc)
                for _ in range(rounds):
                    for cname, fn in contenders.items():
                        n = (
                            per_slice
                            if cname != "httpx" or conc == 1
                            else max(conc * 2, per_slice // 8)
                        )
                        cpu_s, wall_s, done = await run_slice(fn, n, conc)
                        series[cname].add(cpu_s, wall_s, done)
                base = series["aiohttp"]
                results[f"{name}@{conc}"] = {
                    cname: {
                        "cpu_us": median(s.cpu_us),
                        "wall_us": median(s.wall_us),
                        "cpu_ratio": ratio_stats(s.cpu_us, base.cpu_us),
                        "rps_ratio": ratio_stats(base.wall_us, s.wall_us),
                    }
                    for cname, s in series.items()
                }
        results["jwt_signatures"] = client.jwt_signatures
        results["mints"] = client.stats.total_mints
    finally:
        await client.aclose()
        await session.close()
        if httpx_client is not None:
            await httpx_client.aclose()
    results["peak_rss_mib"] = peak_rss_mib()
    return results


class _Replay:
    """Stands in for the transport in the in-process measurement: answers every request with
    one recorded response, so only the client-side work is timed (no socket, no server)."""

    closed = False

    def __init__(self, status: int, headers: Any, body: bytes) -> None:
        from icr_async._transport import RawResponse

        self.response = RawResponse(status, headers, body)

    async def send(self, method: str, url: str, **_: Any) -> Any:
        return self.response

    async def aclose(self) -> None:
        return None


async def _overhead(server: EmulatorProcess, *, repeat: int, rounds: int) -> dict[str, Any]:
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
        await live.installation(inst.id).get_token()
        tokens = live._tokens
        headers = CIMultiDictProxy(
            CIMultiDict(
                {"Content-Type": "application/json", "Date": "Sun, 29 Nov 2026 09:00:00 GMT"}
            )
        )
        client = AsyncICRClient(server.app_id, pem, base_url=server.url, env=False)
        client._transport = _Replay(200, headers, body)  # type: ignore[assignment]
        org_client = AsyncICRClient(server.app_id, pem, base_url=server.url, env=False)
        org_client._transport = _Replay(200, headers, org_body)  # type: ignore[assignment]
        org_client._tokens.memory.put(
            org_client._cache_key(inst.id), tokens.memory.peek(live._cache_key(inst.id))
        )  # type: ignore[arg-type]
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
            base_us: list[float] = []
            sdk_us: list[float] = []
            for _ in range(rounds):
                for fn, sink in ((base, base_us), (sdk, sdk_us)):
                    t0 = time.perf_counter()
                    for _ in range(repeat):
                        await fn()
                    sink.append((time.perf_counter() - t0) / repeat * 1e6)
            out[name] = {
                "hand_written_us": median(base_us),
                "sdk_us": median(sdk_us),
                "added_us": median([s - b for s, b in zip(sdk_us, base_us, strict=True)]),
            }
        await client.aclose()
        await org_client.aclose()
    return out


def run(
    *,
    rounds: int = 5,
    per_slice: int = 2000,
    concurrencies: tuple[int, ...] = (1, 64, 256),
    with_httpx: bool = True,
) -> dict[str, Any]:
    """Run the steady-state comparison and print its table; returns the numbers."""
    with emulator_process(installations=20) as server:
        results = asyncio.run(
            _bench(
                server,
                rounds=rounds,
                per_slice=per_slice,
                concurrencies=list(concurrencies),
                with_httpx=with_httpx,
            )
        )
        overhead = asyncio.run(_overhead(server, repeat=5000, rounds=max(5, rounds)))
    results["overhead"] = overhead
    rows = []
    for key, contenders in results.items():
        if not isinstance(contenders, dict) or key == "overhead":
            continue
        for cname, r in contenders.items():
            rows.append(
                [
                    key,
                    cname,
                    f"{r['cpu_us']:.0f}",
                    fmt_ratio(r["cpu_ratio"]),
                    fmt_ratio(r["rps_ratio"]),
                ]
            )
    print(
        "\n### Steady state (client CPU per request; ratios to hand-written aiohttp, median (min-max) of paired rounds)\n"
    )
    print(table(["scenario@concurrency", "client", "CPU µs/req", "CPU ratio", "req/s ratio"], rows))
    print(
        f"\nJWT signatures: {results['jwt_signatures']}, token mints: {results['mints']}, peak RSS {results['peak_rss_mib']:.0f} MiB"
    )
    print(
        "\n### The SDK's own work per request, in-process (no socket; median of interleaved rounds)\n"
    )
    orows = []
    for name, r in overhead.items():
        scenario = "get_installation" if name.startswith("get_installation") else "org_request"
        estimates = []
        for conc in concurrencies:
            base = results.get(f"{scenario}@{conc}", {}).get("aiohttp")
            if base:
                estimates.append(
                    f"{(base['cpu_us'] + r['added_us']) / base['cpu_us']:.2f}x @{conc}"
                )
        orows.append(
            [
                name,
                f"{r['hand_written_us']:.1f}",
                f"{r['sdk_us']:.1f}",
                f"+{r['added_us']:.1f}",
                ", ".join(estimates),
            ]
        )
    print(
        table(
            [
                "request",
                "hand-written µs",
                "icr-async µs",
                "added µs",
                "implied CPU ratio end to end",
            ],
            orows,
        )
    )
    return results


if __name__ == "__main__":
    run()
