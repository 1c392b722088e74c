"""Helpers for tests that run the ``icr-async`` command (in this process or as a subprocess)
and the examples.

The emulator runs on its own event loop in a background thread, so that a test can block on
a subprocess (or a pseudo-terminal), or run ``cli.main`` (which has its own ``asyncio.run``),
while the emulator keeps answering it.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from icr_async import AsyncICRClient, RetirementData, cli
from icr_async.testing import EmulatorApp, EmulatorServer, ICREmulator

REPO = Path(__file__).resolve().parent.parent
TIMEOUT = 60.0
"""Upper bound, in seconds, for any one subprocess (they take about half a second)."""
JWT_RE = re.compile(r"eyJ[0-9A-Za-z_-]{5,}\.")
TOKEN_RE = re.compile(r"crs_[0-9a-f]{20,}")


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


# -- what a run must show -------------------------------------------------------------------


def assert_one_line_error(stderr: str, *fragments: str) -> None:
    """stderr is exactly one ``icr-async: error:`` line holding ``fragments``."""
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("icr-async: error: "), stderr
    for fragment in fragments:
        assert fragment in lines[0], stderr
    assert "Traceback" not in stderr


def assert_no_secret(text: str) -> None:
    """No token, JWT or private key in ``text``."""
    assert not TOKEN_RE.search(text), text
    assert not JWT_RE.search(text), text
    assert "PRIVATE KEY" not in text


def ok_json(result: CliResult | subprocess.CompletedProcess[str]) -> Any:
    """The JSON on stdout of a run that succeeded silently."""
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return json.loads(result.stdout)


# -- in this process ----------------------------------------------------------------------


@dataclass(frozen=True)
class CliResult:
    """What ``run_main`` saw: the shape of ``run_cli``'s ``CompletedProcess[str]``, plus the
    bytes of stdout (a certificate PDF is not text)."""

    args: list[str]
    returncode: int
    stdout_bytes: bytes
    stderr: str

    @property
    def stdout(self) -> str:
        """stdout as text (UTF-8, as the CLI writes it)."""
        return self.stdout_bytes.decode()


class _Stream(io.TextIOWrapper):
    """A text stream over bytes, with ``.buffer``: a pipe or a file (``isatty()`` False) by
    default, or a terminal (True) for the commands that behave differently on one."""

    def __init__(self, data: bytes = b"", *, tty: bool = False) -> None:
        super().__init__(io.BytesIO(data), encoding="utf-8", newline="\n", write_through=True)
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty

    def value(self) -> bytes:
        self.flush()
        raw = self.buffer
        assert isinstance(raw, io.BytesIO)
        return raw.getvalue()


@contextlib.contextmanager
def environment(env: Mapping[str, str]) -> Iterator[None]:
    """``os.environ`` is ``env`` inside, and exactly what it was afterwards.

    ``PYTHON*`` variables stay as they are: the interpreter read them at start-up, and
    asyncio's debug mode (``PYTHONASYNCIODEBUG``) stays as the test run has it.
    """
    saved = dict(os.environ)
    wanted = {k: v for k, v in env.items() if not k.startswith("PYTHON")}
    wanted.update({k: v for k, v in saved.items() if k.startswith("PYTHON")})
    try:
        _set_environ(wanted)
        yield
    finally:
        _set_environ(saved)


def _set_environ(wanted: Mapping[str, str]) -> None:
    for name in [n for n in os.environ if n not in wanted]:
        del os.environ[name]
    for name, value in wanted.items():
        if os.environ.get(name) != value:
            os.environ[name] = value


def _logger_state(logger: logging.Logger) -> tuple[list[logging.Handler], int, bool]:
    return list(logger.handlers), logger.level, logger.propagate


def run_main(
    *args: str, env: Mapping[str, str], input: str | None = None, terminal: str = ""
) -> CliResult:
    """``icr_async.cli.main(ARGS)`` in this process, as ``run_cli`` runs it in a child.

    stdin holds ``input`` (or nothing); stdout and stderr are pipes, or a terminal for the
    stream ``terminal`` names ("stdout" or "stderr"); ``os.environ`` is ``env`` for the call.
    argparse's exits (``--help``, ``--version``) become the return code, as in a child. The
    streams, the environment and the SDK logger's handlers are restored afterwards; a
    handler the CLI left behind fails the test (it would write into the next test's stderr).
    """
    assert terminal in ("", "stdout", "stderr"), terminal
    stdin = _Stream((input or "").encode())
    stdout = _Stream(tty=terminal == "stdout")
    stderr = _Stream(tty=terminal == "stderr")
    logger = logging.getLogger("icr_async")
    before = _logger_state(logger)
    saved = sys.stdin, sys.stdout, sys.stderr
    try:
        with environment(env):
            sys.stdin, sys.stdout, sys.stderr = stdin, stdout, stderr
            try:
                returncode = cli.main(list(args))
            except SystemExit as exc:  # what the interpreter does with it
                if exc.code is None or isinstance(exc.code, int):
                    returncode = exc.code or 0
                else:
                    print(exc.code, file=sys.stderr)
                    returncode = 1
            finally:
                sys.stdin, sys.stdout, sys.stderr = saved
    finally:
        after = _logger_state(logger)
        logger.handlers[:] = before[0]
        logger.setLevel(before[1])
        logger.propagate = before[2]
    assert after == before, f"icr-async {' '.join(args)} left the SDK logger changed: {after}"
    return CliResult(list(args), returncode, stdout.value(), stderr.value().decode())


# -- a retirement certificate ---------------------------------------------------------------


@dataclass(frozen=True)
class Certificate:
    """A retirement made through the SDK, and its certificate as the SDK downloads it."""

    installation_id: str
    organization_id: str
    retirement_id: str
    pdf: bytes

    @property
    def path(self) -> str:
        """The certificate's API path."""
        return f"/organizations/{self.organization_id}/retirements/{self.retirement_id}/pdf"


def make_certificate(emu: EmulatorThread) -> Certificate:
    """Retire credits of the first installation's organization with the SDK (the emulator's
    staff grant them first) and fetch the certificate's bytes with the SDK."""
    inst = emu.emulator.installations(emu.app.app_id)[0]
    org_id = inst["organization"]["id"]
    credit_id = emu.emulator.ledger.grant_credits(org_id, amount=10)

    async def retire() -> Certificate:
        async with AsyncICRClient(
            emu.app.app_id, private_key_path=emu.key_path, base_url=emu.url, env=False
        ) as client:
            scoped = client.installation(inst["id"])
            await scoped.retire_credits(
                credit_id=credit_id,
                amount=3,
                retirement_data=RetirementData(reason="CLI test", beneficiary_name="Ada"),
            )
            (made,) = [r for r in await scoped.list_retirements() if r.beneficiary == "Ada"]
            pdf = await scoped.get_retirement_pdf(made.id)
            return Certificate(inst["id"], org_id, made.id, pdf)

    certificate = asyncio.run(retire())
    assert certificate.pdf.startswith(b"%PDF-")  # the SDK's download: the CLI must match it
    return certificate
