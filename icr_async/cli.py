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

This module holds the parser, ``main`` and the small commands; the others live beside it:
``_cli_request.py`` (``request``: raw bytes, ``--include``, ``--paginate``),
``_cli_export.py`` (``installations``), ``_cli_errors.py`` (one-line errors, hints in shell
terms, ``--debug`` logging) and ``_cli_common.py`` (exit statuses, output, settings), which
imports none of the others.

Exit status: 0 success (also when the reader of a pipe goes away early, ``... | head -1``),
1 the API or the network failed, 2 a usage or configuration mistake, 130 interrupted. An error is one line on stderr, ``icr-async: error: WHAT (WHAT TO DO)``;
``--debug`` adds the traceback and the SDK's debug log, both passed through the SDK's secret
redaction. Only the ``token`` commands print a secret: printing one is their job.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ._cli_common import (
    EXIT_API,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    PROG,
    UsageError,
    _credential_options,
    _debug_options,
    _non_negative_int,
    _Parser,
    _positive_int,
    _print_json,
    _print_line,
    _run_with_client,
    _seconds,
    _setting,
)
from ._cli_errors import hint_for, in_shell_terms, print_traceback, report, sdk_logging
from ._cli_export import installations_export, installations_get, installations_list
from ._cli_request import cmd_request
from ._converters import unstructure
from ._keys import load_private_key
from ._retry import RetryPolicy
from ._version import __version__
from .client import AsyncICRClient
from .errors import ConfigurationError, ICRError, InvalidArgumentError

if TYPE_CHECKING:
    from .contrib.pkcs11 import PKCS11Signer

__all__ = ["EXIT_API", "EXIT_OK", "EXIT_USAGE", "UsageError", "build_parser", "main"]

ENVIRONMENT_HELP = """\
environment:
  ICR_APP_ID            the app's id (or --app-id)
  ICR_PRIVATE_KEY_PATH  a PEM file with the app's private key (or --private-key-path)
  ICR_PRIVATE_KEY       the PEM text itself (literal \\n accepted)
  ICR_BASE_URL          the API (default https://api.carbonregistry.com; or --base-url, --sandbox)
  ICR_API_VERSION       the x-icr-api-version header (default 2023-06-16)

exit status: 0 success, 1 API or network error, 2 usage or configuration error.
Start a local emulator with 'icr-async emulator' and paste the lines it prints."""


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
                "expiresAt": unstructure(token.expires_at),
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
    if not await client.revoke_token(args.token_value):
        # The SDK answers False for a 401 (nothing left to revoke); a shell wants a failure.
        report(
            "the server refused the token (401 Unauthorized)",
            "the token is not valid: already revoked, expired or mistyped",
        )
        return EXIT_API
    _print_json({"revoked": True})
    return EXIT_OK


def _cmd_token_revoke(args: argparse.Namespace) -> int:
    args.token_value = _token_to_revoke(args)  # before any client: a usage error comes first
    return _run_with_client(args, _token_revoke)


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
    with signer:
        return _run_with_client(args, _key_check, retry=retry, signer=signer)


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

    demo = sub.add_parser(
        "demo",
        help="run the full app flow against the embedded emulator",
        description="Run the whole app flow against an emulator started inside this process: "
        "no credentials, no setup, no network beyond 127.0.0.1. It mints an app token, lists "
        "the installations page by page, mints installation tokens for many concurrent "
        "callers (one mint per installation), fetches their organizations and revokes a "
        "token, printing one line per step. --debug adds the SDK's log on stderr.",
        parents=[debug],
    )
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
        "app",
        help="mint an app access token",
        parents=both,
        epilog=ENVIRONMENT_HELP,
        formatter_class=formatter,
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
    i_list.set_defaults(handler=lambda a: _run_with_client(a, installations_list))
    i_get = insts_sub.add_parser(
        "get",
        help="one installation, as JSON",
        parents=both,
        epilog=ENVIRONMENT_HELP,
        formatter_class=formatter,
    )
    i_get.add_argument("installation_id", metavar="ID", help="the installation's id")
    i_get.set_defaults(handler=lambda a: _run_with_client(a, installations_get))
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
    i_exp.set_defaults(handler=lambda a: _run_with_client(a, installations_export))

    # request -------------------------------------------------------------------------
    req = sub.add_parser(
        "request",
        help="call any endpoint with the right credential and print the answer",
        # Raw layout (for the examples and the epilog): the lines are broken by hand.
        description="Call any endpoint and print the answer: JSON pretty-printed; anything "
        "else\n(a retirement certificate PDF) as its raw bytes, to --output FILE or to a "
        "stdout\nthat is a file or a pipe, never to a terminal. The credential: the "
        "installation's\ntoken with --installation; the app JWT for /app/... paths; the app "
        "access token\notherwise (e.g. /projects). Only GET and HEAD are retried.\n\n"
        "examples:\n"
        "  icr-async request GET /organizations/ORG/retirements/ID/pdf --installation I "
        "-o cert.pdf\n"
        "  icr-async request GET /app/installations --paginate --lines | head -1\n"
        "  icr-async request GET /organizations/ORG --installation I --include",
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
    req.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="write the answer's bytes, as received, to FILE (it appears only once complete; "
        "'-' for stdout even on a terminal)",
    )
    req.add_argument(
        "-i",
        "--include",
        action="store_true",
        help="print the status line and the response headers (credentials masked) before "
        "the body, on stdout",
    )
    req.add_argument(
        "--paginate",
        action="store_true",
        help="GET every page of a list, following the server's nextPage, and print the items "
        "as one JSON array (limit: --param limit=N, default 100; first page: --param page=N)",
    )
    req.add_argument(
        "--lines",
        action="store_true",
        help="with --paginate: one item per line (JSON Lines), printed as each page arrives",
    )
    req.set_defaults(handler=cmd_request)

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
        with sdk_logging(debug):
            status = handler(args)
        # Flushed here, not at interpreter exit: a reader that went away (`| head -1`) shows
        # up as BrokenPipeError below instead of an "Exception ignored" message after main.
        sys.stdout.flush()
        return status
    except UsageError as exc:
        if debug:
            print_traceback(exc)
        report(exc.message, exc.hint)
        return EXIT_USAGE
    except (ConfigurationError, InvalidArgumentError) as exc:
        if debug:
            print_traceback(exc)
        report(in_shell_terms(exc.message), hint_for(exc, args))
        return EXIT_USAGE
    except ICRError as exc:
        if debug:
            print_traceback(exc)
        report(exc.message, hint_for(exc, args))
        return EXIT_API
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`... | head -1`): it has what it wanted, so this is a success,
        # as for other Unix tools. Point stdout at /dev/null, as the Python docs recommend
        # (signal module, "Note on SIGPIPE"), so that the interpreter's final flush of what
        # is still buffered does not fail again with "Exception ignored".
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        return EXIT_OK
    except OSError as exc:  # a file that cannot be written, a port already in use
        if debug:
            print_traceback(exc)
        report(str(exc), "rerun with --debug for details")
        return EXIT_API


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
