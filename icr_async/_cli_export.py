"""``icr-async installations list | get | export``.

``export`` fetches pages concurrently, yet decides nothing about page numbers itself: the
SDK's :class:`~icr_async._sansio.PageTracker` (the one pagination rule, shared with
``iter_installations`` and ``request --paginate``) says which page comes next and when the
listing ends. Concurrency is only prefetching in the numbering the server showed.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import sys
from collections.abc import AsyncGenerator, Sequence
from typing import Any, Protocol

from ._cli_common import EXIT_OK, _print_json, _print_line, _Progress, atomic_output
from ._converters import unstructure
from ._sansio import PageTracker
from .client import AsyncICRClient
from .models import Installation, Page

__all__ = [
    "MAX_EXPORT_PAGES",
    "InstallationLister",
    "export_pages",
    "installations_export",
    "installations_get",
    "installations_list",
]

# A server announcing more pages than this is broken or hostile; refuse instead of looping.
MAX_EXPORT_PAGES = 100_000


class InstallationLister(Protocol):
    """What the export needs of a client (``AsyncICRClient`` is one): a seam that lets the
    page-choosing logic be tested against a scripted server numbering as well."""

    async def list_installations(self, *, limit: int = ..., page: int = ...) -> Page[Installation]:
        """One page of installations."""
        ...


def _installation_row(inst: Installation) -> list[str]:
    org = inst.organization
    return [
        inst.id,
        (org.full_name or "") if org else "",
        (org.country_code or "") if org else "",
        (org.type or "") if org else "",
        unstructure(inst.created_at)[:10] if inst.created_at else "",
    ]


def _print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    for row in (headers, *rows):
        _print_line("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _page_json(page: Page[Installation]) -> dict[str, Any]:
    return {
        "installations": [unstructure(inst) for inst in page.items],
        "pagination": unstructure(page.pagination) if page.pagination is not None else None,
    }


async def installations_list(args: argparse.Namespace, client: AsyncICRClient) -> int:
    """One page, as JSON (off a terminal) or a table."""
    page = await client.list_installations(limit=args.limit, page=args.page)
    fmt = args.format or ("table" if sys.stdout.isatty() else "json")
    if fmt == "json":
        _print_json(_page_json(page))
        return EXIT_OK
    _print_table(
        ["ID", "ORGANIZATION", "COUNTRY", "TYPE", "CREATED"],
        [_installation_row(inst) for inst in page.items],
    )
    pagination = page.pagination
    if pagination is not None and pagination.total is not None:
        _print_line(
            f"{len(page)} of {pagination.total} installations "
            f"(page {page.page}; {pagination.page_count} pages of {page.limit})"
        )
    return EXIT_OK


async def installations_get(args: argparse.Namespace, client: AsyncICRClient) -> int:
    """One installation, as JSON."""
    _print_json(unstructure(await client.get_installation(args.installation_id)))
    return EXIT_OK


async def export_pages(
    client: InstallationLister, page_size: int, concurrency: int, progress: _Progress
) -> AsyncGenerator[list[dict[str, Any]], None]:
    """Yield every installation as JSON objects, page by page, in the server's order.

    The tracker is fed each answer in order and names the page to use next. Meanwhile up to
    ``concurrency`` of the pages after it are already being fetched, numbered on from the
    page the tracker named (the server's ``nextPage``), so the guesses are in the server's
    own numbering whatever its base. A guess is used only if it is the page the tracker then
    asks for; when the server names another page, the guesses before it are dropped (all of
    them if it was not among them) and the walk goes on from the server's page.
    No guess goes past the pages the server says remain (``pageCount`` less the pages used,
    a count, the same in either numbering); without a ``pageCount`` nothing is guessed and
    the pages are fetched one by one. At most ``concurrency`` pages are held at once.
    """
    tracker = PageTracker(limit=page_size, max_pages=MAX_EXPORT_PAGES)
    window: collections.deque[tuple[int, asyncio.Task[Page[Installation]]]] = collections.deque()
    page_count: int | None = None

    def launch(number: int) -> None:
        task = asyncio.create_task(client.list_installations(limit=page_size, page=number))
        window.append((number, task))

    async def drop(tasks: list[asyncio.Task[Page[Installation]]]) -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def drop_guesses_before(named: int) -> None:
        # The guesses run on from one another, so from the named page on they still hold;
        # if it was not guessed at all, none of them does.
        guessed = any(number == named for number, _ in window)
        wrong: list[asyncio.Task[Page[Installation]]] = []
        while window and (not guessed or window[0][0] != named):
            wrong.append(window.popleft()[1])
        await drop(wrong)

    try:
        launch(tracker.page)
        while window:
            _, task = window.popleft()  # always the page the tracker named
            page = await task
            items = [unstructure(inst) for inst in page.items]
            more = tracker.advance(items, page.pagination)
            if page.pagination is not None and page.pagination.page_count is not None:
                page_count = page.pagination.page_count
            progress.update(tracker.pages_seen, page_count)
            if more:
                await drop_guesses_before(tracker.page)
                # Before the yield: the next pages load while the caller writes this one.
                wanted = 1
                if page_count is not None:
                    wanted = max(1, min(concurrency, page_count - tracker.pages_seen))
                following = window[-1][0] + 1 if window else tracker.page
                while len(window) < wanted:
                    launch(following)
                    following += 1
            yield items
            if not more:
                return
    finally:
        await drop([task for _, task in window])


async def installations_export(args: argparse.Namespace, client: AsyncICRClient) -> int:
    """Every installation as JSON Lines, to stdout or ``--out``."""
    progress = _Progress(sys.stderr)
    seen: set[str] = set()
    with atomic_output(args.out) as out:
        pages = export_pages(client, args.page_size, args.concurrency, progress)
        try:
            async for items in pages:
                for item in items:
                    # Pages can shift under a concurrent export (an installation added or
                    # removed meanwhile): never write one installation twice.
                    if item["id"] in seen:
                        continue
                    seen.add(item["id"])
                    out.write(json.dumps(item, ensure_ascii=False, separators=(",", ":")) + "\n")
        finally:
            await pages.aclose()
    where = f" to {args.out}" if args.out not in (None, "-") else ""
    progress.finish(f"exported {len(seen)} installations{where}")
    return EXIT_OK
