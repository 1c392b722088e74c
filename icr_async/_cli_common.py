"""What every ``icr-async`` subcommand shares: exit statuses, usage errors, output, settings.

The command is split by job (``cli.py`` the parser, errors and small commands;
``_cli_request.py`` the ``request`` command; ``_cli_export.py`` the installations commands);
this module sits under all of them and imports none of them, so there is no cycle.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Callable, Coroutine, Iterator
from typing import IO, Any, NoReturn

from ._retry import RetryPolicy
from ._signers import Signer
from .client import AsyncICRClient

__all__ = [
    "EXIT_API",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "PROG",
    "UsageError",
    "atomic_output",
    "write_stdout_bytes",
]

PROG = "icr-async"
EXIT_OK = 0
EXIT_API = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """A mistake in the command line or the settings: exit status 2.

    ``hint`` says what to do about it; it is printed in parentheses after the message.
    """

    def __init__(self, message: str, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``icr-async: error: MESSAGE (see 'PROG --help')``."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message, f"see '{self.prog} --help'")


# -- output -------------------------------------------------------------------------------


def _print_json(data: Any, out: IO[str] | None = None) -> None:
    (out or sys.stdout).write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def _print_line(text: str, out: IO[str] | None = None) -> None:
    (out or sys.stdout).write(text + "\n")


def _stdout_buffer() -> IO[bytes]:
    """stdout's byte stream, after flushing the text written before (``--include``)."""
    sys.stdout.flush()
    buffer: IO[bytes] | None = getattr(sys.stdout, "buffer", None)
    if buffer is None:  # a stdout replaced by a text-only stream
        raise UsageError("stdout takes no raw bytes here", "pass --output FILE")
    return buffer


def write_stdout_bytes(data: bytes) -> None:
    """Write ``data`` to stdout unchanged (a PDF must not pass through a text encoder)."""
    buffer = _stdout_buffer()
    buffer.write(data)
    buffer.flush()


@contextlib.contextmanager
def atomic_output(path: str | None, *, binary: bool = False) -> Iterator[IO[Any]]:
    """stdout (``None`` or ``-``), or a file that appears only once complete.

    Written to a temporary file in the same directory and renamed at the end, so a failure
    half way (a network error on page 40) leaves no truncated export or certificate behind.
    """
    if path is None or path == "-":
        if binary:
            buffer = _stdout_buffer()
            yield buffer
            buffer.flush()
        else:
            yield sys.stdout
        return
    directory = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix=".icr-output-", suffix=".tmp", dir=directory)
    try:
        if binary:
            with os.fdopen(fd, "wb") as raw:
                yield raw
        else:
            with os.fdopen(fd, "w", encoding="utf-8") as text:
                yield text
        # mkstemp makes the file 0600; give it the mode a shell redirect would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


class _Progress:
    """``[#####.....] 40/100 pages`` on stderr, redrawn in place; silent unless a terminal.

    Written here rather than taken from a library: it is a dozen lines, and a progress bar
    is no reason for the SDK to gain a dependency.
    """

    WIDTH = 30

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self.enabled = stream.isatty()
        self._drawn = False

    def update(self, done: int, total: int | None) -> None:
        """Redraw with ``done`` pages of ``total`` (``None``: count only)."""
        if not self.enabled:
            return
        if total:
            filled = self.WIDTH * min(done, total) // total
            bar = f"[{'#' * filled}{'.' * (self.WIDTH - filled)}] {done}/{total} pages"
        else:
            bar = f"{done} pages"
        self._stream.write("\r" + bar)
        self._stream.flush()
        self._drawn = True

    def finish(self, summary: str) -> None:
        """End the bar's line and say what was done (on the terminal only)."""
        if not self.enabled:
            return
        self._stream.write(("\n" if self._drawn else "") + summary + "\n")
        self._stream.flush()


# -- settings -----------------------------------------------------------------------------


def _setting(args: argparse.Namespace, name: str) -> Any:
    # Shared options use SUPPRESS defaults (so a subcommand's parser does not overwrite a
    # value given before the subcommand): an option never given is simply absent.
    return getattr(args, name, None)


def _make_client(
    args: argparse.Namespace, *, retry: RetryPolicy | None = None, signer: Signer | None = None
) -> AsyncICRClient:
    """The client from the flags; what a flag leaves out, the SDK's own settings resolution
    takes from the environment (``ICR_APP_ID``, ``ICR_PRIVATE_KEY[_PATH]``, ``ICR_BASE_URL``,
    ``ICR_API_VERSION``), with the same checks and messages (put in shell terms on exit)."""
    client = AsyncICRClient(
        _setting(args, "app_id"),
        private_key_path=None if signer is not None else _setting(args, "private_key_path"),
        signer=signer,
        base_url=_setting(args, "base_url"),
        sandbox=bool(_setting(args, "sandbox")),
        api_version=_setting(args, "api_version"),
        allow_insecure_http=bool(_setting(args, "allow_insecure_http")),
        retry=retry,
    )
    args.resolved_base_url = client.base_url  # for error hints
    return client


def _run_with_client(
    args: argparse.Namespace,
    command: Callable[[argparse.Namespace, AsyncICRClient], Coroutine[Any, Any, int]],
    *,
    retry: RetryPolicy | None = None,
    signer: Signer | None = None,
) -> int:
    async def run() -> int:
        # Built inside the loop: the client's session belongs to the loop it first runs on.
        async with _make_client(args, retry=retry, signer=signer) as client:
            return await command(args, client)

    return asyncio.run(run())


# -- parser pieces ------------------------------------------------------------------------


def _int_at_least(minimum: int, wording: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {wording}, got {value}")
        return value

    return parse


_positive_int = _int_at_least(1, "at least 1")
_non_negative_int = _int_at_least(0, "0 or more")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value >= 0:  # NaN too
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds, got {text}")
    return value


def _debug_options() -> _Parser:
    parent = _Parser(add_help=False)
    parent.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="on error print the traceback; log the SDK's requests to stderr (secrets redacted)",
    )
    return parent


def _credential_options() -> _Parser:
    parent = _Parser(add_help=False)
    group = parent.add_argument_group("credentials and settings (flags override the environment)")
    s = argparse.SUPPRESS
    group.add_argument("--app-id", default=s, metavar="ID", help="the app's id [ICR_APP_ID]")
    group.add_argument(
        "--private-key-path",
        default=s,
        metavar="FILE",
        help="PEM file with the app's private key [ICR_PRIVATE_KEY_PATH, or ICR_PRIVATE_KEY "
        "with the PEM text]",
    )
    group.add_argument(
        "--base-url", default=s, metavar="URL", help="API base URL [ICR_BASE_URL; production]"
    )
    group.add_argument(
        "--sandbox",
        action="store_true",
        default=s,
        help="use https://sandbox-api.carbonregistry.com",
    )
    group.add_argument(
        "--api-version", default=s, metavar="DATE", help="x-icr-api-version [ICR_API_VERSION]"
    )
    group.add_argument(
        "--allow-insecure-http",
        action="store_true",
        default=s,
        help="allow a plain http:// base URL to a host other than this machine (tokens travel "
        "in clear text: for a test server on a trusted network only)",
    )
    return parent
