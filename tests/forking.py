"""Run a function in a forked child and get back what it sends: the one place the fork tests
(blocking client, background loop, PKCS#11 signer) start, bound and reap their child."""

from __future__ import annotations

import multiprocessing
import warnings
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, NamedTuple

TIMEOUT = 30.0


class Child(NamedTuple):
    """What a forked child sent, how it exited, and which process it was."""

    answer: Any
    exitcode: int | None
    pid: int | None


def fork_and_receive(target: Callable[..., None], *args: Any) -> Child:
    """Fork a child running ``target(*args, send)``; return what it sent and how it ended.

    The child must send exactly one object on ``send``. Bounded: the answer is awaited for
    ``TIMEOUT`` seconds, and a child still alive after as long is killed by its process.
    """
    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=target, args=(*args, send))
    with warnings.catch_warnings():
        # Python 3.12+ warns that forking a process with threads may deadlock the child;
        # surviving exactly that is what the fork tests are about.
        warnings.filterwarnings(
            "ignore", message=r".*multi-threaded.*fork", category=DeprecationWarning
        )
        proc.start()
    send.close()
    try:
        assert receive.poll(TIMEOUT), f"the child did not answer in {TIMEOUT:g} s"
        answer = receive.recv()
    finally:
        proc.join(timeout=TIMEOUT)
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=5)
        receive.close()
    return Child(answer, proc.exitcode, proc.pid)


__all__ = ["Child", "Connection", "fork_and_receive"]
