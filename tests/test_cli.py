"""The ``icr-async`` command against the emulator, run in this process (``cli.main`` through
``cli_support.run_main``: stdin, stdout and stderr as pipes, the environment as given); the
few behaviours only a real process shows are in tests/test_cli_smoke.py.

Every subcommand is run for real: exit statuses (0 ok, 1 API error, 2 usage error), JSON on
stdout and nothing else, one-line errors on stderr without a traceback (unless ``--debug``),
the progress bar only on a terminal, and no secret printed except by ``token``.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_support import (
    Certificate,
    EmulatorThread,
    assert_no_secret,
    assert_one_line_error,
    child_env,
    make_certificate,
    ok_json,
    run_main,
)

from icr_async import PrivateKey, cli
from icr_async._cli_common import _make_client, _Progress
from icr_async._cli_export import export_pages
from icr_async._cli_request import is_binary
from icr_async.models import Installation, Page, Pagination
from icr_async.testing import VARIANTS, Fault


@pytest.fixture(scope="module")
def emu(private_key_pem: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorThread]:
    """One emulator (12 installations, seed 0) for the module, on a background thread."""
    with EmulatorThread(private_key_pem, tmp_path_factory.mktemp("cli")) as emulator:
        yield emulator


@pytest.fixture
def env(emu: EmulatorThread) -> dict[str, str]:
    """The environment pointing at the emulator."""
    return emu.env


# -- general ------------------------------------------------------------------------------


def test_no_command_prints_help_on_stderr_and_exits_2() -> None:
    result = run_main(env=child_env())
    assert result.returncode == 2
    assert result.stdout == ""
    assert "usage: icr-async" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope"], "invalid choice: 'nope'"),
        (["token"], "required: COMMAND"),
        (["installations", "list", "--limit", "0"], "must be at least 1"),
        (["installations", "export", "--concurrency", "x"], "not a whole number"),
        (["token", "installation", "X", "--min-ttl", "-5"], "must be 0 or more seconds"),
        (["demo", "--installations", "0"], "must be positive"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(
    args: list[str], message: str, in_process: EmulatorThread, capsys: pytest.CaptureFixture[str]
) -> None:
    # In-process: argparse's mistakes never reach the network, and a subprocess per case
    # would cost half a second each for the same code path.
    assert cli.main(args) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert_one_line_error(captured.err, message, "--help")


# -- demo (the emulator subcommand needs signals: tests/test_cli_smoke.py) -------------------


def test_demo_runs_the_whole_flow() -> None:
    result = run_main("demo", "--installations", "8", "--concurrency", "4", env=child_env())
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "ICR emulator listening on http://127.0.0.1:" in result.stdout
    assert "-> 4 mints (single flight)" in result.stdout
    assert result.stdout.rstrip().splitlines()[-1].startswith("done in ")
    assert_no_secret(result.stdout)


# -- token --------------------------------------------------------------------------------


def test_token_app_json_and_raw(env: dict[str, str], emu: EmulatorThread) -> None:
    data = ok_json(run_main("token", "app", env=env))
    assert data["token"].startswith("crs_")
    assert data["appId"] == emu.app.app_id
    assert data["expiresAt"].endswith("Z")
    raw = run_main("token", "app", "--raw", env=env)
    assert raw.returncode == 0
    assert re.fullmatch(r"crs_[0-9a-f]+\n", raw.stdout)
    assert raw.stderr == ""


def test_token_installation_json_raw_and_min_ttl(env: dict[str, str], emu: EmulatorThread) -> None:
    inst = emu.installation_ids[0]
    data = ok_json(run_main("token", "installation", inst, "--min-ttl", "600", env=env))
    assert data["installationId"] == inst
    assert data["organizationId"]
    assert data["token"].startswith("crs_")
    raw = run_main("token", "installation", inst, "--raw", env=env)
    assert raw.returncode == 0
    assert re.fullmatch(r"crs_[0-9a-f]+\n", raw.stdout)
    too_long = run_main("token", "installation", inst, "--min-ttl", "100000", env=env)
    assert too_long.returncode == 1
    assert too_long.stdout == ""
    assert_one_line_error(too_long.stderr, "100000", "--min-ttl")


def test_token_revoke_from_argument_stdin_and_twice(
    env: dict[str, str], emu: EmulatorThread
) -> None:
    inst = emu.installation_ids[1]
    first = run_main("token", "installation", inst, "--raw", env=env).stdout.strip()
    assert ok_json(run_main("token", "revoke", first, env=env)) == {"revoked": True}
    record = emu.emulator.token_record(first)
    assert record is not None
    assert record.revoked

    second = run_main("token", "app", "--raw", env=env).stdout.strip()
    assert ok_json(run_main("token", "revoke", "-", input=second + "\n", env=env)) == {
        "revoked": True
    }
    # Revoked already: the API says 401, the hint says why.
    again = run_main("token", "revoke", "--stdin", input=second, env=env)
    assert again.returncode == 1
    assert again.stdout == ""
    assert_one_line_error(again.stderr, "401", "already revoked")
    assert_no_secret(again.stderr)


def test_token_revoke_needs_a_token(env: dict[str, str]) -> None:
    missing = run_main("token", "revoke", env=env)
    assert missing.returncode == 2
    assert_one_line_error(missing.stderr, "no token to revoke")
    empty = run_main("token", "revoke", "-", input="", env=env)
    assert empty.returncode == 2
    assert_one_line_error(empty.stderr, "no token on stdin")


# -- installations ------------------------------------------------------------------------


def test_installations_list_json_by_default_off_a_terminal(
    env: dict[str, str], emu: EmulatorThread
) -> None:
    data = ok_json(run_main("installations", "list", "--limit", "3", "--page", "1", env=env))
    assert [i["id"] for i in data["installations"]] == emu.installation_ids[3:6]
    assert data["pagination"]["currentPage"] == 1
    assert data["pagination"]["total"] == 12
    assert data["installations"][0]["organization"]["fullName"]


def test_installations_list_table(env: dict[str, str], emu: EmulatorThread) -> None:
    result = run_main("installations", "list", "--limit", "3", "--format", "table", env=env)
    assert result.returncode == 0
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["ID", "ORGANIZATION", "COUNTRY", "TYPE", "CREATED"]
    assert [line.split()[0] for line in lines[1:4]] == emu.installation_ids[:3]
    assert lines[4] == "3 of 12 installations (page 0; 4 pages of 3)"


def test_installations_get(env: dict[str, str], emu: EmulatorThread) -> None:
    inst = emu.installation_ids[2]
    data = ok_json(run_main("installations", "get", inst, env=env))
    assert data["id"] == inst
    assert data["appId"] == emu.app.app_id
    assert "permissions" in data


def test_unknown_installation_is_an_api_error(env: dict[str, str]) -> None:
    result = run_main("installations", "get", "00000000-0000-4000-8000-000000000000", env=env)
    assert result.returncode == 1
    assert result.stdout == ""
    assert_one_line_error(result.stderr, "404", "no installation with that id for this app")
    minted = run_main("token", "installation", "no-such-installation", env=env)
    assert minted.returncode == 1
    assert_one_line_error(minted.stderr, "404", "no installation with that id")


def test_export_to_stdout_is_json_lines_in_order_with_silent_stderr(
    env: dict[str, str], emu: EmulatorThread
) -> None:
    result = run_main("installations", "export", "--page-size", "5", "--concurrency", "2", env=env)
    assert result.returncode == 0
    assert result.stderr == ""  # no progress bar off a terminal
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["id"] for row in rows] == emu.installation_ids
    assert all(row["organization"]["id"] for row in rows)


def test_export_to_file(env: dict[str, str], emu: EmulatorThread, tmp_path: Path) -> None:
    out = tmp_path / "all.jsonl"
    result = run_main(
        "installations",
        "export",
        "--out",
        str(out),
        "--page-size",
        "1",
        "--concurrency",
        "4",
        env=env,
    )
    assert result.returncode == 0
    assert result.stdout == result.stderr == ""
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert ids == emu.installation_ids
    assert [p.name for p in tmp_path.iterdir()] == ["all.jsonl"]  # no temporary left


def test_export_shows_progress_on_a_terminal_only(env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "all.jsonl"
    args = ["installations", "export", "--out", str(out), "--page-size", "2", "--concurrency", "3"]
    result = run_main(*args, env=env, terminal="stderr")
    assert result.returncode == 0
    assert result.stdout == ""
    assert "\r[" in result.stderr
    assert "] 6/6 pages" in result.stderr
    assert f"exported 12 installations to {out}" in result.stderr
    assert len(out.read_text().splitlines()) == 12
    piped = run_main(*args, env=env)  # the same export, stderr a pipe: not a word
    assert (piped.returncode, piped.stdout, piped.stderr) == (0, "", "")
    assert len(out.read_text().splitlines()) == 12


def test_export_failure_leaves_no_file(env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "all.jsonl"
    bad = dict(env, ICR_APP_ID="00000000-0000-4000-8000-000000000000")
    result = run_main("installations", "export", "--out", str(out), env=bad)
    assert result.returncode == 1
    assert_one_line_error(result.stderr, "401", "check ICR_APP_ID and the private key")
    assert list(tmp_path.iterdir()) == []


# -- request ------------------------------------------------------------------------------


def test_request_with_installation_token(env: dict[str, str], emu: EmulatorThread) -> None:
    inst = emu.emulator.installations(emu.app.app_id)[0]
    org_id = inst["organization"]["id"]
    data = ok_json(
        run_main(
            "request", "GET", f"/organizations/{org_id}", "--installation", inst["id"], env=env
        )
    )
    assert data["id"] == org_id
    assert data["fullName"] == inst["organization"]["fullName"]


def test_request_uses_app_token_and_jwt_by_path(env: dict[str, str], emu: EmulatorThread) -> None:
    projects = ok_json(run_main("request", "GET", "/projects", "--param", "limit=2", env=env))
    assert len(projects["projects"]) == 2
    listed = ok_json(
        run_main(
            "request",
            "get",
            "/app/installations",
            "--param",
            "limit=1",
            "--param",
            "page=2",
            env=env,
        )
    )
    assert [i["id"] for i in listed["installations"]] == [emu.installation_ids[2]]


def test_request_data_from_file_and_stdin(private_key_pem: str, tmp_path: Path) -> None:
    # Its own emulator: creating organizations changes the installation count others see.
    with EmulatorThread(private_key_pem, tmp_path, installations=1) as emu:
        _request_data_from_file_and_stdin(emu.env, emu, tmp_path)


def _request_data_from_file_and_stdin(
    env: dict[str, str], emu: EmulatorThread, tmp_path: Path
) -> None:
    body = {
        "user": {"email": "ada@example.com"},
        "organization": {"fullName": "CLI Test ehf.", "type": "other", "countryCode": "IS"},
    }
    path = tmp_path / "body.json"
    path.write_text(json.dumps(body))
    created = ok_json(
        run_main("request", "POST", "/app/create/user/organization", "--data", f"@{path}", env=env)
    )
    assert created["organization"]["fullName"] == "CLI Test ehf."
    body["organization"]["fullName"] = "CLI Stdin AS"
    piped = ok_json(
        run_main(
            "request",
            "POST",
            "/app/create/user/organization",
            "--data",
            "-",
            input=json.dumps(body),
            env=env,
        )
    )
    # The body read from stdin, not the file's again: the new organization has its name.
    assert piped["organization"]["fullName"] == "CLI Stdin AS"
    assert piped["installation"]["id"] in emu.installation_ids
    assert piped["installation"]["id"] != created["installation"]["id"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "{not json"], "--data is not valid JSON"),
        (["--data", "@/nonexistent/body.json"], "cannot read --data file"),
        (["--param", "novalue"], "is not KEY=VALUE"),
    ],
)
def test_request_bad_input_is_a_usage_error(
    args: list[str], message: str, env: dict[str, str]
) -> None:
    result = run_main("request", "POST", "/projects", *args, env=env)
    assert result.returncode == 2
    assert result.stdout == ""
    assert_one_line_error(result.stderr, message)


def test_request_bad_method_or_path_is_a_usage_error(env: dict[str, str]) -> None:
    method = run_main("request", "FETCH", "/projects", env=env)
    assert method.returncode == 2
    assert_one_line_error(method.stderr, "unsupported HTTP method 'FETCH'")
    path = run_main("request", "GET", "projects", env=env)
    assert path.returncode == 2
    assert_one_line_error(path.stderr, "absolute API path")


# -- key ----------------------------------------------------------------------------------


def test_key_fingerprint(env: dict[str, str], private_key_pem: str) -> None:
    expected = "SHA256:" + PrivateKey.from_pem(private_key_pem).fingerprint
    assert ok_json(run_main("key", "fingerprint", env=env)) == {
        "fingerprint": expected,
        "bits": 2048,
    }
    raw = run_main("key", "fingerprint", "--raw", env=env)
    assert raw.stdout == expected + "\n"
    # Needs neither an app id nor a server.
    only_key = child_env(ICR_PRIVATE_KEY=private_key_pem)
    assert ok_json(run_main("key", "fingerprint", env=only_key))["fingerprint"] == expected
    helptext = run_main("key", "fingerprint", "--help", env=env).stdout
    assert "unconfirmed" in " ".join(helptext.split())


def test_key_check_accepts_the_right_key(env: dict[str, str], emu: EmulatorThread) -> None:
    data = ok_json(run_main("key", "check", env=env))
    assert data["ok"] is True
    assert data["appId"] == emu.app.app_id
    assert data["installations"] == len(emu.installation_ids)


def test_bad_credentials_are_one_line_without_traceback(
    env: dict[str, str], other_private_key_pem: str, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong.pem"
    wrong.write_text(other_private_key_pem)
    result = run_main("key", "check", env=dict(env, ICR_PRIVATE_KEY_PATH=str(wrong)))
    assert result.returncode == 1
    assert result.stdout == ""
    assert_one_line_error(
        result.stderr,
        "401",
        "check ICR_APP_ID and the private key; is the key registered for this app?",
    )
    assert_no_secret(result.stderr)


# -- configuration ------------------------------------------------------------------------


def test_missing_app_id_is_exit_2(env: dict[str, str]) -> None:
    no_app = {k: v for k, v in env.items() if k != "ICR_APP_ID"}
    result = run_main("installations", "list", env=no_app)
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "no app id", "--app-id or set ICR_APP_ID")


def test_flags_override_the_environment(env: dict[str, str], emu: EmulatorThread) -> None:
    flags = [
        "--app-id",
        emu.app.app_id,
        "--private-key-path",
        str(emu.key_path),
        "--base-url",
        emu.url,
    ]
    args = ["installations", "list", "--limit", "1"]
    # Nothing in the environment: every setting from flags.
    assert ok_json(run_main(*args, *flags, env=child_env()))["pagination"]["total"] == 12
    # Every setting in the environment wrong (any of them alone would fail): the flags win.
    wrong = dict(
        env,
        ICR_APP_ID="00000000-0000-4000-8000-000000000000",
        ICR_PRIVATE_KEY_PATH="/nonexistent/key.pem",
        ICR_BASE_URL="http://127.0.0.1:9",
    )
    assert run_main(*args, env=wrong).returncode != 0
    assert ok_json(run_main(*args, *flags, env=wrong))["pagination"]["total"] == 12


@pytest.mark.parametrize(
    ("override", "fragments"),
    [
        ({"ICR_PRIVATE_KEY_PATH": "/nonexistent/key.pem"}, ["private key file not found"]),
        ({"ICR_PRIVATE_KEY_PATH": ""}, ["no private key", "ICR_PRIVATE_KEY_PATH"]),
        ({"ICR_BASE_URL": "ftp://example.com"}, ["http:// or https://", "ICR_BASE_URL"]),
        ({"ICR_API_VERSION": "latest"}, ["release date", "ICR_API_VERSION"]),
    ],
)
def test_configuration_errors_exit_2(
    override: dict[str, str], fragments: list[str], env: dict[str, str]
) -> None:
    result = run_main("token", "app", env=dict(env, **override))
    assert result.returncode == 2
    assert result.stdout == ""
    assert_one_line_error(result.stderr, *fragments)


def test_unreachable_server_is_exit_1_with_a_hint(env: dict[str, str]) -> None:
    result = run_main("installations", "list", env=dict(env, ICR_BASE_URL="http://127.0.0.1:9"))
    assert result.returncode == 1
    assert_one_line_error(result.stderr, "cannot connect", "icr-async emulator")


def test_debug_shows_traceback_and_log_but_no_secret(
    env: dict[str, str], other_private_key_pem: str, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong.pem"
    wrong.write_text(other_private_key_pem)
    result = run_main(
        "--debug", "token", "installation", "x", env=dict(env, ICR_PRIVATE_KEY_PATH=str(wrong))
    )
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert "AuthenticationError" in result.stderr
    assert "signed a new app JWT" in result.stderr  # the SDK's debug log
    assert result.stderr.splitlines()[-1].startswith("icr-async: error: 401")
    assert_no_secret(result.stderr)
    assert_no_secret(result.stdout)


def test_debug_after_the_subcommand_and_on_success(
    env: dict[str, str], emu: EmulatorThread
) -> None:
    inst = emu.installation_ids[3]
    result = run_main("token", "installation", inst, "--debug", env=env)
    assert result.returncode == 0
    assert "minted a token" in result.stderr
    # The token is on stdout (its job) and only there.
    token = json.loads(result.stdout)["token"]
    assert token not in result.stderr
    assert_no_secret(result.stderr)


# -- refusals and server faults ------------------------------------------------------------


@pytest.fixture
def in_process(emu: EmulatorThread, monkeypatch: pytest.MonkeyPatch) -> EmulatorThread:
    """``cli.main`` in this process, with the environment pointing at the emulator."""
    for name in list(os.environ):
        if name.startswith("ICR_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("ICR_APP_ID", emu.app.app_id)
    monkeypatch.setenv("ICR_PRIVATE_KEY_PATH", str(emu.key_path))
    monkeypatch.setenv("ICR_BASE_URL", emu.url)
    return emu


@pytest.mark.parametrize(
    ("args", "status", "fragment"),
    [
        (["installations", "get", "nope"], 1, "no installation with that id"),
        (["request", "GET", "/organizations/nope", "--installation", "{inst}"], 1, "403"),
        (["token", "revoke", "crs_" + "0" * 48], 1, "already revoked"),
        (["request", "GET", "/projects", "--data", "[1,"], 2, "not valid JSON"),
        (["--sandbox", "token", "app", "--base-url", "http://127.0.0.1:1"], 2, "sandbox"),
        (["installations", "list", "--limit", "1000"], 1, "malformed"),
    ],
)
def test_refusals_are_one_line_errors(
    args: list[str], status: int, fragment: str, env: dict[str, str], emu: EmulatorThread
) -> None:
    inst = emu.installation_ids[0]
    result = run_main(*[arg.format(inst=inst) for arg in args], env=env)
    assert result.returncode == status
    assert result.stdout == ""
    assert_one_line_error(result.stderr, fragment)


def test_in_process_error_hints(
    in_process: EmulatorThread, capsys: pytest.CaptureFixture[str]
) -> None:
    emu = in_process
    faults = emu.emulator.faults
    cases: list[tuple[Fault, str]] = [
        (Fault(method="GET", path="/app/installations", status=500, times=3), "try again later"),
        (Fault(method="GET", path="/app/installations", action="nonjson", times=2), "--debug"),
        (Fault(method="GET", path="/app/installations", status=403, times=1), "permissions"),
        (
            Fault(method="GET", path="/app/installations", status=429, retry_after="120", times=1),
            "try again in 120 s",
        ),
        (Fault(method="GET", path="/app/installations", status=429, times=3), "try again later"),
        (Fault(method="GET", path="/app/installations", status=400, times=1), "malformed"),
    ]
    for fault, hint in cases:
        faults.add(fault)
        try:
            assert cli.main(["installations", "list"]) == 1
        finally:
            faults.remove(fault)
        err = capsys.readouterr().err
        assert hint in err, (fault, err)
        assert len(err.splitlines()) == 1


def test_in_process_export_without_page_count_walks_pages(
    in_process: EmulatorThread, capsys: pytest.CaptureFixture[str]
) -> None:
    emu = in_process
    first = emu.emulator.installations(emu.app.app_id)[:5]
    # The first page answers without pagination: the export falls back to the SDK iterator.
    fault = emu.emulator.faults.add(
        Fault(
            method="GET",
            path="/app/installations",
            status=200,
            body={"installations": first},
            times=1,
        )
    )
    try:
        assert cli.main(["installations", "export", "--page-size", "5"]) == 0
    finally:
        emu.emulator.faults.remove(fault)
    ids = [json.loads(line)["id"] for line in capsys.readouterr().out.splitlines()]
    assert ids == emu.installation_ids


def test_progress_draws_only_on_a_terminal() -> None:
    class Terminal:
        def __init__(self, tty: bool) -> None:
            self.tty = tty
            self.text = ""

        def isatty(self) -> bool:
            return self.tty

        def write(self, text: str) -> int:
            self.text += text
            return len(text)

        def flush(self) -> None:
            pass

    on, off = Terminal(True), Terminal(False)
    for stream in (on, off):
        progress = _Progress(stream)  # type: ignore[arg-type]
        progress.update(1, 4)
        progress.update(3, None)
        progress.finish("done")
    assert on.text == "\r[#######.......................] 1/4 pages\r3 pages\ndone\n"
    assert off.text == ""


# -- request: raw bytes, --include, --paginate ------------------------------------------------


@pytest.fixture(scope="module")
def certificate(emu: EmulatorThread) -> Certificate:
    """A retirement certificate of the first installation's organization (made with the SDK)."""
    return make_certificate(emu)


def test_request_output_writes_the_certificate(
    env: dict[str, str], certificate: Certificate, tmp_path: Path
) -> None:
    out = tmp_path / "cert.pdf"
    args = ["request", "GET", certificate.path, "--installation", certificate.installation_id]
    result = run_main(*args, "--output", str(out), env=env)
    assert (result.returncode, result.stdout_bytes, result.stderr) == (0, b"", "")
    assert out.read_bytes() == certificate.pdf
    assert [p.name for p in tmp_path.iterdir()] == ["cert.pdf"]  # no temporary left
    # Off a terminal (a file, a pipe) the bytes go to stdout unchanged; so with -o -.
    for extra in ([], ["-o", "-"]):
        result = run_main(*args, *extra, env=env)
        assert (result.returncode, result.stdout_bytes, result.stderr) == (0, certificate.pdf, "")
    # --include: the head on stdout, the body in the file.
    again = tmp_path / "again.pdf"
    result = run_main(*args, "-i", "-o", str(again), env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("HTTP/1.1 200 OK\n")
    assert "Content-Type: application/pdf" in result.stdout
    assert result.stdout.endswith("\n\n")
    assert again.read_bytes() == certificate.pdf


def test_a_binary_answer_is_not_printed_on_a_terminal(
    env: dict[str, str], certificate: Certificate
) -> None:
    args = ["request", "GET", certificate.path, "--installation", certificate.installation_id]
    result = run_main(*args, env=env, terminal="stdout")
    assert result.returncode == 2
    assert result.stdout_bytes == b""
    assert_one_line_error(
        result.stderr, "binary", "application/pdf", "stdout is a terminal", "--output"
    )
    # "-o -" is the way to ask for the bytes on a terminal anyway.
    forced = run_main(*args, "-o", "-", env=env, terminal="stdout")
    assert (forced.returncode, forced.stdout_bytes) == (0, certificate.pdf)


def test_is_binary_trusts_the_label_then_the_bytes() -> None:
    assert is_binary("application/pdf", b"%PDF-1.4 all ascii")
    assert is_binary("application/octet-stream", b"")
    assert not is_binary("text/plain; charset=utf-8", "caf\u00e9".encode())
    assert not is_binary("application/problem+json", b"{}")
    assert is_binary("text/plain", b"\xff\xfe")
    assert is_binary(None, b"a\x00b")
    assert not is_binary(None, b"plain words")


def test_request_include_shows_status_and_headers_without_secrets(
    in_process: EmulatorThread, capsys: pytest.CaptureFixture[str]
) -> None:
    emu = in_process
    inst = emu.installation_ids[4]
    secret = "crs_" + "ab" * 24
    fault = emu.emulator.faults.add(
        Fault(
            method="GET",
            path=f"/app/installations/{inst}",
            status=200,
            body={"id": inst},
            headers={"Set-Cookie": "session=s3cret", "X-Debug": f"Bearer {secret}"},
        )
    )
    try:
        assert cli.main(["request", "GET", f"/app/installations/{inst}", "--include"]) == 0
    finally:
        emu.emulator.faults.remove(fault)
    out = capsys.readouterr().out
    head, _, body = out.partition("\n\n")
    lines = head.splitlines()
    assert lines[0] == "HTTP/1.1 200 OK"
    headers = dict(line.split(": ", 1) for line in lines[1:])
    assert headers["Set-Cookie"] == "<redacted>"
    assert headers["X-Debug"] == "Bearer <redacted>"
    assert "s3cret" not in out
    assert_no_secret(out)
    assert json.loads(body) == {"id": inst}
    # A real answer: the server's request id is there to quote to support.
    assert cli.main(["request", "GET", f"/app/installations/{inst}", "-i"]) == 0
    head, _, body = capsys.readouterr().out.partition("\n\n")
    assert "x-icr-request-id: " in head.lower()
    assert json.loads(body)["id"] == inst


def _list_requests(emu: EmulatorThread) -> int:
    return emu.emulator.stats.requests[("GET", "list_installations")]


def test_request_paginate_prints_every_installation(
    in_process: EmulatorThread, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    emu = in_process
    before = _list_requests(emu)
    args = ["request", "GET", "/app/installations", "--paginate", "--param", "limit=5"]
    assert cli.main(args) == 0
    items = json.loads(capsys.readouterr().out)
    assert [i["id"] for i in items] == emu.installation_ids
    assert _list_requests(emu) - before == 3  # pages 0, 1, 2 and nothing more
    assert cli.main([*args, "--lines"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["id"] for row in rows] == emu.installation_ids
    out = tmp_path / "all.json"
    assert cli.main([*args, "--output", str(out)]) == 0
    assert capsys.readouterr().out == ""
    assert [i["id"] for i in json.loads(out.read_text())] == emu.installation_ids
    # The app token's list (/projects), with the server's default page size: the same rule.
    assert cli.main(["request", "GET", "/projects", "--param", "limit=1"]) == 0
    total = json.loads(capsys.readouterr().out)["pagination"]["total"]
    assert total > 4  # more than one page of 4: --paginate has pages to follow
    assert cli.main(["request", "GET", "/projects", "--paginate", "--param", "limit=4"]) == 0
    projects = json.loads(capsys.readouterr().out)
    assert len({p["id"] for p in projects}) == len(projects) == total


def test_request_paginate_and_export_on_a_one_based_server(
    private_key_pem: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A 1-based server serves its first page for page=0 and page=1 alike: following its
    nextPage lists each installation once, and asks for no page twice or past the end."""
    with EmulatorThread(private_key_pem, tmp_path, installations=12) as emu:
        VARIANTS["one-based"].apply(emu.emulator)
        for name in [n for n in os.environ if n.startswith("ICR_")]:
            monkeypatch.delenv(name)
        for name, value in emu.env.items():
            if name.startswith("ICR_"):
                monkeypatch.setenv(name, value)
        args = ["request", "GET", "/app/installations", "--paginate", "--param", "limit=5"]
        assert cli.main(args) == 0
        items = json.loads(capsys.readouterr().out)
        assert [i["id"] for i in items] == emu.installation_ids
        assert _list_requests(emu) == 3  # page=0 (served as 1), then 2 and 3
        export = ["installations", "export", "--page-size", "5", "--concurrency", "4"]
        assert cli.main(export) == 0
        rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [row["id"] for row in rows] == emu.installation_ids
        assert _list_requests(emu) == 6  # three more: no guess past the server's pageCount


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["POST", "/app/installations", "--paginate"], "needs GET, not POST"),
        (["GET", "/app/installations", "--lines"], "--lines goes with --paginate"),
        (["GET", "/projects", "--paginate", "--data", "{}"], "sends no body"),
        (["GET", "/projects", "--paginate", "--param", "limit=x"], "whole numbers"),
        (["GET", "/projects", "--paginate", "--param", "limit=0"], "limit must be between"),
    ],
)
def test_request_paginate_usage_errors(
    args: list[str], message: str, in_process: EmulatorThread, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["request", *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert_one_line_error(captured.err, message)


def test_request_paginate_refuses_an_answer_that_is_not_a_list(
    in_process: EmulatorThread, capsys: pytest.CaptureFixture[str]
) -> None:
    inst = in_process.installation_ids[0]
    assert cli.main(["request", "GET", f"/app/installations/{inst}", "--paginate"]) == 2
    assert_one_line_error(capsys.readouterr().err, "cannot --paginate", "not one list")


# -- export: concurrent pages chosen by the SDK's PageTracker -------------------------------


class ScriptedServer:
    """Serves ``list_installations`` from a script (page number -> ids, pagination); any
    other page is empty. Numbers pages however the script says, as no emulator variant does."""

    def __init__(self, script: dict[int, tuple[list[str], Pagination]]) -> None:
        self.script = script
        self.asked: list[int] = []

    async def list_installations(self, *, limit: int = 10, page: int = 0) -> Page[Installation]:
        self.asked.append(page)
        await asyncio.sleep(0)  # let the other fetches start, as a server would
        ids, pagination = self.script.get(page, ([], Pagination()))
        items = tuple(Installation(id=i) for i in ids)
        return Page(items=items, pagination=pagination, page=page, limit=limit)


def _export(server: ScriptedServer, concurrency: int = 4) -> list[str]:
    async def collect() -> list[str]:
        pages = export_pages(server, 2, concurrency, _Progress(io.StringIO()))
        return [item["id"] async for items in pages for item in items]

    return asyncio.run(collect())


def test_export_follows_a_server_that_numbers_pages_its_own_way() -> None:
    # Pages 0, 2, 4 (a server counting half pages, say): every guess of "the page after"
    # is wrong, and is thrown away; only the pages the server named are used.
    server = ScriptedServer(
        {
            0: (["a", "b"], Pagination(total=6, current_page=0, page_count=6, next_page=2)),
            2: (["c", "d"], Pagination(total=6, current_page=2, page_count=6, next_page=4)),
            4: (["e", "f"], Pagination(total=6, current_page=4, page_count=6, next_page=None)),
        }
    )
    assert _export(server) == ["a", "b", "c", "d", "e", "f"]
    assert [p for p in server.asked if p in server.script] == [0, 2, 4]
    assert 3 in server.asked  # a guess was made, and dropped


def test_export_without_a_page_count_fetches_one_page_at_a_time() -> None:
    server = ScriptedServer(
        {
            0: (["a", "b"], Pagination(next_page=1)),
            1: (["c", "d"], Pagination(next_page=2, prev_page=0)),
            2: (["e"], Pagination(next_page=None, prev_page=1)),
        }
    )
    assert _export(server) == ["a", "b", "c", "d", "e"]
    assert server.asked == [0, 1, 2]  # no guess: nothing said how many pages there are


def test_export_goes_on_when_the_page_count_was_too_low() -> None:
    # An installation added during the export: the first page counted 1 page, nextPage
    # says there is another, and the tracker follows nextPage (one page, no guessing).
    server = ScriptedServer(
        {
            0: (["a", "b"], Pagination(current_page=0, page_count=1, next_page=1)),
            1: (["c"], Pagination(total=3, current_page=1, page_count=2, next_page=None)),
        }
    )
    assert _export(server) == ["a", "b", "c"]
    assert server.asked == [0, 1]


# -- the rest of issue 15's list ---------------------------------------------------------------


def test_demo_takes_debug_and_explains_itself(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["demo", "--help"])
    assert exited.value.code == 0
    assert "no credentials" in " ".join(capsys.readouterr().out.split())
    args = ["demo", "--debug", "--installations", "2", "--concurrency", "2", "--page-size", "1"]
    assert cli.main(args) == 0
    captured = capsys.readouterr()
    assert captured.out.rstrip().splitlines()[-1].startswith("done in ")
    assert "icr-async: DEBUG" in captured.err  # the SDK's log, as --debug promises
    assert_no_secret(captured.err)


@pytest.mark.parametrize("command", [["token", "app"], ["request"], ["installations", "list"]])
def test_help_keeps_the_environment_layout(command: list[str]) -> None:
    result = run_main(*command, "--help", env=child_env())
    assert (result.returncode, result.stderr) == (0, "")
    lines = result.stdout.splitlines()
    assert "  ICR_APP_ID            the app's id (or --app-id)" in lines
    assert (
        "exit status: 0 success, 1 API or network error, 2 usage or configuration error." in lines
    )


def test_insecure_http_is_explained_in_shell_terms(
    in_process: EmulatorThread, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["token", "app", "--base-url", "http://example.com"]) == 2
    err = capsys.readouterr().err
    assert_one_line_error(err, "plain http", "--allow-insecure-http", "--base-url")
    assert "allow_insecure_http" not in err
    assert "Python" not in err
    # The flag reaches the client (checked without sending anything off this machine).
    parsed = cli.build_parser().parse_args(
        ["token", "app", "--base-url", "http://example.com", "--allow-insecure-http"]
    )

    async def base_url() -> str:
        async with _make_client(parsed) as client:
            return client.base_url

    assert asyncio.run(base_url()) == "http://example.com"


def test_sandbox_conflict_names_the_flags(
    in_process: EmulatorThread, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["token", "app", "--sandbox", "--base-url", "https://example.com"]) == 2
    err = capsys.readouterr().err
    assert_one_line_error(err, "--base-url or --sandbox")
    assert "sandbox=True" not in err
