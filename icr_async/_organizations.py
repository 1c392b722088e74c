"""Typed endpoints of the installation-scoped and app-token clients.

``OrganizationEndpoints`` (mixed into ``AsyncInstallationClient``) covers what an installation
token unlocks: the organization, its inventory and credit requests, and the warehouse with
its reservations. ``ProjectEndpoints`` (mixed into ``AsyncAppTokenClient``) lists public projects.

Nothing here speaks HTTP: every method builds a path (ids through ``path_param``) and a body,
then calls the ``_TokenScopedClient`` helpers, so tokens, retries, deadlines and errors work
exactly as for every other call. Methods that move credits are POSTs and are never retried
automatically; an optional ``idempotency_key`` guards against sending the same action twice,
through the client's ``IdempotencyStore`` (this process's memory by default, a fleet's Redis
with ``RedisIdempotencyStore``; see :meth:`OrganizationEndpoints.create_credit_action`).
"""

from __future__ import annotations

import decimal
import hashlib
import json
import math
from collections.abc import AsyncIterator
from typing import Any, Final, TypeVar

from ._converters import structure, unstructure
from ._idempotency import (
    ActionClaim,
    ActionRecord,
    ActionRegistry,
    action_outcome,
    duplicate_error,
    settle,
)
from ._sansio import check_page_args, path_param, read_pagination
from ._scoped import TokenScoped
from .errors import (
    InvalidArgumentError,
    ResponseDecodeError,
    UnreadableActionResultError,
)
from .models import (
    Address,
    CreditAction,
    CreditRequest,
    Installation,
    Inventory,
    Organization,
    Page,
    Project,
    Reservation,
    ReservationAction,
    Retirement,
    RetirementData,
    WarehouseInventory,
)

__all__ = ["ActionRegistry", "OrganizationEndpoints", "ProjectEndpoints"]

M = TypeVar("M")

_TRANSFERS: Final = frozenset({CreditAction.TRANSFER, CreditAction.TRANSFER_RETIRE})
_RETIRES: Final = frozenset({CreditAction.RETIRE, CreditAction.TRANSFER_RETIRE})
# A PDF starts with "%PDF-"; the spec lets a few junk bytes come first, so look a little in.
_PDF_MAGIC: Final = b"%PDF-"
_PDF_SNIFF: Final = 1024
# ICR's reservation paths: note the "inventory/" segment (there is no /warehouse/reservations).
_RESERVATIONS: Final = "/warehouse/inventory/reservations"
# How long a pending key outlives the call's own deadline before a worker that has not
# recorded an outcome is taken for dead (a deadline-less call gets the fallback).
_LEASE_MARGIN: Final = 60.0
_LEASE_FALLBACK: Final = 900.0


def _unreadable(cls: type[Any], path: str, exc: ResponseDecodeError) -> UnreadableActionResultError:
    return UnreadableActionResultError(
        f"the server accepted the action (HTTP 2xx) but its answer is not a readable "
        f"{cls.__name__} ({exc.message}); it has most likely been done, so do not send "
        "it again: check the organization's credit requests or reservations, or wait "
        "for the transaction webhook",
        status=exc.status,
        method="POST",
        path=path,
        field=exc.field,
    )


def _check_key(key: object) -> str:
    if not isinstance(key, str) or not key.strip() or len(key) > 500:
        raise InvalidArgumentError(
            "idempotency_key must be a non-empty string of at most 500 characters"
        )
    return key


def _amount(value: object) -> int | float:
    """A positive, finite amount as a JSON number (a ``Decimal`` becomes int or float)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, decimal.Decimal)):
        raise InvalidArgumentError(f"amount must be a positive number, got {value!r}")
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            raise InvalidArgumentError(f"amount must be a finite number, got {value!r}")
        value = int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidArgumentError(f"amount must be a finite number, got {value!r}")
    if value <= 0:
        raise InvalidArgumentError(f"amount must be positive, got {value!r}")
    return value


def _body_id(value: object, what: str) -> str:
    """An id that goes into a JSON body: a non-blank string (or an integer id)."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidArgumentError(f"{what} must be a string id, got {value!r}")
    text = str(value)
    if not text.strip() or any(c.isspace() for c in text) or len(text) > 500:
        raise InvalidArgumentError(f"{what} must be a non-blank id without spaces, got {text!r}")
    return text


def _retirement_body(data: object) -> dict[str, Any]:
    if not isinstance(data, RetirementData):
        raise InvalidArgumentError(
            f"retirement_data must be a RetirementData, got {type(data).__name__}"
        )
    for name in ("reason", "beneficiary_name"):
        value = getattr(data, name)
        if not isinstance(value, str) or not value.strip():
            raise InvalidArgumentError(f"retirement_data.{name} must not be empty")
    if data.comment is not None and not isinstance(data.comment, str):
        raise InvalidArgumentError("retirement_data.comment must be a string")
    body: dict[str, Any] = unstructure(data)
    return {k: v for k, v in body.items() if v is not None}


def _enum_value(value: object, allowed: type[CreditAction] | type[ReservationAction]) -> Any:
    try:
        return allowed(value)
    except ValueError:
        choices = ", ".join(repr(m.value) for m in allowed)
        raise InvalidArgumentError(f"action must be one of {choices}, got {value!r}") from None


def _fingerprint(*parts: Any) -> str:
    raw = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


class OrganizationEndpoints(TokenScoped):
    """The organization, inventory and warehouse endpoints of an installation token.

    Mixed into ``AsyncInstallationClient``: the organization is the installation's own (its id
    comes from the cached token). Reading needs the matching permission at any level;
    credit actions and reservations need ``WRITE`` (with ``REQUEST`` a credit action waits
    for the organization's approval as a pending credit request).
    """

    __slots__ = ("_organization_id", "installation_id")

    installation_id: str
    _organization_id: str | None

    async def organization_id(self) -> str:
        """The id of the organization this installation belongs to (from its token)."""
        # An installation never changes organization: learn it once, not on every typed call
        # (each would otherwise look up the token before the request looks it up again).
        if self._organization_id is not None:
            return self._organization_id
        token = await self.get_token()
        organization_id = token.organization_id
        if organization_id is None:
            core = self._core
            path = f"/app/installations/{path_param(self.installation_id)}"
            inst = await core.pipeline.model(Installation, core.build("GET", path), core.jwt_auth)
            if inst.organization is None:
                raise ResponseDecodeError(
                    "the installation has no organization id", field="organizationId"
                )
            organization_id = inst.organization.id
        self._organization_id = organization_id
        return organization_id

    async def _org_path(self, suffix: str = "") -> str:
        return (
            f"/organizations/{path_param(await self.organization_id(), 'organization_id')}{suffix}"
        )

    async def _list(self, cls: type[M], suffix: str, key: str) -> Page[M]:
        # Lists the docs do not describe as paginated: a bare list or an object holding one,
        # returned as a Page like every list_* (pagination None unless the server sent one).
        path = await self._org_path(suffix)
        data = await self._json("GET", path)
        items, pagination = read_pagination(data, key, method="GET", path=path)
        found = tuple(structure(item, cls, method="GET", path=path) for item in items)
        return Page(items=found, pagination=pagination, page=0, limit=len(found))

    async def _iter_org(
        self, cls: type[M], suffix: str, key: str, page_size: int
    ) -> AsyncIterator[M]:
        # An async generator so the organization id (maybe a token mint) is only fetched
        # once iteration starts; the caller's arguments were checked already.
        path = await self._org_path(suffix)
        pages = self._iterate(cls, path, key, page_size=page_size, start_page=0)
        try:
            async for item in pages:
                yield item
        finally:
            aclose = getattr(pages, "aclose", None)
            if aclose is not None:
                await aclose()

    async def _act(self, cls: type[M], path: str, body: dict[str, Any]) -> M:
        """POST an action that moves credits and read its answer as ``cls``.

        Only a 2xx reaches decoding, so a decode failure here means the server accepted the
        action: it becomes ``UnreadableActionResultError``, whose text says not to resend,
        instead of a plain decode error a caller might answer with a retry.
        """
        try:
            return await self._model(cls, "POST", path, json=body)
        except ResponseDecodeError as exc:
            raise _unreadable(cls, path, exc) from exc

    async def _keyed_act(
        self, cls: type[M], key: str | None, action: str, path: str, body: dict[str, Any]
    ) -> M:
        """Send an action once; with ``key``, under the client's idempotency store.

        Two store round trips: the claim before sending, the outcome after. A refused claim
        raises ``DuplicateActionError`` (with the recorded answer of the same action as its
        ``result``) or ``ActionOutcomeUnknownError``; nothing is sent then.
        """
        if key is None:
            return await self._act(cls, path, body)
        core = self._core
        store = core.idempotency
        total = core.total_timeout
        lease = _LEASE_FALLBACK if total is None else total + _LEASE_MARGIN
        got = await store.claim(
            core.app_scope,
            key,
            action=action,
            fingerprint=_fingerprint(self._auth.installation_id, path, body),
            lease=lease,
        )
        if isinstance(got, ActionRecord):
            result = None
            if got.same_action and got.state == "done" and got.result is not None:
                try:
                    result = structure(got.result, cls, method="POST", path=path)
                except ResponseDecodeError:
                    result = None
            raise duplicate_error(key, action, got, result)
        return await self._send_claimed(cls, got, path, body)

    async def _send_claimed(
        self, cls: type[M], claim: ActionClaim, path: str, body: dict[str, Any]
    ) -> M:
        store = self._core.idempotency
        try:
            data = await self._json("POST", path, json=body)
        except BaseException as exc:
            # Cancellation included: a task cancelled mid-request may have been acted on.
            outcome, status = action_outcome(exc, path)
            if isinstance(exc, ResponseDecodeError) and exc.status is not None:
                outcome, status = "done", None  # accepted (2xx) but not JSON
            await settle(store, claim, outcome, None, status)
            if isinstance(exc, ResponseDecodeError) and exc.status is not None:
                raise _unreadable(cls, path, exc) from exc
            raise
        await settle(store, claim, "done", data, None)
        try:
            return structure(data, cls, method="POST", path=path)
        except ResponseDecodeError as exc:
            raise _unreadable(cls, path, exc) from exc

    # -- organization ----------------------------------------------------------------

    async def get_organization(self) -> Organization:
        """``GET /organizations/{id}``: this installation's organization."""
        return await self._model(Organization, "GET", await self._org_path())

    async def list_addresses(self) -> Page[Address]:
        """``GET /organizations/{id}/addresses``: the organization's addresses."""
        return await self._list(Address, "/addresses", "addresses")

    async def list_retirements(self) -> Page[Retirement]:
        """``GET /organizations/{id}/retirements``: the organization's retirements.

        ICR answers ``{"retirements": [...]}`` (a bare list is accepted too); the items of
        that one answer are returned.
        """
        return await self._list(Retirement, "/retirements", "retirements")

    async def get_retirement_pdf(self, retirement_id: str | int) -> bytes:
        """``GET /organizations/{id}/retirements/{retirementId}/pdf``: the retirement
        certificate as PDF bytes.

        Raises ``ResponseDecodeError`` when the answer is not a PDF (an HTML error page from
        a proxy, say), so garbage is never saved as a certificate.
        """
        enc = path_param(retirement_id, "retirement_id")
        path = await self._org_path(f"/retirements/{enc}/pdf")
        resp = await self._send("GET", path)
        if _PDF_MAGIC not in resp.content[:_PDF_SNIFF]:
            raise ResponseDecodeError(
                f"expected a PDF document, got {len(resp.content)} bytes of "
                f"{resp.headers.get('Content-Type', 'unknown type')}",
                status=resp.status,
                method="GET",
                path=path,
            )
        return resp.content

    # -- inventory -------------------------------------------------------------------

    async def get_inventory(self) -> Inventory:
        """``GET /organizations/{id}/inventory``: the organization's credits."""
        return await self._model(Inventory, "GET", await self._org_path("/inventory"))

    async def list_credit_requests(self, *, limit: int = 10, page: int = 0) -> Page[CreditRequest]:
        """``GET /organizations/{id}/inventory/requests``: one page of credit requests.

        ``limit`` (1..1000) and ``page`` (>= 0) are checked before any request, so a bad
        one raises ``InvalidArgumentError`` without minting a token.
        """
        check_page_args(limit, page)
        path = await self._org_path("/inventory/requests")
        return await self._page(CreditRequest, path, "creditRequests", limit=limit, page=page)

    def iter_credit_requests(self, *, page_size: int = 100) -> AsyncIterator[CreditRequest]:
        """Every credit request, page by page (``async for r in inst.iter_credit_requests()``).

        Stops at the last page by any of the end signals ICR may send; raises
        ``PaginationError`` if the server repeats a page.
        """
        check_page_args(page_size, 0)
        return self._iter_org(CreditRequest, "/inventory/requests", "creditRequests", page_size)

    async def get_credit_request(self, request_id: str | int) -> CreditRequest:
        """``GET /organizations/{id}/inventory/requests/{requestId}``: one credit request."""
        enc = path_param(request_id, "request_id")
        return await self._model(
            CreditRequest, "GET", await self._org_path(f"/inventory/requests/{enc}")
        )

    async def create_credit_action(
        self,
        action: CreditAction | str,
        *,
        credit_id: str,
        amount: int | float | decimal.Decimal,
        to_organization_id: str | None = None,
        to_address: str | None = None,
        retirement_data: RetirementData | None = None,
        idempotency_key: str | None = None,
    ) -> CreditRequest:
        """``POST /organizations/{id}/inventory/requests/{action}``: move or retire credits.

        ``action`` is ``transfer``, ``retire``, ``transfer_retire`` or ``cancel``. Transfers
        (``transfer``, ``transfer_retire``) need exactly one of ``to_organization_id`` and
        ``to_address``; ``retire`` and ``transfer_retire`` need ``retirement_data``; a plain
        ``transfer`` refuses it. Every mistake raises ``InvalidArgumentError`` before any
        request. With ``WRITE`` permission the action is done at once; with ``REQUEST`` the
        answer is a pending credit request the organization must approve.

        **Never retried automatically**, whatever the retry policy: a repeated action moves
        credits twice. With ``idempotency_key`` the client's ``IdempotencyStore`` (this
        process's memory, or a fleet's Redis) also refuses, before any request, a second call
        with the same key: ``DuplicateActionError`` whose ``result`` is the earlier answer
        when it was the same action and it was done, or ``ActionOutcomeUnknownError`` when
        the earlier attempt may or may not have happened (its worker died mid-request, or it
        ended in a timeout, a cut connection or a 5xx). The key is recorded *before* sending
        and stays used when the call fails after the request left; only when the request
        certainly never left (no token, a paused scope) or the server answered 429 is it
        released. Check the credit requests, and only if the action certainly did not
        happen, call :meth:`forget_action` and try again.
        """
        act: CreditAction = _enum_value(action, CreditAction)
        if idempotency_key is not None:
            _check_key(idempotency_key)
        body: dict[str, Any] = {
            "creditId": _body_id(credit_id, "credit_id"),
            "amount": _amount(amount),
        }
        targets = [t for t in (to_organization_id, to_address) if t is not None]
        if len(targets) > 1:
            raise InvalidArgumentError("pass either to_organization_id or to_address, not both")
        if act in _TRANSFERS and not targets:
            raise InvalidArgumentError(
                f"a {act.value} needs a receiver: pass to_organization_id or to_address"
            )
        if to_organization_id is not None:
            body["toOrganizationId"] = _body_id(to_organization_id, "to_organization_id")
        if to_address is not None:
            body["toAddress"] = _body_id(to_address, "to_address")
        if act in _RETIRES and retirement_data is None:
            raise InvalidArgumentError(f"a {act.value} needs retirement_data")
        if act is CreditAction.TRANSFER and retirement_data is not None:
            raise InvalidArgumentError("a transfer takes no retirement_data (use transfer_retire)")
        if retirement_data is not None:
            body["retirementData"] = _retirement_body(retirement_data)
        path = await self._org_path(f"/inventory/requests/{act.value}")
        return await self._keyed_act(CreditRequest, idempotency_key, act.value, path, body)

    async def transfer_credits(
        self,
        *,
        credit_id: str,
        amount: int | float | decimal.Decimal,
        to_organization_id: str | None = None,
        to_address: str | None = None,
        idempotency_key: str | None = None,
    ) -> CreditRequest:
        """Transfer credits to another organization or address (see ``create_credit_action``)."""
        return await self.create_credit_action(
            CreditAction.TRANSFER,
            credit_id=credit_id,
            amount=amount,
            to_organization_id=to_organization_id,
            to_address=to_address,
            idempotency_key=idempotency_key,
        )

    async def retire_credits(
        self,
        *,
        credit_id: str,
        amount: int | float | decimal.Decimal,
        retirement_data: RetirementData,
        idempotency_key: str | None = None,
    ) -> CreditRequest:
        """Retire the organization's own credits (see ``create_credit_action``)."""
        return await self.create_credit_action(
            CreditAction.RETIRE,
            credit_id=credit_id,
            amount=amount,
            retirement_data=retirement_data,
            idempotency_key=idempotency_key,
        )

    async def transfer_and_retire_credits(
        self,
        *,
        credit_id: str,
        amount: int | float | decimal.Decimal,
        retirement_data: RetirementData,
        to_organization_id: str | None = None,
        to_address: str | None = None,
        idempotency_key: str | None = None,
    ) -> CreditRequest:
        """Transfer credits and retire them in the receiver's name (see
        ``create_credit_action``)."""
        return await self.create_credit_action(
            CreditAction.TRANSFER_RETIRE,
            credit_id=credit_id,
            amount=amount,
            to_organization_id=to_organization_id,
            to_address=to_address,
            retirement_data=retirement_data,
            idempotency_key=idempotency_key,
        )

    async def cancel_credits(
        self,
        *,
        credit_id: str,
        amount: int | float | decimal.Decimal,
        idempotency_key: str | None = None,
    ) -> CreditRequest:
        """Cancel credits: take them out of circulation without a retirement claim (the
        ``cancel`` credit action; see ``create_credit_action``)."""
        return await self.create_credit_action(
            CreditAction.CANCEL, credit_id=credit_id, amount=amount, idempotency_key=idempotency_key
        )

    async def forget_action(self, idempotency_key: str) -> bool:
        """Let ``idempotency_key`` be used again; ``True`` if the client's idempotency store
        (for a shared store: the whole fleet) remembered it.

        Only for a caller who knows the earlier action did not happen (the server answered
        4xx, or the credit requests show no trace of it): after a timeout or a 5xx it may
        well have been done.
        """
        key = _check_key(idempotency_key)
        return await self._core.idempotency.forget(self._core.app_scope, key)

    # -- warehouse -------------------------------------------------------------------

    async def get_warehouse_inventory(self) -> WarehouseInventory:
        """``GET /organizations/{id}/warehouse/inventory``: credits that can be reserved."""
        return await self._model(
            WarehouseInventory, "GET", await self._org_path("/warehouse/inventory")
        )

    async def list_reservations(self, *, limit: int = 10, page: int = 0) -> Page[Reservation]:
        """``GET /organizations/{id}/warehouse/inventory/reservations``: one page of
        reservations.

        A server that answers with a bare list is accepted (the page then has no
        ``pagination``). ``limit`` and ``page`` are checked before any request.
        """
        check_page_args(limit, page)
        path = await self._org_path(_RESERVATIONS)
        return await self._page(Reservation, path, "reservations", limit=limit, page=page)

    def iter_reservations(self, *, page_size: int = 100) -> AsyncIterator[Reservation]:
        """Every reservation, page by page."""
        check_page_args(page_size, 0)
        return self._iter_org(Reservation, _RESERVATIONS, "reservations", page_size)

    async def create_reservation(
        self,
        *,
        credit_id: str,
        amount: int | float | decimal.Decimal,
        organization_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> Reservation:
        """``POST /organizations/{id}/warehouse/inventory/reservations``: hold ``amount`` of a
        credit for ten minutes, to finish with :meth:`finish_reservation` or release with
        :meth:`cancel_reservation`.

        ``organization_id`` defaults to this installation's organization. Not retried
        automatically; ``idempotency_key`` works as in :meth:`create_credit_action`.
        """
        body: dict[str, Any] = {"creditId": _body_id(credit_id, "credit_id")}
        if organization_id is not None:
            _body_id(organization_id, "organization_id")
        value = _amount(amount)
        if idempotency_key is not None:
            _check_key(idempotency_key)
        owner = await self.organization_id() if organization_id is None else organization_id
        body["organizationId"] = str(owner)
        body["amount"] = value
        path = await self._org_path(_RESERVATIONS)
        return await self._keyed_act(Reservation, idempotency_key, "reserve", path, body)

    async def finish_reservation(
        self,
        reservation_id: str | int,
        action: ReservationAction | str,
        *,
        receiver_id: str,
        retirement_data: RetirementData | None = None,
        idempotency_key: str | None = None,
    ) -> Reservation:
        """``POST .../warehouse/inventory/reservations/{reservationId}/{action}``: finish a
        reservation by ``transfer``, ``retire`` or ``transfer_retire`` to ``receiver_id``
        (an organization id).

        ``retire`` and ``transfer_retire`` need ``retirement_data``. **Never retried
        automatically**; ``idempotency_key`` works as in :meth:`create_credit_action` (the
        key is spent even if the call fails).
        """
        enc = path_param(reservation_id, "reservation_id")
        act: ReservationAction = _enum_value(action, ReservationAction)
        body: dict[str, Any] = {"receiverId": _body_id(receiver_id, "receiver_id")}
        if idempotency_key is not None:
            _check_key(idempotency_key)
        if act is not ReservationAction.TRANSFER and retirement_data is None:
            raise InvalidArgumentError(f"a {act.value} needs retirement_data")
        if act is ReservationAction.TRANSFER and retirement_data is not None:
            raise InvalidArgumentError("a transfer takes no retirement_data (use transfer_retire)")
        if retirement_data is not None:
            body["retirementData"] = _retirement_body(retirement_data)
        path = await self._org_path(f"{_RESERVATIONS}/{enc}/{act.value}")
        return await self._keyed_act(Reservation, idempotency_key, act.value, path, body)

    async def cancel_reservation(self, reservation_id: str | int) -> Reservation | None:
        """``DELETE .../warehouse/inventory/reservations/{reservationId}``: release the held
        credits.

        Returns the reservation when the server sends it back (``None`` for a bare
        ``true``/empty answer). Not retried automatically.
        """
        enc = path_param(reservation_id, "reservation_id")
        path = await self._org_path(f"{_RESERVATIONS}/{enc}")
        data = await self._json("DELETE", path)
        if isinstance(data, dict):
            return structure(data, Reservation, method="DELETE", path=path)
        return None


class ProjectEndpoints(TokenScoped):
    """Public endpoints any token may call; mixed into ``AsyncAppTokenClient``."""

    __slots__ = ()

    async def list_projects(self, *, limit: int = 10, page: int = 0) -> Page[Project]:
        """``GET /projects``: one page of public projects."""
        return await self._page(Project, "/projects", "projects", limit=limit, page=page)

    def iter_projects(self, *, page_size: int = 100) -> AsyncIterator[Project]:
        """Every public project, page by page (``async for p in app.iter_projects()``)."""
        return self._iterate(Project, "/projects", "projects", page_size=page_size, start_page=0)
