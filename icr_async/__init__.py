"""icr-async: the async-first Python SDK for the International Carbon Registry Apps API.

>>> async with AsyncICRClient(app_id, private_key_pem) as client:   # doctest: +SKIP
...     async for installation in client.iter_installations():
...         org = await client.installation(installation.id).request("GET", f"/organizations/{installation.organization.id}")

The blocking twin is ``ICRClient``; the bundled emulator is ``icr_async.testing``.
"""

from typing import Final as _Final

from ._backoff import BackoffStore, MemoryBackoffStore
from ._clock import Clock
from ._clock import ManualClock as _ManualClock
from ._compat import deprecated_names
from ._config import DEFAULT_API_VERSION, PRODUCTION_URL, SANDBOX_URL, Timeouts
from ._hooks import RequestEvent, ResponseEvent
from ._idempotency import ActionClaim, ActionRecord, IdempotencyStore, MemoryIdempotencyStore
from ._keys import PrivateKey
from ._request import Request, RequestOptions
from ._retry import RetryPolicy
from ._signers import Signer, public_key_fingerprint
from ._tokens import ClientStats, MemoryTokenCache, TokenCache
from ._transport import AiohttpTransport, Response, Transport
from ._version import __version__
from .client import AsyncAppTokenClient, AsyncICRClient, AsyncInstallationClient
from .errors import (
    ActionOutcomeUnknownError,
    APIError,
    AuthenticationError,
    BackoffPausedError,
    BadRequestError,
    BlockingCallError,
    ClientClosedError,
    ConfigurationError,
    ConflictError,
    DuplicateActionError,
    ICRError,
    InvalidArgumentError,
    NotFoundError,
    PaginationError,
    PermissionDeniedError,
    RateLimitedError,
    RedirectError,
    RequestTimeoutError,
    ResponseDecodeError,
    ServerError,
    SignerError,
    TokenError,
    TransportError,
    UnprocessableEntityError,
    UnreadableActionResultError,
    UnsupportedAPIVersionError,
    WebhookError,
    WebhookPayloadError,
    WebhookSignatureError,
)
from .models import (
    Address,
    CreatedOrganization,
    Credit,
    CreditAction,
    CreditRequest,
    CreditType,
    Installation,
    Inventory,
    Organization,
    OrganizationType,
    Page,
    Pagination,
    PermissionLevel,
    Permissions,
    Project,
    ProjectRef,
    Reservation,
    ReservationAction,
    Reserver,
    Retirement,
    RetirementData,
    Token,
    Transaction,
    User,
    WarehouseCredit,
    WarehouseInventory,
)
from .sync import AppTokenClient, ICRClient, InstallationClient

# Renamed in 0.2 (httpx's naming: the blocking class has the plain name, the asyncio one
# ``Async...``), and the token types merged into one ``Token``; the old names work for one
# more release, with a DeprecationWarning.
__getattr__: _Final = deprecated_names(
    "icr_async",
    globals(),
    {
        "SyncInstallationClient": "InstallationClient",
        "SyncAppTokenClient": "AppTokenClient",
        "AccessToken": "Token",
        "AppAccessToken": "Token",
        "InstallationAccessToken": "Token",
    },
    # A test tool, at home beside the emulator it drives.
    moved={"ManualClock": (_ManualClock, "icr_async.testing.ManualClock")},
)

__all__ = [
    "DEFAULT_API_VERSION",
    "PRODUCTION_URL",
    "SANDBOX_URL",
    "APIError",
    "ActionClaim",
    "ActionOutcomeUnknownError",
    "ActionRecord",
    "Address",
    "AiohttpTransport",
    "AppTokenClient",
    "AsyncAppTokenClient",
    "AsyncICRClient",
    "AsyncInstallationClient",
    "AuthenticationError",
    "BackoffPausedError",
    "BackoffStore",
    "BadRequestError",
    "BlockingCallError",
    "ClientClosedError",
    "ClientStats",
    "Clock",
    "ConfigurationError",
    "ConflictError",
    "CreatedOrganization",
    "Credit",
    "CreditAction",
    "CreditRequest",
    "CreditType",
    "DuplicateActionError",
    "ICRClient",
    "ICRError",
    "IdempotencyStore",
    "Installation",
    "InstallationClient",
    "InvalidArgumentError",
    "Inventory",
    "MemoryBackoffStore",
    "MemoryIdempotencyStore",
    "MemoryTokenCache",
    "NotFoundError",
    "Organization",
    "OrganizationType",
    "Page",
    "Pagination",
    "PaginationError",
    "PermissionDeniedError",
    "PermissionLevel",
    "Permissions",
    "PrivateKey",
    "Project",
    "ProjectRef",
    "RateLimitedError",
    "RedirectError",
    "Request",
    "RequestEvent",
    "RequestOptions",
    "RequestTimeoutError",
    "Reservation",
    "ReservationAction",
    "Reserver",
    "Response",
    "ResponseDecodeError",
    "ResponseEvent",
    "Retirement",
    "RetirementData",
    "RetryPolicy",
    "ServerError",
    "Signer",
    "SignerError",
    "Timeouts",
    "Token",
    "TokenCache",
    "TokenError",
    "Transaction",
    "Transport",
    "TransportError",
    "UnprocessableEntityError",
    "UnreadableActionResultError",
    "UnsupportedAPIVersionError",
    "User",
    "WarehouseCredit",
    "WarehouseInventory",
    "WebhookError",
    "WebhookPayloadError",
    "WebhookSignatureError",
    "__version__",
    "public_key_fingerprint",
]
