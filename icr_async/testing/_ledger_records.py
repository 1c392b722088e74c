"""The ledger's records and how they are served: ICR's exact shapes (shared/docs/icr-api.md,
"Objects"), the request-body checks, and the retirement certificate PDF.

Every ``to_json`` emits exactly the fields ICR documents for the object, no more, so an app
written against ICR (its own demo reads these shapes in production) reads the emulator's
answers unchanged, and ``tests/test_contract.py`` can hold the emulator to that list.
"""

from __future__ import annotations

import decimal
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final

import attrs

from ._data import iso
from ._http import EmulatorHTTPError

__all__ = [
    "CreditMeta",
    "RequestRecord",
    "ReservationRecord",
    "RetirementRecord",
    "certificate_pdf",
    "num",
    "validate_credit_action",
    "validate_finish",
    "validate_reservation",
]

_MAX_AMOUNT: Final = Decimal(10) ** 12


def num(value: Decimal) -> int | float:
    """A ledger amount as a JSON number: an int when whole (ICR's demo reads numbers)."""
    return int(value) if value == value.to_integral_value() else float(value)


@attrs.define
class CreditMeta:
    """What the registry knows about one credit (a token of one project, type and vintage)."""

    credit_id: str
    token_id: str
    token_address: str
    type: str
    serialization: str
    supply: Decimal
    project: dict[str, Any]
    vintage: int
    unit: str = "tCO2e"

    def credit_json(self, organization_id: str, amount: Decimal) -> dict[str, Any]:
        """An inventory Credit: ``organizationId, id, tokenId, tokenAddress, amount, supply,
        serialization, type, project`` (demo) plus ``vintage, unit`` (docs)."""
        return {
            "organizationId": organization_id,
            "id": self.credit_id,
            "tokenId": self.token_id,
            "tokenAddress": self.token_address,
            "amount": num(amount),
            "supply": num(self.supply),
            "serialization": self.serialization,
            "type": self.type,
            "project": dict(self.project),
            "vintage": self.vintage,
            "unit": self.unit,
        }

    def warehouse_json(
        self, organization_id: str, inventory_id: str, amount: Decimal
    ) -> dict[str, Any]:
        """A WarehouseCredit: ``id, inventoryId, organizationId, project, serialization,
        amount, type`` (docs)."""
        return {
            "id": self.credit_id,
            "inventoryId": inventory_id,
            "organizationId": organization_id,
            "project": dict(self.project),
            "serialization": self.serialization,
            "amount": num(amount),
            "type": self.type,
        }


@attrs.define
class RetirementRecord:
    """One retirement; ``credit_id`` and ``created_at`` are kept for the certificate only
    (ICR's Retirement object carries neither)."""

    id: str
    organization_id: str
    credit_id: str
    amount: Decimal
    reason: str | None
    comment: str | None
    beneficiary: str | None
    created_at: str | None

    def to_json(self, meta: CreditMeta) -> dict[str, Any]:
        """``id, reason?, comment?, beneficiary?, organizationId, serialization, amount,
        project?``."""
        data: dict[str, Any] = {"id": self.id}
        for key, value in (
            ("reason", self.reason),
            ("comment", self.comment),
            ("beneficiary", self.beneficiary),
        ):
            if value is not None:
                data[key] = value
        data["organizationId"] = self.organization_id
        data["serialization"] = meta.serialization
        data["amount"] = num(self.amount)
        data["project"] = dict(meta.project)
        return data


@attrs.define
class RequestRecord:
    """A credit request. ``state``: ``Pending`` (awaiting approval), ``Completed``,
    ``Rejected`` or ``Failed`` (approved, but the credits were gone: ``failure_reason``).

    ``to_organization_id`` and ``to_address`` are what the app asked for; ``receiver`` is
    the served ``toOrganizationId``: the receiving organization (an address's owner), or the
    organization itself for a retire or cancel.
    """

    id: str
    action: str
    state: str
    organization_id: str
    installation_id: str | None
    credit_id: str
    amount: Decimal
    to_organization_id: str | None
    to_address: str | None
    receiver: str
    retirement_data: dict[str, Any] | None
    created_at: float
    updated_at: float
    failure_reason: str | None = None
    tx_id: str | None = None

    def to_json(self, meta: CreditMeta) -> dict[str, Any]:
        """ICR's CreditRequest: ``txId`` is ``null`` until a transaction moved the credits,
        and the retirement data comes flattened (``retirementReason``...)."""
        data: dict[str, Any] = {
            "id": self.id,
            "createdAt": iso(self.created_at),
            "updatedAt": iso(self.updated_at),
            "tokenId": meta.token_id,
            "tokenAddress": meta.token_address,
            "creditId": self.credit_id,
            "serialization": meta.serialization,
            "amount": num(self.amount),
            "fromOrganizationId": self.organization_id,
            "toOrganizationId": self.receiver,
        }
        if self.to_address is not None:
            data["toAddress"] = self.to_address
        data["project"] = dict(meta.project)
        data["txId"] = self.tx_id
        data["state"] = self.state
        retirement = self.retirement_data or {}
        for key, source in (
            ("retirementReason", "reason"),
            ("retirementComment", "comment"),
            ("beneficiaryName", "beneficiaryName"),
        ):
            if retirement.get(source) is not None:
                data[key] = retirement[source]
        data["action"] = self.action
        data["type"] = meta.type
        return data


@attrs.define
class ReservationRecord:
    """A warehouse reservation. ``status`` is the emulator's own bookkeeping (``active``,
    ``completed``, ``cancelled``, ``expired``); ICR shows only ``isComplete`` and
    ``reservedToDate``, and a cancelled reservation is no longer listed."""

    id: str
    credit_id: str
    organization_id: str
    amount: Decimal
    created_at: float
    expires_at: float
    reserver_id: str
    reserver_name: str | None
    status: str = "active"
    action: str | None = None
    receiver_id: str | None = None
    finished_at: float | None = None
    tx_id: str | None = None

    def to_json(self, meta: CreditMeta) -> dict[str, Any]:
        """ICR's Reservation: ``isComplete`` is true once a transaction finished it."""
        reserver: dict[str, Any] = {"id": self.reserver_id}
        if self.reserver_name is not None:
            reserver["name"] = self.reserver_name
        updated = self.created_at if self.finished_at is None else self.finished_at
        return {
            "id": self.id,
            "amount": num(self.amount),
            "createdAt": iso(self.created_at),
            "updatedAt": iso(updated),
            "tokenId": meta.token_id,
            "tokenAddress": meta.token_address,
            "type": meta.type,
            "reservedToDate": iso(self.expires_at),
            "serialization": meta.serialization,
            "isComplete": self.tx_id is not None,
            "project": dict(meta.project),
            "reserver": reserver,
            "creditId": self.credit_id,
        }


# ----------------------------------------------------------------------------- validation


def _string(body: Mapping[str, Any], name: str, errors: list[str]) -> str | None:
    value = body.get(name)
    if not isinstance(value, str) or not value.strip():
        errors.append(f"{name} must be a non-empty string")
        return None
    return value


def _amount(body: Mapping[str, Any], errors: list[str]) -> Decimal | None:
    value = body.get("amount")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        errors.append("amount must be a positive number")
        return None
    try:
        amount = Decimal(str(value))
    except decimal.InvalidOperation:
        amount = Decimal(0)
    if not amount.is_finite() or amount <= 0 or amount > _MAX_AMOUNT:
        errors.append("amount must be a positive number")
        return None
    return amount


def _retirement_data(
    body: Mapping[str, Any], errors: list[str], *, required: bool
) -> dict[str, Any] | None:
    data = body.get("retirementData")
    if data is None:
        if required:
            errors.append("retirementData must be an object")
        return None
    if not isinstance(data, dict):
        errors.append("retirementData must be an object")
        return None
    out: dict[str, Any] = {}
    for name in ("reason", "beneficiaryName"):
        value = data.get(name)
        if not isinstance(value, str) or not value.strip():
            errors.append(f"retirementData.{name} must be a non-empty string")
        else:
            out[name] = value
    comment = data.get("comment")
    if comment is not None:
        if not isinstance(comment, str):
            errors.append("retirementData.comment must be a string")
        else:
            out["comment"] = comment
    return out


def validate_credit_action(action: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """The checked body of ``POST .../inventory/requests/{action}``; 400 with
    class-validator style messages otherwise."""
    errors: list[str] = []
    out: dict[str, Any] = {
        "creditId": _string(body, "creditId", errors),
        "amount": _amount(body, errors),
    }
    targets = 0
    for name in ("toOrganizationId", "toAddress"):
        if body.get(name) is not None:
            targets += 1
            out[name] = _string(body, name, errors)
    if targets > 1:
        errors.append("only one of toOrganizationId and toAddress may be given")
    if action in ("transfer", "transfer_retire") and targets == 0:
        errors.append("toOrganizationId or toAddress must be given")
    retirement = _retirement_data(body, errors, required=action in ("retire", "transfer_retire"))
    if retirement is not None:
        out["retirementData"] = retirement
    if errors:
        raise EmulatorHTTPError(400, errors)
    return out


def validate_reservation(body: Mapping[str, Any]) -> tuple[str, str, Decimal]:
    """``(creditId, organizationId, amount)`` of a new reservation; 400 otherwise."""
    errors: list[str] = []
    credit_id = _string(body, "creditId", errors)
    owner = _string(body, "organizationId", errors)
    amount = _amount(body, errors)
    if errors or credit_id is None or owner is None or amount is None:
        raise EmulatorHTTPError(400, errors)
    return credit_id, owner, amount


def validate_finish(action: str, body: Mapping[str, Any]) -> tuple[str, dict[str, Any] | None]:
    """``(receiverId, retirementData)`` of a reservation's finish; 400 otherwise."""
    errors: list[str] = []
    receiver = _string(body, "receiverId", errors)
    retirement = _retirement_data(body, errors, required=action != "transfer")
    if errors or receiver is None:
        raise EmulatorHTTPError(400, errors)
    return receiver, retirement


# ---------------------------------------------------------------------------------- PDF


def _pdf_text(value: object) -> str:
    text = str(value).encode("latin-1", "replace").decode("latin-1")
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def certificate_pdf(retirement: Mapping[str, Any]) -> bytes:
    """A small, valid one-page PDF certificate for a served retirement (plus ``createdAt``)."""
    project = retirement.get("project")
    project_name = project.get("fullName") if isinstance(project, Mapping) else None
    lines = [
        "ICR emulator - retirement certificate",
        f"Retirement {retirement.get('id')}",
        f"{retirement.get('amount')} tCO2e, serialization {retirement.get('serialization')}",
        f"Project: {project_name}",
        f"Beneficiary: {retirement.get('beneficiary')}",
        f"Reason: {retirement.get('reason')}",
        f"Date: {retirement.get('createdAt')}",
    ]
    ops = ["BT", "/F1 12 Tf", "72 770 Td", "16 TL"]
    ops += [f"({_pdf_text(line)}) '" for line in lines]
    ops.append("ET")
    stream = "\n".join(ops).encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, obj in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + obj + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)
