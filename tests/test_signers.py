"""Signers: the JWT signature delegated to an HSM- or KMS-like signer, and key rotation.

``RemoteSigner`` below behaves like a KMS: the SDK never sees its key, ``sign`` awaits a
gate the test opens and closes, and it can be told to fail or to answer garbage. Every
JWT it signs goes to the emulator, which verifies it for real.
"""

from __future__ import annotations

import asyncio
import base64
import importlib
import json
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio.from_thread
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from joserfc import jwt
from joserfc.jwk import RSAKey

from icr_async import (
    AsyncICRClient,
    AuthenticationError,
    ConfigurationError,
    ICRClient,
    PrivateKey,
    Signer,
    SignerError,
    public_key_fingerprint,
)
from icr_async._jwt import JWT_LAST_USE, JWT_REFRESH_AHEAD, SIGNER_RETRY_DELAY, AppJWT, ClockSync
from icr_async.testing import ICREmulator, ManualClock

pytestmark = pytest.mark.anyio

APP_ID = "2f1d7a52-6c1b-4f0e-9d3a-8b7e5c4a3f21"
SECRET = "pin=246810"  # what a careless signer puts in its error text


class RemoteSigner:
    """A signer whose key the SDK never touches; ``gate`` holds ``sign`` until it is set."""

    def __init__(self, pem: str, name: str = "kms:alias/icr-app") -> None:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
        assert isinstance(key, rsa.RSAPrivateKey)
        self._key = key
        self.key_id = name
        self.public_key = key.public_key()
        self.fingerprint = public_key_fingerprint(self.public_key)
        self.gate = asyncio.Event()
        self.gate.set()
        self.calls = 0
        self.fail: Exception | None = None
        self.answer: Callable[[bytes], Any] | None = None

    async def sign(self, signing_input: bytes) -> bytes:
        self.calls += 1
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        if self.answer is not None:
            result: bytes = self.answer(signing_input)
            return result
        return self._key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())


def _public_pem(pem: str) -> bytes:
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


async def _pending_signature(client: AsyncICRClient) -> None:
    """Wait for the background signature under way (there must be one)."""
    pending = client._jwt._pending
    assert pending is not None
    await pending


async def _until(condition: Callable[[], bool]) -> None:
    """Let other tasks run until ``condition`` holds (bounded: never a wall-clock wait)."""
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")


# -- the protocol and the JWT -------------------------------------------------------------


def test_private_key_is_a_signer(private_key_pem: str) -> None:
    key = PrivateKey.from_pem(private_key_pem)
    signer: Signer = key  # the static check: mypy --strict sees the protocol satisfied
    assert isinstance(signer, Signer)
    assert signer.fingerprint == public_key_fingerprint(signer.public_key) == key.fingerprint
    assert signer.key_id == f"SHA256:{key.fingerprint}"
    remote: Signer = RemoteSigner(private_key_pem)
    assert isinstance(remote, Signer)
    assert remote.fingerprint == key.fingerprint


async def test_private_key_sign_is_rs256(private_key_pem: str) -> None:
    key = PrivateKey.from_pem(private_key_pem)
    signature = await key.sign(b"header.claims")
    key.public_key.verify(signature, b"header.claims", padding.PKCS1v15(), hashes.SHA256())
    assert signature == key.sign_now(b"header.claims")  # PKCS#1 v1.5 is deterministic


@pytest.mark.parametrize("remote", [False, True], ids=["private-key", "remote-signer"])
async def test_the_sdk_assembles_the_jwt_and_only_the_signature_is_delegated(
    private_key_pem: str, remote: bool
) -> None:
    clock = ManualClock(1_700_000_000.25)
    signer: Signer = (
        RemoteSigner(private_key_pem) if remote else PrivateKey.from_pem(private_key_pem)
    )
    token = await AppJWT(APP_ID, signer, ClockSync(clock)).get()
    header, claims, signature = token.split(".")
    assert base64.urlsafe_b64decode(header + "==") == b'{"alg":"RS256","typ":"JWT"}'
    assert base64.urlsafe_b64decode(claims + "==") == (
        b'{"iss":"%s","iat":1699999940,"exp":1700000540}' % APP_ID.encode()
    )
    assert "=" not in token
    raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    signer.public_key.verify(
        raw, f"{header}.{claims}".encode(), padding.PKCS1v15(), hashes.SHA256()
    )
    # And joserfc, the library that signed before, reads it as the same RS256 JWT.
    decoded = jwt.decode(
        token, RSAKey.import_key(_public_pem(private_key_pem)), algorithms=["RS256"]
    )
    assert dict(decoded.claims) == {"iss": APP_ID, "iat": 1699999940, "exp": 1700000540}


# -- configuration --------------------------------------------------------------------------


def test_signer_and_private_key_are_mutually_exclusive(private_key_pem: str, tmp_path: Any) -> None:
    signer = RemoteSigner(private_key_pem)
    with pytest.raises(ConfigurationError, match="either signer= or private_key=, not both"):
        AsyncICRClient("app", private_key_pem, signer=signer, env=False)
    path = tmp_path / "k.pem"
    path.write_text(private_key_pem)
    with pytest.raises(ConfigurationError, match="signer= or private_key_path="):
        AsyncICRClient("app", signer=signer, private_key_path=path, env=False)
    with pytest.raises(ConfigurationError, match="private_key_password="):
        AsyncICRClient("app", signer=signer, private_key_password="pw", env=False)


def test_a_signer_ignores_key_variables(
    private_key_pem: str, other_private_key_pem: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ICR_PRIVATE_KEY", other_private_key_pem)
    signer = RemoteSigner(private_key_pem)
    client = AsyncICRClient("app", signer=signer)
    assert client.key_fingerprint == signer.fingerprint
    assert client.signers == (signer,)


class _SyncSign:
    key_id = "sync"

    def __init__(self, pem: str) -> None:
        self.public_key = RemoteSigner(pem).public_key
        self.fingerprint = public_key_fingerprint(self.public_key)

    def sign(self, signing_input: bytes) -> bytes:
        return b""


class _WithKey:
    key_id = "odd"

    def __init__(self, public_key: Any, fingerprint: str | None = None) -> None:
        self.public_key = public_key
        self.fingerprint = fingerprint if fingerprint is not None else "x"

    async def sign(self, signing_input: bytes) -> bytes:
        return b""


def test_bad_signers_are_configuration_errors(private_key_pem: str) -> None:
    def build(signer: Any) -> None:
        AsyncICRClient("app", signer=signer, env=False)

    with pytest.raises(ConfigurationError, match=r"must implement icr_async\.Signer"):
        build(object())
    with pytest.raises(ConfigurationError, match="pass PEM text as private_key="):
        build(private_key_pem)
    with pytest.raises(ConfigurationError, match="empty list"):
        build([])
    with pytest.raises(ConfigurationError, match="coroutine function"):
        build(_SyncSign(private_key_pem))
    ec_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    with pytest.raises(ConfigurationError, match="RSA"):
        build(_WithKey(ec_key))
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    with pytest.raises(ConfigurationError, match="1024-bit"):
        build(_WithKey(small, public_key_fingerprint(small)))
    good = RemoteSigner(private_key_pem).public_key
    with pytest.raises(ConfigurationError, match="reports fingerprint"):
        build(_WithKey(good, "not-the-fingerprint"))
    same = RemoteSigner(private_key_pem)
    with pytest.raises(ConfigurationError, match="twice"):
        build([same, PrivateKey.from_pem(private_key_pem)])


# -- a slow or failing signer ---------------------------------------------------------------


async def test_one_signature_per_jwt_lifetime(
    make_client: Any, clock: ManualClock, emulator: ICREmulator, private_key_pem: str
) -> None:
    signer = RemoteSigner(private_key_pem)
    client: AsyncICRClient = make_client(private_key=None, signer=signer)
    # Cold: many callers at once share one signature.
    pages = await asyncio.gather(*(client.list_installations(limit=1) for _ in range(10)))
    assert {page.total for page in pages} == {25}
    assert signer.calls == 1
    for _ in range(30):  # half an hour, a call a minute
        await client.list_installations(limit=1)
        if client._jwt._pending is not None:
            await _pending_signature(client)
        clock.advance(60)
    # Renewed in the background once under two minutes are left: with a call a minute,
    # that is at eight minutes, as a local key would.
    assert signer.calls == client.jwt_signatures == 4  # at 0, 8, 16 and 24 minutes
    assert sum(emulator.stats.jwt_rejections.values()) == 0  # none sent stale


async def test_a_slow_signer_never_blocks_requests_with_a_valid_jwt(
    make_client: Any, clock: ManualClock, emulator: ICREmulator, private_key_pem: str
) -> None:
    signer = RemoteSigner(private_key_pem)
    client: AsyncICRClient = make_client(private_key=None, signer=signer)
    await client.list_installations(limit=1)
    first = client._jwt.current
    assert signer.calls == 1
    # Into the refresh window, with the signer stuck: every call still goes through at once.
    clock.advance(540 - JWT_REFRESH_AHEAD + 1)
    signer.gate.clear()
    for _ in range(5):
        await client.list_installations(limit=1)
        await client.create_app_token()
    assert signer.calls == 2  # one signature under way, not one per request
    assert client.jwt_signatures == 1
    assert client._jwt.current == first
    signer.gate.set()
    await _pending_signature(client)
    assert client.jwt_signatures == 2
    assert client._jwt.current != first
    # With no usable JWT left, callers do wait for the signer, and get the new JWT.
    clock.advance(540 - JWT_LAST_USE + 1)
    signer.gate.clear()
    call = asyncio.ensure_future(client.list_installations(limit=1))
    await _until(lambda: signer.calls == 3)
    assert not call.done()
    signer.gate.set()
    assert (await call).total == 25
    assert sum(emulator.stats.jwt_rejections.values()) == 0


async def test_a_failing_signer_is_a_signer_error_only_when_no_jwt_is_left(
    make_client: Any,
    clock: ManualClock,
    private_key_pem: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="icr_async")
    signer = RemoteSigner(private_key_pem)
    client: AsyncICRClient = make_client(private_key=None, signer=signer)
    await client.list_installations(limit=1)
    signer.fail = RuntimeError(f"HSM unreachable ({SECRET})")
    clock.advance(540 - JWT_REFRESH_AHEAD + 1)
    await client.list_installations(limit=1)  # served with the cached JWT
    await _until(lambda: client._jwt._pending is None)
    warnings = [r for r in caplog.records if r.name == "icr_async" and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    text = warnings[0].getMessage()
    assert "kms:alias/icr-app" in text
    assert signer.fingerprint in text
    assert "RuntimeError" in text
    # Within the retry delay the signer is left alone, and the cached JWT still serves.
    await client.list_installations(limit=1)
    assert signer.calls == 2
    clock.advance(SIGNER_RETRY_DELAY)
    await client.list_installations(limit=1)
    await _until(lambda: client._jwt._pending is None)
    assert signer.calls == 3
    # Past the JWT's last usable second: the caller gets a typed error naming the signer.
    clock.advance(120)
    with pytest.raises(SignerError) as caught:
        await client.list_installations(limit=1)
    err = caught.value
    assert signer.calls == 4
    assert err.key_id == "kms:alias/icr-app"
    assert err.fingerprint == signer.fingerprint
    assert "kms:alias/icr-app" in str(err)
    assert isinstance(err.__cause__, RuntimeError)
    # A second caller right after fails fast, without asking the dead signer again.
    with pytest.raises(SignerError, match="not asked again") as again:
        await client.list_installations(limit=1)
    assert signer.calls == 4
    assert again.value.__cause__ is err
    for shown in (str(err), repr(err), str(again.value), str(vars(err))):
        assert SECRET not in shown
    assert all(SECRET not in r.getMessage() for r in caplog.records)
    # The signer recovers: the next call after the delay signs and succeeds.
    signer.fail = None
    clock.advance(SIGNER_RETRY_DELAY)
    assert (await client.list_installations(limit=1)).total == 25
    assert signer.calls == 5


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (lambda data: data.decode(), "returned str, not the signature bytes"),
        (lambda data: b"\x00" * 128, "128-byte signature; RS256 with its 2048-bit key gives 256"),
        (
            lambda data: rsa.generate_private_key(public_exponent=65537, key_size=2048).sign(
                data, padding.PKCS1v15(), hashes.SHA256()
            ),
            "does not verify with its public key",
        ),
    ],
    ids=["str", "short", "other-key"],
)
async def test_a_bad_signature_is_caught_before_the_server_sees_it(
    private_key_pem: str, answer: Callable[[bytes], Any], message: str
) -> None:
    signer = RemoteSigner(private_key_pem)
    signer.answer = answer
    app_jwt = AppJWT(APP_ID, signer, ClockSync(ManualClock(1_700_000_000.0)))
    with pytest.raises(SignerError, match=message) as caught:
        await app_jwt.get()
    assert caught.value.key_id == signer.key_id
    assert app_jwt.current is None


async def test_a_pss_signature_is_caught(private_key_pem: str) -> None:
    signer = RemoteSigner(private_key_pem)
    key = signer._key
    signer.answer = lambda data: key.sign(
        data, padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256()
    )
    with pytest.raises(SignerError, match="RSASSA_PKCS1_V1_5_SHA_256"):
        await AppJWT(APP_ID, signer, ClockSync(ManualClock(1_700_000_000.0))).get()


async def test_a_signer_that_never_answers_times_out(private_key_pem: str) -> None:
    signer = RemoteSigner(private_key_pem)
    signer.gate.clear()
    app_jwt = AppJWT(APP_ID, signer, ClockSync(ManualClock(1_700_000_000.0)), sign_timeout=0)
    with pytest.raises(SignerError, match="did not return a signature within 0 s"):
        await app_jwt.get()
    # A signer's own TimeoutError is its failure, not our deadline.
    signer.gate.set()
    signer.fail = TimeoutError("kms timed out")
    other = AppJWT(APP_ID, signer, ClockSync(ManualClock(1_700_000_000.0)))
    with pytest.raises(SignerError, match="failed to sign the app JWT \\(TimeoutError"):
        await other.get()


async def test_close_cancels_a_signature_under_way(
    make_client: Any, clock: ManualClock, private_key_pem: str
) -> None:
    signer = RemoteSigner(private_key_pem)
    client: AsyncICRClient = make_client(private_key=None, signer=signer)
    await client.list_installations(limit=1)
    signer.gate.clear()
    clock.advance(540 - JWT_REFRESH_AHEAD + 1)
    await client.list_installations(limit=1)
    pending = client._jwt._pending
    assert pending is not None
    await client.aclose()
    await _until(pending.done)
    assert pending.cancelled()


# -- key rotation ---------------------------------------------------------------------------


async def _app_flow(client: AsyncICRClient, rounds: int, on_round: Callable[[int], None]) -> int:
    """List installations, mint a token, read the organization: ``rounds`` times."""
    page = await client.list_installations(limit=rounds)
    done = 0
    for number, inst in enumerate(page.items):
        on_round(number)
        await client.list_installations(limit=1, page=number)
        await client.create_installation_token(inst.id)
        org = await client.installation(inst.id).get_organization()
        assert inst.organization is not None
        assert org.id == inst.organization.id
        done += 1
    return done


@pytest.mark.parametrize("remote_first", [False, True], ids=["pem-keys", "remote-then-pem"])
async def test_removing_the_first_key_mid_run_costs_one_401(
    make_client: Any,
    emulator: ICREmulator,
    app_id: str,
    private_key_pem: str,
    other_private_key_pem: str,
    caplog: pytest.LogCaptureFixture,
    remote_first: bool,
) -> None:
    caplog.set_level(logging.DEBUG, logger="icr_async")
    emulator.add_app_key(app_id, _public_pem(other_private_key_pem))
    first: Signer = (
        RemoteSigner(private_key_pem) if remote_first else PrivateKey.from_pem(private_key_pem)
    )
    second = PrivateKey.from_pem(other_private_key_pem)
    client: AsyncICRClient = make_client(private_key=None, signer=[first, second])
    assert client.key_fingerprint == first.fingerprint

    def on_round(number: int) -> None:
        if number == 3:
            emulator.remove_app_key(app_id, _public_pem(private_key_pem))

    assert await _app_flow(client, 6, on_round) == 6
    assert dict(emulator.stats.jwt_rejections) == {"signature": 1}
    assert client.key_fingerprint == second.fingerprint
    assert client._jwt.rotations == 1
    rotation = [r for r in caplog.records if "signing with the next key" in r.getMessage()]
    assert len(rotation) == 1
    assert rotation[0].levelno == logging.WARNING
    assert first.fingerprint in rotation[0].getMessage()
    assert second.fingerprint in rotation[0].getMessage()
    for pem in (private_key_pem, other_private_key_pem):
        body = pem.splitlines()[1]
        assert all(body not in r.getMessage() for r in caplog.records)


async def test_concurrent_requests_rotate_once(
    make_client: Any,
    emulator: ICREmulator,
    app_id: str,
    private_key_pem: str,
    other_private_key_pem: str,
) -> None:
    emulator.add_app_key(app_id, _public_pem(other_private_key_pem))
    keys = [PrivateKey.from_pem(private_key_pem), PrivateKey.from_pem(other_private_key_pem)]
    client: AsyncICRClient = make_client(private_key=None, signer=keys)
    ids = [inst["id"] for inst in emulator.installations(app_id)][:20]
    await client.list_installations(limit=1)
    emulator.remove_app_key(app_id, _public_pem(private_key_pem))
    # Every request in flight carries the refused JWT; one rotation serves them all (a
    # rotation per 401 would cycle back to the removed key).
    results = await asyncio.gather(*(client.create_installation_token(i) for i in ids))
    assert len(results) == 20
    assert client._jwt.rotations == 1
    assert client.key_fingerprint == keys[1].fingerprint
    assert emulator.stats.jwt_rejections["signature"] <= 20


async def test_one_key_or_all_keys_refused_is_an_authentication_error(
    make_client: Any,
    emulator: ICREmulator,
    app_id: str,
    private_key_pem: str,
    other_private_key_pem: str,
) -> None:
    alone: AsyncICRClient = make_client(private_key=other_private_key_pem)
    with pytest.raises(AuthenticationError, match="Invalid JWT signature"):
        await alone.list_installations(limit=1)
    assert emulator.stats.jwt_rejections["signature"] == 1  # a single key is not re-signed
    unknown = PrivateKey.from_pem(other_private_key_pem)
    emulator.remove_app_key(app_id, _public_pem(private_key_pem))
    both: AsyncICRClient = make_client(
        private_key=None, signer=[PrivateKey.from_pem(private_key_pem), unknown]
    )
    with pytest.raises(AuthenticationError):
        await both.list_installations(limit=1)
    assert emulator.stats.jwt_rejections["signature"] == 3  # each key tried once, no more


async def test_an_unknown_app_does_not_rotate(
    make_client: Any, private_key_pem: str, other_private_key_pem: str
) -> None:
    keys = [PrivateKey.from_pem(private_key_pem), PrivateKey.from_pem(other_private_key_pem)]
    client: AsyncICRClient = make_client(app_id="no-such-app", private_key=None, signer=keys)
    with pytest.raises(AuthenticationError, match="Unknown app"):
        await client.list_installations(limit=1)
    assert client._jwt.rotations == 0


async def test_clock_skew_recovery_does_not_rotate(
    make_client: Any,
    emulator: ICREmulator,
    app_id: str,
    private_key_pem: str,
    other_private_key_pem: str,
) -> None:
    emulator.add_app_key(app_id, _public_pem(other_private_key_pem))
    emulator.clock_offset = -420  # the server's clock is seven minutes behind ours
    keys: list[Signer] = [RemoteSigner(private_key_pem), PrivateKey.from_pem(other_private_key_pem)]
    client: AsyncICRClient = make_client(private_key=None, signer=keys)
    assert (await client.list_installations(limit=1)).total == 25
    assert client.clock_offset == pytest.approx(-420, abs=2)
    assert client._jwt.rotations == 0
    assert client.key_fingerprint == keys[0].fingerprint
    assert sum(emulator.stats.jwt_rejections.values()) == 1


def test_the_blocking_client_takes_a_signer(private_key_pem: str) -> None:
    emulator = ICREmulator(seed=3)
    app = emulator.add_app(private_key_pem, installations=2)
    signer = RemoteSigner(private_key_pem)
    with anyio.from_thread.start_blocking_portal("asyncio") as portal:
        server = portal.call(emulator.start)
        try:
            with ICRClient(app, signer=[signer], base_url=server.url, env=False) as client:
                assert client.list_installations().total == 2
                assert client.signers == (signer,)
                assert client.key_fingerprint == signer.fingerprint
                assert signer.calls == 1
        finally:
            portal.call(server.close)


def test_reprs_show_no_key_material(private_key_pem: str, other_private_key_pem: str) -> None:
    key = PrivateKey.from_pem(private_key_pem)
    remote = RemoteSigner(other_private_key_pem, "kms:a")
    client = AsyncICRClient("app", signer=[remote, key], env=False)
    for pem in (private_key_pem, other_private_key_pem):
        body = pem.splitlines()[1]
        for text in (repr(client), repr(client._jwt), repr(key), repr(client.signers)):
            assert body not in text
    assert json.dumps(client.key_fingerprint)


# -- the AWS KMS recipe of docs/keys.md, against moto's in-process KMS -------------------------

KEYS_PAGE = Path(__file__).resolve().parent.parent / "docs" / "keys.md"


def _documented_recipe(class_name: str) -> str:
    page = KEYS_PAGE.read_text(encoding="utf-8")
    blocks: list[str] = re.findall(r"^```python\n(.*?)^```$", page, flags=re.M | re.S)
    return next(block for block in blocks if f"class {class_name}" in block)


def _require_moto() -> tuple[Any, Any]:
    try:
        boto3 = importlib.import_module("boto3")
        moto = importlib.import_module("moto")
    except ImportError:
        if os.environ.get("ICR_REQUIRE_MOTO"):
            pytest.fail("ICR_REQUIRE_MOTO is set but moto[kms] is not installed")
        pytest.skip("moto[kms] is not installed; CI runs this with ICR_REQUIRE_MOTO=1")
    return boto3, moto


def test_the_documented_recipes_compile() -> None:
    for name in ("AwsKmsSigner", "GcpKmsSigner"):
        compile(_documented_recipe(name), f"docs/keys.md:{name}", "exec")


async def test_the_documented_aws_kms_recipe_signs_jwts_the_emulator_accepts(
    emulator: ICREmulator, make_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    boto3, moto = _require_moto()
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(name, "testing")  # moto's convention: never real credentials
    namespace: dict[str, Any] = {}
    exec(compile(_documented_recipe("AwsKmsSigner"), "docs/keys.md", "exec"), namespace)
    with moto.mock_aws():
        kms = boto3.client("kms", region_name="eu-north-1")
        key = kms.create_key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")["KeyMetadata"]
        signer = namespace["AwsKmsSigner"](key["Arn"], kms=kms)
        assert isinstance(signer, Signer)
        public_pem = signer.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        app = emulator.add_app(public_pem, installations=2)
        client: AsyncICRClient = make_client(app_id=app, private_key=None, signer=signer)
        page = await client.list_installations(limit=5)
        assert page.total == 2
        org = await client.installation(page.items[0].id).get_organization()
        assert page.items[0].organization is not None
        assert org.id == page.items[0].organization.id
        assert client.jwt_signatures == 1
        assert sum(emulator.stats.jwt_rejections.values()) == 0
