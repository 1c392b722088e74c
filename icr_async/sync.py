"""The blocking client: ``ICRClient`` runs the async core's own coroutines on a background loop.

>>> with ICRClient(app_id, private_key_pem) as client:                  # doctest: +SKIP
...     for installation in client.iter_installations():
...         token = client.installation(installation.id).get_token()

Nothing here implements a request. Each public method of ``AsyncICRClient``,
``AsyncInstallationClient`` and ``AsyncAppTokenClient`` has a twin made by one typed line
(``get_installation: Final = _blocking(AsyncICRClient.get_installation)``, see ``_twins``):
the twin builds the very coroutine the async client would, runs it on the shared loop and
waits for its value. Thanks to ``ParamSpec`` mypy sees ``ICRClient.get_installation`` as
``(installation_id: str | int) -> Installation``; a parity test fails when an async method has
no twin or the signatures differ. ``Final`` (a class constant whose type is the declared
return type of ``_blocking``) is what makes pyright count the twin as declared rather than
inferred; the forwarded properties name their type (``_Forward[str]``), which mypy checks
against the async property.

The loop (``_background``)
    One event loop per process runs in a daemon thread, started on the first call of any
    blocking client and stopped when the last client that used it is closed; each client's
    aiohttp session is created inside that loop by the core's transport. It is a uvloop loop
    where ``uvloop`` is installed (the ``speedups`` extra), unless ``ICR_ASYNC_NO_UVLOOP=1``.

Where it works
    From any thread, including one that runs its own event loop (Jupyter, inside an
    ``async def``): the caller only blocks, it never needs a loop. From the background loop's
    own thread (a hook, a custom ``sleep`` or ``clock``) a blocking call would wait for itself:
    it raises ``BlockingCallError`` instead. In a child after ``fork`` the first call starts
    the child's own loop and session (the parent's sockets are never touched).

Failure and shutdown
    Errors are the async client's own exception objects, re-raised in the calling thread (the
    traceback shows the caller's frames and the coroutine's). Ctrl-C while waiting cancels the
    coroutine on the loop, waits briefly for it to unwind and raises ``KeyboardInterrupt``.
    ``close()`` is idempotent; a call after it raises ``ClientClosedError``. At interpreter exit
    open clients are closed and the loop stopped, so nothing hangs and aiohttp has nothing to
    warn about; a client dropped without ``close()`` is closed when it is garbage-collected.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any, Final, TypeVar

from ._background import Handle, finalize
from ._compat import deprecated_names
from ._twins import _blocking, _Bridge, _derived, _Forward, _iterating, _same_parameters
from .client import AsyncAppTokenClient, AsyncICRClient, AsyncInstallationClient, _TokenScopedClient

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

    from ._config import ClientConfig
    from ._signers import Signer
    from ._tokens import ClientStats

__all__ = ["AppTokenClient", "ICRClient", "InstallationClient"]

_Client = TypeVar("_Client", bound="ICRClient")


# -- the blocking classes -----------------------------------------------------------------


class _SyncTokenScopedClient(_Bridge):
    """What the blocking installation and app-token clients share."""

    __slots__ = ("_parent",)

    def __init__(self, parent: ICRClient, core: _TokenScopedClient) -> None:
        self._parent = parent
        self._core = core
        self._handle = parent._handle

    @property
    def parent(self) -> ICRClient:
        """The blocking app client this one derives from (it owns the connection pool)."""
        return self._parent

    def _app_client(self) -> ICRClient:
        return self._parent

    request: Final = _blocking(_TokenScopedClient.request)
    request_raw: Final = _blocking(_TokenScopedClient.request_raw)
    request_response: Final = _blocking(_TokenScopedClient.request_response)
    get_token: Final = _blocking(_TokenScopedClient.get_token)
    revoke: Final = _blocking(_TokenScopedClient.revoke)


class InstallationClient(_SyncTokenScopedClient):
    """The blocking twin of ``AsyncInstallationClient``: acts as one installation.

    Get one with ``ICRClient.installation(id)``; it shares the app client's loop, connection
    pool and token cache, so making many is cheap.
    """

    __slots__ = ()

    _core: AsyncInstallationClient

    def __init__(self, parent: ICRClient, core: AsyncInstallationClient) -> None:
        super().__init__(parent, core)

    @property
    def installation_id(self) -> str:
        """The installation this client acts as."""
        return self._core.installation_id

    organization_id: Final = _blocking(AsyncInstallationClient.organization_id)

    # -- the organization, its inventory and credit requests ----------------------------
    get_organization: Final = _blocking(AsyncInstallationClient.get_organization)
    list_addresses: Final = _blocking(AsyncInstallationClient.list_addresses)
    list_retirements: Final = _blocking(AsyncInstallationClient.list_retirements)
    get_retirement_pdf: Final = _blocking(AsyncInstallationClient.get_retirement_pdf)
    get_inventory: Final = _blocking(AsyncInstallationClient.get_inventory)
    list_credit_requests: Final = _blocking(AsyncInstallationClient.list_credit_requests)
    iter_credit_requests: Final = _iterating(AsyncInstallationClient.iter_credit_requests)
    get_credit_request: Final = _blocking(AsyncInstallationClient.get_credit_request)

    # -- credit actions (never retried automatically) -----------------------------------
    create_credit_action: Final = _blocking(AsyncInstallationClient.create_credit_action)
    transfer_credits: Final = _blocking(AsyncInstallationClient.transfer_credits)
    retire_credits: Final = _blocking(AsyncInstallationClient.retire_credits)
    transfer_and_retire_credits: Final = _blocking(
        AsyncInstallationClient.transfer_and_retire_credits
    )
    cancel_credits: Final = _blocking(AsyncInstallationClient.cancel_credits)
    forget_action: Final = _blocking(AsyncInstallationClient.forget_action)

    # -- the warehouse and its reservations ---------------------------------------------
    get_warehouse_inventory: Final = _blocking(AsyncInstallationClient.get_warehouse_inventory)
    list_reservations: Final = _blocking(AsyncInstallationClient.list_reservations)
    iter_reservations: Final = _iterating(AsyncInstallationClient.iter_reservations)
    create_reservation: Final = _blocking(AsyncInstallationClient.create_reservation)
    finish_reservation: Final = _blocking(AsyncInstallationClient.finish_reservation)
    cancel_reservation: Final = _blocking(AsyncInstallationClient.cancel_reservation)

    def __repr__(self) -> str:
        return (
            f"<InstallationClient installation_id={self.installation_id!r} "
            f"app_id={self._parent.app_id!r}>"
        )


class AppTokenClient(_SyncTokenScopedClient):
    """The blocking twin of ``AsyncAppTokenClient``: requests carry the cached app access token.

    Get one with ``ICRClient.app_token_client()``.
    """

    __slots__ = ()

    _core: AsyncAppTokenClient

    def __init__(self, parent: ICRClient, core: AsyncAppTokenClient) -> None:
        super().__init__(parent, core)

    list_projects: Final = _blocking(AsyncAppTokenClient.list_projects)
    iter_projects: Final = _iterating(AsyncAppTokenClient.iter_projects)

    def __repr__(self) -> str:
        return f"<AppTokenClient app_id={self._parent.app_id!r}>"


class ICRClient(_Bridge):
    """The ICR Apps API for one app, blocking: the twin of ``AsyncICRClient``.

    Takes exactly the arguments of ``AsyncICRClient`` (a configuration mistake raises
    ``ConfigurationError`` here, before any thread starts) and has the same methods, returning
    plain values; ``iter_*`` methods return lazy iterators. Use it as
    ``with ICRClient(app_id, private_key) as client:`` or call ``close()``.

    Safe to share between threads: all blocking clients of the process run their requests on
    one background event loop, and tokens are minted once per installation however many
    threads ask. Works inside Jupyter or an ``async def`` (it does not need the caller's
    loop), and in a child after ``os.fork()`` (the child gets its own loop and connections).
    """

    __slots__ = ("_finalizer",)

    _core: AsyncICRClient

    @_same_parameters(AsyncICRClient.__init__)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Build the async client now, in the caller's thread; it needs no loop until its
        first request, and its session is then created on the background loop."""
        core = AsyncICRClient(*args, **kwargs)
        self._core = core
        self._handle = handle = Handle(core)
        # Dropped without close(): close the session anyway (never blocking the collector).
        self._finalizer = weakref.finalize(self, finalize, handle)
        self._finalizer.atexit = False  # _background's atexit hook closes open clients in order

    # -- lifecycle ---------------------------------------------------------------------

    def _app_client(self) -> ICRClient:
        return self

    def __enter__(self: _Client) -> _Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool; the last blocking client closed stops the background
        loop. Idempotent; later calls raise ``ClientClosedError``."""
        self._handle.close()
        self._finalizer.detach()

    @property
    def closed(self) -> bool:
        """Whether the client has been closed."""
        return self._handle.closed

    @property
    def app_id(self) -> str:
        """The app's id."""
        return self._core.app_id

    @property
    def config(self) -> ClientConfig:
        """The frozen settings this client was built with."""
        return self._core.config

    @property
    def stats(self) -> ClientStats:
        """Counters about tokens and requests (shared with the async core)."""
        return self._core.stats

    key_fingerprint: _Forward[str] = _Forward(AsyncICRClient.key_fingerprint)
    signers: _Forward[tuple[Signer, ...]] = _Forward(AsyncICRClient.signers)
    base_url: _Forward[str] = _Forward(AsyncICRClient.base_url)
    jwt_signatures: _Forward[int] = _Forward(AsyncICRClient.jwt_signatures)
    clock_offset: _Forward[float] = _Forward(AsyncICRClient.clock_offset)

    def __repr__(self) -> str:
        return f"<ICRClient app_id={self.app_id!r} base_url={self.base_url!r}>"

    # -- app endpoints: one typed twin per async method ----------------------------------

    create_app_token: Final = _blocking(AsyncICRClient.create_app_token)
    create_installation_token: Final = _blocking(AsyncICRClient.create_installation_token)
    revoke_token: Final = _blocking(AsyncICRClient.revoke_token)
    list_installations: Final = _blocking(AsyncICRClient.list_installations)
    iter_installations: Final = _iterating(AsyncICRClient.iter_installations)
    get_installation: Final = _blocking(AsyncICRClient.get_installation)
    create_user_organization: Final = _blocking(AsyncICRClient.create_user_organization)
    request: Final = _blocking(AsyncICRClient.request)
    request_raw: Final = _blocking(AsyncICRClient.request_raw)
    request_response: Final = _blocking(AsyncICRClient.request_response)

    # -- derived clients ---------------------------------------------------------------

    installation: Final = _derived(AsyncICRClient.installation, InstallationClient)
    app_token_client: Final = _derived(AsyncICRClient.app_token_client, AppTokenClient)


__getattr__: Callable[[str], Any] = deprecated_names(
    "icr_async.sync",
    globals(),
    {"SyncInstallationClient": "InstallationClient", "SyncAppTokenClient": "AppTokenClient"},
)
