"""Fork detection without a system call per request.

``os.getpid()`` is a real system call on current glibc, and the transport would make one for
every request. Instead a counter is bumped in the child after every ``fork``; objects that
hold per-process state (the aiohttp session, in-flight token mints) remember the value they
were made under and start afresh when it differs.
"""

from __future__ import annotations

import os

generation = 0
"""How many forks this process descends from (read as ``_fork.generation``)."""


def _forked() -> None:
    global generation
    generation += 1


if hasattr(os, "register_at_fork"):  # pragma: no branch - POSIX; Windows has no fork
    os.register_at_fork(after_in_child=_forked)
