"""The scripts in ``examples/`` run against the emulator, each as its users would run it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest
from cli_support import REPO, TIMEOUT, EmulatorThread

EXAMPLES = REPO / "examples"


@pytest.fixture(scope="module")
def emu(private_key_pem: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorThread]:
    """An emulator with 30 installations, on a background thread."""
    with EmulatorThread(
        private_key_pem, tmp_path_factory.mktemp("examples"), installations=30
    ) as emulator:
        yield emulator


def run_example(name: str, emu: EmulatorThread, *args: str) -> str:
    """Run ``python examples/NAME ARGS`` with the emulator's environment; return stdout."""
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        env=emu.env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout


def organization_names(emu: EmulatorThread) -> list[str]:
    """The organizations' names in installation order."""
    return [i["organization"]["fullName"] for i in emu.emulator.installations(emu.app.app_id)]


def test_async_service_answers_orgs(emu: EmulatorThread) -> None:
    out = json.loads(run_example("async_service.py", emu, "--self-test"))
    ids = emu.installation_ids[:3]
    assert out == {
        "organizations": [
            {"installation": i, "name": name}
            for i, name in zip(ids, organization_names(emu), strict=False)
        ]
    }


def test_blocking_script(emu: EmulatorThread) -> None:
    try:
        from icr_async import ICRClient  # noqa: F401
    except ImportError:  # pragma: no cover - the blocking client ships separately
        pytest.skip("ICRClient not available yet")
    lines = run_example("blocking_script.py", emu).splitlines()
    assert lines[0] == f"{len(emu.installation_ids)} installations"
    assert lines[1].split()[0] == emu.installation_ids[0]
    assert "(masked)" in lines[4]
    assert "crs_…" in lines[4]
    assert lines[5].startswith(f"organization: {organization_names(emu)[0]} (")


def test_fetch_all(emu: EmulatorThread) -> None:
    count = len(emu.installation_ids)
    before = sum(emu.emulator.stats.mints.values())
    lines = run_example("fetch_all.py", emu).splitlines()
    assert lines[0] == f"fetched {count} organizations from {count} installations"
    assert lines[1].startswith("by country: ")
    assert lines[2].startswith(f"{count} tokens minted, ")
    # One mint per installation, however the tasks interleave.
    assert sum(emu.emulator.stats.mints.values()) - before == count
