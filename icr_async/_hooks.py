"""Request and response hooks for tracing and metrics, fed only redacted data."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping

import attrs

__all__ = ["RequestEvent", "RequestHook", "ResponseEvent", "ResponseHook", "call_hook"]


@attrs.frozen(kw_only=True)
class RequestEvent:
    """A request about to be sent. ``headers`` have credentials replaced by ``<redacted>``."""

    method: str
    path: str
    url: str
    headers: Mapping[str, str]
    attempt: int


@attrs.frozen(kw_only=True)
class ResponseEvent:
    """The outcome of one attempt: ``status`` is ``None`` when no HTTP answer came (``error``
    then names the exception class). ``elapsed`` is seconds on the event loop's clock."""

    method: str
    path: str
    url: str
    status: int | None
    headers: Mapping[str, str]
    attempt: int
    elapsed: float
    request_id: str | None = None
    error: str | None = None


RequestHook = Callable[[RequestEvent], "Awaitable[None] | None"]
ResponseHook = Callable[[ResponseEvent], "Awaitable[None] | None"]


async def call_hook(hook: Callable[[object], object], event: object) -> None:
    """Run a sync or async hook."""
    result = hook(event)
    if inspect.isawaitable(result):
        await result
