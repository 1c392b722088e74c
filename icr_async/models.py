"""The data the ICR API returns, as frozen attrs classes. No I/O here.

Models are tolerant: keys the SDK does not know are kept in ``extra`` (on models that have
one) or ignored, never fatal, because ICR adds fields without notice. A key the SDK cannot
do without (an installation's ``id``, a token's ``token`` and ``expiresAt``) is required:
its absence raises ``ResponseDecodeError`` naming it. Date-times are always timezone-aware.
Token values are masked in every ``repr``.
"""

from __future__ import annotations

import datetime
import enum
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar, overload

import attrs

from ._compat import deprecated_names
from ._models_credits import (
    Address,
    Credit,
    CreditAction,
    CreditRequest,
    CreditType,
    Inventory,
    Project,
    ProjectRef,
    Reservation,
    ReservationAction,
    Reserver,
    Retirement,
    RetirementData,
    WarehouseCredit,
    WarehouseInventory,
)
from ._redact import mask_token
from .errors import InvalidArgumentError

__all__ = [
    "Address",
    "CreatedOrganization",
    "Credit",
    "CreditAction",
    "CreditRequest",
    "CreditType",
    "Installation",
    "Inventory",
    "Organization",
    "OrganizationType",
    "Page",
    "Pagination",
    "PermissionLevel",
    "Permissions",
    "Project",
    "ProjectRef",
    "Reservation",
    "ReservationAction",
    "Reserver",
    "Retirement",
    "RetirementData",
    "Token",
    "Transaction",
    "User",
    "WarehouseCredit",
    "WarehouseInventory",
]

T = TypeVar("T")


class PermissionLevel(str, enum.Enum):
    """Permission levels seen on the wire. Unknown levels are kept as plain strings."""

    VIEW = "VIEW"
    WRITE = "WRITE"
    REQUEST = "REQUEST"


class OrganizationType(str, enum.Enum):
    """Organization types used by ICR. Unknown types are kept as plain strings."""

    PROJECT_PROPONENT = "projectProponent"
    PROJECT_DEVELOPER = "projectDeveloper"
    MARKET_PARTICIPANT = "marketParticipant"
    VALIDATION_BODY = "validationBody"
    OTHER = "other"


class Permissions(Mapping[str, str]):
    """Permission name → level, e.g. ``{"organization_inventory": "WRITE"}``.

    A read-only mapping that keeps names and levels the SDK does not know yet.
    """

    __slots__ = ("_levels",)

    def __init__(self, levels: Mapping[str, str] | None = None) -> None:
        self._levels: dict[str, str] = {str(k): str(v) for k, v in (levels or {}).items()}

    @classmethod
    def _from_json(cls, levels: dict[str, Any]) -> Permissions:
        # The decoding fast path: JSON object keys are always str, so only the levels need a
        # look; a copy keeps the object independent of the parsed response.
        for level in levels.values():
            if type(level) is not str:
                return cls(levels)
        obj = cls.__new__(cls)
        obj._levels = dict(levels)
        return obj

    def __getitem__(self, name: str) -> str:
        return self._levels[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._levels)

    def __len__(self) -> int:
        return len(self._levels)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Permissions):
            return self._levels == other._levels
        if isinstance(other, Mapping):
            return self._levels == dict(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(frozenset(self._levels.items()))

    def can_read(self, name: str) -> bool:
        """Whether ``name`` is granted at any level (VIEW, WRITE or REQUEST all allow reads)."""
        return name in self._levels

    def can_write(self, name: str) -> bool:
        """Whether ``name`` is granted with WRITE."""
        return self._levels.get(name, "").upper() in ("WRITE", "READ_WRITE")

    def to_dict(self) -> dict[str, str]:
        """A plain ``dict`` copy."""
        return dict(self._levels)

    def __repr__(self) -> str:
        return f"Permissions({self._levels!r})"


def _masked(value: str) -> str:
    return repr(mask_token(value))


def _refuse_format(token: object, spec: str) -> str:
    # str(token) is masked for logs, so f"Bearer {token}" would put "crs_…5517" in a header
    # and fail far from the mistake: say so here instead.
    raise InvalidArgumentError(
        f"{type(token).__name__} cannot be formatted into text: that would give its masked "
        "form, not the secret. Use token.token for the secret (in an Authorization header), "
        "or {token!s} for the masked form in a log line"
    )


_UTC = datetime.timezone.utc


class _Empty(Mapping[str, Any]):
    """An empty read-only mapping: the one ``extra`` of every token that has none."""

    __slots__ = ()

    def __getitem__(self, key: str) -> Any:
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0

    def __repr__(self) -> str:
        return "{}"

    def __reduce__(self) -> str:
        return "_NO_EXTRA"  # unpickles as the one instance


_NO_EXTRA: Mapping[str, Any] = _Empty()
_NO_PERMISSIONS = Permissions()
# Read by the private converter (``_converters.LOCAL``, which imports this module): a field
# the SDK works out itself, never read from or written to JSON.
_LOCAL: Mapping[str, Any] = {"icr_async.local": True}


def _utc(value: object, name: str) -> datetime.datetime:
    """``value`` as an aware UTC ``datetime``; POSIX seconds (the former type) with a warning."""
    if type(value) is datetime.datetime and value.tzinfo is _UTC:
        return value
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise InvalidArgumentError(
                f"Token.{name} must be a timezone-aware datetime, got a naive one "
                "(use datetime.datetime.now(datetime.timezone.utc), not datetime.now())"
            )
        return value.astimezone(_UTC)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        warnings.warn(
            f"Token({name}=<POSIX seconds>) is deprecated and will be refused in the next "
            f"release; pass an aware datetime, e.g. "
            f"datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)",
            DeprecationWarning,
            stacklevel=4,
        )
        return datetime.datetime.fromtimestamp(value, tz=_UTC)
    raise InvalidArgumentError(
        f"Token.{name} must be an aware datetime, got {type(value).__name__}"
    )


@attrs.frozen(kw_only=True)
class Token:
    """An access token, installation or app: what ``installation(id).get_token()``,
    ``create_installation_token(id)`` and ``create_app_token()`` return, and what every
    ``TokenCache`` stores.

    ``expires_at`` is an aware UTC ``datetime`` on *this machine's* clock: ICR's
    ``expiresAt`` corrected for the difference between the server's clock (its ``Date``
    header) and this one, so ``token.expires_at - datetime.now(timezone.utc)`` is the real
    remaining life. ``minted_at`` is when this machine received it (``None`` if unknown).
    The other facts ICR sent (``id``, ``created_at``, ``updated_at``: on the server's clock,
    ``is_active``, ``permissions``, ``app_id``) are kept as sent, and keys the SDK does not
    know land in ``extra``.

    ``str(token)`` and ``repr`` are masked (``crs_…9c5b``), and formatting a token into
    text raises: use ``token.token`` for the secret itself.
    """

    token: str = attrs.field(repr=_masked)
    expires_at: datetime.datetime
    installation_id: str | None = None
    organization_id: str | None = None
    # Shared defaults (both are read-only): a cache holds many tokens.
    permissions: Permissions = attrs.field(default=_NO_PERMISSIONS)
    minted_at: datetime.datetime | None = None
    id: str | None = None
    created_at: datetime.datetime | None = None
    updated_at: datetime.datetime | None = None
    is_active: bool = True
    app_id: str | None = None
    extra: Mapping[str, Any] = attrs.field(default=_NO_EXTRA, repr=False, eq=False)
    # ``expires_at`` as POSIX seconds, worked out once: the token manager compares it with
    # the clock on every request, and ``datetime.timestamp()`` there would cost more than
    # the rest of a cache hit.
    _expires: float = attrs.field(init=False, repr=False, eq=False, metadata=_LOCAL)
    # ``minted_at`` likewise (0.0 when unknown): a token that lives less than twice the
    # refresh margin has its own margin worked out from its life on every request.
    _minted: float = attrs.field(init=False, repr=False, eq=False, metadata=_LOCAL)

    def __attrs_post_init__(self) -> None:
        expires_at = _utc(self.expires_at, "expires_at")
        if expires_at is not self.expires_at:
            object.__setattr__(self, "expires_at", expires_at)
        object.__setattr__(self, "_expires", expires_at.timestamp())
        minted = 0.0
        if self.minted_at is not None:
            minted_at = _utc(self.minted_at, "minted_at")
            if minted_at is not self.minted_at:
                object.__setattr__(self, "minted_at", minted_at)
            minted = minted_at.timestamp()
        object.__setattr__(self, "_minted", minted)

    @property
    def expires_at_datetime(self) -> datetime.datetime:
        """Deprecated: ``expires_at`` is the aware UTC ``datetime`` itself now."""
        warnings.warn(
            "Token.expires_at_datetime is deprecated and will be removed in the next release; "
            "use Token.expires_at (an aware UTC datetime now)",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.expires_at

    def __str__(self) -> str:
        return mask_token(self.token)

    def __format__(self, spec: str) -> str:
        """Refused: formatting would give the masked form, not the secret (see ``token``)."""
        return _refuse_format(self, spec)


@attrs.frozen(kw_only=True)
class Organization:
    """An organization (the party that installed the app). Unknown keys land in ``extra``."""

    id: str
    full_name: str | None = None
    country_code: str | None = None
    type: str | None = None
    is_public: bool | None = None
    created_at: datetime.datetime | None = None
    updated_at: datetime.datetime | None = None
    url: str | None = None
    logo: str | None = None
    website: str | None = None
    city: str | None = None
    zip: str | None = None
    physical_address: str | None = None
    registration_number: str | None = None
    organization_industries: tuple[Any, ...] = ()
    extra: Mapping[str, Any] = attrs.field(factory=dict, repr=False, eq=False)


@attrs.frozen(kw_only=True)
class Installation:
    """An installation of the app on one organization, as ``GET /app/installations/{id}``
    returns it and as a webhook event carries it. Unknown keys land in ``extra``.

    ``access_tokens_url`` is kept as sent but never used to build requests: sandbox has sent
    it starting with the literal text ``undefined/``.
    """

    id: str
    created_at: datetime.datetime | None = None
    updated_at: datetime.datetime | None = None
    # Made a Permissions on first read, like the organization below.
    permissions: Permissions = attrs.field(factory=Permissions, metadata={"icr_async.lazy": True})
    app_name_id: str | None = None
    app_id: str | None = None
    access_tokens_url: str | None = None
    # Decoded on first read (most callers never read it; icr_async._lazy says how).
    organization: Organization | None = attrs.field(default=None, metadata={"icr_async.lazy": True})
    extra: Mapping[str, Any] = attrs.field(factory=dict, repr=False, eq=False)

    @property
    def organization_id(self) -> str | None:
        """The organization's id, when the installation carries its organization."""
        return None if self.organization is None else self.organization.id


@attrs.frozen(kw_only=True)
class User:
    """An ICR user: the one created together with an organization, or a webhook's
    ``sender`` (``{id, url, email, fullName, profilePicture}``)."""

    email: str | None = None
    id: str | None = None
    full_name: str | None = None
    profile_picture: str | None = None
    url: str | None = None
    extra: Mapping[str, Any] = attrs.field(factory=dict, repr=False, eq=False)


@attrs.frozen(kw_only=True)
class Transaction:
    """The credit movement a ``warehouseTransaction`` or ``organizationTransaction`` webhook
    reports. Unknown keys land in ``extra``.

    ICR does not document this object: the fields are those of its credit requests and
    reservations (``txId``, ``action``, ``creditId``, ``amount``, the organizations involved),
    every one optional. ``reservation_id`` or ``credit_request_id`` names what the movement
    finished, when the payload says so. The payload as sent stays in the event's ``raw``.
    """

    id: str | None = None
    tx_id: str | None = None
    action: str | None = None
    type: str | None = None
    credit_id: str | None = None
    token_id: str | None = None
    token_address: str | None = None
    serialization: str | None = None
    project: ProjectRef | None = None
    amount: float | None = None
    from_organization_id: str | None = None
    to_organization_id: str | None = None
    to_address: str | None = None
    reservation_id: str | None = None
    credit_request_id: str | None = None
    retirement_id: str | None = None
    created_at: datetime.datetime | None = None
    extra: Mapping[str, Any] = attrs.field(factory=dict, repr=False, eq=False)


@attrs.frozen(kw_only=True)
class CreatedOrganization:
    """What ``POST /app/create/user/organization`` returns: at least the new installation."""

    installation: Installation
    organization: Organization | None = None
    user: User | None = None
    extra: Mapping[str, Any] = attrs.field(factory=dict, repr=False, eq=False)


@attrs.frozen(kw_only=True)
class Pagination:
    """The ``pagination`` block of a list answer. Every field may be missing or null."""

    total: int | None = None
    current_page: int | None = None
    page_count: int | None = None
    next_page: int | None = None
    prev_page: int | None = None


@attrs.frozen(kw_only=True)
class Page(Generic[T]):
    """One page of a paginated listing: its ``items`` and the server's ``pagination``.

    ``page`` and ``limit`` are what was asked for.
    """

    items: tuple[T, ...]
    pagination: Pagination | None
    page: int
    limit: int

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[T]:
        return iter(self.items)

    @overload
    def __getitem__(self, index: int) -> T: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[T, ...]: ...

    def __getitem__(self, index: int | slice) -> T | tuple[T, ...]:
        return self.items[index]

    @property
    def total(self) -> int | None:
        """The total item count the server reported, if any."""
        return self.pagination.total if self.pagination else None


# One type for every token: the former wire classes are aliases of ``Token`` for one more
# release, with a DeprecationWarning (ICR's wire shape is read by ``_token_answer``).
__getattr__: Callable[[str], Any] = deprecated_names(
    "icr_async.models",
    globals(),
    {"AccessToken": "Token", "AppAccessToken": "Token", "InstallationAccessToken": "Token"},
)
