"""The standalone emulator: ``python -m icr_async.testing``.

Benchmarks and demos start it in a subprocess with ``--port 0 --ready-file PATH`` and wait
for the file to appear; SIGINT or SIGTERM stops it cleanly with exit status 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shlex
import signal
import sys
from collections.abc import Sequence

from ._emulator import ICREmulator

__all__ = ["add_arguments", "main", "run"]

DESCRIPTION = "Run the ICR Apps API emulator on loopback, with one app."


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m icr_async.testing", description=DESCRIPTION)
    add_arguments(parser)
    return parser


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
    parser.add_argument(
        "--token-ttl", type=float, default=7200.0, help="installation token lifetime, seconds"
    )
    parser.add_argument("--ready-file", help="write the base URL here once listening")


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


async def _run(args: argparse.Namespace) -> int:
    emulator = ICREmulator(seed=args.seed, installation_token_ttl=args.token_ttl)
    app = emulator.create_app(args.installations)
    key_path: str = args.key_out
    _write_private(key_path, app.private_key_pem)

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
    try:
        return asyncio.run(_run(args))
    except ValueError as error:  # e.g. a non-loopback --host
        sys.stderr.write(f"error: {error}\n")
        return 2
    except KeyboardInterrupt:  # platforms without loop signal handlers
        return 0
