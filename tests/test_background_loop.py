"""The blocking client's background loop, on asyncio's own loop and on uvloop.

Where uvloop is installed the shared loop is a uvloop loop unless ``ICR_ASYNC_NO_UVLOOP`` is
set; the same real calls against the emulator must behave the same on either. The loop kind
is chosen by the environment variable each time the shared loop starts, so each test starts
with no loop running and sets the variable before its client's first call.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio.from_thread
import pytest
from forking import Connection, fork_and_receive

from icr_async import ICRClient, NotFoundError, PrivateKey, Token, _background
from icr_async.testing import EmulatorServer, ICREmulator

HAVE_UVLOOP = importlib.util.find_spec("uvloop") is not None
needs_uvloop = pytest.mark.skipif(not HAVE_UVLOOP, reason="uvloop is not installed")
KINDS = [
    pytest.param("asyncio", id="asyncio"),
    pytest.param("uvloop", id="uvloop", marks=needs_uvloop),
]


def _loop_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == _background.LOOP_THREAD_NAME]


def _kind_of(loop: object) -> str:
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


@pytest.fixture
def emulator() -> ICREmulator:
    """A fresh emulator on the system clock (the background loop's time is real)."""
    return ICREmulator(seed=5)


@pytest.fixture
def app_id(emulator: ICREmulator, private_key_pem: str) -> str:
    return emulator.add_app(private_key_pem, installations=4)


@pytest.fixture
def server(emulator: ICREmulator) -> Iterator[EmulatorServer]:
    """The emulator served on 127.0.0.1 from a loop in its own thread."""
    with anyio.from_thread.start_blocking_portal("asyncio") as portal:
        served = portal.call(emulator.start)
        try:
            yield served
        finally:
            portal.call(served.close)


@pytest.fixture
def installation_ids(emulator: ICREmulator, app_id: str) -> list[str]:
    return [inst["id"] for inst in emulator.installations(app_id)]


@pytest.fixture(params=KINDS)
def loop_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The kind of loop the next shared loop will be, chosen the way a user chooses it."""
    kind: str = request.param
    if kind == "asyncio":
        monkeypatch.setenv(_background.NO_UVLOOP_ENV, "1")
    else:
        monkeypatch.delenv(_background.NO_UVLOOP_ENV, raising=False)
    assert _loop_threads() == [], "a shared loop from an earlier test is still running"
    return kind


@pytest.fixture
def make_client(
    server: EmulatorServer, app_id: str, app_private_key: PrivateKey, loop_kind: str
) -> Iterator[Callable[..., ICRClient]]:
    made: list[ICRClient] = []

    def factory(**kwargs: Any) -> ICRClient:
        client = ICRClient(app_id, app_private_key, base_url=server.url, env=False, **kwargs)
        made.append(client)
        return client

    yield factory
    for client in made:
        client.close()


# -- the choice -----------------------------------------------------------------------------


def test_loop_factory_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_background.NO_UVLOOP_ENV, "1")
    assert _background.loop_factory() is None
    for value in ("0", ""):
        monkeypatch.setenv(_background.NO_UVLOOP_ENV, value)
        factory = _background.loop_factory()
        if HAVE_UVLOOP:
            # By name: the type check runs where uvloop may not be installed.
            assert factory is importlib.import_module("uvloop").new_event_loop
        else:
            assert factory is None
    monkeypatch.delenv(_background.NO_UVLOOP_ENV)
    assert (_background.loop_factory() is not None) is HAVE_UVLOOP


# -- the same calls on either loop --------------------------------------------------------------


def test_the_blocking_client_works_on_either_loop(
    make_client: Callable[..., ICRClient], installation_ids: list[str], loop_kind: str
) -> None:
    client = make_client()
    assert client.get_installation(installation_ids[0]).id == installation_ids[0]
    assert client._handle.loop is not None
    assert _kind_of(client._handle.loop) == loop_kind
    assert [i.id for i in client.iter_installations(page_size=3)] == installation_ids
    with pytest.raises(NotFoundError):
        client.get_installation("00000000-0000-0000-0000-000000000000")

    def token(inst_id: str) -> str:
        got = client.installation(inst_id).get_token()
        assert isinstance(got, Token)
        return got.installation_id or ""

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(token, installation_ids * 4)) == installation_ids * 4
    assert sum(client.stats.mints.values()) == len(installation_ids)

    thread = _loop_threads()[0]
    client.close()
    thread.join(timeout=10)
    assert not thread.is_alive()


@pytest.mark.anyio
async def test_a_caller_running_its_own_loop_is_left_alone(
    make_client: Callable[..., ICRClient], installation_ids: list[str], loop_kind: str
) -> None:
    own = asyncio.get_running_loop()
    client = make_client()
    assert client.get_installation(installation_ids[1]).id == installation_ids[1]
    assert client._handle.loop is not own
    assert _kind_of(client._handle.loop) == loop_kind
    assert asyncio.get_running_loop() is own


def _child(client: ICRClient, inst_id: str, conn: Connection) -> None:
    try:
        before = client._handle.loop
        got = client.get_installation(inst_id)
        conn.send(
            {
                "id": got.id,
                "new_loop": client._handle.loop is not before,
                "kind": _kind_of(client._handle.loop),
            }
        )
        client.close()
    except BaseException as exc:
        conn.send({"error": repr(exc)})
        raise
    finally:
        conn.close()


def test_after_fork_the_child_gets_a_loop_of_the_same_kind(
    make_client: Callable[..., ICRClient], installation_ids: list[str], loop_kind: str
) -> None:
    client = make_client()
    client.get_installation(installation_ids[0])  # the parent's loop and session are live
    report, exitcode, _ = fork_and_receive(_child, client, installation_ids[1])
    assert report == {"id": installation_ids[1], "new_loop": True, "kind": loop_kind}
    assert exitcode == 0
    assert client.get_installation(installation_ids[2]).id == installation_ids[2]


# -- the switch as a user flips it: in the environment, before Python starts -------------------

SCRIPT = textwrap.dedent(
    """
    import sys
    from icr_async import ICRClient

    url, app_id, key_path, inst_id = sys.argv[1:5]
    with ICRClient(app_id, private_key_path=key_path, base_url=url, env=False) as client:
        got = client.get_installation(inst_id)
        print(got.id, type(client._handle.loop).__module__.partition(".")[0])
    """
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("1", "asyncio", id="opt-out"),
        pytest.param(None, "uvloop", id="default", marks=needs_uvloop),
        pytest.param("0", "uvloop", id="zero-is-not-opt-out", marks=needs_uvloop),
    ],
)
def test_the_environment_variable_chooses_the_loop_in_a_fresh_process(
    server: EmulatorServer,
    app_id: str,
    private_key_pem: str,
    installation_ids: list[str],
    tmp_path: Any,
    value: str | None,
    expected: str,
) -> None:
    key = tmp_path / "key.pem"
    key.write_text(private_key_pem)
    env = {k: v for k, v in os.environ.items() if k != _background.NO_UVLOOP_ENV}
    if value is not None:
        env[_background.NO_UVLOOP_ENV] = value
    done = subprocess.run(
        [
            sys.executable,
            "-W",
            "error",
            "-c",
            SCRIPT,
            server.url,
            app_id,
            str(key),
            installation_ids[0],
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout.split() == [installation_ids[0], expected]
