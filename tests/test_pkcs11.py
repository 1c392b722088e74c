"""``PKCS11Signer`` against a real SoftHSM2 token that the tests initialise themselves.

The RSA key pair is generated inside the token, non-extractable and sensitive: the private
key never exists in this process. Without Debian's ``softhsm2`` package or python-pkcs11
these tests skip, unless ``ICR_REQUIRE_SOFTHSM`` is set (CI sets it), where they fail.
URI parsing needs neither and always runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import attrs
import pytest
from cli_support import EmulatorThread
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from forking import Connection, fork_and_receive
from joserfc import jwt
from joserfc.jwk import RSAKey

from icr_async import (
    AsyncICRClient,
    ConfigurationError,
    Signer,
    SignerError,
    public_key_fingerprint,
)
from icr_async._jwt import AppJWT, ClockSync
from icr_async.cli import main
from icr_async.contrib.pkcs11 import PKCS11Signer, parse_pkcs11_uri
from icr_async.testing import ICREmulator, ManualClock

pytestmark = pytest.mark.anyio

PIN = "4921-7730"
SO_PIN = "88776655"
TOKEN = "icr-test"
KEY_LABEL = "icr-app-key"
KEY_ID = b"\x01\xa2"
MODULES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)


# -- URI parsing (no token needed) ----------------------------------------------------------


def test_uri_parsing_common_subset(tmp_path: Path) -> None:
    parsed = parse_pkcs11_uri(
        "pkcs11:token=My%20Token;object=app-key;id=%01%A2;serial=abc;slot-id=7;type=private;"
        "library-manufacturer=SoftHSM;x-vendor=1?module-path=/opt/hsm/lib.so&pin-value=12%2634"
    )
    assert parsed == parse_pkcs11_uri(
        "pkcs11:token=My%20Token;object=app-key;id=%01%A2;serial=abc;slot-id=7"
        "?module-path=/opt/hsm/lib.so"
    )
    assert attrs.asdict(parsed) == {
        "module_path": "/opt/hsm/lib.so",
        "token_label": "My Token",
        "token_serial": "abc",
        "token_manufacturer": None,
        "token_model": None,
        "slot_id": 7,
        "key_label": "app-key",
        "key_object_id": b"\x01\xa2",
        "pin": "12&34",
    }
    assert "12&34" not in repr(parsed)
    pin_file = tmp_path / "pin"
    pin_file.write_text("s3cret\n")
    from_file = parse_pkcs11_uri(f"pkcs11:token=t?pin-source=file:{pin_file}")
    assert from_file.pin == "s3cret"
    assert parse_pkcs11_uri(f"pkcs11:token=t?pin-source=file://{pin_file}").pin == "s3cret"


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("token=x", "starts with 'pkcs11:'"),
        ("pkcs11:token=a;token=b", "'token' is given twice"),
        ("pkcs11:token=a;colour=red", "'colour' is not supported"),
        ("pkcs11:token=a?module-name=softhsm2", "module-name is not supported"),
        ("pkcs11:token=a;type=cert", "type must name the RSA key pair"),
        ("pkcs11:token=a;slot-id=one", "slot-id must be a number"),
        ("pkcs11:token?pin-value=1", "'token' has no value"),
        ("pkcs11:token=a?pin-value=99887766&pin-source=/x", "pin-value or pin-source"),
        ("pkcs11:token=a?pin-source=/no/such/pin/file", "cannot read the PKCS#11 pin-source"),
    ],
)
def test_uri_mistakes_name_the_attribute_not_the_pin(uri: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as caught:
        parse_pkcs11_uri(uri)
    assert "99887766" not in str(caught.value)


# -- the token --------------------------------------------------------------------------------


@attrs.frozen
class SoftHSM:
    """An initialised SoftHSM2 token with the app key generated inside it."""

    module: str
    public_pem: bytes
    uri: str  # without the PIN

    def signer(self, **kwargs: Any) -> PKCS11Signer:
        return PKCS11Signer.from_uri(self.uri, pin=PIN, **kwargs)


def _require(reason: str) -> NoReturn:
    if os.environ.get("ICR_REQUIRE_SOFTHSM"):
        pytest.fail(f"ICR_REQUIRE_SOFTHSM is set but {reason} (.ci/run installs them)")
    pytest.skip(f"{reason}; CI runs these tests with ICR_REQUIRE_SOFTHSM=1")


@pytest.fixture(scope="module")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftHSM]:
    try:
        import pkcs11
    except ImportError:
        _require("python-pkcs11 is not installed (pip install 'icr-async[pkcs11]')")
    util = shutil.which("softhsm2-util")
    module = next((m for m in MODULES if Path(m).is_file()), None)
    if util is None or module is None:
        _require("SoftHSM2 is not installed (apt-get install softhsm2)")
    assert util is not None
    assert module is not None
    directory = tmp_path_factory.mktemp("softhsm")
    (directory / "tokens").mkdir()
    conf = directory / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {directory / 'tokens'}\n"
        "objectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n"
    )
    saved = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    try:
        subprocess.run(
            [util, "--init-token", "--free", "--label", TOKEN, "--pin", PIN, "--so-pin", SO_PIN],
            check=True,
            capture_output=True,
            timeout=60,
        )
        lib = pkcs11.lib(module)
        # A module loaded by an earlier test read another SOFTHSM2_CONF: read this one.
        lib.reinitialize()
        token = lib.get_token(token_label=TOKEN)
        with token.open(rw=True, user_pin=PIN) as session:
            template = {
                pkcs11.Attribute.TOKEN: True,
                pkcs11.Attribute.PRIVATE: True,
                pkcs11.Attribute.SIGN: True,
                pkcs11.Attribute.EXTRACTABLE: False,
                pkcs11.Attribute.SENSITIVE: True,
            }
            public, _ = session.generate_keypair(
                pkcs11.KeyType.RSA,
                2048,
                store=True,
                label=KEY_LABEL,
                id=KEY_ID,
                private_template=template,
            )
            # A second, deliberately weak key: exportable, to test the refusal of such keys.
            session.generate_keypair(
                pkcs11.KeyType.RSA,
                2048,
                store=True,
                label="exportable-key",
                id=b"\x09",
                private_template={**template, pkcs11.Attribute.EXTRACTABLE: True},
            )
            numbers = rsa.RSAPublicNumbers(
                int.from_bytes(public[pkcs11.Attribute.PUBLIC_EXPONENT], "big"),
                int.from_bytes(public[pkcs11.Attribute.MODULUS], "big"),
            )
        public_pem = numbers.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        yield SoftHSM(
            module=module,
            public_pem=public_pem,
            uri=f"pkcs11:token={TOKEN};object={KEY_LABEL}?module-path={module}",
        )
    finally:
        if saved is None:
            os.environ.pop("SOFTHSM2_CONF", None)
        else:
            os.environ["SOFTHSM2_CONF"] = saved


@pytest.fixture
def hsm_signer(softhsm: SoftHSM) -> Iterator[PKCS11Signer]:
    signer = softhsm.signer()
    yield signer
    signer.close()


def test_the_private_key_never_leaves_the_token(softhsm: SoftHSM, hsm_signer: PKCS11Signer) -> None:
    import pkcs11

    key = hsm_signer._key
    assert key[pkcs11.Attribute.EXTRACTABLE] is False
    assert key[pkcs11.Attribute.SENSITIVE] is True
    assert key[pkcs11.Attribute.NEVER_EXTRACTABLE] is True
    assert key[pkcs11.Attribute.ALWAYS_SENSITIVE] is True
    with pytest.raises(pkcs11.AttributeSensitive):
        key[pkcs11.Attribute.PRIVATE_EXPONENT]
    with pytest.raises(pkcs11.AttributeSensitive):
        key[pkcs11.Attribute.PRIME_1]
    assert hsm_signer.non_extractable is True
    # The public half, and the fingerprint, are those of the key generated in the token.
    expected = serialization.load_pem_public_key(softhsm.public_pem)
    assert isinstance(expected, rsa.RSAPublicKey)
    assert hsm_signer.fingerprint == public_key_fingerprint(expected)
    signer: Signer = hsm_signer
    assert isinstance(signer, Signer)
    assert hsm_signer.key_id == f"pkcs11:token={TOKEN};object={KEY_LABEL};id=%01%A2"


async def test_an_app_signs_with_the_hsm_key_through_the_whole_flow(
    softhsm: SoftHSM,
    hsm_signer: PKCS11Signer,
    emulator: ICREmulator,
    make_client: Any,
) -> None:
    app_id = emulator.add_app(softhsm.public_pem, installations=3)
    client: AsyncICRClient = make_client(app_id=app_id, private_key=None, signer=hsm_signer)
    page = await client.list_installations(limit=10)
    assert page.total == 3
    inst = page.items[0]
    token = await client.create_installation_token(inst.id)
    assert token.installation_id == inst.id
    org = await client.installation(inst.id).get_organization()
    assert inst.organization is not None
    assert org.id == inst.organization.id
    assert sum(emulator.stats.jwt_rejections.values()) == 0
    assert client.jwt_signatures == 1
    app_jwt = client._jwt.current
    assert app_jwt is not None
    claims = jwt.decode(app_jwt, RSAKey.import_key(softhsm.public_pem), algorithms=["RS256"])
    assert claims.claims["iss"] == app_id
    assert client.key_fingerprint == hsm_signer.fingerprint


async def test_concurrent_signatures_share_one_session_safely(hsm_signer: PKCS11Signer) -> None:
    data = [f"header.claims-{n}".encode() for n in range(6)]
    signatures = await asyncio.gather(*(hsm_signer.sign(d) for d in data))
    threaded: list[bytes] = []
    threads = [
        threading.Thread(target=lambda d=d: threaded.append(hsm_signer.sign_blocking(d)))
        for d in data
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(threaded) == len(data)
    for payload, signature in zip(data, signatures, strict=True):
        hsm_signer.public_key.verify(signature, payload, padding.PKCS1v15(), hashes.SHA256())
        assert signature in threaded  # PKCS#1 v1.5 is deterministic


def test_a_dropped_session_is_reopened_once(hsm_signer: PKCS11Signer) -> None:
    hsm_signer._session.close()  # as if the token had been pulled and put back
    signature = hsm_signer.sign_blocking(b"after")
    hsm_signer.public_key.verify(signature, b"after", padding.PKCS1v15(), hashes.SHA256())


def test_the_raw_rsa_mechanism_gives_the_same_signature(hsm_signer: PKCS11Signer) -> None:
    import pkcs11

    expected = hsm_signer.sign_blocking(b"digest-info")
    hsm_signer._mechanism = pkcs11.Mechanism.RSA_PKCS  # a token without CKM_SHA256_RSA_PKCS
    assert hsm_signer.sign_blocking(b"digest-info") == expected


def test_open_by_arguments_id_and_pin_source(softhsm: SoftHSM, tmp_path: Path) -> None:
    by_id = PKCS11Signer(softhsm.module, token_label=TOKEN, key_object_id="01a2", pin=PIN)
    pin_file = tmp_path / "pin"
    pin_file.write_text(PIN + "\n")
    by_uri = PKCS11Signer.from_uri(
        f"pkcs11:token={TOKEN};id=%01%A2?module-path={softhsm.module}&pin-source={pin_file}"
    )
    with by_id, by_uri:
        assert by_id.fingerprint == by_uri.fingerprint
        assert by_id.key_id == by_uri.key_id


def test_refuses_an_extractable_key_when_asked(softhsm: SoftHSM) -> None:
    weak_uri = f"pkcs11:token={TOKEN};object=exportable-key?module-path={softhsm.module}"
    with PKCS11Signer.from_uri(weak_uri, pin=PIN) as weak:
        assert weak.non_extractable is False
    with pytest.raises(ConfigurationError, match="require_non_extractable=True"):
        PKCS11Signer.from_uri(weak_uri, pin=PIN, require_non_extractable=True)
    softhsm.signer(require_non_extractable=True).close()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"pin": "0000-0000"}, "refused the PIN \\(PinIncorrect\\)"),
        ({"token_label": "nope"}, "no PKCS#11 token matches token=nope .*'icr-test'"),
        ({"key_label": "nope"}, "no RSA private key pkcs11:token=icr-test;object=nope"),
        ({"key_label": None}, "2 RSA private keys match"),
        ({"pin": None}, "no PIN was given"),
        ({"module_path": "/no/such/module.so"}, "PKCS#11 module not found"),
    ],
)
def test_mistakes_are_configuration_errors_without_the_pin(
    softhsm: SoftHSM, change: dict[str, Any], message: str
) -> None:
    kwargs: dict[str, Any] = {
        "module_path": softhsm.module,
        "token_label": TOKEN,
        "key_label": KEY_LABEL,
        "pin": PIN,
        **change,
    }
    with pytest.raises(ConfigurationError, match=message) as caught:
        PKCS11Signer(**kwargs)
    for text in (str(caught.value), repr(caught.value), str(vars(caught.value))):
        assert PIN not in text
        assert "0000-0000" not in text


def test_secrets_stay_out_of_repr_and_pickle(softhsm: SoftHSM) -> None:
    import pickle

    with PKCS11Signer.from_uri(softhsm.uri + f"&pin-value={PIN}") as signer:
        for text in (repr(signer), signer.key_id):
            assert PIN not in text
            assert "module-path" not in text
        with pytest.raises(TypeError, match="PIN"):
            pickle.dumps(signer)
    with pytest.raises(ConfigurationError, match="both in the PKCS#11 URI and as pin="):
        PKCS11Signer.from_uri(softhsm.uri + f"&pin-value={PIN}", pin=PIN)
    with pytest.raises(ConfigurationError, match="no PKCS#11 module"):
        PKCS11Signer.from_uri(f"pkcs11:token={TOKEN}", pin=PIN)


async def test_a_closed_signer_fails_as_a_signer_error(softhsm: SoftHSM) -> None:
    signer = softhsm.signer()
    signer.close()
    signer.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        signer.sign_blocking(b"x")
    app_jwt = AppJWT("app", signer, ClockSync(ManualClock(1_700_000_000.0)))
    with pytest.raises(SignerError, match="pkcs11:token=icr-test") as caught:
        await app_jwt.get()
    assert isinstance(caught.value.__cause__, RuntimeError)


def _child(signer: PKCS11Signer, conn: Connection) -> None:
    try:
        conn.send(signer.sign_blocking(b"in the child"))
    except BaseException as exc:
        conn.send(repr(exc))
        raise
    finally:
        conn.close()


def test_a_forked_child_initialises_the_module_again(hsm_signer: PKCS11Signer) -> None:
    hsm_signer.sign_blocking(b"parent first")  # the parent's session is live
    answer, exitcode, _ = fork_and_receive(_child, hsm_signer)
    assert isinstance(answer, bytes), answer
    hsm_signer.public_key.verify(answer, b"in the child", padding.PKCS1v15(), hashes.SHA256())
    assert exitcode == 0
    # The parent's session is untouched.
    assert hsm_signer.sign_blocking(b"parent after")


# -- the command line ---------------------------------------------------------------------------


def test_cli_key_fingerprint_and_check_with_a_pkcs11_uri(
    softhsm: SoftHSM,
    private_key_pem: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("ICR_PRIVATE_KEY", "ICR_PRIVATE_KEY_PATH", "ICR_APP_ID", "ICR_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ICR_PKCS11_PIN", PIN)
    public = serialization.load_pem_public_key(softhsm.public_pem)
    assert isinstance(public, rsa.RSAPublicKey)
    fingerprint = f"SHA256:{public_key_fingerprint(public)}"
    assert main(["key", "fingerprint", "--pkcs11-uri", softhsm.uri]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {
        "fingerprint": fingerprint,
        "bits": 2048,
        "keyId": f"pkcs11:token={TOKEN};object={KEY_LABEL};id=%01%A2",
        "nonExtractable": True,
    }
    with EmulatorThread(private_key_pem, tmp_path) as emu:
        emu.emulator.add_app_key(emu.app.app_id, softhsm.public_pem)
        assert emu.server is not None
        argv = ["key", "check", "--pkcs11-uri", softhsm.uri, "--app-id", emu.app.app_id]
        assert main([*argv, "--base-url", emu.server.url]) == 0
        check = json.loads(capsys.readouterr().out)
        assert check["ok"] is True
        assert check["fingerprint"] == fingerprint
    # No signer of this process is logged in to the token now, so the PIN is checked.
    monkeypatch.setenv("ICR_PKCS11_PIN", "1111-2222")
    assert main(["key", "fingerprint", "--pkcs11-uri", softhsm.uri]) == 2
    err = capsys.readouterr().err
    assert "refused the PIN" in err
    assert "ICR_PKCS11_PIN" in err
    assert "1111-2222" not in err
    assert PIN not in err
