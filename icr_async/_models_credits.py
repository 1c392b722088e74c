"""Organization, inventory, warehouse and project models (re-exported by ``models``).

Field names follow ICR exactly (shared/docs/icr-api.md, "Objects": ICR's docs and the types
its own demo app reads in production), turned into snake_case: ``tokenId`` is ``token_id``,
``reservedToDate`` is ``reserved_to_date``. Decoding stays tolerant because ICR adds fields
without notice and its docs mark few as optional: only an object's ``id`` is required, every
other field is ``None`` when missing, unknown keys land in ``extra``, and values that look
like enums (``type``, ``state``, ``action``) are kept as plain strings and compared against
the str-enums below, so a value ICR adds tomorrow never breaks decoding. Amounts stay the
JSON numbers ICR sends.
"""

from __future__ import annotations

import datetime
import enum
from collections.abc import Mapping
from typing import Any

import attrs

__all__ = [
    "Address",
    "Credit",
    "CreditAction",
    "CreditRequest",
    "CreditType",
    "Inventory",
    "Project",
    "ProjectRef",
    "Reservation",
    "ReservationAction",
    "Reserver",
    "Retirement",
    "RetirementData",
    "WarehouseCredit",
    "WarehouseInventory",
]


class CreditAction(str, enum.Enum):
    """What ``POST /organizations/{id}/inventory/requests/{action}`` does with credits.

    Also the values of :attr:`CreditRequest.action`.
    """

    TRANSFER = "transfer"
    RETIRE = "retire"
    TRANSFER_RETIRE = "transfer_retire"
    CANCEL = "cancel"


class ReservationAction(str, enum.Enum):
    """How a warehouse reservation is finished (``POST .../reservations/{id}/{action}``)."""

    TRANSFER = "transfer"
    RETIRE = "retire"
    TRANSFER_RETIRE = "transfer_retire"


class CreditType(str, enum.Enum):
    """A credit's ``type``: issued before (``exAnte``) or after (``exPost``) verification.

    Compare :attr:`Credit.type` and kin with these; unknown types are kept as plain strings.
    """

    EX_ANTE = "exAnte"
    EX_POST = "exPost"


@attrs.frozen(kw_only=True)
class RetirementData:
    """Why and for whom credits are retired: the ``retirementData`` of a retire action.

    ``reason`` and ``beneficiary_name`` are required by ICR; ``comment`` is optional.
    """

    reason: str
    beneficiary_name: str
    comment: str | None = None
    extra: Mapping[str, Any] = attrs.field(factory=dict, repr=False, eq=False)


@attrs.frozen(kw_only=True)
class ProjectRef:
    """The ``project: {id, fullName}`` nested in credits, retirements, reservations and
    credit requests. A credit's project may also carry ``url``, ``public_url`` and ``num``
    (ICR's docs list them; ``num`` is kept as text whether it comes as a number or not)."""

    id: str
    full_name: str | None = None
    url: str | None = None
    public_url: str | None = None
    num: str | None = None
    extra: Mapping[str, Any] = attrs.field(factory=dict, repr=False, eq=False)


@attrs.frozen(kw_only=True)
class Reserver:
    """Who holds a reservation: ``id`` is the reserving app's id, ``name`` its name."""

    id: str
    name: str | None = None
    extra: Mapping[str, Any] = attrs.field(factory=dict, repr=False, eq=False)


@attrs.frozen(kw_only=True)
class Credit:
    """One credit holding in an organization's inventory (``GET .../inventory``).

    ``id`` names the credit (ICR's look like ``exPost-2-0x…``: type, token id, token
    contract); ``amount`` is what the organization holds, ``supply`` the credit's total
    supply. ``type`` compares with :class:`CreditType`.
    """

    id: str
    organization_id: str | None = None
    token_id: str | None = None
    token_address: str | None = None
    amount: float | None = None
    supply: float | None = None
    serialization: str | None = None
    type: str | None = None
    project: ProjectRef | None = None
    vintage: int | None = None
    unit: str | None = None
    extra: Mapping[str, Any] = attrs.field(factory=dict, repr=False, eq=False)


@attrs.frozen(kw_only=True)
class WarehouseCredit:
    """One credit in the organization's warehouse (``GET .../warehouse/inventory``): what
    can be reserved. ``id`` is the credit's id (the ``credit_id`` of a reservation),
    ``inventory_id`` the inventory entry it belongs to."""

    id: str
    inventory_id: str | None = None
    organization_id: str | None = None
    project: ProjectRef | None = None
    serialization: str | None = None
    amount: float | None = None
    type: str | None = None
    extra: Mapping[str, Any] = attrs.field(factory=dict, repr=False, eq=False)


@attrs.frozen(kw_only=True)
class Inventory:
    """``GET /organizations/{id}/inventory``: the organization's credits."""

    credits: tuple[Credit, ...] = ()
    organization_id: str | None = None
    extra: Mapping[str, Any] = attrs.field(factory=dict, repr=False, eq=False)

    def credit(self, credit_id: str) -> Credit | None:
        """The holding of ``credit_id``, or ``None`` when the organization has none."""
        return next((c for c in self.credits if c.id == credit_id), None)


@attrs.frozen(kw_only=True)
class WarehouseInventory:
    """``GET /organizations/{id}/warehouse/inventory``: the credits available to reserve.

    A class of its own (with :class:`WarehouseCredit` items, a different shape from the
    inventory's) so the two are never confused.
    """

    credits: tuple[WarehouseCredit, ...] = ()
    organization_id: str | None = None
    extra: Mapping[str, Any] = attrs.field(factory=dict, repr=False, eq=False)

    def credit(self, credit_id: str) -> WarehouseCredit | None:
        """The warehouse entry of ``credit_id``, or ``None`` when there is none."""
        return next((c for c in self.credits if c.id == credit_id), None)


@attrs.frozen(kw_only=True)
class CreditRequest:
    """A credit action (transfer, retire, transfer_retire, cancel) and its state.

    ``action`` is what was asked (compare with :class:`CreditAction`); ``type`` is the
    *credit's* type (compare with :class:`CreditType`). ``state`` is kept as sent: ICR's demo
    compares it with ``"Pending"`` and ``"Rejected"``; the emulator also uses ``"Completed"``
    for an executed action and ``"Failed"`` for an approved one whose credits were gone.
    ``tx_id`` is the transaction that moved the credits, ``None`` until there is one. The
    retirement's reason, comment and beneficiary come flattened (``retirement_reason``...).
    """

    id: str
    created_at: datetime.datetime | None = None
    updated_at: datetime.datetime | None = None
    token_id: str | None = None
    token_address: str | None = None
    credit_id: str | None = None
    serialization: str | None = None
    amount: float | None = None
    from_organization_id: str | None = None
    to_organization_id: str | None = None
    to_address: str | None = None
    project: ProjectRef | None = None
    tx_id: str | None = None
    state: str | None = None
    retirement_reason: str | None = None
    retirement_comment: str | None = None
    beneficiary_name: str | None = None
    action: str | None = None
    type: str | None = None
    extra: Mapping[str, Any] = attrs.field(factory=dict, repr=False, eq=False)

    @property
    def is_pending(self) -> bool:
        """Whether the request still waits for the organization's approval."""
        return (self.state or "").lower() == "pending"

    @property
    def is_rejected(self) -> bool:
        """Whether the organization declined the request."""
        return (self.state or "").lower() == "rejected"


@attrs.frozen(kw_only=True)
class Retirement:
    """A retirement of credits by (or for) the organization; its certificate is a PDF.

    ``beneficiary`` is the name the credits were retired for.
    """

    id: str
    reason: str | None = None
    comment: str | None = None
    beneficiary: str | None = None
    organization_id: str | None = None
    serialization: str | None = None
    amount: float | None = None
    project: ProjectRef | None = None
    extra: Mapping[str, Any] = attrs.field(factory=dict, repr=False, eq=False)


@attrs.frozen(kw_only=True)
class Address:
    """An address of the organization that credits can be transferred to (``toAddress``).

    ICR does not document this object's fields: these are the emulator's reading, and
    anything else ICR sends is kept in ``extra``.
    """

    id: str | None = None
    address: str | None = None
    name: str | None = None
    is_default: bool | None = None
    created_at: datetime.datetime | None = None
    extra: Mapping[str, Any] = attrs.field(factory=dict, repr=False, eq=False)


@attrs.frozen(kw_only=True)
class Reservation:
    """A warehouse reservation: ``amount`` of a credit held until ``reserved_to_date`` (ten
    minutes), then finished (transfer / retire / transfer_retire) or cancelled.

    ``is_complete`` turns true once a transaction finished it; ``reserver`` is the app that
    holds it. ``type`` is the credit's type (compare with :class:`CreditType`).
    """

    id: str
    amount: float | None = None
    created_at: datetime.datetime | None = None
    updated_at: datetime.datetime | None = None
    token_id: str | None = None
    token_address: str | None = None
    type: str | None = None
    reserved_to_date: datetime.datetime | None = None
    serialization: str | None = None
    is_complete: bool | None = None
    project: ProjectRef | None = None
    reserver: Reserver | None = None
    credit_id: str | None = None
    extra: Mapping[str, Any] = attrs.field(factory=dict, repr=False, eq=False)


@attrs.frozen(kw_only=True)
class Project:
    """A public project (``GET /projects``)."""

    id: str
    name: str | None = None
    short_description: str | None = None
    country: str | None = None
    methodology: str | None = None
    status: str | None = None
    vintage_start: int | None = None
    is_public: bool | None = None
    created_at: datetime.datetime | None = None
    updated_at: datetime.datetime | None = None
    extra: Mapping[str, Any] = attrs.field(factory=dict, repr=False, eq=False)
