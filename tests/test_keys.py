"""Loading the app's private key: every form that works, every mistake, and no leaks."""

from __future__ import annotations

import base64
import copy
import hashlib
import pickle
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from icr_async import PrivateKey
from icr_async._keys import MIN_RSA_BITS, load_private_key
from icr_async.errors import ConfigurationError, ICRError

PASSWORD = b"correct horse battery staple"


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def pkcs1_pem(rsa_key: rsa.RSAPrivateKey) -> bytes:
    return rsa_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


@pytest.fixture(scope="module")
def pkcs8_pem(rsa_key: rsa.RSAPrivateKey) -> bytes:
    return rsa_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.fixture(scope="module")
def encrypted_pems(rsa_key: rsa.RSAPrivateKey) -> list[bytes]:
    return [
        rsa_key.private_bytes(
            serialization.Encoding.PEM, fmt, serialization.BestAvailableEncryption(PASSWORD)
        )
        for fmt in (
            serialization.PrivateFormat.PKCS8,
            serialization.PrivateFormat.TraditionalOpenSSL,
        )
    ]


@pytest.fixture(scope="module")
def expected_fingerprint(rsa_key: rsa.RSAPrivateKey) -> str:
    der = rsa_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def _body_lines(pem: bytes) -> list[str]:
    """The base64 lines of a PEM: the secret part that must never be shown."""
    return [line for line in pem.decode().splitlines() if line and not line.startswith("-----")]


def test_pkcs1_and_pkcs8_load_to_the_same_key(
    pkcs1_pem: bytes, pkcs8_pem: bytes, expected_fingerprint: str
) -> None:
    a = PrivateKey.from_pem(pkcs1_pem)
    b = PrivateKey.from_pem(pkcs8_pem.decode())
    assert a.bits == b.bits == 2048
    assert a.fingerprint == b.fingerprint == expected_fingerprint
    assert len(base64.b64decode(a.fingerprint)) == 32


def test_jwk_is_the_same_rsa_key(pkcs8_pem: bytes, rsa_key: rsa.RSAPrivateKey) -> None:
    jwk = PrivateKey.from_pem(pkcs8_pem).jwk
    assert jwk.key_type == "RSA"
    public = rsa_key.public_key().public_numbers()
    n_b64 = jwk.as_dict()["n"]
    assert isinstance(n_b64, str)
    n = int.from_bytes(base64.urlsafe_b64decode(n_b64 + "=="), "big")
    assert n == public.n


def test_surrounding_whitespace_is_fine(pkcs8_pem: bytes, expected_fingerprint: str) -> None:
    key = PrivateKey.from_pem(b"\n\n  " + pkcs8_pem + b"  \n\n")
    assert key.fingerprint == expected_fingerprint


def test_literal_backslash_n_from_an_environment_variable(
    pkcs8_pem: bytes, expected_fingerprint: str
) -> None:
    escaped = pkcs8_pem.decode().strip().replace("\n", "\\n")
    assert "\n" not in escaped
    assert PrivateKey.from_pem(escaped).fingerprint == expected_fingerprint
    assert PrivateKey.from_pem(escaped.encode()).fingerprint == expected_fingerprint


@pytest.mark.parametrize("password", [PASSWORD, PASSWORD.decode()])
def test_encrypted_with_the_right_password(
    encrypted_pems: list[bytes], expected_fingerprint: str, password: str | bytes
) -> None:
    for pem in encrypted_pems:
        assert PrivateKey.from_pem(pem, password=password).fingerprint == expected_fingerprint


def test_encrypted_without_a_password(encrypted_pems: list[bytes]) -> None:
    for pem in encrypted_pems:
        with pytest.raises(ConfigurationError, match="encrypted; pass private_key_password"):
            PrivateKey.from_pem(pem)


def test_encrypted_with_the_wrong_password(encrypted_pems: list[bytes]) -> None:
    for pem in encrypted_pems:
        with pytest.raises(ConfigurationError, match="wrong private_key_password") as info:
            PrivateKey.from_pem(pem, password="hunter2")
        assert "hunter2" not in str(info.value)


def test_password_for_a_key_that_is_not_encrypted(pkcs8_pem: bytes) -> None:
    with pytest.raises(ConfigurationError, match="not encrypted"):
        PrivateKey.from_pem(pkcs8_pem, password=PASSWORD)


def test_ec_key_is_refused() -> None:
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(ConfigurationError, match=r"RSA \(RS256\)"):
        PrivateKey.from_pem(pem)


def test_small_rsa_key_is_refused() -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    pem = small.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(ConfigurationError, match=f"1024 bits; ICR needs at least {MIN_RSA_BITS}"):
        PrivateKey.from_pem(pem)
    with pytest.raises(ConfigurationError):
        PrivateKey(small)


def test_non_rsa_object_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="RSA"):
        PrivateKey("not a key")  # type: ignore[arg-type]


def test_public_key_is_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    for fmt in (serialization.PublicFormat.SubjectPublicKeyInfo, serialization.PublicFormat.PKCS1):
        pem = rsa_key.public_key().public_bytes(serialization.Encoding.PEM, fmt)
        with pytest.raises(ConfigurationError, match="public key"):
            PrivateKey.from_pem(pem)


@pytest.mark.parametrize(
    ("pem", "match"),
    [
        ("", "empty"),
        ("   \n\t ", "empty"),
        (b"", "empty"),
        ("hello world", "not PEM text"),
        ("/home/me/app.pem", "private_key_path="),
        (
            "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
            "could not parse",
        ),
        ("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "could not parse"),
    ],
)
def test_garbage(pem: str | bytes, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        PrivateKey.from_pem(pem)


def test_truncated_pem_error_does_not_echo_the_key(pkcs8_pem: bytes) -> None:
    truncated = pkcs8_pem[: len(pkcs8_pem) // 2] + b"\n-----END PRIVATE KEY-----\n"
    with pytest.raises(ConfigurationError) as info:
        PrivateKey.from_pem(truncated)
    text = str(info.value)
    assert all(line not in text for line in _body_lines(pkcs8_pem))
    assert info.value.__cause__ is None
    assert isinstance(info.value, ICRError)
    assert isinstance(info.value, ValueError)


def test_repr_has_no_key_material(pkcs8_pem: bytes, expected_fingerprint: str) -> None:
    key = PrivateKey.from_pem(pkcs8_pem)
    text = repr(key)
    assert text == f"<PrivateKey RSA-2048 SHA256:{expected_fingerprint}>"
    assert str(key) == text
    assert "PRIVATE" not in text
    assert all(line not in text for line in _body_lines(pkcs8_pem))
    assert not hasattr(key, "__dict__")


def test_pickling_and_copying_are_refused(pkcs8_pem: bytes) -> None:
    key = PrivateKey.from_pem(pkcs8_pem)
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        with pytest.raises(TypeError, match="cannot be pickled"):
            pickle.dumps(key, protocol=protocol)
    with pytest.raises(TypeError):
        copy.deepcopy(key)


# --- files -----------------------------------------------------------------------------------


def test_from_path(tmp_path: Path, pkcs1_pem: bytes, expected_fingerprint: str) -> None:
    path = tmp_path / "app.pem"
    path.write_bytes(pkcs1_pem)
    assert PrivateKey.from_path(path).fingerprint == expected_fingerprint
    assert PrivateKey.from_path(str(path)).fingerprint == expected_fingerprint


def test_from_path_encrypted(
    tmp_path: Path, encrypted_pems: list[bytes], expected_fingerprint: str
) -> None:
    path = tmp_path / "app.pem"
    path.write_bytes(encrypted_pems[0])
    assert PrivateKey.from_path(path, password=PASSWORD).fingerprint == expected_fingerprint
    with pytest.raises(ConfigurationError, match="encrypted"):
        PrivateKey.from_path(path)


def test_from_path_missing_and_unreadable(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="not found") as info:
        PrivateKey.from_path(tmp_path / "nope.pem")
    assert "nope.pem" in str(info.value)
    with pytest.raises(ConfigurationError, match="cannot read private key file"):
        PrivateKey.from_path(tmp_path)  # a directory


# --- load_private_key ------------------------------------------------------------------------


@pytest.fixture
def no_key_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv("ICR_PRIVATE_KEY", raising=False)
    monkeypatch.delenv("ICR_PRIVATE_KEY_PATH", raising=False)
    return monkeypatch


def test_load_from_every_argument_form(
    tmp_path: Path, pkcs8_pem: bytes, expected_fingerprint: str, no_key_env: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "k.pem"
    path.write_bytes(pkcs8_pem)
    key = PrivateKey.from_pem(pkcs8_pem)
    assert load_private_key(key) is key
    for source in (pkcs8_pem, pkcs8_pem.decode(), bytearray(pkcs8_pem), path):
        assert load_private_key(source).fingerprint == expected_fingerprint  # type: ignore[arg-type]
    assert load_private_key(path=path).fingerprint == expected_fingerprint
    assert load_private_key(path=str(path)).fingerprint == expected_fingerprint


def test_load_refuses_both_and_wrong_types(tmp_path: Path, pkcs8_pem: bytes) -> None:
    with pytest.raises(ConfigurationError, match="not both"):
        load_private_key(pkcs8_pem, path=tmp_path / "k.pem")
    with pytest.raises(ConfigurationError, match="not int"):
        load_private_key(12345)  # type: ignore[arg-type]


def test_load_from_env_pem_with_escaped_newlines(
    no_key_env: pytest.MonkeyPatch, pkcs8_pem: bytes, expected_fingerprint: str
) -> None:
    no_key_env.setenv("ICR_PRIVATE_KEY", pkcs8_pem.decode().replace("\n", "\\n"))
    assert load_private_key().fingerprint == expected_fingerprint


def test_load_from_env_path(
    tmp_path: Path, no_key_env: pytest.MonkeyPatch, pkcs1_pem: bytes, expected_fingerprint: str
) -> None:
    path = tmp_path / "k.pem"
    path.write_bytes(pkcs1_pem)
    no_key_env.setenv("ICR_PRIVATE_KEY_PATH", str(path))
    assert load_private_key().fingerprint == expected_fingerprint


def test_env_pem_wins_over_env_path(
    tmp_path: Path, no_key_env: pytest.MonkeyPatch, pkcs8_pem: bytes, expected_fingerprint: str
) -> None:
    no_key_env.setenv("ICR_PRIVATE_KEY", pkcs8_pem.decode())
    no_key_env.setenv("ICR_PRIVATE_KEY_PATH", str(tmp_path / "missing.pem"))
    assert load_private_key().fingerprint == expected_fingerprint


def test_env_encrypted_key_takes_the_password(
    no_key_env: pytest.MonkeyPatch, encrypted_pems: list[bytes], expected_fingerprint: str
) -> None:
    no_key_env.setenv("ICR_PRIVATE_KEY", encrypted_pems[1].decode())
    assert load_private_key(password=PASSWORD).fingerprint == expected_fingerprint


def test_explicit_argument_wins_over_env(
    no_key_env: pytest.MonkeyPatch, pkcs8_pem: bytes, expected_fingerprint: str
) -> None:
    no_key_env.setenv("ICR_PRIVATE_KEY", "garbage")
    assert load_private_key(pkcs8_pem).fingerprint == expected_fingerprint


def test_env_disabled_and_nothing_given(no_key_env: pytest.MonkeyPatch, pkcs8_pem: bytes) -> None:
    with pytest.raises(ConfigurationError, match="no private key"):
        load_private_key()
    no_key_env.setenv("ICR_PRIVATE_KEY", pkcs8_pem.decode())
    with pytest.raises(ConfigurationError, match="ICR_PRIVATE_KEY_PATH"):
        load_private_key(env=False)
    no_key_env.setenv("ICR_PRIVATE_KEY", "")
    with pytest.raises(ConfigurationError, match="no private key"):
        load_private_key()


def test_bad_env_key_is_a_configuration_error(no_key_env: pytest.MonkeyPatch) -> None:
    no_key_env.setenv(
        "ICR_PRIVATE_KEY", "-----BEGIN RSA PRIVATE KEY-----\\nxx\\n-----END RSA PRIVATE KEY-----"
    )
    with pytest.raises(ConfigurationError, match="could not parse"):
        load_private_key()
