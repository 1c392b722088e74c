"""The emulator's options: their types, their checks, and the validated attribute behind them.

Each reading of ICR's docs the emulator can take (page numbering, the ends of a page list, the
status of a successful POST, token lifetimes, the ``Retry-After`` form, the request-id header,
the server's clock) is one option. The checks here are shared by the emulator's constructor,
its attributes (validated on assignment), the variants of ``_variants.py`` and the
``icr-async emulator`` flags, so a bad value fails the same way everywhere.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any, Generic, Literal, TypeVar, cast, overload

__all__ = [
    "DEFAULT_REQUEST_ID_HEADER",
    "Option",
    "PageBase",
    "PageEndStyle",
    "PostStatus",
    "RetryAfterStyle",
    "check_clock_offset",
    "check_page_base",
    "check_page_end_style",
    "check_post_status",
    "check_request_id_header",
    "check_retry_after_style",
    "check_ttl",
]

PageBase = Literal[0, 1]
"""The number of the first page: ``0`` (``page=0`` in the docs' requests) or ``1``."""
PageEndStyle = Literal["null", "absent"]
"""How ``nextPage`` / ``prevPage`` look where there is no such page."""
PostStatus = Literal[200, 201]
"""The status of a successful POST: 200 (the docs' tables) or 201 (NestJS's default)."""
RetryAfterStyle = Literal["seconds", "http-date"]
"""The two forms of ``Retry-After`` HTTP allows (RFC 9110, section 10.2.3)."""

DEFAULT_REQUEST_ID_HEADER = "x-icr-request-id"
"""The header the emulator puts its request ids in unless told otherwise."""

_HEADER_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _seconds(value: object) -> float | None:
    # A finite int or float (not a bool), as a float; None for anything else.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    seconds = float(value)
    return seconds if math.isfinite(seconds) else None


def _one_of(value: object, name: str, choices: tuple[int, int] | tuple[str, str]) -> Any:
    # The choice ``value`` equals (a number for numeric choices: never True for 1).
    for choice in choices:
        if value == choice and (isinstance(choice, str) or _is_number(value)):
            return choice
    shown = " or ".join(repr(choice) for choice in choices)
    raise ValueError(f"{name} must be {shown}, not {value!r}")


def check_page_base(value: object) -> PageBase:
    """``value`` if it is 0 or 1; ``ValueError`` otherwise."""
    return cast(PageBase, _one_of(value, "page_base", (0, 1)))


def check_page_end_style(value: object) -> PageEndStyle:
    """``value`` if it is ``"null"`` or ``"absent"``; ``ValueError`` otherwise."""
    return cast(PageEndStyle, _one_of(value, "page_end_style", ("null", "absent")))


def check_post_status(value: object) -> PostStatus:
    """``value`` if it is 200 or 201; ``ValueError`` otherwise."""
    return cast(PostStatus, _one_of(value, "post_status", (200, 201)))


def check_retry_after_style(value: object) -> RetryAfterStyle:
    """``value`` if it is ``"seconds"`` or ``"http-date"``; ``ValueError`` otherwise."""
    return cast(RetryAfterStyle, _one_of(value, "retry_after_style", ("seconds", "http-date")))


def check_request_id_header(value: object) -> str | None:
    """A header name (lower-cased) or ``None`` for no request ids; ``ValueError`` otherwise."""
    if value is None:
        return None
    if not isinstance(value, str) or not _HEADER_TOKEN.fullmatch(value):
        raise ValueError(f"request_id_header must be a header name or None, not {value!r}")
    return value.lower()


def check_clock_offset(value: object) -> float:
    """A finite number of seconds; ``ValueError`` otherwise."""
    seconds = _seconds(value)
    if seconds is None:
        raise ValueError(f"clock_offset must be a finite number of seconds, not {value!r}")
    return seconds


def check_ttl(value: object, name: str = "token ttl") -> float:
    """A finite, positive number of seconds; ``ValueError`` otherwise."""
    seconds = _seconds(value)
    if seconds is None or seconds <= 0:
        raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
    return seconds


T = TypeVar("T")


class Option(Generic[T]):
    """A validated attribute: assigning a bad value raises ``ValueError`` at once.

    The emulator reads its options on every request, so a test may change one between two
    requests (``emulator.page_base = 1``) and the next answer follows it.
    """

    def __init__(self, check: Callable[[object], T]) -> None:
        self._check = check
        self._slot = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self._slot = f"_option_{name}"

    @overload
    def __get__(self, instance: None, owner: type) -> Option[T]: ...

    @overload
    def __get__(self, instance: object, owner: type | None = None) -> T: ...

    def __get__(self, instance: object, owner: type | None = None) -> Option[T] | T:
        if instance is None:
            return self
        value: T = instance.__dict__[self._slot]
        return value

    def __set__(self, instance: object, value: T) -> None:
        instance.__dict__[self._slot] = self._check(value)
