"""Page arithmetic for ICR's paginated lists, in either page numbering.

ICR's docs request ``page=0`` yet show ``currentPage: 1`` in a response, so both numberings
are plausible (shared/docs/icr-api.md, Pagination). A 1-based server reads ``page=0`` as its
first page too, which means ``page=0`` and ``page=1`` serve the same items: a client must
follow ``nextPage`` rather than count for itself.
"""

from __future__ import annotations

from typing import Any

import attrs

from ._options import PageBase, PageEndStyle

__all__ = ["PageWindow", "page_window"]


@attrs.frozen
class PageWindow:
    """Which items one page holds (``items[start:stop]``) and its ``pagination`` object."""

    start: int
    stop: int
    pagination: dict[str, Any]


def page_window(
    total: int,
    page: int,
    limit: int,
    *,
    base: PageBase,
    end_style: PageEndStyle,
    repeat: bool = False,
) -> PageWindow:
    """The page a request for ``page`` (validated, ``>= 0``) gets from a list of ``total``.

    ``repeat`` models a broken server that serves its first page whatever was asked.
    """
    # With base 1, page=0 is read as the first page (as a 1-based server would).
    current = base if repeat else max(page, base)
    index = current - base  # 0 for the first page in both numberings
    page_count = -(-total // limit)
    last = page_count - 1 + base
    next_page = current + 1 if current < last else None
    prev_page = current - 1 if current > base else None
    pagination: dict[str, Any] = {
        "total": total,
        "currentPage": current,
        "pageCount": page_count,
    }
    keep_nulls = end_style == "null"
    if next_page is not None or keep_nulls:
        pagination["nextPage"] = next_page
    if prev_page is not None or keep_nulls:
        pagination["prevPage"] = prev_page
    start = index * limit
    return PageWindow(start=start, stop=start + limit, pagination=pagination)
