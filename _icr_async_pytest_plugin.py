"""The icr-async pytest plugin: what the ``pytest11`` entry point ``icr_async`` loads.

Its users' guide is :mod:`icr_async.testing.pytest_plugin`, which re-exports everything here.

Why a top-level module: importing any ``icr_async.*`` module first runs ``icr_async/__init__``,
which loads the whole SDK (aiohttp, cryptography, joserfc: ~1 s). pytest imports every
installed plugin at start-up, before pytest-cov starts measuring, so a plugin inside the
package would slow down every pytest session of every project that has icr-async installed,
and hide icr_async's own module-level lines from coverage. This module imports only pytest
(and pytest-asyncio when it is installed, which pytest has loaded anyway); the SDK is imported
by the fixtures' bodies, when a test uses one. Hypothesis ships ``_hypothesis_pytestplugin``
for the same reason.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, cast

import pytest

try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - pytest-asyncio is optional
    _HAS_PYTEST_ASYNCIO = False
else:
    _HAS_PYTEST_ASYNCIO = True

if TYPE_CHECKING:
    from icr_async.testing import EmulatorServer, ICREmulator

__all__ = [
    "ICRTestApp",
    "icr_app",
    "icr_emulator",
    "icr_emulator_private_key_pem",
    "icr_emulator_server",
    "icr_emulator_thread_server",
]

_LoopScope = Literal["function", "class", "module", "package", "session"]
_ANYIO_SERVER = "_icr_emulator_server_anyio"
_THREAD_SERVER = "icr_emulator_thread_server"


@dataclass(frozen=True)
class ICRTestApp:
    """The emulator's app as a client needs it: what the ``icr_app`` fixture returns."""

    app_id: str
    private_key_pem: str = field(repr=False)
    base_url: str
    installation_ids: tuple[str, ...]
    """The ids of the app's installations (five unless ``icr_emulator`` is overridden)."""

    @property
    def env(self) -> dict[str, str]:
        """``ICR_APP_ID``, ``ICR_PRIVATE_KEY`` and ``ICR_BASE_URL``, for a subprocess or the CLI."""
        return {
            "ICR_APP_ID": self.app_id,
            "ICR_PRIVATE_KEY": self.private_key_pem,
            "ICR_BASE_URL": self.base_url,
        }


@pytest.fixture(scope="session")
def icr_emulator_private_key_pem() -> str:
    """The app's RSA private key (PKCS#8 PEM), made once per session: key generation is slow."""
    from icr_async.testing import generate_private_key_pem

    return generate_private_key_pem()


@pytest.fixture
def icr_emulator(icr_emulator_private_key_pem: str) -> ICREmulator:
    """A fresh emulator with one app (``.default_app``) installed on five organizations.

    Not served yet: configure it freely (faults, clock skew, ledger), then request
    ``icr_emulator_server``. Override this fixture to build the emulator differently.
    """
    from icr_async.testing import ICREmulator

    emulator = ICREmulator()
    emulator.create_app(5, private_key_pem=icr_emulator_private_key_pem)
    return emulator


@pytest.fixture
def icr_emulator_server(
    request: pytest.FixtureRequest, icr_emulator: ICREmulator
) -> EmulatorServer:
    """``icr_emulator`` served on 127.0.0.1 for this test; ``.url`` is the base URL.

    Served on the event loop that runs the test: pytest-asyncio's (strict or auto mode, any
    loop scope) or anyio's. A test with no asyncio loop (a plain ``def`` test, or anyio on
    trio) gets the server of ``icr_emulator_thread_server`` instead.
    """
    # icr_emulator is a parameter only so that pytest lists and orders the dependency; the
    # fixture chosen below serves that same (cached) emulator.
    del icr_emulator
    return cast("EmulatorServer", request.getfixturevalue(_server_fixture_for(request)))


@pytest.fixture
def icr_emulator_thread_server(icr_emulator: ICREmulator) -> Iterator[EmulatorServer]:
    """``icr_emulator`` served on 127.0.0.1 from a background thread with its own event loop.

    For the blocking ``ICRClient``, which must not wait on the loop that serves it: in plain
    tests, and in async tests that call blocking code.
    """
    from anyio.from_thread import start_blocking_portal

    with (
        start_blocking_portal("asyncio") as portal,
        portal.wrap_async_context_manager(icr_emulator.serve()) as server,
    ):
        yield server


@pytest.fixture
def icr_app(icr_emulator: ICREmulator, icr_emulator_server: EmulatorServer) -> ICRTestApp:
    """The emulator's app, with its key and the served base URL (see ``icr_emulator_server``)."""
    app = icr_emulator.default_app
    return ICRTestApp(
        app_id=app.app_id,
        private_key_pem=app.private_key_pem,
        base_url=icr_emulator_server.url,
        installation_ids=tuple(i["id"] for i in icr_emulator.installations(app.app_id)),
    )


# --------------------------------------------------------------------------------------------
# Serving on the test's own loop.
#
# An async fixture is run by a plugin, and only the plugin that runs the test runs it on the
# test's loop. The old fixture asked for ``anyio_backend``, so anyio's plugin ran it on anyio's
# loop even for a pytest-asyncio test; that test then ran on pytest-asyncio's loop, where
# nothing served the listening socket: every request waited for the client's timeouts. Here
# ``icr_emulator_server`` is a plain fixture that asks, through pytest's public
# ``request.getfixturevalue``, for one of the hidden async fixtures below: the one that the
# plugin about to run the test will run on the test's loop.


def _server_fixture_for(request: pytest.FixtureRequest) -> str:
    """The name of the fixture that serves the emulator on the loop that runs this test."""
    item = request.node
    if _HAS_PYTEST_ASYNCIO and pytest_asyncio.is_async_test(item):
        # pytest-asyncio runs this test (strict mode with the marker, or auto mode) on the
        # runner of its loop scope; a fixture of the same loop scope shares that runner.
        marker = item.get_closest_marker("asyncio")
        loop_scope = (
            marker.kwargs.get("loop_scope") or marker.kwargs.get("scope") if marker else None
        )
        loop_scope = (
            loop_scope or item.config.getini("asyncio_default_test_loop_scope") or "function"
        )
        return f"_icr_emulator_server_asyncio_{loop_scope}"
    function = getattr(item, "obj", None)
    # Hypothesis wraps the test; its inner test is the coroutine function.
    inner = getattr(getattr(function, "hypothesis", None), "inner_test", function)
    if "anyio_backend" in request.fixturenames and inspect.iscoroutinefunction(inner):
        backend = request.getfixturevalue("anyio_backend")
        name = backend if isinstance(backend, str) else backend[0]
        if name == "asyncio":
            # anyio runs every async fixture of a test that uses anyio_backend on that test's
            # runner, whichever plugin defined it.
            return _ANYIO_SERVER
    # No asyncio loop will run this test (a plain test, anyio on trio, another runner).
    return _THREAD_SERVER


@pytest.fixture(name=_ANYIO_SERVER)
async def _icr_emulator_server_anyio(icr_emulator: ICREmulator) -> AsyncIterator[EmulatorServer]:
    """``icr_emulator`` served on anyio's loop (requested by ``icr_emulator_server``)."""
    async with icr_emulator.serve() as server:
        yield server


def _asyncio_server_fixture(loop_scope: _LoopScope) -> Callable[..., Any]:
    """A fixture serving ``icr_emulator`` on pytest-asyncio's loop of ``loop_scope``."""

    async def serve(icr_emulator: ICREmulator) -> AsyncIterator[EmulatorServer]:
        async with icr_emulator.serve() as server:
            yield server

    name = f"_icr_emulator_server_asyncio_{loop_scope}"
    serve.__name__ = serve.__qualname__ = name
    serve.__doc__ = f"``icr_emulator`` served on pytest-asyncio's {loop_scope}-scoped loop."
    if not _HAS_PYTEST_ASYNCIO:  # pragma: no cover - never requested without pytest-asyncio
        return pytest.fixture(serve, name=name)
    return pytest_asyncio.fixture(serve, loop_scope=loop_scope, name=name)


_icr_emulator_server_asyncio_function = _asyncio_server_fixture("function")
_icr_emulator_server_asyncio_class = _asyncio_server_fixture("class")
_icr_emulator_server_asyncio_module = _asyncio_server_fixture("module")
_icr_emulator_server_asyncio_package = _asyncio_server_fixture("package")
_icr_emulator_server_asyncio_session = _asyncio_server_fixture("session")
