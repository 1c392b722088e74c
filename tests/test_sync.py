"""The blocking ICRClient against the real emulator, served from its own thread's event loop.

These tests are synchronous on purpose (the blocking client is for code without a loop); the
emulator runs in an anyio blocking portal so the test thread stays free. The emulator uses the
system clock: the blocking client runs on a real background loop, whose time cannot be faked.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio.from_thread
import pytest
from forking import Connection, fork_and_receive

from icr_async import (
    AppTokenClient,
    AsyncAppTokenClient,
    AsyncICRClient,
    AsyncInstallationClient,
    BlockingCallError,
    ClientClosedError,
    ConfigurationError,
    ICRClient,
    ICRError,
    Installation,
    InstallationClient,
    InvalidArgumentError,
    NotFoundError,
    Organization,
    Page,
    PrivateKey,
    Project,
    RequestEvent,
    Token,
    _background,
)
from icr_async._transport import AiohttpTransport
from icr_async.testing import EmulatorServer, Fault, ICREmulator

INSTALLATIONS = 10


# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture
def sync_emulator() -> ICREmulator:
    """A fresh emulator on the system clock."""
    return ICREmulator(seed=11)


@pytest.fixture
def sync_app_id(sync_emulator: ICREmulator, private_key_pem: str) -> str:
    """The app registered with the emulator, with ten installations."""
    return sync_emulator.add_app(private_key_pem, installations=INSTALLATIONS)


@pytest.fixture
def sync_server(sync_emulator: ICREmulator) -> Iterator[EmulatorServer]:
    """The emulator served on 127.0.0.1 from a loop in its own thread, for one test."""
    with anyio.from_thread.start_blocking_portal("asyncio") as portal:
        server = portal.call(sync_emulator.start)
        try:
            yield server
        finally:
            portal.call(server.close)


@pytest.fixture
def installation_ids(sync_emulator: ICREmulator, sync_app_id: str) -> list[str]:
    """The ids of the app's installations, in the emulator's order."""
    return [inst["id"] for inst in sync_emulator.installations(sync_app_id)]


@pytest.fixture
def make_sync_client(
    sync_server: EmulatorServer, sync_app_id: str, app_private_key: PrivateKey
) -> Iterator[Callable[..., ICRClient]]:
    """Build blocking clients pointed at the emulator; every one is closed after the test."""
    made: list[ICRClient] = []

    def factory(**kwargs: Any) -> ICRClient:
        kwargs.setdefault("app_id", sync_app_id)
        kwargs.setdefault("private_key", app_private_key)
        kwargs.setdefault("base_url", sync_server.url)
        kwargs.setdefault("env", False)
        client = ICRClient(**kwargs)
        made.append(client)
        return client

    yield factory
    for client in made:
        client.close()


@pytest.fixture
def sync_client(make_sync_client: Callable[..., ICRClient]) -> ICRClient:
    """A blocking client on the emulator, closed after the test."""
    return make_sync_client()


def _loop_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == _background.LOOP_THREAD_NAME]


# -- parity: every async method has a typed sync twin ---------------------------------------

PAIRS: list[tuple[type, type]] = [
    (AsyncICRClient, ICRClient),
    (AsyncInstallationClient, InstallationClient),
    (AsyncAppTokenClient, AppTokenClient),
]
# Methods whose twin has another name (the blocking spelling of the lifecycle).
RENAMED = {"aclose": "close"}
DERIVED = {"AsyncInstallationClient": "InstallationClient", "AsyncAppTokenClient": "AppTokenClient"}


def _public_names(cls: type) -> list[str]:
    return sorted(name for name in dir(cls) if not name.startswith("_"))


def _static(cls: type, name: str) -> Any:
    for klass in cls.__mro__:
        if name in vars(klass):
            return vars(klass)[name]
    raise AttributeError(name)


def parity_problems(async_cls: type, sync_cls: type) -> list[str]:
    """Everything that keeps ``sync_cls`` from mirroring ``async_cls``; empty when it does."""
    problems: list[str] = []
    for name in _public_names(async_cls):
        raw = _static(async_cls, name)
        twin_name = RENAMED.get(name, name)
        where = f"{sync_cls.__name__}.{twin_name}"
        if isinstance(raw, property):
            if not hasattr(sync_cls, name):
                problems.append(f"{where}: property missing")
            continue
        if not inspect.isfunction(raw):
            continue
        func: Callable[..., Any] = raw
        if not hasattr(sync_cls, twin_name):
            problems.append(
                f"{where} is missing: add `{twin_name} = _blocking/_iterating/_derived"
                f"({async_cls.__name__}.{name})` to {sync_cls.__name__} in icr_async/sync.py"
            )
            continue
        twin = getattr(sync_cls, twin_name)
        if name in RENAMED:
            continue
        if getattr(twin, "__wrapped__", None) is not func:
            problems.append(f"{where} does not wrap {async_cls.__name__}.{name}")
            continue
        if inspect.iscoroutinefunction(twin):
            problems.append(f"{where} is a coroutine function, not a blocking one")
        want = inspect.signature(func)
        got = inspect.signature(twin)
        if list(got.parameters.values()) != list(want.parameters.values()):
            problems.append(
                f"{where}{got} has other parameters than {async_cls.__name__}.{name}{want}"
            )
        returns = want.return_annotation
        if inspect.iscoroutinefunction(func):
            expected = returns
        elif isinstance(returns, str) and returns.startswith("AsyncIterator["):
            expected = "Iterator[" + returns[len("AsyncIterator[") :]
        elif returns in DERIVED:
            expected = DERIVED[returns]
        else:
            problems.append(f"{async_cls.__name__}.{name} -> {returns}: no blocking rule for it")
            continue
        if got.return_annotation != expected:
            problems.append(f"{where} returns {got.return_annotation}, expected {expected}")
    return problems


@pytest.mark.parametrize(("async_cls", "sync_cls"), PAIRS, ids=lambda c: c.__name__)
def test_every_public_async_method_has_a_typed_twin(async_cls: type, sync_cls: type) -> None:
    assert parity_problems(async_cls, sync_cls) == []


@pytest.mark.parametrize(("async_cls", "sync_cls"), PAIRS, ids=lambda c: c.__name__)
def test_twins_add_nothing_the_async_class_lacks(async_cls: type, sync_cls: type) -> None:
    extra = {"close", "closed"}  # the blocking lifecycle (aclose is async-only)
    own = set(_public_names(sync_cls)) - extra
    assert own <= set(_public_names(async_cls)) | {"app_id", "config", "stats", "installation_id"}


def _public_instance_attributes(obj: object) -> list[str]:
    """The public attributes set on ``obj`` itself: in its ``__dict__`` or in its slots."""
    names = set(getattr(obj, "__dict__", {}))
    for klass in type(obj).__mro__:
        slots = vars(klass).get("__slots__", ())
        names.update([slots] if isinstance(slots, str) else slots)
    return sorted(n for n in names if not n.startswith("_") and hasattr(obj, n))


def test_public_instance_attributes_are_mirrored(private_key_pem: str) -> None:
    client = ICRClient("app", private_key_pem, env=False)
    try:
        core = AsyncICRClient("app", private_key_pem, env=False)
        for name in _public_instance_attributes(core):
            assert getattr(client, name) == getattr(core, name) or name == "stats", name
        inst_core = core.installation("42")
        inst = client.installation("42")
        for name in _public_instance_attributes(inst_core):
            assert getattr(inst, name) == getattr(inst_core, name), name
        assert inst.parent is client
        assert client.app_token_client().parent is client
    finally:
        client.close()


def test_parity_check_fails_loudly_for_a_new_async_method() -> None:
    class Grown(AsyncInstallationClient):
        async def get_widget(self, widget_id: str) -> dict[str, Any]:
            raise NotImplementedError

        def iter_widgets(self, *, page_size: int = 100) -> Any:
            raise NotImplementedError

    problems = parity_problems(Grown, InstallationClient)
    assert any("get_widget is missing" in p for p in problems)
    assert any("iter_widgets is missing" in p for p in problems)


def test_parity_check_catches_a_different_signature() -> None:
    class Changed(AsyncICRClient):
        async def get_installation(
            self, installation_id: str | int, *, fresh: bool = False
        ) -> Installation:
            raise NotImplementedError

    problems = parity_problems(Changed, ICRClient)
    assert any("get_installation does not wrap" in p for p in problems)


def test_constructor_takes_the_async_clients_arguments(private_key_pem: str) -> None:
    assert inspect.signature(ICRClient) == inspect.signature(AsyncICRClient)
    before = len(_loop_threads())
    with pytest.raises(ConfigurationError):
        ICRClient("", private_key_pem, env=False)
    with pytest.raises(ConfigurationError):
        ICRClient("app", "not a key", env=False)
    # A configuration mistake never starts the background loop.
    assert len(_loop_threads()) == before


def test_twins_are_documented_and_named() -> None:
    assert ICRClient.get_installation.__name__ == "get_installation"
    assert "Blocking twin" in (ICRClient.get_installation.__doc__ or "")
    assert "GET /app/installations/{id}" in (ICRClient.get_installation.__doc__ or "")
    assert str(inspect.signature(ICRClient.get_installation)) == (
        "(self, installation_id: 'str | int') -> 'Installation'"
    )


# -- calls ----------------------------------------------------------------------------------


def test_calls_return_plain_values(
    sync_client: ICRClient, sync_emulator: ICREmulator, installation_ids: list[str]
) -> None:
    first = installation_ids[0]
    inst = sync_client.get_installation(first)
    assert isinstance(inst, Installation)
    assert inst.id == first
    page = sync_client.list_installations(limit=3)
    assert isinstance(page, Page)
    assert [i.id for i in page.items] == installation_ids[:3]
    assert isinstance(sync_client.create_app_token(), Token)
    minted = sync_client.create_installation_token(first)
    assert isinstance(minted, Token)
    assert minted.installation_id == first
    assert sync_client.revoke_token(minted) is True
    raw = sync_client.request("GET", f"/app/installations/{first}")
    assert isinstance(raw, dict)
    assert raw["id"] == first

    scoped = sync_client.installation(first)
    assert isinstance(scoped, InstallationClient)
    assert scoped.installation_id == first
    token = scoped.get_token()
    assert isinstance(token, Token)
    assert scoped.get_token() == token  # cached
    org_id = scoped.organization_id()
    assert org_id == inst.organization.id if inst.organization else True
    org = scoped.request("GET", f"/organizations/{org_id}")
    assert org["id"] == org_id
    body = scoped.request_raw("GET", f"/organizations/{org_id}")
    assert isinstance(body, bytes)
    assert org_id.encode() in body
    assert scoped.revoke() is True

    app_scoped = sync_client.app_token_client()
    assert isinstance(app_scoped, AppTokenClient)
    projects = app_scoped.request("GET", "/projects", params={"limit": 2})
    assert isinstance(projects, dict)
    assert isinstance(app_scoped.get_token(), Token)

    assert sync_client.jwt_signatures >= 1
    assert sync_client.base_url.startswith("http://127.0.0.1:")
    assert sync_client.key_fingerprint
    assert sync_client.stats.requests >= 8
    assert "ICRClient" in repr(sync_client)
    assert "AppTokenClient" in repr(app_scoped)
    assert type(ICRClient.base_url).__name__ == "_Forward"


def test_iterator_is_lazy_page_by_page(
    sync_client: ICRClient, sync_emulator: ICREmulator, installation_ids: list[str]
) -> None:
    key = ("GET", "list_installations")
    it = sync_client.iter_installations(page_size=3)
    assert sync_emulator.stats.requests[key] == 0  # nothing happens before the first next()
    assert next(it).id == installation_ids[0]
    assert sync_emulator.stats.requests[key] == 1
    assert [next(it).id, next(it).id] == installation_ids[1:3]
    assert sync_emulator.stats.requests[key] == 1  # still the first page
    assert next(it).id == installation_ids[3]
    assert sync_emulator.stats.requests[key] == 2
    rest = list(it)
    assert [i.id for i in rest] == installation_ids[4:]
    assert sync_emulator.stats.requests[key] == 4
    assert list(it) == []


def test_typed_endpoint_twins(
    sync_client: ICRClient, sync_emulator: ICREmulator, installation_ids: list[str]
) -> None:
    inst = sync_client.installation(installation_ids[0])
    org = inst.get_organization()
    assert isinstance(org, Organization)
    assert org.id == inst.organization_id()
    projects = sync_client.app_token_client()
    page = projects.list_projects(limit=2)
    assert isinstance(page, Page)
    assert all(isinstance(p, Project) for p in page.items)
    before = sync_emulator.stats.requests[("GET", "list_projects")]
    it = projects.iter_projects(page_size=2)
    first = next(it)
    assert isinstance(first, Project)
    assert first == page.items[0]
    assert sync_emulator.stats.requests[("GET", "list_projects")] == before + 1


def test_iterator_closed_early_closes_the_async_generator(
    sync_client: ICRClient, sync_emulator: ICREmulator
) -> None:
    it = sync_client.iter_installations(page_size=2)
    next(it)
    close = getattr(it, "close")  # noqa: B009 - a generator; its static type is Iterator
    close()
    with pytest.raises(StopIteration):
        next(it)
    assert sync_emulator.stats.requests[("GET", "list_installations")] == 1
    # Dropped half-way: finalised without warnings (filterwarnings=error would fail the test).
    it2 = sync_client.iter_installations(page_size=2)
    next(it2)
    del it2
    gc.collect()


def test_iterator_argument_errors_raise_at_the_call(sync_client: ICRClient) -> None:
    with pytest.raises(InvalidArgumentError):
        sync_client.iter_installations(page_size=0)


# -- lifecycle ------------------------------------------------------------------------------


def test_with_close_idempotent_and_call_after_close(
    make_sync_client: Callable[..., ICRClient], installation_ids: list[str]
) -> None:
    with make_sync_client() as client:
        assert client.get_installation(installation_ids[0]).id == installation_ids[0]
        scoped = client.installation(installation_ids[0])
        it = client.iter_installations(page_size=2)
        states = [client.closed]
    states.append(client.closed)
    assert states == [False, True]
    client.close()
    client.close()
    with pytest.raises(ClientClosedError, match="closed"):
        client.get_installation(installation_ids[0])
    with pytest.raises(ClientClosedError):
        scoped.get_token()
    with pytest.raises(ClientClosedError):
        next(it)


def test_close_of_an_unused_client_starts_nothing(private_key_pem: str) -> None:
    before = len(_loop_threads())
    client = ICRClient("app", private_key_pem, env=False)
    client.close()
    assert client.closed
    assert len(_loop_threads()) == before
    with pytest.raises(ClientClosedError):
        client.create_app_token()


def test_one_shared_loop_stopped_when_the_last_client_closes(
    make_sync_client: Callable[..., ICRClient], installation_ids: list[str]
) -> None:
    assert _loop_threads() == []
    a = make_sync_client()
    b = make_sync_client()
    assert _loop_threads() == []  # started lazily, on the first call
    a.get_installation(installation_ids[0])
    b.get_installation(installation_ids[1])
    threads = _loop_threads()
    assert len(threads) == 1
    assert threads[0].daemon
    a.close()
    assert threads[0].is_alive()
    b.get_installation(installation_ids[1])
    b.close()
    threads[0].join(timeout=10)
    assert not threads[0].is_alive()
    assert _loop_threads() == []
    # A new client afterwards starts a new loop.
    c = make_sync_client()
    assert c.get_installation(installation_ids[2]).id == installation_ids[2]
    assert len(_loop_threads()) == 1
    c.close()
    assert _loop_threads() == []


def test_a_client_dropped_without_close_is_closed_by_the_collector(
    make_sync_client: Callable[..., ICRClient],
    sync_server: EmulatorServer,
    sync_app_id: str,
    private_key_pem: str,
    installation_ids: list[str],
) -> None:
    client = ICRClient(sync_app_id, private_key_pem, base_url=sync_server.url, env=False)
    client.get_installation(installation_ids[0])
    thread = _loop_threads()[0]
    del client
    gc.collect()
    thread.join(timeout=10)  # its session closed on the loop, then the last lease released
    assert not thread.is_alive()


def test_closing_while_another_thread_waits_ends_that_call(
    make_sync_client: Callable[..., ICRClient],
    sync_emulator: ICREmulator,
    installation_ids: list[str],
) -> None:
    client = make_sync_client()
    client.get_installation(installation_ids[0])
    thread = _loop_threads()[0]
    sync_emulator.faults.add(Fault(method="GET", path="/app/installations/*", action="hang"))
    outcome: list[BaseException] = []

    def call() -> None:
        try:
            client.get_installation(installation_ids[1])
        except BaseException as exc:
            outcome.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    deadline = time.monotonic() + 10
    while sync_emulator.stats.requests[("GET", "get_installation")] < 2:
        assert time.monotonic() < deadline, "the request never reached the server"
        time.sleep(0.01)
    client.close()
    caller.join(timeout=10)
    assert not caller.is_alive()
    assert len(outcome) == 1
    assert isinstance(outcome[0], ICRError)
    thread.join(timeout=10)
    assert not thread.is_alive()


# -- errors -----------------------------------------------------------------------------------


def test_errors_keep_their_class_and_the_callers_frames(sync_client: ICRClient) -> None:
    with pytest.raises(NotFoundError) as info:
        sync_client.get_installation("00000000-0000-0000-0000-000000000000")
    err = info.value
    assert err.status == 404
    assert err.path == "/app/installations/00000000-0000-0000-0000-000000000000"
    frames = [
        (f.name, os.path.basename(f.filename)) for f in traceback.extract_tb(err.__traceback__)
    ]
    names = [name for name, _ in frames]
    # The caller's frame first, then the coroutine's own frames from the loop thread.
    assert names[0] == "test_errors_keep_their_class_and_the_callers_frames"
    assert ("get_installation", "client.py") in frames
    assert frames.index(("get_installation", "client.py")) < len(frames) - 1  # and its callees


def test_blocking_call_from_the_loop_thread_raises_a_clear_error(
    make_sync_client: Callable[..., ICRClient], installation_ids: list[str]
) -> None:
    holder: list[ICRClient] = []

    def hook(event: RequestEvent) -> None:
        if event.path.endswith(installation_ids[0]):
            holder[0].get_installation(installation_ids[1])

    client = make_sync_client(on_request=hook)
    holder.append(client)
    with pytest.raises(BlockingCallError, match="own event-loop thread") as info:
        client.get_installation(installation_ids[0])
    assert isinstance(info.value, RuntimeError)
    # The client still works afterwards.
    assert client.get_installation(installation_ids[2]).id == installation_ids[2]

    closing: list[BaseException] = []

    def close_hook(event: RequestEvent) -> None:
        try:
            holder[0].close()
        except BlockingCallError as exc:
            closing.append(exc)

    other = make_sync_client(on_request=close_hook)
    holder[0] = other
    other.get_installation(installation_ids[0])
    assert closing
    assert not other.closed


@pytest.mark.anyio
async def test_works_inside_a_running_event_loop(
    sync_client: ICRClient, installation_ids: list[str]
) -> None:
    asyncio.get_running_loop()  # a loop runs in this thread, as in Jupyter
    inst = sync_client.get_installation(installation_ids[0])
    assert inst.id == installation_ids[0]
    assert [i.id for i in sync_client.iter_installations(page_size=4)] == installation_ids
    assert isinstance(sync_client.installation(installation_ids[1]).get_token(), Token)


# -- threads ----------------------------------------------------------------------------------


def test_32_threads_share_one_client_and_mint_once_per_installation(
    sync_client: ICRClient, sync_emulator: ICREmulator, installation_ids: list[str]
) -> None:
    threads = 32
    calls = 40
    barrier = threading.Barrier(threads)

    def work(n: int) -> list[tuple[str, str]]:
        barrier.wait(timeout=30)  # all cold at the same moment: the single-flight mint is tested
        seen = []
        for i in range(calls):
            inst_id = installation_ids[(n + i) % len(installation_ids)]
            token = sync_client.installation(inst_id).get_token()
            seen.append((inst_id, token.installation_id or ""))
            if i % 4 == 0:
                got = sync_client.get_installation(inst_id)
                seen.append((inst_id, got.id))
        return seen

    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(work, range(threads)))
    for seen in results:
        for asked, answered in seen:
            assert asked == answered
    assert sum(len(s) for s in results) == threads * (calls + calls // 4)
    assert dict(sync_emulator.stats.mints) == dict.fromkeys(installation_ids, 1)
    assert sum(sync_client.stats.mints.values()) == len(installation_ids)


# -- fork -------------------------------------------------------------------------------------


def _session(client: ICRClient) -> object:
    """The client's aiohttp session (the default transport's), or None before the first call."""
    transport = client._core._transport
    assert isinstance(transport, AiohttpTransport)
    return transport._session


def _child(client: ICRClient, inst_id: str, conn: Connection) -> None:
    try:
        # The objects inherited from the parent (alive here, but their thread is not).
        loop_before = client._handle.loop
        session_before = _session(client)
        got = client.get_installation(inst_id)
        token = client.installation(inst_id).get_token()
        conn.send(
            {
                "id": got.id,
                "token": bool(token.token),
                "new_loop": client._handle.loop is not loop_before,
                "new_session": _session(client) is not session_before,
                "pid": os.getpid(),
            }
        )
        client.close()
    except BaseException as exc:
        conn.send({"error": repr(exc)})
        raise
    finally:
        conn.close()


def test_after_fork_the_child_starts_its_own_loop_and_session(
    sync_client: ICRClient, installation_ids: list[str]
) -> None:
    sync_client.get_installation(installation_ids[0])  # the parent's loop and session are live
    parent_thread = sync_client._handle.thread_id
    parent_session = _session(sync_client)
    report, exitcode, pid = fork_and_receive(_child, sync_client, installation_ids[1])
    assert report == {
        "id": installation_ids[1],
        "token": True,
        "new_loop": True,
        "new_session": True,
        "pid": pid,
    }
    assert exitcode == 0
    # The parent is untouched: same loop, same session, still working.
    assert sync_client.get_installation(installation_ids[2]).id == installation_ids[2]
    assert sync_client._handle.thread_id == parent_thread
    assert _session(sync_client) is parent_session


# -- Ctrl-C and exit ----------------------------------------------------------------------------


@pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(),
    reason="SIGINT goes to the main thread",
)
def test_ctrl_c_cancels_the_coroutine_and_raises_keyboard_interrupt(
    make_sync_client: Callable[..., ICRClient],
    sync_emulator: ICREmulator,
    installation_ids: list[str],
) -> None:
    waiting = threading.Event()
    cancelled = threading.Event()

    async def slow_sleep(delay: float) -> None:
        # The retry's backoff, stretched so the call is surely blocked when Ctrl-C comes.
        waiting.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    client = make_sync_client(sleep=slow_sleep)
    sync_emulator.faults.add(Fault(method="GET", path="/app/installations/*", status=503, times=1))
    # Ctrl-C as Python's default handler delivers it, but installed by the test itself (so
    # nothing else in this worker process can have left SIGINT ignored) and only while the
    # call runs: a signal sent again after it was handled is dropped, never stray.
    armed = threading.Event()
    armed.set()

    def on_sigint(signum: int, frame: object) -> None:
        if armed.is_set():
            raise KeyboardInterrupt

    def interrupt() -> None:
        if not waiting.wait(timeout=30):
            return
        # Sent again until the call is cancelled: one CI run on a loaded machine saw the
        # call sleep on after a single SIGINT.
        for _ in range(10):
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)
            if cancelled.wait(timeout=2):
                return

    previous = signal.signal(signal.SIGINT, on_sigint)
    timer = threading.Thread(target=interrupt, daemon=True)
    try:
        timer.start()
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            client.get_installation(installation_ids[0])
        armed.clear()
        elapsed = time.monotonic() - started
        timer.join(timeout=30)
    finally:
        armed.clear()
        # None: the handler was not installed from Python; Python's own default then.
        signal.signal(signal.SIGINT, signal.default_int_handler if previous is None else previous)
    assert not timer.is_alive()
    assert waiting.is_set()
    assert cancelled.wait(timeout=5)
    assert elapsed < 30  # long before the 60 s sleep would have ended
    # The client keeps working after the interrupt.
    assert client.get_installation(installation_ids[1]).id == installation_ids[1]


def test_ctrl_c_before_the_loop_took_the_call_closes_the_coroutine() -> None:
    # The cancel path for a coroutine the loop never started: closed, never "never awaited".
    async def never() -> None:
        raise AssertionError("must not run")

    call = _background._Call(never())
    call.cancel()
    assert call.coro is None
    assert call.done.acquire(timeout=1)


EXIT_SCRIPT = textwrap.dedent(
    """
    import sys
    import threading
    from icr_async import ICRClient, ICRError

    url, app_id, key_path, inst_id = sys.argv[1:5]
    client = ICRClient(app_id, private_key_path=key_path, base_url=url, env=False)
    scoped = client.installation(inst_id)
    print(client.get_installation(inst_id).id, scoped.get_token().installation_id)
    it = client.iter_installations(page_size=2)
    print(next(it).id)
    errors = []

    def hammer():
        # Daemon threads still calling when the interpreter exits: their calls end with an
        # ICRError once the client is closed at exit, nothing hangs.
        try:
            while True:
                client.get_installation(inst_id)
        except ICRError as exc:
            errors.append(exc)

    for _ in range(4):
        threading.Thread(target=hammer, daemon=True).start()
    # Exit with the client open and the iterator half-read: no hang, no warning.
    """
)


def test_interpreter_exit_with_an_open_client_is_clean(
    sync_server: EmulatorServer,
    sync_app_id: str,
    private_key_pem: str,
    installation_ids: list[str],
    tmp_path: Any,
) -> None:
    key = tmp_path / "key.pem"
    key.write_text(private_key_pem)
    script = tmp_path / "script.py"
    script.write_text(EXIT_SCRIPT)
    env = {**os.environ, "PYTHONASYNCIODEBUG": "1", "PYTHONDEVMODE": "1"}
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-X",
            "dev",
            "-W",
            "error",
            str(script),
            sync_server.url,
            sync_app_id,
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
    assert done.stdout.split() == [installation_ids[0], installation_ids[0], installation_ids[0]]
    assert time.monotonic() - started < 60


def test_the_package_imports_where_there_is_no_fork() -> None:
    """Windows has neither ``os.fork`` nor ``os.register_at_fork``: importing the package (and
    the blocking client) there must work; every after-fork action goes through ``_fork``."""
    code = textwrap.dedent(
        """
        import os
        del os.register_at_fork
        del os.fork  # as on Windows (the standard library checks for fork itself)
        import icr_async, icr_async.sync
        from icr_async import _fork
        assert _fork.generation == 0
        print("imported")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "imported"


# -- an AsyncICRClient and the loops it meets ------------------------------------------------


def test_an_async_client_serves_its_own_loop_and_refuses_a_foreign_one(
    sync_server: EmulatorServer,
    sync_app_id: str,
    app_private_key: PrivateKey,
    installation_ids: list[str],
) -> None:
    # The transport checks the loop of every call by the thread it runs in (no
    # asyncio.get_running_loop() per request): the cases that check must tell apart.
    client = AsyncICRClient(sync_app_id, app_private_key, base_url=sync_server.url, env=False)
    first, second = installation_ids[:2]
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        # The loop of the first call owns the client; its later calls go straight through.
        for inst in (first, second, first):
            call = asyncio.run_coroutine_threadsafe(client.get_installation(inst), loop)
            assert call.result(timeout=30).id == inst
        # While it runs, a call from another thread's loop is refused, clearly, and sends
        # nothing.
        with pytest.raises(ICRError, match="bound to another event loop"):
            asyncio.run(client.get_installation(first))
        call = asyncio.run_coroutine_threadsafe(client.get_installation(second), loop)
        assert call.result(timeout=30).id == second  # the owner is unaffected
        asyncio.run_coroutine_threadsafe(client.aclose(), loop).result(timeout=30)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()
    assert not thread.is_alive()
