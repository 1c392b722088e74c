"""The pytest plugin as its users meet it: scratch projects run by ``python -m pytest``.

Each test writes a small project under ``tmp_path`` and runs pytest on it in a subprocess
(with the installed plugin, as any project that has icr-async installed gets it): under
pytest-asyncio's strict and auto modes, under anyio alone, and in plain synchronous tests
with the blocking client. The scratch projects turn warnings into errors, so a fixture that
pytest-asyncio would have to warn about fails here.
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# The "Testing your app" page's example (docs/testing.md), between these markers; the docs'
# own test (tests/test_docs.py) only compiles it.
EXAMPLE_PAGE = REPO / "docs" / "testing.md"
EXAMPLE_START = "<!-- testing-example:start -->"
EXAMPLE_END = "<!-- testing-example:end -->"

# A scratch run takes 2-4 s; a fixture on the wrong loop hangs until the inner timeout.
INNER_TIMEOUT = 30
OUTER_TIMEOUT = 120

# Overrides icr_emulator (as users may) with a route that reports which thread and loop
# served the request, so the tests can tell where icr_emulator_server really runs.
WHERE_CONFTEST = """
    import asyncio
    import threading

    import pytest
    from aiohttp import web


    def add_where_route(emulator, app):
        async def where(request):
            loop = asyncio.get_running_loop()
            return web.json_response({"thread": threading.get_ident(), "loop": id(loop)})

        app.router.add_get("/_where", where)


    @pytest.fixture
    def icr_emulator(icr_emulator):
        icr_emulator.route_registrars.append(add_where_route)
        return icr_emulator


    async def where(url):
        import aiohttp

        async with aiohttp.ClientSession() as session, session.get(url + "/_where") as response:
            return await response.json()


    def here():
        return {"thread": threading.get_ident(), "loop": id(asyncio.get_running_loop())}
"""

# The same checks in every async runner: the server runs on the test's own loop, and the
# SDK's async client works against it from a user's own async fixture.
ASYNC_TESTS = """
    from conftest import here, where
    from icr_async import AsyncICRClient


    async def test_served_on_the_test_loop(icr_emulator, icr_emulator_server):
        assert icr_emulator_server.emulator is icr_emulator
        assert await where(icr_emulator_server.url) == here()


    async def test_async_client_from_a_fixture(client, icr_app):
        ids = [installation.id async for installation in client.iter_installations()]
        assert ids == list(icr_app.installation_ids)
        assert len(ids) == 5
"""

CLIENT_FIXTURE = """
    @DECORATOR
    async def client(icr_app):
        async with AsyncICRClient(
            icr_app.app_id, icr_app.private_key_pem, base_url=icr_app.base_url, env=False
        ) as client:
            yield client
"""

# A plain test, and an async one calling blocking code: both need a server on another thread.
SYNC_TESTS = """
    import asyncio
    import threading
    import urllib.request
    import json

    from icr_async import ICRClient


    def installation_ids(app_id, key, url):
        with ICRClient(app_id, key, base_url=url, env=False) as client:
            return [installation.id for installation in client.iter_installations()]


    def test_blocking_client_in_a_plain_test(icr_app, icr_emulator_server):
        assert icr_app.base_url == icr_emulator_server.url
        with urllib.request.urlopen(icr_app.base_url + "/_where", timeout=10) as response:
            assert json.load(response)["thread"] != threading.get_ident()
        ids = installation_ids(icr_app.app_id, icr_app.private_key_pem, icr_app.base_url)
        assert ids == list(icr_app.installation_ids)


    @ASYNC_MARK
    async def test_blocking_client_in_an_async_test(icr_emulator, icr_emulator_thread_server):
        app = icr_emulator.default_app
        ids = await asyncio.to_thread(
            installation_ids, app.app_id, app.private_key_pem, icr_emulator_thread_server.url
        )
        assert len(ids) == 5
"""


def run_pytest(
    project: Path, files: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    """Write ``files`` into ``project`` and run ``python -m pytest`` there; return the result."""
    for name, text in files.items():
        (project / name).write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            f"--timeout={INNER_TIMEOUT}",
            "-q",
            "-rA",
            *args,
        ],
        cwd=project,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=OUTER_TIMEOUT,
        check=False,
    )


def assert_passed(result: subprocess.CompletedProcess[str], count: int) -> None:
    """All ``count`` tests of the scratch run passed, with no warning and no error."""
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    summary = output.strip().splitlines()[-1]
    assert summary.startswith(f"{count} passed in "), output


def source(*parts: str) -> str:
    """Python source made of indented snippets, each dedented on its own."""
    return "\n\n".join(textwrap.dedent(part).strip("\n") for part in parts) + "\n"


def ini(*lines: str) -> str:
    """A pytest.ini that turns every warning into an error."""
    return "\n".join(["[pytest]", "filterwarnings = error", *lines]) + "\n"


def test_plugin_loads_without_importing_the_sdk(tmp_path: Path) -> None:
    # A project that has icr-async installed but never uses its fixtures.
    light = """
        import sys

        HEAVY = {"aiohttp", "cryptography", "joserfc", "icr_async"}


        def test_registered_but_nothing_heavy_imported(pytestconfig):
            assert pytestconfig.pluginmanager.has_plugin("icr_async")
            loaded = sorted(m for m in sys.modules if m.partition(".")[0] in HEAVY)
            assert loaded == []


        def test_fixtures_offered(pytestconfig):
            plugin = pytestconfig.pluginmanager.get_plugin("icr_async")
            assert plugin.__name__ == "_icr_async_pytest_plugin"
            for name in ("icr_emulator", "icr_emulator_server", "icr_app"):
                assert callable(getattr(plugin, name))
    """
    result = run_pytest(
        tmp_path,
        {
            "pytest.ini": ini("asyncio_default_fixture_loop_scope = function"),
            "test_light.py": source(light),
        },
    )
    assert_passed(result, 2)


def test_pytest_asyncio_strict_mode(tmp_path: Path) -> None:
    module_loop = """
        @pytest.mark.asyncio(loop_scope="module")
        async def test_module_loop_scope(icr_emulator_server):
            assert await where(icr_emulator_server.url) == here()
    """
    # anyio's marker beside pytest-asyncio: each runner serves its own tests.
    anyio_beside = """
        @pytest.fixture
        def anyio_backend():
            return "asyncio"


        @pytest.mark.anyio
        async def test_anyio_beside_pytest_asyncio(icr_emulator_server):
            assert await where(icr_emulator_server.url) == here()
    """
    result = run_pytest(
        tmp_path,
        {
            "pytest.ini": ini(
                "asyncio_mode = strict", "asyncio_default_fixture_loop_scope = function"
            ),
            "conftest.py": source(WHERE_CONFTEST),
            "test_strict.py": source(
                "import pytest\nimport pytest_asyncio\n\npytestmark = pytest.mark.asyncio",
                ASYNC_TESTS,
                CLIENT_FIXTURE.replace("@DECORATOR", "@pytest_asyncio.fixture"),
                module_loop,
            ),
            "test_anyio_beside.py": source(
                "import pytest\nfrom conftest import here, where", anyio_beside
            ),
            "test_sync.py": source(
                "import pytest", SYNC_TESTS.replace("@ASYNC_MARK", "@pytest.mark.asyncio")
            ),
        },
    )
    assert_passed(result, 6)


def test_pytest_asyncio_auto_mode(tmp_path: Path) -> None:
    session_loop = """
        class TestSessionLoop:
            pytestmark = pytest.mark.asyncio(loop_scope="session")

            async def test_session_loop_scope(self, icr_emulator_server):
                assert await where(icr_emulator_server.url) == here()
    """
    result = run_pytest(
        tmp_path,
        {
            "pytest.ini": ini(
                "asyncio_mode = auto", "asyncio_default_fixture_loop_scope = function"
            ),
            "conftest.py": source(WHERE_CONFTEST),
            # No marker anywhere, and the client fixture is a plain @pytest.fixture.
            "test_auto.py": source(
                "import pytest",
                ASYNC_TESTS,
                CLIENT_FIXTURE.replace("@DECORATOR", "@pytest.fixture"),
                session_loop,
            ),
            "test_sync.py": source("import pytest", SYNC_TESTS.replace("    @ASYNC_MARK\n", "")),
        },
    )
    assert_passed(result, 5)


def test_anyio_without_pytest_asyncio(tmp_path: Path) -> None:
    backend = """
        @pytest.fixture(scope="session")
        def anyio_backend():
            return "asyncio"
    """
    result = run_pytest(
        tmp_path,
        {
            "pytest.ini": ini(),
            "conftest.py": source(WHERE_CONFTEST, backend),
            "test_anyio.py": source(
                "import pytest\n\npytestmark = pytest.mark.anyio",
                ASYNC_TESTS,
                CLIENT_FIXTURE.replace("@DECORATOR", "@pytest.fixture"),
            ),
            "test_sync.py": source(
                "import pytest", SYNC_TESTS.replace("@ASYNC_MARK", "@pytest.mark.anyio")
            ),
        },
        # As in a project that uses anyio only.
        "-p",
        "no:asyncio",
    )
    assert_passed(result, 4)


def test_the_documented_testing_example(tmp_path: Path) -> None:
    # The docs' "Testing your app" example, as a user's test file under strict mode.
    if not EXAMPLE_PAGE.parent.is_dir():
        pytest.skip("the documentation is not in the sdist; a checkout runs this")
    page = EXAMPLE_PAGE.read_text(encoding="utf-8")
    section = page[page.index(EXAMPLE_START) : page.index(EXAMPLE_END)]
    (example,) = re.findall(r"^```python\n(.*?)^```$", section, flags=re.M | re.S)
    result = run_pytest(
        tmp_path,
        {
            "pytest.ini": ini(
                "asyncio_mode = strict", "asyncio_default_fixture_loop_scope = function"
            ),
            "test_docs_example.py": example,
        },
    )
    assert_passed(result, 2)


@pytest.mark.parametrize("module", ["_icr_async_pytest_plugin", "icr_async.testing.pytest_plugin"])
def test_both_module_names_offer_the_fixtures(module: str) -> None:
    plugin = importlib.import_module(module)
    names = {
        "ICRTestApp",
        "icr_app",
        "icr_emulator",
        "icr_emulator_private_key_pem",
        "icr_emulator_server",
        "icr_emulator_thread_server",
    }
    assert set(plugin.__all__) == names
    assert all(hasattr(plugin, name) for name in names)
