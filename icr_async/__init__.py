"""icr-async: the async-first Python SDK for the International Carbon Registry Apps API.

>>> async with AsyncICRClient(app_id, private_key_pem) as client:   # doctest: +SKIP
...     async for installation in client.iter_installations():
...         org = await client.installation(installation.id).request("GET", f"/organizations/{installation.organization.id}")

The blocking twin is ``ICRClient``; the bundled emulator is ``icr_async.testing``.
"""

from ._clock import Clock, ManualClock
from ._config import DEFAULT_API_VERSION, PRODUCTION_URL, SANDBOX_URL, Timeouts
from ._hooks import RequestEvent, ResponseEvent
from ._keys import PrivateKey
from ._retry import RetryPolicy
from ._tokens import ClientStats, MemoryTokenCache, TokenCache
from ._version import __version__
from .client import AppTokenClient, AsyncICRClient, InstallationClient
from .errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
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
    RequestTimeoutError,
    ResponseDecodeError,
    ServerError,
    TokenError,
    TransportError,
    UnprocessableEntityError,
    UnsupportedAPIVersionError,
)
from .models import (
    AccessToken,
    AppAccessToken,
    CreatedOrganization,
    Installation,
    InstallationAccessToken,
    Organization,
    OrganizationType,
    Page,
    Pagination,
    PermissionLevel,
    Permissions,
    Token,
    User,
)
from .sync import BlockingCallError, ICRClient, SyncAppTokenClient, SyncInstallationClient

__all__ = [
    "DEFAULT_API_VERSION",
    "PRODUCTION_URL",
    "SANDBOX_URL",
    "APIError",
    "AccessToken",
    "AppAccessToken",
    "AppTokenClient",
    "AsyncICRClient",
    "AuthenticationError",
    "BadRequestError",
    "BlockingCallError",
    "ClientClosedError",
    "ClientStats",
    "Clock",
    "ConfigurationError",
    "ConflictError",
    "CreatedOrganization",
    "DuplicateActionError",
    "ICRClient",
    "ICRError",
    "Installation",
    "InstallationAccessToken",
    "InstallationClient",
    "InvalidArgumentError",
    "ManualClock",
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
    "RateLimitedError",
    "RequestEvent",
    "RequestTimeoutError",
    "ResponseDecodeError",
    "ResponseEvent",
    "RetryPolicy",
    "ServerError",
    "SyncAppTokenClient",
    "SyncInstallationClient",
    "Timeouts",
    "Token",
    "TokenCache",
    "TokenError",
    "TransportError",
    "UnprocessableEntityError",
    "UnsupportedAPIVersionError",
    "User",
    "__version__",
]
