"""The standalone emulator (``python -m icr_async.testing``) and the pytest plugin."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from icr_async.testing._main import main

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parent.parent


def _env() -> dict[str, str]:
    env = dict(os.environ)
    # The package may not be installed: make the checkout importable in the child.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def test_main_subprocess_serves_and_stops_on_sigint(tmp_path: Path) -> None:
    key = tmp_path / "key.pem"
    ready = tmp_path / "ready"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "icr_async.testing",
            "--port",
            "0",
            "--installations",
            "3",
            "--key-out",
            str(key),
            "--ready-file",
            str(ready),
            "--seed",
            "4",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        deadline = time.monotonic() + 30
        # Bounded wait for the child to start listening (not waiting on emulated time).
        while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.exists(), proc.stderr.read() if proc.stderr else ""
        url = ready.read_text().strip()
        assert url.startswith("http://127.0.0.1:")
        assert not url.endswith(":0")
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"{url}/projects", timeout=10)
        assert info.value.code == 401
        assert json.loads(info.value.read())["error"] == "Unauthorized"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert key.read_text().startswith("-----BEGIN PRIVATE KEY-----")
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert f"ICR emulator listening on {url}" in stdout
    assert f"export ICR_BASE_URL={url}" in stdout
    assert f"export ICR_PRIVATE_KEY_PATH={key}" in stdout
    assert "export ICR_APP_ID=" in stdout
    assert "Traceback" not in stderr


def test_main_rejects_non_loopback_host(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--host", "192.0.2.1", "--port", "0", "--key-out", str(tmp_path / "k.pem")])
    assert code == 2
    assert "loopback" in capsys.readouterr().err


def test_pytest_plugin_fixtures(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import aiohttp
        import pytest

        @pytest.fixture
        def anyio_backend():
            return "asyncio"

        def test_emulator(icr_emulator, icr_emulator_private_key_pem):
            app = icr_emulator.default_app
            assert app.private_key_pem == icr_emulator_private_key_pem
            assert len(icr_emulator.installations(app.app_id)) == 5

        @pytest.mark.anyio
        async def test_server(icr_emulator, icr_emulator_server):
            assert icr_emulator_server.emulator is icr_emulator
            async with aiohttp.ClientSession() as session:
                async with session.get(icr_emulator_server.url + "/projects") as response:
                    assert response.status == 401
        """
    )
    # -p no:icr_async: when the package is installed, its entry point would load the plugin
    # a second time under another name.
    result = pytester.runpytest("-p", "no:icr_async", "-p", "icr_async.testing.pytest_plugin")
    result.assert_outcomes(passed=2)
