"""Memory per cached token at 100,000 tokens, and JWT signatures per app over an hour."""

from __future__ import annotations

import gc
import itertools
import secrets
import tracemalloc
import uuid
from typing import Any

from icr_async import ManualClock, MemoryTokenCache, Token
from icr_async._jwt import AppJWT, ClockSync
from icr_async._keys import PrivateKey
from icr_async.testing import generate_private_key_pem

from ._harness import table


def token_memory(n: int = 100_000) -> dict[str, Any]:
    """Bytes per entry of the token cache, keys and values included, measured by tracemalloc."""
    clock = ManualClock(1_780_000_000.0)
    prefix = f"{uuid.uuid4()}|https://api.carbonregistry.com|{'A' * 43}=|"
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    cache = MemoryTokenCache(max_entries=n, clock=clock)
    for _ in range(n):
        installation = str(uuid.uuid4())
        cache.put(
            prefix + installation,
            Token(
                token="crs_" + secrets.token_hex(24),
                expires_at=clock() + 7200,
                installation_id=installation,
                organization_id=str(uuid.uuid4()),
                minted_at=clock(),
            ),
        )
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(cache) == n
    return {"tokens": n, "bytes_per_token": (after - before) / n}


def jwt_rate(hours: float = 1.0, step: float = 5.0) -> dict[str, Any]:
    """Sign-on-demand over simulated time: a request every ``step`` seconds for ``hours``."""
    clock = ManualClock(1_780_000_000.0)
    signer = AppJWT("app", PrivateKey.from_pem(generate_private_key_pem()), ClockSync(clock))
    requests = int(hours * 3600 / step)
    signed_at: list[float] = []
    for _ in range(requests):
        before = signer.signatures
        signer.get()
        if signer.signatures != before:
            signed_at.append(clock())
        clock.advance(step)
    gaps = [b - a for a, b in itertools.pairwise(signed_at)]
    return {
        "requests": requests,
        "signatures": signer.signatures,
        "minutes_per_signature": min(gaps) / 60 if gaps else float("inf"),
    }


def run() -> dict[str, Any]:
    """Print both measurements."""
    mem = token_memory()
    rate = jwt_rate()
    print("\n### Memory and signing\n")
    print(
        table(
            [
                "cached tokens",
                "bytes per token",
                "simulated requests (1 h)",
                "JWT signatures",
                "shortest gap between signatures, min",
            ],
            [
                [
                    mem["tokens"],
                    f"{mem['bytes_per_token']:.0f}",
                    rate["requests"],
                    rate["signatures"],
                    f"{rate['minutes_per_signature']:.1f}",
                ]
            ],
        )
    )
    return {"memory": mem, "jwt": rate}


if __name__ == "__main__":
    run()
