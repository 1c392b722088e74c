"""pytest fixtures for code that talks to ICR: the emulator, served for each test.

Installing icr-async registers the plugin (entry point ``pytest11``, name ``icr_async``;
disable it with ``-p no:icr_async``). Loading it imports only pytest: the SDK and the
emulator are imported when a test first uses a fixture, so projects that never use them pay
nothing and coverage of your own code is unaffected. The code lives in the top-level module
``_icr_async_pytest_plugin`` for that reason; this module re-exports it, so
``pytest_plugins = ["icr_async.testing.pytest_plugin"]`` and the names below keep working.

Fixtures
--------
``icr_emulator``
    A fresh :class:`~icr_async.testing.ICREmulator` with one app (``.default_app``)
    installed on five organizations. Not served yet: set faults, skew or ledger data first.
    Override it in your ``conftest.py`` to build the emulator your way.
``icr_emulator_server``
    That emulator served on 127.0.0.1 for the test (``.url`` is the base URL). It runs on
    the event loop that runs the test, whichever plugin that is: pytest-asyncio in strict or
    auto mode (any ``loop_scope``), or anyio's ``@pytest.mark.anyio`` on asyncio. In a plain
    synchronous test (or on trio) it is served from a background thread instead, so the
    same fixture serves the blocking ``ICRClient``.
``icr_emulator_thread_server``
    The emulator served from a background thread with its own event loop, always: for the
    blocking ``ICRClient`` inside an ``async def`` test (blocking calls would otherwise stop
    the loop that serves them). Use either this or ``icr_emulator_server`` in one test.
``icr_app``
    An :class:`ICRTestApp`: ``app_id``, ``private_key_pem``, ``base_url`` (of
    ``icr_emulator_server``), ``installation_ids`` and ``env`` (``ICR_APP_ID``,
    ``ICR_PRIVATE_KEY``, ``ICR_BASE_URL`` for a subprocess).
``icr_emulator_private_key_pem``
    The app's RSA key, generated once per session.

In each runner
--------------
pytest-asyncio, strict mode (its default)::

    @pytest.mark.asyncio
    async def test_lists_installations(icr_app):
        async with AsyncICRClient(icr_app.app_id, icr_app.private_key_pem,
                                  base_url=icr_app.base_url) as client:
            assert len([i async for i in client.iter_installations()]) == 5

pytest-asyncio, auto mode (``asyncio_mode = "auto"``): the same test without the marker;
your own ``async`` fixtures may use ``icr_app`` too. anyio: mark the test
``@pytest.mark.anyio`` and define ``anyio_backend`` returning ``"asyncio"``.
A synchronous test, with the blocking client::

    def test_blocking(icr_app):
        with ICRClient(icr_app.app_id, icr_app.private_key_pem,
                       base_url=icr_app.base_url) as client:
            assert len(list(client.iter_installations())) == 5
"""

from __future__ import annotations

from _icr_async_pytest_plugin import (
    ICRTestApp,
    icr_app,
    icr_emulator,
    icr_emulator_private_key_pem,
    icr_emulator_server,
    icr_emulator_thread_server,
)

# The hidden fixtures icr_emulator_server delegates to: a plugin registered by this module's
# name (``-p icr_async.testing.pytest_plugin``) needs them too.
from _icr_async_pytest_plugin import (  # isort: skip
    _icr_emulator_server_anyio as _icr_emulator_server_anyio,
    _icr_emulator_server_asyncio_class as _icr_emulator_server_asyncio_class,
    _icr_emulator_server_asyncio_function as _icr_emulator_server_asyncio_function,
    _icr_emulator_server_asyncio_module as _icr_emulator_server_asyncio_module,
    _icr_emulator_server_asyncio_package as _icr_emulator_server_asyncio_package,
    _icr_emulator_server_asyncio_session as _icr_emulator_server_asyncio_session,
)

__all__ = [
    "ICRTestApp",
    "icr_app",
    "icr_emulator",
    "icr_emulator_private_key_pem",
    "icr_emulator_server",
    "icr_emulator_thread_server",
]
