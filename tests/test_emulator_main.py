"""The standalone emulator (``python -m icr_async.testing``) and the pytest plugin."""

from __future__ import annotations

import asyncio
import base64
import datetime
import email.utils
import hashlib
import hmac
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

import aiohttp
import pytest
from aiohttp import web
from joserfc import jwt
from joserfc.jwk import RSAKey

from icr_async.testing import VARIANTS
from icr_async.testing._main import _parser, emulator_options, main

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
    # pytest-asyncio (installed for the plugin's own tests) warns when this is unset.
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    result = pytester.runpytest("-p", "no:icr_async", "-p", "icr_async.testing.pytest_plugin")
    result.assert_outcomes(passed=2)


# ------------------------------------------------------------- readings and webhooks


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--page-base", "2"], "--page-base"),
        (["--page-end", "none"], "--page-end"),
        (["--post-status", "202"], "--post-status"),
        (["--clock-offset", "soon"], "--clock-offset"),
        (["--clock-offset", "inf"], "--clock-offset"),
        (["--installation-token-ttl", "0"], "--installation-token-ttl"),
        (["--token-ttl", "-5"], "--token-ttl"),
        (["--app-token-ttl", "nan"], "--app-token-ttl"),
        (["--retry-after-style", "date"], "--retry-after-style"),
        (["--request-id-header", "x id"], "--request-id-header"),
        (["--variant", "two-based"], "--variant"),
        (["--webhook-url", "http://192.0.2.1/hooks"], "--webhook-url"),
        (["--webhook-url", "ftp://127.0.0.1/hooks"], "--webhook-url"),
    ],
)
def test_bad_flags_are_usage_errors(
    argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        _parser().parse_args(argv)
    assert info.value.code == 2
    assert flag in capsys.readouterr().err


def test_options_from_variant_and_flags() -> None:
    parser = _parser()
    assert emulator_options(parser.parse_args([])) == VARIANTS["icr-docs"].kwargs()
    args = parser.parse_args(
        ["--variant", "everything-else", "--post-status", "200", "--request-id-header", "none"]
    )
    assert emulator_options(args) == {
        **VARIANTS["everything-else"].kwargs(),
        "post_status": 200,
        "request_id_header": None,
    }
    args = parser.parse_args(
        [
            "--page-base",
            "1",
            "--page-end",
            "absent",
            "--clock-offset",
            "-420",
            "--token-ttl",
            "120",
            "--app-token-ttl",
            "90",
            "--retry-after-style",
            "http-date",
            "--request-id-header",
            "X-Request-Id",
        ]
    )
    assert emulator_options(args) == {
        "page_base": 1,
        "page_end_style": "absent",
        "post_status": 200,
        "clock_offset": -420.0,
        "installation_token_ttl": 120.0,
        "app_token_ttl": 90.0,
        "retry_after_style": "http-date",
        "request_id_header": "x-request-id",
    }


def test_webhook_secret_needs_a_url(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--port", "0", "--webhook-secret", "s", "--key-out", str(tmp_path / "k.pem")])
    assert code == 2
    assert "--webhook-url" in capsys.readouterr().err


def _app_jwt(app_id: str, key_pem: str, server_now: float) -> str:
    claims = {"iss": app_id, "iat": int(server_now - 60), "exp": int(server_now + 540)}
    return jwt.encode({"alg": "RS256"}, claims, RSAKey.import_key(key_pem))


def _iso(value: str) -> float:
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


@pytest.mark.anyio
async def test_subprocess_serves_the_reading_and_delivers_signed_webhooks(
    tmp_path: Path,
) -> None:
    received: list[tuple[bytes, str]] = []
    arrived = asyncio.Event()

    async def receive(request: web.Request) -> web.Response:
        received.append((await request.read(), request.headers.get("x-icr-signature-256", "")))
        arrived.set()
        return web.Response(status=202)  # what ICR's Express example answers

    hooks = web.Application()
    hooks.router.add_post("/hooks", receive)
    runner = web.AppRunner(hooks)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    hook_url = f"http://127.0.0.1:{runner.addresses[0][1]}/hooks"
    key, ready = tmp_path / "key.pem", tmp_path / "ready"
    env = _env()
    env["ICR_WEBHOOK_SECRET"] = "s3cret"  # read when --webhook-secret is not given
    proc = await asyncio.create_subprocess_exec(
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
        "--variant",
        "one-based",
        "--post-status",
        "201",
        "--clock-offset",
        "-420",
        "--installation-token-ttl",
        "120",
        "--retry-after-style",
        "http-date",
        "--request-id-header",
        "x-request-id",
        "--webhook-url",
        hook_url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        for _ in range(600):  # bounded: at most ~30 s for the child to listen
            if ready.exists() or proc.returncode is not None:
                break
            await asyncio.sleep(0.05)
        assert ready.exists(), "the emulator did not start"
        url = ready.read_text().strip()
        app_id = ""
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/projects") as resp:
                assert resp.status == 401
                date = email.utils.parsedate_to_datetime(resp.headers["Date"]).timestamp()
                assert abs(date - (time.time() - 420)) < 30
                assert resp.headers["x-request-id"]
                assert "x-icr-request-id" not in resp.headers
            assert proc.stdout is not None
            lines = [(await proc.stdout.readline()).decode() for _ in range(6)]
            app_id = lines[1].split(": ", 1)[1].strip()
            token = _app_jwt(app_id, key.read_text(), time.time() - 420)
            auth = {"Authorization": f"Bearer {token}"}
            async with http.get(f"{url}/app/installations?limit=2&page=0", headers=auth) as resp:
                body = await resp.json()
            assert body["pagination"] == {
                "total": 3,
                "currentPage": 1,
                "pageCount": 2,
                "nextPage": 2,
            }
            inst = body["installations"][0]["id"]
            async with http.post(
                f"{url}/app/installations/{inst}/accessTokens", headers=auth
            ) as resp:
                assert resp.status == 201
                minted = await resp.json()
            assert _iso(minted["expiresAt"]) - _iso(minted["createdAt"]) == 120
            async with http.post(
                f"{url}/_emulator/faults",
                json={"path": "/projects", "status": 429, "retry_after": 7},
            ) as resp:
                assert resp.status == 201
            async with http.get(f"{url}/projects") as resp:
                assert resp.status == 429
                retry = email.utils.parsedate_to_datetime(resp.headers["Retry-After"])
                date_ = email.utils.parsedate_to_datetime(resp.headers["Date"])
                assert 7 <= (retry - date_).total_seconds() <= 8
            new_org = {
                "user": {"email": "ada@example.com"},
                "organization": {"fullName": "Ada Carbon", "type": "other"},
            }
            async with http.post(
                f"{url}/app/create/user/organization", headers=auth, json=new_org
            ) as resp:
                assert resp.status == 201
                created = (await resp.json())["installation"]["id"]
        await asyncio.wait_for(arrived.wait(), 30)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
        try:
            stdout, stderr = await asyncio.wait_for(proc.communicate(), 30)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        await runner.cleanup()
    assert proc.returncode == 0, stderr.decode()
    text = "".join(lines) + stdout.decode()
    assert "ICR reading: one-based" in text
    assert "post_status=201" in text
    assert f"webhooks: POST {hook_url}" in text
    assert "s3cret" not in text  # the secret is never printed
    body, signature = received[0]
    outer = json.loads(body)
    signed = outer["signedData"]
    expected = hmac.new(b"s3cret", signed.encode(), hashlib.sha256).hexdigest()
    assert hmac.compare_digest(signature, f"sha256={expected}")
    payload = json.loads(base64.b64decode(signed))
    assert payload["event"] == "installed"
    assert payload["installation"]["id"] == created
