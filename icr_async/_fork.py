"""Everything the package does after ``fork``, in one place.

``os.getpid()`` is a real system call on current glibc, and the transport would make one for
every request. Instead a counter is bumped in the child after every ``fork``; objects that
hold per-process state (the aiohttp session, in-flight token mints, the blocking client's
loop lease) remember the value they were made under and start afresh when it differs.

Modules that must reset process-wide state in the child (the blocking client's shared loop)
register a callback with :func:`after_fork_in_child` instead of calling
``os.register_at_fork`` themselves, so the platform check lives here once: Windows has no
``fork`` and no ``os.register_at_fork``, and importing the package there must still work.
"""

from __future__ import annotations

import os
from collections.abc import Callable

__all__ = ["after_fork_in_child", "generation"]

generation = 0
"""How many forks this process descends from (read as ``_fork.generation``)."""

_callbacks: list[Callable[[], None]] = []


def after_fork_in_child(callback: Callable[[], None]) -> None:
    """Run ``callback`` in every child process right after a ``fork`` (in registration order).

    A no-op registration on platforms without ``fork``: there is no child to clean up.
    """
    _callbacks.append(callback)


def _forked() -> None:
    global generation
    generation += 1
    for callback in _callbacks:
        callback()


if hasattr(os, "register_at_fork"):  # pragma: no branch - POSIX; Windows has no fork
    os.register_at_fork(after_in_child=_forked)
