"""The ``icr-async`` command (also ``python -m icr_async``)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from ._version import __version__


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(
        prog="icr-async",
        description="The International Carbon Registry Apps API from a shell.",
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status (0 ok, 1 API error, 2 usage error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        from ._demo import run_demo

        if args.installations < 1 or args.concurrency < 1 or args.page_size < 1:
            parser.error("--installations, --concurrency and --page-size must be positive")
        return asyncio.run(
            run_demo(
                installations=args.installations,
                concurrency=min(args.concurrency, args.installations),
                page_size=args.page_size,
                out=sys.stdout,
            )
        )
    parser.print_help(sys.stderr)
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
