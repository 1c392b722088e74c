"""pytest fixtures for code that talks to ICR (registered as the ``icr_async`` plugin).

* ``icr_emulator``: a fresh :class:`~icr_async.testing.ICREmulator` holding one app with five
  installations, as ``icr_emulator.default_app``;
* ``icr_emulator_server``: that emulator served on 127.0.0.1 (an anyio fixture: mark the test
  ``@pytest.mark.anyio``); ``icr_emulator_server.url`` is the base URL;
* ``icr_emulator_private_key_pem``: the app's RSA key, generated once per session.

The module imports only pytest at import time so that loading the plugin costs nothing in
projects that never use these fixtures.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from icr_async.testing import EmulatorServer, ICREmulator

__all__ = ["icr_emulator", "icr_emulator_private_key_pem", "icr_emulator_server"]


@pytest.fixture(scope="session")
def icr_emulator_private_key_pem() -> str:
    """An RSA private key (PKCS#8 PEM) shared by the session: key generation is slow."""
    from icr_async.testing._crypto import generate_private_key_pem

    return generate_private_key_pem()


@pytest.fixture
def icr_emulator(icr_emulator_private_key_pem: str) -> ICREmulator:
    """A fresh emulator with one app (``.default_app``) installed on five organizations."""
    from icr_async.testing._emulator import ICREmulator

    emulator = ICREmulator()
    emulator.create_app(5, private_key_pem=icr_emulator_private_key_pem)
    return emulator


@pytest.fixture
async def icr_emulator_server(
    icr_emulator: ICREmulator, anyio_backend: object
) -> AsyncIterator[EmulatorServer]:
    """``icr_emulator`` served on 127.0.0.1 for the duration of the test."""
    async with icr_emulator.serve() as server:
        yield server
