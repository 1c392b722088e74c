"""Signed webhook deliveries from the emulator to an app's loopback URL (``emulator.webhooks``).

Once :meth:`WebhookSender.configure` names a URL and a secret, the emulator POSTs events the
way ICR does (``icr_async.webhooks.sign_payload``: body with ``signedData``, header
``x-icr-signature-256``):

* ``installed`` when an installation is made (``add_installation`` or
  ``POST /app/create/user/organization``), ``uninstalled`` when one is removed;
* ``organizationTransaction`` when a credit action moves credits, ``warehouseTransaction``
  when a reservation is finished, once per installation of each organization involved.

Every event's ``sender`` is a user as ICR sends it (``{id, url, email, fullName,
profilePicture}``): the organization's admin, derived from the emulator's seed.

Deliveries never hold up the request that caused them: they are queued and sent in order by
one task on the emulator's event loop, each with a bounded timeout, and recorded in
:attr:`WebhookSender.deliveries`. ``await emulator.webhooks.drain()`` waits (bounded) until
the queue is empty, which is how a test knows its webhook handler has run. When the server
stops, the task is cancelled, undelivered events are marked, and the HTTP session closed.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import json
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import aiohttp
import attrs
from aiohttp import web

from icr_async.webhooks import sign_payload

from ._data import admin_user
from ._http import check_loopback
from ._records import InstallationRecord

__all__ = ["Delivery", "WebhookHost", "WebhookSender", "register_delivery"]

DEFAULT_TIMEOUT = 5.0
"""Seconds one delivery may take before it is recorded as failed."""


class WebhookHost(Protocol):
    """What the sender reads of the emulator that owns it (typed by use, so the emulator's
    module may import this one without this one importing it back)."""

    @property
    def seed(self) -> int: ...

    @property
    def base_url(self) -> str: ...

    def _installation_json(self, record: InstallationRecord, base: str) -> dict[str, Any]: ...


@attrs.define
class Delivery:
    """One webhook the emulator tried to deliver.

    ``status`` is the HTTP status the app answered (``None`` until sent, or when it could
    not be sent: then ``error`` says why). ``body`` and ``headers`` are exactly what was sent.
    """

    event: str
    installation_id: str | None
    url: str
    body: bytes = attrs.field(repr=False)
    headers: dict[str, str] = attrs.field(repr=False)
    status: int | None = None
    error: str | None = None
    done: bool = False

    @property
    def ok(self) -> bool:
        """Whether the app acknowledged the delivery with a 2xx status."""
        return self.status is not None and 200 <= self.status < 300

    @property
    def payload(self) -> dict[str, Any]:
        """The signed payload (the decoded ``signedData``) of this delivery."""
        outer = json.loads(self.body)
        decoded: dict[str, Any] = json.loads(base64.b64decode(outer["signedData"]))
        return decoded


class WebhookSender:
    """Delivers the emulator's webhook events (``emulator.webhooks``). Off until configured."""

    def __init__(
        self, emulator: WebhookHost, *, installations: Mapping[str, InstallationRecord]
    ) -> None:
        self._emulator = emulator
        self._installations = installations
        self.url: str | None = None
        self.secret: str | bytes | None = None
        self.app_id: str | None = None
        self.timeout: float = DEFAULT_TIMEOUT
        self.legacy_whole_body: bool = False
        self.deliveries: list[Delivery] = []
        """Every delivery attempted, in event order."""
        self._queue: collections.deque[Delivery] = collections.deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._worker: asyncio.Task[None] | None = None
        self._stopping = False
        self._session: aiohttp.ClientSession | None = None

    # ---------------------------------------------------------------------- settings

    def configure(
        self,
        url: str,
        secret: str | bytes | None,
        *,
        app_id: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        legacy_whole_body: bool = False,
    ) -> None:
        """Deliver events to ``url`` (http(s) on a loopback host only), signed with ``secret``.

        ``secret=None`` sends unsigned deliveries (an app without a webhook secret).
        ``app_id`` limits deliveries to one app's installations (default: every app).
        ``legacy_whole_body`` signs the whole body like the 2023 demo did.
        """
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"webhook URL must be http(s)://host:port/path, got {url!r}")
        check_loopback(parts.hostname)
        if secret is not None and not secret:
            raise ValueError("the webhook secret must not be empty (pass None for no secret)")
        if not timeout > 0:
            raise ValueError("timeout must be positive")
        self.url = url
        self.secret = secret
        self.app_id = app_id
        self.timeout = float(timeout)
        self.legacy_whole_body = legacy_whole_body

    def disable(self) -> None:
        """Stop delivering new events (queued ones are still sent)."""
        self.url = None

    @property
    def configured(self) -> bool:
        """Whether events are being delivered."""
        return self.url is not None

    # ------------------------------------------------------------------------ events

    def notify_installation(self, event: str, record: InstallationRecord) -> None:
        """Queue ``installed`` / ``uninstalled`` (or another installation event) for a record."""
        if self.url is None or (self.app_id is not None and record.app_id != self.app_id):
            return
        installation = self._emulator._installation_json(record, self._emulator.base_url)
        self._enqueue(
            {"event": event, "installation": installation, "sender": self._sender(installation)}
        )

    def notify_transaction(
        self, event: str, transaction: Mapping[str, Any], organization_ids: Iterable[str]
    ) -> None:
        """Queue a transaction event for every installation on the organizations involved."""
        if self.url is None:
            return
        wanted = set(organization_ids)
        for record in list(self._installations.values()):
            if record.organization_id not in wanted:
                continue
            if self.app_id is not None and record.app_id != self.app_id:
                continue
            installation = self._emulator._installation_json(record, self._emulator.base_url)
            self._enqueue(
                {
                    "event": event,
                    "installation": installation,
                    "sender": self._sender(installation),
                    "transaction": dict(transaction),
                }
            )

    def _sender(self, installation: Mapping[str, Any]) -> dict[str, Any]:
        # ICR's sender is the user who caused the event, {id, url, email, fullName,
        # profilePicture}; the emulator names the organization's (seeded) admin.
        organization = installation.get("organization")
        return admin_user(
            self._emulator.seed, organization if isinstance(organization, dict) else {}
        )

    def _enqueue(self, payload: dict[str, Any]) -> None:
        assert self.url is not None
        # Signed now: the delivery shows the state at the moment of the event.
        if self.secret is None:
            signed = base64.b64encode(json.dumps(payload, separators=(",", ":")).encode())
            body = json.dumps({**payload, "signedData": signed.decode("ascii")}).encode()
            headers = {"content-type": "application/json"}
        else:
            body, headers = sign_payload(
                payload, self.secret, legacy_whole_body=self.legacy_whole_body
            )
        installation = payload.get("installation") or {}
        delivery = Delivery(
            event=str(payload["event"]),
            installation_id=installation.get("id"),
            url=self.url,
            body=body,
            headers=headers,
        )
        self.deliveries.append(delivery)
        target = self._loop
        if target is None or target.is_closed():
            # Only a served emulator delivers: its cleanup is what closes the HTTP session.
            delivery.error = "the emulator is not being served: nothing to deliver from"
            delivery.done = True
            return
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is target:
            self._schedule(delivery)
        else:
            # Called from another thread (sync code driving an emulator served elsewhere).
            target.call_soon_threadsafe(self._schedule, delivery)

    def _schedule(self, delivery: Delivery) -> None:
        self._queue.append(delivery)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._run())

    # ---------------------------------------------------------------------- delivery

    async def _run(self) -> None:
        # One task delivers in order; it ends when the queue is empty (bounded by the queue).
        while self._queue:
            delivery = self._queue.popleft()
            await self._deliver(delivery)

    async def _deliver(self, delivery: Delivery) -> None:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        try:
            async with self._session.post(
                delivery.url,
                data=delivery.body,
                headers=delivery.headers,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                allow_redirects=False,
            ) as response:
                await response.read()
                delivery.status = response.status
        except asyncio.TimeoutError:
            delivery.error = f"no answer within {self.timeout:g} s"
        except aiohttp.ClientError as exc:
            delivery.error = f"{type(exc).__name__}: {exc}"
        except asyncio.CancelledError:
            delivery.error = "the emulator stopped while delivering it"
            raise
        except Exception as exc:
            # A cancel racing aiohttp's own timeout can surface as TimeoutError; while the
            # emulator stops, any failure is the stop's doing.
            if self._stopping:
                delivery.error = "the emulator stopped while delivering it"
            else:
                delivery.error = f"{type(exc).__name__}: {exc}"
        finally:
            delivery.done = True

    async def drain(self, timeout: float = 10.0) -> list[Delivery]:
        """Wait until every queued delivery is done (at most ``timeout`` seconds); return
        :attr:`deliveries`. Raises ``TimeoutError`` if the queue does not empty in time."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        # Each pass waits for the current worker; a handler may have queued more meanwhile.
        while self._worker is not None and not self._worker.done():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"webhook deliveries still pending after {timeout:g} s")
            await asyncio.wait_for(asyncio.shield(self._worker), remaining)
        return list(self.deliveries)

    async def aclose(self) -> None:
        """Cancel pending deliveries and close the HTTP session (the server is stopping)."""
        self._stopping = True
        worker, self._worker = self._worker, None
        if worker is not None and not worker.done():
            worker.cancel()
            # wait() neither raises the worker's CancelledError nor swallows our own.
            await asyncio.wait([worker])
        while self._queue:
            delivery = self._queue.popleft()
            delivery.error = "the emulator stopped before delivering it"
            delivery.done = True
        for delivery in self.deliveries:
            if not delivery.done:
                delivery.error = "the emulator stopped while delivering it"
                delivery.done = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()
        self._loop = None
        self._stopping = False  # the sender may serve again with the next server


def register_delivery(sender: WebhookSender, app: web.Application) -> None:
    """Tie ``sender``'s deliveries to the lifetime of an application serving its emulator."""

    async def on_startup(_app: web.Application) -> None:
        sender._loop = asyncio.get_running_loop()

    async def on_cleanup(_app: web.Application) -> None:
        await sender.aclose()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
