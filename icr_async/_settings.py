"""Arguments and environment, resolved into one app's settings in one place.

``AsyncICRClient`` (and through it the blocking client and the CLI) calls
``resolve_settings``: explicit arguments first, then ``ICR_APP_ID``, ``ICR_PRIVATE_KEY`` /
``ICR_PRIVATE_KEY_PATH`` (through ``load_private_key``), ``ICR_BASE_URL`` and
``ICR_API_VERSION`` — unless ``env=False``. Every mistake is a ``ConfigurationError`` here,
before any request.
"""

from __future__ import annotations

import os
import ssl as ssl_module
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from ._config import DEFAULT_API_VERSION, PRODUCTION_URL, SANDBOX_URL, ClientConfig
from ._keys import KeySource, load_private_key
from ._signers import Signer, check_signers
from .errors import ConfigurationError

__all__ = ["ENV_VARS", "Settings", "resolve_settings"]

# Every environment variable the SDK reads (the CLI's help lists them from here).
ENV_VARS: Mapping[str, str] = {
    "ICR_APP_ID": "the app's id",
    "ICR_PRIVATE_KEY": "the app's private key, PEM text",
    "ICR_PRIVATE_KEY_PATH": "a file holding the app's private key (PEM)",
    "ICR_BASE_URL": "the API base URL (default: production)",
    "ICR_API_VERSION": f"the x-icr-api-version header (default: {DEFAULT_API_VERSION})",
}


@attrs.frozen
class Settings:
    """One app's resolved identity and client configuration."""

    app_id: str
    signers: tuple[Signer, ...]
    config: ClientConfig


def _app_id(app_id: str | int | None, env: bool) -> str:
    if app_id is None and env:
        app_id = os.environ.get("ICR_APP_ID")
    if app_id is None:
        raise ConfigurationError("no app id: pass app_id= or set ICR_APP_ID")
    if isinstance(app_id, bool) or not isinstance(app_id, (str, int)):
        raise ConfigurationError(f"app_id must be a string, got {type(app_id).__name__}")
    app_id = str(app_id).strip()
    if not app_id:
        raise ConfigurationError("app_id is empty")
    if any(c.isspace() for c in app_id) or len(app_id) > 200:
        raise ConfigurationError("app_id must be the app's id (a UUID), without spaces")
    return app_id


def _signers(
    signer: Signer | Sequence[Signer] | None,
    private_key: KeySource | None,
    private_key_path: str | os.PathLike[str] | None,
    private_key_password: str | bytes | None,
    env: bool,
) -> tuple[Signer, ...]:
    if signer is None:
        return (
            load_private_key(
                private_key, path=private_key_path, password=private_key_password, env=env
            ),
        )
    given = [
        name
        for name, value in (
            ("private_key", private_key),
            ("private_key_path", private_key_path),
            ("private_key_password", private_key_password),
        )
        if value is not None
    ]
    if given:
        raise ConfigurationError(
            f"pass either signer= or {'/'.join(f'{n}=' for n in given)}, not both "
            "(a PrivateKey is a signer: list it in signer= to rotate keys)"
        )
    return check_signers(signer)


def _ssl(ssl: Any, ca_file: str | os.PathLike[str] | None) -> Any:
    if ca_file is None:
        return ssl
    if ssl is not None:
        raise ConfigurationError("pass either ssl= or ca_file=, not both")
    try:
        return ssl_module.create_default_context(cafile=os.fspath(ca_file))
    except (OSError, ssl_module.SSLError) as exc:
        raise ConfigurationError(f"cannot load CA file {os.fspath(ca_file)}: {exc}") from None


def resolve_settings(
    *,
    app_id: str | int | None,
    private_key: KeySource | None,
    private_key_path: str | os.PathLike[str] | None,
    private_key_password: str | bytes | None,
    signer: Signer | Sequence[Signer] | None,
    base_url: str | None,
    sandbox: bool,
    api_version: str | None,
    ssl: Any,
    ca_file: str | os.PathLike[str] | None,
    env: bool,
    **config: Any,
) -> Settings:
    """The settings from arguments, then the environment (see the module docstring);
    ``config`` holds the remaining ``ClientConfig`` fields as given."""
    resolved_id = _app_id(app_id, env)
    signers = _signers(signer, private_key, private_key_path, private_key_password, env)
    if base_url is not None and sandbox:
        raise ConfigurationError("pass either base_url or sandbox=True, not both")
    if base_url is None:
        # An empty ICR_BASE_URL counts as unset; an explicit base_url="" is an error later.
        base_url = (
            SANDBOX_URL if sandbox else ((os.environ.get("ICR_BASE_URL") or None) if env else None)
        )
    if api_version is None:
        api_version = (os.environ.get("ICR_API_VERSION") if env else None) or DEFAULT_API_VERSION
    if config.get("user_agent") is None:
        config.pop("user_agent", None)  # ClientConfig's own default, not a second copy
    return Settings(
        app_id=resolved_id,
        signers=signers,
        config=ClientConfig(
            base_url=PRODUCTION_URL if base_url is None else base_url,
            api_version=api_version,
            ssl=_ssl(ssl, ca_file),
            **config,
        ),
    )
