"""The standalone emulator: ``python -m icr_async.testing`` and ``icr-async emulator``.

Benchmarks and demos start it in a subprocess with ``--port 0 --ready-file PATH`` and wait
for the file to appear; SIGINT or SIGTERM stops it cleanly with exit status 0.

Every option of :class:`~icr_async.testing.ICREmulator` that models a reading ICR's docs
leave open has a flag; ``--variant NAME`` starts from a preset of
:data:`~icr_async.testing.VARIANTS` and the other flags override it. ``--webhook-url``
makes the emulator deliver its signed webhooks to an app written in any language.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shlex
import signal
import sys
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import attrs

from ._emulator import ICREmulator
from ._http import check_loopback
from ._options import check_clock_offset, check_request_id_header, check_ttl
from ._variants import VARIANTS, EmulatorOptions

__all__ = ["add_arguments", "emulator_options", "main", "run"]

DESCRIPTION = "Run the ICR Apps API emulator on loopback, with one app."

WEBHOOK_SECRET_ENV = "ICR_WEBHOOK_SECRET"
"""Read when ``--webhook-secret`` is not given (keeps the secret out of ``ps`` output)."""

T = TypeVar("T")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m icr_async.testing", description=DESCRIPTION)
    add_arguments(parser)
    return parser


def _argument(check: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse ``type`` turning the check's ``ValueError`` into a usage error."""

    def parse(text: str) -> T:
        try:
            return check(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None


def _seconds_offset(text: str) -> float:
    return check_clock_offset(_float(text))


def _ttl(text: str) -> float:
    return check_ttl(_float(text), "a token lifetime")


def _header(text: str) -> str | None:
    return None if text.lower() == "none" else check_request_id_header(text)


def _webhook_url(text: str) -> str:
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be http(s)://host:port/path, got {text!r}")
    try:
        check_loopback(parts.hostname)
    except ValueError:
        raise ValueError(
            f"webhooks go to loopback hosts only (127.0.0.1, ::1, localhost), not {parts.hostname!r}"
        ) from None
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the emulator's options to ``parser`` (shared with ``icr-async emulator``)."""
    parser.add_argument(
        "--host", default="127.0.0.1", help="loopback address (default %(default)s)"
    )
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    parser.add_argument("--installations", type=int, default=50, help="installations of the app")
    parser.add_argument(
        "--key-out",
        default="icr-emulator-key.pem",
        help="where to write the app's private key (mode 0600; default %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated data")
    parser.add_argument("--ready-file", help="write the base URL here once listening")

    readings = parser.add_argument_group(
        "ICR readings",
        "Where ICR's docs leave behaviour open, pick the reading to serve. --variant sets "
        "them all from a preset (default icr-docs: the documented readings); the flags "
        "below override single options.",
    )
    readings.add_argument(
        "--variant",
        choices=list(VARIANTS),
        default="icr-docs",
        help="a preset: " + "; ".join(f"{name} = {v.description}" for name, v in VARIANTS.items()),
    )
    readings.add_argument(
        "--page-base",
        type=int,
        choices=(0, 1),
        help="number of the first page; with 1, page=0 serves the first page too",
    )
    readings.add_argument(
        "--page-end",
        dest="page_end_style",
        choices=("null", "absent"),
        help="nextPage/prevPage where there is none: null or left out",
    )
    readings.add_argument(
        "--post-status", type=int, choices=(200, 201), help="status of a successful POST"
    )
    readings.add_argument(
        "--clock-offset",
        type=_argument(_seconds_offset),
        metavar="SECONDS",
        help="the server's clock against this machine's, e.g. -420 (Date, expiresAt, "
        "JWT checks and Retry-After dates follow it)",
    )
    readings.add_argument(
        "--installation-token-ttl",
        "--token-ttl",
        dest="installation_token_ttl",
        type=_argument(_ttl),
        metavar="SECONDS",
        help="installation token lifetime (docs: 7200)",
    )
    readings.add_argument(
        "--app-token-ttl",
        type=_argument(_ttl),
        metavar="SECONDS",
        help="app token lifetime (undocumented; default 3600)",
    )
    readings.add_argument(
        "--retry-after-style",
        choices=("seconds", "http-date"),
        help="form of every Retry-After header sent (an HTTP date is on the server's clock)",
    )
    readings.add_argument(
        "--request-id-header",
        type=_argument(_header),
        default=argparse.SUPPRESS,
        metavar="NAME",
        help="header carrying a unique id on every response (default x-icr-request-id; "
        "'none' for no id)",
    )

    hooks = parser.add_argument_group(
        "webhooks",
        "Deliver the emulator's signed webhooks (installed, uninstalled, "
        "organizationTransaction, warehouseTransaction) to an app in any language. "
        "Loopback URLs only: the emulator never sends anything off this machine.",
    )
    hooks.add_argument(
        "--webhook-url",
        type=_argument(_webhook_url),
        metavar="URL",
        help="e.g. http://127.0.0.1:3000/webhooks (loopback host only)",
    )
    hooks.add_argument(
        "--webhook-secret",
        metavar="SECRET",
        help=f"signs deliveries (header x-icr-signature-256); default ${WEBHOOK_SECRET_ENV}, "
        "and without either, deliveries are unsigned",
    )


_FLAG_OPTIONS = (
    "page_base",
    "page_end_style",
    "post_status",
    "clock_offset",
    "installation_token_ttl",
    "app_token_ttl",
    "retry_after_style",
)


def emulator_options(args: argparse.Namespace) -> EmulatorOptions:
    """The emulator's options from parsed arguments: the variant, then the single flags."""
    changes: dict[str, Any] = {}
    for name in _FLAG_OPTIONS:
        value = getattr(args, name, None)
        if value is not None:
            changes[name] = value
    # --request-id-header none means "no ids", so the flag is absent (SUPPRESS) when not given.
    if hasattr(args, "request_id_header"):
        changes["request_id_header"] = args.request_id_header
    variant = VARIANTS[getattr(args, "variant", None) or "icr-docs"]
    return attrs.evolve(variant, **changes).kwargs()


def _write_private(path: str, text: str) -> None:
    # O_CREAT with 0o600 keeps the key unreadable to others from the first byte on.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(text)
    os.chmod(path, 0o600)  # the file may have existed with wider permissions


def _write_atomically(path: str, text: str) -> None:
    # A waiter polling for the file must never read it half-written.
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(temporary, path)


def _describe(args: argparse.Namespace, options: EmulatorOptions) -> str:
    settings = " ".join(f"{name}={value!r}" for name, value in options.items())
    return f"ICR reading: {args.variant or 'icr-docs'} ({settings})\n"


async def _run(args: argparse.Namespace) -> int:
    options = emulator_options(args)
    emulator = ICREmulator(seed=args.seed, **options)
    app = emulator.create_app(args.installations)
    key_path: str = args.key_out
    _write_private(key_path, app.private_key_pem)
    secret = args.webhook_secret or os.environ.get(WEBHOOK_SECRET_ENV) or None
    if args.webhook_url:
        # After create_app: the initial installations are not announced, later events are.
        emulator.webhooks.configure(args.webhook_url, secret, app_id=app.app_id)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    handled: list[signal.Signals] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
            handled.append(signum)
    try:
        async with emulator.serve(args.host, args.port) as server:
            out = sys.stdout
            out.write(
                f"ICR emulator listening on {server.url}\n"
                f"app id: {app.app_id}\n"
                f"app name id: {app.app_name_id}\n"
                f"installations: {args.installations}\n"
                f"private key: {key_path}\n"
            )
            out.write(_describe(args, options))
            if args.webhook_url:
                signing = (
                    "signed: x-icr-signature-256 = sha256=HMAC-SHA256(secret, signedData)"
                    if secret
                    else "unsigned (no --webhook-secret)"
                )
                out.write(
                    f"webhooks: POST {args.webhook_url} for installed, uninstalled, "
                    f"organizationTransaction and warehouseTransaction events from now on; "
                    f"{signing}\n"
                )
            out.write(
                "\n"
                f"export ICR_APP_ID={shlex.quote(app.app_id)}\n"
                f"export ICR_PRIVATE_KEY_PATH={shlex.quote(key_path)}\n"
                f"export ICR_BASE_URL={shlex.quote(server.url)}\n"
            )
            out.flush()
            if args.ready_file:
                _write_atomically(args.ready_file, server.url + "\n")
            await stop.wait()
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)
    sys.stdout.write("ICR emulator stopped\n")
    sys.stdout.flush()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the emulator until SIGINT/SIGTERM; return the process exit status."""
    return run(_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Run the emulator with options parsed by a parser given :func:`add_arguments`."""
    # Absolute, so the printed export line works from any directory.
    args.key_out = os.path.abspath(args.key_out)
    if args.webhook_secret and not args.webhook_url:
        sys.stderr.write("error: --webhook-secret needs --webhook-url\n")
        return 2
    try:
        return asyncio.run(_run(args))
    except ValueError as error:  # e.g. a non-loopback --host
        sys.stderr.write(f"error: {error}\n")
        return 2
    except KeyboardInterrupt:  # platforms without loop signal handlers
        return 0
