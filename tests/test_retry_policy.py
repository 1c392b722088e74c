"""The pure retry policy: backoff with full jitter, validation, Retry-After parsing."""

from __future__ import annotations

import email.utils
import random
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from icr_async import RetryPolicy
from icr_async._retry import parse_retry_after
from icr_async.errors import ConfigurationError

NOW = 1_700_000_000.0


def test_defaults() -> None:
    policy = RetryPolicy()
    assert policy.attempts == 3
    assert policy.statuses == frozenset({429, 500, 502, 503, 504})
    assert policy.retry_invalid_json is True
    assert policy.retry_on_timeout
    assert policy.retry_on_connection_error
    for status in (429, 500, 502, 503, 504):
        assert policy.retries_status(status)
    for status in (200, 400, 401, 403, 404, 409, 422, 501):
        assert not policy.retries_status(status)


def test_statuses_can_be_narrowed_and_must_be_error_statuses() -> None:
    assert not RetryPolicy(statuses={429, 503}).retries_status(500)
    with pytest.raises(ConfigurationError, match=r"400\.\.599"):
        RetryPolicy(statuses={200})


def test_disabled() -> None:
    assert RetryPolicy.disabled().attempts == 1


def test_statuses_are_converted_to_a_frozenset() -> None:
    policy = RetryPolicy(statuses=[500, 500, 503])
    assert policy.statuses == frozenset({500, 503})
    assert policy.retries_status(500)
    assert not policy.retries_status(429)


@pytest.mark.parametrize(
    ("retry_number", "ceiling"),
    [(0, 0.5), (1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (6, 8.0), (19, 8.0)],
)
def test_backoff_ceiling(retry_number: int, ceiling: float) -> None:
    policy = RetryPolicy(backoff_base=0.5, backoff_cap=8.0)
    assert policy.backoff(retry_number, rand=lambda: 1.0) == ceiling
    assert policy.backoff(retry_number, rand=lambda: 0.0) == 0.0
    assert policy.backoff(retry_number, rand=lambda: 0.5) == ceiling / 2


def test_backoff_huge_retry_number_is_the_cap_not_an_overflow() -> None:
    policy = RetryPolicy(backoff_base=0.5, backoff_cap=8.0)
    assert policy.backoff(10_000, rand=lambda: 1.0) == 8.0


def test_backoff_default_rand_is_random_and_bounded() -> None:
    policy = RetryPolicy(backoff_base=1.0, backoff_cap=4.0)
    waits = {policy.backoff(3) for _ in range(200)}
    assert all(0.0 <= w <= 4.0 for w in waits)
    assert len(waits) > 100  # really jittered, not a constant


def test_backoff_zero_base_never_waits() -> None:
    assert RetryPolicy(backoff_base=0).backoff(5, rand=lambda: 1.0) == 0.0


@given(
    base=st.floats(0, 100),
    cap=st.floats(0, 1000),
    retry_number=st.integers(-5, 5000),
    seed=st.integers(0, 2**32),
)
def test_full_jitter_bounds(base: float, cap: float, retry_number: int, seed: int) -> None:
    rng = random.Random(seed)
    policy = RetryPolicy(backoff_base=base, backoff_cap=cap)
    wait = policy.backoff(retry_number, rand=rng.random)
    n = max(1, retry_number)
    # Exact arithmetic, independent of the implementation: no float overflow to hide behind.
    ceiling = min(Fraction(cap), Fraction(base) * 2 ** (n - 1))
    assert isinstance(wait, float)
    assert wait >= 0.0
    assert Fraction(wait) <= ceiling


@pytest.mark.parametrize("attempts", [0, -1, 21, 1.5, True, "3", None])
def test_bad_attempts(attempts: Any) -> None:
    with pytest.raises(ConfigurationError, match="attempts"):
        RetryPolicy(attempts=attempts)


@pytest.mark.parametrize("attempts", [1, 20])
def test_attempts_bounds(attempts: int) -> None:
    assert RetryPolicy(attempts=attempts).attempts == attempts


@pytest.mark.parametrize("field", ["backoff_base", "backoff_cap", "max_retry_after"])
@pytest.mark.parametrize("value", [-0.1, float("nan"), "1", None, True])
def test_bad_numbers(field: str, value: Any) -> None:
    with pytest.raises(ConfigurationError, match=field):
        RetryPolicy(**{field: value})


# --- Retry-After -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", 0.0),
        ("7", 7.0),
        (" 120 ", 120.0),
        ("1.5", 1.5),
        ("-5", 0.0),
        ("-0.1", 0.0),
    ],
)
def test_retry_after_seconds(value: str, expected: float) -> None:
    assert parse_retry_after(value, NOW) == expected


def test_retry_after_http_date() -> None:
    future = email.utils.formatdate(NOW + 90, usegmt=True)
    assert parse_retry_after(future, NOW) == pytest.approx(90.0)
    past = email.utils.formatdate(NOW - 90, usegmt=True)
    assert parse_retry_after(past, NOW) == 0.0
    # RFC 850 and asctime forms are HTTP dates too.
    assert parse_retry_after("Tuesday, 14-Nov-23 22:14:50 GMT", NOW) == pytest.approx(90.0)
    # A naive "-0000" date is UTC.
    minus_zero = email.utils.formatdate(NOW + 30, usegmt=True).replace("GMT", "-0000")
    assert parse_retry_after(minus_zero, NOW) == pytest.approx(30.0)


@pytest.mark.parametrize(
    "value",
    [None, "", "   ", "soon", "nan", "NaN", "inf", "-inf", "1e999", "Mon, 99 Foo 2023", "0x10"],
)
def test_retry_after_garbage_is_none(value: str | None) -> None:
    assert parse_retry_after(value, NOW) is None


@given(st.text(max_size=40))
def test_retry_after_never_raises_and_never_negative(value: str) -> None:
    result = parse_retry_after(value, NOW)
    assert result is None or (result >= 0.0 and result == result and result != float("inf"))
