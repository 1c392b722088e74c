"""Helpers for tests that run the ``icr-async`` command and the examples as subprocesses.

The emulator runs on its own event loop in a background thread, so that a test can block on
a subprocess (or a pseudo-terminal) while the emulator keeps answering it.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

from icr_async.testing import EmulatorApp, EmulatorServer, ICREmulator

REPO = Path(__file__).resolve().parent.parent
TIMEOUT = 60.0
"""Upper bound, in seconds, for any one subprocess (they take about half a second)."""


class EmulatorThread:
    """``with EmulatorThread(pem, tmp_path) as emu:`` serves an emulator on 127.0.0.1.

    ``emu.env`` holds the environment variables that point the CLI and the SDK at it;
    ``emu.app`` is the app (its key written to ``emu.key_path``).
    """

    def __init__(
        self, private_key_pem: str, directory: Path, *, seed: int = 0, installations: int = 12
    ) -> None:
        self.emulator = ICREmulator(seed=seed)
        self.app: EmulatorApp = self.emulator.create_app(
            installations, private_key_pem=private_key_pem
        )
        self.key_path = directory / "app-key.pem"
        self.key_path.write_text(private_key_pem)
        self.key_path.chmod(0o600)
        self.server: EmulatorServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="icr-emulator", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # surfaced in __enter__ or __exit__
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with self.emulator.serve() as server:
            self.server = server
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> EmulatorThread:
        self._thread.start()
        if not self._ready.wait(TIMEOUT) or self.server is None:
            self._thread.join(TIMEOUT)
            raise RuntimeError(f"the emulator did not start: {self._error!r}")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(TIMEOUT)
        assert not self._thread.is_alive(), "the emulator thread did not stop"
        if self._error is not None:
            raise self._error

    @property
    def url(self) -> str:
        """The emulator's base URL."""
        assert self.server is not None
        return self.server.url

    @property
    def installation_ids(self) -> list[str]:
        """The app's installation ids, in listing order."""
        return [inst["id"] for inst in self.emulator.installations(self.app.app_id)]

    @property
    def env(self) -> dict[str, str]:
        """A child environment pointing at this emulator (no other ICR_* variable)."""
        return child_env(
            ICR_APP_ID=self.app.app_id,
            ICR_PRIVATE_KEY_PATH=str(self.key_path),
            ICR_BASE_URL=self.url,
        )


def child_env(**icr: str) -> dict[str, str]:
    """``os.environ`` without ICR_* settings, plus ``icr``, with this checkout importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ICR_")}
    # The children show what a user sees. asyncio's debug mode (tox sets it) would add
    # slow-callback reports to stderr (RSA key generation takes ~0.1 s); every warning is
    # still shown, so a ResourceWarning or DeprecationWarning breaks the stderr checks.
    for name in ("PYTHONASYNCIODEBUG", "PYTHONDEVMODE"):
        env.pop(name, None)
    env["PYTHONWARNINGS"] = "default"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    # The venv's bin first, so `icr-async` in a shell line is this interpreter's.
    env["PATH"] = os.pathsep.join(filter(None, [str(Path(sys.executable).parent), env.get("PATH")]))
    env.update(icr)
    return env


def run_cli(
    *args: str, env: dict[str, str], input: str | None = None, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """``python -m icr_async ARGS`` with a bounded timeout; output captured as text."""
    if input is None:
        kwargs.setdefault("stdin", subprocess.DEVNULL)  # never the test runner's terminal
    return subprocess.run(
        [sys.executable, "-m", "icr_async", *args],
        env=env,
        input=input,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
        **kwargs,
    )
