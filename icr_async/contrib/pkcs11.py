"""``PKCS11Signer``: sign the app JWT with an RSA key that lives in an HSM or smart card.

``pip install 'icr-async[pkcs11]'`` (python-pkcs11), then
``AsyncICRClient(app_id, signer=PKCS11Signer.from_uri("pkcs11:token=..;object=..?module-path=..",
pin=...))``.

* The key never leaves the token: it makes a ``CKM_SHA256_RSA_PKCS`` signature (on tokens
  without that mechanism, ``CKM_RSA_PKCS`` over a SHA-256 DigestInfo: the same RS256
  bytes). ``require_non_extractable=True`` refuses a key the token would let out.
* The constructor blocks (module, login, key lookup): build the signer at start-up or in
  ``asyncio.to_thread``. Every mistake there is a ``ConfigurationError`` naming what was
  looked for, never the PIN.
* ``sign`` runs the blocking call in a worker thread, on one logged-in session behind a
  lock (a session must not run two operations at once; one signature per ~7 minutes makes
  contention moot). A session the token dropped is reopened once; after ``fork`` the child
  initialises the module again, as PKCS#11 requires.
* ``key_id`` is an RFC 7512 URI of the key without module path or PIN, safe to log.

The PIN stays in memory (a re-login needs it) but never in ``repr``, errors or pickles.
PKCS#11 logs in per process, not per session: while one signer is logged in to a token,
another on that token finds its key without logging in (so without checking its PIN);
closing a logged-in signer logs the others out, and they log in again when they next sign.

This module talks to the token; the URIs it reads and writes are handled in ``_pkcs11_uri.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import threading
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from .. import _fork
from .._signers import MIN_RSA_BITS, public_key_fingerprint
from ..errors import ConfigurationError
from ._pkcs11_uri import PKCS11URI, key_uri, parse_pkcs11_uri

__all__ = ["PKCS11URI", "PKCS11Signer", "parse_pkcs11_uri"]

# DER of DigestInfo{sha256} before the 32-byte digest (RFC 8017 section 9.2, note 1).
_SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")
# Per module path, the fork generation its C_Initialize belongs to: after a fork the first
# signer to sign re-initialises the module once for every signer of the child.
_initialised_in: dict[str, int] = {}
# Serialises logins and re-initialisation across every signer of the process.
_token_lock = threading.RLock()


def _load_binding() -> ModuleType:
    try:
        import pkcs11
    except ImportError as exc:
        raise ImportError(
            "icr_async.contrib.pkcs11 needs python-pkcs11: pip install 'icr-async[pkcs11]'"
        ) from exc
    return pkcs11


def _object_id(value: bytes | str | None) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise ConfigurationError(
            "key_object_id must be bytes or a hex string such as '01a2'"
        ) from None


class PKCS11Signer:
    """A :class:`~icr_async.Signer` whose RSA key stays inside a PKCS#11 token.

    ``module_path`` is the token's PKCS#11 library (for SoftHSM2 on Debian
    ``/usr/lib/softhsm/libsofthsm2.so``). The token is found by ``token_label`` (and
    optionally ``token_serial``, ``slot_id``, ``token_manufacturer``, ``token_model``;
    exactly one token must match), the key by ``key_label`` and/or
    ``key_object_id`` (CKA_ID: bytes or hex); with neither, the token must hold exactly one
    RSA private key. ``pin`` is the user PIN. Use :meth:`from_uri` for a PKCS#11 URI.
    Close it (or use ``with``) when done: that closes the session.

    ``non_extractable`` is true when the token promises the private key can never be read
    out (CKA_EXTRACTABLE false and CKA_SENSITIVE true).
    """

    __slots__ = (
        "_binding",
        "_closed",
        "_fingerprint",
        "_generation",
        "_key",
        "_key_id",
        "_lib",
        "_lock",
        "_mechanism",
        "_module_path",
        "_pin",
        "_public_key",
        "_search",
        "_session",
        "_token",
        "non_extractable",
    )

    def __init__(
        self,
        module_path: str | os.PathLike[str],
        *,
        token_label: str | None = None,
        token_serial: str | None = None,
        slot_id: int | None = None,
        key_label: str | None = None,
        key_object_id: bytes | str | None = None,
        pin: str | None = None,
        require_non_extractable: bool = False,
        token_manufacturer: str | None = None,
        token_model: str | None = None,
    ) -> None:
        self._binding = _load_binding()
        self._module_path = os.fspath(module_path)
        self._pin = pin
        self._lock = threading.Lock()
        self._session: Any = None
        self._closed = False
        self._generation = _fork.generation
        object_id = _object_id(key_object_id)
        self._search = (key_label, object_id)
        self._lib = self._open_module()
        self._token = self._find_token(
            {
                "token": token_label,
                "serial": token_serial,
                "slot-id": slot_id,
                "manufacturer": token_manufacturer,
                "model": token_model,
            }
        )
        self._session = self._login()
        try:
            self._inspect_key(require_non_extractable)
        except BaseException:
            self.close()  # a logged-in session left open would keep the token logged in
            raise

    def _inspect_key(self, require_non_extractable: bool) -> None:
        self._key = self._find_key()
        self._public_key = self._read_public_key()
        self._fingerprint = public_key_fingerprint(self._public_key)
        self._mechanism = self._pick_mechanism()
        pkcs11 = self._binding
        label = self._key[pkcs11.Attribute.LABEL] or None
        found_id = self._key[pkcs11.Attribute.ID] or None
        self._key_id = key_uri(self._token.label, label, found_id)
        # Whether the token promises the key can never be read out.
        self.non_extractable: bool = (
            self._read_flag(pkcs11.Attribute.EXTRACTABLE) is False
            and self._read_flag(pkcs11.Attribute.SENSITIVE) is True
        )
        if require_non_extractable and not self.non_extractable:
            raise ConfigurationError(
                f"the key {self._key_id} is extractable or not sensitive, and "
                "require_non_extractable=True: generate the key inside the token with "
                "CKA_EXTRACTABLE false and CKA_SENSITIVE true"
            )

    @classmethod
    def from_uri(
        cls,
        uri: str,
        *,
        pin: str | None = None,
        module_path: str | os.PathLike[str] | None = None,
        require_non_extractable: bool = False,
    ) -> PKCS11Signer:
        """Open the key a PKCS#11 URI names (see :func:`parse_pkcs11_uri`).

        ``pin`` and ``module_path`` supply what the URI leaves out; giving one in both
        places is an error, so a PIN can be kept out of a URI that ends up in a config file.
        """
        parsed = parse_pkcs11_uri(uri)
        if pin is not None and parsed.pin is not None:
            raise ConfigurationError("the PIN is given both in the PKCS#11 URI and as pin=")
        if module_path is not None and parsed.module_path is not None:
            raise ConfigurationError(
                "the module is given both in the PKCS#11 URI and as module_path="
            )
        module = parsed.module_path if module_path is None else os.fspath(module_path)
        if not module:
            raise ConfigurationError(
                "no PKCS#11 module: add ?module-path=/path/to/module.so to the URI or pass "
                "module_path="
            )
        return cls(
            module,
            token_label=parsed.token_label,
            token_serial=parsed.token_serial,
            slot_id=parsed.slot_id,
            key_label=parsed.key_label,
            key_object_id=parsed.key_object_id,
            pin=parsed.pin if pin is None else pin,
            require_non_extractable=require_non_extractable,
            token_manufacturer=parsed.token_manufacturer,
            token_model=parsed.token_model,
        )

    # -- the Signer protocol -------------------------------------------------------------

    @property
    def key_id(self) -> str:
        """The key as a PKCS#11 URI, without module path or PIN."""
        return self._key_id

    @property
    def fingerprint(self) -> str:
        """base64(SHA-256(DER SubjectPublicKeyInfo)) of the key's public half."""
        return self._fingerprint

    @property
    def public_key(self) -> rsa.RSAPublicKey:
        """The public half, read from the token."""
        return self._public_key

    async def sign(self, signing_input: bytes) -> bytes:
        """RS256 signature by the token, computed in a worker thread."""
        return await asyncio.to_thread(self.sign_blocking, signing_input)

    def sign_blocking(self, signing_input: bytes) -> bytes:
        """The same signature, in the calling thread (for scripts and the CLI)."""
        pkcs11 = self._binding
        lost = (
            pkcs11.SessionHandleInvalid,
            pkcs11.SessionClosed,
            pkcs11.DeviceRemoved,
            pkcs11.TokenNotPresent,
            pkcs11.UserNotLoggedIn,
            pkcs11.ObjectHandleInvalid,
            pkcs11.KeyHandleInvalid,
        )
        with self._lock:
            if self._closed:
                raise RuntimeError("the PKCS#11 signer is closed")
            if self._generation != _fork.generation:
                self._after_fork()
            try:
                return self._sign_once(signing_input)
            except lost:
                # The token dropped the session (re-inserted, HSM restarted): one new session.
                self._reopen()
                return self._sign_once(signing_input)

    # -- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        """Close the session (idempotent). The module stays loaded for other signers."""
        with self._lock:
            self._closed = True
            session, self._session = self._session, None
        if session is not None and self._generation == _fork.generation:
            # The token may have dropped the session already.
            with contextlib.suppress(self._binding.PKCS11Error):
                session.close()

    def __enter__(self) -> PKCS11Signer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<PKCS11Signer {self._key_id} SHA256:{self._fingerprint}>"

    def __reduce__(self) -> str | tuple[Any, ...]:
        raise TypeError("PKCS11Signer holds a PIN and a session; open one in each process")

    # -- internals (blocking) ------------------------------------------------------------

    def _open_module(self) -> Any:
        pkcs11 = self._binding
        if not Path(self._module_path).is_file():
            raise ConfigurationError(f"PKCS#11 module not found: {self._module_path}")
        try:
            lib = pkcs11.lib(self._module_path)
        except pkcs11.PKCS11Error as exc:
            raise ConfigurationError(
                f"cannot load the PKCS#11 module {self._module_path} ({type(exc).__name__})"
            ) from exc
        _initialised_in.setdefault(self._module_path, _fork.generation)
        return lib

    def _find_token(self, wanted: dict[str, str | int | None]) -> Any:
        pkcs11 = self._binding
        matches = []
        seen = []
        try:
            for slot in self._lib.get_slots(token_present=True):
                token = slot.get_token()
                seen.append(token.label)
                have = {
                    "token": token.label,
                    "serial": token.serial.decode("ascii", "replace").strip(),
                    "slot-id": slot.slot_id,
                    "manufacturer": token.manufacturer_id,
                    "model": token.model,
                }
                if all(value is None or have[name] == value for name, value in wanted.items()):
                    matches.append(token)
        except pkcs11.PKCS11Error as exc:
            raise ConfigurationError(
                f"cannot list the tokens of {self._module_path} ({type(exc).__name__})"
            ) from exc
        described = ", ".join(f"{n}={v}" for n, v in wanted.items() if v is not None) or "any"
        if not matches:
            raise ConfigurationError(
                f"no PKCS#11 token matches {described} in {self._module_path} "
                f"(tokens present: {', '.join(repr(s) for s in seen) or 'none'})"
            )
        if len(matches) > 1:
            raise ConfigurationError(
                f"{len(matches)} PKCS#11 tokens match {described}; name one by token label, "
                "serial or slot-id"
            )
        return matches[0]

    def _login(self) -> Any:
        # PKCS#11 logs in per application, not per session: once any session of this
        # process is logged in to the token, every new one is too, and C_Login answers
        # "already logged in". So look first with a plain session (which, closed, logs
        # nobody out) and log in only when the key is not visible yet.
        pkcs11 = self._binding
        label = self._token.label
        with _token_lock:
            try:
                session = self._token.open()
                if self._pin is None or self._search_keys(session):
                    return session
                session.close()
                return self._token.open(user_pin=self._pin)
            except pkcs11.UserAlreadyLoggedIn:  # logged in meanwhile by other code
                return self._token.open()
            except (pkcs11.PinIncorrect, pkcs11.PinInvalid, pkcs11.PinLenRange) as exc:
                raise ConfigurationError(
                    f"the PKCS#11 token {label!r} refused the PIN ({type(exc).__name__})"
                ) from exc
            except pkcs11.PinLocked as exc:
                raise ConfigurationError(f"the PIN of PKCS#11 token {label!r} is locked") from exc
            except pkcs11.PKCS11Error as exc:
                raise ConfigurationError(
                    f"cannot open a session on PKCS#11 token {label!r} ({type(exc).__name__})"
                ) from exc

    def _search_keys(self, session: Any) -> list[Any]:
        pkcs11 = self._binding
        label, object_id = self._search
        template: dict[Any, Any] = {
            pkcs11.Attribute.CLASS: pkcs11.ObjectClass.PRIVATE_KEY,
            pkcs11.Attribute.KEY_TYPE: pkcs11.KeyType.RSA,
        }
        if label is not None:
            template[pkcs11.Attribute.LABEL] = label
        if object_id is not None:
            template[pkcs11.Attribute.ID] = object_id
        return list(session.get_objects(template))

    def _find_key(self) -> Any:
        pkcs11 = self._binding
        label, object_id = self._search
        described = key_uri(self._token.label, label, object_id)
        try:
            keys = self._search_keys(self._session)
        except pkcs11.PKCS11Error as exc:
            raise ConfigurationError(f"cannot search {described} ({type(exc).__name__})") from exc
        if not keys:
            hint = "" if self._pin else " (no PIN was given: private keys show only after login)"
            raise ConfigurationError(f"no RSA private key {described}{hint}")
        if len(keys) > 1:
            raise ConfigurationError(
                f"{len(keys)} RSA private keys match {described}; name one by object label or id"
            )
        key = keys[0]
        if self._read_flag(pkcs11.Attribute.SIGN, key) is False:
            raise ConfigurationError(f"the key {described} may not sign (CKA_SIGN is false)")
        return key

    def _read_flag(self, attribute: Any, key: Any = None) -> bool | None:
        try:
            value = (self._key if key is None else key)[attribute]
        except self._binding.PKCS11Error:
            return None
        return bool(value)

    def _read_public_key(self) -> rsa.RSAPublicKey:
        pkcs11 = self._binding
        source = self._key
        try:
            modulus, exponent = (
                source[pkcs11.Attribute.MODULUS],
                source[pkcs11.Attribute.PUBLIC_EXPONENT],
            )
        except pkcs11.PKCS11Error:
            # Some tokens keep the public numbers only on the public key object.
            source = self._public_object()
            modulus, exponent = (
                source[pkcs11.Attribute.MODULUS],
                source[pkcs11.Attribute.PUBLIC_EXPONENT],
            )
        numbers = rsa.RSAPublicNumbers(
            int.from_bytes(exponent, "big"), int.from_bytes(modulus, "big")
        )
        public_key = numbers.public_key()
        if public_key.key_size < MIN_RSA_BITS:
            raise ConfigurationError(
                f"the PKCS#11 key is {public_key.key_size} bits; ICR needs at least {MIN_RSA_BITS}"
            )
        return public_key

    def _public_object(self) -> Any:
        pkcs11 = self._binding
        template: dict[Any, Any] = {
            pkcs11.Attribute.CLASS: pkcs11.ObjectClass.PUBLIC_KEY,
            pkcs11.Attribute.KEY_TYPE: pkcs11.KeyType.RSA,
        }
        key_id = self._key[pkcs11.Attribute.ID]
        if key_id:
            template[pkcs11.Attribute.ID] = key_id
        else:
            template[pkcs11.Attribute.LABEL] = self._key[pkcs11.Attribute.LABEL]
        found = list(self._session.get_objects(template))
        if len(found) != 1:
            raise ConfigurationError(
                "the PKCS#11 private key does not show its modulus, and no single public key "
                "object shares its id or label"
            )
        return found[0]

    def _pick_mechanism(self) -> Any:
        pkcs11 = self._binding
        try:
            mechanisms = self._token.slot.get_mechanisms()
        except pkcs11.PKCS11Error:
            mechanisms = {pkcs11.Mechanism.SHA256_RSA_PKCS}
        if pkcs11.Mechanism.SHA256_RSA_PKCS in mechanisms:
            return pkcs11.Mechanism.SHA256_RSA_PKCS
        if pkcs11.Mechanism.RSA_PKCS in mechanisms:
            return pkcs11.Mechanism.RSA_PKCS
        raise ConfigurationError(
            f"the PKCS#11 token {self._token.label!r} offers neither CKM_SHA256_RSA_PKCS nor "
            "CKM_RSA_PKCS: it cannot make RS256 signatures"
        )

    def _sign_once(self, signing_input: bytes) -> bytes:
        pkcs11 = self._binding
        if self._mechanism == pkcs11.Mechanism.RSA_PKCS:
            data = _SHA256_DIGEST_INFO + hashlib.sha256(signing_input).digest()
        else:
            data = signing_input
        return bytes(self._key.sign(data, mechanism=self._mechanism))

    def _reopen(self) -> None:
        old, self._session = self._session, None
        if old is not None:
            with contextlib.suppress(self._binding.PKCS11Error):
                old.close()
        self._session = self._login()
        self._key = self._find_key()

    def _after_fork(self) -> None:
        # PKCS#11 (section 6.7.7): a child must call C_Initialize again; handles inherited
        # from the parent are not valid in it.
        with _token_lock:
            if _initialised_in.get(self._module_path) != _fork.generation:
                try:
                    self._lib.reinitialize()  # C_Finalize + C_Initialize, in every version
                except self._binding.PKCS11Error:
                    # C_Finalize refused in the child (newer python-pkcs11 versions still
                    # let C_Initialize run on its own; older ones offer no way to).
                    initialize = getattr(self._lib, "initialize", None)
                    if initialize is None:
                        raise
                    initialize()
                _initialised_in[self._module_path] = _fork.generation
        self._generation = _fork.generation
        self._session = None
        token = self._token
        serial = token.serial.decode("ascii", "replace").strip()
        self._token = self._find_token({"token": token.label, "serial": serial})
        self._session = self._login()
        self._key = self._find_key()
