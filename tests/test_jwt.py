"""The app JWT: RS256 claims checked with the public key, reuse window, and clock sync."""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc import jwt
from joserfc.errors import BadSignatureError
from joserfc.jwk import RSAKey

from icr_async import PrivateKey
from icr_async._jwt import JWT_BACKDATE, JWT_LIFETIME, JWT_MIN_REMAINING, AppJWT, ClockSync
from icr_async.testing import ManualClock

APP_ID = "2f1d7a52-6c1b-4f0e-9d3a-8b7e5c4a3f21"
T0 = 1_700_000_000.25


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def private_key(rsa_key: rsa.RSAPrivateKey) -> PrivateKey:
    return PrivateKey(rsa_key)


def _public_pem(key: rsa.RSAPrivateKey) -> bytes:
    # PEM rather than the key object: joserfc before 1.1 imports serialized keys only.
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture(scope="module")
def public_jwk(rsa_key: rsa.RSAPrivateKey) -> RSAKey:
    key: RSAKey = RSAKey.import_key(_public_pem(rsa_key))
    return key


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def app_jwt(private_key: PrivateKey, clock: ManualClock) -> AppJWT:
    return AppJWT(APP_ID, private_key, ClockSync(clock))


def _get(app_jwt: AppJWT) -> str:
    """A local key signs inline: ``peek`` always has a JWT, without awaiting."""
    token = app_jwt.peek()
    assert token is not None
    return token


def _verify(token: str, public_jwk: RSAKey) -> tuple[dict[str, Any], dict[str, Any]]:
    decoded = jwt.decode(token, public_jwk, algorithms=["RS256"])
    return dict(decoded.header), dict(decoded.claims)


def test_claims_and_signature(app_jwt: AppJWT, public_jwk: RSAKey) -> None:
    token = _get(app_jwt)
    header, claims = _verify(token, public_jwk)
    assert header["alg"] == "RS256"
    assert header.get("typ") == "JWT"
    assert claims["iss"] == APP_ID
    assert claims["iat"] == int(T0) - 60
    assert claims["exp"] - claims["iat"] == 600
    assert claims["exp"] == int(T0) + 540
    assert isinstance(claims["iat"], int)
    assert isinstance(claims["exp"], int)
    assert set(claims) == {"iss", "iat", "exp"}
    assert app_jwt.signatures == 1
    assert (JWT_BACKDATE, JWT_LIFETIME, JWT_MIN_REMAINING) == (60, 600, 60)


def test_signature_does_not_verify_with_another_key(app_jwt: AppJWT) -> None:
    other = RSAKey.import_key(
        _public_pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    )
    with pytest.raises(BadSignatureError):
        jwt.decode(_get(app_jwt), other, algorithms=["RS256"])


def test_reused_until_under_a_minute_left(
    app_jwt: AppJWT, clock: ManualClock, public_jwk: RSAKey
) -> None:
    first = _get(app_jwt)
    exp = _verify(first, public_jwk)[1]["exp"]
    clock.set(exp - 60)  # exactly a minute left: still good
    assert _get(app_jwt) == first
    assert app_jwt.signatures == 1
    clock.set(exp - 59.5)
    second = _get(app_jwt)
    assert second != first
    assert app_jwt.signatures == 2
    claims = _verify(second, public_jwk)[1]
    assert claims["iat"] == int(exp - 59.5) - 60
    # The new one is reused in turn.
    clock.advance(400)
    assert _get(app_jwt) == second
    assert app_jwt.signatures == 2


def test_one_signature_per_eight_minutes(app_jwt: AppJWT, clock: ManualClock) -> None:
    for _ in range(60 * 60):  # an hour, a call every second
        _get(app_jwt)
        clock.advance(1)
    # iat = now-60, exp = iat+600, renewed at < 60 s left: a new JWT every 480 s.
    assert app_jwt.signatures == 8


def test_invalidate(app_jwt: AppJWT) -> None:
    first = _get(app_jwt)
    app_jwt.invalidate("some-other-jwt")  # an older, already replaced JWT: keep the current one
    assert _get(app_jwt) == first
    assert app_jwt.signatures == 1
    app_jwt.invalidate(first)
    second = _get(app_jwt)
    assert app_jwt.signatures == 2
    app_jwt.invalidate()
    _get(app_jwt)
    assert app_jwt.signatures == 3
    assert second  # signed again even at the same second; content may repeat


def test_repr_has_no_jwt(app_jwt: AppJWT) -> None:
    token = _get(app_jwt)
    text = repr(app_jwt)
    assert token not in text
    assert APP_ID in text
    assert "signatures=1" in text


def test_uses_the_server_offset(app_jwt: AppJWT, public_jwk: RSAKey) -> None:
    app_jwt.sync.offset = -300.0  # our clock is five minutes fast
    claims = _verify(_get(app_jwt), public_jwk)[1]
    assert claims["iat"] == int(T0 - 300) - 60


# --- ClockSync -------------------------------------------------------------------------------


def _http_date(ts: float) -> str:
    return email.utils.formatdate(ts, usegmt=True)


def test_clock_sync_learns_an_offset(clock: ManualClock) -> None:
    sync = ClockSync(clock)
    assert sync.now() == T0
    assert sync.learn(_http_date(int(T0) + 10)) is True
    assert sync.offset == pytest.approx(10 - 0.25)
    assert sync.now() == pytest.approx(int(T0) + 10)
    # Same reading again, and one-second jitter: not material.
    assert sync.learn(_http_date(int(T0) + 10)) is False
    assert sync.learn(_http_date(int(T0) + 11)) is False
    # A big change is adopted.
    assert sync.learn(_http_date(int(T0) - 5)) is True
    assert sync.offset == pytest.approx(-5.25)


def test_clock_sync_min_change(clock: ManualClock) -> None:
    sync = ClockSync(clock)
    assert sync.learn(_http_date(int(T0) + 5), min_change=10) is False
    assert sync.offset == 0.0
    assert sync.learn(_http_date(int(T0) + 5), min_change=1) is True


@pytest.mark.parametrize(
    "header", [None, "", "yesterday", "Mon, 99 Foo 2023 99:99:99 GMT", "1700000000"]
)
def test_clock_sync_ignores_garbage(clock: ManualClock, header: str | None) -> None:
    sync = ClockSync(clock)
    assert sync.learn(header) is False
    assert sync.offset == 0.0


def test_clock_sync_warns_only_past_30_seconds(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    sync = ClockSync(clock)
    with caplog.at_level(logging.WARNING, logger="icr_async"):
        assert sync.learn(_http_date(int(T0) + 25))
        assert not caplog.records
        assert sync.learn(_http_date(int(T0) - 120))
    assert len(caplog.records) == 1
    record = caplog.records[0]
    assert record.name == "icr_async"
    assert record.levelno == logging.WARNING
    assert "differs from this machine's by -120 s" in record.getMessage()


@pytest.fixture
def new_york(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run with a local time zone far from UTC (env var + tzset, restored afterwards)."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("new_york")
def test_clock_sync_minus_zero_zone_is_utc_not_local(clock: ManualClock) -> None:
    # RFC 2822 "-0000" parses to a naive datetime; it must still be read as UTC.
    header = _http_date(int(T0) + 100).replace("GMT", "-0000")
    sync = ClockSync(clock)
    assert sync.learn(header)
    assert sync.offset == pytest.approx(100 - 0.25)
