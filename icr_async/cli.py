"""The ``icr-async`` command (also ``python -m icr_async``).

Subcommands::

    demo                                   the whole app flow on an embedded emulator
    emulator                               serve the emulator on a port until Ctrl-C
    token app | installation ID | revoke   mint or revoke access tokens
    installations list | get ID | export   read installations (export: JSON Lines, concurrent)
    request METHOD PATH                    any endpoint, with the right credential
    key fingerprint | check                the private key's fingerprint; a live JWT check

Credentials and settings come from flags or the environment (``ICR_APP_ID``,
``ICR_PRIVATE_KEY``, ``ICR_PRIVATE_KEY_PATH``, ``ICR_BASE_URL``, ``ICR_API_VERSION``); the
async client does the work under ``asyncio.run``.

Exit status: 0 success, 1 the API or the network failed, 2 a usage or configuration mistake,
130 interrupted. An error is one line on stderr, ``icr-async: error: WHAT (WHAT TO DO)``;
``--debug`` adds the traceback and the SDK's debug log, both passed through the SDK's secret
redaction. Only the ``token`` commands print a secret: printing one is their job.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import logging
import os
import sys
import tempfile
import traceback
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterator, Sequence
from typing import IO, TYPE_CHECKING, Any, NoReturn

from ._converters import unstructure
from ._keys import load_private_key
from ._redact import redact_text
from ._retry import RetryPolicy
from ._version import __version__
from .client import AsyncICRClient
from .errors import (
    APIError,
    AuthenticationError,
    ConfigurationError,
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
    UnsupportedAPIVersionError,
)
from .models import Installation, Page

if TYPE_CHECKING:
    from .contrib.pkcs11 import PKCS11Signer

__all__ = ["EXIT_API", "EXIT_OK", "EXIT_USAGE", "UsageError", "build_parser", "main"]

PROG = "icr-async"
EXIT_OK = 0
EXIT_API = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
# A server announcing more pages than this is broken or hostile; refuse instead of looping.
MAX_EXPORT_PAGES = 100_000

ENVIRONMENT_HELP = """\
environment:
  ICR_APP_ID            the app's id (or --app-id)
  ICR_PRIVATE_KEY_PATH  a PEM file with the app's private key (or --private-key-path)
  ICR_PRIVATE_KEY       the PEM text itself (literal \\n accepted)
  ICR_BASE_URL          the API (default https://api.carbonregistry.com; or --base-url, --sandbox)
  ICR_API_VERSION       the x-icr-api-version header (default 2023-06-16)

exit status: 0 success, 1 API or network error, 2 usage or configuration error.
Start a local emulator with 'icr-async emulator' and paste the lines it prints."""


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


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def _print_line(text: str) -> None:
    sys.stdout.write(text + "\n")


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


def _require_key_source(args: argparse.Namespace) -> None:
    if not (
        _setting(args, "private_key_path")
        or os.environ.get("ICR_PRIVATE_KEY")
        or os.environ.get("ICR_PRIVATE_KEY_PATH")
    ):
        raise UsageError(
            "no private key",
            "pass --private-key-path FILE, or set ICR_PRIVATE_KEY_PATH (a PEM file) "
            "or ICR_PRIVATE_KEY (the PEM text)",
        )


def _make_client(args: argparse.Namespace, *, retry: RetryPolicy | None = None) -> AsyncICRClient:
    app_id = _setting(args, "app_id") or os.environ.get("ICR_APP_ID")
    if not app_id:
        raise UsageError("no app id", "pass --app-id or set ICR_APP_ID")
    _require_key_source(args)
    client = AsyncICRClient(
        app_id,
        private_key_path=_setting(args, "private_key_path"),
        base_url=_setting(args, "base_url"),
        sandbox=bool(_setting(args, "sandbox")),
        api_version=_setting(args, "api_version"),
        retry=retry,
    )
    args.resolved_base_url = client.base_url  # for error hints
    return client


def _run_with_client(
    args: argparse.Namespace,
    command: Callable[[argparse.Namespace, AsyncICRClient], Coroutine[Any, Any, int]],
    *,
    retry: RetryPolicy | None = None,
) -> int:
    async def run() -> int:
        # Built inside the loop: the client's session belongs to the loop it first runs on.
        async with _make_client(args, retry=retry) as client:
            return await command(args, client)

    return asyncio.run(run())


# -- token --------------------------------------------------------------------------------


async def _token_app(args: argparse.Namespace, client: AsyncICRClient) -> int:
    token = await client.create_app_token()
    if args.raw:
        _print_line(token.token)
    else:
        _print_json(unstructure(token))
    return EXIT_OK


async def _token_installation(args: argparse.Namespace, client: AsyncICRClient) -> int:
    token = await client.installation(args.installation_id).get_token(min_ttl=args.min_ttl)
    if args.raw:
        _print_line(token.token)
    else:
        _print_json(
            {
                "token": token.token,
                "expiresAt": unstructure(token.expires_at_datetime),
                "installationId": token.installation_id,
                "organizationId": token.organization_id,
            }
        )
    return EXIT_OK


def _token_to_revoke(args: argparse.Namespace) -> str:
    if args.stdin or args.token == "-":
        if args.token not in (None, "-"):
            raise UsageError("give the token as an argument or with --stdin, not both")
        # Reading it from stdin keeps the secret out of shell history and `ps` listings.
        value = sys.stdin.readline().strip()
        if not value:
            raise UsageError(
                "no token on stdin", "pipe the token in: ... | icr-async token revoke -"
            )
        return value
    if not args.token:
        raise UsageError(
            "no token to revoke", "pass it as TOKEN, or '-' / --stdin to read it from stdin"
        )
    return str(args.token)


async def _token_revoke(args: argparse.Namespace, client: AsyncICRClient) -> int:
    revoked = await client.revoke_token(args.token_value)
    _print_json({"revoked": revoked})
    return EXIT_OK


def _cmd_token_revoke(args: argparse.Namespace) -> int:
    args.token_value = _token_to_revoke(args)  # before any client: a usage error comes first
    return _run_with_client(args, _token_revoke)


# -- installations ------------------------------------------------------------------------


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


async def _installations_list(args: argparse.Namespace, client: AsyncICRClient) -> int:
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


async def _installations_get(args: argparse.Namespace, client: AsyncICRClient) -> int:
    _print_json(unstructure(await client.get_installation(args.installation_id)))
    return EXIT_OK


def _remaining_pages(first: Page[Installation]) -> range | None:
    """The page numbers still to fetch after ``first``, or ``None`` if the server's
    pagination does not say (then the export walks the pages one by one)."""
    pagination = first.pagination
    if pagination is None or pagination.page_count is None or pagination.current_page is None:
        return None
    count = pagination.page_count
    if count > MAX_EXPORT_PAGES:
        raise PaginationError(
            f"the server announced {count} pages of installations; refusing to fetch more "
            f"than {MAX_EXPORT_PAGES}"
        )
    # ICR's docs ask for page=0 but show currentPage: 1; both numberings are accepted.
    if pagination.current_page == first.page:  # 0-based: pages 0 .. count-1
        return range(first.page + 1, count)
    if pagination.current_page == first.page + 1:  # 1-based, page 0 served as page 1
        return range(first.page + 2, count + 1)
    return None


async def _export_pages(
    client: AsyncICRClient, page_size: int, concurrency: int, progress: _Progress
) -> AsyncGenerator[Sequence[Installation], None]:
    """Yield the installations page by page, in order, fetching up to ``concurrency`` pages
    at once; at most ``concurrency`` pages are held in memory."""
    first = await client.list_installations(limit=page_size, page=0)
    remaining = _remaining_pages(first)
    if remaining is None:
        # No usable page count: the SDK's iterator knows every way a listing can end.
        done = 0
        batch: list[Installation] = []
        async for inst in client.iter_installations(page_size=page_size):
            batch.append(inst)
            if len(batch) == page_size:
                done += 1
                progress.update(done, None)
                yield batch
                batch = []
        if batch:
            progress.update(done + 1, None)
            yield batch
        return

    total_pages = len(remaining) + 1
    progress.update(1, total_pages)
    yield first.items
    numbers = iter(remaining)
    window: collections.deque[asyncio.Task[Page[Installation]]] = collections.deque()

    def launch() -> None:
        number = next(numbers, None)
        if number is not None:
            window.append(
                asyncio.create_task(client.list_installations(limit=page_size, page=number))
            )

    try:
        for _ in range(concurrency):
            launch()
        done = 1
        while window:
            # The oldest page first keeps the output in page order; the others keep loading.
            page = await window.popleft()
            launch()
            done += 1
            progress.update(done, total_pages)
            yield page.items
    finally:
        for task in window:
            task.cancel()
        await asyncio.gather(*window, return_exceptions=True)


@contextlib.contextmanager
def _output(path: str | None) -> Iterator[IO[str]]:
    """stdout, or a file that appears only once complete (no half export left behind)."""
    if path is None or path == "-":
        yield sys.stdout
        return
    directory = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix=".icr-export-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            yield handle
        # mkstemp makes the file 0600; give it the mode a shell redirect would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


async def _installations_export(args: argparse.Namespace, client: AsyncICRClient) -> int:
    progress = _Progress(sys.stderr)
    seen: set[str] = set()
    with _output(args.out) as out:
        pages = _export_pages(client, args.page_size, args.concurrency, progress)
        try:
            async for items in pages:
                for inst in items:
                    # Pages can shift under a concurrent export (an installation added or
                    # removed meanwhile): never write one installation twice.
                    if inst.id in seen:
                        continue
                    seen.add(inst.id)
                    out.write(
                        json.dumps(unstructure(inst), ensure_ascii=False, separators=(",", ":"))
                        + "\n"
                    )
        finally:
            await pages.aclose()
    where = f" to {args.out}" if args.out not in (None, "-") else ""
    progress.finish(f"exported {len(seen)} installations{where}")
    return EXIT_OK


# -- request ------------------------------------------------------------------------------


_NO_DATA = object()  # --data not given: send no body at all (not even "null")


def _read_data(spec: str) -> Any:
    if spec == "-":
        text, source = sys.stdin.read(), "stdin"
    elif spec.startswith("@"):
        source = spec[1:]
        try:
            with open(source, encoding="utf-8") as handle:
                text = handle.read()
        except OSError as exc:
            raise UsageError(
                f"cannot read --data file {source}: {exc.strerror}", "check the path after '@'"
            ) from None
    else:
        text, source = spec, "--data"
    try:
        return json.loads(text)
    except ValueError as exc:
        raise UsageError(
            f"{source} is not valid JSON: {exc}",
            "--data takes JSON text, @FILE, or - for stdin",
        ) from None


def _read_params(pairs: Sequence[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--param {pair!r} is not KEY=VALUE", "e.g. --param limit=10")
        params[key] = value
    return params


async def _request(args: argparse.Namespace, client: AsyncICRClient) -> int:
    kwargs: dict[str, Any] = {"params": args.params or None}
    if args.body is not _NO_DATA:
        kwargs["json"] = args.body
    if args.installation is not None:
        result = await client.installation(args.installation).request(
            args.method, args.path, **kwargs
        )
    elif args.path.startswith("/app/"):
        result = await client.request(args.method, args.path, **kwargs)
    else:
        result = await client.app_token_client().request(args.method, args.path, **kwargs)
    if args.raw_output and isinstance(result, str):
        _print_line(result)
    else:
        _print_json(result)
    return EXIT_OK


def _cmd_request(args: argparse.Namespace) -> int:
    # Read and check the body and parameters before any credential is touched.
    args.body = _NO_DATA if args.data is None else _read_data(args.data)
    args.params = _read_params(args.param)
    return _run_with_client(args, _request)


# -- key ----------------------------------------------------------------------------------


_PKCS11_HINT = "check --pkcs11-uri (token, object, module-path) and the PIN (ICR_PKCS11_PIN)"


def _pkcs11_signer(args: argparse.Namespace) -> PKCS11Signer | None:
    """The signer ``--pkcs11-uri`` names, or ``None`` without the flag.

    The PIN comes from the URI (``pin-value`` / ``pin-source``) or ``ICR_PKCS11_PIN``, so it
    need not appear on a command line that ``ps`` shows to every user of the machine.
    """
    uri = getattr(args, "pkcs11_uri", None)
    if uri is None:
        return None
    if _setting(args, "private_key_path"):
        raise UsageError("--pkcs11-uri and --private-key-path name two keys", "pass one of them")
    try:
        from .contrib.pkcs11 import PKCS11Signer, parse_pkcs11_uri

        env_pin = (
            None if parse_pkcs11_uri(uri).pin is not None else os.environ.get("ICR_PKCS11_PIN")
        )
        return PKCS11Signer.from_uri(uri, pin=env_pin)
    except ImportError:
        raise UsageError(
            "--pkcs11-uri needs python-pkcs11", "pip install 'icr-async[pkcs11]'"
        ) from None
    except ConfigurationError as exc:
        raise UsageError(exc.message, _PKCS11_HINT) from exc


def _cmd_key_fingerprint(args: argparse.Namespace) -> int:
    signer = _pkcs11_signer(args)
    if signer is not None:
        with signer:
            fingerprint, bits = signer.fingerprint, signer.public_key.key_size
            extra = {"keyId": signer.key_id, "nonExtractable": signer.non_extractable}
    else:
        _require_key_source(args)
        key = load_private_key(path=_setting(args, "private_key_path"))
        fingerprint, bits, extra = key.fingerprint, key.bits, {}
    if args.raw:
        _print_line(f"SHA256:{fingerprint}")
    else:
        _print_json({"fingerprint": f"SHA256:{fingerprint}", "bits": bits, **extra})
    return EXIT_OK


async def _key_check(args: argparse.Namespace, client: AsyncICRClient) -> int:
    page = await client.list_installations(limit=1, page=0)
    _print_json(
        {
            "ok": True,
            "appId": client.app_id,
            "baseUrl": client.base_url,
            "fingerprint": f"SHA256:{client.key_fingerprint}",
            "installations": page.total,
        }
    )
    return EXIT_OK


def _cmd_key_check(args: argparse.Namespace) -> int:
    retry = RetryPolicy.disabled()
    signer = _pkcs11_signer(args)
    if signer is None:
        return _run_with_client(args, _key_check, retry=retry)
    app_id = _setting(args, "app_id") or os.environ.get("ICR_APP_ID")
    if not app_id:
        signer.close()
        raise UsageError("no app id", "pass --app-id or set ICR_APP_ID")

    async def run() -> int:
        async with AsyncICRClient(
            app_id,
            signer=signer,
            base_url=_setting(args, "base_url"),
            sandbox=bool(_setting(args, "sandbox")),
            api_version=_setting(args, "api_version"),
            retry=retry,
        ) as client:
            args.resolved_base_url = client.base_url  # for error hints
            return await _key_check(args, client)

    with signer:
        return asyncio.run(run())


# -- demo and emulator --------------------------------------------------------------------


def _cmd_demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo

    if args.installations < 1 or args.concurrency < 1 or args.page_size < 1:
        raise UsageError(
            "--installations, --concurrency and --page-size must be positive",
            "see 'icr-async demo --help'",
        )
    return asyncio.run(
        run_demo(
            installations=args.installations,
            concurrency=min(args.concurrency, args.installations),
            page_size=args.page_size,
            out=sys.stdout,
        )
    )


def _cmd_emulator(args: argparse.Namespace) -> int:
    from .testing import _main

    if args.installations < 0:
        raise UsageError("--installations must be >= 0")
    return _main.run(args)


# -- the parser ---------------------------------------------------------------------------


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
    return parent


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    debug = _debug_options()
    creds = _credential_options()
    both = [debug, creds]
    formatter = argparse.RawDescriptionHelpFormatter

    parser = _Parser(
        prog=PROG,
        description="The International Carbon Registry Apps API from a shell.",
        epilog=ENVIRONMENT_HELP,
        formatter_class=formatter,
        parents=[debug],
    )
    parser.add_argument("--version", action="version", version=f"icr-async {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser("demo", help="run the full app flow against the embedded emulator")
    demo.add_argument(
        "--installations", type=int, default=50, help="installations to create (default 50)"
    )
    demo.add_argument(
        "--concurrency", type=int, default=10, help="installations to mint tokens for at once"
    )
    demo.add_argument(
        "--page-size", type=int, default=20, help="page size for listing installations"
    )
    demo.set_defaults(handler=_cmd_demo)

    from .testing import _main

    emulator = sub.add_parser(
        "emulator",
        help="serve the ICR emulator until Ctrl-C and print the variables that point at it",
        description=_main.DESCRIPTION
        + " It writes the app's private key to --key-out and prints the export lines for "
        "ICR_APP_ID, ICR_PRIVATE_KEY_PATH and ICR_BASE_URL; paste them into another shell "
        "to point this command and the SDK at it. Ctrl-C (or SIGTERM) stops it.",
        parents=[debug],
    )
    _main.add_arguments(emulator)
    emulator.set_defaults(handler=_cmd_emulator)

    # token ---------------------------------------------------------------------------
    token = sub.add_parser(
        "token",
        help="mint or revoke access tokens (prints the secret: that is its job)",
        description="Mint or revoke access tokens. JSON by default; --raw prints only the "
        'token, for TOKEN="$(icr-async token ... --raw)".',
    )
    token_sub = token.add_subparsers(dest="token_command", metavar="COMMAND", required=True)
    t_app = token_sub.add_parser(
        "app", help="mint an app access token", parents=both, epilog=ENVIRONMENT_HELP
    )
    t_app.add_argument("--raw", action="store_true", help="print only the token")
    t_app.set_defaults(handler=lambda a: _run_with_client(a, _token_app))
    t_inst = token_sub.add_parser(
        "installation",
        help="an installation access token",
        parents=both,
        epilog=ENVIRONMENT_HELP,
        formatter_class=formatter,
    )
    t_inst.add_argument("installation_id", metavar="ID", help="the installation's id")
    t_inst.add_argument(
        "--min-ttl",
        type=_seconds,
        metavar="SECONDS",
        help="the token must live at least this long (an installation token lives 2 hours)",
    )
    t_inst.add_argument("--raw", action="store_true", help="print only the token")
    t_inst.set_defaults(handler=lambda a: _run_with_client(a, _token_installation))
    t_rev = token_sub.add_parser(
        "revoke",
        help="revoke an access token",
        description="Revoke an app or installation access token (DELETE "
        "/app/installations/token). Pass '-' or --stdin to read it from stdin and keep it "
        'out of the shell history. Prints {"revoked": true}.',
        parents=both,
        epilog=ENVIRONMENT_HELP,
        formatter_class=formatter,
    )
    t_rev.add_argument("token", nargs="?", metavar="TOKEN", help="the token, or - for stdin")
    t_rev.add_argument("--stdin", action="store_true", help="read the token from stdin")
    t_rev.set_defaults(handler=_cmd_token_revoke)

    # installations -------------------------------------------------------------------
    insts = sub.add_parser("installations", help="list, show or export the app's installations")
    insts_sub = insts.add_subparsers(dest="installations_command", metavar="COMMAND", required=True)
    i_list = insts_sub.add_parser(
        "list",
        help="one page of installations",
        parents=both,
        epilog=ENVIRONMENT_HELP,
        formatter_class=formatter,
    )
    i_list.add_argument(
        "--limit", type=_positive_int, default=10, help="per page (default %(default)s)"
    )
    i_list.add_argument(
        "--page", type=_non_negative_int, default=0, help="which page (default %(default)s)"
    )
    i_list.add_argument(
        "--format",
        choices=("json", "table"),
        help="default: table on a terminal, JSON otherwise",
    )
    i_list.set_defaults(handler=lambda a: _run_with_client(a, _installations_list))
    i_get = insts_sub.add_parser(
        "get",
        help="one installation, as JSON",
        parents=both,
        epilog=ENVIRONMENT_HELP,
        formatter_class=formatter,
    )
    i_get.add_argument("installation_id", metavar="ID", help="the installation's id")
    i_get.set_defaults(handler=lambda a: _run_with_client(a, _installations_get))
    i_exp = insts_sub.add_parser(
        "export",
        help="every installation as JSON Lines",
        description="Every installation as JSON Lines (one JSON object per line, in page "
        "order). After the first page tells the page count, the other pages are fetched "
        "--concurrency at a time. A progress bar goes to stderr when it is a terminal.",
        parents=both,
        epilog=ENVIRONMENT_HELP,
        formatter_class=formatter,
    )
    i_exp.add_argument(
        "--out",
        metavar="FILE",
        help="write here (it appears only once complete) instead of stdout",
    )
    i_exp.add_argument(
        "--concurrency",
        type=_positive_int,
        default=8,
        metavar="N",
        help="pages fetched at once (default %(default)s)",
    )
    i_exp.add_argument(
        "--page-size",
        type=_positive_int,
        default=100,
        metavar="N",
        help="installations per page (default %(default)s)",
    )
    i_exp.set_defaults(handler=lambda a: _run_with_client(a, _installations_export))

    # request -------------------------------------------------------------------------
    req = sub.add_parser(
        "request",
        help="call any endpoint with the right credential and print the JSON",
        description="Call any endpoint and print the JSON answer. The credential: the "
        "installation's token with --installation; the app JWT for /app/... paths; the app "
        "access token otherwise (e.g. /projects). Only GET and HEAD are retried.",
        parents=both,
        epilog=ENVIRONMENT_HELP,
        formatter_class=formatter,
    )
    req.add_argument("method", metavar="METHOD", help="GET, POST, PUT, PATCH, DELETE, ...")
    req.add_argument("path", metavar="PATH", help="e.g. /organizations/ORG_ID")
    req.add_argument("--installation", metavar="ID", help="act as this installation")
    req.add_argument(
        "--data", metavar="JSON|@FILE|-", help="JSON body: the text, @file, or - for stdin"
    )
    req.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="query parameter (repeatable)",
    )
    req.add_argument(
        "--raw-output", action="store_true", help="print a string answer without JSON quotes"
    )
    req.set_defaults(handler=_cmd_request)

    # key -----------------------------------------------------------------------------
    key = sub.add_parser("key", help="the app's private key: fingerprint, live check")
    key_sub = key.add_subparsers(dest="key_command", metavar="COMMAND", required=True)
    k_fp = key_sub.add_parser(
        "fingerprint",
        help="the key's SHA-256 fingerprint",
        description="The SHA-256 fingerprint of the private key's public half: base64 of "
        "SHA-256 over the DER SubjectPublicKeyInfo, shown as SHA256:..., the form GitHub-style "
        "dashboards show. ICR's exact fingerprint format is unconfirmed (not in its docs): "
        "compare with the app dashboard before relying on it. Needs no app id or network.",
        parents=both,
        epilog=ENVIRONMENT_HELP,
        formatter_class=formatter,
    )
    k_fp.add_argument("--raw", action="store_true", help="print only SHA256:...")
    k_fp.add_argument("--pkcs11-uri", metavar="URI", help=_PKCS11_URI_HELP)
    k_fp.set_defaults(handler=_cmd_key_fingerprint)
    k_check = key_sub.add_parser(
        "check",
        help="sign an app JWT and call the API once with it",
        description="Sign an app JWT and call GET /app/installations?limit=1 once, without "
        "retries: exit 0 means the app id, the key and the base URL work together.",
        parents=both,
        epilog=ENVIRONMENT_HELP,
        formatter_class=formatter,
    )
    k_check.add_argument("--pkcs11-uri", metavar="URI", help=_PKCS11_URI_HELP)
    k_check.set_defaults(handler=_cmd_key_check)
    return parser


# -- errors -------------------------------------------------------------------------------

_PKCS11_URI_HELP = (
    "use the key in a PKCS#11 token (HSM) instead of a PEM: "
    "pkcs11:token=LABEL;object=KEY?module-path=/path/to/module.so; the PIN from the URI's "
    "pin-source=FILE or pin-value=, else from ICR_PKCS11_PIN (needs icr-async[pkcs11])"
)
_KEY_HINT = "check ICR_APP_ID and the private key; is the key registered for this app?"


def _hint(exc: BaseException, args: argparse.Namespace | None) -> str | None:
    """What to do about ``exc``, in a few words."""
    base_url = getattr(args, "resolved_base_url", None)
    if isinstance(exc, AuthenticationError):
        if exc.path == "/app/installations/token":
            return "the token is not valid: already revoked, expired or mistyped"
        if exc.path.startswith("/app/"):
            return _KEY_HINT
        return "the access token was refused; rerun with --debug to see the requests"
    if isinstance(exc, NotFoundError):
        if exc.path.startswith("/app/installations/"):
            return "no installation with that id for this app; see 'icr-async installations list'"
        return "check the path and the ids in it"
    if isinstance(exc, PermissionDeniedError):
        return (
            "the credential does not reach this resource: check the ids in the path and the "
            "permissions the installation granted"
        )
    if isinstance(exc, RateLimitedError):
        if exc.retry_after is not None:
            return f"try again in {exc.retry_after:.0f} s"
        return "try again later"
    if isinstance(exc, UnsupportedAPIVersionError):
        return "set --api-version or ICR_API_VERSION to a supported date (default 2023-06-16)"
    if isinstance(exc, ServerError):
        return "the ICR server failed; try again later"
    if isinstance(exc, APIError) and exc.status == 400:
        return "the server refused the request as malformed; check --data, --param and the flags"
    if isinstance(exc, RequestTimeoutError):
        return f"the server did not answer in time; is the base URL {base_url} right?"
    if isinstance(exc, TransportError):
        return (
            f"is the base URL {base_url} right? Set ICR_BASE_URL or --base-url; "
            "for a local emulator run 'icr-async emulator'"
        )
    if isinstance(exc, ResponseDecodeError):
        return "the answer is not the JSON this endpoint promises; rerun with --debug"
    if isinstance(exc, PaginationError):
        return "the server's pagination is inconsistent; try another --page-size"
    if isinstance(exc, TokenError):
        return "an installation token lives 2 hours; ask for a shorter --min-ttl"
    if isinstance(exc, ConfigurationError):
        text = exc.message.lower()
        for words, hint in (
            (("base_url",), "check --base-url or ICR_BASE_URL"),
            (("api_version",), "check --api-version or ICR_API_VERSION"),
            (("app_id", "app id"), "check --app-id or ICR_APP_ID"),
            (
                ("key",),
                "check --private-key-path, ICR_PRIVATE_KEY_PATH or ICR_PRIVATE_KEY",
            ),
        ):
            if any(word in text for word in words):
                return hint
    return None


def _report(message: str, hint: str | None) -> None:
    # One line, whatever the message holds: scripts grep it, people read the first line.
    text = " ".join(redact_text(message).split())
    if hint:
        text += f" ({hint})"
    sys.stderr.write(f"{PROG}: error: {text}\n")
    sys.stderr.flush()


def _print_traceback(exc: BaseException) -> None:
    # Exception texts are redacted already; redacting the whole traceback again costs
    # nothing and also covers messages of third-party exceptions in the chain.
    sys.stderr.write(redact_text("".join(traceback.format_exception(exc))))


class _RedactingFormatter(logging.Formatter):
    """Formats a record, then masks anything that looks like a token, JWT or key."""

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record))


@contextlib.contextmanager
def _logging(debug: bool) -> Iterator[None]:
    logger = logging.getLogger("icr_async")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        _RedactingFormatter(
            "icr-async: %(levelname)s %(name)s: %(message)s"
            if debug
            else "icr-async: %(levelname)s: %(message)s"
        )
    )
    saved = (logger.level, logger.propagate)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if debug else logging.WARNING)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status (0 ok, 1 API error, 2 usage error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    args: argparse.Namespace | None = None
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        debug = bool(getattr(args, "debug", False))
        handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
        if handler is None:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        with _logging(debug):
            return handler(args)
    except UsageError as exc:
        if debug:
            _print_traceback(exc)
        _report(exc.message, exc.hint)
        return EXIT_USAGE
    except (ConfigurationError, InvalidArgumentError) as exc:
        if debug:
            _print_traceback(exc)
        _report(exc.message, _hint(exc, args))
        return EXIT_USAGE
    except ICRError as exc:
        if debug:
            _print_traceback(exc)
        _report(exc.message, _hint(exc, args))
        return EXIT_API
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`... | head`): stop quietly, and point stdout at /dev/null
        # so the interpreter's final flush does not complain either.
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return EXIT_API
    except OSError as exc:  # a file that cannot be written, a port already in use
        if debug:
            _print_traceback(exc)
        _report(str(exc), "rerun with --debug for details")
        return EXIT_API


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
