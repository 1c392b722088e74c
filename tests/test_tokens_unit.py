"""The in-process token cache and stats, without an event loop."""

from __future__ import annotations

import datetime

import anyio
import pytest

from icr_async import ClientStats, MemoryTokenCache, Token, TokenCache
from icr_async.testing import ManualClock

T0 = 1_700_000_000.0


def _token(name: str, expires_at: float = T0 + 7200) -> Token:
    return Token(
        token=f"crs_{name:0>48}",
        expires_at=datetime.datetime.fromtimestamp(expires_at, datetime.timezone.utc),
        installation_id=name,
    )


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


def test_put_peek_and_len(clock: ManualClock) -> None:
    cache = MemoryTokenCache(max_entries=10, clock=clock)
    assert len(cache) == 0
    assert cache.peek("a") is None
    tok = _token("a")
    cache.put("a", tok)
    assert cache.peek("a") is tok
    assert len(cache) == 1
    newer = _token("a", T0 + 9000)
    cache.put("a", newer)
    assert cache.peek("a") is newer
    assert len(cache) == 1
    assert cache.evictions == 0


def test_lru_cap_evicts_least_recently_used(clock: ManualClock) -> None:
    cache = MemoryTokenCache(max_entries=2, clock=clock)
    cache.put("a", _token("a"))
    cache.put("b", _token("b"))
    assert cache.peek("a") is not None  # "a" is now the most recently used
    cache.put("c", _token("c"))
    assert len(cache) == 2
    assert cache.peek("b") is None
    assert cache.peek("a") is not None
    assert cache.peek("c") is not None
    assert cache.evictions == 1
    cache.put("d", _token("d"))  # "a" was peeked before "c": "a" goes
    assert cache.peek("a") is None
    assert cache.evictions == 2


def test_re_put_refreshes_recency(clock: ManualClock) -> None:
    cache = MemoryTokenCache(max_entries=2, clock=clock)
    cache.put("a", _token("a"))
    cache.put("b", _token("b"))
    cache.put("a", _token("a", T0 + 1))
    cache.put("c", _token("c"))
    assert cache.peek("b") is None
    assert cache.peek("a") is not None


def test_cap_of_one(clock: ManualClock) -> None:
    cache = MemoryTokenCache(max_entries=1, clock=clock)
    for name in "abcde":
        cache.put(name, _token(name))
    assert len(cache) == 1
    assert cache.peek("e") is not None
    assert cache.evictions == 4


def test_sweep_drops_only_expired(clock: ManualClock) -> None:
    cache = MemoryTokenCache(max_entries=100, clock=clock)
    cache.put("old", _token("old", T0 + 10))
    cache.put("edge", _token("edge", T0 + 60))
    cache.put("new", _token("new", T0 + 3600))
    assert cache.sweep() == 0
    clock.advance(60)  # "edge" expires exactly now: gone
    assert cache.sweep() == 2
    assert cache.peek("old") is None
    assert cache.peek("edge") is None
    assert cache.peek("new") is not None
    assert cache.evictions == 2
    clock.advance(10_000)
    assert cache.sweep() == 1
    assert len(cache) == 0
    assert cache.evictions == 3


def test_puts_sweep_expired_entries_periodically(clock: ManualClock) -> None:
    cache = MemoryTokenCache(max_entries=100_000, clock=clock)
    for i in range(1023):
        cache.put(f"k{i}", _token(str(i), T0 + 5))
    clock.advance(10)
    assert len(cache) == 1023  # no sweep yet
    cache.put("fresh", _token("fresh"))  # the 1024th put sweeps
    assert len(cache) == 1
    assert cache.peek("fresh") is not None
    assert cache.evictions == 1023


def test_discard_only_the_matching_token(clock: ManualClock) -> None:
    cache = MemoryTokenCache(clock=clock)
    current = _token("a")
    cache.put("a", current)
    cache.discard("a", token="crs_someOlderTokenThatWasAlreadyReplaced")
    assert cache.peek("a") is current
    cache.discard("a", token=current.token)
    assert cache.peek("a") is None
    cache.discard("a")  # missing key: no error
    cache.put("b", _token("b"))
    cache.discard("b")  # no token given: drop whatever is there
    assert cache.peek("b") is None
    assert cache.evictions == 0


def test_clear(clock: ManualClock) -> None:
    cache = MemoryTokenCache(clock=clock)
    cache.put("a", _token("a"))
    cache.put("b", _token("b"))
    cache.clear()
    assert len(cache) == 0
    assert cache.peek("a") is None


def test_memory_cache_satisfies_the_protocol() -> None:
    assert isinstance(MemoryTokenCache(), TokenCache)
    assert not isinstance(object(), TokenCache)


@pytest.mark.anyio
async def test_memory_lease_is_granted_at_once() -> None:
    # Single flight in one process is the token manager's: the memory cache keeps no lock
    # (none to reset after a fork), so even a nested lease on one key cannot block.
    cache = MemoryTokenCache()
    with anyio.fail_after(1):
        async with cache.lease("k", ttl=30.0), cache.lease("k", ttl=30.0):
            pass


def test_default_clock_is_wall_time() -> None:
    cache = MemoryTokenCache(max_entries=5)
    cache.put("past", _token("past", 1.0))
    cache.put("future", _token("future", 4_000_000_000.0))
    assert cache.sweep() == 1
    assert cache.peek("future") is not None


# --- stats -----------------------------------------------------------------------------------


def test_stats_as_dict() -> None:
    stats = ClientStats()
    snapshot = stats.as_dict()
    assert snapshot["total_mints"] == 0
    assert snapshot["mints"] == {}
    assert set(snapshot) == set(ClientStats.__slots__)
    assert all(v == 0 for k, v in snapshot.items() if k != "mints")

    stats.count_mint("inst-1")
    stats.count_mint("inst-1")
    stats.count_mint("@app")
    stats.cache_hits = 10
    stats.retries = 3
    snapshot = stats.as_dict()
    assert snapshot["mints"] == {"inst-1": 2, "@app": 1}
    assert type(snapshot["mints"]) is dict
    assert snapshot["total_mints"] == 3
    assert snapshot["cache_hits"] == 10
    assert snapshot["retries"] == 3
    # A snapshot, not a view.
    snapshot["mints"]["inst-1"] = 99
    assert stats.mints["inst-1"] == 2
    stats.cache_hits = 11
    assert snapshot["cache_hits"] == 10


def test_stats_repr_and_total() -> None:
    stats = ClientStats()
    for _ in range(4):
        stats.count_mint("a")
    stats.cache_misses = 2
    assert stats.total_mints == 4
    text = repr(stats)
    assert "mints=4" in text
    assert "misses=2" in text


def test_mint_statistics_stay_bounded_and_the_total_is_kept() -> None:
    stats = ClientStats(max_installations=3)
    for key in ["a", "b", "a", "c", "d", "a"]:
        stats.count_mint(key)
    # "b" was the least recently minted for when "d" came: forgotten; "a" kept its count.
    assert dict(stats.mints) == {"c": 1, "d": 1, "a": 3}
    assert stats.mints["b"] == 0  # reads as a Counter does
    assert stats.total_mints == 6
    assert stats.as_dict()["total_mints"] == 6
