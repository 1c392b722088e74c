"""The ``icr-async`` command as a real process, where only a process shows the behaviour:
the interpreter's exit status, the console script, a real pipe (binary bytes, a reader that
leaves early), a real terminal, and signals.

Everything else runs ``cli.main`` in the test process (tests/test_cli.py): the same code, at
a fraction of the cost of a subprocess per run.
"""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_support import (
    TIMEOUT,
    EmulatorThread,
    assert_one_line_error,
    child_env,
    make_certificate,
    ok_json,
    run_cli,
    run_main,
)

from icr_async import PrivateKey

MODULE = [sys.executable, "-m", "icr_async"]
EMULATOR = [*MODULE, "emulator", "--port", "0"]


@pytest.fixture(scope="module")
def emu(private_key_pem: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorThread]:
    """One emulator (12 installations, seed 0) for the module, on a background thread."""
    with EmulatorThread(private_key_pem, tmp_path_factory.mktemp("cli-smoke")) as emulator:
        yield emulator


# -- the interpreter: help, exit statuses, the console script ------------------------------


def test_help_lists_every_subcommand() -> None:
    result = run_cli("--help", env=child_env())
    assert result.returncode == 0
    assert result.stderr == ""
    # Each subcommand is a line of the COMMAND list (its name alone would also match the
    # epilog: "ICR_PRIVATE_KEY_PATH" holds "KEY", "icr-async emulator" names the emulator).
    # A long name has its help on the next line.
    listed = re.findall(r"^ {4}(\w+)(?: {2,}\S|$)", result.stdout, flags=re.MULTILINE)
    assert listed == ["demo", "emulator", "token", "installations", "request", "key"]
    assert "ICR_PRIVATE_KEY_PATH" in result.stdout


def test_exit_statuses_reach_the_shell(emu: EmulatorThread) -> None:
    # main()'s status through `sys.exit(main())` in __main__, with real API calls against
    # the emulator (2, a usage error, takes the same path: tested in-process).
    page = ok_json(run_cli("installations", "list", "--limit", "2", env=emu.env))
    assert [i["id"] for i in page["installations"]] == emu.installation_ids[:2]
    assert page["pagination"]["total"] == 12
    missing = run_cli("installations", "get", "00000000-0000-4000-8000-000000000000", env=emu.env)
    assert (missing.returncode, missing.stdout) == (1, "")
    assert_one_line_error(missing.stderr, "404")


def test_console_script_and_module_agree() -> None:
    script = Path(sys.executable).with_name("icr-async")
    if not script.exists():
        pytest.skip("the icr-async console script is not installed in this environment")
    by_script = subprocess.run(
        [str(script), "--version"], capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    in_process = run_main("--version", env=child_env())  # what `python -m icr_async` runs
    assert by_script.returncode == in_process.returncode == 0
    assert by_script.stdout == in_process.stdout
    assert in_process.stdout.startswith("icr-async ")


# -- real pipes ----------------------------------------------------------------------------


def test_a_certificate_goes_to_a_pipe_byte_for_byte(emu: EmulatorThread) -> None:
    certificate = make_certificate(emu)
    args = ["request", "GET", certificate.path, "--installation", certificate.installation_id]
    result = subprocess.run(
        [*MODULE, *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        env=emu.env,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == b""
    assert result.stdout == certificate.pdf


@pytest.mark.parametrize(
    ("args", "first"),
    [
        (["installations", "export", "--page-size", "20"], b"{"),
        (["request", "GET", "/app/installations", "--paginate", "--param", "limit=50"], b"[\n"),
    ],
)
def test_a_closed_pipe_ends_quietly_with_status_0(
    args: list[str], first: bytes, private_key_pem: str, tmp_path: Path
) -> None:
    """``icr-async ... | head -1``: more output than a pipe holds, and the reader leaves."""
    with EmulatorThread(private_key_pem, tmp_path, installations=120) as emu:
        proc = subprocess.Popen(
            [*MODULE, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=emu.env,
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            proc.stdout.close()  # what `head -1` does once it has its line
            _, stderr = proc.communicate(timeout=TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=TIMEOUT)
    assert line.startswith(first)
    assert stderr.decode() == ""  # no traceback, no "Exception ignored"
    assert proc.returncode == 0


# -- a real terminal -------------------------------------------------------------------------


def _run_on_pty(args: list[str], env: dict[str, str], stream: str) -> tuple[int, str, str]:
    """Run the CLI with ``stream`` ("stdout" or "stderr") on a pseudo-terminal.

    Returns (exit status, what the terminal showed, what the other stream got).
    """
    master, slave = pty.openpty()
    pipes: dict[str, Any] = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    pipes[stream] = slave
    proc = subprocess.Popen([*MODULE, *args], stdin=subprocess.DEVNULL, env=env, **pipes)
    os.close(slave)
    shown = bytearray()
    try:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            readable, _, _ = select.select([master], [], [], 0.2)
            if readable:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: every writer closed the terminal
                    break
                if not chunk:
                    break
                shown += chunk
            elif proc.poll() is not None:
                break
        stdout, stderr = proc.communicate(timeout=TIMEOUT)
        other = stderr if stream == "stdout" else stdout
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=TIMEOUT)
        os.close(master)
    return proc.returncode, shown.decode(), (other or b"").decode()


def test_installations_list_is_a_table_on_a_terminal(emu: EmulatorThread) -> None:
    status, shown, stderr = _run_on_pty(
        ["installations", "list", "--limit", "2"], emu.env, "stdout"
    )
    assert status == 0
    assert stderr == ""
    lines = shown.splitlines()
    assert lines[0].split() == ["ID", "ORGANIZATION", "COUNTRY", "TYPE", "CREATED"]
    assert [line.split()[0] for line in lines[1:3]] == emu.installation_ids[:2]


# -- signals: the emulator subcommand --------------------------------------------------------


def test_emulator_subcommand_serves_until_sigint(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    key = tmp_path / "key.pem"
    proc = subprocess.Popen(
        [*EMULATOR, "--installations", "3", "--key-out", str(key), "--ready-file", str(ready)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    try:
        deadline = time.monotonic() + TIMEOUT
        # Bounded wait for the child to listen.
        while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.exists(), proc.stderr.read() if proc.stderr else ""
        url = ready.read_text().strip()
        assert PrivateKey.from_path(key).bits == 2048  # the key file is a usable key
        listed = run_main(
            "installations",
            "list",
            "--format",
            "json",
            env=child_env(ICR_BASE_URL=url, ICR_PRIVATE_KEY_PATH=str(key), ICR_APP_ID="x"),
        )
        # A wrong app id is refused by the emulator: proves the CLI reached it.
        assert listed.returncode == 1
        assert_one_line_error(listed.stderr, "401")
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, stderr
    exports = dict(
        line.removeprefix("export ").split("=", 1)
        for line in stdout.splitlines()
        if line.startswith("export ")
    )
    assert exports["ICR_BASE_URL"] == url
    assert exports["ICR_PRIVATE_KEY_PATH"] == str(key)
    assert "PRIVATE KEY" not in stdout
    assert stdout.rstrip().endswith("ICR emulator stopped")


def test_emulator_exports_work_for_the_cli(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    key = tmp_path / "k.pem"
    proc = subprocess.Popen(
        [*EMULATOR, "--installations", "4", "--key-out", str(key), "--ready-file", str(ready)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    try:
        assert proc.stdout is not None
        exports: dict[str, str] = {}
        # The three export lines are the last of the banner; read at most 20 lines.
        for _ in range(20):
            line = proc.stdout.readline()
            if line.startswith("export "):
                name, value = line.strip().removeprefix("export ").split("=", 1)
                exports[name] = value
            if len(exports) == 3 or not line:
                break
        assert set(exports) == {"ICR_APP_ID", "ICR_PRIVATE_KEY_PATH", "ICR_BASE_URL"}
        page = ok_json(run_main("installations", "list", env=child_env(**exports)))
        assert page["pagination"]["total"] == 4
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0
