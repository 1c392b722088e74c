"""The readings of ICR's docs the emulator can take, and named presets of them.

shared/docs/icr-api.md leaves some behaviour open (page numbering, the ends of a page list,
the status of a successful POST, token lifetimes, the ``Retry-After`` form, the request-id
header) and a server's clock is never exactly the client's. Each is an option of
:class:`~icr_async.testing.ICREmulator`; :data:`VARIANTS` names combinations so a test suite
can run against every plausible ICR::

    @pytest.fixture(params=sorted(VARIANTS))
    def emulator(request, clock):
        return ICREmulator(clock=clock, **VARIANTS[request.param].kwargs())

The options themselves, their types and checks, are in ``_options.py``.
"""

from __future__ import annotations

import types
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, TypedDict, TypeVar

import attrs

from ._options import (
    DEFAULT_REQUEST_ID_HEADER,
    PageBase,
    PageEndStyle,
    PostStatus,
    RetryAfterStyle,
    check_clock_offset,
    check_page_base,
    check_page_end_style,
    check_post_status,
    check_request_id_header,
    check_retry_after_style,
    check_ttl,
)

if TYPE_CHECKING:
    from ._model import EmulatorModel

__all__ = ["VARIANTS", "EmulatorOptions", "EmulatorVariant", "VariantTable", "options_of"]

E = TypeVar("E", bound="EmulatorModel")


class EmulatorOptions(TypedDict, total=False):
    """The keyword arguments of :class:`~icr_async.testing.ICREmulator` a variant sets."""

    page_base: PageBase
    page_end_style: PageEndStyle
    post_status: PostStatus
    clock_offset: float
    installation_token_ttl: float
    app_token_ttl: float
    retry_after_style: RetryAfterStyle
    request_id_header: str | None


def _installation_token_ttl(value: object) -> float:
    return check_ttl(value, "installation_token_ttl")


def _app_token_ttl(value: object) -> float:
    return check_ttl(value, "app_token_ttl")


@attrs.frozen(kw_only=True)
class EmulatorVariant:
    """One plausible ICR: a value for every option the docs leave open.

    The defaults are the readings of shared/docs/icr-api.md (the ``"icr-docs"`` variant).
    Use :meth:`kwargs` for a new emulator or :meth:`apply` on an existing one;
    ``attrs.evolve(variant, page_base=1)`` derives another.
    """

    name: str
    description: str = ""
    page_base: PageBase = attrs.field(default=0, converter=check_page_base)
    page_end_style: PageEndStyle = attrs.field(default="null", converter=check_page_end_style)
    post_status: PostStatus = attrs.field(default=200, converter=check_post_status)
    clock_offset: float = attrs.field(default=0.0, converter=check_clock_offset)
    installation_token_ttl: float = attrs.field(default=7200.0, converter=_installation_token_ttl)
    app_token_ttl: float = attrs.field(default=3600.0, converter=_app_token_ttl)
    retry_after_style: RetryAfterStyle = attrs.field(
        default="seconds", converter=check_retry_after_style
    )
    request_id_header: str | None = attrs.field(
        default=DEFAULT_REQUEST_ID_HEADER, converter=check_request_id_header
    )

    def kwargs(self) -> EmulatorOptions:
        """The options as keyword arguments: ``ICREmulator(clock=c, **variant.kwargs())``."""
        return EmulatorOptions(
            page_base=self.page_base,
            page_end_style=self.page_end_style,
            post_status=self.post_status,
            clock_offset=self.clock_offset,
            installation_token_ttl=self.installation_token_ttl,
            app_token_ttl=self.app_token_ttl,
            retry_after_style=self.retry_after_style,
            request_id_header=self.request_id_header,
        )

    def apply(self, emulator: E) -> E:
        """Set every option on ``emulator`` (served or not) and return it."""
        for name, value in self.kwargs().items():
            setattr(emulator, name, value)
        return emulator


def options_of(emulator: EmulatorModel) -> EmulatorOptions:
    """The options ``emulator`` runs with now (what ``GET /_emulator/options`` answers)."""
    return EmulatorOptions(
        page_base=emulator.page_base,
        page_end_style=emulator.page_end_style,
        post_status=emulator.post_status,
        clock_offset=emulator.clock_offset,
        installation_token_ttl=emulator.installation_token_ttl,
        app_token_ttl=emulator.app_token_ttl,
        retry_after_style=emulator.retry_after_style,
        request_id_header=emulator.request_id_header,
    )


class VariantTable(Mapping[str, EmulatorVariant]):
    """Named plausible ICRs (read-only, in a fixed order, ``"icr-docs"`` first).

    ``VARIANTS["one-based"].kwargs()`` gives an emulator's keyword arguments; iterate it (or
    ``sorted(VARIANTS)`` for pytest ids) to run a test against every reading.
    """

    def __init__(self, *variants: EmulatorVariant) -> None:
        self._variants = types.MappingProxyType({v.name: v for v in variants})

    def __getitem__(self, name: str) -> EmulatorVariant:
        return self._variants[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._variants)

    def __len__(self) -> int:
        return len(self._variants)

    def __repr__(self) -> str:
        return f"VariantTable({', '.join(self._variants)})"


VARIANTS: Mapping[str, EmulatorVariant] = VariantTable(
    EmulatorVariant(
        name="icr-docs",
        description="the readings of shared/docs/icr-api.md (the emulator's defaults)",
    ),
    EmulatorVariant(
        name="one-based",
        description="1-based pages (page=0 also serves the first page), nextPage absent at the end",
        page_base=1,
        page_end_style="absent",
    ),
    EmulatorVariant(
        name="created-201", description="201 Created for every successful POST", post_status=201
    ),
    EmulatorVariant(
        name="clock-behind",
        description="the server's clock 7 minutes behind the client's",
        clock_offset=-420.0,
    ),
    EmulatorVariant(
        name="clock-ahead",
        description="the server's clock 7 minutes ahead of the client's",
        clock_offset=420.0,
    ),
    EmulatorVariant(
        name="short-tokens",
        description="installation tokens that live 2 minutes",
        installation_token_ttl=120.0,
    ),
    EmulatorVariant(
        name="http-date-retry",
        description="Retry-After as an HTTP date on the server's clock",
        retry_after_style="http-date",
    ),
    EmulatorVariant(
        name="everything-else",
        description="every other reading at once: 1-based pages, absent ends, 201s, "
        "2-minute tokens, HTTP-date Retry-After, x-request-id, a clock 7 minutes behind",
        page_base=1,
        page_end_style="absent",
        post_status=201,
        clock_offset=-420.0,
        installation_token_ttl=120.0,
        app_token_ttl=120.0,
        retry_after_style="http-date",
        request_id_header="x-request-id",
    ),
)
"""Named plausible ICRs, ``"icr-docs"`` first; every option differs from the default in one."""
