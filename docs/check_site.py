"""Open the built documentation site in headless Chromium and check that it works.

Run after ``mkdocs build --strict`` (CI does; it is not part of the pytest suite)::

    python docs/check_site.py [--site site] [--screenshot site-home.png] [--chromium chromium]

It serves ``site/`` with ``python -m http.server`` on 127.0.0.1 (a free port), starts
Debian's ``chromium`` headless with its DevTools protocol on 127.0.0.1, drives it over that
protocol (aiohttp's WebSocket client, already an icr-async dependency) and checks:

* the home page renders: its title, the Material header laid out by the theme's stylesheet,
  the navigation, and a saved screenshot (``--screenshot``);
* the API reference page shows ``AsyncICRClient`` with its methods, rendered by mkdocstrings
  (a screenshot of it is saved beside the home page's, ``*-reference.png``);
* search works: ``search/search_index.json`` is served and holds the term, and typing the
  term into the search box lists results whose first link leads to the page about it.

No page may throw a JavaScript error. Both child processes are stopped by PID, and every wait
is bounded. Exit status 0 when every check passed, 1 otherwise (each failure is printed).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp

STARTUP_TIMEOUT = 30.0
"""Seconds for the HTTP server or Chromium to start listening."""
CALL_TIMEOUT = 15.0
"""Seconds for one DevTools call, or one condition on a page to become true."""
SEARCH_TERM = "RedisTokenCache"


def say(line: str, *, error: bool = False) -> None:
    """One line of the report, on stdout (or stderr for a failure)."""
    stream = sys.stderr if error else sys.stdout
    stream.write(line + "\n")
    stream.flush()


class CheckFailed(Exception):
    """A check of the site did not hold."""


def _read_until(stream: Any, pattern: re.Pattern[str], timeout: float, what: str) -> str:
    """The first match of ``pattern`` in the lines of ``stream``, read on a helper thread."""
    found: list[str] = []
    done = threading.Event()

    def reader() -> None:
        for line in iter(stream.readline, ""):
            match = pattern.search(line)
            if match and not found:
                found.append(match.group(1))
                done.set()
        done.set()

    threading.Thread(target=reader, daemon=True).start()
    if not done.wait(timeout) or not found:
        raise CheckFailed(f"{what} did not start within {timeout:.0f} s")
    return found[0]


def _stop(process: subprocess.Popen[str], *, group: bool = False) -> None:
    """Terminate ``process`` by its PID, then kill it if it does not go. With ``group``, the
    whole process group it leads (started with ``start_new_session=True``) goes too."""

    def signal_all(signum: int) -> None:
        if group:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signum)
        elif process.poll() is None:
            os.kill(process.pid, signum)

    signal_all(signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        signal_all(signal.SIGKILL)
        process.wait(timeout=10)
    # Helpers that outlived the leader (Chromium's renderer, GPU and crash handler) go now.
    if group:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def _remove_tree(path: str) -> None:
    """Remove ``path``, retrying for a few seconds while an exiting process still writes."""
    for _ in range(20):
        try:
            shutil.rmtree(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.25)
    shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def serve(site: Path) -> Iterator[str]:
    """``site`` served on 127.0.0.1 by ``python -m http.server``; yields the base URL."""
    process = subprocess.Popen(
        [sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1"],
        cwd=site,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        port = _read_until(
            process.stdout, re.compile(r" port (\d+) "), STARTUP_TIMEOUT, "the HTTP server"
        )
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop(process)


@contextlib.contextmanager
def chromium(binary: str) -> Iterator[str]:
    """Headless Chromium with DevTools on 127.0.0.1; yields the browser's DevTools HTTP URL."""
    # Its own process group, stopped whole, and the profile removed only then: Chromium's
    # helpers kept writing to it after the browser exited ("Directory not empty" in CI).
    profile = tempfile.mkdtemp(prefix="icr-docs-chromium-")
    try:
        process = subprocess.Popen(  # noqa: S603 - the browser binary found by shutil.which
            [
                binary,
                "--headless",
                "--no-sandbox",  # CI runs as root
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--hide-scrollbars",
                "--window-size=1280,900",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                f"--user-data-dir={profile}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            port = _read_until(
                process.stderr,
                re.compile(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/"),
                STARTUP_TIMEOUT,
                "Chromium",
            )
            yield f"http://127.0.0.1:{port}"
        finally:
            _stop(process, group=True)
    finally:
        _remove_tree(profile)


class Page:
    """One browser tab, driven over the DevTools protocol."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse[bool]) -> None:
        self._ws = ws
        self._next_id = 0
        self.errors: list[str] = []

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one command and return its result (events that arrive meanwhile are kept)."""
        self._next_id += 1
        number = self._next_id
        await self._ws.send_json({"id": number, "method": method, "params": params})
        deadline = time.monotonic() + CALL_TIMEOUT
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CheckFailed(f"DevTools did not answer {method} in {CALL_TIMEOUT:.0f} s")
            message = await self._ws.receive(timeout=remaining)
            if message.type != aiohttp.WSMsgType.TEXT:
                raise CheckFailed(f"the DevTools connection closed during {method}")
            data = json.loads(message.data)
            if data.get("method") == "Runtime.exceptionThrown":
                details = data["params"]["exceptionDetails"]
                text = details.get("exception", {}).get("description") or details.get("text")
                self.errors.append(str(text))
            if data.get("id") == number:
                if "error" in data:
                    raise CheckFailed(f"{method}: {data['error']}")
                result: dict[str, Any] = data.get("result", {})
                return result

    async def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression in the page."""
        answer = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in answer:
            raise CheckFailed(f"{expression!r} threw: {answer['exceptionDetails'].get('text')}")
        return answer["result"].get("value")

    async def wait_for(self, expression: str, what: str) -> Any:
        """Poll ``expression`` until it is truthy; its value."""
        deadline = time.monotonic() + CALL_TIMEOUT
        while time.monotonic() < deadline:
            value = await self.evaluate(expression)
            if value:
                return value
            await asyncio.sleep(0.1)
        raise CheckFailed(f"{what}: not seen within {CALL_TIMEOUT:.0f} s")

    async def open(self, url: str) -> None:
        """Navigate to ``url`` and wait until it has loaded."""
        await self.call("Page.navigate", url=url)
        await self.wait_for(
            f"location.href === {json.dumps(url)} && document.readyState === 'complete'",
            f"loading {url}",
        )


async def check_home(page: Page, base: str, screenshot: Path) -> None:
    await page.open(base + "/")
    title = await page.evaluate("document.title")
    if "icr-async" not in title:
        raise CheckFailed(f"home page title is {title!r}")
    heading = await page.evaluate("document.querySelector('article h1')?.textContent ?? ''")
    if "icr-async" not in heading:
        raise CheckFailed(f"home page heading is {heading!r}")
    # The theme's stylesheet is applied: the header is Material's sticky bar, not plain text.
    position = await page.evaluate(
        "getComputedStyle(document.querySelector('header.md-header')).position"
    )
    if position != "sticky":
        raise CheckFailed(f"the Material stylesheet is not applied (header is {position!r})")
    links = await page.evaluate(
        "[...document.querySelectorAll('nav.md-nav--primary a')].map(a => a.textContent.trim())"
    )
    for name in ("Getting started", "Testing your app", "Webhooks", "Clients"):
        if name not in links:
            raise CheckFailed(f"the navigation has no {name!r}: {links}")
    shot = await page.call("Page.captureScreenshot", format="png")
    await asyncio.to_thread(screenshot.write_bytes, base64.b64decode(shot["data"]))
    say(f"ok   home page renders ({len(links)} navigation links); screenshot {screenshot}")


async def check_reference(page: Page, base: str, screenshot: Path) -> None:
    await page.open(base + "/reference/clients/")
    heading = await page.wait_for(
        "document.getElementById('icr_async.AsyncICRClient')?.textContent ?? ''",
        "the AsyncICRClient heading",
    )
    if "AsyncICRClient" not in heading:
        raise CheckFailed(f"AsyncICRClient heading reads {heading!r}")
    for member in ("iter_installations", "installation", "aclose"):
        found = await page.evaluate(
            f"document.getElementById('icr_async.AsyncICRClient.{member}') !== null"
        )
        if not found:
            raise CheckFailed(f"the API reference has no AsyncICRClient.{member}")
    await page.evaluate(
        "document.getElementById('icr_async.AsyncInstallationClient').scrollIntoView()"
    )
    shot = await page.call("Page.captureScreenshot", format="png")
    await asyncio.to_thread(screenshot.write_bytes, base64.b64decode(shot["data"]))
    say(f"ok   API reference shows AsyncICRClient and its methods; screenshot {screenshot}")


async def check_search(page: Page, base: str, session: aiohttp.ClientSession) -> None:
    async with session.get(base + "/search/search_index.json") as response:
        if response.status != 200:
            raise CheckFailed(f"search/search_index.json answered {response.status}")
        index = await response.json(content_type=None)
    hits = [doc["location"] for doc in index["docs"] if SEARCH_TERM in doc["text"]]
    if not hits:
        raise CheckFailed(f"the search index does not contain {SEARCH_TERM!r}")
    await page.open(base + "/")
    # Type into the search box as a reader would: focus it, set the text, fire the events.
    await page.evaluate(
        "(() => { const input = document.querySelector('input.md-search__input');"
        " input.focus(); input.value = " + json.dumps(SEARCH_TERM) + ";"
        " input.dispatchEvent(new Event('input', {bubbles: true}));"
        " input.dispatchEvent(new KeyboardEvent('keyup', {bubbles: true})); })()"
    )
    count = await page.wait_for(
        "document.querySelectorAll('.md-search-result__item').length", "search results"
    )
    first = await page.evaluate(
        "document.querySelector('.md-search-result__item a')?.getAttribute('href') ?? ''"
    )
    if not re.search(r"fleets|redis", first):
        raise CheckFailed(f"the first result for {SEARCH_TERM!r} leads to {first!r}")
    say(f"ok   search for {SEARCH_TERM!r}: {count} results, the first {first}")


async def run_checks(site: Path, screenshot: Path, binary: str) -> list[str]:
    failures: list[str] = []
    timeout = aiohttp.ClientTimeout(total=CALL_TIMEOUT)
    with serve(site) as base, chromium(binary) as devtools:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.put(devtools + "/json/new?about:blank") as response:
                target = await response.json(content_type=None)
            async with session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                page = Page(ws)
                await page.call("Page.enable")
                await page.call("Runtime.enable")
                for name, check in (
                    ("home page", check_home(page, base, screenshot)),
                    (
                        "API reference",
                        check_reference(
                            page, base, screenshot.with_name(f"{screenshot.stem}-reference.png")
                        ),
                    ),
                    ("search", check_search(page, base, session)),
                ):
                    try:
                        await check
                    except CheckFailed as exc:
                        failures.append(f"{name}: {exc}")
                failures += [f"JavaScript error: {error}" for error in page.errors]
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check the built site in headless Chromium.")
    parser.add_argument("--site", type=Path, default=Path("site"), help="the built site")
    parser.add_argument("--screenshot", type=Path, default=Path("site-home.png"))
    parser.add_argument("--chromium", default="chromium", help="the browser binary")
    args = parser.parse_args(argv)
    if not (args.site / "index.html").is_file():
        say(f"no {args.site}/index.html: run `mkdocs build --strict` first", error=True)
        return 1
    binary = shutil.which(args.chromium)
    if binary is None:
        say(f"no {args.chromium} on PATH (apt-get install chromium)", error=True)
        return 1
    try:
        failures = asyncio.run(run_checks(args.site.resolve(), args.screenshot, binary))
    except CheckFailed as exc:
        failures = [str(exc)]
    for failure in failures:
        say(f"FAIL {failure}", error=True)
    if not failures:
        say("the documentation site works in Chromium")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
