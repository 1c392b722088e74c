"""ICR's documented API, transcribed from shared/docs/icr-api.md: the one contract.

Written from the docs (ICR's API documentation and the types ICR's own demo app reads in
production), never from this SDK's models or its emulator: ``tests/test_contract.py`` holds
both of them to what is written here, so they can no longer drift away from ICR together.

* :data:`ENDPOINTS`: every documented method and path template, with the object its answer
  is documented to be (``None`` where the docs describe no body).
* :data:`OBJECTS`: per object, every documented field with its JSON type(s) and whether it
  may be missing (a ``?`` in the docs). An object marked ``open`` is documented with a
  trailing "..." (more fields exist); every other object has exactly these fields.

Where the docs leave a detail open, the entry says "inferred" and why.
"""

from __future__ import annotations

import re
from typing import Final, NamedTuple

__all__ = [
    "CREDIT_ACTIONS",
    "ENDPOINTS",
    "OBJECTS",
    "ORGANIZATION_ENDPOINTS",
    "RESERVATION_ACTIONS",
    "Endpoint",
    "Field",
    "ObjectSpec",
    "json_type",
    "match_endpoint",
    "shape_problems",
]

# JSON types. DATETIME is a string holding an ISO-8601 date-time ("every date an ISO-8601
# string"); NUMBER is a JSON number, never a numeric string ("ICR's demo reads numbers as
# numbers").
STRING: Final = "string"
NUMBER: Final = "number"
BOOLEAN: Final = "boolean"
DATETIME: Final = "datetime"
OBJECT: Final = "object"
ARRAY: Final = "array"
NULL: Final = "null"


class Field(NamedTuple):
    """One documented field: its JSON types, whether it may be missing (``?``), and for an
    object or an array of objects, the name of that object in :data:`OBJECTS`."""

    types: tuple[str, ...]
    required: bool = True
    of: str | None = None


class ObjectSpec(NamedTuple):
    """A documented object: its fields, and whether more undocumented fields may come."""

    fields: dict[str, Field]
    open: bool = False


def _f(*types: str, of: str | None = None) -> Field:
    return Field(types, True, of)


def _opt(*types: str, of: str | None = None) -> Field:
    return Field(types, False, of)


OBJECTS: Final[dict[str, ObjectSpec]] = {
    # --- app endpoints -----------------------------------------------------------------
    # Access token object (docs).
    "AccessToken": ObjectSpec(
        {
            "id": _f(STRING),
            "createdAt": _f(DATETIME),
            "updatedAt": _f(DATETIME),
            "expiresAt": _f(DATETIME),
            "token": _f(STRING),
            "isActive": _f(BOOLEAN),
            "permissions": _f(OBJECT),
            "appId": _f(STRING),
        }
    ),
    # "installation tokens add installationId and organizationId" (docs).
    "InstallationAccessToken": ObjectSpec(
        {
            "id": _f(STRING),
            "createdAt": _f(DATETIME),
            "updatedAt": _f(DATETIME),
            "expiresAt": _f(DATETIME),
            "token": _f(STRING),
            "isActive": _f(BOOLEAN),
            "permissions": _f(OBJECT),
            "appId": _f(STRING),
            "installationId": _f(STRING),
            "organizationId": _f(STRING),
        }
    ),
    # Installation object (docs webhook payload, demo).
    "Installation": ObjectSpec(
        {
            "id": _f(STRING),
            "createdAt": _f(DATETIME),
            "updatedAt": _f(DATETIME),
            "permissions": _f(OBJECT),
            "appNameId": _f(STRING),
            "appId": _f(STRING),
            "accessTokensUrl": _f(STRING),
            "organization": _f(OBJECT, of="Organization"),
        }
    ),
    # "in real data {id, fullName, countryCode, type, isPublic, createdAt, updatedAt, url,
    # logo, website, city, zip, physicalAddress, registrationNumber, organizationIndustries,
    # ...}": the trailing "..." makes it open. Which of these may be null is not written;
    # the docs show them all, so they are taken as present.
    "Organization": ObjectSpec(
        {
            "id": _f(STRING),
            "fullName": _f(STRING),
            "countryCode": _f(STRING, NULL),
            "type": _f(STRING),
            "isPublic": _f(BOOLEAN),
            "createdAt": _f(DATETIME),
            "updatedAt": _f(DATETIME),
            "url": _f(STRING, NULL),
            "logo": _f(STRING, NULL),
            "website": _f(STRING, NULL),
            "city": _f(STRING, NULL),
            "zip": _f(STRING, NULL),
            "physicalAddress": _f(STRING, NULL),
            "registrationNumber": _f(STRING, NULL),
            "organizationIndustries": _f(ARRAY),
        },
        open=True,
    ),
    # Pagination (docs): nextPage/prevPage may be null or absent at the ends (unknown).
    "Pagination": ObjectSpec(
        {
            "total": _f(NUMBER),
            "currentPage": _f(NUMBER),
            "pageCount": _f(NUMBER),
            "nextPage": _opt(NUMBER, NULL),
            "prevPage": _opt(NUMBER, NULL),
        }
    ),
    "InstallationPage": ObjectSpec(
        {
            "pagination": _f(OBJECT, of="Pagination"),
            "installations": _f(ARRAY, of="Installation"),
        }
    ),
    # "contains at least {installation: {id}}" (demo): open.
    "CreatedOrganization": ObjectSpec(
        {"installation": _f(OBJECT, of="Installation")},
        open=True,
    ),
    # --- installation-token endpoints (demo types, src/utils/icrTypes.ts; docs) ----------
    # project: {id, fullName} as nested in retirements, reservations and credit requests.
    "ProjectRef": ObjectSpec({"id": _f(STRING), "fullName": _f(STRING)}),
    # A Credit's project: "the docs add ... more project fields (url, publicUrl, num)".
    # Their types are not written: inferred strings, num a string or a number.
    "CreditProject": ObjectSpec(
        {
            "id": _f(STRING),
            "fullName": _f(STRING),
            "url": _opt(STRING),
            "publicUrl": _opt(STRING),
            "num": _opt(STRING, NUMBER),
        }
    ),
    # Credit: organizationId, id, tokenId, tokenAddress, amount, supply, serialization,
    # type, project {id, fullName} (demo); the docs add vintage, unit.
    "Credit": ObjectSpec(
        {
            "organizationId": _f(STRING),
            "id": _f(STRING),
            "tokenId": _f(STRING),
            "tokenAddress": _f(STRING),
            "amount": _f(NUMBER),
            "supply": _f(NUMBER),
            "serialization": _f(STRING),
            "type": _f(STRING),
            "project": _f(OBJECT, of="CreditProject"),
            "vintage": _f(NUMBER),
            "unit": _f(STRING),
        }
    ),
    # WarehouseCredit (docs): id, inventoryId, organizationId, project, serialization,
    # amount, type.
    "WarehouseCredit": ObjectSpec(
        {
            "id": _f(STRING),
            "inventoryId": _f(STRING),
            "organizationId": _f(STRING),
            "project": _f(OBJECT, of="ProjectRef"),
            "serialization": _f(STRING),
            "amount": _f(NUMBER),
            "type": _f(STRING),
        }
    ),
    # GET .../inventory: {"credits": [Credit], "organizationId"}.
    "Inventory": ObjectSpec(
        {"credits": _f(ARRAY, of="Credit"), "organizationId": _f(STRING)},
    ),
    # GET .../warehouse/inventory: {"credits": [WarehouseCredit], "organizationId"}.
    "WarehouseInventory": ObjectSpec(
        {"credits": _f(ARRAY, of="WarehouseCredit"), "organizationId": _f(STRING)},
    ),
    # Retirement: id, reason?, comment?, beneficiary?, organizationId, serialization,
    # amount, project?: {id, fullName}.
    "Retirement": ObjectSpec(
        {
            "id": _f(STRING),
            "reason": _opt(STRING),
            "comment": _opt(STRING),
            "beneficiary": _opt(STRING),
            "organizationId": _f(STRING),
            "serialization": _f(STRING),
            "amount": _f(NUMBER),
            "project": _opt(OBJECT, of="ProjectRef"),
        }
    ),
    # GET .../retirements: {"retirements": [Retirement]}, may also carry pagination.
    "RetirementList": ObjectSpec(
        {
            "retirements": _f(ARRAY, of="Retirement"),
            "pagination": _opt(OBJECT, of="Pagination"),
        }
    ),
    # reserver: {id (the app id), name?}; the demo types name as "string | undefined".
    "Reserver": ObjectSpec({"id": _f(STRING), "name": _opt(STRING)}),
    # Reservation: id, amount, createdAt, updatedAt, tokenId, tokenAddress, type,
    # reservedToDate, serialization, isComplete, project, reserver, creditId.
    "Reservation": ObjectSpec(
        {
            "id": _f(STRING),
            "amount": _f(NUMBER),
            "createdAt": _f(DATETIME),
            "updatedAt": _f(DATETIME),
            "tokenId": _f(STRING),
            "tokenAddress": _f(STRING),
            "type": _f(STRING),
            "reservedToDate": _f(DATETIME),
            "serialization": _f(STRING),
            "isComplete": _f(BOOLEAN),
            "project": _f(OBJECT, of="ProjectRef"),
            "reserver": _f(OBJECT, of="Reserver"),
            "creditId": _f(STRING),
        }
    ),
    # GET .../warehouse/inventory/reservations: {"reservations": [Reservation]}, "described
    # as paginated" (so pagination may come).
    "ReservationList": ObjectSpec(
        {
            "reservations": _f(ARRAY, of="Reservation"),
            "pagination": _opt(OBJECT, of="Pagination"),
        }
    ),
    # CreditRequest: id, createdAt, updatedAt, tokenId, tokenAddress, creditId,
    # serialization, amount, fromOrganizationId, toOrganizationId, toAddress?, project,
    # txId, state, retirementReason?, retirementComment?, beneficiaryName?, action, type.
    # txId may be null: inferred, as a Reservation's isComplete is "!!item.txId" in the
    # demo, and a pending request has no transaction yet. retirementComment is typed
    # "string | null" in the demo.
    "CreditRequest": ObjectSpec(
        {
            "id": _f(STRING),
            "createdAt": _f(DATETIME),
            "updatedAt": _f(DATETIME),
            "tokenId": _f(STRING),
            "tokenAddress": _f(STRING),
            "creditId": _f(STRING),
            "serialization": _f(STRING),
            "amount": _f(NUMBER),
            "fromOrganizationId": _f(STRING),
            "toOrganizationId": _f(STRING),
            "toAddress": _opt(STRING),
            "project": _f(OBJECT, of="ProjectRef"),
            "txId": _f(STRING, NULL),
            "state": _f(STRING),
            "retirementReason": _opt(STRING),
            "retirementComment": _opt(STRING, NULL),
            "beneficiaryName": _opt(STRING),
            "action": _f(STRING),
            "type": _f(STRING),
        }
    ),
    # GET .../inventory/requests: {"pagination": {...}, "creditRequests": [CreditRequest]}.
    "CreditRequestPage": ObjectSpec(
        {
            "pagination": _f(OBJECT, of="Pagination"),
            "creditRequests": _f(ARRAY, of="CreditRequest"),
        }
    ),
    # Webhooks: sender is "{id, url, email, fullName, profilePicture} in ICR's example
    # delivery". Which may be null is not written (a user without a picture): inferred.
    "User": ObjectSpec(
        {
            "id": _f(STRING),
            "url": _f(STRING, NULL),
            "email": _f(STRING),
            "fullName": _f(STRING, NULL),
            "profilePicture": _f(STRING, NULL),
        }
    ),
}

CREDIT_ACTIONS: Final = ("transfer", "retire", "transfer_retire", "cancel")
"""``POST /organizations/{org}/inventory/requests/{action}``."""

RESERVATION_ACTIONS: Final = ("transfer", "retire", "transfer_retire")
"""``POST /organizations/{org}/warehouse/inventory/reservations/{reservationId}/{action}``."""

PDF: Final = "application/pdf"
BOOLEAN_BODY: Final = "boolean"


class Endpoint(NamedTuple):
    """A documented endpoint: method, path template (``{name}`` for a path parameter) and
    what the answer is documented to be: an object of :data:`OBJECTS`, :data:`PDF`,
    :data:`BOOLEAN_BODY`, or ``None`` where the docs describe no body."""

    method: str
    template: str
    response: str | None
    actions: tuple[str, ...] = ()
    """The values ``{action}`` may take, for templates that have one."""


_ORG: Final = "/organizations/{org}"
_RESERVATIONS: Final = _ORG + "/warehouse/inventory/reservations"

ENDPOINTS: Final[tuple[Endpoint, ...]] = (
    Endpoint("POST", "/app/accessTokens", "AccessToken"),
    Endpoint("POST", "/app/installations/{installationId}/accessTokens", "InstallationAccessToken"),
    Endpoint("DELETE", "/app/installations/token", BOOLEAN_BODY),
    Endpoint("GET", "/app/installations", "InstallationPage"),
    Endpoint("GET", "/app/installations/{installationId}", "Installation"),
    Endpoint("POST", "/app/create/user/organization", "CreatedOrganization"),
    Endpoint("GET", _ORG, "Organization"),
    # "the organization's addresses": no shape documented.
    Endpoint("GET", _ORG + "/addresses", None),
    Endpoint("GET", _ORG + "/retirements", "RetirementList"),
    Endpoint("GET", _ORG + "/retirements/{retirementId}/pdf", PDF),
    Endpoint("GET", _ORG + "/inventory", "Inventory"),
    Endpoint("GET", _ORG + "/inventory/requests", "CreditRequestPage"),
    Endpoint("GET", _ORG + "/inventory/requests/{requestId}", "CreditRequest"),
    # "queued": no body documented.
    Endpoint("POST", _ORG + "/inventory/requests/{action}", None, CREDIT_ACTIONS),
    Endpoint("GET", _ORG + "/warehouse/inventory", "WarehouseInventory"),
    Endpoint("GET", _RESERVATIONS, "ReservationList"),
    Endpoint("POST", _RESERVATIONS, "Reservation"),
    # "finishes the reservation" / "cancels it": no body documented.
    Endpoint("POST", _RESERVATIONS + "/{reservationId}/{action}", None, RESERVATION_ACTIONS),
    Endpoint("DELETE", _RESERVATIONS + "/{reservationId}", None),
    # "public projects of verified organizations, paginated": no project shape documented.
    Endpoint("GET", "/projects", None),
)

ORGANIZATION_ENDPOINTS: Final = tuple(e for e in ENDPOINTS if e.template.startswith(_ORG))
"""The endpoints an installation token unlocks for its organization."""


def _pattern(endpoint: Endpoint) -> re.Pattern[str]:
    parts = re.split(r"(\{[^}]+\})", endpoint.template)
    regex = ""
    for part in parts:
        if part == "{action}":
            regex += "(?:" + "|".join(map(re.escape, endpoint.actions)) + ")"
        elif part.startswith("{"):
            regex += "[^/]+"
        else:
            regex += re.escape(part)
    return re.compile(regex)


_PATTERNS: Final = tuple((endpoint, _pattern(endpoint)) for endpoint in ENDPOINTS)


def match_endpoint(method: str, path: str) -> Endpoint | None:
    """The documented endpoint a concrete request (no query string) is a call of, if any.

    A literal segment wins over a parameter (``/app/installations/token`` is the revoke,
    not an installation called "token").
    """
    found = [e for e, pattern in _PATTERNS if e.method == method and pattern.fullmatch(path)]
    if not found:
        return None
    return min(found, key=lambda e: e.template.count("{"))


# ------------------------------------------------------------------------------ checking


def json_type(value: object) -> str:
    """The JSON type of a decoded value (``bool`` is a boolean, never a number)."""
    if value is None:
        return NULL
    if isinstance(value, bool):
        return BOOLEAN
    if isinstance(value, (int, float)):
        return NUMBER
    if isinstance(value, str):
        return STRING
    if isinstance(value, list):
        return ARRAY
    if isinstance(value, dict):
        return OBJECT
    return type(value).__name__


_ISO_RE: Final = re.compile(
    r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)", re.IGNORECASE
)


def _value_problems(field: Field, value: object, where: str) -> list[str]:
    kind = json_type(value)
    allowed = {STRING if t == DATETIME else t for t in field.types}
    if kind not in allowed:
        return [f"{where}: {kind}, documented as {' or '.join(field.types)}"]
    problems: list[str] = []
    if kind == STRING and DATETIME in field.types and STRING not in field.types:
        assert isinstance(value, str)
        if not _ISO_RE.fullmatch(value):
            problems.append(f"{where}: {value!r} is not an ISO-8601 date-time")
    if field.of is not None and kind == OBJECT:
        problems += shape_problems(field.of, value, where)
    if field.of is not None and kind == ARRAY:
        assert isinstance(value, list)
        for index, item in enumerate(value):
            problems += shape_problems(field.of, item, f"{where}[{index}]")
    return problems


def shape_problems(name: str, value: object, where: str = "$") -> list[str]:
    """Every way ``value`` differs from the documented object ``name`` (empty if none): a
    missing required field, a wrong JSON type, or a field the docs do not list."""
    spec = OBJECTS[name]
    if not isinstance(value, dict):
        return [f"{where}: {json_type(value)}, documented as a {name} object"]
    problems: list[str] = []
    for key, field in spec.fields.items():
        if key not in value:
            if field.required:
                problems.append(f"{where}.{key}: missing (required in {name})")
            continue
        problems += _value_problems(field, value[key], f"{where}.{key}")
    if not spec.open:
        problems += [
            f"{where}.{key}: not a documented {name} field"
            for key in value.keys() - spec.fields.keys()
        ]
    return problems
