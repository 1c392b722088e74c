"""Control routes under ``/_emulator/`` for an emulator running in another process.

Benchmarks and soak runs keep the emulator in a separate process (so its CPU does not count
against the client's) and still need to read its counters and plan faults. The routes are
unauthenticated, which is acceptable only because the emulator refuses to listen anywhere
but loopback:

- ``GET /_emulator/stats``: every counter as JSON (``posts`` reduced to counts);
- ``POST /_emulator/stats/reset``: zero the counters;
- ``POST /_emulator/faults``: add a fault; the JSON body holds ``Fault``'s keyword arguments;
- ``DELETE /_emulator/faults``: remove every fault;
- ``GET /_emulator/options``: the options the emulator runs with (``page_base``, ...);
- ``POST /_emulator/options``: change them; the JSON body holds option values and/or
  ``"variant": NAME`` (a preset of :data:`~icr_async.testing.VARIANTS`, applied first).
  Answers the options now in effect; a bad name or value changes nothing and answers 400;
- ``POST /_emulator/rate_limit``: set the rate limit; the JSON body holds ``RateLimit``'s
  keyword arguments (``requests``, ``per``, ``scope``); ``DELETE`` turns it off.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from ._faults import Fault, RateLimit
from ._http import EmulatorHTTPError
from ._variants import VARIANTS, EmulatorVariant, options_of

if TYPE_CHECKING:
    from ._model import EmulatorModel

__all__ = ["register_admin_routes", "stats_snapshot"]


def stats_snapshot(emulator: EmulatorModel) -> dict[str, Any]:
    """The emulator's counters as plain JSON-ready data."""
    stats = emulator.stats
    posts = {k: n for k, n in stats.posts.items() if not k[0].startswith("/_emulator/")}
    return {
        # Requests to these control routes are left out: they are the observer, not the load.
        "total_requests": sum(
            n for (_, r), n in stats.requests.items() if not r.startswith("admin_")
        ),
        "requests": {
            f"{m} {r}": n for (m, r), n in stats.requests.items() if not r.startswith("admin_")
        },
        "mints": dict(stats.mints),
        "total_mints": sum(stats.mints.values()),
        "app_token_mints": stats.app_token_mints,
        "revocations": stats.revocations,
        "jwt_rejections": dict(stats.jwt_rejections),
        "token_rejections": dict(stats.token_rejections),
        "posts": sum(posts.values()),
        "distinct_posts": len(posts),
        "duplicate_posts": sum(n - 1 for n in posts.values() if n > 1),
        "faults_fired": sum(emulator.faults.fired(f) for f in emulator.faults.active),
        "rate_limited": stats.rate_limited,
        "rate_limit_periods": emulator.rate_limiter.periods(),
        "executions": sum(emulator.ledger.executions.values()),
        "distinct_executions": len(emulator.ledger.executions),
        "duplicate_executions": emulator.ledger.duplicate_executions,
    }


def register_admin_routes(emulator: EmulatorModel, app: web.Application) -> None:
    """Add the ``/_emulator/`` control routes to ``app``."""

    async def get_stats(request: web.Request) -> web.StreamResponse:
        return emulator.json_response(stats_snapshot(emulator))

    async def reset_stats(request: web.Request) -> web.StreamResponse:
        emulator.reset_stats()
        return emulator.json_response({"ok": True})

    async def add_fault(request: web.Request) -> web.StreamResponse:
        body = await emulator.read_json_object(request)
        try:
            fault = emulator.faults.add(Fault(**body))
        except (TypeError, ValueError) as exc:
            raise EmulatorHTTPError(400, f"bad fault: {exc}") from None
        return emulator.json_response({"ok": True, "fault": repr(fault)}, status=201)

    async def clear_faults(request: web.Request) -> web.StreamResponse:
        emulator.faults.clear()
        return emulator.json_response({"ok": True})

    async def get_options(request: web.Request) -> web.StreamResponse:
        return emulator.json_response(options_of(emulator))

    async def set_options(request: web.Request) -> web.StreamResponse:
        body = dict(await emulator.read_json_object(request))
        name = body.pop("variant", None)
        base = options_of(emulator)
        if name is not None:
            if name not in VARIANTS:
                raise EmulatorHTTPError(400, f"unknown variant {name!r}; known: {sorted(VARIANTS)}")
            base = VARIANTS[name].kwargs()
        try:
            # Validated as a whole before any of it applies: a bad value changes nothing.
            variant = EmulatorVariant(name="custom", **{**base, **body})
        except (TypeError, ValueError) as exc:
            raise EmulatorHTTPError(400, f"bad options: {exc}") from None
        variant.apply(emulator)
        return emulator.json_response(options_of(emulator))

    async def set_rate_limit(request: web.Request) -> web.StreamResponse:
        body = await emulator.read_json_object(request)
        try:
            limit = RateLimit(**body)
        except (TypeError, ValueError) as exc:
            raise EmulatorHTTPError(400, f"bad rate limit: {exc}") from None
        emulator.rate_limiter.limit = limit
        return emulator.json_response({"ok": True, "rate_limit": repr(limit)}, status=201)

    async def clear_rate_limit(request: web.Request) -> web.StreamResponse:
        emulator.rate_limiter.limit = None
        return emulator.json_response({"ok": True})

    app.router.add_post("/_emulator/rate_limit", set_rate_limit, name="admin_set_rate_limit")
    app.router.add_delete("/_emulator/rate_limit", clear_rate_limit, name="admin_clear_rate_limit")
    app.router.add_get("/_emulator/stats", get_stats, name="admin_stats", allow_head=False)
    app.router.add_post("/_emulator/stats/reset", reset_stats, name="admin_reset_stats")
    app.router.add_post("/_emulator/faults", add_fault, name="admin_add_fault")
    app.router.add_delete("/_emulator/faults", clear_faults, name="admin_clear_faults")
    app.router.add_get(
        "/_emulator/options", get_options, name="admin_get_options", allow_head=False
    )
    app.router.add_post("/_emulator/options", set_options, name="admin_set_options")
